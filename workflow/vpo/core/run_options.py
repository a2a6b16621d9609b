"""Options that change how LLM requests are sent, not what comes back, and reach jobs outside `params`.

Snakemake re-runs a job when its params change, and everything downstream with it (DPO training
included). Concurrency, pacing, retries, Batch API use, prices and the budget decide how fast and at
what cost answers arrive — the answers (and the item-cache keys) stay the same — so the Snakefile
passes them to every job in one environment variable instead. Each job records what it used.
"""

from __future__ import annotations

import json
import os
from typing import Any

RUN_OPTIONS_ENV = "VPO_RUN_OPTIONS"

# Keys of an `llms` entry that only shape delivery; the rest (backend, model, base_url, serve,
# structured_output, dtype, device) decide the answers and stay in the rules' params.
EXECUTION_KEYS = (
    "api_key_env",
    "mode",
    "run_locally",  # where the job runs (a local rule or not), read at DAG build time
    "max_concurrency",
    "max_retries",
    "timeout_s",
    "backoff_base_s",
    "backoff_max_s",
    "requests_per_minute",
    "tokens_per_minute",
    "batch_poll_s",
    "batch_completion_window",
    "batch_max_requests",
    "batch_max_resubmits",
    "batch_size",
)


# Top-level keys that are run options as a whole.
GLOBAL_KEYS = ("prices", "budget_usd", "vllm_python")


def run_options(config: dict[str, Any]) -> dict[str, Any]:
    """What the Snakefile exports: execution keys of every `llms` entry, prices, the budget and where
    vLLM is installed."""
    return {
        "llms": {
            name: {k: v for k, v in entry.items() if k in EXECUTION_KEYS}
            for name, entry in config["llms"].items()
        },
        **{key: config[key] for key in GLOBAL_KEYS if key in config},
    }


def without_run_options(config: dict[str, Any]) -> dict[str, Any]:
    """The config minus what `run_options` exports: what decides the outputs (safe as params)."""
    out = {key: value for key, value in config.items() if key not in GLOBAL_KEYS}
    out["llms"] = {
        name: {k: v for k, v in entry.items() if k not in EXECUTION_KEYS}
        for name, entry in config["llms"].items()
    }
    return out


def from_env() -> dict[str, Any]:
    return json.loads(os.environ.get(RUN_OPTIONS_ENV) or "{}")


def with_execution_options(spec: dict[str, Any]) -> dict[str, Any]:
    """A stage's LLM spec completed with the execution options of its `llms` entry (spec keys win)."""
    options = from_env().get("llms", {}).get(spec.get("name", ""), {})
    return {**options, **spec}
