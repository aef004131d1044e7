"""The login request never reaches the app, with and without
`allow_on_headers_stop_iteration` in the Wasm plugin config; and large bodies through rotation
(an expired access token with a valid refresh token), which that flag makes Envoy buffer.

With the flag (every shipped config, and the harness's default), the filter holds a login's
headers until it has read the body: no part of any login request, success or failure, slow or
chunked, reaches the recording app. Without it (Envoy then turns the header pause into
StopAllIteration and never hands the body over), the filter notices on its tick that Envoy holds
body bytes it was not given, logs one warning per VM naming the flag, lets that login go on and
answers it; later logins in that VM go the old way (headers to the app, its answer replaced).
Every login is answered correctly, in under two seconds.
"""
from __future__ import annotations

import base64
import json
import os
import socket
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from harness import checks, tokens
from harness.client import Response
from harness.gateway import PROBE_HEADER
from harness.upstreams import Reply, login_ok

sys.path.insert(0, str(Path(__file__).resolve().parent))
from login_support import login_body, post_chunked  # noqa: E402

LOGIN = "/api/auth/login"
JSON = {"Content-Type": "application/json"}
FLAG = "allow_on_headers_stop_iteration"
T = 8


@pytest.fixture(scope="module")
def gw_hold(make_gateway):
    """The flag on (harness default); a short login timeout so the 504 case is quick."""
    return make_gateway("hold", login_timeout_ms=500)


@pytest.fixture(scope="module")
def gw_noflag(make_gateway):
    """The flag left out, one worker (one VM), rotation through the refresh cluster."""
    return make_gateway("noflag", mode="cluster", login_timeout_ms=500, allow_on_headers_stop_iteration=False)


def warnings(gw) -> list[str]:
    return [line for line in gw.envoy.log_text().splitlines() if FLAG in line and "warning" in line]


def probe_reached_app(gw, probe: str, settle: float = 0.0) -> bool:
    if settle:
        time.sleep(settle)
    return bool(gw.app.with_header(PROBE_HEADER, probe))


def raw_post(port: int, head: list[str], parts: list[tuple[float, bytes]], timeout: float = T) -> Response:
    """POST over a raw socket: the request head, then each (pause, bytes) part after its pause."""
    import http.client

    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
        for pause, data in parts:
            time.sleep(pause)
            try:
                sock.sendall(data)
            except (BrokenPipeError, ConnectionResetError):
                break
        resp = http.client.HTTPResponse(sock, method="POST")
        resp.begin()
        return Response(resp.status, resp.reason, list(resp.getheaders()), resp.read())
    finally:
        sock.close()


def slow_content_length_login(gw, probe: str, first_byte_after: float) -> Response:
    """A Content-Length login whose body starts `first_byte_after` seconds after the headers."""
    body = login_body("slow@example.test", "pw-slow")
    head = [f"POST {LOGIN} HTTP/1.1", f"Host: 127.0.0.1:{gw.port}", "Accept: application/json",
            "Content-Type: application/json", f"Content-Length: {len(body)}", f"{PROBE_HEADER}: {probe}"]
    return raw_post(gw.port, head, [(first_byte_after, body[:5]), (0.3, body[5:])])


GOOD = login_body("ada@example.test", "pw-good")
CHUNKS = [GOOD[i:i + 7] for i in range(0, len(GOOD), 7)]


def login_cases(gw):
    """(name, expected status, send() -> (response, probe)) for every kind of login answer."""
    api = gw.login

    def post(body: bytes, method: str = "POST", reply: Reply | None = None, headers=None):
        def send():
            if reply is not None:
                api.reply(reply)
            r = gw.request(method, LOGIN, body=body if method != "GET" else None, headers=headers or JSON, timeout=T)
            return r, r.probe
        return send

    def chunked(pieces: list[bytes], pause: float):
        def send():
            probe = uuid.uuid4().hex
            r = post_chunked(gw.port, LOGIN, pieces, headers={PROBE_HEADER: probe}, pause=pause, timeout=T)
            return r, probe
        return send

    def slow_start():
        probe = uuid.uuid4().hex
        return slow_content_length_login(gw, probe, first_byte_after=1.4), probe

    good = GOOD
    pieces = CHUNKS
    return [
        ("success", 200, post(good, reply=login_ok())),
        ("bad-json-400", 400, post(b'{"email": 1}')),
        ("get-405", 405, post(b"", method="GET")),
        ("content-length-over-limit-413", 413, post(b"x" * 16385)),
        ("chunked-over-limit-413", 413, chunked([b"x" * 9000, b"y" * 9000], 0.0)),
        ("api-401", 401, post(good, reply=Reply(401, {"error": "nope"}))),
        ("api-429", 429, post(good, reply=Reply(429, {"error": "slow down"}, headers=[("Retry-After", "7")]))),
        ("api-500-502", 502, post(good, reply=Reply(500, "boom"))),
        ("api-closes-502", 502, post(good, reply=Reply(close=True))),
        ("api-timeout-504", 504, post(good, reply=Reply(200, {}, delay=1.2))),
        ("chunked-slowly-in-pieces", 200, chunked(pieces, 0.25)),
        ("chunked-at-once", 200, chunked([good], 0.0)),
        ("first-body-byte-after-1.4s", 200, slow_start),
    ]


