//! The judge shared by `tests/properties.rs` (proptest, in `cargo test`) and the cargo-fuzz
//! targets in `fuzz/fuzz_targets/`: test configurations, token minting, and checks of what the
//! core may answer to a given input.
//!
//! The checks are necessary conditions written independently of the filter's code: a token
//! counts as valid only if jwt-simple verifies it (HS256, the kind's own secret, `exp` present and
//! not past the leeway) for some cookie of that name in the header, however the header is split;
//! a path counts as public only if it still is after percent-decoding, backslash folding,
//! `;`-parameter stripping, slash merging and dot-segment removal. So the judge may accept more
//! than the filter does, never less: any `Err` is a bypass or a contract violation.
//!
//! Every function returns `Err(description)` instead of panicking, so both callers can report it
//! their way (`prop_assert!` / `panic!`).
#![allow(dead_code)]

use etls_auth::config::Config;
use etls_auth::core::decision::{CallKind, Decision, Forward, LocalReply, Outcome, UpstreamReply};
use etls_auth::core::request::RequestView;
use etls_auth::core::upstream_session::can_hold_body;
use etls_auth::error::CallError;
use jwt_simple::prelude::{Duration, HS256Key, HS384Key, HS512Key, JWTClaims, MACLike, VerificationOptions};
use serde_json::{json, Value};

/// The fixed "now" of every check, Unix seconds.
pub const NOW: u64 = 1_790_000_000;
pub const ACCESS_SECRET: &[u8] = b"judge-access-secret-0123456789abcdefghij";
pub const REFRESH_SECRET: &[u8] = b"judge-refresh-secret-0123456789abcdefghi";
pub const ACCESS_PREVIOUS: &[u8] = b"judge-access-previous-0123456789abcdefgh";
pub const REFRESH_PREVIOUS: &[u8] = b"judge-refresh-previous-0123456789abcdefg";
/// Configured nowhere: a token signed with it is forged.
pub const FORGED_SECRET: &[u8] = b"judge-attacker-secret-0123456789abcdefgh";

/// Which secret a generated token is signed with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signer {
    Access,
    Refresh,
    AccessPrevious,
    RefreshPrevious,
    Forged,
}

impl Signer {
    pub const ALL: [Signer; 5] = [Signer::Access, Signer::Refresh, Signer::AccessPrevious, Signer::RefreshPrevious, Signer::Forged];

    pub fn secret(self) -> &'static [u8] {
        match self {
            Signer::Access => ACCESS_SECRET,
            Signer::Refresh => REFRESH_SECRET,
            Signer::AccessPrevious => ACCESS_PREVIOUS,
            Signer::RefreshPrevious => REFRESH_PREVIOUS,
            Signer::Forged => FORGED_SECRET,
        }
    }
}

/// The JWS algorithm a generated token claims.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alg {
    Hs256,
    Hs384,
    Hs512,
    /// `{"alg":"none"}` and an empty signature.
    None,
}

