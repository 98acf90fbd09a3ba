#!/usr/bin/env bash
# Fine-tune all-MiniLM-L6-v2 on a FRet set that the pipeline made from the cranfield corpus alone (no human
# queries: `fretflow run pipelines/cranfield.toml`), then compare base and tuned on cranfield's human
# judgments and on cisi (issue 6, "improves nDCG@10 on cranfield's human judgments").
#
#   scripts/cranfield_finetune.sh [FRET.jsonl]      (default out/cranfield-full/fret.jsonl, the QL-fused set
#                                                    of `fretflow run pipelines/cranfield-full.toml`)
#   STEPS=50 LR=1e-5 SUBSET=seed|all HARD_NEGATIVES=0|1 SEED=42 PRECISION=f32|bf16 DEV_ONLY=1 scripts/cranfield_finetune.sh ...
#
# Settings are chosen on the dev half only: DEV_ONLY=1 trains, evaluates the tuned model with the prefix on
# cranfield and prints nothing but its dev nDCG@10 (base-model evaluations are reused once made).
#
# 1. Split: out/cranfield-split/ holds cranfield with corpus/queries symlinked and qrels/{dev,heldout,test}.tsv.
#    dev = the queries at odd positions (1st, 3rd, ...) of the numerically sorted query ids of qrels/test.tsv
#    (113 queries), heldout = the rest (112). test = all 225.
# 2. Data: keep the FRet examples whose positive is their seed passage (the LLM judge agreed with the
#    generator: 100 of the 134 QL-fused examples), a consistency filter that uses no human judgment.
# 3. Train one pass at 16 queries per step (STEPS, default auto), lr 1e-5 (max(3, steps/10) warmup steps, then constant), temperature 0.05,
#    1 hard negative, same-tower negatives, full dimension only (no Matryoshka), seed 42.
# 4. Evaluate (f32) the base and the tuned model, each with plain queries and with the query prefix below,
#    on cranfield (all 225 queries; dev and heldout are the per-query means over their halves) and on cisi.
#    Prints nDCG@10 and a paired sign-flip randomisation test of tuned-with-prefix against base-plain.
#
# How the setting was chosen: a handful of runs (lr/steps, temperature, hard negatives 0/1, same-tower
# on/off, RRF vs QL set, RRF+QL union of positives, seed-consistent subset, plain-query pairs), each scored
# on the dev half only (bf16 eval); the best dev nDCG@10 was picked. Heldout, full and cisi were looked at
# only for the chosen setting, by this script.
#
# Result (2026-11, 2 cores, f32): it does NOT beat the base model. Tuned-with-prefix vs base-plain nDCG@10:
# dev 0.3776 vs 0.3723 (+0.005, p 0.38), heldout 0.3871 vs 0.3911 (-0.004, p 0.56), full 0.3823 vs 0.3817,
# cisi 0.4186 vs 0.4207. The dev gain was selection noise; every setting tried stayed within +-0.01 of base.
# (That was the 134-example set of pipelines/cranfield-ql.toml, first 300 passages, STEPS=9.)
#
# Whole corpus (out/cranfield-full/fret.jsonl, 1,236 examples, 605 seed-consistent), the same setting with
# one pass (STEPS=38): dev 0.3721, heldout 0.3798 (p 0.27), full 0.3760 (p 0.41) vs base 0.3723 / 0.3911 /
# 0.3817; cisi 0.4300 vs 0.4207 (p 0.29). All 1,236 examples (SUBSET=all STEPS=78, DEV_ONLY=1): dev 0.3682.
# Session 5, four more settings on dev; the best, HARD_NEGATIVES=0 (dev 0.3747), over sampling seeds 42 / 1 / 2:
# full 0.3847 / 0.3776 / 0.3741 vs base 0.3817 (heldout 0.3949 / 0.3885 / 0.3791 vs 0.3911), cisi 0.4309 /
# 0.4264 / 0.4272 vs 0.4207: the seed decides the sign on cranfield.
# Mixed-precision training (PRECISION=bf16, DEV_ONLY=1) gives the same dev 0.3721 as f32. Why nothing helps:
# the judge ranks cranfield's human queries worse than the base embedder (scripts/judge_quality.py, docs/RESULTS.md).
#
# Wall time on 2 cores: about 12 minutes (train ~2.5 min, 8 f32 evals of 60-75 s). Heavy steps run under nice and wait
# while /tmp/bench.lock exists.
set -euo pipefail
cd "$(dirname "$0")/.."
FRET=${1:-out/cranfield-full/fret.jsonl}
STEPS=${STEPS:-auto}   # auto: one pass over the kept examples at batch 16
LR=${LR:-1e-5}
SUBSET=${SUBSET:-seed}
DEV_ONLY=${DEV_ONLY:-0}
HARD_NEGATIVES=${HARD_NEGATIVES:-1}
SEED=${SEED:-42}   # batch sampling
PRECISION=${PRECISION:-f32}   # training only (bf16: mixed precision); evaluation is always f32
BIN=target/debug/fretflow
PY=.venv/bin/python
DATA=/work/shared/data
SPLIT=out/cranfield-split
OUT=out/cranfield-finetune
PREFIX="task: Given a question, find a passage that answers the question | query: "
[ -x "$BIN" ] || cargo build --bins
[ -f "$FRET" ] || { echo "no FRet file $FRET (run: $BIN run pipelines/cranfield.toml)" >&2; exit 2; }

