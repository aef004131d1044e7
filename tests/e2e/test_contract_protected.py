"""Tokens, cookies, protected requests (valid, rotated, denied), refresh and logout, checked black-box
with hostile inputs in a real Envoy 1.40 with the release filter, both rotation modes where the
rotation matters: several Accept / Cookie / identity headers, HEAD, the exact `next` of odd paths,
JWT header fields (kid, typ, crit, jwk), duplicated and quoted session cookies, large Cookie
headers."""
from __future__ import annotations

import json
import socket
import urllib.parse

import pytest

from harness import checks, tokens
from harness.envoy import SECRETS

T = 8


def no_store(r):
    assert r.header_all("Cache-Control") == ["no-store"], r


def raw_get(port: int, lines: list[bytes], method: bytes = b"GET", path: bytes = b"/contract") -> tuple[int, list[tuple[str, str]], bytes]:
    head = method + b" " + path + b" HTTP/1.1\r\nHost: x\r\n" + b"".join(l + b"\r\n" for l in lines) + b"Connection: close\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(head)
        data = b""
        for _ in range(10_000):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    top, _, body = data.partition(b"\r\n\r\n")
    rows = top.decode("latin-1").split("\r\n")
    headers = [tuple(p.strip() for p in r.split(":", 1)) for r in rows[1:] if ":" in r]
    return int(rows[0].split()[1]), headers, body


def _all(headers, name):
    return [v for k, v in headers if k.lower() == name]


# --- case 3: deny ---------------------------------------------------------------------------------

def test_second_accept_header_listing_text_html_is_a_page_load(gw):
    """Several Accept headers are one list (RFC 9110 5.3): text/html in the second one still
    makes the deny a 302 to the login page."""
    status, headers, _ = raw_get(gw.port, [b"Accept: application/json", b"Accept: text/html"], path=b"/contract/accept?x=1")
    assert status == 302, (status, headers)
    assert _all(headers, "location") == ["/login?next=%2Fcontract%2Faccept%3Fx%3D1"]
    assert _all(headers, "cache-control") == ["no-store"]
    assert len(_all(headers, "set-cookie")) == 4


def test_second_accept_field_over_http2_is_a_page_load(gw):
    import shutil
    import subprocess
    out = subprocess.run([shutil.which("curl") or "curl", "-s", "-i", "--http2-prior-knowledge", "--max-time", "10",
                          "-H", "accept: application/json", "-H", "accept: text/html",
                          f"http://127.0.0.1:{gw.port}/contract/h2accept"], capture_output=True, text=True, timeout=20)
    head = out.stdout.replace("\r\n", "\n").split("\n\n")[0].split("\n")
    assert head[0].startswith("HTTP/2 302"), out.stdout[:400]
    assert "location: /login?next=%2Fcontract%2Fh2accept" in [l.split(":", 1)[0].lower() + ":" + l.split(":", 1)[1] for l in head if ":" in l]


@pytest.mark.parametrize("accept", ["application/xhtml+xml", "*/*", "text/*", "text/htm", "application/json;q=1, text/plain"])
def test_accept_without_text_html_is_401(gw, accept):
    r = gw.get("/contract/x", accept=accept)
    checks.unauthorized(r, gw)
    no_store(r)


def test_head_without_session_is_denied_like_get(gw):
    r = gw.request("HEAD", "/contract/head", accept="application/json")
    assert r.status == 401 and r.body == b"", r
    checks.cleared(r, gw)
    no_store(r)
    assert not gw.reached_app(r)
    r = gw.request("HEAD", "/contract/head?a=1", accept="text/html")
    assert r.status == 302, r
    assert r.header("Location") == "/login?next=%2Fcontract%2Fhead%3Fa%3D1"
    checks.cleared(r, gw)
    no_store(r)


