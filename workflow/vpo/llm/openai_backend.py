"""OpenAI-compatible HTTP backend (online mode): async, paced, retried; nothing is lost on failure."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import random
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import openai

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
        self._client_args = client_args(base_url, api_key_env, timeout_s)

    def generate(self, requests: Sequence[Request], on_result: ResultCallback) -> None:
        asyncio.run(self._generate(requests, on_result))

    async def _generate(self, requests: Sequence[Request], on_result: ResultCallback) -> None:
        client = openai.AsyncOpenAI(**self._client_args)
        limit = asyncio.Semaphore(self.max_concurrency)
        pacing: Pacing = (
            SharedRateLimiter(self.quota_file, *self.limits) if self.quota_file else RateLimiter(*self.limits)
        )
        groups = sibling_groups(requests) if self.parallel_sampling else [[i] for i in range(len(requests))]

        async def one(group: list[int]) -> None:
            async with limit:
                first = requests[group[0]]
                if self.gate is not None and not self.gate.admit(first):
                    on_result(group[0], Response(text=None, finish_reason=None, error=OVER_BUDGET))
                    return
                for i, response in zip(
                    group, await self._complete(client, pacing, first, len(group)), strict=True
                ):
                    on_result(i, response)

        try:
            await asyncio.gather(*(one(group) for group in groups))
        finally:
            await client.close()

    async def _complete(
        self, client: openai.AsyncOpenAI, pacing: Pacing, request: Request, n: int = 1
    ) -> list[Response]:
        """The answers of `request` with seeds seed … seed+n−1 (one HTTP request; n > 1 only for vLLM)."""
        kwargs = chat_body(self.model, request)
        if n > 1:
            kwargs.update(n=n, extra_body={"return_token_ids": True})
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
        tokens = n * estimate_tokens(request.prompt_chars(), request.max_new_tokens)
        error = ""
        for attempt in range(self.max_retries + 1):
            await pacing.acquire(tokens)
            failure: Exception
            try:
                completion = await client.chat.completions.create(**kwargs)
                responses = to_responses(completion.model_dump(), n)
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
