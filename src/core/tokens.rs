//! Minting and verifying the ETLS tokens: HS256 JWTs through jwt-simple, never by hand.
//! The two kinds stay apart because their secrets must differ (config refuses equal ones).
//! Time is passed in (`now`, Unix seconds); no clock is read here. No proxy_wasm here.

use jwt_simple::prelude::{Duration, HS256Key, JWTClaims, MACLike, VerificationOptions};
use jwt_simple::JWTError;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::Config;
use crate::error::TokenError;

/// Longest token accepted for verification, in bytes: a cookie cannot be longer anyway.
pub const MAX_TOKEN_BYTES: usize = 4096;

/// The keys of one token kind: the current secret signs and verifies; the previous one, while
/// `<NAME>_PREVIOUS` is set, still verifies.
#[derive(Clone)]
pub struct KeyRing {
    current: HS256Key,
    previous: Option<HS256Key>,
}

impl KeyRing {
    /// Builds the keys once, at configure time, from raw secret bytes.
    pub fn new(current: &[u8], previous: Option<&[u8]>) -> Self {
        KeyRing { current: HS256Key::from_bytes(current), previous: previous.map(HS256Key::from_bytes) }
    }
}

/// Who a session belongs to: the claims both tokens carry (SPEC.md, Tokens).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Identity {
    /// The login API's `userData.id`, JSON type kept (a number stays a number).
    #[serde(rename = "userId")]
    pub user_id: Value,
    /// The login API's `userData.role`, when present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Value>,
}

impl Identity {
    /// Builds an identity if both claims can travel as header values: `userId` a string or a
    /// number, `role` absent, null, a string, a number or a boolean; no control characters.
    pub fn new(user_id: Value, role: Option<Value>) -> Option<Identity> {
        let role = role.filter(|r| !r.is_null());
        let identity = Identity { user_id, role };
        identity.is_valid().then_some(identity)
    }

    /// The value of the user-id header.
    pub fn user_id_header(&self) -> Option<String> {
        header_value(&self.user_id, false)
    }

    /// The value of the role header, if the session has a role.
    pub fn role_header(&self) -> Option<String> {
        self.role.as_ref().and_then(|r| header_value(r, true))
    }

    fn is_valid(&self) -> bool {
        self.user_id_header().is_some() && (self.role.is_none() || self.role_header().is_some())
    }
}

fn header_value(value: &Value, allow_bool: bool) -> Option<String> {
    let text = match value {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) if allow_bool => b.to_string(),
        _ => return None,
    };
    let is_safe = !text.is_empty() && !text.chars().any(char::is_control);
    is_safe.then_some(text)
}

/// Which of the two ETLS tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    Access,
    Refresh,
}

/// A freshly minted access and refresh token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenPair {
    pub access: String,
    pub refresh: String,
}

/// The refresh token's extra claim set: the identity plus a random `jti`.
fn random_jti() -> Result<String, TokenError> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|_| TokenError::Mint)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

fn claims(identity: &Identity, now: u64, ttl_s: u64, jwt_id: Option<String>) -> JWTClaims<Identity> {
    JWTClaims {
        issued_at: Some(Duration::from_secs(now)),
        expires_at: Some(Duration::from_secs(now.saturating_add(ttl_s))),
        invalid_before: None,
        issuer: None,
        subject: None,
        audiences: None,
        jwt_id,
        nonce: None,
        custom: identity.clone(),
    }
}

/// Mints a new access token (`iat`, `exp = iat + access_ttl_s`) and refresh token (`iat`,
/// `exp = iat + refresh_ttl_s`, random `jti`) for `identity`, signed with the current secrets.
/// `now` is Unix seconds. Fails only with [`TokenError::Mint`].
pub fn mint_pair(cfg: &Config, identity: &Identity, now: u64) -> Result<TokenPair, TokenError> {
    let access = cfg
        .access_keys
        .current
        .authenticate(claims(identity, now, cfg.access_ttl_s, None))
        .map_err(|_| TokenError::Mint)?;
    let refresh = cfg
        .refresh_keys
        .current
        .authenticate(claims(identity, now, cfg.refresh_ttl_s, Some(random_jti()?)))
        .map_err(|_| TokenError::Mint)?;
    Ok(TokenPair { access, refresh })
}

/// Verifies a token of `kind`: HS256 with that kind's secrets only, `exp` required, `exp` and
/// `nbf` checked against `now` (Unix seconds) with a leeway of `clock_skew_s`.
/// Returns the identity, or [`TokenError::Malformed`], `BadSignature`, `Expired`, `NotYetValid`.
pub fn verify(cfg: &Config, kind: TokenKind, token: &str, now: u64) -> Result<Identity, TokenError> {
    let keys = match kind {
        TokenKind::Access => &cfg.access_keys,
        TokenKind::Refresh => &cfg.refresh_keys,
    };
    if token.len() > MAX_TOKEN_BYTES {
        return Err(TokenError::Malformed);
    }
    let claims = match verify_with(&keys.current, token, now, cfg.clock_skew_s) {
        Err(TokenError::BadSignature) => match &keys.previous {
            Some(previous) => verify_with(previous, token, now, cfg.clock_skew_s),
            None => Err(TokenError::BadSignature),
        },
        other => other,
    }?;
    if claims.expires_at.is_none() {
        return Err(TokenError::Malformed);
    }
    let identity = claims.custom;
    Identity::new(identity.user_id, identity.role).ok_or(TokenError::Malformed)
}

fn verify_with(key: &HS256Key, token: &str, now: u64, clock_skew_s: u64) -> Result<JWTClaims<Identity>, TokenError> {
    let options = VerificationOptions {
        time_tolerance: Some(Duration::from_secs(clock_skew_s)),
        artificial_time: Some(Duration::from_secs(now)),
        max_token_length: Some(MAX_TOKEN_BYTES),
        ..VerificationOptions::default()
    };
    key.verify_token::<Identity>(token, Some(options)).map_err(|e| match e.downcast_ref::<JWTError>() {
        Some(JWTError::InvalidAuthenticationTag | JWTError::InvalidSignature) => TokenError::BadSignature,
        Some(JWTError::TokenHasExpired) => TokenError::Expired,
        Some(JWTError::TokenNotValidYet | JWTError::ClockDrift) => TokenError::NotYetValid,
        _ => TokenError::Malformed,
    })
}
