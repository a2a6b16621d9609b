"""The LLaMA-Factory YAML the training stages write (vpo.stages.train.training_yaml), checked against
LLaMA-Factory's own argument parser, and the model fingerprints that key every cache."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO
from vpo.config.validate import validate_config
from vpo.core.fingerprints import fingerprint, sha256_file, sha256_file_memoized
from vpo.stages.train import training_yaml


def section(config: str, stage: str) -> dict:
    cfg = validate_config(yaml.safe_load((REPO / "config" / config).read_text()), check_files=False)
    return cfg[f"train_{stage}"]


@pytest.mark.parametrize("config", ["config.yaml", "paper.yaml"])
@pytest.mark.parametrize("stage", ["sft", "dpo"])
def test_llamafactory_accepts_every_key_we_write(config, stage, tmp_path):
    from llamafactory.hparams.parser import _parse_train_args

    train = section(config, stage)
    # This machine has no GPU and no DeepSpeed launcher: those two keys are checked below, the rest here
    # by the parser that refuses any key it does not know.
    cpu = {**train, "precision": "fp32", "deepspeed": None}
    args = training_yaml(stage, "base", "data", "set", str(tmp_path / "out"), cpu, seed=7)
    model, data, training, finetuning, _ = _parse_train_args(args)
    assert finetuning.stage == stage and finetuning.finetuning_type == train["finetuning_type"]
    assert training.learning_rate == train["learning_rate"] and training.seed == 7 and data.dataset == ["set"]
    if stage == "dpo":
        assert finetuning.pref_beta == train["pref_beta"] and finetuning.pref_loss == train["pref_loss"]
    assert model.model_name_or_path == "base"


def test_paper_precision_and_deepspeed_reach_the_yaml():
    train = section("paper.yaml", "dpo")
    args = training_yaml("dpo", "base", "data", "set", "out", train, seed=0)
    assert args["bf16"] is True and "fp16" not in args
    assert args["deepspeed"] == train["deepspeed"] and Path(REPO / train["deepspeed"]).is_file()


def test_lora_and_max_steps_appear_only_when_asked():
    full = section("config.yaml", "sft")
    args = training_yaml("sft", "b", "d", "s", "o", {**full, "max_steps": None, "finetuning_type": "full"}, 0)
    assert "max_steps" not in args and "lora_rank" not in args and "pref_beta" not in args
    lora = training_yaml("sft", "b", "d", "s", "o", {**full, "max_steps": 3, "finetuning_type": "lora"}, 0)
    assert lora["max_steps"] == 3 and lora["lora_rank"] == full["lora_rank"] and lora["lora_target"] == "all"


def write_model(folder: Path, weights: bytes) -> Path:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text('{"model_type": "llama"}')
    (folder / "model.safetensors").write_bytes(weights)
    return folder


def test_a_fingerprint_follows_the_weights_not_the_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("VPO_CACHE_DIR", str(tmp_path / "cache"))
    a = write_model(tmp_path / "a", b"weights-1")
    same = fingerprint(str(a))
    assert same.startswith("dir:")
    shutil.copytree(a, tmp_path / "b")
    (tmp_path / "b" / "README.md").write_text("notes do not change what the model computes")
    assert fingerprint(str(tmp_path / "b")) == same
    (tmp_path / "b" / "model.safetensors").write_bytes(b"weights-2")
    assert fingerprint(str(tmp_path / "b")) != same
    assert fingerprint("org/name", "abc") == "hub:org/name@abc"  # a hub id that is no folder
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "README.md").write_text("no weights here")
    with pytest.raises(FileNotFoundError, match="no model files"):
        fingerprint(str(notes))


def test_the_memoized_checksum_is_the_file_checksum_and_is_stored_once(tmp_path, monkeypatch):
    monkeypatch.setenv("VPO_CACHE_DIR", str(tmp_path / "cache"))
    file = tmp_path / "w.bin"
    file.write_bytes(b"x" * 1000)
    assert sha256_file_memoized(file) == sha256_file(file)
    memos = list((tmp_path / "cache" / "sha256").glob("*.json"))
    assert len(memos) == 1
    sha256_file_memoized(file)
    assert list((tmp_path / "cache" / "sha256").glob("*.json")) == memos
