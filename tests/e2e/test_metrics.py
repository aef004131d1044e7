"""Metrics (src/filter/metrics.rs): one counter per core Outcome, `wasmcustom.etls_auth.<outcome>`
in admin /stats, the same numbers in /stats/prometheus, and the login API latency histogram.
A scripted sequence against fresh Envoys (two workers, so counts from both VMs add up) must move
every counter by exactly the expected amount, and no other counter at all."""
from __future__ import annotations

import re
import time

import pytest

from harness import tokens
from harness.upstreams import Reply, login_ok

OUTCOMES = [
    "session_valid", "rotated_inline", "rotated_by_cluster", "public", "preflight", "denied_no_session",
    "denied_no_refresh", "denied_refresh_invalid", "denied_refresh_call_failed", "login_succeeded", "login_rejected",
    "login_rate_limited", "login_upstream_failed", "login_bad_request", "refreshed", "refresh_rejected", "logged_out",
    "method_not_allowed", "internal_error", "denied_session_ended", "denied_no_upstream_session",
    "upstream_refresh_renewed", "upstream_refresh_ended", "upstream_refresh_outage", "upstream_refresh_coalesced",
    "cross_origin_refused", "logout_upstream_reached", "logout_upstream_failed",
    "upstream_refresh_calls", "upstream_refresh_joined_remote", "upstream_refresh_lease_taken_over",
    "upstream_refresh_slot_overwritten", "upstream_refresh_unshared",
    "denied_max_session",
]
LOGIN = "/api/auth/login"
JSON = {"Content-Type": "application/json"}
CREDS = {"email": "m@example.test", "password": "metrics-password-0001"}


def counters(gw) -> dict[str, int]:
    """Every etls_auth counter from admin /stats (fails if one is missing)."""
    _, body = gw.envoy.admin_get("/stats?filter=^wasmcustom\\.etls_auth\\.")
    found = {}
    for line in body.splitlines():
        name, _, value = line.partition(": ")
        if name.startswith("wasmcustom.etls_auth.") and value.strip().isdigit():
            found[name.removeprefix("wasmcustom.etls_auth.")] = int(value)
    missing = sorted(set(OUTCOMES) - set(found))
    assert not missing, f"counters missing from /stats: {missing}\n{body}"
    return found


def prometheus(gw) -> dict[str, int]:
    _, body = gw.envoy.admin_get("/stats/prometheus")
    found = {}
    for outcome in OUTCOMES:
        m = re.search(rf"^(?:envoy_)?(?:wasmcustom_)?etls_auth_{outcome}(?:\{{[^}}]*\}})? (\d+)$", body, re.M)
        assert m, f"etls_auth_{outcome} not in /stats/prometheus"
        found[outcome] = int(m.group(1))
    return found


def delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: after[k] - before[k] for k in OUTCOMES if after[k] != before[k]}


@pytest.fixture(scope="module")
def gw_metrics(make_gateway):
    return make_gateway("metrics", mode="inline", concurrency=2)


@pytest.fixture(scope="module")
def gw_metrics_cluster(make_gateway):
    return make_gateway("metrics", mode="cluster", refresh_to="stub", refresh_timeout_ms=1000, concurrency=2)