/// Mints a token. `claims` must be a JSON object; `iat`/`exp`/`nbf` are offsets from [`NOW`]
/// in seconds (`None` leaves the claim out).
pub fn mint(signer: Signer, alg: Alg, claims: &Value, iat: Option<i64>, exp: Option<i64>, nbf: Option<i64>) -> String {
    let at = |offset: i64| Duration::from_secs(NOW.saturating_add_signed(offset));
    let c = JWTClaims {
        issued_at: iat.map(at),
        expires_at: exp.map(at),
        invalid_before: nbf.map(at),
        issuer: None,
        subject: None,
        audiences: None,
        jwt_id: None,
        nonce: None,
        custom: claims.clone(),
    };
    let secret = signer.secret();
    let minted = match alg {
        Alg::Hs256 => HS256Key::from_bytes(secret).authenticate(c),
        Alg::Hs384 => HS384Key::from_bytes(secret).authenticate(c),
        Alg::Hs512 => HS512Key::from_bytes(secret).authenticate(c),
        Alg::None => {
            let mut payload = claims.clone();
            if let Some(map) = payload.as_object_mut() {
                for (k, v) in [("iat", iat), ("exp", exp), ("nbf", nbf)] {
                    if let Some(v) = v {
                        map.insert(k.into(), json!(NOW.saturating_add_signed(v)));
                    }
                }
            }
            return format!("{}.{}.", b64(br#"{"alg":"none","typ":"JWT"}"#), b64(payload.to_string().as_bytes()));
        }
    };
    minted.unwrap_or_default()
}

/// A valid access / refresh token for user 42, role "admin", living another `ttl` seconds.
pub fn good_access(ttl: i64) -> String {
    mint(Signer::Access, Alg::Hs256, &json!({"userId": 42, "role": "admin"}), Some(-10), Some(ttl), None)
}

pub fn good_refresh(ttl: i64) -> String {
    mint(Signer::Refresh, Alg::Hs256, &json!({"userId": 42, "role": "admin"}), Some(-10), Some(ttl), None)
}

/// Base64url without padding (RFC 7515).
pub fn b64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [chunk.first().copied().unwrap_or(0), chunk.get(1).copied().unwrap_or(0), chunk.get(2).copied().unwrap_or(0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
        }
    }
    out
}

/// No `Set-Cookie` is ever larger (name, value and attributes; RFC 6265 6.1).
pub const MAX_SET_COOKIE: usize = 4096;

/// The length of a `Set-Cookie` for `name` with a value of `value_len` bytes and the attributes
/// the filter sets (HttpOnly, Path=/, Secure, SameSite, Max-Age, Domain when configured), as the
/// configuration of `setup` sets them.
pub fn set_cookie_len(setup: &Setup, name: &str, value_len: usize, max_age: u64) -> usize {
    let c = &setup.cfg.cookies;
    let same_site = format!("{:?}", c.same_site);
    let mut n = name.len() + 1 + value_len;
    n += "; HttpOnly".len() + "; Path=/".len() + "; SameSite=".len() + same_site.len() + "; Max-Age=".len() + max_age.to_string().len();
    if c.secure {
        n += "; Secure".len();
    }
    if let Some(domain) = &c.domain {
        n += "; Domain=".len() + domain.trim_start_matches('.').len();
    }
    n
}

/// The length of an HS256 token with these custom claims, `iat` = `auth_time` = [`NOW`] (a
/// login), `exp` = `iat + ttl` and, for a refresh token, a 32-character `jti` (what the filter
/// mints).
pub fn minted_len(claims: &Value, ttl: u64, with_jti: bool) -> usize {
    let mut claims = claims.clone();
    if let Some(object) = claims.as_object_mut() {
        object.insert("auth_time".to_owned(), json!(NOW));
    }
    let c = JWTClaims {
        issued_at: Some(Duration::from_secs(NOW)),
        expires_at: Some(Duration::from_secs(NOW + ttl)),
        invalid_before: None,
        issuer: None,
        subject: None,
        audiences: None,
        jwt_id: with_jti.then(|| "0".repeat(32)),
        nonce: None,
        custom: claims,
    };
    HS256Key::from_bytes(ACCESS_SECRET).authenticate(c).map_or(0, |t| t.len())
}

/// The four `Set-Cookie` lengths a successful login would have (upstream access, upstream
/// refresh, ETLS access, ETLS refresh) for these claims and login API tokens. Each lifetime is
/// its ttl, cut at `max_session_s` (the session starts at the login).
pub fn login_set_cookie_lens(setup: &Setup, claims: &Value, upstream_access: &str, upstream_refresh: &str) -> [usize; 4] {
    let cfg = &setup.cfg;
    let n = &cfg.cookies.names;
    let access_s = cfg.access_ttl_s.min(cfg.max_session_s);
    let refresh_s = cfg.refresh_ttl_s.min(cfg.max_session_s);
    [
        set_cookie_len(setup, &n.upstream_access, upstream_access.len(), refresh_s),
        set_cookie_len(setup, &n.upstream_refresh, upstream_refresh.len(), refresh_s),
        set_cookie_len(setup, &n.access, minted_len(claims, access_s, false), access_s),
        set_cookie_len(setup, &n.refresh, minted_len(claims, refresh_s, true), refresh_s),
    ]
}

/// One configuration under test, with what the judge must know about it.
pub struct Setup {
    pub name: &'static str,
    pub cfg: Config,
    /// Whether the `_PREVIOUS` secrets are in the environment.
    pub previous: bool,
}

fn env_with_previous(name: &str) -> Option<Vec<u8>> {
    match name {
        "ETLS_ACCESS" => Some(ACCESS_SECRET.to_vec()),
        "ETLS_REFRESH" => Some(REFRESH_SECRET.to_vec()),
        "ETLS_ACCESS_PREVIOUS" => Some(ACCESS_PREVIOUS.to_vec()),
        "ETLS_REFRESH_PREVIOUS" => Some(REFRESH_PREVIOUS.to_vec()),
        _ => None,
    }
}

fn env_current_only(name: &str) -> Option<Vec<u8>> {
    match name {
        "K_ACCESS" => Some(ACCESS_SECRET.to_vec()),
        "K_REFRESH" => Some(REFRESH_SECRET.to_vec()),
        _ => None,
    }
}

/// Three configurations: defaults with inline rotation; defaults with a refresh cluster; and one
/// with every name changed, no previous secrets, `/` public, no preflight bypass, zero leeway.
pub fn setups() -> Result<Vec<Setup>, String> {
    let parse = |json: Value, env: fn(&str) -> Option<Vec<u8>>| {
        Config::parse(json.to_string().as_bytes(), env).map_err(|e| format!("test config refused: {e}"))
    };
    Ok(vec![
        Setup { name: "inline", cfg: parse(json!({"login_cluster": "login_api"}), env_with_previous)?, previous: true },
        Setup {
            name: "cluster",
            cfg: parse(json!({"login_cluster": "login_api", "refresh_cluster": "etls_refresh"}), env_with_previous)?,
            previous: true,
        },
        Setup {
            name: "custom",
            cfg: parse(
                json!({
                    "login_cluster": "auth", "login_path": "/auth/in", "refresh_path": "/auth/again",
                    "logout_path": "/auth/out", "login_page": "/signin", "public_paths": ["/", "/static/", "/signin"],
                    "bypass_cors_preflight": false, "access_ttl_s": 60, "refresh_ttl_s": 3600, "clock_skew_s": 0,
                    "cookie_same_site": "None", "cookie_domain": "example.test", "access_cookie": "a",
                    "refresh_cookie": "r", "upstream_access_cookie": "ua", "upstream_refresh_cookie": "ur",
                    "user_id_header": "x-user", "role_header": "x-role", "max_login_body_bytes": 300,
                    "access_secret_env": "K_ACCESS", "refresh_secret_env": "K_REFRESH"
                }),
                env_current_only,
            )?,
            previous: false,
        },
    ])
}

/// Every value a cookie called `name` may have in `header`, split as loosely as any parser might:
/// on `;` and `,`, names and values trimmed, surrounding double quotes optional.
pub fn cookie_candidates<'h>(header: &'h str, name: &str) -> Vec<&'h str> {
    let mut out = Vec::new();
    for part in header.split([';', ',']) {
        if let Some((n, v)) = part.split_once('=') {
            if n.trim() == name {
                let v = v.trim();
                out.push(v);
                if let Some(unquoted) = v.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
                    out.push(unquoted);
                }
            }
        }
    }
    out
}

