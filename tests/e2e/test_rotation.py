"""Rotation on protected routes (an expired access token, a valid refresh token) in both modes:
inline, and via refresh_cluster pointing back at this Envoy's own refresh route.

The request reaches the app unchanged in method and body, with the new ETLS tokens in its Cookie
header and identity headers set; the client gets exactly the two new Set-Cookie."""
import base64
import os

import pytest

from harness import checks, tokens
from harness.envoy import PREVIOUS_SECRETS


@pytest.mark.parametrize("access_state", ["expired", "missing", "forged", "alg_none", "garbage"])
def test_invalid_access_with_valid_refresh_rotates(gw, access_state):
    acc = {
        "expired": tokens.expired_access(42, "admin"),
        "missing": None,
        "forged": tokens.access(42, "admin", secret=tokens.WRONG_SECRET),
        "alg_none": tokens.alg_none(),
        "garbage": "%%%garbage",
    }[access_state]
    old_refresh = tokens.refresh(42, "admin")
    r = gw.get("/dashboard?x=1", cookies=gw.session(acc, old_refresh, theme="dark", lang="de"))
    e = checks.echo(r)
    assert e["method"] == "GET" and e["path"] == "/dashboard?x=1"
    new_access, new_refresh = checks.rotated(r, gw, user_id=42, role="admin")
    assert new_refresh != old_refresh
    checks.app_cookie_carries(e, gw, new_access, new_refresh, {"theme": "dark", "lang": "de"})
    checks.identity(e, gw, "42", "admin")


def test_rotation_keeps_numeric_user_id_type(gw):
    r = gw.get("/x", cookies=gw.session(tokens.expired_access(1001, "user"), tokens.refresh(1001, "user")))
    e = checks.echo(r)
    checks.rotated(r, gw, user_id=1001, role="user")
    checks.identity(e, gw, "1001", "user")


def test_rotation_keeps_string_user_id_type(gw):
    r = gw.get("/x", cookies=gw.session(None, tokens.refresh("1001", "user")))
    e = checks.echo(r)
    checks.rotated(r, gw, user_id="1001", role="user")
    checks.identity(e, gw, "1001", "user")


def test_rotation_keeps_role(gw):
    # Rotation keeps the role claim (the old app's rotation dropped it).
    r = gw.get("/x", cookies=gw.session(tokens.expired_access(5, "editor"), tokens.refresh(5, "editor")))
    a, _ = checks.rotated(r, gw, user_id=5, role="editor")
    assert tokens.claims(a)["role"] == "editor"
    checks.identity(checks.echo(r), gw, "5", "editor")


def test_rotation_without_role_claim(gw):
    r = gw.get("/x", cookies=gw.session(None, tokens.refresh(6, None)))
    checks.rotated(r, gw, user_id=6, role=None)
    checks.identity(checks.echo(r), gw, "6", None)


def test_identity_comes_from_refresh_not_from_expired_access(gw):
    # The expired access token claims another user: the refresh token's identity wins.
    r = gw.get("/x", cookies=gw.session(tokens.expired_access(1, "admin"), tokens.refresh(2, "user")))
    checks.rotated(r, gw, user_id=2, role="user")
    checks.identity(checks.echo(r), gw, "2", "user")


def test_rotation_replaces_spoofed_identity_headers(gw):
    r = gw.get("/x", cookies=gw.session(tokens.expired_access(3, "user"), tokens.refresh(3, "user")),
               headers=[(gw.user_id_header, "1"), (gw.role_header, "admin")])
    checks.rotated(r, gw, user_id=3, role="user")
    checks.identity(checks.echo(r), gw, "3", "user")


def test_post_json_body_survives_rotation(gw):
    body = b'{"title": "hello", "items": [1, 2, 3], "unicode": "\xe2\x82\xac"}'
    r = gw.post("/api/posts?draft=0", body=body, headers={"Content-Type": "application/json", "X-Custom": "keep-me"},
                cookies=gw.session(tokens.expired_access(8, "user"), tokens.refresh(8, "user")))
    e = checks.echo(r)
    assert e["method"] == "POST"
    assert e["path"] == "/api/posts?draft=0"
    assert base64.b64decode(e["body_b64"]) == body
    assert checks.echo_header_all(e, "content-type") == ["application/json"]
    assert checks.echo_header_all(e, "x-custom") == ["keep-me"]
    a, ref = checks.rotated(r, gw, user_id=8, role="user")
    checks.app_cookie_carries(e, gw, a, ref)


def test_large_binary_put_body_survives_rotation(gw):
    body = os.urandom(64 * 1024)
    r = gw.request("PUT", "/api/upload", body=body, headers={"Content-Type": "application/octet-stream"},
                   cookies=gw.session(tokens.expired_access(9, "user"), tokens.refresh(9, "user")))
    e = checks.echo(r)
    assert e["method"] == "PUT"
    assert base64.b64decode(e["body_b64"]) == body
    checks.rotated(r, gw, user_id=9, role="user")


def test_delete_without_body_survives_rotation(gw):
    r = gw.request("DELETE", "/api/items/4", cookies=gw.session(None, tokens.refresh(9, "user")))
    e = checks.echo(r)
    assert e["method"] == "DELETE" and e["path"] == "/api/items/4" and e["body"] == ""
    checks.rotated(r, gw, user_id=9, role="user")


def test_page_load_rotates_instead_of_redirecting(gw):
    r = gw.get("/home", accept="text/html", cookies=gw.session(tokens.expired_access(4, "user"), tokens.refresh(4, "user")))
    assert r.status == 200, r
    checks.rotated(r, gw, user_id=4, role="user")


