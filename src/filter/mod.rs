//! The only code that talks to proxy-wasm: it reads host facts for the core, and applies, counts
//! and logs the core's decisions.
//!
//! The SDK's convenience methods on `Context` unwrap host-call results (a panic kills the VM), so
//! this module calls `proxy_wasm::hostcalls` directly and turns every failure into a value.

mod host;
mod http;
mod metrics;
pub mod root;
