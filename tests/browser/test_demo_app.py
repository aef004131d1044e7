"""demo/app.py's own logic, without a browser: what /session.json reports (the forwarded token's
times, decoded for display) and how the counters panel sums Envoy's admin stats."""
import base64
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "demo"))
import app  # noqa: E402


def fake_token(claims):
    part = lambda d: base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=").decode()  # noqa: E731
    return f"{part({'alg': 'HS256'})}.{part(claims)}.c2lnbmF0dXJl"


def test_token_claims_reads_the_named_cookie_only():
    access = fake_token({"userId": 1, "iat": 100, "exp": 104})
    refresh = fake_token({"userId": 1, "iat": 100, "exp": 700, "jti": "x"})
    header = f"other=1; accessTokenEtls={access}; refreshTokenEtls={refresh}; accessToken=opaque"
    assert app.token_claims(header)["exp"] == 104
    assert app.token_claims(header, app.REFRESH_COOKIE)["exp"] == 700
    assert app.token_times(header) == (100, 104)
    for broken in (None, "", "accessTokenEtls=not-a-jwt", "accessTokenEtls=a.%%%.c", "accessTokenEtls=a.WzFd.c"):
        assert app.token_claims(broken) == {}, broken


def test_counters_are_summed_from_envoys_stats_json():
    stats = {"stats": [
        {"name": "wasm.etls_auth.vm_reload", "value": 7},
        {"name": "wasmcustom.etls_auth.login_succeeded", "value": 3},
        {"name": "wasmcustom.etls_auth.login_rejected", "value": 2},
        {"name": "wasmcustom.etls_auth.session_valid", "value": 40},
        {"name": "wasmcustom.etls_auth.rotated_inline", "value": 1},
        {"name": "wasmcustom.etls_auth.rotated_by_cluster", "value": 4},
        {"name": "wasmcustom.etls_auth.denied_no_session", "value": 5},
        {"name": "wasmcustom.etls_auth.denied_refresh_invalid", "value": 1},
        {"histograms": {"supported_quantiles": []}},
    ]}
    got = app.summarize_counters(stats)
    assert {k: got[k] for k in ("logins", "verified", "rotations", "denials")} == \
        {"logins": 3, "verified": 40, "rotations": 5, "denials": 6}
    assert got["all"]["login_rejected"] == 2 and "vm_reload" not in got["all"]
    assert app.summarize_counters({"stats": []}) is None
    assert app.summarize_counters("not json of stats") is None


def test_without_an_admin_address_there_are_no_counters():
    assert app.ENVOY_ADMIN is None
    assert app.envoy_counters() is None


def test_the_forbidden_page_says_which_role_and_which_is_needed():
    assert app.forbidden_message("Bob User", "user").startswith(
        "Bob User is signed in, but has role <code>user</code>; <code>/admin</code> needs role <code>admin</code>.")
    assert "has no role;" in app.forbidden_message("Eve", "")
    assert "&lt;b&gt;" in app.forbidden_message("<b>", "<b>")


def test_remaining_text():
    assert app.remaining_text(110, 100.2) == "expires in 10 s"
    assert app.remaining_text(100, 103.5) == "expired 3 s ago"
    assert app.remaining_text(None, 1) == "-"


def test_the_session_ends_for_good_at_auth_time_plus_max_session_s():
    header = "accessTokenEtls=" + fake_token({"userId": 1, "iat": 5000, "exp": 5900, "auth_time": 1000})
    assert app.session_end(header) == (1000, 1000 + app.MAX_SESSION_S)
    assert app.MAX_SESSION_S == 2592000
    # A token without auth_time (minted before the filter carried it): nothing to show.
    assert app.session_end("accessTokenEtls=" + fake_token({"userId": 1, "iat": 5000, "exp": 5900})) == (None, None)
    assert app.session_end(None) == (None, None)
