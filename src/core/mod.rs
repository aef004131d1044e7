//! The pure core: it decides, the shell carries out. Plain data in (`Config`, `RequestView`,
//! `now` in Unix seconds), a `Decision` out. No proxy_wasm here and no clock: it runs under
//! plain `cargo test` and can be fuzzed.

pub mod cache;
pub mod cookies;
pub mod decision;
pub mod headers;
pub mod login;
pub mod paths;
pub mod request;
pub mod session;
pub mod tokens;
pub mod upstream;

use crate::config::Config;
use crate::error::CallError;
use cache::TokenCache;
use decision::{CallKind, Decision, UpstreamReply};
use request::RequestView;

/// Decides what to do with a request once its headers are in. The cases, in order:
/// 1. CORS preflight while `bypass_cors_preflight`: forward unchecked.
/// 2. `login_path`: `POST` reads the body (or answers 400/413 at once), else 405.
/// 3. `refresh_path`: `POST` with a valid refresh token gets new tokens, else 401; other methods 405.
/// 4. `logout_path`: `POST` gets 200 and four clearing cookies; other methods 405.
/// 5. A public path (canonical, `P` or under `P/`): forward untouched.
/// 6. Otherwise protected: a valid access token forwards with identity headers; else a valid
///    refresh token rotates (inline, or `Call` to the refresh cluster); else deny (302 for page
///    loads, 401 otherwise, four clearing cookies).
///
/// Every forwarded request has client-sent identity headers removed or replaced.
/// Verifies every token from scratch; the shell uses [`decide_cached`].
pub fn decide(cfg: &Config, req: &RequestView, now: u64) -> Decision {
    decide_cached(cfg, &mut TokenCache::new(0), req, now)
}

/// [`decide`], with tokens looked up in (and verified ones added to) `cache`, which must have
/// been filled under this `cfg` (the shell keeps one per VM and rebuilds it on configure).
/// The decision is the same as [`decide`]'s; only the HS256 work is skipped on a hit.
pub fn decide_cached(cfg: &Config, cache: &mut TokenCache, req: &RequestView, now: u64) -> Decision {
    let path = req.path_only();
    if cfg.bypass_cors_preflight && req.is_cors_preflight() {
        return session::pass(cfg, decision::Outcome::Preflight);
    }
    if path == cfg.routes.login {
        return login::on_headers(cfg, req);
    }
    if path == cfg.routes.refresh {
        return session::refresh_route(cfg, cache, req, now);
    }
    if path == cfg.routes.logout {
        return session::logout_route(cfg, req);
    }
    if paths::is_public(&cfg.public_paths, path) {
        return session::pass(cfg, decision::Outcome::Public);
    }
    session::protect(cfg, cache, req, now)
}

/// Decides what to do with the answer to a dispatched call of `kind` for request `req`.
/// `reply` is `Err` when the call gave no answer (dispatch refused, timeout, reset).
/// Login: see [`login::on_reply`]. Refresh: see [`session::on_refresh_reply`].
pub fn on_reply(
    cfg: &Config,
    kind: CallKind,
    req: &RequestView,
    reply: Result<UpstreamReply, CallError>,
    now: u64,
) -> Decision {
    match kind {
        CallKind::Login => login::on_reply(cfg, reply, now),
        CallKind::Refresh => session::on_refresh_reply(cfg, req, reply, now),
    }
}

/// The answer when the filter has no configuration: fail closed.
pub fn unconfigured() -> Decision {
    Decision::Respond(decision::LocalReply::json(
        decision::Outcome::InternalError,
        500,
        r#"{"error":"Authentication filter unavailable"}"#,
    ))
}

/// The answer to an internal error in the shell (a host call failed): fail closed.
pub fn internal_error() -> Decision {
    Decision::Respond(decision::LocalReply::json(
        decision::Outcome::InternalError,
        500,
        r#"{"error":"Internal error"}"#,
    ))
}

#[cfg(test)]
pub(crate) mod testing;
