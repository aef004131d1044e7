//! Paused requests of one Wasm VM that the VM's tick may have to act on: plain data, each entry
//! with the time it started waiting, the table bounded by [`MAX_WAITING`]. The shell registers a
//! request when it pauses it, reports what it learns (a body callback came, how many bytes Envoy
//! has received), asks [`Waiting::on_tick`] on each tick and carries out what it returns for each
//! context id. No proxy_wasm here and no clock: times are milliseconds the shell passes in.
//!
//! Today one kind of wait lives here: a login whose headers are held until its body is read
//! (`allow_on_headers_stop_iteration`). Without that flag, Envoy turns the header pause into
//! StopAllIteration and never hands the body over; the tick notices that Envoy holds body bytes
//! the filter was never given, and from then on this VM lets login headers go on (see
//! docs/deploy-envoy.md, "`allow_on_headers_stop_iteration`").

use std::time::Duration;

use crate::core::decision::Decision;

/// Most requests the table holds; a login past it is read the way it is without the flag
/// (its headers go on, its body is held), so it is still answered.
pub const MAX_WAITING: usize = 1024;

/// How often the VM ticks while something waits.
pub const TICK_PERIOD: Duration = Duration::from_millis(200);

/// How long a held login may go without a body callback before the filter gives up telling
/// "the client has not sent its body yet" from "Envoy holds it" and lets the headers go on, when
/// the shell cannot read how much Envoy received (the host refused the property).
pub const UNREADABLE_GIVE_UP_MS: u64 = 1000;

/// How long a held login may go without a body callback and without Envoy receiving any body
/// byte before its headers go on anyway (no warning, nothing learnt for the VM). This bounds the
/// one case the byte count cannot see: a body that ends without a byte (an HTTP/2 empty DATA
/// frame or trailers after headers without END_STREAM), which Envoy would otherwise hold until
/// its stream timeout when the flag is missing. A client that is this slow with the flag set
/// only costs the app seeing that one login's headers.
pub const QUIET_GIVE_UP_MS: u64 = 10_000;

/// Why a request waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// A login whose headers are held until the body is read. `baseline` is what Envoy had
    /// received of the request (`request.total_size`: headers and body bytes) when the headers
    /// were held; more than that, with no body callback, means Envoy holds body bytes it did
    /// not give the filter.
    LoginBody { baseline: u64 },
}

/// One waiting request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub context_id: u32,
    pub since_ms: u64,
    pub wait: Wait,
}

/// What the shell must do on this tick.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct TickPlan {
    /// Log the one warning of this VM: the flag is missing.
    pub warn_flag_missing: bool,
    /// Decisions to carry out on other paused requests, by context id.
    pub apply: Vec<(u32, Decision)>,
    /// False when nothing waits any more: the shell stops the tick.
    pub keep_ticking: bool,
}

/// The table of one VM.
#[derive(Debug, Default)]
pub struct Waiting {
    entries: Vec<Entry>,
    /// Set once this VM saw Envoy hold a login body the filter was never given.
    header_hold_broken: bool,
}

impl Waiting {
    pub fn new() -> Waiting {
        Waiting::default()
    }

    /// A login wants its headers held (`Decision::ReadBody { hold_headers: true }`): true when
    /// they may be (and the request now waits here), false when they must go on instead: this
    /// VM found the flag missing, or the table is full.
    pub fn admit_login(&mut self, context_id: u32, now_ms: u64, baseline: u64) -> bool {
        self.entries.retain(|e| e.context_id != context_id);
        if self.header_hold_broken || self.entries.len() >= MAX_WAITING {
            return false;
        }
        self.entries.push(Entry { context_id, since_ms: now_ms, wait: Wait::LoginBody { baseline } });
        true
    }

    /// True once this VM found the flag missing (login headers then go on to the app).
    pub fn header_hold_broken(&self) -> bool {
        self.header_hold_broken
    }

    /// A body callback came for `context_id`: Envoy hands the body over, nothing to watch.
    pub fn body_arrived(&mut self, context_id: u32) {
        self.entries.retain(|e| !(e.context_id == context_id && matches!(e.wait, Wait::LoginBody { .. })));
    }

    /// The request ended (or no longer waits for any reason).
    pub fn remove(&mut self, context_id: u32) {
        self.entries.retain(|e| e.context_id != context_id);
    }

