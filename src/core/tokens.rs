//! Minting and verifying the ETLS tokens: HS256 JWTs through jwt-simple, never by hand.
//! The two kinds stay apart because their secrets must differ (config refuses equal ones).
//! Time is passed in (`now`, Unix seconds); no clock is read here. No proxy_wasm here.

use jwt_simple::prelude::{Duration, HS256Key, JWTClaims, MACLike, VerificationOptions};
use jwt_simple::JWTError;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::Config;
use crate::core::cache::TokenCache;
use crate::core::model::{PublishedIdentity, Window};
use crate::core::lifetime::{self, PairTimes, TimeClaims};
use crate::error::TokenError;

/// The data these functions take and give, defined in `core::model` (below `config`).
pub use crate::core::model::{Identity, KeyRing, TokenKind};

/// Longest token accepted for verification, in bytes. Never below what the filter mints: every
/// token it sets travels in a `Set-Cookie` of at most
/// [`MAX_SET_COOKIE_BYTES`](crate::core::cookies::MAX_SET_COOKIE_BYTES) (login refuses claims
/// that would make one larger), so a token it minted is shorter than this; and a browser keeps no
/// cookie larger than that.
pub const MAX_TOKEN_BYTES: usize = 4096;

/// A freshly minted access and refresh token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenPair {
    pub access: String,
    pub refresh: String,
    /// Their `iat`, `auth_time` and `exp`s, and so their cookies' `Max-Age`.
    pub times: PairTimes,
}

impl TokenPair {
    /// The two `Set-Cookie` values, each living as long as its token (`exp - iat`).
    pub fn set_cookies(&self, cfg: &Config) -> [String; 2] {
        [
            cfg.cookies.set_access(&self.access, self.times.access_max_age()),
            cfg.cookies.set_refresh(&self.refresh, self.times.refresh_max_age()),
        ]
    }
}

/// The claims of an ETLS token besides the registered ones: the identity and, on every token
/// the filter mints, `auth_time` (the Unix time of the login that started the session).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SessionClaims {
    #[serde(rename = "userId")]
    user_id: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    role: Option<Value>,
    /// An integer; any other JSON type makes the token malformed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    auth_time: Option<u64>,
}

/// The refresh token's extra claim set: the identity plus a random `jti`.
fn random_jti() -> Result<String, TokenError> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|_| TokenError::Mint)?;
    // Hex by hand: one allocation instead of a `format!` per byte (this runs on every rotation).
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut jti = String::with_capacity(32);
    for b in bytes {
        for nibble in [b >> 4, b & 0x0f] {
            jti.push(char::from(HEX.get(usize::from(nibble)).copied().unwrap_or(b'0')));
        }
    }
    Ok(jti)
}

fn claims(identity: &Identity, times: &PairTimes, expires_at: u64, jwt_id: Option<String>) -> JWTClaims<SessionClaims> {
    JWTClaims {
        issued_at: Some(Duration::from_secs(times.issued_at)),
        expires_at: Some(Duration::from_secs(expires_at)),
        invalid_before: None,
        issuer: None,
        subject: None,
        audiences: None,
        jwt_id,
        nonce: None,
        custom: SessionClaims {
            user_id: identity.user_id.clone(),
            role: identity.role.clone(),
            auth_time: Some(times.auth_time),
        },
    }
}

/// Mints a new access token (`iat`, `auth_time`, `exp = min(iat + access_ttl_s, auth_time +
/// max_session_s)`) and refresh token (the same with `refresh_ttl_s`, and a random `jti`) for
/// `identity` in the session that began at `auth_time`, signed with the current secrets.
/// `now` is Unix seconds. Fails with [`TokenError::SessionEnded`] when the session has no
/// second left (`now >= auth_time + max_session_s`), else only with [`TokenError::Mint`].
pub fn mint_pair(cfg: &Config, identity: &Identity, auth_time: u64, now: u64) -> Result<TokenPair, TokenError> {
    let times = lifetime::pair_times(cfg, auth_time, now).ok_or(TokenError::SessionEnded)?;
    let access = cfg
        .access_keys
        .current
        .authenticate(claims(identity, &times, times.access_expires_at, None))
        .map_err(|_| TokenError::Mint)?;
    let refresh = cfg
        .refresh_keys
        .current
        .authenticate(claims(identity, &times, times.refresh_expires_at, Some(random_jti()?)))
        .map_err(|_| TokenError::Mint)?;
    Ok(TokenPair { access, refresh, times })
}

