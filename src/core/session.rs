//! Protected requests (verify, rotate, deny) and the refresh route.
//! No proxy_wasm here.

use std::rc::Rc;

use crate::config::Config;
use crate::core::cache::TokenCache;
use crate::core::cookies;
use crate::core::decision::{HeaderEdit, Decision, Forward, LocalReply, Outcome, PublishedIdentity, UpstreamReply};
use crate::core::lifetime;
use crate::core::paths;
use crate::core::request::RequestView;
use crate::core::model::{Identity, TokenKind};
use crate::core::tokens;
use crate::core::upstream;
use crate::core::decision::Route;
use crate::core::upstream_session;
use crate::error::{CallError, TokenError};

/// Forward untouched but for the identity headers, which only the filter may set.
pub fn pass(cfg: &Config, outcome: Outcome) -> Decision {
    Decision::Forward(Forward { outcome, header_edits: identity_edits(cfg, None), set_cookies: Vec::new(), identity: None })
}

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
                return Decision::Forward(Forward {
                    outcome: Outcome::SessionValid,
                    header_edits: edits_for(cfg, Some(&identity)),
                    set_cookies: Vec::new(),
                    identity: Some(identity),
                });
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
    // Every rotation carries the session's auth_time over (or starts it, for a token that
    // tells none); one with no second of the session left ends it (`core::lifetime`).
    let auth_time = lifetime::rotation_auth_time(window.auth_time, now);
    if lifetime::pair_times(cfg, auth_time, now).is_none() {
        return deny(cfg, req, Outcome::DeniedMaxSession);
    }
    // Built only when dispatched: it computes the session key (one HMAC) once per rotation.
    let call = || upstream::refresh_call(cfg, cookie_header);
    if let Some(decision) = upstream_session::rotation(cfg, Route::Protected, req, &identity, auth_time) {
        // With a refresh cluster, its refresh route asks the login API (and shares the call);
        // a request that cannot be held that long rotates inline (see `Rotation::can_wait`).
        return match decision {
            Decision::Join(rotation) if rotation.can_wait => call().map_or(Decision::Join(rotation), Decision::Call),
            decision => decision,
        };
    }
    // A request whose body is still arriving (and is not known to be small) is rotated inline
    // even with a refresh cluster: held while a call is out, its body would be buffered, and
    // past Envoy's buffer limit Envoy would answer 413 (SPEC: a rotation never turns a good
    // request into an error).
    if upstream_session::can_hold_body(cfg, req) {
        if let Some(call) = call() {
            return Decision::Call(call);
        }
    }
    match tokens::mint_pair(cfg, &identity, auth_time, now) {
        Ok(pair) => forward_rotated(cfg, req, &identity, NewTokens::minted(&pair), None, Outcome::RotatedInline),
        Err(error) => deny(cfg, req, mint_failure(error)),
    }
}

/// The denial's outcome when minting failed: the session's end, or an internal error.
pub(crate) fn mint_failure(error: TokenError) -> Outcome {
    match error {
        TokenError::SessionEnded => Outcome::DeniedMaxSession,
        _ => Outcome::InternalError,
    }
}

/// New ETLS tokens to hand out, with how long each cookie lives (its token's `exp - iat`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct NewTokens<'t> {
    pub access: &'t str,
    pub refresh: &'t str,
    pub access_max_age: u64,
    /// Also the `Max-Age` of the login API's two cookies set with them.
    pub refresh_max_age: u64,
}

impl<'t> NewTokens<'t> {
    /// A pair this filter just minted.
    pub fn minted(pair: &'t tokens::TokenPair) -> Self {
        NewTokens {
            access: &pair.access,
            refresh: &pair.refresh,
            access_max_age: pair.times.access_max_age(),
            refresh_max_age: pair.times.refresh_max_age(),
        }
    }
}

