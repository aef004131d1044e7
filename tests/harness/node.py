"""The jose interop scripts in tests/node (jose pinned in package.json / package-lock.json),
run with `node` as subprocesses. The secret goes through the environment, never argv."""
from __future__ import annotations

import json
import os
import subprocess
from typing import Any

from . import paths

NODE_DIR = paths.REPO / "tests" / "node"


def _check() -> str:
    node = paths.node_bin()
    if not (NODE_DIR / "node_modules" / "jose").is_dir():
        raise paths.HarnessError("tests/node/node_modules/jose is missing: run scripts/setup.sh (npm ci in tests/node)")
    return node


def _run(script: str, args: list[str], secret: str) -> subprocess.CompletedProcess:
    node = _check()
    env = {**os.environ, "JOSE_SECRET": secret}
    return subprocess.run([node, script, *args], cwd=NODE_DIR, env=env, capture_output=True, text=True, timeout=60)


def jose_version() -> str:
    _check()
    return json.loads((NODE_DIR / "node_modules" / "jose" / "package.json").read_text())["version"]


def mint(secret: str, user_id: Any, role: Any = None, exp: str | int = "15m", *,
         iat: int | str | None = None, auth_time: int | str | None = None) -> str:
    """A token minted exactly like the Next.js app did (SignJWT, HS256 header only, exp, no iat).
    `iat` (jose setIssuedAt) and `auth_time` add those claims (tokens of the filter's shape): Unix
    seconds, or "now-<n>" / "now+<n>" counted from the moment node mints it."""
    claims: dict[str, Any] = {"userId": user_id} if role is None else {"userId": user_id, "role": role}
    if iat is not None:
        claims["iat"] = iat
    if auth_time is not None:
        claims["auth_time"] = auth_time
    r = _run("mint.mjs", [json.dumps(claims), str(exp)], secret)
    if r.returncode != 0:
        raise paths.HarnessError(f"node mint.mjs failed ({r.returncode}): {r.stderr}")
    return r.stdout.strip()


def verify(token: str, secret: str) -> dict:
    """jose jwtVerify(token, secret): {"ok": True, "payload", "protectedHeader"} or {"ok": False, "code", "message"}."""
    r = _run("verify.mjs", [token], secret)
    if r.returncode not in (0, 1):
        raise paths.HarnessError(f"node verify.mjs failed ({r.returncode}): {r.stderr}")
    return json.loads(r.stdout)
