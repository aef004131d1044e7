//! The login API refresh calls shared by every VM (worker) of one Envoy (SPEC, "Upstream
//! session"; STYLE, "State shared by every worker of an Envoy"): the layout of the slots in
//! proxy-wasm shared data, how a record is encoded, who may take a session's lease and when it
//! expires, which record wins a compare-and-swap conflict, and which record gives way.
//!
//! - The key space is fixed: [`SLOTS`] keys `etls.s.<n>`. A session (its [`SessionKey`], the
//!   same on every VM) may live in any of [`PROBES`] consecutive slots from `n = key mod SLOTS`.
//!   Envoy cannot delete a shared-data key, so nothing else is ever created.
//! - A record names its session's full key (a slot shared by two sessions is told apart) and is
//!   either a lease (the VM `owner` is calling the login API for it until `deadline_ms`) or the
//!   answer (reusable until `expiry_ms`).
//! - A rotation that finds its session's live answer uses it; a live lease of another VM: it
//!   waits and polls the slot; otherwise it takes the lease (an expired lease of its session:
//!   taken over) in the first free or stale slot, else in place of the oldest live answer, and
//!   if every slot holds a live lease of another session, it asks the API on its own.
//! - A write is a compare-and-swap on the version read; a conflict reads again, at most
//!   [`CAS_TRIES`] times (then: no room, ask on its own).
//! - Publishing an answer replaces the lease; when the slot already holds an answer for the
//!   session (a VM that took over answered first), a renewal beats an ended session or an
//!   outage and otherwise the first answer stays, so every VM settles with the same answer.
//!
//! The host's shared data is reached through [`SharedData`], which the shell implements with
//! get/set (CAS) and nothing else; tests play several VMs over one in-memory map. No proxy_wasm
//! here and no clock (`now_ms` is passed in, Unix milliseconds).

use serde::{Deserialize, Serialize};

use crate::core::session_key::SessionKey;
use crate::core::model::Identity;
use crate::core::upstream::{RefreshAnswer, Renewal};

/// How many shared-data keys hold records (the fixed key space).
pub const SLOTS: u32 = 1024;
/// How many consecutive slots a session may use.
pub const PROBES: u32 = 4;
/// How many times a write is tried again after a CAS conflict.
pub const CAS_TRIES: usize = 4;
/// Prefix of the slot keys: `etls.s.<n>`.
pub const SLOT_PREFIX: &str = "etls.s.";
/// How long an answer is reused by every VM, in milliseconds (SPEC: 30 s).
pub const REUSE_MS: u64 = 30_000;

/// Why a write was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetError {
    /// Another VM wrote since the version read.
    CasMismatch,
    /// Anything else the host said.
    Refused,
}

/// The host's shared data, as bytes: one value and its CAS version per key. `get` answers
/// `(None, None)` for a key never written and `(None, Some(cas))` for an empty value; `set`
/// with `Some(cas)` fails with `CasMismatch` when the key's version moved.
pub trait SharedData {
    fn get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>);
    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), SetError>;
}

/// The shared-data key of slot `slot`.
pub fn slot_key(slot: u32) -> String {
    format!("{SLOT_PREFIX}{slot}")
}

/// The first slot a session may use.
pub fn home_slot(key: &SessionKey) -> u32 {
    let [a, b, c, d, ..] = key.0;
    u32::from_le_bytes([a, b, c, d]) % SLOTS
}

/// The slots a session may use, in probe order.
pub fn probe_slots(key: &SessionKey) -> impl Iterator<Item = u32> {
    let home = home_slot(key);
    (0..PROBES).map(move |i| (home + i) % SLOTS)
}

/// What a slot holds.
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    /// VM `owner` calls the login API for session `key`; others wait until `deadline_ms`.
    Lease { key: SessionKey, owner: u32, deadline_ms: u64 },
    /// The login API's answer for session `key`, reused until `expiry_ms`.
    Answer { key: SessionKey, expiry_ms: u64, answer: RefreshAnswer },
}

impl Record {
    fn key(&self) -> &SessionKey {
        match self {
            Record::Lease { key, .. } | Record::Answer { key, .. } => key,
        }
    }

    /// True while the record still means something: a lease before its deadline, an answer
    /// before its expiry. A stale record is free to overwrite.
    pub fn is_live(&self, now_ms: u64) -> bool {
        match self {
            Record::Lease { deadline_ms, .. } => now_ms < *deadline_ms,
            Record::Answer { expiry_ms, .. } => now_ms < *expiry_ms,
        }
    }

