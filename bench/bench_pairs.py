"""Benchmark: building the DPO pairs from reward and refinement records, our stages vs the release's loops.

Synthetic records for N queries, K candidate prompts per query (default 4) and V videos per prompt
(default 1). Every video answers a 64-question checklist yes or no: the videos of a query share most
answers, a better video turns more of them to yes (about 30% of the queries get a video pair), and about
2% of the videos have one invalid answer. Scores are `vpo_sum` under 64 weights drawn here (29 non-zero,
summing to 6.28 like the method's). About 3% of the queries have two candidates with the same prompt
text; about half the queries have refinements of some candidates (a few unparsed, refused, failed, or
identical to the prompt). Both methods apply the method's rule: invalid videos excluded, margin 0.5, no
pair of one prompt text, the first (i, j) in candidate order; text pairs first, one pair per query.

- ours: `vpo.stages.video_pairs.main` then `vpo.stages.build_pairs.main`, in this process, on complete
  reward records (as `score_videos` writes them) in 8 Parquet shards and one refinement Parquet file.
  Timed: both stages end to end: reading the Parquet inputs, the rule, the schema-checked pair records
  (Parquet), the LLaMA-Factory dataset JSON, and the two job reports (with the sha256 of every input).
- baseline: the release's pattern, written here: reward and refinement records as JSON lines holding
  only the fields the rule needs (the baseline's best case), `json.loads` per line, videos grouped in a
  dict, a nested loop over (i, j) per query in file order with per-question comparisons and the score
  gap, the first match kept; text pairs first, then video pairs for the other queries; shuffled with
  `random.Random(seed)`; written with `json.dump(indent=2)` as LLaMA-Factory sharegpt ranking rows (the
  policy template applied to the query as the user turn). Timed: reading, the rule, writing.

Writing either method's inputs is not timed. Each figure is the best of --repeat runs (the machine may be
shared); ours runs once on 50 queries first, so that imports and first-call costs (printed) fall outside
the table. The script exits non-zero unless both write the same pairs, as a multiset of (user turn,
chosen, rejected). Table: videos = reward records, pairs = rows of the dataset, ratio = baseline s /
ours s (> 1: ours is faster). 40000 queries (160k videos) need about 1.5 GB of memory, with
--videos-per-prompt 2 about 2.7 GB. Run from the repository root:

    .venv/bin/python bench/bench_pairs.py [--queries 2000 10000 40000] [--videos-per-prompt 1]
        [--repeat 3] [--profile]   # cProfile of ours at the largest size
"""

from __future__ import annotations

import argparse
import cProfile
import hashlib
import io
import json
import logging
import pstats
import random
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from vpo.stages import build_pairs, video_pairs

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "resources/prompts/policy_inference.txt"
QUESTIONS = 64
MARGIN = 0.5
SHUFFLE_SEED = 17
VOCABULARY = (
    "a the slow fast red blue golden camera pan over beach city forest river cat dog child runs walks "
    "light shadow sunset morning rain snow close wide shot cinematic soft bright dark calm busy street "
    "mountain sky cloud wave tree flower bird car train window room table glass water fire smoke"
)
WORDS = np.array(VOCABULARY.split())


@dataclass
class Inputs:
    rewards: list[Path]  # ours: Parquet shards
    refinements: Path  # ours: Parquet
    rewards_jsonl: Path  # baseline
    refinements_jsonl: Path  # baseline
    videos: int


def checklist_weights(rng: np.random.Generator) -> np.ndarray:
    """64 weights, 29 of them non-zero, summing to the method's 6.2771726."""
    weights = np.zeros(QUESTIONS)
    nonzero = rng.choice(QUESTIONS, 29, replace=False)
    weights[nonzero] = rng.gamma(1.0, 1.0, 29)
    return weights * (6.2771726 / weights.sum())


def sentences(rng: np.random.Generator, count: int, words: int) -> list[str]:
    picks = WORDS[rng.integers(0, len(WORDS), (count, words))]
    return [" ".join(row) for row in picks]


def hex_ids(prefix: str, count: int) -> list[str]:
    return [hashlib.sha256(f"{prefix}{i}".encode()).hexdigest()[:16] for i in range(count)]


