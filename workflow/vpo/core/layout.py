"""Where things are: the repository's own folders, and the results/ tree every stage writes.

The rules name the same paths (Snakemake wants literal patterns); the readers (run report, audit,
RO-Crate, status) take them from here, so a move is made in two places that a test compares.
"""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[3]
WORKFLOW_DIR = REPO_ROOT / "workflow"
SCHEMA_DIR = WORKFLOW_DIR / "schemas"
PROMPTS_DIR = REPO_ROOT / "resources" / "prompts"
