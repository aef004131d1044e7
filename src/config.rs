//! The plugin configuration: one JSON object (docs/configuration.md), parsed and validated once,
//! in `on_configure`, into a `Config` that every request shares. All defaults live here.
//! No proxy_wasm here: secrets come through a lookup function, so native tools and tests use this
//! exact code (`etls-config-check`).

use std::rc::Rc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::core::cookies::{CookieNames, CookiePolicy, SameSite};
use crate::core::origin::TrustedOrigins;
use crate::core::model::KeyRing;
use crate::error::{ConfigError, SecretProblem};

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
/// Shortest accepted HS256 secret, in bytes (RFC 7518 section 3.2).
pub const MIN_SECRET_BYTES: usize = 32;

/// Every key of the plugin configuration, in the order of `docs/configuration.md`. The parser can
/// only read a key listed here, an unknown key is matched against this list for a suggestion, and
/// a unit test checks that the configuration reference documents exactly these keys.
pub const KNOWN_KEYS: &[&str] = &[
    "login_cluster",
    "login_authority",
    "login_upstream_path",
    "login_timeout_ms",
    "login_refresh_path",
    "login_logout_path",
    "refresh_cluster",
    "refresh_authority",
    "refresh_timeout_ms",
    "login_path",
    "refresh_path",
    "logout_path",
    "login_page",
    "public_paths",
    "bypass_cors_preflight",
    "trusted_origins",
    "access_ttl_s",
    "refresh_ttl_s",
    "clock_skew_s",
    "access_secret_env",
    "refresh_secret_env",
    "cookie_secure",
    "cookie_same_site",
    "cookie_domain",
    "access_cookie",
    "refresh_cookie",
    "upstream_access_cookie",
    "upstream_refresh_cookie",
    "user_id_header",
    "role_header",
    "max_login_body_bytes",
    "max_session_s",
];

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

/// The names of the environment variables that held the secrets; a `_PREVIOUS` one only when set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretEnvs {
    pub access: String,
    pub refresh: String,
    pub access_previous: Option<String>,
    pub refresh_previous: Option<String>,
}

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

/// Why the configuration is not a JSON object, without quoting any of it (serde's own message
/// can quote a value: `invalid type: string "..."`).
fn why_not_an_object(e: &serde_json::Error) -> String {
    use serde_json::error::Category;
    let at = format!("line {} column {}", e.line(), e.column());
    match e.classify() {
        Category::Data => "it is JSON, but not an object".to_owned(),
        Category::Eof => format!("the JSON ends early, at {at}"),
        Category::Syntax | Category::Io => format!("not JSON at {at}"),
    }
}

/// The keys of both kinds, current and `<NAME>_PREVIOUS`, checked for length and for overlap.
fn load_keys(
    access_env: &str,
    refresh_env: &str,
    secret_of: &impl Fn(&str) -> Option<Vec<u8>>,
) -> Result<(KeyRing, KeyRing, SecretEnvs), ConfigError> {
    let load = |key: &'static str, env: String, required: bool| -> Result<Option<Vec<u8>>, ConfigError> {
        match secret_of(&env) {
            None if required => Err(ConfigError::Secret { key, env, problem: SecretProblem::Missing }),
            None => Ok(None),
            Some(s) if s.len() < MIN_SECRET_BYTES => {
                Err(ConfigError::Secret { key, env, problem: SecretProblem::TooShort })
            }
            Some(s) => Ok(Some(s)),
        }
    };
    let access = load("access_secret_env", access_env.to_owned(), true)?.unwrap_or_default();
    let refresh = load("refresh_secret_env", refresh_env.to_owned(), true)?.unwrap_or_default();
    let access_previous_env = format!("{access_env}_PREVIOUS");
    let refresh_previous_env = format!("{refresh_env}_PREVIOUS");
    let access_previous = load("access_secret_env", access_previous_env.clone(), false)?;
    let refresh_previous = load("refresh_secret_env", refresh_previous_env.clone(), false)?;

    let access_all = [Some(&access), access_previous.as_ref()];
    let refresh_all = [Some(&refresh), refresh_previous.as_ref()];
    let overlap = access_all.iter().flatten().any(|a| refresh_all.iter().flatten().any(|r| a == r));
    if overlap {
        return Err(ConfigError::Secret {
            key: "refresh_secret_env",
            env: refresh_env.to_owned(),
            problem: SecretProblem::SameAsOtherKind,
        });
    }
    let names = SecretEnvs {
        access: access_env.to_owned(),
        refresh: refresh_env.to_owned(),
        access_previous: access_previous.is_some().then_some(access_previous_env),
        refresh_previous: refresh_previous.is_some().then_some(refresh_previous_env),
    };
    Ok((
        KeyRing::new(&access, access_previous.as_deref()),
        KeyRing::new(&refresh, refresh_previous.as_deref()),
        names,
    ))
}

/// The configuration object as read, with the first key that it gives twice (serde_json's own
/// map would silently keep the last value).
struct TopLevel {
    map: Map<String, Value>,
    duplicate: Option<String>,
}

impl<'de> serde::Deserialize<'de> for TopLevel {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Entries;
        impl<'de> serde::de::Visitor<'de> for Entries {
            type Value = TopLevel;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a map")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut entries: A) -> Result<TopLevel, A::Error> {
                let mut map = Map::new();
                let mut duplicate = None;
                while let Some((key, value)) = entries.next_entry::<String, Value>()? {
                    if duplicate.is_none() && map.contains_key(&key) {
                        duplicate = Some(key.clone());
                    }
                    map.insert(key, value);
                }
                Ok(TopLevel { map, duplicate })
            }
        }
        deserializer.deserialize_map(Entries)
    }
}

