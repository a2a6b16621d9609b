"""Report pages of the video-level feedback: candidates side by side per query, and the reward histogram.

The page embeds each mp4 as a data URI, so it works inside `snakemake --report` and as a single file
sent to a colleague; `--max-queries` bounds its size at paper scale.
"""

from __future__ import annotations

import argparse
import base64
import html
import logging
from collections import defaultdict
from pathlib import Path
from typing import Any

from vpo.core.io import atomic_write_bytes, read_many, read_records
from vpo.core.provenance import log_placement
from vpo.core.stage import setup_logging

log = logging.getLogger(__name__)

_MARK = {"yes": "✔", "no": "✘", "invalid": "?"}
_STYLE = """
body { font-family: sans-serif; margin: 1em; }
.query { margin-bottom: 2em; border-bottom: 1px solid #ccc; padding-bottom: 1em; }
.row { display: flex; gap: 1em; flex-wrap: wrap; }
.cand { width: 260px; border: 3px solid transparent; padding: 4px; }
.cand.win { border-color: #2a2; } .cand.lose { border-color: #c33; }
.cand video { width: 256px; image-rendering: pixelated; background: #000; }
.prompt { font-size: 0.85em; } .marks { font-family: monospace; }
"""


def _video_tag(path: str) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f'<video controls loop autoplay muted src="data:video/mp4;base64,{data}"></video>'


def render_page(
    rewards: list[dict[str, Any]], pairs: list[dict[str, Any]], max_queries: int, convention: str
) -> str:
    roles: dict[str, str] = {}
    for p in pairs:
        roles[p["chosen_video_id"]] = "win"
        roles[p["rejected_video_id"]] = "lose"
    by_query: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rewards:
        by_query[r["query_id"]].append(r)
    shown = sorted(by_query)[:max_queries]
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>VPO candidate videos</title>",
        f"<style>{_STYLE}</style></head><body>",
        f"<h1>Candidate videos per query</h1><p>{len(shown)} of {len(by_query)} queries; "
        f"{len(pairs)} video-level pairs; score convention <code>{html.escape(convention)}</code>. "
        "Question order: " + html.escape(", ".join(rewards[0]["question_ids"]) if rewards else "") + "</p>",
    ]
    for qid in shown:
        videos = sorted(by_query[qid], key=lambda r: (r["sample_index"], r["video_index"]))
        parts.append(f"<div class='query'><h3>{html.escape(videos[0]['query'])}</h3><div class='row'>")
        for r in videos:
            marks = "".join(_MARK[label] for label in r["labels"])
            parts.append(
                f"<div class='cand {roles.get(r['video_id'], '')}'>{_video_tag(r['video_path'])}"
                f"<div><b>{r[f'score_{convention}']:.3f}</b> <span class='marks'>{marks}</span></div>"
                f"<div class='prompt'>{html.escape(r['prompt'])}</div></div>"
            )
        parts.append("</div></div>")
    parts.append("</body></html>")
    return "".join(parts)


def plot_distribution(rewards: list[dict[str, Any]], out: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    for ax, convention in zip(axes, ("vpo_sum", "visionreward_mean"), strict=True):
        ax.hist([r[f"score_{convention}"] for r in rewards], bins=20, color="#4477aa")
        ax.set_xlabel(convention)
        ax.set_ylabel("videos")
    invalid = sum(1 for r in rewards if r["invalid_count"])
    fig.suptitle(f"Reward of {len(rewards)} candidate videos ({invalid} with invalid answers)")
    fig.tight_layout()
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="svg")
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    setup_logging()
    log_placement("video_report")
    p = argparse.ArgumentParser(prog="python -m vpo.pages.video_page", description=__doc__)
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
    plot_distribution(rewards, args.plot)
    log.info("report page %s (%d bytes), plot %s", args.page, len(page), args.plot)


if __name__ == "__main__":
    main()
