"""The `diffusers` T2V backend: a diffusers pipeline set up from the workflow config, rendering batches.

Config decides the pipeline class, dtype, device, scheduler and memory switches; the switches that only
make sense on a GPU (model CPU offload, VAE slicing/tiling) are skipped with a log line on CPU, so the
paper's settings can be read on a laptop without crashing. A `device` asking for CUDA where there is
none stops the job (vpo.core.devices).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from vpo.core.devices import resolve_device

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

_DTYPES = {"float32": "float32", "float16": "float16", "bfloat16": "bfloat16"}

# Everything that changes the pixels: part of each video's cache key.
RENDER_KEYS = (
    "height",
    "width",
    "num_frames",
    "fps",
    "num_inference_steps",
    "guidance_scale",
    "use_dynamic_cfg",
    "negative_prompt",
    "max_sequence_length",
    "scheduler",
    "pipeline",
    "dtype",
)


@dataclass
class RenderedVideo:
    frames: np.ndarray  # (F, H, W, 3) float in [0, 1]
    prompt_tokens: int
    truncated: bool


class DiffusersT2V:
    """`t2v.backend: diffusers`: the pipeline is loaded once, then renders batch after batch."""

    def __init__(self, model_path: str, settings: dict[str, Any], revision: str | None = None):
        self.settings = settings
        self.device = resolve_device(settings["device"], "t2v.device")  # before the weights load
        self.pipe = load_pipeline(model_path, settings, self.device, revision)

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> DiffusersT2V:
        """From the `t2v` settings with `model_path` and `revision` (vpo.t2v.T2V_BACKENDS)."""
        return cls(spec["model_path"], spec, spec.get("revision"))

    def render(self, prompts: list[str], seeds: list[int]) -> list[RenderedVideo]:
        return render(self.pipe, prompts, seeds, self.settings, self.device)


def load_pipeline(
    model_path: str, settings: dict[str, Any], device: torch.device, revision: str | None = None
) -> Any:
    import diffusers
    import torch

    cls = getattr(diffusers, settings["pipeline"], None)
    if cls is None:
        raise SystemExit(
            f"t2v.pipeline: diffusers has no class {settings['pipeline']!r}. Fix: name a pipeline class "
            "such as CogVideoXPipeline or DiffusionPipeline (auto-detect from model_index.json)."
        )
    dtype = getattr(torch, _DTYPES[settings["dtype"]])
    pipe = cls.from_pretrained(model_path, dtype=dtype, revision=revision)
    if settings["scheduler"]:
        scheduler_cls = getattr(diffusers, settings["scheduler"], None)
        if scheduler_cls is None:
            raise SystemExit(f"t2v.scheduler: diffusers has no scheduler class {settings['scheduler']!r}.")
        pipe.scheduler = scheduler_cls.from_config(pipe.scheduler.config)  # keeps the trained betas
    cuda = device.type == "cuda"
    memory = settings["memory"]
    if not cuda and any(memory.values()):
        log.info("t2v: on the CPU, memory switches %s are skipped", {k for k, v in memory.items() if v})
    if cuda and memory["cpu_offload"]:
        pipe.enable_model_cpu_offload(device=device)
    else:
        pipe.to(device)
    if cuda and memory["vae_slicing"]:
        pipe.vae.enable_slicing()
    if cuda and memory["vae_tiling"]:
        pipe.vae.enable_tiling()
    pipe.set_progress_bar_config(disable=True)
    return pipe


def prompt_length(pipe, prompt: str) -> int:
    """Tokens the pipeline's text encoder would read before truncation (special tokens included)."""
    return len(pipe.tokenizer(prompt, add_special_tokens=True)["input_ids"])


def render(
    pipe: Any, prompts: list[str], seeds: list[int], settings: dict[str, Any], device: torch.device
) -> list[RenderedVideo]:
    """Render one video per (prompt, seed); each item has its own generator, so batching keeps seeds."""
    import torch

    generators = [torch.Generator(device).manual_seed(s) for s in seeds]
    kwargs: dict[str, Any] = {
        "prompt": prompts,
        "negative_prompt": [settings["negative_prompt"]] * len(prompts),
        "height": settings["height"],
        "width": settings["width"],
        "num_frames": settings["num_frames"],
        "num_inference_steps": settings["num_inference_steps"],
        "guidance_scale": settings["guidance_scale"],
        "generator": generators,
        "output_type": "np",
    }
    if settings["use_dynamic_cfg"]:
        kwargs["use_dynamic_cfg"] = True
    if settings["max_sequence_length"] is not None:
        kwargs["max_sequence_length"] = settings["max_sequence_length"]
    with torch.inference_mode():
        frames = pipe(**kwargs).frames
    limit = settings["max_sequence_length"]
    videos = []
    for prompt, video in zip(prompts, frames, strict=True):
        n_tokens = prompt_length(pipe, prompt)
        videos.append(RenderedVideo(np.asarray(video), n_tokens, limit is not None and n_tokens > limit))
    return videos
