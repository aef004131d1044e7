//! The per-VM store that gives a burst of rotations asking the login API (`login_refresh_path`,
//! docs/sessions.md, "Upstream session") one login API call. What a rotation gets once the
//! answer is in is `core::rotation`'s ([`settle`]); this file keeps the calls, the requests
//! waiting on them and the answers. Plain data with a deadline and a bound; no proxy_wasm here
//! and no clock (`now_ms` is passed in, Unix milliseconds).
//!
//! The store keeps, per upstream `refreshToken` (keyed by its [`session_key`], the same on every
//! VM, so it never holds the token itself as a key):
//! - a call waiting to be dispatched or in flight, with the rotations waiting on it,
//! - a call another VM of the Envoy makes (its lease in the shared slots), polled on the tick, or
//! - the answer, reused for [`REUSE_MS`] after it came.
//!
//! A session the VM does not know yet is looked up in the slots shared by every VM of the Envoy
//! (`core::shared_calls`): a live answer there is reused, a live lease is waited on, and
//! otherwise this VM takes the lease and makes the call, and publishes its answer there.
//!
//! The shell asks it (`join`), dispatches what it queues (`take_queued`, `dispatched`), hands it
//! answers (`on_answer`) and ticks it (`tick`); each of those returns the `Decision` of every
//! waiting request, built from that request's own `RequestView`, for the shell to carry out.

use std::collections::{HashMap, VecDeque};

use crate::config::Config;
use crate::core::decision::{Decision, OutboundCall, Outcome, UpstreamReply};
use crate::core::session_key;
use crate::core::shared_calls::{self, Claim, SharedData};
use crate::core::upstream::{self, RefreshAnswer};
use crate::error::CallError;

/// The rotation a `Decision::Join` carries (plain data, defined in `core::decision`).
pub use crate::core::decision::{Rotation, Route};
/// How a rotation ends once the answer is in, and whether a request can wait for it
/// (`core::rotation`, re-exported where the store's callers look for them).
pub use crate::core::rotation::{can_hold_body, settle};

/// How long an answer is reused for the same `refreshToken`, in milliseconds.
pub const REUSE_MS: u64 = shared_calls::REUSE_MS;
/// How long past `login_timeout_ms` a waiting request may wait before the tick answers it
/// (Envoy's own timeout of the call normally answers first).
pub const GRACE_MS: u64 = 500;
/// Most sessions tracked at once (calls and reusable answers together), per VM.
pub const MAX_SESSIONS: usize = 1024;
/// Most requests waiting at once, per VM.
pub const MAX_WAITERS: usize = 4096;
/// Tick period while a call is waiting to be dispatched, in milliseconds (the shell dispatches
/// from the root context's tick: see docs/sessions.md, Upstream session).
pub const DISPATCH_TICK_MS: u64 = 1;
/// Tick period while requests wait on a call, to enforce their deadline.
pub const DEADLINE_TICK_MS: u64 = 100;
/// Tick period while requests wait on another VM's call: each tick reads its slot (Envoy's
/// ticks come about 4 ms apart at this period).
pub const POLL_TICK_MS: u64 = 1;

/// Decisions for the shell to carry out, each for the request context it names, and outcomes
/// to count once each (call-level metrics).
#[derive(Debug, Default, PartialEq)]
pub struct Settled {
    pub decisions: Vec<(u32, Decision)>,
    pub counts: Vec<Outcome>,
}

/// What `join` says about one rotation.
#[derive(Debug, PartialEq)]
pub enum Joined {
    /// Decided now (a reused answer, or no call possible): carry it out and count `counts`.
    Now { decision: Decision, counts: Vec<Outcome> },
    /// The request waits; `dispatch` is true when it queued a new call or waits on another
    /// VM's (the shell must get the root context to tick soon: `take_queued`, `tick`).
    /// `counts` are outcomes to count now.
    Wait { dispatch: bool, counts: Vec<Outcome> },
}

/// An opaque handle on a queued call, for [`UpstreamCalls::dispatched`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CallId(u64);

type Key = [u8; 32];

#[derive(Debug)]
enum State {
    /// Waiting for the root context to dispatch it.
    Queued(OutboundCall),
    /// Dispatched (or being dispatched); `token` once the host gave one.
    InFlight { token: Option<u32> },
    /// The answer, reused until `until_ms`.
    Answered { answer: RefreshAnswer, until_ms: u64 },
    /// Another VM holds the session's lease in shared slot `slot`: the tick polls it.
    Remote { slot: u32 },
}

#[derive(Debug)]
struct Entry {
    id: CallId,
    state: State,
    /// Requests waiting on the call, by context id.
    waiters: Vec<(u32, Rotation)>,
    /// When the requests stop waiting: queued time + `login_timeout_ms` + [`GRACE_MS`].
    deadline_ms: u64,
    /// The shared slot where this VM holds the session's lease, to publish the answer in.
    lease: Option<u32>,
    /// The call or answer is another VM's: joining it counts as joined from another VM.
    remote: bool,
}

