//! The only code that talks to proxy-wasm: it reads host facts for the core and applies the
//! core's [`Outcome`](loopback_guard_core::engine::Outcome)s. Nothing here decides.
//!
//! Reads go through the core's `Host` trait, writes through [`Writes`], so that [`apply`] runs
//! natively against a fake host in tests; `host.rs` implements both over the proxy-wasm ABI
//! (`crate::abi`, which returns errors where the SDK's host calls would panic).

pub mod apply;
mod connection;
pub mod host;
mod http;
pub mod root;

use loopback_guard_core::engine::{Notice, Reply};
use loopback_guard_core::host::HostError;

/// What the glue writes to the proxy. A failed write is reported, never a panic.
pub trait Writes {
    fn log(&self, notice: &Notice);
    fn define_counter(&self, name: &str) -> Result<u32, HostError>;
    fn increment(&self, counter: u32) -> Result<(), HostError>;
    fn set_filter_state(&self, key: &str, value: &str) -> Result<(), HostError>;
    fn send_reply(&self, reply: &Reply) -> Result<(), HostError>;
    /// Closes the downstream connection (connection scope only).
    fn close(&self) -> Result<(), HostError> {
        Err(HostError("not a connection".into()))
    }
}
