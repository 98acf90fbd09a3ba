#!/usr/bin/env bash
# Every benchmark, one after the other, each printing its ratio against the named peer on this machine
# (make bench). Run it on an otherwise idle machine; `make bench-deps` installs llama-cpp-python for the
# LLM comparison (without it the LLM benchmark prints fretflow's numbers alone).
#
#   encode    fretflow embed vs sentence-transformers (cranfield corpus)        target >= 1.3x
#   llm       local tch LLM vs llama.cpp on the same GGUF (generation, QL)      target >= 1x batched QL
#   dataflow  fretflow run with an instant LLM: passages/s, share outside LLM   target <= 5% overhead
#   kafka     topic -> topic pass-through vs Kafka's ConsumerPerformance
#   train     fretflow train vs sentence-transformers MNRL                       target >= 1.2x
#   retrieve  sharded top-N retrieval at 1/2/4 workers; vs faiss IndexFlatIP      target >= 0.8x
#   remote    remote LLM backend vs llama-cpp-python's server: busy share at c = 1/2/4/8  target >= 95%
#
#   scripts/bench.sh [encode llm dataflow kafka train retrieve remote]    # default: all
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
which=("$@")
[[ ${#which[@]} -gt 0 ]] || which=(encode llm dataflow kafka train retrieve remote)
for bench in "${which[@]}"; do
  echo "==== $bench ($(date -u +%H:%M:%S), load average $(cut -d' ' -f1-3 /proc/loadavg))"
  case "$bench" in
    encode) $PY scripts/bench_encode.py ;;
    llm) $PY scripts/bench_llm.py ;;
    dataflow) scripts/bench_dataflow.sh ;;
    kafka) scripts/bench_kafka.sh ;;
    train) $PY scripts/bench_train.py ;;
    retrieve) cargo build --quiet --example bench_retrieve && $PY scripts/bench_retrieve.py ;;
    remote) $PY scripts/bench_remote.py ;;
    *) echo "bench.sh: unknown benchmark '$bench' (encode llm dataflow kafka train retrieve remote)" >&2; exit 2 ;;
  esac
done
