"""Envoy resident memory per Wasm build (the memory side of bench/run.sh, on its own).

Usage: .venv/bin/python bench/rss.py NAME=WASM [NAME=WASM ...]
A WASM of `none` is Envoy without a Wasm filter; a name starting with `etls` gets etls-auth's
plugin configuration and a valid session cookie, any other an empty configuration. Each build
runs as its own Envoy (one at a time, `--concurrency` RSS_CONCURRENCY, default 1), RSS_ROUNDS
(default 3) times in turn; the report gives the median VmRSS once ready and after RSS_REQUESTS
(default 2000) requests, the same relative to the first NAME, and tcmalloc's own figures from
the admin `/memory` endpoint (what Envoy's heap holds; the rest of RSS is V8's code and the Wasm
memories, mapped outside it).
"""
from __future__ import annotations

import http.client
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench as b  # noqa: E402

CONCURRENCY = os.environ.get("RSS_CONCURRENCY", "1")
ROUNDS = int(os.environ.get("RSS_ROUNDS", "3"))
REQUESTS = int(os.environ.get("RSS_REQUESTS", "2000"))
# RSS_RELEASE_BYTES: set Envoy's bootstrap `memory_allocator_manager` (tcmalloc gives back up to
# this many free bytes every second), to tell memory in use from freed memory the heap kept.
RELEASE_BYTES = int(os.environ.get("RSS_RELEASE_BYTES", "0"))


def filters(name: str, wasm: str) -> list:
    if wasm == "none":
        return []
    if name.startswith("etls"):
        return [b.h.wasm_filter(b.h.plugin_config(cookie_secure=False), b.SECRETS, wasm=Path(wasm).resolve())]
    f = b.h.wasm_filter("", {}, wasm=Path(wasm).resolve())
    f["typed_config"]["config"].update(name=name, root_id=name)
    f["typed_config"]["config"]["vm_config"]["vm_id"] = name
    return [f]


def measure(name: str, wasm: str, cookie: str) -> dict:
    port, admin = b.h.free_port(), b.h.free_port()
    cfg = b.bootstrap(port, admin, filters(name, wasm), {"login_api": b.h.free_port()})
    if RELEASE_BYTES:
        cfg["memory_allocator_manager"] = {"bytes_to_release": RELEASE_BYTES, "memory_release_interval": "1s"}
    p = b.start_envoy(f"rss-{name}", cfg, port, admin, b.ENVOY_CPU, CONCURRENCY)
    try:
        b.wait_ready(p)
        time.sleep(3.0 if RELEASE_BYTES else 1.0)
        ready = b.rss_kib(p.pid)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        for _ in range(REQUESTS):
            conn.request("GET", "/app", headers={"Cookie": cookie})
            r = conn.getresponse()
            r.read()
            if r.status != 200:
                raise SystemExit(f"rss: {name}: status {r.status}")
        conn.close()
        loaded = b.rss_kib(p.pid)
        c = http.client.HTTPConnection("127.0.0.1", admin, timeout=5)
        c.request("GET", "/memory")
        mem = json.loads(c.getresponse().read())
        return {"ready": ready, "loaded": loaded, "allocated": int(mem.get("allocated", 0)) // 1024,
                "heap": int(mem.get("heap_size", 0)) // 1024, "free": int(mem.get("pageheap_free", 0)) // 1024,
                "unmapped": int(mem.get("pageheap_unmapped", 0)) // 1024}
    finally:
        b.stop_all()
        b.STARTED.clear()


def main() -> int:
    builds = [a.split("=", 1) for a in sys.argv[1:]]
    if not builds:
        raise SystemExit(__doc__)
    b.OUT.mkdir(parents=True, exist_ok=True)
    cookie = f"accessTokenEtls={b.mint(b.SECRETS['ETLS_ACCESS'], 3600)}"
    samples: dict[str, list[dict]] = {n: [] for n, _ in builds}
    for _ in range(ROUNDS):
        for name, wasm in builds:
            samples[name].append(measure(name, wasm, cookie))
    first = builds[0][0]
    med = {n: {k: statistics.median(s[k] for s in v) for k in v[0]} for n, v in samples.items()}
    print(f"concurrency {CONCURRENCY}, {ROUNDS} rounds, {REQUESTS} requests, release {RELEASE_BYTES} B/s; MiB (median), delta vs {first}")
    print(f"{'build':<28} {'ready':>8} {'loaded':>8} {'Δloaded':>8} {'tc alloc':>9} {'tc heap':>8} {'tc free':>8}  wasm bytes")
    for name, wasm in builds:
        m = med[name]
        size = Path(wasm).stat().st_size if wasm != "none" else 0
        print(f"{name:<28} {m['ready'] / 1024:8.1f} {m['loaded'] / 1024:8.1f} {(m['loaded'] - med[first]['loaded']) / 1024:+8.1f} "
              f"{m['allocated'] / 1024:9.1f} {m['heap'] / 1024:8.1f} {m['free'] / 1024:8.1f}  {size:,}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
