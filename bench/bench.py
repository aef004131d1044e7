"""Envoy CPU and throughput benchmark for etls-auth (run it through bench/run.sh).

Starts every configuration as its own Envoy (--concurrency 1, pinned to CPU $BENCH_ENVOY_CPU with
taskset) on loopback, checks that each case answers as expected (status and a header), then
measures the cases in interleaved rounds with wrk (pinned to CPU $BENCH_CLIENT_CPU):
requests/s, p50/p99 latency and the Envoy's CPU time per request, read from
/proc/<pid>/stat (utime + stime) before and after each wrk run. Every figure is also given as a
ratio to the baseline (Envoy without an auth filter) measured in the same run.

Environment: BENCH_SECONDS (per case and round, default 5), BENCH_ROUNDS (default 5),
BENCH_CONNECTIONS (wrk -c, default 16), BENCH_ENVOY_CPU (0), BENCH_CLIENT_CPU (1),
BENCH_CASES (comma-separated case keys to measure; default all), BENCH_ETLS_WASM (another build
of the filter), BENCH_ETLS_WASM_B (a second build measured beside it: cases `<key>_b`), ENVOY_BIN (default: the harness's choice, .venv/bin/envoy). Output: bench/out/.

Besides etls-auth and jwt_authn it runs two Wasm filters of its own: bench/empty-filter (every
callback returns Continue) and bench/floor-filter, the host-call floor (reads the request header
map once and sets two headers; with the configuration `filter_state` also the two set_property
calls of the identity filter state). Envoy's RSS is read once all are ready and after the run.
"""
from __future__ import annotations

import base64
import datetime as dt
import http.client
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import jwt  # PyJWT, from tests/requirements.txt

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from harness import envoy as h  # noqa: E402  (config builders shared with the tests)
from harness import paths  # noqa: E402

OUT = REPO / "bench" / "out"
# BENCH_ETLS_WASM measures another build of the filter (e.g. to compare two versions).
ETLS_WASM = Path(os.environ.get("BENCH_ETLS_WASM") or REPO / "target/wasm32-wasip1/release/etls_auth.wasm").resolve()
# BENCH_ETLS_WASM_B: a second build, measured in the same run as `etls_b` (its cases end in `_b`).
ETLS_WASM_B = Path(os.environ["BENCH_ETLS_WASM_B"]).resolve() if os.environ.get("BENCH_ETLS_WASM_B") else None
EMPTY_WASM = REPO / "target/bench-empty-filter/wasm32-wasip1/release/empty_filter.wasm"
FLOOR_WASM = REPO / "target/bench-floor-filter/wasm32-wasip1/release/floor_filter.wasm"

SECONDS = int(os.environ.get("BENCH_SECONDS", "5"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "5"))
CONNECTIONS = int(os.environ.get("BENCH_CONNECTIONS", "16"))
ENVOY_CPU = os.environ.get("BENCH_ENVOY_CPU", "0")
CLIENT_CPU = os.environ.get("BENCH_CLIENT_CPU", "1")
WARMUP_SECONDS = 1
CLK_TCK = os.sysconf("SC_CLK_TCK")

SECRETS = dict(h.SECRETS)
FORGED_SECRET = "an-attacker-secret-that-is-long-enough-0000000000"
JWT_HEADER = "jwt_authn"
USER_HEADER = "x-etls-user-id"
SEEN_HEADER = "x-bench-user"  # the route echoes the identity header the app would see
STATE_HEADER = "x-bench-state"  # ... and the filter state `wasm.etls_user_id` (RBAC, access logs)

LOGIN_REPLY = json.dumps({"accessToken": "upstream-access", "refreshToken": "upstream-refresh",
                          "userData": {"id": 42, "role": "admin", "name": "Bench"}})
LOGIN_BODY = json.dumps({"email": "bench@example.com", "password": "bench-password"})


# --- configs ---------------------------------------------------------------------------------

