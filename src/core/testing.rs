//! Test helpers shared by the core's unit tests: a configuration, a fixed clock, requests and
//! tokens minted with jwt-simple directly (so tests do not depend on the code under test).

use jwt_simple::prelude::{Duration, HS256Key, JWTClaims, MACLike};
use serde_json::{json, Value};

use crate::config::Config;
use crate::core::request::RequestView;

pub const NOW: u64 = 1_790_000_000;
pub const ACCESS_SECRET: &[u8] = b"test-access-secret-0123456789abcdef";
pub const REFRESH_SECRET: &[u8] = b"test-refresh-secret-0123456789abcdef";
pub const ACCESS_PREVIOUS: &[u8] = b"test-access-previous-0123456789abcdef";

pub fn env(name: &str) -> Option<Vec<u8>> {
    match name {
        "ETLS_ACCESS" => Some(ACCESS_SECRET.to_vec()),
        "ETLS_REFRESH" => Some(REFRESH_SECRET.to_vec()),
        _ => None,
    }
}

pub fn config_with(extra: Value) -> Config {
    let mut base = json!({ "login_cluster": "login_api" });
    if let (Some(base), Some(extra)) = (base.as_object_mut(), extra.as_object()) {
        base.extend(extra.clone());
    }
    Config::parse(base.to_string().as_bytes(), env).expect("test config is valid")
}

pub fn config() -> Config {
    config_with(json!({}))
}

/// A header edit, for comparing with a decision's.
pub fn edit(name: &str, value: Option<&[u8]>) -> crate::core::decision::HeaderEdit {
    (name.into(), value.map(Into::into))
}

pub fn req(method: &str, path: &str, cookie: Option<&str>) -> RequestView<'static> {
    RequestView {
        method: method.to_owned().into(),
        path: path.to_owned().into(),
        cookie: cookie.map(|c| c.as_bytes().to_vec().into()),
        accept: Some("application/json".into()),
        content_type: Some("application/json".into()),
        end_of_stream: true,
        ..RequestView::default()
    }
}

/// An HS256 token with these claims, `iat` and `exp` given in Unix seconds.
pub fn token(secret: &[u8], claims: Value, iat: Option<u64>, exp: Option<u64>) -> String {
    let mut c = JWTClaims {
        issued_at: iat.map(Duration::from_secs),
        expires_at: exp.map(Duration::from_secs),
        invalid_before: None,
        issuer: None,
        subject: None,
        audiences: None,
        jwt_id: None,
        nonce: None,
        custom: claims,
    };
    c.invalid_before = None;
    HS256Key::from_bytes(secret).authenticate(c).expect("mint test token")
}

pub fn access(exp: u64) -> String {
    token(ACCESS_SECRET, json!({"userId": 42, "role": "admin"}), Some(NOW - 10), Some(exp))
}

pub fn refresh(exp: u64) -> String {
    token(REFRESH_SECRET, json!({"userId": 42, "role": "admin"}), Some(NOW - 10), Some(exp))
}

/// The payload of a JWT, decoded without verifying.
pub fn payload(jwt: &str) -> Value {
    use jwt_simple::prelude::Base64UrlSafeNoPadding;
    use jwt_simple::reexports::ct_codecs::Decoder;
    let part = jwt.split('.').nth(1).expect("payload part");
    let bytes = Base64UrlSafeNoPadding::decode_to_vec(part, None).expect("base64url");
    serde_json::from_slice(&bytes).expect("json payload")
}
