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
from collections.abc import Mapping, Sequence
from typing import Any

import polars as pl

from vpo.core.ids import digest
from vpo.core.io import conform, polars_schema, read_frame, write_frame
from vpo.core.stage import job_report, setup_logging
from vpo.core.templates import load_template
from vpo.training.dataset import ranking_rows, write_dataset

log = logging.getLogger(__name__)

DATASET_NAME = "vpo_dpo"

# The refinement record fields a text pair is made of.
REFINEMENT_COLUMNS = {
    "item_id": pl.String,
    "query_id": pl.String,
    "query": pl.String,
    "sample_index": pl.Int64,
    "prompt": pl.String,
    "refined_prompt": pl.String,
    "status": pl.String,
}


def text_pairs(refinements: Sequence[Mapping[str, Any]]) -> tuple[list[dict[str, Any]], Counter]:
    """`text_pair_frame` on refinement records as dicts; the pairs as dicts."""
    pairs, skipped = text_pair_frame(pl.DataFrame(refinements, schema=REFINEMENT_COLUMNS))
    return pairs.to_dicts(), skipped


def text_pair_frame(refinements: pl.DataFrame) -> tuple[pl.DataFrame, Counter]:
    """One pair per query from its first usable refinement; why the other refinements made none."""
    status, refined = pl.col("status"), pl.col("refined_prompt")
    identical = refined.eq_missing(pl.col("prompt"))
    usable = (status == "ok") & ~identical
    reason = (
        pl.when(status != "ok")
        .then(pl.lit("refinement_") + status)
        .when(identical)
        .then(pl.lit("refinement_identical"))
        .when(usable.cum_sum().over("query_id") > 1)
        .then(pl.lit("query_has_pair"))
    )
    ordered = refinements.sort("query_id", "sample_index", maintain_order=True).with_columns(reason=reason)
    best = ordered.filter(pl.col("reason").is_null())
    pairs = best.select(
        pl.Series("pair_id", [digest("pair", "text", item) for item in best["item_id"]], dtype=pl.String),
        "query_id",
        "query",
        refined.alias("chosen"),
        pl.col("prompt").alias("rejected"),
        pl.lit("text").alias("source"),
        pl.col("item_id").alias("chosen_id"),
        pl.lit("refinement").alias("chosen_kind"),
        pl.col("item_id").alias("rejected_id"),
        pl.lit(None, pl.Float64).alias("score_margin"),
        *(
            pl.lit(None, pl.String).alias(c)
            for c in ("score_convention", "chosen_video_id", "rejected_video_id")
        ),
    )
    return pairs, _tally(ordered["reason"].drop_nulls())


def merge_pairs(
    text: Sequence[Mapping[str, Any]], video: Sequence[Mapping[str, Any]], shuffle_seed: int
) -> tuple[list[dict[str, Any]], Counter]:
    """`merge_pair_frame` on pair records as dicts; the pairs as dicts."""
    schema = polars_schema("pair")
    merged, skipped = merge_pair_frame(
        pl.DataFrame(text, schema=schema), pl.DataFrame(video, schema=schema), shuffle_seed
    )
    return merged.to_dicts(), skipped


def merge_pair_frame(
    text: pl.DataFrame, video: pl.DataFrame, shuffle_seed: int
) -> tuple[pl.DataFrame, Counter]:
    """Text pairs first; video pairs only for queries without one; one pair per query; seeded shuffle."""
    superseded = pl.col("query_id").is_in(text["query_id"].implode())
    reason = (
        pl.when(superseded)
        .then(pl.lit("video_superseded_by_text"))
        .when(pl.int_range(pl.len()).over("query_id") > 0)
        .then(pl.lit("video_second_pair_for_query"))
    )
    video = video.sort("query_id", "pair_id", maintain_order=True).with_columns(reason=reason)
    kept = video.filter(pl.col("reason").is_null()).drop("reason")
    # Input order must not change the shuffled order, hence the sort by id before the seeded shuffle.
    merged = pl.concat([text, kept], how="vertical_relaxed").sort("pair_id", maintain_order=True)
    order = list(range(merged.height))
    random.Random(shuffle_seed).shuffle(order)  # the permutation `shuffle` makes of any list this long
    return merged[order], _tally(video["reason"].drop_nulls())


def _tally(values: pl.Series) -> Counter:
    """Counts of the values, in order of first appearance (as a Counter filled one by one would be)."""
    counts = values.to_frame("value").group_by("value", maintain_order=True).len()
    return Counter(dict(counts.iter_rows()))


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
    text, skipped = text_pair_frame(read_frame(args.refinements, list(REFINEMENT_COLUMNS)))
    video = read_frame([args.video_pairs]) if args.video_pairs else pl.DataFrame(schema=polars_schema("pair"))
    pairs, video_skipped = merge_pair_frame(conform(text, "pair"), conform(video, "pair"), args.shuffle_seed)
    write_frame(args.pairs, pairs, "pair")
    report.counts = {
        "text_pairs": text.height,
        "video_pairs_in": video.height,
        "video_skipped": dict(video_skipped),
        "pairs": pairs.height,
        "by_source": dict(_tally(pairs["source"])),
        "text_skipped": dict(skipped),
    }
    report.write(args.report)
    if pairs.is_empty():
        raise SystemExit(
            f"no preference pair could be built ({report.counts}). The judge found nothing to "
            "refine, or no refinement parsed: see the refine logs and reports."
        )
    rows = ranking_rows(load_template(args.template), pairs)
    write_dataset(args.out_dir, DATASET_NAME, rows, ranking=True)
    log.info("pairs: %s", report.counts)


if __name__ == "__main__":
    main()
