"""Every configurable name, path, attribute and lifetime, in both rotation modes: a gateway whose
plugin JSON changes cookie names, identity headers, routes, login page, public paths, cookie
Domain/Secure/SameSite, TTLs, clock skew, secret variable names and the CORS bypass."""
import pytest

from harness import checks, tokens
from harness.envoy import SECRETS
from harness.upstreams import login_ok

ACCESS_KEY = "custom-access-key-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
REFRESH_KEY = "custom-refresh-key-RRRRRRRRRRRRRRRRRRRRRRRRRRRRRRRRRRRR"

CUSTOM = dict(
    access_cookie="sid_a",
    refresh_cookie="sid_r",
    upstream_access_cookie="up_a",
    upstream_refresh_cookie="up_r",
    user_id_header="x-user",
    role_header="x-user-role",
    login_path="/auth/signin",
    refresh_path="/auth/renew",
    logout_path="/auth/signout",
    login_page="/signin",
    public_paths=["/signin", "/public"],
    cookie_domain="example.test",
    cookie_secure=False,
    cookie_same_site="Lax",
    access_ttl_s=120,
    refresh_ttl_s=3600,
    clock_skew_s=30,
    access_secret_env="MY_ACCESS_KEY",
    refresh_secret_env="MY_REFRESH_KEY",
    bypass_cors_preflight=False,
    login_upstream_path="/v2/session",
)
# The default variable names are set too, to other values: the filter must use the configured ones.
ENV = {"MY_ACCESS_KEY": ACCESS_KEY, "MY_REFRESH_KEY": REFRESH_KEY, **SECRETS}


@pytest.fixture(scope="session", params=["inline", "cluster"])
def cgw(request, make_gateway):
    return make_gateway("custom", mode=request.param, env=ENV, **CUSTOM)


def acc(user_id=42, role="admin", secret=ACCESS_KEY, **kw):
    return tokens.access(user_id, role, secret=secret, ttl=120, **kw)


def ref(user_id=42, role="admin", **kw):
    return tokens.refresh(user_id, role, secret=REFRESH_KEY, ttl=3600, **kw)


def expired_acc(user_id=42, role="admin"):
    t = tokens.now()
    return acc(user_id, role, iat=t - 1000, exp=t - 500)


def test_custom_cookie_and_headers_on_valid_access(cgw):
    r = cgw.get("/x", cookies={"sid_a": acc(5, "user")})
    e = checks.echo(r)
    checks.identity(e, cgw, "5", "user")
    assert checks.echo_header_all(e, "x-etls-user-id") == []


def test_custom_secret_env_names_are_used(cgw):
    # Signed with the value of ETLS_ACCESS, which this configuration does not name.
    tok = tokens.access(5, "user", secret=SECRETS["ETLS_ACCESS"])
    checks.unauthorized(cgw.get("/x", cookies={"sid_a": tok}), cgw)


def test_default_cookie_names_are_not_read(cgw):
    r = cgw.get("/x", cookies={"accessTokenEtls": acc(), "refreshTokenEtls": ref()})
    checks.unauthorized(r, cgw)


def test_custom_rotation_cookies_and_ttls(cgw):
    r = cgw.get("/x", cookies={"sid_a": expired_acc(6, "user"), "sid_r": ref(6, "user")})
    e = checks.echo(r)
    a, rf = checks.rotated(r, cgw, user_id=6, role="user")  # Max-Age 120/3600, Domain, no Secure, Lax
    c = r.cookie("sid_a")
    assert c.get("domain").lstrip(".") == "example.test" and not c.has("secure") and c.get("samesite") == "Lax"
    checks.app_cookie_carries(e, cgw, a, rf)
    checks.identity(e, cgw, "6", "user")


def test_custom_deny_json_clears_custom_cookies(cgw):
    r = cgw.get("/x", cookies={"sid_a": acc(secret=tokens.WRONG_SECRET)})
    checks.unauthorized(r, cgw)
    names = sorted(c.name for c in r.set_cookies)
    assert names == ["sid_a", "sid_r", "up_a", "up_r"]
    for c in r.set_cookies:
        assert c.get("domain").lstrip(".") == "example.test" and not c.has("secure") and c.get("samesite") == "Lax"


