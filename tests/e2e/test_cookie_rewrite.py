"""The Cookie header the app receives after a rotation (docs/sessions.md, Protected requests and rotation: Cookie header after a rotation): only the values of the
ETLS cookies change, every copy of them; every other byte reaches the app as the client sent it:
nameless cookies, non-UTF-8 bytes, empty segments, spacing and order. Requests go out over a raw
socket (so the bytes are exactly ours); the recording app gives back the raw header bytes it read.
Both rotation modes, plus HTTP/2 split cookie crumbs (curl, h2c)."""
from __future__ import annotations

import base64
import json
import socket
import sys
from pathlib import Path

from harness import checks, tokens
from harness.client import Response
from harness.gateway import PROBE_HEADER

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_http2 import curl_h2  # noqa: E402


def raw_get(gw, path: str, cookie: bytes, probe: str) -> Response:
    """GET with this exact Cookie header value, over a raw HTTP/1.1 socket."""
    return raw_request(gw, path, b"Cookie: " + cookie + b"\r\n", probe)


def raw_request(gw, path: str, extra_head: bytes, probe: str) -> Response:
    """GET with these exact extra header lines (each ending in CRLF), over a raw HTTP/1.1 socket."""
    head = (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{gw.port}\r\nAccept: application/json\r\n"
            f"{PROBE_HEADER}: {probe}\r\nConnection: close\r\n").encode() + extra_head + b"\r\n"
    with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as sock:
        sock.sendall(head)
        chunks = []
        for _ in range(10_000):
            data = sock.recv(65536)
            if not data:
                break
            chunks.append(data)
    raw = b"".join(chunks)
    top, _, body = raw.partition(b"\r\n\r\n")
    lines = top.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = [tuple(x.strip() for x in line.split(":", 1)) for line in lines[1:] if ":" in line]
    return Response(status, "", headers, body)


def app_cookie_bytes(r) -> bytes:
    e = checks.echo(r)
    values = [v for k, v in _raw_headers(e) if k.lower() == b"cookie"]
    assert len(values) == 1, values
    return values[0]


def _raw_headers(e):
    raw = base64.b64decode(e["raw_head_b64"])
    out = []
    for line in raw.split(b"\r\n")[1:]:
        k, sep, v = line.partition(b":")
        if sep:
            out.append((k, v.strip(b" \t")))
    return out


def renew(sent: bytes, renewed: list[tuple[str, str]]) -> bytes:
    """What the app must get: `sent` split on `;`, each segment named like a renewed cookie
    (text before the first `=`, trimmed) set to name=new value with its surrounding whitespace
    kept, every other segment as is, absent renewed cookies appended with `; `."""
    segments = sent.split(b";")
    seen = set()
    out = []
    for seg in segments:
        text = seg.decode("utf-8", "replace")
        name = text.split("=", 1)[0].strip() if "=" in text else None
        new = dict(renewed).get(name)
        if new is None:
            out.append(seg)
            continue
        seen.add(name)
        lead = seg[:len(seg) - len(seg.lstrip())]
        trail = seg[len(seg.rstrip()):]
        out.append(lead + f"{name}={new}".encode() + trail)
    result = b";".join(out)
    for name, value in renewed:
        if name not in seen:
            result += (b"; " if result.strip() else b"") + f"{name}={value}".encode()
    return result


def test_rotation_keeps_raw_bytes_nameless_cookies_order_and_spacing(gw):
    refresh = tokens.refresh(88, "user")
    expired = tokens.expired_access(88, "user")
    sent = (b"foo; =bar;theme=dark;  accessTokenEtls=" + expired.encode() + b" ;caf\xe9=cr\xe8me\xff;;"
            b"\taccessTokenEtls=\"" + expired.encode() + b"\";accessTokenEtlsX=keep;  refreshTokenEtls=" + refresh.encode()
            + b";last=\x80\x81 x")
    probe = "rewrite-" + gw.mode
    r = raw_get(gw, "/raw?x=1", sent, probe)
    assert r.status == 200, r
    new_access, new_refresh = checks.rotated(r, gw, user_id=88, role="user")
    got = app_cookie_bytes(r)
    want = renew(sent, [(gw.access_cookie, new_access), (gw.refresh_cookie, new_refresh)])
    assert got == want, (got, want)
    # Spelled out: both copies of the access cookie renewed, the rest untouched.
    assert got == (b"foo; =bar;theme=dark;  accessTokenEtls=" + new_access.encode() + b" ;caf\xe9=cr\xe8me\xff;;"
                   b"\taccessTokenEtls=" + new_access.encode() + b";accessTokenEtlsX=keep;  refreshTokenEtls="
                   + new_refresh.encode() + b";last=\x80\x81 x")
    checks.identity(checks.echo(r), gw, "88", "user")


def test_rotation_adds_the_access_cookie_when_absent(gw):
    refresh = tokens.refresh(89, "user")
    sent = b"a=\xfe; refreshTokenEtls=" + refresh.encode() + b"; b"
    r = raw_get(gw, "/raw", sent, "add-" + gw.mode)
    new_access, new_refresh = checks.rotated(r, gw, user_id=89, role="user")
    assert app_cookie_bytes(r) == (b"a=\xfe; refreshTokenEtls=" + new_refresh.encode() + b"; b; accessTokenEtls="
                                   + new_access.encode())


def test_valid_session_leaves_the_cookie_header_alone(gw):
    sent = b"foo; =bar; x=\xff\xfe; accessTokenEtls=" + tokens.access(90, "user").encode() + b";  y=1"
    r = raw_get(gw, "/raw", sent, "valid-" + gw.mode)
    assert app_cookie_bytes(r) == sent
    assert r.header_all("Set-Cookie") == []


def test_h2_split_crumbs_rotate_byte_exact(gw):
    refresh = tokens.refresh(91, "user")
    crumbs = ["theme=dark", "foo", "=bar", f"{gw.refresh_cookie}={refresh}", f"{gw.access_cookie}=expired.x.y", "z=1"]
    status, hdrs, body = curl_h2(gw, "/h2raw", [("cookie", c) for c in crumbs])
    assert status == 200, (status, body[:300])
    new = {c.split("=", 1)[0]: c.split("=", 1)[1].split(";")[0] for k, c in hdrs if k.lower() == "set-cookie"}
    e = json.loads(body)
    got = [v for k, v in _raw_headers(e) if k.lower() == b"cookie"]
    # Envoy joins the crumbs with "; " in order before the filter; only the ETLS values change.
    assert got == [f"theme=dark; foo; =bar; {gw.refresh_cookie}={new[gw.refresh_cookie]}; "
                   f"{gw.access_cookie}={new[gw.access_cookie]}; z=1".encode()], got


def test_two_http1_cookie_headers_reach_the_app_as_one_joined_with_semicolon(gw):
    refresh = tokens.refresh(92, "user")
    cookies = b"Cookie: a=\xff; =x\r\nCookie: refreshTokenEtls=" + refresh.encode() + b";b\r\n"
    r = raw_request(gw, "/raw2", cookies, "two-headers-" + gw.mode)
    new_access, new_refresh = checks.rotated(r, gw, user_id=92, role="user")
    assert app_cookie_bytes(r) == (b"a=\xff; =x; refreshTokenEtls=" + new_refresh.encode() + b";b; accessTokenEtls="
                                   + new_access.encode())
