"""Stage `generate_videos`: render every sampled candidate prompt of one job's part into mp4 videos.

One video per (candidate, seed index), the seed derived from the candidate id. Videos are stored in a
content-addressed store (results/state/videos/<key>.mp4, key = pipeline fingerprint + prompt + render
settings + seed), so a killed or pre-empted job, or a re-run after a change elsewhere, renders only what
is missing. The pipeline is loaded once per job, and only when something is missing.
"""

from __future__ import annotations

import argparse
import json
import logging
from collections import Counter
from pathlib import Path
from typing import Any

from tqdm import tqdm

from vpo.core.fingerprints import sha256_file
from vpo.core.ids import derive_seed, digest, part_of
from vpo.core.io import read_records, write_json, write_records
from vpo.core.layout import CACHE_DIR, videos_dir
from vpo.core.run_options import section_options
from vpo.core.stage import job_report, setup
from vpo.t2v import t2v_backend
from vpo.t2v.export import write_mp4
from vpo.t2v.pipeline import RENDER_KEYS

log = logging.getLogger(__name__)


class VideoCache:
    """mp4 + a JSON sidecar per key; both written atomically, the mp4 first, so the sidecar marks done."""

    def __init__(self, root: str | Path):
        self.root = videos_dir(root)

    def video_path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.mp4"

    def meta_path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        meta, video = self.meta_path(key), self.video_path(key)
        if not (meta.exists() and video.exists()):
            return None
        return json.loads(meta.read_text(encoding="utf-8"))

    def put(self, key: str, frames, fps: int, meta: dict[str, Any]) -> dict[str, Any]:
        write_mp4(frames, self.video_path(key), fps)
        meta = {**meta, "sha256": sha256_file(self.video_path(key))}
        write_json(self.meta_path(key), meta)
        return meta


def plan(
    candidates: list[dict[str, Any]],
    settings: dict[str, Any],
    fingerprint: str,
    videos_per_prompt: int,
    root_seed: int,
    seed_by: str = "item_id",
    benchmark_videos: int | None = None,
) -> list[dict[str, Any]]:
    """The videos this job must provide: one item per (candidate with a prompt, seed index).

    Seeds derive from `seed_by` of each record: the candidate's id (training: every candidate its own
    noise), or the query's id (evaluation: every method's prompt for a query gets the same noise, so
    the comparison between methods is paired). An evaluation prompt of a benchmark suite gets
    `benchmark_videos` videos when set (VBench's protocol renders 5)."""
    render_params = {k: settings[k] for k in RENDER_KEYS}
    items = []
    for c in candidates:
        count = benchmark_videos if benchmark_videos and c.get("subset") == "benchmark" else videos_per_prompt
        for index in range(count):
            seed = derive_seed(root_seed, "t2v", c[seed_by], index)
            key = digest("t2v", fingerprint, c["prompt"], render_params, seed, length=64)
            items.append({"candidate": c, "video_index": index, "seed": seed, "key": key})
    return items


def missing_videos(manifests: list[str]) -> list[tuple[str, list[str]]]:
    """(manifest, its listed videos that no longer exist) for every existing manifest with gaps."""
    import polars as pl

    gaps = []
    for manifest in manifests:
        if Path(manifest).exists():
            paths = pl.read_parquet(manifest, columns=["video_path"])["video_path"].to_list()
            gone = [p for p in paths if not Path(p).exists()]
            if gone:
                gaps.append((manifest, gone))
    return gaps


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m vpo.stages.generate_videos", description=__doc__)
    p.add_argument("--candidates", required=True, help="candidate records of one shard (Parquet)")
    p.add_argument("--part", type=int, default=0, help="which part of the shard this job renders")
    p.add_argument("--parts", type=int, default=1, help="parts per shard (from t2v.items_per_job)")
    p.add_argument("--model", required=True, help="diffusers pipeline folder or hub id")
    p.add_argument("--revision", default=None)
    p.add_argument("--t2v", type=json.loads, required=True, help="t2v settings as JSON")
    p.add_argument("--target", default=None, help="text-to-video target whose run options apply")
    p.add_argument("--seed", type=int, required=True, help="root seed")
    p.add_argument(
        "--seed-by",
        choices=["item_id", "query_id"],
        default="item_id",
        help="what each video's seed derives from",
    )
    p.add_argument(
        "--benchmark-videos-per-prompt", type=int, default=None,
        help="videos per evaluation prompt of a benchmark suite (default: as the others)",
    )  # fmt: skip
    p.add_argument("--cache-dir", default=CACHE_DIR)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", required=True, help="video records (Parquet)")
    p.add_argument("--report", required=True)
    return p


