"""Login (`POST login_path`): a real Envoy with the real filter in front of the
echo app, and a real HTTP server (the stub login API) in the role of the external login API.
One test per kind of answer of the login API, plus the request checks the filter does before
calling it. Every failure sets no cookie and never reaches the app."""
from __future__ import annotations

import json
import sys
import time
import uuid
from pathlib import Path

import pytest

from harness import checks, tokens
from harness.gateway import PROBE_HEADER
from harness.upstreams import Reply, login_ok

sys.path.insert(0, str(Path(__file__).resolve().parent))
from login_support import (  # noqa: E402
    RefusingPort, login_body, login_body_of_size, post_chunked, start_gateway_on,
)

LOGIN = "/api/auth/login"
JSON_HEADERS = {"Content-Type": "application/json"}
# Client timeout: above login_timeout_ms (5 s by default), so a hang fails fast and plainly.
T = 8

# Everything secret this module sends or receives; the last test checks Envoy's log for it.
SECRETS_SEEN: set[str] = set()


def password() -> str:
    p = f"pw-{uuid.uuid4().hex}-Secret!"
    SECRETS_SEEN.add(p)
    return p


def login(gw, email="user@example.test", pw=None, path=LOGIN, **kw):
    pw = pw if pw is not None else password()
    kw.setdefault("timeout", T)
    kw.setdefault("headers", JSON_HEADERS)
    return gw.post(path, body=login_body(email, pw), **kw), pw


def no_cookie_no_app(r, gw):
    assert r.set_cookie_headers == [], f"a failed login set cookies: {r.set_cookie_headers}"
    assert not gw.reached_app(r), "the login request reached the app"


def chunked(gw, path, pieces, **kw):
    """post_chunked with a probe header; returns (response, reached_app)."""
    probe = uuid.uuid4().hex
    r = post_chunked(gw.port, path, pieces, headers={PROBE_HEADER: probe}, timeout=T, **kw)
    return r, bool(gw.app.with_header(PROBE_HEADER, probe))


def media_type(value):
    return (value or "").split(";")[0].strip().lower()


@pytest.fixture(scope="module")
def gw_custom(make_gateway):
    """Non-default login settings: another upstream path and authority, another login route,
    a short login timeout and a small body limit."""
    return make_gateway("login-custom", login_upstream_path="/v2/session", login_authority="auth.internal.test",
                        login_path="/auth/signin", login_timeout_ms=400, max_login_body_bytes=200)


@pytest.fixture(scope="module")
def gw_refused(upstreams):
    """The login_api cluster points at a port that refuses connections."""
    refusing = RefusingPort()
    gw = start_gateway_on(upstreams, "login-refused", app_port=upstreams.app.port, login_port=refusing.port)
    yield gw
    gw.envoy.stop()
    refusing.close()


@pytest.fixture(scope="module")
def gw_app_down(upstreams):
    """The app cluster points at a port that refuses connections; the login API is up."""
    refusing = RefusingPort()
    gw = start_gateway_on(upstreams, "login-app-down", app_port=refusing.port, login_port=upstreams.login.port)
    yield gw
    gw.envoy.stop()
    refusing.close()


# --- 2xx: success ------------------------------------------------------------------------------

