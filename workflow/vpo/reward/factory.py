"""The reward backends (`reward.backend`), and the scorer built from a resolved spec."""

from __future__ import annotations

from typing import Any

from vpo.core.fingerprints import fingerprint as weights_fingerprint
from vpo.core.registry import Backend, lookup
from vpo.core.run_options import section_options
from vpo.reward.base import Answer, Scorer


def _weights(spec: dict[str, Any]) -> str:
    return weights_fingerprint(spec["model_path"], spec.get("revision"))


# Fingerprints read backend | answer mode | weights: the answer mode changes every answer.
REWARD_BACKENDS: dict[str, Backend] = {
    "hf-vlm": Backend(
        "vpo.reward.hf_vlm:HFVideoVLM",
        "envs/reward.yaml",
        lambda spec: f"hf-vlm|{spec['answer_mode']}|{_weights(spec)}",
    ),
    # Its remote code needs transformers 4.42.x, hence an env of its own.
    "visionreward": Backend(
        "vpo.reward.visionreward:VisionRewardVideo",
        "envs/reward-visionreward.yaml",
        lambda spec: f"visionreward|generate|{_weights(spec)}",
    ),
}


def reward_backend(name: str) -> Backend:
    return lookup(REWARD_BACKENDS, "reward.backend", name)


def open_scorer(spec: dict[str, Any], target: str | None = None) -> Scorer:
    """The scorer of `spec` (a target's `reward` section resolved, vpo.config.resolve.reward_spec), loaded
    now, with the batch size the run options give (those of text-to-video target `target`, if given)."""
    return reward_backend(spec["backend"]).build(section_options("reward", spec, target))


class LazyScorer:
    """A scorer whose fingerprint is known without loading weights; the model loads on first use.

    A re-run whose answers are all cached then never pays the model's load time (25 GB for VisionReward).
    """

    def __init__(self, spec: dict[str, Any], target: str | None = None):
        self.spec, self.target = spec, target
        self.fingerprint = reward_backend(spec["backend"]).fingerprint(spec)
        self._scorer: Scorer | None = None

    def answer(self, frames, questions: list[str]) -> list[Answer]:
        if self._scorer is None:
            self._scorer = open_scorer(self.spec, self.target)
        return self._scorer.answer(frames, questions)
