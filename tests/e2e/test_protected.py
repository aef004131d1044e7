"""Protected routes (a valid access token, or neither token valid) in both rotation modes:
a valid access token lets the request through with trusted identity headers; anything that is
neither a valid access token nor a valid refresh token is denied with 401 JSON or a 302 to the
login page, always with the four clearing cookies, and never reaches the app."""
import pytest

from harness import checks, tokens
from harness.envoy import PREVIOUS_SECRETS


# --- 1. valid access token ------------------------------------------------------------------

def test_valid_access_reaches_app_with_identity_headers(gw):
    tok = tokens.access(user_id=42, role="admin")
    r = gw.get("/dashboard?tab=1", cookies=gw.session(tok, tokens.refresh(42, "admin"), theme="dark"))
    e = checks.echo(r)
    assert e["method"] == "GET"
    assert e["path"] == "/dashboard?tab=1"
    checks.identity(e, gw, "42", "admin")
    # The Cookie header reaches the app untouched and nothing is rotated.
    pairs = checks.echo_cookies(e)
    assert (gw.access_cookie, tok) in pairs and ("theme", "dark") in pairs
    assert r.set_cookie_headers == [], f"no Set-Cookie on a valid session: {r.set_cookie_headers}"


def test_numeric_user_id_is_sent_as_digits(gw):
    r = gw.get("/me", cookies=gw.session(tokens.access(user_id=1234567890123, role="user")))
    checks.identity(checks.echo(r), gw, "1234567890123", "user")


def test_string_user_id_is_sent_verbatim(gw):
    r = gw.get("/me", cookies=gw.session(tokens.access(user_id="u-7f3a", role="editor")))
    checks.identity(checks.echo(r), gw, "u-7f3a", "editor")


def test_access_without_role_sets_no_role_header(gw):
    r = gw.get("/me", cookies=gw.session(tokens.access(user_id=5, role=None)),
               headers={gw.role_header: "admin"})
    checks.identity(checks.echo(r), gw, "5", None)


def test_spoofed_identity_headers_are_replaced(gw):
    r = gw.get("/me", cookies=gw.session(tokens.access(user_id=9, role="user")),
               headers=[(gw.user_id_header, "1"), (gw.role_header, "admin"),
                        (gw.user_id_header.upper(), "2"), (gw.role_header, "superuser")])
    checks.identity(checks.echo(r), gw, "9", "user")


def test_post_with_body_and_valid_access_passes_unchanged(gw):
    body = b'{"amount": 12.5, "note": "caf\xc3\xa9"}'
    r = gw.post("/api/orders", cookies=gw.session(tokens.access(3, "user")), body=body,
                headers={"Content-Type": "application/json"})
    e = checks.echo(r)
    assert e["method"] == "POST" and e["path"] == "/api/orders"
    assert e["body"] == body.decode()
    checks.identity(e, gw, "3", "user")


def test_access_signed_with_previous_secret_verifies(gw):
    tok = tokens.access(user_id=77, role="admin", secret=PREVIOUS_SECRETS["ETLS_ACCESS_PREVIOUS"])
    r = gw.get("/x", cookies=gw.session(tok))
    checks.identity(checks.echo(r), gw, "77", "admin")
    assert r.set_cookie_headers == []


def test_access_token_with_extra_claims_and_typ_passes(gw):
    tok = tokens.access(user_id=8, role="user", headers={"typ": "JWT", "kid": "k1"}, sub="8", iss="someone")
    checks.identity(checks.echo(gw.get("/x", cookies=gw.session(tok))), gw, "8", "user")


def test_protected_routes_of_every_method_need_a_session(gw):
    for method in ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"):
        r = gw.request(method, "/api/items/1", body=b"{}" if method in ("POST", "PUT", "PATCH") else None)
        assert r.status == 401, f"{method}: {r!r}"
        assert not gw.reached_app(r), method
        if method != "HEAD":
            assert r.json() == {"error": "Unauthorized"}
        checks.cleared(r, gw)


# --- 3. deny --------------------------------------------------------------------------------

