#!/usr/bin/env python3
"""Renders the fleet example's Envoy configurations (docs/workers-and-replicas.md, "The fleet
example"): three gateway replicas and a round-robin front, all on 127.0.0.1.

Each replica i (1..3) is one Envoy with three listeners:
  public    BASE + 10*i      the gateway: etls-auth, then the app
  router    BASE + 10*i + 1  local only: the target of refresh_cluster; its route hashes on
                             x-etls-session-key into the RING_HASH cluster of the three refresh
                             listeners (a dispatched call itself hashes only on :authority)
  refresh   BASE + 10*i + 2  the replicas' refresh port: etls-auth answers POST refresh_path
  admin     BASE + 10*i + 9
The front: listener BASE, admin BASE + 9, a ROUND_ROBIN cluster of the three public listeners.

The files shipped next to this script are its output with the defaults (a test checks that they
match):  deploy/fleet/render.py --out deploy/fleet
Other ports or secrets (the tests use them):
  render.py --out DIR --base 20100 --app-port 18080 --login-port 18081 \
            --access-secret ... --refresh-secret ... --wasm /abs/path/etls_auth.wasm \
            --access-ttl-s 20
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPLICAS = 3
DEFAULT_BASE = 10100
# DEMO-ONLY secrets, the same as envoy.yaml's: every replica must have the same two secrets (the
# session key and the tokens depend on them). For anything real, pass your own through
# host_env_keys instead of key_values.
DEMO_ACCESS = "demo-only-access-secret-change-me-0123456789abcdef"
DEMO_REFRESH = "demo-only-refresh-secret-change-me-0123456789abcdef"
WASM = "target/wasm32-wasip1/release/etls_auth.wasm"
REFRESH_PATH = "/api/auth/refreshtoken"


def ports(base: int, i: int) -> dict[str, int]:
    """The ports of replica i (1-based); i = 0 is the front."""
    if i == 0:
        return {"public": base, "admin": base + 9}
    return {"public": base + 10 * i, "router": base + 10 * i + 1, "refresh": base + 10 * i + 2, "admin": base + 10 * i + 9}


def plugin_json(access_ttl_s: int | None = None) -> str:
    """The plugin configuration, the same on every listener of every replica."""
    plugin = {
        "login_cluster": "login_api",
        "login_upstream_path": "/login",
        # Every rotation asks the demo login API (its refresh tokens are single-use).
        "login_refresh_path": "/refresh",
        "login_timeout_ms": 2000,
        # Rotations go to this replica's router listener, which picks the replica by session key.
        "refresh_cluster": "fleet_refresh_router",
        "refresh_authority": "fleet-refresh",
        # Longer than login_timeout_ms: the refresh call waits for the login API's answer.
        "refresh_timeout_ms": 3000,
        "public_paths": ["/login"],
        "login_page": "/login",
    }
    if access_ttl_s is not None:
        plugin["access_ttl_s"] = access_ttl_s
    return json.dumps(plugin, indent=2)


def wasm_filter(wasm: str, access: str, refresh: str, access_ttl_s: int | None) -> str:
    config = "\n".join("                    " + line for line in plugin_json(access_ttl_s).splitlines())
    return f"""\
          - name: envoy.filters.http.wasm
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
              config:
                name: etls_auth
                root_id: etls_auth
                allow_on_headers_stop_iteration: true
                failure_policy: FAIL_RELOAD
                vm_config:
                  # One vm_id and one configuration on both listeners: one VM per worker serves
                  # both, and the workers of this Envoy share their login API calls.
                  vm_id: etls_auth
                  runtime: envoy.wasm.runtime.v8
                  code:
                    local:
                      filename: {wasm}
                  environment_variables:
                    # DEMO-ONLY secrets (see deploy/fleet/render.py). The same on every replica.
                    key_values:
                      ETLS_ACCESS: "{access}"
                      ETLS_REFRESH: "{refresh}"
                configuration:
                  "@type": type.googleapis.com/google.protobuf.StringValue
                  value: |
{config}
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
"""


ROUTER = """\
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
"""


def hcm(stat_prefix: str, routes: str, filters: str) -> str:
    return f"""\
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: {stat_prefix}
          normalize_path: true
          merge_slashes: true
          route_config:
            name: {stat_prefix}
            virtual_hosts:
            - name: {stat_prefix}
              domains: ["*"]
              routes:
{routes}          http_filters:
{filters}"""


def endpoints(name: str, port_list: list[int]) -> str:
    eps = "".join(f"""\
        - endpoint:
            address:
              socket_address: {{ address: 127.0.0.1, port_value: {p} }}
