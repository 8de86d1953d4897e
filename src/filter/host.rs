//! [`Host`] over proxy-wasm host calls.

use std::time::UNIX_EPOCH;

use loopback_guard_core::host::{Host, HostError};
use proxy_wasm::hostcalls;
use proxy_wasm::types::{MapType, Status};

/// The current request's facts, as Envoy answers them.
#[derive(Default)]
pub struct ProxyHost {
    /// Whether the request headers ended the stream (`on_http_request_headers`).
    pub end_of_stream: bool,
}

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

    fn end_of_stream(&self) -> bool {
        self.end_of_stream
    }

    fn shared_data(&self, key: &str) -> Result<(Option<Vec<u8>>, Option<u32>), HostError> {
        hostcalls::get_shared_data(key).map_err(|status| HostError(format!("shared data {key}: {status:?}")))
    }

    fn set_shared_data(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<bool, HostError> {
        match hostcalls::set_shared_data(key, Some(value), cas) {
            Ok(()) => Ok(true),
            Err(Status::CasMismatch) => Ok(false),
            Err(status) => Err(HostError(format!("setting shared data {key}: {status:?}"))),
        }
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
    ProxyHost::default().request_header(name).ok().flatten()
}

/// The proxy's clock in milliseconds since the Unix epoch (0 if it cannot be read: the log
/// limiter then sees time stand still, which only holds lines back).
pub fn now_ms() -> u64 {
    hostcalls::get_current_time()
        .ok()
        .and_then(|now| now.duration_since(UNIX_EPOCH).ok())
        .and_then(|since| u64::try_from(since.as_millis()).ok())
        .unwrap_or(0)
}