/// The per-VM store of login API refresh calls and their answers (see module doc).
pub struct UpstreamCalls {
    /// This VM's id, the owner of the leases it takes (random: unique among the VMs).
    vm: u32,
    entries: HashMap<Key, Entry>,
    /// Insertion order of `entries`, for eviction (may hold keys already removed).
    order: VecDeque<Key>,
    by_id: HashMap<CallId, Key>,
    by_token: HashMap<u32, Key>,
    /// Which entry each waiting context waits on.
    waiting: HashMap<u32, Key>,
    next_id: u64,
}

impl UpstreamCalls {
    /// An empty store for VM `vm` (the shell draws the id at random once per VM).
    pub fn new(vm: u32) -> Self {
        UpstreamCalls {
            vm,
            entries: HashMap::new(),
            order: VecDeque::new(),
            by_id: HashMap::new(),
            by_token: HashMap::new(),
            waiting: HashMap::new(),
            next_id: 0,
        }
    }

    fn key(cfg: &Config, refresh_token: &str) -> Key {
        session_key::of(cfg, refresh_token).0
    }

    /// How many requests wait now.
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    /// How many sessions (calls and reusable answers) the store holds.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when the store holds nothing.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The tick period the shell should set now, in milliseconds; `None`: no tick needed.
    pub fn tick_period_ms(&self) -> Option<u64> {
        let queued = self.entries.values().any(|e| matches!(e.state, State::Queued(_)));
        let remote = self.entries.values().any(|e| matches!(e.state, State::Remote { .. }) && !e.waiters.is_empty());
        if queued {
            Some(DISPATCH_TICK_MS)
        } else if remote {
            Some(POLL_TICK_MS)
        } else if !self.waiting.is_empty() {
            Some(DEADLINE_TICK_MS)
        } else {
            None
        }
    }

    /// A rotation of request `context_id`: decided now from a reused answer, or waiting on
    /// the session's call (queued here if there is none). A request that cannot wait, or
    /// that finds the store full, is rotated as in an outage.
    pub fn join(&mut self, cfg: &Config, shared: &impl SharedData, context_id: u32, rotation: Rotation, now_ms: u64) -> Joined {
        let now = now_ms / 1000;
        let key = Self::key(cfg, &rotation.upstream_refresh);
        let outage = |rotation: &Rotation, counts: Vec<Outcome>| Joined::Now {
            decision: settle(cfg, rotation, &RefreshAnswer::Outage, now),
            counts,
        };
        if let Some(entry) = self.entries.get(&key) {
            if let State::Answered { until_ms, .. } = entry.state {
                if until_ms <= now_ms {
                    self.remove(&key);
                }
            }
        }
        match self.entries.get_mut(&key) {
            Some(Entry { state: State::Answered { answer, .. }, remote, .. }) => Joined::Now {
                decision: settle(cfg, &rotation, answer, now),
                counts: vec![joined_count(*remote)],
            },
            Some(entry) => {
                if !rotation.can_wait || self.waiting.len() >= MAX_WAITERS {
                    return outage(&rotation, Vec::new());
                }
                let count = joined_count(entry.remote);
                // Another VM's call is polled on the tick, which may have stopped when its
                // last waiter here left: have it run again.
                let tick = matches!(entry.state, State::Remote { .. });
                entry.waiters.push((context_id, rotation));
                self.waiting.insert(context_id, key);
                Joined::Wait { dispatch: tick, counts: vec![count] }
            }
            None => {
                let session = session_key::SessionKey(key);
                if !rotation.can_wait {
                    // It cannot wait, but another VM's answer may be there to reuse.
                    return match shared_calls::find_answer(shared, &session, now_ms) {
                        Some((answer, _)) => Joined::Now {
                            decision: settle(cfg, &rotation, &answer, now),
                            counts: vec![Outcome::UpstreamRefreshJoinedRemote],
                        },
                        None => outage(&rotation, Vec::new()),
                    };
                }
                let Some(call) = upstream::login_refresh_call(cfg, &rotation.upstream_refresh) else {
                    return outage(&rotation, Vec::new());
                };
                if (self.entries.len() >= MAX_SESSIONS && !self.evict_one()) || self.waiting.len() >= MAX_WAITERS {
                    return outage(&rotation, vec![Outcome::UpstreamRefreshOutage]);
                }
                let lease_ms = lease_ms(cfg);
                let mut counts = Vec::new();
                let (state, lease, deadline_ms) = match shared_calls::claim(shared, self.vm, &session, now_ms, lease_ms) {
                    Claim::Answer { answer, expiry_ms } => {
                        let decision = settle(cfg, &rotation, &answer, now);
                        self.insert(key, State::Answered { answer, until_ms: expiry_ms }, Vec::new(), expiry_ms, None, true);
                        return Joined::Now { decision, counts: vec![Outcome::UpstreamRefreshJoinedRemote] };
                    }
                    Claim::Wait { slot, deadline_ms } => {
                        counts.push(Outcome::UpstreamRefreshJoinedRemote);
                        // Room for a takeover's own call past the owner's deadline.
                        (State::Remote { slot }, None, deadline_ms.saturating_add(lease_ms))
                    }
                    Claim::Leased { slot, took_over, overwrote_live, .. } => {
                        counts.extend(claim_counts(took_over, overwrote_live));
                        (State::Queued(call), Some(slot), now_ms.saturating_add(lease_ms))
                    }
                    Claim::NoRoom => {
                        counts.push(Outcome::UpstreamRefreshUnshared);
                        (State::Queued(call), None, now_ms.saturating_add(lease_ms))
                    }
                };
                let remote = matches!(state, State::Remote { .. });
                self.insert(key, state, vec![(context_id, rotation)], deadline_ms, lease, remote);
                self.waiting.insert(context_id, key);
                Joined::Wait { dispatch: true, counts }
            }
        }
    }

