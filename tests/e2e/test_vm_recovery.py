"""VM recovery (docs/operations.md, Failure policy): what Envoy does when the filter's Wasm VM
traps, shown with a test-only build of the filter (cargo feature `test-trap`, built into
target/trap/ by scripts/build-wasm-trap.sh, never shipped) that traps on a request carrying
`x-etls-test-trap`.

Measured in Envoy 1.40 and 1.36 (one worker):
- the trapping request gets 503 with an empty body and never reaches the app; Envoy logs
  "Function: proxy_on_request_headers failed: Uncaught RuntimeError: unreachable";
- FAIL_RELOAD (shipped): Envoy reloads a worker's failed VM on a request only once a backoff has
  passed since that worker's last VM load (its creation at startup, or its last reload), NOT since
  the trap; the backoff is drawn afresh on each request, uniform in [base, 1.5 * base) with base
  = reload_config.backoff.base_interval (default 1 s): harness.ops.RELOAD_BACKOFF_FACTOR has the
  source. Until then every request gets 503, never reaches the app and counts
  `wasm.etls_auth.vm_reload_backoff`; the first request past it gets a new VM
  (`wasm.etls_auth.vm_reload_success` + 1) and is served normally, and so is every later one.
  The tests set base_interval explicitly and wait for the new VM with a bounded poll, asserting
  every answer meanwhile, and the bounds Envoy's rule gives: never before `base` since the last
  load, never a refusal later than 1.5 * `base` after it;
- the default policy (FAIL_CLOSED): every later request on that worker gets 503, forever, whatever
  it carries; no reload counter moves.
In no case does a request reach the app unchecked.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import pytest

from harness import checks, client, paths, tokens
from harness.envoy import SECRETS, plugin_config
from harness.ops import (RELOAD_BACKOFF_FACTOR, RELOAD_DEFAULT_BASE_MS, TRAP_HEADER, build_trap_wasm, start_envoy,
                         wait_until)

STATS = ("vm_reload_success", "vm_reload_backoff", "vm_reload_failure")
TRAP_LOG = "proxy_on_request_headers failed: Uncaught RuntimeError: unreachable"
# reload_config.backoff.base_interval the FAIL_RELOAD test sets: long enough that two requests
# right after a reload land inside the next backoff on a loaded machine, short enough to wait out.
RELOAD_BASE_S = 2.0
# The longest a test waits for the new VM (bounded poll), and the pause between two polls.
RECOVERY_WAIT_S = 10.0
POLL_S = 0.05


@pytest.fixture(scope="module")
def trap_wasm():
    w = build_trap_wasm()
    assert TRAP_HEADER.encode() in w.read_bytes()
    return w


def _start(upstreams, trap_wasm, policy, reload_base_s=None):
    return start_envoy(f"trap-{policy or 'default'}", plugin=plugin_config(), env=SECRETS, wasm=trap_wasm,
                       failure_policy=policy, clusters={"app": upstreams.app.port, "login_api": upstreams.login.port},
                       reload_base_interval_ms=None if reload_base_s is None else round(reload_base_s * 1000))


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


def _refused(upstreams, r, probe):
    """The fail-closed answer of a dead VM: 503, empty body, and the request never at the app."""
    return r.status == 503 and r.body == b"" and not _reached(upstreams, probe)


@dataclass
class Sent:
    """One request: when it left (monotonic), when its answer came, the answer."""
    sent: float
    answered: float
    r: client.Response


def _send(e, probe, **kw) -> Sent:
    sent = time.monotonic()
    r = _get(e, probe, **kw)
    return Sent(sent, time.monotonic(), r)


def _trap(upstreams, e, tag, traps_so_far=0) -> Sent:
    """A good request, then the trapping one: 503, empty body, never at the app, and Envoy logs
    the trap. Returns the good request (its VM was alive when it was answered)."""
    good = _send(e, f"before-{tag}")
    assert _served(good.r), good.r
    r = _get(e, f"trap-{tag}", trap=True)
    assert r.status == 503 and r.body == b"", r
    assert not _reached(upstreams, f"trap-{tag}"), "the trapping request reached the app"
    # Envoy writes the log line while it answers; the file may lag a moment behind (bounded wait).
    assert wait_until(lambda: e.log_text().count(TRAP_LOG) > traps_so_far, 5), e.log_tail()
    assert e.log_text().count(TRAP_LOG) == traps_so_far + 1
    return good


def _until_served(upstreams, e, tag) -> tuple[list[Sent], Sent]:
    """Bounded poll (RECOVERY_WAIT_S) for the new VM: requests with a valid session until one is
    answered; every answer before it must be the dead VM's refusal, and that one must be served
    normally. Returns (the refused requests, the served one)."""
    refused: list[Sent] = []
    deadline = time.monotonic() + RECOVERY_WAIT_S
    while True:
        probe = f"{tag}-{len(refused)}"
        s = _send(e, probe)
        if s.r.status != 503:
            assert _served(s.r), s.r
            return refused, s
        assert _refused(upstreams, s.r, probe), s.r
        refused.append(s)
        assert time.monotonic() < deadline, f"no new VM within {RECOVERY_WAIT_S}s: {len(refused)} refused, {_stats(e)}"
        time.sleep(POLL_S)


def _assert_backoff_bounds(refused: list[Sent], served: Sent, loaded_after: float, loaded_before: float, base_s: float):
    """Envoy's rule (see the module docstring): the worker's last VM load happened in
    [loaded_after, loaded_before]; no reload before `base` past it, no refusal from 1.5 * base on."""
    assert served.answered - loaded_after >= base_s, (
        f"a new VM {served.answered - loaded_after:.3f}s after the last load, before the {base_s}s backoff")
    for s in refused:
        assert s.sent - loaded_before < RELOAD_BACKOFF_FACTOR * base_s, (
            f"refused {s.sent - loaded_before:.3f}s after the last load, past {RELOAD_BACKOFF_FACTOR} * {base_s}s")


def test_fail_reload_recovers_the_vm_after_a_trap(upstreams, trap_wasm):
    started = time.monotonic()  # the worker's VM is loaded after this
    e = _start(upstreams, trap_wasm, "FAIL_RELOAD", RELOAD_BASE_S)
    try:
        assert _stats(e) == {"vm_reload_success": 0, "vm_reload_backoff": 0, "vm_reload_failure": 0}
        # A trap on the VM loaded at startup: refused (503, never at the app) until the backoff
        # since that load has passed; then the next request gets a new VM and is served normally.
        good = _trap(upstreams, e, "1")
        refused, reload = _until_served(upstreams, e, "recover-1")
        _assert_backoff_bounds(refused, reload, started, good.answered, RELOAD_BASE_S)
        assert _stats(e) == {"vm_reload_success": 1, "vm_reload_backoff": len(refused), "vm_reload_failure": 0}
        backoffs = len(refused)
        # A trap on the new VM right away: its load was the reload just now (while `reload` was
        # in flight), so the next request lands inside the backoff: refused, never let through.
        _trap(upstreams, e, "2", traps_so_far=1)
        s = _send(e, "in-backoff")
        assert s.answered - reload.sent < RELOAD_BASE_S, "too slow to land inside the backoff"
        assert _refused(upstreams, s.r, "in-backoff"), s.r
        assert _stats(e) == {"vm_reload_success": 1, "vm_reload_backoff": backoffs + 1, "vm_reload_failure": 0}
        # Past the backoff: the next request gets a new VM and is served normally.
        refused, reload2 = _until_served(upstreams, e, "recover-2")
        _assert_backoff_bounds([s, *refused], reload2, reload.sent, reload.answered, RELOAD_BASE_S)
        assert _stats(e) == {"vm_reload_success": 2, "vm_reload_backoff": backoffs + 1 + len(refused), "vm_reload_failure": 0}
        # The new VM checks sessions as before: no session is denied, a valid one is served.
        r = _get(e, "after-nosession", session=False)
        assert r.status == 401 and r.json() == {"error": "Unauthorized"} and not _reached(upstreams, "after-nosession")
        for i in range(5):
            assert _served(_get(e, f"after-{i}"))
        assert _stats(e)["vm_reload_success"] == 2
        assert e.alive()
    finally:
        e.stop()


def test_default_failure_policy_fails_every_later_request_on_the_worker(upstreams, trap_wasm):
    """What operators would lose without FAIL_RELOAD: one trap and the worker answers 503 to every
    later request (valid session or not) until Envoy restarts."""
    e = _start(upstreams, trap_wasm, None)
    try:
        good = _trap(upstreams, e, "1")
        # Past the longest default reload backoff since the VM's load (FAIL_RELOAD would have a
        # new VM by then): nothing reloads; every request meanwhile is refused too.
        past_backoff = good.answered + RELOAD_BACKOFF_FACTOR * RELOAD_DEFAULT_BASE_MS / 1000
        n = 0
        while time.monotonic() < past_backoff:
            probe = f"dead-wait-{n}"
            r = _get(e, probe, session=n % 2 == 0)
            assert _refused(upstreams, r, probe), r
            n += 1
            assert n < 1000
            time.sleep(0.1)
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