/// The refresh cluster's answer: new tokens that verify go on, anything else denies.
pub fn on_refresh_reply(
    cfg: &Config,
    req: &RequestView,
    reply: Result<UpstreamReply, CallError>,
    now: u64,
) -> Decision {
    let Ok(reply) = reply else {
        return deny(cfg, req, Outcome::DeniedRefreshCallFailed);
    };
    let cookies = match upstream::parse_refresh_reply(cfg, &reply) {
        Ok(cookies) => cookies,
        // The refresh route's answer when the login API ended the session.
        Err(CallError::UpstreamStatus(401)) if reply.body == br#"{"error":"Session ended"}"# => {
            return deny(cfg, req, Outcome::DeniedSessionEnded);
        }
        Err(_) => return deny(cfg, req, Outcome::DeniedRefreshCallFailed),
    };
    let access = tokens::verify_session(cfg, TokenKind::Access, cookies.access, now);
    let refresh = tokens::verify_session(cfg, TokenKind::Refresh, cookies.refresh, now);
    match (access, refresh) {
        (Ok(access), Ok(refresh)) => {
            // The cookies live as long as the tokens they carry, as when minted here.
            let new = NewTokens {
                access: cookies.access,
                refresh: cookies.refresh,
                access_max_age: lifetime::max_age_of(&access.times, now),
                refresh_max_age: lifetime::max_age_of(&refresh.times, now),
            };
            forward_rotated(cfg, req, &access.identity, new, cookies.upstream, Outcome::RotatedByCluster)
        }
        _ => deny(cfg, req, Outcome::DeniedRefreshCallFailed),
    }
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
    let minted = tokens::verify_cached(cfg, cache, TokenKind::Refresh, token, now).and_then(|(identity, window)| {
        let auth_time = lifetime::rotation_auth_time(window.auth_time, now);
        if lifetime::pair_times(cfg, auth_time, now).is_none() {
            return Err(TokenError::SessionEnded);
        }
        match upstream_session::rotation(cfg, Route::RefreshRoute, req, &identity, auth_time) {
            Some(decision) => Ok(decision),
            None => tokens::mint_pair(cfg, &identity, auth_time, now).map(|pair| refreshed(cfg, &pair, None)),
        }
    });
    match minted {
        Ok(decision) => decision,
        Err(TokenError::Mint) => internal_error(cfg),
        Err(TokenError::SessionEnded) => invalid_refresh_token(Outcome::DeniedMaxSession),
        Err(_) => invalid_refresh_token(Outcome::RefreshRejected),
    }
}

