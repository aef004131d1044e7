//! A bounded cache of tokens that already verified, so the request path does not redo HS256
//! work for the same cookie. One per VM, owned by the shell's root context and rebuilt on every
//! `on_configure`, so a hit is always for a token that verified with a key configured now.
//! Pure data: no proxy-wasm SDK here and no clock (`now` is passed in, Unix seconds).
//!
//! - Keyed on the whole token string, one map per [`TokenKind`]: kinds never mix. The map is
//!   indexed by a keyed digest of the token's last [`DIGEST_BYTES`] bytes (its signature: random
//!   to anyone without the secret), SipHash with random keys per cache, so a lookup hashes 32
//!   bytes instead of the whole token and an attacker cannot aim tokens at one bucket; an entry
//!   holds its whole token and a hit requires it to be equal byte for byte.
//! - Only successes are stored; a token that failed is verified again every time.
//! - Every hit re-checks the token's time window (`nbf`/`iat`, and `exp` or the session's end
//!   `auth_time + max_session_s` whichever comes first, with the leeway) against `now`, exactly
//!   as verification does; an entry out of its window is dropped.
//! - At most `capacity` entries per kind; the oldest insertion is evicted first (FIFO).
//! - A hit is one map lookup and allocates nothing.

use std::collections::hash_map::{Entry, RandomState};
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};

use crate::core::model::{Identity, PublishedIdentity, TokenKind};

/// The window a cached token is checked against (defined in `core::model`).
pub use crate::core::model::Window;

/// Default entries per token kind. A token is ~200-300 bytes, so a full cache is well under
/// 1 MiB per VM.
pub const DEFAULT_CAPACITY: usize = 1024;

/// How many trailing bytes of a token its digest covers: an HS256 token ends in its 43-character
/// signature.
pub const DIGEST_BYTES: usize = 32;

struct Cached {
    /// The whole token: a hit must equal it.
    token: Box<str>,
    identity: Identity,
    /// `identity` as header text, prepared once.
    published: PublishedIdentity,
    window: Window,
    /// Insertion number, to tell this entry from a later one under the same digest in `order`.
    seq: u64,
}

/// The map's own hasher: its keys are already keyed digests, so it takes them as they are.
#[derive(Default)]
struct Digested(u64);

impl Hasher for Digested {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used (the keys are `u64`); anything else is folded in.
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// One kind's tokens: a map for lookups and an insertion queue for eviction.
struct Shard {
    /// Random keys of the digest, chosen when the cache is made.
    keys: RandomState,
    entries: HashMap<u64, Cached, BuildHasherDefault<Digested>>,
    /// Insertion order `(digest, seq)`; may hold entries already removed (dropped on a stale hit).
    order: VecDeque<(u64, u64)>,
    next_seq: u64,
}

impl Shard {
    fn new() -> Shard {
        Shard { keys: RandomState::new(), entries: HashMap::default(), order: VecDeque::new(), next_seq: 0 }
    }

    fn digest(&self, token: &str) -> u64 {
        let bytes = token.as_bytes();
        let tail = bytes.get(bytes.len().saturating_sub(DIGEST_BYTES)..).unwrap_or(bytes);
        self.keys.hash_one(tail)
    }

    fn get(&mut self, token: &str, now: u64, leeway_s: u64) -> Option<&Cached> {
        let Entry::Occupied(found) = self.entries.entry(self.digest(token)) else { return None };
        if *found.get().token != *token {
            return None;
        }
        if !found.get().window.contains(now, leeway_s) {
            found.remove();
            return None;
        }
        Some(found.into_mut())
    }

    fn insert(&mut self, capacity: usize, token: &str, identity: Identity, window: Window) {
        if capacity == 0 {
            return;
        }
        let digest = self.digest(token);
        if let Some(entry) = self.entries.get_mut(&digest) {
            if *entry.token == *token {
                entry.published = identity.published();
                entry.identity = identity;
                entry.window = window;
                return;
            }
        }
        while self.order.len() >= capacity {
            let Some((oldest, seq)) = self.order.pop_front() else { break };
            if self.entries.get(&oldest).is_some_and(|e| e.seq == seq) {
                self.entries.remove(&oldest);
            }
        }
        let seq = self.next_seq;
        self.next_seq = seq.wrapping_add(1);
        self.order.push_back((digest, seq));
        // Another token under the same digest (two signatures sharing 32 bytes) is replaced.
        self.entries.insert(digest, Cached { token: token.into(), published: identity.published(), identity, window, seq });
    }
}

/// Verified tokens of both kinds, at most `capacity` of each.
pub struct TokenCache {
    capacity: usize,
    access: Shard,
    refresh: Shard,
}

impl Default for TokenCache {
    fn default() -> Self {
        TokenCache::new(DEFAULT_CAPACITY)
    }
}

impl TokenCache {
    /// An empty cache holding at most `capacity` tokens of each kind (0 disables it).
    pub fn new(capacity: usize) -> Self {
        TokenCache { capacity, access: Shard::new(), refresh: Shard::new() }
    }