    /// The record's bytes (compact JSON; the key as hex).
    pub fn encode(&self) -> Vec<u8> {
        let wire = match self {
            Record::Lease { key, owner, deadline_ms } => Wire::Lease { k: key.to_hex(), o: *owner, d: *deadline_ms },
            Record::Answer { key, expiry_ms, answer } => Wire::Answer { k: key.to_hex(), e: *expiry_ms, r: WireAnswer::from(answer) },
        };
        serde_json::to_vec(&wire).unwrap_or_default()
    }

    /// Reads a record; `None` for an empty slot or bytes that are not one (then stale).
    pub fn decode(bytes: &[u8]) -> Option<Record> {
        if bytes.is_empty() {
            return None;
        }
        Some(match serde_json::from_slice::<Wire>(bytes).ok()? {
            Wire::Lease { k, o, d } => Record::Lease { key: parse_hex_key(&k)?, owner: o, deadline_ms: d },
            Wire::Answer { k, e, r } => Record::Answer { key: parse_hex_key(&k)?, expiry_ms: e, answer: r.into_answer()? },
        })
    }
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "t")]
enum Wire {
    #[serde(rename = "l")]
    Lease { k: String, o: u32, d: u64 },
    #[serde(rename = "a")]
    Answer { k: String, e: u64, r: WireAnswer },
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "s")]
enum WireAnswer {
    #[serde(rename = "renewed")]
    Renewed {
        a: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        r: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        i: Option<Identity>,
    },
    #[serde(rename = "ended")]
    Ended,
    #[serde(rename = "outage")]
    Outage,
}

impl From<&RefreshAnswer> for WireAnswer {
    fn from(answer: &RefreshAnswer) -> Self {
        match answer {
            RefreshAnswer::Renewed(r) => WireAnswer::Renewed { a: r.access_token.clone(), r: r.refresh_token.clone(), i: r.identity.clone() },
            RefreshAnswer::Ended => WireAnswer::Ended,
            RefreshAnswer::Outage => WireAnswer::Outage,
        }
    }
}

impl WireAnswer {
    fn into_answer(self) -> Option<RefreshAnswer> {
        Some(match self {
            WireAnswer::Renewed { a, r, i } => {
                // Checked again as when read from the login API: a header value is built from it.
                let identity = match i {
                    Some(i) => Some(Identity::new(i.user_id, i.role)?),
                    None => None,
                };
                RefreshAnswer::Renewed(Renewal { access_token: a, refresh_token: r, identity })
            }
            WireAnswer::Ended => RefreshAnswer::Ended,
            WireAnswer::Outage => RefreshAnswer::Outage,
        })
    }
}

fn parse_hex_key(hex: &str) -> Option<SessionKey> {
    let bytes = hex.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let mut key = [0u8; 32];
    for (out, pair) in key.iter_mut().zip(bytes.chunks_exact(2)) {
        let text = std::str::from_utf8(pair).ok()?;
        *out = u8::from_str_radix(text, 16).ok()?;
    }
    Some(SessionKey(key))
}

/// What a VM found or did for a session in the shared slots.
#[derive(Debug, Clone, PartialEq)]
pub enum Claim {
    /// The session's answer, reusable until `expiry_ms`.
    Answer { answer: RefreshAnswer, expiry_ms: u64 },
    /// Another VM holds the session's live lease in `slot` until `deadline_ms`: wait, and poll.
    Wait { slot: u32, deadline_ms: u64 },
    /// This VM now holds the lease in `slot`: it makes the call. `took_over`: the session's
    /// lease had expired (its owner died or never answered); `overwrote_live`: a live answer of
    /// another session gave way.
    Leased { slot: u32, deadline_ms: u64, took_over: bool, overwrote_live: bool },
    /// Every slot holds a live lease of another session (or the writes kept conflicting): ask
    /// the API without sharing.
    NoRoom,
}

struct Read {
    slot: u32,
    record: Option<Record>,
    cas: Option<u32>,
}

fn read(store: &impl SharedData, slot: u32) -> Read {
    let (bytes, cas) = store.get(&slot_key(slot));
    Read { slot, record: bytes.as_deref().and_then(Record::decode), cas }
}

