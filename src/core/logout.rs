//! The logout route, and its call to the login API (`login_logout_path`, docs/sessions.md
//! "Logout"): the session ends at the login API for every browser and replica, and the browser
//! is logged out whatever the API answered. No proxy_wasm here.

use crate::config::Config;
use crate::core::cookies;
use crate::core::decision::{Decision, LocalReply, Outcome, UpstreamReply};
use crate::core::origin;
use crate::core::request::RequestView;
use crate::core::answers;
use crate::core::upstream;
use crate::error::CallError;

/// `POST logout_path`, checked in this order: another method gets 405; a cross-origin browser
/// request gets 403 (`core::origin`); then, with `login_logout_path` set and a non-empty
/// `refreshToken` cookie (`upstream_refresh_cookie`), a `Call` to the login API whose answer
/// goes to [`on_reply`]; otherwise 200 and the four clearing cookies at once.
pub fn on_request(cfg: &Config, req: &RequestView) -> Decision {
    if req.method != "POST" {
        return answers::method_not_allowed();
    }
    if let Some(refused) = origin::refuse(&cfg.trusted_origins, req) {
        return refused;
    }
    let cookie_header = req.cookie.as_deref().unwrap_or_default();
    let token = cookies::find(cookie_header, &cfg.cookies.names.upstream_refresh).filter(|t| !t.is_empty());
    match token.and_then(|token| upstream::login_logout_call(cfg, token)) {
        Some(call) => Decision::Call(call),
        None => Decision::Respond(logged_out(cfg)),
    }
}

/// The login API's answer to the logout call (`Err`: none came, the call timed out in the host,
/// or the dispatch was refused): always 200 `{"message":"Logged out"}` with the four clearing
/// cookies. Counted besides `LoggedOut` as `LogoutUpstreamReached` (an answer below 500) or
/// `LogoutUpstreamFailed` (a 5xx, which is also how Envoy reports a refused connection (503)
/// and a timeout (504), or no answer); anything but a 2xx is logged, with the status only.
pub fn on_reply(cfg: &Config, reply: Result<UpstreamReply, CallError>) -> Decision {
    let answer = logged_out(cfg);
    let answer = match reply {
        Ok(reply) if (200..300).contains(&reply.status) => answer.with_count(Outcome::LogoutUpstreamReached),
        Ok(reply) if (100..500).contains(&reply.status) => answer.with_count(Outcome::LogoutUpstreamReached).with_warning(format!(
            "logout: the login API answered {} to the logout call (login_logout_path): check that it ended the session",
            reply.status
        )),
        Ok(reply) => answer.with_count(Outcome::LogoutUpstreamFailed).with_warning(format!(
            "logout: the logout call to the login API failed (status {}): this browser is logged out, the session may still be valid at the login API",
            reply.status
        )),
        Err(error) => answer.with_count(Outcome::LogoutUpstreamFailed).with_warning(format!(
            "logout: the logout call to the login API failed ({error}): this browser is logged out, the session may still be valid at the login API"
        )),
    };
    Decision::Respond(answer)
}