def nested(flat: pl.Series, width: int) -> pl.Series:
    """A flat series as `len / width` lists of `width` items."""
    return flat.reshape((-1, width)).cast(pl.List(flat.dtype))


def reward_frame(queries: int, candidates: int, per_prompt: int, seed: int) -> pl.DataFrame:
    """Complete reward records in candidate order: query, then sample index, then video index."""
    rng = np.random.default_rng(seed)
    weights = checklist_weights(rng)
    n_candidates = queries * candidates
    videos = n_candidates * per_prompt
    query_texts = sentences(rng, queries, 8)
    prompts = sentences(rng, n_candidates, 70)
    for q in np.flatnonzero(rng.random(queries) < 0.03):  # two candidates share their prompt text
        prompts[q * candidates + 1] = prompts[q * candidates]
    # A query's videos share most answers; a better video (quality u) turns more of them to yes.
    base = np.repeat(rng.random((queries, QUESTIONS)) < 0.7, candidates * per_prompt, axis=0)
    quality = rng.random((videos, 1))
    gains = rng.random((videos, QUESTIONS)) < 0.2 * quality
    losses = rng.random((videos, QUESTIONS)) < 0.03 * (1 - quality)
    yes = (base | gains) & ~losses
    codes = yes.astype(np.int8)  # 1 yes, 0 no, 2 invalid
    invalid = np.flatnonzero(rng.random(videos) < 0.02)
    codes[invalid, rng.integers(0, QUESTIONS, len(invalid))] = 2
    vpo_sum = (codes == 1) @ weights
    labels = pl.Series(codes.ravel()).replace_strict(
        {1: "yes", 0: "no", 2: "invalid"}, return_dtype=pl.String
    )
    query_index = np.arange(videos) // (candidates * per_prompt)
    candidate_index = np.arange(videos) // per_prompt
    query_ids = np.array(hex_ids("query", queries))
    candidate_ids = np.array(hex_ids("candidate", n_candidates))
    video_ids = hex_ids("video", videos)
    return pl.DataFrame(
        {
            "video_id": video_ids,
            "candidate_id": candidate_ids[candidate_index],
            "query_id": query_ids[query_index],
            "query": np.array(query_texts)[query_index],
            "prompt": np.array(prompts)[candidate_index],
            "sample_index": candidate_index % candidates,
            "video_index": np.arange(videos) % per_prompt,
            "video_path": [f"results/state/videos/{v[:2]}/{v}.mp4" for v in video_ids],
            "video_sha256": [v * 4 for v in video_ids],
            "checklist": "bench",
            "question_ids": nested(pl.Series([f"q{i}" for i in range(QUESTIONS)] * videos), QUESTIONS),
            "raw_answers": nested(labels.replace("invalid", "unclear"), QUESTIONS),
            "labels": nested(labels, QUESTIONS),
            "p_yes": nested(pl.Series(rng.random(videos * QUESTIONS)), QUESTIONS),
            "invalid_count": (codes == 2).sum(axis=1),
            "score_vpo_sum": vpo_sum,
            "score_visionreward_mean": (2 * vpo_sum - weights.sum()) / 29,
            "scorer_fingerprint": "bench",
        },
        schema_overrides={"sample_index": pl.Int64, "video_index": pl.Int64, "invalid_count": pl.Int64},
    )