    /// The tick period this table needs: [`TICK_PERIOD`] while something waits.
    pub fn tick_period_ms(&self) -> Option<u64> {
        (!self.entries.is_empty()).then_some(TICK_PERIOD.as_millis() as u64)
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// The contexts whose received byte count (`request.total_size`) the shell must read before
    /// calling [`Waiting::on_tick`].
    pub fn probes(&self) -> Vec<u32> {
        self.entries.iter().filter(|e| matches!(e.wait, Wait::LoginBody { .. })).map(|e| e.context_id).collect()
    }

    /// One tick. `received` is, per probed context, what Envoy has received of it (`None`
    /// when the host would not say). A held login whose count grew past its baseline without a
    /// body callback proves the flag missing: this VM stops holding login headers, warns once,
    /// and the held login goes on as without the flag (`ReadBody` that does not hold the
    /// headers: they go on, the body callbacks then run, the app's answer is replaced). One
    /// whose count cannot be read goes on the same way after [`UNREADABLE_GIVE_UP_MS`] (never
    /// left hanging); one that received no byte at all after [`QUIET_GIVE_UP_MS`] too.
    pub fn on_tick(&mut self, now_ms: u64, received: &[(u32, Option<u64>)]) -> TickPlan {
        let mut plan = TickPlan::default();
        let mut release = Vec::new();
        for entry in &self.entries {
            let Wait::LoginBody { baseline } = entry.wait;
            let Some((_, count)) = received.iter().find(|(id, _)| *id == entry.context_id) else { continue };
            let age = now_ms.saturating_sub(entry.since_ms);
            let held_bytes = count.is_some_and(|count| count > baseline);
            let go_on = held_bytes
                || match count {
                    Some(_) => age >= QUIET_GIVE_UP_MS,
                    None => age >= UNREADABLE_GIVE_UP_MS,
                };
            if go_on {
                if held_bytes && !self.header_hold_broken {
                    self.header_hold_broken = true;
                    plan.warn_flag_missing = true;
                }
                release.push(entry.context_id);
            }
        }
        for id in release {
            self.remove(id);
            plan.apply.push((id, Decision::ReadBody { header_edits: Vec::new(), hold_headers: false }));
        }
        plan.keep_ticking = !self.entries.is_empty();
        plan
    }
}

/// The VM's tick period (one per VM) from what each per-VM structure needs: the shortest, or
/// 0 (no tick) when none needs one.
pub fn vm_tick_ms(needs: &[Option<u64>]) -> u64 {
    needs.iter().flatten().copied().min().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn goes_on() -> Decision {
        Decision::ReadBody { header_edits: Vec::new(), hold_headers: false }
    }

    #[test]
    fn a_body_callback_ends_the_wait() {
        let mut w = Waiting::new();
        assert!(w.admit_login(7, 1_000, 300));
        assert_eq!(w.probes(), vec![7]);
        w.body_arrived(7);
        assert!(w.is_empty());
        assert_eq!(w.on_tick(2_000, &[]), TickPlan { keep_ticking: false, ..TickPlan::default() });
    }

    #[test]
    fn the_vm_ticks_as_often_as_its_most_hurried_table_needs() {
        let mut w = Waiting::new();
        assert_eq!(w.tick_period_ms(), None);
        assert_eq!(vm_tick_ms(&[w.tick_period_ms(), None]), 0);
        assert!(w.admit_login(1, 0, 0));
        assert_eq!(w.tick_period_ms(), Some(200));
        assert_eq!(vm_tick_ms(&[w.tick_period_ms(), Some(1)]), 1);
        assert_eq!(vm_tick_ms(&[w.tick_period_ms(), Some(1_000)]), 200);
    }

    #[test]
    fn a_slow_client_is_no_missing_flag() {
        let mut w = Waiting::new();
        assert!(w.admit_login(7, 0, 300));
        for t in [200, 1_000, 5_000, 9_999] {
            let plan = w.on_tick(t, &[(7, Some(300))]);
            assert_eq!(plan, TickPlan { keep_ticking: true, ..TickPlan::default() }, "at {t} ms");
        }
        assert!(!w.header_hold_broken());
        // Past QUIET_GIVE_UP_MS without a byte its headers go on, with no warning and nothing learnt.
        let plan = w.on_tick(10_000, &[(7, Some(300))]);
        assert_eq!(plan, TickPlan { warn_flag_missing: false, apply: vec![(7, goes_on())], keep_ticking: false });
        assert!(!w.header_hold_broken());
        assert!(w.admit_login(8, 10_000, 0), "later logins are held again");
    }

    #[test]
    fn held_bytes_without_a_callback_mean_the_flag_is_missing() {
        let mut w = Waiting::new();
        assert!(w.admit_login(7, 0, 300));
        assert!(w.admit_login(8, 0, 250));
        assert!(w.admit_login(9, 0, 250));
        let plan = w.on_tick(200, &[(7, Some(345)), (8, Some(251)), (9, Some(250))]);
        assert!(plan.warn_flag_missing);
        assert_eq!(plan.apply, vec![(7, goes_on()), (8, goes_on())]);
        assert!(plan.keep_ticking, "9 still waits");
        assert!(w.header_hold_broken());
        // Warned once: the next one goes on without a second warning, and no login is held again.
        let plan = w.on_tick(400, &[(9, Some(260))]);
        assert_eq!(plan, TickPlan { warn_flag_missing: false, apply: vec![(9, goes_on())], keep_ticking: false });
        assert!(!w.admit_login(10, 500, 0));
        assert!(w.is_empty());
    }

    #[test]
    fn an_unreadable_count_gives_up_after_a_second_without_blaming_the_flag() {
        let mut w = Waiting::new();
        assert!(w.admit_login(7, 1_000, 300));
        assert_eq!(w.on_tick(1_999, &[(7, None)]).apply, vec![]);
        let plan = w.on_tick(2_000, &[(7, None)]);
        assert_eq!(plan, TickPlan { warn_flag_missing: false, apply: vec![(7, goes_on())], keep_ticking: false });
        assert!(!w.header_hold_broken());
    }

    #[test]
    fn the_table_is_bounded_and_ended_requests_leave_it() {
        let mut w = Waiting::new();
        for id in 0..MAX_WAITING as u32 {
            assert!(w.admit_login(id, 0, 0));
        }
        assert!(!w.admit_login(99_999, 0, 0), "full: the login goes on as without the flag");
        assert_eq!(w.len(), MAX_WAITING);
        w.remove(3);
        assert!(w.admit_login(99_999, 0, 0));
        assert!(w.admit_login(99_999, 5, 0), "admitting twice keeps one entry");
        assert_eq!(w.len(), MAX_WAITING);
        // A probed context missing from `received` (it ended meanwhile) is left alone.
        let plan = w.on_tick(10_000, &[]);
        assert!(plan.apply.is_empty() && plan.keep_ticking);
    }
}
