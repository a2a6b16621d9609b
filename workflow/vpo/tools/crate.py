"""Export a finished workflow run as an RO-Crate (https://w3id.org/ro/crate/1.1) for publication.

Usage: python -m vpo.tools.crate [--root .] [--out results/run-crate | results/run-crate.zip]
                           [--config config/config.yaml ...] [--license Apache-2.0]

The crate conforms to the Provenance Run Crate profile 0.5 (https://w3id.org/ro/wfrun/provenance/0.5)
and so to those it extends: Workflow Run Crate 0.5, Process Run Crate 0.5 and Workflow RO-Crate 1.0.
One CreateAction stands for the run (the Snakefile as instrument), one per job report for the job (its
stage's tool as instrument), and Snakemake's OrganizeAction links the two through one ControlAction per
job. tests/unit/test_crate.py checks a crate against the profile with roc-validator.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import io
import json
import mimetypes
import os
import re
import shutil
import tempfile
import zipfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

from rocrate.model.contextentity import ContextEntity
from rocrate.model.entity import Entity
from rocrate.rocrate import ROCrate

from vpo.core import provenance
from vpo.core.fingerprints import sha256_file
from vpo.core.io import make_shareable
from vpo.core.provenance import JobRecord, JobReportError
from vpo.core.secrets import keys_holding_secrets, secret_env_values, secrets_in_text

CRATE_VERSION = "1.1"
METADATA_NAME = provenance.CRATE_METADATA
# Main outputs copied into the crate when present (beside the outputs each job report names).
MAIN_OUTPUT_GLOBS = (
    "results/queries/*.parquet",
    "results/sft/dataset.json",
    "results/sft/examples.parquet",
    "results/dpo/pairs.parquet",
    "results/dpo/video_pairs.parquet",
    "results/report/*",
    "results/eval/table.*",
    "results/eval/*.svg",
    "results/eval/queries.parquet",
)
MAIN_OUTPUT_TREES = ("results/sft/dataset", "results/dpo/dataset")
# Checkpoints can be tens of GB: described file by file with checksums, never copied.
MODELS_DIR = "results/models"
MODEL_DIRS = ("results/models/sft", "results/models/dpo")
# Arguments of the stage CLIs that name what a job wrote (the rest are inputs or settings).
OUTPUT_FLAGS = frozenset({"--out", "--out-dir", "--dropped", "--examples", "--pairs"})
# Not in the RO-Crate 1.1 context (schema.org's sha256 came later, buildInstructions is CodeMeta's as
# the Provenance Run Crate profile says, slurm_job_id is ours): declared so that the terms expand to
# IRIs, the last one pointing at Slurm's description of the variable.
SLURM_JOB_ID_TERM = "https://slurm.schedmd.com/sbatch.html#OPT_SLURM_JOB_ID"
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
CONDA_ENV_FORMAT = (
    "https://conda.io/projects/conda/en/latest/user-guide/tasks/manage-environments.html"
    "#create-env-file-manually"
)
DEFAULT_LICENSE = "Apache-2.0"  # the project's (pyproject.toml)
SPDX_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9.+-]*")
# A string, not an @id: the RO-Crate 1.1 context does not type actionStatus, and the profiles write it so.
COMPLETED = "http://schema.org/CompletedActionStatus"
ENCODINGS = {
    ".parquet": "application/vnd.apache.parquet",
    ".json": "application/json",
    ".jsonl": "application/jsonl",
    ".yaml": "application/yaml",
    ".yml": "application/yaml",
    ".smk": "text/x-python",
    ".py": "text/x-python",
    ".safetensors": "application/octet-stream",
    ".bin": "application/octet-stream",
    ".svg": "image/svg+xml",
    ".html": "text/html",
    ".mp4": "video/mp4",
}
TEXT_SUFFIXES = frozenset({".json", ".yaml", ".yml", ".smk", ".py", ".txt", ".svg", ""})
MAX_SCANNED_BYTES = 20 << 20


class CrateError(ValueError):
    """A crate cannot be built as asked; the message names the path and the fix."""


def find_job_reports(root: Path, exclude: Sequence[Path] = ()) -> list[JobRecord]:
    """Every job report under results/ (crates exported there are skipped: they hold copies)."""
    try:
        return provenance.find_job_reports(root / "results", exclude)
    except JobReportError as err:
        raise CrateError(str(err)) from err


def report_rel(root: Path, report: JobRecord) -> str:
    return report.path.relative_to(root).as_posix()


def file_properties(path: Path) -> dict[str, Any]:
    return {
        "sha256": sha256_file(path),
        "contentSize": str(path.stat().st_size),
        "encodingFormat": encoding_format(path),
    }


def encoding_format(path: Path) -> str:
    if path.name == "Snakefile":
        return "text/x-python"
    return (
        ENCODINGS.get(path.suffix.lower()) or mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    )


def parse_started(value: str) -> dt.datetime:
    """JobReport writes `%Y-%m-%dT%H:%M:%S%z` (e.g. +0100); plain ISO 8601 is accepted too."""
    try:
        return dt.datetime.strptime(value, "%Y-%m-%dT%H:%M:%S%z")
    except ValueError:
        return dt.datetime.fromisoformat(value)


def _local_id(rel: str) -> str:
    """Id of something described but not in the crate: a `#` id is a contextual entity, not a payload file."""
    return "#" + quote(rel, safe="/:@-._~")


def _inside(root: Path, path: Path) -> str | None:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return None


def _project_rel(root: Path, name: str) -> str | None:
    """A path as a job recorded it (relative to the project, or absolute), relative to `root`."""
    path = Path(name)
    return _inside(root, path if path.is_absolute() else root / path)


class _Builder:
    """Adds each path once: the same file can be a main output, a job's result and another job's input."""

    def __init__(self, root: Path):
        self.root = root
        self.crate = ROCrate(version=CRATE_VERSION)
        self.crate.metadata.extra_terms.update(EXTRA_TERMS)
        self.files: dict[str, Entity] = {}
        self.copied: list[Path] = []

    def add_file(
        self, rel: str, properties: dict[str, Any] | None = None, source: Path | None = None
    ) -> Entity:
        """Copy `source` (default: `rel` under the root) to `rel` in the crate, with its checksum."""
        if rel in self.files:
            return self.files[rel]
        path = source or self.root / rel
        props = {"name": path.name, **file_properties(path), **(properties or {})}
        entity = self.crate.add_file(source=path, dest_path=rel, properties=props)
        self.files[rel] = entity
        self.copied.append(path)
        return entity

    def add_tree(self, rel: str, description: str) -> Entity:
        """A folder copied with its files, each listed (and checksummed) as a part."""
        if rel in self.files:
            return self.files[rel]
        folder = self.root / rel
        dataset = self.crate.add_dataset(
            dest_path=rel, properties={"name": folder.name, "description": description}
        )
        self.files[rel] = dataset
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            dataset.append_to("hasPart", self.add_file(path.relative_to(self.root).as_posix()))
        return dataset

    def describe_folder(self, rel: str, description: str) -> Entity:
        """A folder described file by file (sha256, size) but not copied, so it gets `#` ids."""
        if rel in self.files:
            return self.files[rel]
        folder = self.root / rel
        parts = []
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            file_rel = path.relative_to(self.root).as_posix()
            props = {"@type": "File", "name": file_rel, **file_properties(path)}
            parts.append(self.crate.add(ContextEntity(self.crate, _local_id(file_rel), properties=props)))
        props = {
            "@type": "Dataset",
            "name": rel,
            "description": description,
            "contentSize": str(sum(int(p["contentSize"]) for p in parts)),
        }
        dataset = self.crate.add(
            ContextEntity(self.crate, _local_id(rel.rstrip("/") + "/"), properties=props)
        )
        dataset["hasPart"] = parts
        self.files[rel] = dataset
        return dataset

    def add_output(self, rel: str) -> Entity:
        path = self.root / rel
        if path.is_file():
            return self.add_file(rel)
        if rel.startswith(MODELS_DIR + "/"):
            return self.describe_folder(
                rel,
                f"Checkpoint folder {rel}: not copied into this crate (too large); each of its files is "
                "listed with its sha256 and size so that a copy obtained elsewhere can be verified.",
            )
        return self.add_tree(rel, f"Output folder {rel}")

    def reference_input(self, name: str, sha256: str) -> Entity:
        """A job input: the crate's own copy when it is the same content, else a checksummed reference."""
        rel = _project_rel(self.root, name)
        if rel is not None and rel in self.files and self.files[rel].get("sha256") == sha256:
            return self.files[rel]
        # Outside the project, or changed since the job read it: keep only what the job recorded.
        key = rel if rel is not None else Path(name).as_posix()
        ident = _local_id(key)
        existing = self.crate.get(ident)
        if existing is not None and existing.get("sha256") == sha256:
            return existing
        if existing is not None:
            ident = _local_id(f"{key}@sha256:{sha256[:16]}")
        note = "Job input, not copied into this crate"
        if rel is not None and rel in self.files:
            note = "Job input as the job read it; the file changed afterwards, the crate's copy differs"
        props = {
            "@type": "File",
            "name": key,
            "sha256": sha256,
            "encodingFormat": encoding_format(Path(key)),
            "description": note,
        }
        return self.crate.add(ContextEntity(self.crate, ident, properties=props))


