//! The connection context (connection scope: the module as a network filter): the decision is
//! made once, at the connection's first bytes from downstream.
//!
//! Not at `on_new_connection`: Envoy runs it when the filter chain is created, before the TLS
//! handshake, so no certificate is known yet (Envoy source/extensions/common/wasm/context.cc,
//! `Context::onNewConnection`; docs/architecture.md). The first `on_downstream_data` comes after
//! the handshake, with the decrypted bytes. The module does not export `proxy_on_new_connection`
//! (proxy-wasm-cpp-host then answers Continue itself) nor the upstream callbacks.

use std::rc::Rc;

use proxy_wasm::traits::{Context, StreamContext};
use proxy_wasm::types::Action;

use super::apply::{on_connection_data, Connection, Counters, Shared};
use super::host::ConnectionHost;

pub struct Stream {
    pub shared: Option<Rc<Shared>>,
    pub counters: Rc<Counters>,
    pub state: Connection,
}

impl Context for Stream {}

impl StreamContext for Stream {
    fn on_downstream_data(&mut self, _data_size: usize, _end_of_stream: bool) -> Action {
        let host = ConnectionHost::default();
        match on_connection_data(&mut self.state, self.shared.as_deref(), &self.counters, &host, &host) {
            true => Action::Continue,
            // StopIteration: the next filter (the connection manager, tcp_proxy) gets nothing.
            false => Action::Pause,
        }
    }
}
