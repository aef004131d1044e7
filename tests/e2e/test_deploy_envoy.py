"""Deployment artefacts against the real thing: every plugin configuration shipped (compose Envoy
config, top-level envoy.yaml, Istio manifests) passes the filter's own validation through the
native etls-config-check; every shipped Envoy config passes `envoy --mode validate` with the
built filter; and the compose Envoy config, rewritten to this machine, logs in, serves a
protected request and rotates tokens through its internal refresh cluster in a real Envoy; the
same config also runs the compose stack without Docker (the demo services started with their
compose commands, Envoy with the compose environment)."""
from __future__ import annotations

import http.client
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

import jwt
import pytest
import yaml

from test_deploy_helpers import (
    COMPOSE,
    config_check_bin,
    COMPOSE_ENVOY,
    REPO,
    compose_default,
    envoy_configs,
    istio_objects,
    plugin_json,
    run_config_check,
    vm_env,
    walk,
    wasm_filters,
)
from harness import paths
from harness.envoy import PREVIOUS_SECRETS, SECRETS, Envoy, free_port, run_validate
from harness.upstreams import EchoApp, Reply, StubServer

ENVOY_CONFIGS = envoy_configs()
REQUIRED_ENVOY_CONFIGS = ["deploy/compose/envoy.yaml", "envoy.yaml"]
ISTIO_PLUGINS = istio_objects("WasmPlugin") + istio_objects("TrafficExtension")


def _rel(p: Path) -> str:
    return str(p.relative_to(REPO))


# ---- etls-config-check ---------------------------------------------------------------------------
def _ok_line(r) -> bytes:
    """The first line of etls-config-check's output (`OK`; the second names the secret variables)."""
    return r.stdout.split(b"\n", 1)[0]


def test_shipped_envoy_configs_are_found():
    found = [_rel(p) for p in ENVOY_CONFIGS]
    for required in REQUIRED_ENVOY_CONFIGS:
        assert required in found, f"{required} missing (found {found})"


@pytest.mark.parametrize("path", ENVOY_CONFIGS, ids=_rel)
def test_envoy_plugin_config_passes_filter_validation(path):
    plugins = wasm_filters(yaml.safe_load(path.read_text()))
    # The shipped gateways carry the filter; another config (a benchmark baseline, say) may not.
    if _rel(path) in REQUIRED_ENVOY_CONFIGS:
        assert plugins, f"{_rel(path)} has no etls-auth wasm filter"
    for plugin in plugins:
        r = run_config_check(plugin_json(plugin), vm_env(plugin, SECRETS))
        assert (r.returncode, _ok_line(r), r.stderr) == (0, b"OK", b""), _rel(path)


def test_compose_plugin_config_passes_with_the_demo_fallback_secrets():
    compose = yaml.safe_load(COMPOSE.read_text())
    host_env = dict(compose_default(v) for v in compose["services"]["envoy"]["environment"].values() if v is not None)
    (plugin,) = wasm_filters(yaml.safe_load(COMPOSE_ENVOY.read_text()))
    env = vm_env(plugin, host_env)
    assert sorted(env) == ["ETLS_ACCESS", "ETLS_REFRESH"]
    r = run_config_check(plugin_json(plugin), env)
    assert (r.returncode, _ok_line(r), r.stderr) == (0, b"OK", b"")


@pytest.mark.parametrize("path,doc", ISTIO_PLUGINS, ids=[f"{_rel(p)}:{d['kind']}" for p, d in ISTIO_PLUGINS])
def test_istio_plugin_config_passes_filter_validation(path, doc):
    wasm = doc["spec"] if doc["kind"] == "WasmPlugin" else doc["spec"]["wasm"]
    # Istio hands pluginConfig to the filter as JSON in a StringValue.
    config = json.dumps(wasm["pluginConfig"])
    host_env = [e["name"] for e in wasm["vmConfig"]["env"]]
    r = run_config_check(config, {k: SECRETS[k] for k in host_env if k in SECRETS})
    assert (r.returncode, _ok_line(r), r.stderr) == (0, b"OK", b"")
    # With the rotation secrets also present on the gateway (optional Secret keys set).
    r = run_config_check(config, {k: {**SECRETS, **PREVIOUS_SECRETS}[k] for k in host_env})
    assert (r.returncode, _ok_line(r), r.stderr) == (0, b"OK", b"")


