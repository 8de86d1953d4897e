//! [`Host`] and [`Writes`] over the proxy, through `crate::abi`, which returns every status.

use loopback_guard_core::engine::{Level, Notice, Reply};
use loopback_guard_core::host::{Host, HostError};

use super::Writes;
use crate::abi;

/// The current request's facts, as Envoy answers them.
#[derive(Default)]
pub struct ProxyHost {
    /// Whether the request headers ended the stream (`on_http_request_headers`).
    pub end_of_stream: bool,
}

impl Host for ProxyHost {
    fn property(&self, path: &[&str]) -> Result<Option<Vec<u8>>, HostError> {
        abi::property(path)
    }

    fn request_header(&self, name: &str) -> Result<Option<String>, HostError> {
        // Header bytes are the client's: not UTF-8 is no failed host call.
        let value = abi::request_header(name)?;
        Ok(value.map(|bytes| match String::from_utf8(bytes) {
            Ok(text) => text,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        }))
    }

    /// One host call for all of them, where each header read would be one.
    fn request_headers(&self, names: &[&str]) -> Vec<Option<String>> {
        let map = abi::request_header_map().ok().flatten();
        map.and_then(|map| abi::pick_headers(&map, names)).unwrap_or_else(|| vec![None; names.len()])
    }

    fn end_of_stream(&self) -> bool {
        self.end_of_stream
    }

    fn shared_data(&self, key: &str) -> Result<(Option<Vec<u8>>, Option<u32>), HostError> {
        abi::shared_data(key)
    }

    fn set_shared_data(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<bool, HostError> {
        abi::set_shared_data(key, value, cas)
    }

    fn now(&self) -> Result<i64, HostError> {
        i64::try_from(abi::now_nanos()? / 1_000_000_000).map_err(|_| HostError("clock out of range".into()))
    }

    fn now_ms(&self) -> u64 {
        abi::now_nanos().map_or(0, |nanos| nanos / 1_000_000)
    }
}

/// A connection's facts (connection scope, the network filter): the proxy's properties,
/// shared data and clock, and no request headers: each header reads as absent, with no host
/// call (Envoy has no header map in a network context).
#[derive(Default)]
pub struct ConnectionHost(ProxyHost);

impl Host for ConnectionHost {
    fn property(&self, path: &[&str]) -> Result<Option<Vec<u8>>, HostError> {
        self.0.property(path)
    }

    fn request_header(&self, _name: &str) -> Result<Option<String>, HostError> {
        Ok(None)
    }

    fn request_headers(&self, names: &[&str]) -> Vec<Option<String>> {
        vec![None; names.len()]
    }

    fn has_request_headers(&self) -> bool {
        false
    }

    fn shared_data(&self, key: &str) -> Result<(Option<Vec<u8>>, Option<u32>), HostError> {
        self.0.shared_data(key)
    }

    fn set_shared_data(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<bool, HostError> {
        self.0.set_shared_data(key, value, cas)
    }

    fn now(&self) -> Result<i64, HostError> {
        self.0.now()
    }

    fn now_ms(&self) -> u64 {
        self.0.now_ms()
    }
}

impl Writes for ConnectionHost {
    fn log(&self, notice: &Notice) {
        self.0.log(notice);
    }

    fn define_counter(&self, name: &str) -> Result<u32, HostError> {
        self.0.define_counter(name)
    }

    fn increment(&self, counter: u32) -> Result<(), HostError> {
        self.0.increment(counter)
    }

    fn set_filter_state(&self, key: &str, value: &str) -> Result<(), HostError> {
        self.0.set_filter_state(key, value)
    }

    /// A connection has no reply to send: never asked (its outcomes carry none).
    fn send_reply(&self, _reply: &Reply) -> Result<(), HostError> {
        Err(HostError("a connection has no HTTP reply".into()))
    }

    fn close(&self) -> Result<(), HostError> {
        abi::close_downstream()
    }
}

impl Writes for ProxyHost {
    fn log(&self, notice: &Notice) {
        match notice.level {
            Level::Error => log::error!("{}", notice.text),
            Level::Warn => log::warn!("{}", notice.text),
            Level::Info => log::info!("{}", notice.text),
        }
    }

    fn define_counter(&self, name: &str) -> Result<u32, HostError> {
        abi::define_counter(name)
    }

    fn increment(&self, counter: u32) -> Result<(), HostError> {
        abi::increment_metric(counter)
    }

    fn set_filter_state(&self, key: &str, value: &str) -> Result<(), HostError> {
        abi::set_property(key, value.as_bytes())
    }

    fn send_reply(&self, reply: &Reply) -> Result<(), HostError> {
        abi::send_local_response(reply.status, reply.headers, reply.body.as_bytes())
    }
}