/// What a token that verified says: who, and when (its time claims, and its validity window
/// with the session's end applied: see [`lifetime::check`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Verified {
    pub identity: Identity,
    pub window: Window,
    pub times: TimeClaims,
}

impl Verified {
    /// The `auth_time` of the tokens a rotation at `now` mints for this token's session.
    pub fn rotation_auth_time(&self, now: u64) -> u64 {
        lifetime::rotation_auth_time(self.window.auth_time, now)
    }
}

/// Verifies a token of `kind`: HS256 with that kind's secrets only, `exp` required, `exp`,
/// `nbf`, `iat`, `auth_time` and the session's end checked against `now` (Unix seconds) with a
/// leeway of `clock_skew_s` ([`lifetime::check`]). Returns the identity, or
/// [`TokenError::Malformed`], `BadSignature`, `Expired`, `SessionEnded`, `NotYetValid`.
pub fn verify(cfg: &Config, kind: TokenKind, token: &str, now: u64) -> Result<Identity, TokenError> {
    verify_session(cfg, kind, token, now).map(|v| v.identity)
}

/// [`verify_window`] through `cache`: a cached token of `kind` whose window still contains
/// `now` is accepted without HS256 work; any other is verified and, only if it verifies, cached.
/// Same results as [`verify_window`] as long as `cache` was filled under this `cfg`.
pub fn verify_cached(
    cfg: &Config,
    cache: &mut TokenCache,
    kind: TokenKind,
    token: &str,
    now: u64,
) -> Result<(Identity, Window), TokenError> {
    if let Some((identity, window)) = cache.get_with_window(kind, token, now, cfg.clock_skew_s) {
        return Ok((identity.clone(), *window));
    }
    let (identity, window) = verify_window(cfg, kind, token, now)?;
    cache.insert(kind, token, identity.clone(), window);
    Ok((identity, window))
}

/// [`verify_cached`] for a request that goes on with the identity: its header text, prepared
/// once per cached token, so a hit neither clones the claims nor formats them again.
pub fn verify_cached_published(
    cfg: &Config,
    cache: &mut TokenCache,
    kind: TokenKind,
    token: &str,
    now: u64,
) -> Result<PublishedIdentity, TokenError> {
    if let Some(published) = cache.get_published(kind, token, now, cfg.clock_skew_s) {
        return Ok(published.clone());
    }
    let (identity, window) = verify_window(cfg, kind, token, now)?;
    let published = identity.published();
    cache.insert(kind, token, identity, window);
    Ok(published)
}

/// [`verify`], also returning the window in which the token is valid (for [`TokenCache`]).
pub fn verify_window(cfg: &Config, kind: TokenKind, token: &str, now: u64) -> Result<(Identity, Window), TokenError> {
    verify_session(cfg, kind, token, now).map(|v| (v.identity, v.window))
}

/// [`verify`], returning everything the token says ([`Verified`]).
pub fn verify_session(cfg: &Config, kind: TokenKind, token: &str, now: u64) -> Result<Verified, TokenError> {
    let keys = match kind {
        TokenKind::Access => &cfg.access_keys,
        TokenKind::Refresh => &cfg.refresh_keys,
    };
    if token.len() > MAX_TOKEN_BYTES {
        return Err(TokenError::Malformed);
    }
    let claims = match verify_with(&keys.current, token) {
        Err(TokenError::BadSignature) => match &keys.previous {
            Some(previous) => verify_with(previous, token),
            None => Err(TokenError::BadSignature),
        },
        other => other,
    }?;
    let secs = |t: Option<Duration>| t.map(|t| t.as_secs());
    let times = TimeClaims {
        issued_at: secs(claims.issued_at),
        not_before: secs(claims.invalid_before),
        expires_at: secs(claims.expires_at),
        auth_time: claims.custom.auth_time,
    };
    let window = lifetime::check(cfg, &times, now)?;
    let SessionClaims { user_id, role, .. } = claims.custom;
    let identity = Identity::new(user_id, role).ok_or(TokenError::Malformed)?;
    Ok(Verified { identity, window, times })
}

