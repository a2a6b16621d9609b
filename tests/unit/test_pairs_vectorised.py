"""The vectorised pair stages against the record-by-record loops they replaced (kept here as references):
the same pairs in the same order, the same counts in the same order, on random inputs and through the
command lines (Parquet in, Parquet, reports and the LLaMA-Factory dataset out)."""

import contextlib
import json
import random
from collections import Counter, defaultdict

import polars as pl
import pytest

from vpo.core.ids import digest
from vpo.core.io import read_records, write_records
from vpo.stages import build_pairs, video_pairs
from vpo.stages.build_pairs import merge_pairs, text_pairs
from vpo.stages.video_pairs import dominates
from vpo.training.dataset import policy_messages

# -- the loops as they were ------------------------------------------------------------------------


def reference_pair_for_query(videos, margin, convention):
    score = f"score_{convention}"
    ordered = sorted(videos, key=lambda v: (v["sample_index"], v["video_index"], v["video_id"]))
    for i in ordered:
        for j in ordered:
            if i is j or i["prompt"] == j["prompt"]:
                continue
            if dominates(i["labels"], j["labels"]) and i[score] - j[score] > margin:
                return i, j
    return None


def reference_video_pairs(rewards, margin, convention="vpo_sum"):
    counts = Counter()
    by_query = defaultdict(list)
    for r in rewards:
        if r["invalid_count"]:
            counts["videos_with_invalid_answers"] += 1
            continue
        by_query[r["query_id"]].append(r)
    pairs = []
    for qid in sorted(by_query):
        found = reference_pair_for_query(by_query[qid], margin, convention)
        if found is None:
            counts["queries_without_pair"] += 1
            continue
        win, lose = found
        pairs.append(
            {
                "pair_id": digest("pair", "video", win["video_id"], lose["video_id"]),
                "query_id": qid,
                "query": win["query"],
                "chosen": win["prompt"],
                "rejected": lose["prompt"],
                "source": "video",
                "chosen_id": win["candidate_id"],
                "chosen_kind": "candidate",
                "rejected_id": lose["candidate_id"],
                "score_margin": win[f"score_{convention}"] - lose[f"score_{convention}"],
                "score_convention": convention,
                "chosen_video_id": win["video_id"],
                "rejected_video_id": lose["video_id"],
            }
        )
    counts["pairs"] = len(pairs)
    return pairs, counts


def reference_text_pairs(refinements):
    skipped = Counter()
    best = {}
    for r in sorted(refinements, key=lambda r: (r["query_id"], r["sample_index"])):
        if r["status"] != "ok":
            skipped[f"refinement_{r['status']}"] += 1
        elif r["refined_prompt"] == r["prompt"]:
            skipped["refinement_identical"] += 1
        elif r["query_id"] in best:
            skipped["query_has_pair"] += 1
        else:
            best[r["query_id"]] = r
    pairs = [
        {
            "pair_id": digest("pair", "text", r["item_id"]),
            "query_id": r["query_id"],
            "query": r["query"],
            "chosen": r["refined_prompt"],
            "rejected": r["prompt"],
            "source": "text",
            "chosen_id": r["item_id"],
            "chosen_kind": "refinement",
            "rejected_id": r["item_id"],
            "score_margin": None,
            "score_convention": None,
            "chosen_video_id": None,
            "rejected_video_id": None,
        }
        for r in best.values()
    ]
    return pairs, skipped


def reference_merge_pairs(text, video, shuffle_seed):
    text_queries = {p["query_id"] for p in text}
    merged = list(text)
    video_queries = set()
    skipped = Counter()
    for pair in sorted(video, key=lambda p: (p["query_id"], p["pair_id"])):
        if pair["query_id"] in text_queries:
            skipped["video_superseded_by_text"] += 1
        elif pair["query_id"] in video_queries:
            skipped["video_second_pair_for_query"] += 1
        else:
            video_queries.add(pair["query_id"])
            merged.append(pair)
    merged.sort(key=lambda p: p["pair_id"])
    random.Random(shuffle_seed).shuffle(merged)
    return merged, skipped


# -- random inputs ---------------------------------------------------------------------------------


def random_labels(rng, base):
    """`base` with some answers moved towards yes or towards no (a better or worse video), and now
    and then an invalid one."""
    lean = rng.random()
    labels = [(("yes" if rng.random() < lean else "no") if rng.random() < 0.15 else b) for b in base]
    if rng.random() < 0.15:
        labels[rng.randrange(len(labels))] = "invalid"
    return labels


