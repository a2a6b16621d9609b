"""OpenAI-compatible HTTP backend: async, bounded concurrency, retries with backoff on transient errors."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
from collections.abc import Sequence
from typing import Any

import openai

from vpo.llm.base import Request, Response, ResultCallback

log = logging.getLogger(__name__)

_TRANSIENT = (
    openai.RateLimitError,
    openai.APITimeoutError,
    openai.APIConnectionError,
    openai.InternalServerError,
)


class OpenAIBackend:
    """Talks to any OpenAI-compatible `/v1/chat/completions` endpoint.

    `server_generation_config` is for `transformers serve`, which ignores `temperature`/`top_p` unless
    sampling is switched on in a `generation_config` sent with the request (see cpu-notes).
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        fingerprint: str,
        api_key_env: str | None = None,
        max_concurrency: int = 8,
        max_retries: int = 5,
        timeout_s: float = 300.0,
        server_generation_config: dict[str, Any] | None = None,
        backoff_base_s: float = 1.0,
    ):
        api_key = "none"
        if api_key_env:
            api_key = os.environ.get(api_key_env, "")
            if not api_key:
                raise RuntimeError(f"environment variable {api_key_env} (llms.*.api_key_env) is not set")
        self.base_url = base_url
        self.model = model
        self.fingerprint = fingerprint
        self.max_concurrency = max_concurrency
        self.max_retries = max_retries
        self.backoff_base_s = backoff_base_s
        self.server_generation_config = server_generation_config
        self._client_args = {"base_url": base_url, "api_key": api_key, "timeout": timeout_s, "max_retries": 0}

    def generate(self, requests: Sequence[Request], on_result: ResultCallback) -> None:
        asyncio.run(self._generate(requests, on_result))

    async def _generate(self, requests: Sequence[Request], on_result: ResultCallback) -> None:
        client = openai.AsyncOpenAI(**self._client_args)
        limit = asyncio.Semaphore(self.max_concurrency)

        async def one(i: int) -> None:
            async with limit:
                on_result(i, await self._complete(client, requests[i]))

        try:
            await asyncio.gather(*(one(i) for i in range(len(requests))))
        finally:
            await client.close()

    async def _complete(self, client: openai.AsyncOpenAI, request: Request) -> Response:
        kwargs: dict[str, Any] = {
            "model": self.model,
            "messages": request.chat(),
            "seed": request.seed,
            "temperature": request.temperature,
            "top_p": request.top_p,
            "max_tokens": request.max_new_tokens,
        }
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
        error = ""
        for attempt in range(self.max_retries + 1):
            try:
                completion = await client.chat.completions.create(**kwargs)
            except _TRANSIENT as exc:
                error = f"{type(exc).__name__}: {exc}"
                if attempt == self.max_retries:
                    break
                delay = _retry_after(exc) or self.backoff_base_s * 2**attempt * (0.5 + random.random())
                log.warning("attempt %d failed (%s); retrying in %.1fs", attempt + 1, error[:200], delay)
                await asyncio.sleep(delay)
                continue
            except openai.APIStatusError as exc:  # 4xx other than 429: retrying cannot help
                return Response(text=None, finish_reason=None, error=f"{type(exc).__name__}: {exc}")
            choice = completion.choices[0]
            usage = completion.usage
            return Response(
                text=(choice.message.content or "").strip(),
                finish_reason=choice.finish_reason,
                prompt_tokens=usage.prompt_tokens if usage else 0,
                completion_tokens=usage.completion_tokens if usage else 0,
            )
        return Response(text=None, finish_reason=None, error=error)

    def close(self) -> None:
        """Nothing to release: each `generate` call owns its client."""


def _retry_after(exc: Exception) -> float | None:
    response = getattr(exc, "response", None)
    value = response.headers.get("retry-after") if response is not None else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None
