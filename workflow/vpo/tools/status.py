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
"""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from vpo.config.validate import ConfigError, validate_config
from vpo.core.layout import ledger_dir
from vpo.llm.ledger import read_ledger
from vpo.pages.jobs import STAGE_ORDER, job_label, load_jobs
from vpo.pages.stats import GOOD_STATUS, PROBLEM_KEYS, merge_counts
from vpo.tools.estimate import estimate, format_spending

# Slurm job states (squeue %T) that mean "waiting for a node" vs "on a node".
QUEUED_STATES = {"PENDING", "CONFIGURING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESIZING"}
RUNNING_STATES = {"RUNNING", "COMPLETING", "STAGE_OUT", "SIGNALING"}
# Lines of a failed job's Slurm log (the job step's Snakemake, or Slurm killing the job).
_SLURM_FAILURE = re.compile(r"Error in rule |slurmstepd: error: \*\*\*")
STATES = ("done", "running", "queued", "failed", "todo")


class StatusError(RuntimeError):
    pass


# ------------------------------------------------------------------------------------------ jobs


@dataclass
class DagJob:
    """One job of the run as the DAG sees it; `state` is filled in from the other sources."""

    rule: str
    stage: str  # rule, with the phase or set for rules that run once per phase (as in the run report)
    wildcards: dict[str, str]
    outputs: list[str]
    logs: list[str]
    benchmark: str | None
    needrun: bool
    state: str = "todo"
    slurm_log: str | None = None
    slurm_job_id: str | None = None

    @property
    def slurm_comment(self) -> str:
        """The `--comment` snakemake-executor-plugin-slurm gives the job's sbatch (run_job)."""
        values = "_".join(self.wildcards.values()).replace("/", "_")
        return f"rule_{self.rule}_wildcards_{values}" if values else f"rule_{self.rule}"

    @property
    def slurm_log_dir(self) -> str:
        """Where the plugin writes the job's Slurm logs, relative to `.snakemake/slurm_logs`."""
        values = "_".join(self.wildcards.values()).replace("/", "_")
        return f"rule_{self.rule}/{values}" if values else f"rule_{self.rule}"

    @property
    def wildcard_text(self) -> str:
        return " ".join(f"{k}={v}" for k, v in self.wildcards.items())


def make_job(
    rule: str,
    wildcards: Mapping[str, str],
    outputs: Sequence[str],
    logs: Sequence[str] = (),
    benchmark: str | None = None,
    needrun: bool = True,
) -> DagJob:
    stage = job_label(outputs[0], rule)[0] if outputs else rule
    return DagJob(rule, stage, dict(wildcards), list(outputs), list(logs), benchmark, needrun)


def dag_jobs(
    root: Path, snakefile: str, configfiles: Sequence[str], overrides: Mapping[str, Any]
) -> tuple[list[DagJob], dict[str, Any]]:
    """Every job of the default target and the config the workflow saw, from Snakemake's DAG.

    Built as `snakemake --summary` builds it (incomplete outputs and a held lock are tolerated), through
    the API of the pinned Snakemake (9.27): the public API has no call that returns the jobs."""
    from snakemake.api import SnakemakeApi
    from snakemake.settings.types import (
        ConfigSettings,
        DAGSettings,
        OutputSettings,
        Quietness,
        ResourceSettings,
        StorageSettings,
        WorkflowSettings,
    )

    cwd = os.getcwd()  # the workflow changes into its workdir
    try:
        # No log file: it would become the newest main log, which tells the run's failures.
        output = OutputSettings(quiet={Quietness.ALL}, enable_file_logging=False)
        with SnakemakeApi(output) as api:
            workflow_api = api.workflow(
                resource_settings=ResourceSettings(cores=1),
                config_settings=ConfigSettings(
                    configfiles=[(root / f).resolve() for f in configfiles], config=dict(overrides)
                ),
                storage_settings=StorageSettings(),
                workflow_settings=WorkflowSettings(),
                snakefile=(root / snakefile).resolve(),
                workdir=root.resolve(),
            )
            workflow_api.dag(DAGSettings())
            workflow = workflow_api._workflow
            workflow._prepare_dag(forceall=False, ignore_incomplete=True, lock_warn_only=True)
            workflow._build_dag()
            dag = workflow.dag
            jobs = []
            # Upstream first (Snakemake's toposort levels), so stages list in pipeline order.
            ordered = [job for level in dag.toposorted() for job in sorted(level, key=str)]
            for job in ordered:
                if not job.output:  # the `all` target has no outputs of its own
                    continue
                benchmark = str(job.benchmark) if job.benchmark else None
                outputs = [str(f) for f in job.output]
                logs = [str(f) for f in job.log]
                jobs.append(
                    make_job(
                        job.rule.name, dict(job.wildcards), outputs, logs, benchmark, bool(dag.needrun(job))
                    )
                )
            config = dict(workflow.config)
    finally:
        os.chdir(cwd)
    return jobs, config


