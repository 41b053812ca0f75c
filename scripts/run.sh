#!/usr/bin/env bash
# Starts wenke on the embedded default (everything in ./data, no server needed),
# doing its own setup: fetches the pinned model and builds the release binary.
# Extra arguments go to the `wenke` command.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/fetch-models.sh
cargo build --release --bin wenke
if [ "$#" -eq 0 ]; then
  set -- embed "洋芋叶子发黑咋个办"
fi
exec target/release/wenke "$@"
