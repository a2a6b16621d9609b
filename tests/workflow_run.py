"""Shared by the whole-DAG tests (local and Slurm): a clean project copy, a local Snakemake run, and the
job table of a run."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# Jobs per rule of the embedded default (2 SFT shards, 1 DPO shard of 1 video part), by DAG part.
# Rules every default-sized scenario runs once or per set.
BASE_JOBS = {
    "build_smollm2_135m": 1,
    "build_tiny_cogvideox": 1,
    "build_tiny_vlm": 1,
    "curate": 2,
    "shard_sft": 1,
    "shard_dpo": 1,
    "draft": 2,
    "critique": 3,  # 2 SFT shards + 1 DPO shard
    "refine": 3,
    "sft_data": 1,
    "train_sft": 1,
    "sample": 1,
    "build_pairs": 1,
    "train_dpo": 1,
    "run_report": 1,
    "all": 1,
}
VIDEO_JOBS = {"generate_videos": 1, "score_videos": 1, "video_pairs": 1, "video_report": 1}
# original, fewshot, sft, dpo: rewrites (the original needs no model), judged, rendered and scored.
EVAL_JOBS = {
    "eval_queries": 1,
    "eval_original_prompts": 1,
    "eval_prompts": 3,
    "eval_judge": 4,
    "eval_videos": 4,
    "eval_rewards": 4,
    "eval_vbench": 4,  # the demo's one VBench suite (temporal_flickering) for each method
    "eval_table": 1,
}


def copy_project(root: Path) -> None:
    """A clean copy of the project in `root`: no built models, no results."""
    for name in ("Snakefile", "config", "envs", "profiles", "workflow"):
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, root / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, root / name)
    shutil.copytree(REPO / "resources", root / "resources", ignore=shutil.ignore_patterns("models"))


def run_snakemake(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    """`snakemake --cores 2 ARGS` in `workdir`, with the venv's Python first on PATH for the jobs."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run(
        [sys.executable, "-m", "snakemake", "--cores", "2", *args],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


def jobs_by_rule(log: str) -> Counter:
    """Jobs per rule from the table Snakemake prints before it runs (or dry-runs) anything."""
    counts: Counter = Counter()
    lines = log.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("Job stats:")), None)
    for line in lines[start + 3 :] if start is not None else []:
        parts = line.split()
        if len(parts) != 2 or parts[0] == "total":
            break
        counts[parts[0]] = int(parts[1])
    return counts
