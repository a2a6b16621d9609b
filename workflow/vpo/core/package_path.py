"""The package's own folder on the jobs' PYTHONPATH (set by the Snakefile, inherited by every job)."""

from __future__ import annotations

import os


def export_to_jobs(package_dir: str) -> None:
    """Put `package_dir` first on PYTHONPATH once: jobs parse the Snakefile again with it inherited."""
    entries = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if package_dir not in entries:
        os.environ["PYTHONPATH"] = os.pathsep.join([package_dir, *entries])