def refinement_frame(rewards: pl.DataFrame, seed: int) -> pl.DataFrame:
    """Refinements of some candidates of about half the queries, in (query, sample index) order."""
    rng = np.random.default_rng(seed + 1)
    candidates = rewards.filter(pl.col("video_index") == 0)
    refined_queries = candidates["query_id"].unique(maintain_order=True).sample(fraction=0.5, seed=seed)
    picked = candidates.filter(
        pl.col("query_id").is_in(refined_queries.implode()) & pl.Series(rng.random(len(candidates)) < 0.5)
    )
    n = len(picked)
    status = rng.choice(["ok", "unparsed", "refused", "failed"], n, p=[0.92, 0.04, 0.02, 0.02])
    identical = rng.random(n) < 0.02
    refined = [
        None if s != "ok" else (p if same else f"{p}, filmed in soft natural light")
        for s, same, p in zip(status, identical, picked["prompt"], strict=True)
    ]
    return picked.select(
        pl.col("candidate_id").alias("item_id"),
        "query_id",
        "query",
        "sample_index",
        "prompt",
        pl.Series("refined_prompt", refined, dtype=pl.String),
        pl.lit(None, pl.String).alias("reflection"),
        pl.Series("status", status),
        pl.lit(1, pl.Int64).alias("attempts"),
        pl.lit("[[start]]...[[end]]").alias("raw"),
        pl.lit("stop").alias("finish_reason"),
        pl.lit(0, pl.Int64).alias("seed"),
        pl.lit("bench").alias("model_fingerprint"),
        pl.lit(None, pl.String).alias("error"),
    )


def write_inputs(folder: Path, queries: int, candidates: int, per_prompt: int, shards: int) -> Inputs:
    rewards = reward_frame(queries, candidates, per_prompt, seed=queries)
    refinements = refinement_frame(rewards, seed=queries)
    shard = rewards["query_id"].str.slice(0, 8).str.to_integer(base=16) % shards
    paths = []
    for index in range(shards):
        paths.append(folder / f"rewards-{index}.parquet")
        rewards.filter(shard == index).write_parquet(paths[-1])
    refinements.write_parquet(folder / "refinements.parquet")
    lean = ["query_id", "query", "prompt", "candidate_id", "video_id", "sample_index", "video_index"]
    rewards.select(*lean, "labels", "score_vpo_sum").write_ndjson(folder / "rewards.jsonl")
    refinements.select(
        "item_id", "query_id", "query", "sample_index", "prompt", "refined_prompt", "status"
    ).write_ndjson(folder / "refinements.jsonl")
    return Inputs(
        paths,
        folder / "refinements.parquet",
        folder / "rewards.jsonl",
        folder / "refinements.jsonl",
        len(rewards),
    )


def ours(inputs: Inputs, folder: Path) -> Path:
    """Both stages as the workflow runs them; returns the LLaMA-Factory dataset file."""
    out = folder / "ours"
    rewards = [str(p) for p in inputs.rewards]
    video = ["--margin", str(MARGIN), "--out", str(out / "video.parquet")]
    video_pairs.main(["--rewards", *rewards, *video, "--report", str(out / "video.report.json")])
    build = ["--refinements", str(inputs.refinements), "--video-pairs", str(out / "video.parquet")]
    build += ["--template", str(TEMPLATE), "--shuffle-seed", str(SHUFFLE_SEED)]
    build += ["--pairs", str(out / "pairs.parquet"), "--out-dir", str(out / "dataset")]
    build_pairs.main([*build, "--report", str(out / "pairs.report.json")])
    return out / "dataset" / f"{build_pairs.DATASET_NAME}.json"


# -- baseline: the release's pattern ---------------------------------------------------------------


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


def first_video_pair(videos: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]] | None:
    usable = [v for v in videos if all(label in ("yes", "no") for label in v["labels"])]
    for a in usable:
        for b in usable:
            if a is b or a["prompt"] == b["prompt"]:
                continue
            never_worse = all(
                not (x == "no" and y == "yes") for x, y in zip(a["labels"], b["labels"], strict=True)
            )
            once_better = any(x == "yes" and y == "no" for x, y in zip(a["labels"], b["labels"], strict=True))
            if never_worse and once_better and a["score_vpo_sum"] - b["score_vpo_sum"] > MARGIN:
                return a, b
    return None


