"""Faults of the login API and of the refresh cluster, in a real Envoy (issue 6, hardening).

One Envoy (one worker, so every request meets the same Wasm VM) whose `login_api` and
`etls_refresh` clusters point at a raw-socket fault server, plus one whose clusters point at a
port that refuses connections. Each fault is:

  slow      answers after 2 s; login_timeout_ms / refresh_timeout_ms are 500
  refused   nothing listens (connection refused)
  reset     status line, headers and part of the body, then a TCP reset
  huge      200 with a 5 MiB body (the filter reads at most 64 KiB of a dispatched answer)
  5xx       503 with a JSON error
  non-json  200 with an HTML body

Expected: the login route answers 502 {"error":"Login service unavailable"} or, for a
timeout, 504 {"error":"Login service timed out"}, sets no cookie and never reaches the app; a
protected request whose rotation needs the refresh cluster is denied: 401 {"error":"Unauthorized"}
or, for a page load, 302 to the login page, with the four clearing cookies. After every fault
the next valid request is served normally (the VM survived), and Envoy never reloaded the VM.
"""
from __future__ import annotations

import json
import socket
import struct
import sys
import threading
import time
from pathlib import Path
from typing import Callable

import pytest

from harness import checks, tokens
from harness import envoy as henvoy
from harness.gateway import Gateway

sys.path.insert(0, str(Path(__file__).resolve().parent))
from login_support import RefusingPort, login_body  # noqa: E402

LOGIN = "/api/auth/login"
JSON = {"Content-Type": "application/json"}
TIMEOUT_MS = 500
SLOW_S = 2.0
HUGE = 5 * 1024 * 1024

UNAVAILABLE = {"error": "Login service unavailable"}
TIMED_OUT = {"error": "Login service timed out"}


class FaultServer:
    """A loopback HTTP/1.1 server on raw sockets, so it can misbehave in ways http.server
    cannot (reset in the middle of a body). `mode` picks the behaviour for the next requests;
    `good` is what mode "ok" answers (a callable of the request path)."""

    def __init__(self) -> None:
        self.mode = "ok"
        self.good: Callable[[str], tuple[int, list[tuple[str, str]], bytes]] = lambda path: (503, [], b"{}")
        self.hits: list[str] = []
        self._lock = threading.Lock()
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self._sock.settimeout(0.5)
        self.port = self._sock.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="fault-server", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._sock.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                continue
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    @staticmethod
    def _read_request(conn: socket.socket) -> str | None:
        conn.settimeout(10)
        data = b""
        while b"\r\n\r\n" not in data and len(data) < 1 << 20:
            chunk = conn.recv(65536)
            if not chunk:
                return None
            data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        length = 0
        for line in lines[1:]:
            k, _, v = line.partition(":")
            if k.strip().lower() == "content-length":
                length = int(v.strip() or 0)
        while len(rest) < length:
            chunk = conn.recv(65536)
            if not chunk:
                break
            rest += chunk
        return lines[0].split(" ")[1] if " " in lines[0] else "?"

    def _handle(self, conn: socket.socket) -> None:
        try:
            path = self._read_request(conn)
            if path is None:
                return
            with self._lock:
                self.hits.append(path)
                mode = self.mode
            if mode == "slow":
                time.sleep(SLOW_S)
                mode = "ok"
            if mode == "ok":
                status, headers, body = self.good(path)
                self._send(conn, status, headers, body)
            elif mode == "reset":
                head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 4000\r\n\r\n"
                conn.sendall(head.encode() + b'{"accessToken":"a","refreshToken":"r","userData":{"id":1,')
                time.sleep(0.05)
                # SO_LINGER 0: close sends RST instead of FIN.
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            elif mode == "huge":
                head = f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {HUGE}\r\n\r\n"
                conn.sendall(head.encode())
                piece = b'{"pad":"' + b"x" * (1 << 16)
                sent = 0
                while sent < HUGE:
                    n = min(len(piece), HUGE - sent)
                    conn.sendall(piece[:n])
                    sent += n
            elif mode == "5xx":
                self._send(conn, 503, [("Content-Type", "application/json")], b'{"error":"maintenance"}')
            elif mode == "non-json":
                self._send(conn, 200, [("Content-Type", "text/html")], b"<html><body>Welcome!</body></html>")
            else:
                raise ValueError(mode)
        except OSError:
            pass
        finally:
            conn.close()

    @staticmethod
    def _send(conn: socket.socket, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        lines = [f"HTTP/1.1 {status} X"] + [f"{k}: {v}" for k, v in headers] + [f"Content-Length: {len(body)}", "Connection: close"]
        conn.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + body)


def _good_answers(gw_ref: list[Gateway]) -> Callable[[str], tuple[int, list[tuple[str, str]], bytes]]:
    """Mode "ok": the login API's success, and the refresh cluster's new pair for user 42."""
    def answer(path: str):
        if path == "/login":
            body = {"accessToken": "api-access", "refreshToken": "api-refresh", "userData": {"id": 42, "role": "admin"}}
            return 200, [("Content-Type", "application/json")], json.dumps(body).encode()
        gw = gw_ref[0]
        # As the filter's own refresh route mints them: the session's auth_time carried over.
        auth_time = tokens.now() - 60
        a, r = tokens.access(42, "admin", auth_time=auth_time), tokens.refresh(42, "admin", auth_time=auth_time)
        return 200, [("Set-Cookie", f"{gw.access_cookie}={a}; Path=/"), ("Set-Cookie", f"{gw.refresh_cookie}={r}; Path=/")], b"{}"
    return answer


