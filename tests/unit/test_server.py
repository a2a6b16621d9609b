"""The argv of the model servers a job starts: every documented vLLM setting reaches `vllm serve`, as
separate arguments (never through a shell), and the CPU engine gets the flag its seeded sampling needs."""

import pytest
import yaml

from tests.conftest import REPO
from vpo.config.validate import validate_config
from vpo.llm.server import server_command, vllm_defaults


def test_vllm_settings_become_server_arguments():
    settings = {
        "tensor_parallel_size": 4, "max_model_len": 4096, "gpu_memory_utilization": 0.85, "dtype": "bfloat16",
        "enable_prefix_caching": False, "seed": 7, "extra_args": ["--enforce-eager", "--max-num-seqs", "64"],
    }  # fmt: skip
    cmd = server_command(
        "vllm", "/ckpt/sft model", 8123, vllm=settings, device="cuda", vllm_python="/env/bin/python"
    )
    assert cmd[:3] == ["/env/bin/python", "-m", "vllm.entrypoints.openai.api_server"]
    pairs = dict(zip(cmd[3:-4:2], cmd[4:-4:2], strict=True))
    assert pairs == {
        "--model": "/ckpt/sft model", "--served-model-name": "/ckpt/sft model", "--host": "127.0.0.1",
        "--port": "8123", "--tensor-parallel-size": "4", "--dtype": "bfloat16",
        "--gpu-memory-utilization": "0.85", "--seed": "7", "--max-model-len": "4096",
    }  # fmt: skip
    assert cmd[-4:] == ["--no-enable-prefix-caching", "--enforce-eager", "--max-num-seqs", "64"]
    assert "--no-enable-chunked-prefill" not in cmd


def test_cpu_engine_runs_without_chunked_prefill_and_defaults_match_the_schema():
    cmd = server_command("vllm", "m", 1, device="cpu", vllm_python="py")
    assert "--no-enable-chunked-prefill" in cmd and "--max-model-len" not in cmd
    assert "--enable-prefix-caching" in cmd
    config = yaml.safe_load((REPO / "config/config.yaml").read_text())
    config["sample"].update(backend="openai", serve="vllm")
    defaults = validate_config(config, check_files=False)["sample"]["vllm"]
    assert defaults == vllm_defaults() and defaults["gpu_memory_utilization"] is None


def test_unknown_server_kind():
    with pytest.raises(ValueError, match="expected transformers or vllm"):
        server_command("tgi", "m", 1)


@pytest.fixture
def stand_in_server(monkeypatch, tmp_path):
    """`python -m http.server` over a folder holding `health`: a process that answers the health probe,
    standing in for a model server so the job-side lifecycle is tested in a second."""
    import sys

    import vpo.llm.server as server

    (tmp_path / "health").write_text("ok")

    def command(kind: str, model: str, port: int, **settings) -> list[str]:
        return [
            sys.executable,
            "-m",
            "http.server",
            str(port),
            "--bind",
            "127.0.0.1",
            "--directory",
            str(tmp_path),
        ]

    monkeypatch.setattr(server, "server_command", command)
    return server


def test_a_server_that_dies_during_the_job_fails_the_job(stand_in_server, tmp_path):
    import os
    import signal

    died = pytest.raises(stand_in_server.ServerDied, match="exited with code -9 while the job ran")
    with died, stand_in_server.local_server("vllm", "m", log_path=tmp_path / "server.log") as server:
        assert server.exit_code() is None
        os.killpg(server.process.pid, signal.SIGKILL)
        server.process.wait()
        assert server.exit_code() == -signal.SIGKILL


def test_a_server_that_lives_is_stopped_quietly(stand_in_server, tmp_path):
    with stand_in_server.local_server("vllm", "m") as server:
        process = server.process
    assert process.returncode is not None