def incomplete_outputs(root: Path) -> dict[str, str | None]:
    """Outputs Snakemake marked as being written (file persistence: one file per output, named by the
    urlsafe base64 of the path, split into folders of `@`-prefixed parts when long) → Slurm job id."""
    folder = root / ".snakemake" / "incomplete"
    marks: dict[str, str | None] = {}
    if not folder.is_dir():
        return marks
    for dirpath, _, filenames in os.walk(folder):
        for name in filenames:
            if name == "migration_underway":
                continue
            parts = [*Path(dirpath).relative_to(folder).parts, name]
            try:
                path = base64.urlsafe_b64decode("".join(p.removeprefix("@") for p in parts)).decode()
            except (binascii.Error, UnicodeDecodeError):
                continue  # not a marker (a file someone put there)
            try:
                record = json.loads((Path(dirpath) / name).read_text(encoding="utf-8") or "{}")
            except json.JSONDecodeError:
                record = {}
            marks[path] = record.get("external_jobid") if isinstance(record, dict) else None
    return marks


def lock_held(root: Path) -> bool:
    folder = root / ".snakemake" / "locks"
    return folder.is_dir() and any(folder.glob("*.lock"))


def latest_main_log(root: Path) -> Path | None:
    logs = sorted((root / ".snakemake" / "log").glob("*.snakemake.log"), key=lambda p: p.stat().st_mtime)
    return logs[-1] if logs else None


@dataclass
class MainLog:
    path: str
    run_id: str | None  # the Slurm run id (the sbatch --job-name of every job of this run)
    failed_outputs: set[str]  # outputs of jobs with an "Error in rule" block


def read_main_log(path: Path) -> MainLog:
    text = path.read_text(encoding="utf-8", errors="replace")
    run_id = re.search(r"SLURM run ID: (\S+)", text)
    failed: set[str] = set()
    in_error = False
    for line in text.splitlines():
        if line.startswith("Error in rule "):
            in_error = True
        elif in_error and line.startswith("    output: "):
            failed.update(p.strip() for p in line.removeprefix("    output: ").split(","))
        elif in_error and line and not line.startswith(" "):
            in_error = False
    return MainLog(str(path), run_id.group(1) if run_id else None, failed)


@dataclass
class SlurmJob:
    job_id: str
    name: str
    state: str
    comment: str