/// The claims of `token` if it verifies as HS256 with `secret`, carries `exp`, and `exp` is not
/// past by more than `skew_s` at `now`. (`nbf` and `iat` in the future are not held against it:
/// the judge is looser than the filter.)
pub fn verified(secret: &[u8], token: &str, skew_s: u64, now: u64) -> Option<Value> {
    let options = VerificationOptions {
        artificial_time: Some(Duration::from_secs(now)),
        time_tolerance: Some(Duration::from_secs(skew_s)),
        accept_future: true,
        ..VerificationOptions::default()
    };
    let claims = HS256Key::from_bytes(secret).verify_token::<Value>(token, Some(options)).ok()?;
    claims.expires_at?;
    Some(claims.custom)
}

/// Which ETLS token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Access,
    Refresh,
}

fn secrets_of(setup: &Setup, kind: Kind) -> Vec<&'static [u8]> {
    let (current, previous) = match kind {
        Kind::Access => (ACCESS_SECRET, ACCESS_PREVIOUS),
        Kind::Refresh => (REFRESH_SECRET, REFRESH_PREVIOUS),
    };
    if setup.previous { vec![current, previous] } else { vec![current] }
}

/// The claims of every valid token of `kind` that `token` could be.
pub fn valid_claims(setup: &Setup, kind: Kind, token: &str, now: u64) -> Vec<Value> {
    secrets_of(setup, kind).into_iter().filter_map(|s| verified(s, token, setup.cfg.clock_skew_s, now)).collect()
}

/// The claims of every valid token of `kind` in a raw `Cookie` header (read lossily: bytes that
/// are not UTF-8 can never be part of a valid token).
pub fn valid_in_header(setup: &Setup, kind: Kind, header: Option<&[u8]>, now: u64) -> Vec<Value> {
    let name = match kind {
        Kind::Access => &setup.cfg.cookies.names.access,
        Kind::Refresh => &setup.cfg.cookies.names.refresh,
    };
    let header = String::from_utf8_lossy(header.unwrap_or_default());
    cookie_candidates(&header, name)
        .into_iter()
        .flat_map(|v| valid_claims(setup, kind, v, now))
        .collect()
}

/// The header text of a claim (`userId`, `role`) as the app must see it.
fn claim_text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Floats are compared with a relative tolerance: serde_json (without `float_roundtrip`) may
/// move the last digit of a float each time it parses one.
fn close(x: f64, y: f64) -> bool {
    x == y || (x - y).abs() <= 1e-12 * x.abs().max(y.abs())
}

/// Two claims equal (null and absent alike), floats within [`close`].
fn same_claim(a: Option<&Value>, b: Option<&Value>) -> bool {
    let a = a.filter(|v| !v.is_null());
    let b = b.filter(|v| !v.is_null());
    match (a, b) {
        (Some(Value::Number(x)), Some(Value::Number(y))) if x.is_f64() || y.is_f64() => {
            x.as_f64().zip(y.as_f64()).is_some_and(|(x, y)| close(x, y))
        }
        (a, b) => a == b,
    }
}

