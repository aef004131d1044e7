//! The host-call floor (bench/run.sh): on request headers, read the whole request header map once
//! (one host call, raw and unparsed, the way etls-auth reads it) and set two request headers
//! (`x-etls-user-id: 42`, `x-etls-role: admin`), nothing else. With the plugin configuration
//! `filter_state` it also makes the two `set_property` calls a valid session makes for Envoy's
//! filter state (`wasm.etls_user_id`, `wasm.etls_role`). What this costs over the empty filter is
//! what a session filter cannot avoid; what etls-auth costs over this is its own work.
//!
//! Probes (bench.py `BENCH_PROBES`): the configuration `filter_state probe=clock` or
//! `filter_state probe=metric` makes, on top, `PROBE_CALLS` clock reads
//! (`proxy_get_current_time_nanoseconds`) or counter increments (`proxy_increment_metric`) per
//! request, so that one such host call's price in Envoy's V8 stands out of the bench's noise.

use std::ptr::null_mut;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, LogLevel, MapType, MetricType};

/// Host calls a probe makes per request.
const PROBE_CALLS: usize = 100;

#[derive(Clone, Copy)]
enum Probe {
    None,
    Clock,
    Metric(u32),
}

#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_get_header_map_pairs(map_type: u32, return_map_data: *mut *mut u8, return_map_size: *mut usize) -> u32;
    fn proxy_set_property(path_data: *const u8, path_size: usize, value_data: *const u8, value_size: usize) -> u32;
}

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Warn);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(FloorRoot { filter_state: false, probe: Probe::None }) });
}}

struct FloorRoot {
    filter_state: bool,
    probe: Probe,
}

impl Context for FloorRoot {}

impl RootContext for FloorRoot {
    fn on_configure(&mut self, _size: usize) -> bool {
        let config = hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX).ok().flatten().unwrap_or_default();
        self.filter_state = config.starts_with(b"filter_state");
        self.probe = if config.ends_with(b"probe=clock") {
            Probe::Clock
        } else if config.ends_with(b"probe=metric") {
            hostcalls::define_metric(MetricType::Counter, "floor_probe").map_or(Probe::None, Probe::Metric)
        } else {
            Probe::None
        };
        true
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Floor { filter_state: self.filter_state, probe: self.probe }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Floor {
    filter_state: bool,
    probe: Probe,
}

impl Context for Floor {}

impl HttpContext for Floor {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let mut data: *mut u8 = null_mut();
        let mut size: usize = 0;
        // SAFETY: as in etls-auth's src/filter/host.rs: on Ok the host hands over `size` bytes it
        // allocated through this module's allocator; they are freed unread.
        unsafe {
            if proxy_get_header_map_pairs(MapType::HttpRequestHeaders as u32, &mut data, &mut size) == 0 && !data.is_null() {
                drop(Vec::from_raw_parts(data, size, size));
            }
        }
        let _ = hostcalls::set_map_value_bytes(MapType::HttpRequestHeaders, "x-etls-user-id", Some(b"42"));
        let _ = hostcalls::set_map_value_bytes(MapType::HttpRequestHeaders, "x-etls-role", Some(b"admin"));
        if self.filter_state {
            // SAFETY: live slices, only read by the host during the call.
            unsafe {
                let _ = proxy_set_property(b"etls_user_id".as_ptr(), 12, b"42".as_ptr(), 2);
                let _ = proxy_set_property(b"etls_role".as_ptr(), 9, b"admin".as_ptr(), 5);
            }
        }
        for _ in 0..PROBE_CALLS {
            match self.probe {
                Probe::None => break,
                Probe::Clock => {
                    std::hint::black_box(hostcalls::get_current_time().ok());
                }
                Probe::Metric(id) => {
                    let _ = hostcalls::increment_metric(id, 1);
                }
            }
        }
        Action::Continue
    }
}
