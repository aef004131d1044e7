//! Session lifetime (docs/sessions.md, "Session lifetime"): when a session began (`auth_time`),
//! when it ends for good (`auth_time + max_session_s`), whether a token is still inside both its
//! own `exp` and that end, and the `exp` and cookie `Max-Age` of the tokens minted for it.
//! Arithmetic on Unix seconds only: no clock (`now` is passed in), no proxy_wasm here.
//!
//! - A session's `auth_time` is the Unix time of the login that started it. Every token the
//!   filter mints carries it, and every rotation carries it over unchanged.
//! - A token without `auth_time` (the Next.js app's, an earlier version's) counts from its `iat`;
//!   without `iat` either, from the rotation that first sees it: the tokens that rotation mints
//!   carry `auth_time` = that moment ([`rotation_auth_time`]).
//! - A token is accepted while `now <= min(exp, auth_time + max_session_s) + clock_skew_s`; past
//!   that it is [`TokenError::SessionEnded`] when the session's end came no later than its `exp`
//!   (the absolute lifetime ended it), else [`TokenError::Expired`] (it was left idle).
//! - New tokens: `exp = min(iat + ttl, auth_time + max_session_s)`, and their cookies live
//!   `exp - iat`. No token is minted once `now >= auth_time + max_session_s`: it would be born
//!   expired (and a cookie with `Max-Age=0` is a deletion), so such a rotation ends the session.

use crate::config::Config;
use crate::error::TokenError;

/// When a verified token is valid, built by [`check`] (plain data, defined in `core::model`).
pub use crate::core::model::Window;

/// The time claims of a token whose signature has verified, in Unix seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TimeClaims {
    /// `iat`.
    pub issued_at: Option<u64>,
    /// `nbf`.
    pub not_before: Option<u64>,
    /// `exp` (required: a token without it is malformed).
    pub expires_at: Option<u64>,
    /// `auth_time`.
    pub auth_time: Option<u64>,
}

/// When the session a token belongs to began, as the token tells: its `auth_time`, else its
/// `iat`; `None` when it has neither (then the rotation that sees it starts the count).
pub fn session_start(claims: &TimeClaims) -> Option<u64> {
    claims.auth_time.or(claims.issued_at)
}

/// When a session that began at `auth_time` ends for good: `auth_time + max_session_s`.
pub fn session_end(cfg: &Config, auth_time: u64) -> u64 {
    auth_time.saturating_add(cfg.max_session_s)
}

/// The `auth_time` of the tokens a rotation at `now` mints for a session whose token told
/// `start` ([`session_start`]): that start, or `now` for a token that tells none.
pub fn rotation_auth_time(start: Option<u64>, now: u64) -> u64 {
    start.unwrap_or(now)
}

/// True while `now` is at most `until + leeway_s` (the leeway rule of `exp`: a time counts as
/// passed only once it lies more than the leeway behind).
fn is_within(until: u64, now: u64, leeway_s: u64) -> bool {
    now >= leeway_s && now - leeway_s <= until
}

/// Checks a verified token's times at `now` (Unix seconds) with the leeway `clock_skew_s`:
/// `iat`, `nbf` and `auth_time` no later than `now + leeway` (else [`TokenError::NotYetValid`]),
/// `exp` present (else [`TokenError::Malformed`]), and `now` no later than
/// `min(exp, session end) + leeway` (else [`TokenError::SessionEnded`] when the session's end
/// is what passed, [`TokenError::Expired`] when `exp` came first). Returns the window in which
/// the token is valid: its `expires_at` is that minimum, so a cache that honours the window
/// honours the session's end.
pub fn check(cfg: &Config, claims: &TimeClaims, now: u64) -> Result<Window, TokenError> {
    let leeway = cfg.clock_skew_s;
    let not_before = claims.issued_at.max(claims.not_before).unwrap_or(0);
    let latest = now.saturating_add(leeway);
    if not_before > latest || claims.auth_time.is_some_and(|t| t > latest) {
        return Err(TokenError::NotYetValid);
    }
    let expires_at = claims.expires_at.ok_or(TokenError::Malformed)?;
    let start = session_start(claims);
    let end = start.map(|start| session_end(cfg, start));
    let until = end.map_or(expires_at, |end| end.min(expires_at));
    if !is_within(until, now, leeway) {
        let ended = end.is_some_and(|end| end <= expires_at);
        return Err(if ended { TokenError::SessionEnded } else { TokenError::Expired });
    }
    Ok(Window { not_before, expires_at: until, auth_time: start })
}

/// The time claims of a pair of new tokens, and how long their cookies live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PairTimes {
    /// `iat` of both: the moment of minting.
    pub issued_at: u64,
    /// `auth_time` of both: the session's, carried over.
    pub auth_time: u64,
    /// `exp` of the access token: `min(iat + access_ttl_s, auth_time + max_session_s)`.
    pub access_expires_at: u64,
    /// `exp` of the refresh token: `min(iat + refresh_ttl_s, auth_time + max_session_s)`.
    pub refresh_expires_at: u64,
}

