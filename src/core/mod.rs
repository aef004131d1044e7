//! The pure core: it decides, the shell carries out. Plain data in (`Config`, `RequestView`,
//! `now` in Unix seconds), a `Decision` out. No proxy_wasm here and no clock: it runs under
//! plain `cargo test` and can be fuzzed.

pub mod answers;
pub mod cache;
pub mod cookies;
pub mod decision;
pub mod headers;
pub mod lifetime;
pub mod login;
pub mod logout;
pub mod model;
pub mod origin;
pub mod paths;
pub mod request;
pub mod rotation;
pub mod session;
pub mod session_key;
pub mod shared_calls;
pub mod tokens;
pub mod upstream;
pub mod upstream_session;
pub mod waiting;

#[cfg(test)]
mod cross_vm_tests;

use crate::config::Config;
use crate::error::CallError;
use cache::TokenCache;
use decision::{CallKind, Decision, UpstreamReply};
use request::RequestView;

/// Decides what to do with a request once its headers are in. The cases, in order:
/// 1. CORS preflight while `bypass_cors_preflight`: forward unchecked.
/// 2. `login_path`: another method 405, a cross-origin browser request 403 (`origin`), else
///    `POST` reads the body (or answers 415/413/400 at once).
/// 3. `refresh_path`: 405, 403 as for login; `POST` with a valid refresh token gets new tokens,
///    else 401.
/// 4. `logout_path`: 405, 403 as for login; `POST` gets 200 and four clearing cookies, after a
///    call to the login API with `login_logout_path` and a `refreshToken` cookie (`logout`).
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
        return answers::pass(cfg, decision::Outcome::Preflight);
    }
    if path == cfg.routes.login {
        return login::on_headers(cfg, req);
    }
    if path == cfg.routes.refresh {
        return session::refresh_route(cfg, cache, req, now);
    }
    if path == cfg.routes.logout {
        return logout::on_request(cfg, req);
    }
    if paths::is_public(&cfg.public_paths, path) {
        return answers::pass(cfg, decision::Outcome::Public);
    }
    session::protect(cfg, cache, req, now)
}

/// Decides what to do with the answer to a dispatched call of `kind` for request `req`.
/// `reply` is `Err` when the call gave no answer (dispatch refused, timeout, reset).
/// Login: see [`login::on_reply`]. Refresh: see [`rotation::on_refresh_reply`]. Logout: see
/// [`logout::on_reply`].
pub fn on_reply(
    cfg: &Config,
    kind: CallKind,
    req: &RequestView,
    reply: Result<UpstreamReply, CallError>,
    now: u64,
) -> Decision {
    match kind {
        CallKind::Login => login::on_reply(cfg, reply, now),
        CallKind::Refresh => rotation::on_refresh_reply(cfg, req, reply, now),
        CallKind::Logout => logout::on_reply(cfg, reply),
        // Made and answered by the VM's shared store (`upstream_session`), never by a request.
        CallKind::LoginRefresh => internal_error(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::testing::*;
    use serde_json::json;

    /// Every kind of reply the core makes itself carries exactly one `cache-control: no-store`.
    #[test]
    fn every_local_reply_is_no_store() {
        let cfg = config();
        let mut page = req("GET", "/dash", None);
        page.accept = Some("text/html".into());
        let mut text = req("POST", "/api/auth/login", None);
        text.content_type = Some("text/plain".into());
        let mut big = req("POST", "/api/auth/login", None);
        big.content_length = Some(1 << 20);
        let valid = format!("refreshTokenEtls={}", refresh(NOW + 100));
        let requests = [
            page,                                                    // deny 302
            req("GET", "/dash", None),                               // deny 401
            req("GET", "/api/auth/login", None),                     // 405
            text,                                                    // 415
            big,                                                     // 413
            req("POST", "/api/auth/login", None),                    // 400 (no body)
            req("POST", "/api/auth/refreshtoken", None),             // 401 no refresh token
            req("POST", "/api/auth/refreshtoken", Some("refreshTokenEtls=x")), // 401 invalid
            req("POST", "/api/auth/refreshtoken", Some(&valid)),     // 200 refreshed
            req("GET", "/api/auth/refreshtoken", None),              // 405
            req("POST", "/api/auth/logout", None),                   // 200 logged out
            req("GET", "/api/auth/logout", None),                    // 405
            RequestView { sec_fetch_site: Some(b"cross-site".to_vec().into()), ..req("POST", "/api/auth/logout", None) }, // 403
        ];
        let mut replies: Vec<Decision> = requests.iter().map(|r| decide(&cfg, r, NOW)).collect();
        replies.push(login::on_body(&cfg, b"nope"));
        replies.push(login::on_body(&cfg, &vec![b' '; 20_000]));
        let ok = r#"{"accessToken":"a","refreshToken":"r","userData":{"id":1}}"#;
        for (status, body) in [(200, ok), (401, ""), (429, ""), (500, ""), (504, "upstream request timeout"), (200, "x")] {
            let answer = UpstreamReply { status, body: body.as_bytes().to_vec(), body_size: body.len(), ..UpstreamReply::default() };
            replies.push(on_reply(&cfg, CallKind::Login, &req("POST", "/api/auth/login", None), Ok(answer), NOW));
        }
        replies.push(on_reply(&cfg, CallKind::Login, &req("POST", "/api/auth/login", None), Err(CallError::NoResponse), NOW));
        let clustered = config_with(json!({"refresh_cluster": "etls_refresh"}));
        replies.push(on_reply(&clustered, CallKind::Refresh, &req("GET", "/x", Some(&valid)), Err(CallError::NoResponse), NOW));
        replies.push(unconfigured());
        replies.push(internal_error());
        let mut statuses = Vec::new();
        for d in replies {
            let Decision::Respond(r) = d else { panic!("not a local reply: {d:?}") };
            let no_store: Vec<&(String, String)> = r.headers().iter().filter(|(n, _)| n == "cache-control").collect();
            assert_eq!(no_store, [&("cache-control".to_owned(), "no-store".to_owned())], "{} {:?}", r.status, r.outcome);
            statuses.push(r.status);
        }
        assert_eq!(statuses, [302, 401, 405, 415, 413, 400, 401, 401, 200, 405, 200, 405, 403, 400, 413, 200, 401, 429, 502, 504, 502, 502, 401, 500, 500]);
    }
}
