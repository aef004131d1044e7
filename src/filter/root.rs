//! `AuthRoot`: parses the plugin configuration once per VM in `on_configure` and hands it to
//! each request's `AuthFilter`. It also runs the VM's login API refresh calls
//! (`login_refresh_path`): it dispatches them from its tick, so that their answers come to it
//! and not to a request that may be gone, and it carries out the core's decision for every
//! request waiting on one (docs/sessions.md, Upstream session). Its tick also watches logins whose
//! headers are held (`core::waiting`): where Envoy holds their body without handing it over
//! (no `allow_on_headers_stop_iteration`), it warns once and lets them go on.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::ContextType;

use super::apply::{now_ms, set_vm_tick, Carrier, Handoff, Step};
use super::host;
use super::http::{read_call_reply, AuthFilter};
use super::metrics::Metrics;
use super::shared::HostShared;
use crate::config::Config;
use crate::core::cache::TokenCache;
use crate::core::request::RequestView;
use crate::core::shared_calls;
use crate::core::decision::Decision;
use crate::core::upstream_session::{Settled, UpstreamCalls};
use crate::core::waiting::Waiting;
use crate::core::{self};
use crate::error::CallError;

/// The root context: one per VM (per Envoy worker).
pub struct AuthRoot {
    context_id: u32,
    config: Option<Rc<Config>>,
    metrics: Option<Rc<Metrics>>,
    /// Tokens verified under `config`'s keys; replaced whenever the configuration is.
    cache: Rc<RefCell<TokenCache>>,
    /// Login API refresh calls and their reusable answers; `None` until `on_configure` drew
    /// its random hash key.
    calls: Option<Rc<RefCell<UpstreamCalls>>>,
    /// What this root carried out for waiting requests, for their own contexts to pick up.
    handoff: Rc<RefCell<HashMap<u32, Handoff>>>,
    /// Logins whose headers are held, watched by the tick.
    waiting: Rc<RefCell<Waiting>>,
}

impl AuthRoot {
    pub fn new(context_id: u32) -> Self {
        AuthRoot {
            context_id,
            config: None,
            metrics: None,
            cache: Rc::default(),
            calls: None,
            handoff: Rc::default(),
            waiting: Rc::default(),
        }
    }

    /// Carries out the decisions for waiting requests (each in its own context), counts the
    /// call-level outcomes, makes the root effective again and sets the tick the store needs.
    fn carry_out_settled(&self, calls: &Rc<RefCell<UpstreamCalls>>, settled: Settled) {
        for outcome in settled.counts {
            if let Some(metrics) = &self.metrics {
                metrics.count(outcome);
            }
        }
        for (context_id, decision) in settled.decisions {
            let Some(step) = self.in_context_of(calls, context_id, |carrier| {
                let step = carrier.carry_out(decision);
                if matches!(step, Step::Forwarded { .. } | Step::Answered) {
                    step
                } else {
                    // The store only decides to forward or answer; anything else is a bug: deny.
                    carrier.carry_out(core::internal_error())
                }
            }) else {
                continue;
            };
            match step {
                Step::Forwarded { set_cookies } => {
                    self.hand_off(context_id, Handoff::Forwarded { set_cookies });
                    if let Err(status) = hostcalls::resume_http_request() {
                        log::error!("#{context_id} could not resume the request: {status:?}");
                    }
                }
                _ => self.hand_off(context_id, Handoff::Answered),
            }
        }
        if let Err(status) = hostcalls::set_effective_context(self.context_id) {
            log::error!("etls-auth: could not return to the root context: {status:?}");
        }
        self.set_tick(calls);
    }