@pytest.mark.parametrize("user_data", [
    {"id": 7, "name": "Zoë Numeric", "email": "zoe@example.test", "role": "admin",
     "score": 1.5, "tags": ["a", "b"], "prefs": {"theme": None, "beta": True}},
    {"id": "u-42", "name": "Sam String", "email": "sam@example.test", "role": "user"},
    {"id": 9007199254740993, "role": "admin"},  # 2^53 + 1: must not go through a float
], ids=["numeric-id", "string-id", "id-beyond-2^53"])
def test_login_ok_sets_four_cookies_and_mints_tokens(gw_inline, login_api, user_data):
    gw = gw_inline
    upstream_access = f"api-access-{uuid.uuid4().hex}"
    upstream_refresh = f"api-refresh-{uuid.uuid4().hex}"
    SECRETS_SEEN.update({upstream_access, upstream_refresh})
    login_api.always(login_ok(user_data, access=upstream_access, refresh=upstream_refresh))

    r, pw = login(gw, email="someone@example.test", cookies={"theme": "dark", "refreshTokenEtls": "stale"},
                  headers={**JSON_HEADERS, "Authorization": "Bearer client-credential"})

    # The reply: 200, exactly this JSON, userData as the login API sent it.
    assert r.status == 200, r
    assert media_type(r.header("content-type")) == "application/json", r
    assert r.json() == {"message": "Login successful", "userData": user_data}
    assert not gw.reached_app(r)

    # Exactly four Set-Cookie headers, one cookie each, each name once.
    checks.no_joined_cookies(r)
    assert len(r.set_cookie_headers) == 4, r.set_cookie_headers
    assert sorted(c.name for c in r.set_cookies) == sorted(gw.cookie_names)
    access, refresh = r.cookie("accessTokenEtls"), r.cookie("refreshTokenEtls")
    api_access, api_refresh = r.cookie("accessToken"), r.cookie("refreshToken")
    checks.cookie_attrs_ok(access, gw, 900)
    for c in (refresh, api_access, api_refresh):
        checks.cookie_attrs_ok(c, gw, 604800)
    # Exactly the documented attributes, nothing more (no Domain, no Expires).
    for c in r.set_cookies:
        assert sorted(a.lower() for a in c.attr_names) == ["httponly", "max-age", "path", "samesite", "secure"], c.raw
        assert c.get("samesite") == "Strict" and c.get("path") == "/", c.raw

    # The login API's tokens, verbatim.
    assert api_access.value == upstream_access
    assert api_refresh.value == upstream_refresh

    # The minted ETLS tokens: HS256 with the right secrets, userId with its JSON type, role,
    # exp - iat = 900 / 604800, a jti on the refresh token.
    SECRETS_SEEN.update({access.value, refresh.value})
    checks.new_tokens_ok(gw, access.value, refresh.value, user_id=user_data["id"], role=user_data["role"])
    assert tokens.verify(access.value, gw.access_secret)["userId"] == user_data["id"]
    assert tokens.verify(refresh.value, gw.refresh_secret)["userId"] == user_data["id"]
    assert tokens.claims(access.value)["exp"] - tokens.claims(access.value)["iat"] == 900
    assert tokens.claims(refresh.value)["exp"] - tokens.claims(refresh.value)["iat"] == 604800

    # What the login API received: one POST /login, JSON, exactly {email, password}.
    seen = login_api.requests()
    assert len(seen) == 1, seen
    s = seen[0]
    assert s.method == "POST"
    assert s.path == "/login"
    assert media_type(s.header("content-type")) == "application/json"
    assert s.header("host") == "login_api"  # login_authority defaults to login_cluster
    assert s.json() == {"email": "someone@example.test", "password": pw}
    assert int(s.header("content-length") or len(s.body)) == len(s.body)
    # Nothing of the client's session or credentials goes to the external login API.
    assert s.header("cookie") is None, s.headers
    assert s.header("authorization") is None, s.headers


def test_cookies_from_login_open_the_app(gw, login_api):
    # Both rotation modes: the tokens minted at login are what the protected routes accept.
    login_api.always(login_ok({"id": "u-9", "role": "editor", "name": "Eddie"}))
    r, _ = login(gw)
    assert r.status == 200, r
    jar = {c.name: c.value for c in r.set_cookies}
    e = checks.echo(gw.get("/dashboard", cookies=jar, timeout=T))
    checks.identity(e, gw, "u-9", "editor")
    # A browser drops the access cookie at its Max-Age: the refresh cookie alone still gets in,
    # through a rotation that keeps userId and role.
    r2 = gw.get("/dashboard", cookies={"refreshTokenEtls": jar["refreshTokenEtls"]}, timeout=T)
    checks.identity(checks.echo(r2), gw, "u-9", "editor")
    checks.rotated(r2, gw, user_id="u-9", role="editor")


def test_login_ok_without_role_mints_tokens_without_role(gw_inline, login_api):
    gw = gw_inline
    login_api.always(login_ok({"id": 31, "email": "norole@example.test"}))
    r, _ = login(gw)
    assert r.status == 200, r
    assert r.json() == {"message": "Login successful", "userData": {"id": 31, "email": "norole@example.test"}}
    a, rf = r.cookie("accessTokenEtls"), r.cookie("refreshTokenEtls")
    checks.new_tokens_ok(gw, a.value, rf.value, user_id=31, role=None)


