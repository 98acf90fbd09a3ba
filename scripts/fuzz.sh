#!/usr/bin/env bash
# `make fuzz`: each fuzz target of tests/fuzz_decoders.rs (proptest properties over every decoder of user
# input) for FUZZ_SECONDS (default 600) each, in rounds of PROPTEST_CASES (default 2000) cases. proptest
# draws a fresh random seed per run, so every round explores new inputs; a failing case stops its target,
# is shrunk, and is saved under proptest-regressions/ (commit it: it is rerun first from then on).
# Prints, per target: rounds, cases executed, seconds, failures. Exit 1 if any target failed.
#
#   scripts/fuzz.sh                         # all targets, 10 minutes each
#   FUZZ_SECONDS=60 scripts/fuzz.sh gguf    # targets whose name contains "gguf", 1 minute each
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${FUZZ_SECONDS:-600}"
cases="${PROPTEST_CASES:-2000}"
filter="${1:-}"
# The test binary runs directly, from a copy: no cargo per round, and rebuilding target/ meanwhile neither
# waits on this script's lock nor changes what it runs.
built=$(cargo test --quiet --test fuzz_decoders --no-run --message-format=json \
  | sed -n 's/.*"executable":"\([^"]*fuzz_decoders[^"]*\)".*/\1/p' | tail -n 1)
[[ -x "$built" ]] || { echo "fuzz.sh: cannot find the fuzz_decoders test binary" >&2; exit 1; }
bin=$(mktemp -d)/fuzz_decoders
cp "$built" "$bin"
mapfile -t targets < <("$bin" --list --format terse 2>/dev/null | sed -n 's/: test$//p' | grep -F -- "$filter" || true)
(( ${#targets[@]} )) || { echo "fuzz.sh: no target matches '$filter'" >&2; exit 1; }
failed=0
printf '%-40s %7s %10s %8s %s\n' target rounds cases seconds result
for target in "${targets[@]}"; do
  start=$(date +%s); rounds=0; result=ok
  while (( $(date +%s) - start < seconds )); do
    if ! PROPTEST_CASES="$cases" "$bin" --quiet --exact "$target" >"/tmp/fuzz-$target.log" 2>&1; then
      result="FAILED (see /tmp/fuzz-$target.log and proptest-regressions/)"; failed=1
      rounds=$((rounds + 1)); break
    fi
    rounds=$((rounds + 1))
  done
  printf '%-40s %7d %10d %8d %s\n' "$target" "$rounds" $((rounds * cases)) $(( $(date +%s) - start )) "$result"
done
exit "$failed"
