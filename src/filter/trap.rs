//! Test-only (cargo feature `test-trap`, never in a release build): a request carrying
//! `x-etls-test-trap` kills the Wasm VM with an `unreachable` trap, the way a bug would, so the
//! tests can show what Envoy's `failure_policy` does with a dead VM. With the value `after-call`
//! the request goes on, and the VM traps right after its root dispatched the next login API
//! refresh call: a VM that dies holding a session's shared lease, its call in flight
//! (tests/e2e/test_upstream_workers.py).

use std::cell::Cell;

use proxy_wasm::hostcalls;
use proxy_wasm::types::MapType;

/// The marker request header.
pub const HEADER: &str = "x-etls-test-trap";

thread_local! {
    static AFTER_CALL: Cell<bool> = const { Cell::new(false) };
}

/// Traps when the request carries the marker header (or arms the trap after the next call).
pub fn on_request_headers() {
    if let Ok(Some(value)) = hostcalls::get_map_value_bytes(MapType::HttpRequestHeaders, HEADER) {
        if value == b"after-call" {
            log::warn!("etls-auth test build: trapping after the next login API refresh call");
            AFTER_CALL.with(|armed| armed.set(true));
            return;
        }
        log::warn!("etls-auth test build: trapping on {HEADER}");
        core::arch::wasm32::unreachable();
    }
}

/// Traps if a request armed it: called by the root right after it dispatched a call.
pub fn after_dispatch() {
    if AFTER_CALL.with(Cell::get) {
        log::warn!("etls-auth test build: trapping with a login API refresh call in flight");
        core::arch::wasm32::unreachable();
    }
}
