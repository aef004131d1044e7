//! The two dispatched calls: building the login-API and refresh-cluster requests, and reading
//! their answers into plain values or a `CallError`. No proxy_wasm here.

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;

use crate::config::Config;
use crate::core::cookies;
use crate::core::decision::{CallKind, OutboundCall, UpstreamReply, MAX_UPSTREAM_BODY_BYTES};
use crate::core::tokens::Identity;
use crate::error::CallError;

/// The `POST login_upstream_path` call with body `{"email":..,"password":..}`.
pub fn login_call(cfg: &Config, email: &str, password: &str) -> OutboundCall {
    let body = serde_json::json!({ "email": email, "password": password }).to_string();
    OutboundCall {
        kind: CallKind::Login,
        cluster: cfg.login.cluster.clone(),
        headers: vec![
            (":method".to_owned(), "POST".to_owned()),
            (":path".to_owned(), cfg.login.path.clone()),
            (":authority".to_owned(), cfg.login.authority.clone()),
            ("content-type".to_owned(), "application/json".to_owned()),
            ("accept".to_owned(), "application/json".to_owned()),
        ],
        body: Some(body.into_bytes()),
        timeout: cfg.login.timeout,
    }
}

/// The `POST refresh_path` call to the refresh cluster, carrying the request's `Cookie` header.
/// `None` when no refresh cluster is configured.
pub fn refresh_call(cfg: &Config, cookie_header: &str) -> Option<OutboundCall> {
    let upstream = cfg.refresh.as_ref()?;
    Some(OutboundCall {
        kind: CallKind::Refresh,
        cluster: upstream.cluster.clone(),
        headers: vec![
            (":method".to_owned(), "POST".to_owned()),
            (":path".to_owned(), upstream.path.clone()),
            (":authority".to_owned(), upstream.authority.clone()),
            ("cookie".to_owned(), cookie_header.to_owned()),
            ("content-length".to_owned(), "0".to_owned()),
        ],
        body: None,
        timeout: upstream.timeout,
    })
}

/// A successful login as the login API described it.
#[derive(Debug)]
pub struct LoginSuccess {
    /// The API's own tokens, checked to be safe as cookie values.
    pub access_token: String,
    pub refresh_token: String,
    /// `userData` exactly as received (for the reply body).
    pub user_data: Box<RawValue>,
    /// `userData.id` and `userData.role`.
    pub identity: Identity,
}

#[derive(Deserialize)]
struct LoginBody {
    #[serde(rename = "accessToken")]
    access_token: String,
    #[serde(rename = "refreshToken")]
    refresh_token: String,
    #[serde(rename = "userData")]
    user_data: Box<RawValue>,
}

#[derive(Deserialize)]
struct UserData {
    id: Value,
    #[serde(default)]
    role: Option<Value>,
}

/// Reads a 2xx login-API body `{accessToken: string, refreshToken: string, userData: {id, ..}}`.
/// Returns [`CallError::BadBody`] for anything else, including tokens that are not cookie-safe
/// and an `id` that is neither a string nor a number.
pub fn parse_login_reply(reply: &UpstreamReply) -> Result<LoginSuccess, CallError> {
    if reply.body_size > MAX_UPSTREAM_BODY_BYTES {
        return Err(CallError::BadBody);
    }
    let body: LoginBody = serde_json::from_slice(&reply.body).map_err(|_| CallError::BadBody)?;
    let user: UserData = serde_json::from_str(body.user_data.get()).map_err(|_| CallError::BadBody)?;
    let identity = Identity::new(user.id, user.role).ok_or(CallError::BadBody)?;
    if !cookies::is_cookie_value(&body.access_token) || !cookies::is_cookie_value(&body.refresh_token) {
        return Err(CallError::BadBody);
    }
    Ok(LoginSuccess {
        access_token: body.access_token,
        refresh_token: body.refresh_token,
        user_data: body.user_data,
        identity,
    })
}

/// Reads the new access and refresh token from the `Set-Cookie` headers of a 200 answer of the
/// refresh cluster. Returns `(access, refresh)`, or `UpstreamStatus` / `BadBody`.
pub fn parse_refresh_reply<'r>(cfg: &Config, reply: &'r UpstreamReply) -> Result<(&'r str, &'r str), CallError> {
    if reply.status != 200 {
        return Err(CallError::UpstreamStatus(reply.status));
    }
    let names = &cfg.cookies.names;
    let find = |name: &str| {
        reply
            .header_values("set-cookie")
            .find_map(|c| cookies::value_in_set_cookie(c, name))
            .filter(|v| cookies::is_cookie_value(v))
    };
    match (find(&names.access), find(&names.refresh)) {
        (Some(access), Some(refresh)) => Ok((access, refresh)),
        _ => Err(CallError::BadBody),
    }
}
