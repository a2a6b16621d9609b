"""Benchmark: judge calls to an OpenAI-compatible server, our async backend vs the release's process pool.

Compares, on the same N chat-completion requests against the local `FixtureServer` test fixture
(`tests/fixtures/openai_fixture_server.py`: every request takes a fixed latency, default 200 ms, and
gets a deterministic answer derived from its messages and seed):

- ours: `vpo.llm.openai_backend.OpenAIBackend` at its default concurrency (whatever the default is
  today), one `generate` call over all requests: asyncio, bounded concurrency, retries with backoff;
- baseline: the pattern of the paper's release: a multiprocessing pool of 20 worker processes, each
  sending one blocking `openai.OpenAI(...).chat.completions.create` at a time (client `max_retries=0`);
  a request that fails is logged and skipped, so its record is lost.

Two scenarios:

- clean: no faults;
- faults: a `FaultProxy` (`tests/fixtures/fault_proxy.py`) between the clients and the server fails
  10% of the POSTs (`--fault-rate`), split evenly over rate_limit (429), server_error (500), malformed
  (a 200 with half a JSON body) and truncated (the connection drops mid-body). `timeout` (the proxy
  hangs, the client gives up) is left out by default because it only measures the client timeout;
  `--timeouts` adds it to the split, with a 2 s hang and a 1 s client timeout for both methods.
  Ours runs here with `backoff_base_s=0.05` instead of its default 1 s, so the run is not dominated
  by sleeping between retries (the 429s carry `Retry-After: 0`, which the backend honours).

The table: answered = requests with an answer, lost = the others; req/s = answered / wall seconds;
ratio = req/s of the method / req/s of the baseline in the same scenario, so > 1 means faster;
paid = chat completions the server answered (a malformed or truncated reply is paid and retried).
The baseline's wall time excludes starting its 20 processes (printed apart). Server, proxy and our
client share this process (and its GIL); the baseline's clients run in their own processes.
The script exits non-zero unless ours answers every request in both scenarios and its answers equal
the baseline's wherever both answered. Run from the repository root:

    .venv/bin/python bench/bench_judge_calls.py [--requests 400] [--latency-ms 200] [--timeouts]
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, for tests.fixtures

from tests.fixtures.fault_proxy import FaultProxy
from tests.fixtures.openai_fixture_server import FixtureServer
from vpo.llm.base import Request, Response
from vpo.llm.openai_backend import OpenAIBackend

MODEL = "m"
GENERATION = {"temperature": 0.7, "top_p": 1.0, "max_new_tokens": 64}
POOL_SIZE = 20  # the release's worker count
ERROR_FAULTS = ("rate_limit", "server_error", "malformed", "truncated")

log = logging.getLogger("bench_judge_calls")


@dataclass
class Run:
    scenario: str
    method: str
    answers: list[str | None]  # None: no answer (lost)
    wall_s: float
    paid: int
    injected: dict[str, int]
    note: str = ""

    @property
    def answered(self) -> int:
        return sum(answer is not None for answer in self.answers)

    @property
    def rate(self) -> float:
        return self.answered / self.wall_s


def build_requests(count: int) -> list[Request]:
    return [
        Request.build(
            [
                {
                    "role": "user",
                    "content": f"Judge prompt {i}: a slow pan over a beach at sunset, golden light.",
                }
            ],
            GENERATION,
            seed=i,
        )
        for i in range(count)
    ]


def ours(
    url: str, requests: list[Request], backoff_base_s: float | None, timeout_s: float | None
) -> tuple[list[str | None], str]:
    extra: dict[str, Any] = {}
    if backoff_base_s is not None:
        extra["backoff_base_s"] = backoff_base_s
    if timeout_s is not None:
        extra["timeout_s"] = timeout_s
    backend = OpenAIBackend(url, MODEL, f"openai|{MODEL}", **extra)
    out: list[Response | None] = [None] * len(requests)
    note = ""
    try:
        backend.generate(requests, out.__setitem__)
    except Exception as exc:  # a crash is a finding of the benchmark, not a reason to stop it
        note = f"generate raised {type(exc).__name__}: {exc}"
    finally:
        backend.close()
    return [r.text if r is not None and r.ok else None for r in out], note


# -- baseline: one blocking client per worker process ----------------------------------------------

_worker_client: Any = None


def _worker_start(base_url: str, timeout_s: float, ready: Any) -> None:
    global _worker_client
    import openai

    _worker_client = openai.OpenAI(base_url=base_url, api_key="none", max_retries=0, timeout=timeout_s)
    # Wait for every worker: one still importing `openai` would eat CPU inside the timed part.
    ready.wait()


def _worker_call(body: dict) -> tuple[str | None, str]:
    """One request; a failure is reported back for the log and the item is dropped, as the release does."""
    try:
        completion = _worker_client.chat.completions.create(**body)
    except Exception as exc:
        return None, f"{type(exc).__name__}: {exc}"
    return completion.choices[0].message.content, ""


def baseline(url: str, requests: list[Request], timeout_s: float) -> tuple[list[str | None], float, float]:
    """Answers, seconds for the requests, seconds it took to start the pool (not counted)."""
    bodies = [
        {
            "model": MODEL,
            "messages": r.chat(),
            "seed": r.seed,
            "temperature": r.temperature,
            "top_p": r.top_p,
            "max_tokens": r.max_new_tokens,
        }
        for r in requests
    ]
    # spawn: the workers must not inherit this process's server threads through fork.
    context = multiprocessing.get_context("spawn")
    ready = context.Barrier(POOL_SIZE + 1)
    start = time.perf_counter()
    with context.Pool(POOL_SIZE, initializer=_worker_start, initargs=(url, timeout_s, ready)) as pool:
        ready.wait()
        startup = time.perf_counter() - start
        start = time.perf_counter()
        results = pool.map(_worker_call, bodies, chunksize=1)
        wall = time.perf_counter() - start
    for i, (_, error) in enumerate(results):
        if error:
            log.info("baseline: request %d lost (%s)", i, error[:200])
    return [text for text, _ in results], wall, startup


# -- driver ----------------------------------------------------------------------------------------


def run_scenario(
    scenario: str,
    method: str,
    requests: list[Request],
    latency_s: float,
    rates: dict[str, float],
    seed: int,
    call: Callable[[str], tuple[list[str | None], float, str]],
) -> Run:
    """A fresh server (and proxy) per run, so `paid` and the faults count this run only."""
    with FixtureServer(latency_s=latency_s) as server:
        if rates:
            with FaultProxy(server.url, rates, seed=seed, hang_s=2.0) as proxy:
                answers, wall, note = call(proxy.url)
                injected = dict(proxy.injected)
        else:
            answers, wall, note = call(server.url)
            injected = {}
        with server.lock:
            paid = sum(server.completions.values())
    return Run(scenario, method, answers, wall, paid, injected, note)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--latency-ms", type=float, default=200.0, help="server time per request")
    parser.add_argument("--fault-rate", type=float, default=0.10, help="share of POSTs that fail")
    parser.add_argument("--timeouts", action="store_true", help="add proxy hangs to the fault mix")
    parser.add_argument("--backoff-base-s", type=float, default=0.05, help="ours, faults scenario")
    parser.add_argument("--seed", type=int, default=0, help="seed of the fault draws")
    parser.add_argument("-v", "--verbose", action="store_true", help="log retries and lost requests")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO if args.verbose else logging.ERROR, format="%(message)s")

    requests = build_requests(args.requests)
    latency_s = args.latency_ms / 1000
    kinds = (*ERROR_FAULTS, "timeout") if args.timeouts else ERROR_FAULTS
    fault_rates = {kind: args.fault_rate / len(kinds) for kind in kinds}
    # With hangs in the mix both clients must give up before the proxy's 2 s hang ends.
    client_timeout = 1.0 if args.timeouts else 300.0
    runs: list[Run] = []
    startups: list[float] = []

    def run_ours(backoff: float | None, timeout: float | None) -> Callable[[str], Any]:
        def call(url: str) -> tuple[list[str | None], float, str]:
            start = time.perf_counter()
            answers, note = ours(url, requests, backoff, timeout)
            return answers, time.perf_counter() - start, note

        return call

    def run_baseline(url: str) -> tuple[list[str | None], float, str]:
        answers, wall, startup = baseline(url, requests, client_timeout)
        startups.append(startup)
        return answers, wall, ""

    for scenario, rates in (("clean", {}), ("faults", fault_rates)):
        faulty = bool(rates)
        ours_call = run_ours(args.backoff_base_s if faulty else None, client_timeout if faulty else None)
        for method, call in (("baseline", run_baseline), ("ours", ours_call)):
            runs.append(run_scenario(scenario, method, requests, latency_s, rates, args.seed, call))

    print(
        f"{args.requests} chat completions, server latency {args.latency_ms:.0f} ms; "
        f"faults: {args.fault_rate:.0%} of POSTs over {', '.join(kinds)}"
    )
    print("| scenario | method | requests | answered | lost | wall s | req/s | ratio | paid |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for run in runs:
        reference = next(r for r in runs if r.scenario == run.scenario and r.method == "baseline")
        print(
            f"| {run.scenario} | {run.method} | {len(run.answers)} | {run.answered} "
            f"| {len(run.answers) - run.answered} | {run.wall_s:.2f} | {run.rate:.1f} "
            f"| {run.rate / reference.rate:.2f} | {run.paid} |"
        )
    print(f"baseline pool start-up (not counted): {', '.join(f'{s:.2f}s' for s in startups)}")
    for run in runs:
        if run.injected:
            print(f"faults injected ({run.method}): {dict(sorted(run.injected.items()))}")

    failures = []
    for run in runs:
        if run.note:
            failures.append(f"{run.scenario}/{run.method}: {run.note}")
        if run.method == "ours" and run.answered != len(run.answers):
            failures.append(f"{run.scenario}/ours: {len(run.answers) - run.answered} requests unanswered")
    answers_by_method: dict[str, list[list[str | None]]] = {}
    for run in runs:
        answers_by_method.setdefault(run.method, []).append(run.answers)
    both = differ = 0
    for our_answers, base_answers in zip(
        answers_by_method["ours"], answers_by_method["baseline"], strict=True
    ):
        for mine, theirs in zip(our_answers, base_answers, strict=True):
            if mine is not None and theirs is not None:
                both += 1
                differ += mine != theirs.strip()
    if differ:
        failures.append(f"{differ} of {both} answers differ between ours and the baseline")
    if failures:
        print("FAILED:\n  " + "\n  ".join(failures))
        sys.exit(1)
    print(f"ours answered every request; answers identical to the baseline's on all {both} both answered")


if __name__ == "__main__":
    main()
