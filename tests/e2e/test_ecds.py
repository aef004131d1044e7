"""deploy/ecds: the filter delivered by ECDS from a watched file, in a real Envoy 1.40. The shipped
example (envoy.yaml + etls_auth.yaml), moved to this machine's free ports and a scratch folder, is
started, pushed to the way deploy/ecds/README.md says (write a sibling file, rename it over the
watched one), and refuses a bad version while the previous one keeps serving."""
from __future__ import annotations

import json
import subprocess
import time

import pytest
import yaml

from harness import checks, client, paths, tokens
from harness.envoy import Envoy, free_port
from harness.ops import ECDS_STAT, wait_until
from harness.upstreams import EchoApp, StubServer, login_ok
from test_deploy_helpers import plugin_json, run_config_check, vm_env, walk, wasm_filters

ECDS_DIR = paths.REPO / "deploy" / "ecds"
# The demo secrets of deploy/ecds/etls_auth.yaml (DEMO-ONLY, public).
DEMO_ACCESS = "demo-only-access-secret-change-me-0123456789abcdef"


def _shipped():
    return yaml.safe_load((ECDS_DIR / "envoy.yaml").read_text()), yaml.safe_load((ECDS_DIR / "etls_auth.yaml").read_text())


def _plugin(resource_doc) -> dict:
    (pc,) = wasm_filters(resource_doc)
    return pc


def test_shipped_ecds_files():
    boot, doc = _shipped()
    hcm = boot["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    first = hcm["http_filters"][0]
    src = first["config_discovery"]["config_source"]["path_config_source"]
    assert first["name"] == "etls_auth"
    assert src == {"path": "deploy/ecds/etls_auth.yaml", "watched_directory": {"path": "deploy/ecds"}}
    assert first["config_discovery"]["type_urls"] == ["type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"]
    (res,) = doc["resources"]
    assert res["@type"] == "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig" and res["name"] == "etls_auth"
    pc = _plugin(doc)
    assert pc["failure_policy"] == "FAIL_RELOAD" and pc["allow_on_headers_stop_iteration"] is True
    assert pc["vm_config"]["code"]["local"]["filename"] == paths.WASM_REL
    r = run_config_check(plugin_json(pc), vm_env(pc, {}))
    assert (r.returncode, r.stdout.split(b"\n", 1)[0], r.stderr) == (0, b"OK", b"")


@pytest.fixture
def ecds_example(tmp_path):
    """The shipped example on free loopback ports, its watched file in `tmp_path`."""
    app, login = EchoApp().start(), StubServer("ecds_login", default=login_ok()).start()
    boot, doc = _shipped()
    lp, ap = free_port(), free_port()
    boot["admin"]["address"]["socket_address"]["port_value"] = ap
    boot["static_resources"]["listeners"][0]["address"]["socket_address"]["port_value"] = lp
    ports = {"app": app.port, "login_api": login.port, "etls_refresh": lp}
    for c in boot["static_resources"]["clusters"]:
        c["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]["port_value"] = ports[c["name"]]
    for n in walk(boot):
        if isinstance(n, dict) and "path_config_source" in n:
            n["path_config_source"] = {"path": str(tmp_path / "etls_auth.yaml"), "watched_directory": {"path": str(tmp_path)}}
    for n in walk(doc):
        if isinstance(n, dict) and str(n.get("filename", "")).endswith(".wasm"):
            n["filename"] = str(paths.wasm_path())
    (tmp_path / "etls_auth.yaml").write_text(yaml.safe_dump(doc))
    e = Envoy("ecds-example", boot, lp, ap, concurrency=2)
    try:
        e.start()
        yield e, doc, tmp_path, app
    finally:
        e.stop()
        app.stop()
        login.stop()


def _version(e):
    _, body = e.admin_get(f"/stats?filter=^{ECDS_STAT}version_text$")
    return body.partition(": ")[2].strip().strip('"')


def _push_as_documented(folder, doc):
    """deploy/ecds/README.md: write the new version next to the watched file, rename it over it."""
    new = folder / "my-new-etls_auth.yaml"
    new.write_text(yaml.safe_dump(doc))
    subprocess.run(["sh", "-c", "cp my-new-etls_auth.yaml .etls_auth.yaml.tmp && mv -f .etls_auth.yaml.tmp etls_auth.yaml"],
                   cwd=folder, check=True, timeout=10)


def test_shipped_ecds_example_serves_takes_a_push_and_refuses_a_bad_one(ecds_example):
    e, doc, folder, app = ecds_example
    port = e.listener_port
    assert _version(e) == "1"
    r = client.request(port, "GET", "/docs/a")
    assert r.status == 401 and r.json() == {"error": "Unauthorized"}
    r = client.request(port, "GET", "/docs/a", cookies={"accessTokenEtls": tokens.access(5, "u", secret=DEMO_ACCESS)})
    assert r.status == 200 and checks.echo_header_all(checks.echo(r), "x-etls-user-id") == ["5"]
    r = client.request(port, "POST", "/api/auth/login", body={"email": "a@example.test", "password": "pw"},
                       headers={"x-etls-probe": "ecds-login"})
    assert r.status == 200 and r.json()["message"] == "Login successful", r
    assert app.with_header("x-etls-probe", "ecds-login") == [], "the app saw the login request"

    # Version 2: /docs becomes public.
    pc = _plugin(doc)
    plugin = json.loads(pc["configuration"]["value"])
    plugin["public_paths"] = ["/login", "/docs"]
    pc["configuration"]["value"] = json.dumps(plugin)
    doc["version_info"] = "2"
    _push_as_documented(folder, doc)
    assert wait_until(lambda: _version(e) == "2", 20), e.log_tail()
    r = client.request(port, "GET", "/docs/a")
    assert r.status == 200 and checks.echo(r)["path"] == "/docs/a"
    assert e.stat(ECDS_STAT + "update_success") == 2 and e.stat(ECDS_STAT + "update_rejected") == 0

    # Version 3 is refused (misspelt key): version 2 keeps serving, /x is still protected.
    plugin["cookie_secur"] = True
    plugin["public_paths"] = ["/"]
    pc["configuration"]["value"] = json.dumps(plugin)
    doc["version_info"] = "3"
    _push_as_documented(folder, doc)
    assert wait_until(lambda: e.stat(ECDS_STAT + "update_rejected") == 1, 20), e.log_tail()
    assert _version(e) == "2" and e.stat(ECDS_STAT + "config_fail") == 1
    log = e.log_text()
    assert "etls-auth: invalid configuration: `cookie_secur`" in log
    assert "Filesystem config update rejected: Unable to create Wasm plugin etls_auth" in log
    app.clear()
    r = client.request(port, "GET", "/x", headers={"x-etls-probe": "after-bad"})
    assert r.status == 401 and app.with_header("x-etls-probe", "after-bad") == []
    assert client.request(port, "GET", "/docs/b").status == 200
