"""Two preference rounds × two text-to-video targets from two diffusers families (tiny CogVideoX and tiny
Wan), run for real on top of the finished default run (tests/integration/dag_rounds_targets.yaml over the
default config), as a researcher adds a round and a video model to a run: only the new work runs. Round 2
samples with round 1's checkpoint of its own target, every (round, target) trains its own DPO checkpoint,
each target gets its own evaluation tables with a row per round, the run report plots both rounds, the
audit walks a round-2 pair back through round 1 to SFT, and a change to one target or to round 2 re-runs
nothing of the other target or of round 1.

Runs before test_default_dag.py (tests/conftest.py orders them), whose last tests change the default run's
files; this module copies the default run and changes only its copy."""

from __future__ import annotations

import csv
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.workflow_run import REPO, jobs_by_rule
from tests.workflow_run import run_snakemake as snakemake
from vpo.core.fingerprints import fingerprint
from vpo.core.io import read_records
from vpo.core.layout import RECORD_FILES

pytestmark = pytest.mark.integration

LAYER = REPO / "tests/integration/dag_rounds_targets.yaml"
TARGETS = ("tiny-cogvideox", "tiny-wan")
CONFIG = ("--configfile", "config/config.yaml", "dag_rounds_targets.yaml")
METHODS = ["original", "fewshot", "sft"]


@pytest.fixture(scope="module")
def project(tmp_path_factory, default_run) -> Path:
    """A copy of the finished default run (records, checkpoints, item caches, Snakemake's metadata) with
    the layer's second round and second target run on top of it."""
    root = tmp_path_factory.mktemp("rounds") / "project"
    shutil.copytree(default_run, root, symlinks=True)
    # Should a test have changed the default run's query files already, the copy gets the project's own.
    shutil.copytree(REPO / "resources/queries", root / "resources/queries", dirs_exist_ok=True)
    (root / "dag_rounds_targets.yaml").write_text(LAYER.read_text())
    run = snakemake(root, *CONFIG)
    (root / "rounds-run.log").write_text(run.stdout + run.stderr)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    return root


def test_only_the_new_round_and_target_ran(project):
    jobs = jobs_by_rule((project / "rounds-run.log").read_text())
    # Nothing of the SFT side or of round 1's shared text level; round 1's tiny-cogvideox checkpoint stays.
    assert not set(jobs) & {"draft", "sft_data", "train_sft", "build_tiny_cogvideox", "eval_queries"}
    assert jobs["train_dpo"] == 3 and jobs["sample"] == 2 and jobs["critique"] == 2 and jobs["refine"] == 2
    # tiny-wan: both rounds rendered and scored; tiny-cogvideox: round 2 only.
    assert jobs["generate_videos"] == jobs["score_videos"] == 3 and jobs["build_tiny_wan"] == 1
    # Three new DPO methods rewritten and judged; tiny-wan scores all five methods, tiny-cogvideox round 2's.
    assert (jobs["eval_prompts"], jobs["eval_judge"]) == (3, 3)
    assert jobs["eval_videos"] == jobs["eval_rewards"] == jobs["eval_vbench"] == 6


def outputs(log: str) -> list[str]:
    """Every output path of the jobs a (dry) run lists."""
    return [path for line in log.splitlines() if line.strip().startswith("output:")
            for path in line.split(":", 1)[1].strip().split(", ")]  # fmt: skip


def test_every_round_and_target_trains_its_own_checkpoint(project):
    results = project / "results"
    assert "pairs.parquet" in {p.name for p in (results / "dpo/round-2/tiny-wan").iterdir()}
    for round_ in (1, 2):
        for target in TARGETS:
            model = results / f"models/dpo/round-{round_}/{target}"
            assert any(model.glob("*.safetensors")), model
            pairs = read_records(results / f"dpo/round-{round_}/{target}/pairs.parquet")
            assert pairs, (round_, target)
    # Round 1's text level is shared; round 2's is per target, sampled by the target's round-1 checkpoint.
    assert not (results / "dpo/round-1/tiny-wan/candidates").exists()
    for target in TARGETS:
        candidates = read_records(results / f"dpo/round-2/{target}/candidates/shard-0.parquet")
        sampler = fingerprint(str(results / f"models/dpo/round-1/{target}"))
        assert {c["model_fingerprint"] for c in candidates} == {f"hf|{sampler}"} or all(
            sampler in c["model_fingerprint"] for c in candidates
        )
    sft = fingerprint(str(results / "models/sft"))
    assert all(
        sft in c["model_fingerprint"]
        for c in read_records(results / "dpo/round-1/candidates/shard-0.parquet")
    )


def test_the_record_files_audit_reads_cover_both_rounds(project):
    for record_type, patterns in RECORD_FILES.items():
        for pattern in patterns:
            assert list((project / "results").glob(pattern)), f"{pattern} ({record_type}) matches nothing"


def test_round_two_trains_from_round_one_and_is_held_to_it(project):
    for target in TARGETS:
        report = json.loads((project / f"results/models/dpo/round-2/{target}.report.json").read_text())
        assert list(report["provenance"]["models"]) == [f"results/models/dpo/round-1/{target}"]
        yaml_text = (project / f"results/models/dpo/round-2/{target}/llamafactory_dpo.yaml").read_text()
        assert f"model_name_or_path: results/models/dpo/round-1/{target}" in yaml_text
        assert "ref_model" not in yaml_text  # reference: previous, the checkpoint it starts from


