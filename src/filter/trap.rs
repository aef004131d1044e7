//! Test-only (cargo feature `test-trap`, never in a release build): a request carrying
//! `x-etls-test-trap` kills the Wasm VM with an `unreachable` trap, the way a bug would, so the
//! tests can show what Envoy's `failure_policy` does with a dead VM.

use proxy_wasm::hostcalls;
use proxy_wasm::types::MapType;

/// The marker request header.
pub const HEADER: &str = "x-etls-test-trap";

/// Traps when the request carries the marker header.
pub fn on_request_headers() {
    if let Ok(Some(_)) = hostcalls::get_map_value_bytes(MapType::HttpRequestHeaders, HEADER) {
        log::warn!("etls-auth test build: trapping on {HEADER}");
        core::arch::wasm32::unreachable();
    }
}
