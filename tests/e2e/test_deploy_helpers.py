"""Shared helpers (no tests) of tests/e2e/test_deploy*.py: where the deploy files are, how to find every
Envoy config / Istio manifest / plugin configuration shipped in the repo, and the native
etls-config-check binary (built once per test session)."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness import paths  # noqa: E402
from harness.envoy import SECRETS, STRING_VALUE_TYPE, WASM_TYPE  # noqa: E402

REPO = paths.REPO
SCHEMAS = Path(os.environ.get("ETLS_SCHEMAS", "/work/shared/schemas"))
COMPOSE = REPO / "docker-compose.yml"
COMPOSE_ENVOY = REPO / "deploy" / "compose" / "envoy.yaml"
ISTIO = REPO / "deploy" / "istio"
OCI_DOCKERFILE = REPO / "deploy" / "oci" / "Dockerfile"

# Folders that hold no shipped configuration.
_SKIP_DIRS = {".git", ".venv", "target", "node_modules", "out", "__pycache__", ".pytest_cache", "fuzz"}


def shipped_files(*suffixes: str) -> list[Path]:
    """Every file under the repo with one of `suffixes`, outside build outputs and tool folders."""
    found = []
    for root, dirs, files in os.walk(REPO):
        dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS)
        for f in sorted(files):
            if f.endswith(suffixes):
                found.append(Path(root) / f)
    return found


def load_yaml_docs(path: Path) -> list[Any]:
    with open(path, encoding="utf-8") as fh:
        return [d for d in yaml.safe_load_all(fh) if d is not None]


def envoy_configs() -> list[Path]:
    """Every Envoy bootstrap shipped in the repo: a YAML/JSON document with static_resources."""
    out = []
    for p in shipped_files(".yaml", ".yml", ".json"):
        try:
            docs = load_yaml_docs(p)
        except yaml.YAMLError:
            continue
        if len(docs) == 1 and isinstance(docs[0], dict) and "static_resources" in docs[0]:
            out.append(p)
    return out


def istio_objects(kind: str) -> list[tuple[Path, dict]]:
    """Every Kubernetes object of `kind` in the repo's YAML files, with its file."""
    out = []
    for p in shipped_files(".yaml", ".yml"):
        try:
            docs = load_yaml_docs(p)
        except yaml.YAMLError:
            continue
        for d in docs:
            if isinstance(d, dict) and d.get("kind") == kind and "apiVersion" in d:
                out.append((p, d))
    return out


def walk(node: Any) -> Iterator[Any]:
    """Every dict and list inside `node`, depth first."""
    yield node
    if isinstance(node, dict):
        for v in node.values():
            yield from walk(v)
    elif isinstance(node, list):
        for v in node:
            yield from walk(v)


def wasm_filters(bootstrap: dict) -> list[dict]:
    """The PluginConfig (`config`) of every envoy.filters.http.wasm in an Envoy bootstrap."""
    return [n["config"] for n in walk(bootstrap) if isinstance(n, dict) and n.get("@type") == WASM_TYPE]


def plugin_json(plugin_config: dict) -> str:
    """The configuration string a filter's on_configure receives (StringValue JSON)."""
    cfg = plugin_config.get("configuration")
    if cfg is None:
        return ""
    assert cfg.get("@type") == STRING_VALUE_TYPE, f"plugin configuration must be a StringValue, got {cfg.get('@type')}"
    return cfg["value"]


def vm_env(plugin_config: dict, host_env: dict[str, str]) -> dict[str, str]:
    """The Wasm VM environment Envoy builds: key_values as given, host_env_keys from `host_env`."""
    ev = plugin_config.get("vm_config", {}).get("environment_variables", {})
    env = {k: host_env[k] for k in ev.get("host_env_keys", []) if k in host_env}
    env.update(ev.get("key_values", {}))
    return env


# ---- etls-config-check -------------------------------------------------------------------------
_config_check: str | None = None


def config_check_bin() -> str:
    """Builds (cargo, native, debug) and returns target/.../etls-config-check, once per session."""
    global _config_check
    if _config_check is None:
        r = subprocess.run(
            ["cargo", "build", "--quiet", "--bin", "etls-config-check", "--message-format", "json"],
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=1200,
        )
        if r.returncode != 0:
            raise paths.HarnessError(f"cargo build --bin etls-config-check failed:\n{r.stderr[-4000:]}")
        exe = None
        for line in r.stdout.splitlines():
            msg = json.loads(line)
            if msg.get("reason") == "compiler-artifact" and msg.get("target", {}).get("name") == "etls-config-check":
                exe = msg.get("executable")
        if not exe or not os.access(exe, os.X_OK):
            raise paths.HarnessError(f"etls-config-check was not built (cargo output: {r.stdout[-2000:]})")
        _config_check = exe
    return _config_check


def run_config_check(config: str | bytes, env: dict[str, str]) -> subprocess.CompletedProcess:
    """Runs etls-config-check on `config` (stdin) with exactly `env` as secrets (plus PATH)."""
    data = config.encode() if isinstance(config, str) else config
    return subprocess.run(
        [config_check_bin(), "-"],
        input=data, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **env}, timeout=60,
    )


# ---- docker-compose ------------------------------------------------------------------------------
_DEFAULT = re.compile(r"^\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*):-(?P<default>[^}]*)\}$")


def compose_default(value: str) -> tuple[str, str]:
    """`${NAME:-default}` -> (NAME, default); fails if `value` has another shape."""
    m = _DEFAULT.match(value)
    assert m, f"expected ${{NAME:-default}}, got {value!r}"
    return m.group("name"), m.group("default")

