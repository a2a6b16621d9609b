"""Execution-only keys (batch sizes, concurrency, memory switches) leave the rules' params and still reach
the jobs, through the run options the Snakefile exports."""

from __future__ import annotations

import json

import pytest
import yaml

from tests.conftest import REPO
from vpo.config.resolve import checkpoint_spec, llm_spec, reward_spec, t2v_spec
from vpo.config.validate import validate_config
from vpo.core.run_options import (
    RUN_OPTIONS_ENV,
    SECTION_KEYS,
    run_options,
    section_options,
    with_execution_options,
    with_run_options,
    without_run_options,
)


def config(name: str) -> dict:
    return validate_config(yaml.safe_load((REPO / "config" / name).read_text()), check_files=False)


@pytest.mark.parametrize("name", ["config.yaml", "paper.yaml"])
def test_execution_keys_leave_every_spec_the_rules_make_params_of(name):
    cfg = config(name)
    params, options = without_run_options(cfg), run_options(cfg)
    (target,) = cfg["targets"]
    specs = {
        "sample": checkpoint_spec(cfg, "results/models/sft"),
        "t2v": t2v_spec(cfg, target),
        "reward": reward_spec(cfg, target),
    }
    for section, keys in SECTION_KEYS.items():
        assert options[section] == {key: cfg[section][key] for key in keys}
        assert not set(keys) & set(params[section]), section
        assert not set(keys) & set(specs[section]), section
        if section in ("t2v", "reward"):  # each target's own, exported the same way
            assert options["targets"][target][section] == {
                key: cfg["targets"][target][section][key] for key in keys
            }
            assert not set(keys) & set(params["targets"][target][section]), section
    assert with_run_options(params, options) == cfg  # nothing else went missing


def test_a_job_takes_the_exported_values_else_the_schemas_defaults(monkeypatch):
    monkeypatch.delenv(RUN_OPTIONS_ENV, raising=False)
    memory = {"cpu_offload": False, "vae_slicing": False, "vae_tiling": False}
    assert section_options("t2v", {"fps": 8}) == {"batch_size": 1, "memory": memory, "fps": 8}

    cfg = config("paper.yaml")
    monkeypatch.setenv(RUN_OPTIONS_ENV, json.dumps(run_options(cfg)))
    assert section_options("reward", reward_spec(cfg, "cogvideox-2b"))["batch_size"] == 8
    t2v = section_options("t2v", {**t2v_spec(cfg, "cogvideox-2b"), "batch_size": 3})
    assert t2v["memory"] == cfg["t2v"]["memory"] and t2v["batch_size"] == 3  # a spec's own value wins


def test_each_target_takes_its_own_exported_values(monkeypatch):
    cfg = config("paper.yaml")
    layer = yaml.safe_load((REPO / "config/paper-targets.yaml").read_text())
    raw = yaml.safe_load((REPO / "config/paper.yaml").read_text())
    raw["models"] |= layer["models"]
    raw["targets"] = layer["targets"]
    raw["targets"]["cogvideox-5b"]["t2v"]["batch_size"] = 2
    cfg = validate_config(raw, check_files=False)
    monkeypatch.setenv(RUN_OPTIONS_ENV, json.dumps(run_options(cfg)))
    assert section_options("t2v", t2v_spec(cfg, "cogvideox-5b"), "cogvideox-5b")["batch_size"] == 2
    assert section_options("t2v", t2v_spec(cfg, "cogvideox-2b"), "cogvideox-2b")["batch_size"] == 1
    # The 5B target's own render settings over paper.yaml's t2v; what it does not set, as for 2B.
    five = t2v_spec(cfg, "cogvideox-5b")
    assert (five["dtype"], five["use_dynamic_cfg"], five["height"]) == ("bfloat16", True, 480)
    assert cfg["targets"]["cogvideox-5b"]["t2v"]["memory"] == cfg["t2v"]["memory"]


def test_an_llm_spec_gets_the_options_of_its_llms_entry_or_of_its_section(monkeypatch):
    cfg = config("paper.yaml")
    monkeypatch.setenv(RUN_OPTIONS_ENV, json.dumps(run_options(cfg)))
    policy = with_execution_options(checkpoint_spec(cfg, "results/models/dpo"))
    assert policy["max_concurrency"] == cfg["sample"]["max_concurrency"] == 64
    assert policy["batch_size"] == cfg["sample"]["batch_size"]
    name = cfg["critique"]["llm"]
    judge = with_execution_options(llm_spec(cfg, name))
    assert judge["max_concurrency"] == cfg["llms"][name]["max_concurrency"]
    by_hand = {"backend": "hf", "model_path": "x", "batch_size": 2}  # `vpo rewrite`: carries its own
    assert with_execution_options(by_hand) == by_hand
