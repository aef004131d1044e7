"""Real HTTP/1.1 upstream servers for the tests, each a ThreadingHTTPServer in a daemon thread on
127.0.0.1 and a free port.

- EchoApp: the protected app. Answers 200 with JSON of what it received (method, raw path,
  every header in order, every Cookie header, body, and the request head exactly as the bytes
  came on the wire, `raw_head_b64`) and records each request so tests can
  assert that a request never reached the app. `x-echo-status` / `x-echo-set-cookie` request
  headers make it answer another status or add its own Set-Cookie.
- StubServer: answers from a queue of `Reply`s set per test (status, headers, body, delay, or
  an abrupt close) and records requests. Used as the login API and as a failing refresh cluster.
"""
from __future__ import annotations

import base64
import json
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable


@dataclass
class Seen:
    """One request as an upstream received it. `raw_head` is the request line and header lines
    byte for byte as they came on the wire (header values in `headers` are latin-1 decoded)."""
    method: str
    path: str
    headers: list[tuple[str, str]]
    body: bytes
    raw_head: bytes = b""

    def raw_header_values(self, name: str) -> list[bytes]:
        """Every value of header `name` in the raw head, exactly the bytes after `name:` up to CRLF."""
        out = []
        for line in self.raw_head.split(b"\r\n")[1:]:
            k, sep, v = line.partition(b":")
            if sep and k.decode("latin-1").lower() == name.lower():
                out.append(v)
        return out

    def header(self, name: str) -> str | None:
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None

    def header_all(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def json(self) -> Any:
        return json.loads(self.body)


class _RecordingReader:
    """Wraps a handler's rfile and keeps the bytes of every `readline` (the request line and the
    header lines) until `take` hands them over."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self._lines: list[bytes] = []

    def readline(self, *args: Any) -> bytes:
        line = self._inner.readline(*args)
        self._lines.append(line)
        return line

    def take(self) -> bytes:
        out = b"".join(self._lines)
        self._lines = []
        return out

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    # listen() backlog: the default 5 overflows when Envoy opens dozens of upstream connections at
    # once (e.g. 64 rotations released together by one shared login API answer), and a dropped SYN
    # comes back as Envoy's 503 "connection timeout" after connect_timeout.
    request_queue_size = 256


class _Base:
    def __init__(self, name: str):
        self.name = name
        self.seen: list[Seen] = []
        self._lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, fmt: str, *args: Any) -> None:  # keep pytest output clean
                pass

            def setup(self) -> None:
                super().setup()
                self.rfile = _RecordingReader(self.rfile)

            def _handle(self) -> None:
                raw_head = self.rfile.take()
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                if not length and (self.headers.get("Transfer-Encoding") or "").lower() == "chunked":
                    body = _read_chunked(self.rfile)
                self.rfile.take()
                seen = Seen(self.command, self.path, list(self.headers.items()), body, raw_head)
                with owner._lock:
                    owner.seen.append(seen)
                owner._respond(self, seen)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_HEAD = _handle

        self._server = _Server(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name=f"upstream-{name}", daemon=True)

    def start(self) -> "_Base":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def clear(self) -> None:
        with self._lock:
            self.seen.clear()

    def requests(self) -> list[Seen]:
        with self._lock:
            return list(self.seen)

    def find(self, pred: Callable[[Seen], bool]) -> list[Seen]:
        return [s for s in self.requests() if pred(s)]

    def with_header(self, name: str, value: str) -> list[Seen]:
        """Requests that carried header `name` with `value` (e.g. a per-test probe id)."""
        return self.find(lambda s: value in s.header_all(name))

    def _respond(self, h: BaseHTTPRequestHandler, seen: Seen) -> None:
        raise NotImplementedError


def _read_chunked(rfile: Any) -> bytes:
    out = b""
    for _ in range(1_000_000):
        line = rfile.readline().strip()
        size = int(line.split(b";")[0], 16)
        if size == 0:
            rfile.readline()
            break
        out += rfile.read(size)
        rfile.readline()
    return out


def _send(h: BaseHTTPRequestHandler, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
    h.send_response(status)
    names = {k.lower() for k, _ in headers}
    for k, v in headers:
        h.send_header(k, v)
    if "content-length" not in names:
        h.send_header("Content-Length", str(len(body)))
    h.end_headers()
    if h.command != "HEAD":
        h.wfile.write(body)


class EchoApp(_Base):
    """The app behind the filter: echoes the request back as JSON."""

    def __init__(self) -> None:
        super().__init__("app")

    def _respond(self, h: BaseHTTPRequestHandler, seen: Seen) -> None:
        try:
            text = seen.body.decode("utf-8")
        except UnicodeDecodeError:
            text = None
        payload = {
            "method": seen.method,
            "path": seen.path,
            "headers": [[k, v] for k, v in seen.headers],
            "cookies": seen.header_all("Cookie"),
            "body": text,
            "body_b64": base64.b64encode(seen.body).decode(),
            "raw_head_b64": base64.b64encode(seen.raw_head).decode(),
        }
        body = json.dumps(payload).encode()
        status = int(seen.header("x-echo-status") or 200)
        headers = [("Content-Type", "application/json")]
        for c in seen.header_all("x-echo-set-cookie"):
            headers.append(("Set-Cookie", c))
        _send(h, status, headers, body)


@dataclass
class Reply:
    """What a StubServer answers: `body` may be bytes, str or a JSON-able object.
    `close` drops the connection without answering (a failed upstream)."""
    status: int = 200
    body: Any = b""
    headers: list[tuple[str, str]] = field(default_factory=list)
    delay: float = 0.0
    close: bool = False

    def encoded(self) -> tuple[list[tuple[str, str]], bytes]:
        headers = list(self.headers)
        if isinstance(self.body, bytes):
            body = self.body
        elif isinstance(self.body, str):
            body = self.body.encode()
        else:
            body = json.dumps(self.body).encode()
            if not any(k.lower() == "content-type" for k, _ in headers):
                headers.append(("Content-Type", "application/json"))
        return headers, body


class StubServer(_Base):
    """Answers each request with the next queued Reply, or the default when the queue is empty."""

    def __init__(self, name: str, default: Reply | None = None) -> None:
        super().__init__(name)
        self.default = default or Reply(503, {"error": "stub not configured"})
        self._queue: list[Reply] = []

    def reply(self, *replies: Reply) -> None:
        """Set the replies for the next requests (replacing any left from an earlier test)."""
        with self._lock:
            self._queue = list(replies)

    def always(self, reply: Reply) -> None:
        """Answer every request with `reply` until changed."""
        with self._lock:
            self._queue = []
            self.default = reply

    def _respond(self, h: BaseHTTPRequestHandler, seen: Seen) -> None:
        with self._lock:
            r = self._queue.pop(0) if self._queue else self.default
        if r.delay:
            time.sleep(r.delay)
        if r.close:
            h.close_connection = True
            try:
                h.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        headers, body = r.encoded()
        _send(h, r.status, headers, body)


def login_ok(user_data: dict | None = None, access: str = "upstream-access-token", refresh: str = "upstream-refresh-token") -> Reply:
    """A successful login API answer: {accessToken, refreshToken, userData}."""
    return Reply(200, {"accessToken": access, "refreshToken": refresh, "userData": user_data or {"id": 7, "role": "admin", "email": "a@example.test"}})
