"""Every value a rule puts into its shell command is quoted: a config value holding `$(…)`, a backtick,
`;` or a space reaches the stage as one argument and never runs (tests/integration/test_hostile_config.py
runs every command of the DAG with such values)."""

import re

from tests.conftest import REPO

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
