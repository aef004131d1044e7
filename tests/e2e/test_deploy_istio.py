"""The Istio manifests in a real Envoy 1.40, translated the way istiod translates them for an
ingress gateway: the WasmPlugin / TrafficExtension becomes an envoy.filters.http.wasm with the
pluginConfig as JSON in a StringValue, `valueFrom: HOST` env as host_env_keys, failStrategy as
failure_policy; the ServiceEntry + DestinationRule become the cluster
`outbound|443||login.example.com` with TLS origination (SNI, CA, SAN). The login API is a TLS stub
on loopback with a certificate for login.example.com from a throwaway CA (openssl CLI).

This checks what the manifests say, not istiod itself: that the cluster name the plugin uses is
a name Envoy dispatches to, that TLS origination carries the login call, that HOST secrets (and
the rotation ones from the gateway patch) reach the VM, and that inline rotation works without
a refresh cluster."""
from __future__ import annotations

import http.client
import json
import shutil
import ssl
import subprocess
import time

import jwt
import pytest

from test_deploy_helpers import ISTIO, istio_objects, load_yaml_docs
from harness import paths
from harness.envoy import (
    HCM_TYPE,
    PREVIOUS_SECRETS,
    ROUTER_TYPE,
    SECRETS,
    STRING_VALUE_TYPE,
    WASM_TYPE,
    Envoy,
    free_port,
    static_cluster,
)
from harness.upstreams import EchoApp, StubServer, login_ok

PLUGINS = istio_objects("WasmPlugin") + istio_objects("TrafficExtension")
FAIL_STRATEGY = {"FAIL_RELOAD": "FAIL_RELOAD", "FAIL_CLOSE": "FAIL_CLOSED", "FAIL_OPEN": "FAIL_OPEN"}
APP_CLUSTER = "outbound|8080||app.default.svc.cluster.local"


def _openssl(*args: str, cwd) -> None:
    exe = shutil.which("openssl")
    if not exe:
        raise paths.HarnessError("openssl not found (Debian package openssl)")
    subprocess.run([exe, *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    """A throwaway CA and a server certificate for the ServiceEntry host (P-256, 1 day)."""
    d = tmp_path_factory.mktemp("istio-tls")
    (host,) = _egress()[0]["spec"]["hosts"]
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", "ca.key", "-out", "ca.crt", "-days", "1", "-subj", "/CN=etls-auth test CA", cwd=d)
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", "server.key", "-out", "server.csr", "-subj", f"/CN={host}", cwd=d)
    (d / "san.ext").write_text(f"subjectAltName=DNS:{host}\n")
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
             "-out", "server.crt", "-days", "1", "-extfile", "san.ext", cwd=d)
    return d


def _egress() -> tuple[dict, dict]:
    docs = load_yaml_docs(ISTIO / "login-api-egress.yaml")
    (se,) = [d for d in docs if d["kind"] == "ServiceEntry"]
    (dr,) = [d for d in docs if d["kind"] == "DestinationRule"]
    return se, dr


def _wasm_spec(doc: dict) -> dict:
    return doc["spec"] if doc["kind"] == "WasmPlugin" else doc["spec"]["wasm"]


def _gateway_config(doc: dict, certs, listener_port: int, admin_port: int, login_port: int, app_port: int) -> dict:
    """An Envoy bootstrap with what istiod would generate for the gateway from these manifests."""
    wasm = _wasm_spec(doc)
    se, dr = _egress()
    (host,) = se["spec"]["hosts"]
    (se_port,) = se["spec"]["ports"]
    (pls,) = [p for p in dr["spec"]["trafficPolicy"]["portLevelSettings"] if p["port"]["number"] == se_port["number"]]
    tls = pls["tls"]
    assert tls["mode"] == "SIMPLE"
    login_cluster = f"outbound|{se_port['number']}||{host}"
    assert wasm["pluginConfig"]["login_cluster"] == login_cluster

    cluster = static_cluster(login_cluster, login_port)
    cluster["transport_socket"] = {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
            "sni": tls["sni"],
            "common_tls_context": {
                "validation_context": {
                    "trusted_ca": {"filename": str(certs / "ca.crt")},
                    "match_typed_subject_alt_names": [
                        {"san_type": "DNS", "matcher": {"exact": san}} for san in tls["subjectAltNames"]
                    ],
                }
            },
        },
    }
    cluster["connect_timeout"] = dr["spec"]["trafficPolicy"]["connectionPool"]["tcp"]["connectTimeout"]

    host_env = [e["name"] for e in wasm["vmConfig"]["env"] if e.get("valueFrom") == "HOST"]
    wasm_filter = {
        "name": f"{doc['metadata']['namespace']}.{doc['metadata']['name']}",
        "typed_config": {
            "@type": WASM_TYPE,
            "config": {
                "name": f"{doc['metadata']['namespace']}.{doc['metadata']['name']}",
                "root_id": wasm["pluginName"],
                "failure_policy": FAIL_STRATEGY[wasm["failStrategy"]],
                "configuration": {"@type": STRING_VALUE_TYPE, "value": json.dumps(wasm["pluginConfig"])},
                "vm_config": {
                    "runtime": "envoy.wasm.runtime.v8",
                    # istio-agent pulls the OCI image and hands Envoy a local file.
                    "code": {"local": {"filename": str(paths.wasm_path())}},
                    "environment_variables": {"host_env_keys": host_env},
                },
            },
        },
    }
    hcm = {
        "@type": HCM_TYPE,
        "stat_prefix": "outbound_0.0.0.0_8080",
        "normalize_path": True,
        "merge_slashes": True,
        "route_config": {
            "name": "http.8080",
            "virtual_hosts": [{"name": "app", "domains": ["*"], "routes": [{"match": {"prefix": "/"}, "route": {"cluster": APP_CLUSTER}}]}],
        },
        "http_filters": [wasm_filter, {"name": "envoy.filters.http.router", "typed_config": {"@type": ROUTER_TYPE}}],
    }
    return {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}},
        "static_resources": {
            "listeners": [{
                "name": "0.0.0.0_8080",
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": listener_port}},
                "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]}],
            }],
            "clusters": [cluster, static_cluster(APP_CLUSTER, app_port)],
        },
    }


