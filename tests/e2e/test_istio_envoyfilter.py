"""deploy/istio/envoyfilter.yaml, the Istio alternative that sets allow_on_headers_stop_iteration
(neither WasmPlugin nor TrafficExtension can): it validates against the EnvoyFilter CRD schema
(networking.istio.io/v1alpha3, draft 2020-12), it configures the same plugin as wasmplugin.yaml,
its plugin configuration passes etls-config-check, and, translated the way istiod and istio-agent
deliver it (the EXTENSION_CONFIG by ECDS, the remote module as a local file), it runs in a real
Envoy 1.40 where no part of a login request reaches the app and no fallback warning is logged."""
from __future__ import annotations

import copy
import json
import os
import time
import uuid

import jsonschema
import pytest

from test_deploy_helpers import ISTIO, istio_objects, load_yaml_docs, run_config_check
from harness import paths
from harness.envoy import PREVIOUS_SECRETS, SECRETS, STRING_VALUE_TYPE, WASM_TYPE, Envoy, free_port, listener, static_cluster
from harness.gateway import PROBE_HEADER
from harness.upstreams import EchoApp, Reply, StubServer, login_ok

FILE = ISTIO / "envoyfilter.yaml"
RBAC_TYPE = "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC"
TYPED_EXTENSION_CONFIG_TYPE = "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig"


def _doc() -> dict:
    (doc,) = load_yaml_docs(FILE)
    return doc


def _schema() -> dict:
    base = os.environ.get("ETLS_SCHEMAS", "/work/shared/schemas")
    path = os.path.join(base, "istio-envoyfilter.schema.json")
    assert os.path.isfile(path), f"schema {path} missing (set ETLS_SCHEMAS to the shared schemas folder)"
    with open(path) as f:
        return json.load(f)


def _errors(validator, doc) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc)]


def _patches(doc: dict) -> tuple[dict, dict]:
    ext = [p for p in doc["spec"]["configPatches"] if p["applyTo"] == "EXTENSION_CONFIG"]
    http = [p for p in doc["spec"]["configPatches"] if p["applyTo"] == "HTTP_FILTER"]
    assert len(ext) == 1 and len(http) == 1 and len(doc["spec"]["configPatches"]) == 2
    return ext[0], http[0]


def _wasm_config(doc: dict) -> dict:
    ext, _ = _patches(doc)
    typed = ext["patch"]["value"]["typed_config"]
    assert typed["@type"] == WASM_TYPE
    return typed["config"]


def test_envoyfilter_validates_against_crd_schema():
    doc = _doc()
    validator = jsonschema.Draft202012Validator(_schema())
    assert _errors(validator, doc) == []
    for broken_path, value in [(("spec", "configPatches", 0, "patch", "operation"), "UPSERT"),
                               (("spec", "configPatches", 1, "match", "context"), "INBOUND"),
                               (("apiVersion",), "networking.istio.io/v1alpha1")]:
        broken = copy.deepcopy(doc)
        node = broken
        for k in broken_path[:-1]:
            node = node[k]
        node[broken_path[-1]] = value
        assert _errors(validator, broken) != [], broken_path


def test_envoyfilter_carries_the_whole_wasm_config_with_the_flag():
    doc = _doc()
    (_, wp), = istio_objects("WasmPlugin")
    assert doc["metadata"] == wp["metadata"] | {"name": "etls-auth"}
    assert doc["spec"]["workloadSelector"] == {"labels": wp["spec"]["selector"]["matchLabels"]}
    ext, http = _patches(doc)
    # istiod honours only ADD on EXTENSION_CONFIG; the filter takes it by name over ECDS.
    assert ext["patch"]["operation"] == "ADD"
    assert ext["match"] == {"context": "GATEWAY"}
    name = ext["patch"]["value"]["name"]
    assert http["match"]["context"] == "GATEWAY"
    assert http["match"]["listener"]["filterChain"]["filter"] == {"name": "envoy.filters.network.http_connection_manager"}
    # First in the chain: before Istio's authn/authz filters (as the WasmPlugin's phase AUTHN).
    assert http["patch"]["operation"] == "INSERT_FIRST"
    value = http["patch"]["value"]
    assert value["name"] == name
    discovery = value["config_discovery"]
    assert discovery["config_source"]["ads"] == {}
    assert discovery["type_urls"][0] == WASM_TYPE
    assert discovery["default_config"] == {"@type": RBAC_TYPE, "rules": {}}, "deny all until the filter is loaded"
    assert RBAC_TYPE in discovery["type_urls"]

    cfg = _wasm_config(doc)
    assert cfg["allow_on_headers_stop_iteration"] is True
    assert cfg["failure_policy"] == "FAIL_RELOAD" and wp["spec"]["failStrategy"] == "FAIL_RELOAD"
    assert cfg["root_id"] == wp["spec"]["pluginName"]
    assert cfg["vm_config"]["runtime"] == "envoy.wasm.runtime.v8"
    remote = cfg["vm_config"]["code"]["remote"]
    assert remote["http_uri"]["uri"].startswith("https://") and len(remote["sha256"]) == 64
    host_env = [e["name"] for e in wp["spec"]["vmConfig"]["env"] if e.get("valueFrom") == "HOST"]
    assert cfg["vm_config"]["environment_variables"] == {"host_env_keys": host_env}
    assert cfg["configuration"]["@type"] == STRING_VALUE_TYPE
    assert json.loads(cfg["configuration"]["value"]) == wp["spec"]["pluginConfig"]


