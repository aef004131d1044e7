//! The one place a core `Decision` is carried out: for the request whose callback is running
//! (`AuthFilter`), or, from the root context, for another paused request whose context the root
//! made effective first (`AuthRoot`, answers of the shared login API refresh call). Hostcalls go
//! through `proxy_wasm::hostcalls` so a failure is a `Status` to handle, never a trap.

use std::cell::RefCell;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use proxy_wasm::hostcalls;
use proxy_wasm::types::MapType;

use super::metrics::Metrics;
use crate::config::Config;
use crate::core::decision::{CallKind, Decision, HeaderEdit, Outcome, PublishedIdentity};
use crate::core::request::RequestView;
use crate::core::upstream::RefreshAnswer;
use crate::core::upstream_session::{self, Joined, UpstreamCalls, DISPATCH_TICK_MS};
use crate::core::waiting::{self, Waiting};
use crate::core::{self};
use crate::error::CallError;

/// Where a request stands after a decision was carried out.
pub enum Step {
    /// Sent on (the current callback answers `Continue`, or the root resumed it); these
    /// `Set-Cookie` values go on the response.
    Forwarded { set_cookies: Vec<String> },
    /// Answered locally.
    Answered,
    /// Paused on a call this request dispatched; its answer must carry `token`.
    Calling { token: u32, kind: CallKind, sent_at: Option<SystemTime> },
    /// The login body is being read; `headers_held` when the headers wait too (the app never
    /// sees the request), else they went on and the app's answer is held and replaced.
    ReadingBody { headers_held: bool },
    /// Paused on the VM's shared login API refresh call; the root carries out its decision.
    Waiting,
}

/// What a request hands over when the root context carried out its decision: the request's
/// own context picks it up in its next callback (the SDK owns that context, so this per-VM map
/// is how the root tells it).
pub enum Handoff {
    Forwarded { set_cookies: Vec<String> },
    Answered,
}

/// Everything carrying out needs, for request `context_id` (the effective context).
pub struct Carrier<'a> {
    pub context_id: u32,
    pub config: Option<&'a Config>,
    pub metrics: Option<&'a Metrics>,
    pub calls: &'a RefCell<UpstreamCalls>,
    /// The VM's paused requests that its tick watches (held login headers).
    pub waiting: &'a RefCell<Waiting>,
    /// The request as the core saw it (for a failed dispatch's decision).
    pub request: &'a RequestView<'static>,
}

impl Carrier<'_> {
    pub fn count(&self, outcome: Outcome) {
        if let Some(metrics) = self.metrics {
            metrics.count(outcome);
        }
    }

    /// Carries out `decision` for the effective context.
    pub fn carry_out(&self, decision: Decision) -> Step {
        let id = self.context_id;
        match decision {
            Decision::Forward(forward) => {
                if !edit_request_headers(id, &forward.header_edits) {
                    return self.carry_out(core::internal_error());
                }
                if let Some(identity) = &forward.identity {
                    if !publish_identity(id, identity) {
                        return self.carry_out(core::internal_error());
                    }
                }
                log::debug!("#{id} {}", forward.outcome.as_str());
                self.count(forward.outcome);
                Step::Forwarded { set_cookies: forward.set_cookies }
            }
            Decision::Respond(reply) => {
                log::debug!("#{id} {} ({})", reply.outcome.as_str(), reply.status);
                if let Some(line) = reply.warning() {
                    log::warn!("#{id} {line}");
                }
                self.count(reply.outcome);
                if let Some(also) = reply.also_count() {
                    self.count(also);
                }
                let headers: Vec<(&str, &str)> = reply.headers().iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
                if let Err(status) = hostcalls::send_http_response(reply.status, headers, Some(&reply.body)) {
                    log::error!("#{id} could not send the local reply: {status:?}");
                }
                Step::Answered
            }
            Decision::Call(call) => {
                let headers: Vec<(&str, &str)> = call.headers.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
                match hostcalls::dispatch_http_call(&call.cluster, headers, call.body.as_deref(), Vec::new(), call.timeout) {
                    Ok(token) => Step::Calling { token, kind: call.kind, sent_at: hostcalls::get_current_time().ok() },
                    Err(status) => {
                        log::warn!("#{id} dispatch to cluster {} failed: {status:?}", call.cluster);
                        let failure = Err(CallError::Dispatch(format!("{status:?}")));
                        let decision = match self.config {
                            Some(cfg) => core::on_reply(cfg, call.kind, self.request, failure, now()),
                            None => core::internal_error(),
                        };
                        self.carry_out(decision)
                    }
                }
            }
            Decision::ReadBody { header_edits, hold_headers } => {
                if !edit_request_headers(id, &header_edits) {
                    return self.carry_out(core::internal_error());
                }
                let headers_held = hold_headers && self.admit_header_hold();
                if headers_held {
                    // With `allow_on_headers_stop_iteration` the body callbacks still run; the
                    // tick notices when they do not (core::waiting).
                    set_vm_tick(self.calls, self.waiting);
                }
                Step::ReadingBody { headers_held }
            }
            Decision::Join(rotation) => {
                let Some(cfg) = self.config else { return self.carry_out(core::unconfigured()) };
                // Only ever borrowed for the length of one core call; if it somehow were
                // borrowed already, rotate as in an outage rather than trap.
                let joined = match self.calls.try_borrow_mut() {
                    Ok(mut calls) => calls.join(cfg, &super::shared::HostShared, id, *rotation, now_ms()),
                    Err(_) => Joined::Now {
                        decision: upstream_session::settle(cfg, &rotation, &RefreshAnswer::Outage, now()),
                        counts: vec![Outcome::UpstreamRefreshOutage],
                    },
                };
                match joined {
                    Joined::Now { decision, counts } => {
                        counts.into_iter().for_each(|c| self.count(c));
                        self.carry_out(decision)
                    }
                    Joined::Wait { dispatch, counts } => {
                        counts.into_iter().for_each(|c| self.count(c));
                        if dispatch {
                            // Calls are dispatched by the root context, so that the answer
                            // reaches it even when this request is gone; the root's tick
                            // period is VM-wide, and a short one runs its `on_tick` at once.
                            if let Err(status) = hostcalls::set_tick_period(Duration::from_millis(DISPATCH_TICK_MS)) {
                                log::error!("#{id} could not schedule the login API refresh call: {status:?}");
                            }
                        }
                        Step::Waiting
                    }
                }
            }
        }
    }
}

