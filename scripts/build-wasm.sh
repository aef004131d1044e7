#!/usr/bin/env bash
# Builds the filter: target/wasm32-wasip1/release/etls_auth.wasm (the path every config uses).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --quiet --release --target wasm32-wasip1 --lib
echo "built target/wasm32-wasip1/release/etls_auth.wasm ($(stat -c %s target/wasm32-wasip1/release/etls_auth.wasm) bytes)"