/// The configuration object, consumed key by key so that leftovers are unknown keys.
struct Fields(Map<String, Value>);

impl Fields {
    /// Removes `key` and converts it; JSON `null` counts as absent. Only a key of [`KNOWN_KEYS`]
    /// can be read: any other is refused, so the list cannot miss a key the parser reads.
    fn take<T: DeserializeOwned>(&mut self, key: &'static str, expected: &'static str) -> Result<Option<T>, ConfigError> {
        if !KNOWN_KEYS.contains(&key) {
            return Err(ConfigError::UnknownKey { key: key.to_owned(), did_you_mean: None });
        }
        match self.0.remove(key) {
            None | Some(Value::Null) => Ok(None),
            Some(value) => serde_json::from_value(value)
                .map(Some)
                .map_err(|_| ConfigError::WrongType { key, expected }),
        }
    }
    fn string(&mut self, key: &'static str) -> Result<Option<String>, ConfigError> {
        self.take(key, "a string")
    }
    fn number(&mut self, key: &'static str) -> Result<Option<u64>, ConfigError> {
        self.take(key, "a non-negative integer")
    }
    fn boolean(&mut self, key: &'static str) -> Result<Option<bool>, ConfigError> {
        self.take(key, "true or false")
    }
    /// A string that must be there; when it is not, names a key of the configuration that looks
    /// like a misspelling of it.
    fn required_string(&mut self, key: &'static str) -> Result<String, ConfigError> {
        match self.string(key)? {
            Some(value) => Ok(value),
            None => {
                let near_miss = self.0.keys().find(|k| is_near(k, key)).cloned();
                Err(ConfigError::Missing { key, near_miss })
            }
        }
    }
    /// Every key not read by now is unknown; the first one is reported, with the known key it is
    /// close to, if any.
    fn reject_leftovers(&self) -> Result<(), ConfigError> {
        match self.0.keys().next() {
            Some(key) => Err(ConfigError::UnknownKey { key: key.clone(), did_you_mean: closest_known_key(key) }),
            None => Ok(()),
        }
    }
}

/// The known key that `key` most likely misspells: after turning `camelCase` and `kebab-case`
/// into `snake_case`, at most two edits away (one for keys under six characters); ties go to the
/// key listed first.
pub fn closest_known_key(key: &str) -> Option<&'static str> {
    let mut best: Option<(usize, &'static str)> = None;
    for &known in KNOWN_KEYS {
        if let Some(d) = near_distance(key, known) {
            if best.is_none_or(|(b, _)| d < b) {
                best = Some((d, known));
            }
        }
    }
    best.map(|(_, known)| known)
}

fn is_near(written: &str, known: &str) -> bool {
    near_distance(written, known).is_some()
}

/// The edit distance between `written` (normalised to snake_case) and `known`, if it is small
/// enough to be a typo: at most 2, and at most a third of the known key's length.
fn near_distance(written: &str, known: &str) -> Option<usize> {
    // Keys longer than any known key by more than two characters cannot be near one; this also
    // bounds the work on a hostile configuration.
    if written.chars().count() > known.len() + 2 {
        return None;
    }
    let d = edit_distance(&snake_case(written), known);
    (d <= 2 && d * 3 <= known.len()).then_some(d)
}

/// `loginCluster`, `Login-Cluster` and `LOGIN_CLUSTER` all become `login_cluster`.
fn snake_case(key: &str) -> String {
    let mut out = String::with_capacity(key.len() + 4);
    let mut previous_lower = false;
    for c in key.chars() {
        if c == '-' || c == ' ' {
            out.push('_');
        } else if c.is_ascii_uppercase() && previous_lower {
            out.push('_');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c.to_ascii_lowercase());
        }
        previous_lower = c.is_ascii_lowercase() || c.is_ascii_digit();
    }
    out
}

/// Levenshtein distance with adjacent transpositions (optimal string alignment), by characters.
fn edit_distance(a: &str, b: &str) -> usize {
    const FAR: usize = usize::MAX / 4;
    let at = |row: &[usize], k: Option<usize>| k.and_then(|k| row.get(k)).copied().unwrap_or(FAR);
    let b: Vec<char> = b.chars().collect();
    // Rows of the table: two back (for transpositions), the previous one, the one being filled.
    let mut before: Vec<usize> = Vec::new();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    let mut last_a = None;
    for (i, ca) in a.chars().enumerate() {
        let mut current = Vec::with_capacity(b.len() + 1);
        current.push(i + 1);
        let mut last_b = None;
        for (j, &cb) in b.iter().enumerate() {
            let left = current.last().copied().unwrap_or(FAR);
            let mut d = (at(&previous, Some(j)) + usize::from(ca != cb))
                .min(at(&previous, Some(j + 1)) + 1)
                .min(left + 1);
            if last_a == Some(cb) && last_b == Some(ca) {
                d = d.min(at(&before, j.checked_sub(1)) + 1);
            }
            current.push(d);
            last_b = Some(cb);
        }
        before = std::mem::replace(&mut previous, current);
        last_a = Some(ca);
    }
    previous.last().copied().unwrap_or(FAR)
}

fn bad(key: &'static str, reason: &str) -> ConfigError {
    ConfigError::BadValue { key, reason: reason.to_owned() }
}

fn non_empty(key: &'static str, value: String) -> Result<String, ConfigError> {
    if value.trim().is_empty() || value.chars().any(char::is_control) {
        return Err(bad(key, "must be a non-empty name without control characters"));
    }
    Ok(value)
}

