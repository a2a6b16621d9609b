"""Shared fixtures: tiny random-weight models built from configs (nothing comes from a model hub)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from filelock import FileLock

REPO = Path(__file__).resolve().parents[1]

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
_WORDS = [
    "a",
    "the",
    "cat",
    "dog",
    "video",
    "prompt",
    "query",
    "camera",
    "light",
    "slow",
    "fast",
    "red",
    "blue",
    "sunset",
    "beach",
    "city",
    "night",
    "rain",
    "final",
    "judgement",
    "yes",
    "no",
    "[[start]]",
    "[[end]]",
    "reflection",
    "rules",
    "safety",
    ":",
    ".",
    ",",
    "user",
    "assistant",
    "system",
]


def build_tiny_lm(out: Path) -> Path:
    """A 2-layer Llama with a word-level tokenizer and a ChatML template, saved like a real checkpoint."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["<pad>", "<unk>", "<|im_start|>", "<|im_end|>"]
    vocab = {tok: i for i, tok in enumerate(specials + _WORDS)}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="<pad>",
        unk_token="<unk>",
        eos_token="<|im_end|>",
        bos_token="<|im_start|>",
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        pad_token_id=0,
        bos_token_id=2,
        eos_token_id=3,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config).eval()
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def default_run(tmp_path_factory) -> Path:
    """A clean copy of the project (no built models, no results) with the default DAG run in it, once
    per session: the whole-DAG tests share it, and the Slurm run starts from its item caches."""
    from tests.workflow_run import copy_project, run_snakemake

    root = tmp_path_factory.mktemp("vpo")
    copy_project(root)
    run = run_snakemake(root)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    root.joinpath("first-run.log").write_text(run.stdout + run.stderr)
    return root


# The embedded default's models (recipe -> folder name), as its build rules make them.
DEFAULT_MODELS = {
    "smollm2-gguf": "smollm2-135m-instruct",
    "tiny-cogvideox": "tiny-cogvideox",
    "tiny-vlm": "tiny-vlm",
}


@pytest.fixture(scope="session")
def built_models(tmp_path_factory) -> Path:
    """The default's three models, built once per test run and shared by every pytest-xdist worker (the
    first to ask builds under a file lock; the others wait and reuse). The default run builds its own,
    through its build rules."""
    base = tmp_path_factory.getbasetemp()
    folder = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "built-models"
    with FileLock(f"{folder}.lock"):
        for recipe, name in DEFAULT_MODELS.items():
            if (folder / name).is_dir():
                continue
            partial = folder / f".{name}.partial"
            shutil.rmtree(partial, ignore_errors=True)
            build = [sys.executable, "-m", "vpo.models.build", recipe, "--out", str(partial)]
            subprocess.run(build, check=True, capture_output=True)
            partial.rename(folder / name)
    return folder


@pytest.fixture(scope="session")
def tiny_lm(tmp_path_factory) -> Path:
    return build_tiny_lm(tmp_path_factory.mktemp("models") / "tiny-llama")


# The longest modules, first: scripts/test.sh runs the suite on two pytest-xdist workers (--dist loadgroup,
# in collection order), so these two start at once, one per worker, and the rest fills in behind them.
# test_dag_rounds_targets.py builds on a copy of the default run before test_default_dag.py's last tests
# change that run's files.
LONGEST_FIRST = (
    "tests/slurm/test_slurm.py",
    "tests/integration/test_dag_rounds_targets.py",
    "tests/integration/test_default_dag.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Everything under tests/integration and tests/slurm is `integration` (it runs Snakemake, a model
    server or a cluster), so that `-m "not integration"` is exactly the fast unit tests. Each module is one
    xdist group, so that its module-scoped servers and runs start once, on one worker."""
    for item in items:
        path = Path(str(item.fspath)).relative_to(REPO)
        if path.parts[:2] in (("tests", "integration"), ("tests", "slurm")):
            item.add_marker(pytest.mark.integration)
        item.add_marker(pytest.mark.xdist_group(path.as_posix()))
    rank = {module: i for i, module in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(Path(str(item.fspath)).relative_to(REPO).as_posix(), len(rank)))
