//! The root context: the configuration, the shared engine, the counters, the summary timer.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use loopback_guard_core::config::Scope;
use loopback_guard_core::engine::{Level, Notice};
use loopback_guard_core::host::Host;
use proxy_wasm::traits::{Context, HttpContext, RootContext, StreamContext};
use proxy_wasm::types::ContextType;

use super::apply::{configure, on_tick, Connection, Counters, Shared};
use super::connection::Stream;
use super::host::ProxyHost;
use super::http::Http;
use super::Writes;
use crate::abi;

pub struct Root {
    counters: Option<Rc<Counters>>,
    shared: Option<Rc<Shared>>,
    scope: Scope,
}

impl Default for Root {
    fn default() -> Self {
        Self { counters: None, shared: None, scope: Scope::Request }
    }
}

impl Context for Root {}

impl RootContext for Root {
    fn on_vm_start(&mut self, _vm_configuration_size: usize) -> bool {
        log::info!("loopback-guard {} starting", env!("CARGO_PKG_VERSION"));
        true
    }

    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let host = ProxyHost::default();
        self.counters.get_or_insert_with(|| Rc::new(Counters::define(&host)));
        let config = match abi::plugin_configuration() {
            Ok(config) => config.unwrap_or_default(),
            Err(e) => {
                let text = format!("loopback-guard: cannot read the plugin configuration: {e}");
                host.log(&Notice::new(Level::Error, text));
                return false;
            }
        };
        // Without an engine Envoy refuses the configuration: fail closed.
        let Some(engine) = configure(&config, &host, &host) else { return false };
        // Benchmark builds only (bench/build-full.sh): every request decided in full, so that
        // keep-alive traffic measures what a connection's first request costs.
        #[cfg(feature = "bench-full-decisions")]
        let engine = engine.without_connection_reuse();
        // The summary of held-back lines is written from the timer, so it comes even when the
        // requests stop.
        let tick = Duration::from_secs(engine.summary_period_seconds());
        if let Err(e) = abi::set_tick_period(tick) {
            host.log(&Notice::new(
                Level::Error,
                format!("loopback-guard: cannot set the log summary timer: {e}"),
            ));
        }
        self.scope = engine.policy().scope;
        self.shared = Some(Rc::new(Shared { engine: RefCell::new(engine) }));
        true
    }

    fn on_tick(&mut self) {
        if let Some(shared) = &self.shared {
            let host = ProxyHost::default();
            on_tick(shared, host.now_ms(), &host);
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        // Always a context (the SDK panics on None); without a configuration it denies.
        let counters = self.counters.clone().unwrap_or_default();
        Some(Box::new(Http { shared: self.shared.clone(), counters }))
    }

    fn create_stream_context(&self, _context_id: u32) -> Option<Box<dyn StreamContext>> {
        let counters = self.counters.clone().unwrap_or_default();
        Some(Box::new(Stream { shared: self.shared.clone(), counters, state: Connection::Undecided }))
    }

    /// The kind of context the SDK creates for each of this root's streams: asked at every
    /// context's creation (proxy-wasm-rust-sdk v0.2.5 src/dispatcher.rs, `on_create_context`),
    /// after `on_configure`, so the configuration's `scope` picks it. The filter Envoy runs the
    /// module as must match it (an HTTP filter for `request`, a network filter for
    /// `connection`): the SDK panics on a callback of the other kind, which kills the VM and so
    /// fails closed (docs/architecture.md).
    fn get_type(&self) -> Option<ContextType> {
        match self.scope {
            Scope::Connection => Some(ContextType::StreamContext),
            Scope::Request => Some(ContextType::HttpContext),
        }
    }
}