def random_rewards(rng, queries=None, width=None):
    """Reward records with the fields the rule reads: ties on every sort key, shared prompts, scores
    on a coarse grid (gaps equal to the margin), invalid answers with and without an invalid count."""
    rows = []
    for q in range(rng.randint(0, 6) if queries is None else queries):
        length = width or rng.choice([1, 3, 8, 64, 65, 70])
        base = [rng.choice(["yes", "no"]) for _ in range(length)]
        for v in range(rng.randint(0, 7)):
            labels = random_labels(rng, base)
            rows.append(
                {
                    "video_id": f"v{q}-{rng.randint(0, 9)}",
                    "candidate_id": f"c{q}-{v}",
                    "query_id": f"q{q}",
                    "query": f"query {q}",
                    "prompt": f"prompt {rng.randint(0, 3)}",
                    "sample_index": rng.randint(0, 3),
                    "video_index": rng.randint(0, 1),
                    "labels": labels,
                    "invalid_count": 0 if rng.random() < 0.3 else labels.count("invalid"),
                    "score_vpo_sum": rng.choice([0.0, 0.5, 1.0, 1.5, 2.25, rng.random() * 3]),
                    "score_visionreward_mean": rng.uniform(-1, 1),
                }
            )
    rng.shuffle(rows)
    return rows


def random_refinements(rng):
    rows = []
    for q in range(rng.randint(0, 8)):
        for index in rng.sample(range(6), rng.randint(0, 4)):
            status = rng.choice(["ok", "ok", "ok", "unparsed", "refused", "failed"])
            prompt = f"prompt {q} {index}"
            refined = None if status != "ok" else rng.choice([prompt, f"refined {q} {index}"])
            rows.append(
                {
                    "item_id": f"i{q}-{index}",
                    "query_id": f"q{q}",
                    "query": f"query {q}",
                    "sample_index": index if rng.random() < 0.8 else 0,
                    "prompt": prompt,
                    "refined_prompt": refined,
                    "status": status,
                }
            )
    rng.shuffle(rows)
    return rows


def random_video_pairs(rng, queries):
    pairs = []
    for q in queries:
        for k in range(rng.randint(0, 3)):
            pairs.append(
                {
                    "pair_id": f"p{rng.randint(0, 50):02d}" if k else digest(q, k),
                    "query_id": q,
                    "query": f"query {q}",
                    "chosen": "w",
                    "rejected": "l",
                    "source": "video",
                    "chosen_id": "c",
                    "chosen_kind": "candidate",
                    "rejected_id": "d",
                    "score_margin": 0.75,
                    "score_convention": "vpo_sum",
                    "chosen_video_id": "vw",
                    "rejected_video_id": "vl",
                }
            )
    return pairs


# -- the properties --------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(300))
def test_video_pairs_match_the_loop(seed, monkeypatch):
    rng = random.Random(seed)
    rewards = random_rewards(rng)
    monkeypatch.setattr(video_pairs, "PAIR_BATCH", rng.choice([1, 10, 60, 1 << 22]))  # queries per batch
    convention = rng.choice(["vpo_sum", "visionreward_mean"])
    margin = rng.choice([0.0, 0.5, 1.0])
    expected = reference_video_pairs(rewards, margin, convention)
    pairs, counts = video_pairs.video_pairs(rewards, margin, convention)
    assert pairs == expected[0]
    assert list(counts.items()) == list(expected[1].items())


def test_prompts_with_the_same_hash_are_compared_by_text(monkeypatch):
    monkeypatch.setattr(
        pl.Series, "hash", lambda self, *a, **k: pl.repeat(7, len(self), dtype=pl.UInt64, eager=True)
    )
    for seed in range(40):
        rewards = random_rewards(random.Random(seed), width=8)
        assert video_pairs.video_pairs(rewards, 0.5)[0] == reference_video_pairs(rewards, 0.5)[0]


def test_checklists_may_differ_between_queries_not_within_one():
    rng = random.Random(1)
    short = random_rewards(rng, queries=1, width=3)
    long = [{**r, "query_id": "other"} for r in random_rewards(rng, queries=1, width=70)]
    assert video_pairs.video_pairs(short + long, 0.0) == reference_video_pairs(short + long, 0.0)
    mixed = [{**r, "query_id": "same", "invalid_count": 0} for r in short + long]
    with pytest.raises(ValueError, match="different checklists"):
        video_pairs.video_pairs(mixed, 0.0)


