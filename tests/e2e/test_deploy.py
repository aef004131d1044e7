"""Deployment artefacts, statically: docker-compose.yml against the compose spec, every Istio
WasmPlugin / TrafficExtension against the schema derived from its CRD, the wiring between the
files (mounts, clusters, ports, env, ServiceEntry / DestinationRule), the gateway secret patch
and the OCI Dockerfile. The plugin configurations, Envoy validation and a live Envoy are in
test_deploy_envoy.py."""
from __future__ import annotations

import copy
import fnmatch
import json
import re

import jsonschema
import pytest
import yaml

from test_deploy_helpers import (
    COMPOSE,
    COMPOSE_ENVOY,
    ISTIO,
    OCI_DOCKERFILE,
    REPO,
    SCHEMAS,
    compose_default,
    istio_objects,
    load_yaml_docs,
    plugin_json,
    wasm_filters,
)

WASM_REL = "target/wasm32-wasip1/release/etls_auth.wasm"


def _schema(name: str) -> dict:
    path = SCHEMAS / name
    assert path.is_file(), f"schema {path} missing (set ETLS_SCHEMAS to the shared schemas folder)"
    return json.loads(path.read_text())


def _errors(validator, doc) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc)]


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def compose_envoy() -> dict:
    return yaml.safe_load(COMPOSE_ENVOY.read_text())


# ---- docker-compose ------------------------------------------------------------------------------
def test_compose_validates_against_compose_spec(compose):
    schema = _schema("compose-spec.json")
    validator = jsonschema.Draft7Validator(schema)
    assert _errors(validator, compose) == []
    # The validator is not vacuous: an unknown service key and a bad port are rejected.
    broken = copy.deepcopy(compose)
    broken["services"]["envoy"]["imagee"] = "typo"
    assert any("imagee" in e for e in _errors(validator, broken))
    broken = copy.deepcopy(compose)
    broken["services"]["envoy"]["restart"] = ["always"]
    assert _errors(validator, broken) != []


def test_compose_envoy_service(compose, compose_envoy):
    envoy = compose["services"]["envoy"]
    assert envoy["image"] == "envoyproxy/envoy:v1.40.0"
    mounts = {}
    for v in envoy["volumes"]:
        src, dst, mode = v.split(":")
        assert mode == "ro", v
        mounts[dst] = src
    # The Envoy config and the built filter are mounted read-only where the command and the
    # config expect them.
    cfg_index = envoy["command"].index("-c") + 1
    assert mounts[envoy["command"][cfg_index]] == "./deploy/compose/envoy.yaml"
    (plugin,) = wasm_filters(compose_envoy)
    wasm_in_container = plugin["vm_config"]["code"]["local"]["filename"]
    assert mounts[wasm_in_container] == "./" + WASM_REL
    # Published on the host's loopback only, on the listener's port.
    (listener,) = compose_envoy["static_resources"]["listeners"]
    port = listener["address"]["socket_address"]["port_value"]
    assert envoy["ports"] == [f"127.0.0.1:{port}:{port}"]
    assert listener["address"]["socket_address"]["address"] == "0.0.0.0"


def test_compose_secrets_reach_the_vm_from_the_environment(compose, compose_envoy):
    envoy_env = compose["services"]["envoy"]["environment"]
    (plugin,) = wasm_filters(compose_envoy)
    env_vars = plugin["vm_config"]["environment_variables"]
    assert "key_values" not in env_vars, "no secret value may be written into the Envoy config"
    assert env_vars["host_env_keys"] == ["ETLS_ACCESS", "ETLS_REFRESH", "ETLS_ACCESS_PREVIOUS", "ETLS_REFRESH_PREVIOUS"]
    assert set(envoy_env) == set(env_vars["host_env_keys"])
    # Rotation secrets: passed through from the operator's shell only when set (no value, no default).
    assert envoy_env["ETLS_ACCESS_PREVIOUS"] is None and envoy_env["ETLS_REFRESH_PREVIOUS"] is None
    defaults = {}
    for key in ("ETLS_ACCESS", "ETLS_REFRESH"):
        name, default = compose_default(envoy_env[key])
        assert name == key  # ${ETLS_ACCESS:-...}: the operator's value wins
        assert default.startswith("demo-only-"), "fallback secrets must be marked demo-only"
        assert len(default.encode()) >= 32
        defaults[key] = default
    assert defaults["ETLS_ACCESS"] != defaults["ETLS_REFRESH"]
    text = COMPOSE.read_text()
    assert "DEMO-ONLY" in text


