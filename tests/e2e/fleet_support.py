"""Helpers for the fleet tests (tests/e2e/test_fleet*.py) and the replica-leaving measurement
(tests/load/fleet_leave.py): the shipped fleet (deploy/fleet/render.py) started on free loopback ports
with the test secrets, and a login API whose refresh tokens work once."""
from __future__ import annotations

import importlib.util
import json
import random
import secrets
import socket
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import yaml

from harness import envoy as henvoy
from harness import paths, tokens
from harness.client import Response, request
from harness.upstreams import StubServer

RENDER = paths.REPO / "deploy" / "fleet" / "render.py"
REPLICAS = 3
REFRESH_PATH = "/refresh"


def render_module():
    spec = importlib.util.spec_from_file_location("fleet_render", RENDER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class SingleUseLoginApi(StubServer):
    """A login API whose refresh tokens work once: `POST /refresh` with a token it issued and
    nobody used answers 200 with new tokens (after `delay` seconds, so a burst overlaps the
    call); a token used before, or unknown, gets 401, as many real login APIs do."""

    def __init__(self, name: str = "single_use_login_api", delay: float = 0.3) -> None:
        super().__init__(name)
        self.delay = delay
        self._valid: dict[str, dict] = {}
        self.answers: list[tuple[str, int]] = []  # (refresh token sent, status answered)

    def issue(self, user: dict | None = None) -> str:
        """A new upstream refresh token for `user` (userData), as after a login."""
        token = "up-refresh-" + secrets.token_urlsafe(16)
        with self._lock:
            self._valid[token] = user or {"id": 4242, "role": "editor"}
        return token

    def refresh_calls(self) -> list:
        return [s for s in self.requests() if s.path == REFRESH_PATH]

    def _respond(self, h, seen) -> None:
        from harness.upstreams import _send
        try:
            sent = json.loads(seen.body).get("refreshToken")
        except (ValueError, AttributeError):
            sent = None
        with self._lock:
            user = self._valid.pop(sent, None) if isinstance(sent, str) else None
            if user is not None:
                new_refresh = self.issue_locked(user)
                body = {"accessToken": "up-access-" + uuid.uuid4().hex, "refreshToken": new_refresh, "userData": user}
                status = 200
            else:
                body, status = {"error": "Invalid refresh token"}, 401
            self.answers.append((str(sent), status))
        if self.delay:
            time.sleep(self.delay)
        _send(h, status, [("Content-Type", "application/json")], json.dumps(body).encode())

    def issue_locked(self, user: dict) -> str:
        token = "up-refresh-" + secrets.token_urlsafe(16)
        self._valid[token] = user
        return token


def _ports_free(ports: list[int]) -> bool:
    for p in ports:
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", p))
            except OSError:
                return False
    return True


@dataclass
class Fleet:
    base: int
    replicas: list[henvoy.Envoy]
    front: henvoy.Envoy | None
    configs: dict[str, dict] = field(default_factory=dict)

    @property
    def port(self) -> int:
        """The front's listener."""
        return self.base

    def public_port(self, i: int) -> int:
        return self.base + 10 * (i + 1)

    def stat(self, i: int, name: str) -> int:
        return self.replicas[i].stat(name) or 0

    def listener_requests(self, listener: str) -> list[int]:
        """downstream_rq_total of `listener` (public, refresh_router, refresh) on each replica."""
        return [self.stat(i, f"http.{listener}.downstream_rq_total") for i in range(len(self.replicas))]

    def get(self, path: str, port: int | None = None, **kw: Any) -> Response:
        return request(port or self.port, "GET", path, **kw)

    def stop(self) -> None:
        for e in [self.front, *self.replicas]:
            if e is not None:
                e.stop()


def fleet_configs(base: int, app_port: int, login_port: int, *, refresh_stub_port: int | None = None) -> dict[str, dict]:
    """The shipped fleet's configs (deploy/fleet/render.py) for these ports and the test
    secrets, as dicts. With `refresh_stub_port`, every replica's ring (`fleet_refresh`) is that
    one stub instead of the replicas' refresh listeners (to see the refresh calls' headers)."""
    texts = render_module().render(base=base, app_port=app_port, login_port=login_port, wasm=str(paths.wasm_path()),
                                   access=henvoy.SECRETS["ETLS_ACCESS"], refresh=henvoy.SECRETS["ETLS_REFRESH"])
    configs = {name: yaml.safe_load(text) for name, text in texts.items()}
    if refresh_stub_port is not None:
        for name, cfg in configs.items():
            for c in cfg["static_resources"]["clusters"]:
                if c["name"] == "fleet_refresh":
                    c["load_assignment"]["endpoints"][0]["lb_endpoints"] = [
                        {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": refresh_stub_port}}}}]
    return configs


def start_fleet(name: str, app_port: int, login_port: int, *, front: bool = True, refresh_stub_port: int | None = None,
                attempts: int = 10) -> Fleet:
    """Three replicas (Envoy --concurrency 2 each) and, with `front`, the round-robin front
    (--concurrency 1), on a free block of 40 loopback ports below the kernel's ephemeral range
    (where outgoing connections take their local ports). Retries (bounded) on a port race."""
    last: Exception | None = None
    for _ in range(attempts):
        base = random.randrange(20000, 32000, 100)
        if not _ports_free([base + k for k in range(10 * REPLICAS + 10)]):
            continue
        configs = fleet_configs(base, app_port, login_port, refresh_stub_port=refresh_stub_port)
        started: list[henvoy.Envoy] = []
        try:
            for i in range(1, REPLICAS + 1):
                e = henvoy.Envoy(f"{name}-replica-{i}", configs[f"replica-{i}.yaml"], base + 10 * i, base + 10 * i + 9,
                                 concurrency=2)
                started.append(e)
                e.start(wait=False)
            for e in started:
                e.wait_ready()
            front_envoy = None
            if front:
                front_envoy = henvoy.Envoy(f"{name}-front", configs["front.yaml"], base, base + 9, concurrency=1)
                started.append(front_envoy)
                front_envoy.start()
            fleet = Fleet(base, started[:REPLICAS], front_envoy, configs)
            wait_all_healthy(fleet)
            return fleet
        except paths.HarnessError as err:
            for e in started:
                e.stop()
            last = err
    raise paths.HarnessError(f"could not start fleet {name}: {last}")


def healthy_hosts(e: henvoy.Envoy, cluster: str) -> int:
    """How many hosts of `cluster` Envoy `e` counts healthy (admin /clusters)."""
    _, body = e.admin_get("/clusters")
    n = 0
    for line in body.splitlines():
        if line.startswith(f"{cluster}::") and line.endswith("::health_flags::healthy"):
            n += 1
    return n


def wait_all_healthy(fleet: Fleet, timeout: float = 15.0) -> None:
    """Bounded poll until the front counts every replica healthy (its active health checks begin
    with every host unknown). The replicas' ring has no health checks."""
    deadline = time.monotonic() + timeout
    while fleet.front is not None and time.monotonic() < deadline:
        if healthy_hosts(fleet.front, "replicas") == REPLICAS:
            return
        time.sleep(0.1)
    if fleet.front is not None:
        raise paths.HarnessError(f"fleet front not healthy after {timeout}s")


def expired_session(up_refresh: str, *, user_id: Any = 4242, role: Any = "editor") -> dict[str, str]:
    """A browser's cookies after its ETLS access token expired, with the login API's tokens."""
    return {
        "accessTokenEtls": tokens.expired_access(user_id, role),
        "refreshTokenEtls": tokens.refresh(user_id, role),
        "accessToken": "up-access-old",
        "refreshToken": up_refresh,
    }


def burst(fleet: Fleet, cookies: dict[str, str], n: int, *, timeout: float = 20.0) -> list[Response | Exception]:
    """n requests of one session released together through the front, each on its own
    connection; a request that fails at the socket gives its exception instead of a Response."""
    from harness.client import at_once

    def one(i: int) -> Response | Exception:
        try:
            return fleet.get(f"/burst/{i}", cookies=cookies, timeout=timeout)
        except OSError as err:
            return err

    return at_once(n, one, timeout=timeout + 10)
