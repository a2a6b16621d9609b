"""OpenAI-compatible HTTP backend (online mode): async, paced, retried; nothing is lost on failure.

Chat completions do not go through the official client's `chat.completions.create`: at hundreds of
requests in flight it spends about 3 ms of CPU per request (its parameter transformation, its
pydantic models, and a connection pool that scans every connection on each request), which caps one
process near 300 requests per second, a quarter of what 256 requests in flight at 200 ms ask
(bench/bench_judge_calls.py). Instead, one transport per `generate` call, chosen by the endpoint:

- a plain `http://` endpoint reached without a proxy (a model server the job started, vLLM,
  `transformers serve`): `_PlainHTTP`, HTTP/1.1 keep-alive connections on asyncio streams, about
  0.12 ms of CPU per request;
- anything else (`https://`, or a proxy from HTTP_PROXY/HTTPS_PROXY): an `aiohttp` session (aiohttp
  comes with the pinned `datasets`, through `fsspec[http]`), about 0.3 ms, with the official client's
  SSL context (its CA certificates, SSL_CERT_FILE) and the proxy from the environment.

What the official client did for us is kept: the same JSON body, the `Authorization: Bearer` key (and
the OpenAI-Organization and OpenAI-Project headers from OPENAI_ORG_ID and OPENAI_PROJECT_ID), and its
exception types for every failure (`openai.RateLimitError` carrying the reply's headers,
`openai.APITimeoutError`, `openai.APIConnectionError`, …), so the retry rules and the error text
recorded for a failed item stay what they were.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import random
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

import aiohttp
import httpx2
import openai
import yarl
from aiohttp.helpers import get_env_proxy_for_url

from vpo.llm.base import Request, Response, ResultCallback
from vpo.llm.ledger import Ledger
from vpo.llm.ratelimit import Pacing, RateLimiter, SharedRateLimiter, estimate_tokens

log = logging.getLogger(__name__)

_TRANSIENT = (
    openai.RateLimitError,
    openai.APITimeoutError,
    openai.APIConnectionError,  # includes bodies cut short by a dropped connection
    openai.InternalServerError,
    openai.APIResponseValidationError,
    json.JSONDecodeError,  # a 200 whose body is not JSON (a broken proxy or load balancer)
)
OVER_BUDGET = "not sent: budget_usd reached"
_RETRYABLE_STATUS = {408, 409}  # request timeout and lock conflict: the API's own client retries them


class MalformedResponse(Exception):
    """A completion that parsed as JSON but lacks what every completion has (choices, a message)."""


class OpenAIBackend:
    """Talks to any OpenAI-compatible `/v1/chat/completions` endpoint.

    Requests go out with at most `max_concurrency` in flight, paced by the optional requests- and
    tokens-per-minute limits; transient failures (429, 5xx, timeouts, dropped connections, malformed
    bodies) are retried with exponential backoff and full jitter, honouring `Retry-After`. After
    `max_retries` retries the item is returned failed: not cached, so the next run asks again.
    `gate` (a `Ledger`) may hold a request back before it is sent, to stay within a budget.

    `server_generation_config` is for `transformers serve`, which ignores `temperature`/`top_p` unless
    sampling is switched on in a `generation_config` sent with the request (see cpu-notes).

    `parallel_sampling` (vLLM): requests that differ only in consecutive seeds s, s+1, …, s+n−1 go out as
    one request with `n` and seed s. vLLM answers choice i as a request with seed s+i, so each answer is
    the one its own request would get, and is cached as that request's (see `sibling_groups`).
    `give_up` returns a reason to stop retrying at once (the job's own server died), else None.
    `quota_file`: pace with a quota shared by every process using that file (`SharedRateLimiter`), for
    a remote endpoint called by many jobs at once; without it the pacing is this process's own.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        fingerprint: str,
        api_key_env: str | None = None,
        max_concurrency: int = 64,
        max_retries: int = 5,
        timeout_s: float = 300.0,
        server_generation_config: dict[str, Any] | None = None,
        backoff_base_s: float = 1.0,
        backoff_max_s: float = 60.0,
        requests_per_minute: float | None = None,
        tokens_per_minute: float | None = None,
        gate: Ledger | None = None,
        parallel_sampling: bool = False,
        give_up: Callable[[], str | None] | None = None,
        quota_file: str | Path | None = None,
    ):
        if parallel_sampling and gate is not None:
            raise ValueError("parallel_sampling is for local servers; a budget gate admits single requests")
        self.base_url = base_url
        self.model = model
        self.fingerprint = fingerprint
        self.max_concurrency = max_concurrency
        self.max_retries = max_retries
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self.server_generation_config = server_generation_config
        self.limits = (requests_per_minute, tokens_per_minute)
        self.gate = gate
        self.parallel_sampling = parallel_sampling
        self.give_up = give_up
        self.quota_file = quota_file
        self.retries = 0  # attempts beyond the first, over the backend's life (for the stage report)
        self.timeout_s = timeout_s
        self._url = base_url.rstrip("/") + "/chat/completions"
        self._headers = {
            "Authorization": f"Bearer {client_args(base_url, api_key_env, timeout_s)['api_key']}",
            "Content-Type": "application/json",
            "Accept": "application/json",
        }
        # As the official client: the organization and project from the environment, when set.
        for header, variable in (
            ("OpenAI-Organization", "OPENAI_ORG_ID"),
            ("OpenAI-Project", "OPENAI_PROJECT_ID"),
        ):
            if os.environ.get(variable):
                self._headers[header] = os.environ[variable]

    def generate(self, requests: Sequence[Request], on_result: ResultCallback) -> None:
        asyncio.run(self._generate(requests, on_result))

    async def _generate(self, requests: Sequence[Request], on_result: ResultCallback) -> None:
        pacing: Pacing = (
            SharedRateLimiter(self.quota_file, *self.limits) if self.quota_file else RateLimiter(*self.limits)
        )
        groups = sibling_groups(requests) if self.parallel_sampling else [[i] for i in range(len(requests))]
        pending = iter(groups)  # shared by the workers: each takes the next group, in order

        async def worker(transport: _Transport) -> None:
            for group in pending:
                first = requests[group[0]]
                if self.gate is not None and not self.gate.admit(first):
                    on_result(group[0], Response(text=None, finish_reason=None, error=OVER_BUDGET))
                    continue
                for i, response in zip(
                    group, await self._complete(transport, pacing, first, len(group)), strict=True
                ):
                    on_result(i, response)

        transport = self.transport()
        try:
            # max_concurrency workers, each with one request in flight at a time
            await asyncio.gather(*(worker(transport) for _ in range(min(self.max_concurrency, len(groups)))))
        finally:
            await transport.close()

    def transport(self, kind: str = "auto") -> _Transport:
        """The HTTP transport of one `generate` call (made in the call's event loop), with at most
        `max_concurrency` connections: `_PlainHTTP` for a plain-http endpoint without a proxy in the
        environment, else `_Aiohttp` (`kind` "plain" or "aiohttp" forces one, for tests)."""
        proxy: tuple[yarl.URL, aiohttp.BasicAuth | None] | None = None
        with contextlib.suppress(LookupError):  # looked up once, not per request as aiohttp's trust_env
            proxy = get_env_proxy_for_url(yarl.URL(self._url))
        plain = self._url.startswith("http://") and proxy is None
        if kind == "plain" or (kind == "auto" and plain):
            return _PlainHTTP(self._url, self._headers, self.timeout_s)
        return _Aiohttp(self._url, self._headers, self.max_concurrency, self.timeout_s, proxy)

    async def _post(self, transport: _Transport, data: bytes) -> Any:
        """One chat-completions request; its JSON reply, or the official client's exception for it."""
        try:
            status, headers, content = await transport.post(data)
        except TimeoutError as exc:
            raise openai.APITimeoutError(request=self._request()) from exc
        except _CONNECTION_ERRORS as exc:  # refused, reset, a body cut short, not HTTP
            message = f"Connection error. {type(exc).__name__}: {exc}"
            raise openai.APIConnectionError(message=message, request=self._request()) from exc
        if status >= 300:
            raise _status_error(status, headers, content, self._request())
        # A 200 with a broken body (cut JSON, or bytes that are not UTF-8) raises json.JSONDecodeError,
        # which is retried.
        return json.loads(content.decode("utf-8", "replace"))

    def _request(self) -> httpx2.Request:
        return httpx2.Request("POST", self._url)

    async def _complete(
        self, transport: _Transport, pacing: Pacing, request: Request, n: int = 1
    ) -> list[Response]:
        """The answers of `request` with seeds seed … seed+n−1 (one HTTP request; n > 1 only for vLLM)."""
        body = chat_body(self.model, request)
        if n > 1:
            body.update(n=n, return_token_ids=True)
        if self.server_generation_config is not None:
            body["generation_config"] = json.dumps(
                {
                    **self.server_generation_config,
                    "do_sample": request.temperature > 0,
                    "temperature": request.temperature or None,
                    "top_p": request.top_p,
                    "max_new_tokens": request.max_new_tokens,
                }
            )
        data = json.dumps(body).encode()
        tokens = n * estimate_tokens(request.prompt_chars(), request.max_new_tokens)
        error = ""
        for attempt in range(self.max_retries + 1):
            await pacing.acquire(tokens)
            failure: Exception
            try:
                responses = to_responses(await self._post(transport, data), n)
            except (*_TRANSIENT, MalformedResponse) as exc:
                failure = exc
            except openai.APIStatusError as exc:
                if exc.status_code not in _RETRYABLE_STATUS:  # other 4xx: retrying cannot help
                    return _failed(n, f"{type(exc).__name__}: {exc}")
                failure = exc
            else:
                for response in responses:
                    response.attempts = attempt + 1
                return responses
            error = f"{type(failure).__name__}: {str(failure)[:300]}"
            reason = self.give_up() if self.give_up is not None else None
            if reason is not None:
                return _failed(n, f"{reason}; last: {error}", attempt + 1)
            if attempt == self.max_retries:
                break
            self.retries += 1
            hinted = _retry_after(failure)
            # Full jitter: spreads the retries of many concurrent requests instead of synchronizing them.
            delay = hinted if hinted is not None else self._backoff(attempt)
            if hinted is not None:
                pacing.pause(hinted)
            log.warning("attempt %d failed (%s); retrying in %.2fs", attempt + 1, error[:200], delay)
            await asyncio.sleep(delay)
        return _failed(n, error, self.max_retries + 1)

    def _backoff(self, attempt: int) -> float:
        return random.uniform(0, min(self.backoff_max_s, self.backoff_base_s * 2**attempt))

    def close(self) -> None:
        """Nothing to release: each `generate` call owns its transport."""


