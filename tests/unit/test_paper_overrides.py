"""tests/slurm/paper_cpu.yaml, which the Slurm test layers over config/paper.yaml, changes only model
sources, where things are on the test machine, and sizes: never the method (prompts, K, temperatures,
judge and teacher settings and mode, pair rules, the DPO loss)."""

from __future__ import annotations

import fnmatch
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]

# Every key the override may set, by why it may differ.
ALLOWED = {
    "model sources": [
        "models.*.source",
        "models.*.revision",
        "reward.backend",  # VisionReward-Video (CogVLM2) has no CPU-sized stand-in: the tiny video VLM
        "reward.checklist",  # ... answers the demo checklist,
        "reward.answer_mode",  # ... constrained to the answer words (an untrained VLM)
        "train_*.template",  # the chat template belongs to the policy model
    ],
    "where things are": [
        "llms.*.base_url",
        "vllm_python",
        "queries.*",
        "eval.queries",
        "eval.unsafe_queries",
    ],
    "hardware and sizes": [
        "use_gpus",
        "curation.max_queries",
        "sharding.queries_per_shard",
        "*.generation.max_new_tokens",
        "*.resources.*",
        "*.resources",
        "sample.vllm.*",
        "t2v.dtype",
        "t2v.height",
        "t2v.width",
        "t2v.num_frames",
        "t2v.num_inference_steps",
        "t2v.batch_size",
        "t2v.items_per_job",
        "reward.frames_per_second",
        "reward.dtype",
        "train_*.cutoff_len",
        "train_*.max_steps",
        "train_*.precision",
        "train_*.deepspeed",
        "eval.bootstrap_samples",
        "eval.methods",  # fewer rewriters compared (a checkpoint's rewrites run as the sample job does)
        "eval.suites",  # the one VBench suite whose scorer needs no downloaded weights ...
        "eval.suite_limit",  # ... two of its prompts
    ],
    "polling": ["llms.*.batch_poll_s"],  # how often the run asks whether a batch is done
}


def leaf_keys(value: object, prefix: str = "") -> list[str]:
    if isinstance(value, dict):
        return [key for k, v in value.items() for key in leaf_keys(v, f"{prefix}{k}.")]
    return [prefix.rstrip(".")]


def test_the_cpu_overrides_change_only_sources_locations_and_sizes():
    overrides = yaml.safe_load((REPO / "tests/slurm/paper_cpu.yaml").read_text())
    patterns = [p for group in ALLOWED.values() for p in group]
    keys = leaf_keys(overrides)
    assert keys
    unexplained = [key for key in keys if not any(fnmatch.fnmatchcase(key, p) for p in patterns)]
    assert unexplained == [], f"paper_cpu.yaml changes more than sources and sizes: {unexplained}"


def test_the_method_is_the_papers():
    paper = yaml.safe_load((REPO / "config/paper.yaml").read_text())
    overrides = yaml.safe_load((REPO / "tests/slurm/paper_cpu.yaml").read_text())
    for key in ("seed", "policy_model", "pairs", "prices", "budget_usd", "sft_data"):
        assert key not in overrides
    for stage in ("draft", "critique", "refine", "sample"):
        assert set(overrides[stage].get("generation", {})) <= {"max_new_tokens"}
        assert overrides[stage].get("template") is None
    assert "mode" not in overrides["llms"]["gpt-4o"] and paper["llms"]["gpt-4o"]["mode"] == "batch"
    assert "k" not in overrides["sample"] and overrides["sample"].get("serve") is None
