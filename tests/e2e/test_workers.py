"""Several workers (`--concurrency 4`): each worker runs its own Wasm VM, with its own token cache,
and the sessions are stateless, so any worker verifies what any other minted. Which worker served a
request is read from Envoy's per-worker listener counters
(`listener.<address>.worker_<n>.downstream_cx_total`): each request goes on its own connection,
which the kernel hands to one of the workers.
"""
from __future__ import annotations

import pytest

from harness import checks, tokens
from harness.envoy import PREVIOUS_SECRETS, SECRETS, LdsListener, plugin_config
from harness import client
from harness.ops import EcdsGateway, served_by, wait_until, worker_connections

WORKERS = 4
MAX_TRIES = 80  # fresh connections to reach every worker (each try hits one of 4 at random)


@pytest.fixture(scope="module")
def gw4(make_gateway):
    return make_gateway("workers", mode="inline", concurrency=WORKERS)


def _until_every_worker(e, port, send, check):
    """Sends requests one at a time (`send(i)` returns the response, `check(r)` asserts it) until
    each of the 4 workers has served one; returns {worker: [responses]}."""
    served: dict[int, list] = {}
    for i in range(MAX_TRIES):
        worker, r = served_by(e, port, lambda: send(i))
        check(r)
        served.setdefault(worker, []).append(r)
        if len(served) == WORKERS:
            return served
    raise AssertionError(f"{MAX_TRIES} connections reached only workers {sorted(served)}")


def _valid(user):
    def check(r):
        assert r.status == 200 and checks.echo_header_all(checks.echo(r), "x-etls-user-id") == [user], r
    return check


def _refused(upstreams):
    def check(r):
        assert r.status == 401 and r.json() == {"error": "Unauthorized"}, r
    return check


def test_a_session_minted_on_one_worker_verifies_and_rotates_on_every_other(gw4, login_api):
    e, port = gw4.envoy, gw4.port
    minted_on, r = served_by(e, port, lambda: gw4.post(gw4.login_path, body={"email": "w@example.test", "password": "pw"}))
    assert r.status == 200 and r.json()["message"] == "Login successful", r
    access = r.cookie(gw4.access_cookie).value
    refresh = r.cookie(gw4.refresh_cookie).value

    # The access token verifies on all four workers: the one that minted it and the three others.
    served = _until_every_worker(e, port, lambda i: gw4.get(f"/w/{i}", cookies=gw4.session(access)), _valid("7"))
    assert set(served) == set(range(WORKERS)) and minted_on in served

    # The refresh token alone (a browser whose access cookie expired) rotates on every worker.
    def rotated(r):
        checks.rotated(r, gw4, user_id=7, role="admin")
        checks.identity(checks.echo(r), gw4, "7", "admin")
    _until_every_worker(e, port, lambda i: gw4.get(f"/w/rot/{i}", cookies=gw4.session(None, refresh)), rotated)


@pytest.mark.parametrize("mode", ["inline", "cluster"])
def test_64_concurrent_rotations_spread_over_the_workers_all_succeed(make_gateway, mode):
    gw = make_gateway("workers", mode=mode, concurrency=WORKERS)
    e = gw.envoy
    n = 64
    expired = tokens.expired_access(4343, "editor")
    refresh = tokens.refresh(4343, "editor")
    before = worker_connections(e, gw.port)
    rotations_before = e.stat(f"wasmcustom.etls_auth.rotated_{'inline' if mode == 'inline' else 'by_cluster'}") or 0
    results = client.at_once(n, lambda i: gw.get(f"/burst4/{i}", cookies=gw.session(expired, refresh), timeout=30))
    statuses = [r.status for r in results]
    assert statuses == [200] * n, f"{statuses.count(200)} of {n} ok: {sorted(set(statuses))}"
    for i, r in enumerate(results):
        ech = checks.echo(r)
        assert ech["path"] == f"/burst4/{i}"
        a, rf = checks.rotated(r, gw, user_id=4343, role="editor")
        checks.app_cookie_carries(ech, gw, a, rf)
        checks.identity(ech, gw, "4343", "editor")
    after = worker_connections(e, gw.port)
    spread = {w: after[w] - before.get(w, 0) for w in after}
    assert len([w for w, d in spread.items() if d > 0]) == WORKERS, f"connections per worker: {spread}"
    rotations = (e.stat(f"wasmcustom.etls_auth.rotated_{'inline' if mode == 'inline' else 'by_cluster'}") or 0) - rotations_before
    assert rotations == n


class _LdsPush:
    """The filter in a listener pushed by LDS from a watched file."""

    def __init__(self, upstreams, env):
        self.lds = LdsListener("workers-lds", env=env, clusters={"app": upstreams.app.port, "login_api": upstreams.login.port})
        self.lds.envoy.concurrency = WORKERS
        self.envoy, self.port, self.n = self.lds.envoy, self.lds.listener_port, 0
        self.push(plugin_config(), env)
        self.envoy.start()

    def push(self, plugin, env):
        self.lds.env = dict(env)
        self.lds.push(plugin)
        self.n += 1

    def settled(self):
        assert self.lds.wait_counts(self.n, 0) == (self.n, 0)
        e = self.envoy
        assert wait_until(lambda: e.stat("listener_manager.total_listeners_warming") == 0
                          and e.stat("listener_manager.total_listeners_draining") == 0
                          and e.stat("listener_manager.total_listeners_active") == 1, 20)


