"""Checklist files: the yes/no questions a reward VLM answers about a video, with one weight each.

Format (YAML): `name`, then `questions`, a list of `{id, text, weight}`. A question whose text holds
`{query}` is an alignment question: the user's original query is filled in (not the expanded prompt,
as the method does). Scores come under named conventions, and the name travels with every score:

- `vpo_sum`: Σ wᵢ · 1[answerᵢ = yes] (the VPO paper's score);
- `visionreward_mean`: Σ wᵢ · (+1 if yes else −1) / #(wᵢ ≠ 0), i.e. (2 · vpo_sum − Σ w) / #(wᵢ ≠ 0),
  VisionReward's own, monotone in vpo_sum.

An `invalid` answer adds nothing to either sum (it is not a yes, and it is not a no either: videos with
invalid answers are counted and kept out of video-level pairs).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

CONVENTIONS = ("vpo_sum", "visionreward_mean")


class ChecklistError(ValueError):
    """A checklist file that cannot be used; the message names the file, the entry and the fix."""


@dataclass(frozen=True)
class Question:
    id: str
    text: str
    weight: float

    @property
    def uses_query(self) -> bool:
        return "{query}" in self.text


@dataclass(frozen=True)
class Checklist:
    name: str
    questions: tuple[Question, ...]

    def render(self, query: str) -> list[str]:
        """Question texts for one video, alignment questions filled with the user's query."""
        return [q.text.replace("{query}", query) for q in self.questions]

    @property
    def weights(self) -> list[float]:
        return [q.weight for q in self.questions]

    def scores(self, labels: list[str]) -> dict[str, float]:
        """Both conventions from one video's labels (in question order)."""
        if len(labels) != len(self.questions):
            raise ValueError(f"{len(labels)} answers for {len(self.questions)} questions")
        vpo_sum = sum(q.weight for q, label in zip(self.questions, labels, strict=True) if label == "yes")
        nonzero = sum(1 for q in self.questions if q.weight != 0) or 1
        total = sum(self.weights)
        return {"vpo_sum": vpo_sum, "visionreward_mean": (2 * vpo_sum - total) / nonzero}


def load_checklist(path: str | Path) -> Checklist:
    path = Path(path)
    try:
        data: Any = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ChecklistError(f"checklist {path} not found. Fix: point reward.checklist at a file.") from None
    except yaml.YAMLError as exc:
        raise ChecklistError(f"checklist {path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("questions"), list) or not data["questions"]:
        raise ChecklistError(f"checklist {path}: needs `name` and a non-empty `questions` list.")
    questions, seen = [], set()
    for index, entry in enumerate(data["questions"]):
        where = f"checklist {path}: questions[{index}]"
        if not isinstance(entry, dict) or set(entry) != {"id", "text", "weight"}:
            raise ChecklistError(f"{where}: needs exactly the keys id, text, weight (got {entry!r}).")
        if not isinstance(entry["weight"], (int, float)) or entry["weight"] < 0:
            raise ChecklistError(f"{where}: weight must be a number ≥ 0 (got {entry['weight']!r}).")
        if entry["id"] in seen:
            raise ChecklistError(f"{where}: duplicate id {entry['id']!r}. Fix: make ids unique.")
        seen.add(entry["id"])
        questions.append(Question(str(entry["id"]), str(entry["text"]).strip(), float(entry["weight"])))
    return Checklist(str(data.get("name") or path.stem), tuple(questions))
