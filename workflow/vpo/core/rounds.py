"""Preference rounds × text-to-video targets: which checkpoint samples, trains and is the reference in
each (round, target), and where each one's files go.

Round 1 samples with the SFT checkpoint, the same for every target, so its candidates and their
critiques and refinements (text-level feedback, independent of the video model) are computed once, under
results/dpo/round-1/. From round 2 on, each target samples with its own previous checkpoint, so the text
level is per target too: results/dpo/round-<r>/<target>/. Videos, rewards, pairs and the DPO dataset are
always per (round, target), beside them. Checkpoints: results/models/sft and
results/models/dpo/round-<r>/<target>.

Paths here are relative to the repository root, as the rules name them.
"""

from __future__ import annotations

import re
from typing import Any

# The text-level folders of a round, beside its targets' folders: a target may not take these names.
TEXT_FOLDERS = ("candidates", "critiques", "refinements")
SFT_CHECKPOINT = "results/models/sft"


def rounds(cfg: dict[str, Any]) -> list[int]:
    return list(range(1, cfg["rounds"]["count"] + 1))


def targets(cfg: dict[str, Any]) -> list[str]:
    return list(cfg["targets"])


def round_targets(cfg: dict[str, Any]) -> list[tuple[int, str]]:
    """Every (round, target), round by round."""
    return [(r, t) for r in rounds(cfg) for t in targets(cfg)]


def text_phase(round_: int, target: str) -> str:
    """Where (under results/) the candidates of `round_` for `target` and their judge turns live."""
    return "dpo/round-1" if round_ == 1 else f"dpo/round-{round_}/{target}"


def text_phases(cfg: dict[str, Any]) -> list[str]:
    """Every folder with judge turns: the SFT drafts', then each round's, without repeats."""
    return list(dict.fromkeys(["sft", *(text_phase(r, t) for r, t in round_targets(cfg))]))


def parse_text_phase(phase: str) -> tuple[int, str | None]:
    """(round, target) of a DPO-side text phase; the target is None for round 1 (shared)."""
    match = re.fullmatch(r"dpo/round-(\d+)(?:/(.+))?", phase)
    if match is None:
        raise ValueError(f"{phase!r} is not a DPO round's text folder")
    return int(match.group(1)), match.group(2)


def side(phase: str) -> str:
    """`sft` or `dpo`: which judge settings a text phase uses (`<stage>.dpo_llm` on the DPO side)."""
    return "sft" if phase == "sft" else "dpo"


def round_folder(round_: int, target: str) -> str:
    """Videos, rewards, pairs and the DPO dataset of one (round, target), under results/."""
    return f"dpo/round-{round_}/{target}"


def checkpoint(round_: int, target: str) -> str:
    """The policy after `round_` for `target`; round 0 is the SFT checkpoint."""
    return SFT_CHECKPOINT if round_ == 0 else f"results/models/dpo/round-{round_}/{target}"


def sampler(phase: str) -> str:
    """The checkpoint that samples the candidates of a DPO-side text phase: the previous round's."""
    round_, target = parse_text_phase(phase)
    return checkpoint(round_ - 1, target or "")


def reference(cfg: dict[str, Any], round_: int, target: str) -> str:
    """DPO's frozen reference in `round_`: SFT, or the checkpoint the round starts from."""
    return checkpoint(0 if cfg["rounds"]["reference"] == "sft" else round_ - 1, target)


def dpo_method(round_: int, target: str) -> str:
    """The evaluation's name of a DPO checkpoint."""
    return f"dpo-r{round_}-{target}"


def dpo_methods(cfg: dict[str, Any]) -> dict[str, tuple[int, str]]:
    """Evaluation method name → (round, target) of every DPO checkpoint, target by target."""
    return {dpo_method(r, t): (r, t) for t in targets(cfg) for r in rounds(cfg)}


def locate(path: str) -> tuple[int, str | None] | None:
    """(round, target) of a file under a round's folder (target None: round 1's shared text level)."""
    match = re.search(r"(?:^|/)dpo/round-(\d+)/(?!(?:" + "|".join(TEXT_FOLDERS) + r")/)([^/]+)/", path)
    if match:
        return int(match.group(1)), match.group(2)
    # A checkpoint (results/models/dpo/round-<r>/<target>) or its job report beside it.
    match = re.search(r"(?:^|/)models/dpo/round-(\d+)/([^/]+?)(?:\.report\.json)?(?:/|$)", path)
    if match:
        return int(match.group(1)), match.group(2)
    match = re.search(r"(?:^|/)dpo/round-(\d+)/", path)
    return (int(match.group(1)), None) if match else None


def regex(values: Any) -> str:
    """A wildcard constraint matching exactly these values (none: a pattern that never matches)."""
    return "|".join(re.escape(str(v)) for v in values) or "(?!)"