def _compose_plugin_config() -> dict:
    (plugin,) = wasm_filters(yaml.safe_load(COMPOSE_ENVOY.read_text()))
    return json.loads(plugin_json(plugin))


def _one_error_line(r) -> str:
    assert r.returncode == 1
    assert r.stdout == b""
    lines = r.stderr.decode().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def test_config_check_names_the_key_of_an_unknown_or_bad_value():
    cfg = _compose_plugin_config()
    line = _one_error_line(run_config_check(json.dumps({**cfg, "cookie_secur": True}), SECRETS))
    assert line == "invalid configuration: `cookie_secur`: unknown key; did you mean `cookie_secure`?"
    line = _one_error_line(run_config_check(json.dumps({**cfg, "login_timeout_ms": "5000"}), SECRETS))
    assert line.startswith("invalid configuration: `login_timeout_ms`: ")
    line = _one_error_line(run_config_check(json.dumps({**cfg, "cookie_same_site": "None"}), SECRETS))
    assert line.startswith("invalid configuration: `cookie_same_site`: ")
    line = _one_error_line(run_config_check(json.dumps({k: v for k, v in cfg.items() if k != "login_cluster"}), SECRETS))
    assert line == "invalid configuration: `login_cluster`: required"
    line = _one_error_line(run_config_check("[1, 2]", SECRETS))
    assert line.startswith("invalid configuration: configuration: must be one JSON object")


def test_config_check_rejects_bad_secrets_without_printing_them():
    cfg = json.dumps(_compose_plugin_config())
    missing = _one_error_line(run_config_check(cfg, {"ETLS_ACCESS": SECRETS["ETLS_ACCESS"]}))
    assert "`refresh_secret_env`" in missing and "ETLS_REFRESH" in missing
    short = "x" * 31
    too_short = _one_error_line(run_config_check(cfg, {**SECRETS, "ETLS_ACCESS": short}))
    assert "`access_secret_env`" in too_short and "ETLS_ACCESS" in too_short and short not in too_short
    same = _one_error_line(run_config_check(cfg, {"ETLS_ACCESS": SECRETS["ETLS_ACCESS"], "ETLS_REFRESH": SECRETS["ETLS_ACCESS"]}))
    assert "`refresh_secret_env`" in same and SECRETS["ETLS_ACCESS"] not in same
    # Renamed secret variables are looked up under their configured names.
    renamed = json.dumps({**json.loads(cfg), "access_secret_env": "MY_ACCESS"})
    r = run_config_check(renamed, {"MY_ACCESS": SECRETS["ETLS_ACCESS"], "ETLS_REFRESH": SECRETS["ETLS_REFRESH"]})
    assert (r.returncode, _ok_line(r)) == (0, b"OK")


def test_config_check_reads_a_file_and_reports_usage(tmp_path):
    f = tmp_path / "plugin.json"
    f.write_text(json.dumps(_compose_plugin_config()))
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **SECRETS}
    r = subprocess.run([config_check_bin(), str(f)], capture_output=True, env=env, timeout=60)
    assert (r.returncode, _ok_line(r), r.stderr) == (0, b"OK", b"")
    r = subprocess.run([config_check_bin(), str(tmp_path / "absent.json")], capture_output=True, env=env, timeout=60)
    assert r.returncode == 2 and b"absent.json" in r.stderr  # unreadable input is exit 2, like a usage error
    r = subprocess.run([config_check_bin()], capture_output=True, env=env, timeout=60)
    assert r.returncode == 2 and r.stderr.startswith(b"usage: etls-config-check")


# ---- envoy --mode validate -----------------------------------------------------------------------
def _for_this_machine(config: dict) -> dict:
    """Container paths -> this machine's: every Wasm module becomes the built filter."""
    wasm = str(paths.wasm_path())
    for node in walk(config):
        if isinstance(node, dict) and str(node.get("filename", "")).endswith(".wasm"):
            node["filename"] = wasm
    return config


