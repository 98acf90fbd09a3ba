#!/usr/bin/env bash
# Kafka topic-to-topic throughput: passages/s through the pass-through pipeline (Kafka source -> identity
# -> idempotent sink, offsets committed after acknowledgement) with 1 and 2 timely workers, against the
# peer: Kafka's own Java consumer (org.apache.kafka.tools.ConsumerPerformance, from the broker's jars)
# reading the same input topic, the ceiling of a pipeline that has to read it. All on this machine, in one run.
#
#   scripts/bench_kafka.sh [PASSAGES]          # default 100000; env: FRETFLOW_BIN, KAFKA_PORT
#
# Then the FRet pipeline itself topic to topic (`fretflow run` on a Kafka pipeline) with an instantly
# answering LLM (the `instant` backend) and a hashing encoder, N = 20, 1 and 2 workers, on the first
# FRET_PASSAGES passages (default 5000): the dataflow's own speed between real topics.
# Starts the local broker (deploy/kafka/start.sh) when none answers.
set -euo pipefail
cd "$(dirname "$0")/.."
n="${1:-100000}"
port="${KAFKA_PORT:-9092}"
bootstrap="127.0.0.1:$port"
bin="${FRETFLOW_BIN:-target/debug/fretflow}"

deploy/kafka/start.sh --port "$port" >/dev/null
if [[ -z "${FRETFLOW_BIN:-}" ]]; then cargo build --quiet --bin fretflow; fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
run_id="bench-$(date +%s)"
input="$run_id-passages"
# Synthetic passages of ~300 bytes (id, title, text), keyed by id.
awk -v n="$n" 'BEGIN { for (i = 0; i < n; i++) {
  printf "{\"id\":\"p%d\",\"title\":\"Passage %d\",\"text\":\"", i, i
  for (w = 0; w < 40; w++) printf "word%d ", (i * 7 + w) % 1000
  printf "\"}\n" } }' > "$work/corpus.jsonl"

echo "bench_kafka: $n passages, broker $bootstrap, $(nproc) cores" >&2
start=$(date +%s.%N)
RUST_LOG=warn "$bin" kafka produce --topic "$input" --partitions 4 --bootstrap "$bootstrap" "$work/corpus.jsonl" 2>/dev/null
produce_s=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { print b - a }')

declare -A rate
for workers in 1 2; do
  json=$(RUST_LOG=warn "$bin" kafka passthrough --input "$input" --output "$run_id-out-w$workers" \
    --group "$run_id-w$workers" --workers "$workers" --idle-exit 3 --bootstrap "$bootstrap")
  records=$(sed -n 's/.*"records":\([0-9]*\).*/\1/p' <<<"$json")
  [[ "$records" == "$n" ]] || { echo "bench_kafka: $workers worker(s) read $records of $n records: $json" >&2; exit 1; }
  rate[$workers]=$(sed -n 's/.*"records_per_s":\([0-9.e+]*\).*/\1/p' <<<"$json")
done

# The peer: Kafka's Java consumer reading the input topic (fetch rate, rebalance time excluded).
peer=$(java -cp "deploy/kafka/libs/*" -Dlog4j2.configurationFile=deploy/kafka/log4j2.properties \
  org.apache.kafka.tools.ConsumerPerformance --bootstrap-server "$bootstrap" --topic "$input" \
  --messages "$n" --group "$run_id-peer" --hide-header 2>/dev/null | tail -n 1 | awk -F', *' '{ print $10 }')

# The FRet dataflow topic -> topic with an instant LLM.
fret_n="${FRET_PASSAGES:-5000}"
head -n "$fret_n" "$work/corpus.jsonl" > "$work/fret-corpus.jsonl"
RUST_LOG=warn "$bin" kafka produce --topic "$input-fret" --partitions 4 --bootstrap "$bootstrap" "$work/fret-corpus.jsonl" 2>/dev/null
declare -A fret_rate
for workers in 1 2; do
  cat > "$work/fret-w$workers.toml" <<TOML
workers = $workers
[kafka]
bootstrap_servers = "$bootstrap"
[kafka.source]
topic = "$input-fret"
group_id = "$run_id-fret-w$workers"
[kafka.sink]
topic = "$run_id-fret-out-w$workers"
partitions = 4
[llm]
backend = "instant"
[embedder]
model = "hashing:64"
[fret]
neighbours = 20
[sinks]
summary = "summary-w$workers.json"
TOML
  RUST_LOG=warn "$bin" run "$work/fret-w$workers.toml" --no-progress --idle-exit 3 >/dev/null
  fret_rate[$workers]=$("${PYTHON:-python3}" -c 'import json,sys; s=json.load(open(sys.argv[1])); n=s["passages_in"]
assert n == int(sys.argv[2]), f"{n} of {sys.argv[2]} passages went through"
print(n / max(s["elapsed_s"] - 3, 1e-9))  # minus the 3 s idle wait' "$work/summary-w$workers.json" "$fret_n")
done

printf '%-52s %12s\n' "what" "passages/s"
printf '%-52s %12.0f\n' "fretflow kafka produce (JSONL -> topic, acks=all)" "$(awk -v n="$n" -v s="$produce_s" 'BEGIN { print n / s }')"
printf '%-52s %12.0f\n' "pass-through topic -> topic, 1 worker" "${rate[1]}"
printf '%-52s %12.0f\n' "pass-through topic -> topic, 2 workers" "${rate[2]}"
printf '%-52s %12.0f\n' "FRet run topic -> topic, instant LLM, 1 worker" "${fret_rate[1]}"
printf '%-52s %12.0f\n' "FRet run topic -> topic, instant LLM, 2 workers" "${fret_rate[2]}"
printf '%-52s %12.0f\n' "peer: Kafka ConsumerPerformance (read only)" "$peer"
awk -v a="${rate[1]}" -v b="${rate[2]}" -v p="$peer" 'BEGIN {
  printf "ratio pass-through(1 worker) / peer read-only: %.2f\n", a / p
  printf "ratio pass-through(2 workers) / peer read-only: %.2f\n", b / p
  printf "ratio 2 workers / 1 worker: %.2f\n", b / a }'
