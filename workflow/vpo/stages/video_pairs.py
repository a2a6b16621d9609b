"""Stage `video_pairs`: the method's video-level preference rule over a query's rendered candidates.

Video i beats video j of the same query when, over the whole checklist,
  (a) i never answers "no" where j answers "yes",
  (b) i answers "yes" where j answers "no" at least once, and
  (c) score(i) − score(j) > margin, strictly (scores under one named convention, `vpo_sum` by default).
Videos with any `invalid` answer take no part: their answers cannot show dominance, and reading them as
"no" (as the reward model's own release did) would invent preferences. Videos of the same prompt text
are never paired (the pair would teach nothing). At most one pair per query: the first (i, j) in
candidate order (sample index, then seed index), as upstream kept the first in file order.

All queries at once: every ordered (i, j) of a query's videos is one row of index arrays, the answers are
bit masks (yes, no) per video, and the first row in order that passes the rule is the query's pair.
"""

from __future__ import annotations

import argparse
import logging
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from vpo.core.ids import digest
from vpo.core.io import read_frame, write_frame
from vpo.core.stage import job_report, setup_logging

log = logging.getLogger(__name__)

# Ordered pairs compared at once: bounds the memory when queries have many videos.
PAIR_BATCH = 1 << 22

# The reward record fields the rule reads, besides the score of the chosen convention.
COLUMNS = {
    "video_id": pl.String,
    "candidate_id": pl.String,
    "query_id": pl.String,
    "query": pl.String,
    "prompt": pl.String,
    "sample_index": pl.Int64,
    "video_index": pl.Int64,
    "labels": pl.List(pl.String),
    "invalid_count": pl.Int64,
}


def dominates(labels_i: Sequence[str], labels_j: Sequence[str]) -> bool:
    """Clauses (a) and (b) of the rule on two valid answer vectors (yes/no only)."""
    if len(labels_i) != len(labels_j):
        raise ValueError("answer vectors of different checklists cannot be compared")
    never_worse = all(not (a == "no" and b == "yes") for a, b in zip(labels_i, labels_j, strict=True))
    once_better = any(a == "yes" and b == "no" for a, b in zip(labels_i, labels_j, strict=True))
    return never_worse and once_better


def video_pairs(
    rewards: Sequence[Mapping[str, Any]], margin: float, convention: str = "vpo_sum"
) -> tuple[list[dict[str, Any]], Counter]:
    """`video_pair_frame` on reward records as dicts; the pairs as dicts."""
    schema = {**COLUMNS, f"score_{convention}": pl.Float64}
    pairs, counts = video_pair_frame(pl.DataFrame(rewards, schema=schema), margin, convention)
    return pairs.to_dicts(), counts


def video_pair_frame(
    rewards: pl.DataFrame, margin: float, convention: str = "vpo_sum"
) -> tuple[pl.DataFrame, Counter]:
    """The pair records (by query id) and the counts: invalid videos, queries without a pair, pairs."""
    counts: Counter = Counter()
    invalid = (rewards["invalid_count"] != 0).fill_null(False).to_numpy()
    if invalid.any():
        counts["videos_with_invalid_answers"] = int(invalid.sum())
    rows = _candidate_order(rewards, invalid)
    sizes = np.bincount(rewards["query_id"].gather(rows).rle_id().to_numpy())
    videos = _videos(rewards, convention, rows, sizes)
    found = [_first_pairs(videos, sizes, groups, margin) for groups in _batches(sizes * sizes, PAIR_BATCH)]
    wins, losses, gaps = (np.concatenate([f[k] for f in found] or [np.zeros(0)]) for k in range(3))
    if len(sizes) > len(wins):
        counts["queries_without_pair"] = len(sizes) - len(wins)
    pairs = _pair_records(rewards, wins.astype(np.int64), losses.astype(np.int64), gaps, convention)
    counts["pairs"] = pairs.height
    return pairs, counts


@dataclass(frozen=True)
class _Videos:
    """What the rule reads of each video (by input row), and the valid ones' rows in candidate order."""

    rows: np.ndarray
    yes: np.ndarray
    no: np.ndarray
    score: np.ndarray
    prompt_hash: np.ndarray
    prompts: pl.Series


def _videos(rewards: pl.DataFrame, convention: str, rows: np.ndarray, sizes: np.ndarray) -> _Videos:
    yes, no, lengths = _answer_bits(rewards["labels"])
    group_start = np.repeat(rows[np.cumsum(sizes) - sizes], sizes)
    if np.any(lengths[rows] != lengths[group_start]):
        raise ValueError("answer vectors of different checklists cannot be compared")
    prompts = rewards["prompt"]
    score = rewards[f"score_{convention}"].to_numpy()
    return _Videos(rows, yes, no, score, prompts.hash().to_numpy(), prompts)


def _batches(weights: np.ndarray, budget: int) -> Iterator[slice]:
    """Consecutive slices of `weights` that weigh at most `budget` each (or one item, when heavier)."""
    ends = np.cumsum(weights)
    start = 0
    while start < len(weights):
        base = ends[start - 1] if start else 0
        stop = max(int(np.searchsorted(ends, base + budget, side="right")), start + 1)
        yield slice(start, stop)
        start = stop


