"""Operations helpers (docs/operations.md): the test-only trapping build of the filter, Envoys
with a chosen failure_policy and wasm, and Envoys whose filter configuration is pushed at
runtime from a watched file.
"""
from __future__ import annotations

import copy
import itertools
import json
import os
import re
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from . import client, paths, tokens
from .envoy import (WASM_TYPE, Envoy, bootstrap, free_port, listener, pushed_vm_id, start_on_free_ports, static_cluster,
                    wasm_filter)

from .upstreams import StubServer as _StubBase
from .upstreams import _send

_counter = itertools.count(1)

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
                reload_base_interval_ms: int | None = None,
                concurrency: int = 1, attempts: int = 3) -> Envoy:
    """An Envoy with the filter built from `wasm` (default: the release build) and the given
    `failure_policy` (None: the field left out, Envoy's default). `reload_base_interval_ms` sets
    PluginConfig.reload_config.backoff.base_interval (None: left out, Envoy's default 1000 ms;
    see RELOAD_BACKOFF_FACTOR for what Envoy does with it)."""
    def config(lp: int, ap: int) -> dict:
        cfg = bootstrap(listener_port=lp, admin_port=ap, plugin=plugin, env=env, clusters=clusters, wasm=wasm)
        pc = wasm_plugin_config(cfg)
        if failure_policy is None:
            pc.pop("failure_policy", None)
        else:
            pc["failure_policy"] = failure_policy
        if reload_base_interval_ms is not None:
            pc["reload_config"] = {"backoff": {"base_interval": f"{reload_base_interval_ms / 1000:.3f}s"}}
        return cfg

    return start_on_free_ports(name, config, concurrency=concurrency, attempts=attempts)


# FAIL_RELOAD's reload backoff, as Envoy implements it (the wasm extension's
# PluginConfig::maybeReloadHandleIfNeeded, source/extensions/common/wasm/wasm.cc, with
# JitteredLowerBoundBackOffStrategy, source/common/common/backoff_strategy.cc): on each request a
# worker gets while its VM is failed with a runtime error, Envoy draws a fresh interval, uniform
# in [base, 1.5 * base) ms (base: reload_config.backoff.base_interval, default 1000 ms; no
# max_interval, no growth), and reloads the VM only if at least that long has passed since that
# worker's last load: its VM's creation at startup, or its last reload attempt. NOT since the
# trap. Otherwise the request gets 503 and counts wasm.<name>.vm_reload_backoff.
RELOAD_DEFAULT_BASE_MS = 1000
RELOAD_BACKOFF_FACTOR = 1.5


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


# --- ECDS: the filter configuration pushed from a watched file -------------------------------
TYPED_EXTENSION_CONFIG_TYPE = "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig"
ECDS_STAT = "extension_config_discovery.http_filter.etls_auth."


def ecds_resource(plugin: Mapping[str, Any] | str, env: Mapping[str, str], wasm: str | os.PathLike | None = None,
                  vm_id: str | None = None) -> dict:
    """The TypedExtensionConfig a control plane sends for the filter: the Wasm filter as the
    static configs have it (FAIL_RELOAD, allow_on_headers_stop_iteration on), secrets as VM
    environment key_values, vm_id `vm_id` (default: harness.envoy.pushed_vm_id(env))."""
    vm_id = pushed_vm_id(env) if vm_id is None else vm_id
    typed = copy.deepcopy(wasm_filter(plugin, env, wasm, vm_id=vm_id)["typed_config"])
    typed["config"].setdefault("allow_on_headers_stop_iteration", True)
    return {"@type": TYPED_EXTENSION_CONFIG_TYPE, "name": "etls_auth", "typed_config": typed}


