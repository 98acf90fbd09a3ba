#!/usr/bin/env bash
# The judge-quality table of issue 13: every judge x dataset, QL, RC and their fusions, all judged queries
# (scripts/judge_quality.py; human queries for measurement only). Long: on 2 cores ~0.3 s (SmolLM2-135M),
# ~1 s (Qwen2.5-Coder-0.5B) and ~3.3 s (1.5B) per pair and score kind; each run keeps its durable LLM
# cache in out/judge-quality/<dataset>-<judge>/, so a rerun or an interrupted run continues for free.
# Reports are copied to docs/results/judge-quality/ for committing.
#   JUDGES="qwen2.5-coder-0.5b SmolLM2-135M-Instruct" DATASETS="cisi cranfield" scripts/judge_quality_all.sh
# BIN=path runs a copy of the binary (so that rebuilding target/ during an hour-long run does not touch it).
set -euo pipefail
cd "$(dirname "$0")/.."
JUDGES="${JUDGES:-qwen2.5-coder-0.5b SmolLM2-135M-Instruct}"
DATASETS="${DATASETS:-cisi cranfield}"
mkdir -p docs/results/judge-quality out/judge-quality
for judge in $JUDGES; do
  for ds in $DATASETS; do
    out="out/judge-quality/$ds-$judge"
    echo "== $judge on $ds ($(date -u +%H:%M:%S))"
    .venv/bin/python scripts/judge_quality.py --dataset "../shared/data/$ds" --judge-model "$judge" --out "$out" \
      --bin "${BIN:-target/debug/fretflow}" \
      > "$out.log" 2>&1 || { echo "failed: see $out.log"; continue; }
    tail -n 12 "$out.log"
    cp "$out/report.json" "docs/results/judge-quality/$ds-$judge.json"
  done
done