def _first_pairs(
    videos: _Videos, sizes: np.ndarray, groups: slice, margin: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Winner row, loser row and score gap of the first (i, j) of each query of `groups` that passes the
    rule, for the queries that have one."""
    owner, i, j = _ordered_pairs(sizes, groups)
    i, j = videos.rows[i], videos.rows[j]
    gap = videos.score[i] - videos.score[j]
    keep = np.flatnonzero((i != j) & (gap > margin))
    keep = keep[_dominates(videos, i[keep], j[keep])]
    keep = keep[_different_prompts(videos, i[keep], j[keep])]
    # Pairs are in query order, then in (i, j) order: the first kept one of each query is its pair.
    _, first = np.unique(owner[keep], return_index=True)
    keep = keep[first]
    return i[keep], j[keep], gap[keep]


def _candidate_order(rewards: pl.DataFrame, invalid: np.ndarray) -> np.ndarray:
    """Rows of the valid videos by query, then in candidate order; the sort is stable, so videos that tie
    on every key keep their input order. Only the keys are sorted, not the answers."""
    keys = ["query_id", "sample_index", "video_index", "video_id"]
    ordered = (
        rewards.select(keys).with_row_index("row").filter(pl.Series(~invalid)).sort(keys, maintain_order=True)
    )
    return ordered["row"].to_numpy().astype(np.int64)


def _ordered_pairs(sizes: np.ndarray, groups: slice) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every ordered pair (i, j), i = j included, of positions within each group of `groups` (a group is a
    run of `sizes[g]` consecutive positions), with its group: group by group and, within one, i-major,
    the order of `for i in group: for j in group`."""
    starts = (np.cumsum(sizes) - sizes)[groups]
    sizes = sizes[groups]
    squares = sizes * sizes
    owner = np.repeat(np.arange(len(sizes)), squares)
    offset = np.arange(squares.sum()) - np.repeat(np.cumsum(squares) - squares, squares)
    width = sizes[owner]
    return owner + groups.start, starts[owner] + offset // width, starts[owner] + offset % width


def _answer_bits(labels: pl.Series) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per video, its yes answers and its no answers as bit masks (rows of uint64 words; any other label
    is neither), and its number of answers."""
    lengths = labels.list.len().fill_null(0).to_numpy().astype(np.int64)
    masks = []
    for answer in ("yes", "no"):
        # Compared inside the lists, so that only booleans are flattened, not the strings.
        flags = labels.list.eval(pl.element().eq_missing(answer)).explode(
            empty_as_null=False, keep_nulls=False
        )
        masks.append(_bit_rows(flags, lengths))
    return masks[0], masks[1], lengths


def _bit_rows(flags: pl.Series, lengths: np.ndarray) -> np.ndarray:
    """Consecutive runs of `flags` (one run per row, of `lengths`) packed into rows of uint64 words; shorter
    runs are padded with zeros, which no comparison of two equally long runs can tell from the answers."""
    width = int(lengths.max(initial=0))
    values = flags.to_numpy()
    if np.all(lengths == width):  # one checklist: a plain reshape
        matrix = values.reshape(len(lengths), width)
    else:
        matrix = np.zeros((len(lengths), width), dtype=bool)
        rows = np.repeat(np.arange(len(lengths)), lengths)
        matrix[rows, np.arange(len(values)) - np.repeat(np.cumsum(lengths) - lengths, lengths)] = values
    packed = np.packbits(matrix, axis=1)
    words = np.zeros((len(lengths), 8 * max(1, -(-width // 64))), dtype=np.uint8)
    words[:, : packed.shape[1]] = packed
    return words.view(np.uint64)


def _dominates(videos: _Videos, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Clauses (a) and (b) for each (i[k], j[k]), on the answer masks."""
    never_worse = ~(videos.no[i] & videos.yes[j]).any(axis=1)
    once_better = (videos.yes[i] & videos.no[j]).any(axis=1)
    return never_worse & once_better


def _different_prompts(videos: _Videos, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Whether the prompt texts of videos i[k] and j[k] differ: by hash, and by text where hashes agree."""
    differ = videos.prompt_hash[i] != videos.prompt_hash[j]
    same = np.flatnonzero(~differ)
    differ[same] = videos.prompts.gather(i[same]).ne_missing(videos.prompts.gather(j[same])).to_numpy()
    return differ


def _pair_records(
    rewards: pl.DataFrame, wins: np.ndarray, losses: np.ndarray, gaps: np.ndarray, convention: str
) -> pl.DataFrame:
    fields = rewards.select("video_id", "candidate_id", "query_id", "query", "prompt")
    win, lose = fields[wins], fields[losses]
    ids = [digest("pair", "video", w, v) for w, v in zip(win["video_id"], lose["video_id"], strict=True)]
    return pl.DataFrame(
        {
            "pair_id": pl.Series(ids, dtype=pl.String),
            "query_id": win["query_id"],
            "query": win["query"],
            "chosen": win["prompt"],
            "rejected": lose["prompt"],
            "source": pl.repeat("video", len(ids), eager=True),
            "chosen_id": win["candidate_id"],
            "chosen_kind": pl.repeat("candidate", len(ids), eager=True),
            "rejected_id": lose["candidate_id"],
            "score_margin": pl.Series(gaps, dtype=pl.Float64),
            "score_convention": pl.repeat(convention, len(ids), eager=True),
            "chosen_video_id": win["video_id"],
            "rejected_video_id": lose["video_id"],
        }
    )


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
    rewards = read_frame(args.rewards, [*COLUMNS, f"score_{args.convention}"])
    pairs, counts = video_pair_frame(rewards, args.margin, args.convention)
    write_frame(args.out, pairs, "pair")
    report.counts = {"videos": rewards.height, "queries": rewards["query_id"].n_unique(), **counts}
    report.write(args.report)
    log.info("video pairs: %s", report.counts)


if __name__ == "__main__":
    main()
