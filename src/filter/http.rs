//! `AuthFilter`: one per request. Gathers the headers into a `RequestView`, asks the core, and
//! carries out the `Decision` in one place, `apply`. Hostcalls go through
//! `proxy_wasm::hostcalls` so a failure is a `Status` to handle, never a trap.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::SystemTime;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, BufferType, MapType};

use super::apply::{now, Carrier, Handoff, Step};
use super::metrics::Metrics;
use crate::config::Config;
use crate::core::upstream_session::UpstreamCalls;
use crate::core::waiting::Waiting;
use crate::core::{self, cache::TokenCache, decision::*, login::BodyStep, request::RequestView};
use crate::error::CallError;

/// Where a request stands.
enum Stage {
    /// Headers not yet seen.
    Started,
    /// Buffering the login body; `headers_held` when its headers wait too (the app never sees it).
    ReadingBody { headers_held: bool },
    /// Paused on a dispatched call; its answer must carry this token.
    Calling { token: u32, kind: CallKind, sent_at: Option<SystemTime> },
    /// Paused on the VM's shared login API refresh call: the root context carries out the
    /// decision and leaves a `Handoff` for this context.
    Waiting,
    /// Sent on; these `Set-Cookie` values (at least one) go on the response.
    Forwarded { set_cookies: Vec<String> },
    /// Sent on with nothing to add to the response (a valid session, a public path).
    Passed,
    /// Answered locally.
    Answered,
}

/// The per-request context.
pub struct AuthFilter {
    context_id: u32,
    config: Option<Rc<Config>>,
    metrics: Option<Rc<Metrics>>,
    /// The VM's verified-token cache (from `AuthRoot`).
    cache: Rc<RefCell<TokenCache>>,
    /// The VM's login API refresh calls (from `AuthRoot`).
    calls: Rc<RefCell<UpstreamCalls>>,
    /// The VM's paused requests its tick watches (from `AuthRoot`).
    waiting: Rc<RefCell<Waiting>>,
    /// What the root context carried out for a waiting request (from `AuthRoot`).
    handoff: Rc<RefCell<HashMap<u32, Handoff>>>,
    /// The request as the core saw it, kept only while it waits (see `on_http_request_headers`).
    request: RequestView<'static>,
    stage: Stage,
}

impl AuthFilter {
    pub fn new(
        context_id: u32,
        config: Option<Rc<Config>>,
        metrics: Option<Rc<Metrics>>,
        cache: Rc<RefCell<TokenCache>>,
        calls: Rc<RefCell<UpstreamCalls>>,
        waiting: Rc<RefCell<Waiting>>,
        handoff: Rc<RefCell<HashMap<u32, Handoff>>>,
    ) -> Self {
        AuthFilter {
            context_id,
            config,
            metrics,
            cache,
            calls,
            waiting,
            handoff,
            request: RequestView::default(),
            stage: Stage::Started,
        }
    }

    /// Carries out a decision; returns what the current callback should answer.
    fn apply(&mut self, decision: Decision) -> Action {
        let carrier = Carrier {
            context_id: self.context_id,
            config: self.config.as_deref(),
            metrics: self.metrics.as_deref(),
            calls: &self.calls,
            waiting: &self.waiting,
            request: &self.request,
        };
        let (stage, action) = match carrier.carry_out(decision) {
            Step::Forwarded { set_cookies } => (forwarded(set_cookies), Action::Continue),
            Step::Answered => (Stage::Answered, Action::Pause),
            Step::Calling { token, kind, sent_at } => (Stage::Calling { token, kind, sent_at }, Action::Pause),
            // Held headers need `allow_on_headers_stop_iteration` (else Envoy turns this pause
            // into StopAllIteration and the tick lets them go, core::waiting); otherwise the
            // headers go on and the body is held.
            Step::ReadingBody { headers_held: true } => (Stage::ReadingBody { headers_held: true }, Action::Pause),
            Step::ReadingBody { headers_held: false } => (Stage::ReadingBody { headers_held: false }, Action::Continue),
            Step::Waiting => (Stage::Waiting, Action::Pause),
        };
        self.stage = stage;
        action
    }

