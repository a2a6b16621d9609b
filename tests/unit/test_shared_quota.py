"""One API quota for all jobs: the file-backed limiter paces several OS processes together.

The buckets hold `burst_s` seconds of quota; the workflow uses 60 (one minute, as the API counts), the
tests 1 so that the pacing shows within seconds. Bound checked: in every window of w seconds the
requests (tokens) sent stay within capacity + rate × w, the token bucket's promise.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import logging
import multiprocessing
import time
from pathlib import Path

import pytest

from tests.quota_windows import max_excess
from vpo.llm.ratelimit import RateLimiter, SharedRateLimiter

RPM, TPM, BURST_S = 600.0, 30_000.0, 1.0  # 10 requests/s and 500 tokens/s; buckets of 10 and 500
SLACK_S = 0.5  # a request is stamped a little after its reserved time (event loop, a loaded 2-core machine)
TOKENS = (100, 10, 10)  # per request, by process: the first one alone spends most of the tokens
PER_PROCESS = 20


def send(args: tuple[str | None, float, int]) -> list[tuple[float, int]]:
    """One process: PER_PROCESS acquisitions of `tokens` each from the given limiter (shared with a
    state file, else in memory), starting at `start_at`; returns (time sent, tokens)."""
    state_file, start_at, tokens = args

    async def run() -> list[tuple[float, int]]:
        if state_file is None:
            limiter: RateLimiter | SharedRateLimiter = RateLimiter(RPM, TPM, burst_s=BURST_S)
        else:
            limiter = SharedRateLimiter(state_file, RPM, TPM, burst_s=BURST_S)
        await asyncio.sleep(max(0.0, start_at - time.time()))
        sent = []

        async def one() -> None:
            await limiter.acquire(tokens)
            sent.append((time.time(), tokens))

        await asyncio.gather(*(one() for _ in range(PER_PROCESS)))
        return sent

    return asyncio.run(run())


def run_processes(state_file: Path | None) -> list[tuple[float, int]]:
    context = multiprocessing.get_context("spawn")  # fresh interpreters, as separate jobs are
    start_at = time.time() + 2.0  # after every process has started
    jobs = [(str(state_file) if state_file else None, start_at, tokens) for tokens in TOKENS]
    with context.Pool(len(jobs)) as pool:
        return [event for sent in pool.map(send, jobs) for event in sent]


def test_processes_sharing_the_file_stay_within_one_quota_together(tmp_path):
    events = run_processes(tmp_path / "quota" / "judge.json")
    requests = [(t, 1) for t, _ in events]
    rate_r, rate_t = RPM / 60, TPM / 60
    excess_r, excess_t = max_excess(requests, rate_r, SLACK_S), max_excess(events, rate_t, SLACK_S)
    span = max(t for t, _ in events) - min(t for t, _ in events)
    raw_r, raw_t = max_excess(requests, rate_r, 0.0), max_excess(events, rate_t, 0.0)
    print(f"shared: {len(events)} requests in {span:.2f} s; a bucket needed {raw_r:.1f} of 10 requests "
          f"and {raw_t:.0f} of 500 tokens ({excess_r:.1f} and {excess_t:.0f} with the slack)")  # fmt: skip
    assert len(events) == PER_PROCESS * len(TOKENS)
    assert excess_r <= RPM * BURST_S / 60 + 1e-6
    assert excess_t <= TPM * BURST_S / 60 + 1e-6
    # 60 requests, 10 at once, then 10/s: the processes were paced as one.
    assert span >= (len(events) - RPM * BURST_S / 60) / rate_r - SLACK_S


def test_processes_with_their_own_buckets_would_exceed_the_quota(tmp_path):
    events = run_processes(None)
    excess_r = max_excess([(t, 1) for t, _ in events], RPM / 60, SLACK_S)
    print(f"per process: a bucket needed {excess_r:.1f} requests of 10 (with the slack)")
    assert excess_r > RPM * BURST_S / 60  # what the shared file prevents


def acquire(limiter: SharedRateLimiter, tokens: int = 1) -> float:
    """Seconds one acquisition waited."""
    start = time.time()
    asyncio.run(limiter.acquire(tokens))
    return time.time() - start


def test_a_new_file_allows_a_full_burst_then_paces(tmp_path):
    limiter = SharedRateLimiter(tmp_path / "q.json", requests_per_minute=600, burst_s=0.5)  # 5 at once
    assert sum(acquire(limiter) for _ in range(5)) < 0.1
    assert acquire(limiter) >= 0.08  # the sixth waits for a refill (0.1 s)


def test_a_damaged_file_is_replaced_by_empty_buckets(tmp_path, caplog):
    state = tmp_path / "q.json"
    state.write_text('{"buckets": {"requests": 1.0}, "last"')  # cut short by a crash mid-write
    limiter = SharedRateLimiter(state, requests_per_minute=600, burst_s=0.5)
    with caplog.at_level(logging.WARNING):
        waited = acquire(limiter)
    assert "damaged" in caplog.text and str(state) in caplog.text
    assert waited >= 0.08  # empty buckets (the safe side): even the first request waits for a refill
    assert set(json.loads(state.read_text())) == {"buckets", "last", "paused_until"}


@pytest.mark.parametrize("content", ['{"buckets": {"requests": "soon"}, "last": 0, "paused_until": 0}',
                                     '{"buckets": {}, "last": 1e300, "paused_until": 0}', "[]"])  # fmt: skip
def test_unusable_values_count_as_damage(tmp_path, content):
    state = tmp_path / "q.json"
    state.write_text(content)
    assert acquire(SharedRateLimiter(state, requests_per_minute=600, burst_s=0.2)) < 1.0


def test_a_pause_reaches_every_limiter_of_the_file(tmp_path):
    seen_429 = SharedRateLimiter(tmp_path / "q.json", requests_per_minute=6000)
    other = SharedRateLimiter(tmp_path / "q.json", requests_per_minute=6000)
    seen_429.pause(0.5)
    assert acquire(other) >= 0.45


def test_the_lock_is_free_while_a_request_waits(tmp_path):
    state = tmp_path / "q.json"
    limiter = SharedRateLimiter(state, requests_per_minute=60, burst_s=1.0)  # one request, then 1 s

    async def probe() -> bool:
        await limiter.acquire(1)
        waiting = asyncio.create_task(limiter.acquire(1))
        await asyncio.sleep(0.2)
        with state.open("rb") as handle:  # another process would get the lock now
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.flock(handle, fcntl.LOCK_UN)
        free = not waiting.done()
        await waiting
        return free

    assert asyncio.run(probe())
