#!/bin/bash
# Is the generator what limits cranfield? Dev-only trials, seed 42, plain queries: the same seed passages
# (those pipelines/cranfield-qwen-gen.toml has an example for, so a run cut short still compares), each
# example's seed passage as its positive (`seed_all`: neither judge decides the label), the same steps.
#   hn 0: in-batch negatives only, so the generator's queries are the only difference;
#   hn 1: + one hard negative from each set's own ranking (SmolLM2's QL judge vs the instant judge).
cd "$(dirname "$0")/../.."
B=${BIN:-target/debug/fretflow}
QWEN=out/cranfield-qwen-gen/fret-changes.jsonl
STEPS=${STEPS:?one pass over the smaller set at batch 16}
for hn in 0 1; do
  for set in cranfield-full cranfield-qwen-gen; do
    .venv/bin/python scripts/beir_finetune.py --dataset ${DATA:-../shared/data}/cranfield --fret out/$set/fret-changes.jsonl \
      --only-seeds-of $QWEN --labels seed_all --hard-negatives $hn --steps $STEPS --query-format plain --seeds 42 \
      --dev-only --bin $B --out out/finetune/s12-gen-$set-hn$hn-dev
  done
done