    fn insert(&mut self, key: Key, state: State, waiters: Vec<(u32, Rotation)>, deadline_ms: u64, lease: Option<u32>, remote: bool) {
        let id = CallId(self.next_id);
        self.next_id = self.next_id.wrapping_add(1);
        self.entries.insert(key, Entry { id, state, waiters, deadline_ms, lease, remote });
        self.order.push_back(key);
        self.by_id.insert(id, key);
    }

    /// Drops the oldest reusable answer; false when every entry is a call still going on.
    fn evict_one(&mut self) -> bool {
        let answered = self.order.iter().position(|k| {
            self.entries.get(k).is_some_and(|e| matches!(e.state, State::Answered { .. }))
        });
        match answered.and_then(|i| self.order.remove(i)) {
            Some(key) => {
                self.remove(&key);
                true
            }
            None => false,
        }
    }

    fn remove(&mut self, key: &Key) -> Option<Entry> {
        let entry = self.entries.remove(key)?;
        self.by_id.remove(&entry.id);
        if let State::InFlight { token: Some(token) } = entry.state {
            self.by_token.remove(&token);
        }
        for (context_id, _) in &entry.waiters {
            self.waiting.remove(context_id);
        }
        self.order.retain(|k| k != key);
        Some(entry)
    }

    /// Request `context_id` is gone (its stream ended): it no longer waits. The call goes on.
    pub fn leave(&mut self, context_id: u32) {
        if let Some(key) = self.waiting.remove(&context_id) {
            if let Some(entry) = self.entries.get_mut(&key) {
                entry.waiters.retain(|(id, _)| *id != context_id);
            }
        }
    }

    /// The calls to dispatch now; each is then in flight until [`Self::dispatched`] gives its
    /// token (or its failure).
    pub fn take_queued(&mut self) -> Vec<(CallId, OutboundCall)> {
        let mut calls = Vec::new();
        for entry in self.entries.values_mut() {
            if matches!(entry.state, State::Queued(_)) {
                if let State::Queued(call) = std::mem::replace(&mut entry.state, State::InFlight { token: None }) {
                    calls.push((entry.id, call));
                }
            }
        }
        calls
    }

    /// The host's answer to dispatching call `id`: its token (one call made), or an error,
    /// which answers every waiting request as an outage.
    pub fn dispatched(&mut self, cfg: &Config, shared: &impl SharedData, id: CallId, result: Result<u32, CallError>, now_ms: u64) -> Settled {
        let Some(key) = self.by_id.get(&id).copied() else { return Settled::default() };
        match result {
            Ok(token) => {
                if let Some(entry) = self.entries.get_mut(&key) {
                    entry.state = State::InFlight { token: Some(token) };
                    self.by_token.insert(token, key);
                }
                Settled { decisions: Vec::new(), counts: vec![Outcome::UpstreamRefreshCalls] }
            }
            Err(error) => self.answer(cfg, shared, key, Err(&error), now_ms),
        }
    }

    /// The login API's answer to the call with host token `token` (`Err` when Envoy reported
    /// no answer: timeout, reset, refused connection). Unknown tokens settle nothing.
    pub fn on_answer(&mut self, cfg: &Config, shared: &impl SharedData, token: u32, reply: Result<&UpstreamReply, &CallError>, now_ms: u64) -> Settled {
        match self.by_token.remove(&token) {
            Some(key) => self.answer(cfg, shared, key, reply, now_ms),
            None => Settled::default(),
        }
    }

    fn answer(&mut self, cfg: &Config, shared: &impl SharedData, key: Key, reply: Result<&UpstreamReply, &CallError>, now_ms: u64) -> Settled {
        let answer = upstream::parse_login_refresh_reply(cfg, reply);
        let count = match answer {
            RefreshAnswer::Renewed(_) => Outcome::UpstreamRefreshRenewed,
            RefreshAnswer::Ended => Outcome::UpstreamRefreshEnded,
            RefreshAnswer::Outage => Outcome::UpstreamRefreshOutage,
        };
        // Published for every VM; the answer that wins there is the one every VM settles with.
        let lease = self.entries.get(&key).and_then(|e| e.lease);
        let (answer, until_ms) = match lease {
            Some(slot) => shared_calls::publish(shared, &session_key::SessionKey(key), slot, answer, now_ms),
            None => (answer, now_ms.saturating_add(REUSE_MS)),
        };
        self.settle_entry(cfg, key, answer, vec![count], now_ms, until_ms)
    }

