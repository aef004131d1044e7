//! The plugin configuration: one JSON object (docs/configuration.md), parsed and validated once,
//! in `on_configure`, into a `Config` that every request shares. All defaults live in `validate`.
//! No proxy_wasm here: secrets come through a lookup function, so native tools and tests use this
//! exact code (`etls-config-check`).
//!
//! By role: `raw` reads the JSON object key by key (duplicates, unknown keys and their near
//! misses), `validate` turns each value into the `Config` or one error naming its key, and
//! `keys` reads the secrets into the two `KeyRing`s. This file holds the limits and the
//! `Config` itself; `KNOWN_KEYS` and `MIN_SECRET_BYTES` are re-exported from `raw` and `keys`.

use std::rc::Rc;
use std::time::Duration;

use crate::core::cookies::CookiePolicy;
use crate::core::model::KeyRing;
use crate::core::origin::TrustedOrigins;

mod keys;
mod raw;
mod validate;

pub use keys::{SecretEnvs, MIN_SECRET_BYTES};
pub use raw::{closest_known_key, KNOWN_KEYS};

/// Longest cookie or token lifetime accepted: browsers cap `Max-Age` at 400 days.
pub const MAX_TTL_S: u64 = 400 * 24 * 3600;
/// Largest `max_session_s` accepted: ten years (sessions that never end in practice).
pub const MAX_SESSION_S: u64 = 3650 * 24 * 3600;
/// Default `max_session_s`: 30 days (OWASP ASVS 4.0.3 3.3.2, level 1).
pub const DEFAULT_MAX_SESSION_S: u64 = 30 * 24 * 3600;
/// Largest `clock_skew_s` accepted.
pub const MAX_CLOCK_SKEW_S: u64 = 3600;
/// Largest dispatched-call timeout accepted, in milliseconds.
pub const MAX_TIMEOUT_MS: u64 = 300_000;
/// Largest `max_login_body_bytes`: Envoy's default per-stream buffer is 1 MiB.
pub const MAX_LOGIN_BODY_BYTES: u64 = 1024 * 1024;
/// Longest cookie name accepted, in bytes. With the longest domain, the attributes of a
/// `Set-Cookie` then take well under 1 KiB of its 4096 bytes, so a session always fits.
pub const MAX_COOKIE_NAME_BYTES: usize = 128;
/// Longest `cookie_domain` accepted, in bytes (a DNS name, RFC 1035), a leading dot aside.
pub const MAX_COOKIE_DOMAIN_BYTES: usize = 253;


/// Where and how a dispatched call goes.
#[derive(Debug, Clone)]
pub struct Upstream {
    /// Envoy cluster name.
    pub cluster: String,
    /// `:authority` of the call.
    pub authority: String,
    /// `:path` of the call.
    pub path: String,
    pub timeout: Duration,
}

/// The routes the filter answers itself (exact match on the path without its query).
#[derive(Debug, Clone)]
pub struct Routes {
    pub login: String,
    pub refresh: String,
    pub logout: String,
}

/// Request headers that carry the verified identity to the app. Shared text: every request's
/// header edits name them without copying.
#[derive(Debug, Clone)]
pub struct IdentityHeaders {
    pub user_id: Rc<str>,
    pub role: Rc<str>,
}

/// A validated configuration. Built only by [`Config::parse`].
pub struct Config {
    /// The external login API.
    pub login: Upstream,
    /// `login_refresh_path`: the login API's refresh call (same cluster, authority and timeout
    /// as `login`). `None`: the login API is asked only at login.
    pub login_refresh_path: Option<String>,
    /// `login_logout_path`: the login API's logout call (same cluster, authority and timeout
    /// as `login`). `None`: logout does not call the login API.
    pub login_logout_path: Option<String>,
    /// The internal refresh cluster; `None` rotates inline. Its `path` is `routes.refresh`.
    pub refresh: Option<Upstream>,
    pub routes: Routes,
    /// Where denied page loads are sent (a local path).
    pub login_page: String,
    /// Public path prefixes, each without a trailing slash (except the root).
    pub public_paths: Vec<String>,
    pub bypass_cors_preflight: bool,
    /// Origins allowed to call the filter's routes cross-origin (`core::origin`).
    pub trusted_origins: TrustedOrigins,
    pub access_ttl_s: u64,
    pub refresh_ttl_s: u64,
    /// Absolute session lifetime, in seconds: a session ends at `auth_time` + this however
    /// active it is (`core::lifetime`). At least `access_ttl_s`.
    pub max_session_s: u64,
    pub clock_skew_s: u64,
    pub cookies: CookiePolicy,
    pub identity_headers: IdentityHeaders,
    pub max_login_body_bytes: usize,
    /// Keys that sign and verify access tokens.
    pub access_keys: KeyRing,
    /// Keys that sign and verify refresh tokens.
    pub refresh_keys: KeyRing,
    /// The environment variables the secrets were read from (for `etls-config-check`).
    pub secret_envs: SecretEnvs,
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod reference_tests;
