"""Identity of files and model weights: sha256 of a file, fingerprint of a model folder or hub snapshot.

A fingerprint decides cache keys and provenance: the same weights give the same fingerprint wherever
they lie, and any change to what a model computes (weights, code, configs, tokenizer) changes it.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from vpo.core.ids import digest
from vpo.core.io import write_json
from vpo.core.layout import CACHE_DIR

# Weights, and remote code (`trust_remote_code` models run the folder's own .py files).
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".gguf", ".py")
_META_FILES = (
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "chat_template.jinja",
    "adapter_config.json",
    "model_index.json",  # diffusers pipelines: which components, which classes
    "scheduler_config.json",
    "preprocessor_config.json",
    "processor_config.json",
    "video_preprocessor_config.json",
    "special_tokens_map.json",
    "spiece.model",  # T5 sentencepiece vocabulary (CogVideoX text encoder)
)


def sha256_file(path: str | os.PathLike) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            sha.update(block)
    return sha.hexdigest()


def fingerprint(source: str, revision: str | None = None) -> str:
    """Identity of a model's weights: content hash for local folders, id + revision for hub ids.

    A hub snapshot provisioned by `vpo.models.provision` reads `hub:<repo>@<commit>|dir:<hash>`, the
    hash taken from the sha256s its manifest lists (the same hash a plain copy of the folder gets).
    Hashes of large weight files are memoized (`sha256_file_memoized`).
    """
    path = Path(source)
    if not path.exists():
        return f"hub:{source}@{revision or 'default'}"
    if path.is_file():
        return f"file:{sha256_file_memoized(path)[:16]}"
    hub = hub_fingerprint(path)
    if hub is not None:
        return hub
    parts = []
    for file in sorted(path.rglob("*")):
        rel = file.relative_to(path).as_posix()
        if file.is_file() and is_model_file(rel):
            parts.append((rel, sha256_file_memoized(file)))
    if not parts:
        raise FileNotFoundError(f"{path}: no model files (config.json, *.safetensors) found")
    return f"dir:{digest(parts)}"


def is_model_file(rel: str) -> bool:
    """Files that decide what a model computes (weights, code, configs, tokenizer), not its README."""
    name = rel.rsplit("/", 1)[-1]
    return not rel.startswith("checkpoint-") and (name in _META_FILES or name.endswith(_WEIGHT_SUFFIXES))


def hub_fingerprint(folder: str | os.PathLike) -> str | None:
    """The fingerprint of a provisioned hub snapshot, from its manifest; None for any other folder."""
    from vpo.models.provision import check_snapshot, read_manifest

    manifest = read_manifest(folder)
    if manifest is None:
        return None
    check_snapshot(folder, manifest)
    parts = [(f["path"], f["sha256"]) for f in manifest["files"] if is_model_file(f["path"])]
    if not parts:
        raise FileNotFoundError(
            f"{folder}: no model files (config.json, *.safetensors) in {manifest['manifest']}"
        )
    commit = manifest.get("commit", manifest["revision"])  # what a branch revision resolved to
    return f"hub:{manifest['repo']}@{commit}|dir:{digest(parts)}"


def sha256_file_memoized(file: Path) -> str:
    """`sha256_file`, memoized by (path, size, mtime) under the cache: a 16 GB checkpoint is hashed once."""
    stat = file.stat()
    memo_dir = Path(os.environ.get("VPO_CACHE_DIR", CACHE_DIR)) / "sha256"
    memo = memo_dir / f"{digest(str(file.resolve()), stat.st_size, stat.st_mtime_ns)}.json"
    if memo.exists():
        return json.loads(memo.read_text())["sha256"]
    sha = sha256_file(file)
    write_json(memo, {"path": str(file), "sha256": sha})
    return sha
