"""The migration guide (docs/migration.md), tried: a Next.js app that signed accessTokenEtls / refreshTokenEtls
itself with jose moves its session to the filter, and nobody is logged out.

The browser still holds the cookies the app set, minted exactly as the app did (tests/node/mint.mjs:
`new SignJWT({userId, role}).setProtectedHeader({alg: "HS256"}).setExpirationTime(t).sign(secret)`,
no iat, no jti) with the app's own secrets. The filter gets the same secrets in the Wasm VM
environment, under the app's variable names (`access_secret_env` / `refresh_secret_env`), and the
default cookie names, which are the app's. The app now reads the identity headers only.
"""
import pytest

from harness import checks, node, tokens

# The Next.js app's secrets, as its .env had them (any string of 32 bytes or more).
APP_ENV = {
    "JWT_ACCESS_SECRET": "nextjs-app-access-secret-0123456789abcdefgh",
    "JWT_REFRESH_SECRET": "nextjs-app-refresh-secret-0123456789abcdefg",
}
# The login API's own tokens, which the app set as cookies too: the filter passes them on as they are.
API_COOKIES = {"accessToken": "api-access-abc.def", "refreshToken": "api-refresh-ghi.jkl"}


@pytest.fixture(scope="module", params=["inline", "cluster"])
def migrated(request, make_gateway):
    return make_gateway("migration", mode=request.param, env=APP_ENV,
                        access_secret_env="JWT_ACCESS_SECRET", refresh_secret_env="JWT_REFRESH_SECRET")


def _app_cookies(e):
    return dict(checks.echo_cookies(e))


def test_a_session_the_app_started_goes_on_through_the_filter(migrated):
    gw = migrated
    access = node.mint(APP_ENV["JWT_ACCESS_SECRET"], 42, "admin", "15m")
    refresh = node.mint(APP_ENV["JWT_REFRESH_SECRET"], 42, "admin", "7d")
    assert set(tokens.claims(access)) == {"userId", "role", "exp"}  # the app's shape: no iat
    r = gw.get("/dashboard", cookies=gw.session(access, refresh, **API_COOKIES))
    e = checks.echo(r)
    checks.identity(e, gw, "42", "admin")
    assert r.set_cookie_headers == []
    # The app still receives every cookie, unchanged.
    assert _app_cookies(e) == {"accessTokenEtls": access, "refreshTokenEtls": refresh, **API_COOKIES}


@pytest.mark.parametrize("user_id,role,role_header", [(42, "admin", "admin"), ("u-7", "user", "user"), (9, None, None)])
def test_an_expired_app_token_is_renewed_from_the_apps_refresh_token(migrated, user_id, role, role_header):
    gw = migrated
    expired = node.mint(APP_ENV["JWT_ACCESS_SECRET"], user_id, role, tokens.now() - 3600)
    refresh = node.mint(APP_ENV["JWT_REFRESH_SECRET"], user_id, role, "7d")
    r = gw.get("/dashboard", cookies=gw.session(expired, refresh, **API_COOKIES))
    e = checks.echo(r)
    # Two new cookies, signed with the same (the app's) secrets, userId with its JSON type, role kept.
    new_access, new_refresh = checks.rotated(r, gw, user_id=user_id, role=role)
    checks.identity(e, gw, str(user_id), role_header)
    checks.app_cookie_carries(e, gw, new_access, new_refresh, others=API_COOKIES)
    # What the app's own code would still accept, were it rolled back: jose verifies the new tokens.
    assert node.verify(new_access, APP_ENV["JWT_ACCESS_SECRET"])["ok"]
    assert node.verify(new_refresh, APP_ENV["JWT_REFRESH_SECRET"])["ok"]
    # The renewed session goes on without another rotation.
    r = gw.get("/dashboard", cookies=gw.session(new_access, new_refresh, **API_COOKIES))
    checks.identity(checks.echo(r), gw, str(user_id), role_header)
    assert r.set_cookie_headers == []


def test_app_tokens_signed_with_another_secret_are_not_a_session(migrated):
    gw = migrated
    access = node.mint(tokens.WRONG_SECRET, 42, "admin", "15m")
    refresh = node.mint(tokens.WRONG_SECRET, 42, "admin", "7d")
    checks.unauthorized(gw.get("/dashboard", cookies=gw.session(access, refresh)), gw)