    /// Answers every waiter of entry `key` with `answer` and keeps the answer for reuse until
    /// `until_ms`.
    fn settle_entry(&mut self, cfg: &Config, key: Key, answer: RefreshAnswer, counts: Vec<Outcome>, now_ms: u64, until_ms: u64) -> Settled {
        let Some(entry) = self.entries.get_mut(&key) else { return Settled::default() };
        let waiters = std::mem::take(&mut entry.waiters);
        if let State::InFlight { token: Some(token) } = entry.state {
            self.by_token.remove(&token);
        }
        let now = now_ms / 1000;
        let decisions = waiters
            .into_iter()
            .map(|(context_id, rotation)| {
                self.waiting.remove(&context_id);
                (context_id, settle(cfg, &rotation, &answer, now))
            })
            .collect();
        entry.state = State::Answered { answer, until_ms };
        entry.lease = None;
        Settled { decisions, counts }
    }

    /// Enforces deadlines: requests whose call has not answered by its deadline are answered
    /// as in an outage (and that answer is reused, so the session does not call again at once);
    /// reusable answers past their reuse time are dropped. Calls of other VMs that requests
    /// wait on are polled: their answer settles the requests, an expired lease is taken over
    /// (the call is then queued here).
    pub fn tick(&mut self, cfg: &Config, shared: &impl SharedData, now_ms: u64) -> Settled {
        let mut settled = Settled::default();
        self.poll_remote(cfg, shared, now_ms, &mut settled);
        let expired: Vec<Key> = self
            .entries
            .iter()
            .filter(|(_, e)| match e.state {
                State::Answered { until_ms, .. } => until_ms <= now_ms,
                State::Queued(_) | State::InFlight { .. } | State::Remote { .. } => e.deadline_ms <= now_ms,
            })
            .map(|(k, _)| *k)
            .collect();
        for key in expired {
            let answered = self.entries.get(&key).is_some_and(|e| matches!(e.state, State::Answered { .. }));
            if answered {
                self.remove(&key);
            } else {
                let until_ms = now_ms.saturating_add(REUSE_MS);
                let more = self.settle_entry(cfg, key, RefreshAnswer::Outage, vec![Outcome::UpstreamRefreshOutage], now_ms, until_ms);
                settled.decisions.extend(more.decisions);
                settled.counts.extend(more.counts);
            }
        }
        settled
    }

    fn poll_remote(&mut self, cfg: &Config, shared: &impl SharedData, now_ms: u64, settled: &mut Settled) {
        let remote: Vec<(Key, u32, bool)> = self
            .entries
            .iter()
            .filter_map(|(k, e)| match e.state {
                State::Remote { slot } => Some((*k, slot, e.waiters.is_empty())),
                _ => None,
            })
            .collect();
        let lease_ms = lease_ms(cfg);
        for (key, slot, abandoned) in remote {
            if abandoned {
                // Nobody here waits on it any more: forget it (never take a lease for nobody).
                self.remove(&key);
                continue;
            }
            let claim = shared_calls::poll(shared, self.vm, &session_key::SessionKey(key), slot, now_ms, lease_ms);
            match claim {
                Claim::Answer { answer, expiry_ms } => {
                    let more = self.settle_entry(cfg, key, answer, Vec::new(), now_ms, expiry_ms);
                    settled.decisions.extend(more.decisions);
                }
                Claim::Wait { slot, deadline_ms } => {
                    if let Some(entry) = self.entries.get_mut(&key) {
                        entry.state = State::Remote { slot };
                        entry.deadline_ms = deadline_ms.saturating_add(lease_ms);
                    }
                }
                Claim::Leased { .. } | Claim::NoRoom => {
                    let (lease, counts) = match claim {
                        Claim::Leased { slot, took_over, overwrote_live, .. } => (Some(slot), claim_counts(took_over, overwrote_live)),
                        _ => (None, vec![Outcome::UpstreamRefreshUnshared]),
                    };
                    let Some(entry) = self.entries.get_mut(&key) else { continue };
                    let call = entry.waiters.first().and_then(|(_, r)| upstream::login_refresh_call(cfg, &r.upstream_refresh));
                    let Some(call) = call else { continue };
                    entry.state = State::Queued(call);
                    entry.lease = lease;
                    entry.deadline_ms = now_ms.saturating_add(lease_ms);
                    settled.counts.extend(counts);
                }
            }
        }
    }
}

/// How long a lease holds: the call's own timeout (`login_timeout_ms`) plus [`GRACE_MS`].
fn lease_ms(cfg: &Config) -> u64 {
    u64::try_from(cfg.login.timeout.as_millis()).unwrap_or(u64::MAX).saturating_add(GRACE_MS)
}

/// What joining an existing call or answer counts: this VM's, or another's.
fn joined_count(remote: bool) -> Outcome {
    if remote {
        Outcome::UpstreamRefreshJoinedRemote
    } else {
        Outcome::UpstreamRefreshCoalesced
    }
}