    /// While waiting on the shared call: take what the root carried out for this request.
    fn pick_up_handoff(&mut self) {
        if !matches!(self.stage, Stage::Waiting) {
            return;
        }
        let handoff = self.handoff.try_borrow_mut().ok().and_then(|mut map| map.remove(&self.context_id));
        match handoff {
            Some(Handoff::Forwarded { set_cookies }) => self.stage = forwarded(set_cookies),
            Some(Handoff::Answered) => self.stage = Stage::Answered,
            None => {}
        }
    }

    /// A body (or trailer) callback came while the headers are held: the tick has nothing to
    /// watch (and must never let go a request that has moved on).
    fn body_arrived(&self) {
        if let Ok(mut waiting) = self.waiting.try_borrow_mut() {
            waiting.body_arrived(self.context_id);
        }
    }

    /// The login body is complete: fetch it and let the core decide.
    fn finish_body(&mut self, cfg: &Config, body_size: usize) -> Action {
        let body = hostcalls::get_buffer(BufferType::HttpRequestBody, 0, body_size).ok().flatten().unwrap_or_default();
        self.apply(core::login::on_body(cfg, &body))
    }
}

impl Context for AuthFilter {
    fn on_http_call_response(&mut self, token_id: u32, num_headers: usize, body_size: usize, _num_trailers: usize) {
        let Stage::Calling { token, kind, sent_at } = self.stage else { return };
        if token != token_id {
            return;
        }
        if let (CallKind::Login, Some(metrics), Some(sent_at)) = (kind, &self.metrics, sent_at) {
            let elapsed = hostcalls::get_current_time().ok().and_then(|t| t.duration_since(sent_at).ok());
            metrics.record_login_latency(elapsed.map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)));
        }
        let Some(cfg) = self.config.clone() else {
            self.apply(core::internal_error());
            return;
        };
        let reply = if num_headers == 0 {
            Err(CallError::NoResponse)
        } else {
            Ok(read_call_reply(body_size))
        };
        let decision = core::on_reply(&cfg, kind, &self.request, reply, now());
        if let Action::Continue = self.apply(decision) {
            if let Err(status) = hostcalls::resume_http_request() {
                log::error!("#{} could not resume the request: {status:?}", self.context_id);
            }
        }
    }

    fn on_done(&mut self) -> bool {
        // A request that stops waiting (its client left) no longer gets an answer; the call
        // goes on for the others.
        if matches!(self.stage, Stage::Waiting) {
            if let Ok(mut calls) = self.calls.try_borrow_mut() {
                calls.leave(self.context_id);
            }
        }
        if let Ok(mut map) = self.handoff.try_borrow_mut() {
            map.remove(&self.context_id);
        }
        if let Ok(mut waiting) = self.waiting.try_borrow_mut() {
            waiting.remove(self.context_id);
        }
        true
    }
}

