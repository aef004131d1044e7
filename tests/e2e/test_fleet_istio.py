"""The Istio form of the fleet (deploy/istio/fleet; docs/workers-and-replicas.md, "Istio"), checked
without Kubernetes: deploy/istio/wasmplugin.yaml with wasmplugin-patch.yaml merged in (RFC 7386)
validates against the WasmPlugin CRD schema and passes the filter's own configuration check;
the objects of refresh-routing.yaml agree with each other and with the plugin (the cluster name
the filter dispatches to is the router Service's `outbound|<port>||<FQDN>`, the DestinationRule
hashes the refresh Service on x-etls-session-key, the filter runs on the refresh port and not on
the router port). The same topology runs in real Envoys in tests/e2e/test_fleet*.py."""
from __future__ import annotations

import copy
import json

import jsonschema
import yaml

from test_deploy_helpers import ISTIO, SCHEMAS, load_yaml_docs, run_config_check
from harness.envoy import SECRETS

FLEET = ISTIO / "fleet"
KEY = "x-etls-session-key"
NS = "istio-system"


def merge_patch(target, patch):
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = copy.deepcopy(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge_patch(out.get(k), v)
    return out


def merged_plugin() -> dict:
    (wp,) = [d for d in load_yaml_docs(ISTIO / "wasmplugin.yaml") if d["kind"] == "WasmPlugin"]
    (patch,) = load_yaml_docs(FLEET / "wasmplugin-patch.yaml")
    assert set(patch) == {"spec"}, "a merge patch of the spec only"
    return merge_patch(wp, patch)


def objects() -> dict[tuple[str, str], dict]:
    out = {}
    for d in load_yaml_docs(FLEET / "refresh-routing.yaml"):
        assert d["metadata"]["namespace"] == NS
        out[(d["kind"], d["metadata"]["name"])] = d
    return out


def fqdn(service: dict) -> str:
    return f"{service['metadata']['name']}.{service['metadata']['namespace']}.svc.cluster.local"


def test_patched_wasmplugin_validates_against_the_crd_schema():
    schema = json.loads((SCHEMAS / "istio-wasmplugin.schema.json").read_text())
    doc = merged_plugin()
    errors = sorted(e.message for e in jsonschema.Draft202012Validator(schema).iter_errors(doc))
    assert errors == []
    # The schema can fail: a misspelt key in the patch is refused.
    bad = merge_patch(doc, {"spec": {"match": [{"port": [{"number": 8082}]}]}})
    assert list(jsonschema.Draft202012Validator(schema).iter_errors(bad))


def test_patched_plugin_config_passes_the_filters_own_check():
    cfg = merged_plugin()["spec"]["pluginConfig"]
    assert cfg["refresh_cluster"] == "outbound|8081||etls-refresh-router.istio-system.svc.cluster.local"
    assert cfg["refresh_timeout_ms"] > cfg["login_timeout_ms"], "the refresh call waits for the login API"
    r = run_config_check(json.dumps(cfg), dict(SECRETS))
    assert (r.returncode, r.stdout.split(b"\n", 1)[0], r.stderr) == (0, b"OK", b"")


def test_the_refresh_call_reaches_the_session_s_gateway_pod():
    objs = objects()
    plugin = merged_plugin()
    selector = plugin["spec"]["selector"]["matchLabels"]
    router_svc, refresh_svc = objs[("Service", "etls-refresh-router")], objs[("Service", "etls-refresh")]
    gateway = objs[("Gateway", "etls-refresh")]
    for svc in (router_svc, refresh_svc):
        assert svc["spec"]["selector"] == selector, "the Services select the gateway pods"
        assert svc["spec"]["type"] == "ClusterIP"
    assert gateway["spec"]["selector"] == selector
    (router_port,), (refresh_port,) = router_svc["spec"]["ports"], refresh_svc["spec"]["ports"]

    # The filter dispatches to the router Service's cluster, with its FQDN as :authority.
    cfg = plugin["spec"]["pluginConfig"]
    assert cfg["refresh_cluster"] == f"outbound|{router_port['port']}||{fqdn(router_svc)}"
    assert cfg["refresh_authority"] == fqdn(router_svc)

    # Both ports are Gateway servers on the pods, for the Services' hosts, mutual TLS.
    servers = {s["port"]["number"]: s for s in gateway["spec"]["servers"]}
    assert servers[router_port["targetPort"]]["hosts"] == [fqdn(router_svc)]
    assert servers[refresh_port["targetPort"]]["hosts"] == [fqdn(refresh_svc)]
    assert {s["tls"]["mode"] for s in servers.values()} == {"ISTIO_MUTUAL"}

    # The filter runs on the refresh port, not on the router port.
    (match,) = plugin["spec"]["match"]
    ports = {p["number"] for p in match["ports"]}
    assert refresh_port["targetPort"] in ports and router_port["targetPort"] not in ports
    assert {8080, 8443} <= ports, "the public servers keep the filter"

    # The router's route: POST refresh_path with a key, to the refresh Service.
    vs = objs[("VirtualService", "etls-refresh-router")]
    assert vs["spec"]["hosts"] == [fqdn(router_svc)] and vs["spec"]["gateways"] == ["etls-refresh"]
    route = vs["spec"]["http"][0]
    (m,) = route["match"]
    assert m["uri"] == {"exact": cfg["refresh_path"]} and m["method"] == {"exact": "POST"} and KEY in m["headers"]
    (dest,) = route["route"]
    assert dest["destination"] == {"host": fqdn(refresh_svc), "port": {"number": refresh_port["port"]}}
    assert "retries" in route

    # The DestinationRule: consistent hash on the session key over the refresh Service's pods.
    dr = objs[("DestinationRule", "etls-refresh")]
    assert dr["spec"]["host"] == fqdn(refresh_svc)
    assert dr["spec"]["trafficPolicy"]["loadBalancer"]["consistentHash"]["httpHeaderName"] == KEY
    for name, svc in (("etls-refresh", refresh_svc), ("etls-refresh-router", router_svc)):
        tls = objs[("DestinationRule", name)]["spec"]["trafficPolicy"]["tls"]
        assert tls == {"mode": "ISTIO_MUTUAL", "sni": fqdn(svc)}, "the SNI the Gateway server matches"
    # Nothing leaks outside the gateway's namespace.
    for (kind, _), d in objs.items():
        if kind in ("VirtualService", "DestinationRule"):
            assert d["spec"]["exportTo"] == ["."]


def test_refresh_routing_yaml_is_plain_yaml_of_known_kinds():
    kinds = sorted(k for k, _ in objects())
    assert kinds == ["DestinationRule", "DestinationRule", "Gateway", "Service", "Service", "VirtualService", "VirtualService"]
    # No secret in it.
    text = (FLEET / "refresh-routing.yaml").read_text()
    assert SECRETS["ETLS_REFRESH"] not in text and "ETLS_" not in text
    assert yaml.safe_load((FLEET / "wasmplugin-patch.yaml").read_text())["spec"]["pluginConfig"]
