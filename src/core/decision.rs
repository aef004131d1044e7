//! What the shell must do next. Built only in `core`, carried out only in `filter::http`.
//! No proxy_wasm here.

use std::rc::Rc;
use std::time::Duration;

use crate::core::model::Identity;
use crate::core::request::RequestView;

/// The identity a `Forward` publishes (defined in `core::model`, with the other plain data).
pub use crate::core::model::PublishedIdentity;

/// The core's answer to a request event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Send the request on to the app, after these header edits; add `set_cookies` to the response.
    Forward(Forward),
    /// Answer locally: a route's reply, a denial, or an error status.
    Respond(LocalReply),
    /// Pause the request and call a cluster; its answer goes to `core::on_reply` with `call.kind`.
    Call(OutboundCall),
    /// Read the login route's body: buffer it, then call `core::login::on_body`. With
    /// `hold_headers` the headers are held too (after these edits) until the filter answers, so
    /// the app never sees the request; this needs `allow_on_headers_stop_iteration` in the Wasm
    /// plugin config, and `core::waiting` notices when it is missing. Without `hold_headers`
    /// the headers go on (after these edits) while the body is held; whatever the app answers
    /// is held too and replaced by the filter's own reply.
    ReadBody { header_edits: Vec<HeaderEdit>, hold_headers: bool },
    /// A rotation that first asks the login API (`login_refresh_path`): hand it to the VM's
    /// shared `core::upstream_session::UpstreamCalls`, which answers it at once (a
    /// reused answer) or makes it wait on the one call for its session.
    Join(Box<Rotation>),
}

/// Which route a rotation belongs to; it decides the shape of the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// A protected request with an expired access token: forward rotated, or deny.
    Protected,
    /// `POST refresh_path`: 200 with new cookies, or 401.
    RefreshRoute,
}

/// A rotation that asks the login API first: everything needed to decide it later.
#[derive(Debug, Clone, PartialEq)]
pub struct Rotation {
    pub route: Route,
    pub request: RequestView<'static>,
    /// From the verified ETLS refresh token.
    pub identity: Identity,
    /// The session's `auth_time`, carried over to the tokens this rotation mints (resolved
    /// when the rotation began: see `core::lifetime::rotation_auth_time`).
    pub auth_time: u64,
    /// The value of the upstream `refreshToken` cookie.
    pub upstream_refresh: String,
    /// False when the request's body is still arriving and is not known to be small: holding
    /// it while the call is out would buffer it (413 past Envoy's limit), so it takes a reused
    /// answer if there is one and is otherwise rotated without the API (asked next time).
    pub can_wait: bool,
}

// `Identity` compares JSON values, which are `Eq`; `Decision` is `Eq`.
impl Eq for Rotation {}

/// A request header to set to these bytes (`Some`, any bytes: a rewritten `Cookie` header keeps
/// the client's non-UTF-8 bytes) or to remove (`None`).
///
/// Shared bytes: the identity headers' names come from the configuration and their values from
/// the token cache, so a valid session's edits copy nothing.
pub type HeaderEdit = (Rc<str>, Option<Rc<[u8]>>);

