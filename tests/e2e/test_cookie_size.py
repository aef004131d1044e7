"""No Set-Cookie over 4096 bytes (docs/sessions.md, Login: Set-Cookie size), at login, for each of the four
cookies: the stub login API returns tokens, or a role, sized so that a Set-Cookie lands on exactly
4096 bytes (accepted, and the token verifies on the next request and rotates) and on 4097 bytes
(the login fails with 502, no cookie is set, and Envoy's log has one line naming the cookie and
never its value). A real Envoy with the real filter.

The ETLS tokens grow with the role through base64, by 1 or 2 characters per byte of claims, so
whether 4096 and 4097 are both reachable depends on the rest of the cookie's length; the cookie
names of the gateways below are padded so that they are (computed from a probe login)."""
from __future__ import annotations

import base64
import json

import pytest

from harness import checks, tokens
from harness.upstreams import login_ok

JSON = {"Content-Type": "application/json"}
CREDS = {"email": "size@example.test", "password": "size-password-1234"}
T = 8
LONG_ACCESS = "accessTokenEtls" + "A" * 64


def login(gw, login_api, role="admin", access="ua", refresh="ur"):
    login_api.always(login_ok({"id": 7, "role": role}, access=access, refresh=refresh))
    return gw.post(gw.login_path, body=CREDS, headers=JSON, timeout=T)


def set_cookie(r, name):
    found = [v for v in r.set_cookie_headers if v.startswith(name + "=")]
    assert len(found) == 1, r.set_cookie_headers
    return found[0]


def payload_len(token: str) -> int:
    part = token.split(".")[1]
    return len(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


def b64_len(n: int) -> int:
    return (4 * n + 2) // 3


def refused_with_log_line(gw, r, name, size, secret_value=None):
    assert r.status == 502, r
    assert r.json() == {"error": "Login service unavailable"}
    assert r.set_cookie_headers == []
    lines = [l for l in gw.envoy.log_text().splitlines() if f"cookie {name} {size} bytes" in l]
    assert len(lines) == 1, lines
    assert "login refused (502)" in lines[0]
    if secret_value:
        assert secret_value not in gw.envoy.log_text()


class Calibration:
    """Set-Cookie length of an ETLS cookie as a function of the role length, from one probe."""

    def __init__(self, gw, login_api, name):
        self.probe_role = 100
        r = login(gw, login_api, role="r" * self.probe_role)
        assert r.status == 200, r
        sc = set_cookie(r, name)
        token = sc.split("=", 1)[1].split(";")[0]
        self.fixed = len(sc) - b64_len(payload_len(token))  # everything but the payload
        self.payload0 = payload_len(token)

    def size(self, role_len: int, name_pad: int = 0) -> int:
        return self.fixed + name_pad + b64_len(self.payload0 + role_len - self.probe_role)

    def pad_and_role(self):
        """A name padding (0..3) and a role length whose Set-Cookie is 4096, and 4097 with one more."""
        for pad in range(4):
            for n in range(2000, 3400):
                if self.size(n, pad) == 4096 and self.size(n + 1, pad) == 4097:
                    return pad, n
        raise AssertionError("no padding reaches 4096 and 4097")


@pytest.mark.parametrize("which", ["upstream_access", "upstream_refresh"])
def test_login_api_token_at_4096_and_4097_bytes(gw_inline, login_api, which):
    gw = gw_inline
    name = gw.setting(which + "_cookie")
    r = login(gw, login_api)
    base = len(set_cookie(r, name)) - 2  # the probe's token is 2 bytes ("ua"/"ur")
    fit, over = "t" * (4096 - base), "T" * (4097 - base)
    pick = (lambda t: {"access": t}) if which == "upstream_access" else (lambda t: {"refresh": t})

    r = login(gw, login_api, **pick(fit))
    assert r.status == 200, r
    assert len(set_cookie(r, name)) == 4096
    assert set_cookie(r, name).startswith(f"{name}={fit};")

    r = login(gw, login_api, **pick(over))
    refused_with_log_line(gw, r, name, 4097, secret_value=over)


def test_etls_refresh_cookie_at_4096_and_4097_bytes(gw_inline, make_gateway, login_api):
    cal = Calibration(gw_inline, login_api, gw_inline.refresh_cookie)
    pad, n = cal.pad_and_role()
    name = "refreshTokenEtls" + "x" * pad
    gw = make_gateway("size-refresh", refresh_cookie=name) if pad else gw_inline

    r = login(gw, login_api, role="r" * n)
    assert r.status == 200, r
    sc = set_cookie(r, name)
    assert len(sc) == 4096
    assert all(len(v) <= 4096 for v in r.set_cookie_headers)
    refresh = sc.split("=", 1)[1].split(";")[0]
    # The 4096-byte cookie's token is accepted by the filter: it rotates, and the new pair fits too.
    rot = gw.get("/x", cookies={name: refresh}, timeout=T)
    checks.echo(rot)
    new = [v for v in rot.set_cookie_headers if v.startswith(name + "=")]
    assert len(new) == 1 and len(new[0]) == 4096, [len(v) for v in rot.set_cookie_headers]
    assert tokens.claims(refresh)["role"] == "r" * n

    r = login(gw, login_api, role="r" * (n + 1))
    refused_with_log_line(gw, r, name, 4097)


def test_etls_access_cookie_at_4096_and_4097_bytes(gw_inline, make_gateway, login_api):
    # A long access cookie name makes the access cookie the larger of the two.
    probe_gw = make_gateway("size-access-probe", access_cookie=LONG_ACCESS)
    cal = Calibration(probe_gw, login_api, LONG_ACCESS)
    pad, n = cal.pad_and_role()
    name = LONG_ACCESS + "x" * pad
    gw = make_gateway("size-access", access_cookie=name) if pad else probe_gw

    r = login(gw, login_api, role="r" * n)
    assert r.status == 200, r
    sc = set_cookie(r, name)
    assert len(sc) == 4096
    assert all(len(v) <= 4096 for v in r.set_cookie_headers), [len(v) for v in r.set_cookie_headers]
    access = sc.split("=", 1)[1].split(";")[0]
    # The 4096-byte cookie's token opens the app.
    e = checks.echo(gw.get("/x", cookies={name: access}, timeout=T))
    checks.identity(e, gw, "7", "r" * n)

    r = login(gw, login_api, role="r" * (n + 1))
    refused_with_log_line(gw, r, name, 4097)


def test_a_userdata_id_too_long_for_the_cookie_fails_the_login(gw_inline, login_api):
    login_api.always(login_ok({"id": "u" * 5000, "role": "admin"}))
    r = gw_inline.post(gw_inline.login_path, body=CREDS, headers=JSON, timeout=T)
    assert r.status == 502, r
    assert r.set_cookie_headers == []
    line = [l for l in gw_inline.envoy.log_text().splitlines() if "login refused (502)" in l and "userData.id" in l]
    assert line and "u" * 100 not in line[-1]
    assert json.loads(r.body) == {"error": "Login service unavailable"}