fn authority(key: &'static str, value: String) -> Result<String, ConfigError> {
    if value.is_empty() || value.bytes().any(|b| b <= b' ' || b == 0x7f || b == b'/') {
        return Err(bad(key, "must be a host[:port] without spaces or slashes"));
    }
    Ok(value)
}

/// A local path: starts with one `/`, no query, no backslash, no whitespace or control characters.
/// A backslash is refused because browsers read `\` in a URL as `/`: a `login_page` of `/\evil.example`
/// would send denied page loads to another site.
fn path(key: &'static str, value: Option<String>, default: &str) -> Result<String, ConfigError> {
    let value = value.unwrap_or_else(|| default.to_owned());
    let is_local = value.starts_with('/') && !value.starts_with("//");
    if !is_local || value.bytes().any(|b| b <= b' ' || b == 0x7f || b == b'?' || b == b'#' || b == b'\\') {
        return Err(bad(key, "must be a path starting with a single \"/\", without query, backslashes, spaces or control characters"));
    }
    Ok(value)
}

fn trim_trailing_slash(path: &str) -> String {
    let trimmed = path.trim_end_matches('/');
    if trimmed.is_empty() { "/".to_owned() } else { trimmed.to_owned() }
}

fn timeout(key: &'static str, value: Option<u64>, default: u64) -> Result<Duration, ConfigError> {
    let ms = value.unwrap_or(default);
    if ms == 0 || ms > MAX_TIMEOUT_MS {
        return Err(bad(key, &format!("must be between 1 and {MAX_TIMEOUT_MS} milliseconds")));
    }
    Ok(Duration::from_millis(ms))
}

fn ttl(key: &'static str, value: Option<u64>, default: u64) -> Result<u64, ConfigError> {
    let seconds = value.unwrap_or(default);
    if seconds == 0 || seconds > MAX_TTL_S {
        return Err(bad(key, &format!("must be between 1 and {MAX_TTL_S} seconds")));
    }
    Ok(seconds)
}