def write_atomically(path: Path, text: str) -> None:
    """Writes a sibling temp file and renames it over `path`: the watcher sees one complete file."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


class EcdsGateway:
    """An Envoy whose listener is static and whose etls-auth HTTP filter comes by ECDS from a
    watched file (`config_discovery` with a `path_config_source`), as a control plane delivers it.
    `push(plugin, env)` writes a new DiscoveryResponse atomically; `ecds_counts()` reads Envoy's
    extension_config_discovery counters for the filter."""

    def __init__(self, name: str, *, clusters: Mapping[str, int | None], concurrency: int = 1,
                 wasm: str | os.PathLike | None = None):
        self.name = name
        self.wasm = wasm
        self.listener_port = free_port()
        self.admin_port = free_port()
        self.version = 0
        self.dir = paths.out_dir("envoy", f"{name}-ecds-{os.getpid()}-{next(_counter)}")
        self.file = self.dir / "etls_auth.json"
        ecds_filter = {
            "name": "etls_auth",
            "config_discovery": {
                "config_source": {
                    "resource_api_version": "V3",
                    "path_config_source": {"path": str(self.file), "watched_directory": {"path": str(self.dir)}},
                },
                "type_urls": [WASM_TYPE],
            },
        }
        resolved = {n: (self.listener_port if p is None else p) for n, p in clusters.items()}
        cfg = {
            "node": {"id": name, "cluster": "etls-tests"},
            "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": self.admin_port}}},
            "static_resources": {
                "listeners": [listener(self.listener_port, [ecds_filter])],
                "clusters": [static_cluster(n, p) for n, p in resolved.items()],
            },
        }
        self.envoy = Envoy(name, cfg, self.listener_port, self.admin_port, concurrency=concurrency)

    def push(self, plugin: Mapping[str, Any] | str, env: Mapping[str, str], vm_id: str | None = None) -> str:
        """Writes version `n+1` of the filter configuration (`vm_id`: see ecds_resource); returns
        the version string."""
        self.version += 1
        v = str(self.version)
        doc = {"version_info": v, "resources": [ecds_resource(plugin, env, self.wasm, vm_id)]}
        write_atomically(self.file, json.dumps(doc))
        return v

    def start(self, plugin: Mapping[str, Any] | str, env: Mapping[str, str]) -> "EcdsGateway":
        self.push(plugin, env)
        self.envoy.start()
        return self

    def stop(self) -> None:
        self.envoy.stop()

    def ecds_counts(self) -> dict[str, int]:
        """update_success, update_rejected, config_reload, config_fail of the filter's ECDS."""
        return {k: self.envoy.stat(ECDS_STAT + k) or 0 for k in ("update_success", "update_rejected", "config_reload", "config_fail")}

    def ecds_version(self) -> str | None:
        """The version_info of the configuration in use (the text readout version_text)."""
        _, body = self.envoy.admin_get(f"/stats?filter=^{ECDS_STAT}version_text$")
        for line in body.splitlines():
            k, _, v = line.partition(": ")
            if k == ECDS_STAT + "version_text":
                return v.strip().strip('"')
        return None

    def wait_taken(self, version: str, timeout: float = 30.0) -> None:
        """Polls (bounded) until Envoy serves `version`; fails if it rejected it meanwhile."""
        before = self.ecds_counts()["update_rejected"]
        if not wait_until(lambda: self.ecds_version() == version or self.ecds_counts()["update_rejected"] > before, timeout):
            raise AssertionError(f"{self.name}: version {version} not taken within {timeout}s (serving {self.ecds_version()})")
        if self.ecds_version() != version:
            raise AssertionError(f"{self.name}: version {version} rejected:\n{self.envoy.log_tail(20)}")
        # version_text moves when the main thread took the version; the workers get it (and their
        # new VMs) right after, by a post to each worker: give them a moment.
        time.sleep(0.5)

    def wait_rejected(self, rejected: int, timeout: float = 30.0) -> None:
        if not wait_until(lambda: self.ecds_counts()["update_rejected"] >= rejected, timeout):
            raise AssertionError(f"{self.name}: no rejection counted within {timeout}s: {self.ecds_counts()}")


# --- a login API with one user per email, and a population of simulated browsers -------------
class UsersLoginApi(_StubBase):
    """The login API for load: `u<N>@...` logs in as user N (userData.id = N); counts the calls."""

    def __init__(self) -> None:
        super().__init__("users_login_api")

    def _respond(self, h, seen) -> None:
        try:
            email = json.loads(seen.body)["email"]
            uid = int(email.split("@")[0].lstrip("u"))
        except (ValueError, KeyError, TypeError):
            _send(h, 400, [("Content-Type", "application/json")], b'{"error":"bad"}')
            return
        body = json.dumps({"accessToken": f"up-a-{uid}", "refreshToken": f"up-r-{uid}",
                           "userData": {"id": uid, "role": "user"}}).encode()
        _send(h, 200, [("Content-Type", "application/json")], body)


@dataclass
class LoadReport:
    requests: int = 0
    served: int = 0
    denials: int = 0
    server_errors: int = 0
    other: int = 0
    rotations: int = 0
    logins: int = 0
    wrong_user: int = 0
    # (monotonic time, which secret signed the access token): every access token the filter minted.
    minted: list = field(default_factory=list)
    problems: list = field(default_factory=list)

    def summary(self, label: str) -> str:
        return (f"{label}: requests={self.requests} served={self.served} denials={self.denials} "
                f"5xx={self.server_errors} other={self.other} rotations={self.rotations} "
                f"login_api_calls={self.logins} wrong_user={self.wrong_user}")


