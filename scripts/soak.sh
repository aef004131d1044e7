#!/usr/bin/env bash
# Load and soak run (issue 6), separate from scripts/test.sh: a real Envoy with the filter on
# loopback, tens of thousands of mixed requests (sessions, rotations, garbage and non-UTF-8 and
# huge cookies, logins), zero unexpected statuses, no Wasm VM failure, Envoy RSS before/after.
#
#   scripts/soak.sh                                   # 30000 requests, 8 connections, <= 600 s
#   SOAK_REQUESTS=100000 SOAK_MODE=inline scripts/soak.sh
#
# Summary: stdout and tests/out/soak/last.json. Exit 1 on any unexpected answer or VM failure.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] && [ -x .venv/bin/envoy ] || scripts/setup.sh
scripts/build-wasm.sh
exec .venv/bin/python tests/load/soak.py "$@"
