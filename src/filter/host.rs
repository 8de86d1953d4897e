//! [`Host`] over proxy-wasm host calls.

use std::time::UNIX_EPOCH;

use loopback_guard_core::host::{Host, HostError};
use proxy_wasm::hostcalls;
use proxy_wasm::types::MapType;

/// The current request's facts, as Envoy answers them.
pub struct ProxyHost;

impl Host for ProxyHost {
    fn property(&self, path: &[&str]) -> Result<Option<Vec<u8>>, HostError> {
        hostcalls::get_property(path.to_vec())
            .map_err(|status| HostError(format!("get_property {}: {status:?}", path.join("."))))
    }

    fn request_header(&self, name: &str) -> Result<Option<String>, HostError> {
        // The bytes variant: the string one unwraps UTF-8, and header bytes are the client's.
        let value = hostcalls::get_map_value_bytes(MapType::HttpRequestHeaders, name)
            .map_err(|status| HostError(format!("request header {name}: {status:?}")))?;
        Ok(value.map(|bytes| match String::from_utf8(bytes) {
            Ok(text) => text,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        }))
    }

    fn now(&self) -> Result<i64, HostError> {
        let now = hostcalls::get_current_time().map_err(|status| HostError(format!("clock: {status:?}")))?;
        let since_epoch =
            now.duration_since(UNIX_EPOCH).map_err(|_| HostError("clock is before 1970".into()))?;
        i64::try_from(since_epoch.as_secs()).map_err(|_| HostError("clock out of range".into()))
    }
}

/// A request header for labels and matching: absent and unreadable read as `None`.
pub fn label_header(name: &str) -> Option<String> {
    ProxyHost.request_header(name).ok().flatten()
}