wait_bench() { while [ -e /tmp/bench.lock ]; do sleep 10; done; }
heavy() { wait_bench; nice -n 15 "$@"; }

echo "== 1. dev/heldout split of cranfield's queries -> $SPLIT"
mkdir -p "$SPLIT/qrels" "$OUT"
ln -sfn "$DATA/cranfield/corpus.jsonl" "$SPLIT/corpus.jsonl"
ln -sfn "$DATA/cranfield/queries.jsonl" "$SPLIT/queries.jsonl"
cp "$DATA/cranfield/qrels/test.tsv" "$SPLIT/qrels/test.tsv"
tail -n +2 "$SPLIT/qrels/test.tsv" | cut -f1 | sort -n -u | awk 'NR % 2 == 1' > "$SPLIT/dev.ids"
for s in dev heldout; do head -1 "$SPLIT/qrels/test.tsv" > "$SPLIT/qrels/$s.tsv"; done
awk -F'\t' -v d="$SPLIT/qrels/dev.tsv" -v h="$SPLIT/qrels/heldout.tsv" \
  'NR == FNR { dev[$1] = 1; next } FNR == 1 { next } { print >> (($1 in dev) ? d : h) }' \
  "$SPLIT/dev.ids" "$SPLIT/qrels/test.tsv"
for s in dev heldout test; do
  echo "   $s: $(tail -n +2 "$SPLIT/qrels/$s.tsv" | cut -f1 | sort -u | wc -l) queries"
done

echo "== 2. training examples ($SUBSET) of $FRET -> $OUT/fret-$SUBSET.jsonl"
$PY - "$FRET" "$OUT/fret-$SUBSET.jsonl" "$SUBSET" <<'PY'
import json, sys
src, dst, subset = sys.argv[1], sys.argv[2], sys.argv[3]
rows = [json.loads(line) for line in open(src) if line.strip()]
if rows and "op" in rows[0]:  # a change stream (fret-changes.jsonl, e.g. of a run cut short): fold it
    live = {}
    for c in rows:
        if c["op"] == "upsert":
            live[c["key"]] = c["example"]
        else:
            live.pop(c["key"], None)
    rows = list(live.values())
keep = [r for r in rows if subset == "all" or r["positive"]["id"] == r["seed_id"]]
with open(dst, "w") as f:
    f.writelines(json.dumps(r) + "\n" for r in keep)
print(f"   kept {len(keep)} of {len(rows)} examples ({'all' if subset == 'all' else 'positive == seed'})")
PY

[ "$STEPS" = auto ] && STEPS=$(( ($(wc -l < "$OUT/fret-$SUBSET.jsonl") + 15) / 16 ))
echo "== 3. train $STEPS steps -> $OUT/ckpt"
rm -rf "$OUT/ckpt"
t0=$(date +%s)
heavy $BIN train --data "$OUT/fret-$SUBSET.jsonl" --out "$OUT/ckpt" --no-resume --threads 2 --device cpu \
  --steps "$STEPS" --batch-size 16 --lr "$LR" --warmup-steps $(( STEPS / 10 > 3 ? STEPS / 10 : 3 )) --decay constant --temperature 0.05 \
  --hard-negatives "$HARD_NEGATIVES" --seed "$SEED" --precision "$PRECISION" > "$OUT/train.log" 2>&1
