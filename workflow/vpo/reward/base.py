"""The scorer contract shared by every reward backend, and the yes/no normalization of raw answers."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np

Label = Literal["yes", "no", "invalid"]
_WORD = re.compile(r"[a-z]+")


def normalize_answer(raw: str | None) -> Label:
    """`yes`/`no` when the answer's first word is one of them (any case, punctuation ignored), else invalid.

    Anything else is kept as `invalid`, never read as "no": the reward model's own release silently
    counted such answers as "no".
    """
    text = (raw or "").strip().lstrip("\"'*([:-.,").lower()
    match = _WORD.match(text)
    if match is None:
        return "invalid"
    word = match.group(0)
    return word if word in ("yes", "no") else "invalid"  # type: ignore[return-value]


@dataclass(frozen=True)
class Answer:
    """One question's answer: the model's text, its normalized label and, where known, P(yes)."""

    raw: str
    label: Label
    p_yes: float | None = None


class Scorer(Protocol):
    """Answers every question of a checklist about one video.

    `frames` are the sampled frames of one video, uint8 (F, H, W, 3), decoded once by the caller;
    an implementation must encode them once and ask all `questions` from that encoding (batched),
    never re-reading the video per question. `fingerprint` identifies model weights and answer mode:
    it is part of the item-cache key.
    """

    fingerprint: str

    def answer(self, frames: np.ndarray, questions: list[str]) -> list[Answer]: ...
