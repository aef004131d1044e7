"""Token compatibility with the Next.js app, both ways, against the real jose
(tests/node, jose 6.2.18) and the real filter in Envoy, in both rotation modes:
- tokens jose mints the Next.js way (no iat, no typ, no jti) pass the filter, as access and as refresh;
- tokens the filter mints (login, rotation, refresh route) pass jose jwtVerify with the same secret."""
import pytest

from harness import checks, node, tokens
from harness.upstreams import login_ok


def test_jose_is_the_pinned_version():
    assert node.jose_version() == "6.2.18"


def test_jose_token_shape_is_the_nextjs_one(gw):
    tok = node.mint(gw.access_secret, 42, "admin", "15m")
    assert tokens.header(tok) == {"alg": "HS256"}
    c = tokens.claims(tok)
    assert set(c) == {"userId", "role", "exp"}
    assert 890 <= c["exp"] - tokens.now() <= 905


@pytest.mark.parametrize("user_id,role,want", [(42, "admin", "42"), ("abc-1", "user", "abc-1"), (7, None, "7")])
def test_jose_access_token_passes_the_filter(gw, user_id, role, want):
    tok = node.mint(gw.access_secret, user_id, role, "15m")
    r = gw.get("/x", cookies=gw.session(tok))
    checks.identity(checks.echo(r), gw, want, role)
    assert r.set_cookie_headers == []


def test_jose_refresh_token_rotates(gw):
    ref = node.mint(gw.refresh_secret, 42, "admin", "7d")
    expired = node.mint(gw.access_secret, 42, "admin", tokens.now() - 3600)
    r = gw.get("/x", cookies=gw.session(expired, ref))
    e = checks.echo(r)
    a, new_ref = checks.rotated(r, gw, user_id=42, role="admin")
    checks.app_cookie_carries(e, gw, a, new_ref)
    checks.identity(e, gw, "42", "admin")


def test_jose_refresh_token_on_refresh_route(gw):
    ref = node.mint(gw.refresh_secret, "u-9", "editor", "7d")
    r = gw.post(gw.refresh_path, cookies=gw.session(None, ref))
    assert r.status == 200, r
    assert r.json() == {"message": "Tokens refreshed"}
    checks.rotated(r, gw, user_id="u-9", role="editor")


def test_jose_expired_access_without_refresh_is_denied(gw):
    tok = node.mint(gw.access_secret, 42, "admin", tokens.now() - 60)
    checks.unauthorized(gw.get("/x", cookies=gw.session(tok)), gw)


def test_jose_token_with_wrong_secret_is_denied(gw):
    tok = node.mint(tokens.WRONG_SECRET, 42, "admin", "15m")
    checks.unauthorized(gw.get("/x", cookies=gw.session(tok)), gw)


def _jose_accepts(gw, access, refresh, user_id, role):
    va = node.verify(access, gw.access_secret)
    assert va["ok"], f"jose rejects the filter's access token: {va}"
    assert va["payload"]["userId"] == user_id and va["payload"].get("role") == role
    assert va["protectedHeader"]["alg"] == "HS256"
    vr = node.verify(refresh, gw.refresh_secret)
    assert vr["ok"], f"jose rejects the filter's refresh token: {vr}"
    assert vr["payload"]["userId"] == user_id and vr["payload"].get("role") == role
    assert isinstance(vr["payload"].get("jti"), str)
    # And not with the other secret.
    assert node.verify(access, gw.refresh_secret)["ok"] is False
    assert node.verify(refresh, gw.access_secret)["ok"] is False


def test_rotation_tokens_pass_jose(gw):
    r = gw.get("/x", cookies=gw.session(None, tokens.refresh(314, "admin")))
    a, ref = checks.rotated(r, gw, user_id=314, role="admin")
    _jose_accepts(gw, a, ref, 314, "admin")


def test_refresh_route_tokens_pass_jose(gw):
    r = gw.post(gw.refresh_path, cookies=gw.session(None, tokens.refresh("s-1", "user")))
    assert r.status == 200, r
    a, ref = checks.rotated(r, gw, user_id="s-1", role="user")
    _jose_accepts(gw, a, ref, "s-1", "user")


def test_login_tokens_pass_jose(gw, login_api):
    login_api.always(login_ok({"id": 2718, "role": "admin", "name": "Ada"}))
    r = gw.post(gw.login_path, body={"email": "ada@example.test", "password": "correct horse"})
    assert r.status == 200, r
    assert not gw.reached_app(r)
    a = r.cookie(gw.access_cookie)
    ref = r.cookie(gw.refresh_cookie)
    assert a is not None and ref is not None, r.set_cookie_headers
    _jose_accepts(gw, a.value, ref.value, 2718, "admin")
