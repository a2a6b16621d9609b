"""Export a finished workflow run as an RO-Crate (https://w3id.org/ro/crate/1.1) for publication.

Usage: python -m vpo.tools.crate [--root .] [--out results/run-crate | results/run-crate.zip]
                           [--config config/config.yaml ...]

The crate borrows the shape of the Workflow Run Crate profiles (the workflow, its configuration, the
outputs with checksums, the software, one action per job) without claiming conformance to them: each
job is its own CreateAction, linked to the workflow that ran it, rather than one action for the run.
"""

from __future__ import annotations

import argparse
import datetime as dt
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
# Not in the RO-Crate 1.1 context (schema.org's sha256 came later; slurm_job_id is ours): declared so
# that the terms expand to IRIs, the second one pointing at Slurm's description of the variable.
SLURM_JOB_ID_TERM = "https://slurm.schedmd.com/sbatch.html#OPT_SLURM_JOB_ID"
EXTRA_TERMS = {"sha256": "http://schema.org/sha256", "slurm_job_id": SLURM_JOB_ID_TERM}
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
        path = Path(name)
        rel = _inside(self.root, path if path.is_absolute() else self.root / path)
        if rel is not None and rel in self.files and self.files[rel].get("sha256") == sha256:
            return self.files[rel]
        # Outside the project, or changed since the job read it: keep only what the job recorded.
        key = rel if rel is not None else path.as_posix()
        ident = _local_id(key)
        existing = self.crate.get(ident)
        if existing is not None and existing.get("sha256") == sha256:
            return existing
        if existing is not None:
            ident = _local_id(f"{key}@sha256:{sha256[:16]}")
        note = "Job input, not copied into this crate"
        if rel is not None and rel in self.files:
            note = "Job input as the job read it; the file changed afterwards, the crate's copy differs"
        props = {"@type": "File", "name": key, "sha256": sha256, "description": note}
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


def _code_versions(reports: Sequence[JobRecord]) -> dict[str, dict[str, Any]]:
    return {str(r.path): r.provenance.get("code") or {} for r in reports}


def _version_string(code: dict[str, Any]) -> str | None:
    commit = code.get("commit")
    if not commit:
        return None
    return f"{commit}-dirty" if code.get("dirty") else commit


def _started(report: JobRecord) -> dt.datetime | None:
    started = report.provenance.get("started")
    try:
        return parse_started(started) if started else None
    except ValueError:
        return None


def _start_key(report: JobRecord) -> tuple[float, str]:
    started = _started(report)
    return (started.timestamp() if started else float("-inf"), str(report.path))


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