def _request(port, method, path, headers=None, body=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        return r.status, r.getheaders(), r.read()
    finally:
        conn.close()


def _set_cookies(headers) -> dict[str, str]:
    out = {}
    for k, v in headers:
        if k.lower() == "set-cookie":
            out[v.split("=", 1)[0]] = v
    return out


@pytest.mark.parametrize("doc", [d for _, d in PLUGINS], ids=[d["kind"] for _, d in PLUGINS])
def test_istio_gateway_translation_logs_in_over_tls_and_rotates_inline(doc, certs, monkeypatch):
    # The gateway's istio-proxy environment, as gateway-env-patch.yaml fills it from the Secret,
    # with the optional rotation keys set.
    for k, v in {**SECRETS, **PREVIOUS_SECRETS}.items():
        monkeypatch.setenv(k, v)
    se, _ = _egress()
    (host,) = se["spec"]["hosts"]

    sni_seen: list[str | None] = []
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(certs / "server.crt", certs / "server.key")
    ctx.sni_callback = lambda sock, name, _ctx: sni_seen.append(name)
    login = StubServer("istio-login")
    login._server.socket = ctx.wrap_socket(login._server.socket, server_side=True)
    login.start()
    app = EchoApp().start()
    envoy = None
    try:
        lp, ap = free_port(), free_port()
        envoy = Envoy(f"istio-{doc['kind'].lower()}", _gateway_config(doc, certs, lp, ap, login.port, app.port), lp, ap).start()

        user = {"id": "u-77", "role": "editor", "email": "e@example.com"}
        login.always(login_ok(user, access="istio-api-access", refresh="istio-api-refresh"))
        creds = {"email": "e@example.com", "password": "pw-over-tls"}
        status, headers, body = _request(lp, "POST", "/api/auth/login", {"Content-Type": "application/json"}, json.dumps(creds).encode())
        assert status == 200, body
        assert json.loads(body) == {"message": "Login successful", "userData": user}
        (call,) = login.requests()
        assert (call.method, call.path, call.header("Host")) == ("POST", "/login", host)
        assert call.json() == creds
        assert sni_seen and set(sni_seen) == {host}, "TLS origination with the DestinationRule's SNI"
        assert envoy.stat(f"cluster.outbound|443||{host}.ssl.handshake") == 1

        # Production cookie settings: Secure, SameSite=Strict.
        cookies = _set_cookies(headers)
        assert sorted(cookies) == ["accessToken", "accessTokenEtls", "refreshToken", "refreshTokenEtls"]
        for v in cookies.values():
            assert {a.strip() for a in v.split(";")[1:]} >= {"Secure", "SameSite=Strict", "HttpOnly", "Path=/"}
        access = cookies["accessTokenEtls"].split(";", 1)[0].split("=", 1)[1]
        refresh = cookies["refreshTokenEtls"].split(";", 1)[0].split("=", 1)[1]
        assert jwt.decode(access, SECRETS["ETLS_ACCESS"], algorithms=["HS256"])["userId"] == "u-77"

        # Protected request with the access token.
        status, _, _ = _request(lp, "GET", "/reports", {"Cookie": f"accessTokenEtls={access}"})
        assert status == 200
        (seen,) = app.find(lambda s: s.path == "/reports")
        assert (seen.header("x-etls-user-id"), seen.header("x-etls-role")) == ("u-77", "editor")

        # A token signed with the previous access secret (ETLS_ACCESS_PREVIOUS from the Secret)
        # still verifies during a key rotation.
        now = int(time.time())
        old = jwt.encode({"userId": "u-old", "role": "user", "iat": now, "exp": now + 300},
                         PREVIOUS_SECRETS["ETLS_ACCESS_PREVIOUS"], algorithm="HS256")
        status, _, _ = _request(lp, "GET", "/old-session", {"Cookie": f"accessTokenEtls={old}"})
        assert status == 200
        (seen,) = app.find(lambda s: s.path == "/old-session")
        assert seen.header("x-etls-user-id") == "u-old"

        # No refresh_cluster in the manifests: rotation is inline, no dispatched call.
        status, headers, _ = _request(lp, "GET", "/reports?week=2", {"Cookie": f"refreshTokenEtls={refresh}"})
        assert status == 200
        rotated = _set_cookies(headers)
        assert sorted(rotated) == ["accessTokenEtls", "refreshTokenEtls"]
        new_access = rotated["accessTokenEtls"].split(";", 1)[0].split("=", 1)[1]
        assert jwt.decode(new_access, SECRETS["ETLS_ACCESS"], algorithms=["HS256"])["role"] == "editor"
        (seen,) = app.find(lambda s: s.path == "/reports?week=2")
        assert seen.header("x-etls-user-id") == "u-77"
        assert len(login.requests()) == 1
    finally:
        if envoy is not None:
            envoy.stop()
        app.stop()
        login.stop()


def test_istio_login_fails_closed_on_a_certificate_for_another_host(certs, monkeypatch, tmp_path):
    """TLS origination verifies the login API's certificate: one for another name gives 502 and no cookie."""
    for k, v in SECRETS.items():
        monkeypatch.setenv(k, v)
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", "other.key", "-out", "other.csr", "-subj", "/CN=evil.example.net", cwd=tmp_path)
    (tmp_path / "san.ext").write_text("subjectAltName=DNS:evil.example.net\n")
    _openssl("x509", "-req", "-in", "other.csr", "-CA", str(certs / "ca.crt"), "-CAkey", str(certs / "ca.key"),
             "-CAcreateserial", "-out", "other.crt", "-days", "1", "-extfile", "san.ext", cwd=tmp_path)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(tmp_path / "other.crt", tmp_path / "other.key")
    login = StubServer("istio-login-evil")
    login._server.socket = ctx.wrap_socket(login._server.socket, server_side=True)
    login.start()
    app = EchoApp().start()
    envoy = None
    try:
        login.always(login_ok())
        lp, ap = free_port(), free_port()
        (_, doc) = istio_objects("WasmPlugin")[0]
        envoy = Envoy("istio-evil", _gateway_config(doc, certs, lp, ap, login.port, app.port), lp, ap).start()
        status, headers, _ = _request(lp, "POST", "/api/auth/login", {"Content-Type": "application/json"},
                                      json.dumps({"email": "a@example.com", "password": "pw"}).encode())
        assert status in (502, 504)
        assert _set_cookies(headers) == {}
        assert login.requests() == []
    finally:
        if envoy is not None:
            envoy.stop()
        app.stop()
        login.stop()