/// Writes `record` into `slot` over the version `cas`; a slot never written gets an empty
/// value first (Envoy ignores a CAS on an absent key, so two VMs would both win), and the
/// caller reads again.
fn write(store: &impl SharedData, slot: u32, cas: Option<u32>, record: &Record) -> Result<(), SetError> {
    match cas {
        Some(cas) => store.set(&slot_key(slot), &record.encode(), Some(cas)),
        None => {
            store.set(&slot_key(slot), &[], None)?;
            Err(SetError::CasMismatch)
        }
    }
}

/// Looks for session `key` in its slots, and takes its lease for VM `vm` until
/// `now_ms + lease_ms` when nobody holds a live one (see module doc).
pub fn claim(store: &impl SharedData, vm: u32, key: &SessionKey, now_ms: u64, lease_ms: u64) -> Claim {
    for _ in 0..CAS_TRIES {
        let reads: Vec<Read> = probe_slots(key).map(|slot| read(store, slot)).collect();
        let mine = reads.iter().find(|r| r.record.as_ref().is_some_and(|rec| rec.key() == key));
        let (target, took_over, overwrote_live) = match mine.and_then(|r| r.record.as_ref().map(|rec| (r, rec))) {
            Some((_, Record::Answer { answer, expiry_ms, .. })) if now_ms < *expiry_ms => {
                return Claim::Answer { answer: answer.clone(), expiry_ms: *expiry_ms };
            }
            Some((r, Record::Lease { deadline_ms, .. })) if now_ms < *deadline_ms => {
                return Claim::Wait { slot: r.slot, deadline_ms: *deadline_ms };
            }
            Some((r, record)) => (r, matches!(record, Record::Lease { .. }), false),
            None => match free_or_oldest(&reads, now_ms) {
                Some((r, overwrote_live)) => (r, false, overwrote_live),
                None => return Claim::NoRoom,
            },
        };
        let deadline_ms = now_ms.saturating_add(lease_ms);
        let lease = Record::Lease { key: *key, owner: vm, deadline_ms };
        match write(store, target.slot, target.cas, &lease) {
            Ok(()) => return Claim::Leased { slot: target.slot, deadline_ms, took_over, overwrote_live },
            Err(SetError::CasMismatch) => continue,
            Err(SetError::Refused) => return Claim::NoRoom,
        }
    }
    Claim::NoRoom
}

/// The slot a new lease goes to: the first empty or stale one, else the one with the oldest live
/// answer (true: a live record gives way); `None` when all hold live leases.
fn free_or_oldest(reads: &[Read], now_ms: u64) -> Option<(&Read, bool)> {
    if let Some(free) = reads.iter().find(|r| !r.record.as_ref().is_some_and(|rec| rec.is_live(now_ms))) {
        return Some((free, false));
    }
    reads
        .iter()
        .filter_map(|r| match &r.record {
            Some(Record::Answer { expiry_ms, .. }) => Some((r, *expiry_ms)),
            _ => None,
        })
        .min_by_key(|(_, expiry)| *expiry)
        .map(|(r, _)| (r, true))
}

/// A live answer for session `key`, read only (for a rotation that cannot wait).
pub fn find_answer(store: &impl SharedData, key: &SessionKey, now_ms: u64) -> Option<(RefreshAnswer, u64)> {
    probe_slots(key).find_map(|slot| match read(store, slot).record {
        Some(Record::Answer { key: k, expiry_ms, answer }) if &k == key && now_ms < expiry_ms => Some((answer, expiry_ms)),
        _ => None,
    })
}

/// A VM waiting on another's lease of session `key` in `slot` looks again: the answer, still
/// waiting, or (the lease expired, or the slot no longer holds the session) a new claim, which
/// takes the lease over.
pub fn poll(store: &impl SharedData, vm: u32, key: &SessionKey, slot: u32, now_ms: u64, lease_ms: u64) -> Claim {
    let current = read(store, slot);
    match current.record {
        Some(Record::Answer { key: k, expiry_ms, answer }) if &k == key && now_ms < expiry_ms => Claim::Answer { answer, expiry_ms },
        Some(Record::Lease { key: k, deadline_ms, .. }) if &k == key && now_ms < deadline_ms => Claim::Wait { slot, deadline_ms },
        _ => claim(store, vm, key, now_ms, lease_ms),
    }
}

