#!/bin/bash
# Is the generator what limits cranfield? Dev-only trials, seed 42, plain queries, on the passages both
# pipelines/cranfield-full.toml (SmolLM2-135M writes) and pipelines/cranfield-qwen-gen.toml
# (Qwen2.5-Coder-0.5B writes) have an example for (each set restricted to the other's seed passages), the
# same steps for both sets. Run on 2026-12-07 (rows in docs/results/finetune.md):
#   seed_all, hn 0: each example's seed passage as its positive, in-batch negatives only, so the generator's
#     queries are the only difference (63 steps: one pass over the 1,008 shared seed passages at batch 16);
#   seed_all, hn 1: + one hard negative from each set's own ranking (SmolLM2's QL judge vs the instant judge);
#   seed, hn 1: each set's own consistency filter (32 steps: one pass over the smaller kept set, 505).
cd "$(dirname "$0")/../.."
B=${BIN:-target/debug/fretflow}
other() { [ "$1" = cranfield-full ] && echo cranfield-qwen-gen || echo cranfield-full; }
trial() {  # NAME LABELS HARD_NEGATIVES STEPS
  for set in cranfield-full cranfield-qwen-gen; do
    out=out/finetune/s12-gen-$set-$1-dev
    [ -f $out/report.json ] && continue  # done (rerun: remove it)
    .venv/bin/python scripts/beir_finetune.py --dataset ${DATA:-../shared/data}/cranfield --fret out/$set/fret-changes.jsonl \
      --only-seeds-of out/$(other $set)/fret-changes.jsonl --labels $2 --hard-negatives $3 --steps $4 \
      --query-format plain --seeds 42 --dev-only --bin $B --out $out
  done
}
trial hn0 seed_all 0 63
trial hn1 seed_all 1 63
trial seed seed 1 32
