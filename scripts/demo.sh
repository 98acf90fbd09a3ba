#!/usr/bin/env bash
# The main job on the embedded default (make demo). Everything it reads ships in the repository or is
# installed by scripts/setup.sh; everything it writes goes to out/.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=target/debug/fretflow
mkdir -p out

echo "== 1. Embed the sample corpus (all-MiniLM-L6-v2 in tch) -> out/sample-embeddings.parquet"
$BIN embed --model all-MiniLM-L6-v2 --input data/sample/corpus.jsonl --output out/sample-embeddings.parquet

echo "== 2. Evaluate the base model on the sample's judged queries -> out/eval/"
$BIN eval --model all-MiniLM-L6-v2 --dataset data/sample --output out/eval/sample-base.json
