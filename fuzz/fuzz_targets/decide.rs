//! Fuzz `core::decide`, `core::decide_cached` (one cache per configuration, kept across inputs,
//! as the shell keeps one per VM) and `core::login::on_body`. Panics are findings; so is any
//! decision the judge (`fuzz/common/judge.rs`) refuses: a protected request let through without
//! a valid token, a path made public by a trick, a deny without the clearing cookies, and so on.
#![no_main]

#[path = "../common/judge.rs"]
mod judge;

use std::cell::RefCell;

use arbitrary::Arbitrary;
use etls_auth::core::{self, cache::TokenCache, decision::Decision, login, request::RequestView};
use judge::{Alg, Setup, Signer, NOW};
use libfuzzer_sys::fuzz_target;
use serde_json::json;

#[derive(Arbitrary, Debug)]
enum Value {
    /// One of the pre-minted tokens, then byte edits.
    Token { which: u8, edits: Vec<(u16, u8)> },
    Raw(String),
}

#[derive(Arbitrary, Debug)]
enum Part {
    Pair { name: u8, value: Value },
    Raw(String),
}

#[derive(Arbitrary, Debug)]
struct Input {
    setup: u8,
    method: u8,
    path: u8,
    path_tail: String,
    parts: Vec<Part>,
    separator: u8,
    raw_cookie: Option<Vec<u8>>,
    accept: u8,
    content_type: u8,
    has_origin: bool,
    has_cors_request_method: bool,
    content_length: Option<u64>,
    end_of_stream: bool,
    clock: i8,
    body: Vec<u8>,
}

const METHODS: &[&str] = &["GET", "POST", "OPTIONS", "PUT", "DELETE", "HEAD", "", "post"];
const PATHS: &[&str] = &[
    "/x", "/", "/api/auth/login", "/api/auth/refreshtoken", "/api/auth/logout", "/auth/in", "/auth/again", "/auth/out",
    "/login", "/login/", "/static/", "/signin", "//", "/login/..", "/login/%2e", "http://evil/", "",
];
const NAMES: &[&str] = &["accessTokenEtls", "refreshTokenEtls", "a", "r", "accessToken", "refreshToken", " a", "A", ""];
const SEPARATORS: &[&str] = &["; ", ";", ",", " ; ", ";;"];
const CONTENT_TYPES: &[Option<&str>] = &[
    Some("application/json"), None, Some("text/plain"), Some("Application/JSON; charset=utf-8"),
    Some("application/x-www-form-urlencoded"), Some("multipart/form-data; boundary=x"), Some("application/jsonx"),
];
const ACCEPTS: &[Option<&str>] = &[None, Some("text/html"), Some("application/json"), Some("text/html;q=0"), Some("*/*")];

struct State {
    setups: Vec<Setup>,
    caches: Vec<TokenCache>,
    tokens: Vec<String>,
}

thread_local! {
    static STATE: RefCell<Option<State>> = const { RefCell::new(None) };
}

fn pool() -> Vec<String> {
    let c = json!({"userId": 42, "role": "admin"});
    let mut v = vec![judge::good_access(600), judge::good_refresh(600)];
    for signer in Signer::ALL {
        for exp in [-6, 0, 5, 900] {
            v.push(judge::mint(signer, Alg::Hs256, &c, Some(-10), Some(exp), None));
        }
        v.push(judge::mint(signer, Alg::Hs256, &json!({"userId": "u-1"}), None, Some(900), None));
        v.push(judge::mint(signer, Alg::Hs512, &c, None, Some(900), None));
        v.push(judge::mint(signer, Alg::Hs256, &c, None, None, None));
    }
    v.push(judge::mint(Signer::Access, Alg::None, &c, None, Some(900), None));
    v
}

fn pick<T: Copy>(list: &[T], i: u8) -> T {
    list[usize::from(i) % list.len()]
}

fn value(state: &State, v: &Value) -> String {
    match v {
        Value::Raw(s) => s.clone(),
        Value::Token { which, edits } => {
            let mut bytes = state.tokens[usize::from(*which) % state.tokens.len()].clone().into_bytes();
            for (pos, b) in edits.iter().take(8) {
                if bytes.is_empty() {
                    break;
                }
                let i = usize::from(*pos) % bytes.len();
                bytes[i] = *b;
            }
            String::from_utf8_lossy(&bytes).into_owned()
        }
    }
}

fuzz_target!(|input: Input| {
    STATE.with(|cell| {
        let mut slot = cell.borrow_mut();
        let state = slot.get_or_insert_with(|| {
            let setups = judge::setups().unwrap();
            let caches = setups.iter().map(|_| TokenCache::new(64)).collect();
            State { setups, caches, tokens: pool() }
        });
        let which = usize::from(input.setup) % state.setups.len();
        let cookie = match &input.raw_cookie {
            Some(bytes) => Some(bytes.clone()),
            None if input.parts.is_empty() => None,
            None => Some(
                input
                    .parts
                    .iter()
                    .take(16)
                    .map(|p| match p {
                        Part::Raw(s) => s.clone(),
                        Part::Pair { name, value: v } => format!("{}={}", pick(NAMES, *name), value(state, v)),
                    })
                    .collect::<Vec<_>>()
                    .join(pick(SEPARATORS, input.separator))
                    .into_bytes(),
            ),
        };
        let req = RequestView {
            method: pick(METHODS, input.method).into(),
            path: format!("{}{}", pick(PATHS, input.path), input.path_tail).into(),
            cookie: cookie.map(Into::into),
            accept: pick(ACCEPTS, input.accept).map(Into::into),
            content_type: pick(CONTENT_TYPES, input.content_type).map(Into::into),
            has_origin: input.has_origin,
            has_cors_request_method: input.has_cors_request_method,
            content_length: input.content_length,
            end_of_stream: input.end_of_stream,
            ..RequestView::default()
        };
        let now = NOW.saturating_add_signed(i64::from(input.clock));
        let setup = &state.setups[which];
        let d = core::decide(&setup.cfg, &req, now);
        if let Err(e) = judge::check_decide(setup, &req, now, &d) {
            panic!("decide, setup {}: {e}\nrequest {req:?}\ndecision {d:?}", setup.name);
        }
        let cached = core::decide_cached(&setup.cfg, &mut state.caches[which], &req, now);
        if let Err(e) = judge::check_decide(setup, &req, now, &cached) {
            panic!("decide_cached, setup {}: {e}\nrequest {req:?}\ndecision {cached:?}", setup.name);
        }
        let kind = |d: &Decision| std::mem::discriminant(d);
        assert_eq!(kind(&d), kind(&cached), "the cache changed the decision for {req:?}");
        let b = login::on_body(&setup.cfg, &input.body);
        if let Err(e) = judge::check_on_body(setup, &input.body, &b) {
            panic!("on_body, setup {}: {e}\nbody {:?}\ndecision {b:?}", setup.name, String::from_utf8_lossy(&input.body));
        }
    });
});
