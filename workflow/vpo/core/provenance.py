"""Per-job report: what the job counted, and the provenance needed to trust and audit its outputs;
written by `JobReport` in every job, read back by `find_job_reports` / `report_beside` everywhere else."""

from __future__ import annotations

import importlib.metadata
import json
import logging
import os
import platform
import resource
import socket
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vpo.core.fingerprints import fingerprint, sha256_file
from vpo.core.io import write_json
from vpo.core.layout import REPO_ROOT
from vpo.core.run_options import from_env as run_options_from_env

_PACKAGES = (
    "torch",
    "transformers",
    "llamafactory",
    "trl",
    "peft",
    "openai",
    "polars",
    "snakemake",
    "vllm",
    "diffusers",
)


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def code_version() -> dict[str, Any]:
    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(REPO_ROOT), *args], capture_output=True, text=True, check=False
        ).stdout.strip()

    commit = git("rev-parse", "HEAD")
    return {"commit": commit or None, "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}


def log_placement(stage: str) -> None:
    """First log line of every job: where it ran, so a Slurm job's log names its node and job id."""
    logging.getLogger("vpo").info(
        "%s on host %s, slurm job %s", stage, socket.gethostname(), os.environ.get("SLURM_JOB_ID", "none")
    )


class JobReport:
    """Collects counts while a stage runs; `write` adds timings, environment and input checksums."""

    def __init__(self, stage: str, params: dict[str, Any] | None = None):
        log_placement(stage)
        self.stage = stage
        self.params = params or {}
        self.counts: dict[str, Any] = {}
        self.extra: dict[str, Any] = {}
        self.inputs: dict[str, str] = {}
        self.models: dict[str, str] = {}
        self.hub_models: dict[str, dict[str, Any]] = {}
        self._start = time.time()

    def add_inputs(self, paths: Iterable[str | os.PathLike]) -> None:
        for path in paths:
            path = Path(path)
            if path.is_file():
                self.inputs[str(path)] = sha256_file(path)

    def add_models(self, sources: Iterable[str | os.PathLike | None]) -> None:
        """Models the job loaded (folders or hub ids), by fingerprint: a checkpoint is an input too."""
        from vpo.models.provision import read_manifest

        for source in sources:
            if source:
                self.models[str(source)] = fingerprint(str(source))
                manifest = read_manifest(source) if Path(source).is_dir() else None
                if manifest is not None:  # a hub download: where from, and what exactly it holds
                    self.hub_models[str(source)] = {
                        "repo": manifest["repo"],
                        "revision": manifest["revision"],
                        "commit": manifest.get("commit", manifest["revision"]),  # a branch's commit
                        "manifest": manifest["manifest"],
                        "files_sha256": {f["path"]: f["sha256"] for f in manifest["files"]},
                    }

    def write(self, path: str | os.PathLike) -> None:
        write_json(
            path,
            {
                "stage": self.stage,
                "counts": self.counts,
                **self.extra,
                "provenance": {
                    "inputs_sha256": self.inputs,
                    "models": self.models,
                    **({"hub_models": self.hub_models} if self.hub_models else {}),
                    "params": self.params,
                    "run_options": run_options_from_env(),
                    "code": code_version(),
                    "versions": package_versions(),
                    "host": socket.gethostname(),
                    "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
                    "argv": [Path(sys.argv[0]).name, *sys.argv[1:]],
                    "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(self._start)),
                    "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                    "wall_s": round(time.time() - self._start, 3),
                    "memory": peak_memory(),
                },
            },
        )


# --- reading job reports back (run report, audit, RO-Crate, status) ---

CRATE_METADATA = "ro-crate-metadata.json"  # a folder holding one is an exported crate, not the run


def peak_memory() -> dict[str, float]:
    """Peak resident memory (MB) of this process and of its largest finished child (e.g. the trainer),
    from the kernel, where Snakemake's benchmark samples (every 0.5 s at first, then every 30 s) may miss
    a short peak."""
    scale = 1024 if sys.platform != "darwin" else 1024 * 1024  # ru_maxrss: KiB on Linux, bytes on macOS
    return {
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / scale, 1),
        "children_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / scale, 1),
    }


class JobReportError(ValueError):
    """A file named like a job report that cannot be read; the message names it."""


@dataclass(frozen=True)
class JobRecord:
    """One job report as `JobReport.write` left it."""

    path: Path
    data: dict[str, Any]

    @property
    def stage(self) -> str:
        return self.data["stage"]

    @property
    def provenance(self) -> dict[str, Any]:
        return self.data.get("provenance") or {}

    @property
    def started(self) -> str:
        return self.provenance.get("started") or ""


def _is_report_name(name: str) -> bool:
    return name == "report.json" or name.endswith(".report.json")


def read_job_report(path: str | os.PathLike) -> JobRecord | None:
    """The job report at `path`; None for a JSON file that is not one (e.g. a plot's data)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise JobReportError(f"{path}: not a readable job report ({err})") from err
    if isinstance(data, dict) and "stage" in data and isinstance(data.get("provenance"), dict):
        return JobRecord(path, data)
    return None


def find_job_reports(results: str | os.PathLike, exclude: Iterable[Path] = ()) -> list[JobRecord]:
    """Every job report under `results`, oldest first. Item caches (results/cache) and exported crates
    are skipped: the first holds no reports, the second copies of them."""
    results = Path(results)
    excluded = {Path(p).resolve() for p in exclude}
    found = []
    for dirpath, dirnames, filenames in os.walk(results):
        here = Path(dirpath)
        dirnames[:] = sorted(
            d
            for d in dirnames
            if not d.startswith(".")
            and (here / d).resolve() not in excluded
            and not (here / d / CRATE_METADATA).exists()
            and not (here == results and d == "cache")
        )
        for name in sorted(filter(_is_report_name, filenames)):
            record = read_job_report(here / name)
            if record is not None:
                found.append(record)
    return sorted(found, key=lambda r: (r.started, str(r.path)))


def report_beside(path: str | os.PathLike, results: str | os.PathLike) -> Path | None:
    """The report of the job that wrote `path` (a file or folder under `results`): `X.report.json` beside
    `X.ext`, the stage folder's `report.json` for the SFT data and the DPO datasets; a file inside a
    folder output (a dataset, a checkpoint) belongs to the folder's job."""
    path, results = Path(path), Path(results).resolve()
    candidates = [path.with_suffix(".report.json"), path.parent / f"{path.name}.report.json"]
    if path.name in ("examples.parquet", "dataset"):
        candidates.append(path.parent / "report.json")
    if path.name == "dataset":  # a DPO round's dataset: build_pairs' report beside it
        candidates.append(path.parent / "pairs.report.json")
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    if results in path.resolve().parents and path.parent.resolve() != results:
        return report_beside(path.parent, results)
    return None
