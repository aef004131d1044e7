//! The login route: check the client's request, call the login API, map its answer.
//! No proxy_wasm here. The password only ever goes into the outbound call's body.

use serde::Deserialize;

use crate::config::Config;
use crate::core::cookies::MAX_SET_COOKIE_BYTES;
use crate::core::decision::{Decision, LocalReply, Outcome, UpstreamReply};
use crate::core::request::RequestView;
use crate::core::answers;
use crate::core::tokens;
use crate::core::upstream;
use crate::error::CallError;

/// What to do with the login request's body so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyStep {
    /// Keep buffering.
    Wait,
    /// The whole body is in: fetch it and call [`on_body`].
    Ready,
    /// Answer now (the body is too large).
    Answer(Decision),
}

/// Headers of a request to `login_path`, checked in this order: another
/// method gets 405; a cross-origin browser request gets 403 (`core::origin`); a `Content-Type` other than `application/json` (parameters allowed, any
/// case; a missing one too) gets 415, because a form on another site can post `text/plain`
/// without a CORS preflight but never JSON (login CSRF); a `Content-Length` over
/// `max_login_body_bytes` gets 413; else the body is read (an absent body is a 400 at once).
pub fn on_headers(cfg: &Config, req: &RequestView) -> Decision {
    if req.method != "POST" {
        return answers::method_not_allowed();
    }
    if let Some(refused) = crate::core::origin::refuse(&cfg.trusted_origins, req) {
        return refused;
    }
    if !req.has_json_body() {
        return Decision::Respond(LocalReply::json(
            Outcome::LoginBadRequest,
            415,
            r#"{"error":"Content-Type must be application/json"}"#,
        ));
    }
    if req.content_length.is_some_and(|len| len > cfg.max_login_body_bytes as u64) {
        return too_large();
    }
    if req.end_of_stream {
        return on_body(cfg, b"");
    }
    Decision::ReadBody { header_edits: answers::identity_edits(cfg, None), hold_headers: true }
}

/// Progress of the body: `buffered` bytes so far, `end_of_stream` when it is complete.
pub fn on_body_progress(cfg: &Config, buffered: usize, end_of_stream: bool) -> BodyStep {
    if buffered > cfg.max_login_body_bytes {
        BodyStep::Answer(too_large())
    } else if end_of_stream {
        BodyStep::Ready
    } else {
        BodyStep::Wait
    }
}

#[derive(Deserialize)]
struct Credentials {
    email: String,
    password: String,
}

/// A JSON object with string `email` and `password`. Parsed as a `Value` first: serde's derive
/// would also read a two-element array (`["e", "p"]`) into `Credentials`.
fn parse_credentials(body: &[u8]) -> Option<Credentials> {
    match serde_json::from_slice::<serde_json::Value>(body).ok()? {
        object @ serde_json::Value::Object(_) => Credentials::deserialize(object).ok(),
        _ => None,
    }
}

/// The complete body: `{"email": string, "password": string}` calls the login API, else 400.
pub fn on_body(cfg: &Config, body: &[u8]) -> Decision {
    if body.len() > cfg.max_login_body_bytes {
        return too_large();
    }
    match parse_credentials(body) {
        Some(c) => Decision::Call(upstream::login_call(cfg, &c.email, &c.password)),
        None => Decision::Respond(LocalReply::json(
            Outcome::LoginBadRequest,
            400,
            r#"{"error":"Body must be JSON with string fields email and password"}"#,
        )),
    }
}

/// The body of the 504 Envoy itself answers a dispatched call with when `login_timeout_ms` passes.
const ENVOY_TIMEOUT_BODY: &[u8] = b"upstream request timeout";