def test_each_target_renders_with_its_own_diffusers_family(project):
    for target, pipeline in (("tiny-cogvideox", "CogVideoXPipeline"), ("tiny-wan", "WanPipeline")):
        folder = project / "resources/models" / target
        assert json.loads((folder / "model_index.json").read_text())["_class_name"] == pipeline
        for round_ in (1, 2):
            videos = read_records(
                project / f"results/dpo/round-{round_}/{target}/videos/shard-0/part-0.parquet"
            )
            assert videos and {v["model_fingerprint"] for v in videos} == {f"t2v|{fingerprint(str(folder))}"}
            assert all((project / v["video_path"]).is_file() for v in videos)
            assert {(v["num_frames"], v["height"], v["width"]) for v in videos} == {(9, 32, 32)}


def test_each_target_has_a_table_with_a_row_per_round(project):
    tables = {}
    for target in TARGETS:
        path = project / f"results/eval/tables/{target}/table.csv"
        rows = {r["method"]: r for r in csv.DictReader(path.open())}
        assert list(rows) == [*METHODS, f"dpo-r1-{target}", f"dpo-r2-{target}"]
        for name, row in rows.items():
            assert (
                float(row["reward_vpo_sum_low"])
                <= float(row["reward_vpo_sum"])
                <= float(row["reward_vpo_sum_high"])
            )
            if name != "original":
                assert sum(float(row[k]) for k in ("win", "tie", "loss")) == pytest.approx(1.0)
        tables[target] = rows
    # The text level is computed once: the SFT rewrites and their judgements are the same rows in both
    # tables; the videos are each target's own.
    for key in ("aligned", "unsafe", "refusal", "prompt_words"):
        assert tables["tiny-cogvideox"]["sft"][key] == tables["tiny-wan"]["sft"][key]
    (project / "eval-tables.md").write_text(
        "\n".join((project / f"results/eval/tables/{t}/table.md").read_text() for t in TARGETS)
    )


def test_the_run_report_plots_both_rounds(project):
    page = (project / "results/report/summary.html").read_text()
    assert "judge pass rate" in page and "round" in page
    svg = (project / "results/report/rounds.svg").read_text()
    assert svg.count("<path") > 4


def test_audit_walks_a_round_two_pair_back_through_round_one_to_sft(project):
    pairs = read_records(project / "results/dpo/round-2/tiny-wan/pairs.parquet")
    run = subprocess.run(
        [sys.executable, "-m", "vpo.cli", "audit", pairs[0]["pair_id"], "--json"],
        cwd=project, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    text = json.dumps(json.loads(run.stdout))
    chain = re.findall(r'"label": "(round \d for tiny-wan|sft)"', text)
    assert chain[:2] == ["round 1 for tiny-wan", "sft"], chain


def test_changing_target_b_never_reruns_target_a(project):
    run = snakemake(
        project, "--dry-run", *CONFIG, "--config", "targets={tiny-wan: {t2v: {num_inference_steps: 3}}}"
    )
    assert run.returncode == 0, run.stderr[-3000:]
    paths = outputs(run.stdout)
    assert paths and not [p for p in paths if "tiny-cogvideox" in p]
    assert not [
        p for p in paths if p.startswith(("results/sft", "results/dpo/round-1/c", "results/dpo/round-1/r"))
    ]
    jobs = jobs_by_rule(run.stdout)
    # tiny-wan: both rounds' videos onward, round 2's samples and judge turns, its evaluation rows.
    assert jobs["generate_videos"] == 2 and jobs["train_dpo"] == 2 and jobs["sample"] == 1
    assert jobs["eval_table"] == 1 and "train_sft" not in jobs


def test_changing_round_two_never_reruns_round_one(project):
    # The DPO reference matters from round 2 on (round 1 is held to SFT either way).
    run = snakemake(project, "--dry-run", *CONFIG, "--config", "rounds={count: 2, reference: sft}")
    assert run.returncode == 0, run.stderr[-3000:]
    paths = outputs(run.stdout)
    assert not [p for p in paths if "round-1" in p or "dpo-r1-" in p]
    assert jobs_by_rule(run.stdout)["train_dpo"] == 2
    # A third round adds its jobs and keeps both earlier rounds.
    run = snakemake(project, "--dry-run", *CONFIG, "--config", "rounds={count: 3, reference: previous}")
    assert run.returncode == 0, run.stderr[-3000:]
    paths = outputs(run.stdout)
    assert paths and not [p for p in paths if re.search(r"round-[12]/|dpo-r[12]-", p)]
    assert jobs_by_rule(run.stdout)["train_dpo"] == 2


def first_loss(model: Path) -> float:
    return json.loads((model / "trainer_log.jsonl").read_text().splitlines()[0])["loss"]


def test_a_round_held_to_sft_trains_against_it(project):
    """Last in this module: it retrains a checkpoint. Held to the checkpoint it starts from (the layer's
    `previous`), round 2's DPO loss starts at ln 2; held to SFT, the policy and its reference differ from
    the first step on."""
    model = project / "results/models/dpo/round-2/tiny-wan"
    assert first_loss(model) == pytest.approx(0.693147, abs=1e-5)
    before = {
        p: p.stat().st_mtime_ns for p in (project / "results/models/dpo/round-1").rglob("*.safetensors")
    }
    run = snakemake(
        project,
        *CONFIG,
        "--config",
        "rounds={count: 2, reference: sft}",
        "--",
        str(model.relative_to(project)),
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert jobs_by_rule(run.stdout + run.stderr) == {"train_dpo": 1}
    assert "ref_model: results/models/sft" in (model / "llamafactory_dpo.yaml").read_text()
    report = json.loads((project / "results/models/dpo/round-2/tiny-wan.report.json").read_text())
    assert list(report["provenance"]["models"]) == [
        "results/models/dpo/round-1/tiny-wan",
        "results/models/sft",
    ]
    assert abs(first_loss(model) - 0.693147) > 1e-3
    assert {
        p: p.stat().st_mtime_ns for p in (project / "results/models/dpo/round-1").rglob("*.safetensors")
    } == before
