"""Export a finished workflow run as an RO-Crate (https://w3id.org/ro/crate/1.1) for publication.

Usage: python -m vpo.tools.crate [--root .] [--out results/run-crate | results/run-crate.zip]
                           [--config config/config.yaml ...] [--license Apache-2.0]

The crate conforms to the Provenance Run Crate profile 0.5 (https://w3id.org/ro/wfrun/provenance/0.5)
and so to those it extends: Workflow Run Crate 0.5, Process Run Crate 0.5 and Workflow RO-Crate 1.0.
One CreateAction stands for the run (the Snakefile as instrument), one per job report for the job (its
stage's tool as instrument), and Snakemake's OrganizeAction links the two through one ControlAction per
job. tests/unit/test_crate.py checks a crate against the profile with roc-validator.

This module assembles the crate and writes it; vpo.tools.crate_files chooses the files that go in,
vpo.tools.crate_actions describes the code that ran and the provenance of the run and its jobs.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import re
import shutil
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rocrate.model.contextentity import ContextEntity
from rocrate.model.entity import Entity
from rocrate.rocrate import ROCrate

from vpo.core import provenance
from vpo.core.io import make_shareable
from vpo.core.provenance import JobRecord, JobReportError
from vpo.tools.crate_actions import (
    SLURM_JOB_ID_TERM,
    add_engine_run,
    add_job_actions,
    add_run,
    add_software,
    add_steps,
    add_workflow,
    declare_slurm_term,
    pinned_commit,
    start_key,
)
from vpo.tools.crate_files import (
    Builder,
    CrateError,
    add_configs,
    add_job_results,
    add_main_outputs,
    add_package,
    refuse_secrets,
)

CRATE_VERSION = "1.1"
METADATA_NAME = provenance.CRATE_METADATA
# Not in the RO-Crate 1.1 context (schema.org's sha256 came later, buildInstructions is CodeMeta's as
# the Provenance Run Crate profile says, slurm_job_id is ours): declared so that the terms expand to IRIs.
EXTRA_TERMS = {
    "sha256": "http://schema.org/sha256",
    "buildInstructions": "https://codemeta.github.io/terms/buildInstructions",
    "slurm_job_id": SLURM_JOB_ID_TERM,
}
# The profiles the root dataset conformsTo: (name, version) by permalink.
PROFILES = {
    "https://w3id.org/ro/wfrun/process/0.5": ("Process Run Crate", "0.5"),
    "https://w3id.org/ro/wfrun/workflow/0.5": ("Workflow Run Crate", "0.5"),
    "https://w3id.org/ro/wfrun/provenance/0.5": ("Provenance Run Crate", "0.5"),
    "https://w3id.org/workflowhub/workflow-ro-crate/1.0": ("Workflow RO-Crate", "1.0"),
}
DEFAULT_LICENSE = "Apache-2.0"  # the project's (pyproject.toml)
SPDX_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9.+-]*")


def find_job_reports(root: Path, exclude: Sequence[Path] = ()) -> list[JobRecord]:
    """Every job report under results/ (crates exported there are skipped: they hold copies)."""
    try:
        return provenance.find_job_reports(root / "results", exclude)
    except JobReportError as err:
        raise CrateError(str(err)) from err


def build_crate(
    root: Path, out: Path, config_files: list[Path], crate_license: str = DEFAULT_LICENSE
) -> Path:
    """Write an RO-Crate of the run under `root` to `out` (a folder, or a zip when `out` ends in .zip).

    What goes in:
    - the workflow: `Snakefile` (main entity, a Snakemake ComputationalWorkflow whose `version` is the
      git commit the jobs recorded, `<commit>-dirty` when the tree had uncommitted changes), the rule
      files `workflow/rules/*.smk` and the conda envs they name (`envs/*.yaml`), all copied;
    - the `vpo` package is referenced, not copied, by that commit: the rules are thin and the
      package is the bulk of the code, which the commit identifies exactly in the project's history.
      When no report names a commit, or the tree was dirty, the commit does not pin the code, so the
      package sources (`workflow/vpo/**/*.py`) are copied as well;
    - `config_files` (relative paths are taken from `root`), copied;
    - the main outputs (curated queries, SFT and DPO datasets, pairs, the video report), every job
      report and the outputs beside it, copied with sha256, size and format;
    - the checkpoints `results/models/{sft,dpo}`: Dataset entities listing each file's sha256 and
      size, not copied (they are `#` contextual entities, not payload);
    - one SoftwareApplication per package version the reports recorded, linked from the workflow;
    - per stage the reports name, a tool (SoftwareApplication) and the workflow step that runs it;
    - the provenance: one CreateAction for the run, one per job report (see
      `crate_actions.add_job_actions`), and Snakemake's OrganizeAction with one ControlAction per job.

    The root dataset conforms to the Provenance Run Crate 0.5 profile and those it extends, under
    `crate_license` (an SPDX id or a URL). Nothing from the environment is read into the crate, and a
    crate that would carry a credential is refused (`CrateError`). Raises `CrateError` when `results/`
    holds no job report.
    """
    root = Path(root).resolve()
    out = Path(out)
    out = out if out.is_absolute() else Path.cwd() / out
    reports = _job_reports(root, out)
    crate = ROCrate(version=CRATE_VERSION)
    crate.metadata.extra_terms.update(EXTRA_TERMS)
    b = Builder(root, crate)
    _describe_root(crate, reports, crate_license)
    workflow = add_workflow(b, reports)
    package = add_package(b, pinned_commit(reports))
    configs = add_configs(b, config_files)
    main_outputs = add_main_outputs(b)
    results_of = {str(r.path): add_job_results(b, r) for r in reports}
    software = add_software(crate, workflow, reports)
    steps = add_steps(crate, workflow, reports, package, software)
    controls, outside_inputs = add_job_actions(b, reports, steps, results_of)
    run = add_run(crate, workflow, reports, controls, [*configs, *outside_inputs], main_outputs)
    add_engine_run(crate, reports, software, controls, run)
    declare_slurm_term(crate, reports)
    _add_readme(crate)
    _compact(crate)
    refuse_secrets(b, reports)
    return _write(crate, out)


def _job_reports(root: Path, out: Path) -> list[JobRecord]:
    """The run's job reports, oldest first; raises unless `root` holds a Snakefile and reports."""
    snakefile = root / "Snakefile"
    if not snakefile.is_file():
        raise CrateError(f"{snakefile}: not found; --root must be the project folder holding the Snakefile.")
    reports = find_job_reports(root, exclude=[out])
    if not reports:
        raise CrateError(
            f"{root / 'results'}: no job reports (*.report.json) found; run the workflow first "
            f"(snakemake in {root}), then export the crate."
        )
    return sorted(reports, key=start_key)