def _bad_access_tokens():
    t = tokens.now()
    good = tokens.access(42, "admin")
    h, p, s = good.split(".")
    return {
        "forged": tokens.access(42, "admin", secret=tokens.WRONG_SECRET),
        "alg_none": tokens.alg_none(),
        "alg_none_keeping_signature": tokens.with_header(good, {"alg": "none", "typ": "JWT"}),
        "alg_NONE_upper": tokens.with_header(good, {"alg": "None"}),
        "hs512_right_secret": tokens.access(42, "admin", alg="HS512"),
        "hs384_right_secret": tokens.access(42, "admin", alg="HS384"),
        "tampered_payload": f"{h}.{tokens.access(1, 'admin').split('.')[1]}.{s}",
        "signature_stripped": f"{h}.{p}.",
        "two_parts": f"{h}.{p}",
        "garbage": "not-a-jwt",
        "empty": "",
        "expired": tokens.expired_access(42, "admin"),
        "nbf_in_future": tokens.access(42, "admin", nbf=t + 600),
        "refresh_token_as_access": tokens.refresh(42, "admin"),
        "previous_refresh_secret_as_access": tokens.access(42, "admin", secret=PREVIOUS_SECRETS["ETLS_REFRESH_PREVIOUS"]),
        "exp_as_string": tokens.access(42, "admin", exp=str(t + 600)),
    }


BAD_ACCESS = sorted(_bad_access_tokens())


@pytest.mark.parametrize("kind", BAD_ACCESS)
def test_bad_access_without_refresh_is_denied_401(gw, kind):
    tok = _bad_access_tokens()[kind]
    r = gw.get("/api/data", cookies=gw.session(tok))
    checks.unauthorized(r, gw)


@pytest.mark.parametrize("kind", ["forged", "alg_none", "expired", "garbage"])
def test_bad_access_without_refresh_page_load_redirects(gw, kind):
    tok = _bad_access_tokens()[kind]
    r = gw.get("/settings/profile?tab=security&x=1", cookies=gw.session(tok),
               accept="text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8")
    checks.redirected_to_login(r, gw, "/settings/profile?tab=security&x=1")


def _bad_refresh_tokens():
    good = tokens.refresh(42, "admin")
    h, p, s = good.split(".")
    return {
        "forged": tokens.refresh(42, "admin", secret=tokens.WRONG_SECRET),
        "alg_none": tokens.alg_none({"userId": 42, "role": "admin", "iat": tokens.now(), "exp": tokens.now() + 3600, "jti": "x"}),
        "expired": tokens.expired_refresh(42, "admin"),
        "access_token_as_refresh": tokens.access(42, "admin", ttl=604800),
        "hs256_signed_with_access_previous": tokens.refresh(42, "admin", secret=PREVIOUS_SECRETS["ETLS_ACCESS_PREVIOUS"]),
        "hs512_right_secret": tokens.refresh(42, "admin", alg="HS512"),
        "garbage": "a.b.c",
        "signature_stripped": f"{h}.{p}.",
    }


BAD_REFRESH = sorted(_bad_refresh_tokens())


@pytest.mark.parametrize("kind", BAD_REFRESH)
@pytest.mark.parametrize("access", ["missing", "expired", "forged"])
def test_no_valid_access_and_bad_refresh_is_denied(gw, kind, access):
    acc = {"missing": None, "expired": tokens.expired_access(42, "admin"),
           "forged": tokens.access(42, "admin", secret=tokens.WRONG_SECRET)}[access]
    r = gw.get("/api/data", cookies=gw.session(acc, _bad_refresh_tokens()[kind]))
    checks.unauthorized(r, gw)


def test_no_cookie_at_all_is_denied_401(gw):
    checks.unauthorized(gw.get("/api/data"), gw)


def test_only_upstream_login_cookies_are_not_a_session(gw):
    r = gw.get("/api/data", cookies={gw.upstream_access_cookie: "upstream-access-token",
                                      gw.upstream_refresh_cookie: "upstream-refresh-token"})
    checks.unauthorized(r, gw)


