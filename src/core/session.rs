//! Protected requests and the refresh route: find and verify the tokens, then hand a session
//! whose refresh token verified to `core::rotation`; the answers are `core::answers`'s.
//! No proxy_wasm here.

use crate::config::Config;
use crate::core::answers::{deny, internal_error, invalid_refresh_token, method_not_allowed, reply};
use crate::core::answers;
use crate::core::cache::TokenCache;
use crate::core::cookies;
use crate::core::decision::{Decision, LocalReply, Outcome};
use crate::core::model::TokenKind;
use crate::core::request::RequestView;
use crate::core::rotation;
use crate::core::tokens;
use crate::error::TokenError;

/// A protected request: verify, else rotate, else deny (see `core::decide`).
/// Tokens are verified through `cache`.
pub fn protect(cfg: &Config, cache: &mut TokenCache, req: &RequestView, now: u64) -> Decision {
    let cookie_header = req.cookie.as_deref().unwrap_or_default();
    let names = &cfg.cookies.names;
    let access = cookies::find(cookie_header, &names.access);
    let mut access_error = None;
    if let Some(token) = access {
        match tokens::verify_cached_published(cfg, cache, TokenKind::Access, token, now) {
            Ok(identity) => {
                return answers::valid(cfg, identity);
            }
            Err(error) => access_error = Some(error),
        }
    }
    let Some(refresh) = cookies::find(cookie_header, &names.refresh) else {
        let outcome = match access_error {
            // The access token tells that the session passed its absolute lifetime.
            Some(TokenError::SessionEnded) => Outcome::DeniedMaxSession,
            Some(_) => Outcome::DeniedNoRefresh,
            None => Outcome::DeniedNoSession,
        };
        return deny(cfg, req, outcome);
    };
    let (identity, window) = match tokens::verify_cached(cfg, cache, TokenKind::Refresh, refresh, now) {
        Ok(verified) => verified,
        Err(TokenError::SessionEnded) => return deny(cfg, req, Outcome::DeniedMaxSession),
        Err(_) => return deny(cfg, req, Outcome::DeniedRefreshInvalid),
    };
    rotation::protected(cfg, req, &identity, window, now)
}

