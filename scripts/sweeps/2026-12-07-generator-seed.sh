#!/bin/bash
# The generator comparison of 2026-12-07-generator.sh, each set with its own consistency filter (`seed`
# labels: examples whose judged positive is the seed; SmolLM2-135M's QL judge for cranfield-full, the
# instant word-overlap judge for cranfield-qwen-gen), on the seed passages both sets have, one hard
# negative. Run on 2026-12-07 with STEPS=32 (one pass over the smaller kept set, 505 examples, at batch 16).
cd "$(dirname "$0")/../.."
B=${BIN:-target/debug/fretflow}
STEPS=${STEPS:?one pass over the smaller kept set at batch 16}
other() { [ "$1" = cranfield-full ] && echo cranfield-qwen-gen || echo cranfield-full; }
for set in cranfield-full cranfield-qwen-gen; do
  out=out/finetune/s12-gen-$set-seed-dev
  [ -f $out/report.json ] && continue  # done (rerun: remove it)
  .venv/bin/python scripts/beir_finetune.py --dataset ${DATA:-../shared/data}/cranfield --fret out/$set/fret-changes.jsonl \
    --only-seeds-of out/$(other $set)/fret-changes.jsonl --labels seed --steps $STEPS \
    --query-format plain --seeds 42 --dev-only --bin $B --out $out
done
