"""Judge calls under faults, and after a SIGKILL: nothing is lost, and finished work is not paid twice.

- 20 % injected faults (429, 500, hangs, malformed and cut bodies) between the client and a real
  `transformers serve`: every record comes back, with the same text as a run without faults.
- The critique stage killed with SIGKILL about half-way, then re-run: outputs identical to an
  uninterrupted run, and at most 1 % of the requests reached the server twice (the ones in flight when
  the process died), counted at the server (the local OpenAI fixture of tests/fixtures).
- The same in batch mode, killed while it waits for its batch: the re-run resumes that batch.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.fixtures.fault_proxy import FAULTS, FaultProxy
from tests.fixtures.openai_fixture_server import FixtureServer, echo_answer
from vpo.core.ids import query_id
from vpo.core.io import read_records, write_records
from vpo.core.layout import batches_dir
from vpo.core.run_options import RUN_OPTIONS_ENV
from vpo.llm.cache import CachedLLM, ResponseCache
from vpo.llm.openai_backend import OpenAIBackend
from vpo.llm.server import local_server
from vpo.stages.critique import critique

pytestmark = pytest.mark.slow

TEMPLATE = "Check the video prompt against the rules.\nQuery: {query}\nPrompt: {prompt}"
GREEDY = {"temperature": 0.0, "top_p": 1.0, "max_new_tokens": 8}
SAMPLED = {"temperature": 0.7, "top_p": 1.0, "max_new_tokens": 64}


def generations(n: int) -> list[dict]:
    rows = []
    for i in range(n):
        query = f"a red cat number {i} at night"
        rows.append(
            {
                "item_id": f"item-{i:05d}", "query_id": query_id(query), "query": query, "sample_index": 0,
                "prompt": f"a slow camera follows red cat {i} in the blue night rain", "status": "ok",
                "raw": "x", "finish_reason": "stop", "seed": i, "model_fingerprint": "test", "error": None,
            }
        )  # fmt: skip
    return rows


def test_twenty_percent_faults_lose_no_record(tiny_lm, tmp_path):
    rows = generations(60)
    config_file = Path(tiny_lm) / "generation_config.json"
    gen_config = json.loads(config_file.read_text()) if config_file.exists() else {}

    def judge(url: str, cache: str) -> tuple[list[dict], CachedLLM, OpenAIBackend]:
        backend = OpenAIBackend(
            url, str(tiny_lm), "transformers-serve|tiny", server_generation_config=gen_config,
            max_concurrency=4, max_retries=10, timeout_s=3.0, backoff_base_s=0.05, backoff_max_s=0.5,
        )  # fmt: skip
        llm = CachedLLM(backend, ResponseCache(tmp_path / cache))
        return critique(rows, llm, TEMPLATE, GREEDY, 0, 0), llm, backend

    with local_server("transformers", str(tiny_lm), log_path=tmp_path / "server.log") as server:
        base_url = server.url
        clean, _, _ = judge(base_url, "clean")
        rates = dict.fromkeys(FAULTS, 0.04)  # 20 % in all, spread over the five kinds
        with FaultProxy(base_url, rates, seed=3, hang_s=5.0) as proxy:
            faulty, llm, backend = judge(proxy.url, "faulty")

    injected = sum(proxy.injected.values())
    assert injected >= 6 and len(proxy.injected) >= 4, proxy.injected
    assert llm.stats["failed"] == 0 and backend.retries >= injected
    assert len(faulty) == len(rows) and "failed" not in {r["status"] for r in faulty}
    # Greedy decoding on the same server: the faults changed nothing in what was recorded.
    assert [r["critique"] for r in faulty] == [r["critique"] for r in clean]
    assert [r["status"] for r in faulty] == [r["status"] for r in clean]


def verdict_answer(body: dict) -> dict:
    return {
        "content": echo_answer(body)["content"] + " Final Judgement (Yes or No): Yes",
        "finish_reason": "stop",
    }


def run_stage(tmp_path: Path, url: str, name: str, options: dict) -> subprocess.Popen:
    llm = {"backend": "openai", "model": "judge-x", "base_url": url, "name": "judge"}
    env = {**os.environ, RUN_OPTIONS_ENV: json.dumps({"llms": {"judge": options}})}
    (tmp_path / "template.txt").write_text(TEMPLATE)
    cmd = [
        sys.executable, "-m", "vpo.stages.critique", "--generations", str(tmp_path / "generations.parquet"),
        "--template", str(tmp_path / "template.txt"), "--llm", json.dumps(llm),
        "--generation", json.dumps(SAMPLED), "--seed", "0", "--max-parse-retries", "0",
        "--cache-dir", str(tmp_path / f"cache-{name.split('-')[0]}"),
        "--out", str(tmp_path / f"{name}.parquet"), "--report", str(tmp_path / f"{name}.json"),
    ]  # fmt: skip
    log = open(tmp_path / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
    return subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)


def finish(proc: subprocess.Popen, timeout: float = 600) -> None:
    assert proc.wait(timeout=timeout) == 0, f"stage failed, see {proc.args[-1]} and its log"


def kill_when(proc: subprocess.Popen, ready, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, "the stage ended before it could be killed"
        assert time.monotonic() < deadline, "the stage never got half-way"
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


def records(tmp_path: Path, name: str) -> list[dict]:
    keep = ("item_id", "verdict", "status", "attempts", "critique", "seed")
    return [{k: r[k] for k in keep} for r in read_records(tmp_path / f"{name}.parquet")]


def test_killed_half_way_then_rerun_gives_the_same_records_and_pays_almost_nothing_twice(tmp_path):
    n = 2000
    write_records(tmp_path / "generations.parquet", generations(n), "generation")
    options = {"max_concurrency": 16}
    with FixtureServer(answer=verdict_answer, latency_s=0.01) as reference:
        finish(run_stage(tmp_path, reference.url, "reference", options))

    with FixtureServer(answer=verdict_answer, latency_s=0.01) as server:
        cache = tmp_path / "cache-resumed" / "llm"
        killed = run_stage(tmp_path, server.url, "resumed-killed", options)
        kill_when(killed, lambda: cache.exists() and sum(1 for _ in cache.rglob("*.json")) >= n // 2)
        assert not (tmp_path / "resumed-killed.parquet").exists()
        done_before = sum(1 for _ in cache.rglob("*.json"))
        finish(run_stage(tmp_path, server.url, "resumed", options))

    assert n // 2 <= done_before < n
    assert records(tmp_path, "resumed") == records(tmp_path, "reference")
    # Only requests in flight at the kill can be answered twice: at most max_concurrency (16) of them.
    sent_twice = sum(count - 1 for count in server.completions.values() if count > 1)
    assert len(server.completions) == n
    assert sent_twice <= n // 100, f"{sent_twice} of {n} requests were answered twice"
    report = json.loads((tmp_path / "resumed.json").read_text())
    assert report["llm"]["cache_hits"] == done_before and report["llm"]["failed"] == 0


def test_batch_mode_killed_while_waiting_resumes_its_batch(tmp_path):
    n = 50
    write_records(tmp_path / "generations.parquet", generations(n), "generation")
    with FixtureServer(answer=verdict_answer) as reference:
        finish(run_stage(tmp_path, reference.url, "reference", {}))

    options = {"mode": "batch", "batch_poll_s": 0.1}
    with FixtureServer(answer=verdict_answer, batch_delay_s=3.0) as server:
        journals = batches_dir(tmp_path / "cache-batch")  # results/state/batches beside the cache

        def submitted() -> bool:
            return any(json.loads(p.read_text()).get("batch_id") for p in journals.glob("*.json"))

        kill_when(run_stage(tmp_path, server.url, "batch-killed", options), submitted)
        assert len(server.batches) == 1
        finish(run_stage(tmp_path, server.url, "batch", options))

    assert len(server.batches) == 1, "the re-run paid for a second batch"
    assert sorted(server.completions.values()) == [1] * n
    assert records(tmp_path, "batch") == records(tmp_path, "reference")
    report = json.loads((tmp_path / "batch.json").read_text())
    assert report["llm"]["batch"]["batches_resumed"] == 1 and report["llm"]["batch"]["batches_submitted"] == 0
