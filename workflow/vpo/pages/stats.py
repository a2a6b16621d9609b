"""Per-stage statistics of a run: the counts and LLM figures of each stage's jobs added up."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from vpo.pages.jobs import STAGE_ORDER, JobRow

# Statuses that are not a problem; any other status with a count is highlighted.
GOOD_STATUS = {"ok", "included", "yes", "no"}
# Counters outside `by_status` that a reader should notice when they are not zero.
PROBLEM_KEYS = {
    "retried",
    "failed",
    "refused",
    "truncated",
    "truncated_prompts",
    "answers_invalid",
    "videos_with_invalid_answers",
    "queries_without_pair",
}


def merge_counts(total: dict[str, Any], counts: Mapping[str, Any]) -> dict[str, Any]:
    """Add one job's counts into the stage total: numbers add up, nested mappings merge, flags OR."""
    for key, value in counts.items():
        if isinstance(value, Mapping):
            merge_counts(total.setdefault(key, {}), value)
        elif isinstance(value, bool):
            total[key] = bool(total.get(key)) or value
        elif isinstance(value, int | float):
            total[key] = total.get(key, 0) + value
        elif value is not None and key not in total:
            total[key] = value
        elif value is not None and total[key] != value and str(value) not in str(total[key]):
            total[key] = f"{total[key]}, {value}"
    return total


@dataclass
class StageStats:
    stage: str
    jobs: int
    counts: dict[str, Any]
    llm: dict[str, Any] | None
    fingerprints: list[str]
    cost_usd: float | None
    wall_s: float


def stage_stats(jobs: Sequence[JobRow]) -> list[StageStats]:
    """Counts and LLM statistics summed over each stage's jobs, in pipeline order."""
    groups: dict[str, list[JobRow]] = {}
    for job in jobs:
        groups.setdefault(job.stage, []).append(job)
    order = {name: i for i, name in enumerate(STAGE_ORDER)}
    names = sorted(groups, key=lambda s: (order.get(s, len(order)), min(j.record.started for j in groups[s])))
    stats = []
    for name in names:
        counts: dict[str, Any] = {}
        llm: dict[str, Any] | None = None
        fingerprints: list[str] = []
        cost: float | None = None
        for job in groups[name]:
            merge_counts(counts, job.record.data.get("counts") or {})
            entry = job.record.data.get("llm")
            if entry:
                llm = merge_counts(
                    llm if llm is not None else {}, {k: v for k, v in entry.items() if k != "fingerprint"}
                )
                if entry.get("fingerprint") and entry["fingerprint"] not in fingerprints:
                    fingerprints.append(entry["fingerprint"])
                usage = entry.get("usage") or {}
                if usage.get("cost_usd") is not None:
                    cost = (cost or 0.0) + float(usage["cost_usd"])
        wall = sum(float(j.record.provenance.get("wall_s") or 0) for j in groups[name])
        stats.append(StageStats(name, len(groups[name]), counts, llm, fingerprints, cost, wall))
    return stats


def _get(counts: Mapping[str, Any], dotted: str) -> Any:
    node: Any = counts
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


# What goes in and comes out of each stage: (meaning, count of items in, count of items out).
_IN_OUT: dict[str, tuple[str, Callable[[Mapping], Any], Callable[[Mapping], Any]]] = {
    "curate": ("raw queries → kept", lambda c: c.get("raw"), lambda c: c.get("kept")),
    "draft": ("queries → usable drafts", lambda c: c.get("queries"), lambda c: _get(c, "by_status.ok") or 0),
    "sample": (
        "queries → usable candidates",
        lambda c: c.get("queries"),
        lambda c: _get(c, "by_status.ok") or 0,
    ),
    "critique": ("prompts → verdicts", lambda c: c.get("items"), lambda c: _get(c, "by_status.ok") or 0),
    "refine": ("judged No → refined", lambda c: c.get("judged_no"), lambda c: _get(c, "by_status.ok") or 0),
    "sft_data": ("queries → SFT examples", lambda c: c.get("queries"), lambda c: c.get("examples")),
    "generate_videos": ("candidates → videos", lambda c: c.get("candidates"), lambda c: c.get("videos")),
    "score_videos": ("videos → scored", lambda c: c.get("videos"), lambda c: c.get("videos")),
    "video_pairs": ("queries → video pairs", lambda c: c.get("queries"), lambda c: c.get("pairs")),
    "build_pairs": (
        "text + video pairs → DPO pairs",
        lambda c: (c.get("text_pairs") or 0) + (c.get("video_pairs_in") or 0),
        lambda c: c.get("pairs"),
    ),
}
# Counts the items columns already show, left out of the stage's other counts.
IN_OUT_KEYS = {"raw", "kept", "queries", "items", "judged_no", "examples", "candidates", "pairs"}


def in_out(stats: StageStats) -> tuple[str, Any, Any]:
    """(meaning, items in, items out) of a stage; ("", None, None) for a stage without such a count."""
    spec = _IN_OUT.get(stats.stage.split(" ")[0])
    if spec is None:
        return "", None, None
    meaning, n_in, n_out = spec
    return meaning, n_in(stats.counts), n_out(stats.counts)
