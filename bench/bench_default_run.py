"""Benchmark: the embedded default run, end to end, this checkout against an earlier commit of the project.

Both are run here, one after the other, in fresh copies (`git archive` of the baseline ref; this working
tree for ours), with the same venv and `snakemake --cores 2`, nothing built and no results beforehand.
Printed per rule: jobs, wall seconds summed over its jobs and CPU seconds (both from Snakemake's
benchmark files), then the run's wall time and a no-op re-run (`snakemake --cores 2` again: the time to
find there is nothing to do). Ratio = baseline / ours, so > 1 means faster. Run from the repository root
on an otherwise idle machine (another process on the 2 cores skews both runs):

    .venv/bin/python bench/bench_default_run.py [--baseline-ref ff8141e] [--keep DIR]
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # tests.workflow_run: the project copy the whole-DAG tests make

from tests.workflow_run import copy_project  # noqa: E402

# What a default run needs of the project (the baseline's archive is cut down to the same).
PROJECT = ("Snakefile", "config", "envs", "profiles", "workflow", "resources")


@dataclass
class Run:
    name: str
    wall_s: float
    noop_s: float
    rules: dict[str, tuple[int, float, float]]  # rule folder -> (jobs, wall s, cpu s)


def baseline_copy(ref: str, root: Path) -> None:
    """The project at `ref`, without built models or results."""
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", "--format=tar", ref, *PROJECT],
        capture_output=True,
        check=True,
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(root, filter="data")
    shutil.rmtree(root / "resources" / "models", ignore_errors=True)


def snakemake(root: Path) -> float:
    """Seconds of `snakemake --cores 2` in `root` (the venv's tools first on PATH); fails loudly."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "snakemake", "--cores", "2"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    seconds = time.perf_counter() - start
    (root / "bench-run.log").write_text(done.stdout + done.stderr)
    if done.returncode != 0:
        raise SystemExit(f"snakemake failed in {root} (see bench-run.log):\n{done.stderr[-3000:]}")
    return seconds


def rule_table(root: Path) -> dict[str, tuple[int, float, float]]:
    """Per benchmark folder (results/benchmarks/<rule>/… or <rule>.tsv): jobs, wall s, CPU s."""
    jobs: dict[str, int] = defaultdict(int)
    wall: dict[str, float] = defaultdict(float)
    cpu: dict[str, float] = defaultdict(float)
    base = root / "results" / "benchmarks"
    for path in sorted(base.rglob("*.tsv")):
        parts = path.relative_to(base).parts
        name = parts[0].removesuffix(".tsv")
        if name == "eval" and len(parts) > 2:  # eval/<method>/<stage>…: by stage, over methods
            name = f"eval {parts[2].removesuffix('.tsv')}"
        with path.open(newline="") as handle:
            row = list(csv.DictReader(handle, delimiter="\t"))[-1]
        jobs[name] += 1
        wall[name] += float(row["s"])
        cpu[name] += float(row["cpu_time"]) if row.get("cpu_time") not in (None, "", "NA") else 0.0
    return {name: (jobs[name], wall[name], cpu[name]) for name in jobs}


def measure(name: str, root: Path) -> Run:
    print(f"{name}: running the default in {root} …", file=sys.stderr, flush=True)
    wall = snakemake(root)
    noop = snakemake(root)
    return Run(name, wall, noop, rule_table(root))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--baseline-ref", default="ff8141e", help="git ref of the baseline (default: before issue 17)"
    )
    parser.add_argument("--keep", type=Path, default=None, help="run in this folder and keep both copies")
    args = parser.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="vpo-bench-default-"))
    (work / "baseline").mkdir(parents=True)
    (work / "ours").mkdir(parents=True)
    baseline_copy(args.baseline_ref, work / "baseline")
    copy_project(work / "ours")
    runs = [measure(f"baseline ({args.baseline_ref})", work / "baseline"), measure("ours", work / "ours")]
    base, ours = runs

    print(f"Default run, snakemake --cores 2, {os.cpu_count()} CPUs; per rule from results/benchmarks")
    print("| rule | jobs | baseline wall s | ours wall s | baseline CPU s | ours CPU s |")
    print("| --- | --- | --- | --- | --- | --- |")
    for rule in sorted(set(base.rules) | set(ours.rules), key=lambda r: -base.rules.get(r, (0, 0, 0))[1]):
        b, o = base.rules.get(rule, (0, 0.0, 0.0)), ours.rules.get(rule, (0, 0.0, 0.0))
        print(f"| {rule} | {b[0]} / {o[0]} | {b[1]:.1f} | {o[1]:.1f} | {b[2]:.1f} | {o[2]:.1f} |")
    print("| metric | baseline | ours | ratio |")
    print("| --- | --- | --- | --- |")
    for label, b_value, o_value in (
        ("whole run, wall s", base.wall_s, ours.wall_s),
        (
            "job wall s, summed",
            sum(v[1] for v in base.rules.values()),
            sum(v[1] for v in ours.rules.values()),
        ),
        ("job CPU s, summed", sum(v[2] for v in base.rules.values()), sum(v[2] for v in ours.rules.values())),
        ("no-op re-run, wall s", base.noop_s, ours.noop_s),
    ):
        print(f"| {label} | {b_value:.1f} | {o_value:.1f} | {b_value / o_value:.2f} |")
    if args.keep is None:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
