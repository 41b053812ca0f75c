#!/usr/bin/env bash
# Starts the wenke server on the embedded default (everything in ./data, no
# database server needed) with the demo knowledge base, doing its own setup:
# fetches the pinned model, builds, and imports the demo entries (approved
# as sample content; re-running skips unchanged entries) and the demo demand
# and capability listings (re-running adds only new ones).
# With arguments, runs that `wenke` command instead of the server, e.g.
#   scripts/run.sh ask "洋芋叶子发黑咋个办"
#   scripts/run.sh kb search "到温病用啥子药"
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/fetch-models.sh
# The dev profile builds dependencies optimised (see Cargo.toml) and shares
# its artifacts with the test build, so the two README commands do not
# compile the world twice.
cargo build --workspace --bin wenke
wenke=target/debug/wenke

if [ "$#" -gt 0 ]; then
  exec "$wenke" "$@"
fi
"$wenke" kb import kb/demo/entries-*.jsonl --actor 示例编辑 --approve-as 示例审核
"$wenke" listings import --kind capabilities kb/demo/capabilities.jsonl
"$wenke" listings import --kind demands kb/demo/demands.jsonl
exec "$wenke" serve
