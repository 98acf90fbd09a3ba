#!/usr/bin/env bash
# Runs a command with the project's local Kafka broker up (started if needed, stopped afterwards only if
# this script started it). Without deploy/kafka/start.sh the command runs as is.
set -uo pipefail
cd "$(dirname "$0")/.."
started=0
if [ -x deploy/kafka/start.sh ]; then
  if ! deploy/kafka/start.sh --check >/dev/null 2>&1; then
    deploy/kafka/start.sh || { echo "with-kafka: broker failed to start" >&2; exit 1; }
    started=1
  fi
fi
"$@"
rc=$?
if [ "$started" = 1 ]; then deploy/kafka/stop.sh || true; fi
exit $rc
