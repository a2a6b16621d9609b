"""Report pages of the video-level feedback: candidates side by side per query, and the reward histogram.

The page embeds each mp4 as a data URI, so it works inside `snakemake --report` and as a single file
sent to a colleague; `--max-queries` bounds its size at paper scale.
"""

from __future__ import annotations

import argparse
import base64
import logging
from collections import defaultdict
from pathlib import Path
from typing import Any

from vpo.core.io import atomic_write_bytes, read_many, read_records
from vpo.core.provenance import log_placement
from vpo.core.stage import setup_logging
from vpo.pages.plots import plot_rewards, save_svg
from vpo.pages.templating import render

log = logging.getLogger(__name__)

_MARK = {"yes": "✔", "no": "✘", "invalid": "?"}


def render_page(
    rewards: list[dict[str, Any]], pairs: list[dict[str, Any]], max_queries: int, convention: str
) -> str:
    """The first `max_queries` queries (by id), each with its candidate videos in sampling order; the
    winner and loser of a video-level pair are framed green and red."""
    roles: dict[str, str] = {}
    for p in pairs:
        roles[p["chosen_video_id"]] = "win"
        roles[p["rejected_video_id"]] = "lose"
    by_query: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rewards:
        by_query[r["query_id"]].append(r)
    queries = []
    for qid in sorted(by_query)[:max_queries]:
        videos = sorted(by_query[qid], key=lambda r: (r["sample_index"], r["video_index"]))
        candidates = [
            {
                "role": roles.get(r["video_id"], ""),
                "video": base64.b64encode(Path(r["video_path"]).read_bytes()).decode("ascii"),
                "score": r[f"score_{convention}"],
                "marks": "".join(_MARK[label] for label in r["labels"]),
                "prompt": r["prompt"],
            }
            for r in videos
        ]
        queries.append({"text": videos[0]["query"], "candidates": candidates})
    return render(
        "videos.html.j2",
        queries=queries,
        total_queries=len(by_query),
        pairs=len(pairs),
        convention=convention,
        question_ids=rewards[0]["question_ids"] if rewards else [],
    )


def main(argv: list[str] | None = None) -> None:
    setup_logging()
    log_placement("video_report")
    p = argparse.ArgumentParser(prog="python -m vpo.pages.video_report", description=__doc__)
    p.add_argument("--rewards", nargs="+", required=True)
    p.add_argument("--pairs", required=True, help="video-level pairs (Parquet)")
    p.add_argument("--max-queries", type=int, default=20)
    p.add_argument("--convention", default="vpo_sum")
    p.add_argument("--page", required=True, help="HTML page to write")
    p.add_argument("--plot", required=True, help="SVG histogram to write")
    args = p.parse_args(argv)
    rewards = read_many(args.rewards)
    page = render_page(rewards, read_records(args.pairs), args.max_queries, args.convention)
    atomic_write_bytes(args.page, page.encode("utf-8"))
    save_svg(plot_rewards(rewards), args.plot, salt="reward_distribution")
    log.info("report page %s (%d bytes), plot %s", args.page, len(page), args.plot)


if __name__ == "__main__":
    main()