def build_crate(root: Path, out: Path, config_files: list[Path]) -> Path:
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
    - one CreateAction per job report: the stage, start and end times, the workflow as instrument,
      the inputs (the crate's copy when the checksum matches, else a `#` File with the recorded
      sha256), the report and the job's outputs as result, the host as agent, the Slurm job id.

    Nothing from the environment is read into the crate, and a crate that would carry a credential is
    refused (`CrateError`). Raises `CrateError` when `results/` holds no job report.
    """
    root = Path(root).resolve()
    out = Path(out)
    out = out if out.is_absolute() else Path.cwd() / out
    snakefile = root / "Snakefile"
    if not snakefile.is_file():
        raise CrateError(f"{snakefile}: not found; --root must be the project folder holding the Snakefile.")
    reports = find_job_reports(root, exclude=[out])
    if not reports:
        raise CrateError(
            f"{root / 'results'}: no job reports (*.report.json) found; run the workflow first "
            f"(snakemake in {root}), then export the crate."
        )

    b = _Builder(root)
    crate = b.crate
    crate.name = "VPO workflow run"
    crate.description = (
        f"A run of the VPO (video prompt optimization) Snakemake workflow: {len(reports)} jobs, "
        "their configuration, outputs with checksums, software versions and provenance."
    )

    # Workflow and its code version (the latest job's, as it describes the outputs last written).
    ordered = sorted(reports, key=_start_key)
    codes = _code_versions(reports)
    code = codes[str(ordered[-1].path)]
    version = _version_string(code)
    versions_seen = {_version_string(c) for c in codes.values()} - {None}
    # Job envs (conda) may lack snakemake: the latest report that has it names the engine's version.
    snakemake_version = next(
        (v for r in reversed(ordered) if (v := (r.provenance.get("versions") or {}).get("snakemake"))), None
    )
    workflow = crate.add_workflow(
        snakefile,
        dest_path="Snakefile",
        main=True,
        lang="snakemake",
        lang_version=snakemake_version,
        properties={
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

    for smk in sorted((root / "workflow" / "rules").glob("*.smk")):
        rule = b.add_file(
            smk.relative_to(root).as_posix(),
            {"@type": ["File", "SoftwareSourceCode"], "programmingLanguage": workflow["programmingLanguage"]},
        )
        workflow.append_to("hasPart", rule)
    for env in sorted((root / "envs").glob("*.yaml")):
        env_file = b.add_file(env.relative_to(root).as_posix(), {"description": "Conda env of a rule family"})
        workflow.append_to("hasPart", env_file)

    package_props: dict[str, Any] = {
        "@type": "SoftwareSourceCode",
        "name": "vpo",
        "programmingLanguage": "Python",
    }
    # Commits pin the code only if every job ran at a clean one.
    pinned = all(c.get("commit") and not c.get("dirty") for c in codes.values())
    if pinned:
        package_props["version"] = code["commit"]
        package_props["description"] = (
            f"The workflow's Python package (workflow/vpo), not copied: its sources are those of git "
            f"commit {code['commit']} of the project repository."
        )
    else:
        package_props["description"] = (
            "The workflow's Python package (workflow/vpo). No clean git commit identifies the code that "
            "ran, so its sources as they were at export time are copied into the crate."
        )
    package = crate.add(ContextEntity(crate, "#vpo-package", properties=package_props))
    if not pinned:
        for source in sorted((root / "workflow" / "vpo").rglob("*.py")):
            if "__pycache__" not in source.parts:
                package.append_to(
                    "hasPart",
                    b.add_file(
                        source.relative_to(root).as_posix(), {"@type": ["File", "SoftwareSourceCode"]}
                    ),
                )
    workflow.append_to("hasPart", package)

    # Configuration: kept at its project path; a file from elsewhere goes under config/.
    for config in config_files:
        path = config if config.is_absolute() else root / config
        if not path.is_file():
            raise CrateError(f"{path}: config file not found; pass an existing file to --config.")
        rel = _inside(root, path) or f"config/{path.name}"
        if _inside(root, path) is None and rel in b.files:
            rel = f"config/{len(b.files)}-{path.name}"  # two outside configs with one name
        b.add_file(rel, {"description": "Workflow configuration (snakemake --configfile)"}, source=path)

    # Main outputs, then every report with what it produced.
    for pattern in MAIN_OUTPUT_GLOBS:
        for path in sorted(root.glob(pattern)):
            if path.is_file():
                b.add_file(path.relative_to(root).as_posix())
    for rel in MAIN_OUTPUT_TREES:
        if (root / rel).is_dir():
            b.add_tree(rel, f"LLaMA-Factory dataset folder {rel}")
    for rel in MODEL_DIRS:
        if (root / rel).is_dir():
            b.add_output(rel)
    results_of = {}
    for report in reports:
        report_entity = b.add_file(report_rel(root, report), {"description": f"Job report of {report.stage}"})
        outputs = [b.add_output(o) for o in _beside_outputs(root, report)]
        results_of[str(report.path)] = [report_entity, *outputs]

    # Software: one entity per (package, version) across all jobs.
    software: dict[tuple[str, str], Entity] = {}
    for report in ordered:
        for name, ver in sorted((report.provenance.get("versions") or {}).items()):
            if (name, str(ver)) in software:
                continue
            url = "https://www.python.org/" if name == "python" else f"https://pypi.org/project/{name}/"
            software[(name, str(ver))] = crate.add(
                ContextEntity(
                    crate,
                    _local_id(f"software/{name}-{ver}"),
                    properties={
                        "@type": "SoftwareApplication",
                        "name": name,
                        "version": str(ver),
                        "url": {"@id": url},
                    },
                )
            )
    if software:
        workflow["softwareRequirements"] = list(software.values())

    # Hosts and actions.
    hosts: dict[str, Entity] = {}
    for report in ordered:
        prov = report.provenance
        stage = str(report.data["stage"])
        props: dict[str, Any] = {
            "@type": "CreateAction",
            "name": stage,
            "description": f"Job {stage}, report {report_rel(root, report)}",
            "actionStatus": {"@id": "http://schema.org/CompletedActionStatus"},
        }
        started = _started(report)
        if started is not None:
            props["startTime"] = started.isoformat()
            if prov.get("wall_s") is not None:
                props["endTime"] = (started + dt.timedelta(seconds=float(prov["wall_s"]))).isoformat()
        job_version = _version_string(codes[str(report.path)])
        if len(versions_seen) > 1 and job_version:
            props["description"] += f", code version {job_version}"
        if prov.get("slurm_job_id"):
            props["slurm_job_id"] = str(prov["slurm_job_id"])
        objects = [b.reference_input(name, sha) for name, sha in (prov.get("inputs_sha256") or {}).items()]
        action = crate.add_action(
            workflow,
            identifier=_local_id(f"job/{report_rel(root, report)}"),
            object=objects or None,
            result=results_of[str(report.path)],
            properties=props,
        )
        host = prov.get("host")
        if host:
            if host not in hosts:
                # schema.org's agent is "animate or inanimate"; the reports record the machine, not a person.
                hosts[host] = crate.add(
                    ContextEntity(
                        crate,
                        _local_id(f"host/{host}"),
                        properties={
                            "@type": "IndividualProduct",
                            "name": host,
                            "description": "Machine the job ran on (host name from its job report)",
                        },
                    )
                )
            action["agent"] = hosts[host]

    if any(r.provenance.get("slurm_job_id") for r in reports):
        crate.add(
            ContextEntity(
                crate,
                SLURM_JOB_ID_TERM,
                properties={
                    "@type": "rdf:Property",
                    "rdfs:label": "slurm_job_id",
                    "rdfs:comment": "Id of the Slurm job that ran this action (SLURM_JOB_ID).",
                },
            )
        )

    metadata_text = json.dumps(crate.metadata.generate(), ensure_ascii=False)
    texts = [(str(p), p.read_text(encoding="utf-8", errors="replace")) for p in b.copied if _scannable(p)]
    _check_no_secrets([*texts, (METADATA_NAME, metadata_text)], reports)
    return _write(crate, out)


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
        "action per job) as an RO-Crate folder, or a zip when --out ends in .zip.",
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
    args = p.parse_args(argv)
    root = args.root.resolve()
    out = args.out if args.out is not None else root / "results" / "run-crate"
    configs = args.config if args.config is not None else [Path("config/config.yaml")]
    try:
        written = build_crate(root, out, configs)
    except CrateError as err:
        raise SystemExit(f"error: {err}") from None
    print(f"wrote {written}: {len(read_metadata(written)['@graph'])} entities, {_size(written) / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