/// VM `vm`'s call for session `key` (lease in `slot`) was answered: writes the answer for every
/// VM to reuse until `now_ms + REUSE_MS`, and returns the answer to settle with (the one
/// already there if it wins: see module doc) and its expiry. A slot taken meanwhile by another
/// session's live lease is left alone.
pub fn publish(store: &impl SharedData, key: &SessionKey, slot: u32, answer: RefreshAnswer, now_ms: u64) -> (RefreshAnswer, u64) {
    let expiry_ms = now_ms.saturating_add(REUSE_MS);
    let ours = Record::Answer { key: *key, expiry_ms, answer };
    for _ in 0..CAS_TRIES {
        let current = read(store, slot);
        match &current.record {
            Some(Record::Answer { key: k, expiry_ms: e, answer: theirs }) if k == key && now_ms < *e => {
                let ours_wins = matches!(ours, Record::Answer { answer: RefreshAnswer::Renewed(_), .. })
                    && !matches!(theirs, RefreshAnswer::Renewed(_));
                if !ours_wins {
                    return (theirs.clone(), *e);
                }
            }
            Some(Record::Lease { key: k, deadline_ms, .. }) if k != key && now_ms < *deadline_ms => break,
            _ => {}
        }
        match write(store, slot, current.cas, &ours) {
            Ok(()) => break,
            Err(SetError::CasMismatch) => continue,
            Err(SetError::Refused) => break,
        }
    }
    match ours {
        Record::Answer { answer, .. } => (answer, expiry_ms),
        Record::Lease { .. } => (RefreshAnswer::Outage, expiry_ms),
    }
}

/// Gives every slot a value, so that later writes are all compare-and-swap (run when a VM
/// starts; a slot that exists is left alone).
pub fn prepare_slots(store: &impl SharedData) {
    for slot in 0..SLOTS {
        let key = slot_key(slot);
        if store.get(&key) == (None, None) {
            let _ = store.set(&key, &[], None);
        }
    }
}

#[cfg(test)]
pub mod testing {
    //! Envoy's shared data as a test sees it: one map for every "VM" of a process, with CAS
    //! versions, no delete, and a CAS on an absent key ignored (the insert succeeds).
    use super::{SetError, SharedData};
    use std::cell::RefCell;
    use std::collections::HashMap;

    #[derive(Default)]
    pub struct MemShared {
        map: RefCell<HashMap<String, (Vec<u8>, u32)>>,
        next_cas: RefCell<u32>,
        pub sets: RefCell<usize>,
        pub gets: RefCell<usize>,
    }

    impl MemShared {
        pub fn keys(&self) -> usize {
            self.map.borrow().len()
        }
    }

    impl SharedData for MemShared {
        fn get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
            *self.gets.borrow_mut() += 1;
            match self.map.borrow().get(key) {
                Some((v, cas)) if v.is_empty() => (None, Some(*cas)),
                Some((v, cas)) => (Some(v.clone()), Some(*cas)),
                None => (None, None),
            }
        }

        fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), SetError> {
            *self.sets.borrow_mut() += 1;
            let mut map = self.map.borrow_mut();
            if let (Some(cas), Some((_, current))) = (cas, map.get(key)) {
                if cas != *current {
                    return Err(SetError::CasMismatch);
                }
            }
            let mut next = self.next_cas.borrow_mut();
            *next += 1;
            map.insert(key.to_owned(), (value.to_vec(), *next));
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::MemShared;
    use super::*;
    use serde_json::json;

    const NOW: u64 = 1_700_000_000_000;
    const LEASE: u64 = 1_500;
    const A: u32 = 11;
    const B: u32 = 22;
    const C: u32 = 33;

    fn key(n: u8) -> SessionKey {
        SessionKey([n; 32])
    }

    /// A key whose home slot is `slot` (different sessions, same slots).
    fn key_at(slot: u32, n: u8) -> SessionKey {
        let mut k = [n; 32];
        k[..4].copy_from_slice(&slot.to_le_bytes());
        SessionKey(k)
    }

    fn renewed(access: &str) -> RefreshAnswer {
        RefreshAnswer::Renewed(Renewal {
            access_token: access.to_owned(),
            refresh_token: Some("r-new".to_owned()),
            identity: Identity::new(json!(42), Some(json!("viewer"))),
        })
    }

    #[test]
    fn records_round_trip_and_junk_is_stale() {
        let records = [
            Record::Lease { key: key(1), owner: 7, deadline_ms: NOW },
            Record::Answer { key: key(2), expiry_ms: NOW, answer: renewed("a") },
            Record::Answer { key: key(3), expiry_ms: NOW, answer: RefreshAnswer::Renewed(Renewal { access_token: "a".into(), refresh_token: None, identity: None }) },
            Record::Answer { key: key(4), expiry_ms: NOW, answer: RefreshAnswer::Ended },
            Record::Answer { key: key(5), expiry_ms: NOW, answer: RefreshAnswer::Outage },
        ];
        for r in records {
            assert_eq!(Record::decode(&r.encode()), Some(r.clone()));
        }
        for junk in [&b""[..], b"{", b"{\"t\":\"l\",\"k\":\"00\",\"o\":1,\"d\":1}", b"\xff\xfe"] {
            assert_eq!(Record::decode(junk), None);
        }
        let bytes = Record::Lease { key: key(1), owner: 7, deadline_ms: NOW }.encode();
        assert!(bytes.len() < 120, "{}", bytes.len());
    }

    #[test]
    fn two_vms_one_lease_the_answer_reaches_both() {
        let shared = MemShared::default();
        let k = key(9);
        let Claim::Leased { slot, deadline_ms, took_over: false, overwrote_live: false } = claim(&shared, A, &k, NOW, LEASE) else { panic!() };
        assert_eq!(deadline_ms, NOW + LEASE);
        assert_eq!(slot, home_slot(&k));
        // VM B finds the lease and waits on it; so does C.
        assert_eq!(claim(&shared, B, &k, NOW + 1, LEASE), Claim::Wait { slot, deadline_ms });
        assert_eq!(claim(&shared, C, &k, NOW + 2, LEASE), Claim::Wait { slot, deadline_ms });
        assert_eq!(poll(&shared, B, &k, slot, NOW + 10, LEASE), Claim::Wait { slot, deadline_ms });
        // A answers: both see it, until it expires.
        let (answer, expiry) = publish(&shared, &k, slot, renewed("a1"), NOW + 300);
        assert_eq!((answer.clone(), expiry), (renewed("a1"), NOW + 300 + REUSE_MS));
        assert_eq!(poll(&shared, B, &k, slot, NOW + 302, LEASE), Claim::Answer { answer: answer.clone(), expiry_ms: expiry });
        assert_eq!(claim(&shared, C, &k, NOW + 5_300, LEASE), Claim::Answer { answer, expiry_ms: expiry });
        // Past the expiry the next rotation calls again, in the same slot.
        assert!(matches!(claim(&shared, C, &k, expiry, LEASE), Claim::Leased { slot: s, took_over: false, overwrote_live: false, .. } if s == slot));
    }

    #[test]
    fn a_lease_whose_owner_never_answers_is_taken_over_after_its_deadline() {
        let shared = MemShared::default();
        let k = key(3);
        let Claim::Leased { slot, deadline_ms, .. } = claim(&shared, A, &k, NOW, LEASE) else { panic!() };
        assert_eq!(poll(&shared, B, &k, slot, deadline_ms - 1, LEASE), Claim::Wait { slot, deadline_ms });
        let taken = poll(&shared, B, &k, slot, deadline_ms, LEASE);
        assert_eq!(taken, Claim::Leased { slot, deadline_ms: deadline_ms + LEASE, took_over: true, overwrote_live: false });
        // C, polling a moment later, waits on B's lease instead of taking it too.
        assert_eq!(poll(&shared, C, &k, slot, deadline_ms + 1, LEASE), Claim::Wait { slot, deadline_ms: deadline_ms + LEASE });
        // The dead owner's late answer, if it came: a renewal beats B's outage; else B's stays.
        publish(&shared, &k, slot, RefreshAnswer::Outage, deadline_ms + 5);
        assert_eq!(publish(&shared, &k, slot, RefreshAnswer::Ended, deadline_ms + 6).0, RefreshAnswer::Outage);
        assert_eq!(publish(&shared, &k, slot, renewed("late"), deadline_ms + 7).0, renewed("late"));
        assert_eq!(publish(&shared, &k, slot, renewed("later"), deadline_ms + 8).0, renewed("late"), "the first renewal stays");
    }

    #[test]
    fn colliding_sessions_use_the_next_slots_and_then_ask_on_their_own() {
        let shared = MemShared::default();
        let home = SLOTS - 2; // the probes wrap around
        let mut slots = Vec::new();
        for n in 0..PROBES as u8 {
            match claim(&shared, A, &key_at(home, n), NOW, LEASE) {
                Claim::Leased { slot, .. } => slots.push(slot),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(slots, [SLOTS - 2, SLOTS - 1, 0, 1]);
        // Each session still finds its own record among the others.
        assert!(matches!(claim(&shared, B, &key_at(home, 2), NOW, LEASE), Claim::Wait { slot: 0, .. }));
        // All four hold live calls: no room.
        assert_eq!(claim(&shared, B, &key_at(home, 9), NOW, LEASE), Claim::NoRoom);
        // Answers give way, oldest first, and are counted as overwritten while live.
        publish(&shared, &key_at(home, 2), 0, RefreshAnswer::Outage, NOW + 20);
        publish(&shared, &key_at(home, 1), SLOTS - 1, RefreshAnswer::Outage, NOW + 10);
        let got = claim(&shared, B, &key_at(home, 9), NOW + 30, LEASE);
        assert_eq!(got, Claim::Leased { slot: SLOTS - 1, deadline_ms: NOW + 30 + LEASE, took_over: false, overwrote_live: true });
        // A stale record is taken before a live answer, and not counted.
        let got = claim(&shared, B, &key_at(home, 10), NOW + LEASE, LEASE);
        assert!(matches!(got, Claim::Leased { slot, overwrote_live: false, .. } if slot == SLOTS - 2), "{got:?}");
        // A publish never clobbers another session's live lease.
        let (answer, _) = publish(&shared, &key_at(home, 0), SLOTS - 2, renewed("x"), NOW + LEASE + 1);
        assert_eq!(answer, renewed("x"));
        assert!(matches!(claim(&shared, C, &key_at(home, 10), NOW + LEASE + 2, LEASE), Claim::Wait { slot, .. } if slot == SLOTS - 2));
    }

    /// A store that lets another VM write between each read and write.
    type Interleave<'a> = RefCell<Option<Box<dyn FnMut(&MemShared) + 'a>>>;

    struct Racy<'a> {
        inner: &'a MemShared,
        before_set: Interleave<'a>,
    }
    use std::cell::RefCell;

    impl SharedData for Racy<'_> {
        fn get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
            self.inner.get(key)
        }
        fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), SetError> {
            if let Some(mut f) = self.before_set.borrow_mut().take() {
                f(self.inner);
            }
            self.inner.set(key, value, cas)
        }
    }

    #[test]
    fn a_cas_conflict_reads_again_and_the_loser_waits() {
        let shared = MemShared::default();
        prepare_slots(&shared);
        assert_eq!(shared.keys(), SLOTS as usize);
        let k = key(5);
        // B takes the lease between A's read and A's write: A's CAS fails, A reads again, waits.
        let racy = Racy { inner: &shared, before_set: RefCell::new(Some(Box::new(|s: &MemShared| {
            assert!(matches!(claim(s, B, &key(5), NOW, LEASE), Claim::Leased { .. }));
        }))) };
        assert!(matches!(claim(&racy, A, &k, NOW, LEASE), Claim::Wait { .. }));
    }

    #[test]
    fn a_slot_never_written_is_created_empty_then_taken_by_cas() {
        let shared = MemShared::default();
        let k = key(6);
        assert!(matches!(claim(&shared, A, &k, NOW, LEASE), Claim::Leased { .. }));
        assert_eq!(*shared.sets.borrow(), 2, "an empty value, then the lease by CAS");
        assert_eq!(shared.keys(), 1);
    }

    #[test]
    fn many_sessions_never_grow_the_key_space() {
        let shared = MemShared::default();
        prepare_slots(&shared);
        for i in 0..5_000u32 {
            let mut k = [0u8; 32];
            k[..4].copy_from_slice(&i.wrapping_mul(2_654_435_761).to_le_bytes());
            let k = SessionKey(k);
            let now = NOW + u64::from(i);
            if let Claim::Leased { slot, .. } = claim(&shared, A, &k, now, LEASE) {
                publish(&shared, &k, slot, RefreshAnswer::Outage, now);
            }
        }
        assert_eq!(shared.keys(), SLOTS as usize);
    }
}
