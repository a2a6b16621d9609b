"""Benchmark: scoring videos against a yes/no checklist with the hf-vlm reward scorer.

Compares, on the same model and the same synthetic mp4 videos:

- ours: each mp4 decoded once, its frames sampled once (1 per second, at most 24), then
  `HFVideoVLM.answer` with the whole checklist: the video and prompt head are encoded once, the
  questions run batched on the cached prefix;
- baseline: the reward model release's pattern, for every question the video is read from disk again,
  re-sampled, and the model runs one full forward on video + question (`reference_answer`);
- for information, the baseline's per-question forwards on frames decoded once, which separates the
  cost of re-decoding from the cost of re-encoding the video.

Both must give the same labels (and P(yes) within 1e-4). The table's ratio is throughput over the
baseline's (videos/s ours / videos/s baseline), so > 1 means faster. Without --model the tiny random
Qwen2-VL of `vpo.reward.tiny_vlm` is built in a temporary folder. Run from the repository root:

    .venv/bin/python bench/bench_reward_scoring.py [--model DIR] [--videos 8] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from vpo.reward.base import Answer
from vpo.reward.frames import read_video, sample_frames, sample_indices

CHECKLIST = [
    "Is the video clear?",
    "Is the video free of blur?",
    "Does the camera move smoothly?",
    "Is the motion in the video natural and realistic?",
    "Are there any visual artifacts or distortions in the frames?",
    "Is the lighting of the scene consistent throughout the whole clip?",
    "Does the video follow the text prompt it was generated from?",
    "Is the main object visible in every frame?",
    "Are the colors bright?",
    "Is the background stable?",
    "Does the scene look physically plausible?",
    "Is the composition of the shot aesthetic and well balanced?",
    "Are the faces and hands of people free of distortion?",
    "Is the video consistent from the first frame to the last frame?",
    "Is the shot cinematic?",
    "Is the overall quality of the video high?",
]


def synthetic_video(seed: int, frames: int, size: int) -> list[np.ndarray]:
    """A coloured square moving over a noisy background; frames in [0, 1] as `export_to_video` takes."""
    rng = np.random.default_rng(seed)
    background = rng.uniform(0.0, 0.4, (size, size, 3)).astype(np.float32)
    colour = rng.uniform(0.5, 1.0, 3).astype(np.float32)
    side = size // 4
    out = []
    for t in range(frames):
        frame = background.copy()
        x = (t * 3 + seed * 5) % (size - side)
        frame[size // 3 : size // 3 + side, x : x + side] = colour
        out.append(frame)
    return out


def write_videos(folder: Path, count: int, frames: int, size: int, fps: int) -> list[Path]:
    from diffusers.utils import export_to_video

    paths = []
    for seed in range(count):
        path = folder / f"video_{seed}.mp4"
        export_to_video(synthetic_video(seed, frames, size), str(path), fps=fps)
        paths.append(path)
    return paths


def decoded_once(path: Path) -> np.ndarray:
    frames, fps = read_video(path)
    return sample_frames(frames, fps, per_second=1, max_frames=24)


def ours(scorer, paths: list[Path], questions: list[str]) -> list[list[Answer]]:
    return [scorer.answer(decoded_once(path), questions) for path in paths]


def baseline(scorer, paths: list[Path], questions: list[str]) -> list[list[Answer]]:
    return [[scorer.reference_answer(decoded_once(path), q) for q in questions] for path in paths]


def baseline_decoded_once(scorer, paths: list[Path], questions: list[str]) -> list[list[Answer]]:
    out = []
    for path in paths:
        frames = decoded_once(path)
        out.append([scorer.reference_answer(frames, q) for q in questions])
    return out


Method = Callable[..., list[list[Answer]]]


def timed(
    method: Method, scorer, paths: list[Path], questions: list[str]
) -> tuple[float, list[list[Answer]]]:
    start = time.perf_counter()
    answers = method(scorer, paths, questions)
    return time.perf_counter() - start, answers


def check_same(fast: list[list[Answer]], slow: list[list[Answer]]) -> float:
    """Raise unless the labels agree; return the largest P(yes) difference."""
    worst = 0.0
    for video_fast, video_slow in zip(fast, slow, strict=True):
        if [a.label for a in video_fast] != [a.label for a in video_slow]:
            raise AssertionError("the fast path and the baseline disagree on a label")
        worst = max(worst, *(abs(a.p_yes - b.p_yes) for a, b in zip(video_fast, video_slow, strict=True)))
    if worst > 1e-4:
        raise AssertionError(f"P(yes) differs by {worst:.2e} between the fast path and the baseline")
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default=None, help="VLM folder (default: build the tiny random Qwen2-VL)")
    parser.add_argument("--videos", type=int, default=8)
    parser.add_argument("--frames", type=int, default=9, help="frames per synthetic video")
    parser.add_argument("--size", type=int, default=32, help="frame height and width in pixels")
    parser.add_argument("--fps", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2, help="timed runs per method; the best counts")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from vpo.reward.hf_vlm import HFVideoVLM
    from vpo.reward.tiny_vlm import build_tiny_vlm

    with tempfile.TemporaryDirectory(prefix="bench-reward-") as tmp:
        folder = Path(tmp)
        os.environ.setdefault(
            "VPO_CACHE_DIR", str(folder / "cache")
        )  # weight-hash memos stay out of results/
        start = time.perf_counter()
        model = args.model or str(build_tiny_vlm(folder / "tiny-vlm"))
        built = time.perf_counter() - start
        paths = write_videos(folder, args.videos, args.frames, args.size, args.fps)
        scorer = HFVideoVLM(model, dtype=args.dtype, device=args.device, batch_size=args.batch_size)
        methods: dict[str, Method] = {
            "ours: decode once, answer() batched on the cached video prefix": ours,
            "baseline: re-read video + full forward per question": baseline,
            "(info) full forward per question, video decoded once": baseline_decoded_once,
        }
        # Warm-up on one video: the first pass over new shapes is slower for whichever method goes first.
        for method in methods.values():
            method(scorer, paths[:1], CHECKLIST)
        best = dict.fromkeys(methods, float("inf"))
        answers: dict[str, list[list[Answer]]] = {}
        for _ in range(args.repeats):
            for name, method in methods.items():
                seconds, answers[name] = timed(method, scorer, paths, CHECKLIST)
                best[name] = min(best[name], seconds)
        names = list(methods)
        worst = max(check_same(answers[names[0]], answers[name]) for name in names[1:])

    sampled = len(sample_indices(args.frames, args.fps))
    print(
        f"model: {args.model or f'tiny random Qwen2-VL (built in {built:.2f} s)'}; "
        f"{args.videos} videos of {args.frames} frames {args.size}x{args.size} at {args.fps} fps "
        f"({sampled} sampled); device {args.device}, {args.threads} threads, batch {args.batch_size}, "
        f"best of {args.repeats}"
    )
    print("| method | videos | questions | seconds | videos/s | ratio (ours/baseline) |")
    print("| --- | --- | --- | --- | --- | --- |")
    base_rate = args.videos / best[names[1]]
    for name in names:
        rate = args.videos / best[name]
        print(
            f"| {name} | {args.videos} | {len(CHECKLIST)} | {best[name]:.2f} | {rate:.2f} "
            f"| {rate / base_rate:.2f}x |"
        )
    print(f"labels identical on all {args.videos * len(CHECKLIST)} answers; max |ΔP(yes)| = {worst:.1e}")


if __name__ == "__main__":
    main()
