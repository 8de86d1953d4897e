//! Runs the built loopback-guard module inside a real Envoy.
//!
//! - [`pki`]: a throwaway CA, the pod's workload certificate and client certificates of any shape,
//!   generated at test time into a temporary directory.
//! - [`envoy`]: renders `envoy-config/loopback-guard.yaml`, starts Envoy, reads its stats and logs,
//!   and stops it on drop (dumping its log when a test fails).
//! - [`client`]: an HTTPS client that presents a given client certificate, or none.
//! - [`decision_log`]: the filter's JSON decision lines, parsed out of Envoy's log.
//! - [`connection`]: connection scope (the network filter), its TCP upstream and TLS client.
//! - [`command`]: the `loopback-guard` command, run in-process.
//! - [`scenario`]: one request observed end to end (reply, decision line, access log, counters)
//!   and checked against an expected outcome; the tests and the demo are written with it.

pub mod client;
pub mod command;
pub mod connection;
pub mod decision_log;
pub mod envoy;
pub mod load;
pub mod pki;
pub mod scenario;
pub mod sidecar;

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

/// A failure of the harness itself (not of the filter under test), with what was being done.
#[derive(Debug)]
pub struct Error(String);

impl Error {
    pub fn new(message: impl Into<String>) -> Self {
        Error(message.into())
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

pub type Result<T> = std::result::Result<T, Error>;

/// Adds what was being done to any displayable error.
pub trait Context<T> {
    fn context(self, what: impl fmt::Display) -> Result<T>;
}

impl<T, E: fmt::Display> Context<T> for std::result::Result<T, E> {
    fn context(self, what: impl fmt::Display) -> Result<T> {
        self.map_err(|err| Error(format!("{what}: {err}")))
    }
}

/// Percent-encodes as Envoy does the PEM in an XFCC `Cert` value (one definition for the
/// workspace, in the core's `testing` feature).
pub use loopback_guard_core::testing::url_encode;

/// The repository root (this crate lives in `<root>/integration`).
pub fn repo_root() -> PathBuf {
    let manifest_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest_dir.parent().map(PathBuf::from).unwrap_or(manifest_dir)
}

/// A log file as text (invalid UTF-8 replaced); empty when it cannot be read.
pub fn read_lossy(path: &Path) -> String {
    fs::read(path).map(|bytes| String::from_utf8_lossy(&bytes).into_owned()).unwrap_or_default()
}

/// The last `count` lines of `text`, for a failure message.
pub fn last_lines(text: &str, count: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines.get(lines.len().saturating_sub(count)..).unwrap_or_default().join("\n")
}