def baseline(inputs: Inputs, folder: Path) -> Path:
    template = TEMPLATE.read_text(encoding="utf-8")
    by_query: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in read_jsonl(inputs.rewards_jsonl):
        by_query[record["query_id"]].append(record)
    video = {qid: found for qid, videos in by_query.items() if (found := first_video_pair(videos))}
    text: dict[str, tuple[str, str, str]] = {}
    for r in read_jsonl(inputs.refinements_jsonl):
        if r["status"] == "ok" and r["refined_prompt"] != r["prompt"] and r["query_id"] not in text:
            text[r["query_id"]] = (r["query"], r["refined_prompt"], r["prompt"])
    triples = list(text.values())
    triples += [
        (win["query"], win["prompt"], lose["prompt"]) for q, (win, lose) in video.items() if q not in text
    ]
    rows = [
        {
            "messages": [{"role": "user", "content": template.replace("{query}", query)}],
            "chosen": {"role": "assistant", "content": chosen},
            "rejected": {"role": "assistant", "content": rejected},
        }
        for query, chosen, rejected in triples
    ]
    random.Random(SHUFFLE_SEED).shuffle(rows)
    out = folder / "baseline.json"
    with out.open("w", encoding="utf-8") as handle:
        json.dump(rows, handle, ensure_ascii=False, indent=2)
    return out


# -- driver ----------------------------------------------------------------------------------------


def pair_multiset(dataset: Path) -> Counter:
    rows = json.loads(dataset.read_text(encoding="utf-8"))
    return Counter(
        (tuple(m["content"] for m in r["messages"]), r["chosen"]["content"], r["rejected"]["content"])
        for r in rows
    )


def timed(call: Any, inputs: Inputs, folder: Path, repeat: int) -> tuple[Path, float]:
    """The output and the best wall time of `repeat` runs (the machine may be shared: the best is the
    least disturbed)."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        out = call(inputs, folder)
        best = min(best, time.perf_counter() - start)
    return out, best


def profile_ours(inputs: Inputs, folder: Path) -> None:
    profiler = cProfile.Profile()
    profiler.runcall(ours, inputs, folder)
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("cumulative").print_stats("vpo|bench", 40)
    print(text.getvalue())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--queries", type=int, nargs="+", default=[2000, 10000, 40000])
    parser.add_argument("--candidates", type=int, default=4, help="candidate prompts per query (K)")
    parser.add_argument("--videos-per-prompt", type=int, default=1)
    parser.add_argument("--shards", type=int, default=8, help="reward Parquet files (score_videos shards)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per method and size; the best counts")
    parser.add_argument("--profile", action="store_true", help="cProfile ours at the largest size")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)  # before the stages' own setup, which then keeps it

    with tempfile.TemporaryDirectory(prefix="bench_pairs.") as tmp:
        tiny = write_inputs(Path(tmp), 50, args.candidates, args.videos_per_prompt, args.shards)
        _, warmup = timed(ours, tiny, Path(tmp), 1)
    print(
        f"K = {args.candidates} candidates per query, {args.videos_per_prompt} video(s) per prompt; "
        f"best of {args.repeat} runs; ours' first run, on 50 queries (imports, caches; not counted): "
        f"{warmup:.2f} s"
    )
    print("| queries | videos | pairs | ours s | baseline s | ratio |")
    print("| --- | --- | --- | --- | --- | --- |")
    failures = []
    for queries in args.queries:
        with tempfile.TemporaryDirectory(prefix="bench_pairs.") as tmp:
            folder = Path(tmp)
            inputs = write_inputs(folder, queries, args.candidates, args.videos_per_prompt, args.shards)
            mine, ours_s = timed(ours, inputs, folder, args.repeat)
            theirs, base_s = timed(baseline, inputs, folder, args.repeat)
            ours_pairs, base_pairs = pair_multiset(mine), pair_multiset(theirs)
            print(
                f"| {queries} | {inputs.videos} | {sum(ours_pairs.values())} | {ours_s:.2f} | {base_s:.2f} "
                f"| {base_s / ours_s:.1f} |",
                flush=True,
            )
            if ours_pairs != base_pairs:
                failures.append(
                    f"{queries} queries: {sum((ours_pairs - base_pairs).values())} pairs only in ours, "
                    f"{sum((base_pairs - ours_pairs).values())} only in the baseline"
                )
            if args.profile and queries == max(args.queries):
                profile_ours(inputs, folder)
    if failures:
        print("FAILED:\n  " + "\n  ".join(failures))
        sys.exit(1)
    print("ours and the baseline built the same pairs at every size")


if __name__ == "__main__":
    main()
