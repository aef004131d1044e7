//! Validation: the raw fields (`config::raw`) turned into a [`Config`], every default applied,
//! every value checked; the first bad one is refused with an error naming its key (the shell
//! logs it as one line and `on_configure` returns false).

use std::time::Duration;

use crate::config::keys::load_keys;
use crate::config::raw::{why_not_an_object, Fields, TopLevel};
use crate::config::*;
use crate::core::cookies::{CookieNames, CookiePolicy, SameSite};
use crate::core::origin::TrustedOrigins;
use crate::error::ConfigError;

impl Config {
    /// Parses and validates the plugin configuration `json`. `secret_of(name)` returns the raw
    /// bytes of the Wasm VM environment variable `name`, if set.
    ///
    /// Errors name the key at fault: [`ConfigError::UnknownKey`], `WrongType`, `Missing`,
    /// `BadValue`, `Secret`, or `NotJsonObject` when `json` is not one JSON object.
    pub fn parse(
        json: &[u8],
        secret_of: impl Fn(&str) -> Option<Vec<u8>>,
    ) -> Result<Config, ConfigError> {
        let text = if json.iter().all(u8::is_ascii_whitespace) { b"{}".as_slice() } else { json };
        let object: TopLevel = serde_json::from_slice(text)
            .map_err(|e| ConfigError::NotJsonObject(why_not_an_object(&e)))?;
        if let Some(key) = object.duplicate {
            return Err(ConfigError::DuplicateKey(key));
        }
        let mut raw = Fields(object.map);

        let login_cluster = raw.required_string("login_cluster")?;
        let login_cluster = non_empty("login_cluster", login_cluster)?;
        let login_authority = match raw.string("login_authority")? {
            Some(a) => authority("login_authority", a)?,
            None => login_cluster.clone(),
        };
        let login_upstream_path = path("login_upstream_path", raw.string("login_upstream_path")?, "/login")?;
        let login_timeout = timeout("login_timeout_ms", raw.number("login_timeout_ms")?, 5000)?;
        let login_refresh_path = match raw.string("login_refresh_path")? {
            Some(p) => Some(path("login_refresh_path", Some(p), "/")?),
            None => None,
        };
        let login_logout_path = match raw.string("login_logout_path")? {
            Some(p) => Some(path("login_logout_path", Some(p), "/")?),
            None => None,
        };

        let refresh_cluster = raw.string("refresh_cluster")?.map(|c| non_empty("refresh_cluster", c)).transpose()?;
        let refresh_authority = raw.string("refresh_authority")?.map(|a| authority("refresh_authority", a)).transpose()?;
        let refresh_timeout = timeout("refresh_timeout_ms", raw.number("refresh_timeout_ms")?, 2000)?;

        let routes = Routes {
            login: path("login_path", raw.string("login_path")?, "/api/auth/login")?,
            refresh: path("refresh_path", raw.string("refresh_path")?, "/api/auth/refreshtoken")?,
            logout: path("logout_path", raw.string("logout_path")?, "/api/auth/logout")?,
        };
        if routes.login == routes.refresh || routes.login == routes.logout || routes.refresh == routes.logout {
            return Err(bad("logout_path", "login_path, refresh_path and logout_path must differ"));
        }
        let login_page = path("login_page", raw.string("login_page")?, "/login")?;

        let public_paths = match raw.take::<Vec<String>>("public_paths", "an array of strings")? {
            Some(list) => list,
            None => vec!["/login".to_owned()],
        };
        let public_paths = public_paths
            .into_iter()
            .map(|p| path("public_paths", Some(p), "/").map(|p| trim_trailing_slash(&p)))
            .collect::<Result<Vec<_>, _>>()?;

        let bypass_cors_preflight = raw.boolean("bypass_cors_preflight")?.unwrap_or(true);
        let trusted_origins = raw.take::<Vec<String>>("trusted_origins", "an array of strings")?.unwrap_or_default();
        let trusted_origins = TrustedOrigins::parse(&trusted_origins).map_err(|why| bad("trusted_origins", &why))?;
        let access_ttl_s = ttl("access_ttl_s", raw.number("access_ttl_s")?, 900)?;
        let refresh_ttl_s = ttl("refresh_ttl_s", raw.number("refresh_ttl_s")?, 604_800)?;
        let clock_skew_s = raw.number("clock_skew_s")?.unwrap_or(5);
        if clock_skew_s > MAX_CLOCK_SKEW_S {
            return Err(bad("clock_skew_s", &format!("must be at most {MAX_CLOCK_SKEW_S}")));
        }

        let secure = raw.boolean("cookie_secure")?.unwrap_or(true);
        let same_site = match raw.string("cookie_same_site")? {
            None => SameSite::Strict,
            Some(s) if s.eq_ignore_ascii_case("strict") => SameSite::Strict,
            Some(s) if s.eq_ignore_ascii_case("lax") => SameSite::Lax,
            Some(s) if s.eq_ignore_ascii_case("none") => SameSite::None,
            Some(_) => return Err(bad("cookie_same_site", "must be \"Strict\", \"Lax\" or \"None\"")),
        };
        if same_site == SameSite::None && !secure {
            return Err(bad("cookie_same_site", "\"None\" requires cookie_secure to be true"));
        }
        let domain = raw.string("cookie_domain")?.map(cookie_domain).transpose()?;
        let names = CookieNames {
            access: cookie_name("access_cookie", raw.string("access_cookie")?, "accessTokenEtls")?,
            refresh: cookie_name("refresh_cookie", raw.string("refresh_cookie")?, "refreshTokenEtls")?,
            upstream_access: cookie_name("upstream_access_cookie", raw.string("upstream_access_cookie")?, "accessToken")?,
            upstream_refresh: cookie_name("upstream_refresh_cookie", raw.string("upstream_refresh_cookie")?, "refreshToken")?,
        };
        if !names.are_distinct() {
            return Err(bad("access_cookie", "the four cookie names must differ"));
        }
        cookie_prefixes_hold(&names, secure, domain.is_some())?;

        let identity_headers = IdentityHeaders {
            user_id: header_name("user_id_header", raw.string("user_id_header")?, "x-etls-user-id")?.into(),
            role: header_name("role_header", raw.string("role_header")?, "x-etls-role")?.into(),
        };
        if identity_headers.user_id == identity_headers.role {
            return Err(bad("role_header", "must differ from user_id_header"));
        }

        let max_login_body_bytes = raw.number("max_login_body_bytes")?.unwrap_or(16_384);
        if max_login_body_bytes == 0 || max_login_body_bytes > MAX_LOGIN_BODY_BYTES {
            return Err(bad("max_login_body_bytes", &format!("must be between 1 and {MAX_LOGIN_BODY_BYTES}")));
        }
        let given_max_session_s = raw.number("max_session_s")?;
        let max_session_s = given_max_session_s.unwrap_or(DEFAULT_MAX_SESSION_S);
        if max_session_s == 0 || max_session_s > MAX_SESSION_S {
            return Err(bad("max_session_s", &format!("must be between 1 and {MAX_SESSION_S} seconds")));
        }
        if max_session_s < access_ttl_s {
            // A configuration written before this key existed, with access tokens living longer
            // than the default session: say what to add rather than blame a key it never set.
            let reason = match given_max_session_s {
                Some(_) => "must be at least access_ttl_s".to_owned(),
                None => format!("the default ({DEFAULT_MAX_SESSION_S} seconds) is below access_ttl_s; set max_session_s to at least access_ttl_s"),
            };
            return Err(bad("max_session_s", &reason));
        }

        let access_env = raw.string("access_secret_env")?.unwrap_or_else(|| "ETLS_ACCESS".to_owned());
        let refresh_env = raw.string("refresh_secret_env")?.unwrap_or_else(|| "ETLS_REFRESH".to_owned());
        let access_env = env_name("access_secret_env", access_env)?;
        let refresh_env = env_name("refresh_secret_env", refresh_env)?;
        raw.reject_leftovers()?;

        let (access_keys, refresh_keys, secret_envs) = load_keys(&access_env, &refresh_env, &secret_of)?;

        let refresh = refresh_cluster.map(|cluster| Upstream {
            authority: refresh_authority.unwrap_or_else(|| cluster.clone()),
            cluster,
            path: routes.refresh.clone(),
            timeout: refresh_timeout,
        });
        Ok(Config {
            login: Upstream {
                cluster: login_cluster,
                authority: login_authority,
                path: login_upstream_path,
                timeout: login_timeout,
            },
            login_refresh_path,
            login_logout_path,
            refresh,
            routes,
            login_page,
            public_paths,
            bypass_cors_preflight,
            trusted_origins,
            access_ttl_s,
            refresh_ttl_s,
            max_session_s,
            clock_skew_s,
            cookies: CookiePolicy::new(names, secure, same_site, domain),
            identity_headers,
            max_login_body_bytes: usize::try_from(max_login_body_bytes).unwrap_or(usize::MAX),
            access_keys,
            refresh_keys,
            secret_envs,
        })
    }
}

