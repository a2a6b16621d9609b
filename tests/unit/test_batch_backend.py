"""Batch mode against the local Batch API fixture (tests/fixtures/openai_fixture_server.py): answers map
back by custom_id, failed and expired lines are resubmitted, and a run that stopped while waiting
resumes its batch instead of paying for a new one."""

from __future__ import annotations

import json
import threading
import time

import pytest

from tests.fixtures.openai_fixture_server import FixtureServer, canonical, echo_answer
from vpo.llm.base import Request
from vpo.llm.batch import BatchBackend, Journal
from vpo.llm.cache import CachedLLM, ResponseCache, request_key
from vpo.llm.ledger import Ledger, Price, read_ledger
from vpo.llm.openai_backend import chat_body

GEN = {"temperature": 0.7, "top_p": 1.0, "max_new_tokens": 32}
SECRET = "sk-test-do-not-leak-4242"


def requests(n: int) -> list[Request]:
    return [Request.build([{"role": "user", "content": f"judge prompt {i}"}], GEN, 100 + i) for i in range(n)]


def backend(server: FixtureServer, tmp_path, **kwargs) -> BatchBackend:
    return BatchBackend(
        server.url, "gpt-x", "openai|gpt-x", tmp_path / "cache" / "batches", api_key_env="VPO_TEST_KEY",
        poll_s=0.02, poll_max_s=0.1, **kwargs,
    )  # fmt: skip


@pytest.fixture(autouse=True)
def api_key(monkeypatch):
    monkeypatch.setenv("VPO_TEST_KEY", SECRET)


def expected_text(request: Request) -> str:
    return echo_answer(chat_body("gpt-x", request))["content"]


def test_answers_map_back_failed_lines_are_resubmitted_and_priced_at_the_batch_rate(tmp_path):
    failed_once: set[str] = set()

    def fail_first_time(line: dict) -> dict | None:
        if line["custom_id"][-1] in "01234567" and line["custom_id"] not in failed_once:
            failed_once.add(line["custom_id"])
            return {"code": "server_error", "message": "try again"}
        return None

    asked = requests(8)
    with FixtureServer(batch_line_errors=fail_first_time) as server:
        ledger = Ledger(tmp_path / "cache" / "ledger", "critique", "gpt-x", Price(2.0, 8.0), batch=True)
        remote = backend(server, tmp_path, gate=ledger)
        llm = CachedLLM(remote, ResponseCache(tmp_path / "cache"), ledger)
        answers = llm.generate(asked)
        assert [a.text for a in answers] == [expected_text(r) for r in asked]
        assert all(a.ok and a.finish_reason == "stop" for a in answers)
        assert failed_once and remote.stats["lines_resubmitted"] == len(failed_once)
        assert len(server.batches) == 2 and remote.stats["batches_submitted"] == 2
        # Every request was answered exactly once by the server: nothing was paid twice.
        assert sorted(server.completions.values()) == [1] * 8
        journals = [json.loads(p.read_text()) for p in (tmp_path / "cache" / "batches").glob("*.json")]
        assert sorted(j["state"] for j in journals) == ["done", "done"]

        # Half price: batch_discount 0.5 on every ledger line, and a second run is answered from the cache.
        entries = read_ledger(tmp_path / "cache" / "ledger")
        assert len(entries) == 8 and {e["mode"] for e in entries} == {"batch"}
        tokens_cost = sum((e["prompt_tokens"] * 2.0 + e["completion_tokens"] * 8.0) / 1e6 for e in entries)
        assert sum(e["cost_usd"] for e in entries) == pytest.approx(tokens_cost * 0.5, rel=1e-6)
        again = CachedLLM(backend(server, tmp_path), ResponseCache(tmp_path / "cache"))
        assert [a.text for a in again.generate(asked)] == [a.text for a in answers]
        assert len(server.batches) == 2 and again.stats["cache_hits"] == 8

    # The API key never reaches a file the workflow writes.
    for path in (tmp_path / "cache").rglob("*"):
        if path.is_file():
            assert SECRET not in path.read_text(errors="replace"), path


def test_an_expired_batch_is_resubmitted_for_its_missing_lines(tmp_path):
    asked = requests(3)
    with FixtureServer(batch_delay_s=0.5) as server:
        remote = backend(server, tmp_path)

        def expire_first_batch() -> None:
            while not server.batches:
                time.sleep(0.01)
            server.set_batch_status(next(iter(server.batches)), "expired")

        watcher = threading.Thread(target=expire_first_batch)
        watcher.start()
        answers = CachedLLM(remote, ResponseCache(tmp_path / "cache")).generate(asked)
        watcher.join()
        assert [a.text for a in answers] == [expected_text(r) for r in asked]
        assert len(server.batches) == 2 and remote.stats["lines_resubmitted"] == 3


def test_lines_still_failing_after_the_last_round_are_returned_failed_and_not_cached(tmp_path):
    asked = requests(2)
    with FixtureServer(batch_line_errors=lambda line: {"code": "invalid", "message": "nope"}) as server:
        llm = CachedLLM(backend(server, tmp_path, max_resubmits=1), ResponseCache(tmp_path / "cache"))
        answers = llm.generate(asked)
        assert [a.ok for a in answers] == [False, False] and "nope" in answers[0].error
        assert llm.stats["failed"] == 2 and len(server.batches) == 2
        assert not (tmp_path / "cache" / "llm").exists()


def test_a_run_stopped_while_waiting_resumes_the_same_batch(tmp_path):
    asked = requests(4)
    with FixtureServer(batch_delay_s=0.3) as server:
        first = backend(server, tmp_path)
        keys = list(dict.fromkeys(request_key(first.fingerprint, r) for r in asked))
        # What a killed job leaves: a journal naming a submitted batch, no answers in the cache.
        first._submit(keys, dict(zip(keys, asked, strict=True)), 0)
        assert len(server.batches) == 1

        resumed = backend(server, tmp_path)
        answers = CachedLLM(resumed, ResponseCache(tmp_path / "cache")).generate(asked)
        assert [a.text for a in answers] == [expected_text(r) for r in asked]
        assert len(server.batches) == 1 and resumed.stats == {
            "batches_submitted": 0, "batches_resumed": 1, "lines_resubmitted": 0, "lines_failed": 0,
        }  # fmt: skip
        assert sorted(server.completions.values()) == [1] * 4


def test_a_run_killed_between_upload_and_create_adopts_the_batch_it_created(tmp_path):
    asked = requests(2)
    with FixtureServer(batch_delay_s=0.1) as server:
        first = backend(server, tmp_path)
        keys = [request_key(first.fingerprint, r) for r in asked]
        first._submit(keys, dict(zip(keys, asked, strict=True)), 0)
        # Forget the batch id, as if the job died right after `batches.create` returned.
        (journal,) = Journal.load_open(tmp_path / "cache" / "batches", first.fingerprint)
        journal.data.pop("batch_id")
        journal.save(state="uploading")

        resumed = backend(server, tmp_path)
        answers = CachedLLM(resumed, ResponseCache(tmp_path / "cache")).generate(asked)
        assert all(a.ok for a in answers) and len(server.batches) == 1
        assert sorted(server.completions.values()) == [1, 1]
        assert canonical(chat_body("gpt-x", asked[0])) in server.completions