def route_config(login_route: bool = False) -> dict:
    """One virtual host: a direct_response 200 that echoes the identity header it got, so a
    check can see what the app would have seen. With `login_route`, /api/auth/ goes to the
    login_api cluster: the filter sends the login request's headers on and holds its body, so
    the route needs an upstream that waits for the body (a direct_response answers at once)."""
    routes = [{"match": {"prefix": "/"}, "direct_response": {"status": 200, "body": {"inline_string": "ok\n"}}}]
    if login_route:
        routes.insert(0, {"match": {"prefix": "/api/auth/"}, "route": {"cluster": "login_api"}})
    return {
        "name": "bench",
        "virtual_hosts": [{
            "name": "all", "domains": ["*"],
            "routes": routes,
            "response_headers_to_add": [
                {"header": {"key": SEEN_HEADER, "value": f"%REQ({USER_HEADER})%"}},
                {"header": {"key": STATE_HEADER, "value": "%FILTER_STATE(wasm.etls_user_id:PLAIN)%"}},
            ],
        }],
    }


def hcm(http_filters: list, login_route: bool = False) -> dict:
    return {"name": "envoy.filters.network.http_connection_manager", "typed_config": {
        "@type": h.HCM_TYPE, "stat_prefix": "bench", "route_config": route_config(login_route),
        "http_filters": http_filters + [{"name": "envoy.filters.http.router", "typed_config": {"@type": h.ROUTER_TYPE}}],
    }}


def bootstrap(port: int, admin: int, http_filters: list, clusters: dict[str, int] | None = None) -> dict:
    return {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}},
        "static_resources": {
            "listeners": [{"name": "bench", "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
                           "filter_chains": [{"filters": [hcm(http_filters, "login_api" in (clusters or {}))]}]}],
            "clusters": [h.static_cluster(n, p) for n, p in (clusters or {}).items()],
        },
    }


def jwt_authn_filter(cache: bool) -> dict:
    k = base64.urlsafe_b64encode(SECRETS["ETLS_ACCESS"].encode()).rstrip(b"=").decode()
    provider = {
        "from_cookies": ["accessTokenEtls"],
        "local_jwks": {"inline_string": json.dumps({"keys": [{"kty": "oct", "alg": "HS256", "k": k}]})},
        "claim_to_headers": [{"header_name": USER_HEADER, "claim_name": "userId"}],
        "forward": True,
    }
    if cache:
        provider["jwt_cache_config"] = {"jwt_cache_size": 1000}
    return {"name": "envoy.filters.http.jwt_authn", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
        "providers": {"etls": provider},
        "rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": "etls"}}],
    }}


def login_api_bootstrap(port: int, admin: int) -> dict:
    """A fast login API: Envoy answering every request with a fixed successful login, after
    reading the whole request body (the buffer filter), as a real API would."""
    buffer = {"name": "envoy.filters.http.buffer", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer", "max_request_bytes": 65536}}
    cfg = bootstrap(port, admin, [buffer])
    vh = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]["route_config"]["virtual_hosts"][0]
    vh["routes"] = [{"match": {"prefix": "/"}, "direct_response": {"status": 200, "body": {"inline_string": LOGIN_REPLY}}}]
    vh["response_headers_to_add"] = [{"header": {"key": "content-type", "value": "application/json"}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}]
    return cfg


# --- processes -------------------------------------------------------------------------------

@dataclass
class Proc:
    name: str
    port: int
    admin: int
    popen: subprocess.Popen
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid


STARTED: list[Proc] = []


def start_envoy(name: str, cfg: dict, port: int, admin: int, cpu: str, concurrency: str = "1") -> Proc:
    d = OUT / "envoy" / name
    d.mkdir(parents=True, exist_ok=True)
    (d / "config.json").write_text(json.dumps(cfg, indent=2))
    log = d / "envoy.log"
    with open(log, "wb") as f:
        p = subprocess.Popen(
            ["taskset", "-c", cpu, paths.envoy_bin(), "-c", str(d / "config.json"), "--concurrency", concurrency,
             "--use-dynamic-base-id", "--disable-hot-restart", "-l", "warning", "--drain-time-s", "1"],
            stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=str(REPO))
    proc = Proc(name, port, admin, p, log)
    STARTED.append(proc)
    return proc


def wait_ready(proc: Proc, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.popen.poll() is not None:
            raise SystemExit(f"bench: Envoy {proc.name} exited; log:\n{proc.log.read_text(errors='replace')[-3000:]}")
        try:
            c = http.client.HTTPConnection("127.0.0.1", proc.admin, timeout=1)
            c.request("GET", "/ready")
            r = c.getresponse()
            if r.status == 200 and r.read().strip() == b"LIVE":
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"bench: Envoy {proc.name} not ready after {timeout}s; see {proc.log}")


