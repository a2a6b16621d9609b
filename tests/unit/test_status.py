"""`vpo status` on a fake run tree (reports, ledger, benchmarks, Slurm logs, a fake squeue), and on a
real, partly finished run of the default config in a temporary project copy."""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path

import pytest
import yaml

from tests.workflow_run import copy_project, jobs_by_rule, run_snakemake
from vpo.tools.status import collect
from vpo.tools.status_jobs import incomplete_outputs, make_job
from vpo.tools.status_text import format_status

REPO = Path(__file__).resolve().parents[2]
RUN_ID = "0f1e2d3c-run"


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def critique_job(k: int, needrun: bool = True):
    return make_job(
        "critique",
        {"phase": "sft", "k": str(k)},
        [f"results/sft/critiques/shard-{k}.parquet", f"results/sft/critiques/shard-{k}.report.json"],
        [f"results/logs/critique/sft/shard-{k}.log"],
        f"results/benchmarks/critique/sft/shard-{k}.tsv",
        needrun,
    )


def refine_job(k: int):
    return make_job(
        "refine",
        {"phase": "sft", "k": str(k)},
        [f"results/sft/refinements/shard-{k}.parquet", f"results/sft/refinements/shard-{k}.report.json"],
        [f"results/logs/refine/sft/shard-{k}.log"],
        f"results/benchmarks/refine/sft/shard-{k}.tsv",
    )


def train_job():
    return make_job(
        "train_sft",
        {},
        ["results/models/sft", "results/models/sft.report.json"],
        [],
        "results/benchmarks/train_sft.tsv",
    )


def report(path: Path, requests: int, hits: int, by_status: dict[str, int]) -> None:
    data = {
        "stage": "critique",
        "counts": {"items": sum(by_status.values()), "by_status": by_status, "retried": 0},
        "llm": {"requests": requests, "cache_hits": hits, "cache_misses": requests - hits, "failed": 0},
        "provenance": {"started": "2025-01-01T00:00:00+0000", "wall_s": 1.0},
    }
    write(path, json.dumps(data))


def benchmark(path: Path, seconds: float) -> None:
    write(path, f"s\th:m:s\tmax_rss\n{seconds}\t0:00:00\t100\n")


def mark_incomplete(root: Path, output: str, slurm_id: str | None) -> None:
    name = base64.urlsafe_b64encode(output.encode()).decode()
    write(root / ".snakemake" / "incomplete" / name, json.dumps({"external_jobid": slurm_id}))


def fake_squeue(bin_dir: Path, lines: list[str]) -> None:
    """A `squeue` that prints fixed lines in the `%i|%j|%T|%k` format status asks for."""
    script = write(bin_dir / "squeue", "#!/bin/sh\ncat <<'EOF'\n" + "\n".join(lines) + "\nEOF\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)


@pytest.fixture
def config() -> dict:
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text(encoding="utf-8"))
    config["budget_usd"] = 10.0
    return config


@pytest.fixture
def fake_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, config: dict):
    """A run in flight: critique k=0,1 done; k=2 running (squeue), k=4 running (marker + lock);
    k=3 failed (main log); refine k=0 queued (squeue), k=1 killed by Slurm (its log); train_sft to do."""
    root = tmp_path / "project"
    jobs = [critique_job(0, needrun=False), critique_job(1, needrun=False), *map(critique_job, (2, 3, 4))]
    jobs += [refine_job(0), refine_job(1), train_job()]
    report(root / "results/sft/critiques/shard-0.report.json", 10, 4, {"ok": 8, "unparsed": 2})
    report(root / "results/sft/critiques/shard-1.report.json", 10, 10, {"ok": 9, "failed": 1})
    benchmark(root / "results/benchmarks/critique/sft/shard-0.tsv", 100.0)
    benchmark(root / "results/benchmarks/critique/sft/shard-1.tsv", 200.0)
    write(root / ".snakemake/locks/0.output.lock", "results/sft/critiques/shard-4.parquet\n")
    mark_incomplete(root, "results/sft/critiques/shard-4.parquet", "105")
    write(
        root / ".snakemake/log/2025-01-01T000000.000000.snakemake.log",
        f"SLURM run ID: {RUN_ID}\nError in rule critique:\n    jobid: 7\n"
        "    output: results/sft/critiques/shard-3.parquet, results/sft/critiques/shard-3.report.json\n"
        "    log: results/logs/critique/sft/shard-3.log (check log file(s) for error details)\n"
        "Trying to restart job 7.\n",
    )
    write(root / ".snakemake/slurm_logs/rule_refine/sft_1/101.log", "starting\n")
    write(
        root / ".snakemake/slurm_logs/rule_refine/sft_1/102.log",
        "slurmstepd: error: *** JOB 102 ON node1 CANCELLED AT 2025-01-01T01:00:00 DUE TO TIME LIMIT ***\n",
    )
    os.utime(root / ".snakemake/slurm_logs/rule_refine/sft_1/101.log", (1, 1))  # the older attempt
    ledger = root / "results/state/ledger"
    for name, stage, usd in (("critique-a", "critique", 0.5), ("refine-b", "refine", 0.25)):
        entry = {"stage": stage, "model": "gpt-4o", "mode": "online", "prompt_tokens": 10,
                 "completion_tokens": 5, "cost_usd": usd}  # fmt: skip
        write(ledger / f"{name}.jsonl", json.dumps(entry) + "\n")
    bin_dir = tmp_path / "bin"
    fake_squeue(
        bin_dir,
        [
            f"103|{RUN_ID}|RUNNING|rule_critique_wildcards_sft_2",
            f"104|{RUN_ID}|PENDING|rule_refine_wildcards_sft_0",
            "99|another-run|RUNNING|rule_train_sft",  # another run's job: not this run's train_sft
        ],
    )
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return collect(root, jobs_from=lambda *args: (jobs, config))


