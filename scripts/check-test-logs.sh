#!/usr/bin/env bash
# Greps the logs of a test run (target/test-logs/: one file per end-to-end
# test process, wenke's own crates logging at `trace`) for what no log line
# may hold: a full mainland mobile number, or a secret the tests configure
# (tests/log-secrets.txt). Fails when there is nothing to grep, so a run
# that stopped logging cannot pass.
set -euo pipefail
cd "$(dirname "$0")/.."

dir=target/test-logs
shopt -s nullglob
logs=("$dir"/*.log)
if [ "${#logs[@]}" -eq 0 ]; then
  echo "check-test-logs: no logs in $dir: did the end-to-end tests run?" >&2
  exit 1
fi
lines=$(cat "${logs[@]}" | wc -l)
if [ "$lines" -lt 100 ]; then
  echo "check-test-logs: only $lines log lines in $dir; logging seems off" >&2
  exit 1
fi

status=0
report() {
  local what=$1 matches=$2
  if [ -n "$matches" ]; then
    echo "check-test-logs: $what in logs:" >&2
    printf '%s\n' "$matches" | head -n 20 >&2
    status=1
  fi
}
# Eleven digits starting 13-19 with no digit or ASCII letter either side: a
# phone number as typed ("电话13800012345", "phone=13800012345"). Letters
# bound it too because ids are hex: a UUID's last group "e17181911396"
# holds eleven such digits. Masked numbers (138****5678) do not match.
report "full phone numbers" "$(grep -n -E '(^|[^0-9A-Za-z])1[3-9][0-9]{9}([^0-9A-Za-z]|$)' "${logs[@]}" || true)"
report "secrets" "$(grep -n -F -f <(grep -v -e '^#' -e '^$' tests/log-secrets.txt) "${logs[@]}" || true)"
if [ "$status" -eq 0 ]; then
  echo "check-test-logs: ${#logs[@]} logs, $lines lines: no phone number or secret"
fi
exit "$status"
