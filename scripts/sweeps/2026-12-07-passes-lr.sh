#!/bin/bash
# Dev-only trials, session 12: more passes and a larger lr, seed labels, plain queries, seed 42.
# Run on 2026-12-07 (rows in docs/results/finetune.md): cisi 84 and 126 steps, cranfield 78 steps and lr 2e-5.
# Not run: cranfield 117 steps (78 was already below 39) and cisi lr 2e-5 (stopped to give the CPU to the
# Qwen generator run); a later session can run them as they stand.
cd "$(dirname "$0")/../.."
# BIN: a copy of target/debug/fretflow, so rebuilding during the sweep does not change it.
B=${BIN:-target/debug/fretflow}
run() { ds=$1; shift; name=$1; shift
  .venv/bin/python scripts/beir_finetune.py --dataset ${DATA:-../shared/data}/$ds --fret out/$ds-full/fret-changes.jsonl \
    --labels seed --query-format plain --seeds 42 --dev-only --bin $B --out out/finetune/s12-$ds-$name-dev "$@" ; }
run cisi steps84 --steps 84
run cranfield steps78 --steps 78
run cisi steps126 --steps 126
run cranfield steps117 --steps 117
run cisi lr2e-5 --lr 2e-5
run cranfield lr2e-5 --lr 2e-5
