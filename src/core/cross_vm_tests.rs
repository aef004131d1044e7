//! Several VMs of one Envoy, each with its own `UpstreamCalls`, over one shared-data map
//! (`shared_calls::testing::MemShared`): one login API call per session, whichever VM a
//! rotation lands on; a dead owner's lease taken over; a bounded key space.

use serde_json::json;

use crate::config::Config;
use crate::core::decide;
use crate::core::decision::{Decision, Outcome, UpstreamReply};
use crate::core::shared_calls::testing::MemShared;
use crate::core::shared_calls::{SLOTS, REUSE_MS};
use crate::core::testing::*;
use crate::core::upstream_session::{Joined, Rotation, Settled, UpstreamCalls, GRACE_MS, MAX_SESSIONS, POLL_TICK_MS};

const NOW_MS: u64 = NOW * 1000;
const TIMEOUT_MS: u64 = 1000;

fn cfg() -> Config {
    config_with(json!({"login_refresh_path": "/refresh", "login_timeout_ms": TIMEOUT_MS}))
}

fn rotation(c: &Config, path: &str, up_refresh: &str) -> Rotation {
    let cookie = format!("accessTokenEtls={}; refreshTokenEtls={}; accessToken=ua-old; refreshToken={up_refresh}", access(NOW - 100), refresh(NOW + 100));
    match decide(c, &req("GET", path, Some(&cookie)), NOW) {
        Decision::Join(r) => *r,
        other => panic!("expected a join, got {other:?}"),
    }
}

fn renewed(access: &str) -> UpstreamReply {
    let body = json!({"accessToken": access, "refreshToken": "ur-new", "userData": {"id": 42, "role": "viewer"}}).to_string().into_bytes();
    UpstreamReply { status: 200, headers: vec![], body_size: body.len(), body }
}

fn upstream_access(d: &Decision) -> String {
    let Decision::Forward(f) = d else { panic!("{d:?}") };
    f.set_cookies[0].split(';').next().unwrap().to_owned()
}

/// Dispatches what `vm` queued (host token `token`); returns how many calls it made.
fn dispatch(vm: &mut UpstreamCalls, c: &Config, sh: &MemShared, token: u32, now_ms: u64) -> usize {
    let queued = vm.take_queued();
    for (id, _) in &queued {
        assert_eq!(vm.dispatched(c, sh, *id, Ok(token), now_ms).counts, [Outcome::UpstreamRefreshCalls]);
    }
    queued.len()
}

#[test]
fn a_burst_over_four_vms_makes_one_call_and_all_get_the_same_tokens() {
    let c = cfg();
    let sh = MemShared::default();
    let mut vms: Vec<UpstreamCalls> = (1..=4).map(UpstreamCalls::new).collect();
    let mut counts = Vec::new();
    // 32 rotations spread over the VMs, the first on VM 0.
    for i in 0..32u32 {
        let vm = &mut vms[(i % 4) as usize];
        match vm.join(&c, &sh, 100 + i, rotation(&c, &format!("/r/{i}"), "ur"), NOW_MS + u64::from(i)) {
            Joined::Wait { counts: cs, .. } => counts.extend(cs),
            other => panic!("{other:?}"),
        }
    }
    // Every rotation on VMs 1-3 joined VM 0's call; VM 0's others joined its own.
    assert_eq!(counts.iter().filter(|o| **o == Outcome::UpstreamRefreshJoinedRemote).count(), 24);
    assert_eq!(counts.iter().filter(|o| **o == Outcome::UpstreamRefreshCoalesced).count(), 7);
    assert_eq!(vms[1].tick_period_ms(), Some(POLL_TICK_MS));
    let calls: usize = vms.iter_mut().enumerate().map(|(i, vm)| dispatch(vm, &c, &sh, 7, NOW_MS + 40 + i as u64)).sum();
    assert_eq!(calls, 1);
    // The others keep waiting while the call is out.
    for vm in &mut vms[1..] {
        assert_eq!(vm.tick(&c, &sh, NOW_MS + 100), Settled::default());
    }
    let mut settled = vms[0].on_answer(&c, &sh, 7, Ok(&renewed("ua-new")), NOW_MS + 300).decisions;
    assert_eq!(settled.len(), 8);
    for vm in &mut vms[1..] {
        let s = vm.tick(&c, &sh, NOW_MS + 304);
        assert!(s.counts.is_empty());
        assert_eq!(s.decisions.len(), 8);
        settled.extend(s.decisions);
        assert_eq!(vm.tick_period_ms(), None);
    }
    let mut ids: Vec<u32> = settled.iter().map(|(id, _)| *id).collect();
    ids.sort_unstable();
    assert_eq!(ids, (100..132).collect::<Vec<_>>());
    assert!(settled.iter().all(|(_, d)| upstream_access(d) == "accessToken=ua-new"));

    // A second wave 5 s later, on every VM and on a fifth that never saw the session: no call.
    vms.push(UpstreamCalls::new(5));
    for (i, vm) in vms.iter_mut().enumerate() {
        let Joined::Now { decision, counts } = vm.join(&c, &sh, 200, rotation(&c, "/again", "ur"), NOW_MS + 5_300) else { panic!("VM {i}") };
        assert_eq!(upstream_access(&decision), "accessToken=ua-new");
        let expected = if i == 0 { Outcome::UpstreamRefreshCoalesced } else { Outcome::UpstreamRefreshJoinedRemote };
        assert_eq!(counts, [expected]);
    }
    // Reused for 30 s from the answer, on every VM alike; then a new call.
    assert!(matches!(vms[4].join(&c, &sh, 201, rotation(&c, "/late", "ur"), NOW_MS + 300 + REUSE_MS), Joined::Wait { .. }));
    assert!(matches!(vms[3].join(&c, &sh, 202, rotation(&c, "/late", "ur"), NOW_MS + 300 + REUSE_MS), Joined::Wait { .. }));
    let calls: usize = vms.iter_mut().map(|vm| dispatch(vm, &c, &sh, 8, NOW_MS + 300 + REUSE_MS + 1)).sum();
    assert_eq!(calls, 1);
}

