"""Build the configured reward scorer (`reward.backend`) from a resolved spec."""

from __future__ import annotations

from typing import Any

from vpo.reward.base import Scorer


def open_scorer(spec: dict[str, Any]) -> Scorer:
    backend = spec["backend"]
    if backend == "hf-vlm":
        from vpo.reward.hf_vlm import HFVideoVLM

        return HFVideoVLM(
            spec["model_path"],
            dtype=spec["dtype"],
            device=spec["device"],
            batch_size=spec["batch_size"],
            answer_mode=spec["answer_mode"],
            revision=spec.get("revision"),
        )
    if backend == "visionreward":
        from vpo.reward.visionreward import VisionRewardVideo

        return VisionRewardVideo(
            spec["model_path"],
            revision=spec.get("revision"),
            dtype=spec["dtype"],
            device=spec["device"],
            batch_size=spec["batch_size"],
        )
    raise ValueError(f"reward.backend: unknown backend {backend!r} (hf-vlm or visionreward)")


class LazyScorer:
    """A scorer whose fingerprint is known without loading weights; the model loads on first use.

    A re-run whose answers are all cached then never pays the model's load time (25 GB for VisionReward).
    """

    def __init__(self, spec: dict[str, Any]):
        from vpo.core.fingerprints import fingerprint as weights_fingerprint

        self.spec = spec
        mode = spec["answer_mode"] if spec["backend"] == "hf-vlm" else "generate"
        weights = weights_fingerprint(spec["model_path"], spec.get("revision"))
        self.fingerprint = f"{spec['backend']}|{mode}|{weights}"
        self._scorer: Scorer | None = None

    def answer(self, frames, questions: list[str]):
        if self._scorer is None:
            self._scorer = open_scorer(self.spec)
        return self._scorer.answer(frames, questions)
