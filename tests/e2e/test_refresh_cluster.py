"""Rotation through `refresh_cluster` when that cluster is a stub server (not Envoy itself): the
shape of the dispatched call, tokens taken from its Set-Cookie, and every way the call can fail
(a failed refresh call denies)."""
import sys
import time
from pathlib import Path

import pytest

from harness import checks, tokens
from harness.upstreams import Reply

sys.path.insert(0, str(Path(__file__).resolve().parent))
from login_support import post_chunked  # noqa: E402


def _cookie(name, value, max_age):
    return ("Set-Cookie", f"{name}={value}; HttpOnly; Path=/; Secure; SameSite=Strict; Max-Age={max_age}")


def test_dispatched_call_and_tokens_from_its_set_cookie(gw_stub_refresh, refresh_api):
    gw = gw_stub_refresh
    new_a = tokens.access(77, "auditor")
    new_r = tokens.refresh(77, "auditor")
    refresh_api.always(Reply(200, {"message": "Tokens refreshed"},
                             headers=[_cookie(gw.access_cookie, new_a, 900), _cookie(gw.refresh_cookie, new_r, 604800)]))
    old_a, old_r = tokens.expired_access(77, "auditor"), tokens.refresh(77, "auditor")
    r = gw.post("/api/things?id=3", body=b'{"k":"v"}', headers={"Content-Type": "application/json"},
                cookies=gw.session(old_a, old_r, theme="dark"))
    e = checks.echo(r)
    assert e["method"] == "POST" and e["path"] == "/api/things?id=3" and e["body"] == '{"k":"v"}'
    checks.app_cookie_carries(e, gw, new_a, new_r, {"theme": "dark"})
    checks.identity(e, gw, "77", "auditor")
    assert sorted((c.name, c.value) for c in r.set_cookies) == sorted([(gw.access_cookie, new_a), (gw.refresh_cookie, new_r)])
    for c in r.set_cookies:
        checks.cookie_attrs_ok(c, gw, 900 if c.name == gw.access_cookie else 604800)

    calls = refresh_api.requests()
    assert len(calls) == 1, calls
    call = calls[0]
    assert call.method == "POST"
    assert call.path == gw.refresh_path
    assert call.header("Host") == "etls_refresh"  # refresh_authority defaults to the cluster name
    sent = "; ".join(call.header_all("Cookie"))
    assert f"{gw.refresh_cookie}={old_r}" in sent, sent
    # The session key for consistent hashing across replicas: the keyed hash of the ETLS
    # refresh token (no login_refresh_path here), never the token.
    assert call.header_all("x-etls-session-key") == [tokens.session_key(old_r)]
    assert old_r not in call.header("x-etls-session-key")


def test_a_request_whose_body_is_still_arriving_rotates_inline_without_a_refresh_call(gw_stub_refresh, refresh_api):
    # A rotation: held while the call is out, a body would be buffered by Envoy
    # (413 past its buffer limit), so a request whose body is still arriving and not known to be
    # small (here chunked: no Content-Length) rotates inline.
    gw = gw_stub_refresh
    cookie = f"{gw.access_cookie}={tokens.expired_access(78, 'user')}; {gw.refresh_cookie}={tokens.refresh(78, 'user')}; theme=dark"
    r = post_chunked(gw.port, "/api/things", [b'{"k":', b'"v"}'], headers={"Cookie": cookie})
    e = checks.echo(r)
    assert e["method"] == "POST" and e["body"] == '{"k":"v"}'
    a, ref = checks.rotated(r, gw, user_id=78, role="user")
    checks.app_cookie_carries(e, gw, a, ref, {"theme": "dark"})
    assert refresh_api.requests() == []


def test_valid_access_makes_no_refresh_call(gw_stub_refresh, refresh_api):
    r = gw_stub_refresh.get("/x", cookies=gw_stub_refresh.session(tokens.access(1, "user"), tokens.refresh(1, "user")))
    checks.echo(r)
    assert refresh_api.requests() == []


def test_no_etls_cookie_makes_no_refresh_call(gw_stub_refresh, refresh_api):
    checks.unauthorized(gw_stub_refresh.get("/x"), gw_stub_refresh)
    assert refresh_api.requests() == []


FAILURES = {
    "500": Reply(500, {"error": "boom"}),
    "503_empty": Reply(503, b""),
    "401_invalid": Reply(401, {"error": "Invalid refresh token"}),
    "200_without_set_cookie": Reply(200, {"message": "Tokens refreshed"}),
    "200_only_access_cookie": None,  # built in the test (needs the token)
    "302": Reply(302, b"", headers=[("Location", "/login")]),
    "connection_closed": Reply(close=True),
    "timeout": Reply(200, {"message": "Tokens refreshed"}, delay=2.5),  # refresh_timeout_ms is 1000
}


@pytest.mark.parametrize("failure", sorted(FAILURES))
def test_failed_refresh_call_denies(gw_stub_refresh, refresh_api, failure):
    gw = gw_stub_refresh
    reply = FAILURES[failure] or Reply(200, {"message": "Tokens refreshed"},
                                        headers=[_cookie(gw.access_cookie, tokens.access(1, "user"), 900)])
    refresh_api.always(reply)
    t0 = time.monotonic()
    r = gw.get("/x", cookies=gw.session(tokens.expired_access(1, "user"), tokens.refresh(1, "user")))
    elapsed = time.monotonic() - t0
    checks.unauthorized(r, gw)
    assert len(refresh_api.requests()) >= 1, "the filter did not call the refresh cluster"
    if failure == "timeout":
        assert elapsed < 2.3, f"deny took {elapsed:.2f}s; refresh_timeout_ms is 1000"


def test_failed_refresh_call_on_page_load_redirects(gw_stub_refresh, refresh_api):
    refresh_api.always(Reply(500, b"down"))
    r = gw_stub_refresh.get("/home?a=1", accept="text/html",
                            cookies=gw_stub_refresh.session(None, tokens.refresh(1, "user")))
    checks.redirected_to_login(r, gw_stub_refresh, "/home?a=1")


def test_filter_works_again_after_refresh_failures(gw_stub_refresh, refresh_api):
    refresh_api.always(Reply(close=True))
    for _ in range(3):
        checks.unauthorized(gw_stub_refresh.get("/x", cookies=gw_stub_refresh.session(None, tokens.refresh())), gw_stub_refresh)
    r = gw_stub_refresh.get("/x", cookies=gw_stub_refresh.session(tokens.access(2, "user")))
    checks.identity(checks.echo(r), gw_stub_refresh, "2", "user")
