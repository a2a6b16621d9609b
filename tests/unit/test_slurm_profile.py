"""`vpo slurm-profile` and the resource rules behind it (vpo.config.scheduling): which rules go to the GPU
partition under a config, name checks, no silent overwrite, retries with more memory and time, and a
Snakemake dry run through the written profile that keeps the site's partition and account."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import REPO
from vpo.config import scheduling
from vpo.config.validate import validate_config
from vpo.tools.slurm_profile import main

SHA = re.compile(r"[0-9a-f]{40}")


def load(name: str, **changes: Any) -> dict[str, Any]:
    raw = yaml.safe_load((REPO / "config" / name).read_text())
    for model in raw["models"].values():  # a placeholder revision is refused; the profile needs none
        if model.get("revision") is not None and not SHA.fullmatch(str(model["revision"])):
            model["revision"] = "0" * 40
    return {**raw, **changes}


def write_config(tmp_path: Path, raw: dict[str, Any]) -> Path:
    path = tmp_path / "run.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(raw))
    return path


def generate(tmp_path: Path, raw: dict[str, Any], *extra: str) -> dict[str, Any]:
    out = tmp_path / "slurm"
    args = ["--partition", "cpu", "--gpu-partition", "gpu", "--gpu-model", "a100", "--account", "lab"]
    main([*args, "--configfile", str(write_config(tmp_path, raw)), "--out", str(out), *extra])
    return yaml.safe_load((out / "config.v8+.yaml").read_text())


def test_paper_profile_routes_only_the_local_model_rules_to_gpus(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    profile = generate(tmp_path, load("paper.yaml"), "--status-command", "sacct")
    gpu = {"slurm_partition": "gpu", "gpu_model": "a100"}
    local = ("sample", "train_sft", "train_dpo", "generate_videos", "score_videos", "eval_videos")
    expected = dict.fromkeys((*local, "eval_rewards", "eval_vbench"), gpu)
    # The evaluation's rewrites mix checkpoints (a GPU) and GPT-4o (none): routed per method, no model.
    checkpoints = '["dpo-r1-cogvideox-2b", "sft"]'
    expected["eval_prompts"] = {"slurm_partition": f'"gpu" if wildcards.method in {checkpoints} else "cpu"'}
    assert profile["set-resources"] == expected  # GPT-4o teacher and judge: no GPU, default partition
    assert profile["default-resources"] == {
        "slurm_partition": "cpu",
        "slurm_account": "lab",
        "mem_mb": "2000 * attempt",
        "runtime": "30 * attempt",
    }
    assert profile["slurm-array-jobs"] == "generate_videos,score_videos,eval_videos,eval_rewards"
    assert profile["executor"] == "slurm" and profile["retries"] == 2
    assert profile["slurm-status-command"] == "sacct" and profile["slurm-efficiency-report"] is True


def test_default_config_with_gpus_sends_its_local_llm_stages_to_gpus(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    profile = generate(tmp_path, load("config.yaml", use_gpus=True), "--status-command", "squeue")
    assert set(profile["set-resources"]) == {
        *("sample", "train_sft", "train_dpo", "generate_videos", "score_videos", "draft", "critique"),
        *("refine", "eval_prompts", "eval_judge", "eval_videos", "eval_rewards", "eval_vbench"),
    }
    assert profile["slurm-efficiency-report"] is False
    without = generate(tmp_path / "cpu", load("config.yaml"), "--no-array-jobs", "--status-command", "squeue")
    assert "set-resources" not in without and "slurm-array-jobs" not in without


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--partition", "cpu;rm -rf ~"),
        ("--account", "lab,other"),
        ("--gpu-model", "a100:2"),
        ("--gpu-partition", ""),
    ],
)
def test_names_that_reach_sbatch_are_checked(tmp_path, monkeypatch, option, value):
    monkeypatch.chdir(REPO)
    args = {"--partition": "cpu", option: value}
    with pytest.raises(SystemExit, match=re.escape(option)):
        main(
            [
                *(x for kv in args.items() for x in kv),
                "--out",
                str(tmp_path / "p"),
                "--status-command",
                "squeue",
            ]
        )
    assert not (tmp_path / "p").exists()


def test_an_existing_profile_is_kept_without_force(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    target = tmp_path / "slurm" / "config.v8+.yaml"
    target.parent.mkdir()
    target.write_text("executor: slurm\n")
    with pytest.raises(SystemExit, match="--force"):
        main(["--partition", "cpu", "--out", str(target.parent), "--status-command", "squeue"])
    assert target.read_text() == "executor: slurm\n"
    main(["--partition", "cpu", "--out", str(target.parent), "--status-command", "squeue", "--force"])
    assert yaml.safe_load(target.read_text())["default-resources"]["slurm_partition"] == "cpu"


def test_the_default_place_is_where_a_bare_profile_name_is_found(monkeypatch, tmp_path):
    from vpo.tools.slurm_profile import default_out

    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    assert sys.platform != "linux" or default_out() == tmp_path / "snakemake" / "slurm"


def test_memory_and_time_grow_with_the_attempt_and_batch_llms_get_their_window():
    cfg = validate_config(load("paper.yaml"), check_files=False)
    assert [scheduling.grown(4000, attempt) for attempt in (1, 2, 3)] == [4000, 8000, 12000]
    online = {**cfg, "llms": {"gpt-4o": {**cfg["llms"]["gpt-4o"], "mode": "online"}}}
    assert scheduling.llm_runtime(online, "critique", 60, "gpt-4o", 2) == 120  # as configured, doubled
    batch = {**cfg, "llms": {"gpt-4o": {**cfg["llms"]["gpt-4o"], "mode": "batch"}}}
    assert scheduling.llm_runtime(batch, "critique", 60, "gpt-4o", 1) == 24 * 60 + scheduling.BATCH_MARGIN_MIN
    assert scheduling.llm_runtime(batch, "eval", 60, None, 1) == 240  # a checkpoint: paper's eval size
    with pytest.raises(ValueError, match="batch_completion_window"):
        scheduling.window_minutes("1d")


def resources_by_rule(log: str) -> dict[str, list[dict[str, str]]]:
    """`rule X:` blocks of a dry run → each job's resources."""
    found: dict[str, list[dict[str, str]]] = {}
    rule = None
    for line in log.splitlines():
        if match := re.match(r"(?:local)?rule (\w+):", line):
            rule = match.group(1)
        elif rule and line.strip().startswith("resources:"):
            pairs = (item.split("=", 1) for item in line.split(":", 1)[1].split(", "))
            found.setdefault(rule, []).append({k.strip(): v for k, v in pairs})
    return found


