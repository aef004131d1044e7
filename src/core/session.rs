//! Protected requests (verify, rotate, deny) and the refresh and logout routes.
//! No proxy_wasm here.

use crate::config::Config;
use crate::core::cookies;
use crate::core::decision::{Decision, Forward, LocalReply, Outcome, UpstreamReply};
use crate::core::paths;
use crate::core::request::RequestView;
use crate::core::tokens::{self, Identity, TokenKind};
use crate::core::upstream;
use crate::error::{CallError, TokenError};

/// Forward untouched but for the identity headers, which only the filter may set.
pub fn pass(cfg: &Config, outcome: Outcome) -> Decision {
    Decision::Forward(Forward { outcome, header_edits: identity_edits(cfg, None), set_cookies: Vec::new() })
}

/// A protected request: verify, else rotate, else deny (see `core::decide`).
pub fn protect(cfg: &Config, req: &RequestView, now: u64) -> Decision {
    let cookie_header = req.cookie.as_deref().unwrap_or_default();
    let names = &cfg.cookies.names;
    let access = cookies::find(cookie_header, &names.access);
    if let Some(token) = access {
        if let Ok(identity) = tokens::verify(cfg, TokenKind::Access, token, now) {
            return Decision::Forward(Forward {
                outcome: Outcome::SessionValid,
                header_edits: identity_edits(cfg, Some(&identity)),
                set_cookies: Vec::new(),
            });
        }
    }
    let Some(refresh) = cookies::find(cookie_header, &names.refresh) else {
        let outcome = if access.is_some() { Outcome::DeniedNoRefresh } else { Outcome::DeniedNoSession };
        return deny(cfg, req, outcome);
    };
    let identity = match tokens::verify(cfg, TokenKind::Refresh, refresh, now) {
        Ok(identity) => identity,
        Err(_) => return deny(cfg, req, Outcome::DeniedRefreshInvalid),
    };
    if let Some(call) = upstream::refresh_call(cfg, cookie_header) {
        return Decision::Call(call);
    }
    match tokens::mint_pair(cfg, &identity, now) {
        Ok(pair) => forward_rotated(cfg, req, &identity, &pair.access, &pair.refresh, Outcome::RotatedInline),
        Err(_) => deny(cfg, req, Outcome::InternalError),
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
    let Ok((access, refresh)) = upstream::parse_refresh_reply(cfg, &reply) else {
        return deny(cfg, req, Outcome::DeniedRefreshCallFailed);
    };
    let identity = tokens::verify(cfg, TokenKind::Access, access, now);
    let refresh_ok = tokens::verify(cfg, TokenKind::Refresh, refresh, now).is_ok();
    match identity {
        Ok(identity) if refresh_ok => {
            forward_rotated(cfg, req, &identity, access, refresh, Outcome::RotatedByCluster)
        }
        _ => deny(cfg, req, Outcome::DeniedRefreshCallFailed),
    }
}

/// `POST refresh_path`: new tokens for a valid refresh token.
pub fn refresh_route(cfg: &Config, req: &RequestView, now: u64) -> Decision {
    if req.method != "POST" {
        return method_not_allowed();
    }
    let cookie_header = req.cookie.as_deref().unwrap_or_default();
    let Some(token) = cookies::find(cookie_header, &cfg.cookies.names.refresh) else {
        return reply(LocalReply::json(Outcome::RefreshRejected, 401, r#"{"error":"No refresh token provided"}"#));
    };
    let minted = tokens::verify(cfg, TokenKind::Refresh, token, now)
        .and_then(|identity| tokens::mint_pair(cfg, &identity, now));
    match minted {
        Ok(pair) => reply(
            LocalReply::json(Outcome::Refreshed, 200, r#"{"message":"Tokens refreshed"}"#)
                .with_cookies(&[cfg.cookies.set_access(&pair.access), cfg.cookies.set_refresh(&pair.refresh)]),
        ),
        Err(TokenError::Mint) => internal_error(cfg),
        Err(_) => reply(LocalReply::json(Outcome::RefreshRejected, 401, r#"{"error":"Invalid refresh token"}"#)),
    }
}

/// `POST logout_path`: clear all four cookies, session or not.
pub fn logout_route(cfg: &Config, req: &RequestView) -> Decision {
    if req.method != "POST" {
        return method_not_allowed();
    }
    reply(LocalReply::json(Outcome::LoggedOut, 200, r#"{"message":"Logged out"}"#).with_cookies(cfg.cookies.clear_all()))
}

/// 405 with `Allow: POST`.
pub fn method_not_allowed() -> Decision {
    reply(LocalReply::json(Outcome::MethodNotAllowed, 405, r#"{"error":"Method not allowed"}"#).with_header("allow", "POST"))
}

/// Deny: a page load (Accept lists text/html) is sent to the login page with `next`, any other
/// request gets 401; both clear the four cookies.
pub fn deny(cfg: &Config, req: &RequestView, outcome: Outcome) -> Decision {
    let answer = if req.accepts_html() {
        LocalReply { outcome, status: 302, headers: Vec::new(), body: Vec::new() }
            .with_header("location", paths::login_redirect(&cfg.login_page, &req.path))
    } else {
        LocalReply::json(outcome, 401, r#"{"error":"Unauthorized"}"#)
    };
    reply(answer.with_header("cache-control", "no-store").with_cookies(cfg.cookies.clear_all()))
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

/// Forward after a rotation: identity headers from the new tokens, the `Cookie` header carrying
/// them to the app, and both as `Set-Cookie` on the response.
fn forward_rotated(
    cfg: &Config,
    req: &RequestView,
    identity: &Identity,
    access: &str,
    refresh: &str,
    outcome: Outcome,
) -> Decision {
    let cookie_header = req.cookie.as_deref().unwrap_or_default();
    let mut header_edits = identity_edits(cfg, Some(identity));
    header_edits.push((
        "cookie".to_owned(),
        Some(cookies::with_session(cookie_header, &cfg.cookies.names, access, refresh)),
    ));
    Decision::Forward(Forward {
        outcome,
        header_edits,
        set_cookies: vec![cfg.cookies.set_access(access), cfg.cookies.set_refresh(refresh)],
    })
}

/// Identity header edits: set from `identity`, or removed (client-sent values never pass).
fn identity_edits(cfg: &Config, identity: Option<&Identity>) -> Vec<(String, Option<String>)> {
    vec![
        (cfg.identity_headers.user_id.clone(), identity.and_then(Identity::user_id_header)),
        (cfg.identity_headers.role.clone(), identity.and_then(Identity::role_header)),
    ]
}