impl PairTimes {
    /// `Max-Age` of the access cookie: the access token's `exp - iat`.
    pub fn access_max_age(&self) -> u64 {
        self.access_expires_at.saturating_sub(self.issued_at)
    }

    /// `Max-Age` of the refresh cookie and of the login API's two cookies: the refresh token's
    /// `exp - iat`.
    pub fn refresh_max_age(&self) -> u64 {
        self.refresh_expires_at.saturating_sub(self.issued_at)
    }
}

/// The times of a pair minted at `now` for a session that began at `auth_time`, or `None` when
/// the session has no second left (`now >= auth_time + max_session_s`): a token minted then
/// would be born expired, so the rotation must end the session instead.
pub fn pair_times(cfg: &Config, auth_time: u64, now: u64) -> Option<PairTimes> {
    let end = session_end(cfg, auth_time);
    (now < end).then(|| PairTimes {
        issued_at: now,
        auth_time,
        access_expires_at: now.saturating_add(cfg.access_ttl_s).min(end),
        refresh_expires_at: now.saturating_add(cfg.refresh_ttl_s).min(end),
    })
}

/// `Max-Age` for the cookie of a token minted elsewhere in this filter (the refresh cluster's
/// answer): its `exp - iat`, or `exp - now` for a token without `iat`.
pub fn max_age_of(claims: &TimeClaims, now: u64) -> u64 {
    let issued_at = claims.issued_at.unwrap_or(now);
    claims.expires_at.unwrap_or(issued_at).saturating_sub(issued_at)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::testing::*;
    use serde_json::json;

    /// max_session_s 60, access_ttl_s 10, refresh_ttl_s 30, clock_skew_s 5.
    fn small() -> Config {
        config_with(json!({"max_session_s": 60, "access_ttl_s": 10, "refresh_ttl_s": 30}))
    }

    fn times(iat: Option<u64>, exp: u64, auth_time: Option<u64>) -> TimeClaims {
        TimeClaims { issued_at: iat, not_before: None, expires_at: Some(exp), auth_time }
    }

    #[test]
    fn the_session_starts_at_auth_time_else_iat_else_at_the_rotation() {
        assert_eq!(session_start(&times(Some(NOW), NOW + 10, Some(NOW - 50))), Some(NOW - 50));
        assert_eq!(session_start(&times(Some(NOW - 7), NOW + 10, None)), Some(NOW - 7));
        assert_eq!(session_start(&times(None, NOW + 10, None)), None);
        assert_eq!(rotation_auth_time(Some(NOW - 50), NOW), NOW - 50);
        assert_eq!(rotation_auth_time(None, NOW), NOW);
    }

    #[test]
    fn the_end_with_and_without_the_leeway_whatever_exp_says() {
        let cfg = small();
        let auth_time = NOW - 60; // the session ends at NOW
        // exp far beyond the end (a token minted elsewhere, or before max_session_s was lowered)
        for exp in [NOW, NOW + 1000, u64::MAX / 2] {
            let t = times(Some(NOW - 1), exp, Some(auth_time));
            assert!(check(&cfg, &t, NOW).is_ok(), "at the end");
            assert!(check(&cfg, &t, NOW + 5).is_ok(), "at end + skew: still valid (exp {exp})");
            assert_eq!(check(&cfg, &t, NOW + 6), Err(TokenError::SessionEnded), "end + skew + 1 (exp {exp})");
            assert_eq!(check(&cfg, &t, NOW + 100_000), Err(TokenError::SessionEnded));
        }
        // Without the leeway, the end itself is the last valid second.
        let strict = config_with(json!({"max_session_s": 60, "access_ttl_s": 10, "clock_skew_s": 0}));
        let t = times(Some(NOW - 1), NOW + 1000, Some(auth_time));
        assert!(check(&strict, &t, NOW).is_ok());
        assert_eq!(check(&strict, &t, NOW + 1), Err(TokenError::SessionEnded));
    }

    #[test]
    fn an_idle_token_expires_by_exp_and_a_capped_one_by_the_session() {
        let cfg = small();
        // exp before the end: Expired (idle), and the window ends at exp.
        let idle = times(Some(NOW - 20), NOW - 10, Some(NOW - 30));
        assert_eq!(check(&cfg, &idle, NOW - 5).unwrap().expires_at, NOW - 10);
        assert_eq!(check(&cfg, &idle, NOW), Err(TokenError::Expired));
        // exp equal to the end (capped at minting): the session ended it.
        let capped = times(Some(NOW - 20), NOW + 40, Some(NOW - 20));
        assert_eq!(check(&cfg, &capped, NOW + 45).unwrap(), Window { not_before: NOW - 20, expires_at: NOW + 40, auth_time: Some(NOW - 20) });
        assert_eq!(check(&cfg, &capped, NOW + 46), Err(TokenError::SessionEnded));
    }

    #[test]
    fn tokens_without_auth_time_count_from_iat_and_without_iat_not_at_all() {
        let cfg = small();
        // jose with iat: the session began at iat.
        let with_iat = times(Some(NOW - 100), NOW + 1000, None);
        assert_eq!(check(&cfg, &with_iat, NOW), Err(TokenError::SessionEnded), "iat + 60 + 5 < NOW");
        let recent = times(Some(NOW - 65), NOW + 1000, None);
        assert_eq!(check(&cfg, &recent, NOW).unwrap(), Window { not_before: NOW - 65, expires_at: NOW - 5, auth_time: Some(NOW - 65) });
        assert_eq!(check(&cfg, &recent, NOW + 1), Err(TokenError::SessionEnded));
        // jose without iat (the Next.js app's): only its exp counts.
        let bare = times(None, NOW + 1000, None);
        assert_eq!(check(&cfg, &bare, NOW).unwrap(), Window { not_before: 0, expires_at: NOW + 1000, auth_time: None });
        assert_eq!(check(&cfg, &bare, NOW + 1006), Err(TokenError::Expired));
    }

    #[test]
    fn future_iat_nbf_or_auth_time_beyond_the_leeway_is_not_yet_valid() {
        let cfg = small();
        assert_eq!(check(&cfg, &times(Some(NOW + 6), NOW + 20, None), NOW), Err(TokenError::NotYetValid));
        assert_eq!(check(&cfg, &times(Some(NOW), NOW + 20, Some(NOW + 6)), NOW), Err(TokenError::NotYetValid));
        assert!(check(&cfg, &times(Some(NOW), NOW + 20, Some(NOW + 5)), NOW).is_ok());
        let nbf = TimeClaims { not_before: Some(NOW + 6), ..times(None, NOW + 20, None) };
        assert_eq!(check(&cfg, &nbf, NOW), Err(TokenError::NotYetValid));
        let no_exp = TimeClaims { expires_at: None, ..times(Some(NOW), 0, None) };
        assert_eq!(check(&cfg, &no_exp, NOW), Err(TokenError::Malformed));
    }

    #[test]
    fn new_tokens_are_capped_by_the_session_end() {
        let cfg = small(); // access 10, refresh 30, session 60
        // At login: the ttls themselves.
        let login = pair_times(&cfg, NOW, NOW).unwrap();
        assert_eq!(login, PairTimes { issued_at: NOW, auth_time: NOW, access_expires_at: NOW + 10, refresh_expires_at: NOW + 30 });
        assert_eq!((login.access_max_age(), login.refresh_max_age()), (10, 30));
        // 40 s in: the refresh token stops at the end (20 s left).
        let late = pair_times(&cfg, NOW - 40, NOW).unwrap();
        assert_eq!((late.access_expires_at, late.refresh_expires_at), (NOW + 10, NOW + 20));
        assert_eq!((late.access_max_age(), late.refresh_max_age()), (10, 20));
        // 55 s in: both stop at the end.
        let near = pair_times(&cfg, NOW - 55, NOW).unwrap();
        assert_eq!((near.access_max_age(), near.refresh_max_age()), (5, 5));
        // The last second; then nothing to mint.
        assert_eq!(pair_times(&cfg, NOW - 59, NOW).map(|t| (t.access_max_age(), t.refresh_max_age())), Some((1, 1)));
        assert_eq!(pair_times(&cfg, NOW - 60, NOW), None);
        assert_eq!(pair_times(&cfg, NOW - 1000, NOW), None);
        // A session longer than refresh_ttl_s: the defaults give the ttls until the last days.
        let defaults = config();
        let t = pair_times(&defaults, NOW, NOW).unwrap();
        assert_eq!((t.access_max_age(), t.refresh_max_age()), (900, 604_800));
        let t = pair_times(&defaults, NOW - (2_592_000 - 86_400), NOW).unwrap();
        assert_eq!((t.access_max_age(), t.refresh_max_age()), (900, 86_400));
    }

    #[test]
    fn a_cookie_lives_as_long_as_its_token() {
        assert_eq!(max_age_of(&times(Some(NOW), NOW + 30, None), NOW + 3), 30);
        assert_eq!(max_age_of(&times(None, NOW + 30, None), NOW + 3), 27);
        assert_eq!(max_age_of(&times(Some(NOW), NOW - 1, None), NOW), 0);
    }
}

#[cfg(test)]
#[path = "lifetime_paths_tests.rs"]
mod paths_tests;