Headers = Mapping[str, str]


class _Transport(Protocol):
    async def post(self, data: bytes) -> tuple[int, Headers, bytes]: ...

    async def close(self) -> None: ...


# What a transport raises for a failed exchange (besides TimeoutError): the socket's errors, a reply cut
# short (asyncio.IncompleteReadError is an EOFError), a reply that is not HTTP, and aiohttp's own.
_CONNECTION_ERRORS = (OSError, EOFError, asyncio.LimitOverrunError, ValueError, aiohttp.ClientError)


class _PlainHTTP:
    """POSTs to one plain-http URL over HTTP/1.1 keep-alive connections on asyncio streams: a
    connection is kept while the server keeps it (a reply with a length, no `Connection: close`), one
    request at a time on each, so at most as many connections as requests in flight. A kept connection
    the server has closed meanwhile (an idle timeout) is dropped when seen closed, and if the close is
    only seen as the reply's end of file before its first byte, the request goes again once on a new
    connection; every other failure is raised. Replies may have a Content-Length, be chunked, or run to
    the end of the connection; `Accept-Encoding: identity` keeps them uncompressed."""

    def __init__(self, url: str, headers: dict[str, str], timeout_s: float):
        target = urlsplit(url)
        self.host, self.port = target.hostname or "localhost", target.port or 80
        path = (target.path or "/") + (f"?{target.query}" if target.query else "")
        host = target.netloc.rpartition("@")[2]  # credentials in the URL are not sent (nor were they before)
        lines = [f"POST {path} HTTP/1.1", f"Host: {host}", "Accept-Encoding: identity"]
        lines += [f"{key}: {value}" for key, value in headers.items()]
        self._head = ("\r\n".join(lines) + "\r\n").encode("latin-1")
        self.timeout_s = timeout_s
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def post(self, data: bytes) -> tuple[int, Headers, bytes]:
        message = self._head + b"Content-Length: %d\r\n\r\n" % len(data) + data
        async with asyncio.timeout(self.timeout_s):
            while True:
                reader, writer, reused = await self._connection()
                try:
                    writer.write(message)
                    reply = await _read_reply(reader)
                except BaseException:
                    writer.close()
                    raise
                if reply is None:  # closed before a byte of the reply
                    writer.close()
                    if reused:
                        continue
                    raise ConnectionResetError("the server closed the connection without replying")
                status, headers, body, keep = reply
                if keep:
                    self._idle.append((reader, writer))
                else:
                    writer.close()
                return status, headers, body

    async def _connection(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bool]:
        while self._idle:
            reader, writer = self._idle.pop()
            if not (reader.at_eof() or writer.is_closing()):
                return reader, writer, True
            writer.close()
        reader, writer = await asyncio.open_connection(self.host, self.port)
        return reader, writer, False

    async def close(self) -> None:
        for _, writer in self._idle:
            writer.close()
        self._idle.clear()


