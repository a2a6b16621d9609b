"""Benchmark: judge calls to an OpenAI-compatible server, our async backend vs the release's process pool.

Compares, on the same N chat-completion requests against the local `FixtureServer` test fixture
(`tests/fixtures/openai_fixture_server.py`: every request takes a fixed latency, default 200 ms, and
gets a deterministic answer derived from its messages and seed):

- ours: `vpo.llm.openai_backend.OpenAIBackend` with `max_concurrency` set to the concurrency under test,
  one `generate` call over all requests: asyncio, bounded concurrency, retries with backoff;
- baseline: the pattern of the paper's release: a multiprocessing pool of 20 worker processes, each
  sending one blocking `openai.OpenAI(...).chat.completions.create` at a time (client `max_retries=0`);
  a request that fails is logged and skipped, so its record is lost. It keeps its 20 processes at every
  concurrency under test, as the release does;
- raw: a minimal HTTP/1.1 client on asyncio streams (no retries, no parsing beyond the answer) with as
  many connections as the concurrency under test: what the fixture (and proxy) can serve on this
  machine, i.e. the ceiling any client can reach here.

Each concurrency under test (`--concurrency`, default 64 and 256) runs N = 20 x concurrency requests
(`--requests` overrides): at most concurrency / latency requests per second can be answered (the
`limit`), and the first wave (opening the connections) and the last one cost a run a near-fixed
time, which at 10 waves already kept even the raw client to 84-93 % of the limit on a 2-core machine.

Two scenarios:

- clean: no faults;
- faults: a `FaultProxy` (`tests/fixtures/fault_proxy.py`) between the clients and the server fails
  10% of the POSTs (`--fault-rate`), split evenly over rate_limit (429), server_error (500), malformed
  (a 200 with half a JSON body) and truncated (the connection drops mid-body). `timeout` (the proxy
  hangs, the client gives up) is left out by default because it only measures the client timeout;
  `--timeouts` adds it to the split, with a 2 s hang and a 1 s client timeout for all methods.
  Ours runs here with `backoff_base_s=0.05` instead of its default 1 s, so the run is not dominated
  by sleeping between retries (the 429s carry `Retry-After: 0`, which the backend honours).

The server and the proxy run in processes of their own (`python -m tests.fixtures...`, a fresh one per
run, `--engine asyncio` by default: the threaded engine cannot serve 1280 requests per second), so the
figures are the clients': ours and raw run in this process, the baseline's clients in its pool. On exit
the server reports what it answered (`paid`) and the proxy the faults it injected.

The table: in flight = requests the method keeps in flight (the baseline: its 20 processes);
answered = requests with an answer, lost = the others; req/s = answered / wall seconds; limit =
in flight / latency; ratio = req/s of the method / req/s of the baseline in the same scenario, so > 1
means faster; cpu = CPU seconds of this process per request (ours and raw; the machine's other load
does not count in it); fixture cpu = the same for the server and the proxy together, while serving;
paid = chat completions the server answered (a malformed or truncated reply is paid and retried).
The baseline's pool is started once and its start-up is not counted (printed apart).
The script exits non-zero unless ours answers every request in every run and its answers equal the
baseline's wherever both answered. Run from the repository root:

    .venv/bin/python bench/bench_judge_calls.py [--concurrency 64 256] [--requests N] [--latency-ms 200]
        [--timeouts] [--methods baseline,ours,raw] [--engine asyncio|threads]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import multiprocessing
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, for tests.fixtures

from tests.fixtures.openai_fixture_server import read_body, read_head
from vpo.llm.base import Request, Response
from vpo.llm.openai_backend import OpenAIBackend

REPO = Path(__file__).resolve().parents[1]
MODEL = "m"
GENERATION = {"temperature": 0.7, "top_p": 1.0, "max_new_tokens": 64}
POOL_SIZE = 20  # the release's worker count
ERROR_FAULTS = ("rate_limit", "server_error", "malformed", "truncated")
METHODS = ("baseline", "ours", "raw")

log = logging.getLogger("bench_judge_calls")


@dataclass
class Run:
    concurrency: int
    scenario: str
    method: str
    in_flight: int
    answers: list[str | None]  # None: no answer (lost)
    wall_s: float
    cpu_s: float | None
    paid: int = 0
    injected: dict[str, int] = field(default_factory=dict)
    fixture_cpu_s: float = 0.0
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


def chat_bodies(requests: list[Request]) -> list[dict]:
    return [
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


# -- the fixture in processes of its own -----------------------------------------------------------


class Fixture:
    """`with Fixture(...) as url:` a fresh server (behind a fault proxy when `rates`), each a child
    process; on exit they are stopped and `paid` and `injected` hold what they report."""

    def __init__(self, latency_s: float, rates: dict[str, float], seed: int, hang_s: float, engine: str):
        self.latency_s, self.rates, self.seed, self.hang_s, self.engine = (
            latency_s,
            rates,
            seed,
            hang_s,
            engine,
        )
        self.children: list[subprocess.Popen] = []
        self.paid = 0
        self.injected: dict[str, int] = {}
        self.cpu_s = 0.0  # of the server and the proxy, while they served

    def _start(self, module: str, *args: str) -> str:
        child = subprocess.Popen(
            [sys.executable, "-m", module, "--port", "0", "--engine", self.engine, *args],
            cwd=REPO,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.children.append(child)
        url = child.stdout.readline().strip() if child.stdout else ""
        if not url.startswith("http"):
            raise RuntimeError(f"{module} did not start (exit code {child.poll()})")
        return url

    def __enter__(self) -> str:
        try:
            url = self._start(
                "tests.fixtures.openai_fixture_server", "--latency-ms", str(self.latency_s * 1000)
            )
            if self.rates:
                rates = [f"--rate={kind}={rate}" for kind, rate in self.rates.items()]
                url = self._start(
                    "tests.fixtures.fault_proxy", "--upstream", url, *rates,
                    "--seed", str(self.seed), "--hang-s", str(self.hang_s),
                )  # fmt: skip
        except BaseException:
            self._stop_all()
            raise
        return url

    def _stop_all(self) -> list[dict]:
        reports = []
        for child in reversed(self.children):  # the proxy first, then the server
            child.send_signal(signal.SIGTERM)
            out, _ = child.communicate(timeout=60)
            lines = out.strip().splitlines()
            reports.append(json.loads(lines[-1]) if lines else {})  # the URL was read at start
        self.children.clear()
        return reports

    def __exit__(self, *exc: object) -> None:
        reports = self._stop_all()
        server = reports[-1]
        self.paid = server.get("completions", 0)
        self.cpu_s = sum(report.get("cpu_s", 0.0) for report in reports)
        if len(reports) > 1:
            self.injected = reports[0].get("injected", {})


# -- ours ------------------------------------------------------------------------------------------


def ours(
    url: str,
    requests: list[Request],
    concurrency: int,
    backoff_base_s: float | None,
    timeout_s: float | None,
) -> tuple[list[str | None], str]:
    extra: dict[str, Any] = {}
    if backoff_base_s is not None:
        extra["backoff_base_s"] = backoff_base_s
    if timeout_s is not None:
        extra["timeout_s"] = timeout_s
    backend = OpenAIBackend(url, MODEL, f"openai|{MODEL}", max_concurrency=concurrency, **extra)
    out: list[Response | None] = [None] * len(requests)
    note = ""
    try:
        backend.generate(requests, out.__setitem__)
    except Exception as exc:  # a crash is a finding of the benchmark, not a reason to stop it
        note = f"generate raised {type(exc).__name__}: {exc}"
    finally:
        backend.close()
    return [r.text if r is not None and r.ok else None for r in out], note


# -- raw: the fixture's ceiling --------------------------------------------------------------------


async def _raw(url: str, bodies: list[dict], concurrency: int, timeout_s: float) -> list[str | None]:
    target = urlsplit(url)
    host, port = target.hostname or "", target.port or 80
    path = target.path.rstrip("/") + "/chat/completions"
    head = f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
    answers: list[str | None] = [None] * len(bodies)
    pending = iter(range(len(bodies)))  # shared by the connections: each takes the next request

    async def connection() -> None:
        reader: asyncio.StreamReader | None = None
        writer: asyncio.StreamWriter | None = None
        for i in pending:
            data = json.dumps(bodies[i]).encode()
            try:
                async with asyncio.timeout(timeout_s):
                    if reader is None or writer is None:
                        reader, writer = await asyncio.open_connection(host, port)
                    writer.write(f"{head}Content-Length: {len(data)}\r\n\r\n".encode() + data)
                    reply = await read_head(reader)
                    if reply is None:
                        raise ConnectionResetError("closed")
                    body = await read_body(reader, reply[1])
                if reply[0].split(" ", 2)[1] == "200":
                    answers[i] = json.loads(body)["choices"][0]["message"]["content"].strip()
            except (OSError, TimeoutError, ValueError, KeyError, asyncio.IncompleteReadError):
                if writer is not None:
                    writer.close()
                reader = writer = None
        if writer is not None:
            writer.close()

    await asyncio.gather(*(connection() for _ in range(concurrency)))
    return answers


def raw(url: str, bodies: list[dict], concurrency: int, timeout_s: float) -> tuple[list[str | None], str]:
    return asyncio.run(_raw(url, bodies, concurrency, timeout_s)), ""


# -- baseline: one blocking client per worker process ----------------------------------------------

_worker_clients: dict[str, Any] = {}
_worker_timeout = 300.0
_worker_barrier: Any = None


def _worker_start(timeout_s: float, ready: Any, barrier: Any) -> None:
    global _worker_timeout, _worker_barrier
    import openai  # noqa: F401  (imported here, before the timed part)

    _worker_timeout, _worker_barrier = timeout_s, barrier
    # Wait for every worker: one still importing `openai` would eat CPU inside the timed part.
    ready.wait()


def _worker_connect(url: str) -> None:
    """Each worker builds its client for `url` (one call per worker: they all meet at the barrier)."""
    import openai

    if url not in _worker_clients:
        _worker_clients[url] = openai.OpenAI(
            base_url=url, api_key="none", max_retries=0, timeout=_worker_timeout
        )
    _worker_barrier.wait()


def _worker_call(job: tuple[str, dict]) -> tuple[str | None, str]:
    """One request; a failure is reported back for the log and the item is dropped, as the release does."""
    url, body = job
    try:
        completion = _worker_clients[url].chat.completions.create(**body)
    except Exception as exc:
        return None, f"{type(exc).__name__}: {exc}"
    return completion.choices[0].message.content, ""


class Baseline:
    """The release's pool of 20 processes, started once for every run (its start-up is not timed)."""

    def __init__(self, timeout_s: float):
        # spawn: the workers must not inherit this process's threads through fork.
        context = multiprocessing.get_context("spawn")
        ready = context.Barrier(POOL_SIZE + 1)
        barrier = context.Barrier(POOL_SIZE)
        start = time.perf_counter()
        self.pool = context.Pool(POOL_SIZE, initializer=_worker_start, initargs=(timeout_s, ready, barrier))
        ready.wait()
        self.startup_s = time.perf_counter() - start

    def __call__(self, url: str, bodies: list[dict]) -> tuple[list[str | None], float]:
        self.pool.map(_worker_connect, [url] * POOL_SIZE, chunksize=1)
        start = time.perf_counter()
        results = self.pool.map(_worker_call, [(url, body) for body in bodies], chunksize=1)
        wall = time.perf_counter() - start
        for i, (_, error) in enumerate(results):
            if error:
                log.info("baseline: request %d lost (%s)", i, error[:200])
        return [text for text, _ in results], wall

    def close(self) -> None:
        self.pool.terminate()
        self.pool.join()


