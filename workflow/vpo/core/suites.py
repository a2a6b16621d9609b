"""Benchmark prompt suites by name, read from the installed benchmark package (never copied into the repo).

`vbench:<dimension>` is the list of VBench prompts labelled with that dimension in
`vbench/VBench_full_info.json` of the `vbench` PyPI package (Apache-2.0), in the package's order. The file
is found through the package's metadata, so reading it imports none of VBench's scorers (nor torch).

VBench scores a dimension with its own models; `VBENCH_WEIGHTS` lists the files each dimension loads
from VBench's cache folder (`VBENCH_CACHE_DIR`) and where VBench itself downloads them from. A dimension
with none (temporal_flickering reads pixels only) runs anywhere.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import metadata
from pathlib import Path

VBENCH_PACKAGE = "vbench"
VBENCH_INFO = "vbench/VBench_full_info.json"
# The 16 dimensions of VBench 1.0, each with its own prompt suite in VBench_full_info.json.
VBENCH_DIMENSIONS = (
    "subject_consistency", "background_consistency", "temporal_flickering", "motion_smoothness",
    "dynamic_degree", "aesthetic_quality", "imaging_quality", "object_class", "multiple_objects",
    "human_action", "color", "spatial_relationship", "scene", "temporal_style", "appearance_style",
    "overall_consistency",
)  # fmt: skip

_CLIP_B32 = (
    "clip_model/ViT-B-32.pt",
    "https://openaipublic.azureedge.net/clip/models/"
    "40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af/ViT-B-32.pt",
)
_GRIT = (
    "grit_model/grit_b_densecap_objectdet.pth",
    "https://datarelease.blob.core.windows.net/grit/models/grit_b_densecap_objectdet.pth",
)
_VICLIP = (
    "ViCLIP/ViClip-InternVid-10M-FLT.pth",
    "https://huggingface.co/OpenGVLab/VBench_Used_Models/resolve/main/ViClip-InternVid-10M-FLT.pth",
)
# (path under the cache folder, source URL) per dimension, as vbench 0.1.5 loads them in local mode. A
# None URL is a file VBench gets in a way one download cannot repeat (a git checkout, a zip): put it there
# by hand (README, "VBench").
VBENCH_WEIGHTS: dict[str, tuple[tuple[str, str | None], ...]] = {
    "temporal_flickering": (),
    "background_consistency": (_CLIP_B32,),
    "appearance_style": (_CLIP_B32,),
    "human_action": (
        (
            "umt_model/l16_ptk710_ftk710_ftk400_f16_res224.pth",
            "https://huggingface.co/OpenGVLab/VBench_Used_Models/resolve/main/"
            "l16_ptk710_ftk710_ftk400_f16_res224.pth",
        ),
    ),
    "motion_smoothness": (
        ("amt_model/amt-s.pth", "https://huggingface.co/lalala125/AMT/resolve/main/amt-s.pth"),
    ),
    "aesthetic_quality": (
        (
            "clip_model/ViT-L-14.pt",
            "https://openaipublic.azureedge.net/clip/models/"
            "b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836/ViT-L-14.pt",
        ),
    ),
    "imaging_quality": (
        (
            "pyiqa_model/musiq_spaq_ckpt-358bb6af.pth",
            "https://github.com/chaofengc/IQA-PyTorch/releases/download/v0.1-weights/musiq_spaq_ckpt-358bb6af.pth",
        ),
    ),
    "object_class": (_GRIT,),
    "multiple_objects": (_GRIT,),
    "color": (_GRIT,),
    "spatial_relationship": (_GRIT,),
    "scene": (
        (
            "caption_model/tag2text_swin_14m.pth",
            "https://huggingface.co/spaces/xinyu1205/recognize-anything/resolve/main/tag2text_swin_14m.pth",
        ),
    ),
    "subject_consistency": (
        (
            "dino_model/dino_vitbase16_pretrain.pth",
            "https://dl.fbaipublicfiles.com/dino/dino_vitbase16_pretrain/dino_vitbase16_pretrain.pth",
        ),
        ("dino_model/facebookresearch_dino_main/hubconf.py", None),
    ),
    "dynamic_degree": (("raft_model/models/raft-things.pth", None),),
    "temporal_style": (_VICLIP,),
    "overall_consistency": (_VICLIP,),
}
HUB_FOLDER = "hub"  # under eval.vbench.weights: a hub cache of the models the scorers load by name
# Hub models a dimension's scorer loads by name at run time (Tag2Text and GRiT read BERT's tokenizer, and
# Tag2Text its config, as `bert-base-uncased`): provisioned into `<weights>/hub`, read offline by the jobs.
BERT = "google-bert/bert-base-uncased"
BERT_LEGACY_NAME = "bert-base-uncased"  # the name VBench's code asks for
VBENCH_HUB_MODELS = {
    d: (BERT,) for d in ("scene", "object_class", "multiple_objects", "color", "spatial_relationship")
}
# Python packages a dimension's scorer imports beyond vbench's own requirements (envs/vbench.yaml lists them).
VBENCH_EXTRA_IMPORTS = {
    d: ("detectron2",) for d in ("object_class", "multiple_objects", "color", "spatial_relationship")
}


class SuiteError(ValueError):
    """A suite name that cannot be read; the message names the fix."""


@dataclass(frozen=True)
class SuitePrompt:
    text: str
    position: int  # 1-based position in the package's file
    source: str  # "<package>==<version>:<file>"


def parse_suite(name: str) -> tuple[str, str]:
    """('vbench', dimension) from 'vbench:<dimension>'."""
    family, _, part = name.partition(":")
    if family != "vbench" or part not in VBENCH_DIMENSIONS:
        raise SuiteError(
            f"unknown prompt suite {name!r}. Fix: use vbench:<dimension> with a VBench dimension "
            f"({', '.join(VBENCH_DIMENSIONS)})."
        )
    return family, part


def vbench_info_file() -> tuple[Path, str]:
    """(path of VBench_full_info.json in the installed package, 'vbench==<version>')."""
    try:
        dist = metadata.distribution(VBENCH_PACKAGE)
    except metadata.PackageNotFoundError:
        raise SuiteError(
            "the vbench package is not installed, so the vbench:<dimension> suites cannot be read. "
            "Fix: `pip install --no-deps vbench==0.1.5` (scripts/setup.sh does), or remove eval.suites."
        ) from None
    path = Path(str(dist.locate_file(VBENCH_INFO)))
    if not path.is_file():
        raise SuiteError(f"vbench {dist.version} ships no {VBENCH_INFO}. Fix: install vbench==0.1.5.")
    return path, f"{VBENCH_PACKAGE}=={dist.version}"


def suite_source(label: str) -> str:
    """What a suite prompt's record names as its source file: '<package>==<version>:<file>'."""
    return f"{label}:{VBENCH_INFO}"