@pytest.mark.parametrize("path", ENVOY_CONFIGS, ids=_rel)
def test_envoy_config_validates(path, monkeypatch):
    for k, v in SECRETS.items():  # host_env_keys are read from Envoy's own environment
        monkeypatch.setenv(k, v)
    config = _for_this_machine(yaml.safe_load(path.read_text()))
    r = run_validate(config, cwd=REPO)
    assert r.returncode == 0, r.stdout[-4000:]
    assert "configuration '" in r.stdout and "' OK" in r.stdout, r.stdout[-2000:]


CHECKER_ENV = "the environment of etls-config-check (which stands in for the Wasm VM environment)"
VM_ENV = "the Wasm VM environment (vm_config.environment_variables)"

CROSS_CHECK_CASES = {
    "unknown-key": ({"cookie_secur": True}, {}),
    "wrong-type": ({"login_timeout_ms": "5000"}, {}),
    "bad-value": ({"cookie_same_site": "None"}, {}),
    "short-secret": ({}, {"ETLS_ACCESS": "x" * 31}),
    "missing-secret": ({}, {"ETLS_REFRESH": None}),
    "same-secrets": ({}, {"ETLS_REFRESH": SECRETS["ETLS_ACCESS"]}),
}


@pytest.mark.parametrize("case", sorted(CROSS_CHECK_CASES))
def test_config_check_and_envoy_refuse_alike(case, monkeypatch):
    """etls-config-check runs the code of on_configure: for a bad configuration Envoy refuses the
    compose config and logs the very line etls-config-check prints."""
    extra, env_change = CROSS_CHECK_CASES[case]
    env = {**SECRETS, **env_change}
    env = {k: v for k, v in env.items() if v is not None}
    for k in SECRETS:
        monkeypatch.delenv(k, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    config = _for_this_machine(yaml.safe_load(COMPOSE_ENVOY.read_text()))
    (plugin,) = wasm_filters(config)
    plugin_cfg = {**json.loads(plugin_json(plugin)), **extra}
    plugin["configuration"]["value"] = json.dumps(plugin_cfg)
    line = _one_error_line(run_config_check(json.dumps(plugin_cfg), env))
    # A missing secret says where it was looked for: the checker's own environment, the VM's.
    line = line.replace(CHECKER_ENV, VM_ENV)
    r = run_validate(config, cwd=REPO)
    assert r.returncode == 1, r.stdout[-3000:]
    assert "Unable to create Wasm plugin etls_auth" in r.stdout
    assert f"etls-auth: {line}\n" in r.stdout, r.stdout[-3000:]
    for secret in env.values():
        assert secret not in r.stdout


# ---- the compose config in a real Envoy ----------------------------------------------------------
COMPOSE_SERVICE_HOSTS = {"app", "login-api"}


def _compose_on_loopback(listener_port: int, admin_port: int, service_ports: dict[str, int]) -> dict:
    """deploy/compose/envoy.yaml with compose service hosts -> 127.0.0.1 stubs, the listener (and
    the internal refresh cluster that points at it) on a free loopback port, the admin on another."""
    config = _for_this_machine(yaml.safe_load(COMPOSE_ENVOY.read_text()))
    config["admin"]["address"]["socket_address"] = {"address": "127.0.0.1", "port_value": admin_port}
    (listener,) = config["static_resources"]["listeners"]
    original_port = listener["address"]["socket_address"]["port_value"]
    listener["address"]["socket_address"] = {"address": "127.0.0.1", "port_value": listener_port}
    rewritten = 0
    for cluster in config["static_resources"]["clusters"]:
        for node in walk(cluster):
            if isinstance(node, dict) and "socket_address" in node:
                sa = node["socket_address"]
                if sa["address"] in service_ports:
                    node["socket_address"] = {"address": "127.0.0.1", "port_value": service_ports[sa["address"]]}
                elif sa["address"] == "127.0.0.1" and sa["port_value"] == original_port:
                    node["socket_address"] = {"address": "127.0.0.1", "port_value": listener_port}
                else:
                    raise AssertionError(f"unexpected upstream address {sa} in {cluster['name']}")
                rewritten += 1
    assert rewritten == 3
    return config


def _request(port: int, method: str, path: str, headers: dict[str, str] | None = None, body: bytes | None = None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        data = r.read()
        return r.status, r.getheaders(), data
    finally:
        conn.close()


def _set_cookies(headers) -> dict[str, str]:
    """name -> full Set-Cookie value, each cookie in its own header."""
    out = {}
    for k, v in headers:
        if k.lower() == "set-cookie":
            name = v.split("=", 1)[0]
            assert name not in out, f"{name} set twice"
            out[name] = v
    return out


def _cookie_value(set_cookie: str) -> str:
    return set_cookie.split(";", 1)[0].split("=", 1)[1]


def _attrs(set_cookie: str) -> set[str]:
    return {a.strip() for a in set_cookie.split(";")[1:]}


@pytest.fixture()
def compose_envoy_live(monkeypatch):
    for k, v in SECRETS.items():
        monkeypatch.setenv(k, v)
    app = EchoApp().start()
    login = StubServer("login-api").start()
    envoy = None
    try:
        last = None
        for _ in range(3):  # a free port may be taken between choosing and binding: retry, bounded
            lp, ap = free_port(), free_port()
            envoy = Envoy("compose", _compose_on_loopback(lp, ap, {"app": app.port, "login-api": login.port}), lp, ap)
            try:
                envoy.start()
                break
            except paths.HarnessError as e:
                envoy.stop()
                last, envoy = e, None
        if envoy is None:
            raise paths.HarnessError(f"compose Envoy did not start: {last}")
        yield envoy, app, login
    finally:
        if envoy is not None:
            envoy.stop()
        app.stop()
        login.stop()


def test_compose_config_serves_login_protected_request_and_rotation(compose_envoy_live):
    envoy, app, login = compose_envoy_live
    port = envoy.listener_port
    user = {"id": 1, "name": "Alice Admin", "email": "alice@example.com", "role": "admin"}
    login.reply(Reply(200, {"accessToken": "api-access-1", "refreshToken": "api-refresh-1", "userData": user}))

    # 1. Login through the filter: dispatched to cluster login_api (the compose login-api service).
    creds = {"email": "alice@example.com", "password": "alice-demo-password"}
    status, headers, body = _request(port, "POST", "/api/auth/login", {"Content-Type": "application/json"}, json.dumps(creds).encode())
    assert status == 200, body
    assert json.loads(body) == {"message": "Login successful", "userData": user}
    (call,) = login.requests()
    assert (call.method, call.path) == ("POST", "/login")
    assert call.header("Host") == "login-api:8081"
    assert call.header("Content-Type") == "application/json"
    assert call.json() == creds
    cookies = _set_cookies(headers)
    assert sorted(cookies) == ["accessToken", "accessTokenEtls", "refreshToken", "refreshTokenEtls"]
    assert _cookie_value(cookies["accessToken"]) == "api-access-1"
    assert _cookie_value(cookies["refreshToken"]) == "api-refresh-1"
    # Compose runs on plain http://localhost: cookie_secure false, SameSite=Lax (demo-only).
    assert _attrs(cookies["accessTokenEtls"]) == {"HttpOnly", "Path=/", "SameSite=Lax", "Max-Age=900"}
    assert _attrs(cookies["refreshTokenEtls"]) == {"HttpOnly", "Path=/", "SameSite=Lax", "Max-Age=604800"}
    access = _cookie_value(cookies["accessTokenEtls"])
    refresh = _cookie_value(cookies["refreshTokenEtls"])
    claims = jwt.decode(access, SECRETS["ETLS_ACCESS"], algorithms=["HS256"])
    assert (claims["userId"], claims["role"], claims["exp"] - claims["iat"]) == (1, "admin", 900)
    rclaims = jwt.decode(refresh, SECRETS["ETLS_REFRESH"], algorithms=["HS256"])
    assert (rclaims["userId"], rclaims["role"], rclaims["exp"] - rclaims["iat"]) == (1, "admin", 604800)

    # 2. A protected request with the access cookie reaches the app (cluster app) with identity
    #    headers set from the token, a spoofed one replaced.
    app.clear()
    status, headers, body = _request(port, "GET", "/dashboard?tab=1", {"Cookie": f"accessTokenEtls={access}", "x-etls-user-id": "999"})
    assert status == 200, body
    (seen,) = app.requests()
    assert seen.path == "/dashboard?tab=1"
    assert seen.header_all("x-etls-user-id") == ["1"]
    assert seen.header_all("x-etls-role") == ["admin"]
    assert _set_cookies(headers) == {}

    # 3. Without a session a page load is sent to the login page and never reaches the app.
    app.clear()
    status, headers, _ = _request(port, "GET", "/dashboard?tab=1", {"Accept": "text/html"})
    assert status == 302
    assert dict((k.lower(), v) for k, v in headers)["location"] == "/login?next=" + quote("/dashboard?tab=1", safe="")
    assert sorted(_set_cookies(headers)) == ["accessToken", "accessTokenEtls", "refreshToken", "refreshTokenEtls"]
    assert app.requests() == []

    # 4. Only the refresh cookie: rotation through the internal refresh cluster etls_refresh,
    #    which points back at this Envoy's listener, where the filter's refresh route answers.
    before = envoy.stat("cluster.etls_refresh.upstream_rq_200") or 0
    status, headers, body = _request(port, "POST", "/api/orders", {"Cookie": f"refreshTokenEtls={refresh}", "Content-Type": "application/json"}, b'{"item": 42}')
    assert status == 200, body
    assert (envoy.stat("cluster.etls_refresh.upstream_rq_200") or 0) == before + 1
    rotated = _set_cookies(headers)
    assert sorted(rotated) == ["accessTokenEtls", "refreshTokenEtls"]
    new_access = _cookie_value(rotated["accessTokenEtls"])
    new_refresh = _cookie_value(rotated["refreshTokenEtls"])
    assert new_refresh != refresh
    assert jwt.decode(new_access, SECRETS["ETLS_ACCESS"], algorithms=["HS256"])["role"] == "admin"
    assert jwt.decode(new_refresh, SECRETS["ETLS_REFRESH"], algorithms=["HS256"])["userId"] == 1
    (seen,) = app.find(lambda s: s.path == "/api/orders")
    assert (seen.method, seen.body) == ("POST", b'{"item": 42}')
    assert f"accessTokenEtls={new_access}" in "; ".join(seen.header_all("Cookie"))
    assert seen.header_all("x-etls-user-id") == ["1"]

    # 5. Logout clears all four cookies with the attributes they were set with.
    status, headers, body = _request(port, "POST", "/api/auth/logout")
    assert (status, json.loads(body)) == (200, {"message": "Logged out"})
    cleared = _set_cookies(headers)
    assert sorted(cleared) == ["accessToken", "accessTokenEtls", "refreshToken", "refreshTokenEtls"]
    for v in cleared.values():
        assert v.split(";", 1)[0].endswith("=")
        assert _attrs(v) == {"HttpOnly", "Path=/", "SameSite=Lax", "Max-Age=0"}

    # Nothing secret in Envoy's log.
    log = envoy.log_text()
    for secret in (access, refresh, new_access, SECRETS["ETLS_ACCESS"], SECRETS["ETLS_REFRESH"], creds["password"]):
        assert secret not in log


def test_compose_config_public_login_page_passes_untouched(compose_envoy_live):
    envoy, app, _ = compose_envoy_live
    status, headers, body = _request(envoy.listener_port, "GET", "/login?next=%2Fdashboard", {"Accept": "text/html"})
    assert status == 200, body
    (seen,) = app.requests()
    assert seen.path == "/login?next=%2Fdashboard"
    assert _set_cookies(headers) == {}


# ---- the compose stack without Docker: its own service commands and secrets ------------------------
def _wait_http(port: int, path: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if _request(port, "GET", path)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise paths.HarnessError(f"nothing answered 200 on 127.0.0.1:{port}{path} within {timeout}s")


@pytest.fixture()
def compose_stack(monkeypatch, tmp_path):
    """docker-compose.yml's services as local processes: each demo service runs its compose command
    (python -> this interpreter, --host 0.0.0.0 -> 127.0.0.1, --port -> a free port) in ./demo
    (the compose working_dir mount); Envoy runs the compose config with the compose environment
    (the DEMO-ONLY fallback secrets, as `docker compose up` without ETLS_* set would)."""
    compose = yaml.safe_load(COMPOSE.read_text())
    procs: list[subprocess.Popen] = []
    ports: dict[str, int] = {}
    envoy = None
    try:
        for name in ("login-api", "app"):
            svc = compose["services"][name]
            assert svc["working_dir"] == "/srv/demo" and "./demo:/srv/demo:ro" in svc["volumes"]
            cmd = list(svc["command"])
            assert cmd[0] == "python"
            cmd[0] = sys.executable
            cmd[cmd.index("--host") + 1] = "127.0.0.1"
            ports[name] = free_port()
            cmd[cmd.index("--port") + 1] = str(ports[name])
            log = open(tmp_path / f"{name}.log", "wb")
            procs.append(subprocess.Popen(cmd, cwd=REPO / "demo", stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL))
            log.close()
        _wait_http(ports["login-api"], "/healthz")
        _wait_http(ports["app"], "/healthz")
        env = {k: compose_default(v)[1] for k, v in compose["services"]["envoy"]["environment"].items() if v is not None}
        for k in list(SECRETS) + list(PREVIOUS_SECRETS):
            monkeypatch.delenv(k, raising=False)
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        lp, ap = free_port(), free_port()
        envoy = Envoy("compose-stack", _compose_on_loopback(lp, ap, ports), lp, ap).start()
        yield envoy, env
    finally:
        if envoy is not None:
            envoy.stop()
        for p in procs:  # stop by the PIDs started here
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(timeout=10)


def _demo_users() -> dict:
    spec = importlib.util.spec_from_file_location("demo_login_api", REPO / "demo" / "login_api.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.DEMO_USERS


def test_compose_stack_demo_login_and_pages(compose_stack):
    envoy, env = compose_stack
    port = envoy.listener_port
    users = _demo_users()
    alice, bob = users["alice@example.com"], users["bob@example.com"]

    def login(email, password):
        return _request(port, "POST", "/api/auth/login", {"Content-Type": "application/json"},
                        json.dumps({"email": email, "password": password}).encode())

    status, headers, body = login("alice@example.com", "not-the-password")
    assert (status, json.loads(body)) == (401, {"error": "Invalid credentials"})
    assert _set_cookies(headers) == {}

    status, headers, body = login("alice@example.com", alice["password"])
    assert (status, json.loads(body)) == (200, {"message": "Login successful", "userData": alice["userData"]})
    access = _cookie_value(_set_cookies(headers)["accessTokenEtls"])
    claims = jwt.decode(access, env["ETLS_ACCESS"], algorithms=["HS256"])
    assert (claims["userId"], claims["role"]) == (1, "admin")

    status, _, body = _request(port, "GET", "/whoami", {"Cookie": f"accessTokenEtls={access}"})
    assert (status, json.loads(body)) == (200, {"userId": "1", "role": "admin", "name": "Alice Admin"})
    status, _, body = _request(port, "GET", "/admin", {"Cookie": f"accessTokenEtls={access}", "Accept": "text/html"})
    assert status == 200 and b"Admin page" in body

    status, headers, body = login("bob@example.com", bob["password"])
    assert status == 200
    bob_access = _cookie_value(_set_cookies(headers)["accessTokenEtls"])
    status, _, body = _request(port, "GET", "/whoami", {"Cookie": f"accessTokenEtls={bob_access}"})
    assert (status, json.loads(body)) == (200, {"userId": "u-bob-42", "role": "user", "name": "Bob User"})
    status, _, _ = _request(port, "GET", "/admin", {"Cookie": f"accessTokenEtls={bob_access}", "Accept": "text/html"})
    assert status == 403

    # The public login page, and a page load without a session sent to it.
    status, _, body = _request(port, "GET", "/login", {"Accept": "text/html"})
    assert status == 200 and b"/api/auth/login" in body
    status, headers, _ = _request(port, "GET", "/admin", {"Accept": "text/html"})
    assert status == 302 and dict((k.lower(), v) for k, v in headers)["location"] == "/login?next=%2Fadmin"