def test_login_ok_with_201_is_a_success(gw_inline, login_api):
    login_api.always(Reply(201, {"accessToken": "a1", "refreshToken": "r1", "userData": {"id": 3, "role": "user"}}))
    r, _ = login(gw_inline)
    assert r.status == 200, r
    assert r.json() == {"message": "Login successful", "userData": {"id": 3, "role": "user"}}
    assert len(r.set_cookie_headers) == 4


def test_login_sends_exact_json_for_tricky_strings(gw_inline, login_api):
    email = 'o"brien\\+tag@exämple.test'
    pw = 'quote" backslash\\ newline\n tab\t unicode ü 🙂 </script>'
    SECRETS_SEEN.add(pw)
    r, _ = login(gw_inline, email=email, pw=pw)
    assert r.status == 200, r
    assert login_api.requests()[0].json() == {"email": email, "password": pw}


def test_login_ignores_query_string_and_existing_cookies(gw_inline, login_api):
    # The route matches on the path without the query; a stale or forged session does not matter.
    r, _ = login(gw_inline, path=LOGIN + "?next=%2Fdash", cookies={
        "accessTokenEtls": tokens.expired_access(), "refreshTokenEtls": "garbage", "theme": "dark"})
    assert r.status == 200, r
    assert len(r.set_cookie_headers) == 4
    assert len(login_api.requests()) == 1


def test_login_with_extra_fields_forwards_only_email_and_password(gw_inline, login_api):
    pw = password()
    r = gw_inline.post(LOGIN, body={"email": "x@example.test", "password": pw, "remember": True, "role": "admin"}, timeout=T)
    # The login body has two fields only; extra ones are either refused (400) or dropped.
    assert r.status in (200, 400), r
    if r.status == 200:
        assert login_api.requests()[0].json() == {"email": "x@example.test", "password": pw}
    else:
        assert login_api.requests() == []
        no_cookie_no_app(r, gw_inline)


def test_login_uses_configured_upstream_path_authority_and_route(gw_custom, login_api):
    login_api.always(login_ok({"id": 12, "role": "user"}))
    r, pw = login(gw_custom, email="c@example.test", path="/auth/signin")
    assert r.status == 200, r
    assert len(r.set_cookie_headers) == 4
    s = login_api.requests()[0]
    assert (s.method, s.path, s.header("host")) == ("POST", "/v2/session", "auth.internal.test")
    assert s.json() == {"email": "c@example.test", "password": pw}
    # The default route is an ordinary protected path on this gateway.
    login_api.clear()
    r2, _ = login(gw_custom)
    checks.unauthorized(r2, gw_custom)
    assert login_api.requests() == []


def test_login_works_while_the_app_is_down(gw_app_down, login_api):
    # The filter answers the login route itself: the app being unreachable must not matter,
    # even when the login API takes a moment.
    login_api.always(Reply(200, {"accessToken": "a2", "refreshToken": "r2", "userData": {"id": 4, "role": "user"}},
                           delay=0.3))
    r, pw = login(gw_app_down)
    assert r.status == 200, r
    assert r.json() == {"message": "Login successful", "userData": {"id": 4, "role": "user"}}
    assert len(r.set_cookie_headers) == 4
    assert login_api.requests()[0].json()["password"] == pw


# --- 4xx: invalid credentials, 429 passes through -------------------------------------------------

@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 422])
def test_login_api_4xx_gives_401_invalid_credentials(gw_inline, login_api, status):
    login_api.always(Reply(status, {"error": "upstream says no", "detail": "x"},
                           headers=[("Set-Cookie", "upstream=1; Path=/")]))
    r, _ = login(gw_inline)
    assert r.status == 401, r
    assert r.json() == {"error": "Invalid credentials"}
    no_cookie_no_app(r, gw_inline)
    assert len(login_api.requests()) == 1


def test_login_api_429_passes_through_with_retry_after(gw_inline, login_api):
    login_api.always(Reply(429, {"error": "Too many attempts"}, headers=[("Retry-After", "37")]))
    r, _ = login(gw_inline)
    assert r.status == 429, r
    assert r.header_all("Retry-After") == ["37"]
    no_cookie_no_app(r, gw_inline)


def test_login_api_429_without_retry_after_stays_429(gw_inline, login_api):
    login_api.always(Reply(429, {"error": "Too many attempts"}))
    r, _ = login(gw_inline)
    assert r.status == 429, r
    assert r.header_all("Retry-After") == []
    no_cookie_no_app(r, gw_inline)


# --- 5xx and bad 2xx: 502 ---------------------------------------------------------------------------

