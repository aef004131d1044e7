//! Property tests (issue 6, hardening), run by `cargo test`: the core never panics on any input,
//! and it lets a protected request through only with a valid access token or rotates only with a
//! valid refresh token. Inputs: arbitrary methods, paths (with dot-segment and encoding tricks),
//! `Accept`, `Cookie` headers (real tokens, real tokens mutated, forged, expired, wrong kind,
//! wrong alg, random and non-UTF-8 bytes), login bodies, answers of the login API and of the
//! refresh cluster, and plugin configurations (arbitrary bytes, arbitrary JSON, and objects of
//! the real keys with random values).
//!
//! The judge (`fuzz/common/judge.rs`, shared with the cargo-fuzz targets) checks each decision
//! against conditions written independently of the filter's code; see its module comment.
//! Case counts: `PROPTEST_CASES` overrides the per-test defaults below.

// Test code: unwrap and indexing are fine here (the lints guard src/).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

#[path = "../fuzz/common/judge.rs"]
mod judge;

use etls_auth::config::Config;
use etls_auth::core::decision::{CallKind, Decision, UpstreamReply};
use etls_auth::core::request::RequestView;
use etls_auth::core::{self, login};
use etls_auth::error::CallError;
use judge::{Alg, Setup, Signer, NOW};
use proptest::prelude::*;
use proptest::sample::Index;
use serde_json::{json, Value};

fn cases(default: u32) -> ProptestConfig {
    let n = std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(default);
    ProptestConfig { cases: n, failure_persistence: None, ..ProptestConfig::default() }
}

fn setups() -> Vec<Setup> {
    judge::setups().unwrap()
}

// --- tokens ---------------------------------------------------------------------------------

/// How a generated token is made before mutation.
#[derive(Debug, Clone)]
struct TokSpec {
    signer: Signer,
    alg: Alg,
    user_id: Value,
    role: Option<Value>,
    iat: Option<i64>,
    exp: Option<i64>,
    nbf: Option<i64>,
    extra: Option<(String, Value)>,
}

impl TokSpec {
    fn mint(&self) -> String {
        let mut claims = json!({ "userId": self.user_id });
        if let Some(role) = &self.role {
            claims["role"] = role.clone();
        }
        if let Some((k, v)) = &self.extra {
            if k != "userId" && k != "role" && k != "exp" && k != "iat" && k != "nbf" {
                claims[k.as_str()] = v.clone();
            }
        }
        judge::mint(self.signer, self.alg, &claims, self.iat, self.exp, self.nbf)
    }
}

fn json_scalar() -> BoxedStrategy<Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (-1e300f64..1e300).prop_map(|f| json!(f)),
        ".{0,12}".prop_map(Value::from),
        "[\\x00-\\x1f\\x7f]{1,3}".prop_map(Value::from),
    ]
    .boxed()
}

fn json_any() -> BoxedStrategy<Value> {
    json_scalar().prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map(".{0,6}", inner, 0..4).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
    .boxed()
}

fn user_id() -> BoxedStrategy<Value> {
    prop_oneof![
        4 => (0i64..100_000).prop_map(Value::from),
        3 => "[a-z0-9-]{1,12}".prop_map(Value::from),
        1 => json_any(),
    ]
    .boxed()
}

fn time_offset() -> BoxedStrategy<Option<i64>> {
    prop_oneof![
        Just(None),
        (-1_000_000i64..1_000_000).prop_map(Some),
        (-10i64..10).prop_map(Some), // around the leeway
        any::<i32>().prop_map(|v| Some(i64::from(v))),
    ]
    .boxed()
}

fn tok_spec() -> BoxedStrategy<TokSpec> {
    (
        prop::sample::select(Signer::ALL.to_vec()),
        prop_oneof![8 => Just(Alg::Hs256), 1 => Just(Alg::Hs384), 1 => Just(Alg::Hs512), 1 => Just(Alg::None)],
        user_id(),
        prop_oneof![Just(None), Just(Some(json!("admin"))), json_scalar().prop_map(Some)],
        prop_oneof![3 => Just(Some(-10i64)), 1 => time_offset()],
        prop_oneof![3 => (1i64..100_000).prop_map(Some), 2 => time_offset()],
        prop_oneof![4 => Just(None), 1 => time_offset()],
        prop::option::of(("[a-z]{1,6}", json_scalar())),
    )
        .prop_map(|(signer, alg, user_id, role, iat, exp, nbf, extra)| TokSpec { signer, alg, user_id, role, iat, exp, nbf, extra })
    .boxed()
}

/// Ways to damage a real token.
#[derive(Debug, Clone)]
enum Mutation {
    None,
    Replace(Index, char),
    Delete(Index),
    Insert(Index, char),
    Truncate(Index),
    /// This token's header and payload with another token's signature.
    Splice(TokSpec),
    /// The header replaced (signature kept).
    Header(String),
    Append(String),
    Quote,
}