def stop_all() -> None:
    for p in STARTED:
        if p.popen.poll() is None:
            os.kill(p.pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    for p in STARTED:
        try:
            p.popen.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.kill(p.pid, signal.SIGKILL)
            p.popen.wait(timeout=5)


def cpu_ticks(pid: int) -> int:
    """utime + stime of the whole process (all threads), in clock ticks."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2:].split()
    return int(fields[11]) + int(fields[12])  # fields 14 and 15 of proc(5)


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


# --- cases -----------------------------------------------------------------------------------

def mint(secret: str, exp_offset: int, **extra) -> str:
    now = int(time.time())
    claims = {"userId": 42, "role": "admin", "iat": now - 10, "exp": now + exp_offset, **extra}
    return jwt.encode(claims, secret.encode(), algorithm="HS256")


@dataclass
class Case:
    key: str
    label: str
    envoy: str
    method: str = "GET"
    path: str = "/app"
    headers: dict = field(default_factory=dict)
    body: str | None = None
    status: int = 200
    seen_user: str | None = None        # expected x-bench-user echo ("": absent; None: not checked)
    set_cookies: int | None = None      # expected number of Set-Cookie (None: not checked)
    state: str | None = None            # expected x-bench-state echo of wasm.etls_user_id (None: not checked)


def cases() -> list[Case]:
    valid = mint(SECRETS["ETLS_ACCESS"], 3600)
    expired = mint(SECRETS["ETLS_ACCESS"], -3600)
    refresh = mint(SECRETS["ETLS_REFRESH"], 3600, jti="bench")
    forged = mint(FORGED_SECRET, 3600)
    c = lambda v: {"Cookie": v}  # noqa: E731
    return [
        Case("baseline", "baseline: no auth filter", "baseline", seen_user=""),
        Case("empty_wasm", "empty proxy-wasm filter", "empty_wasm", seen_user=""),
        Case("floor", "host-call floor: read header map, set 2 headers", "floor", headers=c(f"theme=dark; accessTokenEtls={valid}; refreshTokenEtls={refresh}"), seen_user="42", state=""),
        Case("floor_fs", "host-call floor + 2 set_property (filter state)", "floor_fs", headers=c(f"theme=dark; accessTokenEtls={valid}; refreshTokenEtls={refresh}"), seen_user="42", state="42"),
        Case("jwt_authn", "jwt_authn, no cache: valid", "jwt_authn", headers=c(f"accessTokenEtls={valid}"), seen_user="42"),
        Case("jwt_authn_cache", "jwt_authn + jwt_cache_config: valid", "jwt_authn_cache", headers=c(f"accessTokenEtls={valid}"), seen_user="42"),
        Case("jwt_authn_forged", "jwt_authn, no cache: forged token", "jwt_authn", headers=c(f"accessTokenEtls={forged}"), status=401),
        Case("etls_valid", "etls-auth: valid session", "etls", headers=c(f"theme=dark; accessTokenEtls={valid}; refreshTokenEtls={refresh}"), seen_user="42", set_cookies=0),
        Case("etls_rotate_inline", "etls-auth: rotation every request, inline", "etls", headers=c(f"theme=dark; accessTokenEtls={expired}; refreshTokenEtls={refresh}"), seen_user="42", set_cookies=2),
        Case("etls_rotate_cluster", "etls-auth: rotation every request, refresh cluster", "etls_cluster", headers=c(f"theme=dark; accessTokenEtls={expired}; refreshTokenEtls={refresh}"), seen_user="42", set_cookies=2),
        Case("etls_deny_none", "etls-auth: deny, no cookie", "etls", status=401, set_cookies=4),
        Case("etls_deny_forged", "etls-auth: deny, forged token", "etls", headers=c(f"accessTokenEtls={forged}"), status=401, set_cookies=4),
        Case("etls_login", "etls-auth: login (fast local login API)", "etls", method="POST", path="/api/auth/login",
             headers={"Content-Type": "application/json"}, body=LOGIN_BODY, set_cookies=4),
    ]


def cases_b() -> list[Case]:
    """The etls-auth cases again against the BENCH_ETLS_WASM_B build (when set), and the probes."""
    floor_fs = next(c for c in cases() if c.key == "floor_fs")
    out = [Case(**{**floor_fs.__dict__, "key": f"probe_{p}", "label": f"host-call floor + filter state + 100 {p} host calls",
                   "envoy": f"probe_{p}"}) for p in PROBES]
    if ETLS_WASM_B is None:
        return out
    for c in cases():
        if c.envoy == "etls":
            out.append(Case(**{**c.__dict__, "key": c.key + "_b", "label": c.label + " [B]", "envoy": "etls_b"}))
    return out


def check(case: Case, port: int) -> str:
    """Checks one case's answer; returns the filter state the route saw (x-bench-state)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        try:
            conn.request(case.method, case.path, body=case.body, headers=case.headers)
            r = conn.getresponse()
            r.read()
        except (OSError, http.client.HTTPException) as e:
            raise SystemExit(f"bench: check failed for {case.key}: {e!r}") from e
        problems = []
        if r.status != case.status:
            problems.append(f"status {r.status}, expected {case.status}")
        if case.seen_user is not None and (r.getheader(SEEN_HEADER) or "") != case.seen_user:
            problems.append(f"{SEEN_HEADER}: {r.getheader(SEEN_HEADER)!r}, expected {case.seen_user!r}")
        state = r.getheader(STATE_HEADER) or ""
        if state == "-":  # how the formatter spells an absent value
            state = ""
        if case.state is not None and state != case.state:
            problems.append(f"{STATE_HEADER}: {state!r}, expected {case.state!r}")
        n = len(r.msg.get_all("set-cookie") or [])
        if case.set_cookies is not None and n != case.set_cookies:
            problems.append(f"{n} Set-Cookie, expected {case.set_cookies}")
        if problems:
            raise SystemExit(f"bench: check failed for {case.key}: " + "; ".join(problems))
        return state
    finally:
        conn.close()


# --- measuring -------------------------------------------------------------------------------

def wrk_script(case: Case) -> Path:
    """A wrk Lua script setting method, headers and body."""
    lines = [f"wrk.method = {json.dumps(case.method)}"]
    for k, v in case.headers.items():
        lines.append(f"wrk.headers[{json.dumps(k)}] = {json.dumps(v)}")
    if case.body is not None:
        lines.append(f"wrk.body = {json.dumps(case.body)}")
    p = OUT / "wrk" / f"{case.key}.lua"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text("\n".join(lines) + "\n")
    return p


def to_ms(v: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s)", v)
    if not m:
        return float("nan")
    return float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]


