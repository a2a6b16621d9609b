"""Build the configured LLM for a stage: backend + fingerprint + item cache, as a context manager."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from vpo.llm.cache import CachedLLM, ResponseCache
from vpo.models import fingerprint as weights_fingerprint


@contextlib.contextmanager
def open_llm(spec: dict[str, Any], cache_dir: str, server_log: str | None = None) -> Iterator[CachedLLM]:
    """`spec` is a resolved LLM entry: backend, plus `model_path` (local or hub) or a remote `model`."""
    backend = spec["backend"]
    if backend == "hf":
        from vpo.llm.hf import HFBackend

        path = spec["model_path"]
        llm = HFBackend(
            path,
            f"hf|{weights_fingerprint(path, spec.get('revision'))}",
            batch_size=spec.get("batch_size", 16),
            dtype=spec.get("dtype", "float32"),
            device=spec.get("device", "auto"),
            revision=spec.get("revision"),
        )
        with contextlib.closing(CachedLLM(llm, ResponseCache(cache_dir))) as cached:
            yield cached
        return

    from vpo.llm.openai_backend import OpenAIBackend

    common = {
        "max_concurrency": spec.get("max_concurrency", 8),
        "max_retries": spec.get("max_retries", 5),
        "timeout_s": spec.get("timeout_s", 300),
    }
    if spec.get("base_url"):
        remote = OpenAIBackend(
            spec["base_url"],
            spec["model"],
            f"openai|{spec['model']}",
            api_key_env=spec.get("api_key_env"),
            **common,
        )
        yield CachedLLM(remote, ResponseCache(cache_dir))
        return

    from vpo.llm.server import local_server

    path, kind = spec["model_path"], spec["serve"]
    gen_config = None
    if kind == "transformers":
        config_file = Path(path) / "generation_config.json"
        gen_config = json.loads(config_file.read_text()) if config_file.exists() else {}
    with local_server(kind, path, log_path=server_log) as base_url:
        served = OpenAIBackend(
            base_url,
            path,
            f"{kind}-serve|{weights_fingerprint(path)}",
            server_generation_config=gen_config,
            **common,
        )
        yield CachedLLM(served, ResponseCache(cache_dir))