fn mutation() -> BoxedStrategy<Mutation> {
    let b64char = prop::sample::select("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=+/ ;,\"\\".chars().collect::<Vec<_>>());
    prop_oneof![
        6 => Just(Mutation::None),
        2 => (any::<Index>(), b64char.clone()).prop_map(|(i, c)| Mutation::Replace(i, c)),
        1 => any::<Index>().prop_map(Mutation::Delete),
        1 => (any::<Index>(), b64char).prop_map(|(i, c)| Mutation::Insert(i, c)),
        1 => any::<Index>().prop_map(Mutation::Truncate),
        1 => tok_spec().prop_map(Mutation::Splice),
        1 => prop_oneof![
            Just(r#"{"alg":"none","typ":"JWT"}"#.to_owned()),
            Just(r#"{"alg":"HS256","typ":"JWT","crit":["x"]}"#.to_owned()),
            Just(r#"{"alg":"hs256"}"#.to_owned()),
            Just(r#"{"alg":"HS256","kid":"../../etc/passwd"}"#.to_owned()),
            ".{0,20}",
        ]
        .prop_map(Mutation::Header),
        1 => prop_oneof![Just(".".to_owned()), Just("..".to_owned()), Just("=".to_owned()), ".{1,8}"].prop_map(Mutation::Append),
        1 => Just(Mutation::Quote),
    ]
    .boxed()
}

fn apply(token: String, m: &Mutation) -> String {
    let mut chars: Vec<char> = token.chars().collect();
    match m {
        Mutation::None => return token,
        Mutation::Replace(i, c) if !chars.is_empty() => {
            let i = i.index(chars.len());
            chars[i] = *c;
        }
        Mutation::Delete(i) if !chars.is_empty() => {
            chars.remove(i.index(chars.len()));
        }
        Mutation::Insert(i, c) => chars.insert(i.index(chars.len() + 1), *c),
        Mutation::Truncate(i) => chars.truncate(i.index(chars.len() + 1)),
        Mutation::Splice(other) => {
            let other = other.mint();
            let sig = other.rsplit('.').next().unwrap_or_default();
            let head = token.rsplit_once('.').map_or(token.as_str(), |(h, _)| h);
            return format!("{head}.{sig}");
        }
        Mutation::Header(h) => {
            let rest = token.split_once('.').map_or("", |(_, r)| r);
            return format!("{}.{rest}", judge::b64(h.as_bytes()));
        }
        Mutation::Append(s) => return format!("{token}{s}"),
        Mutation::Quote => return format!("\"{token}\""),
        _ => {}
    }
    chars.into_iter().collect()
}

fn token() -> BoxedStrategy<String> {
    prop_oneof![
        // Real, valid tokens of each kind, often unmutated, so the positive paths are exercised too.
        3 => (prop_oneof![Just(Signer::Access), Just(Signer::Refresh)], mutation())
            .prop_map(|(s, m)| apply(if s == Signer::Access { judge::good_access(600) } else { judge::good_refresh(600) }, &m)),
        4 => (tok_spec(), mutation()).prop_map(|(spec, m)| apply(spec.mint(), &m)),
        1 => "[A-Za-z0-9_.=-]{0,60}",
        1 => ".{0,40}",
    ]
    .boxed()
}

// --- requests -------------------------------------------------------------------------------

fn lossy(bytes: Vec<u8>) -> String {
    String::from_utf8_lossy(&bytes).into_owned()
}

/// A cookie name: ours (as configured in any setup), look-alikes, or random.
fn cookie_name() -> BoxedStrategy<String> {
    prop_oneof![
        3 => prop::sample::select(vec!["accessTokenEtls", "refreshTokenEtls", "a", "r"]).prop_map(str::to_owned),
        1 => prop::sample::select(vec![
            "accessToken", "refreshToken", "ua", "ur", "AccessTokenEtls", " accessTokenEtls", "accessTokenEtls ",
            "refreshTokenEtls\t", "accessTokenEtlsX", "xrefreshTokenEtls", "A", "R", "", "$a",
        ])
        .prop_map(str::to_owned),
        1 => "[!-~]{1,10}",
    ]
    .boxed()
}

fn cookie_pair() -> BoxedStrategy<String> {
    (cookie_name(), prop_oneof![4 => token(), 1 => Just(String::new()), 1 => ".{0,16}"]).prop_map(|(n, v)| format!("{n}={v}"))
    .boxed()
}

/// One segment of a Cookie header that is not a `name=value` cookie, or not UTF-8.
fn odd_segment() -> BoxedStrategy<Vec<u8>> {
    prop_oneof![
        prop::sample::select(vec![&b"foo"[..], b"=bar", b"", b"  ", b"\t", b"a=\xff\xfe", b"\x80", b"n=\"q\"", b"refreshTokenEtls=\xff",
                                  b" accessTokenEtls = \xc3\x28 ", b"\xa0accessTokenEtls=x"]).prop_map(<[u8]>::to_vec),
        prop::collection::vec(any::<u8>().prop_filter("no ;", |b| *b != b';'), 0..12),
    ]
    .boxed()
}

fn cookie_header() -> BoxedStrategy<Option<Vec<u8>>> {
    prop_oneof![
        1 => Just(None),
        6 => (prop::collection::vec(cookie_pair(), 0..5), prop::sample::select(vec!["; ", ";", " ; ", ", ", ";;", "\t;"]))
            .prop_map(|(pairs, sep)| Some(pairs.join(sep).into_bytes())),
        // Real pairs mixed with nameless, non-UTF-8 and empty segments, oddly spaced.
        3 => prop::collection::vec(prop_oneof![2 => cookie_pair().prop_map(String::into_bytes), 1 => odd_segment()], 0..7)
            .prop_map(|segments| Some(segments.join(&b';'))),
        1 => prop::collection::vec(any::<u8>(), 0..300).prop_map(Some),
        1 => prop::collection::vec(any::<u8>(), 0..300).prop_map(|b| Some(lossy(b).into_bytes())),
        // Large: a valid pair buried in many junk cookies.
        1 => (0usize..400, token()).prop_map(|(n, t)| Some(format!("{}accessTokenEtls={t}", "j=xxxxxxxxxxxxxxxxxxxxxxxx; ".repeat(n)).into_bytes())),
    ]
    .boxed()
}

fn path() -> BoxedStrategy<String> {
    let special = prop::sample::select(vec![
        "/api/auth/login", "/api/auth/refreshtoken", "/api/auth/logout", "/auth/in", "/auth/again", "/auth/out",
        "/login", "/login/", "/login/x", "/loginx", "/login/../admin", "/login/%2e%2e/admin", "/login%2f..%2fadmin",
        "/login/..%2Fadmin", "/login//../admin", "/login\\..\\admin", "/login/..;/admin", "/login;/../x", "/login/%252e%252e/x",
        "/log%69n", "/static/../admin", "/static/", "/static/app.js", "/signin", "/", "//", "//evil.example/x", "/\\evil.example",
        "https://evil.example/", "*", "", "/login/%00", "/login/%", "/login/%zz", "/api/auth/login/", "/API/auth/login",
        "/api/auth/login;x", "/api/auth/refreshtoken?x=1", "/dashboard?tab=1&x=%2F", "/login?next=/admin",
    ])
    .prop_map(str::to_owned);
    prop_oneof![
        4 => special.clone(),
        2 => (special, "[a-zA-Z0-9%./\\\\;_~?&=-]{0,12}").prop_map(|(s, t)| format!("{s}{t}")),
        3 => "/[a-zA-Z0-9%./\\\\;_~-]{0,30}(\\?[ -~]{0,12})?",
        1 => prop::collection::vec(any::<u8>(), 0..64).prop_map(lossy),
    ]
    .boxed()
}

fn method() -> BoxedStrategy<String> {
    prop_oneof![
        6 => prop::sample::select(vec!["GET", "POST", "OPTIONS", "PUT", "DELETE", "HEAD", "PATCH"]).prop_map(str::to_owned),
        1 => prop::sample::select(vec!["", "post", "GET ", "CONNECT"]).prop_map(str::to_owned),
        1 => ".{0,8}",
    ]
    .boxed()
}

fn accept() -> BoxedStrategy<Option<String>> {
    prop_oneof![
        Just(None),
        prop::sample::select(vec![
            "text/html", "text/html,application/xhtml+xml,*/*;q=0.8", "application/json", "*/*", "text/html;q=0",
            "TEXT/HTML; q=0.5", "text/html;q=abc", "text/html;q=-1", "text/htmlx", ",,;;=", "text/html;q",
        ])
        .prop_map(|s| Some(s.to_owned())),
        ".{0,30}".prop_map(Some),
    ]
    .boxed()
}

fn content_type() -> BoxedStrategy<Option<String>> {
    prop_oneof![
        4 => Just(Some("application/json".to_owned())),
        1 => Just(None),
        2 => prop::sample::select(vec![
            "text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "Application/JSON",
            "application/json; charset=utf-8", "application/json;charset=UTF-8", "application/jsonx", "text/json",
            "application/ld+json", " application/json", "application/json , text/plain", "",
        ])
        .prop_map(|s| Some(s.to_owned())),
        1 => ".{0,20}".prop_map(Some),
    ]
    .boxed()
}

/// `Origin`, `Sec-Fetch-Site` and `:authority`: mostly absent, else values a browser sends,
/// look-alikes, or anything.
fn cross_origin_headers() -> impl Strategy<Value = (Option<String>, Option<String>, Option<String>)> {
    let origin = prop_oneof![
        4 => Just(None),
        2 => prop::sample::select(vec!["https://app.example.com", "http://localhost:10000", "null", "https://evil.example",
            "https://app.example.com.evil.com", "https://evil@app.example.com", "HTTPS://APP.example.com", "https://app.example.com:443", ""])
            .prop_map(|s| Some(s.to_owned())),
        1 => ".{0,30}".prop_map(Some),
    ];
    let site = prop_oneof![
        4 => Just(None),
        2 => prop::sample::select(vec!["same-origin", "none", "same-site", "cross-site", "Same-Origin", ""]).prop_map(|s| Some(s.to_owned())),
        1 => ".{0,12}".prop_map(Some),
    ];
    let authority = prop_oneof![
        1 => Just(None),
        3 => prop::sample::select(vec!["app.example.com", "localhost:10000", "app.example.com:443", ""]).prop_map(|s| Some(s.to_owned())),
    ];
    (origin, site, authority)
}

prop_compose! {
    fn request()(
        method in method(), path in path(), cookie in cookie_header(), accept in accept(),
        has_origin in any::<bool>(), has_cors_request_method in any::<bool>(),
        content_length in prop_oneof![Just(None), (0u64..40_000).prop_map(Some), any::<u64>().prop_map(Some)],
        end_of_stream in any::<bool>(), content_type in content_type(),
        (origin, sec_fetch_site, authority) in cross_origin_headers(),
    ) -> RequestView<'static> {
        RequestView {
            method: method.into(), path: path.into(), cookie: cookie.map(Into::into), accept: accept.map(Into::into),
            content_type: content_type.map(Into::into), has_origin: has_origin || origin.is_some(), has_cors_request_method,
            content_length, end_of_stream,
            origin: origin.map(|o| o.into_bytes().into()), sec_fetch_site: sec_fetch_site.map(|s| s.into_bytes().into()),
            authority: authority.map(|a| a.into_bytes().into()),
        }
    }
}

// --- decide -----------------------------------------------------------------------------------

#[test]
fn decide_never_panics_and_forwards_only_with_a_valid_token() {
    let setups = setups();
    let seen = std::cell::RefCell::new(std::collections::BTreeSet::new());
    proptest!(cases(15000), |(req in request(), which in any::<Index>())| {
        let setup = which.get(&setups);
        let d = core::decide(&setup.cfg, &req, NOW);
        if let Err(e) = judge::check_decide(setup, &req, NOW, &d) {
            prop_assert!(false, "setup {}: {e}\nrequest {req:?}\ndecision {d:?}", setup.name);
        }
        seen.borrow_mut().insert(outcome_name(&d));
    });
    let seen = seen.into_inner();
    for outcome in [
        "session_valid", "rotated_inline", "call", "public", "preflight", "denied_no_session",
        "denied_refresh_invalid", "refresh_rejected", "logged_out", "method_not_allowed", "login_bad_request",
    ] {
        assert!(seen.contains(outcome), "the generators never reached {outcome}: {seen:?}");
    }
}

fn outcome_name(d: &Decision) -> &'static str {
    match d {
        Decision::Forward(f) => f.outcome.as_str(),
        Decision::Respond(r) => r.outcome.as_str(),
        Decision::Call(_) => "call",
        Decision::ReadBody { .. } => "read_body",
        Decision::Join(_) => "join",
    }
}

#[test]
fn judge_catches_bypasses() {
    // The judge itself, against hand-made wrong decisions: each must be flagged.
    use etls_auth::core::decision::{Forward, LocalReply, Outcome, PublishedIdentity};
    let setups = setups();
    let setup = &setups[0];
    let req = |path: &str, cookie: Option<String>| RequestView { method: "GET".into(), path: path.to_owned().into(), cookie: cookie.map(|c| c.into_bytes().into()), end_of_stream: true, ..RequestView::<'static>::default() };
    // Publishes the identity of its header edits (as the filter does), so that each case below
    // is caught for the fault it was built for.
    let publish = |edits: &[(String, Option<String>)]| {
        let value = |name: &str| edits.iter().find(|(n, _)| n == name).and_then(|(_, v)| v.clone());
        value("x-etls-user-id").map(|user_id| PublishedIdentity { user_id: user_id.into(), role: value("x-etls-role").map(Into::into) })
    };
    let bytes = |edits: Vec<(String, Option<String>)>| -> Vec<etls_auth::core::decision::HeaderEdit> {
        edits.into_iter().map(|(n, v)| (n.into(), v.map(|v| v.into_bytes().into()))).collect()
    };
    let forward = |outcome: Outcome, edits: Vec<(String, Option<String>)>, set_cookies: Vec<String>| {
        let identity = publish(&edits);
        Decision::Forward(Forward { outcome, header_edits: bytes(edits), set_cookies, identity })
    };
    let id = |u: &str| vec![("x-etls-user-id".to_owned(), Some(u.to_owned())), ("x-etls-role".to_owned(), Some("admin".to_owned()))];
    let strip: Vec<(String, Option<String>)> = vec![("x-etls-user-id".to_owned(), None), ("x-etls-role".to_owned(), None)];
    let valid = Some(format!("accessTokenEtls={}", judge::good_access(60)));
    let unpublished = Decision::Forward(Forward { outcome: Outcome::SessionValid, header_edits: bytes(id("42")), set_cookies: vec![], identity: None });
    let other_published = Decision::Forward(Forward {
        outcome: Outcome::SessionValid,
        header_edits: bytes(id("42")),
        set_cookies: vec![],
        identity: Some(PublishedIdentity { user_id: "7".into(), role: Some("admin".into()) }),
    });
    let public_published = Decision::Forward(Forward {
        outcome: Outcome::Public,
        header_edits: bytes(strip.clone()),
        set_cookies: vec![],
        identity: Some(PublishedIdentity { user_id: "42".into(), role: None }),
    });
    let forged = judge::mint(Signer::Forged, Alg::Hs256, &json!({"userId": 42, "role": "admin"}), None, Some(600), None);
    let expired = judge::mint(Signer::Access, Alg::Hs256, &json!({"userId": 42, "role": "admin"}), None, Some(-60), None);
    let no_exp = judge::mint(Signer::Access, Alg::Hs256, &json!({"userId": 42, "role": "admin"}), None, None, None);
    let wrong_bad = [
        (req("/x", None), forward(Outcome::SessionValid, id("42"), vec![])),
        (req("/x", Some(format!("accessTokenEtls={forged}"))), forward(Outcome::SessionValid, id("42"), vec![])),
        (req("/x", Some(format!("accessTokenEtls={expired}"))), forward(Outcome::SessionValid, id("42"), vec![])),
        (req("/x", Some(format!("accessTokenEtls={no_exp}"))), forward(Outcome::SessionValid, id("42"), vec![])),
        (req("/x", Some(format!("accessTokenEtls={}", judge::good_refresh(60)))), forward(Outcome::SessionValid, id("42"), vec![])),
        (req("/x", Some(format!("accessTokenEtls={}", judge::good_access(60)))), forward(Outcome::SessionValid, id("7"), vec![])),
        (req("/x", Some(format!("accessTokenEtls={}", judge::good_access(60)))), forward(Outcome::SessionValid, vec![], vec![])),
        (req("/x", Some(format!("refreshTokenEtls={}", judge::good_access(60)))), forward(Outcome::RotatedInline, id("42"), vec![])),
        (req("/login/../admin", None), forward(Outcome::Public, strip.clone(), vec![])),
        (req("/login/%2e%2e/admin", None), forward(Outcome::Public, strip.clone(), vec![])),
        (req("/login%2F..%2Fadmin", None), forward(Outcome::Public, strip.clone(), vec![])),
        (req("/login", None), forward(Outcome::Public, id("42"), vec![])),
        (req("/x", None), forward(Outcome::Preflight, strip.clone(), vec![])),
        (req("/x", valid.clone()), unpublished),
        (req("/x", valid.clone()), other_published),
        (req("/login", valid.clone()), public_published),
        (req("/x", None), Decision::Respond(LocalReply::json(Outcome::DeniedNoSession, 401, r#"{"error":"Unauthorized"}"#))),
        (req("/api/auth/logout", None), Decision::Respond(LocalReply::json(Outcome::LoggedOut, 200, r#"{"message":"Logged out"}"#).with_cookies(setup.cfg.cookies.clear_all()))),
        (req("//evil.example/x", None), Decision::Respond(LocalReply::empty(Outcome::DeniedNoSession, 302).with_header("location", "/login?next=%2F%2Fevil.example%2Fx").with_cookies(setup.cfg.cookies.clear_all()))),
    ];
    for (i, (r, d)) in wrong_bad.iter().enumerate() {
        assert!(judge::check_decide(setup, r, NOW, d).is_err(), "case {i}: the judge accepted {d:?} for {r:?}");
    }
}

#[test]
fn decide_with_real_sessions_on_protected_paths() {
    // Focused on the positive side: clean headers with real tokens, so that SessionValid,
    // RotatedInline and the refresh call are reached often and judged each time.
    let setups = setups();
    let seen = std::cell::RefCell::new(std::collections::BTreeSet::new());
    proptest!(cases(3000), |(
        which in any::<Index>(),
        access in prop::option::of(prop_oneof![2 => Just(judge::good_access(600)), 3 => token()]),
        refresh in prop::option::of(prop_oneof![2 => Just(judge::good_refresh(600)), 3 => token()]),
        end_of_stream in any::<bool>(),
        path in prop_oneof![
            4 => "/[a-z]{1,8}(/[a-z0-9]{1,8}){0,2}(\\?[a-z=&]{0,8})?",
            2 => prop::sample::select(vec!["/api/auth/refreshtoken", "/auth/again", "/api/auth/logout", "/auth/out", "/api/auth/login", "/auth/in"]).prop_map(str::to_owned),
        ],
        method in prop::sample::select(vec!["GET", "POST"]), html in any::<bool>(), other in "[a-z]{1,5}=[a-z0-9]{0,5}",
    )| {
        let setup = which.get(&setups);
        let names = &setup.cfg.cookies.names;
        let mut pairs = vec![other];
        pairs.extend(access.map(|a| format!("{}={a}", names.access)));
        pairs.extend(refresh.map(|r| format!("{}={r}", names.refresh)));
        let req = RequestView {
            method: method.into(), path: path.into(), cookie: Some(pairs.join("; ").into_bytes().into()),
            accept: Some(if html { "text/html" } else { "application/json" }.into()), end_of_stream,
            content_type: Some("application/json".into()),
            ..RequestView::default()
        };
        let d = core::decide(&setup.cfg, &req, NOW);
        if let Err(e) = judge::check_decide(setup, &req, NOW, &d) {
            prop_assert!(false, "setup {}: {e}\nrequest {req:?}\ndecision {d:?}", setup.name);
        }
        seen.borrow_mut().insert(match &d {
            Decision::Forward(f) => f.outcome.as_str(),
            Decision::Respond(r) => r.outcome.as_str(),
            Decision::Call(_) => "call",
            Decision::ReadBody { .. } => "read_body",
            Decision::Join(_) => "join",
        });
    });
    // The generators reach every protected-path outcome (else the property above says little).
    let seen = seen.into_inner();
    for outcome in ["session_valid", "rotated_inline", "call", "denied_no_session", "denied_no_refresh", "denied_refresh_invalid", "refreshed", "refresh_rejected", "logged_out", "read_body", "login_bad_request"] {
        assert!(seen.contains(outcome), "never reached {outcome}: {seen:?}");
    }
}

#[test]
fn real_tokens_unmutated_are_accepted() {
    // The judge's positive side, concretely: without a mutation the generated valid tokens pass.
    let setups = setups();
    let setup = &setups[0];
    let req = |cookie: String| RequestView { method: "GET".into(), path: "/x".into(), cookie: Some(cookie.into_bytes().into()), end_of_stream: true, ..RequestView::default() };
    let d = core::decide(&setup.cfg, &req(format!("accessTokenEtls={}", judge::good_access(60))), NOW);
    assert!(matches!(d, Decision::Forward(ref f) if f.outcome.as_str() == "session_valid"), "{d:?}");
    let d = core::decide(&setup.cfg, &req(format!("refreshTokenEtls={}", judge::good_refresh(60))), NOW);
    assert!(matches!(d, Decision::Forward(ref f) if f.outcome.as_str() == "rotated_inline"), "{d:?}");
    // A refresh token in the access cookie, and the reverse, are not sessions.
    let d = core::decide(&setup.cfg, &req(format!("accessTokenEtls={}", judge::good_refresh(60))), NOW);
    assert!(matches!(d, Decision::Respond(ref r) if r.status == 401), "{d:?}");
    let d = core::decide(&setup.cfg, &req(format!("refreshTokenEtls={}", judge::good_access(60))), NOW);
    assert!(matches!(d, Decision::Respond(ref r) if r.status == 401), "{d:?}");
}

// --- login body -------------------------------------------------------------------------------

fn login_body() -> BoxedStrategy<Vec<u8>> {
    prop_oneof![
        3 => (json_any(), json_any()).prop_map(|(e, p)| json!({"email": e, "password": p}).to_string().into_bytes()),
        3 => (".{0,40}", ".{0,80}").prop_map(|(e, p)| json!({"email": e, "password": p}).to_string().into_bytes()),
        1 => (".{0,20}", 0usize..20_000).prop_map(|(e, n)| json!({"email": e, "password": "p".repeat(n)}).to_string().into_bytes()),
        2 => json_any().prop_map(|v| v.to_string().into_bytes()),
        2 => prop::collection::vec(any::<u8>(), 0..200),
        1 => Just(br#"{"email":"a","email":"b","password":"p"}"#.to_vec()),
        1 => (".{0,10}", any::<Index>()).prop_map(|(e, i)| {
            let full = json!({"email": e, "password": "pw"}).to_string().into_bytes();
            full[..i.index(full.len() + 1)].to_vec()
        }),
    ]
    .boxed()
}

#[test]
fn login_body_never_panics_and_calls_only_with_two_strings() {
    let setups = setups();
    proptest!(cases(1500), |(body in login_body(), which in any::<Index>())| {
        let setup = which.get(&setups);
        let d = login::on_body(&setup.cfg, &body);
        if let Err(e) = judge::check_on_body(setup, &body, &d) {
            prop_assert!(false, "setup {}: {e}\nbody {:?}\ndecision {d:?}", setup.name, String::from_utf8_lossy(&body));
        }
    });
}

// --- answers of the login API and the refresh cluster -------------------------------------------

fn status() -> BoxedStrategy<u32> {
    prop_oneof![
        4 => prop::sample::select(vec![0u32, 100, 200, 201, 204, 299, 301, 302, 400, 401, 403, 404, 429, 499, 500, 502, 503, 504, 599, 600, 999]),
        1 => any::<u32>(),
    ]
    .boxed()
}

fn header_value_bytes() -> BoxedStrategy<Vec<u8>> {
    prop_oneof![
        ".{0,20}".prop_map(String::into_bytes),
        prop::collection::vec(any::<u8>(), 0..40),
        Just(b"30".to_vec()),
        Just(b"1\r\nSet-Cookie: x=y".to_vec()),
    ]
    .boxed()
}

fn login_answer_body() -> BoxedStrategy<Vec<u8>> {
    let good_token = prop_oneof![6 => "[A-Za-z0-9._-]{1,40}", 1 => ".{0,20}", 1 => Just("a;b".to_owned()), 1 => Just("a\r\nb".to_owned())];
    prop_oneof![
        4 => (good_token.clone(), good_token, user_id(), prop::option::of(json_scalar()), prop::option::of(json_any()))
            .prop_map(|(a, r, id, role, more)| {
                let mut user = json!({"id": id});
                if let Some(role) = role { user["role"] = role; }
                if let Some(more) = more { user["more"] = more; }
                json!({"accessToken": a, "refreshToken": r, "userData": user}).to_string().into_bytes()
            }),
        2 => json_any().prop_map(|v| v.to_string().into_bytes()),
        1 => prop::collection::vec(any::<u8>(), 0..200),
        1 => Just(b"{\"accessToken\":\"a\",\"refreshToken\":\"r\",\"userData\":{\"id\":1}".to_vec()),
    ]
    .boxed()
}

prop_compose! {
    fn login_answer()(
        status in prop_oneof![1 => Just(200u32), 3 => status()],
        headers in prop::collection::vec((prop::sample::select(vec!["retry-after", "Retry-After", "set-cookie", "content-type", "x-any"]).prop_map(str::to_owned), header_value_bytes()), 0..4),
        body in login_answer_body(),
        extra in prop_oneof![4 => Just(0usize), 1 => any::<usize>(), 1 => 0usize..200_000],
        failed in prop_oneof![8 => Just(None), 1 => Just(Some(CallError::NoResponse)), 1 => ".{0,10}".prop_map(|s| Some(CallError::Dispatch(s)))],
    ) -> Result<UpstreamReply, CallError> {
        match failed {
            Some(e) => Err(e),
            None => Ok(UpstreamReply { status, headers, body_size: body.len().saturating_add(extra), body }),
        }
    }
}

#[test]
fn login_answer_never_panics_and_sets_cookies_only_on_success() {
    let setups = setups();
    let successes = std::cell::Cell::new(0u32);
    proptest!(cases(2000), |(answer in login_answer(), which in any::<Index>(), req in request())| {
        let setup = which.get(&setups);
        let d = core::on_reply(&setup.cfg, CallKind::Login, &req, answer.clone(), NOW);
        if let Err(e) = judge::check_login_reply(setup, &answer, &d) {
            prop_assert!(false, "setup {}: {e}\nanswer {answer:?}\ndecision {d:?}", setup.name);
        }
        if matches!(&d, Decision::Respond(r) if r.status == 200) { successes.set(successes.get() + 1); }
    });
    assert!(successes.get() > 0, "no generated login answer was a success");
}

fn set_cookie_value(names: (&'static str, &'static str)) -> BoxedStrategy<Vec<u8>> {
    prop_oneof![
        3 => (prop::sample::select(vec![names.0, names.1, "a", "r", "other"]), token(), prop::sample::select(vec!["; HttpOnly; Path=/; Max-Age=900", "", ";", "; Path=/; Domain=evil"]))
            .prop_map(|(n, t, attrs)| format!("{n}={t}{attrs}").into_bytes()),
        1 => header_value_bytes(),
    ]
    .boxed()
}

prop_compose! {
    fn refresh_answer()(
        status in prop_oneof![4 => Just(200u32), 1 => status()],
        cookies in prop::collection::vec(set_cookie_value(("accessTokenEtls", "refreshTokenEtls")), 0..4),
        good in any::<bool>(),
        failed in prop_oneof![8 => Just(None), 1 => Just(Some(CallError::NoResponse))],
    ) -> Result<UpstreamReply, CallError> {
        let mut headers: Vec<(String, Vec<u8>)> = cookies.into_iter().map(|c| ("set-cookie".to_owned(), c)).collect();
        if good {
            headers.push(("set-cookie".into(), format!("accessTokenEtls={}; Path=/", judge::good_access(600)).into_bytes()));
            headers.push(("Set-Cookie".into(), format!("refreshTokenEtls={}", judge::good_refresh(600)).into_bytes()));
        }
        match failed {
            Some(e) => Err(e),
            None => Ok(UpstreamReply { status, headers, body: Vec::new(), body_size: 0 }),
        }
    }
}

#[test]
fn refresh_answer_never_panics_and_forwards_only_valid_new_tokens() {
    let setups = setups();
    let rotated = std::cell::Cell::new(0u32);
    proptest!(cases(1500), |(answer in refresh_answer(), which in any::<Index>(), req in request())| {
        let setup = which.get(&setups);
        let d = core::on_reply(&setup.cfg, CallKind::Refresh, &req, answer.clone(), NOW);
        if let Err(e) = judge::check_refresh_reply(setup, &req, &answer, &d) {
            prop_assert!(false, "setup {}: {e}\nanswer {answer:?}\ndecision {d:?}", setup.name);
        }
        if matches!(d, Decision::Forward(_)) { rotated.set(rotated.get() + 1); }
    });
    assert!(rotated.get() > 0, "no generated refresh answer rotated");
}

// --- configuration ------------------------------------------------------------------------------

const KEYS: [&str; 30] = [
    "login_cluster", "login_authority", "login_upstream_path", "login_timeout_ms", "refresh_cluster", "refresh_authority",
    "refresh_timeout_ms", "login_path", "refresh_path", "logout_path", "login_page", "public_paths", "bypass_cors_preflight",
    "access_ttl_s", "refresh_ttl_s", "access_secret_env", "refresh_secret_env", "clock_skew_s", "cookie_secure",
    "cookie_same_site", "cookie_domain", "access_cookie", "refresh_cookie", "upstream_access_cookie",
    "upstream_refresh_cookie", "user_id_header", "role_header", "max_login_body_bytes", "unknown_key", "",
];

fn config_value() -> BoxedStrategy<Value> {
    prop_oneof![
        3 => prop::sample::select(vec!["/x", "/login", "/", "//x", "a b", "x", "Strict", "lax", "None", "example.test", "ETLS_ACCESS", "X_PREV", "x-user", "cookie"]).prop_map(Value::from),
        2 => "[ -~]{0,12}".prop_map(Value::from),
        2 => prop_oneof![Just(0u64), Just(1), Just(5), Just(300_000), Just(34_560_000), Just(1_048_576), Just(u64::MAX)].prop_map(Value::from),
        1 => prop::collection::vec(prop_oneof!["/[a-z/]{0,6}", ".{0,6}"], 0..4).prop_map(Value::from),
        2 => json_any(),
    ]
    .boxed()
}

fn secret_env() -> BoxedStrategy<Vec<(String, Vec<u8>)>> {
    let name = prop::sample::select(vec!["ETLS_ACCESS", "ETLS_REFRESH", "ETLS_ACCESS_PREVIOUS", "ETLS_REFRESH_PREVIOUS", "X_PREV", "ETLS_ACCESS_PREVIOUS_PREVIOUS"]);
    let value = prop_oneof![
        Just(judge::ACCESS_SECRET.to_vec()),
        Just(judge::REFRESH_SECRET.to_vec()),
        prop::collection::vec(any::<u8>(), 0..64),
    ];
    prop::collection::vec((name.prop_map(str::to_owned), value), 0..6)
    .boxed()
}

/// Parses `json` with secrets from `env`; checks the error line, and on success that the config
/// works: a request with a valid-looking session is decided without panicking.
fn parse_and_use(json: &[u8], env: &[(String, Vec<u8>)]) -> Result<(), TestCaseError> {
    let lookup = |name: &str| env.iter().rev().find(|(n, _)| n == name).map(|(_, v)| v.clone());
    match Config::parse(json, lookup) {
        Err(e) => {
            let line = e.to_string();
            prop_assert!(!line.is_empty() && !line.contains('\n'), "error is not one line: {line:?}");
            prop_assert!(line.starts_with('`') || line.starts_with("configuration:"), "error names no key: {line:?}");
            for (_, secret) in env {
                if secret.len() >= 8 {
                    prop_assert!(!line.contains(&*String::from_utf8_lossy(secret)), "error shows a secret: {line:?}");
                }
            }
        }
        Ok(cfg) => {
            prop_assert!(cfg.login_page.starts_with('/') && !cfg.login_page.starts_with("//"));
            prop_assert!(cfg.public_paths.iter().all(|p| p.starts_with('/')));
            let r = &cfg.routes;
            prop_assert!(r.login != r.refresh && r.login != r.logout && r.refresh != r.logout);
            let names = &cfg.cookies.names;
            let cookie = format!("{}={}; {}={}", names.access, judge::good_access(60), names.refresh, judge::good_refresh(60));
            for (method, path) in [("GET", "/x"), ("POST", r.login.as_str()), ("POST", r.refresh.as_str()), ("POST", r.logout.as_str()), ("GET", "/x/../y")] {
                let req = RequestView { method: method.into(), path: path.into(), cookie: Some(cookie.clone().into_bytes().into()), accept: Some("text/html".into()), end_of_stream: true, ..RequestView::default() };
                let _ = core::decide(&cfg, &req, NOW);
            }
            let _ = login::on_body(&cfg, br#"{"email":"e","password":"p"}"#);
        }
    }
    Ok(())
}

#[test]
fn config_parse_never_panics_on_arbitrary_bytes() {
    proptest!(cases(1500), |(bytes in prop::collection::vec(any::<u8>(), 0..300), env in secret_env())| {
        parse_and_use(&bytes, &env)?;
    });
}

#[test]
fn config_parse_never_panics_on_arbitrary_json() {
    proptest!(cases(1500), |(value in json_any(), env in secret_env())| {
        parse_and_use(value.to_string().as_bytes(), &env)?;
    });
}

#[test]
fn config_parse_never_panics_on_real_keys_with_random_values() {
    let accepted = std::cell::Cell::new(0u32);
    proptest!(cases(3000), |(
        fields in prop::collection::vec((prop::sample::select(KEYS.to_vec()), config_value()), 0..8),
        cluster in prop_oneof![3 => Just(Some(json!("login_api"))), 1 => config_value().prop_map(Some), 1 => Just(None)],
        env in prop_oneof![3 => Just(vec![("ETLS_ACCESS".to_owned(), judge::ACCESS_SECRET.to_vec()), ("ETLS_REFRESH".to_owned(), judge::REFRESH_SECRET.to_vec())]), 1 => secret_env()],
    )| {
        let mut obj = serde_json::Map::new();
        if let Some(c) = cluster { obj.insert("login_cluster".into(), c); }
        for (k, v) in fields { obj.insert(k.to_owned(), v); }
        let env_ok = env.clone();
        let json = Value::Object(obj).to_string();
        if Config::parse(json.as_bytes(), |n: &str| env_ok.iter().rev().find(|(k, _)| k == n).map(|(_, v)| v.clone())).is_ok() {
            accepted.set(accepted.get() + 1);
        }
        parse_and_use(json.as_bytes(), &env)?;
    });
    assert!(accepted.get() > 0, "no generated configuration was valid");
}

// --- the per-VM token cache ---------------------------------------------------------------------

#[test]
fn decide_cached_over_request_sequences_never_lets_a_stale_token_through() {
    // The shell decides through one TokenCache per VM. Over a sequence of requests with the clock
    // moving forwards and backwards, a small pool of tokens (some expiring soon, some not yet
    // valid) is verified, cached and re-presented: every decision must still be one the judge
    // accepts at that moment, exactly as without a cache (compared with `decide`).
    use etls_auth::core::cache::TokenCache;
    let setups = setups();
    let pool = |setup: &Setup| -> Vec<String> {
        let c = json!({"userId": 42, "role": "admin"});
        let skew = i64::try_from(setup.cfg.clock_skew_s).unwrap();
        let mut v = Vec::new();
        for signer in [Signer::Access, Signer::Refresh, Signer::AccessPrevious, Signer::RefreshPrevious, Signer::Forged] {
            for exp in [-skew - 1, -skew, 0, 3, skew + 1, 30, 900] {
                v.push(judge::mint(signer, Alg::Hs256, &c, Some(-10), Some(exp), None));
            }
            v.push(judge::mint(signer, Alg::Hs256, &c, Some(20), Some(900), None)); // iat in the future
            v.push(judge::mint(signer, Alg::Hs256, &c, None, Some(900), Some(15))); // nbf in the future
            v.push(judge::mint(signer, Alg::Hs256, &c, None, None, None)); // no exp
        }
        v
    };
    let step = (any::<Index>(), prop::option::of(any::<Index>()), prop::option::of(any::<Index>()), -40i64..40, any::<bool>(), prop::sample::select(vec!["/x", "/api/auth/refreshtoken", "/auth/again"]));
    proptest!(cases(300), |(which in any::<Index>(), capacity in prop_oneof![Just(1usize), Just(2), Just(1024)], steps in prop::collection::vec(step, 1..40))| {
        let setup = which.get(&setups);
        let tokens = pool(setup);
        let mut cache = TokenCache::new(capacity);
        let names = &setup.cfg.cookies.names;
        for (_, access, refresh, dt, post, path) in steps {
            let now = NOW.saturating_add_signed(dt);
            let mut pairs = Vec::new();
            pairs.extend(access.map(|i| format!("{}={}", names.access, i.get(&tokens))));
            pairs.extend(refresh.map(|i| format!("{}={}", names.refresh, i.get(&tokens))));
            let req = RequestView {
                method: if post { "POST" } else { "GET" }.into(), path: path.into(), cookie: Some(pairs.join("; ").into_bytes().into()),
                accept: Some("application/json".into()), end_of_stream: true, ..RequestView::default()
            };
            let d = core::decide_cached(&setup.cfg, &mut cache, &req, now);
            if let Err(e) = judge::check_decide(setup, &req, now, &d) {
                prop_assert!(false, "setup {} capacity {capacity} now {dt:+}: {e}\nrequest {req:?}\ndecision {d:?}", setup.name);
            }
            let uncached = core::decide(&setup.cfg, &req, now);
            prop_assert_eq!(outcome_name(&d), outcome_name(&uncached), "cache changed the outcome at now {:+}: {:?}", dt, req);
        }
    });
}

// --- the Cookie header after a rotation --------------------------------------------------------

#[test]
fn rotation_keeps_every_other_cookie_byte_for_byte() {
    // A valid refresh token (one or two copies) among nameless, non-UTF-8, empty and oddly spaced
    // segments and copies of the access cookie: the rotation must happen, and the judge checks the
    // forwarded header segment by segment against the one sent.
    let setups = setups();
    let setup = &setups[0];
    let rotated = std::cell::Cell::new(0u32);
    proptest!(cases(800), |(
        others in prop::collection::vec(prop_oneof![2 => odd_segment(), 1 => cookie_pair().prop_map(String::into_bytes)], 0..8),
        at in any::<Index>(), twice in any::<bool>(), pad in prop::sample::select(vec!["", " ", "  ", "\t"]),
    )| {
        let mut segments = others;
        let refresh = format!("{pad}refreshTokenEtls={}{pad}", judge::good_refresh(600)).into_bytes();
        segments.insert(at.index(segments.len() + 1), refresh.clone());
        if twice { segments.push(refresh); }
        let sent = segments.join(&b';');
        let req = RequestView { method: "GET".into(), path: "/x".into(), cookie: Some(sent.clone().into()), end_of_stream: true, ..RequestView::default() };
        let d = core::decide(&setup.cfg, &req, NOW);
        if let Err(e) = judge::check_decide(setup, &req, NOW, &d) {
            prop_assert!(false, "{e}\nsent {:?}\ndecision {d:?}", String::from_utf8_lossy(&sent));
        }
        if matches!(&d, Decision::Forward(f) if f.outcome.as_str() == "rotated_inline") { rotated.set(rotated.get() + 1); }
    });
    assert!(rotated.get() > 400, "too few rotations: {}", rotated.get());
}

#[test]
fn judge_catches_cookie_rewrites_that_change_other_cookies() {
    let renewed = [("accessTokenEtls", "A"), ("refreshTokenEtls", "R")];
    let sent: &[u8] = b"foo; a=\xff;accessTokenEtls=old; =bar";
    assert_eq!(judge::check_cookie_rewrite(sent, b"foo; a=\xff;accessTokenEtls=A; =bar; refreshTokenEtls=R", &renewed), Ok(()));
    for wrong in [
        &b"a=\xff; accessTokenEtls=A; refreshTokenEtls=R"[..],               // nameless cookies dropped
        b"foo; a=\xef\xbf\xbd;accessTokenEtls=A; =bar; refreshTokenEtls=R",    // non-UTF-8 byte replaced
        b"foo;a=\xff;accessTokenEtls=A; =bar; refreshTokenEtls=R",            // spacing changed
        b"foo; a=\xff;accessTokenEtls=old; =bar; refreshTokenEtls=R",         // old value kept
        b"foo; a=\xff;accessTokenEtls=A; =bar",                               // refresh not added
        b"a=\xff; foo;accessTokenEtls=A; =bar; refreshTokenEtls=R",           // order changed
    ] {
        assert!(judge::check_cookie_rewrite(sent, wrong, &renewed).is_err(), "accepted {:?}", String::from_utf8_lossy(wrong));
    }
}

// --- Set-Cookie sizes at login ------------------------------------------------------------------

#[test]
fn login_mints_only_tokens_that_verify_in_cookies_of_at_most_4096_bytes() {
    // Claim sizes (a long role or userId) and login API token sizes around the limit: a login
    // succeeds exactly when the judge's own count of every Set-Cookie is at most 4096 bytes; then
    // the sizes are exactly that count, the new access token opens the app and the new refresh
    // token rotates (both with the filter's own verification). Otherwise 502, no cookie, and the
    // log line names an oversized cookie and shows no token.
    let setups = setups();
    let (accepted, refused) = (std::cell::Cell::new(0u32), std::cell::Cell::new(0u32));
    let size = || prop_oneof![2 => 0usize..40, 3 => 2700usize..3000, 1 => 3000usize..4200];
    let token_size = || prop_oneof![4 => 1usize..60, 1 => 3900usize..4100];
    proptest!(cases(500), |(
        which in any::<Index>(), role_len in size(), role_char in prop::sample::select(vec!["r", "\"", "é", "\u{1}"]),
        id in prop_oneof![(0i64..1_000_000).prop_map(Value::from), (1usize..40).prop_map(|n| Value::from("u".repeat(n))), size().prop_map(|n| Value::from("i".repeat(n.max(1))))],
        ua_len in token_size(), ur_len in token_size(),
    )| {
        let setup = which.get(&setups);
        let role = role_char.repeat(role_len);
        let (ua, ur) = ("a".repeat(ua_len), "b".repeat(ur_len));
        let claims = json!({"userId": id, "role": role});
        let body = json!({"accessToken": ua, "refreshToken": ur, "userData": {"id": id, "role": role}}).to_string();
        let answer = Ok(UpstreamReply { status: 200, headers: vec![], body_size: body.len(), body: body.into_bytes() });
        let d = core::on_reply(&setup.cfg, CallKind::Login, &RequestView::default(), answer.clone(), NOW);
        if let Err(e) = judge::check_login_reply(setup, &answer, &d) {
            prop_assert!(false, "setup {}: {e}", setup.name);
        }
        let Decision::Respond(r) = &d else { panic!("{d:?}") };
        let valid_claims = etls_auth::core::tokens::Identity::new(id.clone(), Some(Value::from(role.clone()))).is_some();
        let want = judge::login_set_cookie_lens(setup, &claims, &ua, &ur);
        let got: Vec<&str> = r.headers().iter().filter(|(n, _)| n == "set-cookie").map(|(_, v)| v.as_str()).collect();
        if !valid_claims {
            prop_assert_eq!(r.status, 502);
        } else if want.iter().all(|n| *n <= judge::MAX_SET_COOKIE) {
            accepted.set(accepted.get() + 1);
            prop_assert_eq!(r.status, 200, "sizes {:?}", want);
            prop_assert_eq!(got.iter().map(|c| c.len()).collect::<Vec<_>>(), want.to_vec());
            let names = &setup.cfg.cookies.names;
            let (_, access) = judge::set_cookie_pair(got[2]);
            let (_, refresh) = judge::set_cookie_pair(got[3]);
            let use_it = |cookie: String| RequestView { method: "GET".into(), path: "/x".into(), cookie: Some(cookie.into_bytes().into()), end_of_stream: true, ..RequestView::default() };
            let d = core::decide(&setup.cfg, &use_it(format!("{}={access}", names.access)), NOW);
            prop_assert!(matches!(&d, Decision::Forward(f) if f.outcome.as_str() == "session_valid"), "minted access token refused: {}", want[2]);
            let req = use_it(format!("{}={refresh}", names.refresh));
            let d = core::decide(&setup.cfg, &req, NOW);
            prop_assert!(matches!(&d, Decision::Forward(f) if f.outcome.as_str() == "rotated_inline") || matches!(&d, Decision::Call(_)), "minted refresh token refused: {d:?}");
            if let Err(e) = judge::check_decide(setup, &req, NOW, &d) {
                prop_assert!(false, "setup {}: rotation of a minted token: {e}", setup.name);
            }
        } else {
            refused.set(refused.get() + 1);
            prop_assert_eq!((r.status, got.len()), (502, 0), "sizes {:?}", want);
            let line = r.warning().unwrap_or_default();
            let names = &setup.cfg.cookies.names;
            let all = [&names.upstream_access, &names.upstream_refresh, &names.access, &names.refresh];
            let named = all.iter().zip(want).any(|(n, len)| len > judge::MAX_SET_COOKIE && line.contains(&format!("cookie {n} {len} bytes")));
            prop_assert!(named, "log line {line:?} for sizes {want:?}");
            for t in [&ua, &ur] {
                prop_assert!(t.len() < 8 || !line.contains(t.as_str()), "log line shows a token");
            }
        }
    });
    assert!(accepted.get() > 50 && refused.get() > 50, "accepted {} refused {}", accepted.get(), refused.get());
}

#[test]
fn a_set_cookie_of_4096_bytes_is_accepted_and_4097_refused_for_each_cookie() {
    // Exactly at the boundary, for the ETLS cookies found by the judge's own count (role lengths
    // whose Set-Cookie is 4096 and 4097 bytes), in every setup that can land on both.
    let setups = setups();
    let mut checked = 0;
    for setup in &setups {
        let names = &setup.cfg.cookies.names;
        for (index, name) in [(2usize, &names.access), (3, &names.refresh)] {
            let lens = |n: usize| judge::login_set_cookie_lens(setup, &json!({"userId": 7, "role": "r".repeat(n)}), "a", "b");
            let Some(n) = (2000..3200).find(|n| lens(*n)[index] == 4096 && lens(n + 1)[index] == 4097 && lens(*n).iter().all(|l| *l <= 4096)) else { continue };
            for (role_len, ok) in [(n, true), (n + 1, false)] {
                let body = json!({"accessToken": "a", "refreshToken": "b", "userData": {"id": 7, "role": "r".repeat(role_len)}}).to_string();
                let answer = Ok(UpstreamReply { status: 200, headers: vec![], body_size: body.len(), body: body.into_bytes() });
                let Decision::Respond(r) = core::on_reply(&setup.cfg, CallKind::Login, &RequestView::default(), answer, NOW) else { panic!() };
                if ok {
                    assert_eq!(r.status, 200, "{} {name}", setup.name);
                    let sizes: Vec<usize> = r.headers().iter().filter(|(h, _)| h == "set-cookie").map(|(_, v)| v.len()).collect();
                    assert_eq!(sizes[index], 4096, "{} {name}", setup.name);
                } else {
                    assert_eq!(r.status, 502, "{} {name}", setup.name);
                    assert!(r.warning().unwrap().contains(&format!("cookie {name} 4097 bytes")), "{:?}", r.warning());
                }
            }
            checked += 1;
        }
    }
    assert!(checked >= 2, "no setup reaches 4096 and 4097 exactly ({checked})");
}

// --- login_refresh_path: the login API's refresh answer and the per-VM store -------------------

fn upstream_session_config() -> Config {
    let json = json!({"login_cluster": "login_api", "login_refresh_path": "/refresh", "login_timeout_ms": 1000});
    Config::parse(json.to_string().as_bytes(), |name| match name {
        "ETLS_ACCESS" => Some(b"prop-access-secret-0123456789abcdef".to_vec()),
        "ETLS_REFRESH" => Some(b"prop-refresh-secret-0123456789abcdef".to_vec()),
        _ => None,
    })
    .unwrap()
}

fn rotation(cfg: &Config, up_refresh: &str) -> etls_auth::core::upstream_session::Rotation {
    use etls_auth::core::tokens::{mint_pair, Identity};
    let pair = mint_pair(cfg, &Identity::new(json!(5), Some(json!("user"))).unwrap(), NOW, NOW).unwrap();
    let cookie = format!("refreshTokenEtls={}; accessToken=ua; refreshToken={up_refresh}", pair.refresh);
    let req = RequestView {
        method: "GET".into(),
        path: "/x".into(),
        cookie: Some(cookie.into_bytes().into()),
        end_of_stream: true,
        ..RequestView::default()
    };
    match core::decide(cfg, &req, NOW) {
        Decision::Join(r) => *r,
        other => panic!("{other:?}"),
    }
}

fn set_cookie_headers(d: &Decision) -> Vec<String> {
    match d {
        Decision::Forward(f) => f.set_cookies.clone(),
        Decision::Respond(r) => r.headers().iter().filter(|(n, _)| n == "set-cookie").map(|(_, v)| v.clone()).collect(),
        other => panic!("{other:?}"),
    }
}

#[test]
fn login_refresh_answers_never_panic_and_map_per_class() {
    use etls_auth::core::upstream::{parse_login_refresh_reply, RefreshAnswer};
    use etls_auth::core::upstream_session::settle;
    let cfg = upstream_session_config();
    let rot = rotation(&cfg, "ur-1");
    let renewed = std::cell::Cell::new(0u32);
    proptest!(cases(1500), |(answer in login_answer())| {
        let parsed = parse_login_refresh_reply(&cfg, answer.as_ref());
        let status = answer.as_ref().map(|r| r.status).ok();
        match &parsed {
            RefreshAnswer::Ended => prop_assert!(matches!(status, Some(401 | 403))),
            RefreshAnswer::Renewed(_) => prop_assert!(matches!(status, Some(200..=299))),
            RefreshAnswer::Outage => prop_assert!(!matches!(status, Some(401 | 403))),
        }
        let d = settle(&cfg, &rot, &parsed, NOW);
        let cookies = set_cookie_headers(&d);
        prop_assert!(cookies.iter().all(|c| c.len() <= 4096), "{cookies:?}");
        match parsed {
            RefreshAnswer::Renewed(r) => {
                renewed.set(renewed.get() + 1);
                prop_assert!(matches!(d, Decision::Forward(_)));
                prop_assert_eq!(cookies.len(), 4);
                let expected = format!("accessToken={};", r.access_token);
                prop_assert!(cookies[0].starts_with(&expected), "{:?}", cookies);
            }
            RefreshAnswer::Ended => prop_assert_eq!(cookies, cfg.cookies.clear_all().to_vec()),
            RefreshAnswer::Outage => {
                prop_assert!(matches!(d, Decision::Forward(_)));
                prop_assert_eq!(cookies.len(), 2);
            }
        }
    });
    assert!(renewed.get() > 0, "no generated answer was a renewal");
}

#[derive(Debug, Clone)]
enum StoreOp {
    Join { ctx: u8, session: u8, can_wait: bool },
    Leave(u8),
    Dispatch { ok: bool },
    Answer { token: u8, status: u32 },
    Tick,
    Wait(u16),
}

fn store_op() -> BoxedStrategy<StoreOp> {
    prop_oneof![
        4 => (any::<u8>(), 0u8..4, prop_oneof![4 => Just(true), 1 => Just(false)])
            .prop_map(|(ctx, session, can_wait)| StoreOp::Join { ctx, session, can_wait }),
        1 => any::<u8>().prop_map(StoreOp::Leave),
        2 => any::<bool>().prop_map(|ok| StoreOp::Dispatch { ok }),
        2 => (0u8..8, prop::sample::select(vec![200u32, 401, 403, 500])).prop_map(|(token, status)| StoreOp::Answer { token, status }),
        1 => Just(StoreOp::Tick),
        1 => (0u16..2000).prop_map(StoreOp::Wait),
    ]
    .boxed()
}

/// Envoy's shared data for the property test: one map for every VM, CAS versions, and a CAS on
/// an absent key ignored.
#[derive(Default)]
struct MemShared(std::cell::RefCell<(SharedMap, u32)>);

type SharedMap = std::collections::HashMap<String, (Vec<u8>, u32)>;

impl etls_auth::core::shared_calls::SharedData for MemShared {
    fn get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
        match self.0.borrow().0.get(key) {
            Some((v, cas)) => ((!v.is_empty()).then(|| v.clone()), Some(*cas)),
            None => (None, None),
        }
    }
    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), etls_auth::core::shared_calls::SetError> {
        let mut inner = self.0.borrow_mut();
        if let (Some(cas), Some((_, current))) = (cas, inner.0.get(key)) {
            if cas != *current {
                return Err(etls_auth::core::shared_calls::SetError::CasMismatch);
            }
        }
        inner.1 += 1;
        let version = inner.1;
        inner.0.insert(key.to_owned(), (value.to_vec(), version));
        Ok(())
    }
}

#[test]
fn the_refresh_store_answers_every_waiting_request_exactly_once() {
    use etls_auth::core::upstream_session::{Joined, UpstreamCalls, GRACE_MS};
    use std::collections::BTreeSet;
    let cfg = upstream_session_config();
    let rotations: Vec<_> = (0..4).map(|s| rotation(&cfg, &format!("ur-{s}"))).collect();
    proptest!(cases(400), |(ops in prop::collection::vec(store_op(), 1..60))| {
        // Two VMs of one Envoy over one shared map; a request's context id picks its VM.
        let shared = MemShared::default();
        let mut stores = [UpstreamCalls::new(1), UpstreamCalls::new(2)];
        let mut now = NOW * 1000;
        let mut waiting: BTreeSet<u32> = BTreeSet::new();
        let mut next_token = 0u32;
        let answered = |decisions: Vec<(u32, Decision)>, waiting: &mut BTreeSet<u32>| -> Result<(), TestCaseError> {
            for (ctx, d) in decisions {
                prop_assert!(waiting.remove(&ctx), "context {ctx} answered but not waiting");
                prop_assert!(matches!(d, Decision::Forward(_) | Decision::Respond(_)));
            }
            Ok(())
        };
        for op in ops {
            match op {
                StoreOp::Join { ctx, session, can_wait } => {
                    let ctx = u32::from(ctx);
                    if waiting.contains(&ctx) { continue; }
                    let mut rot = rotations[usize::from(session)].clone();
                    rot.can_wait = can_wait;
                    match stores[(ctx % 2) as usize].join(&cfg, &shared, ctx, rot, now) {
                        Joined::Wait { .. } => { prop_assert!(can_wait); waiting.insert(ctx); }
                        Joined::Now { decision, .. } => prop_assert!(matches!(decision, Decision::Forward(_) | Decision::Respond(_))),
                    }
                }
                StoreOp::Leave(ctx) => { stores[usize::from(ctx % 2)].leave(u32::from(ctx)); waiting.remove(&u32::from(ctx)); }
                StoreOp::Dispatch { ok } => {
                    for store in &mut stores {
                        for (id, _) in store.take_queued() {
                            let result = if ok { next_token += 1; Ok(next_token) } else { Err(CallError::NoResponse) };
                            answered(store.dispatched(&cfg, &shared, id, result, now).decisions, &mut waiting)?;
                        }
                    }
                }
                StoreOp::Answer { token, status } => {
                    let reply = UpstreamReply { status, body: br#"{"accessToken":"a"}"#.to_vec(), body_size: 19, ..UpstreamReply::default() };
                    for store in &mut stores {
                        answered(store.on_answer(&cfg, &shared, u32::from(token), Ok(&reply), now).decisions, &mut waiting)?;
                    }
                }
                StoreOp::Tick => {
                    for store in &mut stores {
                        answered(store.tick(&cfg, &shared, now).decisions, &mut waiting)?;
                    }
                }
                StoreOp::Wait(ms) => now += u64::from(ms),
            }
            prop_assert_eq!(stores[0].waiting() + stores[1].waiting(), waiting.len());
        }
        // Past every deadline (a lease, then a takeover's own call), the ticks answer whoever
        // still waits (dispatched or not).
        let lease = 1000 + GRACE_MS;
        for step in 1..=3 {
            for store in &mut stores {
                answered(store.tick(&cfg, &shared, now + step * lease).decisions, &mut waiting)?;
                for (id, _) in store.take_queued() {
                    answered(store.dispatched(&cfg, &shared, id, Ok(10_000 + next_token), now).decisions, &mut waiting)?;
                    next_token += 1;
                }
            }
        }
        prop_assert!(waiting.is_empty(), "still waiting after the deadline: {waiting:?}");
    });
}