echo "   trained in $(( $(date +%s) - t0 )) s"

echo "== 4. evaluate (f32) -> $OUT/eval-*.json"
evaluate() { # name model dataset [prefix]
  local t=$(date +%s)
  # The base model's reports do not change between runs.
  if [[ $1 == base-* && -s "$OUT/eval-$1.json" ]]; then echo "   $1: reused"; return; fi
  heavy $BIN eval --model "$2" --dataset "$3" --split test --precision f32 --threads 2 --device cpu \
    --query-prefix "${4:-}" --output "$OUT/eval-$1.json" > "$OUT/eval-$1.log" 2>&1
  echo "   $1: $(( $(date +%s) - t )) s"
}
if [ "$DEV_ONLY" = 1 ]; then
  evaluate tuned-prefix-cranfield "$OUT/ckpt/latest" "$SPLIT" "$PREFIX"
  $PY - "$OUT/eval-tuned-prefix-cranfield.json" "$SPLIT/dev.ids" "$SUBSET $STEPS x 16 lr $LR hn $HARD_NEGATIVES $PRECISION" <<'PY'
import json, sys
dev = set(open(sys.argv[2]).read().split())
per = json.load(open(sys.argv[1]))["per_query"]
d = [m["ndcg_at_10"] for q, m in per.items() if q in dev]
print(f"== dev nDCG@10, tuned with prefix ({sys.argv[3]}): {sum(d) / len(d):.4f} over {len(d)} queries")
PY
  exit 0
fi
for m in base tuned; do
  model=all-MiniLM-L6-v2; [ $m = tuned ] && model="$OUT/ckpt/latest"
  evaluate "$m-plain-cranfield" "$model" "$SPLIT"
  evaluate "$m-prefix-cranfield" "$model" "$SPLIT" "$PREFIX"
  evaluate "$m-plain-cisi" "$model" "$DATA/cisi"
  evaluate "$m-prefix-cisi" "$model" "$DATA/cisi" "$PREFIX"
done

echo "== 5. nDCG@10 (prefix: \"$PREFIX\")"
$PY - "$OUT" "$SPLIT/dev.ids" <<'PY'
import json, random, sys
out, dev = sys.argv[1], set(open(sys.argv[2]).read().split())
def per_query(name):
    return {q: m["ndcg_at_10"] for q, m in json.load(open(f"{out}/eval-{name}.json"))["per_query"].items()}
subsets = {
    "dev": lambda q: q in dev, "heldout": lambda q: q not in dev, "full": lambda q: True,
}
runs = ["base-plain", "base-prefix", "tuned-plain", "tuned-prefix"]
print(f"{'model':14} {'cran dev':>9} {'heldout':>9} {'full':>9} {'cisi':>9}")
for r in runs:
    c, s = per_query(f"{r}-cranfield"), per_query(f"{r}-cisi")
    cols = [sum(v for q, v in c.items() if f(q)) / sum(1 for q in c if f(q)) for f in subsets.values()]
    cols.append(sum(s.values()) / len(s))
    print(f"{r:14} " + " ".join(f"{x:9.4f}" for x in cols))
def test(a, b, keep):
    d = [a[q] - b[q] for q in a if keep(q)]
    mean = sum(d) / len(d)
    rng = random.Random(0)
    hits = sum(abs(sum(x if rng.random() < 0.5 else -x for x in d) / len(d)) >= abs(mean) for _ in range(10000))
    return mean, sum(x > 1e-9 for x in d), sum(x < -1e-9 for x in d), hits / 10000
print("\ntuned-prefix vs base-plain (paired sign-flip test, 10000 draws):")
for ds, subs in [("cranfield", subsets), ("cisi", {"all": lambda q: True})]:
    a, b = per_query(f"tuned-prefix-{ds}"), per_query(f"base-plain-{ds}")
    for name, keep in subs.items():
        mean, up, down, p = test(a, b, keep)
        print(f"  {ds:9} {name:8} delta {mean:+.4f}  better {up:3d} worse {down:3d}  p = {p:.3f}")
PY
