"""Stage `build_pairs`: text-level pairs (refined ≻ sampled) merged with optional video-level pairs.

At most one pair per query; a query with a text pair gets no video pair (the method's precedence).
Within a query the text pair comes from the first candidate (by sample index) that the judge said No
to and refined successfully. The final list is shuffled with a fixed seed.
"""

from __future__ import annotations

import argparse
import logging
import random
from collections import Counter
from typing import Any

from vpo.core.ids import digest
from vpo.core.io import read_many, read_records, write_records
from vpo.core.stage import job_report, setup_logging
from vpo.core.templates import load_template
from vpo.training.dataset import policy_messages, write_dataset

log = logging.getLogger(__name__)

DATASET_NAME = "vpo_dpo"


def text_pairs(refinements: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], Counter]:
    skipped: Counter = Counter()
    best: dict[str, dict[str, Any]] = {}
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


def merge_pairs(
    text: list[dict[str, Any]], video: list[dict[str, Any]], shuffle_seed: int
) -> tuple[list[dict[str, Any]], Counter]:
    """Text pairs first; video pairs only for queries without one; one pair per query; seeded shuffle."""
    text_queries = {p["query_id"] for p in text}
    merged = list(text)
    video_queries: set[str] = set()
    skipped: Counter = Counter()
    for pair in sorted(video, key=lambda p: (p["query_id"], p["pair_id"])):
        if pair["query_id"] in text_queries:
            skipped["video_superseded_by_text"] += 1
        elif pair["query_id"] in video_queries:
            skipped["video_second_pair_for_query"] += 1
        else:
            video_queries.add(pair["query_id"])
            merged.append(pair)
    merged.sort(key=lambda p: p["pair_id"])  # input order must not change the shuffled order
    random.Random(shuffle_seed).shuffle(merged)
    return merged, skipped


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m vpo.stages.build_pairs", description=__doc__)
    p.add_argument("--refinements", nargs="+", required=True, help="DPO-side refinement records")
    p.add_argument("--video-pairs", default=None, help="video-level pairs (Parquet, pair schema)")
    p.add_argument("--template", required=True, help="policy inference template (the user turn)")
    p.add_argument("--shuffle-seed", type=int, required=True)
    p.add_argument("--pairs", required=True, help="all pairs (Parquet)")
    p.add_argument("--out-dir", required=True, help="LLaMA-Factory dataset folder")
    p.add_argument("--report", required=True)
    return p


def main(argv: list[str] | None = None) -> None:
    setup_logging()
    args = make_parser().parse_args(argv)
    report = job_report("build_pairs", args)
    report.add_inputs([*args.refinements, args.template, *([args.video_pairs] if args.video_pairs else [])])
    text, skipped = text_pairs(read_many(args.refinements))
    video = read_records(args.video_pairs) if args.video_pairs else []
    pairs, video_skipped = merge_pairs(text, video, args.shuffle_seed)
    write_records(args.pairs, pairs, "pair")
    report.counts = {
        "text_pairs": len(text),
        "video_pairs_in": len(video),
        "video_skipped": dict(video_skipped),
        "pairs": len(pairs),
        "by_source": dict(Counter(p["source"] for p in pairs)),
        "text_skipped": dict(skipped),
    }
    report.write(args.report)
    if not pairs:
        raise SystemExit(
            f"no preference pair could be built ({report.counts}). The judge found nothing to "
            "refine, or no refinement parsed: see the refine logs and reports."
        )
    template = load_template(args.template)
    rows = [
        {
            "messages": policy_messages(template, p["query"]),
            "chosen": {"role": "assistant", "content": p["chosen"]},
            "rejected": {"role": "assistant", "content": p["rejected"]},
        }
        for p in pairs
    ]
    write_dataset(args.out_dir, DATASET_NAME, rows, ranking=True)
    log.info("pairs: %s", report.counts)


if __name__ == "__main__":
    main()