/// 200 `{"message":"Logged out"}` and the four clearing cookies.
fn logged_out(cfg: &Config) -> LocalReply {
    LocalReply::json(Outcome::LoggedOut, 200, r#"{"message":"Logged out"}"#).with_cookies(cfg.cookies.clear_all())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::decision::CallKind;
    use crate::core::testing::*;
    use serde_json::json;

    fn with_logout() -> Config {
        config_with(json!({"login_logout_path": "/logout", "login_authority": "login.internal", "login_timeout_ms": 300}))
    }

    fn answer(status: u32, body: &str) -> UpstreamReply {
        UpstreamReply { status, headers: vec![], body: body.as_bytes().to_vec(), body_size: body.len() }
    }

    /// The reply, checked to be the logout reply; its extra count and warning.
    fn logout_reply(d: Decision) -> (Option<Outcome>, Option<String>) {
        let Decision::Respond(r) = d else { panic!("not a reply: {d:?}") };
        assert_eq!((r.status, r.outcome, r.body.as_slice()), (200, Outcome::LoggedOut, &br#"{"message":"Logged out"}"#[..]));
        let cleared: Vec<&str> = r.headers().iter().filter(|(n, _)| n == "set-cookie").map(|(_, v)| v.as_str()).collect();
        assert_eq!(cleared.len(), 4);
        for (cookie, name) in cleared.iter().zip(["accessTokenEtls", "refreshTokenEtls", "accessToken", "refreshToken"]) {
            assert!(cookie.starts_with(&format!("{name}=;")) && cookie.contains("Max-Age=0"), "{cookie}");
        }
        assert!(r.headers().contains(&("cache-control".to_owned(), "no-store".to_owned())));
        (r.also_count(), r.warning().map(str::to_owned))
    }

    #[test]
    fn the_refresh_token_cookie_goes_to_the_login_api() {
        let cfg = with_logout();
        let r = req("POST", "/api/auth/logout?x=1", Some("a=1; refreshToken=up.ref-1; refreshTokenEtls=etls"));
        let Decision::Call(call) = crate::core::decide(&cfg, &r, NOW) else { panic!("no call") };
        assert_eq!(call.kind, CallKind::Logout);
        assert_eq!(call.cluster, "login_api");
        for header in [(":method", "POST"), (":path", "/logout"), (":authority", "login.internal"), ("content-type", "application/json")] {
            assert!(call.headers.contains(&(header.0.to_owned(), header.1.to_owned())), "{header:?}: {:?}", call.headers);
        }
        assert_eq!(serde_json::from_slice::<serde_json::Value>(call.body.as_deref().unwrap()).unwrap(), json!({"refreshToken": "up.ref-1"}));
        assert_eq!(call.timeout, std::time::Duration::from_millis(300));
    }

    #[test]
    fn no_call_without_the_cookie_or_the_key() {
        let cfg = with_logout();
        for cookie in [None, Some("refreshTokenEtls=x; accessToken=y"), Some("refreshToken="), Some("refreshtoken=lower")] {
            let d = crate::core::decide(&cfg, &req("POST", "/api/auth/logout", cookie), NOW);
            assert_eq!(logout_reply(d), (None, None), "{cookie:?}");
        }
        let d = crate::core::decide(&config(), &req("POST", "/api/auth/logout", Some("refreshToken=up")), NOW);
        assert_eq!(logout_reply(d), (None, None), "no login_logout_path: no call");
    }

    #[test]
    fn every_answer_logs_out_and_is_counted() {
        let cfg = with_logout();
        let reached = Some(Outcome::LogoutUpstreamReached);
        let failed = Some(Outcome::LogoutUpstreamFailed);
        let cases = [
            (Ok(answer(200, "{}")), reached, false),
            (Ok(answer(204, "")), reached, false),
            (Ok(answer(401, "")), reached, true),
            (Ok(answer(404, "")), reached, true),
            (Ok(answer(500, "")), failed, true),
            (Ok(answer(503, "upstream connect error or disconnect/reset before headers")), failed, true),
            (Ok(answer(504, "upstream request timeout")), failed, true),
            (Ok(answer(0, "")), failed, true),
            (Err(CallError::NoResponse), failed, true),
            (Err(CallError::Dispatch("BadArgument".into())), failed, true),
        ];
        for (reply, count, warns) in cases {
            let (also, warning) = logout_reply(on_reply(&cfg, reply.clone()));
            assert_eq!(also, count, "{reply:?}");
            assert_eq!(warning.is_some(), warns, "{reply:?}: {warning:?}");
        }
        let (_, warning) = logout_reply(crate::core::on_reply(&cfg, CallKind::Logout, &req("POST", "/api/auth/logout", Some("refreshToken=secret-token")), Ok(answer(500, "")), NOW));
        let warning = warning.unwrap();
        assert!(warning.contains("status 500") && !warning.contains("secret-token"), "{warning}");
    }

    #[test]
    fn other_methods_are_405_and_cross_origin_403_before_any_call() {
        let cfg = with_logout();
        let d = crate::core::decide(&cfg, &req("GET", "/api/auth/logout", Some("refreshToken=up")), NOW);
        assert!(matches!(d, Decision::Respond(ref r) if r.status == 405));
        let mut r = req("POST", "/api/auth/logout", Some("refreshToken=up"));
        r.sec_fetch_site = Some(b"cross-site".to_vec().into());
        let Decision::Respond(reply) = crate::core::decide(&cfg, &r, NOW) else { panic!("not refused") };
        assert_eq!((reply.status, reply.outcome), (403, Outcome::CrossOriginRefused));
        assert!(!reply.headers().iter().any(|(n, _)| n == "set-cookie"), "no cookie cleared");
    }
}
