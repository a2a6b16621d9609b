"""Time and memory per rule (run report): benchmark files matched to rules, each job's own peak, budgets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vpo.core.provenance import JobReport
from vpo.pages.resources import fill, pattern_regex, rule_usage

HEADER = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
RULES = {
    "critique": {
        "benchmark": "results/benchmarks/critique/{phase,sft|dpo}/shard-{k}.tsv",
        "report": "results/{phase,sft|dpo}/critiques/shard-{k}.report.json",
        "mem_mb": 4000,
    },
    "train_dpo": {
        "benchmark": "results/benchmarks/train_dpo.tsv",
        "report": "results/models/dpo.report.json",
        "mem_mb": 1000,
    },
    "shard_sft": {"benchmark": "results/benchmarks/shard/sft.tsv", "report": None, "mem_mb": None},
    "never_ran": {"benchmark": "results/benchmarks/never/{k}.tsv", "report": None, "mem_mb": 100},
}


def benchmark(root: Path, path: str, seconds: float, rss: str) -> None:
    target = root / path
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(HEADER + f"{seconds}\t0:00:01\t{rss}\t1\t1\t1\t0\t0\t50\t1\n")


def job_report(root: Path, path: str, own: float, children: float) -> None:
    target = root / path
    target.parent.mkdir(parents=True, exist_ok=True)
    data = {
        "stage": "x",
        "counts": {},
        "provenance": {"memory": {"peak_rss_mb": own, "children_peak_rss_mb": children}},
    }
    target.write_text(json.dumps(data))


def test_pattern_regex_takes_wildcards_with_constraints_and_fill_puts_them_back():
    match = pattern_regex(RULES["critique"]["benchmark"]).fullmatch(
        "results/benchmarks/critique/dpo/shard-3.tsv"
    )
    assert match is not None and match.groupdict() == {"phase": "dpo", "k": "3"}
    assert (
        pattern_regex(RULES["critique"]["benchmark"]).fullmatch(
            "results/benchmarks/critique/dpo/x/shard-3.tsv"
        )
        is None
    )
    assert fill(RULES["critique"]["report"], match.groupdict()) == "results/dpo/critiques/shard-3.report.json"


def test_rows_per_rule_with_the_larger_of_sampled_and_own_peak(tmp_path):
    benchmark(tmp_path, "results/benchmarks/critique/sft/shard-0.tsv", 40.0, "1500.0")
    benchmark(tmp_path, "results/benchmarks/critique/dpo/shard-0.tsv", 60.5, "1200.0")
    job_report(tmp_path, "results/dpo/critiques/shard-0.report.json", 1900.0, 0.0)  # the sample missed it
    benchmark(tmp_path, "results/benchmarks/train_dpo.tsv", 68.0, "900.0")
    job_report(tmp_path, "results/models/dpo.report.json", 50.0, 1300.0)  # the trainer runs as a child
    benchmark(tmp_path, "results/benchmarks/shard/sft.tsv", 0.4, "NA")  # too short to be sampled
    rows = {row.rule: row for row in rule_usage(RULES, tmp_path)}
    assert list(rows) == ["critique", "train_dpo", "shard_sft"]  # rules' order; never_ran has no row
    critique = rows["critique"]
    assert (critique.jobs, critique.wall_s_total, critique.wall_s_max) == (2, 100.5, 60.5)
    assert critique.peak_rss_mb == 1900.0 and critique.share == pytest.approx(0.475) and not critique.over
    assert rows["train_dpo"].peak_rss_mb == 1300.0 and rows["train_dpo"].over  # 1300 MB of 1000 asked
    assert rows["shard_sft"].peak_rss_mb is None and rows["shard_sft"].share is None


def test_every_job_report_records_its_peak_memory(tmp_path):
    report = JobReport("curate")
    report.write(tmp_path / "r.json")
    memory = json.loads((tmp_path / "r.json").read_text())["provenance"]["memory"]
    assert memory["peak_rss_mb"] > 10  # this Python process
    assert memory["children_peak_rss_mb"] >= 0