""" for p in port_list)
    return f"""\
    load_assignment:
      cluster_name: {name}
      endpoints:
      - lb_endpoints:
{eps}"""


# The front takes a replica that stopped out of its round robin after three failed TCP checks a
# second apart. The ring has no health check on purpose (see RETRY).
# Envoy lets a cluster have 3 retries under way at once (circuit breaker max_retries): a replica
# that leaves with a burst on it resets more requests than that at once, and the ones past 3
# would fail with 503 instead of being retried. As many as requests may be (Envoy's default 1024).
RETRY_BREAKER = """\
    circuit_breakers:
      thresholds:
      - max_retries: 1024
"""

HEALTH_CHECK = """\
    health_checks:
    - timeout: 1s
      interval: 1s
      no_traffic_interval: 1s
      unhealthy_threshold: 3
      healthy_threshold: 1
      tcp_health_check: {}
"""

# A replica that does not answer is skipped by a retry that walks on along the ring
# (previous_hosts), to the host every replica picks for that session. No health check and no
# outlier detection on the ring: each replica would keep its own view of the ring's health, two
# views that differ send one session's rotations to two replicas, and Envoy's panic mode (fewer
# than half the hosts healthy, as at start-up) hashes over another set of hosts again.
RETRY = """\
                  retry_policy:
                    retry_on: connect-failure,refused-stream,reset
                    num_retries: 2
                    retry_host_predicate:
                    - name: envoy.retry_host_predicates.previous_hosts
                      typed_config:
                        "@type": type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate
                    host_selection_retry_max_attempts: 10
"""


def static_cluster(name: str, port: int, comment: str) -> str:
    return f"""\
  # {comment}
  - name: {name}
    type: STATIC
    connect_timeout: 1s
{endpoints(name, [port])}"""


def replica(i: int, base: int, app_port: int, login_port: int, wasm: str, access: str, refresh: str,
            access_ttl_s: int | None) -> str:
    p = ports(base, i)
    all_refresh = [ports(base, j)["refresh"] for j in range(1, REPLICAS + 1)]
    public_routes = """\
              - match: { prefix: "/" }
                route: { cluster: app, timeout: 15s }
"""
    router_routes = f"""\
              # Only the refresh call goes this way: POST refresh_path, with the session key.
              - match:
                  path: "{REFRESH_PATH}"
                  headers:
                  - name: x-etls-session-key
                    present_match: true
                route:
                  cluster: fleet_refresh
                  timeout: 3s
                  # Consistent hashing on the session key: every replica sends every rotation
                  # of one session to the same replica.
                  hash_policy:
                  - header:
                      header_name: x-etls-session-key
{RETRY}              - match: {{ prefix: "/" }}
                direct_response: {{ status: 404 }}
"""
    refresh_routes = """\
              # etls-auth answers POST refresh_path itself (before the router); nothing else is
              # served on this port.
              - match: { prefix: "/" }
                direct_response: { status: 404 }
"""
    return f"""\
# Gateway replica {i} of {REPLICAS} of the fleet example (docs/workers-and-replicas.md). Generated by
# deploy/fleet/render.py (edit that, then: deploy/fleet/render.py --out deploy/fleet).
# Start it from the repository root (the wasm path is relative to it), as deploy/fleet/run.sh does:
#   .venv/bin/envoy -c deploy/fleet/replica-{i}.yaml --concurrency 2 --use-dynamic-base-id
#
# Listeners (127.0.0.1): public {p['public']} (the gateway), router {p['router']} (local: refresh_cluster),
# refresh {p['refresh']} (the replicas' refresh port), admin {p['admin']}.
admin:
  address:
    socket_address: {{ address: 127.0.0.1, port_value: {p['admin']} }}

