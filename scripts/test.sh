#!/usr/bin/env bash
# Runs every test: installs what is missing, builds the wasm, then the native unit tests and
# lints, the jose interop tests, and the integration tests against a real Envoy: every test with
# the default Envoy (1.40.0, .venv), then tests/e2e again with Envoy 1.36.2 (.venv-envoy136, the
# Envoy Istio 1.28 ships). ENVOY_BIN=/path/to/envoy runs every test with that one Envoy only.
# Prints each Envoy's version before its run, and how long each stage took (also on failure).
set -euo pipefail
cd "$(dirname "$0")/.."

STAGES=()
TOTAL_START=$SECONDS
summary() {
  local rc=$?
  echo
  echo "== stage timings (scripts/test.sh)"
  local s
  for s in "${STAGES[@]}"; do echo "   $s"; done
  echo "   total: $((SECONDS - TOTAL_START)) s$([ "$rc" = 0 ] || echo " (failed, exit $rc)")"
}
trap summary EXIT

# stage NAME CMD...: runs CMD, records how long it took.
stage() {
  local name=$1; shift
  echo "== $name"
  local start=$SECONDS rc=0
  "$@" || rc=$?
  STAGES+=("$(printf '%-34s %5d s%s' "$name:" $((SECONDS - start)) "$([ "$rc" = 0 ] || echo "  FAILED (exit $rc)")")")
  echo "== $name: $((SECONDS - start)) s"
  return "$rc"
}

# The Envoy the harness picks (tests/harness/paths.py: ENVOY_BIN, else envoy on PATH, else
# .venv/bin/envoy), and its version line.
harness_envoy() { .venv/bin/python -c 'import sys; sys.path.insert(0, "tests"); from harness import paths; print(paths.envoy_bin())'; }
show_envoy() { echo "Envoy: $1"; "$1" --version 2>&1 | grep -m1 'version:'; }

pytest_with() { # pytest_with ENVOY_BINARY PYTEST_ARGS...
  local bin=$1; shift
  show_envoy "$bin"
  ENVOY_BIN=$bin .venv/bin/python -m pytest "$@" -q -p no:cacheprovider
}

stage setup scripts/setup.sh
stage build-wasm scripts/build-wasm.sh
# The test-only trapping build (feature test-trap) for tests/e2e/test_vm_recovery.py, in target/trap/.
stage build-wasm-trap scripts/build-wasm-trap.sh
# No unwrap/expect/panic/indexing outside tests (Cargo.toml [lints.clippy]), native and wasm.
stage clippy-native cargo clippy --quiet --all-targets -- -D warnings
stage clippy-wasm cargo clippy --quiet --release --target wasm32-wasip1 --lib -- -D warnings
# The test-only trapping build too (its own target dir, as scripts/build-wasm-trap.sh).
stage clippy-wasm-trap env CARGO_TARGET_DIR=target/trap cargo clippy --quiet --release --target wasm32-wasip1 --lib --features test-trap -- -D warnings
stage cargo-test cargo test --quiet

# Both Envoy runs go on when the first fails (the log then shows both); the script fails after.
failed=0
if [ -n "${ENVOY_BIN:-}" ]; then
  stage "pytest tests (ENVOY_BIN)" pytest_with "$ENVOY_BIN" tests || failed=1
else
  stage "pytest tests (default Envoy)" pytest_with "$(harness_envoy)" tests || failed=1
  # The oldest Envoy the filter supports, as Istio 1.28 ships it: every end-to-end test again.
  stage "pytest tests/e2e (Envoy 1.36)" pytest_with "$PWD/.venv-envoy136/bin/envoy" tests/e2e || failed=1
fi
exit "$failed"
