//! The proxy-wasm ABI calls the filter makes, declared here because proxy-wasm 0.2.5's wrappers
//! panic on any status they do not expect (hostcalls.rs: `set_property`, `send_http_response`,
//! `increment_metric`, `get_map_value_bytes`, `get_property`, `get_shared_data`,
//! `set_shared_data`, `get_current_time`, and at configure time `get_buffer`, `define_metric`,
//! `set_tick_period`), and a panic kills the VM with every later request on that worker. These
//! return the status instead. The mock-host tier (abi-host/tests/abi.rs) runs the built module
//! against hosts that answer each of them with errors and checks that it never traps. `proxy_log`
//! too: the SDK's logger unwraps its status, so the filter installs its own (`crate::logger`).
#![allow(unsafe_code)] // The ABI is a C interface: calling it is unsafe by definition.

use std::ptr::{null, null_mut};

use loopback_guard_core::host::HostError;

#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_set_property(path: *const u8, path_size: usize, value: *const u8, value_size: usize) -> u32;
    fn proxy_increment_metric(metric_id: u32, offset: i64) -> u32;
    #[allow(clippy::too_many_arguments)]
    fn proxy_send_local_response(
        status_code: u32,
        details: *const u8,
        details_size: usize,
        body: *const u8,
        body_size: usize,
        headers: *const u8,
        headers_size: usize,
        grpc_status: i32,
    ) -> u32;
    fn proxy_get_header_map_pairs(map_type: u32, value: *mut *mut u8, value_size: *mut usize) -> u32;
    fn proxy_get_header_map_value(
        map_type: u32,
        key: *const u8,
        key_size: usize,
        value: *mut *mut u8,
        value_size: *mut usize,
    ) -> u32;
    fn proxy_get_property(
        path: *const u8,
        path_size: usize,
        value: *mut *mut u8,
        value_size: *mut usize,
    ) -> u32;
    fn proxy_get_shared_data(
        key: *const u8,
        key_size: usize,
        value: *mut *mut u8,
        value_size: *mut usize,
        cas: *mut u32,
    ) -> u32;
    fn proxy_set_shared_data(
        key: *const u8,
        key_size: usize,
        value: *const u8,
        value_size: usize,
        cas: u32,
    ) -> u32;
    fn proxy_get_current_time_nanoseconds(time: *mut u64) -> u32;
    fn proxy_get_buffer_bytes(
        buffer_type: u32,
        start: usize,
        max_size: usize,
        value: *mut *mut u8,
        value_size: *mut usize,
    ) -> u32;
    fn proxy_define_metric(metric_type: u32, name: *const u8, name_size: usize, metric_id: *mut u32) -> u32;
    fn proxy_set_tick_period_milliseconds(period_ms: u32) -> u32;
    fn proxy_log(level: u32, message: *const u8, message_size: usize) -> u32;
    fn proxy_close_stream(stream_type: u32) -> u32;
}

const OK: u32 = 0;
const NOT_FOUND: u32 = 1;
const CAS_MISMATCH: u32 = 8;
const REQUEST_HEADERS: u32 = 0;
/// The ABI's `BufferType::PluginConfiguration` and `MetricType::Counter`.
const PLUGIN_CONFIGURATION: u32 = 7;
const COUNTER: u32 = 0;
/// proxy-wasm's StreamType::Downstream (proxy-wasm-rust-sdk v0.2.5 src/types.rs), which
/// proxy-wasm-cpp-host hands to Envoy's Context::closeStream: a FlushWrite close of the
/// connection, deferred until the VM call returns (Envoy source/extensions/common/wasm/context.cc).
const DOWNSTREAM: u32 = 2;

/// `Ok` for status 0, any other status as an error naming the call.
pub fn status(call: &str, status: u32) -> Result<(), HostError> {
    match status {
        OK => Ok(()),
        other => Err(HostError(format!("{call}: status {other}"))),
    }
}

