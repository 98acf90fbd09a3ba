#!/bin/bash
# Dev-only trials, session 12: more passes and a larger lr, seed labels, plain queries, seed 42.
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
