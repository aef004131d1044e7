#!/usr/bin/env bash
# Runs the fleet example on 127.0.0.1 (docs/workers-and-replicas.md, "The fleet example"):
# the demo login API and app, three gateway replicas (Envoy --concurrency 2 each, with the
# etls-auth filter; rotations routed by consistent hash on x-etls-session-key), and a round-robin
# front. Open http://localhost:10100/ (the front). Ctrl-C (or SIGTERM) stops every process it
# started, by PID.
#
# Environment (all optional):
#   ENVOY_BIN          Envoy binary (default: .venv/bin/envoy, then envoy on PATH)
#   FLEET_BASE         first port (default 10100; see deploy/fleet/render.py for the layout)
#   FLEET_APP_PORT, FLEET_LOGIN_PORT   demo app and login API ports (default 8080, 8081)
#   FLEET_ACCESS_TTL_S access_ttl_s of the filter, e.g. 20 to watch rotations (default 900)
#   FLEET_RUN_DIR      where logs (and rendered configs) go (default: a new temp dir)
# Build the filter first: scripts/build-wasm.sh.
set -euo pipefail
cd "$(dirname "$0")/../.."

WASM=target/wasm32-wasip1/release/etls_auth.wasm
[ -f "$WASM" ] || { echo "fleet: $WASM is missing (scripts/build-wasm.sh builds it)" >&2; exit 1; }
if [ -n "${ENVOY_BIN:-}" ]; then ENVOY=$ENVOY_BIN
elif [ -x .venv/bin/envoy ]; then ENVOY=.venv/bin/envoy
elif command -v envoy >/dev/null; then ENVOY=$(command -v envoy)
else echo "fleet: no Envoy binary (scripts/setup.sh installs one into .venv, or set ENVOY_BIN)" >&2; exit 1
fi
PY=python3
[ -x .venv/bin/python ] && PY=.venv/bin/python

BASE=${FLEET_BASE:-10100}
APP_PORT=${FLEET_APP_PORT:-8080}
LOGIN_PORT=${FLEET_LOGIN_PORT:-8081}
RUN_DIR=${FLEET_RUN_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/etls-fleet.XXXXXX")}
mkdir -p "$RUN_DIR"

# The shipped configs, or rendered ones when a port or the TTL differs from the defaults.
CONFIG_DIR=deploy/fleet
if [ "$BASE" != 10100 ] || [ "$APP_PORT" != 8080 ] || [ "$LOGIN_PORT" != 8081 ] || [ -n "${FLEET_ACCESS_TTL_S:-}" ]; then
  CONFIG_DIR=$RUN_DIR/config
  ttl_args=()
  [ -n "${FLEET_ACCESS_TTL_S:-}" ] && ttl_args=(--access-ttl-s "$FLEET_ACCESS_TTL_S")
  "$PY" deploy/fleet/render.py --out "$CONFIG_DIR" --base "$BASE" --app-port "$APP_PORT" \
    --login-port "$LOGIN_PORT" "${ttl_args[@]}"
fi

PIDS=()
cleanup() {
  trap - EXIT INT TERM
  local pid i alive
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for i in $(seq 50); do  # up to 5 s for a clean exit
    alive=0
    for pid in "${PIDS[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && break
    sleep 0.1
  done
  for pid in "${PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  echo "fleet: stopped (logs in $RUN_DIR)"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# wait_ready NAME URL PID: polls URL for up to 30 s; fails if the process dies first.
wait_ready() {
  local name=$1 url=$2 pid=$3 i
  for i in $(seq 300); do
    kill -0 "$pid" 2>/dev/null || { echo "fleet: $name exited; see $RUN_DIR/$name.log" >&2; tail -n 20 "$RUN_DIR/$name.log" >&2; return 1; }
    if "$PY" -c 'import sys,urllib.request; urllib.request.urlopen(sys.argv[1], timeout=1)' "$url" 2>/dev/null; then
      return 0
    fi
    sleep 0.1
  done
  echo "fleet: $name not ready after 30 s; see $RUN_DIR/$name.log" >&2
  return 1
}

python3 demo/login_api.py --port "$LOGIN_PORT" >"$RUN_DIR/login_api.log" 2>&1 &
PIDS+=($!); wait_ready login_api "http://127.0.0.1:$LOGIN_PORT/healthz" "$!"
python3 demo/app.py --port "$APP_PORT" --envoy-admin "http://127.0.0.1:$((BASE + 19))" >"$RUN_DIR/app.log" 2>&1 &
PIDS+=($!); wait_ready app "http://127.0.0.1:$APP_PORT/healthz" "$!"

for i in 1 2 3; do
  "$ENVOY" -c "$CONFIG_DIR/replica-$i.yaml" --concurrency 2 --use-dynamic-base-id \
    --log-level info >"$RUN_DIR/replica-$i.log" 2>&1 &
  PIDS+=($!)
  echo "$!" >"$RUN_DIR/replica-$i.pid"
done
for i in 1 2 3; do
  wait_ready "replica-$i" "http://127.0.0.1:$((BASE + 10 * i + 9))/ready" "$(cat "$RUN_DIR/replica-$i.pid")"
done
"$ENVOY" -c "$CONFIG_DIR/front.yaml" --concurrency 1 --use-dynamic-base-id --log-level info >"$RUN_DIR/front.log" 2>&1 &
PIDS+=($!); wait_ready front "http://127.0.0.1:$((BASE + 9))/ready" "$!"

printf '%s\n' "" \
  "  etls-auth fleet is running: open http://localhost:$BASE/ (round robin over 3 replicas)" \
  "  replicas: public 127.0.0.1:$((BASE + 10)), :$((BASE + 20)), :$((BASE + 30)); admin :$((BASE + 19)), :$((BASE + 29)), :$((BASE + 39))" \
  "  DEMO-ONLY users (demo/login_api.py): alice@example.com / alice-demo-password" \
  "  Take a replica away: kill \$(cat $RUN_DIR/replica-2.pid)" \
  "  Logs and PIDs: $RUN_DIR" \
  "  Press Ctrl-C to stop." ""

# Runs until Ctrl-C / SIGTERM, or until the front, the app or the login API exits (a replica may
# be stopped on purpose to watch the ring move).
set +e
wait -n "${PIDS[0]}" "${PIDS[1]}" "${PIDS[5]}"
status=$?
echo "fleet: a process exited (status $status); stopping the others" >&2
exit 1
