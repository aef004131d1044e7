"""Envoy for the tests: bootstrap configs with the etls-auth filter, and a process wrapper.

An `Envoy` writes its config (JSON) and log under tests/out/envoy/<name>-<n>/, starts the binary
on free loopback ports with a dynamic base id (so several can coexist), waits until admin /ready
says LIVE and the listener answers, and is stopped by the PID it started. The log file stays
after the run: tests scan it (no secrets or tokens logged, no traps).
"""
from __future__ import annotations

import atexit
import hashlib
import http.client
import itertools
import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any, Callable, Mapping

from . import paths

# Secrets of the VM environment for the tests: >= 32 bytes, all different.
SECRETS = {
    "ETLS_ACCESS": "test-access-secret-0123456789abcdefghijklmnop",
    "ETLS_REFRESH": "test-refresh-secret-0123456789abcdefghijklmno",
}
PREVIOUS_SECRETS = {
    "ETLS_ACCESS_PREVIOUS": "old-access-secret-9876543210zyxwvutsrqponmlkj",
    "ETLS_REFRESH_PREVIOUS": "old-refresh-secret-9876543210zyxwvutsrqponmlk",
}

HCM_TYPE = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
WASM_TYPE = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"
ROUTER_TYPE = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
STRING_VALUE_TYPE = "type.googleapis.com/google.protobuf.StringValue"

_counter = itertools.count(1)
# Every Envoy this process started; the atexit hook stops those still running (by their PID),
# in case a session ends without its fixture finalizers.
_started: list["Envoy"] = []


@atexit.register
def _stop_leftovers() -> None:
    for e in _started:
        try:
            e.stop(timeout=5)
        except Exception:  # noqa: BLE001 - best effort at interpreter exit
            pass


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def plugin_config(**overrides: Any) -> dict:
    """The plugin JSON the tests use by default; keyword arguments replace or add keys
    (a value of None removes the key)."""
    cfg: dict[str, Any] = {"login_cluster": "login_api"}
    for k, v in overrides.items():
        if v is None:
            cfg.pop(k, None)
        else:
            cfg[k] = v
    return cfg


VM_ID = "etls_auth"
# Envoy 1.40 keys its Wasm VMs by vm_id, VM configuration, code and the VM environment, so a push
# that changes only the secrets (vm_config.environment_variables) gets new VMs with the new
# secrets. Envoy before the fix of envoyproxy/envoy#40881 (PR #44563) leaves the environment out
# of the key: such a push keeps the running VMs and their old secrets (measured on 1.36.2; the
# versions between not measured, so everything before 1.40 is taken as unfixed). There, a push
# must change vm_id with the secrets (docs/operations.md, Pushing configuration).
ENV_IN_VM_KEY_SINCE = (1, 40, 0)


def pushed_vm_id(env: Mapping[str, str]) -> str:
    """The vm_id of a pushed configuration with these secrets: VM_ID where Envoy keys VMs by their
    environment too; before, VM_ID plus a digest of the secrets, which gives the same VM for the
    same secrets and a new one when they change (what 1.40 does by itself)."""
    if paths.envoy_version() >= ENV_IN_VM_KEY_SINCE:
        return VM_ID
    digest = hashlib.sha256(json.dumps(sorted(env.items())).encode()).hexdigest()[:12]
    return f"{VM_ID}-{digest}"