/// Why the core decided as it did: for logs and metrics (never carries a value).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Outcome {
    /// A protected request with a valid access token.
    #[default]
    SessionValid,
    /// A protected request whose tokens were rotated inline.
    RotatedInline,
    /// A protected request whose tokens were rotated by the refresh cluster.
    RotatedByCluster,
    /// A public path, passed on untouched (identity headers removed).
    Public,
    /// A CORS preflight, passed on unchecked.
    Preflight,
    /// Denied: neither ETLS cookie.
    DeniedNoSession,
    /// Denied: the access token is missing or invalid and there is no refresh token.
    DeniedNoRefresh,
    /// Denied: the refresh token is invalid or expired.
    DeniedRefreshInvalid,
    /// Denied: the refresh cluster gave no usable answer.
    DeniedRefreshCallFailed,
    /// Login route: success.
    LoginSucceeded,
    /// Login route: the login API refused the credentials (4xx).
    LoginRejected,
    /// Login route: the login API rate-limited (429).
    LoginRateLimited,
    /// Login route: the login API failed (5xx, bad body, timeout, no connection).
    LoginUpstreamFailed,
    /// Login route: the client's request was bad (400, 405, 413).
    LoginBadRequest,
    /// Refresh route: new tokens issued.
    Refreshed,
    /// Refresh route: no or invalid refresh token, or wrong method.
    RefreshRejected,
    /// Logout route.
    LoggedOut,
    /// A route answered 405.
    MethodNotAllowed,
    /// An internal error (no configuration, minting failed): denied.
    InternalError,
    /// Denied (or refresh route 401): the login API ended the session (401/403).
    DeniedSessionEnded,
    /// Denied: `login_refresh_path` is set and the request has no upstream `refreshToken` cookie.
    DeniedNoUpstreamSession,
    /// Login API refresh call answered with new tokens (counted once per call).
    UpstreamRefreshRenewed,
    /// Login API refresh call ended the session (counted once per call).
    UpstreamRefreshEnded,
    /// Login API refresh call failed: 5xx, 429, timeout, no connection, malformed 2xx, or the
    /// VM's store was full (counted once per call or per request that could not be tracked).
    UpstreamRefreshOutage,
    /// A rotation that made no call of its own: it waited on a call of this VM or reused this
    /// VM's answer.
    UpstreamRefreshCoalesced,
    /// A request to the login, refresh or logout route refused as cross-origin (403).
    CrossOriginRefused,
    /// A logout whose `login_logout_path` call got an answer from the login API other than 5xx
    /// (counted besides `LoggedOut`).
    LogoutUpstreamReached,
    /// A logout whose `login_logout_path` call failed: no answer, timeout, refused connection,
    /// dispatch refused, or a 5xx (Envoy answers a refused connection 503 and a timeout 504
    /// itself); the session may still be valid at the login API (counted besides `LoggedOut`).
    LogoutUpstreamFailed,
    /// A login API refresh call dispatched (counted once per call).
    UpstreamRefreshCalls,
    /// A rotation that made no call of its own: it waited on a call of another VM of the Envoy
    /// or reused its answer (shared data).
    UpstreamRefreshJoinedRemote,
    /// A VM took over a session's lease whose owner did not answer by its deadline (the owner
    /// died or its call hung): it makes the call itself.
    UpstreamRefreshLeaseTakenOver,
    /// A new call took a shared slot whose answer was still reusable (every slot of the session
    /// was in use): that other session's next rotation calls the API again.
    UpstreamRefreshSlotOverwritten,
    /// A call made without a shared lease: every slot of the session held another session's call
    /// in flight (or writes kept conflicting). Rotations on other VMs may call too.
    UpstreamRefreshUnshared,
    /// Denied (or refresh route 401): the session passed its absolute lifetime,
    /// `auth_time + max_session_s` (`core::lifetime`), whatever the tokens' `exp`.
    DeniedMaxSession,
}

impl Outcome {
    /// Every outcome, in declaration order (`outcome as usize` indexes it).
    pub const ALL: [Outcome; 34] = [
        Outcome::SessionValid,
        Outcome::RotatedInline,
        Outcome::RotatedByCluster,
        Outcome::Public,
        Outcome::Preflight,
        Outcome::DeniedNoSession,
        Outcome::DeniedNoRefresh,
        Outcome::DeniedRefreshInvalid,
        Outcome::DeniedRefreshCallFailed,
        Outcome::LoginSucceeded,
        Outcome::LoginRejected,
        Outcome::LoginRateLimited,
        Outcome::LoginUpstreamFailed,
        Outcome::LoginBadRequest,
        Outcome::Refreshed,
        Outcome::RefreshRejected,
        Outcome::LoggedOut,
        Outcome::MethodNotAllowed,
        Outcome::InternalError,
        Outcome::DeniedSessionEnded,
        Outcome::DeniedNoUpstreamSession,
        Outcome::UpstreamRefreshRenewed,
        Outcome::UpstreamRefreshEnded,
        Outcome::UpstreamRefreshOutage,
        Outcome::UpstreamRefreshCoalesced,
        Outcome::CrossOriginRefused,
        Outcome::LogoutUpstreamReached,
        Outcome::LogoutUpstreamFailed,
        Outcome::UpstreamRefreshCalls,
        Outcome::UpstreamRefreshJoinedRemote,
        Outcome::UpstreamRefreshLeaseTakenOver,
        Outcome::UpstreamRefreshSlotOverwritten,
        Outcome::UpstreamRefreshUnshared,
        Outcome::DeniedMaxSession,
    ];