@pytest.mark.parametrize("path, want", [
    ("/a/b%20c/%C3%BC?q=a+b&r=%26&s=/x", "/login?next=%2Fa%2Fb%2520c%2F%25C3%25BC%3Fq%3Da%2Bb%26r%3D%2526%26s%3D%2Fx"),
    ("/p?next=//evil.example", "/login?next=%2Fp%3Fnext%3D%2F%2Fevil.example"),
    ("/p?a=%0d%0aSet-Cookie:x", "/login?next=%2Fp%3Fa%3D%250d%250aSet-Cookie%3Ax"),
    ("/~user/a-b_c.d", "/login?next=%2F~user%2Fa-b_c.d"),
    ("/q?=&&=", "/login?next=%2Fq%3F%3D%26%26%3D"),
])
def test_next_is_the_exact_encoded_path_and_query(gw, path, want):
    r = gw.get(path, accept="text/html,application/xhtml+xml")
    assert r.status == 302, r
    assert r.header_all("Location") == [want]
    assert urllib.parse.parse_qs(urllib.parse.urlsplit(want).query)["next"] == [path]
    checks.cleared(r, gw)


@pytest.mark.parametrize("method", ["HEAD", "GET", "PUT"])
def test_refresh_and_logout_routes_refuse_other_methods_with_405(gw, method):
    for route in ("/api/auth/refreshtoken", "/api/auth/logout"):
        r = gw.request(method, route + "?x=1", cookies=gw.session(refresh=tokens.refresh(5, "user")))
        assert r.status == 405, (route, r)
        assert r.header("Allow") == "POST"
        no_store(r)
        assert r.set_cookie_headers == []
        assert not gw.reached_app(r)


# --- token header fields ----------------------------------------------------------------------------

@pytest.mark.parametrize("headers", [{"kid": "any-key-id"}, {"typ": "at+jwt"}, {"typ": "JWT", "cty": "x"}],
                         ids=["kid", "typ-at-jwt", "cty"])
def test_access_with_extra_header_fields_is_a_session(gw, headers):
    t = tokens.mint(SECRETS["ETLS_ACCESS"], user_id=31, role="user", headers=headers)
    e = checks.echo(gw.get("/contract/hdr", cookies=gw.session(access=t)))
    checks.identity(e, gw, "31", "user")


def test_access_with_an_embedded_jwk_is_not_trusted(gw):
    """A token that carries its own key (`jwk`, `jku`) and is signed with it is forged."""
    attacker = "attacker-chosen-secret-0123456789abcdef"
    t = tokens.mint(attacker, user_id=1, role="admin",
                    headers={"jwk": {"kty": "oct", "k": "YXR0YWNrZXI"}, "jku": "https://evil.example/jwks"})
    checks.unauthorized(gw.get("/contract/jwk", cookies=gw.session(access=t)), gw)


def test_access_with_crit_header_is_refused(gw):
    """RFC 7515 4.1.11: a `crit` extension the verifier does not understand must make the token
    invalid (jose's jwtVerify refuses it too)."""
    t = tokens.mint(SECRETS["ETLS_ACCESS"], user_id=32, role="user", headers={"crit": ["urn:example:must-understand"], "urn:example:must-understand": 1})
    r = gw.get("/contract/crit", cookies=gw.session(access=t))
    checks.unauthorized(r, gw)


@pytest.mark.parametrize("alg", ["hs256", "HS256 ", "none", "None", "NONE"])
def test_alg_spelling_variants_are_refused(gw, alg):
    t = tokens.mint(SECRETS["ETLS_ACCESS"], user_id=33)
    t = tokens.with_header(t, {"alg": alg, "typ": "JWT"})
    checks.unauthorized(gw.get("/contract/alg", cookies=gw.session(access=t)), gw)


# --- several copies of a header or cookie -------------------------------------------------------

def test_duplicated_identity_headers_are_all_replaced(gw):
    t = tokens.access(34, None)
    e = checks.echo(gw.get("/contract/spoof", cookies=gw.session(access=t),
                           headers=[("x-etls-user-id", "1"), ("X-ETLS-USER-ID", "2"), ("x-etls-role", "admin"), ("x-etls-role", "root")]))
    assert checks.echo_header_all(e, "x-etls-user-id") == ["34"]
    assert checks.echo_header_all(e, "x-etls-role") == []


