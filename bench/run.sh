#!/usr/bin/env bash
# The benchmark, one command: bench/run.sh
# Builds the release etls_auth.wasm (scripts/build-wasm.sh), the empty filter (bench/empty-filter) and
# the host-call floor (bench/floor-filter),
# starts each configuration in its own Envoy on 127.0.0.1, checks every case answers as expected,
# then measures them in interleaved rounds with wrk; prints a markdown table, writes bench/out/.
# Environment: BENCH_SECONDS (5), BENCH_ROUNDS (5), BENCH_CONNECTIONS (16), BENCH_ENVOY_CPU (0),
# BENCH_CLIENT_CPU (1), BENCH_SKIP_SETUP=1 (skip scripts/setup.sh), ENVOY_BIN.
# With the defaults the whole run takes about 7 minutes (13 cases × 5 rounds × 5 s, plus start-up).
set -euo pipefail
cd "$(dirname "$0")/.."
[ "${BENCH_SKIP_SETUP:-0}" = 1 ] || scripts/setup.sh
scripts/build-wasm.sh
for f in empty floor; do
  cargo build --quiet --release --target wasm32-wasip1 \
    --manifest-path "bench/$f-filter/Cargo.toml" --target-dir "target/bench-$f-filter"
done
exec .venv/bin/python bench/bench.py