def squeue_jobs() -> list[SlurmJob] | None:
    """The user's Slurm jobs (`squeue --me`); None when there is no squeue on PATH."""
    if shutil.which("squeue") is None:
        return None
    result = subprocess.run(
        ["squeue", "--me", "--noheader", "--format=%i|%j|%T|%k"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or [""])[-1]
        raise StatusError(f"squeue --me failed (exit {result.returncode}): {last}")
    jobs = []
    for line in result.stdout.splitlines():
        fields = line.strip().split("|", 3)
        if len(fields) == 4:
            jobs.append(SlurmJob(*fields))
    return jobs


def newest_slurm_log(root: Path, job: DagJob) -> Path | None:
    folder = root / ".snakemake" / "slurm_logs" / job.slurm_log_dir
    logs = [p for p in folder.glob("*.log") if p.is_file()] if folder.is_dir() else []
    return max(logs, key=lambda p: (p.stat().st_mtime, p.name)) if logs else None


def _last_attempt_failed(job: DagJob, main_log: MainLog | None, slurm_log: Path | None) -> bool:
    if main_log and main_log.failed_outputs.intersection(job.outputs):
        return True
    return bool(slurm_log and _SLURM_FAILURE.search(slurm_log.read_text(encoding="utf-8", errors="replace")))


def assign_states(
    jobs: Sequence[DagJob],
    root: Path,
    incomplete: Mapping[str, str | None],
    locked: bool,
    main_log: MainLog | None,
    slurm: Sequence[SlurmJob] | None,
) -> list[str]:
    """Set each job's state; notes for the reader. Order of evidence: Slurm's queue, then Snakemake's
    incomplete markers, then the outputs (done), then the logs (failed); the rest is still to do."""
    notes = []
    by_comment: dict[str, SlurmJob] = {}
    for sj in slurm or []:
        if main_log and main_log.run_id and sj.name != main_log.run_id:
            continue  # another run's (or another workflow's) job
        by_comment[sj.comment] = sj
    interrupted = 0
    for job in jobs:
        log = newest_slurm_log(root, job)
        job.slurm_log = str(log.relative_to(root)) if log else None
        marked = [incomplete[o] for o in job.outputs if o in incomplete]
        queued = by_comment.get(job.slurm_comment)
        if queued and (queued.state in QUEUED_STATES or queued.state in RUNNING_STATES):
            job.state = "queued" if queued.state in QUEUED_STATES else "running"
            job.slurm_job_id = queued.job_id
        elif marked and locked:
            job.state = "running"  # submitted or running: Snakemake has not seen it finish
            job.slurm_job_id = next((m for m in marked if m), None)
        elif marked:
            job.state = "failed"
            interrupted += 1
        elif not job.needrun:
            job.state = "done"
        elif _last_attempt_failed(job, main_log, log):
            job.state = "failed"
        else:
            job.state = "todo"
    if interrupted:
        notes.append(
            f"{interrupted} jobs were started by a Snakemake run that no longer holds its lock: counted as "
            "failed; the next run re-runs them (it may ask for --rerun-incomplete)."
        )
    return notes


# --------------------------------------------------------------------------------------- figures


def benchmark_seconds(path: Path) -> list[float]:
    """Wall seconds of a job from its benchmark file (column `s`, one row per repeat)."""
    if not path.is_file():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    if not lines or not lines[0].startswith("s\t"):
        return []
    seconds = []
    for line in lines[1:]:
        try:
            seconds.append(float(line.split("\t", 1)[0]))
        except ValueError:
            continue  # "NA" and the like
    return seconds


@dataclass
class StageStatus:
    stage: str
    jobs: int = 0
    done: int = 0
    running: int = 0
    queued: int = 0
    failed: int = 0
    todo: int = 0
    items: int | None = None  # items the finished jobs handled (records written)
    llm_requests: int = 0  # requests the finished jobs made, answered from the cache or anew
    llm_cached: int = 0
    llm_new: int = 0
    problems: dict[str, int] = field(default_factory=dict)  # unparsed, failed, refused ... items
    timed_jobs: int = 0
    mean_job_s: float | None = None
    eta_s: float | None = None


def _problems(counts: Mapping[str, Any]) -> dict[str, int]:
    out: dict[str, int] = {}
    for status, n in (counts.get("by_status") or {}).items():
        if status not in GOOD_STATUS and n:
            out[status] = out.get(status, 0) + int(n)
    for key in PROBLEM_KEYS:
        if isinstance(counts.get(key), int | float) and counts[key]:
            out[key] = out.get(key, 0) + int(counts[key])
    return out


def _items(counts: Mapping[str, Any]) -> int | None:
    for key in ("items", "prompts", "videos", "pairs", "examples", "kept"):
        if isinstance(counts.get(key), int):
            return counts[key]
    return None


def stage_table(jobs: Sequence[DagJob], root: Path) -> list[StageStatus]:
    """Job states, report figures and timing per stage, in pipeline order."""
    order = {name: i for i, name in enumerate(STAGE_ORDER)}
    first_seen: dict[str, int] = {}
    stages: dict[str, StageStatus] = {}
    durations: dict[str, list[float]] = {}
    for i, job in enumerate(jobs):
        first_seen.setdefault(job.stage, i)
        row = stages.setdefault(job.stage, StageStatus(job.stage))
        row.jobs += 1
        setattr(row, job.state, getattr(row, job.state) + 1)
        if job.benchmark:
            durations.setdefault(job.stage, []).extend(benchmark_seconds(root / job.benchmark))
    # Only finished jobs: the report of a job that must run again describes an older run.
    report_stage = {
        str(root / o): j.stage
        for j in jobs
        if j.state == "done"
        for o in j.outputs
        if o.endswith("report.json")
    }
    for report in load_jobs(p for p in report_stage if Path(p).is_file()):
        row = stages[report_stage[str(report.record.path)]]
        counts = report.record.data.get("counts") or {}
        items = _items(counts)
        if items is not None:
            row.items = (row.items or 0) + items
        llm = report.record.data.get("llm") or {}
        row.llm_requests += int(llm.get("requests", 0))
        row.llm_cached += int(llm.get("cache_hits", 0))
        row.llm_new += int(llm.get("cache_misses", 0))
        problems = _problems(counts)
        if llm.get("failed"):
            problems["llm_failed"] = problems.get("llm_failed", 0) + int(llm["failed"])
        merge_counts(row.problems, problems)
    for name, row in stages.items():
        seconds = durations.get(name) or []
        row.timed_jobs = len(seconds)
        row.mean_job_s = sum(seconds) / len(seconds) if seconds else None
    return sorted(stages.values(), key=lambda r: (order.get(r.stage, len(order)), first_seen[r.stage]))


def add_eta(stages: Sequence[StageStatus]) -> dict[str, Any]:
    """A rough time to finish: per stage, mean duration of its finished jobs × jobs left, divided by
    the jobs it runs at once now (or, for a stage not running, by the jobs the run runs at once now)."""
    in_flight = sum(s.running for s in stages)
    work_s = 0.0
    untimed = []
    for s in stages:
        left = s.jobs - s.done
        if not left:
            s.eta_s = 0.0
            continue
        if s.mean_job_s is None:
            untimed.append(s.stage)
            continue
        # A running job is assumed half done.
        job_s = s.mean_job_s * (left - s.running / 2)
        s.eta_s = job_s / max(1, s.running or in_flight)
        work_s += job_s
    return {
        "eta_s": work_s / max(1, in_flight) if work_s else (0.0 if not untimed else None),
        "jobs_running_now": in_flight,
        "untimed_stages": untimed,
    }


def spending(root: Path, cache_dir: str, config: Mapping[str, Any] | None) -> dict[str, Any]:
    """The ledger's total and per stage, the budget, and what `vpo estimate` expects the config to cost."""
    ledger = ledger_dir(root / cache_dir)
    entries = read_ledger(ledger) if ledger.is_dir() else []
    per_stage: dict[str, dict[str, float]] = {}
    for e in entries:
        row = per_stage.setdefault(e["stage"], {"answers": 0, "cost_usd": 0.0})
        row["answers"] += 1
        row["cost_usd"] += e["cost_usd"]
    out: dict[str, Any] = {
        "ledger": str(ledger.relative_to(root)) if ledger.is_dir() else None,
        "entries": entries,
        "spent_usd": round(sum(e["cost_usd"] for e in entries), 6),
        "by_stage": per_stage,
        "budget_usd": config.get("budget_usd") if config else None,
        "estimate_usd": None,
    }
    if config:
        cwd = os.getcwd()  # the config's query files and templates are relative to the project
        try:
            os.chdir(root)
            lines = estimate(dict(config))
        except (OSError, KeyError, ValueError) as exc:
            out["estimate_error"] = f"{type(exc).__name__}: {exc}"
        else:
            out["estimate_usd"] = {
                "first_attempts": round(sum(line.cost(False) or 0.0 for line in lines), 4),
                "worst_case": round(sum(line.cost(True) or 0.0 for line in lines), 4),
            }
        finally:
            os.chdir(cwd)
    return out


# ---------------------------------------------------------------------------------------- status


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
    cache_dir: str = "results/cache",
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


# ------------------------------------------------------------------------------------------ text


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    minutes = round(seconds / 60)
    if minutes < 1:
        return f"{seconds:.0f}s"
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    return (f"{days}d " if days else "") + (f"{hours}h " if hours or days else "") + f"{minutes}m"


def _usd(value: float | None) -> str:
    return "-" if value is None else f"{value:,.2f}"


def format_status(status: Mapping[str, Any]) -> str:
    out = [f"VPO run status at {status['time']} ({', '.join(status['configfiles'])})", ""]
    header = ("stage", "jobs", "done", "running", "queued", "failed", "to do", "items", "LLM asked",
              "cached", "new", "no usable answer", "mean job", "ETA")  # fmt: skip
    rows = []
    for s in status["stages"]:
        problems = ", ".join(f"{k} {v}" for k, v in sorted(s["problems"].items())) or ""
        rows.append(
            [s["stage"], s["jobs"], s["done"], s["running"], s["queued"], s["failed"], s["todo"],
             "" if s["items"] is None else s["items"], s["llm_requests"] or "", s["llm_cached"] or "",
             s["llm_new"] or "", problems, duration(s["mean_job_s"]) if s["mean_job_s"] is not None else "",
             duration(s["eta_s"]) if s["eta_s"] else ""]
        )  # fmt: skip
    t = status["totals"]
    rows.append(["total", t["jobs"], t["done"], t["running"], t["queued"], t["failed"], t["todo"]] + [""] * 7)
    if status["stages"]:
        cells = [[str(c) for c in r] for r in [header, *rows]]
        widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
        numeric = set(range(1, 11)) | {12, 13}
        for r in cells:
            out.append("  ".join(c.rjust(w) if i in numeric else c.ljust(w) for i, (c, w) in
                                 enumerate(zip(r, widths, strict=True))).rstrip())  # fmt: skip
        out.append(
            "items, LLM asked/cached/new and no usable answer: from the job reports of finished jobs; "
            "cached = answered from the item cache (no new call)."
        )
    else:
        out.append("no jobs: the DAG was not built (see sources)")
    failed = status["failed_jobs"]
    if failed:
        out += ["", f"failed jobs ({len(failed)}; last attempt ended with an error):"]
        for f in failed[:20]:
            wildcards = " ".join(f"{k}={v}" for k, v in f["wildcards"].items())
            logs = ", ".join(f["log"]) or "-"
            out.append(f"  {f['stage']} {wildcards}: log {logs}; Slurm log {f['slurm_log'] or '-'}")
        if len(failed) > 20:
            out.append(f"  ... and {len(failed) - 20} more (--json lists all)")
    spend = status["spending"]
    budget = spend["budget_usd"]
    share = f" ({100 * spend['spent_usd'] / budget:.1f}%)" if budget else ""
    out += [
        "",
        f"LLM spend so far (ledger): {spend['spent_usd']:,.4f} USD of budget_usd {_usd(budget)}{share}",
    ]
    if spend.get("estimate_usd"):
        est = spend["estimate_usd"]
        out.append(
            f"`vpo estimate` for this config: {_usd(est['first_attempts'])} USD first attempts, "
            f"{_usd(est['worst_case'])} USD worst case"
        )
    elif spend.get("estimate_error"):
        out.append(f"`vpo estimate` failed: {spend['estimate_error']}")
    if status["ledger_entries"]:
        out += ["", format_spending(status["ledger_entries"])]
    eta = status["eta"]
    out.append("")
    if t["jobs"] and t["done"] == t["jobs"]:
        out.append("ETA: nothing left to do")
    elif status["stages"]:
        text = duration(eta["eta_s"]) if eta["eta_s"] is not None else "unknown (no finished job to time)"
        out.append(
            f"ETA (an estimate): {text} — mean benchmark time of finished jobs × jobs left, divided by the "
            f"{eta['jobs_running_now']} jobs running now; dependencies and queue waits are not modelled"
        )
        if eta["untimed_stages"]:
            out.append(f"  not included (no finished job timed yet): {', '.join(eta['untimed_stages'])}")
    out += ["", "sources:"]
    out += [f"  {k}: {v}" for k, v in status["sources"].items()]
    out += [f"note: {n}" for n in status["notes"]]
    return "\n".join(out) + "\n"


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
    p.add_argument("--cache-dir", default="results/cache", help="item cache root (holds the ledger)")
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