/// A value the host returns in memory it allocated through the module's allocator (which the
/// SDK exports as `proxy_on_memory_allocate`): `None` for status NotFound.
fn returned(code: u32, data: *mut u8, size: usize) -> Result<Option<Vec<u8>>, u32> {
    match code {
        NOT_FOUND => return Ok(None),
        OK => {}
        other => return Err(other),
    }
    if data.is_null() {
        return Ok(Some(Vec::new()));
    }
    // SAFETY: the host allocated `size` bytes at `data` with the module's allocator and hands
    // them over; nothing else refers to them.
    Ok(Some(unsafe { Vec::from_raw_parts(data, size, size) }))
}

/// One line for the proxy's log at `level` (the ABI's: 0 trace ... 4 error, 5 critical).
pub fn log(level: u32, message: &str) -> Result<(), HostError> {
    // SAFETY: the message outlives the call, which only reads it.
    status("log", unsafe { proxy_log(level, message.as_ptr(), message.len()) })
}

pub fn set_property(path: &str, value: &[u8]) -> Result<(), HostError> {
    // SAFETY: both buffers outlive the call, which only reads them.
    let code = unsafe { proxy_set_property(path.as_ptr(), path.len(), value.as_ptr(), value.len()) };
    status("set_property", code)
}

pub fn increment_metric(id: u32) -> Result<(), HostError> {
    // SAFETY: no pointers.
    status("increment_metric", unsafe { proxy_increment_metric(id, 1) })
}

pub fn send_local_response(code: u32, headers: &[(&str, &str)], body: &[u8]) -> Result<(), HostError> {
    let headers = serialize_map(headers);
    // SAFETY: every buffer outlives the call, which only reads them.
    let code = unsafe {
        proxy_send_local_response(
            code,
            null(),
            0,
            body.as_ptr(),
            body.len(),
            headers.as_ptr(),
            headers.len(),
            -1,
        )
    };
    status("send_local_response", code)
}

pub fn request_header(name: &str) -> Result<Option<Vec<u8>>, HostError> {
    let (mut data, mut size) = (null_mut(), 0);
    // SAFETY: the key outlives the call; the host writes the two out-parameters.
    let code = unsafe {
        proxy_get_header_map_value(REQUEST_HEADERS, name.as_ptr(), name.len(), &mut data, &mut size)
    };
    returned(code, data, size).map_err(|code| HostError(format!("request header {name}: status {code}")))
}

/// The whole request header map, serialised (read it with [`pick_headers`]).
pub fn request_header_map() -> Result<Option<Vec<u8>>, HostError> {
    let (mut data, mut size) = (null_mut(), 0);
    // SAFETY: the host writes the two out-parameters.
    let code = unsafe { proxy_get_header_map_pairs(REQUEST_HEADERS, &mut data, &mut size) };
    returned(code, data, size).map_err(|code| HostError(format!("request headers: status {code}")))
}

pub fn property(path: &[&str]) -> Result<Option<Vec<u8>>, HostError> {
    let serialized = path.join("\0");
    let (mut data, mut size) = (null_mut(), 0);
    // SAFETY: the path outlives the call; the host writes the two out-parameters.
    let code = unsafe { proxy_get_property(serialized.as_ptr(), serialized.len(), &mut data, &mut size) };
    returned(code, data, size)
        .map_err(|code| HostError(format!("get_property {}: status {code}", path.join("."))))
}

/// A shared value and its compare-and-swap token (0: none).
pub fn shared_data(key: &str) -> Result<(Option<Vec<u8>>, Option<u32>), HostError> {
    let (mut data, mut size, mut cas) = (null_mut(), 0, 0);
    // SAFETY: the key outlives the call; the host writes the three out-parameters.
    let code = unsafe { proxy_get_shared_data(key.as_ptr(), key.len(), &mut data, &mut size, &mut cas) };
    let value =
        returned(code, data, size).map_err(|code| HostError(format!("shared data {key}: status {code}")))?;
    Ok((value, (cas != 0).then_some(cas)))
}

/// Stores a shared value if its token is still `cas`; `Ok(false)` when another worker was first.
pub fn set_shared_data(key: &str, value: &[u8], cas: Option<u32>) -> Result<bool, HostError> {
    // SAFETY: both buffers outlive the call, which only reads them.
    let code = unsafe {
        proxy_set_shared_data(key.as_ptr(), key.len(), value.as_ptr(), value.len(), cas.unwrap_or(0))
    };
    match code {
        CAS_MISMATCH => Ok(false),
        code => status(&format!("setting shared data {key}"), code).map(|()| true),
    }
}

