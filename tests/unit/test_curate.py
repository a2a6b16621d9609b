import json
import random

import pytest

from vpo.core.queries import QueryFileError, read_raw_queries
from vpo.stages.curate import (
    CurationRules,
    content_part,
    curate,
    find_near_duplicates,
    main,
    rule_violation,
    with_control_chars,
)

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


def test_control_characters_are_stripped_and_counted(tmp_path):
    raw = [
        (1, "a cat\x00 on a\x1b[31m red sofa\x7f"),
        (2, "a dog\tin the\r\nrain at night"),
        (3, "a calm lake"),
    ]
    kept, _ = curate(raw, RULES, "sft", "q.txt")
    assert [r["query"] for r in kept] == [
        "a cat on a[31m red sofa",
        "a dog in the rain at night",
        "a calm lake",
    ]
    assert with_control_chars(raw) == 1  # tabs and newlines are whitespace, not counted
    source = tmp_path / "q.txt"
    source.write_bytes(b"a cat\x00 sleeping on a sofa\na dog running on a beach\n")
    report = tmp_path / "report.json"
    outputs = ["--out", str(tmp_path / "q.parquet"), "--dropped", str(tmp_path / "d.parquet")]
    main(["--input", str(source), "--set", "sft", "--min-words", "3", "--max-words", "20",
          "--max-special-char-ratio", "0.3", "--near-duplicate-jaccard", "0.7", "--shingle-words", "2",
          *outputs, "--report", str(report)])  # fmt: skip
    assert json.loads(report.read_text())["counts"]["control_chars_stripped"] == 1


@pytest.mark.parametrize(
    ("name", "data", "message"),
    [
        ("q.txt", "a cat\nun café\n".encode("cp1252"), r"q\.txt:2: byte 0xe9 is not UTF-8 .*iconv -f"),
        ("q.jsonl", b'"a cat"\n"\xff"\n', r"q\.jsonl:2: byte 0xff is not UTF-8"),
    ],
)
def test_a_file_that_is_not_utf8_names_its_line_and_the_fix(tmp_path, name, data, message):
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(QueryFileError, match=message):
        read_raw_queries(path)


def test_a_byte_order_mark_is_not_query_text(tmp_path):
    path = tmp_path / "q.txt"
    path.write_bytes("\ufeffa cat on a sofa\n".encode())
    assert read_raw_queries(path) == [(1, "a cat on a sofa")]
