//! The plain data the core's logic and `config` share, below both: who a session belongs to
//! ([`Identity`], and [`PublishedIdentity`], its header text), which token ([`TokenKind`]), when
//! a verified token is valid ([`Window`]), and the keys of one token kind ([`KeyRing`]). Data and
//! its own small rules only: no `Config`, no decision, no proxy_wasm, no clock.

use std::rc::Rc;

use jwt_simple::prelude::HS256Key;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The keys of one token kind: the current secret signs and verifies; the previous one, while
/// `<NAME>_PREVIOUS` is set, still verifies.
#[derive(Clone)]
pub struct KeyRing {
    pub(crate) current: HS256Key,
    pub(crate) previous: Option<HS256Key>,
}

impl KeyRing {
    /// Builds the keys once, at configure time, from raw secret bytes.
    pub fn new(current: &[u8], previous: Option<&[u8]>) -> Self {
        KeyRing { current: HS256Key::from_bytes(current), previous: previous.map(HS256Key::from_bytes) }
    }

    /// The current secret's bytes, for keyed hashes under it (`core::session_key`).
    pub fn current_secret(&self) -> Vec<u8> {
        self.current.to_bytes()
    }
}

/// Who a session belongs to: the claims both tokens carry.
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
    /// Builds an identity if both claims can travel as header values: `userId` a non-empty string
    /// or a number, `role` absent, null, a string (the empty string included), a
    /// number or a boolean; no control characters.
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

    /// The identity as header text (the identity headers and Envoy's filter state).
    pub fn published(&self) -> PublishedIdentity {
        PublishedIdentity {
            user_id: self.user_id_header().unwrap_or_default().into(),
            role: self.role_header().map(Into::into),
        }
    }

    fn is_valid(&self) -> bool {
        self.user_id_header().is_some() && (self.role.is_none() || self.role_header().is_some())
    }
}

/// The header text of a claim. A role may be a boolean or empty (then the role header is set
/// with an empty value); a `userId` may not.
fn header_value(value: &Value, is_role: bool) -> Option<String> {
    let text = match value {
        Value::String(s) => s.clone(),
        Value::Number(n) => match n.as_u64() {
            Some(id) => decimal(id),
            None => n.to_string(),
        },
        Value::Bool(b) if is_role => b.to_string(),
        _ => return None,
    };
    // A header value cannot carry leading or trailing spaces (RFC 9110 section 5.5: the app's
    // HTTP parser trims them), so a `userId` " alice " would reach the app as "alice": another user.
    let is_exact = is_role || (!text.starts_with(' ') && !text.ends_with(' '));
    let is_safe = (is_role || !text.is_empty()) && is_exact && !text.chars().any(char::is_control);
    is_safe.then_some(text)
}

/// `n` in decimal, without the formatting machinery (a numeric `userId` is formatted on every
/// valid session).
pub(crate) fn decimal(mut n: u64) -> String {
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    loop {
        start -= 1;
        if let Some(d) = digits.get_mut(start) {
            *d = b'0' + (n % 10) as u8;
        }
        n /= 10;
        if n == 0 || start == 0 {
            break;
        }
    }
    digits.get(start..).map(|d| d.iter().map(|&b| char::from(b)).collect()).unwrap_or_default()
}

/// Which of the two ETLS tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    Access,
    Refresh,
}

/// When a verified token is valid, in Unix seconds, before the leeway is applied, and when its
/// session began (built by `core::lifetime::check`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// The later of `iat` and `nbf` (0 when neither is present).
    pub not_before: u64,
    /// The earlier of `exp` and the session's end (`auth_time + max_session_s`), so that a
    /// cached token is never accepted past the session's end.
    pub expires_at: u64,
    /// The session's `auth_time` as the token tells it (its `auth_time`, else its `iat`; `None`
    /// with neither), carried over by rotations.
    pub auth_time: Option<u64>,
}

impl Window {
    /// True when `now` lies in the window widened by `leeway_s` on both sides (the same rule
    /// as verification: `not_before <= now + leeway` and `now - leeway <= exp`).
    pub fn contains(&self, now: u64, leeway_s: u64) -> bool {
        self.not_before <= now.saturating_add(leeway_s) && now >= leeway_s && now - leeway_s <= self.expires_at
    }
}

/// A verified identity as the rest of Envoy sees it: the same text as the identity headers.
/// Shared text: the token cache prepares it once per token, and a hit only counts a reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishedIdentity {
    /// `userId` as text (filter state `wasm.etls_user_id`).
    pub user_id: Rc<str>,
    /// `role` as text, when the token has one (filter state `wasm.etls_role`).
    pub role: Option<Rc<str>>,
}
