"""demo/render_envoy_config.py: the copy of envoy.yaml that scripts/demo.sh runs with overrides
(access TTL, cookie_secure, ports) changes exactly those settings and is a valid Envoy config."""
import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
OUT = REPO / "tests" / "out" / "browser"
sys.path.insert(0, str(REPO / "tests"))
from harness import envoy as henvoy  # noqa: E402

OVERRIDES = {
    "ETLS_DEMO_ACCESS_TTL_S": "7",
    "ETLS_DEMO_COOKIE_SECURE": "true",
    "ETLS_DEMO_LOGIN_REFRESH_PATH": "/refresh",
    "ETLS_DEMO_LOGIN_LOGOUT_PATH": "/logout",
    "ETLS_DEMO_LISTEN_PORT": "20000",
    "ETLS_DEMO_ADMIN_PORT": "20001",
    "ETLS_DEMO_APP_PORT": "20002",
    "ETLS_DEMO_LOGIN_API_PORT": "20003",
}


def plugin_json(doc):
    found = []

    def walk(node):
        if isinstance(node, dict):
            v = node.get("value")
            if isinstance(v, str) and "login_cluster" in v:
                found.append(json.loads(v))
            for x in node.values():
                walk(x)
        elif isinstance(node, list):
            for x in node:
                walk(x)
    walk(doc)
    assert len(found) == 1, found
    return found[0]


def ports(doc):
    out = []

    def walk(node):
        if isinstance(node, dict):
            if isinstance(node.get("port_value"), int):
                out.append(node["port_value"])
            for x in node.values():
                walk(x)
        elif isinstance(node, list):
            for x in node:
                walk(x)
    walk(doc)
    return sorted(out)


def render(tmp_path, env_overrides):
    dst = tmp_path / "envoy.yaml"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETLS_DEMO_")}
    env.update(env_overrides)
    subprocess.run([sys.executable, str(REPO / "demo" / "render_envoy_config.py"), str(REPO / "envoy.yaml"), str(dst)],
                   check=True, env=env, cwd=REPO, timeout=60)
    return dst


def test_rendered_config_changes_only_the_overrides(tmp_path):
    original = yaml.safe_load((REPO / "envoy.yaml").read_text())
    dst = render(tmp_path, OVERRIDES)
    rendered = yaml.safe_load(dst.read_text())

    want = dict(plugin_json(original), access_ttl_s=7, cookie_secure=True, login_refresh_path="/refresh",
                login_logout_path="/logout")
    assert plugin_json(rendered) == want
    # Every default port moved, and the self-pointing refresh cluster followed the listener.
    mapping = {10000: 20000, 9901: 20001, 8080: 20002, 8081: 20003}
    assert ports(rendered) == sorted(mapping.get(p, p) for p in ports(original))
    assert ports(original).count(10000) == 2  # the listener and the etls_refresh cluster
    # Nothing else changed: put the original values back and compare the whole documents.
    text = json.dumps(rendered)
    for new, old in ((20000, 10000), (20001, 9901), (20002, 8080), (20003, 8081)):
        text = text.replace(f'"port_value": {new}', f'"port_value": {old}')
    back = json.loads(text)

    def strip_plugin(node):
        if isinstance(node, dict):
            return {k: ("<plugin>" if k == "value" and isinstance(v, str) and "login_cluster" in v else strip_plugin(v))
                    for k, v in node.items()}
        if isinstance(node, list):
            return [strip_plugin(x) for x in node]
        return node
    assert strip_plugin(back) == strip_plugin(original)


def test_rendered_config_is_valid_for_envoy(tmp_path):
    dst = render(tmp_path, OVERRIDES)
    # Validate from the repo root: the wasm path in envoy.yaml is relative to it.
    r = henvoy.run_validate(dst, cwd=REPO)
    assert r.returncode == 0, r.stdout[-3000:]


def test_no_override_renders_the_same_config(tmp_path):
    dst = render(tmp_path, {})
    assert yaml.safe_load(dst.read_text()) == yaml.safe_load((REPO / "envoy.yaml").read_text())


def test_bad_override_fails_loudly(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETLS_DEMO_")}
    env["ETLS_DEMO_ACCESS_TTL_S"] = "soon"
    r = subprocess.run([sys.executable, str(REPO / "demo" / "render_envoy_config.py"), str(REPO / "envoy.yaml"),
                        str(tmp_path / "x.yaml")], env=env, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert r.returncode != 0
    assert "ETLS_DEMO_ACCESS_TTL_S" in r.stderr
    env["ETLS_DEMO_ACCESS_TTL_S"] = "7"
    env["ETLS_DEMO_LOGIN_REFRESH_PATH"] = "refresh"
    r = subprocess.run([sys.executable, str(REPO / "demo" / "render_envoy_config.py"), str(REPO / "envoy.yaml"),
                        str(tmp_path / "x.yaml")], env=env, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert r.returncode != 0
    assert "ETLS_DEMO_LOGIN_REFRESH_PATH" in r.stderr
    env["ETLS_DEMO_LOGIN_REFRESH_PATH"] = "/refresh"
    env["ETLS_DEMO_LOGIN_LOGOUT_PATH"] = "logout"
    r = subprocess.run([sys.executable, str(REPO / "demo" / "render_envoy_config.py"), str(REPO / "envoy.yaml"),
                        str(tmp_path / "x.yaml")], env=env, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert r.returncode != 0
    assert "ETLS_DEMO_LOGIN_LOGOUT_PATH" in r.stderr
