"""The evaluation's numbers: per-query rewards, paired win/tie/loss against the original query, rates,
and percentile-bootstrap 95% intervals over queries (the unit that was sampled)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Estimate:
    value: float | None
    low: float | None = None
    high: float | None = None

    def as_text(self, percent: bool = False, digits: int = 2) -> str:
        if self.value is None:
            return "–"
        scale, unit, places = (100.0, "%", 1) if percent else (1.0, "", digits)
        text = f"{self.value * scale:.{places}f}{unit}"
        if self.low is not None and self.high is not None:
            text += f" [{self.low * scale:.{places}f}, {self.high * scale:.{places}f}]"
        return text


def query_scores(rewards: Sequence[dict[str, Any]], convention: str) -> dict[str, float]:
    """Mean score of each query's videos under `convention`; videos with invalid answers take no part
    (their score would read an unknown answer as no)."""
    by_query: dict[str, list[float]] = defaultdict(list)
    for r in rewards:
        if not r["invalid_count"]:
            by_query[r["query_id"]].append(float(r[f"score_{convention}"]))
    return {qid: float(np.mean(scores)) for qid, scores in by_query.items()}


def paired_outcomes(method: dict[str, float], baseline: dict[str, float], tie_margin: float) -> np.ndarray:
    """+1 / 0 / −1 per query scored under both: the method's score beats, ties or trails the baseline's
    (a tie when they differ by at most `tie_margin`). Queries are taken in id order."""
    common = sorted(set(method) & set(baseline))
    gaps = np.array([method[q] - baseline[q] for q in common], dtype=float)
    return np.where(gaps > tie_margin, 1, np.where(gaps < -tie_margin, -1, 0)).astype(int)


def bootstrap(
    values: np.ndarray, statistic: Callable[[np.ndarray], np.ndarray], samples: int, seed: int
) -> Estimate:
    """`statistic` of `values` with its 95% percentile-bootstrap interval; `statistic` maps an array of
    resamples (samples × n) to one value per resample, and the data itself (1 × n) to the estimate."""
    if len(values) == 0:
        return Estimate(None)
    rng = np.random.default_rng(seed)
    index = rng.integers(0, len(values), size=(samples, len(values)))
    stats = statistic(values[index])
    low, high = np.percentile(stats, [2.5, 97.5])
    return Estimate(float(statistic(values[None, :])[0]), float(low), float(high))


def mean_estimate(values: Sequence[float], samples: int, seed: int) -> Estimate:
    return bootstrap(np.asarray(values, dtype=float), lambda a: a.mean(axis=1), samples, seed)


def win_tie_loss(outcomes: np.ndarray, samples: int, seed: int) -> dict[str, Estimate]:
    """Rates of +1, 0 and −1 with their intervals, from the same resamples of the queries."""
    result = {}
    for name, code in (("win", 1), ("tie", 0), ("loss", -1)):
        result[name] = bootstrap(outcomes, lambda a, c=code: (a == c).mean(axis=1), samples, seed)
    return result


def rate(flags: Sequence[bool], total: int) -> float | None:
    """Share of `total` items that are flagged (None when there is nothing to count)."""
    return sum(bool(f) for f in flags) / total if total else None