def test_custom_deny_page_load_goes_to_custom_login_page(cgw):
    r = cgw.get("/reports?y=2024", accept="text/html")
    checks.redirected_to_login(r, cgw, "/reports?y=2024")
    assert r.header("Location").startswith("/signin?next=")


def test_custom_public_paths(cgw):
    for path in ("/signin", "/signin/help", "/public", "/public/logo.svg?v=2"):
        r = cgw.get(path, accept="text/html")
        assert checks.echo(r)["path"] == path
    for path in ("/login", "/login/x", "/publicity", "/signinx"):
        r = cgw.get(path)
        checks.unauthorized(r, cgw)


def test_custom_refresh_path(cgw):
    r = cgw.post("/auth/renew", cookies={"sid_r": ref(7, "admin")})
    assert r.status == 200, r
    assert r.json() == {"message": "Tokens refreshed"}
    checks.rotated(r, cgw, user_id=7, role="admin")
    r = cgw.post("/auth/renew")
    assert r.status == 401 and r.json() == {"error": "No refresh token provided"}


def test_default_refresh_path_is_protected_when_renamed(cgw):
    r = cgw.post("/api/auth/refreshtoken", cookies={"refreshTokenEtls": ref()})
    checks.unauthorized(r, cgw)


def test_custom_logout_path(cgw):
    r = cgw.post("/auth/signout")
    assert r.status == 200, r
    assert r.json() == {"message": "Logged out"}
    checks.cleared(r, cgw)
    checks.unauthorized(cgw.post("/api/auth/logout"), cgw)


def test_custom_clock_skew(cgw):
    t = tokens.now()
    inside = acc(8, "user", iat=t - 200, exp=t - 20)
    checks.identity(checks.echo(cgw.get("/x", cookies={"sid_a": inside})), cgw, "8", "user")
    past = acc(8, "user", iat=t - 200, exp=t - 45)
    checks.unauthorized(cgw.get("/x", cookies={"sid_a": past}), cgw)


def test_cors_preflight_checked_when_bypass_disabled(cgw):
    r = cgw.request("OPTIONS", "/api/data", headers={"Origin": "https://app.example.test",
                                                     "Access-Control-Request-Method": "POST"})
    checks.unauthorized(r, cgw)


def test_custom_login_path_upstream_path_and_cookie_names(cgw, login_api):
    login_api.always(login_ok({"id": 9, "role": "user"}, access="up-access-1", refresh="up-refresh-1"))
    r = cgw.post("/auth/signin", body={"email": "a@example.test", "password": "pw"})
    assert r.status == 200, r
    assert r.json() == {"message": "Login successful", "userData": {"id": 9, "role": "user"}}
    got = {c.name: c for c in r.set_cookies}
    assert sorted(got) == ["sid_a", "sid_r", "up_a", "up_r"], r.set_cookie_headers
    assert got["up_a"].value == "up-access-1" and got["up_r"].value == "up-refresh-1"
    checks.cookie_attrs_ok(got["sid_a"], cgw, 120)
    for n in ("sid_r", "up_a", "up_r"):
        checks.cookie_attrs_ok(got[n], cgw, 3600)
    checks.new_tokens_ok(cgw, got["sid_a"].value, got["sid_r"].value, user_id=9, role="user")
    calls = login_api.requests()
    assert [(s.method, s.path) for s in calls] == [("POST", "/v2/session")]
    assert calls[0].json() == {"email": "a@example.test", "password": "pw"}
    assert not cgw.reached_app(r), "the login request reached the app"
    # The default login path is an ordinary protected path here.
    checks.unauthorized(cgw.post("/api/auth/login", body={"email": "a@example.test", "password": "pw"}), cgw)


def test_same_site_none_with_secure(make_gateway):
    g = make_gateway("samesite-none", mode="inline", cookie_same_site="None", cookie_secure=True)
    r = g.get("/x", cookies=g.session(None, tokens.refresh(3, "user")))
    checks.rotated(r, g, user_id=3, role="user")
    for c in r.set_cookies:
        assert c.get("samesite") == "None" and c.get("secure") is True, c.raw
    r = g.post(g.logout_path)
    checks.cleared(r, g)
    assert all(c.get("samesite") == "None" and c.get("secure") is True for c in r.set_cookies)
