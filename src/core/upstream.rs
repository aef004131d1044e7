//! The four dispatched calls: building the login, login API refresh, login API logout and refresh-cluster
//! requests, and reading their answers into plain values or a `CallError`. No proxy_wasm here.

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;

use crate::config::Config;
use crate::core::cookies;
use crate::core::session_key;
use crate::core::decision::{CallKind, OutboundCall, UpstreamReply, MAX_UPSTREAM_BODY_BYTES};
use crate::core::model::Identity;
use crate::error::CallError;

/// The `POST login_upstream_path` call with body `{"email":..,"password":..}`.
pub fn login_call(cfg: &Config, email: &str, password: &str) -> OutboundCall {
    let body = serde_json::json!({ "email": email, "password": password });
    login_api_call(cfg, CallKind::Login, &cfg.login.path, &body)
}

/// A JSON `POST path` to the login API (`login_cluster`, `login_authority`, `login_timeout_ms`).
fn login_api_call(cfg: &Config, kind: CallKind, path: &str, body: &Value) -> OutboundCall {
    OutboundCall {
        kind,
        cluster: cfg.login.cluster.clone(),
        headers: vec![
            (":method".to_owned(), "POST".to_owned()),
            (":path".to_owned(), path.to_owned()),
            (":authority".to_owned(), cfg.login.authority.clone()),
            ("content-type".to_owned(), "application/json".to_owned()),
            ("accept".to_owned(), "application/json".to_owned()),
        ],
        body: Some(body.to_string().into_bytes()),
        timeout: cfg.login.timeout,
    }
}

/// The `POST refresh_path` call to the refresh cluster, carrying the request's `Cookie` header
/// and the session's `x-etls-session-key` (see [`session_key`]; computed here, once per call).
/// `None` when no refresh cluster is configured. Bytes of the header that are not UTF-8 are
/// replaced (U+FFFD) in the call only: they belong to other cookies, which the refresh route
/// never reads, and the request itself goes on with its header byte for byte.
/// A request without the session's token gets no key header (the refresh route denies it).
pub fn refresh_call(cfg: &Config, cookie_header: &[u8]) -> Option<OutboundCall> {
    let upstream = cfg.refresh.as_ref()?;
    let mut headers = vec![
        (":method".to_owned(), "POST".to_owned()),
        (":path".to_owned(), upstream.path.clone()),
        (":authority".to_owned(), upstream.authority.clone()),
        ("cookie".to_owned(), String::from_utf8_lossy(cookie_header).into_owned()),
        ("content-length".to_owned(), "0".to_owned()),
    ];
    if let Some(key) = session_key::header_value(cfg, cookie_header) {
        headers.push((session_key::HEADER.to_owned(), key));
    }
    Some(OutboundCall {
        kind: CallKind::Refresh,
        cluster: upstream.cluster.clone(),
        headers,
        body: None,
        timeout: upstream.timeout,
    })
}

/// The `POST login_refresh_path` call to the login API with body `{"refreshToken": ..}`
/// (docs/sessions.md, Upstream session). `None` when `login_refresh_path` is not configured.
pub fn login_refresh_call(cfg: &Config, refresh_token: &str) -> Option<OutboundCall> {
    let path = cfg.login_refresh_path.as_ref()?;
    let body = serde_json::json!({ "refreshToken": refresh_token });
    Some(login_api_call(cfg, CallKind::LoginRefresh, path, &body))
}

/// The `POST login_logout_path` call to the login API with body `{"refreshToken": ..}`
/// (docs/sessions.md, Logout). `None` when `login_logout_path` is not configured.
pub fn login_logout_call(cfg: &Config, refresh_token: &str) -> Option<OutboundCall> {
    let path = cfg.login_logout_path.as_ref()?;
    let body = serde_json::json!({ "refreshToken": refresh_token });
    Some(login_api_call(cfg, CallKind::Logout, path, &body))
}

/// What the login API said to a refresh call, reduced to what a rotation needs.
#[derive(Debug, Clone, PartialEq)]
pub enum RefreshAnswer {
    /// 2xx as specified: new upstream tokens, and the identity when `userData` was sent.
    Renewed(Renewal),
    /// 401 or 403: the API ended the session.
    Ended,
    /// Anything else (5xx, 429, other statuses, no answer, a malformed 2xx): keep the user in.
    Outage,
}

/// New upstream tokens from the login API's refresh answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Renewal {
    /// The new `accessToken` (cookie-safe, its Set-Cookie within 4096 bytes).
    pub access_token: String,
    /// The new `refreshToken`; `None` keeps the current one.
    pub refresh_token: Option<String>,
    /// `userData.id` / `userData.role`, when `userData` was present.
    pub identity: Option<Identity>,
}

#[derive(Deserialize)]
struct RefreshBody {
    #[serde(rename = "accessToken")]
    access_token: String,
    #[serde(rename = "refreshToken", default)]
    refresh_token: Option<String>,
    #[serde(rename = "userData", default)]
    user_data: Option<Value>,
}

