//! The thin proxy-wasm shell: gathers what the core needs, calls it, carries out its decision.
//! It makes no decision of its own.

mod apply;
mod host;
mod http;
mod metrics;
mod root;
mod shared;
#[cfg(feature = "test-trap")]
mod trap;

pub use root::AuthRoot;