def wasm_filter(
    plugin: Mapping[str, Any] | str,
    env: Mapping[str, str],
    wasm: str | os.PathLike | None = None,
    failure_policy: str = "FAIL_RELOAD",
    allow_on_headers_stop_iteration: bool = True,
    vm_id: str = VM_ID,
) -> dict:
    """The `envoy.filters.http.wasm` entry. The plugin config travels as a StringValue holding
    JSON (a Struct would arrive in the VM as binary protobuf). `allow_on_headers_stop_iteration`
    (on in every shipped config) lets the filter hold a login's headers while it reads the body;
    False leaves the key out, to test the filter's fallback."""
    value = plugin if isinstance(plugin, str) else json.dumps(plugin)
    config: dict[str, Any] = {"name": "etls_auth", "root_id": "etls_auth"}
    if allow_on_headers_stop_iteration:
        config["allow_on_headers_stop_iteration"] = True
    return {
        "name": "envoy.filters.http.wasm",
        "typed_config": {
            "@type": WASM_TYPE,
            "config": {
                **config,
                # PluginConfig.failure_policy (Envoy >= 1.33; replaces fail_open): a trap kills
                # the worker's VM; FAIL_RELOAD makes a new VM for later requests, and the
                # request that hit the dead VM is refused, never let through.
                "failure_policy": failure_policy,
                "configuration": {"@type": STRING_VALUE_TYPE, "value": value},
                "vm_config": {
                    "vm_id": vm_id,
                    "runtime": "envoy.wasm.runtime.v8",
                    "code": {"local": {"filename": str(wasm if wasm is not None else paths.wasm_path())}},
                    "environment_variables": {"key_values": dict(env)},
                },
            },
        },
    }


def static_cluster(name: str, port: int, host: str = "127.0.0.1", connect_timeout: str = "1s") -> dict:
    return {
        "name": name,
        "type": "STATIC",
        "connect_timeout": connect_timeout,
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"socket_address": {"address": host, "port_value": port}}}}]}],
        },
    }


def http_connection_manager(http_filters: list, app_cluster: str = "app", **hcm_extra: Any) -> dict:
    """HCM with normalize_path and merge_slashes, everything to `app_cluster`."""
    routes = [{"match": {"prefix": "/"}, "route": {"cluster": app_cluster, "timeout": "15s"}}]
    hcm = {
        "@type": HCM_TYPE,
        "stat_prefix": "ingress_http",
        "normalize_path": True,
        "merge_slashes": True,
        "route_config": {
            "name": "local_route",
            "virtual_hosts": [{"name": "all", "domains": ["*"], "routes": routes}],
        },
        "http_filters": list(http_filters) + [{"name": "envoy.filters.http.router", "typed_config": {"@type": ROUTER_TYPE}}],
    }
    hcm.update(hcm_extra)
    return {"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}


def listener(port: int, http_filters: list, name: str = "ingress", **hcm_extra: Any) -> dict:
    return {
        "name": name,
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
        "filter_chains": [{"filters": [http_connection_manager(http_filters, **hcm_extra)]}],
    }


def bootstrap(
    *,
    listener_port: int,
    admin_port: int,
    plugin: Mapping[str, Any] | str,
    env: Mapping[str, str],
    clusters: Mapping[str, int],
    wasm: str | os.PathLike | None = None,
    allow_on_headers_stop_iteration: bool = True,
    **hcm_extra: Any,
) -> dict:
    """A complete static bootstrap: one listener with the filter, `clusters` as name -> port on
    127.0.0.1 (use listener_port for a cluster that points back at this Envoy)."""
    wasm_entry = wasm_filter(plugin, env, wasm, allow_on_headers_stop_iteration=allow_on_headers_stop_iteration)
    return {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}},
        "static_resources": {
            "listeners": [listener(listener_port, [wasm_entry], **hcm_extra)],
            "clusters": [static_cluster(n, p) for n, p in clusters.items()],
        },
    }