def _describe_root(crate: ROCrate, reports: Sequence[JobRecord], crate_license: str) -> None:
    """Name, description, license, and the profiles the crate conforms to."""
    crate.name = "VPO workflow run"
    crate.description = (
        f"A run of the VPO (video prompt optimization) Snakemake workflow: {len(reports)} jobs, "
        "their configuration, outputs with checksums, software versions and provenance."
    )
    crate.root_dataset["license"] = _license(crate, crate_license)
    for permalink, (name, version) in PROFILES.items():
        profile = ContextEntity(
            crate, permalink, properties={"@type": "CreativeWork", "name": name, "version": version}
        )
        crate.root_dataset.append_to("conformsTo", crate.add(profile))


def _license(crate: ROCrate, value: str) -> Entity:
    """A URL as it is, an SPDX id (Apache-2.0, CC-BY-4.0, ...) by its spdx.org page."""
    if value.startswith(("https://", "http://")):
        ident, props = value, {"name": value}
    elif SPDX_ID.fullmatch(value):
        ident, props = f"https://spdx.org/licenses/{value}", {"name": value, "identifier": value}
    else:
        raise CrateError(f"--license {value!r}: neither an SPDX license id (e.g. Apache-2.0) nor a URL.")
    props |= {"@type": "CreativeWork", "description": "License of this crate's content"}
    return crate.add(ContextEntity(crate, ident, properties=props))


