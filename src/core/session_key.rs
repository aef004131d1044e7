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
use crate::core::cookies;

/// The header that carries the key on every call to `refresh_cluster`.
pub const HEADER: &str = "x-etls-session-key";

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

/// The token a request's session is known by in its `Cookie` header: the login API's
/// `refreshToken` cookie when `login_refresh_path` is set (what the API accepts once; it stays
/// the same however many ETLS rotations race on it), else the ETLS refresh token. `None` when
/// that cookie is absent.
pub fn session_token<'h>(cfg: &Config, cookie_header: &'h [u8]) -> Option<&'h str> {
    let names = &cfg.cookies.names;
    let name = if cfg.login_refresh_path.is_some() { &names.upstream_refresh } else { &names.refresh };
    cookies::find(cookie_header, name)
}

/// The `x-etls-session-key` value for the request whose `Cookie` header is `cookie_header` (see
/// [`session_token`]); `None` when it has no such token.
pub fn header_value(cfg: &Config, cookie_header: &[u8]) -> Option<String> {
    session_token(cfg, cookie_header).map(|token| of(cfg, token).to_hex())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::testing::{config_with, refresh, NOW, REFRESH_SECRET};
    use serde_json::json;

    const UPSTREAM_A: &str = "upstream-refresh-token-of-session-a";
    const UPSTREAM_B: &str = "upstream-refresh-token-of-session-b";

    #[test]
    fn is_an_hmac_sha256_of_the_label_and_token_under_the_refresh_secret() {
        let cfg = config_with(json!({}));
        let mut input = LABEL.to_vec();
        input.extend_from_slice(UPSTREAM_A.as_bytes());
        let expected: String = hmac_sha256::HMAC::mac(&input, REFRESH_SECRET).iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(of(&cfg, UPSTREAM_A).to_hex(), expected);
    }

    #[test]
    fn header_value_same_session_same_value_across_configs_with_the_same_secrets() {
        let extra = json!({"refresh_cluster": "etls_refresh", "login_refresh_path": "/refresh"});
        let (one, two) = (config_with(extra.clone()), config_with(extra));
        let cookie = format!("refreshTokenEtls={}; refreshToken={UPSTREAM_A}", refresh(NOW + 100));
        let a = header_value(&one, cookie.as_bytes());
        assert_eq!(a.as_deref().map(str::len), Some(64));
        assert_eq!(a, header_value(&two, cookie.as_bytes()));
        // Another ETLS token of the same upstream session (a racing rotation's): the same value.
        let rotated = format!("refreshTokenEtls={}; refreshToken={UPSTREAM_A}", refresh(NOW + 200));
        assert_eq!(a, header_value(&two, rotated.as_bytes()));
        let b = header_value(&one, format!("refreshToken={UPSTREAM_B}").as_bytes());
        assert!(b.is_some());
        assert_ne!(a, b);
    }

    #[test]
    fn header_value_keys_the_etls_refresh_token_without_login_refresh_path() {
        let cfg = config_with(json!({"refresh_cluster": "c"}));
        let (t1, t2) = (refresh(NOW + 100), refresh(NOW + 200));
        let k1 = header_value(&cfg, format!("refreshTokenEtls={t1}; refreshToken={UPSTREAM_A}").as_bytes());
        let k2 = header_value(&cfg, format!("refreshTokenEtls={t2}; refreshToken={UPSTREAM_A}").as_bytes());
        assert_eq!(k1, Some(of(&cfg, &t1).to_hex()));
        assert_ne!(k1, k2);
        assert_eq!(header_value(&cfg, format!("refreshToken={UPSTREAM_A}").as_bytes()), None);
    }

    #[test]
    fn header_value_contains_no_token_substring() {
        let cfg = config_with(json!({"refresh_cluster": "c", "login_refresh_path": "/refresh"}));
        // A token made of hex digits, the key's own alphabet, is the hardest case.
        let token = "0123456789abcdef0123456789abcdef0123456789abcdef";
        let key = header_value(&cfg, format!("refreshToken={token}").as_bytes()).unwrap();
        for window in 8..=token.len() {
            for start in 0..=token.len() - window {
                assert!(!key.contains(&token[start..start + window]), "{window}-byte substring at {start}");
            }
        }
        let etls = refresh(NOW + 100);
        let key = of(&cfg, &etls).to_hex();
        assert!(!etls.contains(&key) && !key.contains(&etls));
    }

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