fn path_only(path: &str) -> &str {
    path.split_once('?').map_or(path, |(p, _)| p)
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |j: usize| bytes.get(j).and_then(|b| char::from(*b).to_digit(16));
        match (bytes.get(i), hex(i + 1), hex(i + 2)) {
            (Some(b'%'), Some(hi), Some(lo)) => {
                out.push(u8::try_from(hi * 16 + lo).unwrap_or(0));
                i += 3;
            }
            (Some(b), _, _) => {
                out.push(*b);
                i += 1;
            }
            (None, _, _) => break,
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// What an upstream might make of `path`: percent-decoded three times, `\` as `/`, `;params`
/// cut from each segment, empty segments merged, dot-segments removed (RFC 3986 5.2.4).
pub fn normalise(path: &str) -> String {
    let mut s = path.to_owned();
    for _ in 0..3 {
        s = percent_decode(&s);
    }
    let s = s.replace('\\', "/");
    let mut out: Vec<&str> = Vec::new();
    for seg in s.split('/') {
        let seg = seg.split(';').next().unwrap_or_default();
        match seg {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    format!("/{}", out.join("/"))
}

fn under(public: &[String], path: &str) -> bool {
    public.iter().any(|p| path == p || (p != "/" && path.strip_prefix(p.as_str()).is_some_and(|r| r.starts_with('/'))))
}

/// True when `path` (no query) is under a public path both as sent and once normalised.
pub fn stays_public(public: &[String], path: &str) -> bool {
    under(public, path) && under(public, &normalise(path))
}

fn set_cookies(r: &LocalReply) -> Vec<&str> {
    r.headers().iter().filter(|(n, _)| n.eq_ignore_ascii_case("set-cookie")).map(|(_, v)| v.as_str()).collect()
}

/// Every reply the filter makes itself carries `Cache-Control: no-store`
/// (exactly one such header, so no cache may pick another).
pub fn check_no_store(r: &LocalReply) -> Result<(), String> {
    let values: Vec<&str> = r.headers().iter().filter(|(n, _)| n.eq_ignore_ascii_case("cache-control")).map(|(_, v)| v.as_str()).collect();
    if values == ["no-store"] { Ok(()) } else { Err(format!("local reply {} with cache-control {values:?}", r.status)) }
}

fn header<'r>(r: &'r LocalReply, name: &str) -> Option<&'r str> {
    r.headers().iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
}

/// The name and value of a `Set-Cookie` header value.
pub fn set_cookie_pair(sc: &str) -> (&str, &str) {
    let first = sc.split(';').next().unwrap_or_default();
    first.split_once('=').map_or((first, ""), |(n, v)| (n.trim(), v.trim()))
}

fn check_cleared(setup: &Setup, r: &LocalReply) -> Result<(), String> {
    let got = set_cookies(r);
    let want: Vec<&str> = setup.cfg.cookies.clear_all().iter().map(String::as_str).collect();
    if got != want {
        return Err(format!("a deny must clear the four cookies: got {got:?}"));
    }
    for sc in got {
        let lower = sc.to_ascii_lowercase();
        if !set_cookie_pair(sc).1.is_empty() || !lower.contains("max-age=0") || !lower.contains("httponly") || !lower.contains("path=/") {
            return Err(format!("not a clearing cookie: {sc:?}"));
        }
    }
    Ok(())
}

/// A deny (401 JSON or 302 to the login page), with the four clearing cookies.
pub fn check_deny(setup: &Setup, req: &RequestView, r: &LocalReply) -> Result<(), String> {
    check_no_store(r)?;
    check_cleared(setup, r)?;
    match r.status {
        401 => {
            if r.body != br#"{"error":"Unauthorized"}"# {
                return Err(format!("401 body {:?}", String::from_utf8_lossy(&r.body)));
            }
        }
        302 => {
            let html = req.accept.as_deref().is_some_and(|a| a.to_ascii_lowercase().contains("text/html"));
            if !html {
                return Err(format!("302 without text/html in Accept {:?}", req.accept));
            }
            let location = header(r, "location").ok_or("302 without Location")?;
            let next = location
                .strip_prefix(setup.cfg.login_page.as_str())
                .and_then(|rest| rest.strip_prefix("?next=").or_else(|| rest.split_once("&next=").map(|(_, n)| n)))
                .ok_or_else(|| format!("Location {location:?} is not the login page with next"))?;
            if next.bytes().any(|b| !(b.is_ascii_alphanumeric() || b"-._~%".contains(&b))) {
                return Err(format!("next is not percent-encoded: {location:?}"));
            }
            let decoded = percent_decode(next);
            if !decoded.starts_with('/') || decoded.starts_with("//") || decoded.starts_with("/\\") {
                return Err(format!("next points off-site: {location:?}"));
            }
            if location.bytes().any(|b| b < 0x21 || b == 0x7f) {
                return Err(format!("Location has control bytes or spaces: {location:?}"));
            }
        }
        s => return Err(format!("a deny must be 401 or 302, got {s}")),
    }
    Ok(())
}

/// Request header edits as the core returns them: a name and bytes to set, or `None` to remove.
type Edits = [etls_auth::core::decision::HeaderEdit];

fn edits_strip_or_set_identity(setup: &Setup, edits: &Edits) -> Result<(), String> {
    let ids = &setup.cfg.identity_headers;
    for name in [&ids.user_id, &ids.role] {
        if !edits.iter().any(|(n, _)| n.eq_ignore_ascii_case(name)) {
            return Err(format!("forwarded without touching identity header {name}: {edits:?}"));
        }
    }
    Ok(())
}

/// The identity published as filter state is the one in the identity headers, and only a
/// verified session (valid or rotated) publishes one.
fn published_matches_headers(setup: &Setup, f: &Forward) -> Result<(), String> {
    let ids = &setup.cfg.identity_headers;
    let verified = matches!(f.outcome, Outcome::SessionValid | Outcome::RotatedInline | Outcome::RotatedByCluster);
    match &f.identity {
        None if verified => Err(format!("{} forwarded without publishing its identity", f.outcome.as_str())),
        None => Ok(()),
        Some(_) if !verified => Err(format!("{} published an identity", f.outcome.as_str())),
        Some(p) => {
            let user = edit(&f.header_edits, &ids.user_id).flatten();
            let role = edit(&f.header_edits, &ids.role).flatten();
            if user.as_deref() == Some(&*p.user_id) && role.as_deref() == p.role.as_deref() {
                Ok(())
            } else {
                Err(format!("published {p:?}, headers say {user:?}/{role:?}"))
            }
        }
    }
}

/// The last edit of header `name`: `Some(None)` removes it, `Some(Some(bytes))` sets it.
fn edit_bytes<'e>(edits: &'e Edits, name: &str) -> Option<&'e Option<std::rc::Rc<[u8]>>> {
    edits.iter().rev().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v)
}

/// [`edit_bytes`] as text (identity headers are text; invalid UTF-8 would show as U+FFFD).
fn edit(edits: &Edits, name: &str) -> Option<Option<String>> {
    edit_bytes(edits, name).map(|v| v.as_ref().map(|b| String::from_utf8_lossy(b).into_owned()))
}