/// The signature and the claims' shape, by jwt-simple. Its time checks are switched off (at
/// time 0, with tokens from the future accepted, no `exp`, `iat` or `nbf` can fail): the time
/// rules, the session's end among them, are [`lifetime::check`]'s, applied to what this returns.
fn verify_with(key: &HS256Key, token: &str) -> Result<JWTClaims<SessionClaims>, TokenError> {
    let options = VerificationOptions {
        accept_future: true,
        time_tolerance: Some(Duration::from_secs(0)),
        artificial_time: Some(Duration::from_secs(0)),
        max_token_length: Some(MAX_TOKEN_BYTES),
        ..VerificationOptions::default()
    };
    key.verify_token::<SessionClaims>(token, Some(options)).map_err(|e| match e.downcast_ref::<JWTError>() {
        Some(JWTError::InvalidAuthenticationTag | JWTError::InvalidSignature) => TokenError::BadSignature,
        Some(JWTError::TokenHasExpired) => TokenError::Expired,
        Some(JWTError::TokenNotValidYet | JWTError::ClockDrift) => TokenError::NotYetValid,
        _ => TokenError::Malformed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::model::decimal;
    use crate::core::testing::*;
    use serde_json::json;

    fn verify_access(cfg: &Config, token: &str) -> Result<Identity, TokenError> {
        verify(cfg, TokenKind::Access, token, NOW)
    }

    #[test]
    fn minted_pair_has_the_contract_claims() {
        let cfg = config();
        let identity = Identity::new(json!(42), Some(json!("admin"))).unwrap();
        let pair = mint_pair(&cfg, &identity, NOW, NOW).unwrap();
        let a = payload(&pair.access);
        assert_eq!(a, json!({"userId": 42, "role": "admin", "iat": NOW, "auth_time": NOW, "exp": NOW + 900}));
        let r = payload(&pair.refresh);
        assert_eq!(r["userId"], json!(42));
        assert_eq!(r["role"], json!("admin"));
        assert_eq!(r["exp"].as_u64().unwrap() - r["iat"].as_u64().unwrap(), 604_800);
        assert_eq!(r["jti"].as_str().unwrap().len(), 32);
        let again = mint_pair(&cfg, &identity, NOW, NOW).unwrap();
        assert_ne!(payload(&again.refresh)["jti"], r["jti"]);
        assert_eq!(verify(&cfg, TokenKind::Refresh, &pair.refresh, NOW).unwrap(), identity);
    }

    #[test]
    fn jti_is_32_lowercase_hex_digits() {
        let jti = random_jti().unwrap();
        assert_eq!(jti.len(), 32);
        assert!(jti.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)), "{jti}");
    }

    #[test]
    fn string_user_id_stays_a_string_and_role_is_optional() {
        let cfg = config();
        let identity = Identity::new(json!("u-7"), None).unwrap();
        let pair = mint_pair(&cfg, &identity, NOW, NOW).unwrap();
        assert_eq!(payload(&pair.access), json!({"userId": "u-7", "iat": NOW, "auth_time": NOW, "exp": NOW + 900}));
        let back = verify_access(&cfg, &pair.access).unwrap();
        assert_eq!(back.user_id_header().as_deref(), Some("u-7"));
        assert_eq!(back.role_header(), None);
    }

    #[test]
    fn numeric_ids_are_written_like_serde_json_writes_them() {
        for n in [0u64, 7, 10, 42, 99, 100, 1_000_000_007, u64::MAX] {
            assert_eq!(decimal(n), n.to_string());
            assert_eq!(Identity::new(json!(n), None).unwrap().user_id_header(), Some(json!(n).to_string()));
        }
        for v in [json!(-5), json!(1.5), json!(-0.0), json!(1e300)] {
            assert_eq!(Identity::new(v.clone(), None).unwrap().user_id_header(), Some(v.to_string()));
        }
    }

    #[test]
    fn empty_role_is_a_role_minted_and_verified() {
        let cfg = config();
        let identity = Identity::new(json!(9), Some(json!(""))).unwrap();
        assert_eq!(identity.role_header().as_deref(), Some(""));
        let pair = mint_pair(&cfg, &identity, NOW, NOW).unwrap();
        assert_eq!(payload(&pair.access), json!({"userId": 9, "role": "", "iat": NOW, "auth_time": NOW, "exp": NOW + 900}));
        assert_eq!(verify(&cfg, TokenKind::Refresh, &pair.refresh, NOW).unwrap(), identity);
        // jose-style: no iat.
        let jose = token(ACCESS_SECRET, json!({"userId": "u", "role": ""}), None, Some(NOW + 100));
        assert_eq!(verify_access(&cfg, &jose).unwrap().role_header().as_deref(), Some(""));
        // An empty userId is still no identity.
        assert_eq!(Identity::new(json!(""), Some(json!(""))), None);
        // Nor one that a header cannot carry exactly (the app would read " alice " as "alice").
        for spaced in [" alice", "alice ", " ", "  a  "] {
            assert_eq!(Identity::new(json!(spaced), None), None, "{spaced:?}");
        }
        assert!(Identity::new(json!("al ice"), Some(json!(" admin "))).is_some(), "inner spaces, and roles, are fine");
    }

    #[test]
    fn expiry_honours_the_leeway_edge() {
        let cfg = config(); // clock_skew_s 5
        assert!(verify_access(&cfg, &access(NOW)).is_ok());
        assert!(verify_access(&cfg, &access(NOW - 5)).is_ok(), "exactly at the leeway is still valid");
        assert_eq!(verify_access(&cfg, &access(NOW - 6)), Err(TokenError::Expired));
        assert_eq!(verify_access(&cfg, &access(NOW - 3600)), Err(TokenError::Expired));
    }

    #[test]
    fn not_yet_valid_tokens_are_refused_beyond_the_leeway() {
        let cfg = config();
        let claims = json!({"userId": 1, "nbf": NOW + 60});
        let early = token(ACCESS_SECRET, claims, None, Some(NOW + 900));
        assert_eq!(verify_access(&cfg, &early), Err(TokenError::NotYetValid));
        let claims = json!({"userId": 1, "nbf": NOW + 5});
        assert!(verify_access(&cfg, &token(ACCESS_SECRET, claims, None, Some(NOW + 900))).is_ok());
        let future_iat = token(ACCESS_SECRET, json!({"userId": 1}), Some(NOW + 600), Some(NOW + 900));
        assert_eq!(verify_access(&cfg, &future_iat), Err(TokenError::NotYetValid));
    }

    #[test]
    fn jose_style_token_without_iat_is_accepted() {
        let cfg = config();
        let jose = token(ACCESS_SECRET, json!({"userId": 5, "role": "user"}), None, Some(NOW + 100));
        let identity = verify_access(&cfg, &jose).unwrap();
        assert_eq!(identity.user_id, json!(5));
        assert_eq!(identity.role_header().as_deref(), Some("user"));
    }

    #[test]
    fn wrong_key_tampering_and_kind_confusion_are_refused() {
        let cfg = config();
        let good = access(NOW + 100);
        assert_eq!(verify_access(&cfg, &token(b"another-secret-of-enough-length-000", json!({"userId": 1}), None, Some(NOW + 100))), Err(TokenError::BadSignature));
        assert_eq!(verify(&cfg, TokenKind::Access, &refresh(NOW + 100), NOW), Err(TokenError::BadSignature), "refresh token used as access");
        assert_eq!(verify(&cfg, TokenKind::Refresh, &good, NOW), Err(TokenError::BadSignature), "access token used as refresh");
        let mut parts: Vec<String> = good.split('.').map(str::to_owned).collect();
        let forged_payload = {
            use jwt_simple::prelude::Base64UrlSafeNoPadding;
            use jwt_simple::reexports::ct_codecs::Encoder;
            Base64UrlSafeNoPadding::encode_to_string(br#"{"userId":1,"role":"admin","exp":9999999999}"#).unwrap()
        };
        parts[1] = forged_payload;
        assert_eq!(verify_access(&cfg, &parts.join(".")), Err(TokenError::BadSignature));
        let mut sig_flipped = good.clone();
        let last = sig_flipped.pop().unwrap();
        sig_flipped.push(if last == 'A' { 'B' } else { 'A' });
        assert!(verify_access(&cfg, &sig_flipped).is_err());
    }

    #[test]
    fn alg_none_and_other_algs_are_refused() {
        let cfg = config();
        use jwt_simple::prelude::{Base64UrlSafeNoPadding, HS384Key, HS512Key, JWTClaims};
        use jwt_simple::reexports::ct_codecs::Encoder;
        let b64 = |s: &str| Base64UrlSafeNoPadding::encode_to_string(s.as_bytes()).unwrap();
        let body = b64(&format!(r#"{{"userId":1,"exp":{}}}"#, NOW + 100));
        let none = format!("{}.{}.", b64(r#"{"alg":"none","typ":"JWT"}"#), body);
        assert!(verify_access(&cfg, &none).is_err());
        let none_upper = format!("{}.{}.", b64(r#"{"alg":"NONE"}"#), body);
        assert!(verify_access(&cfg, &none_upper).is_err());
        let claims = || JWTClaims {
            issued_at: None, expires_at: Some(Duration::from_secs(NOW + 100)), invalid_before: None, issuer: None,
            subject: None, audiences: None, jwt_id: None, nonce: None, custom: json!({"userId": 1}),
        };
        let hs384 = HS384Key::from_bytes(ACCESS_SECRET).authenticate(claims()).unwrap();
        let hs512 = HS512Key::from_bytes(ACCESS_SECRET).authenticate(claims()).unwrap();
        assert!(verify_access(&cfg, &hs384).is_err());
        assert!(verify_access(&cfg, &hs512).is_err());
    }

    #[test]
    fn malformed_strings_are_refused_without_panicking() {
        let cfg = config();
        let long = "a".repeat(MAX_TOKEN_BYTES + 1);
        for bad in ["", ".", "..", "a.b.c", "a.b", "ééé.ééé.ééé", "eyJhbGciOiJIUzI1NiJ9..", "eyJ.eyJ.sig", long.as_str()] {
            assert!(verify_access(&cfg, bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn claims_that_cannot_be_identity_are_refused() {
        let cfg = config();
        for claims in [json!({}), json!({"userId": null}), json!({"userId": {"a": 1}}), json!({"userId": [1]}),
                       json!({"userId": "a\nb"}), json!({"userId": 1, "role": {"x": 1}}), json!({"userId": ""})] {
            let t = token(ACCESS_SECRET, claims.clone(), None, Some(NOW + 100));
            assert_eq!(verify_access(&cfg, &t), Err(TokenError::Malformed), "{claims}");
        }
        let no_exp = token(ACCESS_SECRET, json!({"userId": 1}), Some(NOW), None);
        assert_eq!(verify_access(&cfg, &no_exp), Err(TokenError::Malformed));
    }

    #[test]
    fn previous_secret_still_verifies_but_never_signs() {
        let env = |name: &str| match name {
            "ETLS_ACCESS_PREVIOUS" => Some(ACCESS_PREVIOUS.to_vec()),
            other => crate::core::testing::env(other),
        };
        let cfg = Config::parse(br#"{"login_cluster":"l"}"#, env).unwrap();
        let old = token(ACCESS_PREVIOUS, json!({"userId": 1}), Some(NOW), Some(NOW + 100));
        assert!(verify_access(&cfg, &old).is_ok());
        let expired_old = token(ACCESS_PREVIOUS, json!({"userId": 1}), Some(NOW - 1000), Some(NOW - 100));
        assert_eq!(verify_access(&cfg, &expired_old), Err(TokenError::Expired));
        assert_eq!(verify_access(&config(), &old), Err(TokenError::BadSignature), "without _PREVIOUS it fails");
        let pair = mint_pair(&cfg, &Identity::new(json!(1), None).unwrap(), NOW, NOW).unwrap();
        assert!(verify_access(&config(), &pair.access).is_ok(), "new tokens use the current secret");
    }
}
