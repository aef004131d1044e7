"""VM recovery (README "Operations", failure policy): what Envoy 1.40 does when the filter's Wasm
VM traps, shown with a test-only build of the filter (cargo feature `test-trap`, built into
target/trap/ by scripts/build-wasm-trap.sh, never shipped) that traps on a request carrying
`x-etls-test-trap`.

Measured in Envoy 1.40 (one worker):
- the trapping request gets 503 with an empty body and never reaches the app; Envoy logs
  "Function: proxy_on_request_headers failed: Uncaught RuntimeError: unreachable";
- FAIL_RELOAD (shipped): requests within the reload backoff (about 1 s after the trap) get 503 and
  count `wasm.etls_auth.vm_reload_backoff`; the first request after it gets a new VM
  (`wasm.etls_auth.vm_reload_success` + 1) and is served normally, and so is every later one;
- the default policy (FAIL_CLOSED): every later request on that worker gets 503, forever, whatever
  it carries; no reload counter moves.
In no case does a request reach the app unchecked.
"""
from __future__ import annotations

import time

import pytest

from harness import checks, client, paths, tokens
from harness.envoy import SECRETS, plugin_config
from harness.ops import TRAP_HEADER, build_trap_wasm, start_envoy, wait_until

STATS = ("vm_reload_success", "vm_reload_backoff", "vm_reload_failure")


@pytest.fixture(scope="module")
def trap_wasm():
    w = build_trap_wasm()
    assert TRAP_HEADER.encode() in w.read_bytes()
    return w


def _start(upstreams, trap_wasm, policy):
    return start_envoy(f"trap-{policy or 'default'}", plugin=plugin_config(), env=SECRETS, wasm=trap_wasm,
                       failure_policy=policy, clusters={"app": upstreams.app.port, "login_api": upstreams.login.port})


def _stats(e):
    return {s: e.stat(f"wasm.etls_auth.{s}") for s in STATS}


def _get(e, probe, *, trap=False, session=True):
    headers = [("x-etls-probe", probe)]
    if trap:
        headers.append((TRAP_HEADER, "1"))
    cookies = {"accessTokenEtls": tokens.access(77, "ops")} if session else None
    return client.request(e.listener_port, "GET", f"/r/{probe}", headers=headers, cookies=cookies)


def _reached(upstreams, probe):
    return bool(upstreams.app.with_header("x-etls-probe", probe))


def _served(r, user="77"):
    return r.status == 200 and checks.echo_header_all(checks.echo(r), "x-etls-user-id") == [user]


def _trap(upstreams, e):
    """A good request, then the trapping one: 503, empty body, never at the app."""
    r = _get(e, "before")
    assert _served(r), r
    r = _get(e, "trap", trap=True)
    trapped_at = time.monotonic()
    assert r.status == 503 and r.body == b"", r
    assert not _reached(upstreams, "trap"), "the trapping request reached the app"
    assert "proxy_on_request_headers failed: Uncaught RuntimeError: unreachable" in e.log_text()
    return trapped_at


def test_fail_reload_recovers_the_vm_after_a_trap(upstreams, trap_wasm):
    e = _start(upstreams, trap_wasm, "FAIL_RELOAD")
    try:
        assert _stats(e) == {"vm_reload_success": 0, "vm_reload_backoff": 0, "vm_reload_failure": 0}
        trapped_at = _trap(upstreams, e)
        # Within the reload backoff: refused (503), never let through unchecked.
        r = _get(e, "in-backoff")
        assert time.monotonic() - trapped_at < 0.9, "too slow to land inside the backoff"
        assert r.status == 503 and not _reached(upstreams, "in-backoff"), r
        assert _stats(e) == {"vm_reload_success": 0, "vm_reload_backoff": 1, "vm_reload_failure": 0}
        # Past the backoff: the next request gets a new VM and is served normally.
        time.sleep(max(0.0, trapped_at + 1.3 - time.monotonic()))
        r = _get(e, "after")
        assert _served(r), r
        assert _stats(e) == {"vm_reload_success": 1, "vm_reload_backoff": 1, "vm_reload_failure": 0}
        # The new VM checks sessions as before: no session is denied, a valid one is served.
        r = _get(e, "after-nosession", session=False)
        assert r.status == 401 and r.json() == {"error": "Unauthorized"} and not _reached(upstreams, "after-nosession")
        for i in range(5):
            assert _served(_get(e, f"after-{i}"))
        assert _stats(e)["vm_reload_success"] == 1
        assert e.alive()
    finally:
        e.stop()


def test_default_failure_policy_fails_every_later_request_on_the_worker(upstreams, trap_wasm):
    """What operators would lose without FAIL_RELOAD: one trap and the worker answers 503 to every
    later request (valid session or not) until Envoy restarts."""
    e = _start(upstreams, trap_wasm, None)
    try:
        _trap(upstreams, e)
        time.sleep(1.5)  # past any reload backoff: nothing reloads
        for i, session in enumerate([True, False, True, True]):
            r = _get(e, f"dead-{i}", session=session)
            assert r.status == 503 and r.body == b"", r
            assert not _reached(upstreams, f"dead-{i}")
        assert _stats(e) == {"vm_reload_success": 0, "vm_reload_backoff": 0, "vm_reload_failure": 0}
        assert e.alive()
    finally:
        e.stop()


def test_release_build_ignores_the_trap_header(make_gateway):
    """The shipped build has no trap: the marker header is just another header."""
    assert TRAP_HEADER.encode() not in paths.wasm_path().read_bytes()
    gw = make_gateway("default", mode="inline", concurrency=2)
    r = gw.get("/r/release", headers={TRAP_HEADER: "1"}, cookies=gw.session(tokens.access(78, "ops")))
    assert r.status == 200 and checks.echo_header_all(checks.echo(r), "x-etls-user-id") == ["78"]
    r = gw.get("/r/release-nosession", headers={TRAP_HEADER: "1"})
    checks.unauthorized(r, gw)