/// The Cookie header the app gets after a rotation is the one the client sent
/// (`sent`), split on `;`, with every segment whose name (text before the first `=`, trimmed) is
/// one of `renewed` set to `name=new value` (whitespace around it may stay), every other segment
/// byte for byte the same and in the same place, and the renewed cookies the client did not send
/// added at the end, in order.
pub fn check_cookie_rewrite(sent: &[u8], forwarded: &[u8], renewed: &[(&str, &str)]) -> Result<(), String> {
    let show = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let ours = |seg: &[u8]| -> Option<usize> {
        let text = String::from_utf8_lossy(seg);
        let (name, _) = text.split_once('=')?;
        renewed.iter().position(|(n, _)| *n == name.trim())
    };
    let before: Vec<&[u8]> = sent.split(|b| *b == b';').collect();
    let after: Vec<&[u8]> = forwarded.split(|b| *b == b';').collect();
    if after.len() < before.len() {
        return Err(format!("forwarded Cookie {:?} has fewer segments than {:?}", show(forwarded), show(sent)));
    }
    let mut present = vec![false; renewed.len()];
    let mut extra: Vec<String> = Vec::new();
    for (i, (old, new)) in before.iter().zip(&after).enumerate() {
        match ours(old) {
            Some(k) => {
                let (name, value) = renewed[k];
                if String::from_utf8_lossy(new).trim() != format!("{name}={value}") {
                    return Err(format!("copy {i} of {name} became {:?}, not the new value", show(new)));
                }
                present[k] = true;
            }
            // The client's header ended in whitespace (or was empty): the first added cookie may
            // share that last segment.
            None if i + 1 == before.len() && old.iter().all(u8::is_ascii_whitespace) && new.starts_with(old) => {
                let added = String::from_utf8_lossy(&new[old.len()..]).trim().to_owned();
                if !added.is_empty() {
                    extra.push(added);
                }
            }
            None if old != new => {
                return Err(format!("segment {i} {:?} of another cookie became {:?}", show(old), show(new)));
            }
            None => {}
        }
    }
    extra.extend(after[before.len()..].iter().map(|s| String::from_utf8_lossy(s).trim().to_owned()));
    let want: Vec<String> = renewed.iter().zip(&present).filter(|(_, p)| !**p).map(|((n, v), _)| format!("{n}={v}")).collect();
    if extra != want {
        return Err(format!("added {extra:?} to the Cookie header, want {want:?}"));
    }
    Ok(())
}

/// Identity headers set exactly from one of `claims`.
fn identity_from(setup: &Setup, edits: &Edits, claims: &[Value]) -> Result<(), String> {
    let ids = &setup.cfg.identity_headers;
    let user = edit(edits, &ids.user_id).flatten();
    let role = edit(edits, &ids.role).flatten();
    let same_text = |a: &Option<String>, b: Option<String>| match (a, b) {
        (Some(a), Some(b)) => a == &b || a.parse::<f64>().ok().zip(b.parse::<f64>().ok()).is_some_and(|(x, y)| close(x, y)),
        (None, None) => true,
        _ => false,
    };
    let matches = claims.iter().any(|c| user.is_some() && same_text(&user, claim_text(c.get("userId"))) && same_text(&role, claim_text(c.get("role"))));
    if matches { Ok(()) } else { Err(format!("identity headers {user:?}/{role:?} match no valid token {claims:?}")) }
}

/// New ETLS tokens in `set_cookies` (exactly access then refresh): both verify with the
/// *current* secrets only and carry the identity of one of `claims`. Returns them.
fn check_new_pair<'s>(setup: &Setup, set_cookies: &[&'s str], claims: &[Value], now: u64) -> Result<(&'s str, &'s str), String> {
    let names = &setup.cfg.cookies.names;
    if let Some(big) = set_cookies.iter().find(|c| c.len() > MAX_SET_COOKIE) {
        return Err(format!("a new Set-Cookie of {} bytes, over {MAX_SET_COOKIE}", big.len()));
    }
    let [a, r] = set_cookies else { return Err(format!("want two new cookies, got {set_cookies:?}")) };
    let (an, av) = set_cookie_pair(a);
    let (rn, rv) = set_cookie_pair(r);
    if an != names.access || rn != names.refresh {
        return Err(format!("new cookies named {an}/{rn}"));
    }
    let skew = setup.cfg.clock_skew_s;
    let ac = verified(ACCESS_SECRET, av, skew, now).ok_or("new access token does not verify with the current access secret")?;
    let rc = verified(REFRESH_SECRET, rv, skew, now).ok_or("new refresh token does not verify with the current refresh secret")?;
    let same = |c: &Value, n: &Value| same_claim(c.get("userId"), n.get("userId")) && same_claim(c.get("role"), n.get("role"));
    if !claims.iter().any(|c| same(c, &ac) && same(c, &rc)) {
        return Err(format!("new tokens carry {ac:?}/{rc:?}, not the identity of {claims:?}"));
    }
    Ok((av, rv))
}

fn is_route(setup: &Setup, path: &str) -> bool {
    let r = &setup.cfg.routes;
    path == r.login || path == r.refresh || path == r.logout
}