@pytest.mark.parametrize("seed", range(200))
def test_text_pairs_and_merge_match_the_loops(seed):
    rng = random.Random(seed)
    refinements = random_refinements(rng)
    text, skipped = text_pairs(refinements)
    expected_text, expected_skipped = reference_text_pairs(refinements)
    assert text == expected_text
    assert list(skipped.items()) == list(expected_skipped.items())
    video = random_video_pairs(rng, [f"q{q}" for q in range(10)])
    merged, merge_skipped = merge_pairs(text, video, seed)
    expected_merged, expected_merge_skipped = reference_merge_pairs(expected_text, video, seed)
    assert merged == expected_merged
    assert list(merge_skipped.items()) == list(expected_merge_skipped.items())


# -- the command lines -----------------------------------------------------------------------------

TEMPLATES = {
    "plain": "Expand {query} into a video prompt; keep {prompt} as written.\n",
    "conversation": "### system\nYou write prompts.\n### user\nQuery: {query}\n### assistant\nOk.\n"
    "### user\n{query}?",
}


def full_reward(row):
    return {
        **row,
        "video_path": "v.mp4",
        "video_sha256": "0" * 64,
        "checklist": "c",
        "question_ids": [f"q{i}" for i in range(len(row["labels"]))],
        "raw_answers": row["labels"],
        "p_yes": [None] * len(row["labels"]),
        "scorer_fingerprint": "s",
    }


def full_refinement(row):
    return {
        **row,
        "reflection": None,
        "attempts": 1,
        "raw": None,
        "finish_reason": None,
        "seed": 0,
        "model_fingerprint": "m",
        "error": None,
    }


@pytest.mark.parametrize(("seed", "template"), [(s, t) for s in range(6) for t in TEMPLATES])
def test_stages_write_what_the_loops_wrote(tmp_path, seed, template):
    rng = random.Random(seed)
    rewards = [full_reward(r) for r in random_rewards(rng, queries=8, width=rng.choice([5, 64]))]
    rewards[0]["query"] = "a {query} and {prompt} in the text"  # filled in one pass, as before
    refinements = [full_refinement(r) for r in random_refinements(rng)]
    (tmp_path / "template.txt").write_text(TEMPLATES[template])
    half = len(rewards) // 2
    write_records(tmp_path / "r0.parquet", rewards[:half], "reward")
    write_records(tmp_path / "r1.parquet", rewards[half:], "reward")
    write_records(tmp_path / "ref.parquet", refinements, "refinement")
    rewards_in = [str(tmp_path / "r0.parquet"), str(tmp_path / "r1.parquet")]
    out = ["--out", str(tmp_path / "video.parquet"), "--report", str(tmp_path / "video.json")]
    video_pairs.main(["--rewards", *rewards_in, "--margin", "0.5", *out])
    argv = ["--refinements", str(tmp_path / "ref.parquet"), "--video-pairs", str(tmp_path / "video.parquet")]
    argv += ["--template", str(tmp_path / "template.txt"), "--shuffle-seed", str(seed)]
    argv += ["--pairs", str(tmp_path / "pairs.parquet"), "--out-dir", str(tmp_path / "dataset")]
    argv += ["--report", str(tmp_path / "pairs.json")]
    with contextlib.suppress(SystemExit):  # no pair at all: the report is written first, as before
        build_pairs.main(argv)

    video, counts = reference_video_pairs(rewards, 0.5)
    assert read_records(tmp_path / "video.parquet") == video
    report = json.loads((tmp_path / "video.json").read_text())["counts"]
    assert list(report.items()) == list(
        {"videos": len(rewards), "queries": len({r["query_id"] for r in rewards}), **counts}.items()
    )
    text, skipped = reference_text_pairs(refinements)
    pairs, video_skipped = reference_merge_pairs(text, video, seed)
    report = json.loads((tmp_path / "pairs.json").read_text())["counts"]
    expected = {
        "text_pairs": len(text),
        "video_pairs_in": len(video),
        "video_skipped": dict(video_skipped),
        "pairs": len(pairs),
        "by_source": dict(Counter(p["source"] for p in pairs)),
        "text_skipped": dict(skipped),
    }
    assert json.dumps(report) == json.dumps(expected)  # the same keys in the same order
    if not pairs:
        return
    assert read_records(tmp_path / "pairs.parquet") == pairs
    rows = json.loads((tmp_path / "dataset/vpo_dpo.json").read_text())
    assert rows == [
        {
            "messages": policy_messages(TEMPLATES[template], p["query"]),
            "chosen": {"role": "assistant", "content": p["chosen"]},
            "rejected": {"role": "assistant", "content": p["rejected"]},
        }
        for p in pairs
    ]