def run_cases(gw) -> list[tuple[str, int, Response, str, float]]:
    out = []
    for name, expected, send in login_cases(gw):
        gw.login.always(login_ok())
        t0 = time.monotonic()
        r, probe = send()
        out.append((name, expected, r, probe, time.monotonic() - t0))
    gw.login.always(login_ok())
    return out


def check_answers(results) -> None:
    for name, expected, r, _, _ in results:
        assert r.status == expected, (name, r.status, r.body[:200])
        if expected == 200:
            assert r.json()["message"] == "Login successful", name
            assert len(r.set_cookie_headers) == 4, (name, r.set_cookie_headers)
        else:
            assert r.set_cookie_headers == [], (name, r.set_cookie_headers)
        if expected == 429:
            assert r.header("retry-after") == "7"


# --- with the flag -----------------------------------------------------------------------------

def test_with_the_flag_no_part_of_any_login_reaches_the_app(gw_hold):
    gw = gw_hold
    results = run_cases(gw)
    check_answers(results)
    time.sleep(0.5)  # anything that had reached the app has been recorded by now
    reached = [name for name, _, _, probe, _ in results if probe_reached_app(gw, probe)]
    assert reached == [], f"login requests reached the app: {reached}"
    # A slow client (first body byte after more than a second) is not taken for a missing flag.
    assert warnings(gw) == []


def test_with_the_flag_each_login_is_answered_as_fast_as_the_login_api(gw_hold):
    gw = gw_hold
    for _ in range(5):
        t0 = time.monotonic()
        r = gw.post(LOGIN, body=login_body("fast@example.test", "pw"), headers=JSON, timeout=T)
        assert r.status == 200, r
        assert time.monotonic() - t0 < 0.5
    assert warnings(gw) == []


# --- without the flag --------------------------------------------------------------------------