    /// Runs `act` with a `Carrier` for another, paused request, in that request's context (the
    /// caller makes the root effective again when done). `None` when the request's stream is
    /// gone: it has no context any more, and nothing to answer.
    fn in_context_of<T>(
        &self,
        calls: &Rc<RefCell<UpstreamCalls>>,
        context_id: u32,
        act: impl FnOnce(&Carrier<'_>) -> T,
    ) -> Option<T> {
        host::set_effective_context(context_id).ok()?;
        let no_request = RequestView::default();
        let carrier = Carrier {
            context_id,
            config: self.config.as_deref(),
            metrics: self.metrics.as_deref(),
            calls,
            waiting: &self.waiting,
            request: &no_request,
        };
        Some(act(&carrier))
    }

    fn hand_off(&self, context_id: u32, handoff: Handoff) {
        if let Ok(mut map) = self.handoff.try_borrow_mut() {
            map.insert(context_id, handoff);
        }
    }

    fn set_tick(&self, calls: &Rc<RefCell<UpstreamCalls>>) {
        set_vm_tick(calls, &self.waiting);
    }

    /// The held-login part of the tick: reads, for each login the core asks about, how much
    /// Envoy has received of it (`request.total_size`, under that request's context), lets
    /// `core::waiting` decide, logs its one warning and carries out its decisions on those
    /// requests (each in its own context), resuming those that go on.
    fn tick_held_logins(&self, calls: &Rc<RefCell<UpstreamCalls>>) {
        let probes = self.waiting.try_borrow().map(|w| w.probes()).unwrap_or_default();
        if probes.is_empty() {
            return;
        }
        let received: Vec<(u32, Option<u64>)> = probes
            .into_iter()
            .filter_map(|id| {
                host::set_effective_context(id).ok()?;
                Some((id, host::property_u64(&["request", "total_size"])))
            })
            .collect();
        let Ok(plan) = self.waiting.try_borrow_mut().map(|mut w| w.on_tick(now_ms(), &received)) else { return };
        if plan.warn_flag_missing {
            log::warn!(
                "etls-auth: Envoy held a login body without handing it to the filter: \
                 allow_on_headers_stop_iteration is not set in this Wasm plugin's config. From now \
                 on this VM lets login request headers go on to the app (the filter still answers \
                 every login). Set allow_on_headers_stop_iteration: true."
            );
        }
        for (context_id, decision) in plan.apply {
            let decision = match decision {
                d @ Decision::ReadBody { hold_headers: false, .. } => d,
                // The table only ever lets held headers go on; anything else is a bug: deny.
                _ => core::internal_error(),
            };
            // The request's own context stays in ReadingBody: the body callbacks that follow
            // the resume read the body as usual.
            let step = self.in_context_of(calls, context_id, |carrier| carrier.carry_out(decision));
            if let Some(Step::ReadingBody { headers_held: false }) = step {
                if let Err(status) = host::resume_request() {
                    log::error!("#{context_id} could not resume the request: {status}");
                }
            }
        }
        let _ = host::set_effective_context(self.context_id);
    }
}

impl Context for AuthRoot {
    /// The answer to a login API refresh call this root dispatched.
    fn on_http_call_response(&mut self, token_id: u32, num_headers: usize, body_size: usize, _num_trailers: usize) {
        let (Some(cfg), Some(calls)) = (self.config.clone(), self.calls.clone()) else { return };
        let reply = if num_headers == 0 { Err(CallError::NoResponse) } else { Ok(read_call_reply(body_size)) };
        let settled = match calls.try_borrow_mut() {
            Ok(mut store) => store.on_answer(&cfg, &HostShared, token_id, reply.as_ref(), now_ms()),
            Err(_) => Settled::default(),
        };
        self.carry_out_settled(&calls, settled);
    }
}

impl RootContext for AuthRoot {
    /// Parses and validates the configuration. On error logs one line naming the key and
    /// returns `false`, so Envoy refuses the filter.
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let raw = hostcalls::get_buffer(proxy_wasm::types::BufferType::PluginConfiguration, 0, usize::MAX)
            .ok()
            .flatten()
            .unwrap_or_default();
        if self.metrics.is_none() {
            self.metrics = Some(Rc::new(Metrics::define()));
        }
        if self.calls.is_none() {
            let mut vm = [0u8; 4];
            if getrandom::fill(&mut vm).is_err() {
                log::error!("etls-auth: no random bytes for this VM's id: refusing to start");
                return false;
            }
            self.calls = Some(Rc::new(RefCell::new(UpstreamCalls::new(u32::from_le_bytes(vm)))));
        }
        match Config::parse(&raw, secret_from_env) {
            Ok(config) => {
                if config.login_refresh_path.is_some() {
                    // Every shared slot exists from now on, so that every later write is a CAS
                    // (slots that exist are left alone; without the key, none is created).
                    shared_calls::prepare_slots(&HostShared);
                }
                // A new configuration may bring new keys: forget every token verified before.
                self.cache = Rc::new(RefCell::new(TokenCache::default()));
                self.config = Some(Rc::new(config));
                true
            }
            Err(error) => {
                log::error!("etls-auth: invalid configuration: {error}");
                self.config = None;
                false
            }
        }
    }

    /// Dispatches queued login API refresh calls and enforces the waiting requests' deadlines.
    fn on_tick(&mut self) {
        let Some(calls) = self.calls.clone() else { return };
        self.tick_held_logins(&calls);
        let Some(cfg) = self.config.clone() else {
            self.set_tick(&calls);
            return;
        };
        let now = now_ms();
        let (queued, mut settled) = match calls.try_borrow_mut() {
            // The tick first: a lease it takes over queues a call to dispatch now.
            Ok(mut store) => {
                let settled = store.tick(&cfg, &HostShared, now);
                (store.take_queued(), settled)
            }
            Err(_) => return,
        };
        for (id, call) in queued {
            let headers: Vec<(&str, &str)> = call.headers.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
            let result = hostcalls::dispatch_http_call(&call.cluster, headers, call.body.as_deref(), Vec::new(), call.timeout)
                .map_err(|status| {
                    log::warn!("etls-auth: dispatch to cluster {} failed: {status:?}", call.cluster);
                    CallError::Dispatch(format!("{status:?}"))
                });
            #[cfg(feature = "test-trap")]
            if result.is_ok() {
                super::trap::after_dispatch();
            }
            if let Ok(mut store) = calls.try_borrow_mut() {
                let more = store.dispatched(&cfg, &HostShared, id, result, now);
                settled.decisions.extend(more.decisions);
                settled.counts.extend(more.counts);
            }
        }
        self.carry_out_settled(&calls, settled);
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        let calls = self.calls.clone().unwrap_or_else(|| Rc::new(RefCell::new(UpstreamCalls::new(0))));
        Some(Box::new(AuthFilter::new(
            context_id,
            self.config.clone(),
            self.metrics.clone(),
            Rc::clone(&self.cache),
            calls,
            Rc::clone(&self.waiting),
            Rc::clone(&self.handoff),
        )))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// Secrets are the raw bytes of the Wasm VM's environment variables.
fn secret_from_env(name: &str) -> Option<Vec<u8>> {
    std::env::var_os(name).map(|value| value.into_encoded_bytes())
}