async def _read_reply(reader: asyncio.StreamReader) -> tuple[int, Headers, bytes, bool] | None:
    """Status, headers (names in lower case), body, and whether the connection may be kept; None when
    the connection ended before the reply's first byte."""
    while True:
        try:
            raw = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as exc:
            if exc.partial:
                raise
            return None
        start, *lines = raw.decode("latin-1").split("\r\n")
        version, code = start.split(" ", 2)[:2]
        status = int(code)
        if not 100 <= status < 200:  # an interim reply (100 Continue) is followed by the real one
            break
    headers: dict[str, str] = {}
    for line in lines:
        name, separator, value = line.partition(":")
        if separator:
            headers[name.strip().lower()] = value.strip()
    connection = headers.get("connection", "").lower()
    keep = connection != "close" and (version != "HTTP/1.0" or connection == "keep-alive")
    if status in (204, 304):
        body = b""
    elif headers.get("transfer-encoding", "").lower() == "chunked":
        chunks = []
        while size := int((await reader.readline()).split(b";")[0].strip() or b"0", 16):
            chunks.append(await reader.readexactly(size))
            await reader.readline()
        while (await reader.readline()).strip():  # trailers, up to the blank line
            pass
        body = b"".join(chunks)
    elif "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    else:  # the body runs to the end of the connection
        body, keep = await reader.read(), False
    return status, headers, body, keep


