"""Session lifetime (docs/sessions.md, "Session lifetime"; docs/configuration.md `max_session_s`)
against the real filter in Envoy: `auth_time` through login, inline rotation, refresh-cluster
rotation, the refresh route and `login_refresh_path`; the exact `exp` and `Max-Age` caps; the
boundary at `auth_time + max_session_s` with and without the leeway; tokens minted by jose (the
Next.js app's way, and with `iat` / `auth_time`); the `denied_max_session` metric.

The gateways run with max_session_s 60, access_ttl_s 10, refresh_ttl_s 30 (clock_skew_s 5, or 0).
Nothing waits for time to pass: the tests mint tokens whose `auth_time` and `iat` lie where the
case needs them. Where a case depends on the exact second the filter reads (the boundary), the
request is made within one second of the test's clock (`in_one_second`, the same system clock as
Envoy's), retried at most a few times when a second boundary fell in between."""
from __future__ import annotations

import sys
import uuid
from pathlib import Path
from typing import Any, Callable

import pytest

from harness import checks, node, tokens
from harness.envoy import SECRETS
from harness.gateway import Gateway
from harness.upstreams import Reply, login_ok

sys.path.insert(0, str(Path(__file__).resolve().parent))
from upstream_support import REFRESH_PATH, reset, start_gateway, stub_login_api  # noqa: E402

LIFETIME = {"max_session_s": 60, "access_ttl_s": 10, "refresh_ttl_s": 30}
SKEW = 5
MODES = ["inline", "cluster"]
LOGIN = "/api/auth/login"
CREDS = {"email": "life@example.test", "password": "lifetime-password-01"}


@pytest.fixture(scope="module", params=MODES)
def lgw(request, make_gateway) -> Gateway:
    return make_gateway("lifetime", mode=request.param, **LIFETIME)


@pytest.fixture(scope="module")
def strict(make_gateway) -> Gateway:
    """No leeway: the session's end itself is its last valid second."""
    return make_gateway("lifetime-strict", mode="inline", clock_skew_s=0, **LIFETIME)


def in_one_second(fn: Callable[[int], Any]) -> tuple[int, Any]:
    """fn(t) with t the current Unix second, repeated (at most 10 times) until it ended within that
    same second: then the filter, which read the clock in between, saw t too."""
    for _ in range(10):
        t = tokens.now()
        result = fn(t)
        if tokens.now() == t:
            return t, result
    raise AssertionError("no request completed within one second in 10 tries")


def acc(*, auth_time: int | None, iat: int | None, exp: int, user_id: Any = 42, role: Any = "admin") -> str:
    extra = {} if auth_time is None else {"auth_time": auth_time}
    return tokens.access(user_id, role, iat=iat, exp=exp, **extra)


def ref(*, auth_time: int | None, iat: int | None, exp: int, user_id: Any = 42, role: Any = "admin") -> str:
    extra = {} if auth_time is None else {"auth_time": auth_time}
    return tokens.refresh(user_id, role, iat=iat, exp=exp, **extra)


def pair_of(r, gw: Gateway) -> tuple[dict, dict]:
    """The new ETLS pair of a response: each token's claims plus "max_age", its cookie's Max-Age.
    The pair is checked as the filter's own (checks.new_tokens_ok without the ttl rule)."""
    checks.no_joined_cookies(r)
    out = []
    for name, secret in ((gw.access_cookie, gw.access_secret), (gw.refresh_cookie, gw.refresh_secret)):
        sc = r.cookie(name)
        assert sc is not None, f"no {name} in {r.set_cookie_headers}"
        assert tokens.verifies(sc.value, secret)
        c = tokens.claims(sc.value)
        assert isinstance(c.get("auth_time"), int) and isinstance(c.get("iat"), int), c
        checks.cookie_attrs_ok(sc, gw, c["exp"] - c["iat"])
        out.append({**c, "max_age": sc.max_age, "token": sc.value})
    a, rf = out
    assert a["auth_time"] == rf["auth_time"] and a["iat"] == rf["iat"], (a, rf)
    return a, rf