def run_wrk(case: Case, port: int, pid: int, seconds: int) -> dict:
    before = cpu_ticks(pid)
    out = subprocess.run(
        ["taskset", "-c", CLIENT_CPU, "wrk", "-t1", f"-c{CONNECTIONS}", f"-d{seconds}s", "--latency",
         "-s", str(wrk_script(case)), f"http://127.0.0.1:{port}{case.path}"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=seconds + 30)
    after = cpu_ticks(pid)
    text = out.stdout
    reqs = re.search(r"(\d+) requests in", text)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
    p50 = re.search(r"^\s+50%\s+(\S+)", text, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", text, re.M)
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    errors = re.search(r"Socket errors: (.*)", text)
    if out.returncode != 0 or not (reqs and rps and p50 and p99):
        raise SystemExit(f"bench: wrk failed for {case.key}:\n{text}")
    n = int(reqs.group(1))
    non_2xx = int(bad.group(1)) if bad else 0
    if (case.status < 300 and non_2xx) or (case.status >= 300 and non_2xx != n):
        raise SystemExit(f"bench: {case.key}: {non_2xx} of {n} answers had an unexpected status class\n{text}")
    return {
        "requests": n, "rps": float(rps.group(1)), "p50_ms": to_ms(p50.group(1)), "p99_ms": to_ms(p99.group(1)),
        "cpu_us": (after - before) / CLK_TCK * 1e6 / max(n, 1), "socket_errors": errors.group(1) if errors else "",
    }


# --- report ----------------------------------------------------------------------------------

def machine() -> str:
    model = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    return f"{os.cpu_count()} CPUs, {model or platform.machine()}, Linux {platform.release()}"


def envoy_version() -> str:
    out = subprocess.run([paths.envoy_bin(), "--version"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=30)
    m = re.search(r"version: \S+/([\d.]+)", out.stdout)
    return m.group(1) if m else "?"


def wasm_entry(name: str, wasm: Path, configuration: str = "") -> dict:
    """A Wasm filter entry for one of the bench's own filters (its own VM, no environment)."""
    f = h.wasm_filter(configuration, {}, wasm=wasm)
    f["typed_config"]["config"].update(name=name, root_id=name)
    f["typed_config"]["config"]["vm_config"]["vm_id"] = name
    return f


# Each Envoy the bench starts (cases say which one they use), with its label in the RSS table.
ENVOYS = {
    "baseline": "no auth filter",
    "empty_wasm": "empty proxy-wasm filter",
    "floor": "host-call floor",
    "floor_fs": "host-call floor + filter state",
    "jwt_authn": "jwt_authn, no cache",
    "jwt_authn_cache": "jwt_authn + jwt_cache_config",
    "etls": "etls-auth (inline rotation)",
    "etls_cluster": "etls-auth (refresh cluster)",
}
if ETLS_WASM_B is not None:
    ENVOYS["etls_b"] = "etls-auth [B] (inline rotation)"
# BENCH_PROBES (e.g. `clock,metric`): the floor with filter state making 100 more such host calls
# per request (bench/floor-filter), cases `probe_<name>`: (added CPU - floor_fs's) / 100 is the
# price of one host call in Envoy's V8.
PROBES = [p for p in os.environ.get("BENCH_PROBES", "").split(",") if p]
for _probe in PROBES:
    ENVOYS[f"probe_{_probe}"] = f"host-call floor + filter state + 100 {_probe} host calls"


def main() -> int:
    for tool in ("wrk", "taskset"):
        if not shutil.which(tool):
            raise SystemExit(f"bench: {tool} not found (scripts/setup.sh installs wrk; taskset is util-linux)")
    for w in (ETLS_WASM, EMPTY_WASM, FLOOR_WASM):
        if not w.is_file():
            raise SystemExit(f"bench: {w} missing (bench/run.sh builds it)")
    OUT.mkdir(parents=True, exist_ok=True)
    started_at = dt.datetime.now(dt.timezone.utc)
    load_before = os.getloadavg()

    login_port, login_admin = h.free_port(), h.free_port()
    plugin = h.plugin_config(cookie_secure=False)
    ports = {n: (h.free_port(), h.free_port()) for n in ENVOYS}
    configs = {
        "baseline": ([], {}),
        "empty_wasm": ([wasm_entry("empty", EMPTY_WASM)], {}),
        "floor": ([wasm_entry("floor", FLOOR_WASM)], {}),
        "floor_fs": ([wasm_entry("floor", FLOOR_WASM, "filter_state")], {}),
        "jwt_authn": ([jwt_authn_filter(False)], {}),
        "jwt_authn_cache": ([jwt_authn_filter(True)], {}),
        "etls": ([h.wasm_filter(plugin, SECRETS, wasm=ETLS_WASM)], {"login_api": login_port}),
        "etls_cluster": ([h.wasm_filter(dict(plugin, refresh_cluster="etls_refresh"), SECRETS, wasm=ETLS_WASM)],
                         {"login_api": login_port, "etls_refresh": ports["etls_cluster"][0]}),
    }
    for probe in PROBES:
        configs[f"probe_{probe}"] = ([wasm_entry("floor", FLOOR_WASM, f"filter_state probe={probe}")], {})
    if ETLS_WASM_B is not None:
        configs["etls_b"] = ([h.wasm_filter(plugin, SECRETS, wasm=ETLS_WASM_B)], {"login_api": login_port})
    try:
        envoys: dict[str, Proc] = {}
        login_api = start_envoy("login_api", login_api_bootstrap(login_port, login_admin), login_port, login_admin, CLIENT_CPU)
        for name, (filters, clusters) in configs.items():
            port, admin = ports[name]
            envoys[name] = start_envoy(name, bootstrap(port, admin, filters, clusters), port, admin, ENVOY_CPU)
        for p in [login_api, *envoys.values()]:
            wait_ready(p)
        time.sleep(1.0)
        rss_ready = {name: rss_kib(p.pid) for name, p in envoys.items()}
        only = [k for k in os.environ.get("BENCH_CASES", "").split(",") if k]
        all_cases = [c for c in cases() + cases_b() if not only or c.key in only or c.key == "baseline"]
        states = {case.key: check(case, envoys[case.envoy].port) for case in all_cases}
        print(f"bench: all {len(all_cases)} cases answer as expected; warming up", flush=True)
        for case in all_cases:
            run_wrk(case, envoys[case.envoy].port, envoys[case.envoy].pid, WARMUP_SECONDS)
        samples: dict[str, list[dict]] = {c.key: [] for c in all_cases}
        for rnd in range(ROUNDS):
            order = all_cases if rnd % 2 == 0 else list(reversed(all_cases))
            for case in order:
                e = envoys[case.envoy]
                samples[case.key].append(run_wrk(case, e.port, e.pid, SECONDS))
            print(f"bench: round {rnd + 1}/{ROUNDS} done", flush=True)
        for case in all_cases:  # the checks again: nothing changed under load
            check(case, envoys[case.envoy].port)
        rss = {name: rss_kib(p.pid) for name, p in envoys.items()}
    finally:
        stop_all()

    load_after = os.getloadavg()
    med = {k: {m: statistics.median(s[m] for s in v) for m in ("rps", "p50_ms", "p99_ms", "cpu_us")} for k, v in samples.items()}
    base = med["baseline"]
    added = {k: v["cpu_us"] - base["cpu_us"] for k, v in med.items()}
    sizes = {"etls_auth.wasm": ETLS_WASM.stat().st_size, "empty_filter.wasm": EMPTY_WASM.stat().st_size,
             "floor_filter.wasm": FLOOR_WASM.stat().st_size}
    # The fair floor: the one making the same host calls as a valid session. With filter state
    # (SPEC: wasm.etls_user_id and wasm.etls_role) that is two set_property calls more.
    etls_sets_state = states.get("etls_valid") == "42"
    floor = "floor_fs" if etls_sets_state else "floor"
    rss_over_empty = (rss["etls"] - rss["empty_wasm"]) / 1024

    def target(name, keys, holds, how):
        if all(k in med for k in keys):
            return (name, holds(), how())
        return (name, None, "not measured in this run")

    targets = [
        target(f"valid session adds at most 1.2x the CPU the host-call floor adds ({'with' if etls_sets_state else 'without'} filter state, as etls-auth)",
               ["etls_valid", floor],
               lambda: added["etls_valid"] <= 1.2 * added[floor],
               lambda: f"{added['etls_valid']:+.1f} µs vs 1.2 × {added[floor]:+.1f} µs ({added['etls_valid'] / added[floor]:.2f}x)"),
        target("valid session requests/s at least 0.9x cached jwt_authn", ["etls_valid", "jwt_authn_cache"],
               lambda: med["etls_valid"]["rps"] >= 0.9 * med["jwt_authn_cache"]["rps"],
               lambda: f"{med['etls_valid']['rps'] / med['jwt_authn_cache']['rps']:.2f}x"),
        target("valid session requests/s at least 1.25x jwt_authn without cache", ["etls_valid", "jwt_authn"],
               lambda: med["etls_valid"]["rps"] >= 1.25 * med["jwt_authn"]["rps"],
               lambda: f"{med['etls_valid']['rps'] / med['jwt_authn']['rps']:.2f}x"),
        target("deny with a forged token adds no more CPU than jwt_authn rejecting it", ["etls_deny_forged", "jwt_authn_forged"],
               lambda: added["etls_deny_forged"] <= added["jwt_authn_forged"],
               lambda: f"{added['etls_deny_forged']:+.1f} µs vs {added['jwt_authn_forged']:+.1f} µs"),
        target("inline rotation on every request at least half the valid-session throughput", ["etls_rotate_inline", "etls_valid"],
               lambda: med["etls_rotate_inline"]["rps"] >= 0.5 * med["etls_valid"]["rps"],
               lambda: f"{med['etls_rotate_inline']['rps'] / med['etls_valid']['rps']:.2f}x"),
        ("Envoy RSS with etls-auth at most 12 MiB above the empty Wasm filter's", rss_over_empty <= 12,
         f"{rss_over_empty:+.1f} MiB ({rss['etls'] / 1024:.1f} vs {rss['empty_wasm'] / 1024:.1f} MiB)"),
        (".wasm at most 300 KB (300,000 bytes)", sizes["etls_auth.wasm"] <= 300_000, f"{sizes['etls_auth.wasm']:,} bytes"),
    ]

    busy = max(load_before[0], load_after[0])
    lines = [
        f"Date: {started_at:%Y-%m-%d %H:%M} UTC. Machine: {machine()}. Envoy {envoy_version()}, `--concurrency 1` "
        f"pinned to CPU {ENVOY_CPU}; wrk `-t1 -c{CONNECTIONS}` pinned to CPU {CLIENT_CPU}; "
        f"{ROUNDS} interleaved rounds × {SECONDS} s per case, medians. Load average before/after: "
        f"{load_before[0]:.2f}/{load_after[0]:.2f}" + (" (the machine was busy: figures are noisier)." if busy > 0.7 else "."),
        "",
        "| case | req/s | × baseline | p50 ms | p99 ms | CPU µs/req | × baseline | added µs/req | × floor | Envoy RSS MiB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for case in cases() + cases_b():
        if case.key not in med:
            continue
        m = med[case.key]
        vs_floor = f"{added[case.key] / added[floor]:.2f}" if floor in med and added[floor] > 0 else "-"
        lines.append(
            f"| {case.label} | {m['rps']:,.0f} | {m['rps'] / base['rps']:.2f} | {m['p50_ms']:.2f} | {m['p99_ms']:.2f} | "
            f"{m['cpu_us']:.1f} | {m['cpu_us'] / base['cpu_us']:.2f} | {added[case.key]:+.1f} | {vs_floor} | {rss[case.envoy] / 1024:.1f} |")
    lines += [
        "",
        f"`× floor`: CPU added over the baseline, as a multiple of what the {'floor with filter state' if floor == 'floor_fs' else 'floor'} "
        f"adds (etls-auth {'sets' if etls_sets_state else 'does not set'} the filter state on a valid session).",
        "",
        "| Envoy | RSS ready MiB | RSS after the run MiB | over the empty Wasm filter MiB |",
        "|---|---:|---:|---:|",
    ]
    lines += [f"| {label} | {rss_ready[n] / 1024:.1f} | {rss[n] / 1024:.1f} | {(rss[n] - rss['empty_wasm']) / 1024:+.1f} |"
              for n, label in ENVOYS.items()]
    lines += [
        "",
        f"`.wasm` sizes: etls_auth.wasm {sizes['etls_auth.wasm']:,} bytes; empty_filter.wasm {sizes['empty_filter.wasm']:,} bytes; "
        f"floor_filter.wasm {sizes['floor_filter.wasm']:,} bytes. Every Envoy runs whatever BENCH_CASES selects (RSS is always measured).",
        "",
        "| target | holds | measured |",
        "|---|---|---|",
    ]
    lines += [f"| {name} | {'-' if ok is None else 'yes' if ok else 'NO'} | {how} |" for name, ok, how in targets]
    table = "\n".join(lines)

    stamp = f"{started_at:%Y%m%dT%H%M%SZ}"
    (OUT / f"results-{stamp}.md").write_text(table + "\n")
    (OUT / "latest.md").write_text(table + "\n")
    (OUT / f"results-{stamp}.json").write_text(json.dumps({
        "started_at": started_at.isoformat(), "machine": machine(), "seconds": SECONDS, "rounds": ROUNDS,
        "connections": CONNECTIONS, "load_before": load_before, "load_after": load_after, "samples": samples,
        "median": med, "added_cpu_us": added, "sizes": sizes, "rss_ready_kib": rss_ready, "rss_kib": rss,
        "etls_sets_filter_state": etls_sets_state, "floor": floor,
        "targets": [{"target": n, "holds": ok, "measured": how} for n, ok, how in targets],
    }, indent=2))
    print()
    print(table)
    print(f"\nbench: written to {OUT / f'results-{stamp}.md'} (and .json, latest.md)")
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    sys.exit(main())
