"""The fleet example (deploy/fleet; docs/workers-and-replicas.md, "Several replicas" and "The
fleet example"), in real Envoys on loopback:
- the shipped configs are deploy/fleet/render.py's output and pass `envoy --mode validate`;
- deploy/fleet/run.sh starts the demo login API and app, three replicas and the front, serves a
  login and a rotation through the front, and stops every process by PID;
- x-etls-session-key, seen at a stub behind every replica's router: the same for one session on
  every replica, different between sessions, the keyed hash of the login API's refresh token,
  and no token in it.
Bursts through the fleet: tests/e2e/test_fleet_burst.py."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from harness import paths, tokens
from harness.envoy import SECRETS, run_validate
from harness.upstreams import Reply, StubServer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fleet_support import REPLICAS, _ports_free, expired_session, render_module, start_fleet  # noqa: E402

FLEET = paths.REPO / "deploy" / "fleet"
SHIPPED = ["replica-1.yaml", "replica-2.yaml", "replica-3.yaml", "front.yaml"]
N = 32
KEY = "x-etls-session-key"


def test_shipped_fleet_configs_are_the_renderer_output():
    rendered = render_module().render()
    assert sorted(rendered) == sorted(SHIPPED)
    for name, text in rendered.items():
        assert (FLEET / name).read_text() == text, f"deploy/fleet/{name} differs: run deploy/fleet/render.py --out deploy/fleet"


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_fleet_config_validates(name):
    r = run_validate(FLEET / name, cwd=paths.REPO)
    assert r.returncode == 0 and f"configuration '{FLEET / name}' OK" in r.stdout, r.stdout[-2000:]


def test_every_replica_routes_refresh_calls_by_consistent_hash_on_the_session_key():
    configs = {name: yaml.safe_load((FLEET / name).read_text()) for name in SHIPPED}
    rings = []
    for i in range(1, REPLICAS + 1):
        cfg = configs[f"replica-{i}.yaml"]["static_resources"]
        clusters = {c["name"]: c for c in cfg["clusters"]}
        ring = clusters["fleet_refresh"]
        assert ring["lb_policy"] == "RING_HASH"
        rings.append([e["endpoint"]["address"]["socket_address"]["port_value"]
                      for e in ring["load_assignment"]["endpoints"][0]["lb_endpoints"]])
        listeners = {lst["name"]: lst for lst in cfg["listeners"]}
        router_port = listeners["refresh_router"]["address"]["socket_address"]["port_value"]
        target = clusters["fleet_refresh_router"]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]
        assert target["endpoint"]["address"]["socket_address"]["port_value"] == router_port
        hcm = listeners["refresh_router"]["filter_chains"][0]["filters"][0]["typed_config"]
        route = hcm["route_config"]["virtual_hosts"][0]["routes"][0]
        assert route["route"]["cluster"] == "fleet_refresh"
        assert route["route"]["hash_policy"] == [{"header": {"header_name": KEY}}]
        retry = route["route"]["retry_policy"]
        assert [p["name"] for p in retry["retry_host_predicate"]] == ["envoy.retry_host_predicates.previous_hosts"]
        assert "connect-failure" in retry["retry_on"]
        # No health check or outlier detection on the ring: every replica's ring stays the same.
        assert "health_checks" not in ring and "outlier_detection" not in ring
    refresh_ports = [10112, 10122, 10132]
    assert rings == [refresh_ports] * REPLICAS, "every replica must have the same ring"
    front = {c["name"]: c for c in configs["front.yaml"]["static_resources"]["clusters"]}["replicas"]
    assert front["lb_policy"] == "ROUND_ROBIN"


# ---- run.sh -------------------------------------------------------------------------------------
def _free_base() -> int:
    import random
    for _ in range(50):
        base = random.randrange(20000, 32000, 100)
        if _ports_free([base + k for k in range(40)]):
            return base
    raise paths.HarnessError("no free block of 40 ports")


def test_run_script_serves_through_the_front_and_stops_every_process_by_pid(tmp_path):
    base = _free_base()
    env = dict(os.environ, FLEET_BASE=str(base), FLEET_APP_PORT=str(base + 50), FLEET_LOGIN_PORT=str(base + 51),
               FLEET_RUN_DIR=str(tmp_path), ENVOY_BIN=paths.envoy_bin())
    out = open(tmp_path / "run.out", "wb")
    proc = subprocess.Popen([str(FLEET / "run.sh")], env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 90
        while b"Press Ctrl-C to stop." not in (tmp_path / "run.out").read_bytes():
            assert proc.poll() is None, (tmp_path / "run.out").read_text()
            assert time.monotonic() < deadline, (tmp_path / "run.out").read_text()
            time.sleep(0.2)
        from harness.client import request
        r = request(base, "POST", "/api/auth/login", body={"email": "alice@example.com", "password": "alice-demo-password"})
        assert r.status == 200, (r, (tmp_path / "login_api.log").read_text())
        jar = {c.name: c.value for c in r.set_cookies}
        assert sorted(jar) == ["accessToken", "accessTokenEtls", "refreshToken", "refreshTokenEtls"]
        demo = render_module()
        # Rotate: the same session with its ETLS access token expired (signed with the demo secret).
        jar["accessTokenEtls"] = tokens.expired_access(1, "admin", secret=demo.DEMO_ACCESS)
        r = request(base, "GET", "/", cookies=jar)
        assert r.status == 200, (r, (tmp_path / "login_api.log").read_text())
        renewed = {c.name: c.value for c in r.set_cookies}
        assert sorted(renewed) == ["accessToken", "accessTokenEtls", "refreshToken", "refreshTokenEtls"], r.set_cookie_headers
        assert renewed["refreshToken"] != jar["refreshToken"], "the demo login API renews its refresh token"
        assert tokens.verifies(renewed["accessTokenEtls"], demo.DEMO_ACCESS)
        pids = [int((tmp_path / f"replica-{i}.pid").read_text()) for i in (1, 2, 3)]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        out.close()
    text = (tmp_path / "run.out").read_text()
    assert "fleet: stopped" in text, text
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    ports = [base, base + 10, base + 11, base + 12, base + 20, base + 30, base + 50, base + 51]
    assert _ports_free(ports), f"a port of {ports} is still taken after run.sh stopped:\n{text}"
    log = (tmp_path / "login_api.log").read_text()
    assert log.count('"POST /refresh HTTP/1.1" 200') == 1, log


# ---- the session key, at a stub behind every replica's router -----------------------------------
def test_the_session_key_is_the_same_on_every_replica_differs_between_sessions_and_holds_no_token(upstreams):
    stub = StubServer("fleet_key_stub", default=Reply(503, {"error": "stub"})).start()
    fleet = start_fleet("fleet-key", upstreams.app.port, upstreams.login.port, front=False, refresh_stub_port=stub.port)
    try:
        a, b = "up-refresh-session-a-" + os.urandom(8).hex(), "up-refresh-session-b-" + os.urandom(8).hex()
        sessions = {a: expired_session(a), b: expired_session(b, user_id=7, role="user")}
        for i in range(REPLICAS):
            for up, cookies in sessions.items():
                r = fleet.get("/x", port=fleet.public_port(i), cookies=cookies)
                # The stub's 503 is a failed refresh call: the rotation denies.
                assert r.status == 401, r
        calls = stub.requests()
        assert len(calls) == 2 * REPLICAS, [c.path for c in calls]
        keys: dict[str, set[str]] = {a: set(), b: set()}
        for call in calls:
            assert (call.method, call.path) == ("POST", "/api/auth/refreshtoken")
            (value,) = call.header_all(KEY)
            sent = "; ".join(call.header_all("Cookie"))
            up = a if f"refreshToken={a}" in sent else b
            keys[up].add(value)
            etls = sessions[up]["refreshTokenEtls"]
            for t in (a, b, etls, sessions[up]["accessTokenEtls"]):
                assert t not in value and value not in t
                assert not any(t[k:k + 8] in value for k in range(len(t) - 7)), "an 8-byte piece of a token in the key"
        assert keys[a] == {tokens.session_key(a)}, "one key for session a on all three replicas"
        assert keys[b] == {tokens.session_key(b)}
        assert tokens.session_key(a) != tokens.session_key(b)
        assert tokens.session_key(a) != tokens.session_key(a, secret="another-refresh-secret-0123456789abcdefghij")
        assert len(tokens.session_key(a)) == 64 and SECRETS["ETLS_REFRESH"] not in tokens.session_key(a)
    finally:
        fleet.stop()
        stub.stop()
