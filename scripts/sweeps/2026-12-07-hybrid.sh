#!/bin/bash
# Issue 13: does the hybrid teacher (RRF of BM25 and the student over the whole corpus; scripts/hybrid_labels.py)
# make the student better? Dev only, seed 42, plain queries, one pass (steps auto). Each trial relabels the
# session's SmolLM2 FRet set of the dataset (out/DS-full/fret-changes.jsonl, rebuilt from the committed LLM
# cache) and trains on its examples as given (`--labels hard`).
#   DATASETS="cranfield cisi" TRIALS="consistent:5 consistent:20 top3:20" BIN=... scripts/sweeps/2026-12-07-hybrid.sh
#   SOFT=1 TRIALS= DATASETS=cranfield BIN=... scripts/sweeps/2026-12-07-hybrid.sh   (the soft trial alone)
cd "$(dirname "$0")/../.."
B=${BIN:-target/debug/fretflow}
export PYTHONPATH=${PYTHONPATH:-}
for ds in ${DATASETS:-cranfield cisi}; do
  for trial in ${TRIALS-consistent:5}; do
    keep=${trial%:*}; from=${trial#*:}
    fret=out/hybrid/$ds-$keep-n$from.jsonl
    .venv/bin/python scripts/hybrid_labels.py --dataset ${DATA:-../shared/data}/$ds --fret out/$ds-full/fret-changes.jsonl \
      --keep $keep --negative-from $from --out $fret || exit 1
    .venv/bin/python scripts/beir_finetune.py --dataset ${DATA:-../shared/data}/$ds --fret $fret --labels hard \
      --query-format plain --seeds ${SEEDS:-42} --dev-only --bin $B --out out/finetune/s13-$ds-hyb-$keep-n$from${SEEDS:+-s${SEEDS//,/}} || exit 1
  done
done
# Soft labels: the hybrid ranking distilled over the seed and the hybrid ranks 2-8 (7 negatives), listwise KL
# at the trainer's default weight 0.5 and temperature 0.001 (`SOFT=1`; the consistent examples only).
if [ -n "${SOFT:-}" ]; then
  for ds in ${DATASETS:-cranfield cisi}; do
    fret=out/hybrid/$ds-consistent-n2x7.jsonl
    .venv/bin/python scripts/hybrid_labels.py --dataset ${DATA:-../shared/data}/$ds --fret out/$ds-full/fret-changes.jsonl \
      --keep consistent --negative-from 2 --negatives 7 --out $fret || exit 1
    .venv/bin/python scripts/beir_finetune.py --dataset ${DATA:-../shared/data}/$ds --fret $fret --labels soft \
      --hard-negatives 7 --query-format plain --seeds ${SEEDS:-42} --dev-only --bin $B --out out/finetune/s13-$ds-hyb-soft-n2x7 || exit 1
  done
fi