    /// The identity of a cached token of `kind`, if it is cached and its window (widened by
    /// `leeway_s`) contains `now` (Unix seconds). A cached token outside its window is dropped.
    pub fn get(&mut self, kind: TokenKind, token: &str, now: u64, leeway_s: u64) -> Option<&Identity> {
        self.shard(kind).get(token, now, leeway_s).map(|e| &e.identity)
    }

    /// [`Self::get`], with the token's window (its session's `auth_time` among it).
    pub fn get_with_window(&mut self, kind: TokenKind, token: &str, now: u64, leeway_s: u64) -> Option<(&Identity, &Window)> {
        self.shard(kind).get(token, now, leeway_s).map(|e| (&e.identity, &e.window))
    }

    /// [`Self::get`], as header text.
    pub fn get_published(&mut self, kind: TokenKind, token: &str, now: u64, leeway_s: u64) -> Option<&PublishedIdentity> {
        self.shard(kind).get(token, now, leeway_s).map(|e| &e.published)
    }

    /// Remembers that `token` of `kind` verified to `identity`, valid in `window`. Call it only
    /// after a successful verification. Evicts the oldest entry of that kind when full.
    pub fn insert(&mut self, kind: TokenKind, token: &str, identity: Identity, window: Window) {
        let capacity = self.capacity;
        self.shard(kind).insert(capacity, token, identity, window);
    }

    /// How many tokens of `kind` are cached.
    pub fn len(&self, kind: TokenKind) -> usize {
        match kind {
            TokenKind::Access => self.access.entries.len(),
            TokenKind::Refresh => self.refresh.entries.len(),
        }
    }

    /// True when no token of either kind is cached.
    pub fn is_empty(&self) -> bool {
        self.access.entries.is_empty() && self.refresh.entries.is_empty()
    }