/// RFC 7230 `tchar`: what cookie and header names may be made of.
fn is_token(value: &str) -> bool {
    !value.is_empty()
        && value.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn cookie_name(key: &'static str, value: Option<String>, default: &str) -> Result<String, ConfigError> {
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
fn cookie_prefixes_hold(names: &CookieNames, secure: bool, has_domain: bool) -> Result<(), ConfigError> {
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

fn header_name(key: &'static str, value: Option<String>, default: &str) -> Result<String, ConfigError> {
    let value = value.unwrap_or_else(|| default.to_owned()).to_ascii_lowercase();
    const RESERVED: [&str; 5] = ["cookie", "host", "content-length", "transfer-encoding", "authorization"];
    if !is_token(&value) || RESERVED.contains(&value.as_str()) {
        return Err(bad(key, "must be a header name (RFC 7230 token) not used by HTTP itself"));
    }
    Ok(value)
}

fn cookie_domain(value: String) -> Result<String, ConfigError> {
    let allowed = |b: u8| b.is_ascii_alphanumeric() || b == b'.' || b == b'-';
    if value.is_empty() || !value.bytes().all(allowed) {
        return Err(bad("cookie_domain", "must be a domain name (letters, digits, dots, hyphens)"));
    }
    if value.strip_prefix('.').unwrap_or(&value).len() > MAX_COOKIE_DOMAIN_BYTES {
        return Err(bad("cookie_domain", &format!("must be at most {MAX_COOKIE_DOMAIN_BYTES} bytes (a domain name)")));
    }
    Ok(value)
}

fn env_name(key: &'static str, value: String) -> Result<String, ConfigError> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return Err(bad(key, "must be an environment variable name (letters, digits, underscores)"));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::testing::{env, ACCESS_SECRET, REFRESH_SECRET};
    use serde_json::json;

    fn parse(config: serde_json::Value) -> Result<Config, ConfigError> {
        Config::parse(config.to_string().as_bytes(), env)
    }

    #[test]
    fn cookie_names_and_domain_leave_room_for_a_session() {
        let long_name = "n".repeat(MAX_COOKIE_NAME_BYTES + 1);
        assert_eq!(error_line(json!({"login_cluster": "l", "refresh_cookie": long_name})),
                   "`refresh_cookie`: must be at most 128 bytes (it counts toward the 4096 bytes of each Set-Cookie)");
        let long_domain = format!("{}.example", "d".repeat(250));
        assert_eq!(error_line(json!({"login_cluster": "l", "cookie_domain": long_domain})), "`cookie_domain`: must be at most 253 bytes (a domain name)");
        // The largest accepted attributes leave more than 3 KiB of each Set-Cookie for a token.
        let name = "n".repeat(MAX_COOKIE_NAME_BYTES);
        let cfg = parse(json!({"login_cluster": "l", "access_cookie": name, "cookie_domain": format!(".{}", "d".repeat(253)),
                               "cookie_same_site": "None", "refresh_ttl_s": MAX_TTL_S, "access_ttl_s": MAX_TTL_S,
                               "max_session_s": MAX_TTL_S})).unwrap();
        assert!(cfg.cookies.set_access("", MAX_TTL_S).len() < 1024, "{}", cfg.cookies.set_access("", MAX_TTL_S).len());
    }

    fn error_line(config: serde_json::Value) -> String {
        match parse(config) {
            Ok(_) => panic!("config should be refused"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn minimal_config_gets_every_default() {
        let c = parse(json!({"login_cluster": "login_api"})).unwrap();
        assert_eq!(c.login.cluster, "login_api");
        assert_eq!(c.login.authority, "login_api");
        assert_eq!(c.login.path, "/login");
        assert_eq!(c.login.timeout, Duration::from_millis(5000));
        assert!(c.refresh.is_none());
        assert_eq!(c.login_refresh_path, None);
        assert_eq!(c.login_logout_path, None);
        assert!(c.trusted_origins.is_empty());
        assert_eq!(c.routes.login, "/api/auth/login");
        assert_eq!(c.routes.refresh, "/api/auth/refreshtoken");
        assert_eq!(c.routes.logout, "/api/auth/logout");
        assert_eq!(c.login_page, "/login");
        assert_eq!(c.public_paths, ["/login"]);
        assert!(c.bypass_cors_preflight);
        assert_eq!((c.access_ttl_s, c.refresh_ttl_s, c.clock_skew_s), (900, 604_800, 5));
        assert!(c.cookies.secure);
        assert_eq!(c.cookies.same_site, SameSite::Strict);
        assert_eq!(c.cookies.domain, None);
        assert_eq!(c.cookies.names.access, "accessTokenEtls");
        assert_eq!(c.cookies.names.refresh, "refreshTokenEtls");
        assert_eq!(c.cookies.names.upstream_access, "accessToken");
        assert_eq!(c.cookies.names.upstream_refresh, "refreshToken");
        assert_eq!(&*c.identity_headers.user_id, "x-etls-user-id");
        assert_eq!(&*c.identity_headers.role, "x-etls-role");
        assert_eq!(c.max_login_body_bytes, 16_384);
        assert_eq!(c.max_session_s, 2_592_000);
    }

    #[test]
    fn refresh_cluster_defaults_authority_and_uses_refresh_path() {
        let c = parse(json!({"login_cluster": "l", "refresh_cluster": "etls_refresh", "refresh_path": "/r"})).unwrap();
        let r = c.refresh.unwrap();
        assert_eq!((r.cluster.as_str(), r.authority.as_str(), r.path.as_str()), ("etls_refresh", "etls_refresh", "/r"));
        assert_eq!(r.timeout, Duration::from_millis(2000));
    }

    #[test]
    fn every_key_is_accepted_with_a_good_value() {
        let c = parse(json!({
            "login_cluster": "l", "login_authority": "login.example.com:443", "login_upstream_path": "/v1/login",
            "login_timeout_ms": 1500, "login_refresh_path": "/v1/refresh", "refresh_cluster": "r", "refresh_authority": "self", "refresh_timeout_ms": 300,
            "login_path": "/a/login", "refresh_path": "/a/refresh", "logout_path": "/a/logout", "login_page": "/signin",
            "public_paths": ["/signin/", "/static"], "bypass_cors_preflight": false, "access_ttl_s": 60,
            "refresh_ttl_s": 3600, "access_secret_env": "ETLS_ACCESS", "refresh_secret_env": "ETLS_REFRESH",
            "clock_skew_s": 0, "cookie_secure": false, "cookie_same_site": "lax", "cookie_domain": "example.com",
            "access_cookie": "a", "refresh_cookie": "r", "upstream_access_cookie": "ua", "upstream_refresh_cookie": "ur",
            "user_id_header": "X-User", "role_header": "x-role", "max_login_body_bytes": 100,
            "login_logout_path": "/v1/logout", "trusted_origins": ["https://partner.example", "HTTP://localhost:3000"],
            "max_session_s": 60
        }))
        .unwrap();
        assert_eq!(c.login_logout_path.as_deref(), Some("/v1/logout"));
        assert_eq!(c.trusted_origins.len(), 2);
        assert_eq!(c.public_paths, ["/signin", "/static"]);
        assert_eq!(&*c.identity_headers.user_id, "x-user");
        assert_eq!(c.cookies.same_site, SameSite::Lax);
        assert_eq!(c.login.authority, "login.example.com:443");
        assert_eq!(c.max_login_body_bytes, 100);
        assert_eq!(c.login_refresh_path.as_deref(), Some("/v1/refresh"));
        assert_eq!(c.max_session_s, 60);
        let equal = parse(json!({"login_cluster": "l", "access_ttl_s": 600, "max_session_s": 600})).unwrap();
        assert_eq!(equal.max_session_s, 600, "max_session_s may equal access_ttl_s");
        let longest = parse(json!({"login_cluster": "l", "max_session_s": MAX_SESSION_S})).unwrap();
        assert_eq!(longest.max_session_s, MAX_SESSION_S);
        let shorter_than_refresh = parse(json!({"login_cluster": "l", "max_session_s": 3600})).unwrap();
        assert_eq!((shorter_than_refresh.max_session_s, shorter_than_refresh.refresh_ttl_s), (3600, 604_800));
    }

    #[test]
    fn each_bad_value_is_refused_naming_its_key() {
        let cases = [
            (json!({"login_cluster": "l", "bogus": 1}), "`bogus`: unknown key"),
            (json!({}), "`login_cluster`: required"),
            (json!({"login_cluster": ""}), "`login_cluster`"),
            (json!({"login_cluster": 5}), "`login_cluster`: must be a string"),
            (json!({"login_cluster": "l", "access_ttl_s": "900"}), "`access_ttl_s`: must be a non-negative integer"),
            (json!({"login_cluster": "l", "access_ttl_s": 0}), "`access_ttl_s`"),
            (json!({"login_cluster": "l", "refresh_ttl_s": 0}), "`refresh_ttl_s`"),
            (json!({"login_cluster": "l", "access_ttl_s": -5}), "`access_ttl_s`"),
            (json!({"login_cluster": "l", "access_ttl_s": 1.5}), "`access_ttl_s`"),
            (json!({"login_cluster": "l", "refresh_ttl_s": 99_999_999u64}), "`refresh_ttl_s`"),
            (json!({"login_cluster": "l", "login_timeout_ms": 0}), "`login_timeout_ms`"),
            (json!({"login_cluster": "l", "refresh_timeout_ms": 0}), "`refresh_timeout_ms`"),
            (json!({"login_cluster": "l", "clock_skew_s": 100_000}), "`clock_skew_s`"),
            (json!({"login_cluster": "l", "login_path": "api/login"}), "`login_path`"),
            (json!({"login_cluster": "l", "refresh_path": "//x"}), "`refresh_path`"),
            (json!({"login_cluster": "l", "logout_path": "/a b"}), "`logout_path`"),
            (json!({"login_cluster": "l", "login_page": "https://evil.example/"}), "`login_page`"),
            (json!({"login_cluster": "l", "login_upstream_path": "login"}), "`login_upstream_path`"),
            (json!({"login_cluster": "l", "login_refresh_path": "refresh"}), "`login_refresh_path`"),
            (json!({"login_cluster": "l", "login_refresh_path": "/r?x=1"}), "`login_refresh_path`"),
            (json!({"login_cluster": "l", "login_refresh_path": 5}), "`login_refresh_path`: must be a string"),
            (json!({"login_cluster": "l", "login_logout_path": "logout"}), "`login_logout_path`"),
            (json!({"login_cluster": "l", "login_logout_path": "/l?x=1"}), "`login_logout_path`"),
            (json!({"login_cluster": "l", "login_logout_path": ""}), "`login_logout_path`"),
            (json!({"login_cluster": "l", "login_logout_path": true}), "`login_logout_path`: must be a string"),
            (json!({"login_cluster": "l", "trusted_origins": "https://a.example"}), "`trusted_origins`: must be an array of strings"),
            (json!({"login_cluster": "l", "trusted_origins": [5]}), "`trusted_origins`: must be an array of strings"),
            (json!({"login_cluster": "l", "trusted_origins": ["https://a.example/"]}), "`trusted_origins`: entry 1 must have no path"),
            (json!({"login_cluster": "l", "trusted_origins": ["https://a.example", "a.example"]}), "`trusted_origins`: entry 2 must be an origin"),
            (json!({"login_cluster": "l", "trusted_origins": ["ftp://a.example"]}), "`trusted_origins`: entry 1 must use the scheme http or https"),
            (json!({"login_cluster": "l", "trusted_origins": ["https://u@a.example"]}), "`trusted_origins`: entry 1 must not hold user info"),
            (json!({"login_cluster": "l", "trusted_origins": ["null"]}), "`trusted_origins`: entry 1 must be an origin"),
            (json!({"login_cluster": "l", "public_paths": ["login"]}), "`public_paths`"),
            (json!({"login_cluster": "l", "public_paths": "/login"}), "`public_paths`: must be an array of strings"),
            (json!({"login_cluster": "l", "bypass_cors_preflight": "yes"}), "`bypass_cors_preflight`: must be true or false"),
            (json!({"login_cluster": "l", "cookie_same_site": "Sometimes"}), "`cookie_same_site`"),
            (json!({"login_cluster": "l", "cookie_same_site": "None", "cookie_secure": false}), "`cookie_same_site`: \"None\" requires"),
            (json!({"login_cluster": "l", "cookie_domain": "a.com; Secure"}), "`cookie_domain`"),
            (json!({"login_cluster": "l", "access_cookie": "a b"}), "`access_cookie`"),
            (json!({"login_cluster": "l", "refresh_cookie": "accessTokenEtls"}), "cookie names must differ"),
            (json!({"login_cluster": "l", "user_id_header": "x user"}), "`user_id_header`"),
            (json!({"login_cluster": "l", "role_header": "cookie"}), "`role_header`"),
            (json!({"login_cluster": "l", "role_header": "x-etls-user-id"}), "`role_header`"),
            (json!({"login_cluster": "l", "max_login_body_bytes": 0}), "`max_login_body_bytes`"),
            (json!({"login_cluster": "l", "max_session_s": 0}), "`max_session_s`: must be between 1 and 315360000 seconds"),
            (json!({"login_cluster": "l", "max_session_s": -1}), "`max_session_s`: must be a non-negative integer"),
            (json!({"login_cluster": "l", "max_session_s": 1.5}), "`max_session_s`: must be a non-negative integer"),
            (json!({"login_cluster": "l", "max_session_s": "3600"}), "`max_session_s`: must be a non-negative integer"),
            (json!({"login_cluster": "l", "max_session_s": true}), "`max_session_s`: must be a non-negative integer"),
            (json!({"login_cluster": "l", "max_session_s": 315_360_001u64}), "`max_session_s`: must be between 1 and 315360000 seconds"),
            (json!({"login_cluster": "l", "max_session_s": 899}), "`max_session_s`: must be at least access_ttl_s"),
            (json!({"login_cluster": "l", "access_ttl_s": 60, "max_session_s": 59}), "`max_session_s`: must be at least access_ttl_s"),
            (json!({"login_cluster": "l", "access_ttl_s": 2_592_001}), "`max_session_s`: the default (2592000 seconds) is below access_ttl_s; set max_session_s"),
            (json!({"login_cluster": "l", "login_authority": "a b"}), "`login_authority`"),
            (json!({"login_cluster": "l", "access_secret_env": "NOT_SET"}), "`access_secret_env`: environment variable NOT_SET is not set"),
            (json!({"login_cluster": "l", "refresh_secret_env": "NOT_SET"}), "`refresh_secret_env`: environment variable NOT_SET is not set"),
            (json!({"login_cluster": "l", "access_secret_env": "bad name"}), "`access_secret_env`"),
            (json!({"login_cluster": "l", "login_path": "/x", "logout_path": "/x"}), "must differ"),
            (json!({"login_cluster": "l", "login_page": "/\\evil.example"}), "`login_page`: must be a path"),
            (json!({"login_cluster": "l", "public_paths": ["/a\\b"]}), "`public_paths`: must be a path"),
            (json!({"login_cluster": "l", "access_cookie": "__Host-a", "cookie_domain": "example.com"}), "`access_cookie`: a __Host- cookie"),
            (json!({"login_cluster": "l", "refresh_cookie": "__host-r", "cookie_secure": false}), "`refresh_cookie`: a __Host- cookie"),
            (json!({"login_cluster": "l", "upstream_refresh_cookie": "__Secure-r", "cookie_secure": false}), "`upstream_refresh_cookie`: a __Secure- cookie"),
        ];
        for (config, expected) in cases {
            let line = error_line(config.clone());
            assert!(line.contains(expected), "{config}: got {line:?}, expected it to contain {expected:?}");
            assert!(!line.contains('\n'));
        }
    }

    #[test]
    fn a_key_given_twice_is_refused() {
        for raw in [&br#"{"login_cluster":"a","login_cluster":"b"}"#[..], br#"{"login_cluster":"a","cookie_secure":true,"cookie_secure":false}"#,
                    br#"{"login_cluster":"a","nope":1,"nope":2}"#] {
            let err = Config::parse(raw, env).err().unwrap();
            assert!(matches!(err, ConfigError::DuplicateKey(_)), "{err:?}");
        }
        assert_eq!(
            Config::parse(br#"{"login_cluster":"a","cookie_secure":true,"cookie_secure":false}"#, env).err().unwrap().to_string(),
            "`cookie_secure`: given more than once; keep one"
        );
        // Nested objects are values: the same key in two of them is fine.
        assert!(Config::parse(br#"{"login_cluster":"a","public_paths":["/a","/a"]}"#, env).is_ok());
    }

    #[test]
    fn cookie_prefixes_are_allowed_where_browsers_keep_them() {
        let host = parse(json!({"login_cluster": "l", "access_cookie": "__Host-a", "refresh_cookie": "__Host-r"})).unwrap();
        assert_eq!(host.cookies.names.access, "__Host-a");
        assert!(parse(json!({"login_cluster": "l", "access_cookie": "__Secure-a", "cookie_domain": "example.com"})).is_ok());
        assert!(parse(json!({"login_cluster": "l", "access_cookie": "_Host-a", "cookie_secure": false})).is_ok(), "not the prefix");
    }

    #[test]
    fn not_a_json_object_is_refused() {
        for raw in [&b"[1]"[..], b"not json", b"{\"login_cluster\": ", b"\xff\xfe"] {
            assert!(matches!(Config::parse(raw, env), Err(ConfigError::NotJsonObject(_))), "{raw:?}");
        }
        assert_eq!(Config::parse(b"", env).err(), Some(ConfigError::Missing { key: "login_cluster", near_miss: None }));
    }

    type Env = &'static [(&'static str, &'static [u8])];

    fn secrets(pairs: Env) -> impl Fn(&str) -> Option<Vec<u8>> {
        move |name| pairs.iter().find(|(n, _)| *n == name).map(|(_, v)| v.to_vec())
    }

    #[test]
    fn secrets_must_exist_be_long_and_differ() {
        let config = br#"{"login_cluster":"l"}"#;
        let short: &[u8] = b"0123456789012345678901234567890"; // 31 bytes
        let cases: [(Env, SecretProblem, &str); 6] = [
            (&[("ETLS_REFRESH", REFRESH_SECRET)], SecretProblem::Missing, "ETLS_ACCESS"),
            (&[("ETLS_ACCESS", ACCESS_SECRET)], SecretProblem::Missing, "ETLS_REFRESH"),
            (&[("ETLS_ACCESS", b"0123456789012345678901234567890"), ("ETLS_REFRESH", REFRESH_SECRET)], SecretProblem::TooShort, "ETLS_ACCESS"),
            (&[("ETLS_ACCESS", ACCESS_SECRET), ("ETLS_REFRESH", ACCESS_SECRET)], SecretProblem::SameAsOtherKind, "ETLS_REFRESH"),
            (&[("ETLS_ACCESS", ACCESS_SECRET), ("ETLS_REFRESH", REFRESH_SECRET), ("ETLS_ACCESS_PREVIOUS", REFRESH_SECRET)], SecretProblem::SameAsOtherKind, "ETLS_REFRESH"),
            (&[("ETLS_ACCESS", ACCESS_SECRET), ("ETLS_REFRESH", REFRESH_SECRET), ("ETLS_REFRESH_PREVIOUS", b"short")], SecretProblem::TooShort, "ETLS_REFRESH_PREVIOUS"),
        ];
        assert_eq!(short.len(), 31);
        for (env, problem, name) in cases {
            match Config::parse(config, secrets(env)) {
                Err(ConfigError::Secret { env, problem: p, .. }) => assert_eq!((env.as_str(), p), (name, problem)),
                other => panic!("expected a secret error for {name}, got {:?}", other.err()),
            }
        }
        let exactly_32: Env =
            &[("ETLS_ACCESS", b"01234567890123456789012345678901"), ("ETLS_REFRESH", REFRESH_SECRET)];
        assert!(Config::parse(config, secrets(exactly_32)).is_ok());
    }

    #[test]
    fn error_lines_never_contain_a_secret() {
        let env: Env = &[("ETLS_ACCESS", ACCESS_SECRET), ("ETLS_REFRESH", ACCESS_SECRET)];
        let line = Config::parse(br#"{"login_cluster":"l"}"#, secrets(env)).err().unwrap().to_string();
        assert!(!line.contains(std::str::from_utf8(ACCESS_SECRET).unwrap()), "{line}");
    }
}

/// The configuration reference (`docs/configuration.md`) against the parser, and the suggestions
/// for misspelt keys.
#[cfg(test)]
mod reference_tests {
    use super::*;
    use crate::core::testing::env;
    use crate::error::SecretSource;
    use serde_json::json;

    const REFERENCE: &str = include_str!("../docs/configuration.md");

    /// The rows of the reference's key table: (key, cells), the key taken from the first cell
    /// (`` `name` ``). The table is the one whose header row starts with `| key | type |`.
    fn reference_rows() -> Vec<(String, Vec<String>)> {
        let mut rows = Vec::new();
        let mut lines = REFERENCE.lines().skip_while(|l| !l.starts_with("| key | type |")).skip(2);
        for line in lines.by_ref().take_while(|l| l.starts_with('|')) {
            // `\|` is a literal pipe inside a cell.
            let cells: Vec<String> = line
                .replace("\\|", "\u{0}")
                .split('|')
                .map(|c| c.trim().replace('\u{0}', "|"))
                .collect();
            let key = cells[1].strip_prefix('`').and_then(|k| k.strip_suffix('`'));
            let key = key.unwrap_or_else(|| panic!("first cell is not a `key`: {line}"));
            rows.push((key.to_owned(), cells[1..cells.len() - 1].to_vec()));
        }
        rows
    }

    /// Every secret variable is set (each to its own 32+ byte value), except the `_PREVIOUS` ones.
    fn any_secret(name: &str) -> Option<Vec<u8>> {
        (!name.ends_with("_PREVIOUS")).then(|| format!("{name}-secret-0123456789abcdef0123456789").into_bytes())
    }

    #[test]
    fn the_reference_documents_exactly_the_keys_the_parser_accepts() {
        let documented: Vec<String> = reference_rows().into_iter().map(|(k, _)| k).collect();
        let mut unique = documented.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), documented.len(), "a key is documented twice: {documented:?}");
        let undocumented: Vec<&&str> = KNOWN_KEYS.iter().filter(|k| !documented.iter().any(|d| d == **k)).collect();
        let unknown: Vec<&String> = documented.iter().filter(|d| !KNOWN_KEYS.contains(&d.as_str())).collect();
        assert!(
            undocumented.is_empty() && unknown.is_empty(),
            "docs/configuration.md and config::KNOWN_KEYS differ: accepted but not documented {undocumented:?}; \
             documented but not accepted {unknown:?}"
        );
    }

    #[test]
    fn every_row_of_the_reference_has_each_column_and_a_working_example() {
        for (key, cells) in reference_rows() {
            assert_eq!(cells.len(), 6, "{key}: expected key, type, default, allowed, example, what it does");
            assert!(!cells[1].is_empty() && !cells[2].is_empty() && !cells[5].is_empty(), "{key}: empty cell");
            let example = cells[4].strip_prefix('`').and_then(|e| e.strip_suffix('`'));
            let example = example.unwrap_or_else(|| panic!("{key}: the example is not one `json value`"));
            let value: serde_json::Value =
                serde_json::from_str(example).unwrap_or_else(|e| panic!("{key}: example {example} is not JSON: {e}"));
            let mut config = json!({"login_cluster": "login_api"});
            config[key.as_str()] = value;
            if let Err(e) = Config::parse(config.to_string().as_bytes(), any_secret) {
                panic!("{key}: the documented example {example} is refused: {e}");
            }
        }
    }

    #[test]
    fn the_complete_example_of_the_reference_parses_and_sets_every_key() {
        let start = REFERENCE.find("## A complete example").expect("section");
        let block = &REFERENCE[start..];
        let json_start = block.find("```json\n").expect("a json block") + "```json\n".len();
        let json_end = json_start + block[json_start..].find("```").expect("block end");
        let text = &block[json_start..json_end];
        let object: Map<String, Value> = serde_json::from_str(text).expect("the example is a JSON object");
        let mut keys: Vec<&str> = object.keys().map(String::as_str).collect();
        let mut known = KNOWN_KEYS.to_vec();
        keys.sort_unstable();
        known.sort_unstable();
        assert_eq!(keys, known, "the complete example sets every key");
        let c = Config::parse(text.as_bytes(), any_secret).unwrap_or_else(|e| panic!("refused: {e}"));
        assert_eq!(c.secret_envs.access, "MYAPP_ACCESS_SECRET");
        assert_eq!(c.cookies.names.access, "session");
    }

    #[test]
    fn the_parser_reads_every_known_key() {
        // A value of the wrong type is refused naming the key, never as an unknown key: so the
        // parser reads every key of the list (and `take` reads no key outside it).
        for key in KNOWN_KEYS {
            let mut config = json!({"login_cluster": "login_api"});
            config[*key] = json!({"not": "this type"});
            match Config::parse(config.to_string().as_bytes(), env) {
                Err(ConfigError::WrongType { key: k, .. }) => assert_eq!(k, *key),
                other => panic!("{key}: expected a wrong-type error, got {:?}", other.err()),
            }
        }
        let mut sorted = KNOWN_KEYS.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), KNOWN_KEYS.len(), "a key is listed twice");
    }

    fn line(config: serde_json::Value) -> String {
        match Config::parse(config.to_string().as_bytes(), env) {
            Ok(_) => panic!("{config} should be refused"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn an_unknown_key_near_a_known_one_suggests_it() {
        let cases = [
            ("login_clustr", Some("login_cluster")),
            ("cookie_secur", Some("cookie_secure")),
            ("acess_ttl_s", Some("access_ttl_s")),
            ("access_ttl", Some("access_ttl_s")),
            ("refresh_ttl_S", Some("refresh_ttl_s")),
            ("publicPaths", Some("public_paths")),
            ("PUBLIC_PATHS", Some("public_paths")),
            ("login-page", Some("login_page")),
            ("cookie_smae_site", Some("cookie_same_site")), // a transposition is one edit
            ("max_body_bytes", None),
            ("bogus", None),
            ("timeout", None),
            ("", None),
        ];
        for (written, suggestion) in cases {
            assert_eq!(closest_known_key(written), suggestion, "{written}");
            let got = line(json!({"login_cluster": "l", written: 1}));
            let want = match suggestion {
                Some(known) => format!("`{written}`: unknown key; did you mean `{known}`?"),
                None => format!("`{written}`: unknown key"),
            };
            assert_eq!(got, want);
        }
    }

    #[test]
    fn a_missing_required_key_names_a_near_miss() {
        let got = line(json!({"login_clustr": "login_api"}));
        assert_eq!(got, "`login_cluster`: required; found `login_clustr`, did you mean it?");
        assert_eq!(line(json!({"loginCluster": "x"})), "`login_cluster`: required; found `loginCluster`, did you mean it?");
        assert_eq!(line(json!({"cluster": "x"})), "`login_cluster`: required");
        assert_eq!(line(json!({})), "`login_cluster`: required");
        // The value is never shown.
        assert!(!line(json!({"login_clustr": "secret-looking-value"})).contains("secret-looking-value"));
    }

    #[test]
    fn a_configuration_that_is_not_an_object_is_refused_without_quoting_it() {
        let cases: [(&[u8], &str); 5] = [
            (br#""a-secret-looking-string""#, "configuration: must be one JSON object (it is JSON, but not an object)"),
            (b"[1, 2]", "configuration: must be one JSON object (it is JSON, but not an object)"),
            (b"login_cluster: a-secret-looking-string", "configuration: must be one JSON object (not JSON at line 1 column 1)"),
            (b"{\"login_cluster\": ", "configuration: must be one JSON object (the JSON ends early, at line 1 column 18)"),
            (b"\n{\"a\": tru}", "configuration: must be one JSON object (not JSON at line 2 column 10)"),
        ];
        for (raw, want) in cases {
            let got = Config::parse(raw, env).err().map(|e| e.to_string());
            assert_eq!(got.as_deref(), Some(want), "{raw:?}");
        }
    }

    #[test]
    fn error_lines_stay_one_short_line_whatever_the_key() {
        let long = "k".repeat(10_000);
        let got = line(json!({"login_cluster": "l", long.as_str(): 1}));
        assert!(got.len() < 120, "{got}");
        let got = line(json!({"login_cluster": "l", "a\nb`c\u{7}": 1}));
        assert!(!got.contains('\n') && !got.contains('\u{7}'), "{got:?}");
        assert_eq!(got, "`a\\nb\\u{60}c\\u{7}`: unknown key");
    }

    #[test]
    fn edit_distance_counts_insertions_deletions_substitutions_and_swaps() {
        let cases = [("", "", 0), ("abc", "", 3), ("", "abc", 3), ("abc", "abc", 0), ("abc", "abd", 1),
            ("abc", "acb", 1), ("abcd", "abc", 1), ("kitten", "sitting", 3), ("ca", "abc", 3), ("é", "e", 1)];
        for (a, b, d) in cases {
            assert_eq!(edit_distance(a, b), d, "{a} / {b}");
            assert_eq!(edit_distance(b, a), d, "{b} / {a}");
        }
    }

    #[test]
    fn a_missing_secret_says_where_it_was_looked_for() {
        let err = Config::parse(br#"{"login_cluster":"l","access_secret_env":"NOT_SET"}"#, env).err().unwrap();
        assert_eq!(
            err.to_string(),
            "`access_secret_env`: environment variable NOT_SET is not set in the Wasm VM environment (vm_config.environment_variables)"
        );
        assert_eq!(
            err.line(SecretSource::ThisProcess),
            "`access_secret_env`: environment variable NOT_SET is not set in the environment of etls-config-check \
             (which stands in for the Wasm VM environment)"
        );
    }

    #[test]
    fn the_secret_variables_used_are_reported() {
        let with_previous = |name: &str| match name {
            "ETLS_ACCESS_PREVIOUS" => Some(b"previous-access-secret-0123456789abcdef".to_vec()),
            other => env(other),
        };
        let c = Config::parse(br#"{"login_cluster":"l"}"#, with_previous).unwrap();
        assert_eq!(
            c.secret_envs,
            SecretEnvs {
                access: "ETLS_ACCESS".into(),
                refresh: "ETLS_REFRESH".into(),
                access_previous: Some("ETLS_ACCESS_PREVIOUS".into()),
                refresh_previous: None,
            }
        );
    }
}
