"""Helpers for the login tests (tests/e2e/test_login*.py): raw requests the shared client does
not make (chunked bodies), a login body of an exact size, a port that refuses connections, and a
gateway whose login cluster points at that port."""
from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from typing import Iterable

from harness import envoy as henvoy
from harness import paths
from harness.client import Response
from harness.gateway import Gateway


def login_body(email: str, password: str) -> bytes:
    return json.dumps({"email": email, "password": password}).encode()


def login_body_of_size(size: int, email: str = "big@example.test") -> tuple[bytes, str]:
    """A valid login JSON body of exactly `size` bytes (the password is padded). Returns
    (body, password)."""
    empty = len(login_body(email, ""))
    assert size >= empty, size
    password = "p" * (size - empty)
    body = login_body(email, password)
    assert len(body) == size
    return body, password


def post_chunked(port: int, path: str, chunks: Iterable[bytes], *, headers: dict | None = None,
                 pause: float = 0.0, timeout: float = 15.0) -> Response:
    """POST with Transfer-Encoding: chunked (no Content-Length), one HTTP chunk per item, with
    an optional pause between chunks so the filter sees the body in several pieces. A server
    that answers (e.g. 413) before the body is complete may reset the connection: sending
    stops then and the answer is read anyway."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        head = [f"POST {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Accept: application/json",
                "Content-Type: application/json", "Transfer-Encoding: chunked"]
        for k, v in (headers or {}).items():
            head.append(f"{k}: {v}")
        try:
            sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
            for chunk in chunks:
                if pause:
                    time.sleep(pause)
                sock.sendall(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            sock.sendall(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass
        resp = http.client.HTTPResponse(sock, method="POST")
        resp.begin()
        body = resp.read()
        return Response(resp.status, resp.reason, list(resp.getheaders()), body)
    finally:
        sock.close()


class RefusingPort:
    """A loopback port that is bound but not listening: connecting to it is refused at once
    (RST), and no other process can take it while this object holds it."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]

    def close(self) -> None:
        self.sock.close()


def start_gateway_on(upstreams, name: str, *, app_port: int, login_port: int, concurrency: int = 1,
                     allow_on_headers_stop_iteration: bool = True, **plugin_keys) -> Gateway:
    """An Envoy with the filter whose app and login_api clusters point at the given ports (e.g.
    a RefusingPort), with the other upstreams of the session."""
    env = dict(henvoy.SECRETS)
    plugin = henvoy.plugin_config(**plugin_keys)
    e = henvoy.start_gateway(name, plugin=plugin, env=env, clusters={"app": app_port, "login_api": login_port},
                             concurrency=concurrency, allow_on_headers_stop_iteration=allow_on_headers_stop_iteration)
    return Gateway(name=name, mode="inline", envoy=e, app=upstreams.app, login=upstreams.login,
                   plugin=plugin, env=env)


class DemoLoginApi:
    """demo/login_api.py as a subprocess on a free port (the real demo login API), stopped by PID."""

    def __init__(self, *args: str) -> None:
        """`args`: more command-line arguments (e.g. "--admin-port", "1234")."""
        self.port = henvoy.free_port()
        self.args = list(args)
        self.log_path = paths.out_dir("login-demo-api") / f"login_api-{self.port}.log"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 15.0) -> "DemoLoginApi":
        log = open(self.log_path, "wb")
        try:
            self.proc = subprocess.Popen([sys.executable, str(paths.REPO / "demo" / "login_api.py"), "--port", str(self.port), *self.args],
                                         stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        finally:
            log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"demo/login_api.py exited with {self.proc.returncode}: {self.log_path.read_text()}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=1)
                conn.request("GET", "/healthz")
                if conn.getresponse().status == 200:
                    conn.close()
                    return self
                conn.close()
            except OSError:
                pass
            time.sleep(0.1)
        self.stop()
        raise AssertionError(f"demo/login_api.py not ready after {timeout} s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
