"""Log hygiene: never a token, a secret, a password or a cookie value in Envoy's log.

1. A representative run against fresh Envoys (inline rotation, and rotation through the refresh
   cluster pointing back at Envoy, so cookies also travel in a dispatched call): logins with
   passwords (success, rejected, API down, bad body), the login API's own tokens, rotations,
   denials with forged / expired / garbage tokens, the refresh and logout routes, other cookies.
   Every value sent or received that must stay private is collected; none may appear in Envoy's
   log, nor may anything shaped like a JWT.
2. At the end of the whole pytest session, every Envoy log the session wrote (tests/out/envoy/
   *-<pid>-*/envoy.log) is swept for JWT-shaped strings and for the signing secrets of the
   harness; a hit fails the session (reported as an error in this module's teardown).
"""
from __future__ import annotations

import os
import re
import uuid
from pathlib import Path

import pytest

from harness import envoy as henvoy
from harness import paths, tokens
from harness.upstreams import Reply, login_ok

LOGIN = "/api/auth/login"
JSON = {"Content-Type": "application/json"}
JWT = re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*")
HARNESS_SECRETS = list(henvoy.SECRETS.values()) + list(henvoy.PREVIOUS_SECRETS.values())


def _leaks(text: str, private: set[str]) -> list[str]:
    found = sorted(s for s in private if s and s in text)
    found += sorted(set(JWT.findall(text)))
    return [f[:16] + "..." for f in found]


def _session_logs() -> list[Path]:
    return sorted(paths.OUT.joinpath("envoy").glob(f"*-{os.getpid()}-*/envoy.log"))


@pytest.fixture(scope="session")
def sweep_session_logs():
    """Teardown at the end of the session: sweep every Envoy log this session wrote."""
    yield
    logs = _session_logs()
    report = []
    for log in logs:
        leaks = _leaks(log.read_text(errors="replace"), set(HARNESS_SECRETS))
        if leaks:
            report.append(f"{log}: {leaks}")
    paths.out_dir("log-hygiene").joinpath("sweep.txt").write_text(
        f"{len(logs)} Envoy logs swept\n" + ("\n".join(report) if report else "no token, secret or JWT found\n"))
    assert not report, "Envoy logs hold secrets or tokens:\n" + "\n".join(report)


@pytest.fixture(scope="module", params=["inline", "cluster"])
def gw_hygiene(request, make_gateway):
    return make_gateway("hygiene", mode=request.param, concurrency=1)


def test_envoy_log_holds_no_token_secret_password_or_cookie_value(gw_hygiene, login_api, sweep_session_logs):
    gw = gw_hygiene
    private: set[str] = set(HARNESS_SECRETS)

    def secret(prefix: str) -> str:
        v = f"{prefix}-{uuid.uuid4().hex}"
        private.add(v)
        return v

    # Logins: success (the API's own tokens come back as cookies), rejected, API down, bad body.
    api_access, api_refresh = secret("api-access"), secret("api-refresh")
    login_api.always(login_ok({"id": 77, "role": "admin"}, access=api_access, refresh=api_refresh))
    r = gw.post(LOGIN, body={"email": "h@example.test", "password": secret("pw")})
    assert r.status == 200, r
    assert len(r.set_cookies) == 4
    private.update(c.value for c in r.set_cookies)
    access, refresh = r.cookie(gw.access_cookie).value, r.cookie(gw.refresh_cookie).value
    for reply, status in [(Reply(401, {"error": "bad"}), 401), (Reply(500, {"error": "down"}), 502), (Reply(close=True), 502)]:
        login_api.always(reply)
        assert gw.post(LOGIN, body={"email": "h@example.test", "password": secret("pw")}).status == status
    bad_body = f'{{"email": "h@example.test", "password": {secret("pw")!r}'.encode()  # not JSON
    assert gw.post(LOGIN, body=bad_body, headers=JSON).status == 400

    other = {"sess": secret("sess"), "csrftoken": secret("csrf")}
    # A session, a rotation, a rotation through the refresh route, a logout.
    assert gw.get("/a", cookies=gw.session(access, refresh, **other)).status == 200
    expired = tokens.expired_access(77, "admin")
    private.add(expired)
    r = gw.get("/b?x=1", cookies=gw.session(expired, refresh, **other))
    assert r.status == 200, r
    private.update(c.value for c in r.set_cookies)
    r = gw.post(gw.refresh_path, cookies=gw.session(None, refresh, **other))
    assert r.status == 200, r
    private.update(c.value for c in r.set_cookies)
    # Denials carrying tokens: forged, expired refresh, wrong kind, alg none, garbage.
    forged = tokens.access(1, "admin", secret=tokens.WRONG_SECRET)
    expired_refresh = tokens.expired_refresh(77, "admin")
    none = tokens.alg_none()
    garbage = secret("garbage")
    private.update({forged, expired_refresh, none})
    for cookies in [gw.session(forged), gw.session(forged, expired_refresh), gw.session(refresh, access),
                    gw.session(none, garbage, **other), gw.session(garbage, garbage)]:
        assert gw.get("/c", cookies=cookies).status == 401
    assert gw.get("/c", accept="text/html", cookies=gw.session(forged, expired_refresh)).status == 302
    assert gw.post(gw.refresh_path, cookies=gw.session(None, expired_refresh)).status == 401
    assert gw.get("/login", cookies=gw.session(access, refresh, **other)).status == 200
    assert gw.post(gw.logout_path, cookies=gw.session(access, refresh, **other)).status == 200

    log = gw.envoy.log_text()
    assert "Thread-Local Wasm created" in log or "wasm" in log, f"the filter never ran in {gw.envoy.log_path}"
    leaks = _leaks(log, private)
    assert leaks == [], f"{gw.envoy.log_path} shows {len(leaks)} private values: {leaks}"
    assert len(private) >= 20, len(private)