def expired_cookies(gw: Gateway, refresh: str, **others: str) -> dict[str, str]:
    return gw.session(tokens.expired_access(), refresh, **others)


def stat(gw: Gateway, name: str) -> int:
    _, body = gw.envoy.admin_get(f"/stats?filter=^wasmcustom\\.etls_auth\\.{name}$")
    for line in body.splitlines():
        key, _, value = line.partition(": ")
        if key == f"wasmcustom.etls_auth.{name}":
            return int(value)
    raise AssertionError(f"{name} not in /stats: {body!r}")


# --- login -------------------------------------------------------------------------------------

def test_login_starts_the_session_and_caps_every_cookie(lgw, login_api):
    login_api.always(login_ok())
    t = tokens.now()
    r = lgw.post(LOGIN, body=CREDS)
    assert r.status == 200, r
    a, rf = pair_of(r, lgw)
    assert t <= a["iat"] <= t + 2 and a["auth_time"] == a["iat"], a
    assert (a["exp"] - a["iat"], a["max_age"]) == (10, 10)
    assert (rf["exp"] - rf["iat"], rf["max_age"]) == (30, 30)
    # The login API's two cookies live as long as the refresh token.
    for name in (lgw.upstream_access_cookie, lgw.upstream_refresh_cookie):
        checks.cookie_attrs_ok(r.cookie(name), lgw, 30)
    # jose (the Next.js app's verifier) accepts both, auth_time included.
    for tok, secret in ((a["token"], lgw.access_secret), (rf["token"], lgw.refresh_secret)):
        v = node.verify(tok, secret)
        assert v["ok"], v
        assert v["payload"]["auth_time"] == a["auth_time"]


# --- rotations ---------------------------------------------------------------------------------

def test_rotation_carries_auth_time_and_stops_the_refresh_token_at_the_end(lgw):
    t = tokens.now()
    began = t - 40  # the session ends at t + 20
    r = lgw.get("/dash", cookies=expired_cookies(lgw, ref(auth_time=began, iat=t - 5, exp=t + 25), theme="dark"))
    e = checks.echo(r)
    a, rf = pair_of(r, lgw)
    assert a["auth_time"] == began and t <= a["iat"] <= t + 2, a
    assert (a["exp"], a["max_age"]) == (a["iat"] + 10, 10)
    assert rf["exp"] == began + 60 and rf["max_age"] == began + 60 - rf["iat"], rf
    checks.app_cookie_carries(e, lgw, a["token"], rf["token"], {"theme": "dark"})
    checks.identity(e, lgw, "42", "admin")
    # The next rotation of those tokens keeps the same auth_time.
    r = lgw.get("/dash", cookies=expired_cookies(lgw, rf["token"]))
    a2, rf2 = pair_of(r, lgw)
    assert (a2["auth_time"], rf2["auth_time"], rf2["exp"]) == (began, began, began + 60)


def test_near_the_end_both_tokens_stop_at_it(lgw):
    t = tokens.now()
    began = t - 55  # 5 s left: less than either ttl
    r = lgw.get("/dash", cookies=expired_cookies(lgw, ref(auth_time=began, iat=t - 2, exp=t + 5)))
    a, rf = pair_of(r, lgw)
    for c in (a, rf):
        assert (c["auth_time"], c["exp"], c["max_age"]) == (began, began + 60, began + 60 - c["iat"]), c


def test_refresh_route_carries_auth_time(lgw):
    t = tokens.now()
    began = t - 40
    r = lgw.post(lgw.refresh_path, cookies=lgw.session(None, ref(auth_time=began, iat=t - 5, exp=t + 25)))
    assert (r.status, r.json()) == (200, {"message": "Tokens refreshed"}), r
    a, rf = pair_of(r, lgw)
    assert (a["auth_time"], a["max_age"]) == (began, 10)
    assert (rf["exp"], rf["max_age"]) == (began + 60, began + 60 - rf["iat"])


# --- the boundary ------------------------------------------------------------------------------

