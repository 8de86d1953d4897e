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

/// The values of `names` (the first of each) in a header map as proxy-wasm serialises it: the
/// number of pairs, each name's and value's length (u32, little-endian), then each name and
/// value followed by a NUL. `None` when the bytes are not such a map.
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_case;

    fn serialised(pairs: &[(&str, &str)]) -> Vec<u8> {
        let mut bytes = u32::try_from(pairs.len()).unwrap().to_le_bytes().to_vec();
        for (name, value) in pairs {
            bytes.extend(u32::try_from(name.len()).unwrap().to_le_bytes());
            bytes.extend(u32::try_from(value.len()).unwrap().to_le_bytes());
        }
        for (name, value) in pairs {
            bytes.extend(name.bytes().chain([0]).chain(value.bytes()).chain([0]));
        }
        bytes
    }

    #[test_case]
    fn headers_are_picked_from_a_serialised_map() {
        let map = serialised(&[(":path", "/a"), (":method", "GET"), ("x", ""), (":path", "/b")]);
        let picked = pick_headers(&map, &[":path", "x-request-id", ":method", "x"]).unwrap();
        let want = [Some("/a"), None, Some("GET"), Some("")].map(|v| v.map(str::to_owned));
        assert_eq!(picked, want);
        assert_eq!(pick_headers(&serialised(&[]), &[":path"]).unwrap(), [None]);
    }

    #[test_case]
    fn a_malformed_map_is_none_never_a_panic() {
        let map = serialised(&[(":path", "/a"), (":method", "GET")]);
        for end in 0..map.len() - 1 {
            assert_eq!(pick_headers(&map[..end], &[":method"]), None, "cut at {end}");
        }
        let mut huge = map.clone();
        huge[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(pick_headers(&huge, &[":path"]), None);
        let mut long_name = map;
        long_name[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(pick_headers(&long_name, &[":path"]), None);
    }
}
