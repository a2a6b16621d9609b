"""`vpo status`: where a run stands, per stage, while it runs on Slurm (or locally) or after it stopped.

Reads only what is there, and says which source was missing:

- the DAG (Snakemake's own, built as `snakemake --summary` builds it, without running or locking
  anything): every job of the run, and whether its outputs are up to date (done);
- `.snakemake/locks` and `.snakemake/incomplete`: jobs Snakemake has started and not yet seen finish
  (running while a Snakemake process holds the lock; interrupted when none does);
- `squeue --me`, where it exists: queued vs running (the Slurm executor sets `--comment` to
  `rule_<rule>_wildcards_<values>` and the job name to the run id that the main log names);
- the newest main log in `.snakemake/log/` ("Error in rule ...") and the per-job Slurm logs in
  `.snakemake/slurm_logs/`: jobs whose last attempt failed;
- the job reports (`*.report.json`) of finished jobs: items, LLM requests answered from the cache vs
  asked anew, and items without a usable answer (unparsed, failed, refused ...);
- the cost ledger (`<cache>/ledger`) against `budget_usd`, beside the `vpo estimate` figures;
- the benchmark files of finished jobs: mean duration per stage, for a rough time to finish.

Give it the same `--configfile` and `--config` as the run: the DAG (and whether a job is done) depends
on them, e.g. `--config use_gpus=true` changes the jobs' params.

This module assembles the status and runs the command; `status_jobs` reads where each job stands,
`status_figures` adds up the figures per stage and the spend, `status_text` writes the text.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from vpo.config.validate import ConfigError, validate_config
from vpo.core.layout import CACHE_DIR
from vpo.tools.status_figures import add_eta, spending, stage_table
from vpo.tools.status_jobs import (
    STATES,
    DagJob,
    StatusError,
    assign_states,
    dag_jobs,
    incomplete_outputs,
    latest_main_log,
    lock_held,
    read_main_log,
    squeue_jobs,
)
from vpo.tools.status_text import format_status


def merged_config(
    root: Path, snakefile: str, configfiles: Sequence[str], overrides: Mapping[str, Any]
) -> dict[str, Any]:
    """The config as Snakemake merges it without building the DAG: the Snakefile's `configfile:`,
    then each --configfile, then --config."""
    import yaml
    from snakemake.utils import update_config

    if not (root / snakefile).is_file():
        raise ConfigError(f"no {snakefile} in {root}")
    text = (root / snakefile).read_text(encoding="utf-8")
    default = re.search(r'^configfile:\s*["\'](.+?)["\']', text, re.MULTILINE)
    config: dict[str, Any] = {}
    for path in [*([default.group(1)] if default else []), *configfiles]:
        try:
            update_config(config, yaml.safe_load((root / path).read_text(encoding="utf-8")) or {})
        except FileNotFoundError:
            raise ConfigError(f"config file {path} not found") from None
    update_config(config, dict(overrides))
    return config


def collect(
    root: Path,
    snakefile: str = "Snakefile",
    configfiles: Sequence[str] = ("config/config.yaml",),
    overrides: Mapping[str, Any] | None = None,
    cache_dir: str = CACHE_DIR,
    use_dag: bool = True,
    jobs_from: Callable[..., tuple[list[DagJob], dict[str, Any]]] = dag_jobs,
) -> dict[str, Any]:
    """Everything `vpo status` shows, as plain data (what --json prints). `jobs_from` builds the DAG
    (tests give a fake one)."""
    overrides = overrides or {}
    sources: dict[str, Any] = {}
    notes: list[str] = []
    jobs: list[DagJob] = []
    config: dict[str, Any] | None = None
    incomplete = incomplete_outputs(root)
    locked = lock_held(root)
    sources["snakemake"] = (
        "running (a Snakemake process holds the lock)" if locked else "no Snakemake process holds a lock"
    )
    sources["incomplete_markers"] = len(incomplete)
    log_path = latest_main_log(root)
    main_log = read_main_log(log_path) if log_path else None
    sources["main_log"] = str(log_path.relative_to(root)) if log_path else "none (.snakemake/log is empty)"
    if main_log and main_log.run_id:
        sources["slurm_run_id"] = main_log.run_id
    if use_dag:
        started = time.time()
        try:
            jobs, raw = jobs_from(root, snakefile, configfiles, overrides)
        except Exception as exc:  # any Snakefile or config error: the other sources still inform
            first_line = (str(exc).strip().splitlines() or [""])[0]
            sources["dag"] = f"not built: {type(exc).__name__}: {first_line}"
        else:
            sources["dag"] = f"{len(jobs)} jobs ({time.time() - started:.1f} s to build)"
            config = raw
    else:
        sources["dag"] = "not built (--no-dag): no job counts"
    try:
        raw_config = config if config is not None else merged_config(root, snakefile, configfiles, overrides)
        config = validate_config(raw_config, source=", ".join(configfiles), check_files=False)
    except ConfigError as exc:
        config = None
        sources["config"] = f"not valid: {str(exc).splitlines()[0]}"
    try:
        slurm = squeue_jobs()
    except (StatusError, OSError, subprocess.TimeoutExpired) as exc:
        slurm = None
        sources["squeue"] = f"failed: {exc}"
    else:
        sources["squeue"] = "not on PATH (no Slurm here)" if slurm is None else f"{len(slurm)} jobs of yours"
    slurm_logs = root / ".snakemake" / "slurm_logs"
    sources["slurm_logs"] = (
        f"{sum(1 for _ in slurm_logs.rglob('*.log'))} log files" if slurm_logs.is_dir() else "none"
    )
    notes.extend(assign_states(jobs, root, incomplete, locked, main_log, slurm))
    stages = stage_table(jobs, root)
    eta = add_eta(stages)
    spend = spending(root, cache_dir, config)
    totals = {state: sum(getattr(s, state) for s in stages) for state in STATES}
    totals["jobs"] = len(jobs)
    return {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "configfiles": list(configfiles),
        "config_overrides": dict(overrides),
        "sources": sources,
        "stages": [asdict(s) for s in stages],
        "totals": totals,
        "failed_jobs": [
            {
                "stage": j.stage,
                "wildcards": j.wildcards,
                "log": j.logs,
                "slurm_log": j.slurm_log,
            }
            for j in jobs
            if j.state == "failed"
        ],
        "spending": {k: v for k, v in spend.items() if k != "entries"},
        "ledger_entries": spend["entries"],
        "eta": eta,
        "notes": notes,
    }


def parse_overrides(entries: Iterable[str]) -> dict[str, Any]:
    from snakemake.cli import parse_config

    try:
        return parse_config(list(entries))
    except ValueError as exc:
        raise SystemExit(f"--config: {exc}") from None


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="vpo status",
        description=__doc__.split("\n\n")[0],
        epilog="Job states: done (outputs up to date), running (on a node or submitted and not seen to "
        "finish), queued (pending in Slurm), failed (last attempt ended with an error, or interrupted), "
        "to do (not started). Run it in the project folder, while or after a run.",
    )
    p.add_argument(
        "--configfile", nargs="+", default=["config/config.yaml"], help="the run's --configfile (YAML)"
    )
    p.add_argument("--config", nargs="*", default=[], metavar="KEY=VALUE", help="the run's --config entries")
    p.add_argument("--snakefile", default="Snakefile")
    p.add_argument("--directory", default=".", help="project folder (where the run's .snakemake is)")
    p.add_argument(
        "--cache-dir", default=CACHE_DIR, help="item cache root; the ledger is in state/ beside it"
    )
    p.add_argument("--no-dag", action="store_true", help="skip building the DAG (seconds): no job counts")
    p.add_argument("--json", action="store_true", help="print the status as JSON")
    p.add_argument("--watch", type=float, default=None, metavar="SECONDS", help="refresh every SECONDS")
    return p


def main(argv: list[str] | None = None) -> None:
    args = make_parser().parse_args(argv)
    if args.watch is not None and args.watch <= 0:
        raise SystemExit(f"--watch must be a positive number of seconds, got {args.watch}")
    root = Path(args.directory)
    if not (root / args.snakefile).is_file():
        raise SystemExit(
            f"no {args.snakefile} in {root.resolve()}: run it in the project folder or give --directory"
        )
    overrides = parse_overrides(args.config)
    while True:
        status = collect(root, args.snakefile, args.configfile, overrides, args.cache_dir, not args.no_dag)
        text = json.dumps(status, indent=1, default=str) + "\n" if args.json else format_status(status)
        if args.watch is not None and not args.json and sys.stdout.isatty():
            sys.stdout.write("\033[2J\033[H")  # clear the terminal between refreshes
        sys.stdout.write(text)
        sys.stdout.flush()
        if args.watch is None:
            return
        time.sleep(args.watch)


if __name__ == "__main__":
    main()
