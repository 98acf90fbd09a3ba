#!/usr/bin/env bash
# Starts an N-process fretflow cluster: one `fretflow run` per line of a timely hostfile.
#
#   deploy/cluster/start-cluster.sh PIPELINE.toml HOSTFILE [-w THREADS] [--bin PATH] [--logs DIR] [--wait]
#                                   [-- MORE fretflow run ARGS]
#   deploy/cluster/start-cluster.sh --stop [--logs DIR]
#
# Process i (0-based line i of HOSTFILE) runs `fretflow run PIPELINE.toml -w THREADS -n N -p i -h HOSTFILE`
# followed by the arguments after `--` (e.g. `--idle-exit 10 --no-progress`). With --wait the script waits
# for the processes it started here and exits 1 if any of them failed (tests/kafka_run.rs uses it so).
# Lines whose host is this machine (127.0.0.1, localhost, or `hostname`) start here in the background; the
# other lines are started over ssh (same paths on every host), so the whole cluster comes up from one place.
# Partitioning is static (the pipeline's `partitioning = "static"`, required): worker i of the N x THREADS
# workers reads the passage topic's partitions p with p % (N x THREADS) == i; no consumer group spreads
# them. Each process opens the pipeline's `cache` file and redb locks it to one process, so run one process
# per machine (or filesystem), or several without `cache` (replays then call the LLM again).
# Logs and pids go to --logs (default deploy/cluster/logs).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
bin="$repo/target/debug/fretflow"
logs="$here/logs"
threads=1
stop=0
wait_all=0
extra=()
positional=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    -w) threads="$2"; shift 2 ;;
    --bin) bin="$2"; shift 2 ;;
    --logs) logs="$2"; shift 2 ;;
    --stop) stop=1; shift ;;
    --wait) wait_all=1; shift ;;
    --) shift; extra=("$@"); break ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    *) positional+=("$1"); shift ;;
  esac
done

if (( stop )); then
  for pidfile in "$logs"/process-*.pid; do
    [[ -f "$pidfile" ]] || continue
    pid="$(cat "$pidfile")"
    kill -TERM "$pid" 2>/dev/null && echo "stopped $(basename "$pidfile" .pid) (pid $pid)"
    rm -f "$pidfile"
  done
  exit 0
fi

[[ ${#positional[@]} -eq 2 ]] || { echo "usage: $0 PIPELINE.toml HOSTFILE [-w THREADS] (try --help)" >&2; exit 2; }
pipeline="$(realpath "${positional[0]}")"
hostfile="$(realpath "${positional[1]}")"
[[ -x "$bin" ]] || { echo "start-cluster.sh: $bin is missing; run 'cargo build' first (or pass --bin)" >&2; exit 1; }

mapfile -t hosts < <(grep -v '^[[:space:]]*\(#\|$\)' "$hostfile")
n=${#hosts[@]}
(( n > 0 )) || { echo "start-cluster.sh: $hostfile lists no host:port" >&2; exit 1; }
mkdir -p "$logs"
me="$(hostname)"
declare -A local_pids=()
for i in "${!hosts[@]}"; do
  host="${hosts[$i]%:*}"
  args=(run "$pipeline" -w "$threads" -n "$n" -p "$i" -h "$hostfile" ${extra[@]+"${extra[@]}"})
  if [[ "$host" == 127.0.0.1 || "$host" == localhost || "$host" == "$me" ]]; then
    nohup "$bin" "${args[@]}" >"$logs/process-$i.log" 2>&1 < /dev/null &
    echo $! > "$logs/process-$i.pid"
    local_pids[$i]=$!
    echo "process $i of $n: pid $!, log $logs/process-$i.log"
  else
    # shellcheck disable=SC2029  # the arguments are meant to expand here
    ssh -n "$host" "cd '$repo' && nohup '$bin' ${args[*]} > '$logs/process-$i.log' 2>&1 & echo \$! > '$logs/process-$i.pid'"
    echo "process $i of $n: started on $host over ssh, log $host:$logs/process-$i.log"
  fi
done
echo "stop with: $0 --stop --logs $logs   (remote processes: the same command on each host)"
if (( wait_all )); then
  failed=0
  for i in "${!local_pids[@]}"; do
    if wait "${local_pids[$i]}"; then
      echo "process $i ended"
    else
      echo "process $i failed (exit $?): see $logs/process-$i.log" >&2
      failed=1
    fi
    rm -f "$logs/process-$i.pid"
  done
  exit "$failed"
fi