def run_validate(config: Mapping[str, Any] | str | os.PathLike, cwd: str | os.PathLike | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """`envoy --mode validate -c <config>`; a dict is written to a temp JSON file first.
    Returns the CompletedProcess (stdout and stderr merged into .stdout)."""
    if isinstance(config, Mapping):
        d = paths.out_dir("validate", f"{os.getpid()}-{next(_counter)}")
        path = d / "config.json"
        path.write_text(json.dumps(config, indent=2))
    else:
        path = Path(config)
    return subprocess.run(
        [paths.envoy_bin(), "--mode", "validate", "-c", str(path), "-l", "info", "--use-dynamic-base-id"],
        cwd=str(cwd) if cwd else None,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
    )


class Envoy:
    """One Envoy process. `config` is a complete bootstrap; `listener_port` is where tests send
    requests (None when the config has no static listener to probe)."""

    def __init__(self, name: str, config: Mapping[str, Any], listener_port: int | None, admin_port: int, concurrency: int = 1):
        self.name = name
        self.config = config
        self.listener_port = listener_port
        self.admin_port = admin_port
        self.concurrency = concurrency
        self.dir = paths.out_dir("envoy", f"{name}-{os.getpid()}-{next(_counter)}")
        self.config_path = self.dir / "config.json"
        self.log_path = self.dir / "envoy.log"
        self.proc: subprocess.Popen | None = None
        # More command-line options, e.g. ["--file-flush-interval-msec", "100"] for access logs.
        self.extra_args: list[str] = []

    # --- lifecycle -------------------------------------------------------------------------
    def start(self, timeout: float = 60.0, wait: bool = True) -> "Envoy":
        self.config_path.write_text(json.dumps(self.config, indent=2))
        log = open(self.log_path, "ab")
        try:
            self.proc = subprocess.Popen(
                [
                    paths.envoy_bin(),
                    "-c", str(self.config_path),
                    "--concurrency", str(self.concurrency),
                    "--use-dynamic-base-id",
                    "-l", "info",
                    "--component-log-level", "wasm:debug",
                    "--drain-time-s", "1",
                    *self.extra_args,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=str(paths.REPO),
            )
        finally:
            log.close()
        _started.append(self)
        if wait:
            self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Poll (bounded) until admin /ready answers LIVE and, if there is a listener, it answers HTTP."""
        deadline = time.monotonic() + timeout
        live = False
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise paths.HarnessError(f"Envoy {self.name} exited with {self.proc.returncode} while starting:\n{self.log_tail()}")
            if not live:
                try:
                    status, body = self.admin_get("/ready", timeout=1.0)
                    live = status == 200 and body.strip() == "LIVE"
                except OSError:
                    pass
            if live:
                if self.listener_port is None or self._listener_answers():
                    return
            time.sleep(0.1)
        self.stop()
        raise paths.HarnessError(f"Envoy {self.name} not ready after {timeout}s:\n{self.log_tail()}")

    def _listener_answers(self) -> bool:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", self.listener_port, timeout=2.0)
            try:
                conn.request("GET", "/__harness_ready_probe", headers={"Accept": "application/json"})
                conn.getresponse().read()
                return True
            finally:
                conn.close()
        except (OSError, http.client.HTTPException):
            return False

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM the PID we started, then SIGKILL it after `timeout`. Returns the exit code."""
        p = self.proc
        if p is None:
            return None
        if p.poll() is None:
            try:
                os.kill(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                p.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.kill(p.pid, signal.SIGKILL)
                p.wait(timeout=timeout)
        return p.returncode

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    # --- access ----------------------------------------------------------------------------
    def admin_get(self, path: str, timeout: float = 5.0) -> tuple[int, str]:
        conn = http.client.HTTPConnection("127.0.0.1", self.admin_port, timeout=timeout)
        try:
            conn.request("GET", path)
            r = conn.getresponse()
            return r.status, r.read().decode("utf-8", "replace")
        finally:
            conn.close()

    def stat(self, name: str) -> int | None:
        """One counter or gauge from admin /stats (exact name), or None if absent."""
        _, body = self.admin_get(f"/stats?filter=^{name}$")
        for line in body.splitlines():
            k, _, v = line.partition(": ")
            if k == name:
                try:
                    return int(v)
                except ValueError:
                    return None
        return None

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, n: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-n:])

    def __repr__(self) -> str:
        return f"<Envoy {self.name} :{self.listener_port} admin :{self.admin_port} log {self.log_path}>"


def start_gateway(
    name: str,
    *,
    plugin: Mapping[str, Any] | str,
    env: Mapping[str, str],
    clusters: Mapping[str, int | None],
    concurrency: int = 1,
    attempts: int = 3,
    allow_on_headers_stop_iteration: bool = True,
    **hcm_extra: Any,
) -> Envoy:
    """Start an Envoy with the filter on free ports. A cluster mapped to None points back at the
    Envoy's own listener (the shipped internal refresh cluster). Retries (bounded) if a port
    that was free got taken meanwhile."""
    def config(lp: int, ap: int) -> dict:
        resolved = {n: (lp if p is None else p) for n, p in clusters.items()}
        return bootstrap(listener_port=lp, admin_port=ap, plugin=plugin, env=env, clusters=resolved,
                         allow_on_headers_stop_iteration=allow_on_headers_stop_iteration, **hcm_extra)

    return start_on_free_ports(name, config, concurrency=concurrency, attempts=attempts)


def start_on_free_ports(name: str, config: Callable[[int, int], dict], *, concurrency: int = 1,
                        attempts: int = 3) -> Envoy:
    """Start Envoy `name` with the bootstrap `config(listener_port, admin_port)` on free ports.
    Retries (bounded) if a port that was free got taken meanwhile."""
    last: Exception | None = None
    for _ in range(attempts):
        lp, ap = free_port(), free_port()
        e = Envoy(name, config(lp, ap), lp, ap, concurrency=concurrency)
        try:
            return e.start()
        except paths.HarnessError as err:
            e.stop()
            last = err
            if "Address already in use" not in e.log_text() and "cannot bind" not in e.log_text():
                raise
    raise paths.HarnessError(f"could not start Envoy {name}: {last}")


class LdsListener:
    """A listener served from a watched file (filesystem LDS), so a test can push a new plugin
    configuration into a running Envoy and see whether it is taken or rejected.

    `envoy` is started with only the admin, the static clusters and `lds_config`; `push(plugin)`
    atomically replaces the listener file (the way Envoy's watched_directory expects)."""

    def __init__(self, name: str, *, env: Mapping[str, str], clusters: Mapping[str, int], wasm: str | os.PathLike | None = None):
        self.listener_port = free_port()
        admin_port = free_port()
        self.env = dict(env)
        self.wasm = wasm
        self._version = 0
        self.dir = paths.out_dir("envoy", f"{name}-lds-{os.getpid()}-{next(_counter)}")
        self.file = self.dir / "lds.json"
        cfg = {
            "node": {"id": name, "cluster": "etls-tests"},
            "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}},
            "dynamic_resources": {
                "lds_config": {
                    "resource_api_version": "V3",
                    "path_config_source": {"path": str(self.file), "watched_directory": {"path": str(self.dir)}},
                }
            },
            "static_resources": {"clusters": [static_cluster(n, p) for n, p in clusters.items()]},
        }
        self.envoy = Envoy(name, cfg, None, admin_port)

    def push(self, plugin: Mapping[str, Any] | str) -> None:
        self._version += 1
        lst = listener(self.listener_port, [wasm_filter(plugin, self.env, self.wasm, vm_id=pushed_vm_id(self.env))])
        lst["@type"] = "type.googleapis.com/envoy.config.listener.v3.Listener"
        tmp = self.dir / "lds.json.tmp"
        tmp.write_text(json.dumps({"version_info": str(self._version), "resources": [lst]}))
        os.replace(tmp, self.file)

    def lds_counts(self) -> tuple[int, int]:
        """(update_success, update_rejected) of listener_manager.lds."""
        return (self.envoy.stat("listener_manager.lds.update_success") or 0,
                self.envoy.stat("listener_manager.lds.update_rejected") or 0)

    def wait_counts(self, success: int, rejected: int, timeout: float = 20.0) -> tuple[int, int]:
        """Poll (bounded) until the LDS counters reach at least the given values; returns them."""
        deadline = time.monotonic() + timeout
        got = self.lds_counts()
        while time.monotonic() < deadline:
            got = self.lds_counts()
            if got[0] >= success and got[1] >= rejected:
                return got
            time.sleep(0.1)
        return got