def test_rotated_tokens_work_on_the_next_request(gw):
    r1 = gw.get("/a", cookies=gw.session(tokens.expired_access(21, "admin"), tokens.refresh(21, "admin")))
    a, ref = checks.rotated(r1, gw, user_id=21, role="admin")
    r2 = gw.get("/b", cookies=gw.session(a, ref))
    e2 = checks.echo(r2)
    checks.identity(e2, gw, "21", "admin")
    assert r2.set_cookie_headers == []
    # The new refresh token alone rotates again.
    r3 = gw.get("/c", cookies=gw.session(None, ref))
    checks.rotated(r3, gw, user_id=21, role="admin")


def test_each_rotation_mints_a_fresh_jti(gw):
    ref = tokens.refresh(22, "user")
    jtis = set()
    for _ in range(3):
        r = gw.get("/x", cookies=gw.session(None, ref))
        _, new_ref = checks.rotated(r, gw, user_id=22, role="user")
        jtis.add(tokens.claims(new_ref)["jti"])
    assert len(jtis) == 3, jtis


def test_app_set_cookie_is_kept_next_to_rotated_cookies(gw):
    r = gw.get("/x", headers={"x-echo-set-cookie": "appPref=blue; Path=/"},
               cookies=gw.session(None, tokens.refresh(23, "user")))
    checks.echo(r)
    names = sorted(c.name for c in r.set_cookies)
    assert names == sorted(["appPref", gw.access_cookie, gw.refresh_cookie]), r.set_cookie_headers
    checks.no_joined_cookies(r)


def test_app_error_status_passes_through_with_rotated_cookies(gw):
    r = gw.get("/x", headers={"x-echo-status": "404"}, cookies=gw.session(None, tokens.refresh(24, "user")))
    assert r.status == 404
    assert gw.reached_app(r)
    assert sorted(c.name for c in r.set_cookies) == sorted([gw.access_cookie, gw.refresh_cookie])


# --- key rotation ---------------------------------------------------------------------------

def test_refresh_signed_with_previous_secret_rotates_to_current(gw):
    old = tokens.refresh(31, "admin", secret=PREVIOUS_SECRETS["ETLS_REFRESH_PREVIOUS"])
    r = gw.get("/x", cookies=gw.session(tokens.expired_access(31, "admin"), old))
    a, ref = checks.rotated(r, gw, user_id=31, role="admin")  # verifies with the current secrets
    assert not tokens.verifies(a, PREVIOUS_SECRETS["ETLS_ACCESS_PREVIOUS"])
    assert not tokens.verifies(ref, PREVIOUS_SECRETS["ETLS_REFRESH_PREVIOUS"])
    checks.identity(checks.echo(r), gw, "31", "admin")


def test_expired_access_signed_with_previous_and_valid_refresh_rotates(gw):
    t = tokens.now()
    old_access = tokens.access(32, "user", secret=PREVIOUS_SECRETS["ETLS_ACCESS_PREVIOUS"], iat=t - 2000, exp=t - 1100)
    r = gw.get("/x", cookies=gw.session(old_access, tokens.refresh(32, "user")))
    checks.rotated(r, gw, user_id=32, role="user")


def test_rotation_goes_through_the_configured_mode(gw):
    """cluster mode: one dispatched call to refresh_cluster per rotation; inline: no such cluster."""
    stat = "cluster.etls_refresh.upstream_rq_total"
    before = gw.envoy.stat(stat)
    r = gw.get("/x", cookies=gw.session(None, tokens.refresh(41, "user")))
    checks.rotated(r, gw, user_id=41, role="user")
    after = gw.envoy.stat(stat)
    if gw.mode == "cluster":
        assert before is not None and after == before + 1, f"{stat}: {before} -> {after}"
    else:
        assert before is None and after is None


def test_concurrent_rotations_do_not_mix_up_users(gw):
    """Many rotations in flight at once (in cluster mode: many dispatched calls back into this
    Envoy): each request is answered with its own user's tokens and identity."""
    from concurrent.futures import ThreadPoolExecutor

    def one(i):
        uid = 5000 + i
        r = gw.post(f"/api/c/{i}", body=f'{{"i": {i}}}'.encode(), headers={"Content-Type": "application/json"},
                    cookies=gw.session(tokens.expired_access(uid, f"r{i}"), tokens.refresh(uid, f"r{i}")))
        return i, r

    with ThreadPoolExecutor(max_workers=12) as pool:
        results = list(pool.map(one, range(24)))
    for i, r in results:
        e = checks.echo(r)
        assert e["path"] == f"/api/c/{i}" and e["body"] == f'{{"i": {i}}}'
        a, ref = checks.rotated(r, gw, user_id=5000 + i, role=f"r{i}")
        checks.app_cookie_carries(e, gw, a, ref)
        checks.identity(e, gw, str(5000 + i), f"r{i}")


def test_previous_secrets_verify_only_when_configured(make_gateway):
    """Without ETLS_*_PREVIOUS in the VM environment, tokens signed with the old secrets are forged."""
    from harness.envoy import SECRETS
    g = make_gateway("noprevious", mode="inline", env=dict(SECRETS))
    old_access = tokens.access(33, "user", secret=PREVIOUS_SECRETS["ETLS_ACCESS_PREVIOUS"])
    checks.unauthorized(g.get("/x", cookies=g.session(old_access)), g)
    old_refresh = tokens.refresh(33, "user", secret=PREVIOUS_SECRETS["ETLS_REFRESH_PREVIOUS"])
    checks.unauthorized(g.get("/x", cookies=g.session(None, old_refresh)), g)
    # The current secrets work as ever.
    r = g.get("/x", cookies=g.session(None, tokens.refresh(33, "user")))
    checks.rotated(r, g, user_id=33, role="user")