def test_job_states_per_stage(fake_run):
    stages = {s["stage"]: s for s in fake_run["stages"]}
    assert list(stages) == ["critique (sft)", "refine (sft)", "train_sft"]
    critique, refine, train = stages["critique (sft)"], stages["refine (sft)"], stages["train_sft"]
    assert (critique["jobs"], critique["done"], critique["running"], critique["failed"]) == (5, 2, 2, 1)
    assert (refine["queued"], refine["failed"], refine["todo"]) == (1, 1, 0)
    assert (train["todo"], train["running"]) == (1, 0)
    assert fake_run["totals"] == {"done": 2, "running": 2, "queued": 1, "failed": 2, "todo": 1, "jobs": 8}
    failed = {(f["stage"], f["wildcards"]["k"]): f for f in fake_run["failed_jobs"]}
    assert set(failed) == {("critique (sft)", "3"), ("refine (sft)", "1")}
    assert failed[("refine (sft)", "1")]["slurm_log"] == ".snakemake/slurm_logs/rule_refine/sft_1/102.log"
    assert fake_run["sources"]["slurm_run_id"] == RUN_ID
    assert fake_run["sources"]["squeue"] == "3 jobs of yours"


def test_items_cache_and_problems_from_finished_jobs(fake_run):
    critique = next(s for s in fake_run["stages"] if s["stage"] == "critique (sft)")
    assert critique["items"] == 20
    assert (critique["llm_requests"], critique["llm_cached"], critique["llm_new"]) == (20, 14, 6)
    assert critique["problems"] == {"unparsed": 2, "failed": 1}


def test_spend_and_eta(fake_run):
    spend = fake_run["spending"]
    assert spend["spent_usd"] == pytest.approx(0.75)
    assert spend["budget_usd"] == 10.0
    assert spend["by_stage"]["critique"] == {"answers": 1, "cost_usd": 0.5}
    critique = next(s for s in fake_run["stages"] if s["stage"] == "critique (sft)")
    # mean 150 s × (3 jobs left − 2 running assumed half done) / 2 running at once
    assert critique["mean_job_s"] == pytest.approx(150.0)
    assert critique["eta_s"] == pytest.approx(150.0)
    assert fake_run["eta"]["eta_s"] == pytest.approx(150.0)
    assert fake_run["eta"]["untimed_stages"] == ["refine (sft)", "train_sft"]
    text = format_status(fake_run)
    assert "0.7500 USD of budget_usd 10.00 (7.5%)" in text
    assert "critique (sft) phase=sft k=3: log results/logs/critique/sft/shard-3.log" in text


def test_marker_without_lock_is_an_interrupted_job(tmp_path, config):
    mark_incomplete(tmp_path, "results/sft/critiques/shard-0.parquet", None)
    status = collect(tmp_path, jobs_from=lambda *args: ([critique_job(0, needrun=False)], config))
    assert status["totals"]["failed"] == 1
    assert "no longer holds its lock" in status["notes"][0]


def test_long_marker_names_are_split_in_folders(tmp_path):
    """Snakemake splits a long base64 name into `@`-prefixed folders; the path is read back whole."""
    output = "results/" + "x" * 300 + ".parquet"
    name = base64.urlsafe_b64encode(output.encode()).decode()
    write(tmp_path / ".snakemake/incomplete" / ("@" + name[:254]) / name[254:], "{}")
    assert incomplete_outputs(tmp_path) == {output: None}


def test_without_any_run(tmp_path, config):
    """Nothing there yet (and no DAG): every source says so, nothing fails; the budget comes from the
    config as Snakemake merges it (the Snakefile's configfile, then --configfile, then --config)."""
    write(tmp_path / "Snakefile", 'configfile: "config/config.yaml"\n')
    write(tmp_path / "config/config.yaml", yaml.safe_dump(config))
    write(tmp_path / "run.yaml", "budget_usd: 20\n")
    status = collect(tmp_path, configfiles=["run.yaml"], overrides={"budget_usd": 30.0}, use_dag=False)
    assert status["totals"]["jobs"] == 0
    assert status["sources"]["main_log"].startswith("none")
    assert status["spending"]["ledger"] is None
    assert status["spending"]["budget_usd"] == 30.0
    assert "the DAG was not built" in format_status(status)


@pytest.mark.slow
def test_partly_finished_real_run(tmp_path):
    """The default config, with only curation run: the DAG's job count matches `snakemake -n`, the
    curate jobs are done and counted from their reports, everything else is to do."""
    copy_project(tmp_path)
    dry = run_snakemake(tmp_path, "-n", "--quiet", "rules")
    assert dry.returncode == 0, dry.stderr
    expected = jobs_by_rule(dry.stdout + dry.stderr)
    run = run_snakemake(tmp_path, "results/queries/sft.report.json", "results/queries/dpo.report.json")
    assert run.returncode == 0, run.stderr
    status = collect(tmp_path)
    assert status["totals"]["jobs"] == sum(expected.values()) - expected["all"]
    assert status["totals"]["done"] == 2
    reports = [
        json.loads((tmp_path / f"results/queries/{s}.report.json").read_text()) for s in ("sft", "dpo")
    ]
    kept = sum(r["counts"]["kept"] for r in reports)
    curate = [s for s in status["stages"] if s["stage"].startswith("curate")]
    assert sum(s["items"] for s in curate) == kept
    assert all(s["timed_jobs"] == 1 for s in curate)
    assert status["sources"]["main_log"].startswith(".snakemake/log/")