/// The login API's answer: 2xx as specified gives 200 and four cookies;
/// 429 passes through with `Retry-After`; other 4xx give 401; a timeout gives 504; 5xx (a 504
/// of the API's own too), other statuses, a bad 2xx body or no answer give 502. No cookie on
/// any failure.
pub fn on_reply(cfg: &Config, reply: Result<UpstreamReply, CallError>, now: u64) -> Decision {
    let reply = match reply {
        Ok(reply) => reply,
        Err(_) => return upstream_failed(502),
    };
    match reply.status {
        200..=299 => on_success(cfg, &reply, now),
        429 => {
            let answer = LocalReply::json(Outcome::LoginRateLimited, 429, r#"{"error":"Too many login attempts"}"#);
            let retry_after = reply
                .header_values("retry-after")
                .next()
                .filter(|v| !v.is_empty() && v.bytes().all(|b| (b' '..0x7f).contains(&b)));
            Decision::Respond(match retry_after {
                Some(value) => answer.with_header("retry-after", value),
                None => answer,
            })
        }
        400..=499 => Decision::Respond(LocalReply::json(Outcome::LoginRejected, 401, r#"{"error":"Invalid credentials"}"#)),
        504 if reply.body == ENVOY_TIMEOUT_BODY => upstream_failed(504),
        _ => upstream_failed(502),
    }
}

fn on_success(cfg: &Config, reply: &UpstreamReply, now: u64) -> Decision {
    let Ok(login) = upstream::parse_login_reply(reply) else {
        return upstream_failed(502);
    };
    // The login starts the session: `auth_time` is now.
    let Ok(pair) = tokens::mint_pair(cfg, &login.identity, now, now) else {
        return Decision::Respond(LocalReply::json(Outcome::InternalError, 500, r#"{"error":"Internal error"}"#));
    };
    let body = format!(r#"{{"message":"Login successful","userData":{}}}"#, login.user_data.get());
    // The login API's two cookies live as long as the ETLS refresh token.
    let [upstream_access, upstream_refresh] =
        cfg.cookies.set_upstream(&login.access_token, &login.refresh_token, pair.times.refresh_max_age());
    let [access, refresh] = pair.set_cookies(cfg);
    let set_cookies = [upstream_access, upstream_refresh, access, refresh];
    // No Set-Cookie over 4096 bytes (browsers drop it silently); every token set here is then
    // at most 4096 bytes, which is what verification accepts.
    if let Some((name, size)) = cfg.cookies.oversized(&set_cookies) {
        let names = &cfg.cookies.names;
        let cause = if name == names.upstream_access || name == names.upstream_refresh {
            "the login API's token"
        } else {
            "the claims from the login API (userData.id, userData.role)"
        };
        return Decision::Respond(upstream_failed_reply(502).with_warning(format!(
            "login refused (502): {cause} would make the Set-Cookie of cookie {name} {size} bytes, over the {MAX_SET_COOKIE_BYTES} that browsers keep"
        )));
    }
    Decision::Respond(LocalReply::json(Outcome::LoginSucceeded, 200, body).with_cookies(&set_cookies))
}

fn too_large() -> Decision {
    Decision::Respond(LocalReply::json(Outcome::LoginBadRequest, 413, r#"{"error":"Request body too large"}"#))
}

fn upstream_failed(status: u32) -> Decision {
    Decision::Respond(upstream_failed_reply(status))
}

fn upstream_failed_reply(status: u32) -> LocalReply {
    let body = if status == 504 {
        r#"{"error":"Login service timed out"}"#
    } else {
        r#"{"error":"Login service unavailable"}"#
    };
    LocalReply::json(Outcome::LoginUpstreamFailed, status, body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::decision::CallKind;
    use crate::core::testing::*;
    use serde_json::json;

    fn respond(d: Decision) -> (u32, String, Vec<(String, String)>) {
        match d {
            Decision::Respond(r) => (r.status, String::from_utf8(r.body.clone()).unwrap(), r.headers().to_vec()),
            other => panic!("expected a reply, got {other:?}"),
        }
    }

    fn reply(status: u32, body: &str) -> UpstreamReply {
        UpstreamReply { status, headers: vec![], body: body.as_bytes().to_vec(), body_size: body.len() }
    }

    #[test]
    fn only_post_is_allowed() {
        let (s, _, h) = respond(on_headers(&config(), &req("GET", "/api/auth/login", None)));
        assert_eq!(s, 405);
        assert!(h.contains(&("allow".to_owned(), "POST".to_owned())));
    }

    #[test]
    fn checks_run_in_spec_order_method_type_size_body() {
        let cfg = config();
        let mut r = req("PUT", "/api/auth/login", None);
        r.content_type = Some("text/plain".into());
        r.content_length = Some(1_000_000);
        r.end_of_stream = false;
        assert_eq!(respond(on_headers(&cfg, &r)).0, 405, "method first");
        r.method = "POST".into();
        let (s, b, _) = respond(on_headers(&cfg, &r));
        assert_eq!((s, b.as_str()), (415, r#"{"error":"Content-Type must be application/json"}"#), "then the type");
        r.content_type = None;
        assert_eq!(respond(on_headers(&cfg, &r)).0, 415, "a missing type too");
        r.content_type = Some("Application/JSON; charset=utf-8".into());
        assert_eq!(respond(on_headers(&cfg, &r)).0, 413, "then the size");
        r.content_length = None;
        r.end_of_stream = true;
        assert_eq!(respond(on_headers(&cfg, &r)).0, 400, "then the body");
        for refused in ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=----x"] {
            r.content_type = Some(refused.into());
            assert_eq!(respond(on_headers(&cfg, &r)).0, 415, "{refused}");
        }
    }

    #[test]
    fn body_is_read_then_checked() {
        let cfg = config();
        let mut r = req("POST", "/api/auth/login", None);
        r.end_of_stream = false;
        assert!(matches!(on_headers(&cfg, &r), Decision::ReadBody { hold_headers: true, .. }));
        r.content_length = Some(16_385);
        assert_eq!(respond(on_headers(&cfg, &r)).0, 413);
        assert!(matches!(on_body_progress(&cfg, 16_385, false), BodyStep::Answer(_)));
        assert_eq!(on_body_progress(&cfg, 100, false), BodyStep::Wait);
        assert_eq!(on_body_progress(&cfg, 16_384, true), BodyStep::Ready);
        r.end_of_stream = true;
        r.content_length = None;
        assert_eq!(respond(on_headers(&cfg, &r)).0, 400, "no body at all");
    }

    #[test]
    fn credentials_must_be_two_strings() {
        let cfg = config();
        for bad in ["", "nope", "[]", r#"{"email":"a"}"#, r#"{"email":"a","password":5}"#, r#"{"email":null,"password":"p"}"#] {
            assert_eq!(respond(on_body(&cfg, bad.as_bytes())).0, 400, "{bad}");
        }
        let Decision::Call(call) = on_body(&cfg, br#"{"email":"a@b.c","password":"p\"w","extra":1}"#) else { panic!() };
        assert_eq!(call.kind, CallKind::Login);
        assert_eq!(call.cluster, "login_api");
        assert_eq!(serde_json::from_slice::<serde_json::Value>(call.body.as_ref().unwrap()).unwrap(), json!({"email": "a@b.c", "password": "p\"w"}));
        assert!(call.headers.contains(&(":path".to_owned(), "/login".to_owned())));
        assert!(call.headers.contains(&("content-type".to_owned(), "application/json".to_owned())));
        assert_eq!(call.timeout, std::time::Duration::from_millis(5000));
    }

    #[test]
    fn credentials_must_be_an_object_not_an_array() {
        // Found by tests/properties.rs: serde's derive reads a sequence into a struct.
        let cfg = config();
        for bad in [r#"["a@b.c","pw"]"#, r#"["",""]"#, r#"[["a"],"p"]"#] {
            assert_eq!(respond(on_body(&cfg, bad.as_bytes())).0, 400, "{bad}");
        }
    }

    #[test]
    fn success_sets_four_cookies_and_echoes_user_data() {
        let cfg = config();
        let body = r#"{"accessToken":"up.acc","refreshToken":"up.ref","userData":{"name":"Al","id":7,"role":"admin"}}"#;
        let (s, b, h) = respond(on_reply(&cfg, Ok(reply(200, body)), NOW));
        assert_eq!(s, 200);
        assert_eq!(b, r#"{"message":"Login successful","userData":{"name":"Al","id":7,"role":"admin"}}"#);
        let cookies: Vec<&String> = h.iter().filter(|(n, _)| n == "set-cookie").map(|(_, v)| v).collect();
        assert_eq!(cookies.len(), 4);
        assert!(cookies[0].starts_with("accessToken=up.acc; "));
        assert!(cookies[1].starts_with("refreshToken=up.ref; "));
        let access = crate::core::cookies::value_in_set_cookie(cookies[2], "accessTokenEtls").unwrap();
        assert_eq!(payload(access), json!({"userId": 7, "role": "admin", "iat": NOW, "auth_time": NOW, "exp": NOW + 900}));
    }

    fn login_reply(cfg: &Config, role: &str, upstream_access: &str, upstream_refresh: &str) -> LocalReply {
        let body = json!({"accessToken": upstream_access, "refreshToken": upstream_refresh, "userData": {"id": 7, "role": role}});
        match on_reply(cfg, Ok(reply(200, &body.to_string())), NOW) {
            Decision::Respond(r) => r,
            other => panic!("{other:?}"),
        }
    }

    fn set_cookie_sizes(r: &LocalReply) -> Vec<usize> {
        r.headers().iter().filter(|(n, _)| n == "set-cookie").map(|(_, v)| v.len()).collect()
    }

    /// Formats the Set-Cookie of one of the two ETLS tokens of a pair.
    type Pick = fn(&Config, &tokens::TokenPair) -> String;

    /// Roles that make the Set-Cookie of the cookie `pick` chooses exactly 4096 and 4097 bytes
    /// long, if this configuration can reach both (base64 grows by 1 or 2 per claim byte).
    fn roles_at_the_limit(cfg: &Config, pick: Pick) -> Option<(String, String)> {
        let size = |n: usize| {
            let identity = tokens::Identity::new(json!(7), Some(json!("r".repeat(n)))).unwrap();
            pick(cfg, &tokens::mint_pair(cfg, &identity, NOW, NOW).unwrap()).len()
        };
        let at = (2600..3100).find(|n| size(*n) == 4096 && size(n + 1) == 4097)?;
        Some(("r".repeat(at), "r".repeat(at + 1)))
    }

    #[test]
    fn each_cookie_at_4096_bytes_is_set_and_at_4097_fails_the_login() {
        // The login API's tokens: their length alone decides.
        let cfg = config();
        let [base_access, base_refresh] = cfg.cookies.set_upstream("", "", cfg.refresh_ttl_s);
        for (k, base) in [base_access, base_refresh].iter().enumerate() {
            let fit = "t".repeat(4096 - base.len());
            let over = "t".repeat(4097 - base.len());
            let pair = |t: &str| if k == 0 { (t.to_owned(), "r".to_owned()) } else { ("a".to_owned(), t.to_owned()) };
            let (a, r) = pair(&fit);
            let ok = login_reply(&cfg, "admin", &a, &r);
            assert_eq!(ok.status, 200);
            assert_eq!(set_cookie_sizes(&ok)[k], 4096);
            let (a, r) = pair(&over);
            let refused = login_reply(&cfg, "admin", &a, &r);
            assert_eq!((refused.status, set_cookie_sizes(&refused).len()), (502, 0));
            let name = ["accessToken", "refreshToken"][k];
            let line = refused.warning().unwrap();
            assert!(line.contains(&format!("cookie {name} 4097 bytes")) && line.contains("login API's token"), "{line}");
            assert!(!line.contains(&over), "the log line shows the token");
        }
        // The ETLS cookies: claims (a long role) decide. The refresh cookie is the larger one by
        // default; a long access cookie name makes the access cookie the larger one. Names are
        // padded until this configuration can land exactly on 4096 and 4097.
        let refresh_of = |c: &Config, p: &tokens::TokenPair| p.set_cookies(c)[1].clone();
        let access_of = |c: &Config, p: &tokens::TokenPair| p.set_cookies(c)[0].clone();
        let cases: [(&str, &str, Pick, usize); 2] =
            [("refresh_cookie", "refreshTokenEtls", refresh_of, 3), ("access_cookie", "accessTokenEtlsAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", access_of, 2)];
        for (key, name, pick, index) in cases {
            let (cfg, fit, over, name) = (0..4)
                .find_map(|pad| {
                    let name = format!("{name}{}", "x".repeat(pad));
                    let cfg = config_with(json!({ key: name }));
                    roles_at_the_limit(&cfg, pick).map(|(fit, over)| (cfg, fit, over, name))
                })
                .expect("some padding reaches 4096 and 4097");
            let ok = login_reply(&cfg, &fit, "a", "r");
            assert_eq!(ok.status, 200, "{key}");
            let sizes = set_cookie_sizes(&ok);
            assert_eq!(sizes[index], 4096, "{key}: {sizes:?}");
            assert!(sizes.iter().all(|s| *s <= 4096));
            let token = crate::core::cookies::value_in_set_cookie(&ok.headers().iter().filter(|(n, _)| n == "set-cookie").nth(index).unwrap().1, &name).unwrap();
            let kind = if index == 2 { tokens::TokenKind::Access } else { tokens::TokenKind::Refresh };
            assert_eq!(tokens::verify(&cfg, kind, token, NOW).unwrap().role_header().unwrap(), fit, "{key}: the 4096-byte cookie's token verifies");
            let refused = login_reply(&cfg, &over, "a", "r");
            assert_eq!((refused.status, set_cookie_sizes(&refused).len()), (502, 0), "{key}");
            let line = refused.warning().unwrap();
            assert!(line.contains(&format!("cookie {name} 4097 bytes")) && line.contains("claims"), "{line}");
        }
    }

    #[test]
    fn empty_role_logs_in_like_any_role() {
        let body = r#"{"accessToken":"a","refreshToken":"r","userData":{"id":"u-1","role":""}}"#;
        let (s, _, h) = respond(on_reply(&config(), Ok(reply(200, body)), NOW));
        assert_eq!(s, 200);
        let access = h.iter().find_map(|(n, v)| (n == "set-cookie").then(|| crate::core::cookies::value_in_set_cookie(v, "accessTokenEtls")).flatten()).unwrap();
        assert_eq!(payload(access), json!({"userId": "u-1", "role": "", "iat": NOW, "auth_time": NOW, "exp": NOW + 900}));
    }

    #[test]
    fn a_numeric_id_keeps_its_value_or_fails_the_login() {
        let cfg = config();
        let login = |id: &str| {
            let body = format!(r#"{{"accessToken":"a","refreshToken":"r","userData":{{"id":{id}}}}}"#);
            on_reply(&cfg, Ok(reply(200, &body)), NOW)
        };
        for (id, claim) in [("-7", json!(-7)), ("18446744073709551615", json!(u64::MAX)), ("-9223372036854775808", json!(i64::MIN)),
                            ("1.5", json!(1.5)), ("1e3", json!(1000.0)), ("9007199254740993", json!(9_007_199_254_740_993u64))] {
            let Decision::Respond(r) = login(id) else { panic!("{id}") };
            assert_eq!(r.status, 200, "{id}");
            let access = r.headers().iter().find_map(|(n, v)| (n == "set-cookie").then(|| crate::core::cookies::value_in_set_cookie(v, "accessTokenEtls")).flatten()).unwrap();
            assert_eq!(payload(access)["userId"], claim, "{id}");
        }
        // Past 64 bits an integer would become another number (1.2345678901234568e29): refused.
        for id in ["123456789012345678901234567890", "18446744073709551616", "-9223372036854775809"] {
            assert_eq!(respond(login(id)).0, 502, "{id}");
        }
    }

    #[test]
    fn every_failure_maps_to_its_status_without_cookies() {
        let cfg = config();
        let mut limited = reply(429, "{}");
        limited.headers.push(("retry-after".into(), b"30".to_vec()));
        let cases = [
            (Ok(reply(401, "{}")), 401),
            (Ok(reply(403, "")), 401),
            (Ok(reply(404, "")), 401),
            (Ok(limited), 429),
            (Ok(reply(500, "")), 502),
            (Ok(reply(503, "")), 502),
            (Ok(reply(504, "")), 502),
            (Ok(reply(504, "upstream request timeout")), 504),
            (Ok(reply(302, "")), 502),
            (Ok(reply(200, "not json")), 502),
            (Ok(reply(200, r#"{"accessToken":"a","refreshToken":"r"}"#)), 502),
            (Ok(reply(200, r#"{"accessToken":"a","refreshToken":"r","userData":{}}"#)), 502),
            (Ok(reply(200, r#"{"accessToken":1,"refreshToken":"r","userData":{"id":1}}"#)), 502),
            (Ok(reply(200, r#"{"accessToken":"a;b","refreshToken":"r","userData":{"id":1}}"#)), 502),
            (Ok(reply(200, r#"{"accessToken":"a","refreshToken":"r","userData":{"id":{"x":1}}}"#)), 502),
            (Ok(UpstreamReply { body_size: 10_000_000, ..reply(200, "{}") }), 502),
            (Err(CallError::NoResponse), 502),
            (Err(CallError::Dispatch("BadArgument".into())), 502),
        ];
        for (answer, expected) in cases {
            let (s, _, h) = respond(on_reply(&cfg, answer.clone(), NOW));
            assert_eq!(s, expected, "{answer:?}");
            assert!(!h.iter().any(|(n, _)| n == "set-cookie"), "{answer:?}");
        }
        let mut limited = reply(429, "");
        limited.headers.push(("Retry-After".into(), b"120".to_vec()));
        let (_, b, h) = respond(on_reply(&cfg, Ok(limited), NOW));
        assert!(h.contains(&("retry-after".to_owned(), "120".to_owned())));
        assert!(b.contains("error"));
        let (_, b, _) = respond(on_reply(&cfg, Ok(reply(401, "")), NOW));
        assert_eq!(b, r#"{"error":"Invalid credentials"}"#);
    }
}
