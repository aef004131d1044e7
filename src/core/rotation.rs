//! Rotation, in one place (docs/sessions.md, "Rotation" and "Upstream session"): what a request
//! whose refresh token verified gets. The session's `auth_time` is carried over (or its end
//! denies); then, in this order, with `login_refresh_path` the request joins the one login API
//! call of its session (`Decision::Join`, settled by [`settle`] once the answer is in), with
//! `refresh_cluster` it asks that cluster (`Decision::Call`, answered in [`on_refresh_reply`]),
//! and otherwise new tokens are minted inline. The answers themselves are `core::answers`'s.
//! `core::session` calls in here; the per-VM store of login API calls
//! (`core::upstream_session`) calls [`settle`]. No proxy_wasm here and no clock.

use crate::config::Config;
use crate::core::answers::{self, NewTokens};
use crate::core::cookies;
use crate::core::decision::{Decision, LocalReply, Outcome, Rotation, Route, UpstreamReply};
use crate::core::lifetime;
use crate::core::model::{Identity, TokenKind, Window};
use crate::core::request::RequestView;
use crate::core::tokens;
use crate::core::upstream::{self, RefreshAnswer};
use crate::error::{CallError, TokenError};

/// A protected request whose access token did not verify and whose refresh token verified (to
/// `identity`, valid in `window`): join the login API call, ask the refresh cluster, or rotate
/// inline; deny when the session has no second left.
pub(crate) fn protected(cfg: &Config, req: &RequestView, identity: &Identity, window: Window, now: u64) -> Decision {
    let cookie_header = req.cookie.as_deref().unwrap_or_default();
    // Every rotation carries the session's auth_time over (or starts it, for a token that
    // tells none); one with no second of the session left ends it (`core::lifetime`).
    let auth_time = lifetime::rotation_auth_time(window.auth_time, now);
    if lifetime::pair_times(cfg, auth_time, now).is_none() {
        return answers::deny(cfg, req, Outcome::DeniedMaxSession);
    }
    // Built only when dispatched: it computes the session key (one HMAC) once per rotation.
    let call = || upstream::refresh_call(cfg, cookie_header);
    if let Some(decision) = rotation(cfg, Route::Protected, req, identity, auth_time) {
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
    if can_hold_body(cfg, req) {
        if let Some(call) = call() {
            return Decision::Call(call);
        }
    }
    match tokens::mint_pair(cfg, identity, auth_time, now) {
        Ok(pair) => answers::forward_rotated(cfg, req, identity, NewTokens::minted(&pair), None, Outcome::RotatedInline),
        Err(error) => answers::deny(cfg, req, answers::mint_failure(error)),
    }
}


/// `POST refresh_path` with a refresh token that verified (to `identity`, valid in `window`):
/// join the login API call, or mint new tokens for the refresh route's 200. Errs with
/// [`TokenError::SessionEnded`] when the session has no second left, or `Mint`.
pub(crate) fn refresh_route(cfg: &Config, req: &RequestView, identity: &Identity, window: Window, now: u64) -> Result<Decision, TokenError> {
    let auth_time = lifetime::rotation_auth_time(window.auth_time, now);
    if lifetime::pair_times(cfg, auth_time, now).is_none() {
        return Err(TokenError::SessionEnded);
    }
    match rotation(cfg, Route::RefreshRoute, req, identity, auth_time) {
        Some(decision) => Ok(decision),
        None => tokens::mint_pair(cfg, identity, auth_time, now).map(|pair| answers::refreshed(cfg, &pair, None)),
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
        return answers::deny(cfg, req, Outcome::DeniedRefreshCallFailed);
    };
    let cookies = match upstream::parse_refresh_reply(cfg, &reply) {
        Ok(cookies) => cookies,
        // The refresh route's answer when the login API ended the session.
        Err(CallError::UpstreamStatus(401)) if reply.body == br#"{"error":"Session ended"}"# => {
            return answers::deny(cfg, req, Outcome::DeniedSessionEnded);
        }
        Err(_) => return answers::deny(cfg, req, Outcome::DeniedRefreshCallFailed),
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
            answers::forward_rotated(cfg, req, &access.identity, new, cookies.upstream, Outcome::RotatedByCluster)
        }
        _ => answers::deny(cfg, req, Outcome::DeniedRefreshCallFailed),
    }
}