pub(crate) fn bad(key: &'static str, reason: &str) -> ConfigError {
    ConfigError::BadValue { key, reason: reason.to_owned() }
}

pub(crate) fn non_empty(key: &'static str, value: String) -> Result<String, ConfigError> {
    if value.trim().is_empty() || value.chars().any(char::is_control) {
        return Err(bad(key, "must be a non-empty name without control characters"));
    }
    Ok(value)
}

pub(crate) fn authority(key: &'static str, value: String) -> Result<String, ConfigError> {
    if value.is_empty() || value.bytes().any(|b| b <= b' ' || b == 0x7f || b == b'/') {
        return Err(bad(key, "must be a host[:port] without spaces or slashes"));
    }
    Ok(value)
}

/// A local path: starts with one `/`, no query, no backslash, no whitespace or control characters.
/// A backslash is refused because browsers read `\` in a URL as `/`: a `login_page` of `/\evil.example`
/// would send denied page loads to another site.
pub(crate) fn path(key: &'static str, value: Option<String>, default: &str) -> Result<String, ConfigError> {
    let value = value.unwrap_or_else(|| default.to_owned());
    let is_local = value.starts_with('/') && !value.starts_with("//");
    if !is_local || value.bytes().any(|b| b <= b' ' || b == 0x7f || b == b'?' || b == b'#' || b == b'\\') {
        return Err(bad(key, "must be a path starting with a single \"/\", without query, backslashes, spaces or control characters"));
    }
    Ok(value)
}

