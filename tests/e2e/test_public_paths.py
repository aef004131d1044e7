"""Public paths and CORS preflights, in both rotation modes.

Public paths pass without a session; no dot-segment, percent-encoding, slash or backslash trick
makes a protected path public. Paths go out verbatim (the harness client does not normalise),
and Envoy runs with normalize_path and merge_slashes, as shipped."""
import pytest

from harness import checks, tokens


@pytest.mark.parametrize("path", ["/login", "/login/", "/login/reset", "/login/a/b/c", "/login?next=%2Fadmin",
                                  "/login/x?y=1&z=2"])
def test_public_path_passes_without_session(gw, path):
    r = gw.get(path, accept="text/html")
    e = checks.echo(r)
    assert e["method"] == "GET"
    assert e["path"] == path
    assert r.set_cookie_headers == [], r.set_cookie_headers


def test_public_path_post_passes_with_body(gw):
    r = gw.post("/login/form", body=b"a=1&b=2", headers={"Content-Type": "application/x-www-form-urlencoded"})
    e = checks.echo(r)
    assert e["method"] == "POST" and e["body"] == "a=1&b=2"


def test_public_path_with_invalid_cookies_passes_without_clearing(gw):
    r = gw.get("/login", accept="text/html",
               cookies=gw.session(tokens.access(secret=tokens.WRONG_SECRET), tokens.expired_refresh()))
    checks.echo(r)
    assert r.set_cookie_headers == []


# Each of these must never reach the app without a session. Envoy may answer 400 itself;
# otherwise the filter must deny (401 for a non-HTML client). Envoy 1.40 with normalize_path
# resolves dot-segments, %2e and backslashes before the filter (/login/../admin arrives as
# /admin) but keeps %2F/%2f (so /login/..%2fadmin arrives as is and the filter must not call it
# public). /login\admin and /login/%252e%252e/admin are left out on purpose: Envoy turns the
# first into /login/admin, and the second is literally under /login/; both are public.
BYPASSES = [
    "/login/../admin",
    "/login/%2e%2e/admin",
    "/login/%2E%2E/admin",
    "/login/.%2e/admin",
    "/login%2fadmin",
    "/login%2Fadmin",
    "/login%2f..%2fadmin",
    "//login/../admin",
    "/login/..%2fadmin",
    "/login/..%2Fadmin",
    "/./login/../x",
    "/login/./../admin",
    "/login\\..\\admin",
    "/login/..\\admin",
    "/loginx",
    "/login-admin",
    "/login.html/../admin",
    "/Login/../admin",
    "/LOGIN",
    "/login%00/../admin",
    "/login;/../admin",
    "/%6cogin/../admin",
    "/api/auth/login/../../admin",
    "/login/../login/../admin",
    "/admin?/login",
    "/admin#/login",
    "/admin?next=/login",
]


@pytest.mark.parametrize("path", BYPASSES)
def test_bypass_attempt_never_passes_without_session(gw, path):
    r = gw.get(path)
    assert not gw.reached_app(r), f"{path!r} reached the app without a session: {r!r} / {gw.app_saw(r)}"
    assert r.status in (400, 401, 403, 404), f"{path!r}: {r!r}"
    if r.status == 401:
        checks.unauthorized(r, gw)


@pytest.mark.parametrize("path", ["/login/../admin", "/login%2fadmin", "/login/..%2fadmin", "/loginx", "/login\\..\\admin"])
def test_bypass_paths_with_a_valid_session_are_served(gw, path):
    # The control for the test above: the same paths reach the app when a session is valid,
    # so the denial above really comes from the missing session.
    r = gw.get(path, cookies=gw.session(tokens.access(1, "user")))
    if r.status in (400, 404) and not gw.reached_app(r):
        pytest.fail(f"Envoy refused {path!r} even with a session ({r.status}); cannot serve as a control")
    checks.identity(checks.echo(r), gw, "1", "user")


@pytest.mark.parametrize("path", ["/login/../admin", "/login/%2e%2e/admin"])
def test_bypass_page_load_redirects_to_login(gw, path):
    r = gw.get(path, accept="text/html")
    assert not gw.reached_app(r)
    if r.status == 302:
        checks.redirected_to_login(r, gw, "/admin")
    else:
        assert r.status in (400, 404), r


# --- CORS preflight -------------------------------------------------------------------------

def test_cors_preflight_passes_unchecked(gw):
    r = gw.request("OPTIONS", "/api/data", headers={"Origin": "https://app.example.test",
                                                    "Access-Control-Request-Method": "POST",
                                                    "Access-Control-Request-Headers": "content-type"})
    e = checks.echo(r)
    assert e["method"] == "OPTIONS" and e["path"] == "/api/data"
    assert r.set_cookie_headers == []
    assert checks.echo_header_all(e, gw.user_id_header) == []


@pytest.mark.parametrize("headers", [
    {"Origin": "https://app.example.test"},
    {"Access-Control-Request-Method": "POST"},
    {},
])
def test_options_that_is_not_a_preflight_is_protected(gw, headers):
    r = gw.request("OPTIONS", "/api/data", headers=headers)
    checks.unauthorized(r, gw)


def test_identity_headers_sent_by_the_client_never_reach_the_app_on_public_paths(gw):
    # The app trusts these headers; a client must not be able to forge them on any route,
    # including public ones and CORS preflights (the filter removes them there too).
    spoof = [(gw.user_id_header, "1"), (gw.role_header, "admin")]
    r = gw.get("/login/x", headers=spoof, accept="text/html")
    e = checks.echo(r)
    assert checks.echo_header_all(e, gw.user_id_header) == [] and checks.echo_header_all(e, gw.role_header) == []
    r = gw.request("OPTIONS", "/api/data", headers=spoof + [("Origin", "https://app.example.test"),
                                                              ("Access-Control-Request-Method", "POST")])
    e = checks.echo(r)
    assert checks.echo_header_all(e, gw.user_id_header) == [] and checks.echo_header_all(e, gw.role_header) == []
