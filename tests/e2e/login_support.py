"""Helpers for the login tests (tests/e2e/test_login*.py): raw requests the shared client does
not make (chunked bodies), a login body of an exact size, a port that refuses connections, and a
gateway whose login cluster points at that port."""
from __future__ import annotations

import http.client
import json
import socket
import time
from typing import Iterable

from harness import envoy as henvoy
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


def start_gateway_on(upstreams, name: str, *, app_port: int, login_port: int, **plugin_keys) -> Gateway:
    """An Envoy with the filter whose app and login_api clusters point at the given ports (e.g.
    a RefusingPort), with the other upstreams of the session."""
    env = dict(henvoy.SECRETS)
    plugin = henvoy.plugin_config(**plugin_keys)
    e = henvoy.start_gateway(name, plugin=plugin, env=env, clusters={"app": app_port, "login_api": login_port})
    return Gateway(name=name, mode="inline", envoy=e, app=upstreams.app, login=upstreams.login,
                   plugin=plugin, env=env)
