"""`login_refresh_path` (docs/sessions.md, Upstream session): every rotation first asks the login API,
in both rotation modes (inline, and through refresh_cluster = this Envoy's own refresh route),
against a real HTTP stub login API. Each answer class is checked for the status, every
Set-Cookie, what the app received (identity headers, Cookie header) and what the login API
received; then the refresh route itself, the missing refreshToken cookie, a refused connection,
and the metrics."""
from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from harness import checks, tokens
from harness.gateway import Gateway
from harness.upstreams import Reply, StubServer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from upstream_support import REFRESH_PATH, expired_session, reset, start_gateway, stub_login_api  # noqa: E402

TIMEOUT_MS = 1000
MODES = ["inline", "cluster"]


@pytest.fixture(scope="module")
def api():
    """The login API of these tests: answers /refresh from a queue set per test."""
    s = stub_login_api("login_api_refresh")
    yield s
    s.stop()


def start(upstreams, name: str, mode: str, login_port: int) -> Gateway:
    return start_gateway(upstreams, login_port, name, mode, login_timeout_ms=TIMEOUT_MS)


@pytest.fixture(scope="module", params=MODES)
def ugw(request, upstreams, api):
    gw = start(upstreams, "upstream", request.param, api.port)
    yield gw
    gw.envoy.stop()


@pytest.fixture
def login_api(api):
    yield reset(api)


def session(gw, **kw):
    """Cookies of a browser whose ETLS access token expired, with a `theme` cookie too:
    (cookies, upstream refresh value)."""
    return expired_session(gw, theme="dark", **kw)


def renewed(access="up-access-new", refresh: str | None = "up-refresh-new", user_data="default", delay=0.0) -> Reply:
    body: dict = {"accessToken": access}
    if refresh is not None:
        body["refreshToken"] = refresh
    if user_data == "default":
        body["userData"] = {"id": 42, "role": "admin", "email": "a@example.test"}
    elif user_data is not None:
        body["userData"] = user_data
    return Reply(200, body, delay=delay)


def called_once(api: StubServer, up_refresh: str) -> None:
    """The login API got exactly one call: POST /refresh, JSON {"refreshToken": <cookie>}."""
    calls = api.requests()
    assert len(calls) == 1, [(c.method, c.path) for c in calls]
    c = calls[0]
    assert (c.method, c.path) == ("POST", REFRESH_PATH)
    assert c.header("Content-Type") == "application/json"
    assert c.header("Host") == "login_api"  # login_authority defaults to login_cluster
    assert c.json() == {"refreshToken": up_refresh}


def four_cookies(r, gw, *, up_access: str, up_refresh: str, user_id, role) -> tuple[str, str]:
    """Exactly four Set-Cookie: the login API's two tokens (refresh_ttl_s) and the new ETLS pair."""
    checks.no_joined_cookies(r)
    assert sorted(c.name for c in r.set_cookies) == sorted(gw.cookie_names), r.set_cookie_headers
    ua, ur = r.cookie(gw.upstream_access_cookie), r.cookie(gw.upstream_refresh_cookie)
    assert (ua.value, ur.value) == (up_access, up_refresh)
    checks.cookie_attrs_ok(ua, gw, gw.refresh_ttl_s)
    checks.cookie_attrs_ok(ur, gw, gw.refresh_ttl_s)
    a, ref = r.cookie(gw.access_cookie), r.cookie(gw.refresh_cookie)
    checks.cookie_attrs_ok(a, gw, gw.access_ttl_s)
    checks.cookie_attrs_ok(ref, gw, gw.refresh_ttl_s)
    checks.new_tokens_ok(gw, a.value, ref.value, user_id=user_id, role=role)
    return a.value, ref.value


def app_got(e, gw, *, access: str, refresh: str, up_access: str, up_refresh: str) -> None:
    """The app's Cookie header: each of the four once, with these values, and `theme` kept."""
    pairs = checks.echo_cookies(e)
    for name, want in ((gw.access_cookie, access), (gw.refresh_cookie, refresh),
                       (gw.upstream_access_cookie, up_access), (gw.upstream_refresh_cookie, up_refresh)):
        got = [v for k, v in pairs if k == name]
        assert got == [want], f"app saw {name}={got}, want [{want!r}]"
    assert ("theme", "dark") in pairs, pairs


def test_renewed_tokens_reach_browser_and_app(ugw, login_api):
    login_api.always(renewed())
    cookies, up_refresh = session(ugw)
    r = ugw.get("/dashboard?x=1", cookies=cookies)
    e = checks.echo(r)
    assert e["path"] == "/dashboard?x=1"
    a, ref = four_cookies(r, ugw, up_access="up-access-new", up_refresh="up-refresh-new", user_id=42, role="admin")
    app_got(e, ugw, access=a, refresh=ref, up_access="up-access-new", up_refresh="up-refresh-new")
    checks.identity(e, ugw, "42", "admin")
    called_once(login_api, up_refresh)


