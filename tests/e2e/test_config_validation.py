"""Configuration (docs/configuration.md): the shipped envoy.yaml validates; a bad plugin
configuration makes the filter refuse to start, which Envoy 1.40 turns into:

- `envoy --mode validate`: exit status 1, "Unable to create Wasm plugin etls_auth"
  (validate mode loads the wasm and runs on_configure).
- a static bootstrap: Envoy logs the same and exits with status 1 before it listens.
- a listener pushed at runtime (LDS): the update is rejected (listener_manager.lds.update_rejected);
  a new listener never binds, and an existing listener keeps serving its last good configuration.
In no case is a protected request served by the app.
"""
from __future__ import annotations

import copy
import json
import socket
import time

import pytest
import yaml

from harness import checks, client, paths, tokens
from harness.envoy import SECRETS, Envoy, LdsListener, bootstrap, free_port, plugin_config, run_validate

LONG_A = "A" * 32
LONG_R = "R" * 32


def _validate_plugin(plugin, env=None):
    lp, ap = free_port(), free_port()
    cfg = bootstrap(listener_port=lp, admin_port=ap, plugin=plugin, env=env if env is not None else SECRETS,
                    clusters={"app": 1, "login_api": 2, "etls_refresh": lp})
    return run_validate(cfg)


# --- the shipped envoy.yaml -----------------------------------------------------------------

def test_shipped_envoy_yaml_validates():
    paths.wasm_path()
    r = run_validate(paths.REPO / "envoy.yaml", cwd=paths.REPO)
    assert r.returncode == 0, r.stdout[-3000:]
    assert "OK" in r.stdout.splitlines()[-1], r.stdout[-1000:]


def _shipped():
    return yaml.safe_load((paths.REPO / "envoy.yaml").read_text())


