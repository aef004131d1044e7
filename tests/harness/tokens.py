"""HS256 JWTs for the tests, with PyJWT: mint with chosen claims, decode without verifying."""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
import warnings
from typing import Any

import jwt

from .envoy import PREVIOUS_SECRETS, SECRETS

ACCESS_TTL = 900
REFRESH_TTL = 604800
# Not configured anywhere: a token signed with it is forged.
WRONG_SECRET = "an-attacker-secret-that-is-long-enough-0000000000"

_MISSING = object()


def now() -> int:
    return int(time.time())


def mint(
    secret: str | bytes,
    *,
    user_id: Any = 42,
    role: Any = "admin",
    iat: Any = _MISSING,
    exp: Any = _MISSING,
    ttl: int = ACCESS_TTL,
    alg: str = "HS256",
    headers: dict | None = None,
    **extra: Any,
) -> str:
    """A JWT with {userId, role, iat, exp} plus `extra`. iat defaults to now, exp to iat + ttl.
    Pass role=None / iat=None / exp=None to leave the claim out."""
    t = now()
    claims: dict[str, Any] = {}
    if user_id is not None:
        claims["userId"] = user_id
    if role is not None:
        claims["role"] = role
    iat_v = t if iat is _MISSING else iat
    if iat_v is not None:
        claims["iat"] = iat_v
    base = iat_v if isinstance(iat_v, int) else t
    exp_v = base + ttl if exp is _MISSING else exp
    if exp_v is not None:
        claims["exp"] = exp_v
    claims.update(extra)
    key = secret.encode() if isinstance(secret, str) else secret
    with warnings.catch_warnings():
        # HS384/HS512 tokens are minted on purpose with HS256-sized secrets (the filter must reject them).
        warnings.simplefilter("ignore")
        return jwt.encode(claims, key, algorithm=alg, headers=headers)


def access(user_id: Any = 42, role: Any = "admin", *, secret: str | None = None, **kw: Any) -> str:
    """An access token signed with the current access secret (unless `secret`)."""
    return mint(secret or SECRETS["ETLS_ACCESS"], user_id=user_id, role=role, ttl=kw.pop("ttl", ACCESS_TTL), **kw)


def refresh(user_id: Any = 42, role: Any = "admin", *, secret: str | None = None, **kw: Any) -> str:
    """A refresh token (with a random jti) signed with the current refresh secret (unless `secret`)."""
    kw.setdefault("jti", uuid.uuid4().hex)
    return mint(secret or SECRETS["ETLS_REFRESH"], user_id=user_id, role=role, ttl=kw.pop("ttl", REFRESH_TTL), **kw)


def expired_access(user_id: Any = 42, role: Any = "admin", *, ago: int = 3600, **kw: Any) -> str:
    """Access token whose exp lies `ago` seconds in the past (far beyond any leeway by default)."""
    t = now()
    return access(user_id, role, iat=t - ago - ACCESS_TTL, exp=t - ago, **kw)


def expired_refresh(user_id: Any = 42, role: Any = "admin", *, ago: int = 3600, **kw: Any) -> str:
    t = now()
    return refresh(user_id, role, iat=t - ago - REFRESH_TTL, exp=t - ago, **kw)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def alg_none(claims: dict | None = None) -> str:
    """An unsigned token: header {"alg":"none","typ":"JWT"}, empty signature."""
    t = now()
    c = claims if claims is not None else {"userId": 42, "role": "admin", "iat": t, "exp": t + ACCESS_TTL}
    return f"{_b64(json.dumps({'alg': 'none', 'typ': 'JWT'}).encode())}.{_b64(json.dumps(c).encode())}."


def with_header(token: str, header: dict) -> str:
    """Replace a token's header, keeping payload and signature (the signature no longer matches)."""
    _, p, s = token.split(".")
    return f"{_b64(json.dumps(header).encode())}.{p}.{s}"


def claims(token: str) -> dict:
    """The payload, not verified."""
    return jwt.decode(token, options={"verify_signature": False})


def header(token: str) -> dict:
    return jwt.get_unverified_header(token)


def verify(token: str, secret: str) -> dict:
    """Verify HS256 with `secret` (raises jwt exceptions when it does not verify)."""
    return jwt.decode(token, secret.encode(), algorithms=["HS256"], options={"verify_iat": False})


def verifies(token: str, secret: str) -> bool:
    try:
        verify(token, secret)
        return True
    except jwt.PyJWTError:
        return False


def session_key(refresh_token: str, secret: str | None = None) -> str:
    """The `x-etls-session-key` the filter sends for a session known by `refresh_token` (the
    login API's refreshToken with login_refresh_path, else the ETLS refresh token): HMAC-SHA256
    under the refresh secret of a label and the token, as hex (src/core/session_key.rs)."""
    key = (secret or SECRETS["ETLS_REFRESH"]).encode()
    return hmac.new(key, b"etls-auth session key v1\0" + refresh_token.encode(), hashlib.sha256).hexdigest()


__all__ = [
    "SECRETS", "PREVIOUS_SECRETS", "WRONG_SECRET", "ACCESS_TTL", "REFRESH_TTL", "now", "mint", "access",
    "refresh", "expired_access", "expired_refresh", "alg_none", "with_header", "claims", "header",
    "verify", "verifies", "session_key",
]
