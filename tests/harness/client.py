"""A raw HTTP/1.1 client for the tests, on http.client:

- sends the path exactly as given (no dot-segment removal, unlike requests/urllib3),
- never follows redirects,
- returns every header in order, so each Set-Cookie header is seen on its own,
and a parser of one Set-Cookie header into name, value and attributes.
"""
from __future__ import annotations

import http.client
import json
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, TypeVar


@dataclass
class SetCookie:
    """One Set-Cookie header. `attrs` maps the lower-cased attribute name to its value
    (True for flags such as HttpOnly); `attr_names` keeps the names as sent, in order."""
    raw: str
    name: str
    value: str
    attrs: dict[str, Any] = field(default_factory=dict)
    attr_names: list[str] = field(default_factory=list)

    def get(self, attr: str, default: Any = None) -> Any:
        return self.attrs.get(attr.lower(), default)

    def has(self, attr: str) -> bool:
        return attr.lower() in self.attrs

    @property
    def max_age(self) -> int | None:
        v = self.get("max-age")
        return int(v) if isinstance(v, str) and v.lstrip("-").isdigit() else None


def parse_set_cookie(header: str) -> SetCookie:
    """Parse one Set-Cookie value per RFC 6265 section 5.2 (attribute names case-insensitive)."""
    parts = header.split(";")
    first = parts[0]
    name, sep, value = first.partition("=")
    if not sep:
        raise ValueError(f"Set-Cookie without '=': {header!r}")
    sc = SetCookie(raw=header, name=name.strip(), value=value.strip())
    for part in parts[1:]:
        k, eq, v = part.partition("=")
        k = k.strip()
        if not k:
            continue
        sc.attr_names.append(k)
        sc.attrs[k.lower()] = v.strip() if eq else True
    return sc


@dataclass
class Response:
    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None

    def header_all(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]

    @property
    def set_cookie_headers(self) -> list[str]:
        return self.header_all("Set-Cookie")

    @property
    def set_cookies(self) -> list[SetCookie]:
        return [parse_set_cookie(h) for h in self.set_cookie_headers]

    def cookie(self, name: str) -> SetCookie | None:
        """The (single) Set-Cookie for `name`; fails if there are several."""
        found = [c for c in self.set_cookies if c.name == name]
        assert len(found) <= 1, f"several Set-Cookie for {name}: {self.set_cookie_headers}"
        return found[0] if found else None

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def __repr__(self) -> str:
        return f"<Response {self.status} headers={self.headers} body={self.body[:300]!r}>"


def cookie_header(cookies: Mapping[str, str] | Iterable[tuple[str, str]]) -> str:
    items = cookies.items() if isinstance(cookies, Mapping) else cookies
    return "; ".join(f"{k}={v}" for k, v in items)


def request(
    port: int,
    method: str,
    path: str,
    *,
    headers: Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
    cookies: Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
    body: bytes | str | Any = None,
    accept: str | None = "application/json",
    host: str = "127.0.0.1",
    timeout: float = 15.0,
) -> Response:
    """Send one request to 127.0.0.1:`port` on a fresh connection. `path` goes out verbatim.
    `body` may be bytes, str, or an object sent as JSON. `cookies` becomes one Cookie header."""
    hdrs: list[tuple[str, str]] = []
    if accept is not None:
        hdrs.append(("Accept", accept))
    if headers:
        hdrs.extend(headers.items() if isinstance(headers, Mapping) else headers)
    if cookies:
        hdrs.append(("Cookie", cookie_header(cookies)))
    data: bytes | None
    if body is None:
        data = None
    elif isinstance(body, bytes):
        data = body
    elif isinstance(body, str):
        data = body.encode()
    else:
        data = json.dumps(body).encode()
        if not any(k.lower() == "content-type" for k, _ in hdrs):
            hdrs.append(("Content-Type", "application/json"))
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        for k, v in hdrs:
            conn.putheader(k, v)
        if data is not None:
            conn.putheader("Content-Length", str(len(data)))
        elif method in ("POST", "PUT", "PATCH"):
            conn.putheader("Content-Length", "0")
        conn.endheaders(data)
        r = conn.getresponse()
        payload = r.read()
        return Response(r.status, r.reason, list(r.getheaders()), payload)
    finally:
        conn.close()


T = TypeVar("T")


def at_once(n: int, send: Callable[[int], T], timeout: float = 30) -> list[T]:
    """Runs `send(0)` .. `send(n - 1)` on n threads released together (a browser's burst), and
    returns their results in that order. A thread not released within `timeout` fails the run."""
    start = threading.Barrier(n, timeout=timeout)

    def one(i: int) -> T:
        start.wait()
        return send(i)

    with ThreadPoolExecutor(max_workers=n) as pool:
        return list(pool.map(one, range(n)))