impl HttpContext for AuthFilter {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        #[cfg(feature = "test-trap")]
        super::trap::on_request_headers();
        let Some(cfg) = self.config.clone() else {
            return self.apply(core::unconfigured());
        };
        let map = super::host::header_map(MapType::HttpRequestHeaders);
        let request = gather_request(&map, end_of_stream);
        // The cache is only ever borrowed here, one request at a time; if it somehow were
        // borrowed already, verify without it rather than trap.
        let decision = match self.cache.try_borrow_mut() {
            Ok(mut cache) => core::decide_cached(&cfg, &mut cache, &request, now()),
            Err(_) => core::decide(&cfg, &request, now()),
        };
        // A request that goes on or is answered now needs its view no more; one that waits
        // (a call, the shared call, its body) keeps a copy for what comes next.
        if !matches!(decision, Decision::Forward(_) | Decision::Respond(_)) {
            self.request = request.into_owned();
        }
        self.apply(decision)
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        self.pick_up_handoff();
        match self.stage {
            Stage::ReadingBody { headers_held } => {
                if headers_held {
                    // Envoy hands the body over: the flag is set, nothing for the tick to watch.
                    self.body_arrived();
                }
                let Some(cfg) = self.config.clone() else { return self.apply(core::unconfigured()) };
                match core::login::on_body_progress(&cfg, body_size, end_of_stream) {
                    BodyStep::Wait => Action::Pause,
                    BodyStep::Ready => self.finish_body(&cfg, body_size),
                    BodyStep::Answer(decision) => self.apply(decision),
                }
            }
            // Hold the body until the call decides: continuing here would send the request on.
            Stage::Calling { .. } | Stage::Waiting | Stage::Answered => Action::Pause,
            Stage::Started | Stage::Forwarded { .. } | Stage::Passed => Action::Continue,
        }
    }

    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> Action {
        self.pick_up_handoff();
        match self.stage {
            Stage::ReadingBody { headers_held } => {
                if headers_held {
                    self.body_arrived();
                }
                // Trailers end the body.
                let Some(cfg) = self.config.clone() else { return self.apply(core::unconfigured()) };
                let limit = cfg.max_login_body_bytes.saturating_add(1);
                self.finish_body(&cfg, limit)
            }
            Stage::Calling { .. } | Stage::Waiting | Stage::Answered => Action::Pause,
            Stage::Started | Stage::Forwarded { .. } | Stage::Passed => Action::Continue,
        }
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        self.pick_up_handoff();
        match &mut self.stage {
            Stage::Forwarded { set_cookies } => {
                for cookie in std::mem::take(set_cookies) {
                    if let Err(status) = hostcalls::add_map_value(MapType::HttpResponseHeaders, "set-cookie", &cookie) {
                        log::error!("#{} could not add Set-Cookie: {status:?}", self.context_id);
                    }
                }
                Action::Continue
            }
            // A login request whose headers went on to the app (`ReadBody` without holding
            // them): hold whatever answer comes back; the filter's own reply replaces it.
            Stage::ReadingBody { .. } | Stage::Calling { .. } => Action::Pause,
            // Envoy answered a waiting request itself (e.g. its stream timed out): pass it on.
            Stage::Started | Stage::Passed | Stage::Waiting | Stage::Answered => Action::Continue,
        }
    }

    fn on_http_response_body(&mut self, _body_size: usize, _end_of_stream: bool) -> Action {
        match self.stage {
            Stage::ReadingBody { .. } | Stage::Calling { .. } => Action::Pause,
            _ => Action::Continue,
        }
    }
}

/// The stage of a forwarded request: the response needs work only when there are cookies to add.
fn forwarded(set_cookies: Vec<String>) -> Stage {
    if set_cookies.is_empty() {
        Stage::Passed
    } else {
        Stage::Forwarded { set_cookies }
    }
}

/// The request as the core sees it, from one read of the whole header map.
fn gather_request(map: &[u8], end_of_stream: bool) -> RequestView<'_> {
    core::headers::request_view_of_map(map, end_of_stream)
}

/// The answer of a dispatched call (of the effective context), read without trapping.
pub(super) fn read_call_reply(body_size: usize) -> UpstreamReply {
    let map = super::host::header_map(MapType::HttpCallResponseHeaders);
    let headers: Vec<(String, Vec<u8>)> = core::headers::parse_header_map(&map)
        .unwrap_or_default()
        .into_iter()
        .map(|(name, value)| (name.to_owned(), value.to_vec()))
        .collect();
    let status = headers
        .iter()
        .find(|(name, _)| name == ":status")
        .and_then(|(_, v)| std::str::from_utf8(v).ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let body = hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, body_size.min(MAX_UPSTREAM_BODY_BYTES))
        .ok()
        .flatten()
        .unwrap_or_default();
    UpstreamReply { status, headers, body, body_size }
}
