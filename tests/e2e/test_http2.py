"""HTTP/2 clients (h2c with prior knowledge, through curl): HTTP/2 clients may split the Cookie
header into several fields (RFC 9113 section 8.2.3), which Envoy joins before the filter; every
Set-Cookie is its own header field. Both rotation modes."""
import json
import shutil
import subprocess

from harness import checks, paths, tokens
from harness.client import parse_set_cookie


def curl_h2(gw, path, headers):
    curl = shutil.which("curl")
    if not curl:
        raise paths.HarnessError("curl not found (needed for the HTTP/2 tests): apt-get install curl")
    args = [curl, "-s", "-i", "--http2-prior-knowledge", "--max-time", "15"]
    for k, v in headers:
        args += ["-H", f"{k}: {v}"]
    args.append(f"http://127.0.0.1:{gw.port}{path}")
    out = subprocess.run(args, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    head, _, body = out.stdout.replace("\r\n", "\n").partition("\n\n")
    lines = head.split("\n")
    assert lines[0].startswith("HTTP/2 "), lines[0]
    status = int(lines[0].split()[1])
    hdrs = [tuple(x.strip() for x in l.split(":", 1)) for l in lines[1:] if ":" in l]
    return status, hdrs, body


def test_h2_split_cookie_crumbs_rotate_and_set_two_cookie_fields(gw):
    status, hdrs, body = curl_h2(gw, "/h2?x=1", [("cookie", "theme=dark"),
                                                 ("cookie", f"{gw.refresh_cookie}={tokens.refresh(70, 'user')}"),
                                                 ("cookie", f"{gw.access_cookie}={tokens.expired_access(70, 'user')}")])
    assert status == 200, (status, hdrs, body[:300])
    e = json.loads(body)
    set_cookies = [parse_set_cookie(v) for k, v in hdrs if k.lower() == "set-cookie"]
    assert sorted(c.name for c in set_cookies) == sorted([gw.access_cookie, gw.refresh_cookie])
    new = {c.name: c.value for c in set_cookies}
    for c in set_cookies:
        checks.cookie_attrs_ok(c, gw, gw.access_ttl_s if c.name == gw.access_cookie else gw.refresh_ttl_s)
    checks.new_tokens_ok(gw, new[gw.access_cookie], new[gw.refresh_cookie], user_id=70, role="user")
    checks.app_cookie_carries(e, gw, new[gw.access_cookie], new[gw.refresh_cookie], {"theme": "dark"})
    checks.identity(e, gw, "70", "user")


def test_h2_valid_access_in_a_later_crumb_passes(gw):
    status, hdrs, body = curl_h2(gw, "/h2", [("cookie", "a=1"), ("cookie", f"{gw.access_cookie}={tokens.access(71, 'admin')}")])
    assert status == 200, (status, body[:300])
    checks.identity(json.loads(body), gw, "71", "admin")


def test_h2_deny_has_four_clearing_cookie_fields(gw):
    status, hdrs, body = curl_h2(gw, "/h2", [("accept", "application/json")])
    assert status == 401
    assert json.loads(body) == {"error": "Unauthorized"}
    cleared = [parse_set_cookie(v) for k, v in hdrs if k.lower() == "set-cookie"]
    assert sorted(c.name for c in cleared) == sorted(gw.cookie_names)
    for c in cleared:
        assert c.value == ""
        checks.cookie_attrs_ok(c, gw, 0)