def test_valid_tokens_under_other_cookie_names_are_not_a_session(gw):
    r = gw.get("/api/data", cookies={"accessTokenEtlsX": tokens.access(), "xrefreshTokenEtls": tokens.refresh(),
                                      gw.upstream_access_cookie: tokens.access()})
    checks.unauthorized(r, gw)


def test_page_load_without_session_redirects_with_encoded_next(gw):
    original = "/reports/2024/q1?sort=desc&filter=a%20b"
    r = gw.get(original, accept="text/html")
    checks.redirected_to_login(r, gw, original)


def test_page_load_root_redirects_with_next_slash(gw):
    r = gw.get("/", accept="text/html")
    checks.redirected_to_login(r, gw, "/")


@pytest.mark.parametrize("accept", ["application/json", "*/*", "image/png", None, "text/plain"])
def test_non_html_accept_gets_401_json(gw, accept):
    r = gw.get("/page", accept=accept)
    checks.unauthorized(r, gw)
    assert r.header("Location") is None


def test_post_without_session_is_denied_and_body_not_forwarded(gw):
    r = gw.post("/api/orders", body={"x": 1})
    checks.unauthorized(r, gw)


# --- clock skew (default leeway 5 s) --------------------------------------------------------

def test_access_expired_within_leeway_passes(gw):
    t = tokens.now()
    tok = tokens.access(11, "user", iat=t - 900, exp=t - 2)
    r = gw.get("/x", cookies=gw.session(tok))
    checks.identity(checks.echo(r), gw, "11", "user")
    assert r.set_cookie_headers == []


def test_access_expired_past_leeway_is_denied(gw):
    t = tokens.now()
    tok = tokens.access(11, "user", iat=t - 900, exp=t - 9)
    checks.unauthorized(gw.get("/x", cookies=gw.session(tok)), gw)


def test_access_nbf_within_leeway_passes(gw):
    t = tokens.now()
    tok = tokens.access(12, "user", nbf=t + 2)
    checks.identity(checks.echo(gw.get("/x", cookies=gw.session(tok))), gw, "12", "user")


def test_access_nbf_past_leeway_is_denied(gw):
    t = tokens.now()
    tok = tokens.access(12, "user", nbf=t + 30)
    checks.unauthorized(gw.get("/x", cookies=gw.session(tok)), gw)


def test_refresh_expired_within_leeway_still_rotates(gw):
    t = tokens.now()
    ref = tokens.refresh(13, "user", iat=t - 604800, exp=t - 2)
    r = gw.get("/x", cookies=gw.session(tokens.expired_access(13, "user"), ref))
    checks.identity(checks.echo(r), gw, "13", "user")
    checks.rotated(r, gw, user_id=13, role="user")


def test_refresh_expired_past_leeway_is_denied(gw):
    t = tokens.now()
    ref = tokens.refresh(13, "user", iat=t - 604800, exp=t - 9)
    checks.unauthorized(gw.get("/x", cookies=gw.session(tokens.expired_access(13, "user"), ref)), gw)


@pytest.mark.parametrize("accept", ["text/html", "application/json, text/html;q=0.5", "application/xhtml+xml,text/html",
                                    "TEXT/HTML", "text/html; charset=utf-8"])
def test_accept_listing_text_html_gets_redirect(gw, accept):
    r = gw.get("/p?a=1", accept=accept)
    checks.redirected_to_login(r, gw, "/p?a=1")


@pytest.mark.parametrize("refresh_state", ["garbage", "expired", "forged"])
def test_valid_access_with_bad_refresh_passes_without_touching_cookies(gw, refresh_state):
    ref = {"garbage": "zzz", "expired": tokens.expired_refresh(1, "user"),
           "forged": tokens.refresh(1, "user", secret=tokens.WRONG_SECRET)}[refresh_state]
    r = gw.get("/x", cookies=gw.session(tokens.access(1, "user"), ref))
    checks.identity(checks.echo(r), gw, "1", "user")
    assert r.set_cookie_headers == []
