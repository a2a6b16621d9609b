"""Content-addressed cache of LLM responses: one JSON file per request key, written atomically.

The key covers the model fingerprint, the rendered messages, the decoding parameters and the seed;
execution-only knobs (batch size, concurrency, backend URL) stay out of it. Failed requests are not
stored, so a re-run retries exactly them and never pays twice for an answer it already has.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

from tqdm import tqdm

from vpo.core.ids import digest
from vpo.core.io import atomic_write_bytes
from vpo.llm.base import Backend, Request, Response
from vpo.llm.ledger import Ledger


def request_key(fingerprint: str, request: Request) -> str:
    return digest("llm", fingerprint, request.chat(), request.decoding(), request.seed, length=64)


class ResponseCache:
    def __init__(self, root: str | os.PathLike):
        self.root = Path(root) / "llm"

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> Response | None:
        path = self._path(key)
        if not path.exists():
            return None
        data = json.loads(path.read_text(encoding="utf-8"))
        return Response(**data["response"], cached=True)

    def put(self, key: str, request: Request, response: Response) -> None:
        record = {
            "key": key,
            "request": {"messages": request.chat(), **request.decoding(), "seed": request.seed},
            "response": response.to_json(),
        }
        atomic_write_bytes(self._path(key), json.dumps(record, ensure_ascii=False).encode("utf-8"))


class CachedLLM:
    """A backend behind the item cache; counts hits, misses, failures, finish reasons and tokens for the
    stage report, and charges every fresh answer to the ledger (which may stop the stage at its budget)."""

    def __init__(self, backend: Backend, cache: ResponseCache, ledger: Ledger | None = None):
        self.backend = backend
        self.cache = cache
        self.ledger = ledger
        self.fingerprint = backend.fingerprint
        self.stats = {
            "requests": 0,
            "cache_hits": 0,
            "cache_misses": 0,
            "failed": 0,
            "truncated": 0,
            "refused": 0,
            "prompt_tokens": 0,
            "completion_tokens": 0,
        }

    def generate(self, requests: Sequence[Request], desc: str = "llm") -> list[Response]:
        keys = [request_key(self.fingerprint, r) for r in requests]
        results: list[Response | None] = [self.cache.get(k) for k in keys]
        missing = [i for i, r in enumerate(results) if r is None]
        self.stats["requests"] += len(requests)
        self.stats["cache_hits"] += len(requests) - len(missing)
        self.stats["cache_misses"] += len(missing)
        progress = tqdm(total=len(missing), desc=desc, unit="req", mininterval=5, disable=not missing)

        def on_result(j: int, response: Response) -> None:
            i = missing[j]
            results[i] = response
            progress.update(1)
            if self.ledger is not None:
                self.ledger.settle(requests[i], response)
            self.stats["truncated"] += response.ok and response.truncated
            self.stats["refused"] += response.refused
            if response.ok:
                self.cache.put(keys[i], requests[i], response)
                self.stats["prompt_tokens"] += response.prompt_tokens
                self.stats["completion_tokens"] += response.completion_tokens
            else:
                self.stats["failed"] += 1

        if missing:
            self.backend.generate([requests[i] for i in missing], on_result)
        progress.close()
        unanswered = [i for i, r in enumerate(results) if r is None]
        if unanswered:
            raise RuntimeError(f"backend returned no result for {len(unanswered)} requests (bug)")
        if self.ledger is not None:
            self.ledger.check()
        return [r for r in results if r is not None]

    def report(self) -> dict:
        """What the stage report records about its LLM: fingerprint, counts, retries, usage and cost."""
        report = {"fingerprint": self.fingerprint, **self.stats}
        report["retries"] = getattr(self.backend, "retries", 0)
        if hasattr(self.backend, "stats"):
            report["batch"] = dict(self.backend.stats)
        if self.ledger is not None:
            report["usage"] = self.ledger.summary()
        return report

    def close(self) -> None:
        self.backend.close()