@cache
def load_entries(path: str | Path) -> tuple[dict, ...]:
    return tuple(json.loads(Path(path).read_text(encoding="utf-8")))


def suite_prompts(
    name: str, limit: int | None = None, info_file: str | Path | None = None, source: str | None = None
) -> list[SuitePrompt]:
    """The prompts of one suite in the file's order (the first `limit` when it is set), from `info_file`
    (default: the installed package's, `source` then read from its metadata)."""
    _, dimension = parse_suite(name)
    if info_file is None:
        info_file, label = vbench_info_file()
        source = suite_source(label)
    prompts = [
        SuitePrompt(e["prompt_en"], n, source or str(info_file))
        for n, e in enumerate(load_entries(info_file), start=1)
        if dimension in e["dimension"]
    ]
    return prompts[:limit] if limit is not None else prompts


def find_entry(info_file: str | Path, prompt: str, dimension: str) -> dict | None:
    """The file's entry for a (normalized) prompt labelled with `dimension`: its dimensions and the
    auxiliary info that the object, scene, colour and style scorers read. None if there is none."""
    from vpo.core.ids import normalize_text

    for entry in load_entries(info_file):
        if dimension in entry["dimension"] and normalize_text(entry["prompt_en"]) == prompt:
            return dict(entry)
    return None


def weight_files(dimension: str) -> tuple[tuple[str, str | None], ...]:
    return VBENCH_WEIGHTS.get(dimension, ())


def needs_downloads(dimension: str) -> bool:
    """Whether the dimension's scorer loads anything that rule provision_vbench must fetch first."""
    return bool(weight_files(dimension) or VBENCH_HUB_MODELS.get(dimension))


def suite_dimension(name: str) -> str:
    return parse_suite(name)[1]
