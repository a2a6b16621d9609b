"""Options that change how fast and in what memory a job works, not what it produces, and reach jobs
outside `params`.

Snakemake re-runs a job when its params change, and everything downstream with it (DPO training
included). Concurrency, pacing, retries, Batch API use, prices and the budget decide how fast and at
what cost LLM answers arrive; batch sizes and memory switches decide how fast items are sampled,
rendered and scored. The outputs stay the same: every item has its own seed and its own cache key, and
neither holds any of these options. So the Snakefile passes them to every job in one environment
variable instead, and each job records what it used (its report's provenance).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

from vpo.core.schemas import load_schema

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

# The same for the stage sections: items per forward pass, requests in flight, GPU memory switches.
# `sample` also runs the checkpoints the evaluation rewrites with.
SECTION_KEYS: dict[str, tuple[str, ...]] = {
    "sample": ("batch_size", "max_concurrency"),
    "t2v": ("batch_size", "memory"),
    "reward": ("batch_size",),
}

# The sections a text-to-video target has its own of (config `targets`).
TARGET_SECTIONS = ("t2v", "reward")

# Top-level keys that are run options as a whole.
GLOBAL_KEYS = ("prices", "budget_usd", "vllm_python")


def run_options(config: dict[str, Any]) -> dict[str, Any]:
    """What the Snakefile exports: the execution keys of every `llms` entry and stage section, prices,
    the budget and where vLLM is installed."""
    return {
        "llms": {
            name: {k: v for k, v in entry.items() if k in EXECUTION_KEYS}
            for name, entry in config["llms"].items()
        },
        **{
            section: {k: config[section][k] for k in keys if k in config[section]}
            for section, keys in SECTION_KEYS.items()
            if section in config
        },
        **{key: config[key] for key in GLOBAL_KEYS if key in config},
        # Each text-to-video target's own (`targets.<name>.t2v.batch_size`, ...).
        "targets": {
            name: {
                section: {k: target[section][k] for k in SECTION_KEYS[section] if k in target[section]}
                for section in TARGET_SECTIONS
                if section in target
            }
            for name, target in config.get("targets", {}).items()
        },
    }


def without_execution_keys(config: dict[str, Any], section: str) -> dict[str, Any]:
    """The config section `section` minus its execution keys: what decides its outputs."""
    return {k: v for k, v in config[section].items() if k not in SECTION_KEYS.get(section, ())}


def without_run_options(config: dict[str, Any]) -> dict[str, Any]:
    """The config minus what `run_options` exports: what decides the outputs (safe as params)."""
    out = {key: value for key, value in config.items() if key not in GLOBAL_KEYS}
    out["llms"] = {
        name: {k: v for k, v in entry.items() if k not in EXECUTION_KEYS}
        for name, entry in config["llms"].items()
    }
    for section in SECTION_KEYS:
        if section in config:
            out[section] = without_execution_keys(config, section)
    if "targets" in config:
        out["targets"] = {
            name: {
                section: {k: v for k, v in values.items() if k not in SECTION_KEYS[section]}
                for section, values in target.items()
            }
            for name, target in config["targets"].items()
        }
    return out


def with_run_options(config: Mapping[str, Any], options: Mapping[str, Any]) -> dict[str, Any]:
    """The config as the run saw it (for display): `without_run_options`'s params completed with the
    run options a job received."""
    merged = dict(config)
    if "llms" in merged:
        option_llms = options.get("llms") or {}
        merged["llms"] = {
            name: {**entry, **option_llms.get(name, {})} for name, entry in merged["llms"].items()
        }
    for section in SECTION_KEYS:
        if section in merged and section in options:
            merged[section] = {**merged[section], **options[section]}
    if "targets" in merged:
        option_targets = options.get("targets") or {}
        merged["targets"] = {
            name: {s: {**values, **option_targets.get(name, {}).get(s, {})} for s, values in target.items()}
            for name, target in merged["targets"].items()
        }
    merged.update({key: options[key] for key in GLOBAL_KEYS if key in options})
    return merged


def from_env() -> dict[str, Any]:
    return json.loads(os.environ.get(RUN_OPTIONS_ENV) or "{}")


def section_options(section: str, spec: dict[str, Any], target: str | None = None) -> dict[str, Any]:
    """`spec`, built from config section `section` (of text-to-video target `target`, if given) without
    its execution keys, completed with them: the values the Snakefile exported, else the schema's defaults
    (a stage started by hand). Spec keys win, so a caller's explicit batch size stays."""
    properties = load_schema("config.schema.yaml")["properties"][section]["properties"]
    defaults = {key: properties[key]["default"] for key in SECTION_KEYS[section]}
    options = from_env()
    exported = options.get(section, {})
    if target is not None:
        exported = options.get("targets", {}).get(target, {}).get(section, exported)
    return {**defaults, **exported, **spec}


def with_execution_options(spec: dict[str, Any]) -> dict[str, Any]:
    """An LLM spec completed with its execution options: those of its `llms` entry (`name`), or those
    of the config section it was built from (`section`: `sample` for the policy checkpoints)."""
    if "name" in spec:
        return {**from_env().get("llms", {}).get(spec["name"], {}), **spec}
    if "section" in spec:
        return section_options(spec["section"], spec)
    return spec  # built by hand (`vpo rewrite`): it carries its own
