"""Cross-origin requests (docs/sessions.md, "Cross-origin requests"), row by row, on the three
routes the filter answers itself (login, refresh, logout) in a real Envoy: `Sec-Fetch-Site`
same-origin/none pass, any other value is refused unless `Origin` is one of `trusted_origins`;
without it, an `Origin` must name the request's Host (host and port) or be trusted; neither header
passes. A refused request gets 403 `{"error":"Cross-origin request refused"}` with no cookie set or
cleared, and nothing reaches the login API or the app. Protected paths are unaffected.

The client connects to 127.0.0.1:<port>, so the request's Host is `127.0.0.1:<port>`."""
from __future__ import annotations

import pytest

from harness import checks, tokens
from harness.upstreams import login_ok

LOGIN_LOGOUT_PATH = "/logout"
# Written with capitals: trusted origins compare without case.
TRUSTED = "https://Partner.Example"
JSON = {"Content-Type": "application/json"}
REFUSED_BODY = {"error": "Cross-origin request refused"}
ROUTES = ["login", "refresh", "logout"]


@pytest.fixture(scope="module")
def xgw(make_gateway):
    return make_gateway("crossorigin", mode="inline", concurrency=2,
                        trusted_origins=[TRUSTED], login_logout_path=LOGIN_LOGOUT_PATH)


def stat(gw, name: str) -> int:
    return gw.envoy.stat(f"wasmcustom.etls_auth.{name}") or 0


def send(gw, route: str, headers: dict[str, str]):
    """A request to `route` that succeeds when it is let through: good credentials, a valid
    refresh token, a session with the login API's refresh cookie."""
    if route == "login":
        return gw.post(gw.login_path, headers={**JSON, **headers}, body={"email": "x@example.test", "password": "pw-cross-origin"})
    if route == "refresh":
        return gw.post(gw.refresh_path, headers=headers, cookies=gw.session(None, tokens.refresh(5, "user")))
    cookies = gw.session(tokens.access(5, "user"), tokens.refresh(5, "user"), refreshToken="up-refresh-cross-origin")
    return gw.post(gw.logout_path, headers=headers, cookies=cookies)


def assert_let_through(gw, route: str, r) -> None:
    assert r.status == 200, (route, r)
    if route == "login":
        assert r.json()["message"] == "Login successful"
        assert len(r.set_cookies) == 4
    elif route == "refresh":
        assert r.json() == {"message": "Tokens refreshed"}
    else:
        assert r.json() == {"message": "Logged out"}
        checks.cleared(r, gw)
    assert not gw.reached_app(r)


def assert_refused(gw, route: str, r) -> None:
    assert r.status == 403, (route, r)
    assert r.json() == REFUSED_BODY
    assert r.header("cache-control") == "no-store"
    assert r.set_cookie_headers == [], f"{route}: a refused request sets or clears cookies: {r.set_cookie_headers}"
    assert not gw.reached_app(r)


def rows(port: int) -> list[tuple[str, dict[str, str], bool]]:
    """(name, headers, let through)."""
    host = f"127.0.0.1:{port}"
    return [
        ("neither header", {}, True),
        ("sfs same-origin", {"Sec-Fetch-Site": "same-origin"}, True),
        ("sfs same-origin, other origin", {"Sec-Fetch-Site": "same-origin", "Origin": "https://evil.example"}, True),
        ("sfs none", {"Sec-Fetch-Site": "none"}, True),
        ("sfs same-site", {"Sec-Fetch-Site": "same-site", "Origin": "http://sub.127.0.0.1.nip.io"}, False),
        ("sfs cross-site", {"Sec-Fetch-Site": "cross-site", "Origin": "https://evil.example"}, False),
        ("sfs cross-site, no origin", {"Sec-Fetch-Site": "cross-site"}, False),
        ("sfs cross-site, origin = host", {"Sec-Fetch-Site": "cross-site", "Origin": f"http://{host}"}, False),
        ("sfs cross-site, trusted", {"Sec-Fetch-Site": "cross-site", "Origin": "https://partner.example"}, True),
        ("sfs same-site, trusted other case", {"Sec-Fetch-Site": "same-site", "Origin": "HTTPS://PARTNER.EXAMPLE"}, True),
        ("sfs cross-site, trusted with default port", {"Sec-Fetch-Site": "cross-site", "Origin": "https://partner.example:443"}, True),
        ("sfs cross-site, trusted host other port", {"Sec-Fetch-Site": "cross-site", "Origin": "https://partner.example:8443"}, False),
        ("sfs cross-site, trusted host over http", {"Sec-Fetch-Site": "cross-site", "Origin": "http://partner.example"}, False),
        ("sfs cross-site, look-alike suffix", {"Sec-Fetch-Site": "cross-site", "Origin": "https://partner.example.evil.com"}, False),
        ("sfs cross-site, look-alike userinfo", {"Sec-Fetch-Site": "cross-site", "Origin": "https://evil@partner.example"}, False),
        ("sfs cross-site, trusted with a path", {"Sec-Fetch-Site": "cross-site", "Origin": "https://partner.example/"}, False),
        ("sfs cross-site, null", {"Sec-Fetch-Site": "cross-site", "Origin": "null"}, False),
        ("sfs Same-Origin (case)", {"Sec-Fetch-Site": "Same-Origin"}, False),
        ("sfs NONE (case)", {"Sec-Fetch-Site": "NONE"}, False),
        ("sfs unknown value", {"Sec-Fetch-Site": "same-everything"}, False),
        ("sfs unknown value, trusted", {"Sec-Fetch-Site": "bogus", "Origin": "https://partner.example"}, True),
        ("origin = host", {"Origin": f"http://{host}"}, True),
        ("origin = host, https", {"Origin": f"https://{host}"}, True),
        ("origin = host, other case", {"Origin": f"HTTP://127.0.0.1:{port}"}, True),
        ("origin other port", {"Origin": f"http://127.0.0.1:{port + 1}"}, False),
        ("origin without the port", {"Origin": "http://127.0.0.1"}, False),
        ("origin other host, same port", {"Origin": f"http://localhost:{port}"}, False),
        ("origin look-alike suffix", {"Origin": f"http://127.0.0.1.evil.com:{port}"}, False),
        ("origin look-alike userinfo", {"Origin": f"http://evil@127.0.0.1:{port}"}, False),
        ("origin = host with a path", {"Origin": f"http://{host}/"}, False),
        ("origin null", {"Origin": "null"}, False),
        ("origin other site", {"Origin": "https://evil.example"}, False),
        ("origin trusted", {"Origin": "https://partner.example"}, True),
        ("origin trusted, other case", {"Origin": "https://PARTNER.example"}, True),
        ("origin trusted look-alike", {"Origin": "https://partner.example.evil.com"}, False),
    ]


