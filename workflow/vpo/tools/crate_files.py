"""The files of a run crate (vpo.tools.crate): which ones go in, copied with checksums or described only.

`Builder` adds each path once, whatever role it plays; the functions below choose the paths: the rule
files and conda envs, the package when no commit pins it, the configs, the main outputs, each job's report
with the outputs beside it. Before anything is written, `refuse_secrets` scans what the crate would hold.
"""

from __future__ import annotations

import json
import mimetypes
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

from rocrate.model.contextentity import ContextEntity
from rocrate.model.entity import Entity
from rocrate.rocrate import ROCrate

from vpo.core.fingerprints import sha256_file
from vpo.core.provenance import CRATE_METADATA, JobRecord
from vpo.core.secrets import keys_holding_secrets, secret_env_values, secrets_in_text

# Main outputs copied into the crate when present (beside the outputs each job report names).
MAIN_OUTPUT_GLOBS = (
    "results/queries/*.parquet",
    "results/sft/dataset.json",
    "results/sft/examples.parquet",
    "results/dpo/round-*/*/pairs.parquet",
    "results/dpo/round-*/*/video_pairs.parquet",
    "results/report/*",
    "results/report/round-*/*/*",
    "results/eval/tables/*/*",
    "results/eval/queries.parquet",
)
# Folders (globs) of LLaMA-Factory datasets, one per DPO round and target.
MAIN_OUTPUT_TREES = ("results/sft/dataset", "results/dpo/round-*/*/dataset")
# Checkpoints can be tens of GB: described file by file with checksums, never copied.
MODELS_DIR = "results/models"
MODEL_DIRS = ("results/models/sft", "results/models/dpo/round-*/*")
# Arguments of the stage CLIs that name what a job wrote (the rest are inputs or settings).
OUTPUT_FLAGS = frozenset({"--out", "--out-dir", "--dropped", "--examples", "--pairs"})
CONDA_ENV_FORMAT = (
    "https://conda.io/projects/conda/en/latest/user-guide/tasks/manage-environments.html"
    "#create-env-file-manually"
)
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


def local_id(rel: str) -> str:
    """Id of something described but not in the crate: a `#` id is a contextual entity, not a payload file."""
    return "#" + quote(rel, safe="/:@-._~")


def _inside(root: Path, path: Path) -> str | None:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return None


def project_rel(root: Path, name: str) -> str | None:
    """A path as a job recorded it (relative to the project, or absolute), relative to `root`."""
    path = Path(name)
    return _inside(root, path if path.is_absolute() else root / path)


class Builder:
    """Adds each path once: the same file can be a main output, a job's result and another job's input."""

    def __init__(self, root: Path, crate: ROCrate):
        self.root = root
        self.crate = crate
        self.files: dict[str, Entity] = {}
        self.copied: list[Path] = []  # what refuse_secrets scans

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
            parts.append(self.crate.add(ContextEntity(self.crate, local_id(file_rel), properties=props)))
        props = {
            "@type": "Dataset",
            "name": rel,
            "description": description,
            "contentSize": str(sum(int(p["contentSize"]) for p in parts)),
        }
        dataset = self.crate.add(ContextEntity(self.crate, local_id(rel.rstrip("/") + "/"), properties=props))
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
        rel = project_rel(self.root, name)
        if rel is not None and rel in self.files and self.files[rel].get("sha256") == sha256:
            return self.files[rel]
        # Outside the project, or changed since the job read it: keep only what the job recorded.
        key = rel if rel is not None else Path(name).as_posix()
        ident = local_id(key)
        existing = self.crate.get(ident)
        if existing is not None and existing.get("sha256") == sha256:
            return existing
        if existing is not None:
            ident = local_id(f"{key}@sha256:{sha256[:16]}")
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


def add_rule_files(b: Builder, workflow: Entity, version: str | None) -> None:
    for smk in sorted((b.root / "workflow" / "rules").glob("*.smk")):
        props = {
            "@type": ["File", "SoftwareSourceCode"],
            "programmingLanguage": workflow["programmingLanguage"],
            "isPartOf": workflow,
            **({"version": version} if version else {}),
        }
        b.add_file(smk.relative_to(b.root).as_posix(), props)


def add_conda_envs(b: Builder, workflow: Entity) -> None:
    envs = sorted((b.root / "envs").glob("*.yaml"))
    if not envs:
        return
    conda = ContextEntity(
        b.crate, CONDA_ENV_FORMAT, properties={"@type": "CreativeWork", "name": "Conda environment file"}
    )
    props = {"description": "Conda env of a rule family", "conformsTo": b.crate.add(conda)}
    for env in envs:
        workflow.append_to("buildInstructions", b.add_file(env.relative_to(b.root).as_posix(), props))


def add_package(b: Builder, commit: str | None) -> Entity:
    """The vpo package, referenced by `commit` when one pins the code that ran, else copied."""
    props: dict[str, Any] = {"@type": "SoftwareSourceCode", "name": "vpo", "programmingLanguage": "Python"}
    if commit:
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
    if not commit:
        for source in sorted((b.root / "workflow" / "vpo").rglob("*.py")):
            if "__pycache__" not in source.parts:
                rel = source.relative_to(b.root).as_posix()
                package.append_to("hasPart", b.add_file(rel, {"@type": ["File", "SoftwareSourceCode"]}))
    return package


def add_configs(b: Builder, config_files: Sequence[Path]) -> list[Entity]:
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


def add_main_outputs(b: Builder) -> list[Entity]:
    outputs = [
        b.add_file(path.relative_to(b.root).as_posix())
        for pattern in MAIN_OUTPUT_GLOBS
        for path in sorted(b.root.glob(pattern))
        if path.is_file()
    ]
    outputs += [
        b.add_tree(rel, f"LLaMA-Factory dataset folder {rel}") for rel in _folders(b.root, MAIN_OUTPUT_TREES)
    ]
    outputs += [b.add_output(rel) for rel in _folders(b.root, MODEL_DIRS)]
    return list({e.id: e for e in outputs}.values())  # a file two patterns match, once


def _folders(root: Path, patterns: tuple[str, ...]) -> list[str]:
    """The folders under `root` that the glob patterns match, relative to it."""
    return [
        p.relative_to(root).as_posix()
        for pattern in patterns
        for p in sorted(root.glob(pattern))
        if p.is_dir()
    ]


def add_job_results(b: Builder, report: JobRecord) -> list[Entity]:
    """A job's report and the outputs beside it."""
    rel = report_rel(b.root, report)
    report_entity = b.add_file(rel, {"description": f"Job report of {report.stage}"})
    return [report_entity, *(b.add_output(o) for o in _beside_outputs(b.root, report))]


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


def refuse_secrets(b: Builder, reports: Sequence[JobRecord]) -> None:
    """The metadata and every copied text file, scanned for credentials before anything is written."""
    metadata_text = json.dumps(b.crate.metadata.generate(), ensure_ascii=False)
    texts = [(str(p), p.read_text(encoding="utf-8", errors="replace")) for p in b.copied if _scannable(p)]
    _check_no_secrets([*texts, (CRATE_METADATA, metadata_text)], reports)


def _scannable(path: Path) -> bool:
    return path.suffix.lower() in TEXT_SUFFIXES and path.stat().st_size <= MAX_SCANNED_BYTES


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
