//! The HTTP context: the decision is made on the request headers.

use std::rc::Rc;

use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::Action;

use super::apply::{on_request, Counters, Shared};
use super::host::ProxyHost;

pub struct Http {
    pub shared: Option<Rc<Shared>>,
    pub counters: Rc<Counters>,
}

impl Context for Http {}

impl HttpContext for Http {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let host = ProxyHost { end_of_stream };
        match on_request(self.shared.as_deref(), &self.counters, &host, &host) {
            true => Action::Continue,
            false => Action::Pause,
        }
    }
}
