#!/usr/bin/env bash
# Runs every test: installs what is missing, builds the wasm, then the native unit tests and
# lints, the jose interop tests, and the integration tests against a real Envoy.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build-wasm.sh
# The test-only trapping build (feature test-trap) for tests/e2e/test_vm_recovery.py, in target/trap/.
scripts/build-wasm-trap.sh
# No unwrap/expect/panic/indexing outside tests (Cargo.toml [lints.clippy]), native and wasm.
cargo clippy --quiet --all-targets -- -D warnings
cargo clippy --quiet --release --target wasm32-wasip1 --lib -- -D warnings
# The test-only trapping build too (its own target dir, as scripts/build-wasm-trap.sh).
CARGO_TARGET_DIR=target/trap cargo clippy --quiet --release --target wasm32-wasip1 --lib --features test-trap -- -D warnings
cargo test --quiet
.venv/bin/python -m pytest tests -q -p no:cacheprovider
