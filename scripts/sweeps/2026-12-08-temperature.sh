#!/bin/bash
# Issue 13, session 14: how hot may SmolLM2-135M sample a passage's further queries? The second queries of
# the first pipelines/cranfield-q2.toml run (at 0.8) were mostly off the passage. Each trial runs cranfield-q2.toml
# on the first LIMIT passages (default 200) at one temperature and reports, for the passages with both
# queries live, how often each query passes the round-trip filter (the judge ranks its seed first): the
# Promptagator filter's yield, which needs no human query. The first queries are the same in every trial
# (greedy, retries at 0.8 whatever the setting), so their rate is the reference. All trials share out/llm-cache-beir-q2.redb (made from the committed
# cache: `gunzip -c docs/results/cache/llm-cache-beir.redb.gz > out/llm-cache-beir-q2.redb`).
#   TEMPERATURES="0.8 0.3 0.5" BIN=... scripts/sweeps/2026-12-08-temperature.sh
cd "$(dirname "$0")/../.."
B=${BIN:-target/debug/fretflow}
LIMIT=${LIMIT:-200}
mkdir -p out/temperature
for t in ${TEMPERATURES:-0.8 0.3}; do
  dir=out/temperature/t$t-n$LIMIT
  config=out/temperature/cranfield-q2-t$t-n$LIMIT.toml
  sed -e "s|^cache = \"../out/|cache = \"../../out/|" \
      -e "s|^path = \"../../shared/|path = \"../../${DATA_REL:-../shared}/|" \
      -e "s|\"../out/cranfield-q2/|\"../../$dir/|g" \
      -e "s|^epoch_records = 100|epoch_records = 100\nlimit = $LIMIT|" \
      -e "s|^further_query_temperature = .*|further_query_temperature = $t|" \
      pipelines/cranfield-q2.toml > $config
  mkdir -p $dir
  /usr/bin/time -f "t=$t: %e s wall" $B run $config > $dir/run.log 2>&1 || { tail -5 $dir/run.log; exit 1; }
  tail -1 $dir/run.log
  .venv/bin/python - $dir/fret.jsonl $t <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
first = {r["seed_id"]: r for r in rows if r["query_id"].startswith("q:")}
second = {r["seed_id"]: r for r in rows if r["query_id"].startswith("q_1:")}
both = sorted(set(first) & set(second), key=lambda s: (len(s), s))
ok = lambda r: r["positive"]["id"] == r["seed_id"]
n = len(both)
print(f"temperature {sys.argv[2]}: {len(first)} first and {len(second)} second queries live; of the {n} passages with both, "
      f"round-trip consistent: first {sum(ok(first[s]) for s in both)} ({sum(ok(first[s]) for s in both)/n:.0%}), "
      f"second {sum(ok(second[s]) for s in both)} ({sum(ok(second[s]) for s in both)/n:.0%})")
for s in both[:5]:
    print(f"   {s}: {first[s]['query'][:70]!r} | {second[s]['query'][:70]!r}")
PY
done
