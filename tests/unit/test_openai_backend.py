"""Retry behaviour of the `openai` backend against a local HTTP endpoint that fails on purpose."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
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
    """Answers POSTs from a script of (status, headers[, fault]) steps, then 200; records what it
    received. Faults: "half" (half the body, with a matching length), "cut" (the whole length
    promised, half sent, connection closed), "hang" (no reply for 1 s, then the connection closed).
    Keep-alive (HTTP/1.1); `delay_s` before each reply; `in_flight` and `peak` count requests at once."""
    state = {"script": [], "seen": [], "delay_s": 0.0, "in_flight": 0, "peak": 0}
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with lock:
                state["seen"].append(
                    {"body": body, "auth": self.headers.get("Authorization"), "path": self.path,
                     "peer": self.client_address, "type": self.headers.get("Content-Type"),
                     "project": self.headers.get("OpenAI-Project")}
                )  # fmt: skip
                step = state["script"].pop(0) if state["script"] else (200, {})
                state["in_flight"] += 1
                state["peak"] = max(state["peak"], state["in_flight"])
            try:
                time.sleep(state["delay_s"])
                self.reply(*step)
            finally:
                with lock:
                    state["in_flight"] -= 1

        def reply(self, status, headers, fault=None):
            if fault == "hang":
                time.sleep(1.0)
                self.close_connection = True
                return
            payload = json.dumps(COMPLETION if status == 200 else {"error": {"message": "nope"}}).encode()
            sent = payload[: len(payload) // 2] if fault in ("half", "cut") else payload
            self.send_response(status)
            for key, value in {"Content-Type": "application/json", **headers}.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(payload if fault == "cut" else sent)))
            self.end_headers()
            self.wfile.write(sent)
            if fault == "cut":
                self.close_connection = True

        def log_message(self, *args):  # keep pytest output clean
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1", state
    server.shutdown()
    server.server_close()


@pytest.fixture(params=["plain", "aiohttp"])
def transport(request, monkeypatch):
    """Runs a test through each transport (a plain-http endpoint would always get `_PlainHTTP`)."""
    chosen = OpenAIBackend.transport
    monkeypatch.setattr(OpenAIBackend, "transport", lambda self, kind="auto": chosen(self, request.param))
    return request.param


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


def test_retries_429_and_5xx_then_succeeds(endpoint, transport, monkeypatch):
    url, state = endpoint
    state["script"] = [(429, {"Retry-After": "0"}), (503, {}), (500, {})]
    monkeypatch.setenv("VPO_TEST_KEY", "sk-test-123")
    monkeypatch.setenv("OPENAI_PROJECT_ID", "proj_123")  # sent as the official client sends it
    backend = OpenAIBackend(url, "m", "openai|m", api_key_env="VPO_TEST_KEY", backoff_base_s=0.01)
    (response,) = ask(backend)
    assert response.ok and response.text == "A cat." and response.completion_tokens == 3
    assert len(state["seen"]) == 4
    last = state["seen"][-1]
    assert last["auth"] == "Bearer sk-test-123" and last["type"] == "application/json"
    assert last["project"] == "proj_123"
    assert state["seen"][-1]["body"]["max_tokens"] == 9 and state["seen"][-1]["body"]["seed"] == 0


def test_gives_up_after_max_retries_and_keeps_the_error(endpoint, transport):
    url, state = endpoint
    state["script"] = [(500, {})] * 3
    (response,) = ask(OpenAIBackend(url, "m", "openai|m", max_retries=2, backoff_base_s=0.01))
    assert not response.ok and response.text is None and "InternalServerError" in response.error
    assert len(state["seen"]) == 3


def test_client_errors_are_not_retried(endpoint, transport):
    url, state = endpoint
    state["script"] = [(400, {})]
    (response,) = ask(OpenAIBackend(url, "m", "openai|m", backoff_base_s=0.01))
    # The official client's exception and message, as before the backend sent through aiohttp.
    assert not response.ok and response.error == "BadRequestError: Error code: 400 - nope"
    assert len(state["seen"]) == 1


def test_broken_cut_and_missing_replies_are_retried(endpoint, transport):
    url, state = endpoint
    state["script"] = [(200, {}, "half"), (200, {}, "cut"), (200, {}, "hang")]
    backend = OpenAIBackend(url, "m", "openai|m", timeout_s=0.5, backoff_base_s=0.01)
    (response,) = ask(backend)
    assert response.ok and response.text == "A cat." and response.attempts == 4
    assert backend.retries == 3 and len(state["seen"]) == 4


def test_retry_after_is_waited_for(endpoint, transport):
    url, state = endpoint
    state["script"] = [(429, {"retry-after-ms": "300"})]
    start = time.monotonic()
    (response,) = ask(OpenAIBackend(url, "m", "openai|m", backoff_base_s=0.01))
    assert response.ok and response.attempts == 2 and time.monotonic() - start >= 0.3


def test_requests_share_max_concurrency_kept_alive_connections(endpoint, transport):
    url, state = endpoint
    state["delay_s"] = 0.05
    responses = ask(OpenAIBackend(url, "m", "openai|m", max_concurrency=4), 24)
    assert all(r.ok for r in responses) and len(state["seen"]) == 24
    assert state["peak"] == 4  # as many in flight as allowed, never more
    assert len({seen["peer"] for seen in state["seen"]}) == 4  # kept alive: 4 connections for 24 requests


def test_the_transport_follows_the_endpoint(monkeypatch):
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)

    async def chosen(url: str) -> tuple[str, int | None]:
        transport = OpenAIBackend(url, "m", "openai|m", max_concurrency=7).transport()
        try:
            connector = getattr(getattr(transport, "session", None), "connector", None)
            return type(transport).__name__, connector.limit if connector else None
        finally:
            await transport.close()

    assert asyncio.run(chosen("http://127.0.0.1:8000/v1")) == ("_PlainHTTP", None)
    # https, or a proxy to go through: aiohttp, its pool sized to max_concurrency.
    assert asyncio.run(chosen("https://api.example.com/v1")) == ("_Aiohttp", 7)
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.example.com:3128")
    assert asyncio.run(chosen("http://judge.example.com/v1")) == ("_Aiohttp", 7)


def test_a_proxy_from_the_environment_is_used(endpoint, monkeypatch):
    url, state = endpoint
    proxy = url.removesuffix("/v1")
    for name in ("http_proxy", "HTTP_PROXY"):
        monkeypatch.setenv(name, proxy)
    for name in ("no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    (response,) = ask(OpenAIBackend("http://judge.invalid/v1", "m", "openai|m", backoff_base_s=0.01))
    assert response.ok and state["seen"][0]["path"] == "http://judge.invalid/v1/chat/completions"


def test_a_missing_key_variable_is_named(monkeypatch):
    monkeypatch.delenv("VPO_TEST_KEY", raising=False)
    with pytest.raises(RuntimeError, match="VPO_TEST_KEY"):
        OpenAIBackend("http://127.0.0.1:9/v1", "m", "openai|m", api_key_env="VPO_TEST_KEY")


def test_plain_transport_reads_every_framing_and_survives_closed_connections():
    """Chunked replies, replies that run to the end of the connection, and a server that closes a
    kept connection without saying so: all answered, none of them costing a retry."""
    framings = iter(["silent-close", "chunked", "to-eof", "length", "silent-close", "length"])
    seen = []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            framing = next(framings)
            seen.append((framing, self.client_address))
            payload = json.dumps(COMPLETION).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            if framing == "chunked":
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                for piece in (payload[:10], payload[10:]):
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                self.wfile.write(b"0\r\n\r\n")
                return
            if framing != "to-eof":
                self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
            self.close_connection = framing in ("to-eof", "silent-close")

        def log_message(self, *args):
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    try:
        backend = OpenAIBackend(
            f"http://127.0.0.1:{server.server_address[1]}/v1", "m", "m", max_concurrency=1
        )
        responses = ask(backend, 6)
    finally:
        server.shutdown()
        server.server_close()
    assert [r.text for r in responses] == ["A cat."] * 6 and backend.retries == 0 and len(seen) == 6
    # Kept where the server allowed it: the reply after a chunked one came on the same connection, the one
    # after a reply that ran to the end of its connection on a new one.
    assert seen[1][1] == seen[2][1] and seen[3][1] != seen[2][1]


def test_plain_transport_resends_once_when_a_kept_connection_ends_before_the_reply():
    """The server takes the second request on the kept connection and closes it without a byte of
    reply (as when its idle timeout races the request): the request goes again on a new connection."""
    listener = socket.create_server(("127.0.0.1", 0))
    received = []
    payload = json.dumps(COMPLETION).encode()
    reply = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(payload)

    def receive(conn: socket.socket) -> bytes:
        chunk = conn.recv(65536)
        if not chunk:
            raise ConnectionError("the client went away")
        return chunk

    def read_request(conn: socket.socket, buffer: bytes) -> bytes:
        while b"\r\n\r\n" not in buffer:
            buffer += receive(conn)
        head, _, rest = buffer.partition(b"\r\n\r\n")
        length = int(
            next(h for h in head.split(b"\r\n") if h.lower().startswith(b"content-length")).split(b":")[1]
        )
        while len(rest) < length:
            rest += receive(conn)
        received.append(head.split(b" ")[1])
        return rest[length:]

    def serve() -> None:
        first, _ = listener.accept()
        left = read_request(first, b"")
        first.sendall(reply + payload)
        read_request(first, left)
        first.close()  # the second request, read and dropped without a reply
        second, _ = listener.accept()
        read_request(second, b"")
        second.sendall(reply + payload)
        second.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    backend = OpenAIBackend(f"http://127.0.0.1:{listener.getsockname()[1]}/v1", "m", "m", max_concurrency=1)
    responses = ask(backend, 2)
    thread.join(timeout=5)
    listener.close()
    assert [r.text for r in responses] == ["A cat.", "A cat."] and backend.retries == 0
    assert received == [b"/v1/chat/completions"] * 3
