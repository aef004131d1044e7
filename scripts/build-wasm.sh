#!/usr/bin/env bash
# Builds the filter: target/wasm32-wasip1/release/etls_auth.wasm (the path every config uses).
# Then shrinks it with binaryen's `wasm-opt` (scripts/setup.sh installs binaryen) when
# available: smaller to ship and to compile in each Envoy worker. Without wasm-opt the plain
# cargo build is kept, with a warning. ETLS_WASM_OPT=0 skips the step.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --quiet --release --target wasm32-wasip1 --lib
OUT=target/wasm32-wasip1/release/etls_auth.wasm
RAW=target/wasm32-wasip1/release/deps/etls_auth.wasm   # cargo's artifact; OUT is a hard link to it after a build
if [ "${ETLS_WASM_OPT:-1}" != 0 ] && [ -f "$RAW" ]; then
  if ! command -v wasm-opt >/dev/null; then
    echo "build-wasm: wasm-opt not found (scripts/setup.sh installs binaryen): keeping the unoptimised build" >&2
  elif [ "$(stat -c %i "$OUT")" = "$(stat -c %i "$RAW")" ] || [ "$RAW" -nt "$OUT" ]; then
    # Features the Rust wasm32-wasip1 target emits; wasm-opt must not add any others.
    # -O1 with inlining off (-ocimfs/-aimfs/-fimfs 0): binaryen's -Oz inlines every function that
    # has one caller, whatever its size, into ever larger functions; Envoy's V8 compiles each
    # function with TurboFan at load, and the compiler's memory for large functions stays in
    # Envoy's heap afterwards (measured: docs/performance.md).
    wasm-opt -O1 -ocimfs 0 -aimfs 0 -fimfs 0 --strip-debug --strip-producers \
      --enable-bulk-memory --enable-sign-ext --enable-mutable-globals --enable-nontrapping-float-to-int \
      --enable-reference-types --enable-multivalue \
      "$RAW" -o "$OUT.tmp"
    mv -f "$OUT.tmp" "$OUT"
  fi
fi
echo "built $OUT ($(stat -c %s "$OUT") bytes)"
