"""Client-side pacing for an API quota: requests per minute, tokens per minute, and a shared pause.

Both limits are token buckets refilled continuously (capacity = one minute of quota), so a burst at
start-up is allowed up to the quota and the long-run rate never exceeds it. A 429 answer pauses every
request of the client, not only the one that saw it: the quota is shared, so are the consequences.
"""

from __future__ import annotations

import asyncio
import time


class _Bucket:
    def __init__(self, per_minute: float):
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self.level = self.capacity
        self.stamp = time.monotonic()

    def wait_for(self, amount: float) -> float:
        """Seconds until `amount` is available (0 when it is); refills first."""
        now = time.monotonic()
        self.level = min(self.capacity, self.level + (now - self.stamp) * self.rate)
        self.stamp = now
        # A single request larger than the whole bucket may go once the bucket is full.
        need = min(amount, self.capacity) - self.level
        return max(0.0, need / self.rate)

    def take(self, amount: float) -> None:
        self.level -= amount


class RateLimiter:
    """`await acquire(tokens)` before each request; `pause(seconds)` after a 429 or a Retry-After."""

    def __init__(self, requests_per_minute: float | None = None, tokens_per_minute: float | None = None):
        self._buckets: list[tuple[_Bucket, bool]] = []  # (bucket, counts tokens rather than requests)
        if requests_per_minute:
            self._buckets.append((_Bucket(requests_per_minute), False))
        if tokens_per_minute:
            self._buckets.append((_Bucket(tokens_per_minute), True))
        self._paused_until = 0.0
        self._lock = asyncio.Lock()

    def pause(self, seconds: float) -> None:
        self._paused_until = max(self._paused_until, time.monotonic() + seconds)

    async def acquire(self, tokens: int) -> None:
        async with self._lock:  # first come, first served: a large request is not starved by small ones
            while True:
                wait = self._paused_until - time.monotonic()
                for bucket, by_tokens in self._buckets:
                    wait = max(wait, bucket.wait_for(tokens if by_tokens else 1))
                if wait <= 0:
                    break
                await asyncio.sleep(wait)
            for bucket, by_tokens in self._buckets:
                bucket.take(tokens if by_tokens else 1)


def estimate_tokens(chars: int, max_new_tokens: int) -> int:
    """What a request counts against a tokens-per-minute quota: its prompt (≈ 4 characters per token
    for English text, the usual rule of thumb) plus the most tokens it may generate, as OpenAI counts it."""
    return chars // 4 + 1 + max_new_tokens
