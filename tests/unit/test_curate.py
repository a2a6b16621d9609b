import random

from vpo.curate import CurationRules, content_part, curate, find_near_duplicates, rule_violation

RULES = CurationRules(
    min_words=3, max_words=20, max_special_char_ratio=0.3, near_duplicate_jaccard=0.7, shingle_words=2
)


def test_flags_are_kept_but_not_counted():
    assert content_part("a cat surfing -ar 16:9 -neg blur") == "a cat surfing"
    assert rule_violation("a cat surfing -ar 16:9 -neg blurry, distorted, low quality", RULES) is None
    assert rule_violation("cat -ar 16:9 -motion 4 -neg a b c d", RULES) == "too_short"


def test_rules():
    assert rule_violation("", RULES) == "empty"
    assert rule_violation("hi there", RULES) == "too_short"
    assert rule_violation(" ".join(["word"] * 21), RULES) == "too_long"
    assert rule_violation("#### $$$ @@@ !!! a b c", RULES) == "special_chars"


def test_curate_drops_with_reasons_and_keeps_first_occurrence():
    raw = [
        (1, "a cute dog on the grass"),
        (2, ""),
        (3, "A cute  dog on the grass"),
        (4, "a cute dog on the grass today"),
        (5, "a rocket launch over the sea"),
        (6, "ok"),
    ]
    kept, dropped = curate(raw, RULES, "sft", "q.txt")
    assert [r["source_line"] for r in kept] == [1, 5]
    reasons = {r["source_line"]: (r["reason"], r["duplicate_of"]) for r in dropped}
    assert reasons == {
        2: ("empty", None),
        3: ("exact_duplicate", 1),
        4: ("near_duplicate", 1),
        6: ("too_short", None),
    }
    assert len(kept) + len(dropped) == len(raw)  # nothing is lost


def test_max_queries_drops_the_tail_with_a_reason():
    raw = [(i, f"query number {i} about a distinct topic {i * 7}") for i in range(1, 6)]
    kept, dropped = curate(raw, CurationRules(3, 20, 0.3, 1.0, 2, max_queries=3), "dpo", "q.json")
    assert len(kept) == 3
    assert [r["reason"] for r in dropped] == ["over_max_queries"] * 2


def test_near_duplicates_scale_and_match_exact_jaccard():
    rng = random.Random(0)
    vocab = [f"w{i}" for i in range(300)]
    texts = [" ".join(rng.sample(vocab, 10)) for _ in range(2000)]
    texts.append(texts[123] + " extra")  # 9 of 10 bigrams shared: Jaccard 0.9
    dup = find_near_duplicates(texts, threshold=0.7, n=2)
    assert dup == {len(texts) - 1: 123}