def _beside_outputs(root: Path, report: JobRecord) -> list[str]:
    """What a report's job wrote: `X.*` beside `X.report.json` (or the folder `X/` when there is no
    such file, e.g. a checkpoint), plus the paths its command line passed to an output flag."""
    outputs: list[str] = []
    inputs = {_inside(root, root / name) for name in report.provenance.get("inputs_sha256") or {}}
    name = report.path.name
    if name.endswith(".report.json"):
        stem = name[: -len(".report.json")]
        siblings = sorted(
            p
            for p in report.path.parent.glob(f"{glob_escape(stem)}.*")
            if p.is_file() and not p.name.endswith("report.json") and not p.name.startswith(".")
        )
        outputs += [p.relative_to(root).as_posix() for p in siblings]
        folder = report.path.parent / stem
        if not siblings and folder.is_dir():
            outputs.append(folder.relative_to(root).as_posix())
    argv = [str(a) for a in report.provenance.get("argv") or []]
    for i, arg in enumerate(argv):
        flag, _, inline = arg.partition("=")
        if flag not in OUTPUT_FLAGS:
            continue
        values = [inline] if inline else []
        for value in argv[i + 1 :] if not inline else []:
            if value.startswith("--"):
                break
            values.append(value)
        for value in values:
            path = Path(value) if Path(value).is_absolute() else root / value
            rel = _inside(root, path)
            if rel and rel.startswith("results/") and path.exists() and rel not in inputs:
                outputs.append(rel.rstrip("/"))
    return list(dict.fromkeys(outputs))


