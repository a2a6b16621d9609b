"""Shared fixtures: tiny random-weight models built from configs (nothing comes from a model hub)."""

from __future__ import annotations

from pathlib import Path

import pytest

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


@pytest.fixture(scope="session")
def tiny_lm(tmp_path_factory) -> Path:
    return build_tiny_lm(tmp_path_factory.mktemp("models") / "tiny-llama")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Everything under tests/integration and tests/slurm is `integration` (it runs Snakemake, a model
    server or a cluster), so that `-m "not integration"` is exactly the fast unit tests."""
    for item in items:
        parts = Path(str(item.fspath)).relative_to(REPO).parts
        if parts[:2] in (("tests", "integration"), ("tests", "slurm")):
            item.add_marker(pytest.mark.integration)