def test_answer_without_refresh_token_keeps_the_current_one(ugw, login_api):
    login_api.always(renewed(refresh=None, user_data=None))
    cookies, up_refresh = session(ugw, user_id="u-7", role="user")
    r = ugw.get("/x", cookies=cookies)
    e = checks.echo(r)
    a, ref = four_cookies(r, ugw, up_access="up-access-new", up_refresh=up_refresh, user_id="u-7", role="user")
    app_got(e, ugw, access=a, refresh=ref, up_access="up-access-new", up_refresh=up_refresh)
    checks.identity(e, ugw, "u-7", "user")
    called_once(login_api, up_refresh)


def test_role_change_from_user_data_takes_effect(ugw, login_api):
    login_api.always(renewed(user_data={"id": 42, "role": "viewer"}))
    cookies, up_refresh = session(ugw, role="admin")
    r = ugw.get("/x", cookies=cookies)
    e = checks.echo(r)
    a, ref = four_cookies(r, ugw, up_access="up-access-new", up_refresh="up-refresh-new", user_id=42, role="viewer")
    app_got(e, ugw, access=a, refresh=ref, up_access="up-access-new", up_refresh="up-refresh-new")
    checks.identity(e, ugw, "42", "viewer")
    called_once(login_api, up_refresh)


@pytest.mark.parametrize("status", [401, 403])
def test_api_ending_the_session_denies_and_clears(ugw, login_api, status):
    login_api.always(Reply(status, {"error": "disabled"}))
    cookies, up_refresh = session(ugw)
    checks.unauthorized(ugw.get("/x", cookies=cookies), ugw)
    called_once(login_api, up_refresh)
    login_api.clear()
    cookies, up_refresh = session(ugw)
    checks.redirected_to_login(ugw.get("/page?a=1", accept="text/html", cookies=cookies), ugw, "/page?a=1")
    called_once(login_api, up_refresh)


OUTAGES = {
    "500": Reply(500, {"error": "boom"}),
    "429": Reply(429, {"error": "slow down"}, headers=[("Retry-After", "5")]),
    "timeout": renewed(delay=TIMEOUT_MS / 1000 + 0.8),
    "not_json": Reply(200, b"<html>ok</html>", headers=[("Content-Type", "text/html")]),
    "access_not_string": Reply(200, {"accessToken": 5, "refreshToken": "r"}),
    "user_data_without_id": renewed(user_data={"role": "admin"}),
    "token_not_cookie_safe": renewed(access="a;b=c"),
    "cookie_over_4096_bytes": renewed(access="A" * 4030),
    "user_data_claims_over_4096_bytes": renewed(user_data={"id": 42, "role": "r" * 3500}),
    "connection_closed": Reply(close=True),
}


@pytest.mark.parametrize("kind", sorted(OUTAGES))
def test_outage_keeps_the_user_signed_in_with_api_cookies_untouched(ugw, login_api, kind):
    login_api.always(OUTAGES[kind])
    cookies, up_refresh = session(ugw)
    t0 = time.monotonic()
    r = ugw.get("/x", cookies=cookies)
    elapsed = time.monotonic() - t0
    e = checks.echo(r)
    a, ref = checks.rotated(r, ugw, user_id=42, role="admin")  # exactly the two ETLS cookies
    app_got(e, ugw, access=a, refresh=ref, up_access="up-access-old", up_refresh=up_refresh)
    checks.identity(e, ugw, "42", "admin")
    called_once(login_api, up_refresh)
    if kind == "timeout":
        assert TIMEOUT_MS / 1000 <= elapsed < TIMEOUT_MS / 1000 + 0.7, f"answered after {elapsed:.2f} s"


def test_no_refresh_token_cookie_denies_without_a_call(ugw, login_api):
    login_api.always(renewed())
    cookies, _ = session(ugw, upstream_refresh=None)
    checks.unauthorized(ugw.get("/x", cookies=cookies), ugw)
    assert login_api.requests() == []


def test_valid_access_token_makes_no_call(ugw, login_api):
    login_api.always(renewed())
    r = ugw.get("/x", cookies={**ugw.session(tokens.access(1, "user"), tokens.refresh(1, "user")),
                               ugw.upstream_refresh_cookie: "up-r"})
    checks.identity(checks.echo(r), ugw, "1", "user")
    assert r.set_cookie_headers == []
    assert login_api.requests() == []


# --- the refresh route ---------------------------------------------------------------------