def with_access_at(gw: Gateway, offset: int, **kw: Any) -> Callable[[int], Any]:
    """A request whose access token's session ends `offset` seconds before now (now = end +
    offset), its own exp an hour away."""
    return lambda t: gw.get("/x", cookies=gw.session(acc(auth_time=t - 60 - offset, iat=t - 1, exp=t + 3600)), **kw)


def test_an_access_token_is_valid_until_end_plus_leeway_whatever_its_exp(lgw):
    for offset in (-1, 0, SKEW):
        _, r = in_one_second(with_access_at(lgw, offset))
        assert r.status == 200, (offset, r)
        checks.identity(checks.echo(r), lgw, "42", "admin")
    _, r = in_one_second(with_access_at(lgw, SKEW + 1))
    checks.unauthorized(r, lgw)
    _, r = in_one_second(with_access_at(lgw, SKEW + 1, accept="text/html"))
    checks.redirected_to_login(r, lgw, "/x")


def test_a_rotation_mints_until_the_last_second_and_never_after(lgw):
    far = tokens.now() + 3600
    # One second before the end: both new tokens live exactly one second.
    t, r = in_one_second(lambda t: lgw.get("/x", cookies=expired_cookies(lgw, ref(auth_time=t - 59, iat=t - 1, exp=far))))
    a, rf = pair_of(r, lgw)
    for c in (a, rf):
        assert (c["iat"], c["exp"], c["max_age"], c["auth_time"]) == (t, t + 1, 1, t - 59), c
    # From the end on (the refresh token itself valid until end + leeway, and its exp an hour
    # away) there is no second left to give: the session ends.
    for offset in (0, SKEW, SKEW + 1):
        _, r = in_one_second(lambda t: lgw.get("/x", cookies=expired_cookies(lgw, ref(auth_time=t - 60 - offset, iat=t - 1, exp=far))))
        checks.unauthorized(r, lgw)
        _, r = in_one_second(lambda t: lgw.post(lgw.refresh_path, cookies=lgw.session(None, ref(auth_time=t - 60 - offset, iat=t - 1, exp=far))))
        assert (r.status, r.json()) == (401, {"error": "Invalid refresh token"}), (offset, r)
    _, r = in_one_second(lambda t: lgw.post(lgw.refresh_path, cookies=lgw.session(None, ref(auth_time=t - 59, iat=t - 1, exp=far))))
    assert r.status == 200, r


def test_without_leeway_the_end_is_the_last_valid_second(strict):
    far = tokens.now() + 3600
    _, r = in_one_second(with_access_at(strict, 0))
    assert r.status == 200, r
    _, r = in_one_second(with_access_at(strict, 1))
    checks.unauthorized(r, strict)
    t, r = in_one_second(lambda t: strict.get("/x", cookies=expired_cookies(strict, ref(auth_time=t - 59, iat=t - 1, exp=far))))
    a, rf = pair_of(r, strict)
    assert (a["exp"], rf["exp"], rf["max_age"]) == (t + 1, t + 1, 1)
    _, r = in_one_second(lambda t: strict.get("/x", cookies=expired_cookies(strict, ref(auth_time=t - 60, iat=t - 1, exp=far))))
    checks.unauthorized(r, strict)


# --- tokens minted by jose ---------------------------------------------------------------------

def test_a_nextjs_refresh_token_starts_the_count_at_its_first_rotation(lgw):
    nextjs = node.mint(lgw.refresh_secret, 42, "admin", "7d")  # no iat, no auth_time
    assert "iat" not in tokens.claims(nextjs) and "auth_time" not in tokens.claims(nextjs)
    t = tokens.now()
    r = lgw.get("/x", cookies=expired_cookies(lgw, nextjs))
    a, rf = pair_of(r, lgw)
    assert a["auth_time"] == a["iat"] and t <= a["iat"] <= t + 2, a
    assert (a["max_age"], rf["max_age"], rf["exp"]) == (10, 30, rf["iat"] + 30)
    # The refresh route does the same.
    r = lgw.post(lgw.refresh_path, cookies=lgw.session(None, nextjs))
    a, rf = pair_of(r, lgw)
    assert a["auth_time"] == a["iat"] and (a["max_age"], rf["max_age"]) == (10, 30)


