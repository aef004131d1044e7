//! `AuthRoot`: parses the plugin configuration once per VM in `on_configure` and hands it to
//! each request's `AuthFilter`.

use std::cell::RefCell;
use std::rc::Rc;

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::ContextType;

use super::http::AuthFilter;
use super::metrics::Metrics;
use crate::config::Config;
use crate::core::cache::TokenCache;

/// The root context: one per VM (per Envoy worker).
#[derive(Default)]
pub struct AuthRoot {
    config: Option<Rc<Config>>,
    metrics: Option<Rc<Metrics>>,
    /// Tokens verified under `config`'s keys; replaced whenever the configuration is.
    cache: Rc<RefCell<TokenCache>>,
}

impl Context for AuthRoot {}

impl RootContext for AuthRoot {
    /// Parses and validates the configuration. On error logs one line naming the key and
    /// returns `false`, so Envoy refuses the filter.
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let raw = proxy_wasm::hostcalls::get_buffer(proxy_wasm::types::BufferType::PluginConfiguration, 0, usize::MAX)
            .ok()
            .flatten()
            .unwrap_or_default();
        if self.metrics.is_none() {
            self.metrics = Some(Rc::new(Metrics::define()));
        }
        match Config::parse(&raw, secret_from_env) {
            Ok(config) => {
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

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(AuthFilter::new(context_id, self.config.clone(), self.metrics.clone(), Rc::clone(&self.cache))))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// Secrets are the raw bytes of the Wasm VM's environment variables.
fn secret_from_env(name: &str) -> Option<Vec<u8>> {
    std::env::var_os(name).map(|value| value.into_encoded_bytes())
}
