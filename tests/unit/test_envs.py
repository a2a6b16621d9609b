"""The per-rule conda envs: they parse, pin every package exactly, agree with the project's pins, and
every rule names one that exists (conda cannot be installed on the CI machines, so this is what
can be checked without building them)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
ENVS = sorted((REPO / "envs").glob("*.yaml"))
# VisionReward-Video's remote code needs the 2024 stack; these may differ from requirements.txt there.
OWN_STACK = {
    "reward-visionreward.yaml": {
        "torch",
        "torchvision",
        "transformers",
        "tokenizers",
        "safetensors",
        "huggingface-hub",
        "accelerate",
        "numpy",
        "pillow",
        "xformers",
        "sentencepiece",
        "pytorchvideo",
        "einops",
    },
    "vllm.yaml": {"vllm"},  # pins its own torch and transformers
    # vbench pins transformers 4.33.2 and numpy 1.x; the rest is its own scoring stack.
    "vbench.yaml": {
        "vbench",
        "torch",
        "torchvision",
        "numpy",
        "transformers",
        "timm",
        "decord",
        "openai-clip",
        "opencv-python",
    },
}
PIN = re.compile(r"^([A-Za-z0-9_.\-\[\]]+)==([A-Za-z0-9_.+\-]+)$")


def project_pins() -> dict[str, str]:
    pins = {}
    for name in ("requirements.txt", "requirements-dev.txt"):
        for line in (REPO / name).read_text().splitlines():
            line = line.split("#")[0].strip()
            if line:
                package, version = line.split("==")
                pins[package.lower()] = version
    return pins


def pip_entries(env: dict) -> list[str]:
    for dep in env["dependencies"]:
        if isinstance(dep, dict) and "pip" in dep:
            return dep["pip"]
    return []


@pytest.mark.parametrize("path", ENVS, ids=lambda p: p.name)
def test_env_pins_every_package(path):
    env = yaml.safe_load(path.read_text())
    assert env["channels"] == ["conda-forge", "nodefaults"]
    conda = [d for d in env["dependencies"] if isinstance(d, str)]
    assert all(re.fullmatch(r"[a-z0-9\-]+=[0-9.]+", d) for d in conda), conda
    entries = pip_entries(env)
    # The Snakefile puts the package on the jobs' PYTHONPATH; an installed copy (`-e ../..`) would break
    # under --conda-prefix, where the env file is read from elsewhere, and would shadow code changes.
    assert not [e for e in entries if e.startswith("-e") or "/" in e], "no local installs in an env"
    unpinned = [e for e in entries if not PIN.match(e)]
    assert unpinned == []


@pytest.mark.parametrize("path", ENVS, ids=lambda p: p.name)
def test_env_agrees_with_project_pins(path):
    pins = project_pins()
    exempt = OWN_STACK.get(path.name, set())
    for entry in pip_entries(yaml.safe_load(path.read_text())):
        match = PIN.match(entry)
        if not match or match.group(1).lower() in exempt:
            continue
        package, version = match.group(1).lower(), match.group(2)
        assert package in pins, f"{path.name}: {package} is not pinned in requirements.txt"
        assert pins[package] == version, (
            f"{path.name}: {package}=={version}, requirements.txt has {pins[package]}"
        )


def test_every_rule_names_an_existing_env():
    """A literal path, or its backend's env (`backend_env`, from the tables tests/unit/test_backends.py
    checks)."""
    rule = re.compile(r"^\s*rule(?:\s+(\w+))?:", re.M)
    for smk in sorted((REPO / "workflow/rules").glob("*.smk")):
        text = smk.read_text()
        blocks = rule.split(text)[1:]
        for name, body in zip(blocks[::2], blocks[1::2], strict=True):
            envs = re.findall(r'conda:\s*\n\s*(?:\(\s*)?f?"([^"]+)"', body)
            from_table = re.search(r'conda:\s*\n\s*backend_env\("(t2v|reward)"\)', body)
            assert envs or from_table, f"{smk.name}: rule {name or '(loop)'} has no conda env"
            for env in envs:
                if "{" not in env:
                    assert (smk.parent / env).resolve().is_file(), f"{smk.name}: {env} missing"
