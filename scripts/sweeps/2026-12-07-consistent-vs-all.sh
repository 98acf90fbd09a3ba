#!/bin/bash
# `all` examples (hard labels) against the consistent ones (`seed`) at equal steps, dev only, seed 42,
# plain queries: the comparison that decides `fretflow train --examples`'s default. Equal steps = one pass
# over the consistent examples (cisi 42, cranfield 39); the seed rows at those steps are already in
# docs/results/finetune.md (cisi 0.5053 as seed 42 of the 3-seed run, cranfield 0.3803).
cd "$(dirname "$0")/../.."
B=${BIN:-target/debug/fretflow}
for pair in cisi:42 cranfield:39; do
  ds=${pair%:*}; steps=${pair#*:}
  .venv/bin/python scripts/beir_finetune.py --dataset ${DATA:-../shared/data}/$ds --fret out/$ds-full/fret-changes.jsonl \
    --labels hard --steps $steps --query-format plain --seeds ${SEEDS:-42} --dev-only --bin $B --out out/finetune/s12-$ds-hard-$steps-dev${SEEDS:+-s${SEEDS/,/}}
done
# Then seeds 1 and 2 (SEEDS=1,2; the seed rows of those seeds are the 3-seed runs of session 11).
