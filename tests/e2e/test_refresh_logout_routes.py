"""The filter's own routes: POST refresh_path and POST logout_path,
answered locally in both rotation modes, never forwarded to the app."""
import pytest

from harness import checks, tokens
from harness.envoy import PREVIOUS_SECRETS


# --- refresh --------------------------------------------------------------------------------

def test_refresh_without_cookie_is_401_no_refresh_token(gw):
    r = gw.post(gw.refresh_path)
    assert r.status == 401, r
    assert r.json() == {"error": "No refresh token provided"}
    assert not gw.reached_app(r)
    assert not any(c.value for c in r.set_cookies), f"no token may be set: {r.set_cookie_headers}"


def test_refresh_with_only_access_cookie_is_401_no_refresh_token(gw):
    r = gw.post(gw.refresh_path, cookies=gw.session(tokens.access(1, "user")))
    assert r.status == 401, r
    assert r.json() == {"error": "No refresh token provided"}
    assert not gw.reached_app(r)


@pytest.mark.parametrize("kind", ["forged", "expired", "alg_none", "garbage", "access_token", "hs512"])
def test_refresh_with_invalid_token_is_401_invalid(gw, kind):
    tok = {
        "forged": tokens.refresh(1, "user", secret=tokens.WRONG_SECRET),
        "expired": tokens.expired_refresh(1, "user"),
        "alg_none": tokens.alg_none(),
        "garbage": "xyz",
        "access_token": tokens.access(1, "user"),
        "hs512": tokens.refresh(1, "user", alg="HS512"),
    }[kind]
    r = gw.post(gw.refresh_path, cookies=gw.session(None, tok))
    assert r.status == 401, r
    assert r.json() == {"error": "Invalid refresh token"}
    assert not gw.reached_app(r)
    assert not any(c.value for c in r.set_cookies), f"no token may be set: {r.set_cookie_headers}"


@pytest.mark.parametrize("user_id,role", [(42, "admin"), ("u-42", "user"), (7, None)])
def test_refresh_with_valid_token_rotates_and_carries_claims(gw, user_id, role):
    old = tokens.refresh(user_id, role)
    r = gw.post(gw.refresh_path, cookies=gw.session(tokens.expired_access(user_id, role), old))
    assert r.status == 200, r
    assert r.json() == {"message": "Tokens refreshed"}
    assert not gw.reached_app(r)
    a, ref = checks.rotated(r, gw, user_id=user_id, role=role)
    assert ref != old


def test_refresh_ignores_query_string(gw):
    r = gw.post(gw.refresh_path + "?from=spa", cookies=gw.session(None, tokens.refresh(3, "user")))
    assert r.status == 200, r
    assert r.json() == {"message": "Tokens refreshed"}
    checks.rotated(r, gw, user_id=3, role="user")


def test_refresh_with_previous_secret_token_mints_with_current(gw):
    old = tokens.refresh(4, "user", secret=PREVIOUS_SECRETS["ETLS_REFRESH_PREVIOUS"])
    r = gw.post(gw.refresh_path, cookies=gw.session(None, old))
    assert r.status == 200, r
    a, ref = checks.rotated(r, gw, user_id=4, role="user")
    assert not tokens.verifies(ref, PREVIOUS_SECRETS["ETLS_REFRESH_PREVIOUS"])


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH"])
def test_refresh_other_method_is_405(gw, method):
    r = gw.request(method, gw.refresh_path, cookies=gw.session(None, tokens.refresh(1, "user")),
                   body=b"" if method in ("PUT", "PATCH") else None)
    assert r.status == 405, r
    assert not gw.reached_app(r)
    assert not any(c.value for c in r.set_cookies), r.set_cookie_headers


def test_refresh_response_tokens_pass_the_protected_route(gw):
    r = gw.post(gw.refresh_path, cookies=gw.session(None, tokens.refresh(50, "admin")))
    a, ref = checks.rotated(r, gw, user_id=50, role="admin")
    checks.identity(checks.echo(gw.get("/x", cookies=gw.session(a, ref))), gw, "50", "admin")


# --- logout ---------------------------------------------------------------------------------

def test_logout_with_session_clears_all_four(gw):
    cookies = gw.session(tokens.access(1, "user"), tokens.refresh(1, "user"),
                         **{gw.upstream_access_cookie: "u-a", gw.upstream_refresh_cookie: "u-r"})
    r = gw.post(gw.logout_path, cookies=cookies)
    assert r.status == 200, r
    assert r.json() == {"message": "Logged out"}
    checks.cleared(r, gw)
    assert not gw.reached_app(r)


def test_logout_without_session_clears_all_four(gw):
    r = gw.post(gw.logout_path)
    assert r.status == 200, r
    assert r.json() == {"message": "Logged out"}
    checks.cleared(r, gw)
    assert not gw.reached_app(r)


def test_logout_with_expired_or_forged_session_clears_all_four(gw):
    r = gw.post(gw.logout_path, cookies=gw.session(tokens.expired_access(), tokens.refresh(secret=tokens.WRONG_SECRET)))
    assert r.status == 200, r
    assert r.json() == {"message": "Logged out"}
    checks.cleared(r, gw)


def test_logout_with_query_string(gw):
    r = gw.post(gw.logout_path + "?redirect=/", cookies=gw.session(tokens.access()))
    assert r.status == 200, r
    assert r.json() == {"message": "Logged out"}
    checks.cleared(r, gw)


def test_after_logout_the_cleared_cookies_are_no_session(gw):
    r = gw.post(gw.logout_path, cookies=gw.session(tokens.access(), tokens.refresh()))
    jar = {c.name: c.value for c in r.set_cookies}
    checks.unauthorized(gw.get("/x", cookies=jar), gw)