def test_each_outcome_is_counted_exactly(gw_metrics, login_api):
    gw = gw_metrics
    before = counters(gw)
    s = gw.session
    # Logins: two successes, and one of each failure.
    login_api.always(login_ok())
    for _ in range(2):
        assert gw.post(LOGIN, body=CREDS).status == 200
    for reply, status in [(Reply(401, {"error": "no"}), 401), (Reply(429, {}, headers=[("Retry-After", "5")]), 429),
                          (Reply(503, {"error": "down"}), 502)]:
        login_api.always(reply)
        assert gw.post(LOGIN, body=CREDS).status == status
    assert gw.post(LOGIN, body=b"not json", headers=JSON).status == 400
    assert gw.get(LOGIN).status == 405
    # Protected requests.
    for _ in range(3):
        assert gw.get("/p", cookies=s(tokens.access())).status == 200
    for _ in range(2):
        assert gw.get("/p", cookies=s(tokens.expired_access(), tokens.refresh())).status == 200
    assert gw.get("/p").status == 401
    assert gw.get("/p", cookies=s(tokens.access(secret=tokens.WRONG_SECRET))).status == 401
    assert gw.get("/p", accept="text/html", cookies=s(None, tokens.expired_refresh())).status == 302
    # A session past max_session_s (default 30 days), whatever its refresh token's exp says.
    ended = tokens.now() - 2592000 - 100
    assert gw.get("/p", cookies=s(None, tokens.refresh(auth_time=ended))).status == 401
    # Public paths and a preflight.
    assert gw.get("/login").status == 200
    assert gw.get("/login/help").status == 200
    assert gw.request("OPTIONS", "/api/x", headers={"Origin": "https://app.example", "Access-Control-Request-Method": "PUT"}).status == 200
    # The refresh and logout routes.
    assert gw.post(gw.refresh_path, cookies=s(None, tokens.refresh())).status == 200
    assert gw.post(gw.refresh_path).status == 401
    assert gw.get(gw.refresh_path).status == 405
    assert gw.post(gw.logout_path, cookies=s(tokens.access(), tokens.refresh())).status == 200

    after = counters(gw)
    assert delta(before, after) == {
        "login_succeeded": 2, "login_rejected": 1, "login_rate_limited": 1, "login_upstream_failed": 1,
        "login_bad_request": 1, "method_not_allowed": 2, "session_valid": 3, "rotated_inline": 2,
        "denied_no_session": 1, "denied_no_refresh": 1, "denied_refresh_invalid": 1, "public": 2, "preflight": 1,
        "denied_max_session": 1,
        "refreshed": 1, "refresh_rejected": 1, "logged_out": 1,
    }
    # The same numbers in the Prometheus format.
    assert prometheus(gw) == after


def test_refresh_cluster_outcomes_are_counted(gw_metrics_cluster, refresh_api):
    gw = gw_metrics_cluster
    before = counters(gw)
    good = Reply(200, {"message": "Tokens refreshed"}, headers=[
        ("Set-Cookie", f"{gw.access_cookie}={tokens.access(9, 'user')}; Path=/"),
        ("Set-Cookie", f"{gw.refresh_cookie}={tokens.refresh(9, 'user')}; Path=/"),
    ])
    refresh_api.always(good)
    assert gw.get("/c", cookies=gw.session(tokens.expired_access(9, "user"), tokens.refresh(9, "user"))).status == 200
    refresh_api.always(Reply(503, b""))
    for _ in range(2):
        assert gw.get("/c", cookies=gw.session(None, tokens.refresh(9, "user"))).status == 401
    assert gw.get("/c", cookies=gw.session(tokens.access(9, "user"))).status == 200
    after = counters(gw)
    assert delta(before, after) == {"rotated_by_cluster": 1, "denied_refresh_call_failed": 2, "session_valid": 1}
    assert prometheus(gw) == after


def test_login_latency_histogram_has_samples(gw_metrics, login_api):
    gw = gw_metrics
    login_api.always(login_ok())
    assert gw.post(LOGIN, body=CREDS).status == 200
    deadline = time.monotonic() + 15  # histograms reach admin at the next stats flush (5 s)
    line = ""
    while time.monotonic() < deadline:
        _, body = gw.envoy.admin_get("/stats?filter=etls_auth.login_upstream_ms")
        line = next((l for l in body.splitlines() if l.startswith("wasmcustom.etls_auth.login_upstream_ms:")), "")
        if line and "No recorded values" not in line:
            break
        time.sleep(0.5)
    assert line and "No recorded values" not in line, f"login_upstream_ms: {line!r}"
    assert "P50" in line or "P0" in line, line
