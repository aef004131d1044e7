//! The failures of each step, one enum per step, each with a short hand-written `Display`.
//! No proxy_wasm here. `Display` never includes a secret, token or cookie value.

use std::fmt;

/// Why a plugin configuration was refused. Every variant names the key at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigError {
    /// The configuration is not a JSON object.
    NotJsonObject(String),
    /// A key the filter does not know (a typo would otherwise be silently ignored).
    UnknownKey(String),
    /// A key holds a value of the wrong JSON type.
    WrongType { key: &'static str, expected: &'static str },
    /// A required key is absent.
    Missing { key: &'static str },
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

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::NotJsonObject(why) => {
                write!(f, "configuration: must be one JSON object ({why})")
            }
            ConfigError::UnknownKey(key) => write!(f, "`{key}`: unknown key"),
            ConfigError::WrongType { key, expected } => write!(f, "`{key}`: must be {expected}"),
            ConfigError::Missing { key } => write!(f, "`{key}`: required"),
            ConfigError::BadValue { key, reason } => write!(f, "`{key}`: {reason}"),
            ConfigError::Secret { key, env, problem } => {
                let what = match problem {
                    SecretProblem::Missing => "is not set in the Wasm VM environment",
                    SecretProblem::TooShort => "is shorter than 32 bytes",
                    SecretProblem::SameAsOtherKind => {
                        "equals a secret of the other token kind (access and refresh secrets must differ)"
                    }
                };
                write!(f, "`{key}`: environment variable {env} {what}")
            }
        }
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