def test_envoyfilter_plugin_config_passes_filter_validation():
    cfg = _wasm_config(_doc())
    host_env = cfg["vm_config"]["environment_variables"]["host_env_keys"]
    for secrets in (SECRETS, {**SECRETS, **PREVIOUS_SECRETS}):
        r = run_config_check(cfg["configuration"]["value"], {k: secrets[k] for k in host_env if k in secrets})
        assert (r.returncode, r.stdout.split(b"\n", 1)[0], r.stderr) == (0, b"OK", b"")


def _translate(doc: dict, ecds_dir, listener_port: int, admin_port: int, clusters: dict[str, int]) -> dict:
    """What the gateway's Envoy gets from istiod and istio-agent: the HTTP_FILTER in the HCM
    (its ADS config source becomes a watched file here), and the EXTENSION_CONFIG as the ECDS
    resource, with the remote module replaced by a local file (istio-agent downloads it)."""
    ext, http = _patches(doc)
    resource = copy.deepcopy(ext["patch"]["value"])
    resource["@type"] = TYPED_EXTENSION_CONFIG_TYPE
    resource["typed_config"]["config"]["vm_config"]["code"] = {"local": {"filename": str(paths.wasm_path())}}
    ecds_file = ecds_dir / "etls_auth.json"
    ecds_file.write_text(json.dumps({"version_info": "1", "resources": [resource]}))
    filt = copy.deepcopy(http["patch"]["value"])
    source = filt["config_discovery"]["config_source"]
    source.pop("ads")
    source["path_config_source"] = {"path": str(ecds_file), "watched_directory": {"path": str(ecds_dir)}}
    return {
        "node": {"id": "istio-envoyfilter", "cluster": "etls-tests"},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}},
        "static_resources": {
            "listeners": [listener(listener_port, [filt])],
            "clusters": [static_cluster(n, p) for n, p in clusters.items()],
        },
    }


@pytest.fixture(scope="module")
def ef_gateway(tmp_path_factory):
    """The translated EnvoyFilter in a real Envoy, secrets in its environment (the gateway patch)."""
    saved = {k: os.environ.get(k) for k in {**SECRETS, **PREVIOUS_SECRETS}}
    os.environ.update({**SECRETS, **PREVIOUS_SECRETS})
    app = EchoApp().start()
    login = StubServer("ef-login", default=login_ok()).start()
    cfg = json.loads(_wasm_config(_doc())["configuration"]["value"])
    lp, ap = free_port(), free_port()
    config = _translate(_doc(), tmp_path_factory.mktemp("ecds"), lp, ap, {cfg["login_cluster"]: login.port, "app": app.port})
    # One route to the app (the gateway's VirtualService).
    envoy = Envoy("istio-envoyfilter", config, lp, ap)
    try:
        envoy.start()
        yield envoy, app, login
    finally:
        envoy.stop()
        app.stop()
        login.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def test_envoyfilter_translation_answers_logins_without_the_app_seeing_them(ef_gateway):
    import http.client

    envoy, app, login = ef_gateway
    probes = []

    def post(body: bytes, reply: Reply):
        login.always(reply)
        probe = uuid.uuid4().hex
        probes.append(probe)
        conn = http.client.HTTPConnection("127.0.0.1", envoy.listener_port, timeout=8)
        try:
            conn.request("POST", "/api/auth/login", body=body,
                         headers={"Content-Type": "application/json", PROBE_HEADER: probe})
            r = conn.getresponse()
            return r.status, r.getheaders(), r.read()
        finally:
            conn.close()

    t0 = time.monotonic()
    status, headers, body = post(json.dumps({"email": "a@example.com", "password": "pw"}).encode(), login_ok())
    assert status == 200, body
    assert time.monotonic() - t0 < 1.0
    assert len([1 for k, _ in headers if k.lower() == "set-cookie"]) == 4
    status, headers, _ = post(json.dumps({"email": "a@example.com", "password": "bad"}).encode(), Reply(401, {}))
    assert status == 401 and not [1 for k, _ in headers if k.lower() == "set-cookie"]
    status, _, _ = post(b"not json", login_ok())
    assert status == 400
    time.sleep(0.5)
    assert [s for s in app.requests() if set(s.header_all(PROBE_HEADER)) & set(probes)] == []
    assert "allow_on_headers_stop_iteration" not in envoy.log_text()
    # A protected request without a session is denied by the filter (it runs first).
    conn = http.client.HTTPConnection("127.0.0.1", envoy.listener_port, timeout=8)
    try:
        conn.request("GET", "/reports", headers={"Accept": "application/json"})
        assert conn.getresponse().status == 401
    finally:
        conn.close()
