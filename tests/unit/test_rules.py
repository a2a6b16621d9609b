"""What the rules put into their shell commands. Every value is quoted: a config value holding `$(…)`, a
backtick, `;` or a space reaches the stage as one argument and never runs (tests/integration/
test_hostile_config.py runs every command of the DAG with such values). No param holds an execution-only
key (vpo.core.run_options)."""

import json
import re
import shlex
import subprocess
import sys

from tests.conftest import REPO
from vpo.core.run_options import EXECUTION_KEYS, SECTION_KEYS

PLACEHOLDER = re.compile(r"(?<!\{)\{(?!\{)([^{}]+)\}(?!\})")


def shell_strings(text: str) -> list[str]:
    """The string literals of every `shell:` directive (adjacent literals, as Snakemake joins them)."""
    strings = []
    for block in re.findall(r"^\s+shell:\n((?:\s+(?:\"[^\n]*\"|'[^\n]*')\n)+)", text, re.M):
        strings.append("".join(re.findall(r"\"([^\n]*)\"", block)))
    return strings


def test_every_shell_placeholder_is_quoted():
    files = [REPO / "Snakefile", *sorted((REPO / "workflow/rules").glob("*.smk"))]
    commands = [(f.name, s) for f in files for s in shell_strings(f.read_text())]
    assert len(commands) == sum(f.read_text().count("shell:") for f in files) > 20
    unquoted = [
        (name, field) for name, s in commands for field in PLACEHOLDER.findall(s) if not field.endswith(":q")
    ]
    assert unquoted == []


def test_no_rule_param_holds_an_execution_key():
    """Batch sizes, concurrency and memory switches reach the jobs as run options, never as params: a
    change to one must not re-run a job (tests/integration/test_default_dag.py checks the re-runs)."""
    command = [sys.executable, "-m", "snakemake", "all", "-n", "-F", "-p", "--nolock", "--cores", "1"]
    command += ["--directory", str(REPO), "--workflow-profile", "none"]
    run = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=False)
    assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]
    commands = [
        line.removeprefix("Shell command: ") for line in run.stdout.splitlines() if "Shell command:" in line
    ]
    specs = [json.loads(arg) for line in commands for arg in shlex.split(line) if arg.startswith("{")]
    assert len(specs) > 40  # LLM, T2V and reward specs, training settings, the run report's config
    assert any("answer_mode" in s for s in specs) and any("num_frames" in s for s in specs)
    execution = {key for keys in SECTION_KEYS.values() for key in keys} | set(EXECUTION_KEYS)
    assert {key for spec in specs for key in keys_of(spec)} & execution == set()


def keys_of(value: object) -> set[str]:
    """Every key of a JSON value, at any depth."""
    if isinstance(value, dict):
        return set(value) | {k for v in value.values() for k in keys_of(v)}
    if isinstance(value, list):
        return {k for v in value for k in keys_of(v)}
    return set()
