"""64 requests at once carrying the same expired access token and the same valid refresh token
(a browser tab burst right after the access token expired), in both rotation modes. Every one
must reach the app with the user's identity and come back with two valid new cookies: no
request is denied because another one rotated first, and none gets another user's tokens."""
from __future__ import annotations

from harness import checks, tokens
from harness.client import at_once

N = 64


def test_64_concurrent_requests_with_the_same_expired_access_token_all_rotate(gw):
    expired = tokens.expired_access(4242, "editor")
    refresh = tokens.refresh(4242, "editor")
    # All 64 connections go out together.
    results = at_once(N, lambda i: gw.get(f"/burst/{i}?n={i}", cookies=gw.session(expired, refresh, theme="dark"),
                                          timeout=30))

    statuses = [r.status for r in results]
    assert statuses == [200] * N, f"not all 200: {sorted(set(statuses))} ({statuses.count(200)} of {N} ok)"
    for i, r in enumerate(results):
        e = checks.echo(r)
        assert e["path"] == f"/burst/{i}?n={i}"
        new_access, new_refresh = checks.rotated(r, gw, user_id=4242, role="editor")
        assert new_access != expired and new_refresh != refresh
        checks.app_cookie_carries(e, gw, new_access, new_refresh, {"theme": "dark"})
        checks.identity(e, gw, "4242", "editor")
    # Each rotation minted its own refresh token (random jti).
    jtis = {tokens.claims(r.cookie(gw.refresh_cookie).value)["jti"] for r in results}
    assert len(jtis) == N, f"{len(jtis)} distinct refresh tokens for {N} rotations"