/// The decision for `rotation` given the login API's `answer` (docs/sessions.md, Upstream session):
/// renewed: four new cookies (identity from `userData` when sent), ended: deny / 401 "Session
/// ended" with four clearing cookies, outage: the rotation as without `login_refresh_path`.
/// `now` is Unix seconds.
pub fn settle(cfg: &Config, rotation: &Rotation, answer: &RefreshAnswer, now: u64) -> Decision {
    let req = &rotation.request;
    match answer {
        RefreshAnswer::Ended => ended(cfg, rotation),
        RefreshAnswer::Outage => {
            let pair = match tokens::mint_pair(cfg, &rotation.identity, rotation.auth_time, now) {
                Ok(pair) => pair,
                Err(error) => return mint_failed(cfg, rotation, error),
            };
            match rotation.route {
                Route::Protected => answers::forward_rotated(
                    cfg,
                    req,
                    &rotation.identity,
                    NewTokens::minted(&pair),
                    None,
                    Outcome::RotatedInline,
                ),
                Route::RefreshRoute => answers::refreshed(cfg, &pair, None),
            }
        }
        RefreshAnswer::Renewed(renewal) => {
            let identity = renewal.identity.as_ref().unwrap_or(&rotation.identity);
            let upstream_refresh = renewal.refresh_token.as_deref().unwrap_or(&rotation.upstream_refresh);
            let upstream = Some((renewal.access_token.as_str(), upstream_refresh));
            let renewed = tokens::mint_pair(cfg, identity, rotation.auth_time, now).map(|pair| match rotation.route {
                Route::Protected => answers::forward_rotated(
                    cfg,
                    req,
                    identity,
                    NewTokens::minted(&pair),
                    upstream,
                    Outcome::RotatedInline,
                ),
                Route::RefreshRoute => answers::refreshed(cfg, &pair, upstream),
            });
            match renewed {
                Ok(decision @ Decision::Forward(_)) => decision,
                Ok(Decision::Respond(reply)) if reply.status == 200 => Decision::Respond(reply),
                Err(error @ TokenError::SessionEnded) => mint_failed(cfg, rotation, error),
                // `userData` whose claims make a token too large for its cookie (the upstream
                // tokens themselves were checked when the answer was read): a malformed answer,
                // so the rotation goes on as in an outage, with the session's own identity.
                _ => settle(cfg, rotation, &RefreshAnswer::Outage, now),
            }
        }
    }
}

/// The answer when no tokens could be minted: the session reached `auth_time + max_session_s`
/// while the login API was asked (deny / refresh route 401), or an internal error.
fn mint_failed(cfg: &Config, rotation: &Rotation, error: TokenError) -> Decision {
    match (rotation.route, error) {
        (Route::RefreshRoute, TokenError::SessionEnded) => answers::invalid_refresh_token(Outcome::DeniedMaxSession),
        (_, error) => answers::deny(cfg, &rotation.request, answers::mint_failure(error)),
    }
}

fn ended(cfg: &Config, rotation: &Rotation) -> Decision {
    match rotation.route {
        Route::Protected => answers::deny(cfg, &rotation.request, Outcome::DeniedSessionEnded),
        Route::RefreshRoute => Decision::Respond(
            LocalReply::json(Outcome::DeniedSessionEnded, 401, r#"{"error":"Session ended"}"#)
                .with_cookies(cfg.cookies.clear_all()),
        ),
    }
}

/// The answer for a rotation without an upstream `refreshToken` cookie: the session cannot be
/// confirmed, deny (the refresh route: 401 "Session ended").
pub fn unconfirmed(cfg: &Config, route: Route, req: &RequestView) -> Decision {
    match route {
        Route::Protected => answers::deny(cfg, req, Outcome::DeniedNoUpstreamSession),
        Route::RefreshRoute => Decision::Respond(
            LocalReply::json(Outcome::DeniedNoUpstreamSession, 401, r#"{"error":"Session ended"}"#)
                .with_cookies(cfg.cookies.clear_all()),
        ),
    }
}

/// The decision for a protected request or the refresh route once its ETLS refresh token
/// verified, when `login_refresh_path` is set: no upstream `refreshToken` denies, else join the
/// shared call. `None` when `login_refresh_path` is not set. `auth_time` is the session's, for
/// the tokens the rotation mints.
pub fn rotation(cfg: &Config, route: Route, req: &RequestView, identity: &Identity, auth_time: u64) -> Option<Decision> {
    cfg.login_refresh_path.as_ref()?;
    let cookie_header = req.cookie.as_deref().unwrap_or_default();
    let Some(upstream_refresh) = cookies::find(cookie_header, &cfg.cookies.names.upstream_refresh) else {
        return Some(unconfirmed(cfg, route, req));
    };
    Some(Decision::Join(Box::new(Rotation {
        route,
        request: req.clone().into_owned(),
        identity: identity.clone(),
        auth_time,
        upstream_refresh: upstream_refresh.to_owned(),
        can_wait: can_hold_body(cfg, req),
    })))
}

/// True when the request may be held while the login API is asked: no body follows, or its
/// `Content-Length` is at most `max_login_body_bytes` (the body size the filter already holds
/// for logins), far below Envoy's buffer limit.
pub fn can_hold_body(cfg: &Config, req: &RequestView) -> bool {
    req.end_of_stream || req.content_length.is_some_and(|len| len <= cfg.max_login_body_bytes as u64)
}