def test_compose_clusters_match_services(compose, compose_envoy):
    services = compose["services"]
    clusters = {c["name"]: c for c in compose_envoy["static_resources"]["clusters"]}

    def address(name):
        (ep,) = clusters[name]["load_assignment"]["endpoints"][0]["lb_endpoints"]
        sa = ep["endpoint"]["address"]["socket_address"]
        return sa["address"], sa["port_value"]

    def listens(service):
        cmd = services[service]["command"]
        return cmd[cmd.index("--host") + 1], int(cmd[cmd.index("--port") + 1])

    # Demo services bind all interfaces inside their containers, on the port Envoy dials.
    assert listens("login-api") == ("0.0.0.0", 8081)
    assert listens("app") == ("0.0.0.0", 8080)
    assert address("login_api") == ("login-api", 8081)
    assert address("app") == ("app", 8080)
    assert clusters["login_api"]["type"] == clusters["app"]["type"] == "STRICT_DNS"
    for s in ("login-api", "app"):
        assert services[s]["image"].startswith("python:3")
        assert "./demo:/srv/demo:ro" in services[s]["volumes"]
        assert (REPO / "demo" / services[s]["command"][1]).is_file()
        assert "ports" not in services[s], f"{s} must only be reachable through Envoy"
    assert set(services["envoy"]["depends_on"]) == {"app", "login-api"}

    # The plugin's clusters exist; the refresh cluster points back at Envoy's own listener.
    (plugin,) = wasm_filters(compose_envoy)
    cfg = json.loads(plugin_json(plugin))
    assert cfg["login_cluster"] == "login_api"
    assert cfg["login_authority"] == "login-api:8081"
    assert cfg["refresh_cluster"] == "etls_refresh"
    (listener,) = compose_envoy["static_resources"]["listeners"]
    assert address("etls_refresh") == ("127.0.0.1", listener["address"]["socket_address"]["port_value"])
    # Routed traffic goes to the app, on one route (no login guard: the filter holds login
    # headers itself with allow_on_headers_stop_iteration).
    # (Routes with the filter switched off, the health check, are checked in test_identity.py.)
    routes = [n for n in _walk(listener) if isinstance(n, dict) and "route" in n and "match" in n
              and "envoy.filters.http.wasm" not in n.get("typed_per_filter_config", {})]
    assert [(r["match"], r["route"]["cluster"]) for r in routes] == [({"prefix": "/"}, "app")]
    assert plugin["allow_on_headers_stop_iteration"] is True


def test_compose_filter_recovers_a_failed_vm(compose_envoy):
    (plugin,) = wasm_filters(compose_envoy)
    assert plugin["failure_policy"] == "FAIL_RELOAD"
    assert plugin["reload_config"]["backoff"] == {"base_interval": "1s", "max_interval": "30s"}
    assert plugin["vm_config"]["runtime"] == "envoy.wasm.runtime.v8"
    # The wasm filter, then the router.
    hcm = next(n for n in _walk(compose_envoy) if isinstance(n, dict) and "http_filters" in n)
    names = [f["name"] for f in hcm["http_filters"]]
    assert names == ["envoy.filters.http.wasm", "envoy.filters.http.router"]


def _walk(node):
    yield node
    if isinstance(node, dict):
        for v in node.values():
            yield from _walk(v)
    elif isinstance(node, list):
        for v in node:
            yield from _walk(v)


# ---- Istio ------------------------------------------------------------------------------------
WASMPLUGINS = istio_objects("WasmPlugin")
TRAFFIC_EXTENSIONS = istio_objects("TrafficExtension")


def _ids(objs):
    return [f"{p.relative_to(REPO)}:{d['metadata']['name']}" for p, d in objs]


def test_istio_manifests_exist():
    assert [str(p.relative_to(REPO)) for p, _ in WASMPLUGINS] == ["deploy/istio/wasmplugin.yaml"]
    assert [str(p.relative_to(REPO)) for p, _ in TRAFFIC_EXTENSIONS] == ["deploy/istio/trafficextension.yaml"]