def jose_access_at(gw: Gateway, offset: int):
    """A request with a jose access token (iat, no auth_time) whose session ends `offset` seconds
    before now (now = iat + max_session_s + offset). node takes about a second to start, so the
    token is minted relative to node's own clock reading, read back from its iat, and the request
    counts only if it ended within that same second (at most 10 tries)."""
    for _ in range(10):
        tok = node.mint(gw.access_secret, 42, "admin", "1h", iat=f"now-{60 + offset}")
        minted_at = tokens.claims(tok)["iat"] + 60 + offset
        r = gw.get("/x", cookies=gw.session(tok))
        if tokens.now() == minted_at:
            return r
    raise AssertionError("no jose token was used within the second it was minted in 10 tries")


def test_jose_tokens_with_iat_count_from_it_and_with_auth_time_from_that(lgw):
    t = tokens.now()
    with_iat = node.mint(lgw.refresh_secret, 42, "admin", t + 3600, iat=t - 40)
    r = lgw.get("/x", cookies=expired_cookies(lgw, with_iat))
    a, rf = pair_of(r, lgw)
    assert (a["auth_time"], rf["exp"]) == (t - 40, t + 20), (a, rf)
    with_auth_time = node.mint(lgw.refresh_secret, "u-5", "user", t + 3600, iat=t - 10, auth_time=t - 50)
    r = lgw.get("/x", cookies=expired_cookies(lgw, with_auth_time))
    a, rf = pair_of(r, lgw)
    assert (a["auth_time"], a["exp"], rf["exp"]) == (t - 50, t + 10, t + 10), (a, rf)
    checks.identity(checks.echo(r), lgw, "u-5", "user")
    # A jose access token with iat only: valid until iat + max_session_s + leeway.
    assert jose_access_at(lgw, SKEW).status == 200
    checks.unauthorized(jose_access_at(lgw, SKEW + 1), lgw)
    # Without iat (the Next.js app's): only its exp counts.
    r = lgw.get("/x", cookies=lgw.session(node.mint(lgw.access_secret, 42, "admin", "5m")))
    assert r.status == 200, r


def test_rotated_tokens_pass_jose_with_their_auth_time(lgw):
    t = tokens.now()
    r = lgw.get("/x", cookies=expired_cookies(lgw, ref(auth_time=t - 30, iat=t - 3, exp=t + 27)))
    a, rf = pair_of(r, lgw)
    for c, secret in ((a, lgw.access_secret), (rf, lgw.refresh_secret)):
        v = node.verify(c["token"], secret)
        assert v["ok"] and v["payload"]["auth_time"] == t - 30 and v["protectedHeader"]["alg"] == "HS256", v


# --- the metric --------------------------------------------------------------------------------

def test_sessions_ended_by_max_session_s_are_counted(lgw):
    t = tokens.now()
    old = t - 1000  # long past the end, whatever second the filter reads
    before = stat(lgw, "denied_max_session")
    invalid_before = stat(lgw, "denied_refresh_invalid")
    checks.unauthorized(lgw.get("/x", cookies=lgw.session(acc(auth_time=old, iat=t - 1, exp=t + 3600))), lgw)
    checks.unauthorized(lgw.get("/x", cookies=expired_cookies(lgw, ref(auth_time=old, iat=t - 1, exp=t + 3600))), lgw)
    assert lgw.post(lgw.refresh_path, cookies=lgw.session(None, ref(auth_time=old, iat=t - 1, exp=t + 3600))).status == 401
    # Not counted: an idle session (its refresh token expired long before the end), a live one.
    checks.unauthorized(lgw.get("/x", cookies=expired_cookies(lgw, ref(auth_time=t - 40, iat=t - 39, exp=t - 9))), lgw)
    assert lgw.get("/x", cookies=lgw.session(acc(auth_time=t - 10, iat=t - 1, exp=t + 9))).status == 200
    assert stat(lgw, "denied_max_session") - before == 3
    assert stat(lgw, "denied_refresh_invalid") - invalid_before == 1


