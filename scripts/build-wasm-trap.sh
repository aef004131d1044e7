#!/usr/bin/env bash
# Test-only build of the filter with the `test-trap` feature (it traps on a request carrying
# `x-etls-test-trap`): target/trap/wasm32-wasip1/release/etls_auth.wasm, in its own target dir so
# it never replaces the release build. Incremental: a no-op when nothing changed. Used by
# tests/e2e/test_vm_recovery.py (its fixture runs this script); never ship this build.
set -euo pipefail
cd "$(dirname "$0")/.."
CARGO_TARGET_DIR=target/trap cargo build --quiet --release --target wasm32-wasip1 --lib --features test-trap
echo "built target/trap/wasm32-wasip1/release/etls_auth.wasm ($(stat -c %s target/trap/wasm32-wasip1/release/etls_auth.wasm) bytes)"
