"""Assertions shared by the e2e tests, each checking documented concrete values against what the
client (or the app) saw. They take the Gateway so they follow its configured names and attributes."""
from __future__ import annotations

import json
import urllib.parse
from typing import Any

from . import tokens
from .client import Response, SetCookie
from .gateway import Gateway
from .upstreams import Seen


def cookie_attrs_ok(sc: SetCookie, gw: Gateway, max_age: int) -> None:
    """HttpOnly; Path=/; Secure (if cookie_secure); SameSite=<configured>; Max-Age=<max_age>;
    Domain only when configured."""
    where = f"Set-Cookie {sc.raw!r}"
    assert sc.get("httponly") is True, f"{where}: no HttpOnly"
    assert sc.get("path") == "/", f"{where}: Path is not /"
    if gw.cookie_secure:
        assert sc.get("secure") is True, f"{where}: no Secure"
    else:
        assert not sc.has("secure"), f"{where}: Secure although cookie_secure is false"
    same_site = sc.get("samesite")
    assert isinstance(same_site, str) and same_site.lower() == str(gw.cookie_same_site).lower(), \
        f"{where}: SameSite is {same_site!r}, want {gw.cookie_same_site}"
    assert sc.max_age == max_age, f"{where}: Max-Age is {sc.get('max-age')!r}, want {max_age}"
    domain = gw.cookie_domain
    if domain:
        assert (sc.get("domain") or "").lstrip(".").lower() == domain.lstrip(".").lower(), f"{where}: Domain is not {domain}"
    else:
        assert not sc.has("domain"), f"{where}: Domain although none is configured"


def no_joined_cookies(resp: Response) -> None:
    """Each Set-Cookie header holds one cookie: no second `name=` after a comma."""
    for h in resp.set_cookie_headers:
        for part in h.split(",")[1:]:
            head = part.split(";")[0]
            # A comma inside Expires ("Thu, 01 Jan ...") is fine; a joined cookie looks like ", name=value".
            assert "=" not in head, f"Set-Cookie joins several cookies: {h!r}"


def cleared(resp: Response, gw: Gateway) -> None:
    """Exactly the four clearing Set-Cookie: every configured name once, empty value, Max-Age=0,
    and the same attributes the cookie is set with."""
    no_joined_cookies(resp)
    scs = resp.set_cookies
    names = [c.name for c in scs]
    assert sorted(names) == sorted(gw.cookie_names), f"clearing cookies: got {resp.set_cookie_headers}"
    for c in scs:
        assert c.value in ("", '""'), f"clearing cookie {c.raw!r} has a value"
        cookie_attrs_ok(c, gw, 0)


def unauthorized(resp: Response, gw: Gateway) -> None:
    """A deny for a non-HTML client: 401 {"error":"Unauthorized"} plus the four clearing cookies;
    and the request never reached the app."""
    assert resp.status == 401, f"want 401, got {resp!r}"
    assert resp.json() == {"error": "Unauthorized"}, resp.body
    cleared(resp, gw)
    assert not gw.reached_app(resp), "a denied request reached the app"


def redirected_to_login(resp: Response, gw: Gateway, original: str) -> None:
    """A deny for an HTML client: 302 to <login_page>?next=<url-encoded original path+query>."""
    assert resp.status == 302, f"want 302, got {resp!r}"
    loc = resp.header("Location")
    assert loc is not None, "302 without Location"
    parts = urllib.parse.urlsplit(loc)
    assert parts.scheme == "" and parts.netloc == "", f"Location must be a local path: {loc!r}"
    assert parts.path == gw.login_page, f"Location {loc!r} is not {gw.login_page}"
    q = urllib.parse.parse_qs(parts.query, keep_blank_values=True)
    assert q == {"next": [original]}, f"Location {loc!r}: next decodes to {q}, want {original!r}"
    raw_next = parts.query[len("next="):]
    for ch in "?&#= ":
        assert ch not in raw_next, f"next is not url-encoded ({ch!r} in {raw_next!r})"
    cleared(resp, gw)
    assert not gw.reached_app(resp), "a denied request reached the app"


def denied(resp: Response, gw: Gateway, html: bool = False, original: str | None = None) -> None:
    if html:
        assert original is not None
        redirected_to_login(resp, gw, original)
    else:
        unauthorized(resp, gw)


def echo(resp: Response) -> dict[str, Any]:
    """The echo app's JSON of what it received; fails unless the response came from the app."""
    assert resp.status == 200, f"want 200 from the app, got {resp!r}"
    j = resp.json()
    assert set(j) >= {"method", "path", "headers", "cookies", "body"}, f"not an echo reply: {resp!r}"
    return j


def echo_header_all(e: dict[str, Any], name: str) -> list[str]:
    return [v for k, v in e["headers"] if k.lower() == name.lower()]


def echo_cookies(e: dict[str, Any]) -> list[tuple[str, str]]:
    """Every cookie pair the app received, over all its Cookie headers, in order."""
    out: list[tuple[str, str]] = []
    for h in e["cookies"]:
        for part in h.split(";"):
            part = part.strip()
            if not part:
                continue
            k, _, v = part.partition("=")
            out.append((k.strip(), v.strip()))
    return out