def _add_readme(crate: ROCrate) -> None:
    """A README.md about the crate, for readers without an RO-Crate viewer (Workflow RO-Crate asks for
    one)."""
    text = (
        f"# {crate.name}\n\n{crate.description}\n\n"
        "- `Snakefile`: the workflow (Snakemake); its rules are in `workflow/rules/`, its conda envs in "
        "`envs/`.\n"
        "- `ro-crate-metadata.json`: every file with its sha256; the run and each of its jobs as actions "
        "with inputs, outputs, times and software versions (Provenance Run Crate 0.5, "
        "https://w3id.org/ro/wfrun/provenance/0.5).\n"
        "- `results/`: the main outputs and every job's report; checkpoints are listed file by file with "
        "checksums, not copied.\n\n"
        f"License: {crate.root_dataset['license']['name']}.\n"
    )
    data = text.encode("utf-8")
    props = {
        "name": "README.md",
        "about": crate.root_dataset,
        "encodingFormat": "text/markdown",
        "sha256": hashlib.sha256(data).hexdigest(),
        "contentSize": str(len(data)),
    }
    crate.add_file(source=io.StringIO(text), dest_path="README.md", properties=props)


def _compact(crate: ROCrate) -> None:
    """One value, not a list of one: RO-Crate 1.1 writes JSON-LD compacted."""
    for entity in crate.get_entities():
        properties = entity.properties()
        for key, value in properties.items():
            if isinstance(value, list) and len(value) == 1 and not key.startswith("@"):
                properties[key] = value[0]


def _write(crate: ROCrate, out: Path) -> Path:
    """Write next to `out`, then move into place: an interrupted export never leaves half a crate."""
    out.parent.mkdir(parents=True, exist_ok=True)
    is_zip = out.suffix.lower() == ".zip"
    if out.exists() and not (_is_crate(out) or (out.is_dir() and not is_zip and not any(out.iterdir()))):
        raise CrateError(f"{out}: exists and is not an RO-Crate; choose another --out or remove it.")
    if is_zip:
        fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
        os.close(fd)
        try:
            crate.write_zip(tmp)
            make_shareable(tmp)
            os.replace(tmp, out)
        finally:
            Path(tmp).unlink(missing_ok=True)
        return out
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp"))
    try:
        crate.write(tmp)
        mask = os.umask(0)
        os.umask(mask)
        tmp.chmod(0o777 & ~mask)  # mkdtemp makes it owner-only; give it a plain mkdir's mode
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return out


def _is_crate(path: Path) -> bool:
    """An earlier export, safe to replace: a folder or zip holding ro-crate-metadata.json."""
    if path.is_dir():
        return (path / METADATA_NAME).is_file()
    if path.is_file() and zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            return METADATA_NAME in archive.namelist()
    return False


def read_metadata(crate: Path) -> dict[str, Any]:
    """The crate's ro-crate-metadata.json, from a crate folder or zip, without extracting the payload."""
    if crate.is_file() and zipfile.is_zipfile(crate):
        with zipfile.ZipFile(crate) as archive:
            return json.loads(archive.read(METADATA_NAME))
    return json.loads((crate / METADATA_NAME).read_text(encoding="utf-8"))


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main(argv: Sequence[str] | None = None, prog: str = "python -m vpo.tools.crate") -> None:
    """CLI; `argv` holds the options only, so a wrapper (e.g. `vpo export-crate`) passes what follows
    its subcommand, and `prog` for its usage line."""
    p = argparse.ArgumentParser(
        prog=prog,
        description="Export a finished run (workflow, config, outputs with checksums, software, one "
        "action per job) as a Provenance Run Crate (RO-Crate) folder, or a zip when --out ends in .zip.",
    )
    p.add_argument("--root", type=Path, default=Path("."), help="project folder (Snakefile, results/)")
    p.add_argument(
        "--out", type=Path, default=None, help="crate folder or .zip (default: <root>/results/run-crate)"
    )
    p.add_argument(
        "--config",
        type=Path,
        action="append",
        default=None,
        help="config file the run used, relative to --root unless absolute; repeat for several "
        "(default: config/config.yaml)",
    )
    p.add_argument(
        "--license",
        default=DEFAULT_LICENSE,
        help="license of everything in the crate, outputs included: an SPDX id or a URL "
        f"(default: {DEFAULT_LICENSE}, the project's license)",
    )
    args = p.parse_args(argv)
    root = args.root.resolve()
    out = args.out if args.out is not None else root / "results" / "run-crate"
    configs = args.config if args.config is not None else [Path("config/config.yaml")]
    try:
        written = build_crate(root, out, configs, args.license)
    except CrateError as err:
        raise SystemExit(f"error: {err}") from None
    print(f"wrote {written}: {len(read_metadata(written)['@graph'])} entities, {_size(written) / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
