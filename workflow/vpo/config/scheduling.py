"""What the workflow's jobs ask a scheduler for, computed from the config alone.

workflow/rules/common.smk (`res`, `gpus`, `llm_runtime`) and `vpo slurm-profile` both read these, so a
generated Slurm profile sends exactly the rules that request GPUs to the GPU partition, and a unit test
can check the resource rules without Snakemake.
"""

from __future__ import annotations

import re
from typing import Any

from vpo.config.resolve import runs_model_locally
from vpo.core import rounds

# A job that Slurm ended at its wall-time or memory limit is resubmitted (the profile's `retries`) with
# `attempt` times the configured memory and wall time: attempt 1 gets the configured values.
GROWS_WITH_ATTEMPT = ("mem_mb", "runtime")
# Minutes on top of a Batch API completion window: upload, polls up to 10 minutes apart, download, parse.
BATCH_MARGIN_MIN = 60
# The stages whose LLM is an `llms` entry, which may run remotely (then the job needs no GPU).
LLM_STAGES = ("draft", "critique", "refine")


def configured(cfg: dict[str, Any], stage: str, key: str, default: int) -> int:
    """`<stage>.resources.<key>`, else the rule's default; a dotted stage names a subsection
    (`eval.vbench`)."""
    section = cfg
    for part in stage.split("."):
        section = section.get(part, {})
    return section.get("resources", {}).get(key, default)


def grown(value: int, attempt: int) -> int:
    """A resource of the `attempt`-th try (1, 2, ...) of a job: `value` times the attempt."""
    return value * attempt


def window_minutes(window: str) -> int:
    """A Batch API completion window such as "24h" in minutes."""
    match = re.fullmatch(r"([1-9][0-9]*)h", window)
    if match is None:
        raise ValueError(f"batch_completion_window {window!r}: expected hours such as '24h'")
    return int(match.group(1)) * 60


def llm_runtime(cfg: dict[str, Any], stage: str, default: int, llm: str | None, attempt: int) -> int:
    """Wall time (minutes) of one try of a job whose LLM is the `llms` entry `llm` (None: a checkpoint).

    As `resources.runtime`, grown with the attempt; with a Batch API LLM (`mode: batch`) at least its
    completion window plus BATCH_MARGIN_MIN, so that Slurm does not end a job that waits on a batch. A job
    ended anyway resumes its journaled batches when it is retried."""
    minutes = grown(configured(cfg, stage, "runtime", default), attempt)
    entry = cfg["llms"].get(llm, {}) if llm else {}
    if entry.get("mode") == "batch":
        minutes = max(minutes, window_minutes(entry["batch_completion_window"]) + BATCH_MARGIN_MIN)
    return minutes


def stage_llm_name(cfg: dict[str, Any], stage: str, phase: str = "sft") -> str:
    """The `llms` entry of draft/critique/refine; the DPO side may use `<stage>.dpo_llm`."""
    section = cfg[stage]
    return section["dpo_llm"] if phase == "dpo" and section.get("dpo_llm") else section["llm"]


def stage_gpus(cfg: dict[str, Any], stage: str, llm: str | None = None) -> int:
    """GPUs one job of a GPU-capable stage asks for: 0 without `use_gpus` or for a remote `llm`."""
    if not cfg["use_gpus"]:
        return 0
    if llm is not None and not runs_model_locally(cfg, llm):
        return 0  # the model runs behind a remote endpoint
    return configured(cfg, stage, "gpu", 1)


def target_gpus(cfg: dict[str, Any], target: str, section: str) -> int:
    """GPUs one render (`t2v`) or scoring (`reward`) job of a text-to-video target asks for."""
    if not cfg["use_gpus"]:
        return 0
    return cfg["targets"][target][section].get("resources", {}).get("gpu", 1)


def _eval_method_llms(cfg: dict[str, Any]) -> dict[str, str | None]:
    """eval_prompts' methods → their `llms` entry (None: a checkpoint, which runs in the job)."""
    section = cfg["eval"]
    judge_default = cfg["critique"]["llm"]
    methods: dict[str, str | None] = {}
    for name in section["methods"]:
        if name == "fewshot":
            methods[name] = section["fewshot"]["llm"] or judge_default
        elif name == "sft":
            methods[name] = None
        elif name == "dpo":
            methods |= dict.fromkeys(rounds.dpo_methods(cfg))
    for name, extra in section["extra_methods"].items():
        methods[name] = extra.get("llm")
    return methods


def _by_wildcard(name: str, gpus: dict[str, int]) -> bool | tuple[str, tuple[str, ...]]:
    """True when every value of the wildcard asks for GPUs, else (wildcard, the values that do)."""
    using = tuple(sorted(value for value, n in gpus.items() if n > 0))
    return True if len(using) == len(gpus) else (name, using)


def gpu_rules(cfg: dict[str, Any]) -> dict[str, bool | tuple[str, tuple[str, ...]]]:
    """The rules with jobs that ask for GPUs under `cfg` (validated, defaults filled).

    Value True: every job of the rule does. (wildcard, values): only the jobs whose wildcard has one of
    these values (e.g. critique on the DPO side only, when `critique.dpo_llm` is local and `llm` is not)."""
    if not cfg["use_gpus"]:
        return {}
    stages = {"sample": "sample", "train_sft": "train_sft", "train_dpo": "train_dpo"}
    evaluation = cfg.get("eval", {}).get("enabled", False)
    if evaluation and cfg["eval"]["suites"]:
        stages["eval_vbench"] = "eval.vbench"
    rules: dict[str, bool | tuple[str, tuple[str, ...]]] = {
        rule: True for rule, stage in stages.items() if stage_gpus(cfg, stage) > 0
    }
    per_target = (
        {"t2v": ["eval_videos"], "reward": ["eval_rewards"]} if evaluation else {"t2v": [], "reward": []}
    )
    if cfg["pairs"]["video"]:
        per_target["t2v"].append("generate_videos")
        per_target["reward"].append("score_videos")
    for section, names in per_target.items():
        by_target = {t: target_gpus(cfg, t, section) for t in cfg["targets"]}
        if any(by_target.values()):
            rules |= dict.fromkeys(names, _by_wildcard("target", by_target))
    if stage_gpus(cfg, "draft", stage_llm_name(cfg, "draft")) > 0:
        rules["draft"] = True
    for stage in ("critique", "refine"):
        phases = {
            p: stage_gpus(cfg, stage, stage_llm_name(cfg, stage, rounds.side(p)))
            for p in rounds.text_phases(cfg)
        }
        if any(phases.values()):
            rules[stage] = _by_wildcard("phase", phases)
    if evaluation:
        judge = cfg["eval"]["judge"]["llm"] or cfg["critique"]["llm"]
        if stage_gpus(cfg, "eval", judge) > 0:
            rules["eval_judge"] = True
        methods = {m: stage_gpus(cfg, "eval", llm) for m, llm in _eval_method_llms(cfg).items()}
        if any(methods.values()):
            rules["eval_prompts"] = _by_wildcard("method", methods)
    return rules