class Browsers:
    """`n` simulated browsers, each a thread with its own cookie jar, logging in once and then
    loading protected pages, alternating between the replicas' `ports` (request k of a browser
    goes to ports[k % len(ports)]), with pauses from `think` (cycled) between requests. A denied
    browser logs in again (so login API calls beyond `n` are logouts). Bounded: each browser stops
    after `max_requests` or when `stop()` is called. `secrets` maps a label to an access secret,
    to tell which key signed each token minted."""

    def __init__(self, ports: list[int], n: int, *, secrets: Mapping[str, str], think: tuple[float, ...] = (0.1,),
                 max_requests: int = 2000, login_path: str = "/api/auth/login",
                 access_cookie: str = "accessTokenEtls", refresh_cookie: str = "refreshTokenEtls"):
        self.ports = list(ports)
        self.n = n
        self.secrets = dict(secrets)
        self.think = think
        self.max_requests = max_requests
        self.login_path = login_path
        self.names = (access_cookie, refresh_cookie)
        self.report = LoadReport()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(i,), name=f"browser-{i}", daemon=True) for i in range(n)]

    def start(self) -> "Browsers":
        for t in self._threads:
            t.start()
        return self

    def stop(self, timeout: float = 30.0) -> LoadReport:
        self._stop.set()
        for t in self._threads:
            t.join(timeout)
        assert not any(t.is_alive() for t in self._threads), "a browser thread did not stop"
        return self.report

    def _note(self, **counts: int) -> None:
        with self._lock:
            for k, v in counts.items():
                setattr(self.report, k, getattr(self.report, k) + v)

    def _key_of(self, token: str) -> str:
        for label, secret in self.secrets.items():
            if tokens.verifies(token, secret):
                return label
        return "unknown"

    def _take_cookies(self, jar: dict[str, str], r: client.Response) -> bool:
        """Applies the Set-Cookie of `r` to `jar`; True if a new access token came."""
        minted = False
        for c in r.set_cookies:
            if c.max_age == 0 or c.value == "":
                jar.pop(c.name, None)
            else:
                jar[c.name] = c.value
                if c.name == self.names[0]:
                    minted = True
                    with self._lock:
                        self.report.minted.append((time.monotonic(), self._key_of(c.value)))
        return minted

    def _login(self, i: int, jar: dict[str, str], port: int) -> None:
        r = client.request(port, "POST", self.login_path, body={"email": f"u{i + 1}@example.test", "password": "pw"})
        self._note(logins=1)
        if r.status != 200:
            with self._lock:
                self.report.problems.append(f"browser {i}: login {r.status} {r.body[:100]!r}")
            return
        self._take_cookies(jar, r)

    def _run(self, i: int) -> None:
        jar: dict[str, str] = {}
        self._login(i, jar, self.ports[i % len(self.ports)])
        for k in range(self.max_requests):
            if self._stop.is_set():
                return
            port = self.ports[(i + k) % len(self.ports)]
            try:
                r = client.request(port, "GET", f"/page/{i}/{k}", cookies=dict(jar) or None, timeout=10)
            except OSError as err:
                self._note(requests=1, other=1)
                with self._lock:
                    self.report.problems.append(f"browser {i} request {k}: {err!r}")
                continue
            self._note(requests=1)
            if r.status == 200:
                rotated = self._take_cookies(jar, r)
                try:
                    uid = [v for n, v in r.json()["headers"] if n.lower() == "x-etls-user-id"]
                except (ValueError, KeyError):
                    uid = None
                self._note(served=1, rotations=int(rotated), wrong_user=int(uid != [str(i + 1)]))
            elif r.status in (401, 302):
                self._note(denials=1)
                with self._lock:
                    self.report.problems.append(f"browser {i} request {k} on :{port}: denied {r.status}")
                self._take_cookies(jar, r)
                self._login(i, jar, port)
            elif r.status >= 500:
                self._note(server_errors=1)
                with self._lock:
                    self.report.problems.append(f"browser {i} request {k} on :{port}: {r.status} {r.body[:100]!r}")
            else:
                self._note(other=1)
            # Each browser starts at another point of the cycle, so their rotations spread out.
            self._stop.wait(self.think[(k + 3 * i) % len(self.think)])