def identity(e: dict[str, Any], gw: Gateway, user_id: str, role: str | None) -> None:
    """The app got exactly one user id header with `user_id` and one role header with `role`
    (none when role is None)."""
    uid = echo_header_all(e, gw.user_id_header)
    assert uid == [user_id], f"{gw.user_id_header}: app saw {uid}, want [{user_id!r}]"
    roles = echo_header_all(e, gw.role_header)
    want = [] if role is None else [role]
    assert roles == want, f"{gw.role_header}: app saw {roles}, want {want}"


def rotated(resp: Response, gw: Gateway, *, user_id: Any, role: Any) -> tuple[str, str]:
    """The response carries exactly two Set-Cookie, the new access and refresh tokens with the
    standard attributes; the tokens verify with the current secrets and carry the claims.
    Returns (access, refresh)."""
    no_joined_cookies(resp)
    scs = resp.set_cookies
    assert sorted(c.name for c in scs) == sorted([gw.access_cookie, gw.refresh_cookie]), \
        f"want exactly the two new ETLS cookies, got {resp.set_cookie_headers}"
    a = resp.cookie(gw.access_cookie)
    r = resp.cookie(gw.refresh_cookie)
    assert a is not None and r is not None
    cookie_attrs_ok(a, gw, gw.access_ttl_s)
    cookie_attrs_ok(r, gw, gw.refresh_ttl_s)
    new_tokens_ok(gw, a.value, r.value, user_id=user_id, role=role)
    return a.value, r.value


def new_tokens_ok(gw: Gateway, access: str, refresh: str, *, user_id: Any, role: Any) -> None:
    """Tokens the filter minted: HS256, signed with the current secrets (not the previous ones),
    userId with its JSON type, role, exp - iat = ttl, iat about now, refresh has a jti, and
    both carry the same integer auth_time, no later than iat (the session's start)."""
    t = tokens.now()
    auth_times = {tokens.claims(tok).get("auth_time") for tok in (access, refresh)}
    assert len(auth_times) == 1, f"access and refresh auth_time differ: {auth_times}"
    auth_time = auth_times.pop()
    assert isinstance(auth_time, int) and auth_time <= tokens.claims(access).get("iat", 0), \
        f"auth_time {auth_time!r} is not an integer at or before iat"
    for tok, secret, ttl, kind in ((access, gw.access_secret, gw.access_ttl_s, "access"),
                                   (refresh, gw.refresh_secret, gw.refresh_ttl_s, "refresh")):
        assert tokens.header(tok).get("alg") == "HS256", f"{kind} token header {tokens.header(tok)}"
        assert tokens.verifies(tok, secret), f"new {kind} token does not verify with the current {kind} secret"
        c = tokens.claims(tok)
        assert c.get("userId") == user_id and type(c.get("userId")) is type(user_id), \
            f"{kind} userId {c.get('userId')!r}, want {user_id!r} ({type(user_id).__name__})"
        if role is None:
            assert "role" not in c or c["role"] is None, f"{kind} role {c.get('role')!r}, want none"
        else:
            assert c.get("role") == role, f"{kind} role {c.get('role')!r}, want {role!r}"
        assert isinstance(c.get("iat"), int) and isinstance(c.get("exp"), int), f"{kind} iat/exp: {c}"
        assert c["exp"] - c["iat"] == ttl, f"{kind} exp-iat = {c['exp'] - c['iat']}, want {ttl}"
        assert abs(c["iat"] - t) <= 10, f"{kind} iat {c['iat']} is not now ({t})"
    rc = tokens.claims(refresh)
    assert isinstance(rc.get("jti"), str) and len(rc["jti"]) >= 8, f"refresh jti: {rc.get('jti')!r}"
    assert not tokens.verifies(access, gw.refresh_secret), "access token verifies with the refresh secret"
    assert not tokens.verifies(refresh, gw.access_secret), "refresh token verifies with the access secret"


def app_cookie_carries(e: dict[str, Any], gw: Gateway, access: str, refresh: str, others: dict[str, str] | None = None) -> None:
    """After a rotation the app's Cookie header holds the new ETLS pair (once each, no old one)
    and still every other cookie the client sent."""
    pairs = echo_cookies(e)
    acc = [v for k, v in pairs if k == gw.access_cookie]
    ref = [v for k, v in pairs if k == gw.refresh_cookie]
    assert acc == [access], f"app saw {gw.access_cookie}={acc}, want the new token once"
    assert ref == [refresh], f"app saw {gw.refresh_cookie}={ref}, want the new token once"
    for k, v in (others or {}).items():
        assert (k, v) in pairs, f"app lost cookie {k}={v}: {pairs}"


def json_body(resp: Response) -> Any:
    try:
        return resp.json()
    except json.JSONDecodeError as e:  # pragma: no cover - message only
        raise AssertionError(f"body is not JSON: {resp!r}") from e
