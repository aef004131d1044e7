//! Fuzz `Config::parse`: raw bytes, or an object built from the real keys with arbitrary JSON
//! values (to get past "not a JSON object" quickly). It must never panic; an error must be one
//! line naming a key; an accepted configuration must decide requests without panicking, and,
//! when it keeps the default secret names, by the judge's rules.
#![no_main]

#[path = "../common/judge.rs"]
mod judge;

use arbitrary::Arbitrary;
use etls_auth::config::Config;
use etls_auth::core::{self, login, request::RequestView};
use judge::{Setup, NOW};
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value};

const KEYS: &[&str] = &[
    "login_cluster", "login_authority", "login_upstream_path", "login_timeout_ms", "refresh_cluster", "refresh_authority",
    "refresh_timeout_ms", "login_path", "refresh_path", "logout_path", "login_page", "public_paths", "bypass_cors_preflight",
    "access_ttl_s", "refresh_ttl_s", "access_secret_env", "refresh_secret_env", "clock_skew_s", "cookie_secure",
    "cookie_same_site", "cookie_domain", "access_cookie", "refresh_cookie", "upstream_access_cookie",
    "upstream_refresh_cookie", "user_id_header", "role_header", "max_login_body_bytes",
];

#[derive(Arbitrary, Debug)]
enum J {
    Null,
    Bool(bool),
    U(u64),
    I(i64),
    F(f64),
    S(String),
    Paths(Vec<String>),
}

#[derive(Arbitrary, Debug)]
enum Input {
    Raw(Vec<u8>),
    Fields(Vec<(u8, J)>),
}

fn env(name: &str) -> Option<Vec<u8>> {
    match name {
        "ETLS_ACCESS" => Some(judge::ACCESS_SECRET.to_vec()),
        "ETLS_REFRESH" => Some(judge::REFRESH_SECRET.to_vec()),
        "ETLS_ACCESS_PREVIOUS" => Some(judge::ACCESS_PREVIOUS.to_vec()),
        "ETLS_REFRESH_PREVIOUS" => Some(judge::REFRESH_PREVIOUS.to_vec()),
        "SHORT" => Some(b"short".to_vec()),
        _ => None,
    }
}

fuzz_target!(|input: Input| {
    let json = match input {
        Input::Raw(bytes) => bytes,
        Input::Fields(fields) => {
            let mut map = Map::new();
            map.insert("login_cluster".into(), Value::from("login_api"));
            for (k, v) in fields.into_iter().take(12) {
                let v = match v {
                    J::Null => Value::Null,
                    J::Bool(b) => Value::from(b),
                    J::U(u) => Value::from(u),
                    J::I(i) => Value::from(i),
                    J::F(f) => serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number),
                    J::S(s) => Value::from(s),
                    J::Paths(p) => Value::from(p),
                };
                map.insert(KEYS[usize::from(k) % KEYS.len()].to_owned(), v);
            }
            Value::Object(map).to_string().into_bytes()
        }
    };
    match Config::parse(&json, env) {
        Err(e) => {
            let line = e.to_string();
            assert!(!line.is_empty() && !line.contains('\n'), "error is not one line: {line:?}");
            assert!(line.starts_with('`') || line.starts_with("configuration:"), "error names no key: {line:?}");
            let secret = String::from_utf8_lossy(judge::ACCESS_SECRET);
            assert!(!line.contains(&*secret), "error shows a secret");
        }
        Ok(cfg) => {
            let map: Map<String, Value> = serde_json::from_slice(&json).unwrap_or_default();
            let default_secrets = ["access_secret_env", "refresh_secret_env"]
                .iter()
                .all(|k| map.get(*k).is_none_or(|v| v.is_null() || v == "ETLS_ACCESS" && *k == "access_secret_env" || v == "ETLS_REFRESH" && *k == "refresh_secret_env"));
            let names = &cfg.cookies.names;
            let cookie = format!("{}={}; {}={}", names.access, judge::good_access(60), names.refresh, judge::good_refresh(60));
            let routes = [cfg.routes.login.clone(), cfg.routes.refresh.clone(), cfg.routes.logout.clone()];
            let setup = Setup { name: "fuzzed", cfg, previous: true };
            for (method, path) in [("GET", "/x"), ("POST", routes[0].as_str()), ("POST", routes[1].as_str()), ("POST", routes[2].as_str()), ("GET", "/login/../x")] {
                for cookie in [None, Some(cookie.clone().into_bytes())] {
                    let req = RequestView { method: method.into(), path: path.into(), cookie: cookie.clone().map(Into::into), accept: Some("text/html".into()), end_of_stream: true, ..RequestView::default() };
                    let d = core::decide(&setup.cfg, &req, NOW);
                    if default_secrets {
                        if let Err(e) = judge::check_decide(&setup, &req, NOW, &d) {
                            panic!("{e}\nconfig {}\nrequest {req:?}\ndecision {d:?}", String::from_utf8_lossy(&json));
                        }
                    }
                }
            }
            let _ = login::on_body(&setup.cfg, br#"{"email":"e","password":"p"}"#);
        }
    }
});
