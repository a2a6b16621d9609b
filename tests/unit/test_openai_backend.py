"""Retry behaviour of the `openai` backend against a local HTTP endpoint that fails on purpose."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from vpo.llm.base import Request
from vpo.llm.openai_backend import OpenAIBackend

COMPLETION = {
    "id": "c1",
    "object": "chat.completion",
    "created": 0,
    "model": "m",
    "choices": [
        {"index": 0, "message": {"role": "assistant", "content": " A cat. "}, "finish_reason": "stop"}
    ],
    "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8},
}


@pytest.fixture
def endpoint():
    """Answers POSTs from a script of (status, headers) steps, then 200; records what it received."""
    state = {"script": [], "seen": []}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            state["seen"].append({"body": body, "auth": self.headers.get("Authorization")})
            status, headers = state["script"].pop(0) if state["script"] else (200, {})
            payload = json.dumps(COMPLETION if status == 200 else {"error": {"message": "nope"}}).encode()
            self.send_response(status)
            for key, value in {"Content-Type": "application/json", **headers}.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args):  # keep pytest output clean
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1", state
    server.shutdown()


def ask(backend, n=1):
    requests = [
        Request.build(
            [{"role": "user", "content": f"q{i}"}], {"temperature": 0.7, "top_p": 1.0, "max_new_tokens": 9}, i
        )
        for i in range(n)
    ]
    out = [None] * n
    backend.generate(requests, lambda i, r: out.__setitem__(i, r))
    return out


def test_retries_429_and_5xx_then_succeeds(endpoint, monkeypatch):
    url, state = endpoint
    state["script"] = [(429, {"Retry-After": "0"}), (503, {}), (500, {})]
    monkeypatch.setenv("VPO_TEST_KEY", "sk-test-123")
    backend = OpenAIBackend(url, "m", "openai|m", api_key_env="VPO_TEST_KEY", backoff_base_s=0.01)
    (response,) = ask(backend)
    assert response.ok and response.text == "A cat." and response.completion_tokens == 3
    assert len(state["seen"]) == 4
    assert state["seen"][-1]["auth"] == "Bearer sk-test-123"
    assert state["seen"][-1]["body"]["max_tokens"] == 9 and state["seen"][-1]["body"]["seed"] == 0


def test_gives_up_after_max_retries_and_keeps_the_error(endpoint):
    url, state = endpoint
    state["script"] = [(500, {})] * 3
    (response,) = ask(OpenAIBackend(url, "m", "openai|m", max_retries=2, backoff_base_s=0.01))
    assert not response.ok and response.text is None and "InternalServerError" in response.error
    assert len(state["seen"]) == 3


def test_client_errors_are_not_retried(endpoint):
    url, state = endpoint
    state["script"] = [(400, {})]
    (response,) = ask(OpenAIBackend(url, "m", "openai|m", backoff_base_s=0.01))
    assert not response.ok and "BadRequestError" in response.error
    assert len(state["seen"]) == 1


def test_a_missing_key_variable_is_named(monkeypatch):
    monkeypatch.delenv("VPO_TEST_KEY", raising=False)
    with pytest.raises(RuntimeError, match="VPO_TEST_KEY"):
        OpenAIBackend("http://127.0.0.1:9/v1", "m", "openai|m", api_key_env="VPO_TEST_KEY")