#[test]
fn a_dead_owner_is_taken_over_after_the_timeout_and_grace() {
    let c = cfg();
    let sh = MemShared::default();
    let mut owner = UpstreamCalls::new(1);
    let mut other = UpstreamCalls::new(2);
    assert!(matches!(owner.join(&c, &sh, 1, rotation(&c, "/a", "ur"), NOW_MS), Joined::Wait { .. }));
    assert_eq!(dispatch(&mut owner, &c, &sh, 3, NOW_MS + 1), 1);
    drop(owner); // the VM traps: its call will never be answered here
    assert!(matches!(other.join(&c, &sh, 2, rotation(&c, "/b", "ur"), NOW_MS + 10), Joined::Wait { .. }));
    let deadline = NOW_MS + TIMEOUT_MS + GRACE_MS;
    assert_eq!(other.tick(&c, &sh, deadline - 1), Settled::default());
    assert!(other.take_queued().is_empty(), "no second call before the lease's deadline");
    let s = other.tick(&c, &sh, deadline);
    assert_eq!((s.decisions.len(), s.counts), (0, vec![Outcome::UpstreamRefreshLeaseTakenOver]));
    assert_eq!(dispatch(&mut other, &c, &sh, 4, deadline + 1), 1);
    let s = other.on_answer(&c, &sh, 4, Ok(&renewed("ua-2")), deadline + 50);
    assert_eq!(s.decisions.len(), 1);
    assert_eq!(upstream_access(&s.decisions[0].1), "accessToken=ua-2");
    // A VM that comes later reuses the taker's answer.
    let mut third = UpstreamCalls::new(3);
    assert!(matches!(third.join(&c, &sh, 5, rotation(&c, "/c", "ur"), deadline + 60), Joined::Now { .. }));
}

#[test]
fn a_waiter_whose_owner_and_taker_both_never_answer_gets_an_outage_answer() {
    let c = cfg();
    let sh = MemShared::default();
    let mut owner = UpstreamCalls::new(1);
    let mut other = UpstreamCalls::new(2);
    owner.join(&c, &sh, 1, rotation(&c, "/a", "ur"), NOW_MS);
    dispatch(&mut owner, &c, &sh, 3, NOW_MS);
    other.join(&c, &sh, 2, rotation(&c, "/b", "ur"), NOW_MS);
    let lease = TIMEOUT_MS + GRACE_MS;
    other.tick(&c, &sh, NOW_MS + lease);
    dispatch(&mut other, &c, &sh, 4, NOW_MS + lease);
    // Its own call never answers either: its deadline answers the request (nobody waits forever).
    assert_eq!(other.tick(&c, &sh, NOW_MS + 2 * lease - 1), Settled::default());
    let s = other.tick(&c, &sh, NOW_MS + 2 * lease);
    assert_eq!((s.decisions.len(), s.counts), (1, vec![Outcome::UpstreamRefreshOutage]));
}

#[test]
fn a_waiter_that_leaves_never_takes_a_lease() {
    let c = cfg();
    let sh = MemShared::default();
    let mut owner = UpstreamCalls::new(1);
    let mut other = UpstreamCalls::new(2);
    owner.join(&c, &sh, 1, rotation(&c, "/a", "ur"), NOW_MS);
    other.join(&c, &sh, 2, rotation(&c, "/b", "ur"), NOW_MS);
    other.leave(2);
    assert_eq!(other.tick_period_ms(), None);
    // A new waiter on the entry left behind gets the tick going again.
    assert!(matches!(other.join(&c, &sh, 3, rotation(&c, "/b", "ur"), NOW_MS + 1), Joined::Wait { dispatch: true, .. }));
    assert_eq!(other.tick_period_ms(), Some(POLL_TICK_MS));
    other.leave(3);
    assert_eq!(other.tick(&c, &sh, NOW_MS + 10 * TIMEOUT_MS), Settled::default());
    assert!(other.take_queued().is_empty() && other.is_empty());
}

#[test]
fn five_thousand_sessions_keep_the_key_space_and_stores_bounded_then_a_burst_makes_one_call() {
    let c = cfg();
    let sh = MemShared::default();
    let mut vms: Vec<UpstreamCalls> = (1..=2).map(UpstreamCalls::new).collect();
    for i in 0..5_000u32 {
        let now = NOW_MS + u64::from(i) * 10;
        let vm = &mut vms[(i % 2) as usize];
        vm.join(&c, &sh, i, rotation(&c, "/", &format!("ur-{i}")), now);
        if let Some((id, _)) = vm.take_queued().pop() {
            vm.dispatched(&c, &sh, id, Ok(i), now);
            vm.on_answer(&c, &sh, i, Ok(&renewed("a")), now + 1);
        }
        vm.tick(&c, &sh, now + 2);
    }
    assert!(sh.keys() <= SLOTS as usize, "{} keys", sh.keys());
    assert!(vms.iter().all(|vm| vm.len() <= MAX_SESSIONS));
    let now = NOW_MS + 60_000;
    let mut calls = 0;
    for i in 0..32u32 {
        let vm = &mut vms[(i % 2) as usize];
        assert!(matches!(vm.join(&c, &sh, 10_000 + i, rotation(&c, "/", "ur-burst"), now), Joined::Wait { .. }));
    }
    for vm in &mut vms {
        calls += dispatch(vm, &c, &sh, 99_999, now + 1);
    }
    assert_eq!(calls, 1);
}