/// What taking a lease counts.
fn claim_counts(took_over: bool, overwrote_live: bool) -> Vec<Outcome> {
    let mut counts = Vec::new();
    if took_over {
        counts.push(Outcome::UpstreamRefreshLeaseTakenOver);
    }
    if overwrote_live {
        counts.push(Outcome::UpstreamRefreshSlotOverwritten);
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::cookies;
    use crate::core::decide;
    use crate::core::upstream::Renewal;
    use crate::core::testing::*;
    use crate::core::shared_calls::testing::MemShared;
    use serde_json::json;

    const NOW_MS: u64 = NOW * 1000;

    fn cfg() -> Config {
        config_with(json!({"login_refresh_path": "/refresh", "login_timeout_ms": 1000}))
    }

    fn cookie(up_refresh: &str) -> String {
        format!("theme=dark; accessTokenEtls={}; refreshTokenEtls={}; accessToken=ua-old; refreshToken={up_refresh}", access(NOW - 100), refresh(NOW + 100))
    }

    fn rotation_for(cfg: &Config, method: &str, path: &str, up_refresh: &str) -> Rotation {
        match decide(cfg, &req(method, path, Some(&cookie(up_refresh))), NOW) {
            Decision::Join(rotation) => *rotation,
            other => panic!("expected a join, got {other:?}"),
        }
    }

    fn reply(status: u32, body: serde_json::Value) -> UpstreamReply {
        let body = body.to_string().into_bytes();
        UpstreamReply { status, headers: vec![], body_size: body.len(), body }
    }

    fn renewed() -> UpstreamReply {
        reply(200, json!({"accessToken": "ua-new", "refreshToken": "ur-new", "userData": {"id": 42, "role": "viewer"}}))
    }

    fn set_cookies(d: &Decision) -> Vec<String> {
        match d {
            Decision::Forward(f) => f.set_cookies.clone(),
            Decision::Respond(r) => r.headers().iter().filter(|(n, _)| n == "set-cookie").map(|(_, v)| v.clone()).collect(),
            other => panic!("{other:?}"),
        }
    }

    fn outcome(d: &Decision) -> Outcome {
        match d {
            Decision::Forward(f) => f.outcome,
            Decision::Respond(r) => r.outcome,
            other => panic!("{other:?}"),
        }
    }

    fn cookie_edit(d: &Decision) -> String {
        let Decision::Forward(f) = d else { panic!("{d:?}") };
        f.header_edits.iter().find(|(n, _)| &**n == "cookie").and_then(|(_, v)| v.clone()).map(|v| String::from_utf8(v.to_vec()).unwrap()).unwrap()
    }

    #[test]
    fn the_call_is_post_login_refresh_path_with_the_refresh_token() {
        let call = upstream::login_refresh_call(&cfg(), "ur\"1").unwrap();
        assert_eq!(call.cluster, "login_api");
        assert_eq!(call.headers, [
            (":method".to_owned(), "POST".to_owned()),
            (":path".to_owned(), "/refresh".to_owned()),
            (":authority".to_owned(), "login_api".to_owned()),
            ("content-type".to_owned(), "application/json".to_owned()),
            ("accept".to_owned(), "application/json".to_owned()),
        ]);
        assert_eq!(serde_json::from_slice::<serde_json::Value>(call.body.as_deref().unwrap()).unwrap(), json!({"refreshToken": "ur\"1"}));
        assert_eq!(call.timeout, std::time::Duration::from_millis(1000));
        assert!(upstream::login_refresh_call(&config(), "x").is_none(), "no login_refresh_path, no call");
    }

    #[test]
    fn answers_are_classified_per_contract() {
        let c = cfg();
        let parse = |r: UpstreamReply| upstream::parse_login_refresh_reply(&c, Ok(&r));
        assert!(matches!(parse(renewed()), RefreshAnswer::Renewed(ref r) if r.refresh_token.as_deref() == Some("ur-new")));
        let RefreshAnswer::Renewed(r) = parse(reply(201, json!({"accessToken": "a"}))) else { panic!() };
        assert_eq!((r.refresh_token, r.identity), (None, None));
        assert_eq!(parse(reply(401, json!({}))), RefreshAnswer::Ended);
        assert_eq!(parse(reply(403, json!({}))), RefreshAnswer::Ended);
        let under = "A".repeat(4020);
        assert!(matches!(parse(reply(200, json!({"accessToken": under}))), RefreshAnswer::Renewed(_)));
        let outages = [
            reply(500, json!({})), reply(429, json!({})), reply(404, json!({})), reply(302, json!({})), reply(0, json!({})),
            reply(200, json!([])), reply(200, json!({"refreshToken": "r"})), reply(200, json!({"accessToken": 1})),
            reply(200, json!({"accessToken": "a", "refreshToken": 2})), reply(200, json!({"accessToken": "a", "userData": {"role": "x"}})),
            reply(200, json!({"accessToken": "a", "userData": "x"})), reply(200, json!({"accessToken": "a;b"})),
            reply(200, json!({"accessToken": "a", "refreshToken": "r r"})), reply(200, json!({"accessToken": "A".repeat(4030)})),
            reply(200, json!({"accessToken": "a", "refreshToken": "R".repeat(4030)})),
            UpstreamReply { body_size: 10_000_000, ..renewed() },
        ];
        for o in outages {
            assert_eq!(parse(o.clone()), RefreshAnswer::Outage, "{o:?}");
        }
        assert_eq!(upstream::parse_login_refresh_reply(&c, Err(&CallError::NoResponse)), RefreshAnswer::Outage);
        // A numeric id keeps its value: past 64 bits it would become another number, a malformed answer.
        let raw = |id: &str| UpstreamReply {
            status: 200,
            headers: vec![],
            body: format!(r#"{{"accessToken":"a","userData":{{"id":{id},"role":"r"}}}}"#).into_bytes(),
            body_size: 0,
        };
        assert_eq!(parse(raw("123456789012345678901234567890")), RefreshAnswer::Outage);
        for (id, value) in [("18446744073709551615", json!(u64::MAX)), ("-3", json!(-3)), ("1.5", json!(1.5))] {
            let RefreshAnswer::Renewed(r) = parse(raw(id)) else { panic!("{id}") };
            assert_eq!(r.identity.map(|i| i.user_id), Some(value), "{id}");
        }
    }

    #[test]
    fn settle_maps_each_answer_for_both_routes() {
        let c = cfg();
        let rot = rotation_for(&c, "GET", "/x", "ur-old");
        let RefreshAnswer::Renewed(renewal) = upstream::parse_login_refresh_reply(&c, Ok(&renewed())) else { panic!() };
        let d = settle(&c, &rot, &RefreshAnswer::Renewed(renewal.clone()), NOW);
        assert_eq!(outcome(&d), Outcome::RotatedInline);
        let sc = set_cookies(&d);
        assert_eq!(sc.len(), 4);
        assert!(sc[0].starts_with("accessToken=ua-new; ") && sc[1].starts_with("refreshToken=ur-new; "), "{sc:?}");
        let new_access = cookies::value_in_set_cookie(&sc[2], "accessTokenEtls").unwrap();
        let new_refresh = cookies::value_in_set_cookie(&sc[3], "refreshTokenEtls").unwrap();
        assert_eq!(payload(new_access)["role"], json!("viewer"), "the role from userData");
        // Renewed in place (the client sent the ETLS pair first).
        assert_eq!(cookie_edit(&d), format!("theme=dark; accessTokenEtls={new_access}; refreshTokenEtls={new_refresh}; accessToken=ua-new; refreshToken=ur-new"));
        let Decision::Forward(f) = &d else { panic!() };
        assert!(f.header_edits.contains(&crate::core::testing::edit("x-etls-role", Some(b"viewer"))));

        // No new refreshToken, no userData: the current one is set again, identity from ETLS.
        let kept = Renewal { refresh_token: None, identity: None, ..renewal };
        let d = settle(&c, &rot, &RefreshAnswer::Renewed(kept), NOW);
        let sc = set_cookies(&d);
        assert!(sc[1].starts_with("refreshToken=ur-old; "), "{sc:?}");
        assert_eq!(payload(cookies::value_in_set_cookie(&sc[2], "accessTokenEtls").unwrap())["role"], json!("admin"));

        let d = settle(&c, &rot, &RefreshAnswer::Ended, NOW);
        assert_eq!((outcome(&d), set_cookies(&d)), (Outcome::DeniedSessionEnded, c.cookies.clear_all().to_vec()));
        let d = settle(&c, &rot, &RefreshAnswer::Outage, NOW);
        assert_eq!((outcome(&d), set_cookies(&d).len()), (Outcome::RotatedInline, 2));
        let edit = cookie_edit(&d);
        assert!(edit.starts_with("theme=dark; accessTokenEtls=") && edit.ends_with("; accessToken=ua-old; refreshToken=ur-old"), "{edit}");

        let route = rotation_for(&c, "POST", "/api/auth/refreshtoken", "ur-old");
        assert_eq!(route.route, Route::RefreshRoute);
        let Decision::Respond(r) = settle(&c, &route, &RefreshAnswer::Ended, NOW) else { panic!() };
        assert_eq!((r.status, r.body.as_slice()), (401, &br#"{"error":"Session ended"}"#[..]));
        let Decision::Respond(r) = settle(&c, &route, &RefreshAnswer::Outage, NOW) else { panic!() };
        assert_eq!((r.status, r.headers().iter().filter(|(n, _)| n == "set-cookie").count()), (200, 2));
    }

    #[test]
    fn user_data_too_large_for_a_cookie_is_a_malformed_answer() {
        let c = cfg();
        let rot = rotation_for(&c, "GET", "/x", "ur-old");
        let huge = reply(200, json!({"accessToken": "ua-new", "userData": {"id": 42, "role": "r".repeat(3500)}}));
        let answer = upstream::parse_login_refresh_reply(&c, Ok(&huge));
        let d = settle(&c, &rot, &answer, NOW);
        assert_eq!((outcome(&d), set_cookies(&d).len()), (Outcome::RotatedInline, 2), "{d:?}");
        let route = rotation_for(&c, "POST", "/api/auth/refreshtoken", "ur-old");
        let d = settle(&c, &route, &answer, NOW);
        assert_eq!((outcome(&d), set_cookies(&d).len()), (Outcome::Refreshed, 2), "{d:?}");
    }

    #[test]
    fn without_an_upstream_refresh_token_the_session_cannot_be_confirmed() {
        let c = cfg();
        let no_upstream = format!("accessTokenEtls={}; refreshTokenEtls={}", access(NOW - 100), refresh(NOW + 100));
        let d = decide(&c, &req("GET", "/x", Some(&no_upstream)), NOW);
        assert_eq!((outcome(&d), set_cookies(&d).len()), (Outcome::DeniedNoUpstreamSession, 4));
        let Decision::Respond(r) = decide(&c, &req("POST", "/api/auth/refreshtoken", Some(&no_upstream)), NOW) else { panic!() };
        assert_eq!((r.status, r.body.as_slice()), (401, &br#"{"error":"Session ended"}"#[..]));
    }

    #[test]
    fn with_a_refresh_cluster_the_refresh_route_asks_and_big_bodies_do_not_wait() {
        let c = config_with(json!({"login_refresh_path": "/refresh", "refresh_cluster": "etls_refresh"}));
        let d = decide(&c, &req("GET", "/x", Some(&cookie("u"))), NOW);
        assert!(matches!(d, Decision::Call(ref call) if call.kind == crate::core::decision::CallKind::Refresh), "{d:?}");
        let mut big = req("POST", "/upload", Some(&cookie("u")));
        big.end_of_stream = false;
        big.content_length = Some(10_000_000);
        assert!(matches!(decide(&c, &big, NOW), Decision::Join(ref r) if !r.can_wait));
        big.content_length = Some(16_384);
        assert!(matches!(decide(&c, &big, NOW), Decision::Call(_)), "a small body is held");
        big.content_length = None;
        assert!(matches!(decide(&c, &big, NOW), Decision::Join(ref r) if !r.can_wait), "chunked: size unknown");
    }

    fn store() -> UpstreamCalls {
        UpstreamCalls::new(7)
    }

    #[test]
    fn a_burst_shares_one_call_and_the_answer_is_reused_for_30_s() {
        let c = cfg();
        let mut s = store();
        let sh = MemShared::default();
        assert_eq!(s.join(&c, &sh, 10, rotation_for(&c, "GET", "/a", "ur"), NOW_MS), Joined::Wait { dispatch: true, counts: vec![] });
        assert_eq!(s.tick_period_ms(), Some(DISPATCH_TICK_MS));
        for id in 11..74 {
            let joined = s.join(&c, &sh, id, rotation_for(&c, "GET", &format!("/b/{id}"), "ur"), NOW_MS + 5);
            assert_eq!(joined, Joined::Wait { dispatch: false, counts: vec![Outcome::UpstreamRefreshCoalesced] });
        }
        let queued = s.take_queued();
        assert_eq!(queued.len(), 1);
        assert!(s.take_queued().is_empty());
        assert_eq!(s.dispatched(&c, &sh, queued[0].0, Ok(99), NOW_MS + 6).counts, [Outcome::UpstreamRefreshCalls]);
        assert_eq!(s.tick_period_ms(), Some(DEADLINE_TICK_MS));
        assert_eq!(s.on_answer(&c, &sh, 98, Ok(&renewed()), NOW_MS + 7), Settled::default(), "unknown token");
        let settled = s.on_answer(&c, &sh, 99, Ok(&renewed()), NOW_MS + 300);
        assert_eq!(settled.counts, [Outcome::UpstreamRefreshRenewed]);
        assert_eq!(settled.decisions.len(), 64);
        let mut ids: Vec<u32> = settled.decisions.iter().map(|(id, _)| *id).collect();
        ids.sort_unstable();
        assert_eq!(ids, (10..74).collect::<Vec<_>>());
        for (_, d) in &settled.decisions {
            let sc = set_cookies(d);
            assert!(sc[0].starts_with("accessToken=ua-new;") && sc[1].starts_with("refreshToken=ur-new;"));
        }
        // Each waiter got its own request's decision.
        let d10 = &settled.decisions.iter().find(|(id, _)| *id == 10).unwrap().1;
        assert!(cookie_edit(d10).starts_with("theme=dark; accessTokenEtls=") && cookie_edit(d10).contains("; accessToken=ua-new; "));
        assert_eq!(s.waiting(), 0);
        assert_eq!(s.tick_period_ms(), None);
        assert!(s.on_answer(&c, &sh, 99, Ok(&renewed()), NOW_MS + 301).decisions.is_empty(), "answered once");

        // Reused within 30 s, also for a request that cannot wait; asked again after.
        let again = s.join(&c, &sh, 80, rotation_for(&c, "GET", "/c", "ur"), NOW_MS + 300 + REUSE_MS - 1);
        assert!(matches!(again, Joined::Now { ref counts, .. } if counts == &[Outcome::UpstreamRefreshCoalesced]));
        let mut no_wait = rotation_for(&c, "GET", "/c", "ur");
        no_wait.can_wait = false;
        let Joined::Now { decision, .. } = s.join(&c, &sh, 81, no_wait, NOW_MS + 1000) else { panic!() };
        assert_eq!(set_cookies(&decision).len(), 4, "a reused renewal needs no wait");
        assert_eq!(s.join(&c, &sh, 82, rotation_for(&c, "GET", "/c", "ur"), NOW_MS + 300 + REUSE_MS), Joined::Wait { dispatch: true, counts: vec![] });
    }

    #[test]
    fn sessions_do_not_share_answers() {
        let c = cfg();
        let mut s = store();
        let sh = MemShared::default();
        assert!(matches!(s.join(&c, &sh, 1, rotation_for(&c, "GET", "/", "ur-1"), NOW_MS), Joined::Wait { dispatch: true, .. }));
        assert!(matches!(s.join(&c, &sh, 2, rotation_for(&c, "GET", "/", "ur-2"), NOW_MS), Joined::Wait { dispatch: true, .. }));
        let queued = s.take_queued();
        assert_eq!(queued.len(), 2);
        let bodies: Vec<String> = queued.iter().map(|(_, call)| String::from_utf8(call.body.clone().unwrap()).unwrap()).collect();
        assert!(bodies.contains(&r#"{"refreshToken":"ur-1"}"#.to_owned()) && bodies.contains(&r#"{"refreshToken":"ur-2"}"#.to_owned()));
    }

    #[test]
    fn waiters_get_an_outage_answer_by_the_deadline_and_leavers_none() {
        let c = cfg();
        let mut s = store();
        let sh = MemShared::default();
        s.join(&c, &sh, 1, rotation_for(&c, "GET", "/", "ur"), NOW_MS);
        s.join(&c, &sh, 2, rotation_for(&c, "GET", "/", "ur"), NOW_MS + 10);
        s.join(&c, &sh, 3, rotation_for(&c, "GET", "/", "ur"), NOW_MS + 20);
        let (id, _) = s.take_queued()[0];
        s.dispatched(&c, &sh, id, Ok(5), NOW_MS + 1);
        s.leave(2);
        assert_eq!(s.waiting(), 2);
        let deadline = NOW_MS + 1000 + GRACE_MS;
        assert_eq!(s.tick(&c, &sh, deadline - 1), Settled::default());
        let settled = s.tick(&c, &sh, deadline);
        assert_eq!(settled.counts, [Outcome::UpstreamRefreshOutage]);
        let ids: Vec<u32> = settled.decisions.iter().map(|(id, _)| *id).collect();
        assert_eq!(ids, [1, 3]);
        assert!(settled.decisions.iter().all(|(_, d)| outcome(d) == Outcome::RotatedInline && set_cookies(d).len() == 2));
        assert!(s.on_answer(&c, &sh, 5, Ok(&renewed()), deadline + 5).decisions.is_empty(), "a late answer is dropped");
        assert!(matches!(s.join(&c, &sh, 4, rotation_for(&c, "GET", "/", "ur"), deadline + 10), Joined::Now { .. }), "outage reused");
        assert_eq!(s.tick(&c, &sh, deadline + REUSE_MS), Settled::default());
        assert!(s.is_empty(), "expired answers are dropped by the tick");
    }

    #[test]
    fn a_failed_dispatch_answers_every_waiter_as_an_outage() {
        let c = cfg();
        let mut s = store();
        let sh = MemShared::default();
        s.join(&c, &sh, 1, rotation_for(&c, "GET", "/", "ur"), NOW_MS);
        s.join(&c, &sh, 2, rotation_for(&c, "GET", "/", "ur"), NOW_MS);
        let (id, _) = s.take_queued()[0];
        let settled = s.dispatched(&c, &sh, id, Err(CallError::Dispatch("BadArgument".into())), NOW_MS);
        assert_eq!((settled.decisions.len(), settled.counts), (2, vec![Outcome::UpstreamRefreshOutage]));
    }

    #[test]
    fn the_store_is_bounded() {
        let c = cfg();
        let mut s = store();
        let sh = MemShared::default();
        for i in 0..MAX_SESSIONS as u32 {
            assert!(matches!(s.join(&c, &sh, i, rotation_for(&c, "GET", "/", &format!("ur-{i}")), NOW_MS), Joined::Wait { dispatch: true, .. }));
        }
        let full = s.join(&c, &sh, 5000, rotation_for(&c, "GET", "/", "ur-new"), NOW_MS);
        let Joined::Now { decision, counts } = full else { panic!("{full:?}") };
        assert_eq!((outcome(&decision), counts), (Outcome::RotatedInline, vec![Outcome::UpstreamRefreshOutage]));
        // Once answered, the oldest answers make room.
        let settled = s.tick(&c, &sh, NOW_MS + 1000 + GRACE_MS);
        assert_eq!(settled.decisions.len(), MAX_SESSIONS);
        assert!(matches!(s.join(&c, &sh, 5001, rotation_for(&c, "GET", "/", "ur-new"), NOW_MS + 2000), Joined::Wait { dispatch: true, .. }));
        assert_eq!(s.len(), MAX_SESSIONS);
    }
}