@pytest.mark.parametrize("path,doc", WASMPLUGINS, ids=_ids(WASMPLUGINS))
def test_wasmplugin_validates_against_crd_schema(path, doc):
    # The schema describes the whole object (apiVersion, kind, metadata, spec), draft 2020-12.
    validator = jsonschema.Draft202012Validator(_schema("istio-wasmplugin.schema.json"))
    assert _errors(validator, doc) == []
    broken = copy.deepcopy(doc)
    broken["spec"]["vmConfig"]["env"][0]["value"] = "inline-secret"
    assert _errors(validator, broken) != [], "HOST env with an inline value must be rejected"
    broken = copy.deepcopy(doc)
    broken["spec"]["failStrategy"] = "FAIL_RELOADED"
    assert _errors(validator, broken) != []


@pytest.mark.parametrize("path,doc", TRAFFIC_EXTENSIONS, ids=_ids(TRAFFIC_EXTENSIONS))
def test_trafficextension_validates_against_crd_schema(path, doc):
    validator = jsonschema.Draft202012Validator(_schema("istio-trafficextension.schema.json"))
    assert _errors(validator, doc) == []
    broken = copy.deepcopy(doc)
    broken["spec"]["lua"] = {"inlineCode": "function envoy_on_request(h) end"}
    assert _errors(validator, broken) != [], "wasm and lua together must be rejected"


def _wasm_spec(doc: dict) -> dict:
    """The Wasm part of a WasmPlugin (spec) or TrafficExtension (spec.wasm)."""
    return doc["spec"] if doc["kind"] == "WasmPlugin" else doc["spec"]["wasm"]


@pytest.mark.parametrize("path,doc", WASMPLUGINS + TRAFFIC_EXTENSIONS, ids=_ids(WASMPLUGINS + TRAFFIC_EXTENSIONS))
def test_istio_plugin_settings(path, doc):
    wasm = _wasm_spec(doc)
    assert doc["metadata"]["namespace"] == "istio-system"
    assert doc["spec"]["selector"] == {"matchLabels": {"istio": "ingressgateway"}}
    assert doc["spec"]["phase"] == "AUTHN"
    assert wasm["failStrategy"] == "FAIL_RELOAD"
    assert wasm["type"] == "HTTP"
    assert re.fullmatch(r"oci://[a-z0-9.-]+(:\d+)?/[a-z0-9/._-]+:[A-Za-z0-9._-]+", wasm["url"]), wasm["url"]
    env = wasm["vmConfig"]["env"]
    assert [e["name"] for e in env] == ["ETLS_ACCESS", "ETLS_REFRESH", "ETLS_ACCESS_PREVIOUS", "ETLS_REFRESH_PREVIOUS"]
    for e in env:
        assert e == {"name": e["name"], "valueFrom": "HOST"}, "secrets come from the gateway's env, never inline"
    cfg = wasm["pluginConfig"]
    assert "refresh_cluster" not in cfg or cfg["refresh_cluster"].startswith("outbound|")


def test_wasmplugin_and_trafficextension_configure_the_same_plugin():
    (_, wp), (_, te) = WASMPLUGINS[0], TRAFFIC_EXTENSIONS[0]
    a, b = _wasm_spec(wp), _wasm_spec(te)
    for key in ("url", "pluginConfig", "vmConfig", "failStrategy", "pluginName", "type", "imagePullPolicy"):
        assert a[key] == b[key], key
    assert wp["spec"]["selector"] == te["spec"]["selector"]
    assert wp["metadata"] == te["metadata"]


