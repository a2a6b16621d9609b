"""What a paper-shaped run needs around it on a machine without network: the tiny models on a local hub,
a real model behind the OpenAI fixture's Batch API answering as `gpt-4o`, and config/paper.yaml layered
with tests/slurm/paper_cpu.yaml (placeholders filled with the fixtures' addresses)."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.fixtures.hub_fixture_server import FixtureHub
from tests.fixtures.openai_fixture_server import FixtureServer, forward_to
from vpo.llm.server import local_server

REPO = Path(__file__).resolve().parents[2]
OVERRIDES = REPO / "tests/slurm/paper_cpu.yaml"
VLLM_PYTHON = os.environ.get("VPO_VLLM_PYTHON") or str(REPO / ".venv-vllm/bin/python")
# paper.yaml's hub models → the recipe that builds a CPU-sized stand-in, and its repo on the local hub.
STAND_INS = {
    "policy": ("smollm2-gguf", "smollm2-135m-instruct", "vpo-ci/smollm2-135m-instruct"),
    "t2v": ("tiny-cogvideox", "tiny-cogvideox", "vpo-ci/tiny-cogvideox"),
    "reward": ("tiny-vlm", "tiny-vlm", "vpo-ci/tiny-vlm"),
}
# The judge's stand-in server: the CPU engine, eager (ready in ~50 s), small KV cache.
JUDGE_VLLM = {
    "dtype": "float32",
    "max_model_len": 2048,
    "cpu_kv_cache_gib": 1,
    "extra_args": ["--enforce-eager"],
}


def require_vllm() -> None:
    if not Path(VLLM_PYTHON).exists():
        missing = f"no vLLM environment at {VLLM_PYTHON} (bash scripts/setup.sh --vllm)"
        if os.environ.get("CI") == "true":  # CI installs it: a skip there would hide a broken install
            pytest.fail(missing)
        pytest.skip(missing)


def stand_in_models(built: Path) -> dict[str, Path]:
    """The three tiny model folders by role, from the test run's built models (tests/conftest.py)."""
    return {role: built / name for role, (_, name, _) in STAND_INS.items()}


@dataclass
class PaperServices:
    hub: FixtureHub
    openai: FixtureServer
    env: dict[str, str]  # what the Snakemake process (and, through sbatch --export=ALL, its jobs) gets


@contextlib.contextmanager
def paper_services(models: dict[str, Path], logs: Path) -> Iterator[PaperServices]:
    """The hub with the stand-ins, vLLM serving the policy stand-in as the judge, the OpenAI fixture
    forwarding every online request and batch line to it."""
    repos = {STAND_INS[role][2]: path for role, path in models.items()}
    with (
        FixtureHub(repos) as hub,
        local_server(
            "vllm", str(models["policy"]), log_path=logs / "judge-vllm.log", device="cpu",
            vllm=JUDGE_VLLM, vllm_python=VLLM_PYTHON,
        ) as judge,
        FixtureServer(answer=forward_to(judge.url, model=str(models["policy"])), batch_workers=8) as openai,
    ):  # fmt: skip
        env = {
            **os.environ,
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
            "HF_ENDPOINT": hub.url,
            "OPENAI_API_KEY": "sk-fixture-not-a-secret",
        }
        # Where Snakemake starts, the hub is reachable (the provision rules download); stage code run
        # in this test process earlier may have set the jobs' HF_HUB_OFFLINE in its environment.
        env.pop("HF_HUB_OFFLINE", None)
        yield PaperServices(hub, openai, env)


def write_overrides(root: Path, services: PaperServices) -> Path:
    """tests/slurm/paper_cpu.yaml with its placeholders filled, into the project copy."""
    values = {"openai_url": services.openai.url, "vllm_python": VLLM_PYTHON}
    for role, (_, _, repo) in STAND_INS.items():
        values[f"{role}_repo"] = repo
        values[f"{role}_revision"] = services.hub.commits[repo]
    text = OVERRIDES.read_text()
    for key, value in values.items():
        text = text.replace("{" + key + "}", value)
    out = root / "config/paper_cpu.yaml"
    out.write_text(text)
    yaml.safe_load(text)  # still valid YAML
    return out