class _EcdsPush:
    """The filter by ECDS from a watched file, in a static listener."""

    def __init__(self, upstreams, env):
        self.g = EcdsGateway("workers-ecds", clusters={"app": upstreams.app.port, "login_api": upstreams.login.port},
                             concurrency=WORKERS)
        self.envoy, self.port = self.g.envoy, self.g.listener_port
        self.g.start(plugin_config(), env)

    def push(self, plugin, env):
        self.g.push(plugin, env)

    def settled(self):
        self.g.wait_taken(str(self.g.version))


@pytest.mark.parametrize("how", ["lds", "ecds"])
def test_every_workers_cache_forgets_a_removed_key_after_a_push(upstreams, how):
    """A token verified (and cached in every worker's VM) under ETLS_ACCESS_PREVIOUS is refused by
    every worker once a push removes that key; a push that changes only the plugin configuration
    (which secret it reads) likewise empties every worker's cache. Pushed by LDS (the listener) or
    by ECDS (the filter alone), each from a watched file."""
    env = {**SECRETS, **PREVIOUS_SECRETS, "ETLS_ACCESS_NEXT": "next-access-secret-abcdefghijklmnopqrstuvwxyz012345"}
    gw = (_LdsPush if how == "lds" else _EcdsPush)(upstreams, env)
    e, port = gw.envoy, gw.port
    old = tokens.access(91, "old", secret=PREVIOUS_SECRETS["ETLS_ACCESS_PREVIOUS"])
    current = tokens.access(92, "cur")
    nxt = tokens.access(93, "next", secret=env["ETLS_ACCESS_NEXT"])

    def get(tok, tag):
        return lambda i: client.request(port, "GET", f"/c/{tag}/{i}", cookies={"accessTokenEtls": tok},
                                        headers={"x-etls-probe": f"cache-{how}-{tag}-{i}"})

    def never_at_app(tag):
        assert upstreams.app.find(lambda s: (s.header("x-etls-probe") or "").startswith(f"cache-{how}-{tag}-")) == []

    try:
        gw.settled()
        assert wait_until(lambda: worker_connections(e, port), 20)
        # Verified under the previous key on every worker; the repeats come from each worker's cache.
        _until_every_worker(e, port, get(old, "old1"), _valid("91"))
        _until_every_worker(e, port, get(old, "old2"), _valid("91"))

        # Push 2: the previous key is gone (the VM environment changes).
        gw.push(plugin_config(), {k: v for k, v in env.items() if k != "ETLS_ACCESS_PREVIOUS"})
        gw.settled()
        _until_every_worker(e, port, get(old, "old3"), _refused(upstreams))
        never_at_app("old3")
        # No session lost: the current key verifies everywhere, twice (the second from the cache).
        _until_every_worker(e, port, get(current, "cur1"), _valid("92"))
        _until_every_worker(e, port, get(current, "cur2"), _valid("92"))

        # Push 3: same VM environment, the plugin now reads ETLS_ACCESS_NEXT (a configuration-only change).
        gw.push(plugin_config(access_secret_env="ETLS_ACCESS_NEXT"), {k: v for k, v in env.items() if k != "ETLS_ACCESS_PREVIOUS"})
        gw.settled()
        _until_every_worker(e, port, get(current, "cur3"), _refused(upstreams))
        never_at_app("cur3")
        _until_every_worker(e, port, get(nxt, "next"), _valid("93"))
    finally:
        e.stop()


def test_upstream_refresh_coalescing_spans_the_workers(make_gateway, login_api):
    """With login_refresh_path, 64 concurrent rotations of one session spread over four workers
    share one login API call for the whole Envoy (docs/workers-and-replicas.md, "One Envoy, all
    workers": the workers' VMs meet in shared data), and all 64 succeed."""
    gw = make_gateway("workers-upstream", mode="inline", concurrency=WORKERS, login_refresh_path="/refresh")
    n = 64
    expired = tokens.expired_access(4545, "user")
    refresh = tokens.refresh(4545, "user")
    before = worker_connections(gw.envoy, gw.port)
    results = client.at_once(n, lambda i: gw.get(
        f"/up4/{i}", cookies=gw.session(expired, refresh, refreshToken="upstream-refresh-4545"), timeout=30))
    assert [r.status for r in results] == [200] * n, [r for r in results if r.status != 200][:2]
    for r in results:
        checks.identity(checks.echo(r), gw, "7", "admin")  # userData of the login API's answer
    after = worker_connections(gw.envoy, gw.port)
    workers_used = len([w for w in after if after[w] > before.get(w, 0)])
    calls = [s for s in login_api.requests() if s.path == "/refresh"]
    assert workers_used == WORKERS
    assert len(calls) == 1, f"{len(calls)} login API refresh calls for {workers_used} workers"
    assert {s.json()["refreshToken"] for s in calls} == {"upstream-refresh-4545"}
