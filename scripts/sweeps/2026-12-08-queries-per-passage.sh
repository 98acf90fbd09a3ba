#!/bin/bash
# Issue 13, session 14: does the student move with more generated queries per passage? Session 13 found that
# a far better teacher gives labels no better than SmolLM2's, so the training signal (one generated query per
# passage, ~620 consistent examples, one pass) is the next suspect. Dev only, seed 42, plain queries, one pass
# (steps auto), `--labels seed` (each example's own judge's round-trip filter), as the SmolLM2 row it is
# compared with (cranfield dev 0.3803, 618 examples).
#   mix: cranfield's SmolLM2 set (pipelines/cranfield-full.toml) and its Qwen2.5-Coder-0.5B set
#        (pipelines/cranfield-qwen-gen.toml: the 0.5B writes, the instant word-overlap judge filters), both
#        rebuilt from the committed LLM cache, in one file: two queries for most passages, by two writers. The
#        0.5B set's query ids become q_1:<passage> (the id of a second query) so that no two rows share one.
#   q2:  pipelines/cranfield-q2.toml, SmolLM2 writing two queries per passage (`[fret] queries_per_passage`)
#        and judging both.
#   q2-39: the same set, 39 steps (the first-query set's one pass), so that the number of steps is not what
#        differs (session 15).
#   second: the second queries (q_1:) of the q2 set alone, one pass (session 15): are they worse data?
#   TRIALS="mix q2" BIN=... scripts/sweeps/2026-12-08-queries-per-passage.sh
cd "$(dirname "$0")/../.."
B=${BIN:-target/debug/fretflow}
DS=${DATA:-../shared/data}/cranfield
mkdir -p out/mix
for trial in ${TRIALS:-mix}; do
  steps=auto
  case $trial in
    mix)
      fret=out/mix/cranfield-smollm2-qwen.jsonl
      .venv/bin/python - out/cranfield-full/fret.jsonl out/cranfield-qwen-gen/fret.jsonl "$fret" <<'PY' || exit 1
import json, sys
first, second, out = sys.argv[1:4]
with open(out, "w") as f:
    for line in open(first):
        f.write(line)
    for line in open(second):
        row = json.loads(line)
        assert row["query_id"] == "q:" + row["seed_id"], row["query_id"]
        row["query_id"] = "q_1:" + row["seed_id"]
        f.write(json.dumps(row) + "\n")
PY
      ;;
    q2) fret=out/cranfield-q2/fret.jsonl ;;
    q2-39) fret=out/cranfield-q2/fret.jsonl; steps=39 ;;
    second)
      fret=out/mix/cranfield-q2-second.jsonl
      grep '"query_id":"q_1:' out/cranfield-q2/fret.jsonl > "$fret" || exit 1
      ;;
    *) echo "unknown trial $trial"; exit 2 ;;
  esac
  .venv/bin/python scripts/beir_finetune.py --dataset $DS --fret $fret --labels seed --query-format plain \
    --seeds ${SEEDS:-42} --steps $steps --dev-only --bin $B --out out/finetune/qpp-cranfield-$trial${SEEDS:+-s${SEEDS//,/}} || exit 1
done
