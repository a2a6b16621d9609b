#!/usr/bin/env bash
# Set up the pinned environment with the dev tools, lint, then run the test suite.
# Arguments go to pytest: scripts/test.sh -m "not integration"
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --dev
export PATH="$PWD/.venv/bin:$PATH"

ruff check .
ruff format --check .
snakefmt --check Snakefile workflow/rules
snakemake --lint
pytest "$@"
