#!/usr/bin/env bash
# Runs every test of the workspace on this machine, doing its own setup:
# fetches the pinned models (idempotent), checks formatting, builds and tests.
# Tests talk to real parts: the real model weights, the local Redis
# (REDIS_URL, default redis://127.0.0.1:6379) and, when QDRANT_URL is set,
# a Qdrant server.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/fetch-models.sh --test
cargo fmt --all --check

# The end-to-end tests log to target/test-logs/; start from none, so the
# check below reads this run's logs only.
rm -rf target/test-logs

log="$(mktemp)"
trap 'rm -f "$log"' EXIT
status=0
cargo test --workspace --no-fail-fast "$@" 2>&1 | tee "$log" || status=$?
# cargo prints one result line per test binary, the last often a doctest run
# with nothing in it; close with the totals so the summary is what counts.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
# No log line of the run may hold a phone number or a test secret. A run
# narrowed by arguments may start no end-to-end test, so it has no logs to
# check.
if [ "$#" -eq 0 ]; then
  scripts/check-test-logs.sh || status=1
else
  echo "check-test-logs: skipped (a narrowed run: $*)"
fi
exit "$status"
