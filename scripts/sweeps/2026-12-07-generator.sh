#!/bin/bash
# Is the generator what limits cranfield? Dev-only trials, seed 42, plain queries: the passages both
# pipelines/cranfield-full.toml (SmolLM2-135M writes) and pipelines/cranfield-qwen-gen.toml
# (Qwen2.5-Coder-0.5B writes) have an example for (each set restricted to the other's seed passages), each
# example's seed passage as its positive (`seed_all`: neither judge decides the label), the same steps.
#   hn 0: in-batch negatives only, so the generator's queries are the only difference;
#   hn 1: + one hard negative from each set's own ranking (SmolLM2's QL judge vs the instant judge).
# Run on 2026-12-07 with STEPS=63 (one pass over the 1,008 shared seed passages at batch 16).
cd "$(dirname "$0")/../.."
B=${BIN:-target/debug/fretflow}
STEPS=${STEPS:?one pass over the shared seed passages at batch 16}
other() { [ "$1" = cranfield-full ] && echo cranfield-qwen-gen || echo cranfield-full; }
for hn in ${HN:-0 1}; do
  for set in ${SETS:-cranfield-full cranfield-qwen-gen}; do
    out=out/finetune/s12-gen-$set-hn$hn-dev
    [ -f $out/report.json ] && continue  # done (rerun: remove it)
    .venv/bin/python scripts/beir_finetune.py --dataset ${DATA:-../shared/data}/cranfield --fret out/$set/fret-changes.jsonl \
      --only-seeds-of out/$(other $set)/fret-changes.jsonl --labels seed_all --hard-negatives $hn --steps $STEPS \
      --query-format plain --seeds 42 --dev-only --bin $B --out $out
  done
done
