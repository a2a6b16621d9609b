"""mp4 files: written atomically with diffusers' `export_to_video` (imageio + imageio-ffmpeg)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from vpo.core.io import make_shareable


def write_mp4(frames: np.ndarray, path: str | os.PathLike, fps: int) -> None:
    """Write (F, H, W, 3) frames in [0, 1] as an H.264 mp4; readers never see a half-written file."""
    from diffusers.utils import export_to_video

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".mp4")
    os.close(fd)
    try:
        export_to_video(list(frames), tmp, fps=fps)
        make_shareable(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
