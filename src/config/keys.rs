//! The secrets: each kind's current secret and, while `<NAME>_PREVIOUS` is set, its previous one,
//! read through the lookup function `Config::parse` is given, checked for length and for overlap
//! between the kinds, and built once into the two `KeyRing`s. No error names a secret's value.

use crate::core::model::KeyRing;
use crate::error::{ConfigError, SecretProblem};

/// Shortest accepted HS256 secret, in bytes (RFC 7518 section 3.2).
pub const MIN_SECRET_BYTES: usize = 32;

/// The names of the environment variables that held the secrets; a `_PREVIOUS` one only when set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretEnvs {
    pub access: String,
    pub refresh: String,
    pub access_previous: Option<String>,
    pub refresh_previous: Option<String>,
}

/// The keys of both kinds, current and `<NAME>_PREVIOUS`, checked for length and for overlap.
pub(crate) fn load_keys(
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