@pytest.mark.parametrize("route", ROUTES)
def test_the_cross_origin_table_row_by_row(xgw, login_api, route):
    login_api.always(login_ok())
    for name, headers, let_through in rows(xgw.port):
        login_api.clear()
        refused_before = stat(xgw, "cross_origin_refused")
        r = send(xgw, route, headers)
        if let_through:
            assert_let_through(xgw, route, r)
            expected_calls = 0 if route == "refresh" else 1
            assert len(login_api.requests()) == expected_calls, f"{route} {name}: {login_api.requests()}"
            assert stat(xgw, "cross_origin_refused") == refused_before, f"{route} {name}"
        else:
            assert_refused(xgw, route, r)
            assert login_api.requests() == [], f"{route} {name}: a refused request reached the login API"
            assert stat(xgw, "cross_origin_refused") == refused_before + 1, f"{route} {name}"


def test_login_checks_the_method_then_the_origin_then_the_content_type(xgw, login_api):
    cross = {"Sec-Fetch-Site": "cross-site", "Origin": "https://evil.example"}
    r = xgw.request("GET", xgw.login_path, headers=cross)
    assert r.status == 405 and r.header("allow") == "POST", r
    r = xgw.post(xgw.login_path, headers={**cross, "Content-Type": "text/plain"}, body='{"email":"a","password":"b"}')
    assert_refused(xgw, "login", r)
    r = xgw.post(xgw.login_path, headers={"Sec-Fetch-Site": "same-origin", "Content-Type": "text/plain"}, body='{"email":"a","password":"b"}')
    assert r.status == 415, r
    r = xgw.post(xgw.login_path, headers={**cross, "Content-Type": "application/json"}, body=b"x" * 20000)
    assert_refused(xgw, "login", r)
    assert login_api.requests() == []


@pytest.mark.parametrize("route", ["refresh", "logout"])
def test_refresh_and_logout_check_the_method_first(xgw, route):
    path = xgw.refresh_path if route == "refresh" else xgw.logout_path
    r = xgw.request("GET", path, headers={"Sec-Fetch-Site": "cross-site", "Origin": "https://evil.example"})
    assert r.status == 405 and r.header("allow") == "POST", r


def test_a_form_from_another_site_cannot_log_the_user_out(xgw, login_api):
    """The issue's case: a form on any site POSTs text/plain to the logout route."""
    cookies = xgw.session(tokens.access(9, "user"), tokens.refresh(9, "user"), refreshToken="up-refresh-form")
    r = xgw.post(xgw.logout_path, cookies=cookies, body="x=1",
                 headers={"Content-Type": "text/plain", "Sec-Fetch-Site": "cross-site", "Origin": "https://evil.example"})
    assert_refused(xgw, "logout", r)
    assert login_api.requests() == []
    # The session still works.
    r = xgw.get("/dashboard", cookies=cookies)
    assert r.status == 200 and xgw.reached_app(r), r


@pytest.mark.parametrize("headers", [
    {"Sec-Fetch-Site": "cross-site", "Origin": "https://evil.example"},
    {"Origin": "null"},
    {"Sec-Fetch-Site": "same-site"},
])
def test_protected_and_public_paths_are_unaffected(xgw, headers):
    valid = xgw.post("/api/orders", headers=headers, cookies=xgw.session(tokens.access(3, "user")), body=b"{}")
    assert valid.status == 200 and xgw.reached_app(valid), valid
    rotated = xgw.post("/api/orders", headers=headers, cookies=xgw.session(tokens.expired_access(3, "user"), tokens.refresh(3, "user")), body=b"{}")
    assert rotated.status == 200 and xgw.reached_app(rotated), rotated
    checks.rotated(rotated, xgw, user_id=3, role="user")
    denied = xgw.post("/api/orders", headers=headers, body=b"{}")
    checks.unauthorized(denied, xgw)
    public = xgw.post("/login", headers=headers, body=b"{}")
    assert public.status == 200 and xgw.reached_app(public), public


def test_a_cors_preflight_to_a_route_still_passes(xgw):
    r = xgw.request("OPTIONS", xgw.login_path, headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST",
                                                        "Sec-Fetch-Site": "cross-site"})
    assert xgw.reached_app(r), r
