"""Stage `score_videos`: a checklist reward model answers every question about every video of a part.

Each video is decoded once, its frames sampled once (one per second, at most 24, as the method does),
and all questions are asked from that one encoding. Answers are cached per video under a key of
(scorer fingerprint, video sha256, rendered questions, frame sampling), so a re-run, or a video that
comes back byte-identical, costs nothing. Answers that are neither yes nor no are kept as `invalid`
and counted: they never silently become "no".
"""

from __future__ import annotations

import argparse
import json
import logging
from collections import Counter
from pathlib import Path
from typing import Any

from tqdm import tqdm

from vpo.core.ids import digest
from vpo.core.io import atomic_write_bytes, read_records, write_records
from vpo.core.layout import CACHE_DIR
from vpo.core.stage import job_report, setup
from vpo.reward.base import Answer, Scorer
from vpo.reward.checklist import Checklist, load_checklist
from vpo.reward.factory import LazyScorer
from vpo.reward.frames import read_video, sample_frames

log = logging.getLogger(__name__)


class AnswerCache:
    def __init__(self, root: str | Path):
        self.root = Path(root) / "rewards"

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> list[Answer] | None:
        path = self._path(key)
        if not path.exists():
            return None
        return [Answer(**a) for a in json.loads(path.read_text(encoding="utf-8"))["answers"]]

    def put(self, key: str, answers: list[Answer]) -> None:
        data = {"key": key, "answers": [a.__dict__ for a in answers]}
        atomic_write_bytes(self._path(key), json.dumps(data, ensure_ascii=False).encode("utf-8"))


def score_videos(
    videos: list[dict[str, Any]],
    scorer: Scorer,
    checklist: Checklist,
    frames_cfg: dict[str, Any],
    cache: AnswerCache,
) -> tuple[list[dict[str, Any]], Counter]:
    counts: Counter = Counter()
    records = []
    for video in tqdm(videos, desc="reward", unit="video", mininterval=5, disable=not videos):
        questions = checklist.render(video["query"])
        key = digest("reward", scorer.fingerprint, video["video_sha256"], questions, frames_cfg, length=64)
        answers = cache.get(key)
        if answers is None:
            frames, fps = read_video(video["video_path"])
            sampled = sample_frames(frames, fps, frames_cfg["per_second"], frames_cfg["max_frames"])
            answers = scorer.answer(sampled, questions)
            cache.put(key, answers)
            counts["scored"] += 1
        else:
            counts["cache_hits"] += 1
        labels = [a.label for a in answers]
        counts.update(f"answers_{label}" for label in labels)
        scores = checklist.scores(labels)
        records.append(
            {
                **{k: video[k] for k in _CARRIED},
                "checklist": checklist.name,
                "question_ids": [q.id for q in checklist.questions],
                "raw_answers": [a.raw for a in answers],
                "labels": labels,
                "p_yes": [a.p_yes for a in answers],
                "invalid_count": labels.count("invalid"),
                "score_vpo_sum": scores["vpo_sum"],
                "score_visionreward_mean": scores["visionreward_mean"],
                "scorer_fingerprint": scorer.fingerprint,
            }
        )
    counts["videos_with_invalid_answers"] = sum(1 for r in records if r["invalid_count"])
    return records, counts


_CARRIED = (
    "video_id",
    "candidate_id",
    "query_id",
    "query",
    "prompt",
    "sample_index",
    "video_index",
    "video_path",
    "video_sha256",
)


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m vpo.stages.score_videos", description=__doc__)
    p.add_argument("--videos", required=True, help="video records of one part (Parquet)")
    p.add_argument("--checklist", required=True, help="checklist file (YAML)")
    p.add_argument("--scorer", type=json.loads, required=True, help="resolved reward spec as JSON")
    p.add_argument("--target", default=None, help="text-to-video target whose run options apply")
    p.add_argument(
        "--skip-benchmark", default=None, metavar="QUERIES",
        help="held-out queries (Parquet): leave out the benchmark suites' videos (VBench scores them)",
    )  # fmt: skip
    p.add_argument("--cache-dir", default=CACHE_DIR)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", required=True, help="reward records (Parquet)")
    p.add_argument("--report", required=True)
    return p


def main(argv: list[str] | None = None) -> None:
    args = make_parser().parse_args(argv)
    setup(args.threads)
    report = job_report("score_videos", args)
    report.add_inputs([args.videos, args.checklist])
    report.add_models([args.scorer.get("model_path")])
    checklist = load_checklist(args.checklist)
    frames_cfg = {"per_second": args.scorer["frames_per_second"], "max_frames": args.scorer["max_frames"]}
    scorer = LazyScorer(args.scorer, args.target)
    videos = read_records(args.videos)
    if args.skip_benchmark:
        report.add_inputs([args.skip_benchmark])
        benchmark = {q["query_id"] for q in read_records(args.skip_benchmark) if q["subset"] == "benchmark"}
        videos = [v for v in videos if v["query_id"] not in benchmark]
    records, counts = score_videos(videos, scorer, checklist, frames_cfg, AnswerCache(args.cache_dir))
    write_records(args.out, records, "reward")
    scores = [r["score_vpo_sum"] for r in records]
    report.counts = {"videos": len(records), "questions": len(checklist.questions), **counts}
    report.extra["score_vpo_sum"] = (
        {"min": min(scores), "mean": sum(scores) / len(scores), "max": max(scores)} if scores else None
    )
    report.write(args.report)
    log.info("rewards: %s", report.counts)


if __name__ == "__main__":
    main()