    /// A stable snake_case name, used in logs and metric names.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::SessionValid => "session_valid",
            Outcome::RotatedInline => "rotated_inline",
            Outcome::RotatedByCluster => "rotated_by_cluster",
            Outcome::Public => "public",
            Outcome::Preflight => "preflight",
            Outcome::DeniedNoSession => "denied_no_session",
            Outcome::DeniedNoRefresh => "denied_no_refresh",
            Outcome::DeniedRefreshInvalid => "denied_refresh_invalid",
            Outcome::DeniedRefreshCallFailed => "denied_refresh_call_failed",
            Outcome::LoginSucceeded => "login_succeeded",
            Outcome::LoginRejected => "login_rejected",
            Outcome::LoginRateLimited => "login_rate_limited",
            Outcome::LoginUpstreamFailed => "login_upstream_failed",
            Outcome::LoginBadRequest => "login_bad_request",
            Outcome::Refreshed => "refreshed",
            Outcome::RefreshRejected => "refresh_rejected",
            Outcome::LoggedOut => "logged_out",
            Outcome::MethodNotAllowed => "method_not_allowed",
            Outcome::InternalError => "internal_error",
            Outcome::DeniedSessionEnded => "denied_session_ended",
            Outcome::DeniedNoUpstreamSession => "denied_no_upstream_session",
            Outcome::UpstreamRefreshRenewed => "upstream_refresh_renewed",
            Outcome::UpstreamRefreshEnded => "upstream_refresh_ended",
            Outcome::UpstreamRefreshOutage => "upstream_refresh_outage",
            Outcome::UpstreamRefreshCoalesced => "upstream_refresh_coalesced",
            Outcome::CrossOriginRefused => "cross_origin_refused",
            Outcome::LogoutUpstreamReached => "logout_upstream_reached",
            Outcome::LogoutUpstreamFailed => "logout_upstream_failed",
            Outcome::UpstreamRefreshCalls => "upstream_refresh_calls",
            Outcome::UpstreamRefreshJoinedRemote => "upstream_refresh_joined_remote",
            Outcome::UpstreamRefreshLeaseTakenOver => "upstream_refresh_lease_taken_over",
            Outcome::UpstreamRefreshSlotOverwritten => "upstream_refresh_slot_overwritten",
            Outcome::UpstreamRefreshUnshared => "upstream_refresh_unshared",
            Outcome::DeniedMaxSession => "denied_max_session",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Outcome;

    #[test]
    fn all_lists_every_outcome_at_its_own_index() {
        for (i, outcome) in Outcome::ALL.iter().enumerate() {
            assert_eq!(*outcome as usize, i, "{}", outcome.as_str());
        }
        let mut names: Vec<&str> = Outcome::ALL.iter().map(|o| o.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Outcome::ALL.len());
    }
}

/// How to forward a request.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Forward {
    pub outcome: Outcome,
    /// Request headers to set (`Some`) or remove (`None`), in order.
    pub header_edits: Vec<HeaderEdit>,
    /// `Set-Cookie` values to add to the app's response, each as its own header.
    pub set_cookies: Vec<String>,
    /// The verified identity to publish in Envoy's filter state (`wasm.etls_user_id`,
    /// `wasm.etls_role`); `None` when the request goes on without one (public path, preflight).
    pub identity: Option<PublishedIdentity>,
}

