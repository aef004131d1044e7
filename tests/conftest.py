"""Shared fixtures: real upstreams and real Envoys with the filter, one Envoy per configuration
for the whole session (not per test), stopped by PID at the end.

Fixtures
  upstreams          session: Upstreams(app=EchoApp, login=StubServer, refresh=StubServer)
  make_gateway       session: factory, make_gateway(name, mode=..., env=..., **plugin_keys) -> Gateway,
                     cached by its arguments, so asking twice gives the same Envoy
  gw                 session, parametrised over the two rotation modes:
                     "inline" (no refresh_cluster) and "cluster" (refresh_cluster = this Envoy)
  gw_inline          session: the inline one only
  gw_stub_refresh    session: refresh_cluster pointing at the stub refresh server (failure cases)
  login_api          function: the stub login API, reset to a successful answer
  refresh_api        function: the stub refresh server, reset to "503"

Missing Envoy or wasm makes the fixtures raise (the tests error, never skip).
"""
from __future__ import annotations

import json
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import envoy as henvoy  # noqa: E402
from harness.gateway import Gateway  # noqa: E402
from harness.upstreams import EchoApp, Reply, StubServer, login_ok  # noqa: E402

MODES = ["inline", "cluster"]


def pytest_sessionstart(session):
    """Prune what earlier runs left in tests/out/{envoy,validate} (older than 6 hours; recent
    ones may belong to a run still going on)."""
    cutoff = time.time() - 6 * 3600
    for sub in ("envoy", "validate"):
        base = Path(__file__).resolve().parent / "out" / sub
        if not base.is_dir():
            continue
        for d in base.iterdir():
            try:
                if d.is_dir() and d.stat().st_mtime < cutoff:
                    shutil.rmtree(d, ignore_errors=True)
            except OSError:
                pass
REFRESH_CLUSTER = "etls_refresh"


@dataclass
class Upstreams:
    app: EchoApp
    login: StubServer
    refresh: StubServer


@pytest.fixture(scope="session")
def upstreams():
    ups = Upstreams(
        app=EchoApp().start(),
        login=StubServer("login_api", default=login_ok()).start(),
        refresh=StubServer("refresh_stub").start(),
    )
    yield ups
    for s in (ups.app, ups.login, ups.refresh):
        s.stop()


@pytest.fixture(scope="session")
def make_gateway(upstreams: Upstreams):
    cache: dict[str, Gateway] = {}
    started: list[henvoy.Envoy] = []

    def make(
        name: str,
        *,
        mode: str = "inline",
        env: dict[str, str] | None = None,
        refresh_to: str = "self",
        concurrency: int = 1,
        allow_on_headers_stop_iteration: bool = True,
        **plugin_keys: Any,
    ) -> Gateway:
        """mode "inline": no refresh_cluster; "cluster": refresh_cluster set, pointing at this
        Envoy (refresh_to="self") or at the stub refresh server (refresh_to="stub").
        allow_on_headers_stop_iteration=False leaves the flag out of the Wasm config (the
        filter's fallback)."""
        env = dict(env if env is not None else {**henvoy.SECRETS, **henvoy.PREVIOUS_SECRETS})
        key = json.dumps([name, mode, env, refresh_to, concurrency, allow_on_headers_stop_iteration, plugin_keys], sort_keys=True)
        if key in cache and cache[key].envoy.alive():
            return cache[key]
        plugin = henvoy.plugin_config(**plugin_keys)
        clusters: dict[str, int | None] = {"app": upstreams.app.port, "login_api": upstreams.login.port}
        if mode == "cluster":
            plugin.setdefault("refresh_cluster", REFRESH_CLUSTER)
            clusters[plugin["refresh_cluster"]] = None if refresh_to == "self" else upstreams.refresh.port
        elif mode != "inline":
            raise ValueError(mode)
        e = henvoy.start_gateway(f"{name}-{mode}", plugin=plugin, env=env, clusters=clusters, concurrency=concurrency,
                                 allow_on_headers_stop_iteration=allow_on_headers_stop_iteration)
        started.append(e)
        gw = Gateway(name=name, mode=mode, envoy=e, app=upstreams.app, login=upstreams.login, plugin=plugin, env=env,
                     refresh_stub=upstreams.refresh if refresh_to == "stub" else None)
        cache[key] = gw
        return gw

    yield make
    for e in started:
        e.stop()


@pytest.fixture(scope="session", params=MODES)
def gw(request, make_gateway: Callable[..., Gateway]) -> Gateway:
    """The default configuration (plus *_PREVIOUS secrets) in each rotation mode."""
    return make_gateway("default", mode=request.param, concurrency=2)


@pytest.fixture(scope="session")
def gw_inline(make_gateway: Callable[..., Gateway]) -> Gateway:
    return make_gateway("default", mode="inline", concurrency=2)


@pytest.fixture(scope="session")
def gw_stub_refresh(make_gateway: Callable[..., Gateway]) -> Gateway:
    return make_gateway("stubrefresh", mode="cluster", refresh_to="stub", refresh_timeout_ms=1000)


@pytest.fixture
def login_api(upstreams: Upstreams) -> StubServer:
    upstreams.login.always(login_ok())
    upstreams.login.clear()
    yield upstreams.login
    upstreams.login.always(login_ok())


@pytest.fixture
def refresh_api(upstreams: Upstreams) -> StubServer:
    upstreams.refresh.always(Reply(503, {"error": "stub not configured"}))
    upstreams.refresh.clear()
    yield upstreams.refresh
    upstreams.refresh.always(Reply(503, {"error": "stub not configured"}))
