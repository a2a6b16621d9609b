"""The DAG of each scenario a user runs, as jobs per rule from a dry run: the embedded default, without the
video level, without the evaluation, and config/paper.yaml as shipped (on synthetic query files of a
known size); each of the default and paper.yaml also with 2 preference rounds, 2 text-to-video targets,
and both (rounds × targets: 1×1, 2×1, 1×2, 2×2). A rule file that stops declaring a job, or a scenario
that gains one, changes a count here.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.workflow_run import BASE_JOBS, EVAL_JOBS, REPO, VIDEO_JOBS, jobs_by_rule

DEFAULT = {**BASE_JOBS, **VIDEO_JOBS, **EVAL_JOBS}
# A second round of the default: it samples, judges, renders, scores, pairs and trains again (one DPO shard),
# and its checkpoint is one more evaluation method (rewrites, judge, videos, rewards, VBench).
ROUND_2 = {"sample": 1, "critique": 1, "refine": 1, "generate_videos": 1, "score_videos": 1, "video_pairs": 1,
           "video_report": 1, "build_pairs": 1, "train_dpo": 1, "eval_prompts": 1, "eval_judge": 1,
           "eval_videos": 1, "eval_rewards": 1, "eval_vbench": 1}  # fmt: skip
# tests/integration/dag_rounds_targets.yaml: tiny Wan as a second target (built by its rule), the default's
# evaluation for each target (its original, few-shot and SFT rows, and one DPO method per round).
LAYER = (
    "--configfile",
    str(REPO / "config/config.yaml"),
    str(REPO / "tests/integration/dag_rounds_targets.yaml"),
)
SECOND_TARGET = {"build_tiny_wan": 1, "generate_videos": 1, "score_videos": 1, "video_pairs": 1,
                 "video_report": 1, "build_pairs": 1, "train_dpo": 1, "eval_prompts": 1, "eval_judge": 1,
                 "eval_videos": 4, "eval_rewards": 4, "eval_vbench": 4, "eval_table": 1}  # fmt: skip


def with_counts(base: dict[str, int], *deltas: dict[str, int]) -> dict[str, int]:
    out = dict(base)
    for delta in deltas:
        for rule, n in delta.items():
            out[rule] = out.get(rule, 0) + n
    return out


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
@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["--config", "rounds={count: 2}"], with_counts(DEFAULT, ROUND_2)),
        # 1×2: round 1's text level is shared; the second target renders, scores, pairs and trains on its own,
        # and is scored in the evaluation for every method but the other target's DPO checkpoint.
        ([*LAYER, "--config", "rounds={count: 1}"], with_counts(DEFAULT, SECOND_TARGET)),
        # 2×2: a second round for each target (its own samples and judge turns from round 2 on).
        ([*LAYER], with_counts(DEFAULT, SECOND_TARGET, ROUND_2, ROUND_2)),
    ],
    ids=["2x1", "1x2", "2x2"],
)
def test_default_rounds_and_targets(overrides, expected):
    assert dry_run(REPO, *overrides) == expected


@pytest.fixture
def paper_data(tmp_path: Path) -> Path:
    """A project folder with synthetic query files of paper.yaml's names and a known size."""
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
    return tmp_path


# paper.yaml's second round: 2 DPO shards sampled and judged again, 40 more render/score jobs, pairs and
# DPO again, and one more evaluation method (19 video parts, 4 VBench suites).
PAPER_ROUND_2 = {"sample": 2, "critique": 2, "refine": 2, "generate_videos": 40, "score_videos": 40,
                 "video_pairs": 1, "video_report": 1, "build_pairs": 1, "train_dpo": 1, "eval_prompts": 1,
                 "eval_judge": 1, "eval_videos": 19, "eval_rewards": 19, "eval_vbench": 4}  # fmt: skip
# config/paper-targets.yaml adds CogVideoX-5B (50 videos per job: twice the render and score jobs; 37 eval
# parts) with its own DPO checkpoint per round, scored on its videos as are the original, few-shot and SFT.
PAPER_5B = {"provision_cogvideox_5b": 1, "generate_videos": 80, "score_videos": 80, "video_pairs": 1,
            "video_report": 1, "build_pairs": 1, "train_dpo": 1, "eval_prompts": 1, "eval_judge": 1,
            "eval_videos": 4 * 37, "eval_rewards": 4 * 37, "eval_vbench": 16, "eval_table": 1}  # fmt: skip
PAPER_5B_ROUND_2 = {"sample": 2, "critique": 2, "refine": 2, "generate_videos": 80, "score_videos": 80,
                    "video_pairs": 1, "video_report": 1, "build_pairs": 1, "train_dpo": 1, "eval_prompts": 1,
                    "eval_judge": 1, "eval_videos": 37, "eval_rewards": 37, "eval_vbench": 4}  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ([], PAPER),
        (["--config", "rounds={count: 2}"], with_counts(PAPER, PAPER_ROUND_2)),
        ([str(REPO / "config/paper-targets.yaml")], with_counts(PAPER, PAPER_5B)),
        ([str(REPO / "config/paper-targets.yaml"), "--config", "rounds={count: 2}"],
         with_counts(PAPER, PAPER_ROUND_2, PAPER_5B, PAPER_5B_ROUND_2)),
    ],
    ids=["1x1-as-shipped", "2x1", "1x2", "2x2"],
)  # fmt: skip
def test_paper_yaml_rounds_and_targets(paper_data, extra, expected):
    assert dry_run(paper_data, "--configfile", str(REPO / "config/paper.yaml"), *extra) == expected
