"""Bursts through the fleet example (deploy/fleet; docs/workers-and-replicas.md, "Several
replicas"): three replicas (Envoy --concurrency 2 each) behind a round-robin front, and a login
API whose refresh tokens work once (a second use gets 401). Bursts of 32 requests of one session
with an expired access token, each on its own connection, reach all three replicas; every one of
their refresh calls reaches the same replica (consistent hash on x-etls-session-key), which makes
one login API call for all of them (its workers share it), and all 32 pass with the same new
upstream tokens."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from harness import checks, tokens

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fleet_support import SingleUseLoginApi, burst, expired_session, start_fleet  # noqa: E402

N = 32


def ring_stats(fleet, i: int) -> dict[str, int]:
    """The counters of replica i's ring cluster (retries, resets, health checks)."""
    _, body = fleet.replicas[i].admin_get("/stats?filter=^cluster.fleet_refresh.(upstream_rq_retry|upstream_cx|health_check|upstream_rq_5)")
    out = {}
    for line in body.splitlines():
        k, _, v = line.partition(": ")
        if v.isdigit():
            out[k.removeprefix("cluster.fleet_refresh.")] = int(v)
    return out


@pytest.fixture(scope="module")
def api():
    s = SingleUseLoginApi(delay=0.3).start()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def fleet(upstreams, api):
    f = start_fleet("fleet", upstreams.app.port, api.port)
    yield f
    f.stop()


@pytest.mark.parametrize("user", [(4242, "editor"), ("u-7", "user"), (9, "admin")])
def test_a_burst_spread_round_robin_over_three_replicas_makes_one_login_api_call(fleet, api, user):
    user_id, role = user
    up = api.issue({"id": user_id, "role": role})
    cookies = expired_session(up, user_id=user_id, role=role)
    public, refresh = fleet.listener_requests("public"), fleet.listener_requests("refresh")
    ring_before = [ring_stats(fleet, i) for i in range(3)]
    results = burst(fleet, cookies, N)
    ring_moves = [{k: v - b.get(k, 0) for k, v in ring_stats(fleet, i).items() if v != b.get(k, 0)}
                  for i, b in enumerate(ring_before)]

    calls = [c for c in api.refresh_calls() if c.json() == {"refreshToken": up}]
    public_after, refresh_after = fleet.listener_requests("public"), fleet.listener_requests("refresh")
    spread = [x - y for x, y in zip(public_after, public)]
    landed = [x - y for x, y in zip(refresh_after, refresh)]
    statuses = [getattr(r, "status", repr(r)) for r in results]
    assert len(calls) == 1, (f"the login API saw {len(calls)} refresh calls (statuses {statuses}, refresh calls per "
                             f"replica {landed}, ring cluster counters that moved per replica {ring_moves})")
    assert statuses == [200] * N, statuses
    assert all(n > 0 for n in spread) and sum(spread) == N, f"requests per replica: {spread}"
    assert sorted(landed) == [0, 0, N], f"refresh calls per replica: {landed}"
    assert [(s, status) for s, status in api.answers if s == up] == [(up, 200)]
    upstream = {(r.cookie("accessToken").value, r.cookie("refreshToken").value) for r in results}
    assert len(upstream) == 1, upstream
    (new_access, new_refresh), = upstream
    assert new_access.startswith("up-access-") and new_refresh.startswith("up-refresh-") and new_refresh != up
    for i, r in enumerate(results):
        e = checks.echo(r)
        assert e["path"] == f"/burst/{i}"
        assert sorted(c.name for c in r.set_cookies) == ["accessToken", "accessTokenEtls", "refreshToken", "refreshTokenEtls"]
        assert tokens.claims(r.cookie("accessTokenEtls").value)["userId"] == user_id
        headers = {k.lower(): v for k, v in e["headers"]}
        assert headers["x-etls-user-id"] == str(user_id) and headers["x-etls-role"] == role