@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_login_api_5xx_gives_502(gw_inline, login_api, status):
    login_api.always(Reply(status, {"error": "down"}))
    r, _ = login(gw_inline)
    assert r.status == 502, r
    no_cookie_no_app(r, gw_inline)


GOOD = {"accessToken": "a", "refreshToken": "r", "userData": {"id": 1, "role": "user"}}


def without(key):
    return {k: v for k, v in GOOD.items() if k != key}


BAD_2XX = {
    "html": Reply(200, "<html>ok</html>", headers=[("Content-Type", "text/html")]),
    "empty": Reply(200, b""),
    "truncated-json": Reply(200, json.dumps(GOOD)[:-5], headers=[("Content-Type", "application/json")]),
    "json-array": Reply(200, [GOOD]),
    "json-string": Reply(200, "\"ok\"", headers=[("Content-Type", "application/json")]),
    "no-accessToken": Reply(200, without("accessToken")),
    "no-refreshToken": Reply(200, without("refreshToken")),
    "no-userData": Reply(200, without("userData")),
    "userData-not-object": Reply(200, {**GOOD, "userData": "alice"}),
    "userData-without-id": Reply(200, {**GOOD, "userData": {"role": "admin", "email": "a@example.test"}}),
    "accessToken-number": Reply(200, {**GOOD, "accessToken": 12345}),
    "refreshToken-null": Reply(200, {**GOOD, "refreshToken": None}),
    "accessToken-object": Reply(200, {**GOOD, "accessToken": {"token": "a"}}),
    "204-no-body": Reply(204, b""),
}


@pytest.mark.parametrize("reply", list(BAD_2XX.values()), ids=list(BAD_2XX))
def test_login_api_2xx_with_bad_body_gives_502(gw_inline, login_api, reply):
    login_api.always(reply)
    r, _ = login(gw_inline)
    assert r.status == 502, r
    no_cookie_no_app(r, gw_inline)


# --- timeout and failed connections: 504 or 502 -------------------------------------------------------

def test_login_api_slower_than_login_timeout_gives_504_or_502(gw_custom, login_api):
    # login_timeout_ms is 400 on this gateway; the login API answers after 2 s.
    login_api.always(Reply(200, GOOD, delay=2.0))
    t0 = time.monotonic()
    r, _ = login(gw_custom, path="/auth/signin")
    elapsed = time.monotonic() - t0
    assert r.status in (504, 502), r
    assert elapsed < 1.8, f"the filter waited {elapsed:.2f} s, longer than login_timeout_ms=400"
    no_cookie_no_app(r, gw_custom)
    time.sleep(2.0 - elapsed + 0.1)  # let the stub finish its slow answer before the next test


def test_login_api_closing_the_connection_gives_502_or_504(gw_inline, login_api):
    login_api.always(Reply(close=True))
    r, _ = login(gw_inline)
    assert r.status in (502, 504), r
    no_cookie_no_app(r, gw_inline)


def test_login_api_refusing_connections_gives_502_or_504(gw_refused):
    r, _ = login(gw_refused)
    assert r.status in (502, 504), r
    no_cookie_no_app(r, gw_refused)


# --- the request itself: method, body ---------------------------------------------------------------

@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH"])
def test_login_route_with_other_method_gives_405_allow_post(gw_inline, login_api, method):
    body = login_body("a@example.test", password()) if method in ("PUT", "PATCH") else None
    r = gw_inline.request(method, LOGIN, body=body, headers=JSON_HEADERS if body else None, timeout=T)
    assert r.status == 405, r
    assert r.header_all("Allow") == ["POST"], r
    no_cookie_no_app(r, gw_inline)
    assert login_api.requests() == []


BAD_BODIES = {
    "empty": b"",
    "not-json": b"email=a@example.test&password=x",
    "truncated-json": b'{"email": "a@example.test", "password": "x"',
    "json-array": b'["a@example.test", "x"]',
    "json-string": b'"a@example.test"',
    "json-null": b"null",
    "missing-email": b'{"password": "x"}',
    "missing-password": b'{"email": "a@example.test"}',
    "email-number": b'{"email": 42, "password": "x"}',
    "password-number": b'{"email": "a@example.test", "password": 1234}',
    "password-null": b'{"email": "a@example.test", "password": null}',
    "password-array": b'{"email": "a@example.test", "password": ["x"]}',
    "email-object": b'{"email": {"a": 1}, "password": "x"}',
    "password-bool": b'{"email": "a@example.test", "password": true}',
    "invalid-utf8": b'{"email": "a@example.test", "password": "\xff\xfe"}',
}