# -- driver ----------------------------------------------------------------------------------------


def measure(
    fixture: Fixture, call: Callable[[str], tuple[list[str | None], str]]
) -> tuple[list[str | None], float, float, str]:
    """Answers, wall seconds, CPU seconds of this process, note; a fresh fixture for each run, so
    `paid` and the faults count this run only."""
    with fixture as url:
        start, cpu = time.perf_counter(), time.process_time()
        answers, note = call(url)
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    return answers, wall, cpu, note


def print_table(runs: list[Run], latency_s: float) -> None:
    print(
        "| concurrency | scenario | method | in flight | requests | answered | lost | wall s | req/s "
        "| limit req/s | % of limit | ratio | cpu ms/req | fixture cpu ms/req | paid |"
    )
    print("|" + " --- |" * 15)
    for run in runs:
        reference = next(
            (
                r
                for r in runs
                if (r.concurrency, r.scenario, r.method) == (run.concurrency, run.scenario, "baseline")
            ),
            None,
        )
        ratio = f"{run.rate / reference.rate:.2f}" if reference is not None else "-"
        limit = run.in_flight / latency_s
        cpu = f"{run.cpu_s / len(run.answers) * 1000:.2f}" if run.cpu_s is not None else "-"
        print(
            f"| {run.concurrency} | {run.scenario} | {run.method} | {run.in_flight} | {len(run.answers)} "
            f"| {run.answered} | {len(run.answers) - run.answered} | {run.wall_s:.2f} | {run.rate:.1f} "
            f"| {limit:.0f} | {run.rate / limit:.0%} | {ratio} | {cpu} "
            f"| {run.fixture_cpu_s / len(run.answers) * 1000:.2f} | {run.paid} |"
        )