/// Closes the downstream connection (a network filter's), once the current callback returns.
pub fn close_downstream() -> Result<(), HostError> {
    // SAFETY: no pointers.
    status("close_downstream", unsafe { proxy_close_stream(DOWNSTREAM) })
}

/// The proxy's clock, in nanoseconds since the Unix epoch.
pub fn now_nanos() -> Result<u64, HostError> {
    let mut time = 0;
    // SAFETY: the host writes the out-parameter.
    let code = unsafe { proxy_get_current_time_nanoseconds(&mut time) };
    status("clock", code).map(|()| time)
}

/// The plugin's configuration; `None` when the host has none.
pub fn plugin_configuration() -> Result<Option<Vec<u8>>, HostError> {
    let (mut data, mut size) = (null_mut(), 0);
    // SAFETY: the host writes the two out-parameters.
    let code = unsafe { proxy_get_buffer_bytes(PLUGIN_CONFIGURATION, 0, usize::MAX, &mut data, &mut size) };
    returned(code, data, size).map_err(|code| HostError(format!("plugin configuration: status {code}")))
}

/// Defines a counter; its id.
pub fn define_counter(name: &str) -> Result<u32, HostError> {
    let mut id = 0;
    // SAFETY: the name outlives the call; the host writes the out-parameter.
    let code = unsafe { proxy_define_metric(COUNTER, name.as_ptr(), name.len(), &mut id) };
    status(&format!("define_metric {name}"), code).map(|()| id)
}

/// The root context's timer period (zero stops it).
pub fn set_tick_period(period: std::time::Duration) -> Result<(), HostError> {
    let millis = u32::try_from(period.as_millis()).unwrap_or(u32::MAX);
    // SAFETY: no pointers.
    status("set_tick_period", unsafe { proxy_set_tick_period_milliseconds(millis) })
}

/// The ABI's header map: the count, each name's and value's length, then each NUL-terminated.
pub fn serialize_map(map: &[(&str, &str)]) -> Vec<u8> {
    let mut bytes = Vec::new();
    let length = |n: usize| u32::try_from(n).unwrap_or(u32::MAX).to_le_bytes();
    bytes.extend_from_slice(&length(map.len()));
    for (name, value) in map {
        bytes.extend_from_slice(&length(name.len()));
        bytes.extend_from_slice(&length(value.len()));
    }
    for (name, value) in map {
        for part in [name, value] {
            bytes.extend_from_slice(part.as_bytes());
            bytes.push(0);
        }
    }
    bytes
}

/// The values of `names` (the first of each) in a header map serialised as [`serialize_map`]
/// writes one. `None` when the bytes are not such a map.
pub fn pick_headers(map: &[u8], names: &[&str]) -> Option<Vec<Option<String>>> {
    let word = |at: usize| -> Option<usize> {
        let bytes: [u8; 4] = map.get(at..at.checked_add(4)?)?.try_into().ok()?;
        usize::try_from(u32::from_le_bytes(bytes)).ok()
    };
    let count = word(0)?;
    let mut found = vec![None; names.len()];
    let mut text = count.checked_mul(8)?.checked_add(4)?;
    for pair in 0..count {
        let sizes = pair.checked_mul(8)?.checked_add(4)?;
        let (name_len, value_len) = (word(sizes)?, word(sizes.checked_add(4)?)?);
        let name = map.get(text..text.checked_add(name_len)?)?;
        let value_at = text.checked_add(name_len)?.checked_add(1)?;
        let value = map.get(value_at..value_at.checked_add(value_len)?)?;
        text = value_at.checked_add(value_len)?.checked_add(1)?;
        for (slot, wanted) in found.iter_mut().zip(names) {
            if slot.is_none() && name == wanted.as_bytes() {
                *slot = Some(String::from_utf8_lossy(value).into_owned());
            }
        }
    }
    Some(found)
}
