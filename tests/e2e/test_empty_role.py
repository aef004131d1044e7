"""An empty role string is a role like any other (docs/sessions.md, Identity: Empty role): at login, in a token minted by
jose the way the Next.js app did, and through rotation (both modes). The app then receives the role
header with an empty value, as a header line `x-etls-role: ` on the wire (checked on the raw bytes
the recording app read), once, and the user id header as usual."""
from __future__ import annotations

import base64

from harness import checks, node, tokens
from harness.upstreams import login_ok

JSON = {"Content-Type": "application/json"}
CREDS = {"email": "empty-role@example.test", "password": "empty-role-password"}


def empty_role_reached_app(r, gw, user_id: str) -> None:
    e = checks.echo(r)
    checks.identity(e, gw, user_id, "")
    raw = base64.b64decode(e["raw_head_b64"])
    lines = [line for line in raw.split(b"\r\n") if line.lower().startswith(gw.role_header.encode() + b":")]
    # Envoy 1.40 keeps a header set from Wasm with an empty value and writes it as `name: `
    # (colon, one space, nothing else).
    assert lines == [gw.role_header.encode() + b": "], raw


def test_login_with_empty_role_succeeds_and_the_session_carries_it(gw, login_api):
    login_api.always(login_ok({"id": 31, "role": ""}))
    r = gw.post(gw.login_path, body=CREDS, headers=JSON, timeout=8)
    assert r.status == 200, r
    assert r.json() == {"message": "Login successful", "userData": {"id": 31, "role": ""}}
    access, refresh = r.cookie(gw.access_cookie), r.cookie(gw.refresh_cookie)
    checks.new_tokens_ok(gw, access.value, refresh.value, user_id=31, role="")
    app = gw.get("/x", cookies=gw.session(access.value, refresh.value), timeout=8)
    empty_role_reached_app(app, gw, "31")


def test_jose_token_with_empty_role_is_a_session(gw):
    jose = node.mint(gw.access_secret, "u-9", "")
    assert tokens.claims(jose) == {"userId": "u-9", "role": "", "exp": tokens.claims(jose)["exp"]}
    r = gw.get("/x", cookies=gw.session(jose), timeout=8)
    empty_role_reached_app(r, gw, "u-9")


def test_jose_refresh_token_with_empty_role_rotates_and_keeps_it(gw):
    jose_refresh = node.mint(gw.refresh_secret, 77, "", exp="7d")
    r = gw.get("/x", cookies=gw.session(None, jose_refresh), timeout=8)
    checks.rotated(r, gw, user_id=77, role="")
    empty_role_reached_app(r, gw, "77")


def test_rotation_carries_an_empty_role_over(gw):
    r = gw.get("/x", cookies=gw.session(tokens.expired_access(12, ""), tokens.refresh(12, "")), timeout=8)
    access, _ = checks.rotated(r, gw, user_id=12, role="")
    assert tokens.claims(access)["role"] == ""
    empty_role_reached_app(r, gw, "12")
    # A client-sent role header is replaced by the empty one, not kept.
    r = gw.get("/x", cookies=gw.session(access), headers=[(gw.role_header, "admin")], timeout=8)
    empty_role_reached_app(r, gw, "12")
