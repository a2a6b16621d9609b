"""Build the configured LLM for a stage: backend + fingerprint + item cache, as a context manager."""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from vpo.core.fingerprints import fingerprint as weights_fingerprint
from vpo.core.ids import digest
from vpo.core.layout import batches_dir, ledger_dir
from vpo.core.run_options import from_env, with_execution_options
from vpo.llm.base import Backend
from vpo.llm.cache import CachedLLM, ResponseCache
from vpo.llm.ledger import Ledger, costs_from_env


@contextlib.contextmanager
def open_llm(
    spec: dict[str, Any], cache_dir: str, server_log: str | None = None, stage: str = "llm"
) -> Iterator[CachedLLM]:
    """`spec` is a resolved LLM entry: backend, plus `model_path` (local or hub) or a remote `model`.
    `stage` names the ledger entries of the answers (token usage and cost per stage and model)."""
    spec = with_execution_options(spec)
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
            device_key=device_key(spec),
        )
        with contextlib.closing(CachedLLM(llm, ResponseCache(cache_dir))) as cached:
            yield cached
        return

    from vpo.llm.openai_backend import OpenAIBackend

    # `transformers serve` answers one request at a time: a deep queue would only hit timeouts.
    default_concurrency = 4 if spec.get("serve") == "transformers" else 64
    online = {
        "max_concurrency": spec.get("max_concurrency") or default_concurrency,
        "max_retries": spec.get("max_retries", 5),
        "timeout_s": spec.get("timeout_s", 300),
        "backoff_base_s": spec.get("backoff_base_s", 1.0),
        "backoff_max_s": spec.get("backoff_max_s", 60.0),
        "requests_per_minute": spec.get("requests_per_minute"),
        "tokens_per_minute": spec.get("tokens_per_minute"),
    }
    if spec.get("base_url"):
        prices, budget = costs_from_env()
        batch = spec.get("mode", "online") == "batch"
        ledger = Ledger(ledger_dir(cache_dir), stage, spec["model"], prices.get(spec["model"]), budget, batch)
        fingerprint = f"openai|{spec['model']}"
        remote: Backend
        if batch:
            from vpo.llm.batch import BatchBackend

            remote = BatchBackend(
                spec["base_url"],
                spec["model"],
                fingerprint,
                batches_dir(cache_dir),
                api_key_env=spec.get("api_key_env"),
                timeout_s=online["timeout_s"],
                poll_s=spec.get("batch_poll_s", 30),
                completion_window=spec.get("batch_completion_window", "24h"),
                max_requests_per_batch=spec.get("batch_max_requests", 50_000),
                max_resubmits=spec.get("batch_max_resubmits", 2),
                gate=ledger,
            )
        else:
            remote = OpenAIBackend(
                spec["base_url"],
                spec["model"],
                fingerprint,
                api_key_env=spec.get("api_key_env"),
                gate=ledger,
                quota_file=quota_file(cache_dir, spec),
                **online,
            )
        with contextlib.closing(CachedLLM(remote, ResponseCache(cache_dir), ledger)) as cached:
            yield cached
        return

    # A server the job starts is its own: its pacing (if any) stays in the process.
    from vpo.llm.server import VLLM_ANSWER_KEYS, local_server, vllm_defaults

    path, kind = spec["model_path"], spec["serve"]
    gen_config = None
    if kind == "transformers":
        config_file = Path(path) / "generation_config.json"
        gen_config = json.loads(config_file.read_text()) if config_file.exists() else {}
    fingerprint = f"{kind}-serve|{weights_fingerprint(path)}"
    settings: dict[str, Any] = {}
    if kind == "vllm":
        vllm = {**vllm_defaults(), **(spec.get("vllm") or {})}
        fingerprint += "|" + digest("vllm", {k: vllm[k] for k in VLLM_ANSWER_KEYS})
        settings = {
            "vllm": vllm,
            "device": spec.get("device", "auto"),
            "vllm_python": from_env().get("vllm_python"),
        }
    with local_server(kind, path, log_path=server_log, **settings) as server:

        def server_gone() -> str | None:  # no retry can help once the job's own server is gone
            code = server.exit_code()
            return None if code is None else f"the model server exited with code {code}"

        served = OpenAIBackend(
            server.url,
            path,
            fingerprint,
            server_generation_config=gen_config,
            parallel_sampling=kind == "vllm",  # K candidates of a query in one request (n = K)
            give_up=server_gone,
            **online,
        )
        # A local server costs no money, but its token usage is recorded like any other.
        ledger = Ledger(ledger_dir(cache_dir), stage, f"{kind}-serve")
        yield CachedLLM(served, ResponseCache(cache_dir), ledger)


def device_key(spec: dict[str, Any]) -> str:
    """The config key a spec's `device` comes from, for the error when that device is missing."""
    if "name" in spec:
        return f"llms.{spec['name']}.device"
    return f"{spec['section']}.device" if "section" in spec else "device"


def quota_file(cache_dir: str | Path, spec: dict[str, Any]) -> Path:
    """Where the jobs calling one remote `llms` entry share its requests- and tokens-per-minute quota:
    `<cache_dir>/quota/<entry name>.json` (results/cache on the file system every job sees). A spec
    without an entry name (`vpo rewrite --base-url`) is keyed by its model name."""
    key = spec.get("name") or spec["model"]
    return Path(cache_dir) / "quota" / f"{re.sub(r'[^A-Za-z0-9._-]', '_', key)}.json"