impl Carrier<'_> {
    /// Asks the VM's table whether this login's headers may be held, with what Envoy has
    /// received of the request so far (`request.total_size`, after the header edits). A host
    /// that will not say cannot be watched: the headers then go on (the login is still answered).
    fn admit_header_hold(&self) -> bool {
        let Some(baseline) = super::host::property_u64(&["request", "total_size"]) else { return false };
        match self.waiting.try_borrow_mut() {
            Ok(mut table) => table.admit_login(self.context_id, now_ms(), baseline),
            Err(_) => false,
        }
    }
}

/// Sets the VM's one tick period to what its per-VM structures need (0 stops it).
pub fn set_vm_tick(calls: &RefCell<UpstreamCalls>, table: &RefCell<Waiting>) {
    let needs = [calls.try_borrow().ok().and_then(|c| c.tick_period_ms()), table.try_borrow().ok().and_then(|w| w.tick_period_ms())];
    if let Err(status) = super::host::set_tick_period(Duration::from_millis(waiting::vm_tick_ms(&needs))) {
        log::error!("etls-auth: could not set the tick period: {status}");
    }
}

/// Sets (`Some`) or removes (`None`) request headers of the effective context; false if the
/// host refused one, in which case the request must be denied (the app could otherwise see
/// spoofed identity).
fn edit_request_headers(context_id: u32, edits: &[HeaderEdit]) -> bool {
    let refused = edits.iter().any(|(name, value)| {
        hostcalls::set_map_value_bytes(MapType::HttpRequestHeaders, name, value.as_deref()).is_err()
    });
    if refused {
        log::warn!("#{context_id} could not edit request headers: denied");
    }
    !refused
}

/// Puts the verified identity in Envoy's filter state (`wasm.etls_user_id`, `wasm.etls_role`)
/// for access logs, RBAC and later filters; false if the host refused, in which case the
/// request must be denied (a later RBAC rule or log would otherwise see no identity, or half).
fn publish_identity(context_id: u32, identity: &PublishedIdentity) -> bool {
    let mut result = super::host::set_property(super::host::USER_ID_PROPERTY, identity.user_id.as_bytes());
    if let (Ok(()), Some(role)) = (result, &identity.role) {
        result = super::host::set_property(super::host::ROLE_PROPERTY, role.as_bytes());
    }
    if let Err(status) = result {
        log::warn!("#{context_id} could not set the identity filter state (status {status}): denied");
    }
    result.is_ok()
}

/// Unix seconds now; 0 if the host cannot tell (every token then fails its time checks).
pub fn now() -> u64 {
    now_ms() / 1000
}

/// Unix milliseconds now; 0 if the host cannot tell.
pub fn now_ms() -> u64 {
    hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
