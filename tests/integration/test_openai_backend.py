"""The `openai` backend talks HTTP to a `transformers serve` process the stage starts itself, and the
same stage gives the same schema-valid records with either backend."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys

import pytest

from vpo.core.ids import query_id
from vpo.core.io import read_records, write_records
from vpo.core.schemas import validate_records
from vpo.stages import sample as generate

pytestmark = [pytest.mark.integration, pytest.mark.slow]

QUERIES = ["a red cat at night", "a dog on the beach at sunset", "slow rain in the city"]
GREEDY = {"temperature": 0.0, "top_p": 1.0, "max_new_tokens": 8}


def _draft(tmp_path, queries, llm: dict, name: str) -> list[dict]:
    out = tmp_path / f"{name}.parquet"
    generate.main(
        [
            "--role", "draft", "--queries", str(queries), "--template", str(tmp_path / "t.txt"),
            "--llm", json.dumps(llm), "--generation", json.dumps(GREEDY), "--seed", "0",
            "--cache-dir", str(tmp_path / "cache"), "--server-log", str(tmp_path / "server.log"),
            "--out", str(out), "--report", str(tmp_path / f"{name}.report.json"),
        ]
    )  # fmt: skip
    return read_records(out)


def _completions_served(tmp_path) -> int:
    log = tmp_path / "server.log"
    return log.read_text().count("POST /v1/chat/completions") if log.exists() else 0


def test_hf_and_served_openai_backends_agree(tiny_lm, tmp_path):
    (tmp_path / "t.txt").write_text("Write a video prompt for: {query}")
    queries = tmp_path / "queries.parquet"
    rows = [
        {"query_id": query_id(q), "query": q, "set": "sft", "source_file": "q.txt", "source_line": i + 1}
        for i, q in enumerate(QUERIES)
    ]
    write_records(queries, rows, "query")

    via_hf = _draft(tmp_path, queries, {"backend": "hf", "model_path": str(tiny_lm), "batch_size": 2}, "hf")
    served = {"backend": "openai", "serve": "transformers", "model_path": str(tiny_lm), "max_concurrency": 2}
    via_http = _draft(tmp_path, queries, served, "openai")

    assert _completions_served(tmp_path) == len(QUERIES)
    for records in (via_hf, via_http):
        validate_records(records, "generation", "test")
        assert [r["query"] for r in records] == QUERIES
        assert all(r["status"] in {"ok", "empty"} and r["error"] is None for r in records)
    assert via_hf[0]["model_fingerprint"].startswith("hf|")
    assert via_http[0]["model_fingerprint"].startswith("transformers-serve|")
    # Greedy decoding of the same weights and chat template: the transport must not change the text.
    assert [r["raw"] for r in via_http] == [r["raw"] for r in via_hf]

    # A re-run is answered from the item cache: the server starts but receives no request.
    again = _draft(tmp_path, queries, served, "openai-again")
    assert [r["raw"] for r in again] == [r["raw"] for r in via_http]
    assert _completions_served(tmp_path) == len(QUERIES)
    report = json.loads((tmp_path / "openai-again.report.json").read_text())
    assert report["llm"]["cache_hits"] == len(QUERIES)


def test_sigterm_to_the_job_stops_the_server_it_started(tiny_lm, tmp_path):
    # As Slurm ends a job at its time limit: SIGTERM to the job, never to the server's own session.
    script = (
        "import logging, time\n"
        "from vpo.llm.server import local_server\n"
        "logging.basicConfig(level=logging.INFO)\n"
        f"with local_server('transformers', {str(tiny_lm)!r}, log_path={str(tmp_path / 'server.log')!r}):\n"
        "    print('ready', flush=True)\n"
        "    time.sleep(600)\n"
    )
    job = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert job.stdout.readline().strip() == "ready", job.stderr.read()
    job.send_signal(signal.SIGTERM)
    assert job.wait(timeout=60) == 128 + signal.SIGTERM
    server_pid = int(re.search(r"model server pid (\d+)", job.stderr.read()).group(1))
    with pytest.raises(ProcessLookupError):
        os.kill(server_pid, 0)
