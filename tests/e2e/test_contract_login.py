"""The login route (docs/sessions.md, Login; docs/configuration.md), checked black-box with hostile inputs: the real filter in a real Envoy 1.40,
the stub login API behind it. What the other login suites do not cover: method spelling and HEAD,
duplicated Content-Type headers, HTTP/2, odd JSON (BOM, duplicate keys) in the client's body and in
the login API's answer, `userData` byte for byte, the JSON types of `userData.id` and `role`, and
extra headers in the login API's answer."""
from __future__ import annotations

import base64
import json
import shutil
import socket
import subprocess

import pytest

from harness import checks, paths, tokens
from harness.upstreams import Reply, login_ok

LOGIN = "/api/auth/login"
CREDS = {"email": "contract@example.test", "password": "contract-password-1"}
T = 8


def no_store(r):
    assert r.header_all("Cache-Control") == ["no-store"], r


def raw_exchange(port: int, head: bytes, body: bytes = b"", timeout: float = 10.0) -> tuple[int, list[tuple[str, str]], bytes]:
    """Send bytes as they are and read one HTTP/1.1 answer (Content-Length framed)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(head + body)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        top, _, rest = data.partition(b"\r\n\r\n")
        lines = top.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = [tuple(p.strip() for p in l.split(":", 1)) for l in lines[1:] if ":" in l]
        length = next((int(v) for k, v in headers if k.lower() == "content-length"), 0)
        if not head.startswith(b"HEAD "):
            while len(rest) < length:
                chunk = s.recv(65536)
                if not chunk:
                    break
                rest += chunk
        return status, headers, rest


def _hdr(headers, name):
    return [v for k, v in headers if k.lower() == name]


def _login_with_api_answer(gw, login_api, reply: Reply):
    login_api.always(reply)
    return gw.post(LOGIN, body=CREDS, timeout=T)


# --- method spelling and HEAD ---------------------------------------------------------------------

@pytest.mark.parametrize("method", ["post", "Post", "HEAD"])
def test_login_route_method_is_exactly_post(gw_inline, login_api, method):
    """Methods are case-sensitive (RFC 9110 9.1): `post` is not POST. 405 with Allow: POST, no-store;
    nothing reaches the app or the login API."""
    r = gw_inline.request(method, LOGIN + "?x=1", body=json.dumps(CREDS), headers={"Content-Type": "application/json"}, timeout=T)
    if method != "HEAD" and r.status == 400 and r.header("server") == "envoy" and r.header("cache-control") is None:
        # Envoy 1.40's HTTP/1 codec refuses a lowercase method itself, before any filter.
        assert r.body == b"Bad Request", r
    else:
        assert r.status == 405, r
        assert r.header("Allow") == "POST"
        no_store(r)
    assert r.set_cookie_headers == []
    assert not gw_inline.reached_app(r)
    assert login_api.requests() == []


@pytest.mark.parametrize("method", ["post", "HEAD", "PUT"])
def test_login_route_method_over_http2(gw_inline, login_api, method):
    """HTTP/2 passes `:method` as sent: `post` is refused with 405 like any non-POST method.
    (Sent without a body: a 405 answered while a body is still coming is followed by Envoy's
    RST_STREAM, which curl 7.88 reports as error 92 instead of printing the answer.)"""
    status, hdrs, _ = curl_h2(gw_inline, LOGIN, ["-X", method, "-H", "content-type: application/json", "-H", "x-etls-probe: h2-m-" + method],
                              head=method == "HEAD")
    assert status == 405, (status, hdrs)
    assert _hdr(hdrs, "allow") == ["POST"]
    assert _hdr(hdrs, "cache-control") == ["no-store"]
    assert gw_inline.app.with_header("x-etls-probe", "h2-m-" + method) == []
    assert login_api.requests() == []


def test_two_content_type_headers_first_text_plain_is_415(gw_inline, login_api):
    """A second `Content-Type: application/json` does not launder a text/plain login (login CSRF)."""
    body = json.dumps(CREDS).encode()
    head = (f"POST {LOGIN} HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nx-etls-probe: dup-ct\r\n\r\n").encode()
    status, headers, payload = raw_exchange(gw_inline.port, head, body)
    assert status == 415, (status, headers, payload)
    assert json.loads(payload) == {"error": "Content-Type must be application/json"}
    assert _hdr(headers, "cache-control") == ["no-store"]
    assert _hdr(headers, "set-cookie") == []
    assert login_api.requests() == []
    assert gw_inline.app.with_header("x-etls-probe", "dup-ct") == []


def curl_h2(gw, path, args, head=False):
    curl = shutil.which("curl")
    if not curl:
        raise paths.HarnessError("curl not found")
    cmd = [curl, "-s", "-i", "--http2-prior-knowledge", "--max-time", "10", *args, f"http://127.0.0.1:{gw.port}{path}"]
    if head:
        cmd = [c for c in cmd if c not in ("-X", "HEAD", "--data-binary", json.dumps(CREDS))]
        cmd.insert(1, "-I")
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
    top, _, body = out.stdout.replace("\r\n", "\n").partition("\n\n")
    lines = top.split("\n")
    assert lines[0].startswith("HTTP/2 "), out.stdout[:500] + out.stderr
    hdrs = [tuple(x.strip() for x in l.split(":", 1)) for l in lines[1:] if ":" in l]
    return int(lines[0].split()[1]), hdrs, body


def test_login_over_http2(gw_inline, login_api):
    """HTTP/2 (h2c): the same 200, four Set-Cookie fields, no-store; the app sees nothing."""
    status, hdrs, body = curl_h2(gw_inline, LOGIN, ["-H", "content-type: application/json", "-H", "x-etls-probe: h2-login",
                                                    "--data-binary", json.dumps(CREDS)])
    assert status == 200, (status, hdrs, body)
    assert len(_hdr(hdrs, "set-cookie")) == 4
    assert _hdr(hdrs, "cache-control") == ["no-store"]
    assert json.loads(body)["message"] == "Login successful"
    assert gw_inline.app.with_header("x-etls-probe", "h2-login") == []
    assert [s.json() for s in login_api.requests()] == [CREDS]


def test_login_with_expect_100_continue(gw_inline, login_api):
    """curl sends `Expect: 100-continue` for bodies over 1 KiB: the login still succeeds."""
    body = json.dumps({"email": "e@example.test", "password": "p" * 2000}).encode()
    head = (f"POST {LOGIN} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nExpect: 100-continue\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", gw_inline.port), timeout=10) as s:
        s.sendall(head)
        first = s.recv(4096)
        # Envoy answers 100 Continue itself; then the body goes.
        assert first.startswith(b"HTTP/1.1 100"), first
        s.sendall(body)
        data = b""
        while b"Login successful" not in data:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    assert data.startswith(b"HTTP/1.1 200"), data[:300]
    assert data.lower().count(b"\r\nset-cookie:") == 4


# --- the client's body ------------------------------------------------------------------------------

@pytest.mark.parametrize("body", [
    b"\xef\xbb\xbf" + json.dumps(CREDS).encode(),          # UTF-8 BOM
    json.dumps(CREDS).encode() + b"\x00",                   # trailing NUL
    b'{"email":"a@b.c","password":"p"} {"x":1}',            # two documents
    b'{"email":"a@b.c","password":"\xff"}',                 # not UTF-8
    b'{"email":"a@b.c","password":"p"',                     # cut
], ids=["bom", "trailing-nul", "two-documents", "not-utf8", "truncated"])
def test_login_body_that_is_not_one_json_object_is_400(gw_inline, login_api, body):
    r = gw_inline.post(LOGIN, body=body, headers={"Content-Type": "application/json"}, timeout=T)
    assert r.status == 400, r
    assert "error" in r.json()
    no_store(r)
    assert login_api.requests() == []
    assert not gw_inline.reached_app(r)


def test_login_body_with_duplicate_keys_sends_one_consistent_pair(gw_inline, login_api):
    """Duplicate keys (docs/sessions.md, Login details: the last counts): the login API receives exactly one email and one password,
    the last of each, re-serialised (never the client's bytes)."""
    body = b'{"email":"first@example.test","password":"p1","email":"second@example.test","password":"p2"}'
    r = gw_inline.post(LOGIN, body=body, headers={"Content-Type": "application/json"}, timeout=T)
    assert r.status == 200, r
    sent = login_api.requests()
    assert len(sent) == 1
    assert sent[0].body == b'{"email":"second@example.test","password":"p2"}'


# --- the login API's answer -------------------------------------------------------------------------

def test_userdata_is_passed_on_byte_for_byte(gw_inline, login_api):
    """"userData": <as received>: spacing, key order, escapes and unknown fields kept exactly."""
    user_data = '{ "zeta":1,"id" : 17 ,"name":"\\u00fc\\ud83d\\ude00 \\"q\\"","nested":{"b":[1,2.50,true,null]},"a":"x"}'
    raw = '{"accessToken":"ua","refreshToken":"ur","userData":' + user_data + '}'
    r = _login_with_api_answer(gw_inline, login_api, Reply(200, raw.encode(), headers=[("Content-Type", "application/json")]))
    assert r.status == 200, r
    assert r.body == b'{"message":"Login successful","userData":' + user_data.encode() + b'}'
    no_store(r)


def test_login_api_extra_headers_and_cookies_do_not_reach_the_client(gw_inline, login_api):
    """Exactly the four Set-Cookie of the filter: the login API's own Set-Cookie and other headers stay behind."""
    reply = login_ok({"id": 5, "role": "user"})
    reply.headers = [("Set-Cookie", "api_session=leak; Path=/"), ("Set-Cookie", "accessTokenEtls=forged; Path=/"),
                     ("X-Api-Internal", "secret-ish"), ("Content-Type", "application/json")]
    r = _login_with_api_answer(gw_inline, login_api, reply)
    assert r.status == 200, r
    assert sorted(c.name for c in r.set_cookies) == sorted(gw_inline.cookie_names)
    assert r.cookie("accessTokenEtls").value != "forged"
    assert tokens.verifies(r.cookie("accessTokenEtls").value, gw_inline.access_secret)
    assert r.header("X-Api-Internal") is None


def test_login_api_2xx_json_with_another_content_type_is_read(gw_inline, login_api):
    """The login API's Content-Type is not checked (docs/sessions.md, Login API answers): a JSON body is a JSON body."""
    body = json.dumps({"accessToken": "ua", "refreshToken": "ur", "userData": {"id": 3}}).encode()
    r = _login_with_api_answer(gw_inline, login_api, Reply(200, body, headers=[("Content-Type", "text/html")]))
    assert r.status == 200, r
    assert len(r.set_cookie_headers) == 4


@pytest.mark.parametrize("raw", [
    b"\xef\xbb\xbf" + json.dumps({"accessToken": "ua", "refreshToken": "ur", "userData": {"id": 3}}).encode(),
    b'{"accessToken":"ua","accessToken":"ub","refreshToken":"ur","userData":{"id":3}}',
    b'{"accessToken":"ua","refreshToken":"ur","userData":{"id":3,"id":4}}',
    b'{"accessToken":"ua","refreshToken":"ur","userData":{"id":3}} trailing',
    b'{"accessToken":"ua","refreshToken":"ur","userData":[{"id":3}]}',
    b'{"accessToken":"ua","refreshToken":"ur","userData":{"id":null}}',
    b'{"accessToken":"ua","refreshToken":"ur","userData":{"id":{"n":1}}}',
    b'{"accessToken":"ua","refreshToken":"ur","userData":{"id":true}}',
    b'{"accessToken":"ua","refreshToken":"ur","userData":{"id":3,"role":{"r":1}}}',
    b'{"accessToken":"ua","refreshToken":"ur","userData":{"id":3,"role":["admin"]}}',
    b'{"accessToken":"ua","refreshToken":"ur","userData":{"id":"a\\nb"}}',
    b'{"accessToken":"","refreshToken":"ur","userData":{"id":3}}',
    b'{"accessToken":5,"refreshToken":"ur","userData":{"id":3}}',
], ids=["bom", "dup-token", "dup-id", "trailing", "userdata-array", "id-null", "id-object", "id-bool",
        "role-object", "role-array", "id-newline", "empty-token", "token-number"])
def test_login_api_2xx_not_as_specified_is_502_without_cookies(gw_inline, login_api, raw):
    r = _login_with_api_answer(gw_inline, login_api, Reply(200, raw, headers=[("Content-Type", "application/json")]))
    assert r.status == 502, r
    assert r.set_cookie_headers == []
    no_store(r)


@pytest.mark.parametrize("user_id", [-7, 0, 1.5, 9007199254740993, 18446744073709551615, -9223372036854775808, "ü-ß-😀"],
                         ids=["negative", "zero", "float", "2^53+1", "u64-max", "i64-min", "unicode"])
def test_userdata_id_keeps_its_json_type_and_value(gw_inline, login_api, user_id):
    """userId is userData.id with its JSON type AND value kept; the app gets it as text."""
    raw = b'{"accessToken":"ua","refreshToken":"ur","userData":{"id":' + json.dumps(user_id, ensure_ascii=False).encode() + b',"role":"r"}}'
    r = _login_with_api_answer(gw_inline, login_api, Reply(200, raw, headers=[("Content-Type", "application/json")]))
    assert r.status == 200, r
    access = r.cookie("accessTokenEtls").value
    refresh = r.cookie("refreshTokenEtls").value
    for t in (access, refresh):
        got = json.loads(base64.urlsafe_b64decode(t.split(".")[1] + "==").decode())["userId"]
        assert got == user_id and type(got) is type(user_id), (got, user_id)
    e = checks.echo(gw_inline.get("/contract/id", cookies={"accessTokenEtls": access}))
    want = user_id if isinstance(user_id, str) else json.dumps(user_id)
    seen = [v for k, v in e["headers"] if k.lower() == "x-etls-user-id"]
    assert [v.encode("latin-1").decode("utf-8") for v in seen] == [want]


@pytest.mark.parametrize("digits", [b"123456789012345678901234567890", b"18446744073709551616", b"-9223372036854775809"])
def test_userdata_id_beyond_64_bits_fails_the_login(gw_inline, login_api, digits):
    """A numeric id past 64 bits would silently become another number (1.2345678901234568e29) in
    the token and the header: it enters at login, so the login fails there with 502, no cookie."""
    raw = b'{"accessToken":"ua","refreshToken":"ur","userData":{"id":' + digits + b'}}'
    r = _login_with_api_answer(gw_inline, login_api, Reply(200, raw, headers=[("Content-Type", "application/json")]))
    assert r.status == 502, r
    assert r.json() == {"error": "Login service unavailable"}
    assert r.set_cookie_headers == []
    no_store(r)


@pytest.mark.parametrize("role", [5, True, False, "", "ü", None], ids=["number", "true", "false", "empty", "unicode", "null"])
def test_userdata_role_types(gw_inline, login_api, role):
    """role is carried with its JSON type; a null role is no role (no header)."""
    raw = json.dumps({"accessToken": "ua", "refreshToken": "ur", "userData": {"id": 9, "role": role}}).encode()
    r = _login_with_api_answer(gw_inline, login_api, Reply(200, raw, headers=[("Content-Type", "application/json")]))
    assert r.status == 200, r
    c = tokens.verify(r.cookie("accessTokenEtls").value, gw_inline.access_secret)
    if role is None:
        assert "role" not in c
    else:
        assert c["role"] == role and type(c["role"]) is type(role)
    e = checks.echo(gw_inline.get("/contract/role", cookies={"accessTokenEtls": r.cookie("accessTokenEtls").value}))
    seen = [v.encode("latin-1").decode("utf-8") for k, v in e["headers"] if k.lower() == "x-etls-role"]
    want = [] if role is None else [role if isinstance(role, str) else json.dumps(role)]
    assert seen == want


@pytest.mark.parametrize("retry_after", ["120", "Wed, 21 Oct 2026 07:28:00 GMT"])
def test_429_passes_retry_after_verbatim(gw_inline, login_api, retry_after):
    r = _login_with_api_answer(gw_inline, login_api, Reply(429, {"error": "slow down"}, headers=[("Retry-After", retry_after)]))
    assert r.status == 429, r
    assert r.header_all("Retry-After") == [retry_after]
    assert r.set_cookie_headers == []
    no_store(r)


@pytest.mark.parametrize("status", [204, 206])
def test_2xx_without_a_login_body_is_502(gw_inline, login_api, status):
    r = _login_with_api_answer(gw_inline, login_api, Reply(status, b""))
    assert r.status == 502, r
    assert r.set_cookie_headers == []
    no_store(r)


@pytest.mark.parametrize("status", [301, 302, 304])
def test_3xx_is_502(gw_inline, login_api, status):
    r = _login_with_api_answer(gw_inline, login_api, Reply(status, b"", headers=[("Location", "/elsewhere")]))
    assert r.status == 502, r
    assert r.header("Location") is None
    assert r.set_cookie_headers == []


def test_default_login_timeout_is_5000_ms(gw_inline, login_api):
    """login_timeout_ms defaults to 5000: a login API that answers after 5.6 s gives 504 at about 5 s."""
    import time
    login_api.always(Reply(200, {"accessToken": "ua", "refreshToken": "ur", "userData": {"id": 1}}, delay=5.6))
    t0 = time.monotonic()
    r = gw_inline.post(LOGIN, body=CREDS, timeout=15)
    elapsed = time.monotonic() - t0
    assert r.status == 504 and r.json() == {"error": "Login service timed out"}, r
    assert 4.9 <= elapsed < 5.5, elapsed
    assert r.set_cookie_headers == []
    no_store(r)


def test_default_refresh_timeout_is_2000_ms(make_gateway, refresh_api):
    """refresh_timeout_ms defaults to 2000: a refresh cluster that answers after 2.6 s denies at about 2 s."""
    import time
    g = make_gateway("contract-refresh-default", mode="cluster", refresh_to="stub")
    refresh_api.always(Reply(200, {"message": "Tokens refreshed"}, delay=2.6))
    t0 = time.monotonic()
    r = g.get("/contract/slow-refresh", cookies=g.session(tokens.expired_access(3, "u"), tokens.refresh(3, "u")))
    elapsed = time.monotonic() - t0
    checks.unauthorized(r, g)
    assert 1.9 <= elapsed < 2.5, elapsed


@pytest.mark.parametrize("user_id", [" alice", "alice ", " "])
def test_userdata_id_a_header_cannot_carry_fails_the_login(gw_inline, login_api, user_id):
    """The app's HTTP parser trims a header value: " alice" would reach it as "alice", another
    user. Such an id cannot be the identity: 502, no cookie."""
    r = _login_with_api_answer(gw_inline, login_api, Reply(200, {"accessToken": "ua", "refreshToken": "ur", "userData": {"id": user_id}}))
    assert r.status == 502, r
    assert r.set_cookie_headers == []


@pytest.mark.parametrize("chunks, want", [
    (b"0\r\n\r\n", 400),
    (b"0\r\nx-trailer: 1\r\n\r\n", 400),
    (b"%x\r\n%s\r\n0\r\nx-trailer: 1\r\n\r\n" % (len(json.dumps(CREDS)), json.dumps(CREDS).encode()), 200),
], ids=["empty", "empty-with-trailer", "body-with-trailer"])
def test_chunked_login_edge_bodies(gw_inline, login_api, chunks, want):
    """A chunked body that is empty, or ends with trailers, is answered at once, and the app sees nothing."""
    import time
    head = (f"POST {LOGIN} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
            f"x-etls-probe: chunked-{want}-{len(chunks)}\r\n\r\n").encode()
    t0 = time.monotonic()
    status, headers, _ = raw_exchange(gw_inline.port, head, chunks)
    assert time.monotonic() - t0 < 2.0
    assert status == want, (status, headers)
    assert _hdr(headers, "cache-control") == ["no-store"]
    assert gw_inline.app.with_header("x-etls-probe", f"chunked-{want}-{len(chunks)}") == []


@pytest.fixture(scope="module")
def gw_no_clusters(make_gateway):
    """login_cluster and refresh_cluster name clusters Envoy does not have (a typo in a deployment)."""
    return make_gateway("contract-missing-clusters", mode="inline", login_cluster="no_such_login_cluster",
                        refresh_cluster="no_such_refresh_cluster")


def test_login_to_a_cluster_envoy_lacks_is_502_at_once(gw_no_clusters):
    import time
    t0 = time.monotonic()
    r = gw_no_clusters.post(LOGIN, body=CREDS, timeout=T)
    assert time.monotonic() - t0 < 2.0
    assert r.status == 502 and r.json() == {"error": "Login service unavailable"}, r
    assert r.set_cookie_headers == []
    no_store(r)
    assert not gw_no_clusters.reached_app(r)


def test_rotation_through_a_cluster_envoy_lacks_denies(gw_no_clusters):
    """Fail closed: a refresh call that cannot even be dispatched denies, with the clearing cookies."""
    g = gw_no_clusters
    r = g.get("/contract/nocluster", cookies=g.session(tokens.expired_access(4, "u"), tokens.refresh(4, "u")))
    checks.unauthorized(r, g)
    no_store(r)
    ok = g.get("/contract/nocluster", cookies=g.session(access=tokens.access(4, "u")))
    checks.identity(checks.echo(ok), g, "4", "u")