/// What `core::decide` may answer to `req` at `now`.
pub fn check_decide(setup: &Setup, req: &RequestView, now: u64, d: &Decision) -> Result<(), String> {
    let cfg = &setup.cfg;
    let path = path_only(&req.path);
    let access_ok = valid_in_header(setup, Kind::Access, req.cookie.as_deref(), now);
    let refresh_ok = valid_in_header(setup, Kind::Refresh, req.cookie.as_deref(), now);
    // Not a route: the filter must answer with a deny if it answers locally at all.
    let protected = !is_route(setup, path);
    let preflight = cfg.bypass_cors_preflight && req.method == "OPTIONS" && req.has_origin && req.has_cors_request_method;
    match d {
        Decision::Forward(f) => {
            edits_strip_or_set_identity(setup, &f.header_edits)?;
            published_matches_headers(setup, f)?;
            match f.outcome {
                Outcome::SessionValid => {
                    if is_route(setup, path) || preflight {
                        return Err(format!("SessionValid on route or preflight {path:?}"));
                    }
                    if access_ok.is_empty() {
                        return Err("forwarded as SessionValid without a valid access token".into());
                    }
                    identity_from(setup, &f.header_edits, &access_ok)?;
                    if !f.set_cookies.is_empty() {
                        return Err("SessionValid sets cookies".into());
                    }
                }
                Outcome::RotatedInline => {
                    if refresh_ok.is_empty() {
                        return Err("rotated without a valid refresh token".into());
                    }
                    if cfg.refresh.is_some() && can_hold_body(cfg, req) {
                        return Err("rotated inline although a refresh cluster is configured and the request may wait".into());
                    }
                    if is_route(setup, path) || preflight {
                        return Err(format!("rotated on route or preflight {path:?}"));
                    }
                    let scs: Vec<&str> = f.set_cookies.iter().map(String::as_str).collect();
                    let (a, r) = check_new_pair(setup, &scs, &refresh_ok, now)?;
                    identity_from(setup, &f.header_edits, &refresh_ok)?;
                    let fwd = edit_bytes(&f.header_edits, "cookie").cloned().flatten().ok_or("rotation without a Cookie edit")?;
                    let names = &cfg.cookies.names;
                    let sent = req.cookie.as_deref().unwrap_or_default();
                    check_cookie_rewrite(sent, &fwd, &[(&names.access, a), (&names.refresh, r)])?;
                }
                Outcome::Public => {
                    if !stays_public(&cfg.public_paths, path) || is_route(setup, path) {
                        return Err(format!("Public for {path:?}, which is not public once normalised ({:?})", normalise(path)));
                    }
                    no_identity(setup, &f.header_edits, &f.set_cookies)?;
                }
                Outcome::Preflight => {
                    if !preflight {
                        return Err(format!("Preflight for {} with origin {} acrm {}", req.method, req.has_origin, req.has_cors_request_method));
                    }
                    no_identity(setup, &f.header_edits, &f.set_cookies)?;
                }
                other => return Err(format!("decide forwarded with outcome {other:?}")),
            }
            Ok(())
        }
        Decision::Call(call) => {
            let upstream = cfg.refresh.as_ref().ok_or("a call without a refresh cluster")?;
            if call.kind != CallKind::Refresh || call.cluster != upstream.cluster {
                return Err(format!("decide called {:?} on {}", call.kind, call.cluster));
            }
            if refresh_ok.is_empty() || is_route(setup, path) || preflight {
                return Err(format!("refresh call for {path:?} without a valid refresh token on a protected path"));
            }
            // Held while the call is out, a large body still arriving would be buffered (413 past Envoy's limit).
            if !can_hold_body(cfg, req) {
                return Err(format!("refresh call for {path:?} while its body is still arriving"));
            }
            Ok(())
        }
        Decision::ReadBody { header_edits, hold_headers } => {
            if path != cfg.routes.login || req.method != "POST" || req.end_of_stream || preflight || !is_json_type(req) {
                return Err(format!("ReadBody for {} {path:?}", req.method));
            }
            if is_cross_origin(req) == Some(true) {
                return Err("ReadBody for a cross-origin login".into());
            }
            if !hold_headers {
                return Err("ReadBody from decide must ask to hold the login's headers".to_owned());
            }
            // The login request's headers may still go on (no flag) while its body is read: no identity may pass.
            no_identity(setup, header_edits, &[])
        }
        Decision::Join(rotation) => {
            if cfg.login_refresh_path.is_none() {
                return Err("joined a login API refresh without login_refresh_path".into());
            }
            if refresh_ok.is_empty() || preflight || (is_route(setup, path) && path != cfg.routes.refresh) {
                return Err(format!("login API refresh for {path:?} without a valid refresh token on a protected path"));
            }
            if rotation.request != *req {
                return Err("joined with another request".into());
            }
            if path == cfg.routes.refresh && is_cross_origin(req) == Some(true) {
                return Err("joined a login API refresh for a cross-origin refresh route request".into());
            }
            Ok(())
        }
        Decision::Respond(r) => check_decide_reply(setup, req, path, protected, &refresh_ok, now, r),
    }
}

/// Cross-origin by a simpler reading of the rule, for setups without `trusted_origins`:
/// `Some(true)` certainly refused, `Some(false)` certainly allowed, `None` when this reading cannot
/// tell (an Origin that differs from `http(s)://<authority>` only by a default port, say).
fn is_cross_origin(req: &RequestView) -> Option<bool> {
    let site = req.sec_fetch_site.as_deref().filter(|s| !s.is_empty());
    let origin = req.origin.as_deref().filter(|o| !o.is_empty());
    match (site, origin) {
        (Some(site), _) => Some(site != b"same-origin" && site != b"none"),
        (None, None) => Some(false),
        (None, Some(origin)) => {
            let authority = req.authority.as_deref().unwrap_or_default();
            let same = !authority.is_empty()
                && [&b"http://"[..], b"https://"].iter().any(|scheme| {
                    origin.len() == scheme.len() + authority.len()
                        && origin[..scheme.len()].eq_ignore_ascii_case(scheme)
                        && origin[scheme.len()..].eq_ignore_ascii_case(authority)
                });
            if same { Some(false) } else if origin.contains(&b':') && authority.contains(&b':') || origin.ends_with(b":443") || origin.ends_with(b":80") || authority.ends_with(b":443") || authority.ends_with(b":80") { None } else { Some(true) }
        }
    }
}