pub(crate) fn trim_trailing_slash(path: &str) -> String {
    let trimmed = path.trim_end_matches('/');
    if trimmed.is_empty() { "/".to_owned() } else { trimmed.to_owned() }
}

pub(crate) fn timeout(key: &'static str, value: Option<u64>, default: u64) -> Result<Duration, ConfigError> {
    let ms = value.unwrap_or(default);
    if ms == 0 || ms > MAX_TIMEOUT_MS {
        return Err(bad(key, &format!("must be between 1 and {MAX_TIMEOUT_MS} milliseconds")));
    }
    Ok(Duration::from_millis(ms))
}

pub(crate) fn ttl(key: &'static str, value: Option<u64>, default: u64) -> Result<u64, ConfigError> {
    let seconds = value.unwrap_or(default);
    if seconds == 0 || seconds > MAX_TTL_S {
        return Err(bad(key, &format!("must be between 1 and {MAX_TTL_S} seconds")));
    }
    Ok(seconds)
}

/// RFC 7230 `tchar`: what cookie and header names may be made of.
pub(crate) fn is_token(value: &str) -> bool {
    !value.is_empty()
        && value.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

pub(crate) fn cookie_name(key: &'static str, value: Option<String>, default: &str) -> Result<String, ConfigError> {
    let value = value.unwrap_or_else(|| default.to_owned());
    if !is_token(&value) {
        return Err(bad(key, "must be a cookie name (RFC 6265 token)"));
    }
    if value.len() > MAX_COOKIE_NAME_BYTES {
        return Err(bad(key, &format!("must be at most {MAX_COOKIE_NAME_BYTES} bytes (it counts toward the 4096 bytes of each Set-Cookie)")));
    }
    Ok(value)
}

/// Browsers drop a cookie whose name starts with `__Secure-` unless it is `Secure`, and one that
/// starts with `__Host-` unless it is `Secure` without `Domain` (RFC 6265bis section 4.1.3; the
/// prefixes match in any case). Such a name with `cookie_secure: false` or a `cookie_domain` would
/// make cookies that no browser keeps.
pub(crate) fn cookie_prefixes_hold(names: &CookieNames, secure: bool, has_domain: bool) -> Result<(), ConfigError> {
    let keys = [
        ("access_cookie", &names.access),
        ("refresh_cookie", &names.refresh),
        ("upstream_access_cookie", &names.upstream_access),
        ("upstream_refresh_cookie", &names.upstream_refresh),
    ];
    let starts = |name: &str, prefix: &str| name.get(..prefix.len()).is_some_and(|p| p.eq_ignore_ascii_case(prefix));
    for (key, name) in keys {
        if starts(name, "__Host-") && (!secure || has_domain) {
            return Err(bad(key, "a __Host- cookie needs cookie_secure true and no cookie_domain (browsers drop it otherwise)"));
        }
        if starts(name, "__Secure-") && !secure {
            return Err(bad(key, "a __Secure- cookie needs cookie_secure true (browsers drop it otherwise)"));
        }
    }
    Ok(())
}

pub(crate) fn header_name(key: &'static str, value: Option<String>, default: &str) -> Result<String, ConfigError> {
    let value = value.unwrap_or_else(|| default.to_owned()).to_ascii_lowercase();
    const RESERVED: [&str; 5] = ["cookie", "host", "content-length", "transfer-encoding", "authorization"];
    if !is_token(&value) || RESERVED.contains(&value.as_str()) {
        return Err(bad(key, "must be a header name (RFC 7230 token) not used by HTTP itself"));
    }
    Ok(value)
}

pub(crate) fn cookie_domain(value: String) -> Result<String, ConfigError> {
    let allowed = |b: u8| b.is_ascii_alphanumeric() || b == b'.' || b == b'-';
    if value.is_empty() || !value.bytes().all(allowed) {
        return Err(bad("cookie_domain", "must be a domain name (letters, digits, dots, hyphens)"));
    }
    if value.strip_prefix('.').unwrap_or(&value).len() > MAX_COOKIE_DOMAIN_BYTES {
        return Err(bad("cookie_domain", &format!("must be at most {MAX_COOKIE_DOMAIN_BYTES} bytes (a domain name)")));
    }
    Ok(value)
}

pub(crate) fn env_name(key: &'static str, value: String) -> Result<String, ConfigError> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return Err(bad(key, "must be an environment variable name (letters, digits, underscores)"));
    }
    Ok(value)
}