def check(runs: list[Run]) -> list[str]:
    failures = []
    for run in runs:
        if run.note:
            failures.append(f"{run.concurrency}/{run.scenario}/{run.method}: {run.note}")
        if run.method == "ours" and run.answered != len(run.answers):
            lost = len(run.answers) - run.answered
            failures.append(f"{run.concurrency}/{run.scenario}/ours: {lost} requests unanswered")
    both = differ = 0
    for run in runs:
        if run.method != "ours":
            continue
        for base in runs:
            if (base.concurrency, base.scenario, base.method) != (run.concurrency, run.scenario, "baseline"):
                continue
            for mine, theirs in zip(run.answers, base.answers, strict=True):
                if mine is not None and theirs is not None:
                    both += 1
                    differ += mine != theirs.strip()
    if differ:
        failures.append(f"{differ} of {both} answers differ between ours and the baseline")
    return failures


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--concurrency", type=int, nargs="+", default=[64, 256], help="requests in flight")
    parser.add_argument("--requests", type=int, default=None, help="default: 20 x the concurrency")
    parser.add_argument("--latency-ms", type=float, default=200.0, help="server time per request")
    parser.add_argument("--fault-rate", type=float, default=0.10, help="share of POSTs that fail")
    parser.add_argument("--timeouts", action="store_true", help="add proxy hangs to the fault mix")
    parser.add_argument("--backoff-base-s", type=float, default=0.05, help="ours, faults scenario")
    parser.add_argument("--seed", type=int, default=0, help="seed of the fault draws")
    parser.add_argument(
        "--methods", default=",".join(METHODS), help="comma-separated subset of " + ", ".join(METHODS)
    )
    parser.add_argument("--scenarios", default="clean,faults", help="comma-separated subset of clean, faults")
    parser.add_argument(
        "--engine", choices=("asyncio", "threads"), default="asyncio", help="server and proxy"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log retries and lost requests")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO if args.verbose else logging.ERROR, format="%(message)s")
    methods = [m for m in args.methods.split(",") if m]
    scenarios = [s for s in args.scenarios.split(",") if s]
    if set(methods) - set(METHODS) or set(scenarios) - {"clean", "faults"}:
        parser.error(f"unknown method or scenario in {methods} / {scenarios}")

    latency_s = args.latency_ms / 1000
    kinds = (*ERROR_FAULTS, "timeout") if args.timeouts else ERROR_FAULTS
    fault_rates = {kind: args.fault_rate / len(kinds) for kind in kinds}
    # With hangs in the mix every client must give up before the proxy's 2 s hang ends.
    client_timeout = 1.0 if args.timeouts else 300.0
    baseline = Baseline(client_timeout) if "baseline" in methods else None
    runs: list[Run] = []
    try:
        for concurrency in args.concurrency:
            requests = build_requests(args.requests or 20 * concurrency)
            bodies = chat_bodies(requests)
            for scenario in scenarios:
                rates = fault_rates if scenario == "faults" else {}
                backoff, timeout = (args.backoff_base_s, client_timeout) if rates else (None, None)
                calls = {
                    "ours": partial(
                        ours,
                        requests=requests,
                        concurrency=concurrency,
                        backoff_base_s=backoff,
                        timeout_s=timeout,
                    ),
                    "raw": partial(raw, bodies=bodies, concurrency=concurrency, timeout_s=client_timeout),
                }
                for method in methods:
                    fixture = Fixture(latency_s, rates, args.seed, 2.0, args.engine)
                    if method == "baseline":
                        assert baseline is not None
                        with fixture as url:
                            answers, wall = baseline(url, bodies)
                        run = Run(concurrency, scenario, method, POOL_SIZE, answers, wall, None)
                    else:
                        answers, wall, cpu, note = measure(fixture, calls[method])
                        run = Run(concurrency, scenario, method, concurrency, answers, wall, cpu, note=note)
                    run.paid, run.injected, run.fixture_cpu_s = fixture.paid, fixture.injected, fixture.cpu_s
                    runs.append(run)
                    log.info("%s", run)
    finally:
        if baseline is not None:
            baseline.close()

    print(
        f"server latency {args.latency_ms:.0f} ms, {args.engine} server and proxy in their own processes; "
        f"faults: {args.fault_rate:.0%} of POSTs over {', '.join(kinds)}"
    )
    print_table(runs, latency_s)
    if baseline is not None:
        print(f"baseline pool start-up (not counted): {baseline.startup_s:.2f}s")
    for run in runs:
        if run.injected:
            print(f"faults injected ({run.concurrency}, {run.method}): {dict(sorted(run.injected.items()))}")

    failures = check(runs)
    if failures:
        print("FAILED:\n  " + "\n  ".join(failures))
        sys.exit(1)
    if "ours" in methods:
        compared = "" if baseline is None else "; its answers are the baseline's wherever both answered"
        print(f"ours answered every request{compared}")


if __name__ == "__main__":
    main()
