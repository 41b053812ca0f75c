#!/usr/bin/env bash
# Runs every fuzz and property target with many cases (default 20000 each;
# `scripts/fuzz.sh 100000` for more). `cargo fuzz` needs a nightly
# compiler, which this project's machines cannot fetch, so the targets are
# proptest properties: random and near-miss inputs for the WeChat/WeCom XML
# parser and crypto, Telegram callback data, the import parsers (JSONL,
# CSV, Markdown front matter), the text decoder, normaliser and analyzer;
# invariants of the editorial state machine, the demand form and message
# splitting. A failure prints the smallest input that fails, and proptest
# keeps it under proptest-regressions/ to be tried first next time.
set -euo pipefail
cd "$(dirname "$0")/.."

export PROPTEST_CASES="${1:-20000}"
started=$(date +%s)
# Integration-test targets: the knowledge base's parsers and the workflow.
cargo test --workspace --test fuzz --test workflow
# Unit-test targets, by name.
cargo test --workspace --lib -- \
  never_panics reads_back returns_the_plaintext properties \
  splitting_keeps_every_character
echo "fuzz: $PROPTEST_CASES cases per target in $(( $(date +%s) - started )) s"
