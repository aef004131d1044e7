//! The login route: check the client's request, call the login API, map its answer.
//! No proxy_wasm here. The password only ever goes into the outbound call's body.

use serde::Deserialize;

use crate::config::Config;
use crate::core::decision::{Decision, LocalReply, Outcome, UpstreamReply};
use crate::core::request::RequestView;
use crate::core::session;
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

/// Headers of a request to `login_path`: `POST` reads the body; other methods get 405.
pub fn on_headers(cfg: &Config, req: &RequestView) -> Decision {
    if req.method != "POST" {
        return session::method_not_allowed();
    }
    if req.content_length.is_some_and(|len| len > cfg.max_login_body_bytes as u64) {
        return too_large();
    }
    if req.end_of_stream {
        return on_body(cfg, b"");
    }
    Decision::ReadBody
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

/// The complete body: `{"email": string, "password": string}` calls the login API, else 400.
pub fn on_body(cfg: &Config, body: &[u8]) -> Decision {
    if body.len() > cfg.max_login_body_bytes {
        return too_large();
    }
    match serde_json::from_slice::<Credentials>(body) {
        Ok(c) => Decision::Call(upstream::login_call(cfg, &c.email, &c.password)),
        Err(_) => Decision::Respond(LocalReply::json(
            Outcome::LoginBadRequest,
            400,
            r#"{"error":"Body must be JSON with string fields email and password"}"#,
        )),
    }
}

/// The login API's answer (SPEC.md, Login): 2xx as specified gives 200 and four cookies;
/// 429 passes through with `Retry-After`; other 4xx give 401; 504 and timeouts give 504;
/// 5xx, other statuses, a bad 2xx body or no answer give 502. No cookie on any failure.
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
        504 => upstream_failed(504),
        _ => upstream_failed(502),
    }
}

fn on_success(cfg: &Config, reply: &UpstreamReply, now: u64) -> Decision {
    let Ok(login) = upstream::parse_login_reply(reply) else {
        return upstream_failed(502);
    };
    let Ok(pair) = tokens::mint_pair(cfg, &login.identity, now) else {
        return Decision::Respond(LocalReply::json(Outcome::InternalError, 500, r#"{"error":"Internal error"}"#));
    };
    let body = format!(r#"{{"message":"Login successful","userData":{}}}"#, login.user_data.get());
    let [upstream_access, upstream_refresh] = cfg.cookies.set_upstream(&login.access_token, &login.refresh_token);
    Decision::Respond(
        LocalReply::json(Outcome::LoginSucceeded, 200, body)
            .with_header("cache-control", "no-store")
            .with_cookies(&[
                upstream_access,
                upstream_refresh,
                cfg.cookies.set_access(&pair.access),
                cfg.cookies.set_refresh(&pair.refresh),
            ]),
    )
}

fn too_large() -> Decision {
    Decision::Respond(LocalReply::json(Outcome::LoginBadRequest, 413, r#"{"error":"Request body too large"}"#))
}

fn upstream_failed(status: u32) -> Decision {
    let body = if status == 504 {
        r#"{"error":"Login service timed out"}"#
    } else {
        r#"{"error":"Login service unavailable"}"#
    };
    Decision::Respond(LocalReply::json(Outcome::LoginUpstreamFailed, status, body))
}