def test_without_the_flag_the_first_logins_are_noticed_and_answered_within_two_seconds(gw_noflag):
    gw = gw_noflag
    gw.login.always(login_ok())
    out: list[tuple[Response, float]] = []
    lock = threading.Lock()

    def one(i: int) -> None:
        t0 = time.monotonic()
        r = gw.post(LOGIN, body=login_body(f"c{i}@example.test", "pw"), headers=JSON, timeout=T)
        with lock:
            out.append((r, time.monotonic() - t0))

    # Several logins held at once before the VM knows: every one is let go and answered.
    threads = [threading.Thread(target=one, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=T + 2)
    assert len(out) == 4
    for r, elapsed in out:
        assert r.status == 200, r
        assert len(r.set_cookie_headers) == 4
        assert elapsed < 2.0, elapsed
    lines = warnings(gw)
    assert len(lines) == 1, lines
    assert "[warning]" in lines[0]


def test_without_the_flag_a_first_login_sent_slowly_in_chunks_is_let_go_mid_body(make_gateway):
    # A fresh VM whose first login arrives in pieces: the tick sees the first piece held by Envoy,
    # lets the request go on, and the rest of the body reaches the filter as it arrives.
    gw = make_gateway("noflag-chunked", login_timeout_ms=500, allow_on_headers_stop_iteration=False)
    gw.login.always(login_ok())
    t0 = time.monotonic()
    probe = uuid.uuid4().hex
    r = post_chunked(gw.port, LOGIN, CHUNKS, headers={PROBE_HEADER: probe}, pause=0.3, timeout=T)
    assert r.status == 200, r
    assert len(r.set_cookie_headers) == 4
    assert time.monotonic() - t0 < 0.3 * len(CHUNKS) + 2.0
    assert gw.login.requests()[-1].json() == {"email": "ada@example.test", "password": "pw-good"}
    assert len(warnings(gw)) == 1, warnings(gw)


def test_without_the_flag_each_worker_vm_warns_at_most_once(make_gateway):
    import re

    gw = make_gateway("noflag-workers", concurrency=2, allow_on_headers_stop_iteration=False)
    gw.login.always(login_ok())
    for i in range(8):
        t0 = time.monotonic()
        r = gw.post(LOGIN, body=login_body(f"w{i}@example.test", "pw"), headers=JSON, timeout=T)
        assert r.status == 200, r
        assert time.monotonic() - t0 < 2.0
    lines = warnings(gw)
    # Envoy's log line carries the worker's thread id: one warning per worker VM, never two.
    threads = [re.search(r"\]\[(\d+)\]\[warning\]", line).group(1) for line in lines]
    assert 1 <= len(threads) <= 2 and len(set(threads)) == len(threads), lines


def test_without_the_flag_logins_succeed_and_fail_correctly_each_within_two_seconds(gw_noflag):
    gw = gw_noflag
    results = run_cases(gw)
    check_answers(results)
    # Under two seconds from the client's last byte (some cases spend time sending).
    sending = {"first-body-byte-after-1.4s": 1.7, "chunked-slowly-in-pieces": 0.25 * len(CHUNKS)}
    late = {name: round(elapsed, 2) for name, _, _, _, elapsed in results if elapsed - sending.get(name, 0.0) >= 2.0}
    assert late == {}, f"answered late (s): {late}"


def test_without_the_flag_later_logins_are_fast_and_the_warning_stays_single(gw_noflag):
    gw = gw_noflag
    gw.login.always(login_ok())
    for _ in range(5):
        t0 = time.monotonic()
        r = gw.post(LOGIN, body=login_body("later@example.test", "pw"), headers=JSON, timeout=T)
        assert r.status == 200, r
        assert time.monotonic() - t0 < 0.5
    assert len(warnings(gw)) == 1, warnings(gw)


def test_without_the_flag_the_app_answer_never_reaches_the_client(gw_noflag):
    # The headers go on to the app (which answers 200 with an echo); the filter's reply replaces it.
    gw = gw_noflag
    gw.login.always(Reply(401, {"error": "nope"}))
    r = gw.post(LOGIN, body=login_body("x@example.test", "pw"), headers=JSON, timeout=T)
    assert r.status == 401 and r.json() == {"error": "Invalid credentials"}, r
    assert r.set_cookie_headers == []
    assert b"headers" not in r.body
    gw.login.always(login_ok())


# --- large bodies through rotation -------------------------------------------------------------

BIG = 1536 * 1024  # 1.5 MiB: past Envoy's default 1 MiB buffer limit


def rotate_big(gw, chunked: bool) -> None:
    body = os.urandom(BIG)
    cookies = gw.session(tokens.expired_access(9, "user"), tokens.refresh(9, "user"))
    if chunked:
        probe = uuid.uuid4().hex
        cookie = "; ".join(f"{k}={v}" for k, v in cookies.items())
        pieces = [body[i:i + 256 * 1024] for i in range(0, len(body), 256 * 1024)]
        r = post_chunked(gw.port, "/api/upload", pieces, timeout=30,
                         headers={"Cookie": cookie, "Content-Type": "application/octet-stream", PROBE_HEADER: probe})
    else:
        r = gw.request("PUT", "/api/upload", body=body, headers={"Content-Type": "application/octet-stream"},
                       cookies=cookies, timeout=30)
    assert r.status == 200, (r.status, r.body[:200])
    e = checks.echo(r)
    assert base64.b64decode(e["body_b64"]) == body
    a, ref = checks.rotated(r, gw, user_id=9, role="user")
    checks.app_cookie_carries(e, gw, a, ref)
    checks.identity(e, gw, "9", "user")


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_body_past_the_buffer_limit_survives_rotation(gw, chunked):
    rotate_big(gw, chunked)


def test_a_body_past_the_buffer_limit_survives_rotation_without_the_flag(gw_noflag):
    rotate_big(gw_noflag, chunked=False)


def test_only_a_large_or_unsized_body_skips_the_refresh_cluster(make_gateway):
    gw = make_gateway("default", mode="cluster", concurrency=2)
    by_cluster = lambda: gw.envoy.stat("wasmcustom.etls_auth.rotated_by_cluster") or 0  # noqa: E731
    inline = lambda: gw.envoy.stat("wasmcustom.etls_auth.rotated_inline") or 0  # noqa: E731
    before = (by_cluster(), inline())
    r = gw.get("/x", cookies=gw.session(tokens.expired_access(3, "user"), tokens.refresh(3, "user")))
    checks.rotated(r, gw, user_id=3, role="user")
    # A small body with a Content-Length (at most max_login_body_bytes) may wait for the call.
    small = gw.request("PUT", "/api/upload", body=b"z" * 1024, cookies=gw.session(None, tokens.refresh(3, "user")))
    assert base64.b64decode(checks.echo(small)["body_b64"]) == b"z" * 1024
    checks.rotated(small, gw, user_id=3, role="user")
    assert (by_cluster(), inline()) == (before[0] + 2, before[1])
    # Past that, or with no Content-Length, the request rotates inline.
    big = gw.request("PUT", "/api/upload", body=b"z" * 16385, cookies=gw.session(None, tokens.refresh(3, "user")))
    checks.rotated(big, gw, user_id=3, role="user")
    assert (by_cluster(), inline()) == (before[0] + 2, before[1] + 1)
