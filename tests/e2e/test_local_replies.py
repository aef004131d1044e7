"""Replies the filter makes itself: every one carries `Cache-Control: no-store`,
and the login route's Content-Type check (415) comes after the method check and before the size
and body checks. A real Envoy with the real filter; the login API is the stub server."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from harness import tokens
from harness.upstreams import Reply, login_ok

sys.path.insert(0, str(Path(__file__).resolve().parent))
from login_support import login_body  # noqa: E402

LOGIN = "/api/auth/login"
REFRESH = "/api/auth/refreshtoken"
LOGOUT = "/api/auth/logout"
JSON = {"Content-Type": "application/json"}
CREDS = login_body("cache@example.test", "cache-password-1234")
T = 8
UNSUPPORTED = {"error": "Content-Type must be application/json"}


def no_store(r):
    assert r.header_all("Cache-Control") == ["no-store"], r


# --- 415 -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("content_type", [
    "text/plain", "text/plain;charset=UTF-8", "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=----etls", None, "application/json-patch+json", "text/json",
], ids=["text-plain", "text-plain-charset", "form-urlencoded", "multipart", "none", "json-patch", "text-json"])
def test_login_with_another_content_type_gives_415(gw_inline, login_api, content_type):
    headers = {"Content-Type": content_type} if content_type else None
    r = gw_inline.post(LOGIN, body=CREDS, headers=headers, timeout=T)
    assert r.status == 415, r
    assert r.json() == UNSUPPORTED
    assert r.header("Content-Type") == "application/json"
    assert r.set_cookie_headers == []
    no_store(r)
    assert login_api.requests() == [], "the login API was called"
    assert not gw_inline.reached_app(r), "a refused login reached the app"


@pytest.mark.parametrize("content_type", [
    "application/json", "application/json; charset=utf-8", "Application/JSON", "APPLICATION/JSON;CHARSET=UTF-8",
])
def test_login_with_json_content_type_variants_succeeds(gw_inline, login_api, content_type):
    r = gw_inline.post(LOGIN, body=CREDS, headers={"Content-Type": content_type}, timeout=T)
    assert r.status == 200, r
    assert len(r.set_cookie_headers) == 4
    assert [s.json() for s in login_api.requests()] == [{"email": "cache@example.test", "password": "cache-password-1234"}]


def test_login_checks_run_in_order_method_type_size_body(gw_inline, login_api):
    big = b"x" * 20_000
    # Another method wins over a wrong type.
    r = gw_inline.request("PUT", LOGIN, body=big, headers={"Content-Type": "text/plain"}, timeout=T)
    assert (r.status, r.header_all("Allow")) == (405, ["POST"]), r
    # A wrong type wins over a body that is too large and not JSON.
    r = gw_inline.post(LOGIN, body=big, headers={"Content-Type": "text/plain"}, timeout=T)
    assert r.status == 415, r
    # A JSON type: the size, then the body.
    assert gw_inline.post(LOGIN, body=big, headers=JSON, timeout=T).status == 413
    assert gw_inline.post(LOGIN, body=b"not json", headers=JSON, timeout=T).status == 400
    assert login_api.requests() == []


# --- no-store on every local reply --------------------------------------------------------------

def test_every_local_reply_is_no_store(gw_inline, make_gateway, login_api):
    gw = gw_inline
    seen = []

    def check(r, status):
        assert r.status == status, r
        no_store(r)
        seen.append(status)

    # Login: success and every failure.
    login_api.always(login_ok())
    check(gw.post(LOGIN, body=CREDS, headers=JSON, timeout=T), 200)
    for upstream, status in [(Reply(401, {}), 401), (Reply(429, {}, headers=[("Retry-After", "9")]), 429),
                             (Reply(500, {}), 502), (Reply(200, "not json"), 502)]:
        login_api.always(upstream)
        check(gw.post(LOGIN, body=CREDS, headers=JSON, timeout=T), status)
    login_api.always(login_ok())
    check(gw.post(LOGIN, body=b"[]", headers=JSON, timeout=T), 400)
    check(gw.post(LOGIN, body=b"x" * 20_000, headers=JSON, timeout=T), 413)
    check(gw.post(LOGIN, body=CREDS, headers={"Content-Type": "text/plain"}, timeout=T), 415)
    check(gw.get(LOGIN, timeout=T), 405)
    # A login API slower than login_timeout_ms.
    slow = make_gateway("login-custom", login_upstream_path="/v2/session", login_authority="auth.internal.test",
                        login_path="/auth/signin", login_timeout_ms=400, max_login_body_bytes=200)
    login_api.always(Reply(200, {}, delay=1.5))
    check(slow.post("/auth/signin", body=CREDS, headers=JSON, timeout=T), 504)
    login_api.always(login_ok())
    # Refresh route.
    check(gw.post(REFRESH, timeout=T), 401)
    check(gw.post(REFRESH, cookies=gw.session(None, "garbage"), timeout=T), 401)
    check(gw.post(REFRESH, cookies=gw.session(None, tokens.refresh(42, "admin")), timeout=T), 200)
    check(gw.get(REFRESH, timeout=T), 405)
    # Logout route.
    check(gw.post(LOGOUT, timeout=T), 200)
    check(gw.get(LOGOUT, timeout=T), 405)
    # Denials: page load and API call.
    check(gw.get("/dashboard", accept="text/html", timeout=T), 302)
    check(gw.get("/dashboard", timeout=T), 401)
    assert seen == [200, 401, 429, 502, 502, 400, 413, 415, 405, 504, 401, 401, 200, 405, 200, 405, 302, 401]


def test_a_failed_refresh_call_denies_with_no_store(gw_stub_refresh, refresh_api):
    refresh_api.always(Reply(500, {}))
    r = gw_stub_refresh.get("/x", cookies=gw_stub_refresh.session(None, tokens.refresh(1, "user")), timeout=T)
    assert r.status == 401, r
    no_store(r)


def test_the_apps_own_answers_keep_their_cache_headers(gw_inline):
    r = gw_inline.get("/x", cookies=gw_inline.session(tokens.access(1, "user")), timeout=T)
    assert r.status == 200, r
    assert r.header_all("Cache-Control") == [], "the filter must not touch the app's caching"
    body = json.loads(r.body)
    assert body["path"] == "/x"
