//! `AuthFilter`: one per request. Gathers the headers into a `RequestView`, asks the core, and
//! carries out the `Decision` in one place, `apply`. Hostcalls go through
//! `proxy_wasm::hostcalls` so a failure is a `Status` to handle, never a trap.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, BufferType, MapType};

use super::metrics::Metrics;
use crate::config::Config;
use crate::core::{self, cache::TokenCache, decision::*, login::BodyStep, request::RequestView};
use crate::error::CallError;

/// Where a request stands.
enum Stage {
    /// Headers not yet seen.
    Started,
    /// Buffering the login body.
    ReadingBody,
    /// Paused on a dispatched call; its answer must carry this token.
    Calling { token: u32, kind: CallKind, sent_at: Option<SystemTime> },
    /// Sent on; these `Set-Cookie` values go on the response.
    Forwarded { set_cookies: Vec<String> },
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
    request: RequestView,
    stage: Stage,
}

impl AuthFilter {
    pub fn new(
        context_id: u32,
        config: Option<Rc<Config>>,
        metrics: Option<Rc<Metrics>>,
        cache: Rc<RefCell<TokenCache>>,
    ) -> Self {
        AuthFilter { context_id, config, metrics, cache, request: RequestView::default(), stage: Stage::Started }
    }

    fn count(&self, outcome: Outcome) {
        if let Some(metrics) = &self.metrics {
            metrics.count(outcome);
        }
    }

    /// Carries out a decision; returns what the current callback should answer.
    fn apply(&mut self, decision: Decision) -> Action {
        match decision {
            Decision::Forward(forward) => {
                if !self.edit_request_headers(&forward.header_edits) {
                    return self.apply(core::internal_error());
                }
                if let Some(identity) = &forward.identity {
                    if !self.publish_identity(identity) {
                        return self.apply(core::internal_error());
                    }
                }
                log::debug!("#{} {}", self.context_id, forward.outcome.as_str());
                self.count(forward.outcome);
                self.stage = Stage::Forwarded { set_cookies: forward.set_cookies };
                Action::Continue
            }
            Decision::Respond(reply) => {
                log::debug!("#{} {} ({})", self.context_id, reply.outcome.as_str(), reply.status);
                if let Some(line) = reply.warning() {
                    log::warn!("#{} {line}", self.context_id);
                }
                self.count(reply.outcome);
                let headers: Vec<(&str, &str)> = reply.headers().iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
                if let Err(status) = hostcalls::send_http_response(reply.status, headers, Some(&reply.body)) {
                    log::error!("#{} could not send the local reply: {status:?}", self.context_id);
                }
                self.stage = Stage::Answered;
                Action::Pause
            }
            Decision::Call(call) => {
                let headers: Vec<(&str, &str)> = call.headers.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
                match hostcalls::dispatch_http_call(&call.cluster, headers, call.body.as_deref(), Vec::new(), call.timeout) {
                    Ok(token) => {
                        let sent_at = hostcalls::get_current_time().ok();
                        self.stage = Stage::Calling { token, kind: call.kind, sent_at };
                        Action::Pause
                    }
                    Err(status) => {
                        log::warn!("#{} dispatch to cluster {} failed: {status:?}", self.context_id, call.cluster);
                        let failure = Err(CallError::Dispatch(format!("{status:?}")));
                        let decision = match &self.config {
                            Some(cfg) => core::on_reply(cfg, call.kind, &self.request, failure, now()),
                            None => core::internal_error(),
                        };
                        self.apply(decision)
                    }
                }
            }
            Decision::ReadBody { header_edits } => {
                if !self.edit_request_headers(&header_edits) {
                    return self.apply(core::internal_error());
                }
                self.stage = Stage::ReadingBody;
                // Pausing here would stop the body callbacks too (Proxy-Wasm turns a header
                // pause into StopAllIteration), so the headers go on and the body is held.
                Action::Continue
            }
        }
    }

    /// Sets (`Some`) or removes (`None`) request headers; false if the host refused one, in
    /// which case the request must be denied (the app could otherwise see spoofed identity).
    fn edit_request_headers(&self, edits: &[(String, Option<String>)]) -> bool {
        let refused = edits.iter().any(|(name, value)| {
            hostcalls::set_map_value_bytes(MapType::HttpRequestHeaders, name, value.as_deref().map(str::as_bytes)).is_err()
        });
        if refused {
            log::warn!("#{} could not edit request headers: denied", self.context_id);
        }
        !refused
    }

