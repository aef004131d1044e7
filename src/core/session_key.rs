//! The session key: one value per session that every VM of every replica with the same secrets
//! computes alike, and that tells nothing to anyone without the refresh secret (SPEC, "Several
//! replicas"). It is HMAC-SHA256 under the current refresh secret of a domain-separation label
//! and the session's refresh token (the login API's `refreshToken` with `login_refresh_path`,
//! else the ETLS refresh token).
//!
//! One function for every use: the `x-etls-session-key` header of refresh-cluster calls, and the
//! slot and record key of the shared login API refresh calls (`core::shared_calls`). No
//! proxy_wasm here.

use crate::config::Config;

/// Separates this keyed hash from every other use of the refresh secret (an HS256 signature is
/// a MAC over base64url text, which never holds a NUL byte).
const LABEL: &[u8] = b"etls-auth session key v1\0";

/// The keyed hash of one session's refresh token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SessionKey(pub [u8; 32]);

impl SessionKey {
    /// The key as 64 lowercase hex digits (the `x-etls-session-key` header value).
    pub fn to_hex(&self) -> String {
        use std::fmt::Write;
        let mut out = String::with_capacity(64);
        for byte in self.0 {
            let _ = write!(out, "{byte:02x}");
        }
        out
    }
}

/// The session key of `refresh_token` under `cfg`'s current refresh secret.
pub fn of(cfg: &Config, refresh_token: &str) -> SessionKey {
    let secret = cfg.refresh_keys.current_secret();
    let mut mac = hmac_sha256::HMAC::new(&secret);
    mac.update(LABEL);
    mac.update(refresh_token.as_bytes());
    SessionKey(mac.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::testing::config_with;
    use serde_json::json;

    #[test]
    fn same_token_same_key_other_token_other_key_no_token_inside() {
        let cfg = config_with(json!({}));
        let a = of(&cfg, "refresh-token-a");
        assert_eq!(a, of(&config_with(json!({})), "refresh-token-a"), "same secrets, same key (another VM or replica)");
        assert_ne!(a, of(&cfg, "refresh-token-b"));
        let hex = a.to_hex();
        assert_eq!(hex.len(), 64);
        assert!(hex.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        assert!(!hex.contains("refresh"));
        // Keyed: the plain hash of the token, or its MAC without the label, is not the key.
        assert_ne!(a.0, hmac_sha256::Hash::hash(b"refresh-token-a"));
        assert_ne!(a.0, hmac_sha256::HMAC::mac(b"refresh-token-a", cfg.refresh_keys.current_secret()));
    }

    #[test]
    fn another_refresh_secret_gives_another_key() {
        let cfg = config_with(json!({}));
        let other = crate::config::Config::parse(
            br#"{"login_cluster": "login_api"}"#,
            |name| match name {
                "ETLS_ACCESS" => Some(b"an-access-secret-of-at-least-32-bytes!!".to_vec()),
                "ETLS_REFRESH" => Some(b"another-refresh-secret-of-32-bytes-or-more".to_vec()),
                _ => None,
            },
        )
        .unwrap();
        assert_ne!(of(&cfg, "t"), of(&other, "t"));
    }
}
