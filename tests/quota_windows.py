"""Shared by the quota tests: how far a stream of sends went beyond what a token bucket refills."""

from __future__ import annotations


def max_excess(events: list[tuple[float, float]], rate: float, slack_s: float) -> float:
    """The largest sum of amounts (events: time, amount) in a window [t_i, t_j] minus rate × (its length +
    slack_s): what a bucket refilled at `rate` per second must have held for the events to fit."""
    events = sorted(events)
    worst = 0.0
    for i, (start, _) in enumerate(events):
        total = 0.0
        for end, amount in events[i:]:
            total += amount
            worst = max(worst, total - rate * (end - start + slack_s))
    return worst
