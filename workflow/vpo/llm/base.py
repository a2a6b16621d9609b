"""Requests, responses and the backend contract shared by every LLM backend."""

from __future__ import annotations

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

    @classmethod
    def build(cls, messages: Sequence[Message], generation: dict[str, Any], seed: int) -> Request:
        return cls(
            messages=tuple((m["role"], m["content"]) for m in messages),
            temperature=float(generation["temperature"]),
            top_p=float(generation["top_p"]),
            max_new_tokens=int(generation["max_new_tokens"]),
            seed=int(seed),
        )

    def chat(self) -> list[Message]:
        return [{"role": role, "content": content} for role, content in self.messages]

    def decoding(self) -> dict[str, Any]:
        return {"temperature": self.temperature, "top_p": self.top_p, "max_new_tokens": self.max_new_tokens}


@dataclass
class Response:
    text: str | None
    finish_reason: str | None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    error: str | None = None  # set when the request failed after all retries; never cached
    cached: bool = field(default=False, compare=False)

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def truncated(self) -> bool:
        return self.finish_reason == "length"

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("cached")
        return data


class Backend(Protocol):
    """Generates answers; calls `on_result(i, response)` as soon as request i is done (in any order)."""

    fingerprint: str

    def generate(self, requests: Sequence[Request], on_result: ResultCallback) -> None: ...

    def close(self) -> None: ...
