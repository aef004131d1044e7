"""Helpers for the `login_refresh_path` tests (tests/e2e/test_upstream_*.py and
test_contract_upstream.py): a stub login API whose answers each test sets, a gateway with
`login_refresh_path` in either rotation mode, and the cookies of a browser whose ETLS access
token has expired."""
from __future__ import annotations

import uuid
from typing import Any

from harness import envoy as henvoy
from harness import tokens
from harness.gateway import Gateway
from harness.upstreams import Reply, StubServer

REFRESH_PATH = "/refresh"
NOT_SET = Reply(503, {"error": "not set"})


def stub_login_api(name: str) -> StubServer:
    """A started stub login API that answers 503 until a test says otherwise."""
    return StubServer(name, default=NOT_SET).start()


def reset(api: StubServer) -> StubServer:
    """Back to answering 503, with nothing recorded."""
    api.always(NOT_SET)
    api.clear()
    return api


def plugin_and_clusters(upstreams, login_port: int, mode: str, **plugin_keys: Any) -> tuple[dict, dict[str, int | None]]:
    """The plugin configuration (`login_refresh_path` REFRESH_PATH unless given) and the clusters of
    a gateway in `mode` ("inline" or "cluster": `refresh_cluster` pointing back at the Envoy)."""
    plugin = henvoy.plugin_config(**{"login_refresh_path": REFRESH_PATH, **plugin_keys})
    clusters: dict[str, int | None] = {"app": upstreams.app.port, "login_api": login_port}
    if mode == "cluster":
        plugin["refresh_cluster"] = "etls_refresh"
        clusters["etls_refresh"] = None
    return plugin, clusters


def start_gateway(upstreams, login_port: int, name: str, mode: str, *, envoy_name: str | None = None,
                  concurrency: int = 1, **plugin_keys: Any) -> Gateway:
    """A started gateway (Envoy `envoy_name`, default `<name>-<mode>`) whose login API is
    `login_port`."""
    env = dict(henvoy.SECRETS)
    plugin, clusters = plugin_and_clusters(upstreams, login_port, mode, **plugin_keys)
    e = henvoy.start_gateway(envoy_name or f"{name}-{mode}", plugin=plugin, env=env, clusters=clusters,
                             concurrency=concurrency)
    return Gateway(name=name, mode=mode, envoy=e, app=upstreams.app, login=upstreams.login, plugin=plugin, env=env)


def expired_session(gw: Gateway, *, user_id: Any = 42, role: Any = "admin", theme: str | None = None,
                    upstream_refresh: str | None = "auto", **others: str) -> tuple[dict[str, str], str | None]:
    """Cookies of a browser whose ETLS access token expired, in this order: the ETLS pair, `theme`
    (when given), the login API's two cookies (the access one `up-access-old`; the refresh one
    `upstream_refresh`, a fresh random value for "auto", left out for None), then `others`.
    Returns (cookies, the login API refresh cookie's value)."""
    up_refresh = f"up-refresh-{uuid.uuid4().hex}" if upstream_refresh == "auto" else upstream_refresh
    c = gw.session(tokens.expired_access(user_id, role), tokens.refresh(user_id, role))
    if theme is not None:
        c["theme"] = theme
    c[gw.upstream_access_cookie] = "up-access-old"
    if up_refresh is not None:
        c[gw.upstream_refresh_cookie] = up_refresh
    c.update(others)
    return c, up_refresh
