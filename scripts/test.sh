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
cargo test --workspace --no-fail-fast "$@"
