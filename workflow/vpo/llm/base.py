"""Requests, responses and the backend contract shared by every LLM backend."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

Message = dict[str, str]
ResultCallback = Callable[[int, "Response"], None]


@dataclass(frozen=True)
class Request:
    """One chat completion. Every field decides the answer, so every field is part of the cache key."""

    messages: tuple[tuple[str, str], ...]
    temperature: float
    top_p: float
    max_new_tokens: int
    seed: int
    # JSON Schema of a structured answer (canonical JSON text), or None for free text.
    response_schema: str | None = None
    stop: tuple[str, ...] = ()  # strings that end the answer, besides the model's end tokens

    @classmethod
    def build(
        cls,
        messages: Sequence[Message],
        generation: dict[str, Any],
        seed: int,
        response_schema: dict[str, Any] | None = None,
    ) -> Request:
        return cls(
            messages=tuple((m["role"], m["content"]) for m in messages),
            temperature=float(generation["temperature"]),
            top_p=float(generation["top_p"]),
            max_new_tokens=int(generation["max_new_tokens"]),
            seed=int(seed),
            response_schema=json.dumps(response_schema, sort_keys=True) if response_schema else None,
            stop=tuple(generation.get("stop") or ()),
        )

    def chat(self) -> list[Message]:
        return [{"role": role, "content": content} for role, content in self.messages]

    def decoding(self) -> dict[str, Any]:
        """What shapes the answer besides the messages and the seed (part of the cache key). The schema
        and stop strings appear only when set, so other keys stay what they were before they existed."""
        decoding: dict[str, Any] = {
            "temperature": self.temperature,
            "top_p": self.top_p,
            "max_new_tokens": self.max_new_tokens,
        }
        if self.response_schema is not None:
            decoding["response_schema"] = json.loads(self.response_schema)
        if self.stop:
            decoding["stop"] = list(self.stop)
        return decoding

    def prompt_chars(self) -> int:
        return sum(len(content) for _, content in self.messages)


@dataclass
class Response:
    text: str | None
    finish_reason: str | None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    error: str | None = None  # set when the request failed after all retries; never cached
    refusal: str | None = None  # the model's refusal message (structured outputs), when it gave one
    attempts: int = 1  # HTTP attempts this answer took (retries included); 0 when it came from a batch
    cached: bool = field(default=False, compare=False)

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def truncated(self) -> bool:
        return self.finish_reason == "length"

    @property
    def refused(self) -> bool:
        """A content filter stopped the answer, or the model declined: an answer, kept as a refusal."""
        return self.ok and (self.finish_reason == "content_filter" or self.refusal is not None)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("cached")
        return data


class Backend(Protocol):
    """Generates answers; calls `on_result(i, response)` as soon as request i is done (in any order)."""

    fingerprint: str

    def generate(self, requests: Sequence[Request], on_result: ResultCallback) -> None: ...

    def close(self) -> None: ...