/// Login: the media type, before any `;` parameters, is `application/json` in any case.
fn is_json_type(req: &RequestView) -> bool {
    let Some(ct) = req.content_type.as_deref() else { return false };
    let media = ct.split(';').next().unwrap_or_default();
    media.trim_matches([' ', '\t']).eq_ignore_ascii_case("application/json")
}

fn no_identity(setup: &Setup, edits: &Edits, set_cookies: &[String]) -> Result<(), String> {
    let ids = &setup.cfg.identity_headers;
    for name in [&ids.user_id, &ids.role] {
        if edit(edits, name) != Some(None) {
            return Err(format!("unchecked request keeps or gets identity header {name}: {edits:?}"));
        }
    }
    if set_cookies.is_empty() { Ok(()) } else { Err(format!("unchecked request sets cookies {set_cookies:?}")) }
}

fn check_decide_reply(setup: &Setup, req: &RequestView, path: &str, protected: bool, refresh_ok: &[Value], now: u64, r: &LocalReply) -> Result<(), String> {
    let routes = &setup.cfg.routes;
    check_no_store(r)?;
    let scs = set_cookies(r);
    let body = String::from_utf8_lossy(&r.body);
    if scs.iter().any(|c| c.contains(['\r', '\n'])) || r.headers().iter().any(|(n, v)| n.contains(['\r', '\n', ':']) || v.contains(['\r', '\n'])) {
        return Err(format!("header injection in {:?}", r.headers()));
    }
    if protected {
        return check_deny(setup, req, r);
    }
    let refused = is_cross_origin(req);
    if refused == Some(true) && req.method == "POST" && r.status != 403 {
        return Err(format!("cross-origin {} to {path} answered {}, not 403", req.method, r.status));
    }
    match r.status {
        403 => {
            if req.method != "POST" || refused == Some(false) || !scs.is_empty() || body != r#"{"error":"Cross-origin request refused"}"# {
                return Err(format!("403 for {} {path} (cross-origin by the simple rule: {refused:?}): {body} {scs:?}", req.method));
            }
        }
        405 => {
            if req.method == "POST" || header(r, "allow") != Some("POST") {
                return Err(format!("405 for {} {path}", req.method));
            }
            if !scs.is_empty() {
                return Err("405 sets cookies".into());
            }
        }
        200 if path == routes.logout => {
            if req.method != "POST" || body != r#"{"message":"Logged out"}"# {
                return Err(format!("logout: {} {body}", req.method));
            }
            check_cleared(setup, r)?;
        }
        200 if path == routes.refresh => {
            if req.method != "POST" || body != r#"{"message":"Tokens refreshed"}"# || refresh_ok.is_empty() {
                return Err(format!("refresh route 200 for {} without a valid refresh token", req.method));
            }
            check_new_pair(setup, &scs, refresh_ok, now)?;
        }
        401 if path == routes.refresh => {
            let ok = body == r#"{"error":"No refresh token provided"}"# || body == r#"{"error":"Invalid refresh token"}"#;
            if !ok || !scs.is_empty() {
                return Err(format!("refresh route 401: {body} {scs:?}"));
            }
        }
        415 if path == routes.login => {
            if req.method != "POST" || is_json_type(req) || !scs.is_empty() {
                return Err(format!("415 for {} with content-type {:?}", req.method, req.content_type));
            }
            if body != r#"{"error":"Content-Type must be application/json"}"# {
                return Err(format!("415 body {body}"));
            }
        }
        400 | 413 if path == routes.login => {
            if req.method != "POST" || !scs.is_empty() || !is_json_type(req) {
                return Err(format!("login route {} for {}", r.status, req.method));
            }
            if r.status == 400 && !req.end_of_stream {
                return Err("400 before the body was read".into());
            }
        }
        s => return Err(format!("decide answered {s} on {} {path:?}: {body}", req.method)),
    }
    Ok(())
}

fn status_class_ok(upstream: &Result<UpstreamReply, CallError>, got: u32) -> bool {
    match upstream {
        Err(_) => got == 502 || got == 504,
        Ok(reply) => match reply.status {
            200..=299 => got == 200 || got == 502 || got == 500,
            429 => got == 429,
            400..=499 => got == 401,
            // 5xx gives 502; Envoy's own timeout answer (a 504) may give 504.
            504 => got == 502 || got == 504,
            _ => got == 502,
        },
    }
}

