#!/usr/bin/env bash
# Prints the tests that skipped in the last `make test` (recorded by tests/prereq/mod.rs), if any.
# Under CI a missing prerequisite fails its test instead, so this list is for runs outside CI.
set -euo pipefail
cd "$(dirname "$0")/.."
log=target/tmp/skipped-tests.txt
if [ -s "$log" ]; then
  echo
  echo "======== $(wc -l < "$log") test(s) SKIPPED for a missing prerequisite (they did not run): ========"
  sort "$log" | sed 's/^/  /'
  echo "Run \`make setup-llama-server setup-kafka\` (or \`make test\`, which runs them) to install what they need."
else
  echo "make test: no test skipped."
fi
