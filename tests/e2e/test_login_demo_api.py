"""Login against the real demo login API (demo/login_api.py, a subprocess), through a real Envoy
with two workers: many logins at once, of two users and with wrong passwords, each get their own
answer and their own tokens (no reply goes to the wrong pending request)."""
from __future__ import annotations

import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from harness import checks, tokens

sys.path.insert(0, str(Path(__file__).resolve().parent))
from login_support import DemoLoginApi, login_body, start_gateway_on  # noqa: E402

LOGIN = "/api/auth/login"
# DEMO-ONLY users of demo/login_api.py.
ALICE = ("alice@example.com", "alice-demo-password",
         {"id": 1, "name": "Alice Admin", "email": "alice@example.com", "role": "admin"})
BOB = ("bob@example.com", "bob-demo-password",
       {"id": "u-bob-42", "name": "Bob User", "email": "bob@example.com", "role": "user"})


@pytest.fixture(scope="module")
def demo_api():
    api = DemoLoginApi().start()
    yield api
    api.stop()


@pytest.fixture(scope="module")
def gw_demo(upstreams, demo_api):
    gw = start_gateway_on(upstreams, "login-demo-api", app_port=upstreams.app.port, login_port=demo_api.port,
                          concurrency=2)
    yield gw
    gw.envoy.stop()


def attempt(gw, kind):
    if kind == "alice":
        email, pw, _ = ALICE
    elif kind == "bob":
        email, pw, _ = BOB
    else:
        email, pw = ALICE[0], "wrong-" + ALICE[1]
    return kind, gw.post(LOGIN, body=login_body(email, pw), headers={"Content-Type": "application/json"}, timeout=10)


def test_demo_users_log_in(gw_demo):
    for email, pw, user_data in (ALICE, BOB):
        r = gw_demo.post(LOGIN, body=login_body(email, pw), headers={"Content-Type": "application/json"}, timeout=10)
        assert r.status == 200, r
        assert r.json() == {"message": "Login successful", "userData": user_data}
        checks.new_tokens_ok(gw_demo, r.cookie("accessTokenEtls").value, r.cookie("refreshTokenEtls").value,
                             user_id=user_data["id"], role=user_data["role"])
        assert r.cookie("accessToken").value.startswith("demo-api-access-")
        assert r.cookie("refreshToken").value.startswith("demo-api-refresh-")


def test_concurrent_logins_each_get_their_own_answer(gw_demo):
    kinds = ["alice", "bob", "wrong"] * 16
    with ThreadPoolExecutor(max_workers=12) as pool:
        results = list(pool.map(lambda k: attempt(gw_demo, k), kinds))
    assert len(results) == len(kinds)
    seen_access = set()
    for kind, r in results:
        if kind == "wrong":
            assert r.status == 401, r
            assert r.json() == {"error": "Invalid credentials"}
            assert r.set_cookie_headers == []
            continue
        user_data = ALICE[2] if kind == "alice" else BOB[2]
        assert r.status == 200, (kind, r)
        assert r.json() == {"message": "Login successful", "userData": user_data}, kind
        assert len(r.set_cookie_headers) == 4
        access = r.cookie("accessTokenEtls").value
        claims = tokens.verify(access, gw_demo.access_secret)
        assert (claims["userId"], claims["role"]) == (user_data["id"], user_data["role"]), kind
        refresh = tokens.verify(r.cookie("refreshTokenEtls").value, gw_demo.refresh_secret)
        assert (refresh["userId"], refresh["role"]) == (user_data["id"], user_data["role"]), kind
        seen_access.add(r.cookie("accessToken").value)
    # The demo API's own tokens are random per login: every success carried its own.
    assert len(seen_access) == 32
