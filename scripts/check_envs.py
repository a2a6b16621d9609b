"""Resolve each conda env's pip pins (envs/*.yaml) as one set, for the env's Python on x86-64 Linux, with
`uv pip compile`: a set that cannot be installed together fails here, in CI, rather than on a cluster
when Snakemake first creates the env. Nothing is installed; only package metadata is downloaded.

    python scripts/check_envs.py [envs/llm.yaml ...]
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
PLATFORM = "x86_64-manylinux_2_28"  # what a GPU cluster's nodes run


def env_python(env: dict, path: Path) -> str:
    for dep in env["dependencies"]:
        if isinstance(dep, str) and dep.startswith("python="):
            return dep.split("=", 1)[1]
    raise SystemExit(f"{path}: no python=X.Y among the conda dependencies")


def pip_pins(env: dict) -> list[str]:
    for dep in env["dependencies"]:
        if isinstance(dep, dict) and "pip" in dep:
            return list(dep["pip"])
    return []


def resolve(path: Path) -> tuple[bool, str]:
    env = yaml.safe_load(path.read_text())
    pins = pip_pins(env)
    uv = Path(sys.executable).with_name("uv")
    command = [str(uv), "pip", "compile", "-", "--python-version", env_python(env, path)]
    command += ["--python-platform", PLATFORM, "--no-header", "--quiet"]
    result = subprocess.run(command, input="\n".join(pins), capture_output=True, text=True, check=False)
    resolved = [line for line in result.stdout.splitlines() if line and not line.startswith(" ")]
    return result.returncode == 0, result.stderr.strip() or f"{len(pins)} pins, {len(resolved)} packages"


def main(argv: list[str]) -> int:
    paths = [Path(a) for a in argv] or sorted((REPO / "envs").glob("*.yaml"))
    failed = []
    for path in paths:
        start = time.monotonic()
        ok, detail = resolve(path)
        print(f"{'ok  ' if ok else 'FAIL'} {path.name:<26} {time.monotonic() - start:5.1f} s  {detail}")
        if not ok:
            failed.append(path.name)
    if failed:
        print(f"check_envs: these envs cannot be installed as pinned: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
