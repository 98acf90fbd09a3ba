#!/usr/bin/env bash
# Overhead of the FRet dataflow itself: 10,000 passages through `fretflow run` with an instantly
# answering labeler (the `instant` backend) and a hashing encoder, then again with a simulated LLM
# latency per batch. Prints passages/s and the share of wall time with no LLM batch in flight (the time
# the pipeline, not the LLM, was the bottleneck). Target: <= 5% at realistic latency.
#
# Usage: scripts/bench_dataflow.sh [PASSAGES] [LATENCY_MS] [WORKERS]
set -euo pipefail
cd "$(dirname "$0")/.."
PASSAGES=${1:-10000}
LATENCY_MS=${2:-50}
WORKERS=${3:-2}
cargo build --quiet 2>/dev/null || cargo build
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

python3 - "$PASSAGES" "$WORK/corpus.jsonl" <<'PY'
import json, random, sys
n, path = int(sys.argv[1]), sys.argv[2]
rng = random.Random(7)
vocab = [f"term{i}" for i in range(2000)]
with open(path, "w") as f:
    for i in range(n):
        topic = rng.randrange(200)
        words = [vocab[(topic * 10 + rng.randrange(30)) % len(vocab)] for _ in range(40)]
        f.write(json.dumps({"id": f"p{i}", "text": " ".join(words)}) + "\n")
PY

run() { # name latency_ms
  cat > "$WORK/$1.toml" <<TOML
workers = $WORKERS
[source]
path = "corpus.jsonl"
epoch_records = 256
[llm]
backend = "instant"
latency_ms = $2
[embedder]
model = "hashing:64"
[fret]
neighbours = 20
[batching]
llm = { max_batch = 32, max_wait_ms = 5, max_in_flight = 4 }
embed = { max_batch = 256, max_wait_ms = 5, max_in_flight = 1 }
[sinks]
changes = ["out-$1/changes.jsonl"]
dead_letters = "out-$1/dead.jsonl"
summary = "out-$1/summary.json"
TOML
  ./target/debug/fretflow run "$WORK/$1.toml" --no-progress > "$WORK/$1.log" 2>&1 || { cat "$WORK/$1.log"; exit 1; }
}

run instant 0
run latency "$LATENCY_MS"
python3 - "$WORK" "$PASSAGES" "$LATENCY_MS" "$WORKERS" <<'PY'
import json, sys
work, n, latency, workers = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
for name, label in (("instant", "instant labeler"), ("latency", f"{latency} ms per LLM batch")):
    s = json.load(open(f"{work}/out-{name}/summary.json"))
    outside = 1.0 - s["llm_busy_share"]
    print(f"{label:>22}: {n} passages, {s['judged_pairs']} judged pairs, {s['examples_live']} examples "
          f"in {s['elapsed_s']:.1f} s = {s['passages_in'] / s['elapsed_s']:.0f} passages/s; "
          f"time outside LLM calls {100 * outside:.1f}%")
    stages = ", ".join(f"{k} {v:.1f}s" for k, v in s["stage_seconds"])
    print(f"{'':>24}stages: {stages}")
s = json.load(open(f"{work}/out-latency/summary.json"))
print(f"pipeline overhead at {latency} ms/batch on {workers} workers: {100 * (1 - s['llm_busy_share']):.1f}% of wall time (target <= 5%)")
PY
