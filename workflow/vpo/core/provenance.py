"""Per-job report: what the job counted, and the provenance needed to trust and audit its outputs."""

from __future__ import annotations

import importlib.metadata
import logging
import os
import platform
import socket
import subprocess
import sys
import time
from collections.abc import Iterable
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
                },
            },
        )
