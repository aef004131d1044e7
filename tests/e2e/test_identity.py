"""Identity for the rest of Envoy (docs/sessions.md): the filter state wasm.etls_user_id / wasm.etls_role
in the shipped access log and in Envoy's RBAC filter, the RBAC recipe of docs/sessions.md, the Istio
AuthorizationPolicy (its schema, and the RBAC istiod makes of it, in a real Envoy), and the
per-route opt-out of the shipped health-check route.

The gateways here are built from the shipped envoy.yaml's pieces, not copies: its access_log
(stdout, which the harness writes to the Envoy log; flushed every 100 ms here instead of Envoy's
10 s), its /healthz route, and the RBAC filter of docs/sessions.md (the same as the commented example
in envoy.yaml and deploy/compose/envoy.yaml), after the wasm filter."""
from __future__ import annotations

import copy
import json
import re
import time
import uuid

import jsonschema
import pytest
import yaml

from harness import checks, paths, tokens
from harness import envoy as henvoy
from harness.client import request
from harness.upstreams import EchoApp
from test_deploy_helpers import COMPOSE_ENVOY, ISTIO, REPO, SCHEMAS, istio_objects, load_yaml_docs

SHIPPED = REPO / "envoy.yaml"
SESSIONS_DOC = REPO / "docs" / "sessions.md"
RBAC_TYPE = "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC"


