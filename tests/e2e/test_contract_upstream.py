"""The upstream session (`login_refresh_path`, docs/sessions.md, "Upstream session"), checked black-box with odd login API answers
the other suites do not send: a BOM, `userData: null`, a `userData` without `role`, a redirect,
extra Set-Cookie and headers, an id beyond 64 bits. Inline rotation and the refresh route (the
answer mapping is shared with the refresh-cluster mode, which test_upstream_session.py runs)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from harness import checks, tokens
from harness.upstreams import Reply

sys.path.insert(0, str(Path(__file__).resolve().parent))
from upstream_support import reset, start_gateway, stub_login_api  # noqa: E402
from upstream_support import expired_session as session  # noqa: E402


@pytest.fixture(scope="module")
def api():
    s = stub_login_api("login_api_contract")
    yield s
    s.stop()


@pytest.fixture(scope="module")
def ugw(upstreams, api):
    gw = start_gateway(upstreams, api.port, "contract-upstream", "inline", envoy_name="contract-upstream",
                       login_timeout_ms=1000)
    yield gw
    gw.envoy.stop()


@pytest.fixture
def login_api(api):
    yield reset(api)


def outage_rotation(gw, r, e, up_refresh, user_id=42, role="admin"):
    """The outage path: exactly the two ETLS cookies renewed, the API's cookies untouched."""
    checks.rotated(r, gw, user_id=user_id, role=role)
    got = dict(checks.echo_cookies(e))
    assert got[gw.upstream_access_cookie] == "up-access-old"
    assert got[gw.upstream_refresh_cookie] == up_refresh
    checks.identity(e, gw, str(user_id), role)


@pytest.mark.parametrize("reply", [
    Reply(200, b"\xef\xbb\xbf" + json.dumps({"accessToken": "n1", "refreshToken": "n2"}).encode(), headers=[("Content-Type", "application/json")]),
    Reply(307, b"", headers=[("Location", "/elsewhere")]),
    Reply(200, b'{"accessToken":"n1","refreshToken":"n2","userData":{"id":123456789012345678901234567890}}',
          headers=[("Content-Type", "application/json")]),
    Reply(200, b'{"accessToken":"n1","refreshToken":"n2","userData":"42"}', headers=[("Content-Type", "application/json")]),
], ids=["bom", "redirect", "id-beyond-64-bits", "userdata-string"])
def test_malformed_answers_are_an_outage(ugw, login_api, reply):
    login_api.always(reply)
    cookies, up_refresh = session(ugw)
    r = ugw.get("/contract/up", cookies=cookies)
    e = checks.echo(r)
    outage_rotation(ugw, r, e, up_refresh)


def test_user_data_null_keeps_the_identity(ugw, login_api):
    login_api.always(Reply(200, {"accessToken": "n1", "refreshToken": "n2", "userData": None}))
    cookies, _ = session(ugw, user_id="u-9", role="editor")
    r = ugw.get("/contract/null", cookies=cookies)
    e = checks.echo(r)
    checks.identity(e, ugw, "u-9", "editor")
    assert sorted(c.name for c in r.set_cookies) == sorted(ugw.cookie_names)
    assert r.cookie(ugw.upstream_access_cookie).value == "n1"


def test_user_data_without_role_drops_the_role(ugw, login_api):
    """`userId` and `role` come from `userData` when present: a userData without role is a user
    who now has no role (so a revoked role takes effect)."""
    login_api.always(Reply(200, {"accessToken": "n1", "refreshToken": "n2", "userData": {"id": 42}}))
    cookies, _ = session(ugw)
    r = ugw.get("/contract/norole", cookies=cookies)
    e = checks.echo(r)
    checks.identity(e, ugw, "42", None)
    assert "role" not in tokens.verify(r.cookie(ugw.access_cookie).value, ugw.access_secret)


def test_api_set_cookie_and_headers_stay_behind(ugw, login_api):
    login_api.always(Reply(200, {"accessToken": "n1", "refreshToken": "n2"},
                           headers=[("Set-Cookie", "api_sess=x; Path=/"), ("X-Api-Internal", "1")]))
    cookies, _ = session(ugw)
    r = ugw.get("/contract/extra", cookies=cookies)
    checks.echo(r)
    assert sorted(c.name for c in r.set_cookies) == sorted(ugw.cookie_names), r.set_cookie_headers
    assert r.header("X-Api-Internal") is None


def test_refresh_route_ended_clears_with_no_store(ugw, login_api):
    login_api.always(Reply(403, {"error": "disabled"}))
    cookies, up_refresh = session(ugw)
    r = ugw.post("/api/auth/refreshtoken", cookies=cookies)
    assert r.status == 401 and r.json() == {"error": "Session ended"}, r
    assert r.header_all("Cache-Control") == ["no-store"]
    checks.cleared(r, ugw)
    assert [c.json() for c in login_api.requests()] == [{"refreshToken": up_refresh}]