def glob_escape(text: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", text)


def _code(report: JobRecord) -> dict[str, Any]:
    return report.provenance.get("code") or {}


def _version_string(code: dict[str, Any]) -> str | None:
    commit = code.get("commit")
    if not commit:
        return None
    return f"{commit}-dirty" if code.get("dirty") else commit


def _versions_seen(reports: Sequence[JobRecord]) -> set[str]:
    return {v for r in reports if (v := _version_string(_code(r)))}


def _snakemake_version(reports: Sequence[JobRecord]) -> str | None:
    """Job envs (conda) may lack snakemake: the latest report that has it names the engine's version."""
    return next(
        (str(v) for r in reversed(reports) if (v := (r.provenance.get("versions") or {}).get("snakemake"))),
        None,
    )


def _started(report: JobRecord) -> dt.datetime | None:
    started = report.provenance.get("started")
    try:
        return parse_started(started) if started else None
    except ValueError:
        return None


def _ended(report: JobRecord) -> dt.datetime | None:
    started, wall_s = _started(report), report.provenance.get("wall_s")
    if started is None or wall_s is None:
        return None
    return started + dt.timedelta(seconds=float(wall_s))


def _start_key(report: JobRecord) -> tuple[float, str]:
    started = _started(report)
    return (started.timestamp() if started else float("-inf"), str(report.path))


def _iso(moment: dt.datetime) -> str:
    """To the second, or the millisecond when there is a fraction: the profiles' validator reads no other
    precision as ISO 8601."""
    return moment.isoformat(timespec="milliseconds" if moment.microsecond else "seconds")


def _check_no_secrets(texts: Iterable[tuple[str, str]], reports: Sequence[JobRecord]) -> None:
    """Refuse to write a crate holding a credential: the value of a secret-looking environment variable,
    a string shaped like a known API key, or a report setting that names a key and carries a value."""
    env_values = secret_env_values(os.environ)
    for where, text in texts:
        for what in secrets_in_text(text, env_values):
            raise CrateError(
                f"{where} holds {what}; a crate must not carry credentials. Remove it before exporting the "
                "run (configs name the variable that holds a key, e.g. api_key_env)."
            )
    for report in reports:
        for key in keys_holding_secrets(report.data):
            raise CrateError(
                f"{report.path}: {key} carries a value; reports may name an environment variable "
                "(api_key_env) but never hold a key. Remove it before exporting the run."
            )


def _scannable(path: Path) -> bool:
    return path.suffix.lower() in TEXT_SUFFIXES and path.stat().st_size <= MAX_SCANNED_BYTES


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
    - the provenance: one CreateAction for the run, one per job report (see `_add_job_actions`),
      and Snakemake's OrganizeAction with one ControlAction per job.

    The root dataset conforms to the Provenance Run Crate 0.5 profile and those it extends, under
    `crate_license` (an SPDX id or a URL). Nothing from the environment is read into the crate, and a
    crate that would carry a credential is refused (`CrateError`). Raises `CrateError` when `results/`
    holds no job report.
    """
    root = Path(root).resolve()
    out = Path(out)
    out = out if out.is_absolute() else Path.cwd() / out
    reports = _job_reports(root, out)
    b = _Builder(root)
    _describe_root(b.crate, reports, crate_license)
    workflow = _add_workflow(b, reports)
    package = _add_package(b, reports)
    configs = _add_configs(b, config_files)
    main_outputs = _add_main_outputs(b)
    results_of = {str(r.path): _add_job_results(b, r) for r in reports}
    software = _add_software(b.crate, workflow, reports)
    steps = _add_steps(b.crate, workflow, reports, package, software)
    controls, outside_inputs = _add_job_actions(b, reports, steps, results_of)
    run = _add_run(b.crate, workflow, reports, controls, [*configs, *outside_inputs], main_outputs)
    _add_engine_run(b.crate, reports, software, controls, run)
    _declare_slurm_term(b.crate, reports)
    _add_readme(b.crate)
    _compact(b.crate)
    _refuse_secrets(b, reports)
    return _write(b.crate, out)


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
    return sorted(reports, key=_start_key)


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


def _add_workflow(b: _Builder, reports: Sequence[JobRecord]) -> Entity:
    """The Snakefile as main entity: a Snakemake ComputationalWorkflow, and a HowTo as it lists steps,
    at the code version of the latest job (it wrote the outputs last). The rule files are parts of it by
    isPartOf, as the profile keeps the workflow's hasPart for the tools its steps run; the conda envs
    are its build instructions."""
    snakefile = b.root / "Snakefile"
    version = _version_string(_code(reports[-1]))
    versions_seen = _versions_seen(reports)
    workflow = b.crate.add_workflow(
        snakefile,
        dest_path="Snakefile",
        main=True,
        lang="snakemake",
        lang_version=_snakemake_version(reports),
        properties={
            "@type": ["File", "SoftwareSourceCode", "ComputationalWorkflow", "HowTo"],
            "name": "VPO workflow",
            **file_properties(snakefile),
            "description": "Snakefile of the VPO workflow; the rules are in workflow/rules/.",
        },
    )
    b.files["Snakefile"] = workflow
    b.copied.append(snakefile)
    if version:
        workflow["version"] = version
    if len(versions_seen) > 1:
        workflow["description"] += (
            f" The jobs ran at different code versions ({', '.join(sorted(versions_seen))}); "
            "each job's own is in its action's description."
        )

    _add_rule_files(b, workflow, version)
    _add_conda_envs(b, workflow)
    return workflow


def _add_rule_files(b: _Builder, workflow: Entity, version: str | None) -> None:
    for smk in sorted((b.root / "workflow" / "rules").glob("*.smk")):
        props = {
            "@type": ["File", "SoftwareSourceCode"],
            "programmingLanguage": workflow["programmingLanguage"],
            "isPartOf": workflow,
            **({"version": version} if version else {}),
        }
        b.add_file(smk.relative_to(b.root).as_posix(), props)


def _add_conda_envs(b: _Builder, workflow: Entity) -> None:
    envs = sorted((b.root / "envs").glob("*.yaml"))
    if not envs:
        return
    conda = ContextEntity(
        b.crate, CONDA_ENV_FORMAT, properties={"@type": "CreativeWork", "name": "Conda environment file"}
    )
    props = {"description": "Conda env of a rule family", "conformsTo": b.crate.add(conda)}
    for env in envs:
        workflow.append_to("buildInstructions", b.add_file(env.relative_to(b.root).as_posix(), props))


def _add_package(b: _Builder, reports: Sequence[JobRecord]) -> Entity:
    """The vpo package, by the commit every job ran at; copied when no clean commit pins it."""
    props: dict[str, Any] = {"@type": "SoftwareSourceCode", "name": "vpo", "programmingLanguage": "Python"}
    commit = _code(reports[-1]).get("commit")
    pinned = all(_code(r).get("commit") and not _code(r).get("dirty") for r in reports)
    if pinned:
        props["version"] = commit
        props["description"] = (
            f"The workflow's Python package (workflow/vpo), not copied: its sources are those of git "
            f"commit {commit} of the project repository."
        )
    else:
        props["description"] = (
            "The workflow's Python package (workflow/vpo). No clean git commit identifies the code that "
            "ran, so its sources as they were at export time are copied into the crate."
        )
    package = b.crate.add(ContextEntity(b.crate, "#vpo-package", properties=props))
    if not pinned:
        for source in sorted((b.root / "workflow" / "vpo").rglob("*.py")):
            if "__pycache__" not in source.parts:
                rel = source.relative_to(b.root).as_posix()
                package.append_to("hasPart", b.add_file(rel, {"@type": ["File", "SoftwareSourceCode"]}))
    return package


def _add_configs(b: _Builder, config_files: Sequence[Path]) -> list[Entity]:
    """Config files, kept at their project path; one from elsewhere goes under config/."""
    configs = []
    for config in config_files:
        path = config if config.is_absolute() else b.root / config
        if not path.is_file():
            raise CrateError(f"{path}: config file not found; pass an existing file to --config.")
        rel = _inside(b.root, path) or f"config/{path.name}"
        if _inside(b.root, path) is None and rel in b.files:
            rel = f"config/{len(b.files)}-{path.name}"  # two outside configs with one name
        props = {"description": "Workflow configuration (snakemake --configfile)"}
        configs.append(b.add_file(rel, props, source=path))
    return configs


def _add_main_outputs(b: _Builder) -> list[Entity]:
    outputs = [
        b.add_file(path.relative_to(b.root).as_posix())
        for pattern in MAIN_OUTPUT_GLOBS
        for path in sorted(b.root.glob(pattern))
        if path.is_file()
    ]
    outputs += [
        b.add_tree(rel, f"LLaMA-Factory dataset folder {rel}")
        for rel in MAIN_OUTPUT_TREES
        if (b.root / rel).is_dir()
    ]
    outputs += [b.add_output(rel) for rel in MODEL_DIRS if (b.root / rel).is_dir()]
    return list({e.id: e for e in outputs}.values())  # a file two patterns match, once


def _add_job_results(b: _Builder, report: JobRecord) -> list[Entity]:
    """A job's report and the outputs beside it."""
    rel = report_rel(b.root, report)
    report_entity = b.add_file(rel, {"description": f"Job report of {report.stage}"})
    return [report_entity, *(b.add_output(o) for o in _beside_outputs(b.root, report))]


def _release_url(name: str, version: str) -> str:
    if name == "python":
        return f"https://www.python.org/downloads/release/python-{version.replace('.', '')}/"
    return f"https://pypi.org/project/{quote(name)}/{quote(version)}/"


def _add_software(
    crate: ROCrate, workflow: Entity, reports: Sequence[JobRecord]
) -> dict[tuple[str, str], Entity]:
    """One SoftwareApplication per (package, version) across all jobs, identified by its release page."""
    software: dict[tuple[str, str], Entity] = {}
    for report in reports:
        for name, ver in sorted((report.provenance.get("versions") or {}).items()):
            if (name, str(ver)) in software:
                continue
            url = _release_url(name, str(ver))
            props = {"@type": "SoftwareApplication", "name": name, "version": str(ver), "url": {"@id": url}}
            software[(name, str(ver))] = crate.add(ContextEntity(crate, url, properties=props))
    if software:
        workflow["softwareRequirements"] = list(software.values())
    return software


def _add_steps(
    crate: ROCrate,
    workflow: Entity,
    reports: Sequence[JobRecord],
    package: Entity,
    software: dict[tuple[str, str], Entity],
) -> dict[str, Entity]:
    """Per stage the reports name, the tool its jobs ran (a SoftwareApplication needing the package and
    the software those jobs recorded) and the HowToStep that runs it; the workflow lists them as hasPart
    and step. Stages, not rules: a report names its stage, and two rules can run one stage."""
    steps: dict[str, Entity] = {}
    for stage in dict.fromkeys(r.stage for r in reports):
        jobs = [r for r in reports if r.stage == stage]
        props: dict[str, Any] = {
            "@type": "SoftwareApplication",
            "name": f"{stage} stage",
            "description": f"Stage {stage} of the vpo package; each job's report records its command line",
        }
        if version := _version_string(_code(jobs[-1])):
            props["version"] = version
        tool = crate.add(ContextEntity(crate, _local_id(f"tool/{stage}"), properties=props))
        used = sorted({(n, str(v)) for r in jobs for n, v in (r.provenance.get("versions") or {}).items()})
        tool["softwareRequirements"] = [package, *(software[key] for key in used)]
        step_props = {"@type": "HowToStep", "name": f"{stage} step", "workExample": tool}
        steps[stage] = crate.add(ContextEntity(crate, _local_id(f"step/{stage}"), properties=step_props))
        workflow.append_to("hasPart", tool)
        workflow.append_to("step", steps[stage])
    return steps


def _add_job_actions(
    b: _Builder,
    reports: Sequence[JobRecord],
    steps: dict[str, Entity],
    results_of: dict[str, list[Entity]],
) -> tuple[list[Entity], list[Entity]]:
    """One CreateAction per job report: its stage's tool as instrument, the inputs as object (the
    crate's copy when the checksum matches, else a `#` File with the recorded sha256), the report and the
    job's outputs as result, the host as agent; and the ControlAction by which the engine ran it as its
    step. Returns the ControlActions and the inputs from outside results/, which the run as a whole read."""
    several_versions = len(_versions_seen(reports)) > 1
    controls: list[Entity] = []
    outside: dict[str, Entity] = {}
    for report in reports:
        rel = report_rel(b.root, report)
        objects = []
        for name, sha in (report.provenance.get("inputs_sha256") or {}).items():
            objects.append(b.reference_input(name, sha))
            if not (_project_rel(b.root, name) or "").startswith("results/"):
                outside[objects[-1].id] = objects[-1]
        action = b.crate.add_action(
            steps[report.stage]["workExample"],
            identifier=_local_id(f"job/{rel}"),
            object=objects or None,
            result=results_of[str(report.path)],
            properties=_job_properties(report, rel, several_versions),
        )
        if host := report.provenance.get("host"):
            action["agent"] = _host(b.crate, host)
        control = {
            "@type": "ControlAction",
            "name": f"Orchestration of job {report.stage}",
            "instrument": steps[report.stage],
            "object": action,
            "actionStatus": COMPLETED,
        }
        controls.append(b.crate.add(ContextEntity(b.crate, _local_id(f"control/{rel}"), properties=control)))
    return controls, list(outside.values())


def _job_properties(report: JobRecord, rel: str, several_versions: bool) -> dict[str, Any]:
    """The stage, start and end times, the code version when the jobs ran at several, the Slurm job id."""
    stage, prov = report.stage, report.provenance
    props: dict[str, Any] = {
        "@type": "CreateAction",
        "name": stage,
        "description": f"Job {stage}, report {rel}",
        "actionStatus": COMPLETED,
    }
    if (started := _started(report)) is not None:
        props["startTime"] = _iso(started)
    if (ended := _ended(report)) is not None:
        props["endTime"] = _iso(ended)
    if several_versions and (job_version := _version_string(_code(report))):
        props["description"] += f", code version {job_version}"
    if prov.get("slurm_job_id"):
        props["slurm_job_id"] = str(prov["slurm_job_id"])
    return props


def _host(crate: ROCrate, host: str) -> Entity:
    """The machine a job ran on, once per host name. schema.org's agent is "animate or inanimate"; the
    reports record the machine, not a person."""
    ident = _local_id(f"host/{host}")
    if (existing := crate.get(ident)) is not None:
        return existing
    props = {
        "@type": "IndividualProduct",
        "name": host,
        "description": "Machine the job ran on (host name from its job report)",
    }
    return crate.add(ContextEntity(crate, ident, properties=props))


def _add_run(
    crate: ROCrate,
    workflow: Entity,
    reports: Sequence[JobRecord],
    controls: Sequence[Entity],
    objects: list[Entity],
    results: list[Entity],
) -> Entity:
    """The run as one CreateAction of the workflow, from its first job's start to its last job's end;
    the root dataset mentions it first, then the jobs' actions."""
    props: dict[str, Any] = {
        "name": "Run of the VPO workflow",
        "description": (
            f"The run whose {len(reports)} job reports are in results/: the config files and the inputs "
            "from outside results/ as object, the main outputs as result. Each job is an action of its own."
        ),
    }
    if starts := [t for r in reports if (t := _started(r)) is not None]:
        props["startTime"] = _iso(min(starts, key=dt.datetime.timestamp))
    if ends := [t for r in reports if (t := _ended(r)) is not None]:
        props["endTime"] = _iso(max(ends, key=dt.datetime.timestamp))
    run = crate.add_action(
        workflow, identifier="#run", object=objects or None, result=results or None, properties=props
    )
    crate.root_dataset["mentions"] = [run, *(c["object"] for c in controls)]
    return run


def _add_engine_run(
    crate: ROCrate,
    reports: Sequence[JobRecord],
    software: dict[tuple[str, str], Entity],
    controls: list[Entity],
    run: Entity,
) -> None:
    """Snakemake's OrganizeAction: the engine as instrument, the jobs' ControlActions as object, the
    run as result."""
    version = _snakemake_version(reports)
    if version is not None:
        engine = software[("snakemake", version)]
    else:
        props = {
            "@type": "SoftwareApplication",
            "name": "snakemake",
            "description": "The workflow engine; no job report recorded its version.",
            "url": {"@id": "https://snakemake.readthedocs.io"},
        }
        engine = crate.add(ContextEntity(crate, "https://pypi.org/project/snakemake/", properties=props))
    props = {
        "@type": "OrganizeAction",
        "name": "Run of snakemake" + (f" {version}" if version else ""),
        "instrument": engine,
        "object": controls,
        "result": run,
    }
    crate.add(ContextEntity(crate, "#engine-run", properties=props))


def _declare_slurm_term(crate: ROCrate, reports: Sequence[JobRecord]) -> None:
    if any(r.provenance.get("slurm_job_id") for r in reports):
        props = {
            "@type": "rdf:Property",
            "rdfs:label": "slurm_job_id",
            "rdfs:comment": "Id of the Slurm job that ran this action (SLURM_JOB_ID).",
        }
        crate.add(ContextEntity(crate, SLURM_JOB_ID_TERM, properties=props))


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


def _refuse_secrets(b: _Builder, reports: Sequence[JobRecord]) -> None:
    """The metadata and every copied text file, scanned for credentials before anything is written."""
    metadata_text = json.dumps(b.crate.metadata.generate(), ensure_ascii=False)
    texts = [(str(p), p.read_text(encoding="utf-8", errors="replace")) for p in b.copied if _scannable(p)]
    _check_no_secrets([*texts, (METADATA_NAME, metadata_text)], reports)


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