class _Aiohttp:
    """POSTs through an aiohttp session: for https and proxies. A pool of up to `limit` kept-alive
    connections, the official client's SSL context for https, the proxy looked up once (aiohttp's own
    `trust_env` would look it up, and read ~/.netrc, in a thread for every request)."""

    def __init__(
        self,
        url: str,
        headers: dict[str, str],
        limit: int,
        timeout_s: float,
        proxy: tuple[yarl.URL, aiohttp.BasicAuth | None] | None,
    ):
        self.url = url
        ssl_context = httpx2.create_ssl_context() if url.startswith("https:") else None
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=limit, ssl=ssl_context or True),
            headers=headers,
            proxy=proxy[0] if proxy else None,
            proxy_auth=proxy[1] if proxy else None,
            timeout=aiohttp.ClientTimeout(total=timeout_s),
        )

    async def post(self, data: bytes) -> tuple[int, Headers, bytes]:
        async with self.session.post(self.url, data=data) as reply:
            return reply.status, reply.headers, await reply.read()

    async def close(self) -> None:
        await self.session.close()


def chat_body(model: str, request: Request) -> dict[str, Any]:
    """The JSON body of `/v1/chat/completions` for one request (also a Batch API line's body)."""
    body: dict[str, Any] = {
        "model": model,
        "messages": request.chat(),
        "seed": request.seed,
        "temperature": request.temperature,
        "top_p": request.top_p,
        "max_tokens": request.max_new_tokens,
    }
    if request.stop:
        body["stop"] = list(request.stop)
    if request.response_schema is not None:
        body["response_format"] = {
            "type": "json_schema",
            "json_schema": {
                "name": "answer",
                "strict": True,
                "schema": json.loads(request.response_schema),
            },
        }
    return body


# What an environment variable's name looks like (the config schema asks the same of api_key_env).
ENV_NAME = re.compile(r"[A-Z_][A-Z0-9_]*")


def client_args(base_url: str, api_key_env: str | None, timeout_s: float) -> dict[str, Any]:
    """Arguments of the official client; the key is read from the environment and never stored."""
    api_key = "none"
    if api_key_env:
        if not ENV_NAME.fullmatch(api_key_env):  # a key pasted where its variable's name belongs
            raise ValueError(
                "api_key_env must name an environment variable (e.g. OPENAI_API_KEY), not hold the key; "
                "the value is not shown on purpose"
            )
        api_key = os.environ.get(api_key_env, "")
        if not api_key:
            raise RuntimeError(f"environment variable {api_key_env} (llms.*.api_key_env) is not set")
    return {"base_url": base_url, "api_key": api_key, "timeout": timeout_s, "max_retries": 0}