/// `POST refresh_path`: new tokens for a valid refresh token (verified through `cache`).
pub fn refresh_route(cfg: &Config, cache: &mut TokenCache, req: &RequestView, now: u64) -> Decision {
    if req.method != "POST" {
        return method_not_allowed();
    }
    if let Some(refused) = crate::core::origin::refuse(&cfg.trusted_origins, req) {
        return refused;
    }
    let cookie_header = req.cookie.as_deref().unwrap_or_default();
    let Some(token) = cookies::find(cookie_header, &cfg.cookies.names.refresh) else {
        return reply(LocalReply::json(Outcome::RefreshRejected, 401, r#"{"error":"No refresh token provided"}"#));
    };
    let minted = tokens::verify_cached(cfg, cache, TokenKind::Refresh, token, now)
        .and_then(|(identity, window)| rotation::refresh_route(cfg, req, &identity, window, now));
    match minted {
        Ok(decision) => decision,
        Err(TokenError::Mint) => internal_error(cfg),
        Err(TokenError::SessionEnded) => invalid_refresh_token(Outcome::DeniedMaxSession),
        Err(_) => invalid_refresh_token(Outcome::RefreshRejected),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::decision::PublishedIdentity;
    use crate::core::model::Identity;
    use crate::core::rotation::on_refresh_reply;
    use crate::error::CallError;
    use crate::core::decide;
    use crate::core::decision::{CallKind, UpstreamReply};
    use crate::core::testing::*;
    use serde_json::json;

    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Tok {
        Missing,
        Valid,
        Expired,
        Forged,
        WrongKind,
    }

    fn access_cookie(t: Tok) -> Option<String> {
        let v = match t {
            Tok::Missing => return None,
            Tok::Valid => access(NOW + 100),
            Tok::Expired => access(NOW - 100),
            Tok::Forged => token(b"forged-secret-forged-secret-forged!!", json!({"userId": 42}), None, Some(NOW + 100)),
            Tok::WrongKind => refresh(NOW + 100),
        };
        Some(format!("accessTokenEtls={v}"))
    }

    fn refresh_cookie(t: Tok) -> Option<String> {
        let v = match t {
            Tok::Missing => return None,
            Tok::Valid => refresh(NOW + 100),
            Tok::Expired => refresh(NOW - 100),
            Tok::Forged => token(b"forged-secret-forged-secret-forged!!", json!({"userId": 42}), None, Some(NOW + 100)),
            Tok::WrongKind => access(NOW + 100),
        };
        Some(format!("refreshTokenEtls={v}"))
    }

    fn cookie(a: Tok, r: Tok) -> Option<String> {
        let parts: Vec<String> = [Some("theme=dark".to_owned()), access_cookie(a), refresh_cookie(r)].into_iter().flatten().collect();
        Some(parts.join("; "))
    }

    fn outcome(d: &Decision) -> Outcome {
        match d {
            Decision::Forward(f) => f.outcome,
            Decision::Respond(r) => r.outcome,
            Decision::Call(_) => panic!("call"),
            Decision::ReadBody { .. } => panic!("read body"),
            Decision::Join(_) => panic!("join"),
        }
    }

    #[test]
    fn protected_decision_table() {
        use Tok::*;
        let all = [Missing, Valid, Expired, Forged, WrongKind];
        let inline = config();
        let clustered = config_with(json!({"refresh_cluster": "etls_refresh"}));
        for a in all {
            for r in all {
                let request = req("GET", "/dashboard?x=1", cookie(a, r).as_deref());
                let d = decide(&inline, &request, NOW);
                let expected = match (a, r) {
                    (Valid, _) => Outcome::SessionValid,
                    (_, Valid) => Outcome::RotatedInline,
                    (Missing, Missing) => Outcome::DeniedNoSession,
                    (_, Missing) => Outcome::DeniedNoRefresh,
                    _ => Outcome::DeniedRefreshInvalid,
                };
                assert_eq!(outcome(&d), expected, "inline: access {a:?}, refresh {r:?}");
                let d = decide(&clustered, &request, NOW);
                match (a, r) {
                    (Valid, _) => assert_eq!(outcome(&d), Outcome::SessionValid),
                    (_, Valid) => assert!(matches!(d, Decision::Call(ref c) if c.kind == CallKind::Refresh), "cluster: {a:?} {r:?}"),
                    _ => assert_eq!(outcome(&d), expected, "cluster: access {a:?}, refresh {r:?}"),
                }
                // The same cookies on a public path never matter.
                let public = decide(&inline, &req("GET", "/login?next=%2F", cookie(a, r).as_deref()), NOW);
                assert_eq!(outcome(&public), Outcome::Public);
            }
        }
    }

    #[test]
    fn a_request_whose_body_is_still_arriving_rotates_inline_even_with_a_refresh_cluster() {
        let clustered = config_with(json!({"refresh_cluster": "etls_refresh"}));
        let mut upload = req("PUT", "/files/big", cookie(Tok::Expired, Tok::Valid).as_deref());
        assert!(matches!(decide(&clustered, &upload, NOW), Decision::Call(_)), "no body: the call may wait");
        upload.end_of_stream = false;
        let d = decide(&clustered, &upload, NOW);
        let Decision::Forward(f) = d else { panic!("{d:?}") };
        assert_eq!(f.outcome, Outcome::RotatedInline);
        assert_eq!(f.set_cookies.len(), 2);
        assert!(f.header_edits.iter().any(|(n, v)| &**n == "cookie" && v.as_deref().is_some_and(|c| c.starts_with(b"theme=dark; accessTokenEtls="))));
        // A valid access token or a denial never needed a call anyway.
        assert_eq!(outcome(&decide(&clustered, &req("PUT", "/x", cookie(Tok::Expired, Tok::Forged).as_deref()), NOW)), Outcome::DeniedRefreshInvalid);
    }

    #[test]
    fn every_refresh_call_carries_the_session_key() {
        use crate::core::session_key::{self, HEADER};
        let key_of = |d: &Decision| match d {
            Decision::Call(c) => c.headers.iter().find(|(n, _)| n == HEADER).map(|(_, v)| v.clone()),
            other => panic!("not a call: {other:?}"),
        };
        // Without login_refresh_path: the ETLS refresh token is the session.
        let etls = config_with(json!({"refresh_cluster": "etls_refresh"}));
        let refresh_token = refresh(NOW + 100);
        let cookie = format!("accessTokenEtls={}; refreshTokenEtls={refresh_token}", access(NOW - 100));
        let d = decide(&etls, &req("GET", "/x", Some(&cookie)), NOW);
        assert_eq!(key_of(&d), Some(session_key::of(&etls, &refresh_token).to_hex()));
        // With it: the login API's refreshToken, whichever ETLS token rotates it.
        let upstream = config_with(json!({"refresh_cluster": "etls_refresh", "login_refresh_path": "/refresh"}));
        let keys: Vec<Option<String>> = [NOW + 100, NOW + 200]
            .iter()
            .map(|exp| {
                let cookie = format!("refreshTokenEtls={}; refreshToken=up-1", refresh(*exp));
                key_of(&decide(&upstream, &req("GET", "/x", Some(&cookie)), NOW))
            })
            .collect();
        let up_1 = Some(session_key::of(&upstream, "up-1").to_hex());
        assert_eq!(keys, [up_1.clone(), up_1]);
        assert_ne!(keys[0], key_of(&decide(&etls, &req("GET", "/x", Some(&cookie)), NOW)));
    }

    #[test]
    fn valid_access_forwards_with_identity_headers() {
        let d = decide(&config(), &req("GET", "/x", cookie(Tok::Valid, Tok::Missing).as_deref()), NOW);
        let Decision::Forward(f) = d else { panic!("{d:?}") };
        assert_eq!(f.header_edits, vec![
            edit("x-etls-user-id", Some(b"42")),
            edit("x-etls-role", Some(b"admin")),
        ]);
        assert!(f.set_cookies.is_empty());
        assert_eq!(f.identity, Some(PublishedIdentity { user_id: "42".into(), role: Some("admin".into()) }));
    }

    #[test]
    fn identity_is_published_only_with_a_verified_session() {
        let cfg = config();
        let published = |d: Decision| match d {
            Decision::Forward(f) => f.identity,
            other => panic!("{other:?}"),
        };
        let no_role = token(ACCESS_SECRET, json!({"userId": "u-7"}), Some(NOW), Some(NOW + 100));
        let d = decide(&cfg, &req("GET", "/x", Some(&format!("accessTokenEtls={no_role}"))), NOW);
        assert_eq!(published(d), Some(PublishedIdentity { user_id: "u-7".into(), role: None }));
        let d = decide(&cfg, &req("GET", "/x", cookie(Tok::Expired, Tok::Valid).as_deref()), NOW);
        assert_eq!(published(d), Some(PublishedIdentity { user_id: "42".into(), role: Some("admin".into()) }));
        // A public path with a valid session still publishes nothing: it was not checked.
        assert_eq!(published(decide(&cfg, &req("GET", "/login", cookie(Tok::Valid, Tok::Valid).as_deref()), NOW)), None);
        let mut preflight = req("OPTIONS", "/api/data", cookie(Tok::Valid, Tok::Valid).as_deref());
        preflight.has_origin = true;
        preflight.has_cors_request_method = true;
        assert_eq!(published(decide(&cfg, &preflight, NOW)), None);
    }

    #[test]
    fn public_paths_and_preflights_strip_identity_headers() {
        let cfg = config();
        let d = decide(&cfg, &req("GET", "/login", None), NOW);
        let Decision::Forward(f) = d else { panic!() };
        assert_eq!(f.header_edits, vec![edit("x-etls-user-id", None), edit("x-etls-role", None)]);
        let mut preflight = req("OPTIONS", "/api/data", None);
        preflight.has_origin = true;
        preflight.has_cors_request_method = true;
        assert_eq!(outcome(&decide(&cfg, &preflight, NOW)), Outcome::Preflight);
        let no_bypass = config_with(json!({"bypass_cors_preflight": false}));
        assert_eq!(outcome(&decide(&no_bypass, &preflight, NOW)), Outcome::DeniedNoSession);
        preflight.has_cors_request_method = false;
        assert_eq!(outcome(&decide(&cfg, &preflight, NOW)), Outcome::DeniedNoSession, "OPTIONS alone is no preflight");
    }

    #[test]
    fn expired_access_valid_refresh_rotates_both() {
        let cfg = config();
        let d = decide(&cfg, &req("POST", "/api/items", cookie(Tok::Expired, Tok::Valid).as_deref()), NOW);
        let Decision::Forward(f) = d else { panic!() };
        assert_eq!(f.outcome, Outcome::RotatedInline);
        assert_eq!(f.set_cookies.len(), 2);
        let new_access = cookies::value_in_set_cookie(&f.set_cookies[0], "accessTokenEtls").unwrap();
        let new_refresh = cookies::value_in_set_cookie(&f.set_cookies[1], "refreshTokenEtls").unwrap();
        assert_eq!(payload(new_access), json!({"userId": 42, "role": "admin", "iat": NOW, "auth_time": NOW - 10, "exp": NOW + 900}));
        assert_eq!(payload(new_refresh)["role"], json!("admin"));
        let forwarded_cookie = f.header_edits.iter().find(|(n, _)| &**n == "cookie").and_then(|(_, v)| v.clone()).map(|v| String::from_utf8(v.to_vec()).unwrap()).unwrap();
        assert_eq!(forwarded_cookie, format!("theme=dark; accessTokenEtls={new_access}; refreshTokenEtls={new_refresh}"));
        assert!(f.header_edits.contains(&edit("x-etls-user-id", Some(b"42"))));
    }

    #[test]
    fn empty_role_sets_an_empty_role_header_and_survives_rotation() {
        let cfg = config();
        let valid = token(ACCESS_SECRET, json!({"userId": 5, "role": ""}), None, Some(NOW + 100));
        let Decision::Forward(f) = decide(&cfg, &req("GET", "/x", Some(&format!("accessTokenEtls={valid}"))), NOW) else { panic!() };
        assert_eq!(f.outcome, Outcome::SessionValid);
        assert!(f.header_edits.contains(&edit("x-etls-role", Some(b""))), "{:?}", f.header_edits);
        let old_refresh = token(REFRESH_SECRET, json!({"userId": 5, "role": ""}), None, Some(NOW + 100));
        let Decision::Forward(f) = decide(&cfg, &req("GET", "/x", Some(&format!("refreshTokenEtls={old_refresh}"))), NOW) else { panic!() };
        assert_eq!(f.outcome, Outcome::RotatedInline);
        assert!(f.header_edits.contains(&edit("x-etls-role", Some(b""))));
        for sc in &f.set_cookies {
            let value = sc.split_once('=').unwrap().1.split(';').next().unwrap();
            assert_eq!(payload(value)["role"], json!(""), "{sc}");
        }
    }

    #[test]
    fn a_jose_token_that_would_grow_past_its_cookie_is_not_rotated() {
        // A jose-minted refresh token (no iat, no jti) with a long role verifies, but minted
        // again (iat, jti) its cookie would pass 4096 bytes: deny, with one log line.
        let cfg = config();
        let grown = |n: usize| {
            let identity = Identity::new(json!(5), Some(json!("r".repeat(n)))).unwrap();
            tokens::mint_pair(&cfg, &identity, NOW, NOW).unwrap().set_cookies(&cfg)[1].len()
        };
        let n = (2600..3100).find(|n| grown(*n) > 4096).unwrap();
        let jose = token(REFRESH_SECRET, json!({"userId": 5, "role": "r".repeat(n)}), None, Some(NOW + 100));
        assert!(jose.len() < 4096 - 64, "the old token fits its cookie");
        let request = req("GET", "/x", Some(&format!("refreshTokenEtls={jose}")));
        let Decision::Respond(r) = decide(&cfg, &request, NOW) else { panic!() };
        assert_eq!((r.status, r.outcome), (401, Outcome::DeniedRefreshInvalid));
        let line = r.warning().unwrap();
        assert!(line.starts_with("rotation refused") && line.contains("cookie refreshTokenEtls"), "{line}");
        let Decision::Respond(r) = decide(&cfg, &req("POST", "/api/auth/refreshtoken", Some(&format!("refreshTokenEtls={jose}"))), NOW) else { panic!() };
        assert_eq!((r.status, r.body.as_slice()), (401, &br#"{"error":"Invalid refresh token"}"#[..]));
        assert!(r.warning().unwrap().contains("cookie refreshTokenEtls"));
        assert!(!r.headers().iter().any(|(n, _)| n == "set-cookie"));
        // One role byte shorter than any growth past the limit still rotates.
        let fits = token(REFRESH_SECRET, json!({"userId": 5, "role": "r".repeat(n - 1)}), None, Some(NOW + 100));
        let d = decide(&cfg, &req("GET", "/x", Some(&format!("refreshTokenEtls={fits}"))), NOW);
        assert!(matches!(d, Decision::Forward(ref f) if f.outcome == Outcome::RotatedInline), "{d:?}");
    }

    #[test]
    fn deny_redirects_page_loads_and_answers_401_otherwise() {
        let cfg = config();
        let mut page = req("GET", "/dash?tab=2", None);
        page.accept = Some("text/html,*/*".into());
        let Decision::Respond(r) = decide(&cfg, &page, NOW) else { panic!() };
        assert_eq!(r.status, 302);
        assert!(r.headers().contains(&("location".to_owned(), "/login?next=%2Fdash%3Ftab%3D2".to_owned())));
        assert_eq!(r.headers().iter().filter(|(n, _)| n == "set-cookie").count(), 4);
        let Decision::Respond(r) = decide(&cfg, &req("GET", "/dash", None), NOW) else { panic!() };
        assert_eq!((r.status, r.body.as_slice()), (401, &br#"{"error":"Unauthorized"}"#[..]));
        let cleared: Vec<&String> = r.headers().iter().filter(|(n, _)| n == "set-cookie").map(|(_, v)| v).collect();
        assert_eq!(cleared, cfg.cookies.clear_all().iter().collect::<Vec<_>>());
    }

    #[test]
    fn refresh_cluster_reply_is_checked_before_use() {
        let cfg = config_with(json!({"refresh_cluster": "etls_refresh"}));
        let request = req("GET", "/x", cookie(Tok::Expired, Tok::Valid).as_deref());
        let pair = tokens::mint_pair(&cfg, &Identity::new(json!(42), Some(json!("admin"))).unwrap(), NOW, NOW).unwrap();
        let good = UpstreamReply {
            status: 200,
            headers: vec![
                ("set-cookie".into(), pair.set_cookies(&cfg)[0].clone().into_bytes()),
                ("set-cookie".into(), pair.set_cookies(&cfg)[1].clone().into_bytes()),
            ],
            ..UpstreamReply::default()
        };
        let Decision::Forward(f) = on_refresh_reply(&cfg, &request, Ok(good.clone()), NOW) else { panic!() };
        assert_eq!(f.outcome, Outcome::RotatedByCluster);
        assert_eq!(f.identity, Some(PublishedIdentity { user_id: "42".into(), role: Some("admin".into()) }));
        let failures = [
            Err(CallError::NoResponse),
            Ok(UpstreamReply { status: 401, ..good.clone() }),
            Ok(UpstreamReply { headers: vec![], ..good.clone() }),
            Ok(UpstreamReply { headers: vec![("set-cookie".into(), cfg.cookies.set_access(&access(NOW - 100), 900).into_bytes()), ("set-cookie".into(), pair.set_cookies(&cfg)[1].clone().into_bytes())], ..good.clone() }),
        ];
        for failure in failures {
            assert_eq!(outcome(&on_refresh_reply(&cfg, &request, failure, NOW)), Outcome::DeniedRefreshCallFailed);
        }
    }

    #[test]
    fn refresh_route_answers_per_contract() {
        let cfg = config();
        let body = |d: Decision| match d { Decision::Respond(r) => (r.status, String::from_utf8(r.body.clone()).unwrap(), r.headers().to_vec()), other => panic!("{other:?}") };
        let (s, b, _) = body(decide(&cfg, &req("POST", "/api/auth/refreshtoken", None), NOW));
        assert_eq!((s, b.as_str()), (401, r#"{"error":"No refresh token provided"}"#));
        let (s, b, _) = body(decide(&cfg, &req("POST", "/api/auth/refreshtoken", cookie(Tok::Valid, Tok::Expired).as_deref()), NOW));
        assert_eq!((s, b.as_str()), (401, r#"{"error":"Invalid refresh token"}"#));
        let (s, b, h) = body(decide(&cfg, &req("POST", "/api/auth/refreshtoken?x", cookie(Tok::Missing, Tok::Valid).as_deref()), NOW));
        assert_eq!((s, b.as_str()), (200, r#"{"message":"Tokens refreshed"}"#));
        assert_eq!(h.iter().filter(|(n, _)| n == "set-cookie").count(), 2);
        let (s, _, h) = body(decide(&cfg, &req("GET", "/api/auth/refreshtoken", None), NOW));
        assert_eq!(s, 405);
        assert!(h.contains(&("allow".to_owned(), "POST".to_owned())));
    }

    #[test]
    fn logout_clears_all_four_with_or_without_session() {
        let cfg = config();
        for c in [None, cookie(Tok::Valid, Tok::Valid)] {
            let Decision::Respond(r) = decide(&cfg, &req("POST", "/api/auth/logout", c.as_deref()), NOW) else { panic!() };
            assert_eq!((r.status, r.body.as_slice()), (200, &br#"{"message":"Logged out"}"#[..]));
            assert_eq!(r.headers().iter().filter(|(n, _)| n == "set-cookie").count(), 4);
        }
    }
}