/// The refresh route's 401 for a refresh token that is invalid, expired, or of a session past
/// its absolute lifetime (`outcome` tells which, for the metrics).
pub(crate) fn invalid_refresh_token(outcome: Outcome) -> Decision {
    reply(LocalReply::json(outcome, 401, r#"{"error":"Invalid refresh token"}"#))
}

/// 405 with `Allow: POST`.
pub fn method_not_allowed() -> Decision {
    reply(LocalReply::json(Outcome::MethodNotAllowed, 405, r#"{"error":"Method not allowed"}"#).with_header("allow", "POST"))
}

/// Deny: a page load (Accept lists text/html) is sent to the login page with `next`, any other
/// request gets 401; both clear the four cookies.
pub fn deny(cfg: &Config, req: &RequestView, outcome: Outcome) -> Decision {
    let answer = if req.accepts_html() {
        LocalReply::empty(outcome, 302)
            .with_header("location", paths::login_redirect(&cfg.login_page, &req.path))
    } else {
        LocalReply::json(outcome, 401, r#"{"error":"Unauthorized"}"#)
    };
    reply(answer.with_cookies(cfg.cookies.clear_all()))
}

fn internal_error(cfg: &Config) -> Decision {
    reply(
        LocalReply::json(Outcome::InternalError, 500, r#"{"error":"Internal error"}"#)
            .with_cookies(cfg.cookies.clear_all()),
    )
}

fn reply(answer: LocalReply) -> Decision {
    Decision::Respond(answer)
}

/// The refresh route's 200 with the new ETLS pair and, when the login API renewed them, its
/// two tokens (`upstream` = `(accessToken, refreshToken)`), each its own `Set-Cookie`.
pub(crate) fn refreshed(cfg: &Config, pair: &tokens::TokenPair, upstream: Option<(&str, &str)>) -> Decision {
    let mut set_cookies = Vec::with_capacity(4);
    if let Some((access, refresh)) = upstream {
        set_cookies.extend(cfg.cookies.set_upstream(access, refresh, pair.times.refresh_max_age()));
    }
    set_cookies.extend(pair.set_cookies(cfg));
    if let Some((name, size)) = cfg.cookies.oversized(&set_cookies) {
        return reply(
            LocalReply::json(Outcome::RefreshRejected, 401, r#"{"error":"Invalid refresh token"}"#)
                .with_warning(too_large_to_rotate(name, size)),
        );
    }
    reply(LocalReply::json(Outcome::Refreshed, 200, r#"{"message":"Tokens refreshed"}"#).with_cookies(&set_cookies))
}

/// Forward after a rotation: identity headers from the new tokens, the `Cookie` header carrying
/// them to the app, and each as `Set-Cookie` on the response. `upstream` is the login API's
/// renewed `(accessToken, refreshToken)`, when it renewed them (their cookies live as long as
/// the new refresh token).
pub(crate) fn forward_rotated(
    cfg: &Config,
    req: &RequestView,
    identity: &Identity,
    new: NewTokens,
    upstream: Option<(&str, &str)>,
    outcome: Outcome,
) -> Decision {
    let NewTokens { access, refresh, .. } = new;
    let cookie_header = req.cookie.as_deref().unwrap_or_default();
    let names = &cfg.cookies.names;
    let mut header_edits = identity_edits(cfg, Some(identity));
    let mut set_cookies = Vec::with_capacity(4);
    let rewritten = match upstream {
        Some((up_access, up_refresh)) => {
            set_cookies.extend(cfg.cookies.set_upstream(up_access, up_refresh, new.refresh_max_age));
            cookies::with_values(cookie_header, &[
                (&names.upstream_access, up_access),
                (&names.upstream_refresh, up_refresh),
                (&names.access, access),
                (&names.refresh, refresh),
            ])
        }
        None => cookies::with_values(cookie_header, &[(&names.access, access), (&names.refresh, refresh)]),
    };
    header_edits.push(("cookie".into(), Some(rewritten.into())));
    set_cookies.push(cfg.cookies.set_access(access, new.access_max_age));
    set_cookies.push(cfg.cookies.set_refresh(refresh, new.refresh_max_age));
    if let Some((name, size)) = cfg.cookies.oversized(&set_cookies) {
        return match deny(cfg, req, Outcome::DeniedRefreshInvalid) {
            Decision::Respond(answer) => Decision::Respond(answer.with_warning(too_large_to_rotate(name, size))),
            other => other,
        };
    }
    Decision::Forward(Forward { outcome, header_edits, set_cookies, identity: published(identity) })
}

/// The log line when new tokens would not fit their cookie. The filter never mints such tokens
/// from claims it took at login; a token minted elsewhere (jose, without `iat` or `jti`) with
/// claims near the limit can grow when it is minted again.
fn too_large_to_rotate(name: &str, size: usize) -> String {
    format!(
        "rotation refused: the session's claims would make the Set-Cookie of cookie {name} {size} bytes, over the {} that browsers keep",
        cookies::MAX_SET_COOKIE_BYTES
    )
}

/// The identity for Envoy's filter state: the same text as the identity headers.
fn published(identity: &Identity) -> Option<PublishedIdentity> {
    Some(identity.published())
}

/// Identity header edits: set from `identity`, or removed (client-sent values never pass).
pub(crate) fn identity_edits(cfg: &Config, identity: Option<&Identity>) -> Vec<HeaderEdit> {
    let published = identity.and_then(published);
    edits_for(cfg, published.as_ref())
}

/// The identity header edits of an identity already in header text.
fn edits_for(cfg: &Config, published: Option<&PublishedIdentity>) -> Vec<HeaderEdit> {
    let user_id = published.map(|p| Rc::<[u8]>::from(Rc::clone(&p.user_id)));
    let role = published.and_then(|p| p.role.clone()).map(Rc::<[u8]>::from);
    vec![(Rc::clone(&cfg.identity_headers.user_id), user_id), (Rc::clone(&cfg.identity_headers.role), role)]
}

#[cfg(test)]
mod tests {
    use super::*;
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
