"""Decoding a video once and sampling the frames a reward VLM sees (one per second, at most 24)."""

from __future__ import annotations

import math
import os

import numpy as np


def read_video(path: str | os.PathLike) -> tuple[np.ndarray, float]:
    """All frames of a video as uint8 (F, H, W, 3), and its frame rate.

    Reads with imageio's ffmpeg plugin, the same stack `export_to_video` writes with.
    """
    import imageio.v2 as imageio

    reader = imageio.get_reader(os.fspath(path), format="FFMPEG")
    try:
        fps = float(reader.get_meta_data().get("fps") or 0.0)
        frames = [np.asarray(frame)[..., :3] for frame in reader]
    finally:
        reader.close()
    if not frames:
        raise ValueError(f"{path}: no frames decoded")
    return np.stack(frames).astype(np.uint8, copy=False), fps


def sample_indices(num_frames: int, fps: float, per_second: float = 1, max_frames: int = 24) -> list[int]:
    """Frame indices at `per_second` frames per second of video time from t = 0, at most `max_frames`.

    Always at least one frame (the first), so a clip shorter than one sampling step is still scored.
    Without a usable frame rate, frames are spread evenly instead.
    """
    if num_frames <= 0:
        raise ValueError("a video needs at least one frame")
    if max_frames < 1:
        raise ValueError("max_frames must be at least 1")
    if fps <= 0 or per_second <= 0:
        count = min(num_frames, max_frames)
        return sorted({round(i * (num_frames - 1) / max(count - 1, 1)) for i in range(count)})
    step = fps / per_second
    count = min(math.ceil(num_frames / step), max_frames)
    return sorted({min(int(i * step), num_frames - 1) for i in range(max(count, 1))})


def sample_frames(frames: np.ndarray, fps: float, per_second: float = 1, max_frames: int = 24) -> np.ndarray:
    """The sampled subset of `frames` (see `sample_indices`), uint8 (F', H, W, 3) with F' >= 1."""
    return frames[sample_indices(len(frames), fps, per_second, max_frames)]