# ---- the shipped pieces ----------------------------------------------------------------------
def _hcm(doc: dict) -> dict:
    return doc["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]


def _commented_rbac(text: str) -> list:
    """The commented-out `- name: envoy.filters.http.rbac` block of an Envoy config, uncommented."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == "# - name: envoy.filters.http.rbac")
    indent = lines[start].index("#")
    block = []
    for line in lines[start:]:
        if not line.startswith(" " * indent + "# ") or (block and not line.startswith(" " * indent + "#   ")):
            break
        block.append(line[indent + 2:])
    return yaml.safe_load("\n".join(block))


def _docs_rbac_recipe() -> list:
    """The RBAC recipe of docs/sessions.md: its ```yaml block that is an envoy.filters.http.rbac entry."""
    blocks = re.findall(r"```yaml\n(.*?)```", SESSIONS_DOC.read_text(), flags=re.S)
    found = [yaml.safe_load(b) for b in blocks if b.lstrip().startswith("- name: envoy.filters.http.rbac")]
    assert len(found) == 1, f"want one RBAC recipe in docs/sessions.md, found {len(found)}"
    return found[0]


def _opt_out_routes(doc: dict) -> list[dict]:
    routes = _hcm(doc)["route_config"]["virtual_hosts"][0]["routes"]
    return [r for r in routes if r.get("typed_per_filter_config", {}).get("envoy.filters.http.wasm", {}).get("disabled")]


def test_shipped_configs_carry_the_docs_rbac_recipe_recipe_and_the_same_access_log():
    recipe = _docs_rbac_recipe()
    assert recipe[0]["typed_config"]["@type"] == RBAC_TYPE
    shipped = yaml.safe_load(SHIPPED.read_text())
    compose = yaml.safe_load(COMPOSE_ENVOY.read_text())
    for path in (SHIPPED, COMPOSE_ENVOY):
        assert _commented_rbac(path.read_text()) == recipe, path
    assert _hcm(shipped)["access_log"] == _hcm(compose)["access_log"]
    assert _opt_out_routes(shipped) == _opt_out_routes(compose)
    (health,) = _opt_out_routes(shipped)
    assert health["match"] == {"path": "/healthz"}
    assert health["request_headers_to_remove"] == ["x-etls-user-id", "x-etls-role"]


def test_shipped_envoy_yaml_validates_with_the_rbac_example_uncommented():
    doc = yaml.safe_load(SHIPPED.read_text())
    filters = _hcm(doc)["http_filters"]
    assert filters[0]["name"] == "envoy.filters.http.wasm"
    filters.insert(1, _commented_rbac(SHIPPED.read_text())[0])
    r = henvoy.run_validate(doc, cwd=REPO)
    assert r.returncode == 0, r.stdout[-3000:]


# ---- Istio ------------------------------------------------------------------------------------
POLICIES = istio_objects("AuthorizationPolicy")


def test_authorization_policy_validates_against_the_crd_schema():
    assert [str(p.relative_to(REPO)) for p, _ in POLICIES] == ["deploy/istio/authorizationpolicy.yaml"]
    (_, doc), = POLICIES
    validator = jsonschema.Draft202012Validator(json.loads((SCHEMAS / "istio-authorizationpolicy.schema.json").read_text()))
    assert [e.message for e in validator.iter_errors(doc)] == []
    broken = copy.deepcopy(doc)
    broken["spec"]["action"] = "REJECT"
    assert list(validator.iter_errors(broken)) != []
    broken = copy.deepcopy(doc)
    broken["spec"]["rules"][0]["when"][0]["notvalues"] = ["admin"]
    assert list(validator.iter_errors(broken)) != [], "a misspelt field must be rejected"
    # The same gateway as the WasmPlugin, and the header the plugin sets.
    (_, plugin), = istio_objects("WasmPlugin")
    assert doc["metadata"]["namespace"] == plugin["metadata"]["namespace"]
    assert doc["spec"]["selector"] == plugin["spec"]["selector"]
    role_header = plugin["spec"]["pluginConfig"].get("role_header", "x-etls-role")
    assert doc["spec"]["rules"][0]["when"] == [{"key": f"request.headers[{role_header}]", "notValues": ["admin"]}]


def _istio_path(p: str) -> dict:
    """An Istio operation path as istiod matches it: `x*` prefix, `*x` suffix, else exact."""
    if p.endswith("*"):
        return {"url_path": {"path": {"prefix": p[:-1]}}}
    if p.startswith("*"):
        return {"url_path": {"path": {"suffix": p[1:]}}}
    return {"url_path": {"path": {"exact": p}}}


def _istio_rbac(policy: dict) -> dict:
    """The RBAC filter istiod builds for this AuthorizationPolicy on the gateway, for the parts it
    uses (to.operation.paths; when request.headers[...] values / notValues)."""
    spec = policy["spec"]
    policies = {}
    for i, rule in enumerate(spec["rules"]):
        (to,) = rule["to"]
        permission = {"or_rules": {"rules": [_istio_path(p) for p in to["operation"]["paths"]]}}
        ids = []
        for cond in rule["when"]:
            header = re.fullmatch(r"request\.headers\[(.+)\]", cond["key"]).group(1)
            if "values" in cond:
                ids.append({"or_ids": {"ids": [{"header": {"name": header, "string_match": {"exact": v}}} for v in cond["values"]]}})
            if "notValues" in cond:
                ids.append({"not_id": {"or_ids": {"ids": [{"header": {"name": header, "string_match": {"exact": v}}} for v in cond["notValues"]]}}})
        policies[f"ns[{policy['metadata']['namespace']}]-policy[{policy['metadata']['name']}]-rule[{i}]"] = {
            "permissions": [permission], "principals": [{"and_ids": {"ids": ids}}]}
    return {"name": "envoy.filters.http.rbac", "typed_config": {"@type": RBAC_TYPE, "rules": {"action": spec["action"], "policies": policies}}}


# ---- gateways ---------------------------------------------------------------------------------
class IdGateway:
    """An Envoy with the filter, the shipped access log and /healthz route, and `rbac` after the
    wasm filter."""

    def __init__(self, envoy: henvoy.Envoy):
        self.envoy = envoy
        self.port = envoy.listener_port

    def get(self, path: str, **kw) -> object:
        return request(self.port, "GET", path, **kw)

    def access_lines(self) -> list[dict]:
        out = []
        for line in self.envoy.log_text().splitlines():
            m = ACCESS_LINE.match(line)
            if m:
                out.append(m.groupdict())
        return out

    def logged_all(self, method: str, path: str, since: int = 0, timeout: float = 5.0) -> list[dict]:
        """The access log lines of `method path` after the first `since` lines; waits (bounded)
        until there is one. Lines of earlier requests may still come in after `since` was taken
        (Envoy writes the log out every 100 ms here), so a path that is not unique may give several."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [l for l in self.access_lines()[since:] if l["method"] == method and l["path"] == path]
            if found:
                return found
            time.sleep(0.05)
        raise AssertionError(f"no access log line for {method} {path}:\n{self.envoy.log_tail(10)}")

    def logged(self, method: str, path: str) -> dict:
        """The one access log line of a request to a unique path."""
        (line,) = self.logged_all(method, path)
        return line


# The shipped format: [time] "METHOD PATH PROTOCOL" STATUS FLAGS DURATIONms user=U role=R
ACCESS_LINE = re.compile(
    r'^\[\S+\] "(?P<method>\S+) (?P<path>\S+) (?P<protocol>\S+)" (?P<status>\d+) (?P<flags>\S+) \d+ms '
    r"user=(?P<user>\S+) role=(?P<role>\S*)$"
)


def _start(name: str, upstreams, rbac: dict, **plugin_keys) -> IdGateway:
    shipped = yaml.safe_load(SHIPPED.read_text())
    plugin = henvoy.plugin_config(**plugin_keys)
    clusters = {"app": upstreams.app.port, "login_api": upstreams.login.port}
    if "refresh_cluster" in plugin:
        clusters[plugin["refresh_cluster"]] = None
    last = None
    for _ in range(3):  # a port that was free may be taken meanwhile: retry, bounded
        lp, ap = henvoy.free_port(), henvoy.free_port()
        cfg = henvoy.bootstrap(listener_port=lp, admin_port=ap, plugin=plugin, env=henvoy.SECRETS,
                               clusters={n: lp if p is None else p for n, p in clusters.items()})
        hcm = _hcm(cfg)
        hcm["access_log"] = _hcm(shipped)["access_log"]
        hcm["http_filters"].insert(1, rbac)
        hcm["route_config"]["virtual_hosts"][0]["routes"][:0] = _opt_out_routes(shipped)
        e = henvoy.Envoy(name, cfg, lp, ap)
        e.extra_args = ["--file-flush-interval-msec", "100"]
        try:
            return IdGateway(e.start())
        except paths.HarnessError as err:
            e.stop()
            last = err
            if "Address already in use" not in e.log_text():
                raise
    raise paths.HarnessError(f"could not start {name}: {last}")


@pytest.fixture(scope="module", params=["inline", "cluster"])
def idgw(request, upstreams):
    keys = {"refresh_cluster": "etls_refresh"} if request.param == "cluster" else {}
    g = _start(f"identity-{request.param}", upstreams, _docs_rbac_recipe()[0], **keys)
    g.mode = request.param
    yield g
    g.envoy.stop()


@pytest.fixture(scope="module")
def istio_gw(upstreams):
    (_, policy), = POLICIES
    g = _start("identity-istio", upstreams, _istio_rbac(policy))
    yield g
    g.envoy.stop()


def _session(access: str | None = None, refresh: str | None = None) -> dict:
    out = {}
    if access:
        out["accessTokenEtls"] = access
    if refresh:
        out["refreshTokenEtls"] = refresh
    return out


def _probe() -> str:
    return f"/probe/{uuid.uuid4().hex}"


# ---- access log --------------------------------------------------------------------------------
def test_access_log_of_a_valid_session_carries_user_and_role(idgw):
    path = _probe()
    r = idgw.get(path + "?q=1", cookies=_session(tokens.access("u-7f3a", "editor")))
    assert r.status == 200
    line = idgw.logged("GET", path)
    assert (line["status"], line["user"], line["role"]) == ("200", "u-7f3a", "editor")


def test_access_log_of_a_rotated_session_carries_user_and_role(idgw):
    since, path = len(idgw.access_lines()), _probe()
    r = idgw.get(path, cookies=_session(tokens.expired_access(1001, "auditor"), tokens.refresh(1001, "auditor")))
    assert r.status == 200 and len(r.set_cookies) == 2, r
    line = idgw.logged("GET", path)
    assert (line["status"], line["user"], line["role"]) == ("200", "1001", "auditor")
    if idgw.mode == "cluster":
        # The dispatched refresh call is a request of its own, logged before the request it
        # rotated, and answered by the filter's refresh route: it publishes no identity.
        calls = idgw.logged_all("POST", "/api/auth/refreshtoken", since)
        assert {(l["status"], l["user"], l["role"]) for l in calls} == {("200", "-", "-")}


def test_access_log_of_a_session_without_role_has_no_role(idgw):
    path = _probe()
    assert idgw.get(path, cookies=_session(tokens.access(5, None))).status == 200
    line = idgw.logged("GET", path)
    assert (line["user"], line["role"]) == ("5", "-")


def test_access_log_of_an_empty_role_prints_nothing_not_a_dash(idgw):
    # An empty role is a role (the app gets an empty x-etls-role): the filter state holds "", and
    # RBAC's exact match on "admin" does not take it for admin.
    path = _probe()
    assert idgw.get(path, cookies=_session(tokens.access(6, ""))).status == 200
    line = idgw.logged("GET", path)
    assert (line["user"], line["role"]) == ("6", "")
    _forbidden(idgw.get("/admin", cookies=_session(tokens.access(6, ""))))


def _denied(g):
    path = _probe()
    r = g.get(path, cookies=_session(tokens.expired_access(1, "admin"), tokens.expired_refresh(1, "admin")))
    assert r.status == 401
    return "GET", path


def _public(g):
    # A valid session on a public path: passed on untouched, so no identity either.
    path = f"/login/{uuid.uuid4().hex}"
    assert g.get(path, cookies=_session(tokens.access(1, "admin"))).status == 200
    return "GET", path


def _login(g):
    r = request(g.port, "POST", "/api/auth/login", body={"email": "a@example.test", "password": "pw"})
    assert r.status == 200, r
    return "POST", "/api/auth/login"


def _preflight(g):
    path = _probe()
    r = request(g.port, "OPTIONS", path, headers={"Origin": "https://app.example", "Access-Control-Request-Method": "POST"},
                cookies=_session(tokens.access(1, "admin")))
    assert r.status == 200
    return "OPTIONS", path


def _refresh_route(g):
    r = request(g.port, "POST", "/api/auth/refreshtoken", cookies=_session(None, tokens.refresh(1, "admin")))
    assert r.status == 200
    return "POST", "/api/auth/refreshtoken"


def _logout_route(g):
    assert request(g.port, "POST", "/api/auth/logout", cookies=_session(tokens.access(1, "admin"))).status == 200
    return "POST", "/api/auth/logout"


@pytest.mark.parametrize("send", [_denied, _public, _login, _preflight, _refresh_route, _logout_route],
                         ids=lambda f: f.__name__.strip("_"))
def test_access_log_without_verified_identity_prints_dashes(idgw, login_api, send):
    since = len(idgw.access_lines())
    method, path = send(idgw)
    # The filter's own routes have fixed paths: every line of them must be without identity.
    for line in idgw.logged_all(method, path, since):
        assert (line["user"], line["role"]) == ("-", "-"), line


# ---- RBAC after the filter (the recipe of docs/sessions.md) -----------------------------------
ALICE = ("1", "admin")
BOB = ("u-bob-42", "user")


@pytest.mark.parametrize("path", ["/admin", "/admin/users?page=2", "/ADMIN"])
def test_rbac_lets_alice_reach_admin(idgw, path):
    r = idgw.get(path, cookies=_session(tokens.access(*ALICE)))
    e = checks.echo(r)
    assert e["path"] == path
    headers = {k.lower(): v for k, v in e["headers"]}
    assert (headers["x-etls-user-id"], headers["x-etls-role"]) == ALICE


def test_rbac_lets_alice_in_after_a_rotation(idgw):
    r = idgw.get("/admin", cookies=_session(tokens.expired_access(*ALICE), tokens.refresh(*ALICE)))
    assert r.status == 200 and checks.echo(r)["path"] == "/admin"
    assert len(r.set_cookies) == 2


def _forbidden(r) -> None:
    assert (r.status, r.body) == (403, b"RBAC: access denied"), r


def _unauthorized(r) -> None:
    """The filter's deny for a non-HTML client: 401 JSON, the four clearing cookies."""
    assert (r.status, r.json()) == (401, {"error": "Unauthorized"}), r
    assert len(r.set_cookies) == 4 and all(c.max_age == 0 for c in r.set_cookies), r.set_cookie_headers


@pytest.mark.parametrize("path", ["/admin", "/admin/", "/admin/users", "/Admin/x"])
def test_rbac_gives_bob_403(idgw, upstreams, path):
    before = len(upstreams.app.requests())
    _forbidden(idgw.get(path, cookies=_session(tokens.access(*BOB))))
    assert len(upstreams.app.requests()) == before, "a denied request reached the app"


def test_rbac_forged_role_header_does_not_get_bob_in(idgw):
    forged = [("x-etls-role", "admin"), ("X-Etls-Role", "admin"), ("x-etls-user-id", "1")]
    _forbidden(idgw.get("/admin", cookies=_session(tokens.access(*BOB)), headers=forged))
    path = f"/admin/{uuid.uuid4().hex}"
    _forbidden(idgw.get(path, cookies=_session(tokens.access(*BOB)), headers=forged))
    # The access log says who was turned away.
    line = idgw.logged("GET", path)
    assert (line["status"], line["user"], line["role"]) == ("403", *BOB)
    # Without a session, a forged header meets the filter's own denial first.
    _unauthorized(idgw.get("/admin", headers={"x-etls-role": "admin"}))


def test_rbac_session_without_role_gets_403(idgw):
    _forbidden(idgw.get("/admin", cookies=_session(tokens.access(9, None))))


def test_rbac_no_session_gets_the_filters_answer(idgw):
    _unauthorized(idgw.get("/admin"))
    r = idgw.get("/admin?tab=1", accept="text/html")
    assert r.status == 302 and r.header("Location") == "/login?next=%2Fadmin%3Ftab%3D1"


def test_rbac_leaves_other_paths_to_every_session(idgw):
    for path in ["/", "/administrator", "/dashboard/admin"]:
        e = checks.echo(idgw.get(path, cookies=_session(tokens.access(*BOB))))
        assert e["path"] == path


# ---- Istio: the AuthorizationPolicy as istiod translates it ------------------------------------
def test_istio_policy_alice_in_bob_out_forgery_useless(istio_gw):
    assert checks.echo(istio_gw.get("/admin/users", cookies=_session(tokens.access(*ALICE))))["path"] == "/admin/users"
    _forbidden(istio_gw.get("/admin", cookies=_session(tokens.access(*BOB))))
    _forbidden(istio_gw.get("/admin/users", cookies=_session(tokens.access(*BOB)), headers={"x-etls-role": "admin"}))
    _forbidden(istio_gw.get("/admin", cookies=_session(tokens.access(9, None)), headers={"x-etls-role": "admin"}))
    _unauthorized(istio_gw.get("/admin"))
    assert checks.echo(istio_gw.get("/other", cookies=_session(tokens.access(*BOB))))["path"] == "/other"


# ---- per-route opt-out: the health check --------------------------------------------------------
def test_health_check_answers_without_a_session(idgw, upstreams):
    since = len(idgw.access_lines())
    r = idgw.get("/healthz", headers=[("x-etls-user-id", "1"), ("x-etls-role", "admin")])
    e = checks.echo(r)
    assert e["path"] == "/healthz"
    names = {k.lower() for k, _ in e["headers"]}
    # The filter did not run (no session needed, no Set-Cookie); the route itself dropped the
    # client's identity headers, which the filter is not there to strip.
    assert "x-etls-user-id" not in names and "x-etls-role" not in names
    assert r.set_cookie_headers == []
    for line in idgw.logged_all("GET", "/healthz", since):
        assert (line["status"], line["user"], line["role"]) == ("200", "-", "-")


@pytest.mark.parametrize("path", ["/healthz/", "/healthz/x", "/healthzz", "/health", "/"])
def test_every_other_route_is_still_protected(idgw, path):
    _unauthorized(idgw.get(path))
