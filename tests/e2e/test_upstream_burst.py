"""`login_refresh_path` under load and at the edges (docs/sessions.md, Upstream session: one call per
burst), in both rotation modes, each on a single-worker Envoy (one Wasm VM):
- 64 concurrent requests of one session with an expired access token all pass with the same new
  upstream tokens, and the login API sees exactly one refresh call; a second wave 5 s later
  (same old cookies) makes no new call;
- the request that started the call going away does not strand the others;
- a request whose body is larger than Envoy's buffer limit is never held (no 413): it rotates
  the ETLS pair without the API, while a small body waits for the API as usual."""
from __future__ import annotations

import os
import socket
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from harness import checks, tokens
from harness import envoy as henvoy
from harness.client import at_once
from harness.gateway import Gateway
from harness.upstreams import Reply

sys.path.insert(0, str(Path(__file__).resolve().parent))
from upstream_support import REFRESH_PATH, expired_session, plugin_and_clusters, reset, start_gateway, stub_login_api  # noqa: E402

N = 64
BUFFER_LIMIT = 64 * 1024


def start(upstreams, api_port: int, name: str, mode: str, *, buffer_limit: int | None = None) -> Gateway:
    """A single-worker gateway with login_refresh_path; with `buffer_limit`, the listener's
    per-connection buffer limit is set and allow_on_headers_stop_iteration is on (so a held body
    past the limit would get 413)."""
    if buffer_limit is None:
        return start_gateway(upstreams, api_port, name, mode, login_timeout_ms=2000)
    env = dict(henvoy.SECRETS)
    plugin, clusters = plugin_and_clusters(upstreams, api_port, mode, login_timeout_ms=2000)

    def config(lp: int, ap: int) -> dict:
        resolved = {n: (lp if p is None else p) for n, p in clusters.items()}
        cfg = henvoy.bootstrap(listener_port=lp, admin_port=ap, plugin=plugin, env=env, clusters=resolved)
        lst = cfg["static_resources"]["listeners"][0]
        lst["per_connection_buffer_limit_bytes"] = buffer_limit
        wasm = lst["filter_chains"][0]["filters"][0]["typed_config"]["http_filters"][0]
        wasm["typed_config"]["config"]["allow_on_headers_stop_iteration"] = True
        return cfg

    e = henvoy.start_on_free_ports(f"{name}-{mode}", config)
    return Gateway(name=name, mode=mode, envoy=e, app=upstreams.app, login=upstreams.login, plugin=plugin, env=env)


@pytest.fixture(scope="module")
def api():
    s = stub_login_api("login_api_burst")
    yield s
    s.stop()


@pytest.fixture(scope="module", params=["inline", "cluster"])
def bgw(request, upstreams, api):
    gw = start(upstreams, api.port, "burst", request.param)
    yield gw
    gw.envoy.stop()


@pytest.fixture
def login_api(api):
    yield reset(api)


def session(gw, user_id=4242, role="editor"):
    return expired_session(gw, user_id=user_id, role=role, theme="dark")


def renewal(delay: float = 0.0) -> Reply:
    return Reply(200, {"accessToken": "up-access-" + uuid.uuid4().hex, "refreshToken": "up-refresh-" + uuid.uuid4().hex,
                       "userData": {"id": 4242, "role": "editor"}}, delay=delay)


def stat(gw, name: str) -> int:
    return gw.envoy.stat(f"wasmcustom.etls_auth.{name}") or 0


def wave(gw, cookies) -> list:
    return at_once(N, lambda i: gw.get(f"/burst/{i}?n={i}", cookies=cookies, timeout=30))


def check_wave(gw, results, up_access: str, up_refresh: str) -> None:
    statuses = [r.status for r in results]
    assert statuses == [200] * N, f"not all 200: {sorted(set(statuses))} ({statuses.count(200)} of {N} ok)"
    for i, r in enumerate(results):
        e = checks.echo(r)
        assert e["path"] == f"/burst/{i}?n={i}"
        assert sorted(c.name for c in r.set_cookies) == sorted(gw.cookie_names), r.set_cookie_headers
        assert (r.cookie(gw.upstream_access_cookie).value, r.cookie(gw.upstream_refresh_cookie).value) == (up_access, up_refresh)
        a, ref = r.cookie(gw.access_cookie).value, r.cookie(gw.refresh_cookie).value
        checks.new_tokens_ok(gw, a, ref, user_id=4242, role="editor")
        pairs = checks.echo_cookies(e)
        assert [v for k, v in pairs if k == gw.upstream_access_cookie] == [up_access]
        assert [v for k, v in pairs if k == gw.upstream_refresh_cookie] == [up_refresh]
        assert [v for k, v in pairs if k == gw.access_cookie] == [a]
        checks.identity(e, gw, "4242", "editor")