def test_two_cookie_headers_with_a_valid_access_in_the_second(gw):
    status, headers, body = raw_get(gw.port, [b"Accept: application/json", b"Cookie: theme=dark",
                                              f"Cookie: {gw.access_cookie}={tokens.access(35, 'user')}".encode()])
    assert status == 200, (status, body[:300])
    e = json.loads(body)
    checks.identity(e, gw, "35", "user")
    assert _all(headers, "set-cookie") == []


def test_duplicate_access_cookie_first_stale_second_valid(gw):
    """Browsers may send two cookies of one name (another Path or Domain). The filter (docs/sessions.md,
    Protected requests and rotation) reads the first: a stale first copy with a valid refresh token rotates (never a deny), and the
    app then gets every copy renewed."""
    stale, valid = tokens.expired_access(36, "user"), tokens.access(36, "user")
    cookie = f"{gw.access_cookie}={stale}; {gw.access_cookie}={valid}; {gw.refresh_cookie}={tokens.refresh(36, 'user')}"
    r = gw.get("/contract/dup", headers=[("Cookie", cookie)])
    e = checks.echo(r)
    checks.identity(e, gw, "36", "user")
    new_access, _ = checks.rotated(r, gw, user_id=36, role="user")
    sent = [v for k, v in checks.echo_cookies(e) if k == gw.access_cookie]
    assert sent == [new_access, new_access], sent


def test_quoted_session_cookie_value(gw):
    """RFC 6265 allows DQUOTEs around a cookie value; a quoted valid token is a session."""
    t = tokens.access(37, "user")
    r = gw.get("/contract/quoted", headers=[("Cookie", f'{gw.access_cookie}="{t}"')])
    e = checks.echo(r)
    checks.identity(e, gw, "37", "user")


def test_large_cookie_header_with_valid_session_passes_byte_for_byte(gw):
    others = "; ".join(f"c{i}={'v' * 200}" for i in range(150))  # ~31 KB
    cookie = f"{others}; {gw.access_cookie}={tokens.access(38, 'user')}; tail=\xe9"
    status, headers, body = raw_get(gw.port, [b"Accept: application/json", b"Cookie: " + cookie.encode("latin-1")])
    assert status == 200, (status, body[:200])
    e = json.loads(body)
    checks.identity(e, gw, "38", "user")
    import base64
    raw = base64.b64decode(e["raw_head_b64"])
    assert b"\r\nCookie: " + cookie.encode("latin-1") + b"\r\n" in raw or b"\r\ncookie: " + cookie.encode("latin-1") + b"\r\n" in raw


def test_non_utf8_header_values_with_a_valid_session(gw):
    status, _, body = raw_get(gw.port, [b"Accept: application/json, \xff\xfe", b"X-Odd: \xc3\x28\xa0",
                                        f"Cookie: {gw.access_cookie}={tokens.access(39, 'user')}".encode()])
    assert status == 200, body[:200]
    checks.identity(json.loads(body), gw, "39", "user")


# --- refresh route --------------------------------------------------------------------------------

def test_refresh_route_with_both_tokens_valid_renews_both(gw):
    r = gw.post("/api/auth/refreshtoken", cookies=gw.session(access=tokens.access(40, "r"), refresh=tokens.refresh(40, "r")))
    assert r.status == 200 and r.json() == {"message": "Tokens refreshed"}, r
    no_store(r)
    names = sorted(c.name for c in r.set_cookies)
    assert names == sorted([gw.access_cookie, gw.refresh_cookie])
    checks.new_tokens_ok(gw, r.cookie(gw.access_cookie).value, r.cookie(gw.refresh_cookie).value, user_id=40, role="r")
    assert not gw.reached_app(r)


def test_refresh_route_with_a_body_and_json_type(gw):
    """The refresh route reads only the cookie: a body (of any type) changes nothing."""
    r = gw.post("/api/auth/refreshtoken", cookies=gw.session(refresh=tokens.refresh(41, "r")), body=b"x" * 5000,
                headers={"Content-Type": "text/plain"})
    assert r.status == 200, r
    assert not gw.reached_app(r)


# --- time claims --------------------------------------------------------------------------------

