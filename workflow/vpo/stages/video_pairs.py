"""Stage `video_pairs`: the method's video-level preference rule over a query's rendered candidates.

Video i beats video j of the same query when, over the whole checklist,
  (a) i never answers "no" where j answers "yes",
  (b) i answers "yes" where j answers "no" at least once, and
  (c) score(i) − score(j) > margin, strictly (scores under one named convention, `vpo_sum` by default).
Videos with any `invalid` answer take no part: their answers cannot show dominance, and reading them as
"no" (as the reward model's own release did) would invent preferences. Videos of the same prompt text
are never paired (the pair would teach nothing). At most one pair per query: the first (i, j) in
candidate order (sample index, then seed index), as upstream kept the first in file order.
"""

from __future__ import annotations

import argparse
import logging
from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import Any

from vpo.core.ids import digest
from vpo.core.io import read_many, write_records
from vpo.core.stage import job_report, setup_logging

log = logging.getLogger(__name__)


def dominates(labels_i: Sequence[str], labels_j: Sequence[str]) -> bool:
    """Clauses (a) and (b) of the rule on two valid answer vectors (yes/no only)."""
    if len(labels_i) != len(labels_j):
        raise ValueError("answer vectors of different checklists cannot be compared")
    never_worse = all(not (a == "no" and b == "yes") for a, b in zip(labels_i, labels_j, strict=True))
    once_better = any(a == "yes" and b == "no" for a, b in zip(labels_i, labels_j, strict=True))
    return never_worse and once_better


def pair_for_query(
    videos: Sequence[dict[str, Any]], margin: float, convention: str
) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """The first (winner, loser) in candidate order that satisfies the whole rule, or None."""
    score = f"score_{convention}"
    ordered = sorted(videos, key=lambda v: (v["sample_index"], v["video_index"], v["video_id"]))
    for i in ordered:
        for j in ordered:
            if i is j or i["prompt"] == j["prompt"]:
                continue
            if dominates(i["labels"], j["labels"]) and i[score] - j[score] > margin:
                return i, j
    return None


def video_pairs(
    rewards: Sequence[dict[str, Any]], margin: float, convention: str = "vpo_sum"
) -> tuple[list[dict[str, Any]], Counter]:
    counts: Counter = Counter()
    by_query: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rewards:
        if r["invalid_count"]:
            counts["videos_with_invalid_answers"] += 1
            continue
        by_query[r["query_id"]].append(r)
    pairs = []
    for qid in sorted(by_query):
        found = pair_for_query(by_query[qid], margin, convention)
        if found is None:
            counts["queries_without_pair"] += 1
            continue
        win, lose = found
        gap = win[f"score_{convention}"] - lose[f"score_{convention}"]
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
                "score_margin": gap,
                "score_convention": convention,
                "chosen_video_id": win["video_id"],
                "rejected_video_id": lose["video_id"],
            }
        )
    counts["pairs"] = len(pairs)
    return pairs, counts


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m vpo.stages.video_pairs", description=__doc__)
    p.add_argument("--rewards", nargs="+", required=True, help="reward records (Parquet)")
    p.add_argument("--margin", type=float, required=True, help="score gap that must be exceeded (paper 0.5)")
    p.add_argument("--convention", default="vpo_sum", choices=["vpo_sum", "visionreward_mean"])
    p.add_argument("--out", required=True, help="video-level pairs (Parquet, pair schema)")
    p.add_argument("--report", required=True)
    return p


def main(argv: list[str] | None = None) -> None:
    setup_logging()
    args = make_parser().parse_args(argv)
    report = job_report("video_pairs", args)
    report.add_inputs(args.rewards)
    rewards = read_many(args.rewards)
    pairs, counts = video_pairs(rewards, args.margin, args.convention)
    write_records(args.out, pairs, "pair")
    report.counts = {"videos": len(rewards), "queries": len({r["query_id"] for r in rewards}), **counts}
    report.write(args.report)
    log.info("video pairs: %s", report.counts)


if __name__ == "__main__":
    main()