def _failed(n: int, error: str, attempts: int = 1) -> list[Response]:
    return [Response(text=None, finish_reason=None, error=error, attempts=attempts) for _ in range(n)]


def sibling_groups(requests: Sequence[Request]) -> list[list[int]]:
    """Indices of `requests` in groups that one `n`-request can answer: equal but for their seeds, which
    run consecutively (s, s+1, …). A resumed shard that lacks candidates 1 and 3 of a query sends them
    alone, with seeds s+1 and s+3, and gets what the group request gave them."""
    by_prompt: dict[Request, list[int]] = {}
    for i, request in enumerate(requests):
        by_prompt.setdefault(dataclasses.replace(request, seed=0), []).append(i)
    groups: list[list[int]] = []
    for indices in by_prompt.values():
        indices.sort(key=lambda i: requests[i].seed)
        run = [indices[0]]
        for i in indices[1:]:
            if requests[i].seed == requests[run[-1]].seed + 1:
                run.append(i)
            else:
                groups.append(run)
                run = [i]
        groups.append(run)
    return groups


def to_response(completion: dict[str, Any]) -> Response:
    """A chat.completion object (as JSON) to a Response; MalformedResponse when it is not one."""
    return to_responses(completion, 1)[0]


def to_responses(completion: dict[str, Any], n: int) -> list[Response]:
    """The `n` choices of a chat.completion object (as JSON), in order; MalformedResponse when it is not
    one. With n > 1 the prompt's tokens go to the first answer (the server read the prompt once) and each
    answer gets its own completion tokens (vLLM's `token_ids`); the usage totals stay the server's."""
    try:
        choices = sorted(completion["choices"], key=lambda choice: choice.get("index", 0))
        if len(choices) != n:
            raise MalformedResponse(f"asked for {n} choices, got {len(choices)}")
        usage = completion.get("usage") or {}
        prompt_tokens = int(usage.get("prompt_tokens") or 0)
        completion_tokens = int(usage.get("completion_tokens") or 0)
        responses = []
        for j, choice in enumerate(choices):
            message = choice["message"]
            if n == 1:
                own = completion_tokens
            elif choice.get("token_ids") is not None:
                own = len(choice["token_ids"])
            else:  # a server without per-choice counts: the whole usage stays on the first answer
                own = completion_tokens if j == 0 else 0
            responses.append(
                Response(
                    text=(message.get("content") or "").strip(),
                    finish_reason=choice.get("finish_reason"),
                    prompt_tokens=prompt_tokens if j == 0 else 0,
                    completion_tokens=own,
                    refusal=message.get("refusal"),
                )
            )
        return responses
    except (KeyError, IndexError, TypeError, AttributeError) as exc:
        raise MalformedResponse(f"not a chat completion: {str(completion)[:200]}") from exc


_STATUS_ERRORS: dict[int, type[openai.APIStatusError]] = {
    400: openai.BadRequestError,
    401: openai.AuthenticationError,
    403: openai.PermissionDeniedError,
    404: openai.NotFoundError,
    409: openai.ConflictError,
    422: openai.UnprocessableEntityError,
    429: openai.RateLimitError,
}


def _status_error(
    status: int, headers: Headers, content: bytes, request: httpx2.Request
) -> openai.APIStatusError:
    """The exception the official client raises for an error reply: same class, message and body."""
    response = httpx2.Response(status, headers=list(headers.items()), content=content, request=request)
    message = f"Error code: {status}"
    text = response.text.strip()
    body: object = text
    try:
        body = json.loads(text)
    except ValueError:
        pass
    else:
        error = body.get("error", body) if isinstance(body, dict) else None
        if isinstance(error, dict) and isinstance(error.get("message"), str) and error["message"]:
            message += f" - {error['message']}"
    data = body.get("error", body) if isinstance(body, dict) else body
    kind = _STATUS_ERRORS.get(status) or (
        openai.InternalServerError if status >= 500 else openai.APIStatusError
    )
    return kind(message, response=response, body=data)


def _retry_after(exc: BaseException | None) -> float | None:
    """Seconds the server asked us to wait (`retry-after-ms` or `Retry-After` in seconds), if any."""
    response = getattr(exc, "response", None)
    if response is None:
        return None
    for header, scale in (("retry-after-ms", 1e-3), ("retry-after", 1.0)):
        value = response.headers.get(header)
        if value is None:
            continue
        try:
            return max(0.0, float(value) * scale)
        except ValueError:
            continue  # an HTTP date: fall back to our own backoff
    return None