/// Classifies the login API's answer to `POST login_refresh_path` (docs/sessions.md, Upstream session).
/// A 2xx is `Renewed` only with JSON `{accessToken: string, refreshToken?: string, userData?:
/// {id, role?}}` whose tokens are cookie-safe and make Set-Cookie values of at most
/// [`cookies::MAX_SET_COOKIE_BYTES`]; any other 2xx is malformed, an `Outage`.
pub fn parse_login_refresh_reply(cfg: &Config, reply: Result<&UpstreamReply, &CallError>) -> RefreshAnswer {
    let Ok(reply) = reply else { return RefreshAnswer::Outage };
    match reply.status {
        401 | 403 => return RefreshAnswer::Ended,
        200..=299 => {}
        _ => return RefreshAnswer::Outage,
    }
    parse_renewal(cfg, reply).map_or(RefreshAnswer::Outage, RefreshAnswer::Renewed)
}

fn parse_renewal(cfg: &Config, reply: &UpstreamReply) -> Option<Renewal> {
    if reply.body_size > MAX_UPSTREAM_BODY_BYTES {
        return None;
    }
    let object = match serde_json::from_slice::<Value>(&reply.body).ok()? {
        object @ Value::Object(_) => object,
        _ => return None,
    };
    let body = RefreshBody::deserialize(object).ok()?;
    let identity = match body.user_data {
        None | Some(Value::Null) => None,
        Some(Value::Object(_)) => {
            // Read again from the bytes, so that `id` is checked as written (see `exact_id`).
            let raw: RawUserData = serde_json::from_slice(&reply.body).ok()?;
            let user: LoginUserData = serde_json::from_str(raw.user_data.get()).ok()?;
            Some(Identity::new(exact_id(user.id)?, user.role)?)
        }
        Some(_) => return None,
    };
    let tokens = [Some(body.access_token.as_str()), body.refresh_token.as_deref()];
    let fits = tokens.iter().flatten().all(|t| cookies::is_cookie_value(t));
    // Both upstream cookies have the same attributes and lifetime: one size check each, at the
    // longest `Max-Age` they can get (a shorter one is never longer to write).
    let longest = cfg.refresh_ttl_s;
    let [access_cookie, _] = cfg.cookies.set_upstream(&body.access_token, "", longest);
    let [_, refresh_cookie] = cfg.cookies.set_upstream("", body.refresh_token.as_deref().unwrap_or_default(), longest);
    let small = access_cookie.len() <= cookies::MAX_SET_COOKIE_BYTES && refresh_cookie.len() <= cookies::MAX_SET_COOKIE_BYTES;
    (fits && small).then_some(Renewal { access_token: body.access_token, refresh_token: body.refresh_token, identity })
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

/// The `userData` of a login API refresh answer, as written.
#[derive(Deserialize)]
struct RawUserData<'a> {
    #[serde(rename = "userData", borrow)]
    user_data: &'a RawValue,
}

/// `userData` of a login answer, its `id` as written (see [`exact_id`]).
#[derive(Deserialize)]
struct LoginUserData<'a> {
    #[serde(borrow)]
    id: &'a RawValue,
    #[serde(default)]
    role: Option<Value>,
}

/// The JSON value of `userData.id`, or `None` for an integer that a JSON number here cannot hold
/// exactly (beyond 64 bits): parsed, it would silently become another number
/// (`123456789012345678901234567890` → `1.2345678901234568e29`) in the token and the header.
/// Numbers written with a fraction or an exponent are floats and stay floats.
fn exact_id(raw: &RawValue) -> Option<Value> {
    let text = raw.get();
    let value: Value = serde_json::from_str(text).ok()?;
    if let Value::Number(n) = &value {
        let integer_literal = !text.contains(['.', 'e', 'E']);
        if integer_literal && n.as_i64().is_none() && n.as_u64().is_none() {
            return None;
        }
    }
    Some(value)
}

/// Reads a 2xx login-API body `{accessToken: string, refreshToken: string, userData: {id, ..}}`.
/// Returns [`CallError::BadBody`] for anything else, including tokens that are not cookie-safe
/// and an `id` that is neither a string nor a number.
pub fn parse_login_reply(reply: &UpstreamReply) -> Result<LoginSuccess, CallError> {
    if reply.body_size > MAX_UPSTREAM_BODY_BYTES {
        return Err(CallError::BadBody);
    }
    let body: LoginBody = serde_json::from_slice(&reply.body).map_err(|_| CallError::BadBody)?;
    let user: LoginUserData = serde_json::from_str(body.user_data.get()).map_err(|_| CallError::BadBody)?;
    let id = exact_id(user.id).ok_or(CallError::BadBody)?;
    let identity = Identity::new(id, user.role).ok_or(CallError::BadBody)?;
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

/// What the refresh cluster's 200 answer carried: the new ETLS pair and, when the login API
/// renewed them (`login_refresh_path`), its two new tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefreshedCookies<'r> {
    pub access: &'r str,
    pub refresh: &'r str,
    /// `(accessToken, refreshToken)`, both present or neither.
    pub upstream: Option<(&'r str, &'r str)>,
}

/// Reads the new tokens from the `Set-Cookie` headers of a 200 answer of the refresh cluster.
/// Returns them, or `UpstreamStatus` / `BadBody`.
pub fn parse_refresh_reply<'r>(cfg: &Config, reply: &'r UpstreamReply) -> Result<RefreshedCookies<'r>, CallError> {
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
    let upstream = match (find(&names.upstream_access), find(&names.upstream_refresh)) {
        (Some(access), Some(refresh)) => Some((access, refresh)),
        _ => None,
    };
    match (find(&names.access), find(&names.refresh)) {
        (Some(access), Some(refresh)) => Ok(RefreshedCookies { access, refresh, upstream }),
        _ => Err(CallError::BadBody),
    }
}