def test_refresh_route_renewed_sets_four_cookies(ugw, login_api):
    login_api.always(renewed(user_data={"id": 42, "role": "auditor"}))
    cookies, up_refresh = session(ugw)
    r = ugw.post(ugw.refresh_path, cookies=cookies)
    assert r.status == 200 and r.json() == {"message": "Tokens refreshed"}, r
    assert r.header("Cache-Control") == "no-store"
    four_cookies(r, ugw, up_access="up-access-new", up_refresh="up-refresh-new", user_id=42, role="auditor")
    assert not ugw.reached_app(r)
    called_once(login_api, up_refresh)


@pytest.mark.parametrize("status", [401, 403])
def test_refresh_route_session_ended(ugw, login_api, status):
    login_api.always(Reply(status, {"error": "disabled"}))
    cookies, up_refresh = session(ugw)
    r = ugw.post(ugw.refresh_path, cookies=cookies)
    assert r.status == 401 and r.json() == {"error": "Session ended"}, r
    checks.cleared(r, ugw)
    called_once(login_api, up_refresh)


def test_refresh_route_outage_sets_the_etls_pair_only(ugw, login_api):
    login_api.always(Reply(502, b"bad gateway"))
    cookies, up_refresh = session(ugw)
    r = ugw.post(ugw.refresh_path, cookies=cookies)
    assert r.status == 200 and r.json() == {"message": "Tokens refreshed"}, r
    checks.rotated(r, ugw, user_id=42, role="admin")
    called_once(login_api, up_refresh)


def test_refresh_route_without_refresh_token_cookie(ugw, login_api):
    cookies, _ = session(ugw, upstream_refresh=None)
    r = ugw.post(ugw.refresh_path, cookies=cookies)
    assert r.status == 401 and r.json() == {"error": "Session ended"}, r
    checks.cleared(r, ugw)
    assert login_api.requests() == []


# --- connection refused, metrics, the option off -------------------------------------------

@pytest.mark.parametrize("mode", MODES)
def test_refused_connection_is_an_outage(upstreams, mode):
    from login_support import RefusingPort
    port = RefusingPort()
    gw = start(upstreams, "upstream-refused", mode, port.port)
    try:
        cookies, up_refresh = session(gw)
        r = gw.get("/x", cookies=cookies)
        e = checks.echo(r)
        a, ref = checks.rotated(r, gw, user_id=42, role="admin")
        app_got(e, gw, access=a, refresh=ref, up_access="up-access-old", up_refresh=up_refresh)
        assert gw.envoy.stat("wasmcustom.etls_auth.upstream_refresh_outage") == 1
    finally:
        gw.envoy.stop()
        port.close()


def test_metrics_count_each_answer_class(ugw, login_api):
    names = ["renewed", "ended", "outage", "coalesced"]
    stat = lambda n: ugw.envoy.stat(f"wasmcustom.etls_auth.upstream_refresh_{n}") or 0  # noqa: E731
    before = {n: stat(n) for n in names}
    login_api.reply(renewed(), Reply(401, b""), Reply(500, b""))
    cookies, _ = session(ugw)
    checks.echo(ugw.get("/a", cookies=cookies))
    checks.echo(ugw.get("/b", cookies=cookies))  # the same refreshToken: the answer is reused
    checks.unauthorized(ugw.get("/c", cookies=session(ugw)[0]), ugw)
    checks.echo(ugw.get("/d", cookies=session(ugw)[0]))
    after = {n: stat(n) for n in names}
    assert {n: after[n] - before[n] for n in names} == {"renewed": 1, "ended": 1, "outage": 1, "coalesced": 1}
    assert len(login_api.requests()) == 3


def test_without_the_option_no_refresh_call_is_made(gw, login_api):
    """The default gateways (no login_refresh_path): a rotation never calls the login API."""
    r = gw.get("/x", cookies={**gw.session(tokens.expired_access(3, "user"), tokens.refresh(3, "user")),
                              gw.upstream_refresh_cookie: "up-r", gw.upstream_access_cookie: "up-a"})
    checks.rotated(r, gw, user_id=3, role="user")
    assert login_api.requests() == []


def test_no_upstream_token_reaches_envoys_log(ugw, login_api):
    """After every test above on this gateway: the log (wasm at debug) names no token value the
    login API or the client sent: neither the refreshToken the store is keyed by nor the renewed ones."""
    login_api.always(renewed(access="up-access-new-logcheck", refresh="up-refresh-new-logcheck"))
    cookies, up_refresh = session(ugw)
    checks.echo(ugw.get("/x", cookies=cookies))
    time.sleep(0.5)
    log = ugw.envoy.log_text()
    assert "wasm" in log
    for needle in (up_refresh, "up-refresh-", "up-access-", "upstream-access", "eyJ"):
        assert needle not in log, f"{needle!r} in {ugw.envoy.log_path}"
