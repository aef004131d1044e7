//! etls-auth: a cookie-session filter for Envoy and Istio (proxy-wasm, wasm32-wasip1).
//! `core` decides, `filter` (built for wasm only) carries out. See docs/architecture.md.

pub mod config;
pub mod core;
pub mod error;

#[cfg(target_arch = "wasm32")]
mod filter;

#[cfg(target_arch = "wasm32")]
proxy_wasm::main! {{
    proxy_wasm::set_log_level(proxy_wasm::types::LogLevel::Info);
    proxy_wasm::set_root_context(|context_id| -> Box<dyn proxy_wasm::traits::RootContext> {
        Box::new(filter::AuthRoot::new(context_id))
    });
}}
