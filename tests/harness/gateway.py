"""A Gateway bundles one running Envoy with the filter and the upstreams behind it, plus the
filter settings (the defaults of docs/configuration.md overlaid with the plugin JSON) the tests need to know.

Every request a Gateway sends carries a unique `x-etls-probe` header, so a test can ask whether
that request reached the app (`gw.reached_app(resp)`).
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, Mapping

from . import client
from .envoy import Envoy
from .upstreams import EchoApp, Seen, StubServer

# The defaults of docs/configuration.md.
DEFAULTS: dict[str, Any] = {
    "login_upstream_path": "/login",
    "login_timeout_ms": 5000,
    "refresh_timeout_ms": 2000,
    "login_path": "/api/auth/login",
    "refresh_path": "/api/auth/refreshtoken",
    "logout_path": "/api/auth/logout",
    "login_page": "/login",
    "public_paths": ["/login"],
    "bypass_cors_preflight": True,
    "access_ttl_s": 900,
    "refresh_ttl_s": 604800,
    "access_secret_env": "ETLS_ACCESS",
    "refresh_secret_env": "ETLS_REFRESH",
    "clock_skew_s": 5,
    "cookie_secure": True,
    "cookie_same_site": "Strict",
    "cookie_domain": None,
    "access_cookie": "accessTokenEtls",
    "refresh_cookie": "refreshTokenEtls",
    "upstream_access_cookie": "accessToken",
    "upstream_refresh_cookie": "refreshToken",
    "user_id_header": "x-etls-user-id",
    "role_header": "x-etls-role",
    "max_login_body_bytes": 16384,
    "max_session_s": 2592000,
}

PROBE_HEADER = "x-etls-probe"


@dataclass
class Gateway:
    name: str
    mode: str  # "inline" or "cluster" (refresh_cluster set)
    envoy: Envoy
    app: EchoApp
    login: StubServer
    plugin: Mapping[str, Any]
    env: Mapping[str, str]
    refresh_stub: StubServer | None = None

    # --- settings --------------------------------------------------------------------------
    def setting(self, key: str) -> Any:
        return self.plugin.get(key, DEFAULTS.get(key))

    def __getattr__(self, key: str) -> Any:
        if key in DEFAULTS:
            return self.setting(key)
        raise AttributeError(key)

    @property
    def port(self) -> int:
        assert self.envoy.listener_port is not None
        return self.envoy.listener_port

    @property
    def access_secret(self) -> str:
        return self.env[self.setting("access_secret_env")]

    @property
    def refresh_secret(self) -> str:
        return self.env[self.setting("refresh_secret_env")]

    @property
    def cookie_names(self) -> list[str]:
        """The four cookie names, in the order ETLS access, ETLS refresh, upstream access, upstream refresh."""
        return [self.access_cookie, self.refresh_cookie, self.upstream_access_cookie, self.upstream_refresh_cookie]

    # --- requests --------------------------------------------------------------------------
    def request(self, method: str, path: str, *, headers: Mapping[str, str] | list | None = None, **kw: Any) -> client.Response:
        probe = uuid.uuid4().hex
        hdrs: list[tuple[str, str]] = list(headers.items() if isinstance(headers, Mapping) else (headers or []))
        hdrs.append((PROBE_HEADER, probe))
        r = client.request(self.port, method, path, headers=hdrs, **kw)
        r.probe = probe  # type: ignore[attr-defined]
        return r

    def get(self, path: str, **kw: Any) -> client.Response:
        return self.request("GET", path, **kw)

    def post(self, path: str, **kw: Any) -> client.Response:
        return self.request("POST", path, **kw)

    def session(self, access: str | None = None, refresh: str | None = None, **others: str) -> dict[str, str]:
        """A cookie dict with the configured ETLS cookie names."""
        c: dict[str, str] = {}
        if access is not None:
            c[self.access_cookie] = access
        if refresh is not None:
            c[self.refresh_cookie] = refresh
        c.update(others)
        return c

    def app_saw(self, resp: client.Response) -> list[Seen]:
        """The app's records of `resp`'s request (empty when it never reached the app)."""
        return self.app.with_header(PROBE_HEADER, resp.probe)  # type: ignore[attr-defined]

    def reached_app(self, resp: client.Response) -> bool:
        return bool(self.app_saw(resp))

    def __repr__(self) -> str:
        return f"<Gateway {self.name} mode={self.mode} {self.envoy!r}>"
