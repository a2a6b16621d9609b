"""The DAG of each scenario a user runs, as jobs per rule from a dry run: the embedded default, without the
video level, without the evaluation, and config/paper.yaml as shipped (on synthetic query files of a
known size). A rule file that stops declaring a job, or a scenario that gains one, changes a count here.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.workflow_run import BASE_JOBS, EVAL_JOBS, REPO, VIDEO_JOBS, jobs_by_rule

# paper.yaml on 1,200 SFT and 1,000 DPO queries at 500 per shard: 3 + 2 shards; 16 videos per job.
PAPER = {
    "provision_llama3_8b_instruct": 1,
    "provision_cogvideox_2b": 1,
    "provision_visionreward_video": 1,
    "visionreward_checklist": 1,
    "curate": 2,
    "shard_sft": 1,
    "shard_dpo": 1,
    "draft": 3,
    "critique": 5,
    "refine": 5,
    "sft_data": 1,
    "train_sft": 1,
    "sample": 2,
    "generate_videos": 40,  # 2 shards × 500 queries × k=4 prompts × 1 video, 100 videos per job
    "score_videos": 40,
    "video_pairs": 1,
    "build_pairs": 1,
    "video_report": 1,
    "train_dpo": 1,
    "run_report": 1,
    "all": 1,
    "eval_queries": 1,
    "eval_original_prompts": 1,
    "eval_prompts_local": 1,  # the few-shot rewrites by the API model run where the network is
    "eval_prompts": 2,  # sft and dpo checkpoints
    "eval_judge": 4,
    # 40 held-out queries × 1 video + the four VBench suites' 358 prompts × 5 videos, 100 per job: 19 parts
    "eval_videos": 76,
    "eval_rewards": 76,
    "provision_vbench": 1,
    "eval_vbench": 16,  # 4 methods × 4 suites
    "eval_table": 1,
}


def dry_run(workdir: Path, *args: str) -> dict[str, int]:
    run = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "-F", "--nolock", "--cores", "1",
         "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir), "--workflow-profile", "none",
         *args],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]
    return dict(jobs_by_rule(run.stdout + run.stderr))


@pytest.mark.slow
@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ([], {**BASE_JOBS, **VIDEO_JOBS, **EVAL_JOBS}),
        (["--config", "pairs={video: false}"], {**BASE_JOBS, **EVAL_JOBS}),
        (["--config", "eval={enabled: false}"], {**BASE_JOBS, **VIDEO_JOBS}),
    ],
    ids=["default", "no-video", "no-eval"],
)
def test_default_scenarios(overrides, expected):
    assert dry_run(REPO, *overrides) == expected


@pytest.mark.slow
def test_paper_yaml_as_shipped(tmp_path):
    shutil.copytree(
        REPO / "resources", tmp_path / "resources", ignore=shutil.ignore_patterns("models", "hub*")
    )
    (tmp_path / "data/vpo").mkdir(parents=True)
    (tmp_path / "data/eval").mkdir()
    queries = {
        "data/vpo/sft_prompts.json": [f"a red fox number {i} runs through snowy woods" for i in range(1200)],
        "data/vpo/dpo_prompts.json": [f"a small boat number {i} drifts on a calm lake" for i in range(1000)],
    }
    for path, rows in queries.items():
        (tmp_path / path).write_text(json.dumps(rows), encoding="utf-8")
    (tmp_path / "data/eval/heldout.txt").write_text("an old train crosses a stone bridge\n" * 30)
    (tmp_path / "data/eval/unsafe.txt").write_text("a riot scene in a burning city\n" * 10)
    assert dry_run(tmp_path, "--configfile", str(REPO / "config/paper.yaml")) == PAPER
