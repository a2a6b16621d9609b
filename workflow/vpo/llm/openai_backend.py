"""OpenAI-compatible HTTP backend (online mode): async, paced, retried; nothing is lost on failure."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import re
from collections.abc import Sequence
from typing import Any

import openai

from vpo.llm.base import Request, Response, ResultCallback
from vpo.llm.ledger import Ledger
from vpo.llm.ratelimit import RateLimiter, estimate_tokens

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
    ):
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
        self.retries = 0  # attempts beyond the first, over the backend's life (for the stage report)
        self._client_args = client_args(base_url, api_key_env, timeout_s)

    def generate(self, requests: Sequence[Request], on_result: ResultCallback) -> None:
        asyncio.run(self._generate(requests, on_result))

    async def _generate(self, requests: Sequence[Request], on_result: ResultCallback) -> None:
        client = openai.AsyncOpenAI(**self._client_args)
        limit = asyncio.Semaphore(self.max_concurrency)
        pacing = RateLimiter(*self.limits)

        async def one(i: int) -> None:
            async with limit:
                if self.gate is not None and not self.gate.admit(requests[i]):
                    on_result(i, Response(text=None, finish_reason=None, error=OVER_BUDGET))
                    return
                on_result(i, await self._complete(client, pacing, requests[i]))

        try:
            await asyncio.gather(*(one(i) for i in range(len(requests))))
        finally:
            await client.close()

    async def _complete(self, client: openai.AsyncOpenAI, pacing: RateLimiter, request: Request) -> Response:
        kwargs = chat_body(self.model, request)
        if self.server_generation_config is not None:
            kwargs["extra_body"] = {
                "generation_config": json.dumps(
                    {
                        **self.server_generation_config,
                        "do_sample": request.temperature > 0,
                        "temperature": request.temperature or None,
                        "top_p": request.top_p,
                        "max_new_tokens": request.max_new_tokens,
                    }
                )
            }
        tokens = estimate_tokens(request.prompt_chars(), request.max_new_tokens)
        error = ""
        for attempt in range(self.max_retries + 1):
            await pacing.acquire(tokens)
            failure: Exception
            try:
                completion = await client.chat.completions.create(**kwargs)
                response = to_response(completion.model_dump())
            except (*_TRANSIENT, MalformedResponse) as exc:
                failure = exc
            except openai.APIStatusError as exc:
                if exc.status_code not in _RETRYABLE_STATUS:  # other 4xx: retrying cannot help
                    return Response(text=None, finish_reason=None, error=f"{type(exc).__name__}: {exc}")
                failure = exc
            else:
                response.attempts = attempt + 1
                return response
            error = f"{type(failure).__name__}: {str(failure)[:300]}"
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
        return Response(text=None, finish_reason=None, error=error, attempts=self.max_retries + 1)

    def _backoff(self, attempt: int) -> float:
        return random.uniform(0, min(self.backoff_max_s, self.backoff_base_s * 2**attempt))

    def close(self) -> None:
        """Nothing to release: each `generate` call owns its client."""


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


def to_response(completion: dict[str, Any]) -> Response:
    """A chat.completion object (as JSON) to a Response; MalformedResponse when it is not one."""
    try:
        choice = completion["choices"][0]
        message = choice["message"]
        usage = completion.get("usage") or {}
        return Response(
            text=(message.get("content") or "").strip(),
            finish_reason=choice.get("finish_reason"),
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            completion_tokens=int(usage.get("completion_tokens") or 0),
            refusal=message.get("refusal"),
        )
    except (KeyError, IndexError, TypeError, AttributeError) as exc:
        raise MalformedResponse(f"not a chat completion: {str(completion)[:200]}") from exc


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
