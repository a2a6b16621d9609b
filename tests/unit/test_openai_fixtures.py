"""The OpenAI test fixtures (fixture server, fault proxy) driven by the official `openai` client."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import openai
import pytest

from tests.conftest import REPO
from tests.fixtures.fault_proxy import FaultProxy
from tests.fixtures.openai_fixture_server import FixtureServer, canonical, chat_completion, echo_answer

BODY = {"model": "m", "messages": [{"role": "user", "content": "Rate this prompt"}], "seed": 3}
# Both engines of the server and of the proxy must behave the same.
ENGINES = pytest.mark.parametrize("engine", ["threads", "asyncio"])


def client(url: str, **kwargs) -> openai.OpenAI:
    return openai.OpenAI(base_url=url, api_key="x", max_retries=0, **kwargs)


def wait_for(predicate, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)


def batch_input(count: int) -> bytes:
    lines = [
        {
            "custom_id": f"r{i}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {"model": "m", "messages": [{"role": "user", "content": f"q{i}"}], "seed": i},
        }
        for i in range(count)
    ]
    return "".join(json.dumps(line) + "\n" for line in lines).encode()


@ENGINES
def test_chat_completion_sync_and_async(engine):
    with FixtureServer(engine=engine) as server:
        completion = client(server.url).chat.completions.create(**BODY)
        expected = echo_answer(BODY)
        assert completion.choices[0].message.content == expected["content"]
        assert completion.choices[0].finish_reason == "stop" and completion.model == "m"
        assert completion.usage.prompt_tokens == 3
        assert completion.usage.completion_tokens == len(expected["content"].split())
        assert server.completions == {canonical(BODY): 1}

        cut = client(server.url).chat.completions.create(**BODY, max_tokens=2)
        assert cut.choices[0].finish_reason == "length" and len(cut.choices[0].message.content.split()) == 2

        async def many() -> list[str]:
            async_client = openai.AsyncOpenAI(base_url=server.url, api_key="x", max_retries=0)
            try:
                replies = await asyncio.gather(
                    *(async_client.chat.completions.create(**{**BODY, "seed": s}) for s in range(5))
                )
            finally:
                await async_client.close()
            return [reply.choices[0].message.content for reply in replies]

        answers = asyncio.run(many())
        assert answers == [echo_answer({**BODY, "seed": s})["content"] for s in range(5)]
        assert len(set(answers)) == 5  # the seed decides the answer


@ENGINES
def test_unknown_path_is_a_json_404(engine):
    with FixtureServer(engine=engine) as server, pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(server.url + "/nowhere", timeout=5)
    assert caught.value.code == 404 and "error" in json.loads(caught.value.read())


@ENGINES
def test_batch_round_trip_with_output_and_error_files(engine):
    def fail_r1(line: dict) -> dict | None:
        return {"code": "invalid_prompt", "message": "refused"} if line["custom_id"] == "r1" else None

    with FixtureServer(batch_delay_s=0.05, batch_line_errors=fail_r1, engine=engine) as server:
        api = client(server.url)
        uploaded = api.files.create(file=("in.jsonl", batch_input(3), "application/jsonl"), purpose="batch")
        assert uploaded.purpose == "batch" and uploaded.bytes == len(batch_input(3))
        batch = api.batches.create(
            input_file_id=uploaded.id,
            endpoint="/v1/chat/completions",
            completion_window="24h",
            metadata={"stage": "judge"},
        )
        assert batch.status == "validating" and batch.metadata == {"stage": "judge"}
        wait_for(lambda: api.batches.retrieve(batch.id).status == "completed")
        done = api.batches.retrieve(batch.id)
        counts = done.request_counts
        assert (counts.total, counts.completed, counts.failed) == (3, 2, 1)
        assert done.in_progress_at is not None and done.completed_at is not None

        outputs = [json.loads(line) for line in api.files.content(done.output_file_id).text.splitlines()]
        assert [o["custom_id"] for o in outputs] == ["r0", "r2"]
        for output, seed in zip(outputs, (0, 2), strict=True):
            body = output["response"]["body"]
            assert output["response"]["status_code"] == 200 and output["error"] is None
            expected = echo_answer({"messages": [{"role": "user", "content": f"q{seed}"}], "seed": seed})
            assert body["choices"][0]["message"]["content"] == expected["content"]
        (error,) = [json.loads(line) for line in api.files.content(done.error_file_id).content.splitlines()]
        assert error["custom_id"] == "r1" and error["response"] is None
        assert error["error"]["code"] == "invalid_prompt"
        assert sum(server.completions.values()) == 2
        assert [b.id for b in api.batches.list()] == [batch.id]


def test_forced_status_and_cancel_stop_a_batch():
    with FixtureServer(batch_delay_s=0.5) as server:
        api = client(server.url)
        uploaded = api.files.create(file=("in.jsonl", batch_input(2), "application/jsonl"), purpose="batch")
        expired = api.batches.create(
            input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        cancelled = api.batches.create(
            input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        server.set_batch_status(expired.id, "expired")
        assert api.batches.cancel(cancelled.id).status == "cancelling"
        time.sleep(0.7)  # past batch_delay_s: an unforced batch would have run by now
        seen = api.batches.retrieve(expired.id)
        assert seen.status == "expired" and seen.expired_at is not None and seen.output_file_id is None
        seen = api.batches.retrieve(cancelled.id)
        assert seen.status == "cancelled" and seen.cancelled_at is not None
        assert not server.completions


def test_an_invalid_input_file_fails_the_batch():
    with FixtureServer() as server:
        api = client(server.url)
        content = batch_input(1) + b"not json\n"
        uploaded = api.files.create(file=("in.jsonl", content, "application/jsonl"), purpose="batch")
        batch = api.batches.create(
            input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        wait_for(lambda: api.batches.retrieve(batch.id).status == "failed")
        assert api.batches.retrieve(batch.id).errors.data[0].line == 2
        assert not server.completions


def start(module: str, *args: str) -> tuple[subprocess.Popen, str]:
    process = subprocess.Popen(
        [sys.executable, "-m", module, "--port", "0", *args], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    return process, process.stdout.readline().strip()


def stop(process: subprocess.Popen) -> dict:
    """SIGTERM; the JSON line of counts the command prints on its way out."""
    process.terminate()
    out, _ = process.communicate(timeout=10)
    assert process.returncode == 0
    counts = json.loads(out)
    assert counts.pop("cpu_s") >= 0
    return counts


@ENGINES
def test_command_line_prints_the_url_and_serves_until_sigterm(engine):
    process, url = start("tests.fixtures.openai_fixture_server", "--engine", engine)
    try:
        assert url.startswith("http://127.0.0.1:") and url.endswith("/v1")
        assert client(url).chat.completions.create(**BODY).choices[0].message.content
    finally:
        counts = stop(process)
    assert counts == {"completions": 1, "distinct": 1, "arrivals": 1}


def test_proxy_command_line_injects_and_reports_its_faults():
    server, url = start("tests.fixtures.openai_fixture_server", "--engine", "asyncio")
    proxy, proxy_url = start(
        "tests.fixtures.fault_proxy", "--upstream", url, "--rate", "server_error=1", "--engine", "asyncio"
    )
    try:
        assert proxy_url.startswith("http://127.0.0.1:") and proxy_url.endswith("/v1")
        with pytest.raises(openai.InternalServerError):
            client(proxy_url).chat.completions.create(**BODY)
    finally:
        counts = stop(proxy)
        served = stop(server)
    assert counts == {"injected": {"server_error": 1}, "forwarded": 0, "answered": 0}
    assert served["completions"] == 0


@ENGINES
@pytest.mark.parametrize(
    ("fault", "raised", "paid"),
    [
        ("rate_limit", openai.RateLimitError, 0),
        ("server_error", openai.InternalServerError, 0),
        ("timeout", openai.APITimeoutError, 0),
        ("malformed", json.JSONDecodeError, 1),
        ("truncated", openai.APIConnectionError, 1),
    ],
)
def test_each_fault_gives_the_documented_client_error(fault, raised, paid, engine):
    with (
        FixtureServer(engine=engine) as server,
        FaultProxy(server.url, {fault: 1.0}, hang_s=2.0, engine=engine) as proxy,
    ):
        with pytest.raises(raised) as caught:
            client(proxy.url, timeout=0.3).chat.completions.create(**BODY)
        assert proxy.injected == {fault: 1}
        assert sum(proxy.forwarded.values()) == paid and sum(server.completions.values()) == paid
        assert not proxy.answered
    if fault == "rate_limit":
        assert caught.value.response.headers["retry-after"] == "0"
    if fault == "truncated":
        assert type(caught.value.__cause__).__name__ == "RemoteProtocolError"


@ENGINES
def test_without_faults_the_answer_is_relayed_unchanged(engine):
    with (
        FixtureServer(engine=engine) as server,
        FaultProxy(server.url, {"server_error": 0.0}, engine=engine) as proxy,
    ):
        api = client(proxy.url)
        through = api.chat.completions.create(**BODY)
        direct = client(server.url).chat.completions.create(**BODY)
        assert through.choices[0].message == direct.choices[0].message
        assert through.usage == direct.usage
        assert proxy.forwarded == {canonical(BODY): 1} and proxy.answered == {canonical(BODY): 1}
        assert not proxy.injected
        # A second request on the same connections (the asyncio proxy keeps its upstream one).
        assert api.chat.completions.create(**BODY).choices[0].message == direct.choices[0].message
        assert proxy.answered == {canonical(BODY): 2} and server.completions == {canonical(BODY): 3}


def test_the_asyncio_proxy_resends_on_a_kept_connection_the_upstream_closed():
    """An upstream that closes each connection after its reply without saying so: the kept
    connection fails before any byte of the next reply, and the request goes again on a new one."""
    seen = []

    class Closing(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            seen.append(body)
            payload = json.dumps(chat_completion(json.loads(body), [echo_answer(json.loads(body))])).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
            self.close_connection = True  # silently: no "Connection: close"

        def log_message(self, *args):
            return

    upstream = ThreadingHTTPServer(("127.0.0.1", 0), Closing)
    threading.Thread(target=upstream.serve_forever, args=(0.05,), daemon=True).start()
    try:
        url = f"http://127.0.0.1:{upstream.server_address[1]}/v1"
        with FaultProxy(url, {}, engine="asyncio") as proxy:
            for seed in (1, 2):
                reply = client(proxy.url).chat.completions.create(**{**BODY, "seed": seed})
                assert reply.choices[0].message.content == echo_answer({**BODY, "seed": seed})["content"]
            time.sleep(0.1)  # the proxy's kept connection is now closed at the far end
            assert client(proxy.url).chat.completions.create(**BODY).choices[0].message.content
    finally:
        upstream.shutdown()
        upstream.server_close()
    assert len(seen) == 3 and sum(proxy.answered.values()) == 3


@ENGINES
def test_gets_pass_without_faults_and_rates_are_checked(engine):
    with (
        FixtureServer(engine=engine) as server,
        FaultProxy(server.url, {"server_error": 1.0}, engine=engine) as proxy,
    ):
        assert client(proxy.url).batches.list().data == []
        assert not proxy.injected
    with pytest.raises(ValueError):
        FaultProxy("http://127.0.0.1:1/v1", {"rate_limit": 0.6, "truncated": 0.6})
    with pytest.raises(ValueError):
        FaultProxy("http://127.0.0.1:1/v1", {"lightning": 0.1})
