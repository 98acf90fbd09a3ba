#!/usr/bin/env bash
# Stops the broker that deploy/kafka/start.sh started on a port, by its pid file (SIGTERM, then SIGKILL
# after KAFKA_STOP_TIMEOUT seconds, default 30). Does nothing when it is not running.
#
#   deploy/kafka/stop.sh [--port 9092] [--wipe]    # --wipe also deletes the broker's data directory
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
port="${KAFKA_PORT:-9092}"
wipe=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --port) port="$2"; shift 2 ;;
    --wipe) wipe=1; shift ;;
    -h|--help) sed -n '2,5p' "$0"; exit 0 ;;
    *) echo "stop.sh: unknown argument '$1' (try --help)" >&2; exit 2 ;;
  esac
done
data="${KAFKA_DATA:-$here/data/broker-$port}"
pidfile="$data/kafka.pid"

if [[ -f "$pidfile" ]]; then
  pid="$(cat "$pidfile")"
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid"
    for _ in $(seq $(( ${KAFKA_STOP_TIMEOUT:-30} * 10 ))); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
      echo "stop.sh: pid $pid ignored SIGTERM; sending SIGKILL" >&2
      kill -KILL "$pid" 2>/dev/null || true
    fi
    echo "stop.sh: stopped the broker on port $port (pid $pid)."
  else
    echo "stop.sh: pid $pid (port $port) is not running."
  fi
  rm -f "$pidfile"
else
  echo "stop.sh: no broker started by start.sh on port $port ($pidfile missing)."
fi
if (( wipe )); then
  rm -rf "$data"
  echo "stop.sh: wiped $data"
fi
