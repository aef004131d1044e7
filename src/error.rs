//! The failures of each step, one enum per step, each with a short hand-written `Display`.
//! No proxy_wasm here. `Display` never includes a secret, token or cookie value.

use std::fmt;

/// Why a plugin configuration was refused. Every variant names the key at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigError {
    /// The configuration is not a JSON object.
    NotJsonObject(String),
    /// A key the filter does not know (a typo would otherwise be silently ignored), with the
    /// known key it is close to, if any.
    UnknownKey { key: String, did_you_mean: Option<&'static str> },
    /// A key given twice in the configuration object (which value counts is not obvious to a
    /// reader of it).
    DuplicateKey(String),
    /// A key holds a value of the wrong JSON type.
    WrongType { key: &'static str, expected: &'static str },
    /// A required key is absent; `near_miss` is a key of the configuration that is close to it
    /// (`login_clustr` for `login_cluster`).
    Missing { key: &'static str, near_miss: Option<String> },
    /// A key holds a value of the right type that is not allowed.
    BadValue { key: &'static str, reason: String },
    /// A secret named by `key` (an environment variable of the Wasm VM) is unusable.
    Secret { key: &'static str, env: String, problem: SecretProblem },
}

/// What is wrong with a signing secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretProblem {
    /// The environment variable is not set.
    Missing,
    /// Shorter than 32 bytes (RFC 7518 section 3.2 for HS256).
    TooShort,
    /// An access secret equals a refresh secret: one kind of token would pass as the other.
    SameAsOtherKind,
}

/// Where the secrets were looked up: said in the error line of a missing secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretSource {
    /// The Wasm VM's environment (`vm_config.environment_variables`): the filter in Envoy.
    WasmVm,
    /// The environment of this process: `etls-config-check`, standing in for the Wasm VM.
    ThisProcess,
}

impl SecretSource {
    pub fn describe(self) -> &'static str {
        match self {
            SecretSource::WasmVm => "the Wasm VM environment (vm_config.environment_variables)",
            SecretSource::ThisProcess => {
                "the environment of etls-config-check (which stands in for the Wasm VM environment)"
            }
        }
    }
}

impl ConfigError {
    /// The one line that reports this error; a missing secret says where it was looked for.
    /// Keys written by the user are shown escaped and shortened, never a value.
    pub fn line(&self, source: SecretSource) -> String {
        match self {
            ConfigError::NotJsonObject(why) => format!("configuration: must be one JSON object ({why})"),
            ConfigError::UnknownKey { key, did_you_mean: None } => format!("`{}`: unknown key", shown(key)),
            ConfigError::UnknownKey { key, did_you_mean: Some(known) } => {
                format!("`{}`: unknown key; did you mean `{known}`?", shown(key))
            }
            ConfigError::DuplicateKey(key) => format!("`{}`: given more than once; keep one", shown(key)),
            ConfigError::WrongType { key, expected } => format!("`{key}`: must be {expected}"),
            ConfigError::Missing { key, near_miss: None } => format!("`{key}`: required"),
            ConfigError::Missing { key, near_miss: Some(found) } => {
                format!("`{key}`: required; found `{}`, did you mean it?", shown(found))
            }
            ConfigError::BadValue { key, reason } => format!("`{key}`: {reason}"),
            ConfigError::Secret { key, env, problem } => {
                let what = match problem {
                    SecretProblem::Missing => format!("is not set in {}", source.describe()),
                    SecretProblem::TooShort => "is shorter than 32 bytes".to_owned(),
                    SecretProblem::SameAsOtherKind => {
                        "equals a secret of the other token kind (access and refresh secrets must differ)".to_owned()
                    }
                };
                format!("`{key}`: environment variable {env} {what}")
            }
        }
    }
}

/// Longest user-written key shown in an error line, in characters.
const SHOWN_KEY_CHARS: usize = 64;

/// A user-written key as it appears in an error line: control characters escaped (the line stays
/// one line), at most [`SHOWN_KEY_CHARS`] characters.
fn shown(key: &str) -> String {
    let mut out = String::new();
    for (i, c) in key.chars().enumerate() {
        if i == SHOWN_KEY_CHARS {
            out.push_str("...");
            break;
        }
        if c == '`' {
            out.extend(c.escape_unicode());
        } else if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

impl fmt::Display for ConfigError {
    /// The line as the filter logs it (secrets looked up in the Wasm VM environment).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.line(SecretSource::WasmVm))
    }
}

/// Why a token did not verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenError {
    /// No cookie carried it.
    Missing,
    /// Not a JWS compact token, wrong `alg`, unreadable JSON, or claims of the wrong shape.
    Malformed,
    /// The HMAC does not match any configured secret of this kind.
    BadSignature,
    /// Past `exp` by more than the leeway.
    Expired,
    /// Past the session's absolute end (`auth_time + max_session_s`) by more than the leeway,
    /// which came no later than its `exp` (see `core::lifetime`).
    SessionEnded,
    /// Before `nbf` (or issued in the future) by more than the leeway.
    NotYetValid,
    /// Minting failed (the signing library refused); never caused by request data.
    Mint,
}

impl fmt::Display for TokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TokenError::Missing => "missing",
            TokenError::Malformed => "malformed",
            TokenError::BadSignature => "bad signature",
            TokenError::Expired => "expired",
            TokenError::SessionEnded => "session ended (max_session_s)",
            TokenError::NotYetValid => "not yet valid",
            TokenError::Mint => "could not mint",
        })
    }
}

/// Why a dispatched call (login API or refresh cluster) gave no usable answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    /// `dispatch_http_call` refused (unknown cluster, bad headers); the host status is kept.
    Dispatch(String),
    /// Envoy reported no response: connection failure, reset or timeout.
    NoResponse,
    /// The upstream answered with this non-success status.
    UpstreamStatus(u32),
    /// The upstream answered 2xx with a body (or cookies) not of the expected shape.
    BadBody,
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallError::Dispatch(status) => write!(f, "dispatch failed ({status})"),
            CallError::NoResponse => f.write_str("no response"),
            CallError::UpstreamStatus(code) => write!(f, "upstream status {code}"),
            CallError::BadBody => f.write_str("unexpected response body"),
        }
    }
}
