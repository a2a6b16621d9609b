"""Client-side pacing for an API quota: requests per minute, tokens per minute, and a shared pause.

Both limits are token buckets refilled continuously (capacity = one minute of quota), so a burst at
start-up is allowed up to the quota and the long-run rate never exceeds it. A 429 answer pauses every
request of the client, not only the one that saw it: the quota is shared, so are the consequences.

`RateLimiter` keeps its buckets in memory: right for a server the job starts for itself.
`SharedRateLimiter` keeps them in a small file, so every job of the workflow that calls the same remote
endpoint (on one machine or on several nodes sharing the file system) draws from one quota.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Any, Protocol

log = logging.getLogger(__name__)


class Pacing(Protocol):
    async def acquire(self, tokens: int) -> None: ...

    def pause(self, seconds: float) -> None: ...


class _Bucket:
    def __init__(self, per_minute: float, burst_s: float = 60.0):
        self.capacity = per_minute * burst_s / 60.0
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
    """`await acquire(tokens)` before each request; `pause(seconds)` after a 429 or a Retry-After.

    `burst_s`: the buckets hold this many seconds of quota (60: one minute, as the API counts); tests
    make it small to see the pacing within seconds."""

    def __init__(
        self,
        requests_per_minute: float | None = None,
        tokens_per_minute: float | None = None,
        burst_s: float = 60.0,
    ):
        self._buckets: list[tuple[_Bucket, bool]] = []  # (bucket, counts tokens rather than requests)
        if requests_per_minute:
            self._buckets.append((_Bucket(requests_per_minute, burst_s), False))
        if tokens_per_minute:
            self._buckets.append((_Bucket(tokens_per_minute, burst_s), True))
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


# A state value further ahead than this is not a reservation but damage (or a clock that jumped).
_MAX_AHEAD_S = 86_400.0


class SharedRateLimiter:
    """The same quota shared by every process that opens the same `state_file` (JSON, under `flock`).

    Each bucket is kept as the time it would be empty ("theoretical arrival time", the generic cell
    rate algorithm): a request reserves its share at the earliest time every bucket allows it and no
    earlier than the previous reservation, then sleeps until then outside the lock. Reservations are
    therefore first come, first served across processes (a large request is not starved), and in any
    window of w seconds the requests sent draw at most capacity + rate × w from each bucket. Wall-clock
    time (`time.time()`) is used because monotonic clocks differ between processes; nodes sharing a
    file system are NTP-synchronised far better than the second scale of the quota.

    The lock is held only to read, update and write a few hundred bytes; nobody sleeps while holding
    it. A missing file starts with full buckets; an unreadable one (a crash mid-write) is replaced by
    empty buckets, which can only slow the next minute down, never exceed the quota. A 429's pause is
    written to the file too: every job backs off, not only the one that was told.
    """

    def __init__(
        self,
        state_file: str | Path,
        requests_per_minute: float | None = None,
        tokens_per_minute: float | None = None,
        burst_s: float = 60.0,
    ):
        self.path = Path(state_file)
        self.burst_s = burst_s
        # name -> (capacity, refill per second)
        self._buckets: dict[str, tuple[float, float]] = {}
        if requests_per_minute:
            self._buckets["requests"] = (requests_per_minute * burst_s / 60.0, requests_per_minute / 60.0)
        if tokens_per_minute:
            self._buckets["tokens"] = (tokens_per_minute * burst_s / 60.0, tokens_per_minute / 60.0)
        self._lock = asyncio.Lock()

    def pause(self, seconds: float) -> None:
        with self._state() as state:
            state["paused_until"] = max(state["paused_until"], time.time() + seconds)

    async def acquire(self, tokens: int) -> None:
        async with self._lock:  # FIFO within the process; one reservation of the process at a time
            send_at = self._reserve(tokens)
            while (wait := send_at - time.time()) > 0:
                await asyncio.sleep(wait)
                # A 429 seen by any job after this reservation was made holds this request back too.
                send_at = self._paused_until()

    def _reserve(self, tokens: int) -> float:
        amounts = {"requests": 1.0, "tokens": float(tokens)}
        with self._state() as state:
            now = time.time()
            send_at = max(now, state["last"], state["paused_until"])
            for name, (capacity, rate) in self._buckets.items():
                cost = min(amounts[name], capacity) / rate  # larger than the bucket: goes when it is full
                empty_at = state["buckets"].get(name, now)
                send_at = max(send_at, empty_at + cost - self.burst_s)
            for name, (capacity, rate) in self._buckets.items():
                empty_at = state["buckets"].get(name, now)
                state["buckets"][name] = max(empty_at, send_at) + min(amounts[name], capacity) / rate
            state["last"] = send_at
        return send_at

    def _paused_until(self) -> float:
        with self._state(write=False) as state:
            return state["paused_until"]

    def _state(self, write: bool = True) -> _LockedState:
        return _LockedState(self.path, self.burst_s, write)


class _LockedState:
    """`with _LockedState(path, …) as state:` the parsed state under an exclusive `flock`, written back
    on exit. The file is opened anew each time, so a deleted or replaced file is picked up at once."""

    def __init__(self, path: Path, burst_s: float, write: bool):
        self.path, self.burst_s, self.write = path, burst_s, write
        self.fd = -1
        self.state: dict[str, Any] = {}

    def __enter__(self) -> dict[str, Any]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX)
        except OSError as exc:
            os.close(self.fd)
            raise RuntimeError(
                f"{self.path}: the file system refuses flock ({exc}), so jobs cannot share the API quota "
                "(llms.*.requests_per_minute / tokens_per_minute). Fix: put results/cache on a file system "
                "with locking (local disk, NFSv4, Lustre mounted with -o flock), or set run_locally: true"
            ) from exc
        self.state = self._read()
        return self.state

    def _read(self) -> dict[str, Any]:
        raw = b""
        while chunk := os.read(self.fd, 65536):
            raw += chunk
        now = time.time()
        if not raw:  # new file: full buckets, as a fresh in-memory limiter starts
            return {"buckets": {}, "last": 0.0, "paused_until": 0.0}
        try:
            state = json.loads(raw)
            values = [state["last"], state["paused_until"], *state["buckets"].values()]
            if not all(isinstance(v, int | float) and math.isfinite(v) for v in values) or max(values) > (
                now + _MAX_AHEAD_S
            ):
                raise ValueError("values out of range")
            return {
                "buckets": {str(k): float(v) for k, v in state["buckets"].items()},
                "last": float(state["last"]),
                "paused_until": float(state["paused_until"]),
            }
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            log.warning("%s is damaged (%s); starting again from empty buckets", self.path, exc)
            empty = now + self.burst_s  # every bucket empty: the safe side of an unknown past
            return {"buckets": {"requests": empty, "tokens": empty}, "last": now, "paused_until": 0.0}

    def __exit__(self, *exc: object) -> None:
        try:
            if self.write and exc[0] is None:
                data = json.dumps(self.state, sort_keys=True).encode()
                # Overwrite then cut: a crash in between leaves invalid JSON (read as damaged), never
                # an empty file that would read as full buckets.
                os.pwrite(self.fd, data, 0)
                os.ftruncate(self.fd, len(data))
        finally:
            os.close(self.fd)  # closing releases the lock


# English text runs about 4 characters per token (the usual rule of thumb); `vpo estimate` prices with it too.
CHARS_PER_TOKEN = 4


def estimate_tokens(chars: int, max_new_tokens: int) -> int:
    """What a request counts against a tokens-per-minute quota: its prompt (CHARS_PER_TOKEN) plus the
    most tokens it may generate, as OpenAI counts it.
    OpenAI counts this estimate when the request arrives and gives nothing back for tokens left unused,
    so neither do the limiters: the actual usage (in the ledger) is never added back to the bucket."""
    return chars // CHARS_PER_TOKEN + 1 + max_new_tokens
