"""Where each job of a run stands (for `vpo status`): the jobs from Snakemake's DAG, then the evidence
that moves a job off "to do": Slurm's queue, Snakemake's lock and incomplete markers, the newest main log
and the per-job Slurm logs.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vpo.pages.jobs import job_label

# Slurm job states (squeue %T) that mean "waiting for a node" vs "on a node".
QUEUED_STATES = {"PENDING", "CONFIGURING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESIZING"}
RUNNING_STATES = {"RUNNING", "COMPLETING", "STAGE_OUT", "SIGNALING"}
# Lines of a failed job's Slurm log (the job step's Snakemake, or Slurm killing the job).
_SLURM_FAILURE = re.compile(r"Error in rule |slurmstepd: error: \*\*\*")
# Every state a job ends up in, in the order the per-stage table counts them.
STATES = ("done", "running", "queued", "failed", "todo")


class StatusError(RuntimeError):
    """A source exists but could not be read (squeue exited with an error)."""


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
