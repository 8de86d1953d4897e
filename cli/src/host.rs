//! The request as Envoy would describe it to the filter, built from files and flags.
//!
//! Everything the CLI knows about Envoy's side of a request lives here: which properties Envoy
//! 1.40 hands the module on the loopback listener (README, "Envoy versions") and how a
//! certificate file becomes them (`crate::cert`). The decision itself is the core's.

use loopback_guard_core::host::{property, Host, HostError};

use crate::cert::PeerCertificate;

/// The `connection.id` of the command's one connection.
pub const CONNECTION_ID: u64 = 1;

/// The pod the sidecar runs in: its node metadata and the certificate its listener serves.
#[derive(Debug, Clone, Default)]
pub struct Pod {
    /// Node metadata `NAMESPACE`.
    pub namespace: Option<String>,
    /// Node metadata `SERVICE_ACCOUNT`.
    pub service_account: Option<String>,
    /// The URI SAN of the listener's own certificate (`connection.uri_san_local_certificate`).
    pub listener_principal: Option<String>,
}

/// One request on the loopback listener.
#[derive(Debug, Clone)]
pub struct Request {
    pub source_address: String,
    pub path: String,
    pub method: String,
    pub authority: String,
    /// The proxy's clock, seconds since the Unix epoch.
    pub now: i64,
}

/// The facts Envoy 1.40 gives the module for `request` from `peer` (or a connection without a
/// client certificate) in `pod`.
pub struct CliHost<'a> {
    pub peer: Option<&'a PeerCertificate>,
    pub pod: &'a Pod,
    pub request: &'a Request,
}

impl Host for CliHost<'_> {
    fn property(&self, path: &[&str]) -> Result<Option<Vec<u8>>, HostError> {
        let peer = self.peer;
        let value = match path {
            p if p == property::SOURCE_ADDRESS => Some(self.request.source_address.clone().into_bytes()),
            // The command's request is the first of its connection, which Envoy numbers.
            p if p == property::CONNECTION_ID => Some(CONNECTION_ID.to_le_bytes().to_vec()),
            // A TLS connection: mtls says whether a certificate was presented.
            p if p == property::MTLS => Some(vec![u8::from(peer.is_some())]),
            // The listener validated the chain, or the handshake would have failed.
            p if p == property::PEER_CERTIFICATE_VALID => peer.map(|_| vec![1]),
            p if p == property::PEER_CERTIFICATE => peer.map(|cert| cert.envoy_pem().into_bytes()),
            p if p == property::PEER_CERTIFICATE_DIGEST => peer.map(|cert| cert.sha256.clone().into_bytes()),
            p if p == property::LOCAL_URI_SAN => {
                self.pod.listener_principal.as_ref().map(|id| id.clone().into_bytes())
            }
            [.., "NAMESPACE"] if is_node_metadata(path) => {
                self.pod.namespace.as_ref().map(|ns| ns.clone().into_bytes())
            }
            [.., "SERVICE_ACCOUNT"] if is_node_metadata(path) => {
                self.pod.service_account.as_ref().map(|sa| sa.clone().into_bytes())
            }
            _ => None,
        };
        Ok(value)
    }

    fn request_header(&self, name: &str) -> Result<Option<String>, HostError> {
        Ok(match name {
            ":path" => Some(self.request.path.clone()),
            ":method" => Some(self.request.method.clone()),
            ":authority" => Some(self.request.authority.clone()),
            _ => None,
        })
    }

    /// The command describes a request without a body: its headers end the stream.
    fn end_of_stream(&self) -> bool {
        true
    }

    fn now(&self) -> Result<i64, HostError> {
        Ok(self.request.now)
    }
}

/// Envoy 1.40 answers node metadata at `xds.node.metadata.<KEY>` only.
fn is_node_metadata(path: &[&str]) -> bool {
    path.len() == 4 && path.get(..3) == property::NODE_METADATA_PREFIXES.first().copied()
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn envoy_properties() {
        let cert = PeerCertificate::parse(Path::new("x.pem"), &[0x30, 0x03, 0x02, 0x01, 0x07]).unwrap();
        let pod = Pod {
            namespace: Some("demo".into()),
            service_account: Some("app".into()),
            listener_principal: None,
        };
        let request = Request {
            source_address: "127.0.0.1:5".into(),
            path: "/x".into(),
            method: "GET".into(),
            authority: "127.0.0.1".into(),
            now: 7,
        };
        let host = CliHost { peer: Some(&cert), pod: &pod, request: &request };
        assert_eq!(host.property(property::MTLS).unwrap(), Some(vec![1]));
        assert_eq!(host.property(property::PEER_CERTIFICATE_VALID).unwrap(), Some(vec![1]));
        assert_eq!(
            host.property(property::PEER_CERTIFICATE_DIGEST).unwrap(),
            Some(cert.sha256.clone().into())
        );
        assert_eq!(host.property(&["xds", "node", "metadata", "NAMESPACE"]).unwrap(), Some(b"demo".to_vec()));
        assert_eq!(host.property(&["node", "metadata", "NAMESPACE"]).unwrap(), None, "not on 1.40");
        assert_eq!(host.property(property::LOCAL_URI_SAN).unwrap(), None);
        assert_eq!(host.request_header(":path").unwrap().as_deref(), Some("/x"));
        assert_eq!(host.now().unwrap(), 7);
        let host = CliHost { peer: None, pod: &pod, request: &request };
        assert_eq!(host.property(property::MTLS).unwrap(), Some(vec![0]));
        assert_eq!(host.property(property::PEER_CERTIFICATE).unwrap(), None);
    }
}
