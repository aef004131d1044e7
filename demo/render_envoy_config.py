#!/usr/bin/env python3
"""Renders a copy of the shipped envoy.yaml with demo overrides (used by scripts/demo.sh).

Overrides come from environment variables; unset ones leave envoy.yaml as it is:
  ETLS_DEMO_ACCESS_TTL_S      access_ttl_s of the filter (e.g. 2 for the browser test)
  ETLS_DEMO_COOKIE_SECURE     cookie_secure of the filter ("true" / "false")
  ETLS_DEMO_LOGIN_REFRESH_PATH  login_refresh_path of the filter (e.g. /refresh: the demo login
                              API's refresh call, so a user disabled at the API is signed out)
  ETLS_DEMO_LOGIN_LOGOUT_PATH login_logout_path of the filter (e.g. /logout: the demo login API's
                              logout call, so a logout ends the session for every copy of its cookies)
  ETLS_DEMO_MAX_SESSION_S     max_session_s of the filter (the absolute session lifetime)
  ETLS_DEMO_LISTEN_PORT       Envoy listener port (10000), also where etls_refresh points
  ETLS_DEMO_ADMIN_PORT        Envoy admin port (9901)
  ETLS_DEMO_APP_PORT          demo app port (8080)
  ETLS_DEMO_LOGIN_API_PORT    demo login API port (8081)

A port override replaces every `port_value` equal to the default, so the self-pointing
etls_refresh cluster follows the listener. The filter configuration is found as the JSON
string (google.protobuf.StringValue) that holds a "login_cluster" key.

usage: render_envoy_config.py IN.yaml OUT.yaml
"""

import json
import os
import sys

import yaml

DEFAULT_PORTS = {
    "ETLS_DEMO_LISTEN_PORT": 10000,
    "ETLS_DEMO_ADMIN_PORT": 9901,
    "ETLS_DEMO_APP_PORT": 8080,
    "ETLS_DEMO_LOGIN_API_PORT": 8081,
}


def filter_overrides():
    out = {}
    ttl = os.environ.get("ETLS_DEMO_ACCESS_TTL_S")
    if ttl:
        if not ttl.isdigit() or int(ttl) < 1:
            sys.exit(f"ETLS_DEMO_ACCESS_TTL_S must be a positive integer, got {ttl!r}")
        out["access_ttl_s"] = int(ttl)
    secure = os.environ.get("ETLS_DEMO_COOKIE_SECURE")
    if secure:
        if secure not in ("true", "false"):
            sys.exit(f"ETLS_DEMO_COOKIE_SECURE must be true or false, got {secure!r}")
        out["cookie_secure"] = secure == "true"
    for var, key, example in (("ETLS_DEMO_LOGIN_REFRESH_PATH", "login_refresh_path", "/refresh"),
                              ("ETLS_DEMO_LOGIN_LOGOUT_PATH", "login_logout_path", "/logout")):
        path = os.environ.get(var)
        if path:
            if not path.startswith("/") or path.startswith("//") or any(c in path for c in "?# "):
                sys.exit(f"{var} must be a path such as {example}, got {path!r}")
            out[key] = path
    max_session = os.environ.get("ETLS_DEMO_MAX_SESSION_S")
    if max_session:
        if not max_session.isdigit() or int(max_session) < 1:
            sys.exit(f"ETLS_DEMO_MAX_SESSION_S must be a positive integer, got {max_session!r}")
        out["max_session_s"] = int(max_session)
    return out


def port_map():
    out = {}
    for var, default in DEFAULT_PORTS.items():
        value = os.environ.get(var)
        if value:
            if not value.isdigit() or not 0 < int(value) < 65536:
                sys.exit(f"{var} must be a port number, got {value!r}")
            out[default] = int(value)
    return out


def rewrite(node, overrides, ports, found):
    if isinstance(node, dict):
        for key, value in list(node.items()):
            if key == "port_value" and isinstance(value, int) and value in ports:
                node[key] = ports[value]
            elif key == "value" and isinstance(value, str) and "login_cluster" in value:
                try:
                    cfg = json.loads(value)
                except ValueError:
                    cfg = None
                if isinstance(cfg, dict) and "login_cluster" in cfg:
                    if overrides:
                        cfg.update(overrides)
                        node[key] = json.dumps(cfg, indent=2)
                    found.append(cfg)
            else:
                rewrite(value, overrides, ports, found)
    elif isinstance(node, list):
        for item in node:
            rewrite(item, overrides, ports, found)


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    src, dst = sys.argv[1], sys.argv[2]
    with open(src, encoding="utf-8") as f:
        doc = yaml.safe_load(f)
    overrides, ports, found = filter_overrides(), port_map(), []
    rewrite(doc, overrides, ports, found)
    if overrides and not found:
        sys.exit(f"{src}: found no etls-auth filter configuration (a JSON string with login_cluster)")
    with open(dst, "w", encoding="utf-8") as f:
        f.write(f"# Rendered from {src} by demo/render_envoy_config.py; do not edit.\n")
        yaml.safe_dump(doc, f, sort_keys=False)


if __name__ == "__main__":
    main()
