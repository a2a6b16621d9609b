"""Parallel judge jobs share one API quota: three `python -m vpo.stages.critique` processes, as the critique
rule runs them, against the local OpenAI fixture, which records when each request arrived and what it
counts against a tokens-per-minute quota (prompt characters / 4 + max_tokens, as OpenAI counts it).

The quota is the real one-minute kind (a burst of up to one minute's quota, then the per-minute rate),
so the jobs together send a little more than one minute's worth: the first minute's quota goes at
once, the rest at the refill rate. Asserted at the server: in every window of w seconds the requests
and tokens stay within quota × (1 + w / 60).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.openai_fixture_server import FixtureServer, echo_answer
from tests.quota_windows import max_excess
from vpo.core.ids import query_id
from vpo.core.io import write_records
from vpo.core.run_options import RUN_OPTIONS_ENV

pytestmark = pytest.mark.slow

TEMPLATE = "Check the video prompt against the rules.\nQuery: {query}\nPrompt: {prompt}"
GENERATION = {"temperature": 0.7, "top_p": 1.0, "max_new_tokens": 64}
JOBS, PER_JOB = 3, 90
RPM, TPM = 240.0, 24_000.0  # 270 requests of ≈ 105 tokens: ≈ 28 000 tokens, so TPM binds
# A request reaches the server a little after its reserved time (HTTP, process scheduling): up to ~1 s
# on a loaded 2-core machine. 2 s of refill (800 tokens, 3 % of the quota) is far below what three jobs
# pacing alone would overshoot (the whole burst three times).
SLACK_S = 2.0


def verdict_answer(body: dict) -> dict:
    return {
        "content": echo_answer(body)["content"] + " Final Judgement (Yes or No): Yes",
        "finish_reason": "stop",
    }


def shard(job: int) -> list[dict]:
    rows = []
    for i in range(PER_JOB):
        query = f"a red cat number {i} of job {job} at night"
        rows.append(
            {
                "item_id": f"item-{job}-{i:04d}", "query_id": query_id(query), "query": query,
                "sample_index": 0, "prompt": f"a slow camera follows red cat {i} in the blue night rain",
                "status": "ok", "raw": "x", "finish_reason": "stop", "seed": i, "model_fingerprint": "test",
                "error": None,
            }
        )  # fmt: skip
    return rows


def start_job(tmp_path: Path, url: str, job: int) -> subprocess.Popen:
    write_records(tmp_path / f"shard-{job}.parquet", shard(job), "generation")
    llm = {"backend": "openai", "model": "gpt-4o", "base_url": url, "name": "judge"}
    options = {"requests_per_minute": RPM, "tokens_per_minute": TPM, "max_concurrency": 16}
    env = {**os.environ, RUN_OPTIONS_ENV: json.dumps({"llms": {"judge": options}})}
    cmd = [
        sys.executable, "-m", "vpo.stages.critique", "--generations", str(tmp_path / f"shard-{job}.parquet"),
        "--template", str(tmp_path / "template.txt"), "--llm", json.dumps(llm),
        "--generation", json.dumps(GENERATION), "--seed", "0", "--max-parse-retries", "0",
        "--cache-dir", str(tmp_path / "cache"),  # results/cache: one for every job of the run
        "--out", str(tmp_path / f"critiques-{job}.parquet"), "--report", str(tmp_path / f"report-{job}.json"),
    ]  # fmt: skip
    log = open(tmp_path / f"job-{job}.log", "wb")  # noqa: SIM115 - closed with the process
    return subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)


def test_parallel_judge_jobs_stay_within_one_quota_together(tmp_path):
    (tmp_path / "template.txt").write_text(TEMPLATE)
    with FixtureServer(answer=verdict_answer, latency_s=0.01) as server:
        jobs = [start_job(tmp_path, server.url, job) for job in range(JOBS)]
        for job, proc in enumerate(jobs):
            assert proc.wait(timeout=300) == 0, (tmp_path / f"job-{job}.log").read_text()[-3000:]
    arrivals = server.arrivals
    assert len(arrivals) == JOBS * PER_JOB
    requests = [(a["time"], 1.0) for a in arrivals]
    # What OpenAI counts against TPM when the request arrives (the client's estimate_tokens).
    tokens = [(a["time"], a["prompt_chars"] // 4 + 1 + a["n"] * a["max_tokens"]) for a in arrivals]
    span = max(t for t, _ in requests) - min(t for t, _ in requests)
    total = sum(amount for _, amount in tokens)
    burst_r, burst_t = max_excess(requests, RPM / 60, 0.0), max_excess(tokens, TPM / 60, 0.0)
    print(
        f"\n{len(requests)} requests, {total:.0f} tokens in {span:.1f} s; the most sent beyond the refill: "
        f"{burst_r:.0f} requests (quota {RPM:.0f}/min), {burst_t:.0f} tokens (quota {TPM:.0f}/min); "
        f"a token bucket of one minute allows {TPM * (1 + span / 60):.0f} tokens in {span:.1f} s"
    )
    assert total > TPM, "the test must send more than one minute's quota to see the pacing"
    assert max_excess(requests, RPM / 60, SLACK_S) <= RPM
    assert max_excess(tokens, TPM / 60, SLACK_S) <= TPM
    # Each job alone is within the burst, so without the shared file all three would go at once.
    assert span >= (total - TPM) / (TPM / 60) - SLACK_S
    assert sorted(p.name for p in (tmp_path / "cache" / "quota").iterdir()) == ["judge.json"]