/// What `core::on_reply(Login, ..)` may answer to the login API's `upstream` answer.
pub fn check_login_reply(setup: &Setup, upstream: &Result<UpstreamReply, CallError>, d: &Decision) -> Result<(), String> {
    let Decision::Respond(r) = d else { return Err(format!("login reply gave {d:?}")) };
    check_no_store(r)?;
    if !status_class_ok(upstream, r.status) {
        return Err(format!("login API {:?} became {}", upstream.as_ref().map(|u| u.status), r.status));
    }
    if r.headers().iter().any(|(n, v)| n.contains(['\r', '\n']) || v.contains(['\r', '\n'])) {
        return Err(format!("header injection: {:?}", r.headers()));
    }
    let scs = set_cookies(r);
    if r.status != 200 {
        return if scs.is_empty() { Ok(()) } else { Err(format!("failed login {} sets cookies {scs:?}", r.status)) };
    }
    let Ok(reply) = upstream else { return Err("200 without an answer".into()) };
    let sent: Value = serde_json::from_slice(&reply.body).map_err(|_| "200 for a body that is not JSON")?;
    let user = sent.get("userData").ok_or("200 without userData")?;
    let names = &setup.cfg.cookies.names;
    if let Some(big) = scs.iter().find(|c| c.len() > MAX_SET_COOKIE) {
        return Err(format!("a Set-Cookie of {} bytes, over {MAX_SET_COOKIE}", big.len()));
    }
    let [ua, ur, a, rf] = scs.as_slice() else { return Err(format!("login sets {} cookies", scs.len())) };
    let (uan, uav) = set_cookie_pair(ua);
    let (urn, urv) = set_cookie_pair(ur);
    if uan != names.upstream_access || urn != names.upstream_refresh {
        return Err(format!("upstream cookies named {uan}/{urn}"));
    }
    if Some(uav) != sent.get("accessToken").and_then(Value::as_str) || Some(urv) != sent.get("refreshToken").and_then(Value::as_str) {
        return Err("the login API's tokens were not passed on verbatim".into());
    }
    let identity = json!({"userId": user.get("id"), "role": user.get("role")});
    check_new_pair(setup, &[a, rf], &[identity], NOW)?;
    let answer: Value = serde_json::from_slice(&r.body).map_err(|_| "login reply body is not JSON")?;
    if answer != json!({"message": "Login successful", "userData": user}) {
        return Err(format!("login reply body {answer}"));
    }
    Ok(())
}

/// What `core::on_reply(Refresh, ..)` may answer for `req` to the refresh cluster's `upstream` answer.
pub fn check_refresh_reply(setup: &Setup, req: &RequestView, upstream: &Result<UpstreamReply, CallError>, d: &Decision) -> Result<(), String> {
    match d {
        Decision::Respond(r) => check_deny(setup, req, r),
        Decision::Forward(f) => {
            published_matches_headers(setup, f)?;
            let Ok(reply) = upstream else { return Err("forwarded without a refresh answer".into()) };
            if f.outcome != Outcome::RotatedByCluster || reply.status != 200 {
                return Err(format!("forwarded {:?} for a {} answer", f.outcome, reply.status));
            }
            let names = &setup.cfg.cookies.names;
            let given: Vec<(&str, &str)> = reply
                .headers
                .iter()
                .filter(|(n, _)| n.eq_ignore_ascii_case("set-cookie"))
                .filter_map(|(_, v)| std::str::from_utf8(v).ok())
                .map(set_cookie_pair)
                .collect();
            let valid = |kind: Kind, name: &str| -> Vec<Value> {
                given.iter().filter(|(n, _)| *n == name).flat_map(|(_, v)| valid_claims(setup, kind, v, NOW)).collect()
            };
            let access = valid(Kind::Access, &names.access);
            if access.is_empty() || valid(Kind::Refresh, &names.refresh).is_empty() {
                return Err("forwarded although the answer had no valid token pair".into());
            }
            identity_from(setup, &f.header_edits, &access)?;
            for sc in &f.set_cookies {
                if !given.contains(&set_cookie_pair(sc)) {
                    return Err(format!("Set-Cookie {sc:?} is not one the refresh cluster issued"));
                }
            }
            let [a, r] = f.set_cookies.as_slice() else {
                return Err(format!("{} Set-Cookie after a cluster rotation", f.set_cookies.len()));
            };
            let fwd = edit_bytes(&f.header_edits, "cookie").cloned().flatten().ok_or("rotation without a Cookie edit")?;
            let renewed = [(names.access.as_str(), set_cookie_pair(a).1), (names.refresh.as_str(), set_cookie_pair(r).1)];
            check_cookie_rewrite(req.cookie.as_deref().unwrap_or_default(), &fwd, &renewed)
        }
        other => Err(format!("refresh reply gave {other:?}")),
    }
}

/// What `core::login::on_body` may answer to `body`.
pub fn check_on_body(setup: &Setup, body: &[u8], d: &Decision) -> Result<(), String> {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let field = |k: &str| parsed.as_ref().and_then(|v| v.get(k)).and_then(Value::as_str).map(str::to_owned);
    let creds = match (field("email"), field("password")) {
        (Some(e), Some(p)) if body.len() <= setup.cfg.max_login_body_bytes => Some((e, p)),
        _ => None,
    };
    match d {
        Decision::Call(call) => {
            let (email, password) = creds.ok_or("called the login API for a body without credentials")?;
            let sent: Value = serde_json::from_slice(call.body.as_deref().unwrap_or_default()).map_err(|_| "login call body is not JSON")?;
            if call.kind != CallKind::Login || call.cluster != setup.cfg.login.cluster {
                return Err(format!("login body gave call {:?} to {}", call.kind, call.cluster));
            }
            if sent != json!({"email": email, "password": password}) {
                return Err(format!("login call body {sent} is not exactly email and password"));
            }
            Ok(())
        }
        Decision::Respond(r) => {
            check_no_store(r)?;
            let want = if body.len() > setup.cfg.max_login_body_bytes { 413 } else { 400 };
            if r.status != want || !set_cookies(r).is_empty() {
                return Err(format!("login body answered {} (want {want})", r.status));
            }
            // A body with two strings may still be refused (duplicate keys); anything else must be.
            Ok(())
        }
        other => Err(format!("login body gave {other:?}")),
    }
}
