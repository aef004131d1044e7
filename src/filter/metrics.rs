//! Metrics an operator can graph: one counter per core `Outcome` (logins by outcome, sessions
//! verified, rotations, denials by reason, refresh-call failures) and a histogram of the login
//! API's latency. Defined once per VM; Envoy shows them as `wasmcustom.etls_auth.<name>`.

use proxy_wasm::hostcalls;
use proxy_wasm::types::MetricType;

use crate::core::decision::Outcome;

/// Metric ids of one VM. A metric the host refused to define is skipped, never fatal.
pub struct Metrics {
    outcomes: [Option<u32>; Outcome::ALL.len()],
    login_latency_ms: Option<u32>,
}

impl Metrics {
    /// Defines every metric.
    pub fn define() -> Metrics {
        let counter = |name: &str| hostcalls::define_metric(MetricType::Counter, &format!("etls_auth.{name}")).ok();
        Metrics {
            outcomes: Outcome::ALL.map(|outcome| counter(outcome.as_str())),
            login_latency_ms: hostcalls::define_metric(MetricType::Histogram, "etls_auth.login_upstream_ms").ok(),
        }
    }

    /// Counts one request ending in `outcome`.
    pub fn count(&self, outcome: Outcome) {
        if let Some(Some(id)) = self.outcomes.get(outcome as usize) {
            let _ = hostcalls::increment_metric(*id, 1);
        }
    }

    /// Records how long the login API took to answer (or fail), in milliseconds.
    pub fn record_login_latency(&self, millis: u64) {
        if let Some(id) = self.login_latency_ms {
            let _ = hostcalls::record_metric(id, millis);
        }
    }
}
