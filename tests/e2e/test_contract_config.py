"""The configuration reference (docs/configuration.md): bad values of keys that tests/e2e/test_config_validation.py does not
try, each refused by `envoy --mode validate` (exit status non-zero) with one log line of the filter
naming the key. Plus values a browser would make useless: a `login_page` with a backslash (browsers
read `/\\host` as `//host`, an open redirect) and cookie-name prefixes whose rules the attributes
break (browsers drop such cookies)."""
from __future__ import annotations

import pytest

from harness.envoy import SECRETS, bootstrap, free_port, plugin_config, run_validate


def _validate(plugin):
    lp, ap = free_port(), free_port()
    cfg = bootstrap(listener_port=lp, admin_port=ap, plugin=plugin, env=SECRETS,
                    clusters={"app": 1, "login_api": 2, "etls_refresh": lp})
    return run_validate(cfg)


BAD = {
    "login_page_backslash": (plugin_config(login_page="/\\evil.example"), "login_page"),
    "host_prefix_with_domain": (plugin_config(access_cookie="__Host-session", cookie_domain="example.test"), "access_cookie"),
    "host_prefix_without_secure": (plugin_config(refresh_cookie="__host-refresh", cookie_secure=False, cookie_same_site="Lax"), "refresh_cookie"),
    "secure_prefix_without_secure": (plugin_config(upstream_access_cookie="__Secure-api", cookie_secure=False), "upstream_access_cookie"),
    "login_timeout_zero": (plugin_config(login_timeout_ms=0), "login_timeout_ms"),
    "login_refresh_path_relative": (plugin_config(login_refresh_path="refresh"), "login_refresh_path"),
    "refresh_authority_with_slash": (plugin_config(refresh_cluster="etls_refresh", refresh_authority="a/b"), "refresh_authority"),
    "max_login_body_over_1mib": (plugin_config(max_login_body_bytes=1048577), "max_login_body_bytes"),
    "role_header_reserved": (plugin_config(role_header="Content-Length"), "role_header"),
    "cookie_domain_with_attribute": (plugin_config(cookie_domain="example.test; Secure"), "cookie_domain"),
    "same_site_type": (plugin_config(cookie_same_site=1), "cookie_same_site"),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_value_is_refused_with_one_line_naming_the_key(name):
    plugin, key = BAD[name]
    r = _validate(plugin)
    assert r.returncode != 0, f"{name}: accepted\n{r.stdout[-1500:]}"
    lines = [l for l in r.stdout.splitlines() if "wasm log" in l and "etls-auth" in l]
    assert len(lines) == 1, lines
    assert f"`{key}`" in lines[0], lines


@pytest.mark.parametrize("plugin", [
    plugin_config(access_cookie="__Host-session", refresh_cookie="__Host-refresh"),
    plugin_config(access_cookie="__Secure-session", cookie_domain="example.test"),
], ids=["host-prefix-secure-host-only", "secure-prefix-with-domain"])
def test_cookie_prefixes_where_browsers_keep_them_are_accepted(plugin):
    r = _validate(plugin)
    assert r.returncode == 0, r.stdout[-1500:]


def test_a_key_given_twice_is_refused_naming_it():
    raw = '{"login_cluster": "login_api", "cookie_secure": true, "cookie_secure": false}'
    r = _validate(raw)
    assert r.returncode != 0, r.stdout[-1500:]
    lines = [l for l in r.stdout.splitlines() if "wasm log" in l and "etls-auth" in l]
    assert len(lines) == 1 and lines[0].endswith("`cookie_secure`: given more than once; keep one"), lines