def test_dry_run_through_the_profile_keeps_the_site_partition_and_account(tmp_path, monkeypatch):
    """profiles/default (picked up automatically) must not replace the site's default-resources."""
    monkeypatch.chdir(REPO)
    raw = load("config.yaml", use_gpus=True)
    generate(tmp_path, raw, "--status-command", "squeue")
    command = [sys.executable, "-m", "snakemake", "-n", "--profile", str(tmp_path / "slurm")]
    command += ["--configfile", str(tmp_path / "run.yaml"), "--directory", str(REPO)]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=False)
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-3000:]
    assert "workflow specific profile profiles/default" in log
    jobs = resources_by_rule(log)
    gpu_rules = scheduling.gpu_rules(validate_config(raw, check_files=False))
    for rule, each in jobs.items():
        for res in each:
            if rule in gpu_rules:
                assert (res["slurm_partition"], res["gpu"], res["gpu_model"]) == ("gpu", "1", "a100"), rule
            else:
                assert res["slurm_partition"] == "cpu" and res.get("gpu", "0") == "0", rule
            assert res["slurm_account"] == "lab", rule
    # The rules' sizes at attempt 1: the config's (t2v: 4000 MB, 60 min) and the profile's for the rest.
    assert (jobs["generate_videos"][0]["mem_mb"], jobs["generate_videos"][0]["runtime"]) == ("4000", "60")
    assert (jobs["curate"][0]["mem_mb"], jobs["curate"][0]["runtime"]) == ("2000", "30")
    assert set(jobs) >= set(gpu_rules)