def _shipped_wasm_config(doc):
    hcm = doc["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    wasm = [f for f in hcm["http_filters"] if f["name"] == "envoy.filters.http.wasm"][0]
    return wasm["typed_config"]["config"]


def test_shipped_envoy_yaml_contents():
    doc = _shipped()
    assert doc["admin"]["address"]["socket_address"] == {"address": "127.0.0.1", "port_value": 9901}
    lst = doc["static_resources"]["listeners"][0]
    assert lst["address"]["socket_address"] == {"address": "127.0.0.1", "port_value": 10000}
    hcm = lst["filter_chains"][0]["filters"][0]["typed_config"]
    assert hcm["normalize_path"] is True and hcm["merge_slashes"] is True
    cfg = _shipped_wasm_config(doc)
    assert cfg["failure_policy"] == "FAIL_RELOAD"
    assert cfg["vm_config"]["runtime"] == "envoy.wasm.runtime.v8"
    assert cfg["vm_config"]["code"]["local"]["filename"] == paths.WASM_REL
    assert cfg["configuration"]["@type"] == "type.googleapis.com/google.protobuf.StringValue"
    plugin = json.loads(cfg["configuration"]["value"])
    assert plugin["login_cluster"] == "login_api"
    assert plugin["refresh_cluster"] == "etls_refresh"
    assert plugin["public_paths"] == ["/login"]
    env = cfg["vm_config"]["environment_variables"]["key_values"]
    assert len(env["ETLS_ACCESS"].encode()) >= 32 and len(env["ETLS_REFRESH"].encode()) >= 32
    assert env["ETLS_ACCESS"] != env["ETLS_REFRESH"]
    assert "DEMO-ONLY" in (paths.REPO / "envoy.yaml").read_text()
    clusters = {c["name"]: c["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]
                for c in doc["static_resources"]["clusters"]}
    assert clusters["login_api"] == {"address": "127.0.0.1", "port_value": 8081}
    assert clusters["app"] == {"address": "127.0.0.1", "port_value": 8080}
    assert clusters["etls_refresh"] == {"address": "127.0.0.1", "port_value": 10000}
    # The filter holds login headers itself (the flag); one route, no login guard, no buffer filter.
    assert cfg["allow_on_headers_stop_iteration"] is True
    # (The /healthz route with the filter switched off is checked in test_identity.py.)
    routes = [r for r in hcm["route_config"]["virtual_hosts"][0]["routes"]
              if "envoy.filters.http.wasm" not in r.get("typed_per_filter_config", {})]
    assert [r["match"] for r in routes] == [{"prefix": "/"}]
    names = [f["name"] for f in hcm["http_filters"]]
    assert "envoy.filters.http.buffer" not in names
    assert names[0] == "envoy.filters.http.wasm" and names[-1] == "envoy.filters.http.router"


def test_shipped_envoy_yaml_with_broken_plugin_config_fails_validation():
    doc = _shipped()
    cfg = _shipped_wasm_config(doc)
    plugin = json.loads(cfg["configuration"]["value"])
    plugin["no_such_key"] = True
    cfg["configuration"]["value"] = json.dumps(plugin)
    d = paths.out_dir("validate")
    f = d / "envoy-broken.yaml"
    f.write_text(yaml.safe_dump(doc))
    r = run_validate(f, cwd=paths.REPO)
    assert r.returncode != 0, r.stdout[-2000:]
    assert "Unable to create Wasm plugin etls_auth" in r.stdout, r.stdout[-2000:]
    assert "no_such_key" in r.stdout, "the log line must name the key"


# --- plugin configurations that must be refused ---------------------------------------------

VALID = {
    "minimal": (plugin_config(), SECRETS),
    "everything": (plugin_config(
        login_authority="auth.internal", login_upstream_path="/v1/login", login_timeout_ms=3000,
        refresh_cluster="etls_refresh", refresh_authority="etls.internal", refresh_timeout_ms=1500,
        login_path="/a/login", refresh_path="/a/refresh", logout_path="/a/logout", login_page="/signin",
        public_paths=["/signin", "/static", "/healthz"], bypass_cors_preflight=False,
        access_ttl_s=300, refresh_ttl_s=86400, access_secret_env="ETLS_ACCESS", refresh_secret_env="ETLS_REFRESH",
        clock_skew_s=0, cookie_secure=True, cookie_same_site="Lax", cookie_domain="example.test",
        access_cookie="a", refresh_cookie="r", upstream_access_cookie="ua", upstream_refresh_cookie="ur",
        user_id_header="x-uid", role_header="x-role", max_login_body_bytes=4096, max_session_s=86400), SECRETS),
    "same_site_none_with_secure": (plugin_config(cookie_same_site="None", cookie_secure=True), SECRETS),
    "logout_and_trusted_origins": (plugin_config(login_logout_path="/logout", trusted_origins=[
        "https://Admin.Example.com", "http://localhost:3000", "https://b.example:443", "http://[::1]:8080"]), SECRETS),
    "max_session_s_equal_to_access_ttl_s": (plugin_config(access_ttl_s=600, max_session_s=600), SECRETS),
    "max_session_s_below_refresh_ttl_s": (plugin_config(max_session_s=3600, refresh_ttl_s=604800), SECRETS),
    "secret_exactly_32_bytes": (plugin_config(), {"ETLS_ACCESS": LONG_A, "ETLS_REFRESH": LONG_R}),
    "previous_secrets": (plugin_config(), {**SECRETS, "ETLS_ACCESS_PREVIOUS": "p" * 40, "ETLS_REFRESH_PREVIOUS": "q" * 40}),
}

# name -> (plugin JSON or raw string, VM env, a word the refusal log line must contain)
INVALID = {
    "unknown_key": (plugin_config(bogus_key=1), SECRETS, "bogus_key"),
    "misspelt_key": (plugin_config(publicPaths=["/login"]), SECRETS, "publicPaths"),
    "missing_login_cluster": ({}, SECRETS, "login_cluster"),
    "empty_string_config": ("", SECRETS, "login_cluster"),
    "not_json": ("login_cluster: login_api", SECRETS, None),
    "json_array": ('["login_api"]', SECRETS, None),
    "login_cluster_wrong_type": ({"login_cluster": 5}, SECRETS, "login_cluster"),
    "ttl_as_string": (plugin_config(access_ttl_s="900"), SECRETS, "access_ttl_s"),
    "public_paths_not_array": (plugin_config(public_paths="/login"), SECRETS, "public_paths"),
    "public_paths_number_item": (plugin_config(public_paths=["/login", 3]), SECRETS, "public_paths"),
    "cookie_secure_as_string": (plugin_config(cookie_secure="false"), SECRETS, "cookie_secure"),
    "bypass_as_number": (plugin_config(bypass_cors_preflight=1), SECRETS, "bypass_cors_preflight"),
    "negative_clock_skew": (plugin_config(clock_skew_s=-1), SECRETS, "clock_skew_s"),
    "fractional_ttl": (plugin_config(access_ttl_s=1.5), SECRETS, "access_ttl_s"),
    "zero_access_ttl": (plugin_config(access_ttl_s=0), SECRETS, "access_ttl_s"),
    "zero_refresh_ttl": (plugin_config(refresh_ttl_s=0), SECRETS, "refresh_ttl_s"),
    "same_site_none_without_secure": (plugin_config(cookie_same_site="None", cookie_secure=False), SECRETS, "cookie_same_site"),
    "same_site_unknown": (plugin_config(cookie_same_site="Sideways"), SECRETS, "cookie_same_site"),
    "login_path_relative": (plugin_config(login_path="api/auth/login"), SECRETS, "login_path"),
    "refresh_path_relative": (plugin_config(refresh_path="refresh"), SECRETS, "refresh_path"),
    "logout_path_relative": (plugin_config(logout_path="logout"), SECRETS, "logout_path"),
    "login_page_absolute_url": (plugin_config(login_page="https://evil.example/login"), SECRETS, "login_page"),
    "login_page_relative": (plugin_config(login_page="login"), SECRETS, "login_page"),
    "public_path_relative": (plugin_config(public_paths=["login"]), SECRETS, "public_paths"),
    "login_upstream_path_relative": (plugin_config(login_upstream_path="login"), SECRETS, "login_upstream_path"),
    "missing_access_secret": (plugin_config(), {"ETLS_REFRESH": SECRETS["ETLS_REFRESH"]}, "ETLS_ACCESS"),
    "missing_refresh_secret": (plugin_config(), {"ETLS_ACCESS": SECRETS["ETLS_ACCESS"]}, "ETLS_REFRESH"),
    "no_secrets": (plugin_config(), {}, "ETLS_ACCESS"),
    "short_access_secret": (plugin_config(), {"ETLS_ACCESS": "A" * 31, "ETLS_REFRESH": LONG_R}, "ETLS_ACCESS"),
    "short_refresh_secret": (plugin_config(), {"ETLS_ACCESS": LONG_A, "ETLS_REFRESH": "R" * 31}, "ETLS_REFRESH"),
    "empty_access_secret": (plugin_config(), {"ETLS_ACCESS": "", "ETLS_REFRESH": LONG_R}, "ETLS_ACCESS"),
    "equal_secrets": (plugin_config(), {"ETLS_ACCESS": LONG_A, "ETLS_REFRESH": LONG_A}, None),
    "custom_secret_env_missing": (plugin_config(access_secret_env="MY_KEY"), SECRETS, "MY_KEY"),
    "login_logout_path_relative": (plugin_config(login_logout_path="logout"), SECRETS, "login_logout_path"),
    "login_logout_path_with_query": (plugin_config(login_logout_path="/logout?all=1"), SECRETS, "login_logout_path"),
    "login_logout_path_empty": (plugin_config(login_logout_path=""), SECRETS, "login_logout_path"),
    "login_logout_path_wrong_type": (plugin_config(login_logout_path=["/logout"]), SECRETS, "login_logout_path"),
    "trusted_origins_not_array": (plugin_config(trusted_origins="https://a.example"), SECRETS, "trusted_origins"),
    "trusted_origins_number_item": (plugin_config(trusted_origins=["https://a.example", 3]), SECRETS, "trusted_origins"),
    "trusted_origin_trailing_slash": (plugin_config(trusted_origins=["https://a.example/"]), SECRETS, "trusted_origins"),
    "trusted_origin_with_path": (plugin_config(trusted_origins=["https://a.example/app"]), SECRETS, "trusted_origins"),
    "trusted_origin_without_scheme": (plugin_config(trusted_origins=["a.example"]), SECRETS, "trusted_origins"),
    "trusted_origin_other_scheme": (plugin_config(trusted_origins=["ftp://a.example"]), SECRETS, "trusted_origins"),
    "trusted_origin_userinfo": (plugin_config(trusted_origins=["https://u@a.example"]), SECRETS, "trusted_origins"),
    "trusted_origin_wildcard": (plugin_config(trusted_origins=["https://*.a.example"]), SECRETS, "trusted_origins"),
    "trusted_origin_bad_port": (plugin_config(trusted_origins=["https://a.example:70000"]), SECRETS, "trusted_origins"),
    "trusted_origin_null": (plugin_config(trusted_origins=["null"]), SECRETS, "trusted_origins"),
    "max_session_s_zero": (plugin_config(max_session_s=0), SECRETS, "max_session_s"),
    "max_session_s_negative": (plugin_config(max_session_s=-1), SECRETS, "max_session_s"),
    "max_session_s_fractional": (plugin_config(max_session_s=86400.5), SECRETS, "max_session_s"),
    "max_session_s_as_string": (plugin_config(max_session_s="86400"), SECRETS, "max_session_s"),
    "max_session_s_too_long": (plugin_config(max_session_s=315360001), SECRETS, "max_session_s"),
    "max_session_s_below_access_ttl_s": (plugin_config(access_ttl_s=900, max_session_s=899), SECRETS, "max_session_s"),
    "default_max_session_s_below_access_ttl_s": (plugin_config(access_ttl_s=2592001), SECRETS, "max_session_s"),
}


@pytest.mark.parametrize("name", sorted(VALID))
def test_valid_plugin_config_passes_validation(name):
    plugin, env = VALID[name]
    r = _validate_plugin(plugin, env)
    assert r.returncode == 0, r.stdout[-3000:]


@pytest.mark.parametrize("name", sorted(INVALID))
def test_invalid_plugin_config_fails_validation(name):
    plugin, env, word = INVALID[name]
    r = _validate_plugin(plugin, env)
    assert r.returncode != 0, f"{name}: envoy --mode validate accepted it:\n{r.stdout[-1500:]}"
    assert "Unable to create Wasm plugin etls_auth" in r.stdout, r.stdout[-2000:]
    if word:
        wasm_lines = [l for l in r.stdout.splitlines() if "wasm log" in l]
        assert any(word in l for l in wasm_lines), f"no wasm log line names {word!r}: {wasm_lines}"
    for secret in set(SECRETS.values()) | {LONG_A, LONG_R}:
        assert secret not in r.stdout, "a secret appears in the log"


SUGGESTIONS = {
    "unknown_key_near_a_known_one": (
        plugin_config(cookie_secur=False),
        "etls-auth: invalid configuration: `cookie_secur`: unknown key; did you mean `cookie_secure`?"),
    "camel_case_key": (
        plugin_config(publicPaths=["/login"]),
        "etls-auth: invalid configuration: `publicPaths`: unknown key; did you mean `public_paths`?"),
    "required_key_misspelt": (
        {"login_clustr": "login_api"},
        "etls-auth: invalid configuration: `login_cluster`: required; found `login_clustr`, did you mean it?"),
}


@pytest.mark.parametrize("name", sorted(SUGGESTIONS))
def test_refusal_line_in_envoys_log_points_at_the_fix(name):
    plugin, line = SUGGESTIONS[name]
    r = _validate_plugin(plugin)
    assert r.returncode == 1, r.stdout[-1500:]
    wasm_lines = [l for l in r.stdout.splitlines() if "wasm log" in l]
    assert len(wasm_lines) == 1 and wasm_lines[0].endswith(line), wasm_lines
    assert "login_api" not in wasm_lines[0], "the line names keys, never a value"


# --- a running Envoy and a refusing filter --------------------------------------------------

def _connect_refused(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return False
    except ConnectionRefusedError:
        return True


def test_static_bootstrap_with_bad_plugin_config_exits_and_serves_nothing(upstreams):
    lp, ap = free_port(), free_port()
    cfg = bootstrap(listener_port=lp, admin_port=ap, plugin=plugin_config(bogus_key=True), env=SECRETS,
                    clusters={"app": upstreams.app.port, "login_api": upstreams.login.port})
    e = Envoy("badconfig-static", cfg, lp, ap)
    e.start(wait=False)
    try:
        rc = e.proc.wait(timeout=60)
    finally:
        e.stop()
    assert rc == 1, f"Envoy exit status {rc}"
    log = e.log_text()
    assert "Unable to create Wasm plugin etls_auth" in log
    assert "bogus_key" in log
    assert _connect_refused(lp)


def _wait_listener(port: int, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _connect_refused(port):
            return True
        time.sleep(0.1)
    return False


def test_running_envoy_rejects_bad_plugin_config_and_keeps_last_good_one(upstreams):
    lds = LdsListener("badconfig-lds", env=SECRETS, clusters={"app": upstreams.app.port, "login_api": upstreams.login.port})
    lds.push(plugin_config())
    lds.envoy.start()
    try:
        assert lds.wait_counts(1, 0) == (1, 0)
        assert _wait_listener(lds.listener_port)
        port = lds.listener_port
        # Good configuration: a protected request is checked.
        r = client.request(port, "GET", "/x", cookies={"accessTokenEtls": tokens.access(1, "user")})
        assert r.status == 200 and checks.echo_header_all(checks.echo(r), "x-etls-user-id") == ["1"]

        # Push a configuration the filter refuses (unknown key, and no session rule can change that).
        lds.push(plugin_config(bogus_key=True, public_paths=["/"]))
        assert lds.wait_counts(1, 1) == (1, 1), "the bad update was not rejected"
        assert lds.envoy.alive()
        assert "bogus_key" in lds.envoy.log_text()
        # The old listener and filter configuration keep serving: still checked, never opened up.
        upstreams.app.clear()
        r = client.request(port, "GET", "/x", headers={"x-etls-probe": "after-bad-push"})
        assert r.status == 401 and r.json() == {"error": "Unauthorized"}, r
        assert upstreams.app.with_header("x-etls-probe", "after-bad-push") == []
        r = client.request(port, "GET", "/x", cookies={"accessTokenEtls": tokens.access(2, "user")})
        assert r.status == 200 and checks.echo_header_all(checks.echo(r), "x-etls-user-id") == ["2"]
    finally:
        lds.envoy.stop()


def test_running_envoy_never_opens_a_listener_whose_filter_refuses(upstreams):
    lds = LdsListener("badconfig-lds-new", env={"ETLS_ACCESS": LONG_A, "ETLS_REFRESH": LONG_A},  # equal secrets
                      clusters={"app": upstreams.app.port, "login_api": upstreams.login.port})
    lds.push(plugin_config())
    lds.envoy.start()
    try:
        assert lds.wait_counts(0, 1)[1] >= 1, "the listener with a refusing filter was not rejected"
        assert lds.envoy.alive()
        status, body = lds.envoy.admin_get("/ready")
        assert status == 200 and body.strip() == "LIVE"
        upstreams.app.clear()
        assert _connect_refused(lds.listener_port)
        assert upstreams.app.requests() == []
    finally:
        lds.envoy.stop()