def _gateway(name: str, upstreams, login_port: int, refresh_port: int) -> Gateway:
    env = dict(henvoy.SECRETS)
    plugin = henvoy.plugin_config(refresh_cluster="etls_refresh", login_timeout_ms=TIMEOUT_MS, refresh_timeout_ms=TIMEOUT_MS)
    e = henvoy.start_gateway(name, plugin=plugin, env=env, concurrency=1,
                             clusters={"app": upstreams.app.port, "login_api": login_port, "etls_refresh": refresh_port})
    return Gateway(name=name, mode="cluster", envoy=e, app=upstreams.app, login=upstreams.login, plugin=plugin, env=env)


@pytest.fixture(scope="module")
def faulty(upstreams):
    server = FaultServer()
    ref: list[Gateway] = []
    server.good = _good_answers(ref)
    gw = _gateway("faults", upstreams, server.port, server.port)
    ref.append(gw)
    yield gw, server
    gw.envoy.stop()
    server.stop()


@pytest.fixture(scope="module")
def refused(upstreams):
    port = RefusingPort()
    gw = _gateway("faults-refused", upstreams, port.port, port.port)
    yield gw
    gw.envoy.stop()
    port.close()


FAULTS = ["slow", "refused", "reset", "huge", "5xx", "non-json"]


def _target(fault: str, faulty, refused) -> tuple[Gateway, FaultServer | None]:
    if fault == "refused":
        return refused, None
    gw, server = faulty
    server.mode = fault
    return gw, server


def _login(gw: Gateway):
    return gw.post(LOGIN, body=login_body("fault@example.test", "fault-password-1234"), headers=JSON, timeout=15)


def _still_serves(gw: Gateway, server: FaultServer | None) -> None:
    """The VM survived: a valid session is forwarded with its identity, an expired access token
    with a valid refresh token still gets a (failing or working) rotation answer, and, when the
    login API works again, a login succeeds with four cookies. Envoy reloaded no VM."""
    r = gw.get("/after-fault", cookies=gw.session(tokens.access(7, "user"), tokens.refresh(7, "user")))
    checks.identity(checks.echo(r), gw, "7", "user")
    if server is not None:
        server.mode = "ok"
        r = _login(gw)
        assert r.status == 200, r
        assert r.json() == {"message": "Login successful", "userData": {"id": 42, "role": "admin"}}
        assert len(r.set_cookie_headers) == 4
        r = gw.get("/after-fault/rotate", cookies=gw.session(tokens.expired_access(42, "admin"), tokens.refresh(42, "admin")))
        checks.echo(r)
        checks.rotated(r, gw, user_id=42, role="admin")
    assert gw.envoy.stat("wasm.etls_auth.vm_reload") == 0, "Envoy reloaded the Wasm VM: it trapped"
    log = gw.envoy.log_text()
    for bad in ("panicked", "Function: proxy_on_", "wasm trap", "Wasm VM failed"):
        assert bad not in log, f"{gw.envoy.log_path}: {bad!r}"


@pytest.mark.parametrize("fault", FAULTS)
def test_login_api_fault_gives_502_or_504_json_and_no_cookie(faulty, refused, fault):
    gw, server = _target(fault, faulty, refused)
    t0 = time.monotonic()
    r = _login(gw)
    elapsed = time.monotonic() - t0
    if fault == "slow":
        # Envoy's own timeout of the dispatched call: 504.
        assert (r.status, r.json()) == (504, TIMED_OUT), r
        assert elapsed < SLOW_S - 0.5, f"answered after {elapsed:.2f}s; login_timeout_ms is {TIMEOUT_MS}"
    else:
        assert (r.status, r.json()) == (502, UNAVAILABLE), r
    assert (r.header("content-type") or "").startswith("application/json"), r
    assert r.set_cookie_headers == [], f"a failed login set cookies: {r.set_cookie_headers}"
    assert not gw.reached_app(r)
    if server is not None:
        assert "/login" in server.hits, "the fault server never saw the login call"
    if fault == "slow":
        time.sleep(SLOW_S - elapsed + 0.2)  # let the slow answer finish before the next request
    _still_serves(gw, server)


@pytest.mark.parametrize("html", [False, True], ids=["api", "page"])
@pytest.mark.parametrize("fault", FAULTS)
def test_refresh_cluster_fault_denies_and_clears(faulty, refused, fault, html):
    gw, server = _target(fault, faulty, refused)
    if server is not None:
        server.hits.clear()
    t0 = time.monotonic()
    r = gw.get("/orders?page=2", accept="text/html" if html else "application/json",
               cookies=gw.session(tokens.expired_access(42, "admin"), tokens.refresh(42, "admin"), theme="dark"))
    elapsed = time.monotonic() - t0
    checks.denied(r, gw, html=html, original="/orders?page=2")
    if server is not None:
        assert gw.refresh_path in server.hits, "the fault server never saw the refresh call"
    if fault == "slow":
        assert elapsed < SLOW_S - 0.5, f"denied after {elapsed:.2f}s; refresh_timeout_ms is {TIMEOUT_MS}"
        time.sleep(SLOW_S - elapsed + 0.2)
    _still_serves(gw, server)