def test_login_cluster_is_a_tls_originating_service_entry():
    objs = load_yaml_docs(ISTIO / "login-api-egress.yaml")
    (se,) = [d for d in objs if d["kind"] == "ServiceEntry"]
    (dr,) = [d for d in objs if d["kind"] == "DestinationRule"]
    assert se["apiVersion"] == dr["apiVersion"] == "networking.istio.io/v1"
    (host,) = se["spec"]["hosts"]
    (port,) = se["spec"]["ports"]
    assert se["spec"]["location"] == "MESH_EXTERNAL"
    assert se["spec"]["resolution"] == "DNS"
    assert port["protocol"] == "HTTP"
    assert se["spec"]["exportTo"] == dr["spec"]["exportTo"] == ["."]
    assert se["metadata"]["namespace"] == dr["metadata"]["namespace"] == "istio-system"
    # Istio names the cluster outbound|<ServiceEntry port>||<host>: that is login_cluster.
    for _, doc in WASMPLUGINS + TRAFFIC_EXTENSIONS:
        cfg = _wasm_spec(doc)["pluginConfig"]
        assert cfg["login_cluster"] == f"outbound|{port['number']}||{host}"
        assert cfg["login_authority"] == host
    assert dr["spec"]["host"] == host
    (pls,) = dr["spec"]["trafficPolicy"]["portLevelSettings"]
    assert pls["port"] == {"number": port["number"]}
    assert pls["tls"]["mode"] == "SIMPLE"
    assert pls["tls"]["sni"] == host
    assert pls["tls"]["subjectAltNames"] == [host]


def test_gateway_patch_feeds_every_host_env_from_a_secret():
    (patch,) = load_yaml_docs(ISTIO / "gateway-env-patch.yaml")
    (container,) = patch["spec"]["template"]["spec"]["containers"]
    assert container["name"] == "istio-proxy"
    by_name = {e["name"]: e for e in container["env"]}
    for _, doc in WASMPLUGINS + TRAFFIC_EXTENSIONS:
        for e in _wasm_spec(doc)["vmConfig"]["env"]:
            assert e["name"] in by_name
    for name, e in by_name.items():
        assert set(e) == {"name", "valueFrom"}, f"{name}: no literal value"
        ref = e["valueFrom"]["secretKeyRef"]
        assert ref["name"] == "etls-auth-secrets"
        assert ref.get("optional", False) == name.endswith("_PREVIOUS")
    assert {k: v["valueFrom"]["secretKeyRef"]["key"] for k, v in by_name.items()} == {
        "ETLS_ACCESS": "access",
        "ETLS_REFRESH": "refresh",
        "ETLS_ACCESS_PREVIOUS": "access_previous",
        "ETLS_REFRESH_PREVIOUS": "refresh_previous",
    }


def test_no_secret_values_in_deploy_files():
    # No Kubernetes Secret with data, no inline env value for ETLS_* anywhere under deploy/.
    for p in sorted((REPO / "deploy").rglob("*.y*ml")):
        for d in load_yaml_docs(p):
            assert not (isinstance(d, dict) and d.get("kind") == "Secret"), p
            for n in _walk(d):
                if isinstance(n, dict) and str(n.get("name", "")).startswith("ETLS_"):
                    assert "value" not in n, f"{p}: {n['name']} has an inline value"


# ---- OCI image -----------------------------------------------------------------------------------
def _dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    logical, buf = [], ""
    for line in text.splitlines():
        if not buf and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            buf += line.rstrip()[:-1] + " "
            continue
        buf += line
        op, _, rest = buf.strip().partition(" ")
        logical.append((op.upper(), rest.strip()))
        buf = ""
    return logical


def test_oci_dockerfile_is_scratch_with_plugin_wasm():
    ins = _dockerfile_instructions(OCI_DOCKERFILE.read_text())
    assert ins[0] == ("FROM", "scratch")
    copies = [rest.split() for op, rest in ins if op in ("COPY", "ADD")]
    assert copies == [[WASM_REL, "./plugin.wasm"]]
    assert {op for op, _ in ins} <= {"FROM", "LABEL", "COPY"}, "one layer: the module only"
    # The build script writes exactly the file the image copies.
    assert WASM_REL in (REPO / "scripts" / "build-wasm.sh").read_text()


def test_oci_build_context_is_only_the_module():
    rules = [l.strip() for l in (OCI_DOCKERFILE.parent / "Dockerfile.dockerignore").read_text().splitlines()
             if l.strip() and not l.startswith("#")]

    def included(path: str) -> bool:
        keep = True
        for r in rules:
            neg = r.startswith("!")
            if fnmatch.fnmatch(path, r.lstrip("!")):
                keep = neg
        return keep

    assert included(WASM_REL)
    for other in ("Cargo.toml", "src/lib.rs", ".env", "target/debug/etls-config-check", ".venv/bin/python"):
        assert not included(other), other
