"""The workflow finds its `vpo` package next to the Snakefile, in the main process and in every job, with
or without an installed copy: a clone runs (and lints) without `pip install`, and the per-rule conda envs
need not install the project."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.workflow_run import copy_project, run_snakemake

pytestmark = pytest.mark.integration

PROBE = '\nimport sys as _sys\nprint(f"vpo package: {__file__}", file=_sys.stderr)\n'


def test_main_process_and_jobs_import_the_package_beside_the_snakefile(tmp_path: Path):
    copy_project(tmp_path)
    # This copy's package announces itself; the installed one (the venv's, from the repository) would not.
    init = tmp_path / "workflow/vpo/__init__.py"
    init.write_text(init.read_text() + PROBE)
    result = run_snakemake(tmp_path, "results/queries/sft.parquet")
    assert result.returncode == 0, result.stderr[-3000:]
    here = f"vpo package: {init}"
    assert here in result.stderr, "the Snakefile imported another copy of vpo"
    job_log = (tmp_path / "results/logs/curate/sft.log").read_text()
    assert here in job_log, f"the curate job imported another copy of vpo:\n{job_log[:2000]}"