def test_iat_in_the_future_counts_like_nbf(gw):
    """The leeway applies to exp and nbf; an `iat` in the future is treated like an `nbf` (within the leeway
    accepted, beyond it not yet valid), as PyJWT and jwt-simple do. jose tokens carry no iat."""
    now = tokens.now()
    soon = tokens.mint(SECRETS["ETLS_ACCESS"], user_id=50, role="user", iat=now + 2, exp=now + 900)
    checks.identity(checks.echo(gw.get("/contract/iat", cookies=gw.session(access=soon))), gw, "50", "user")
    later = tokens.mint(SECRETS["ETLS_ACCESS"], user_id=50, role="user", iat=now + 120, exp=now + 900)
    checks.unauthorized(gw.get("/contract/iat", cookies=gw.session(access=later)), gw)


@pytest.mark.parametrize("claims", [{"exp": "9999999999"}, {"exp": None, "nbf": 1}, {"exp": 9999999999, "nbf": "0"}],
                         ids=["exp-string", "no-exp", "nbf-string"])
def test_time_claims_of_the_wrong_type_are_refused(gw, claims):
    extra = {k: v for k, v in claims.items() if k != "exp"}
    t = tokens.mint(SECRETS["ETLS_ACCESS"], user_id=51, role="user", exp=claims.get("exp"), **extra)
    checks.unauthorized(gw.get("/contract/exp", cookies=gw.session(access=t)), gw)


def _at_the_start_of_a_second() -> int:
    """Waits (under a second) until a new second has just begun, so a request sent now is checked
    within the same second; returns that second."""
    import time
    for _ in range(200):
        t = time.time()
        if t - int(t) < 0.05:
            return int(t)
        time.sleep(min(0.01, 1.0 - (t - int(t))))
    return int(time.time())


@pytest.mark.parametrize("edge, passes", [("exp", True), ("exp", False), ("nbf", True), ("nbf", False)],
                         ids=["exp-at-leeway", "exp-one-past", "nbf-at-leeway", "nbf-one-past"])
def test_exp_and_nbf_exactly_at_the_leeway_edge(gw, edge, passes):
    """clock_skew_s 5: a token past `exp` by exactly 5 s is valid, by 6 s expired; `nbf` 5 s ahead
    is valid, 6 s ahead not yet."""
    now = _at_the_start_of_a_second()
    off = 5 if passes else 6
    if edge == "exp":
        t = tokens.mint(SECRETS["ETLS_ACCESS"], user_id=52, role="user", iat=now - 900, exp=now - off)
    else:
        t = tokens.mint(SECRETS["ETLS_ACCESS"], user_id=52, role="user", iat=None, exp=now + 900, nbf=now + off)
    r = gw.get("/contract/edge", cookies=gw.session(access=t))
    if passes:
        checks.identity(checks.echo(r), gw, "52", "user")
    else:
        checks.unauthorized(r, gw)


@pytest.mark.parametrize("route", ["/api/auth/login", "/api/auth/refreshtoken", "/api/auth/logout", "/contract/pf"])
def test_cors_preflight_to_any_path_goes_to_the_app_unchecked(gw, route):
    r = gw.request("OPTIONS", route, headers=[("Origin", "https://app.example"), ("Access-Control-Request-Method", "POST"),
                                              ("x-etls-user-id", "forged")], cookies=gw.session(access="garbage"))
    e = checks.echo(r)
    assert e["method"] == "OPTIONS" and e["path"] == route
    assert checks.echo_header_all(e, "x-etls-user-id") == []
    assert r.set_cookie_headers == []


@pytest.mark.parametrize("headers", [[("Origin", "https://app.example")], [("Access-Control-Request-Method", "POST")]],
                         ids=["origin-only", "method-only"])
def test_options_without_both_preflight_headers_is_protected(gw, headers):
    checks.unauthorized(gw.request("OPTIONS", "/contract/pf", headers=headers), gw)


def test_token_whose_user_id_has_edge_spaces_is_no_session(gw):
    """A token (minted elsewhere) whose userId a header cannot carry exactly is refused."""
    checks.unauthorized(gw.get("/contract/space", cookies=gw.session(access=tokens.access(" alice", "user"))), gw)