# --- login_refresh_path ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def life_api():
    s = stub_login_api("login_api_lifetime")
    yield s
    s.stop()


@pytest.fixture(scope="module", params=MODES)
def ugw(request, upstreams, life_api):
    gw = start_gateway(upstreams, life_api.port, "lifetime-upstream", request.param, login_timeout_ms=1000, **LIFETIME)
    yield gw
    gw.envoy.stop()


@pytest.fixture
def api(life_api):
    yield reset(life_api)


def upstream_cookies(gw: Gateway, refresh: str) -> dict[str, str]:
    """An expired access token, `refresh`, and the login API's two cookies (a refresh token of its
    own for each call: answers are reused per login API refresh token for 30 s)."""
    return expired_cookies(gw, refresh, **{gw.upstream_access_cookie: "up-a-old",
                                           gw.upstream_refresh_cookie: f"up-r-{uuid.uuid4().hex}"})


def renewed() -> Reply:
    return Reply(200, {"accessToken": "up-a-new", "refreshToken": "up-r-new", "userData": {"id": 42, "role": "admin"}})


def test_login_refresh_path_renewal_carries_auth_time_and_caps_all_four(ugw, api):
    api.always(renewed())
    t = tokens.now()
    began = t - 40
    r = ugw.get("/x", cookies=upstream_cookies(ugw, ref(auth_time=began, iat=t - 5, exp=t + 25)))
    e = checks.echo(r)
    a, rf = pair_of(r, ugw)
    assert (a["auth_time"], a["max_age"], rf["exp"]) == (began, 10, began + 60)
    for name, value in ((ugw.upstream_access_cookie, "up-a-new"), (ugw.upstream_refresh_cookie, "up-r-new")):
        sc = r.cookie(name)
        assert sc.value == value
        checks.cookie_attrs_ok(sc, ugw, rf["max_age"])
    assert len(r.set_cookies) == 4
    checks.identity(e, ugw, "42", "admin")
    assert [c.path for c in api.requests()] == [REFRESH_PATH]
    # The refresh route, likewise.
    api.clear()
    r = ugw.post(ugw.refresh_path, cookies=upstream_cookies(ugw, ref(auth_time=began, iat=t - 5, exp=t + 25)))
    assert r.status == 200, r
    a, rf = pair_of(r, ugw)
    assert (a["auth_time"], rf["exp"]) == (began, began + 60)
    checks.cookie_attrs_ok(r.cookie(ugw.upstream_refresh_cookie), ugw, rf["max_age"])


def test_login_refresh_path_outage_still_carries_auth_time(ugw, api):
    api.always(Reply(503, {"error": "down"}))
    t = tokens.now()
    began = t - 45
    r = ugw.get("/x", cookies=upstream_cookies(ugw, ref(auth_time=began, iat=t - 5, exp=t + 25)))
    a, rf = pair_of(r, ugw)
    assert (a["auth_time"], rf["auth_time"], rf["exp"]) == (began, began, began + 60)
    assert sorted(c.name for c in r.set_cookies) == sorted([ugw.access_cookie, ugw.refresh_cookie]), r.set_cookie_headers
    assert len(api.requests()) == 1


def test_an_ended_session_never_asks_the_login_api(ugw, api):
    api.always(renewed())
    t = tokens.now()
    checks.unauthorized(ugw.get("/x", cookies=upstream_cookies(ugw, ref(auth_time=t - 100, iat=t - 1, exp=t + 25))), ugw)
    r = ugw.post(ugw.refresh_path, cookies=upstream_cookies(ugw, ref(auth_time=t - 100, iat=t - 1, exp=t + 25)))
    assert (r.status, r.json()) == (401, {"error": "Invalid refresh token"}), r
    assert api.requests() == []