    /// Puts the verified identity in Envoy's filter state (`wasm.etls_user_id`, `wasm.etls_role`)
    /// for access logs, RBAC and later filters; false if the host refused, in which case the
    /// request must be denied (a later RBAC rule or log would otherwise see no identity, or half).
    fn publish_identity(&self, identity: &PublishedIdentity) -> bool {
        let mut result = super::host::set_property(super::host::USER_ID_PROPERTY, identity.user_id.as_bytes());
        if let (Ok(()), Some(role)) = (result, &identity.role) {
            result = super::host::set_property(super::host::ROLE_PROPERTY, role.as_bytes());
        }
        if let Err(status) = result {
            log::warn!("#{} could not set the identity filter state (status {status}): denied", self.context_id);
        }
        result.is_ok()
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
}

impl HttpContext for AuthFilter {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        #[cfg(feature = "test-trap")]
        super::trap::on_request_headers();
        let Some(cfg) = self.config.clone() else {
            return self.apply(core::unconfigured());
        };
        self.request = gather_request(end_of_stream);
        // The cache is only ever borrowed here, one request at a time; if it somehow were
        // borrowed already, verify without it rather than trap.
        let decision = match self.cache.try_borrow_mut() {
            Ok(mut cache) => core::decide_cached(&cfg, &mut cache, &self.request, now()),
            Err(_) => core::decide(&cfg, &self.request, now()),
        };
        self.apply(decision)
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        match self.stage {
            Stage::ReadingBody => {
                let Some(cfg) = self.config.clone() else { return self.apply(core::unconfigured()) };
                match core::login::on_body_progress(&cfg, body_size, end_of_stream) {
                    BodyStep::Wait => Action::Pause,
                    BodyStep::Ready => self.finish_body(&cfg, body_size),
                    BodyStep::Answer(decision) => self.apply(decision),
                }
            }
            // Hold the body until the call decides: continuing here would send the request on.
            Stage::Calling { .. } | Stage::Answered => Action::Pause,
            Stage::Started | Stage::Forwarded { .. } => Action::Continue,
        }
    }

    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> Action {
        match self.stage {
            Stage::ReadingBody => {
                // Trailers end the body.
                let Some(cfg) = self.config.clone() else { return self.apply(core::unconfigured()) };
                let limit = cfg.max_login_body_bytes.saturating_add(1);
                self.finish_body(&cfg, limit)
            }
            Stage::Calling { .. } | Stage::Answered => Action::Pause,
            Stage::Started | Stage::Forwarded { .. } => Action::Continue,
        }
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        match &mut self.stage {
            Stage::Forwarded { set_cookies } => {
                for cookie in std::mem::take(set_cookies) {
                    if let Err(status) = hostcalls::add_map_value(MapType::HttpResponseHeaders, "set-cookie", &cookie) {
                        log::error!("#{} could not add Set-Cookie: {status:?}", self.context_id);
                    }
                }
                Action::Continue
            }
            // The login request's headers went on to the app (see `ReadBody`): hold whatever
            // answer comes back; the filter's own reply replaces it.
            Stage::ReadingBody | Stage::Calling { .. } => Action::Pause,
            Stage::Started | Stage::Answered => Action::Continue,
        }
    }

    fn on_http_response_body(&mut self, _body_size: usize, _end_of_stream: bool) -> Action {
        match self.stage {
            Stage::ReadingBody | Stage::Calling { .. } => Action::Pause,
            _ => Action::Continue,
        }
    }
}

/// Unix seconds now; 0 if the host cannot tell (every token then fails its time checks).
fn now() -> u64 {
    hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d: Duration| d.as_secs())
}

/// The request as the core sees it, from one read of the whole header map.
fn gather_request(end_of_stream: bool) -> RequestView {
    let map = super::host::header_map(MapType::HttpRequestHeaders);
    let pairs = core::headers::parse_header_map(&map).unwrap_or_default();
    core::headers::request_view(pairs, end_of_stream)
}

fn read_call_reply(body_size: usize) -> UpstreamReply {
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
