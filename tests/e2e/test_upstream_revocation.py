"""Revocation end to end with the real demo login API (demo/login_api.py, a subprocess with its
admin listener) and `login_refresh_path`, in both rotation modes: sign in, disable the user at
the login API, wait past a short access TTL: the next request is denied and the cookies cleared.
An outage of the login API instead keeps the user signed in. Also: the API's short-lived tokens
are renewed on rotation, and a disabled user cannot sign in again."""
from __future__ import annotations

import http.client
import json
import sys
import time
from pathlib import Path

import pytest

from harness import checks, tokens
from harness import envoy as henvoy
from harness.gateway import Gateway

sys.path.insert(0, str(Path(__file__).resolve().parent))
from login_support import DemoLoginApi  # noqa: E402
from upstream_support import start_gateway  # noqa: E402

ACCESS_TTL_S = 2
LOGIN = "/api/auth/login"
# DEMO-ONLY users of demo/login_api.py.
ALICE = {"email": "alice@example.com", "password": "alice-demo-password"}
BOB = {"email": "bob@example.com", "password": "bob-demo-password"}


class Api(DemoLoginApi):
    def __init__(self) -> None:
        self.admin_port = henvoy.free_port()
        super().__init__("--admin-port", str(self.admin_port))

    def admin(self, method: str, path: str) -> dict:
        conn = http.client.HTTPConnection("127.0.0.1", self.admin_port, timeout=5)
        try:
            conn.request(method, path)
            r = conn.getresponse()
            assert r.status == 200, (r.status, path)
            return json.loads(r.read())
        finally:
            conn.close()


@pytest.fixture(scope="module")
def api():
    a = Api().start()
    yield a
    a.stop()


@pytest.fixture(scope="module", params=["inline", "cluster"])
def rgw(request, upstreams, api):
    gw = start_gateway(upstreams, api.port, "revocation", request.param, concurrency=2,
                       access_ttl_s=ACCESS_TTL_S, clock_skew_s=0, login_timeout_ms=1000,
                       login_logout_path="/logout")
    yield gw
    gw.envoy.stop()


class Browser:
    """A cookie jar that follows Set-Cookie (Max-Age=0 deletes)."""

    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        self.jar: dict[str, str] = {}

    def take(self, r) -> None:
        for c in r.set_cookies:
            if c.max_age == 0:
                self.jar.pop(c.name, None)
            else:
                self.jar[c.name] = c.value

    def get(self, path: str, **kw):
        r = self.gw.get(path, cookies=dict(self.jar), **kw)
        self.take(r)
        return r

    def login(self, creds: dict):
        r = self.gw.post(LOGIN, body=creds)
        self.take(r)
        return r


def wait_past_access_ttl(jar: dict, gw: Gateway) -> None:
    exp = tokens.claims(jar[gw.access_cookie])["exp"]
    while time.time() <= exp + 1:  # bounded: ACCESS_TTL_S + 1 s
        time.sleep(0.1)


def test_disabled_user_is_signed_out_after_the_access_ttl(rgw, api):
    api.admin("POST", "/users/alice@example.com/enable")
    b = Browser(rgw)
    r = b.login(ALICE)
    assert r.status == 200, r
    first_api_tokens = (b.jar[rgw.upstream_access_cookie], b.jar[rgw.upstream_refresh_cookie])
    checks.identity(checks.echo(b.get("/x")), rgw, "1", "admin")

    # Still enabled: past the access TTL the rotation renews the API's short-lived tokens too.
    wait_past_access_ttl(b.jar, rgw)
    r = b.get("/y")
    checks.identity(checks.echo(r), rgw, "1", "admin")
    assert sorted(c.name for c in r.set_cookies) == sorted(rgw.cookie_names)
    renewed = (b.jar[rgw.upstream_access_cookie], b.jar[rgw.upstream_refresh_cookie])
    assert renewed[0] != first_api_tokens[0] and renewed[1] != first_api_tokens[1]
    assert all(t.startswith(("demo-api-access-", "demo-api-refresh-")) for t in renewed)

    # Disabled at the API: the valid access token still works until it expires ...
    assert api.admin("POST", "/users/alice@example.com/disable") == {"email": "alice@example.com", "disabled": True}
    try:
        checks.echo(b.get("/z"))
        wait_past_access_ttl(b.jar, rgw)
        # ... then the next request is denied and every cookie cleared.
        r = b.get("/after")
        checks.unauthorized(r, rgw)
        assert b.jar == {}
        # Signing in again is refused (the API answers 403; the filter says invalid credentials).
        assert b.login(ALICE).status == 401
    finally:
        api.admin("POST", "/users/alice@example.com/enable")


# The filter reuses a login API refresh answer for the same refreshToken for 30 s
# (docs/sessions.md, Upstream session); a copy that rotates with a token the browser rotated with
# less than that ago gets the reused answer (docs/sessions.md, Logout). The test waits that out.
REUSE_S = 30


@pytest.mark.parametrize("rotate_first", [False, True])
def test_a_copy_of_the_cookies_is_refused_after_a_logout(rgw, api, rotate_first):
    """With login_logout_path, a logout ends the session at the demo login API: a copy of the
    browser's cookies (another device, a stolen cookie) is denied at its next rotation, whether
    the browser rotated after the copy was taken (the copy's API token is then a spent one) or not."""
    a = Browser(rgw)
    assert a.login(BOB).status == 200
    copy = Browser(rgw)
    copy.jar = dict(a.jar)
    checks.identity(checks.echo(copy.get("/copy-works")), rgw, "u-bob-42", "user")
    not_before = 0.0
    if rotate_first:
        wait_past_access_ttl(a.jar, rgw)
        r = a.get("/rotated")
        not_before = time.time() + REUSE_S + 1
        checks.identity(checks.echo(r), rgw, "u-bob-42", "user")
        assert sorted(c.name for c in r.set_cookies) == sorted(rgw.cookie_names), r.set_cookie_headers
        assert a.jar[rgw.upstream_refresh_cookie] != copy.jar[rgw.upstream_refresh_cookie]
    r = rgw.post(rgw.logout_path, cookies=dict(a.jar))
    assert r.status == 200 and r.json() == {"message": "Logged out"}, r
    checks.cleared(r, rgw)
    a.take(r)
    assert a.jar == {}
    wait_past_access_ttl(copy.jar, rgw)
    while time.time() < not_before:  # bounded: REUSE_S + 1 s
        time.sleep(0.2)
    checks.unauthorized(copy.get("/copy-after-logout"), rgw)
    assert copy.jar == {}
    # Signing in again starts a new session, which works.
    assert a.login(BOB).status == 200
    checks.identity(checks.echo(a.get("/again")), rgw, "u-bob-42", "user")


def test_login_api_outage_keeps_the_user_signed_in(rgw, api, upstreams):
    b = Browser(rgw)
    assert b.login(BOB).status == 200
    api_tokens = (b.jar[rgw.upstream_access_cookie], b.jar[rgw.upstream_refresh_cookie])
    wait_past_access_ttl(b.jar, rgw)
    api.stop()  # the login API is down: connection refused
    try:
        r = b.get("/during-outage")
        e = checks.echo(r)
        checks.identity(e, rgw, "u-bob-42", "user")
        a, ref = checks.rotated(r, rgw, user_id="u-bob-42", role="user")  # the ETLS pair only
        assert (b.jar[rgw.upstream_access_cookie], b.jar[rgw.upstream_refresh_cookie]) == api_tokens
    finally:
        api.start()