@pytest.mark.parametrize("body", list(BAD_BODIES.values()), ids=list(BAD_BODIES))
def test_login_with_bad_body_gives_400(gw_inline, login_api, body):
    r = gw_inline.post(LOGIN, body=body, headers=JSON_HEADERS, timeout=T)
    assert r.status == 400, r
    no_cookie_no_app(r, gw_inline)
    assert login_api.requests() == []


def test_login_body_at_the_limit_is_accepted(gw_inline, login_api):
    body, pw = login_body_of_size(16384)
    SECRETS_SEEN.add(pw)
    r = gw_inline.post(LOGIN, body=body, headers=JSON_HEADERS, timeout=T)
    assert r.status == 200, r
    assert login_api.requests()[0].json() == {"email": "big@example.test", "password": pw}


def test_login_body_over_the_limit_gives_413(gw_inline, login_api):
    body, pw = login_body_of_size(16385)
    SECRETS_SEEN.add(pw)
    r = gw_inline.post(LOGIN, body=body, headers=JSON_HEADERS, timeout=T)
    assert r.status == 413, r
    no_cookie_no_app(r, gw_inline)
    assert login_api.requests() == []


def test_chunked_login_body_within_the_limit_is_accepted(gw_inline, login_api):
    pw = password()
    body = login_body("chunked@example.test", pw)
    pieces = [body[i:i + 7] for i in range(0, len(body), 7)]
    r, reached = chunked(gw_inline, LOGIN, pieces, pause=0.01)
    assert not reached
    assert r.status == 200, r
    assert len(r.set_cookie_headers) == 4
    assert login_api.requests()[0].json() == {"email": "chunked@example.test", "password": pw}


def test_chunked_login_body_over_the_limit_gives_413(gw_inline, login_api):
    body, pw = login_body_of_size(40000)
    SECRETS_SEEN.add(pw)
    r, reached = chunked(gw_inline, LOGIN, [body[i:i + 4096] for i in range(0, len(body), 4096)], pause=0.005)
    assert r.status == 413, r
    assert not reached
    assert r.set_cookie_headers == []
    assert login_api.requests() == []


def test_chunked_login_body_of_megabytes_gives_413(gw_inline, login_api):
    # Larger than any buffer on the way (the filter's limit, Envoy's buffer on the login route).
    chunk = b"x" * 65536
    r, reached = chunked(gw_inline, LOGIN, [b'{"email": "a@example.test", "password": "'] + [chunk] * 40)
    assert r.status == 413, r
    assert not reached
    assert r.set_cookie_headers == []
    assert login_api.requests() == []


def test_configured_body_limit(gw_custom, login_api):
    login_api.always(login_ok({"id": 1, "role": "user"}))
    at_limit, pw1 = login_body_of_size(200)
    over, pw2 = login_body_of_size(201)
    SECRETS_SEEN.update({pw1, pw2})
    r = gw_custom.post("/auth/signin", body=at_limit, headers=JSON_HEADERS, timeout=T)
    assert r.status == 200, r
    r = gw_custom.post("/auth/signin", body=over, headers=JSON_HEADERS, timeout=T)
    assert r.status == 413, r
    no_cookie_no_app(r, gw_custom)
    r, reached = chunked(gw_custom, "/auth/signin", [over[:100], over[100:]], pause=0.01)
    assert r.status == 413, r
    assert not reached
    assert len(login_api.requests()) == 1


# --- logs: last in this module -----------------------------------------------------------------------

def test_envoy_log_never_shows_password_or_token(gw_inline, gw_custom):
    assert len(SECRETS_SEEN) >= 10, "the login tests above did not run"
    for gw in (gw_inline, gw_custom):
        log = gw.envoy.log_text()
        assert log, f"empty Envoy log {gw.envoy.log_path}"
        leaked = sorted(s for s in SECRETS_SEEN if s in log)
        assert leaked == [], f"{gw.envoy.log_path} shows secrets: {[s[:12] + '...' for s in leaked]}"
        # The filter ran in this Envoy (its log lines exist), and it never trapped.
        assert "wasm" in log.lower()
        for bad in ("panicked", "Function: proxy_on_"):
            assert bad not in log, f"{gw.envoy.log_path}: {bad!r}"