/// A local reply. Built only through [`LocalReply::json`] or [`LocalReply::empty`], which both
/// add `cache-control: no-store` (every reply the filter makes itself), so no
/// reply can leave without it; `headers` is private for that reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalReply {
    pub outcome: Outcome,
    pub status: u32,
    /// Headers, in order; `set-cookie` may repeat. Always includes `cache-control: no-store`.
    headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// One line for the shell to log at warn level (never a token, secret or cookie value).
    warning: Option<String>,
    /// One more outcome to count besides `outcome` (a logout's call to the login API).
    also_count: Option<Outcome>,
}

impl LocalReply {
    /// A reply without a body: only `cache-control: no-store` (add more with [`Self::with_header`]).
    pub fn empty(outcome: Outcome, status: u32) -> LocalReply {
        LocalReply {
            outcome,
            status,
            headers: vec![("cache-control".to_owned(), "no-store".to_owned())],
            body: Vec::new(),
            warning: None,
            also_count: None,
        }
    }

    /// A reply with a JSON body, `content-type: application/json` and `cache-control: no-store`.
    pub fn json(outcome: Outcome, status: u32, body: impl Into<Vec<u8>>) -> LocalReply {
        let mut reply = LocalReply::empty(outcome, status);
        reply.headers.insert(0, ("content-type".to_owned(), "application/json".to_owned()));
        reply.body = body.into();
        reply
    }

    /// The same reply with one more header.
    pub fn with_header(mut self, name: &str, value: impl Into<String>) -> LocalReply {
        self.headers.push((name.to_owned(), value.into()));
        self
    }

    /// The same reply with these `Set-Cookie` values, each its own header.
    pub fn with_cookies<S: AsRef<str>>(mut self, cookies: &[S]) -> LocalReply {
        self.headers.extend(cookies.iter().map(|c| ("set-cookie".to_owned(), c.as_ref().to_owned())));
        self
    }

    /// The same reply with a line for the shell to log at warn level.
    pub fn with_warning(mut self, line: impl Into<String>) -> LocalReply {
        self.warning = Some(line.into());
        self
    }

    /// The same reply, counting `outcome` too when it is carried out.
    pub fn with_count(mut self, outcome: Outcome) -> LocalReply {
        self.also_count = Some(outcome);
        self
    }

    /// The outcome to count besides `outcome`, if any.
    pub fn also_count(&self) -> Option<Outcome> {
        self.also_count
    }

    /// The headers, in order.
    pub fn headers(&self) -> &[(String, String)] {
        &self.headers
    }

    /// The line to log at warn level, if any.
    pub fn warning(&self) -> Option<&str> {
        self.warning.as_deref()
    }
}

/// Which dispatched call a reply belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallKind {
    /// `POST login_upstream_path` to the login API.
    Login,
    /// `POST refresh_path` to the refresh cluster.
    Refresh,
    /// `POST login_refresh_path` to the login API (made by the VM's shared store, not a request).
    LoginRefresh,
    /// `POST login_logout_path` to the login API; whatever it answers, the logout reply follows.
    Logout,
}

/// A call to dispatch to an Envoy cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundCall {
    pub kind: CallKind,
    pub cluster: String,
    /// Pseudo-headers (`:method`, `:path`, `:authority`) and headers.
    pub headers: Vec<(String, String)>,
    pub body: Option<Vec<u8>>,
    pub timeout: Duration,
}

/// The answer to a dispatched call, as the shell read it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UpstreamReply {
    /// `:status`; 0 when missing or not a number.
    pub status: u32,
    /// Response headers (names lowercase); values may be any bytes.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The body, read up to [`MAX_UPSTREAM_BODY_BYTES`].
    pub body: Vec<u8>,
    /// The full body size Envoy reported (may exceed `body.len()`).
    pub body_size: usize,
}

/// Most body the shell reads from a dispatched call's answer; a longer one is a bad body.
pub const MAX_UPSTREAM_BODY_BYTES: usize = 64 * 1024;

impl UpstreamReply {
    /// Every value of header `name`, as UTF-8 (values that are not are skipped).
    pub fn header_values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .filter_map(|(_, v)| std::str::from_utf8(v).ok())
    }
}
