//! What the core asks of the proxy, and where Envoy keeps each fact.
//!
//! The filter crate implements [`Host`] over proxy-wasm host calls; tests implement it over a
//! map. Reads are lazy, so a request pays only for the facts its decision needs.

use std::fmt;

/// Read access to the current request's host facts.
pub trait Host {
    /// An Envoy attribute (`None` when the host does not have it).
    fn property(&self, path: &[&str]) -> Result<Option<Vec<u8>>, HostError>;
    /// A request header (`None` when absent). Bytes that are not UTF-8 arrive replaced with
    /// U+FFFD: header bytes are the client's, and a strange byte is no failed host call.
    fn request_header(&self, name: &str) -> Result<Option<String>, HostError>;
    /// Several request headers, for a log line's labels: each `None` when absent or unreadable.
    /// A host that reads the whole header map in one call answers them all with it.
    fn request_headers(&self, names: &[&str]) -> Vec<Option<String>> {
        names.iter().map(|name| self.request_header(name).ok().flatten()).collect()
    }
    /// Whether there are request headers at all: not in connection scope (a network filter),
    /// where every header reads as absent and the XFCC fallback cannot apply.
    fn has_request_headers(&self) -> bool {
        true
    }
    /// The proxy's current time, in seconds since the Unix epoch.
    fn now(&self) -> Result<i64, HostError>;
    /// The proxy's current time in milliseconds since the Unix epoch, for the log limiter; 0 if
    /// the clock cannot be read (time then stands still, which only holds lines back).
    fn now_ms(&self) -> u64 {
        self.now().ok().and_then(|seconds| u64::try_from(seconds).ok()).map_or(0, |s| s.saturating_mul(1000))
    }
    /// Whether the request headers ended the stream: no body and no tunnel follow. A host that
    /// cannot tell says no, which only costs a probe its exemption.
    fn end_of_stream(&self) -> bool {
        false
    }
    /// A value the VMs of every worker of this proxy share, with its compare-and-swap token.
    /// A host without shared data has nothing: resumed TLS sessions are then denied.
    fn shared_data(&self, _key: &str) -> Result<(Option<Vec<u8>>, Option<u32>), HostError> {
        Ok((None, None))
    }
    /// Stores a shared value if its token is still `cas` (`None`: unconditionally). `Ok(false)`
    /// when another worker changed it first.
    fn set_shared_data(&self, _key: &str, _value: &[u8], _cas: Option<u32>) -> Result<bool, HostError> {
        Ok(false)
    }
}

/// A host call failed: an unexpected answer, never a reason to allow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostError(pub String);

impl fmt::Display for HostError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "host call failed: {}", self.0)
    }
}

impl std::error::Error for HostError {}

/// The connection's id, where the host has one: Envoy numbers connections from one counter for
/// the whole process, so an id names one connection for the life of the proxy. Missing,
/// unreadable or malformed: `None`.
pub fn connection_id(host: &impl Host) -> Option<u64> {
    let raw = host.property(property::CONNECTION_ID).ok().flatten()?;
    Some(u64::from_le_bytes(raw.try_into().ok()?))
}

/// The TCP peer's own address (`ip:port`), as `source.address` gives it: not one the connection
/// manager rebuilt from a request header, which it gives port 0 (and a later request of the same
/// connection may rebuild differently).
pub fn peer_address(source_address: Option<&str>) -> Option<&str> {
    source_address.filter(|address| !address.ends_with(":0"))
}

/// Envoy attribute paths (see Envoy's "Attributes" documentation).
pub mod property {
    /// The downstream peer: the TCP peer, unless the connection manager rebuilt it from
    /// `x-forwarded-for` (`use_remote_address: false`), which it does with port 0.
    pub const SOURCE_ADDRESS: &[&str] = &["source", "address"];
    pub const CONNECTION_ID: &[&str] = &["connection", "id"];
    /// True when the peer presented a certificate (not: when it was validated).
    pub const MTLS: &[&str] = &["connection", "mtls"];
    /// Envoy 1.39+: whether the presented certificate passed validation.
    pub const PEER_CERTIFICATE_VALID: &[&str] = &["connection", "peer_certificate_valid"];
    /// Envoy 1.38+: the peer certificate as (possibly URL-encoded) PEM.
    pub const PEER_CERTIFICATE: &[&str] = &["connection", "peer_certificate"];
    pub const PEER_CERTIFICATE_DIGEST: &[&str] = &["connection", "sha256_peer_certificate_digest"];
    pub const LOCAL_URI_SAN: &[&str] = &["connection", "uri_san_local_certificate"];
    /// Node metadata: the current path first, then the one older Envoy versions answer.
    pub const NODE_METADATA_PREFIXES: &[&[&str]] = &[&["xds", "node", "metadata"], &["node", "metadata"]];
}

/// The request header carrying the forwarded client certificate (fallback path).
pub const XFCC_HEADER: &str = "x-forwarded-client-cert";
