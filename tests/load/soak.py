"""Load and soak driver (issue 6): a real Envoy with the filter (two workers; rotation through
the refresh cluster pointing back at Envoy, or inline with --mode inline), the echo app and a
stub login API on loopback, and tens of thousands of requests from keep-alive connections:

  valid       a valid session                                   200 from the app
  rotate      expired access token, valid refresh token         200 + two new Set-Cookie
  random      Cookie of random printable bytes                  401
  nonutf8     Cookie holding bytes 0x80-0xff (not UTF-8)        401
  huge        Cookie of 20-50 KB of junk cookies and tokens     401
  forged      forged / expired / wrong-kind / alg-none tokens   401 (302 for a page load)
  login       POST login                                        200 + four Set-Cookie
  badlogin    POST login with a body that is not JSON           400
  public      GET /login                                        200
  refresh     POST refresh route with a valid refresh token     200 + two Set-Cookie
  logout      POST logout                                       200 + four clearing Set-Cookie

Any other status (or cookie count) is "unexpected". Envoy's RSS is sampled after a warm-up and
at the end; the log is scanned for Wasm VM failures, and Envoy's vm_reload counter must stay 0.
Bounded: --requests (default 30000) and --max-seconds (default 600). Prints a JSON summary and
writes it to tests/out/soak/last.json; exit 1 on any unexpected answer or VM failure.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import sys
import threading
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness import envoy as henvoy  # noqa: E402
from harness import paths, tokens  # noqa: E402
from harness.upstreams import EchoApp, StubServer, login_ok  # noqa: E402

KINDS = [("valid", 34), ("rotate", 14), ("random", 9), ("nonutf8", 8), ("huge", 4), ("forged", 9),
         ("login", 8), ("badlogin", 2), ("public", 5), ("refresh", 4), ("logout", 3)]
VM_FAILURES = ("panicked", "Function: proxy_on_", "wasm trap", "Wasm VM failed", "Plugin configured to fail closed failed to load")


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


class Pool:
    """Pre-minted tokens (minting per request would make Python the bottleneck)."""

    def __init__(self, rng: random.Random) -> None:
        self.users = [(1000 + i, rng.choice(["admin", "user", "editor"])) for i in range(64)]
        self.valid = [(tokens.access(u, r), tokens.refresh(u, r)) for u, r in self.users]
        self.expired = [(tokens.expired_access(u, r), tokens.refresh(u, r)) for u, r in self.users]
        self.bad = [
            (tokens.access(1, "admin", secret=tokens.WRONG_SECRET), None),
            (tokens.expired_access(2, "user"), tokens.expired_refresh(2, "user")),
            (tokens.refresh(3, "user"), tokens.access(3, "user")),  # kinds swapped
            (tokens.alg_none(), None),
            (tokens.access(4, "user", alg="HS512"), tokens.refresh(4, "user", secret=tokens.WRONG_SECRET)),
        ]


def build(kind: str, rng: random.Random, pool: Pool) -> tuple[str, str, list[tuple[str, bytes]], bytes | None, set[int], int | None]:
    """(method, path, headers, body, expected statuses, expected number of Set-Cookie or None)."""
    h: list[tuple[str, bytes]] = [("Accept", b"application/json")]
    n = rng.randrange(1_000_000)

    def session(a: str | None, r: str | None) -> bytes:
        parts = [f"theme=t{n}"] + ([f"accessTokenEtls={a}"] if a else []) + ([f"refreshTokenEtls={r}"] if r else [])
        return "; ".join(parts).encode()

    if kind == "valid":
        a, r = rng.choice(pool.valid)
        return "GET", f"/app/{n}?q={n}", h + [("Cookie", session(a, r))], None, {200}, 0
    if kind == "rotate":
        a, r = rng.choice(pool.expired)
        return "GET", f"/app/r/{n}", h + [("Cookie", session(a, r))], None, {200}, 2
    if kind == "random":
        junk = bytes(rng.randrange(0x21, 0x7f) for _ in range(rng.randrange(1, 400)))
        return "GET", f"/x/{n}", h + [("Cookie", junk)], None, {401}, 4
    if kind == "nonutf8":
        junk = b"accessTokenEtls=" + bytes(rng.randrange(0x80, 0x100) for _ in range(rng.randrange(1, 200))) + b"; refreshTokenEtls=\xff\xfe\xc3("
        return "GET", f"/x/{n}", h + [("Cookie", junk)], None, {401}, 4
    if kind == "huge":
        size = rng.randrange(20_000, 50_000)
        filler = "; ".join(f"c{i}={'x' * 60}" for i in range(size // 66))
        a, _ = rng.choice(pool.bad)
        return "GET", f"/x/{n}", h + [("Cookie", f"{filler}; accessTokenEtls={a}".encode())], None, {401}, 4
    if kind == "forged":
        a, r = rng.choice(pool.bad)
        if rng.random() < 0.3:
            return "GET", f"/page/{n}", [("Accept", b"text/html")] + [("Cookie", session(a, r))], None, {302}, 4
        return "GET", f"/x/{n}", h + [("Cookie", session(a, r))], None, {401}, 4
    if kind == "login":
        body = json.dumps({"email": f"u{n}@example.test", "password": f"pw-{n}"}).encode()
        return "POST", "/api/auth/login", h + [("Content-Type", b"application/json")], body, {200}, 4
    if kind == "badlogin":
        return "POST", "/api/auth/login", h + [("Content-Type", b"application/json")], b"{\"email\": ", {400}, 0
    if kind == "public":
        return "GET", f"/login?n={n}", h, None, {200}, 0
    if kind == "refresh":
        _, r = rng.choice(pool.valid)
        return "POST", "/api/auth/refreshtoken", h + [("Cookie", session(None, r))], b"", {200}, 2
    if kind == "logout":
        a, r = rng.choice(pool.valid)
        return "POST", "/api/auth/logout", h + [("Cookie", session(a, r))], b"", {200}, 4
    raise ValueError(kind)


class Worker(threading.Thread):
    def __init__(self, port: int, seed: int, pool: Pool, quota: int, deadline: float) -> None:
        super().__init__(daemon=True)
        self.port, self.rng, self.pool, self.quota, self.deadline = port, random.Random(seed), pool, quota, deadline
        self.counts: Counter = Counter()
        self.unexpected: list[str] = []
        self.latencies: list[float] = []
        self.conn: http.client.HTTPConnection | None = None

    def _send(self, method: str, path: str, headers: list[tuple[str, bytes]], body: bytes | None):
        for attempt in range(2):
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=15)
            try:
                self.conn.putrequest(method, path, skip_accept_encoding=True)
                for k, v in headers:
                    self.conn.putheader(k, v)
                if body is not None:
                    self.conn.putheader("Content-Length", str(len(body)))
                self.conn.endheaders(body)
                r = self.conn.getresponse()
                data = r.read()
                if r.getheader("connection", "").lower() == "close":
                    self.conn.close()
                    self.conn = None
                return r.status, r.getheaders(), data
            except (http.client.HTTPException, OSError):
                self.conn.close()
                self.conn = None
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def run(self) -> None:
        names, weights = zip(*KINDS)
        for _ in range(self.quota):
            if time.monotonic() > self.deadline:
                break
            kind = self.rng.choices(names, weights)[0]
            method, path, headers, body, want, cookies = build(kind, self.rng, self.pool)
            t0 = time.perf_counter()
            try:
                status, rheaders, _ = self._send(method, path, headers, body)
            except Exception as e:  # noqa: BLE001 - every failure is counted, never hidden
                self.counts[(kind, "error")] += 1
                self.unexpected.append(f"{kind} {method} {path}: {type(e).__name__}: {e}")
                continue
            self.latencies.append(time.perf_counter() - t0)
            n_cookies = sum(1 for k, _ in rheaders if k.lower() == "set-cookie")
            self.counts[(kind, status)] += 1
            if status not in want or (cookies is not None and n_cookies != cookies):
                self.unexpected.append(f"{kind} {method} {path}: {status}, {n_cookies} Set-Cookie (want {sorted(want)}, {cookies})")
        if self.conn:
            self.conn.close()


def run_phase(port: int, pool: Pool, total: int, workers: int, seed: int, deadline: float) -> list[Worker]:
    ws = [Worker(port, seed * 1000 + i, pool, total // workers + (1 if i < total % workers else 0), deadline) for i in range(workers)]
    for w in ws:
        w.start()
    for w in ws:
        w.join(timeout=max(1.0, deadline - time.monotonic() + 30))
    return ws


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=int(os.environ.get("SOAK_REQUESTS", 30000)))
    ap.add_argument("--workers", type=int, default=int(os.environ.get("SOAK_WORKERS", 8)))
    ap.add_argument("--warmup", type=int, default=2000)
    ap.add_argument("--max-seconds", type=float, default=float(os.environ.get("SOAK_MAX_SECONDS", 600)))
    ap.add_argument("--mode", choices=["cluster", "inline"], default=os.environ.get("SOAK_MODE", "cluster"))
    ap.add_argument("--seed", type=int, default=int(os.environ.get("SOAK_SEED", 6)))
    args = ap.parse_args()

    rng = random.Random(args.seed)
    pool = Pool(rng)
    app = EchoApp().start()
    login = StubServer("login_api", default=login_ok()).start()
    plugin = henvoy.plugin_config(**({"refresh_cluster": "etls_refresh"} if args.mode == "cluster" else {}))
    clusters: dict[str, int | None] = {"app": app.port, "login_api": login.port}
    if args.mode == "cluster":
        clusters["etls_refresh"] = None
    envoy = henvoy.start_gateway(f"soak-{args.mode}", plugin=plugin, env=dict(henvoy.SECRETS), clusters=clusters, concurrency=2)
    started = time.monotonic()
    deadline = started + args.max_seconds
    try:
        pid = envoy.proc.pid
        rss_start = rss_kib(pid)
        warm = run_phase(envoy.listener_port, pool, args.warmup, args.workers, args.seed, deadline)
        rss_warm = rss_kib(pid)
        t0 = time.monotonic()
        main_ws = run_phase(envoy.listener_port, pool, args.requests, args.workers, args.seed + 1, deadline)
        elapsed = time.monotonic() - t0
        rss_end = rss_kib(pid)
        counts: Counter = Counter()
        unexpected: list[str] = []
        latencies: list[float] = []
        for w in warm + main_ws:
            counts.update(w.counts)
            unexpected += w.unexpected
        for w in main_ws:
            latencies += w.latencies
        done = sum(sum(w.counts.values()) for w in main_ws)
        log = envoy.log_text()
        vm_failures = {f: log.count(f) for f in VM_FAILURES if f in log}
        reloads = envoy.stat("wasm.etls_auth.vm_reload")
        _, stats = envoy.admin_get("/stats?filter=^wasmcustom\\.etls_auth\\.")
        outcomes = {l.split(": ")[0].removeprefix("wasmcustom.etls_auth."): int(l.split(": ")[1])
                    for l in stats.splitlines() if ": " in l and l.split(": ")[1].isdigit() and int(l.split(": ")[1])}
        latencies.sort()
        pct = lambda p: round(latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000, 2) if latencies else None  # noqa: E731
        summary = {
            "mode": args.mode,
            "envoy": {"workers": 2, "log": str(envoy.log_path)},
            "requests": {"warmup": sum(sum(w.counts.values()) for w in warm), "measured": done, "planned": args.requests},
            "seconds": round(elapsed, 1),
            "rps": round(done / elapsed, 1) if elapsed else None,
            "latency_ms": {"p50": pct(0.5), "p99": pct(0.99), "max": pct(1.0)},
            "by_kind_and_status": {f"{k} {s}": n for (k, s), n in sorted(counts.items(), key=str)},
            "unexpected": len(unexpected),
            "unexpected_examples": unexpected[:20],
            "filter_outcomes": outcomes,
            "vm_failures_in_log": vm_failures,
            "vm_reloads": reloads,
            "rss_kib": {"start": rss_start, "after_warmup": rss_warm, "end": rss_end,
                        "growth_after_warmup": rss_end - rss_warm,
                        "growth_pct": round(100.0 * (rss_end - rss_warm) / rss_warm, 1)},
        }
    finally:
        envoy.stop()
        app.stop()
        login.stop()
    out = paths.out_dir("soak")
    (out / "last.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
    ok = (summary["unexpected"] == 0 and not vm_failures and reloads == 0
          and done == args.requests)
    print(f"soak: {'OK' if ok else 'FAILED'}: {done} requests in {summary['seconds']} s, {summary['unexpected']} unexpected, "
          f"RSS {rss_warm} -> {rss_end} KiB ({summary['rss_kib']['growth_pct']:+}%), VM reloads {reloads}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
