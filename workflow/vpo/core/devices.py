"""Where a model runs: one reading of a config `device` for every backend (LLM, reward VLM, T2V).

`auto` takes a GPU when torch sees one, else the CPU. `cuda` or `cuda:N` is a request for a GPU: when
torch sees none (or fewer), the job stops with the config key and the fix instead of running on the
CPU, where a paper-sized model would take days and its outputs would differ (CPU and CUDA random
streams are not the same).
"""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

_CUDA = re.compile(r"cuda(?::(\d+))?")


class DeviceError(RuntimeError):
    """A configured device this machine does not have."""


def resolve_device(device: str, key: str) -> torch.device:
    """The torch device for the config value `device` of config key `key` (named in the error)."""
    import torch  # here, not at import: callers such as the VisionReward module import without torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cpu":
        return torch.device("cpu")
    match = _CUDA.fullmatch(device)
    if match is None:
        raise DeviceError(f"{key}: unknown device {device!r}. Fix: set {key} to auto, cpu, cuda or cuda:N.")
    index = int(match.group(1) or 0)
    visible = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if index >= visible:
        seen = f"only {visible} CUDA device(s)" if visible else "no CUDA device"
        where = f"torch {torch.__version__}, built for CUDA {torch.version.cuda or 'none'}"
        where += f", CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', '(unset)')}"
        raise DeviceError(
            f"{key} is {device!r}, but torch sees {seen} here ({where}). Fix: run the job where the GPU "
            "is visible (with use_gpus: true the rule asks the scheduler for resources.gpu GPUs), or set "
            f"{key}: auto to use a GPU only where there is one, or cpu."
        )
    return torch.device(device)