def main(argv: list[str] | None = None) -> None:
    args = make_parser().parse_args(argv)
    setup(args.threads)
    revision = args.revision or None
    # The rule's settings decide the pixels; batch size and memory switches come from the run options.
    settings = {
        **section_options("t2v", args.t2v, args.target),
        "model_path": args.model,
        "revision": revision,
    }
    backend = t2v_backend(settings["backend"])
    report = job_report("generate_videos", args)
    report.add_inputs([args.candidates])
    report.add_models([args.model])
    rows = read_records(args.candidates)
    mine = [r for r in rows if part_of(r["item_id"], args.parts) == args.part]
    status = Counter(r["status"] for r in mine)
    with_prompt = [r for r in mine if r["status"] == "ok"]
    fingerprint = backend.fingerprint(settings)
    items = plan(
        with_prompt, settings, fingerprint, settings["videos_per_prompt"], args.seed, args.seed_by,
        args.benchmark_videos_per_prompt,
    )  # fmt: skip
    cache = VideoCache(args.cache_dir)
    metas: dict[str, dict[str, Any]] = {}
    for item in items:
        meta = cache.get(item["key"])
        if meta is not None:
            metas[item["key"]] = meta
    missing = [i for i in items if i["key"] not in metas]
    log.info("%d videos planned, %d cached, %d to render", len(items), len(metas), len(missing))
    if missing:
        t2v = backend.build(settings)
        batch = settings["batch_size"]
        with tqdm(total=len(missing), desc="t2v", unit="video", mininterval=5) as progress:
            for start in range(0, len(missing), batch):
                chunk = missing[start : start + batch]
                prompts = [i["candidate"]["prompt"] for i in chunk]
                videos = t2v.render(prompts, [i["seed"] for i in chunk])
                for item, video in zip(chunk, videos, strict=True):
                    meta = {
                        "prompt": item["candidate"]["prompt"],
                        "seed": item["seed"],
                        "fingerprint": fingerprint,
                        "num_frames": int(video.frames.shape[0]),
                        "height": int(video.frames.shape[1]),
                        "width": int(video.frames.shape[2]),
                        "fps": settings["fps"],
                        "prompt_tokens": video.prompt_tokens,
                        "truncated": video.truncated,
                    }
                    metas[item["key"]] = cache.put(item["key"], video.frames, settings["fps"], meta)
                progress.update(len(chunk))
    records = []
    for item in items:
        c, meta = item["candidate"], metas[item["key"]]
        records.append(
            {
                "video_id": item["key"][:16],
                "candidate_id": c["item_id"],
                "query_id": c["query_id"],
                "query": c["query"],
                "prompt": c["prompt"],
                "sample_index": c["sample_index"],
                "video_index": item["video_index"],
                "seed": item["seed"],
                "video_path": cache.video_path(item["key"]).as_posix(),
                "video_sha256": meta["sha256"],
                "num_frames": meta["num_frames"],
                "height": meta["height"],
                "width": meta["width"],
                "fps": meta["fps"],
                "prompt_tokens": meta["prompt_tokens"],
                "truncated": meta["truncated"],
                "model_fingerprint": fingerprint,
            }
        )
    write_records(args.out, records, "video")
    report.counts = {
        "candidates": len(mine),
        "candidates_without_prompt": {k: v for k, v in status.items() if k != "ok"},
        "videos": len(records),
        "rendered": len(missing),
        "cache_hits": len(items) - len(missing),
        "truncated_prompts": sum(r["truncated"] for r in records),
    }
    report.write(args.report)
    log.info("videos: %s", report.counts)


if __name__ == "__main__":
    main()
