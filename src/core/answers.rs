//! The answers a session's request ends in, built in one place for every route and rotation
//! that reaches them: forward (untouched, with a valid session's identity, or rotated, with new
//! cookies and the Cookie header rewritten), deny (302 to the login page or 401, clearing the
//! cookies), the refresh route's 200 and 401s, 405 and 500. Builders of a `Decision` only: they
//! decide nothing and call nothing above `tokens`. No proxy_wasm here.

use std::rc::Rc;

use crate::config::Config;
use crate::core::cookies;
use crate::core::decision::{Decision, Forward, HeaderEdit, LocalReply, Outcome, PublishedIdentity};
use crate::core::model::Identity;
use crate::core::paths;
use crate::core::request::RequestView;
use crate::core::tokens;
use crate::error::TokenError;

/// Forward untouched but for the identity headers, which only the filter may set.
pub fn pass(cfg: &Config, outcome: Outcome) -> Decision {
    Decision::Forward(Forward { outcome, header_edits: identity_edits(cfg, None), set_cookies: Vec::new(), identity: None })
}

/// Forward a request whose access token verified, with its identity (already header text).
pub(crate) fn valid(cfg: &Config, identity: PublishedIdentity) -> Decision {
    Decision::Forward(Forward {
        outcome: Outcome::SessionValid,
        header_edits: edits_for(cfg, Some(&identity)),
        set_cookies: Vec::new(),
        identity: Some(identity),
    })
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

pub(crate) fn internal_error(cfg: &Config) -> Decision {
    reply(
        LocalReply::json(Outcome::InternalError, 500, r#"{"error":"Internal error"}"#)
            .with_cookies(cfg.cookies.clear_all()),
    )
}

/// A local reply as the decision.
pub(crate) fn reply(answer: LocalReply) -> Decision {
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
