#!/usr/bin/env bash
# Starts a single-node Apache Kafka 4.x broker (KRaft: broker and controller in one JVM) on 127.0.0.1,
# in the background, and waits until it answers metadata requests.
#
#   deploy/kafka/start.sh [--port 9092]        # env: KAFKA_PORT, KAFKA_CONTROLLER_PORT, KAFKA_DATA, KAFKA_HEAP_OPTS
#   deploy/kafka/start.sh --check [--port N]   # exit 0 when a broker answers on the port, 1 otherwise
#
# Idempotent: when a broker already answers on the port (ours or anyone's), it is reused and nothing starts.
# Jars come from deploy/kafka/libs (fetched by fetch.sh on first use). State lives in
# deploy/kafka/data/broker-<port>/: server.properties, the formatted log dirs, kafka.pid, kafka.log.
# Stop it with deploy/kafka/stop.sh [--port 9092].
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

port="${KAFKA_PORT:-9092}"
check=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --port) port="$2"; shift 2 ;;
    --check) check=1; shift ;;
    -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
    *) echo "start.sh: unknown argument '$1' (try --help)" >&2; exit 2 ;;
  esac
done
[[ "$port" =~ ^[0-9]+$ ]] || { echo "start.sh: port must be a number, got '$port'" >&2; exit 2; }
controller_port="${KAFKA_CONTROLLER_PORT:-$((port + 1))}"
data="${KAFKA_DATA:-$here/data/broker-$port}"
bootstrap="127.0.0.1:$port"
pidfile="$data/kafka.pid"
logfile="$data/kafka.log"

java_cp=(java -cp "$here/libs/*" -Dlog4j2.configurationFile="$here/log4j2.properties")

# Lists topics through Kafka's own admin client: succeeds only when the broker answers metadata requests.
probe() {
  timeout 30 "${java_cp[@]}" org.apache.kafka.tools.TopicCommand --bootstrap-server "$bootstrap" --list \
    >/dev/null 2>&1
}
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

if (( check )); then
  [[ -d "$here/libs" ]] && port_open "$port" && probe
  exit $?
fi

"$here/fetch.sh"

if port_open "$port"; then
  if probe; then
    echo "start.sh: a Kafka broker already answers on $bootstrap; reusing it."
    exit 0
  fi
  echo "start.sh: port $port is in use by something that is not a Kafka broker; choose another with --port." >&2
  exit 1
fi
if port_open "$controller_port"; then
  echo "start.sh: controller port $controller_port is in use; set KAFKA_CONTROLLER_PORT." >&2
  exit 1
fi
if [[ -f "$pidfile" ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
  echo "start.sh: broker pid $(cat "$pidfile") is running but not answering on $bootstrap; see $logfile" >&2
  exit 1
fi

started=$(date +%s.%N)
mkdir -p "$data"
cat > "$data/server.properties" <<PROPS
# Written by deploy/kafka/start.sh; rewritten on every start.
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:$controller_port
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$controller_port
advertised.listeners=PLAINTEXT://127.0.0.1:$port
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$data/logs
num.partitions=1
# One node: every internal topic has one replica.
offsets.topic.replication.factor=1
# One node: the group-offsets topic gets one partition instead of 50, so the first consumer group on a fresh
# broker is served in about a second rather than after 50 partition loads (NotCoordinator until then).
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
# Tests join and leave consumer groups often: no initial rebalance delay.
group.initial.rebalance.delay.ms=0
# Compaction runs often enough for small test topics to be compacted within seconds.
log.cleaner.backoff.ms=1000
PROPS

if [[ ! -f "$data/logs/meta.properties" ]]; then
  cluster_id="$("${java_cp[@]}" kafka.tools.StorageTool random-uuid 2>>"$logfile")"
  "${java_cp[@]}" kafka.tools.StorageTool format --standalone --ignore-formatted \
    -t "$cluster_id" -c "$data/server.properties" >>"$logfile" 2>&1 \
    || { echo "start.sh: formatting storage failed; see $logfile" >&2; exit 1; }
fi

# setsid: the broker outlives this script and the shell (or test) that ran it.
setsid "${java_cp[@]}" ${KAFKA_HEAP_OPTS:--Xms256m -Xmx1g} -XX:+UseG1GC -Djava.awt.headless=true \
  kafka.Kafka "$data/server.properties" >>"$logfile" 2>&1 < /dev/null &
echo $! > "$pidfile"
pid=$!

deadline=$(( $(date +%s) + ${KAFKA_START_TIMEOUT:-120} ))
until grep -q "Kafka Server started" "$logfile" 2>/dev/null && probe; do
  if ! kill -0 "$pid" 2>/dev/null; then
    echo "start.sh: the broker exited during start; last lines of $logfile:" >&2
    tail -n 20 "$logfile" >&2
    rm -f "$pidfile"
    exit 1
  fi
  if (( $(date +%s) > deadline )); then
    echo "start.sh: the broker did not become ready in ${KAFKA_START_TIMEOUT:-120} s; see $logfile" >&2
    exit 1
  fi
  sleep 0.5
done
elapsed=$(awk -v a="$started" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
echo "start.sh: Kafka broker ready on $bootstrap (pid $pid, ${elapsed} s); log: $logfile"
echo "start.sh: stop it with: $here/stop.sh --port $port"
