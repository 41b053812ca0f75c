#!/usr/bin/env bash
# Audits Cargo.lock against the RustSec advisory database with cargo-audit,
# installing the pinned cargo-audit when it is missing. Fails on any
# vulnerability, and on any other advisory (unmaintained, unsound) that
# .cargo/audit.toml does not list with its reason.
#
# The database lives on GitHub, which the machines this project builds on
# cannot reach, so the committed snapshot in third_party/ is used (see
# third_party/README.md for its date and how to refresh it), or the checkout
# at WENKE_ADVISORY_DB when that is set.
set -euo pipefail
cd "$(dirname "$0")/.."

version=0.22.2
if ! cargo audit --version 2>/dev/null | grep -qF " $version"; then
  # Without binary scanning: only Cargo.lock is audited, and it has half the
  # dependencies to build.
  cargo install --locked --no-default-features cargo-audit --version "$version"
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
if [ -n "${WENKE_ADVISORY_DB:-}" ]; then
  db="$WENKE_ADVISORY_DB"
else
  tar -xJf third_party/rustsec-advisory-db.tar.xz -C "$work"
  db="$work/advisory-db"
fi

# --stale: the snapshot is older than the 90 days cargo-audit otherwise
# accepts; its age is stated in third_party/README.md.
cargo audit --db "$db" --no-fetch --stale --deny warnings