    fn shard(&mut self, kind: TokenKind) -> &mut Shard {
        match kind {
            TokenKind::Access => &mut self.access,
            TokenKind::Refresh => &mut self.refresh,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::testing::*;
    use crate::core::tokens::{self, verify_cached};
    use crate::error::TokenError;
    use serde_json::json;

    fn id(n: u64) -> Identity {
        Identity::new(json!(n), None).unwrap()
    }

    fn window(exp: u64) -> Window {
        Window { not_before: NOW - 10, expires_at: exp, auth_time: Some(NOW - 10) }
    }

    #[test]
    fn hit_returns_the_identity_and_miss_returns_none() {
        let mut cache = TokenCache::new(4);
        cache.insert(TokenKind::Access, "tok-a", id(1), window(NOW + 100));
        assert_eq!(cache.get(TokenKind::Access, "tok-a", NOW, 5), Some(&id(1)));
        assert_eq!(cache.get(TokenKind::Access, "tok-b", NOW, 5), None);
        assert_eq!(cache.get(TokenKind::Access, "tok-", NOW, 5), None, "the whole token is the key");
    }

    #[test]
    fn expiry_is_checked_on_every_hit_with_the_leeway() {
        let mut cache = TokenCache::new(4);
        cache.insert(TokenKind::Access, "t", id(1), window(NOW + 100));
        assert!(cache.get(TokenKind::Access, "t", NOW + 105, 5).is_some(), "exactly at the leeway");
        assert!(cache.get(TokenKind::Access, "t", NOW + 106, 5).is_none(), "past exp + leeway");
        assert_eq!(cache.len(TokenKind::Access), 0, "a stale entry is dropped");
        assert!(cache.get(TokenKind::Access, "t", NOW, 5).is_none(), "and stays gone");
    }

    #[test]
    fn not_before_is_checked_on_hit() {
        let mut cache = TokenCache::new(4);
        cache.insert(TokenKind::Access, "t", id(1), Window { not_before: NOW + 60, expires_at: NOW + 900, auth_time: None });
        assert!(cache.get(TokenKind::Access, "t", NOW, 5).is_none());
    }

    #[test]
    fn size_is_bounded_and_the_oldest_goes_first() {
        let mut cache = TokenCache::new(3);
        for n in 0..10u64 {
            cache.insert(TokenKind::Access, &format!("t{n}"), id(n), window(NOW + 100));
            assert!(cache.len(TokenKind::Access) <= 3);
        }
        assert!(cache.get(TokenKind::Access, "t6", NOW, 5).is_none());
        for n in 7..10u64 {
            assert_eq!(cache.get(TokenKind::Access, &format!("t{n}"), NOW, 5), Some(&id(n)));
        }
        // Entries dropped on a stale hit leave room without evicting fresh ones wrongly.
        cache.insert(TokenKind::Access, "old", id(99), window(NOW - 100));
        assert!(cache.get(TokenKind::Access, "old", NOW, 5).is_none());
        assert!(cache.len(TokenKind::Access) <= 3);
        assert!(TokenCache::new(0).is_empty());
        let mut off = TokenCache::new(0);
        off.insert(TokenKind::Access, "t", id(1), window(NOW + 100));
        assert!(off.is_empty(), "capacity 0 caches nothing");
    }

    #[test]
    fn a_hit_needs_the_whole_token_not_only_its_digested_tail() {
        let tail = "S".repeat(DIGEST_BYTES);
        let (first, second) = (format!("header.one.{tail}"), format!("header.two.{tail}"));
        let mut cache = TokenCache::new(4);
        cache.insert(TokenKind::Access, &first, id(1), window(NOW + 100));
        assert_eq!(cache.get(TokenKind::Access, &second, NOW, 5), None, "same tail, other token");
        assert_eq!(cache.get(TokenKind::Access, &first, NOW, 5), Some(&id(1)));
        // Under one digest, the later token replaces the earlier; neither answers for the other.
        cache.insert(TokenKind::Access, &second, id(2), window(NOW + 100));
        assert_eq!(cache.get(TokenKind::Access, &second, NOW, 5), Some(&id(2)));
        assert_eq!(cache.get(TokenKind::Access, &first, NOW, 5), None);
        assert_eq!(cache.len(TokenKind::Access), 1);
        // Short tokens are digested whole.
        cache.insert(TokenKind::Access, "t", id(3), window(NOW + 100));
        assert_eq!(cache.get(TokenKind::Access, "t", NOW, 5), Some(&id(3)));
        assert_eq!(cache.get(TokenKind::Access, "", NOW, 5), None);
    }

    #[test]
    fn kinds_are_kept_apart() {
        let mut cache = TokenCache::new(4);
        cache.insert(TokenKind::Refresh, "same", id(1), window(NOW + 100));
        assert!(cache.get(TokenKind::Access, "same", NOW, 5).is_none());
        assert!(cache.get(TokenKind::Refresh, "same", NOW, 5).is_some());
        // Through verification: a refresh token that is cached must not pass as an access token.
        let cfg = config();
        let mut cache = TokenCache::new(4);
        let r = refresh(NOW + 100);
        assert!(verify_cached(&cfg, &mut cache, TokenKind::Refresh, &r, NOW).is_ok());
        assert_eq!(verify_cached(&cfg, &mut cache, TokenKind::Access, &r, NOW), Err(TokenError::BadSignature));
        assert_eq!(cache.len(TokenKind::Access), 0);
    }

    #[test]
    fn failures_are_not_cached() {
        let cfg = config();
        let mut cache = TokenCache::new(4);
        let forged = token(b"forged-secret-forged-secret-forged!!", json!({"userId": 1}), None, Some(NOW + 100));
        for bad in [forged.as_str(), "garbage", ""] {
            assert!(verify_cached(&cfg, &mut cache, TokenKind::Access, bad, NOW).is_err());
        }
        assert_eq!(verify_cached(&cfg, &mut cache, TokenKind::Access, &access(NOW - 100), NOW), Err(TokenError::Expired));
        assert!(cache.is_empty());
    }

    fn outcome(d: &crate::core::decision::Decision) -> (crate::core::decision::Outcome, u32) {
        use crate::core::decision::Decision;
        match d {
            Decision::Forward(f) => (f.outcome, 0),
            Decision::Respond(r) => (r.outcome, r.status),
            Decision::Call(_) => (crate::core::decision::Outcome::RotatedByCluster, 1),
            Decision::ReadBody { .. } => (crate::core::decision::Outcome::LoginBadRequest, 2),
            Decision::Join(_) => (crate::core::decision::Outcome::UpstreamRefreshCoalesced, 3),
        }
    }

    #[test]
    fn cached_decisions_are_the_plain_decisions_cold_and_warm() {
        use crate::core::{decide, decide_cached};
        let forged = token(b"forged-secret-forged-secret-forged!!", json!({"userId": 42}), None, Some(NOW + 100));
        let accesses = [None, Some(access(NOW + 100)), Some(access(NOW - 100)), Some(forged.clone()), Some(refresh(NOW + 100))];
        let refreshes = [None, Some(refresh(NOW + 100)), Some(refresh(NOW - 100)), Some(forged), Some(access(NOW + 100))];
        for cfg in [config(), config_with(json!({"refresh_cluster": "etls_refresh"}))] {
            let mut cache = TokenCache::new(8);
            for round in 0..3 {
                for a in &accesses {
                    for r in &refreshes {
                        let parts: Vec<String> = [a.as_ref().map(|v| format!("accessTokenEtls={v}")), r.as_ref().map(|v| format!("refreshTokenEtls={v}"))]
                            .into_iter().flatten().collect();
                        for path in ["/app", "/api/auth/refreshtoken"] {
                            let request = req("POST", path, Some(&parts.join("; ")));
                            let plain = decide(&cfg, &request, NOW);
                            let cached = decide_cached(&cfg, &mut cache, &request, NOW);
                            assert_eq!(outcome(&cached), outcome(&plain), "round {round} {path} {a:?} {r:?}");
                            if outcome(&plain).0 == crate::core::decision::Outcome::SessionValid {
                                assert_eq!(cached, plain);
                            }
                        }
                    }
                }
            }
            assert_eq!((cache.len(TokenKind::Access), cache.len(TokenKind::Refresh)), (1, 1), "only the two valid tokens");
        }
    }

    #[test]
    fn cached_verification_matches_plain_verification_over_time() {
        let cfg = config(); // clock_skew_s 5
        let mut cache = TokenCache::new(4);
        let t = access(NOW + 100);
        for now in [NOW, NOW + 50, NOW + 105, NOW + 106, NOW] {
            let plain = tokens::verify_window(&cfg, TokenKind::Access, &t, now);
            assert_eq!(verify_cached(&cfg, &mut cache, TokenKind::Access, &t, now), plain, "now {now}");
        }
        let early = token(ACCESS_SECRET, json!({"userId": 1, "nbf": NOW + 60}), None, Some(NOW + 900));
        for now in [NOW + 60, NOW] {
            let plain = tokens::verify_window(&cfg, TokenKind::Access, &early, now);
            assert_eq!(verify_cached(&cfg, &mut cache, TokenKind::Access, &early, now), plain, "nbf, now {now}");
        }
    }

    #[test]
    fn a_cached_token_is_refused_past_its_sessions_end_whatever_its_exp() {
        // max_session_s 60, clock_skew_s 5: a session that began at NOW - 50 ends at NOW + 10.
        let cfg = config_with(json!({"max_session_s": 60, "access_ttl_s": 10}));
        let mut cache = TokenCache::new(4);
        let claims = json!({"userId": 42, "role": "admin", "auth_time": NOW - 50});
        let t = token(ACCESS_SECRET, claims, Some(NOW - 1), Some(NOW + 3600));
        let (_, window) = verify_cached(&cfg, &mut cache, TokenKind::Access, &t, NOW).unwrap();
        assert_eq!(window, Window { not_before: NOW - 1, expires_at: NOW + 10, auth_time: Some(NOW - 50) });
        assert_eq!(cache.len(TokenKind::Access), 1);
        assert!(verify_cached(&cfg, &mut cache, TokenKind::Access, &t, NOW + 15).is_ok(), "end + skew, from the cache");
        assert_eq!(verify_cached(&cfg, &mut cache, TokenKind::Access, &t, NOW + 16), Err(TokenError::SessionEnded));
        assert_eq!(cache.len(TokenKind::Access), 0, "dropped from the cache");
        let mut published = TokenCache::new(4);
        assert!(tokens::verify_cached_published(&cfg, &mut published, TokenKind::Access, &t, NOW).is_ok());
        assert_eq!(tokens::verify_cached_published(&cfg, &mut published, TokenKind::Access, &t, NOW + 16), Err(TokenError::SessionEnded));
    }
}
