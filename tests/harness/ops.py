"""Operations helpers (README "Operations"): the test-only trapping build of the filter, Envoys
with a chosen failure_policy and wasm, and Envoys whose filter configuration is pushed at
runtime from a watched file.
"""
from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import time
from pathlib import Path
from typing import Any, Mapping

from . import paths
from .envoy import Envoy, bootstrap, free_port

TRAP_WASM = paths.REPO / "target" / "trap" / "wasm32-wasip1" / "release" / "etls_auth.wasm"
TRAP_HEADER = "x-etls-test-trap"


def build_trap_wasm(timeout: float = 900) -> Path:
    """Builds (incrementally: a no-op when nothing changed) the `test-trap` feature build into
    target/trap/ with scripts/build-wasm-trap.sh and returns its path. Never the release build."""
    r = subprocess.run([str(paths.REPO / "scripts" / "build-wasm-trap.sh")], cwd=str(paths.REPO),
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout)
    if r.returncode != 0 or not TRAP_WASM.is_file():
        raise paths.HarnessError(f"scripts/build-wasm-trap.sh failed ({r.returncode}):\n{r.stdout[-3000:]}")
    return TRAP_WASM


def wasm_plugin_config(cfg: Mapping[str, Any]) -> dict:
    """The Wasm PluginConfig (`typed_config.config`) of the first listener of a bootstrap."""
    hcm = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    wasm = [f for f in hcm["http_filters"] if f["name"] == "envoy.filters.http.wasm"][0]
    return wasm["typed_config"]["config"]


def start_envoy(name: str, *, plugin: Mapping[str, Any], env: Mapping[str, str], clusters: Mapping[str, int],
                wasm: str | os.PathLike | None = None, failure_policy: str | None = "FAIL_RELOAD",
                concurrency: int = 1, attempts: int = 3) -> Envoy:
    """An Envoy with the filter built from `wasm` (default: the release build) and the given
    `failure_policy` (None: the field left out, Envoy's default)."""
    last: Exception | None = None
    for _ in range(attempts):
        lp, ap = free_port(), free_port()
        cfg = bootstrap(listener_port=lp, admin_port=ap, plugin=plugin, env=env, clusters=clusters, wasm=wasm)
        pc = wasm_plugin_config(cfg)
        if failure_policy is None:
            pc.pop("failure_policy", None)
        else:
            pc["failure_policy"] = failure_policy
        e = Envoy(name, cfg, lp, ap, concurrency=concurrency)
        try:
            return e.start()
        except paths.HarnessError as err:
            e.stop()
            last = err
            if "Address already in use" not in e.log_text() and "cannot bind" not in e.log_text():
                raise
    raise paths.HarnessError(f"could not start Envoy {name}: {last}")


def wait_until(pred, timeout: float, interval: float = 0.05):
    """Polls `pred` (bounded) until it returns a truthy value; returns the last value."""
    deadline = time.monotonic() + timeout
    got = pred()
    while not got and time.monotonic() < deadline:
        time.sleep(interval)
        got = pred()
    return got


# --- which worker served what: Envoy's per-worker listener counters ----------------------------
# Envoy counts the connections each worker accepted on a listener
# (`listener.<address>.worker_<n>.downstream_cx_total`). Each test request goes on its own
# connection, which the kernel hands to one of the workers; sent one at a time, the counter that
# moved tells which worker served it.
_WORKER_CX = re.compile(r"^listener\.127\.0\.0\.1_(\d+)\.worker_(\d+)\.downstream_cx_total: (\d+)$", re.M)


def worker_connections(e: Envoy, port: int) -> dict[int, int]:
    """Worker number -> connections it accepted on the listener at 127.0.0.1:`port`."""
    _, body = e.admin_get(f"/stats?filter=^listener\\.127\\.0\\.0\\.1_{port}\\.worker_")
    return {int(w): int(n) for p, w, n in _WORKER_CX.findall(body) if int(p) == port}


def served_by(e: Envoy, port: int, send):
    """Sends one request (`send()`, on a fresh connection, nothing else in flight) and returns
    (worker number, response)."""
    before = worker_connections(e, port)
    r = send()
    after = wait_until(lambda: (lambda a: a if sum(a.values()) > sum(before.values()) else None)(worker_connections(e, port)), 5)
    if not after:
        raise AssertionError(f"no worker of {e.name} counted the connection")
    moved = [w for w, n in after.items() if n > before.get(w, 0)]
    if len(moved) != 1:
        raise AssertionError(f"several workers accepted connections meanwhile: {before} -> {after}")
    return moved[0], r
