"""Logout against the login API (`login_logout_path`, docs/sessions.md "Logout") in a real Envoy:
with the `refreshToken` cookie, `POST logout_path` first sends `POST login_logout_path` to
`login_cluster` (`login_authority`, `login_timeout_ms`, content-type application/json, body
`{"refreshToken": <the cookie>}`), waits, then answers 200 `{"message":"Logged out"}` with the four
clearing cookies whatever came back: the API up, answering 500, timing out, refusing the
connection, or a cluster Envoy does not have. Without the cookie, or without the key, no call.
Each case is counted (`logout_upstream_reached` / `logout_upstream_failed`, besides `logged_out`)
and a failure is logged without the token."""
from __future__ import annotations

import sys
import time
import uuid
from pathlib import Path

import pytest

from harness import checks, tokens
from harness.upstreams import Reply, StubServer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from login_support import RefusingPort, start_gateway_on  # noqa: E402

LOGIN_LOGOUT_PATH = "/v1/logout"
AUTHORITY = "login.internal"
TIMEOUT_MS = 300
# What "within login_timeout_ms plus a little" allows on a loaded 2-core machine.
SLACK_S = 1.5
TOKENS_SENT: set[str] = set()


@pytest.fixture(scope="module")
def api():
    s = StubServer("logout_api", default=Reply(200, {"ok": True})).start()
    yield s
    s.stop()


@pytest.fixture
def stub(api):
    api.always(Reply(200, {"ok": True}))
    api.clear()
    yield api
    api.always(Reply(200, {"ok": True}))


@pytest.fixture(scope="module")
def lgw(upstreams, api):
    gw = start_gateway_on(upstreams, "logout-upstream", app_port=upstreams.app.port, login_port=api.port, concurrency=2,
                          login_logout_path=LOGIN_LOGOUT_PATH, login_authority=AUTHORITY, login_timeout_ms=TIMEOUT_MS)
    yield gw
    gw.envoy.stop()


def stat(gw, name: str) -> int:
    return gw.envoy.stat(f"wasmcustom.etls_auth.{name}") or 0


def counts(gw) -> tuple[int, int, int]:
    return stat(gw, "logged_out"), stat(gw, "logout_upstream_reached"), stat(gw, "logout_upstream_failed")


def up_token() -> str:
    t = f"up-refresh-{uuid.uuid4().hex}"
    TOKENS_SENT.add(t)
    return t


def logout(gw, token: str | None):
    cookies = gw.session(tokens.access(8, "user"), tokens.refresh(8, "user"), accessToken="up-access")
    if token is not None:
        cookies[gw.upstream_refresh_cookie] = token
    start = time.monotonic()
    r = gw.post(gw.logout_path, cookies=cookies, timeout=10)
    return r, time.monotonic() - start


def logged_out(gw, r) -> None:
    assert r.status == 200, r
    assert r.json() == {"message": "Logged out"}
    assert r.header("cache-control") == "no-store"
    checks.cleared(r, gw)
    assert not gw.reached_app(r)


def wait_for(pred, what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_the_login_api_gets_the_refresh_token_then_the_browser_is_logged_out(lgw, stub):
    before = counts(lgw)
    token = up_token()
    r, _ = logout(lgw, token)
    logged_out(lgw, r)
    [seen] = stub.requests()
    assert (seen.method, seen.path) == ("POST", LOGIN_LOGOUT_PATH)
    assert seen.header("content-type") == "application/json"
    assert seen.header("host") == AUTHORITY
    assert seen.json() == {"refreshToken": token}
    assert seen.header("cookie") is None, "the call carries no cookie"
    assert counts(lgw) == (before[0] + 1, before[1] + 1, before[2])


@pytest.mark.parametrize("status", [500, 503])
def test_an_api_error_still_logs_out_and_counts_a_failure(lgw, stub, status):
    stub.always(Reply(status, {"error": "down"}))
    before = counts(lgw)
    token = up_token()
    r, _ = logout(lgw, token)
    logged_out(lgw, r)
    assert len(stub.requests()) == 1
    assert counts(lgw) == (before[0] + 1, before[1], before[2] + 1)
    wait_for(lambda: f"logout call to the login API failed (status {status})" in lgw.envoy.log_text(), "the warning")


def test_a_4xx_reached_the_api_and_is_logged(lgw, stub):
    stub.always(Reply(401, {"error": "unknown token"}))
    before = counts(lgw)
    r, _ = logout(lgw, up_token())
    logged_out(lgw, r)
    assert counts(lgw) == (before[0] + 1, before[1] + 1, before[2])
    wait_for(lambda: "the login API answered 401 to the logout call" in lgw.envoy.log_text(), "the warning")


def test_a_slow_api_times_out_and_the_browser_is_logged_out_in_time(lgw, stub):
    stub.always(Reply(200, {"ok": True}, delay=3.0))
    before = counts(lgw)
    r, took = logout(lgw, up_token())
    logged_out(lgw, r)
    assert TIMEOUT_MS / 1000 * 0.9 <= took < TIMEOUT_MS / 1000 + SLACK_S, took
    assert counts(lgw) == (before[0] + 1, before[1], before[2] + 1)
    assert len(stub.requests()) == 1


def test_without_the_refresh_token_cookie_no_call(lgw, stub):
    before = counts(lgw)
    for cookie_value in [None, ""]:
        r, _ = logout(lgw, cookie_value)
        logged_out(lgw, r)
    r = lgw.post(lgw.logout_path)
    logged_out(lgw, r)
    assert stub.requests() == []
    assert counts(lgw) == (before[0] + 3, before[1], before[2])


def test_without_login_logout_path_no_call(upstreams, api, stub):
    gw = start_gateway_on(upstreams, "logout-nokey", app_port=upstreams.app.port, login_port=api.port)
    try:
        r, _ = logout(gw, up_token())
        logged_out(gw, r)
        assert stub.requests() == []
        assert counts(gw) == (1, 0, 0)
    finally:
        gw.envoy.stop()


def test_a_refused_connection_logs_out_and_counts_a_failure(upstreams):
    port = RefusingPort()
    gw = start_gateway_on(upstreams, "logout-refused", app_port=upstreams.app.port, login_port=port.port,
                          login_logout_path=LOGIN_LOGOUT_PATH, login_timeout_ms=TIMEOUT_MS)
    try:
        r, took = logout(gw, up_token())
        logged_out(gw, r)
        assert took < TIMEOUT_MS / 1000 + SLACK_S, took
        assert counts(gw) == (1, 0, 1)
        wait_for(lambda: "logout call to the login API failed" in gw.envoy.log_text(), "the warning")
    finally:
        gw.envoy.stop()
        port.close()


def test_a_cluster_envoy_lacks_logs_out_and_counts_a_failure(upstreams):
    gw = start_gateway_on(upstreams, "logout-nocluster", app_port=upstreams.app.port, login_port=upstreams.login.port,
                          login_cluster="no_such_cluster", login_logout_path=LOGIN_LOGOUT_PATH)
    try:
        r, took = logout(gw, up_token())
        logged_out(gw, r)
        assert took < SLACK_S, took
        assert counts(gw) == (1, 0, 1)
    finally:
        gw.envoy.stop()


def test_no_token_in_envoys_log(lgw):
    """Last: no refreshToken value sent in this module appears in the log."""
    text = lgw.envoy.log_text()
    assert TOKENS_SENT
    leaked = [t for t in TOKENS_SENT if t in text]
    assert not leaked, leaked