def test_64_concurrent_rotations_make_one_refresh_call_and_a_later_wave_none(bgw, login_api):
    answer = renewal(delay=0.3)
    login_api.always(answer)
    cookies, up_refresh = session(bgw)
    coalesced = stat(bgw, "upstream_refresh_coalesced")
    first = wave(bgw, cookies)
    check_wave(bgw, first, answer.body["accessToken"], answer.body["refreshToken"])
    calls = login_api.requests()
    assert len(calls) == 1, f"the login API saw {len(calls)} refresh calls"
    assert calls[0].path == REFRESH_PATH and calls[0].json() == {"refreshToken": up_refresh}
    assert stat(bgw, "upstream_refresh_coalesced") - coalesced == N - 1
    # Each rotation still minted its own ETLS refresh token.
    assert len({tokens.claims(r.cookie(bgw.refresh_cookie).value)["jti"] for r in first}) == N

    time.sleep(5)
    login_api.always(renewal())  # a second call would hand out other tokens
    second = wave(bgw, cookies)
    check_wave(bgw, second, answer.body["accessToken"], answer.body["refreshToken"])
    assert len(login_api.requests()) == 1, "the second wave called the login API again"


def test_the_others_get_their_answer_when_the_first_request_is_gone(bgw, login_api):
    answer = renewal(delay=1.0)
    login_api.always(answer)
    cookies, up_refresh = session(bgw)
    # The first request starts the call, then its client leaves.
    sock = socket.create_connection(("127.0.0.1", bgw.port), timeout=5)
    head = (f"GET /first HTTP/1.1\r\nHost: x\r\nAccept: application/json\r\n"
            f"Cookie: {'; '.join(f'{k}={v}' for k, v in cookies.items())}\r\n\r\n")
    sock.sendall(head.encode())
    time.sleep(0.2)
    with ThreadPoolExecutor(max_workers=3) as pool:
        futures = [pool.submit(bgw.get, f"/later/{i}", cookies=cookies) for i in range(3)]
        time.sleep(0.1)
        sock.close()
        results = [f.result() for f in futures]
    for r in results:
        checks.echo(r)
        assert r.cookie(bgw.upstream_access_cookie).value == answer.body["accessToken"], r.set_cookie_headers
    assert len(login_api.requests()) == 1


@pytest.mark.parametrize("mode", ["inline", "cluster"])
def test_a_body_over_the_buffer_limit_is_not_held(upstreams, api, mode):
    gw = start(upstreams, api.port, "burst-body", mode, buffer_limit=BUFFER_LIMIT)
    try:
        api.always(renewal())
        api.clear()
        big = os.urandom(4 * BUFFER_LIMIT)
        cookies, up_refresh = session(gw)
        r = gw.request("PUT", "/upload", body=big, headers={"Content-Type": "application/octet-stream"}, cookies=cookies)
        e = checks.echo(r)
        import base64
        assert base64.b64decode(e["body_b64"]) == big
        a, ref = checks.rotated(r, gw, user_id=4242, role="editor")  # the ETLS pair only
        pairs = checks.echo_cookies(e)
        assert [v for k, v in pairs if k == gw.upstream_refresh_cookie] == [up_refresh]
        assert [v for k, v in pairs if k == gw.access_cookie] == [a]
        assert api.requests() == [], "a request that cannot be held must not wait for the login API"

        # A small body waits for the API like any other rotation.
        answer = renewal()
        api.always(answer)
        small = b'{"k": "' + b"v" * 1000 + b'"}'
        cookies, up_refresh = session(gw)
        r = gw.post("/api/save", body=small, headers={"Content-Type": "application/json"}, cookies=cookies)
        e = checks.echo(r)
        assert e["body"] == small.decode()
        assert r.cookie(gw.upstream_access_cookie).value == answer.body["accessToken"]
        assert len(api.requests()) == 1
    finally:
        gw.envoy.stop()