static_resources:
  listeners:
  # The gateway: what the front balances over.
  - name: public
    address:
      socket_address: {{ address: 127.0.0.1, port_value: {p['public']} }}
{hcm("public", public_routes, wasm_filter(wasm, access, refresh, access_ttl_s))}
  # The target of refresh_cluster, on this replica only. A call dispatched by the filter hashes on
  # its :authority alone, so it comes here first; this route hashes on x-etls-session-key.
  - name: refresh_router
    address:
      socket_address: {{ address: 127.0.0.1, port_value: {p['router']} }}
{hcm("refresh_router", router_routes, ROUTER)}
  # The refresh port that every replica's ring points at: the filter's refresh route asks the
  # login API once for all the rotations of a session that reach this Envoy.
  - name: refresh
    address:
      socket_address: {{ address: 127.0.0.1, port_value: {p['refresh']} }}
{hcm("refresh", refresh_routes, wasm_filter(wasm, access, refresh, access_ttl_s))}
  clusters:
{static_cluster("app", app_port, "The demo app (demo/app.py).")}
{static_cluster("login_api", login_port, "The demo login API (demo/login_api.py): login_cluster.")}
{static_cluster("fleet_refresh_router", p['router'], "refresh_cluster: this replica's own router listener.")}
  # The refresh ports of all the replicas, the same on every replica (the same ring). A replica
  # that is down is skipped by the route's retry, not taken out of the ring.
  - name: fleet_refresh
    type: STATIC
    connect_timeout: 0.5s
    lb_policy: RING_HASH
    ring_hash_lb_config:
      minimum_ring_size: 1024
{endpoints("fleet_refresh", all_refresh)}{RETRY_BREAKER}"""


def front(base: int) -> str:
    p = ports(base, 0)
    publics = [ports(base, j)["public"] for j in range(1, REPLICAS + 1)]
    routes = f"""\
              - match: {{ prefix: "/" }}
                route:
                  cluster: replicas
                  timeout: 15s
{RETRY}"""
    return f"""\
# The front of the fleet example (docs/workers-and-replicas.md): a plain round-robin load balancer
# over the three gateway replicas, as a cloud load balancer would be. No etls-auth here.
# Generated by deploy/fleet/render.py.
#   .venv/bin/envoy -c deploy/fleet/front.yaml --concurrency 1 --use-dynamic-base-id
admin:
  address:
    socket_address: {{ address: 127.0.0.1, port_value: {p['admin']} }}

static_resources:
  listeners:
  - name: front
    address:
      socket_address: {{ address: 127.0.0.1, port_value: {p['public']} }}
{hcm("front", routes, ROUTER)}
  clusters:
  - name: replicas
    type: STATIC
    connect_timeout: 1s
    lb_policy: ROUND_ROBIN
{endpoints("replicas", publics)}{RETRY_BREAKER}{HEALTH_CHECK}"""


def render(base: int = DEFAULT_BASE, app_port: int = 8080, login_port: int = 8081, wasm: str = WASM,
           access: str = DEMO_ACCESS, refresh: str = DEMO_REFRESH, access_ttl_s: int | None = None) -> dict[str, str]:
    """File name -> YAML text."""
    out = {f"replica-{i}.yaml": replica(i, base, app_port, login_port, wasm, access, refresh, access_ttl_s)
           for i in range(1, REPLICAS + 1)}
    out["front.yaml"] = front(base)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--out", required=True, help="folder to write replica-1..3.yaml and front.yaml into")
    ap.add_argument("--base", type=int, default=DEFAULT_BASE)
    ap.add_argument("--app-port", type=int, default=8080)
    ap.add_argument("--login-port", type=int, default=8081)
    ap.add_argument("--wasm", default=WASM)
    ap.add_argument("--access-secret", default=DEMO_ACCESS)
    ap.add_argument("--refresh-secret", default=DEMO_REFRESH)
    ap.add_argument("--access-ttl-s", type=int, default=None, help="access_ttl_s of the filter (default: its own, 900)")
    a = ap.parse_args()
    if not 1024 <= a.base <= 65535 - 10 * REPLICAS - 9:
        print(f"render.py: --base {a.base} leaves no room for the fleet's ports", file=sys.stderr)
        return 2
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, text in render(a.base, a.app_port, a.login_port, a.wasm, a.access_secret, a.refresh_secret, a.access_ttl_s).items():
        (out / name).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
