//! Steps 2 to 5: the peer. Its address; whether it presented a certificate and Envoy validated
//! it (on this handshake, or on the one a resumed session stands for); the certificate's DER,
//! from `connection.peer_certificate` or this proxy's XFCC element, bound to the connection by
//! its digest; the X509-SVID rules, cached by that digest; and the clock.
//!
//! Where is the client certificate read? Here: [`PeerSteps::svid`] (through
//! `peer_certificate_der`), and only on a certificate the cache does not know.

use std::net::SocketAddr;
use std::rc::Rc;

use crate::cache::{CertCache, Checked};
use crate::host::{property, Host, XFCC_HEADER};
use crate::notice::{Level, Notice};
use crate::svid::{SvidFacts, TimeError};
use crate::validated::Validated;
use crate::{pem, xfcc};

use super::reason::{Reason, Refusal};

/// The detail of a decision admitted on a resumed TLS session.
pub const RESUMED_DETAIL: &str =
    "TLS session resumed: Envoy validated this certificate on an earlier handshake, not on this one";

/// The detail of a connection-scope denial on an Envoy without `connection.peer_certificate`.
pub const NO_CERTIFICATE_PROPERTY_DETAIL: &str = "this Envoy has no connection.peer_certificate \
    property (Envoy before 1.38) and a connection has no XFCC header to fall back on: connection \
    scope needs Envoy 1.38 or later (docs/architecture.md)";

/// Said once per Envoy on a version without `connection.peer_certificate_valid`.
pub const NO_VALIDITY_NOTICE: &str = "this Envoy does not report connection.peer_certificate_valid \
    (Envoy before 1.39): the filter cannot tell a validated client certificate from one the \
    listener let through unvalidated, so the listener's certificate validation is the only \
    guard of the chain of trust (docs/envoy-versions.md)";

/// The shared-data key that makes [`NO_VALIDITY_NOTICE`] once per Envoy rather than per worker.
const NO_VALIDITY_NOTICE_KEY: &str = "loopback_guard.notice.no_validity_property";

/// The memory of steps 3 to 5: the certificates checked (by digest) and those this Envoy
/// validated on a full handshake (for resumed sessions).
#[derive(Debug)]
pub(super) struct PeerSteps {
    cache: CertCache,
    validated: Validated,
    validity_notice_considered: bool,
}

impl PeerSteps {
    pub(super) fn new(certificate_cache_size: usize) -> Self {
        Self {
            cache: CertCache::new(certificate_cache_size),
            validated: Validated::default(),
            validity_notice_considered: false,
        }
    }

    /// Step 3: the digest of the presented certificate (if the host has one), and whether it
    /// was admitted on a resumed session rather than validated on this handshake.
    pub(super) fn presented_certificate(
        &mut self,
        host: &impl Host,
        notices: &mut Vec<Notice>,
    ) -> Result<(Option<String>, bool), Refusal> {
        // A digest exists only for a presented certificate: where there is one, it answers
        // `connection.mtls` too.
        let digest = peer_certificate_digest(host)?;
        if digest.is_none() {
            match host.property(property::MTLS)?.as_deref() {
                Some([1]) => {}
                Some([0]) | None => return Err(Refusal::bare(Reason::NoClientCertificate)),
                Some(other) => {
                    return Err(Refusal::because(Reason::HostError, format!("connection.mtls is {other:?}")))
                }
            }
        }
        match host.property(property::PEER_CERTIFICATE_VALID)?.as_deref() {
            Some([1]) => {
                if let Some(digest) = &digest {
                    // Best effort: if it cannot be recorded, a resumed session of this
                    // certificate is denied later, which fails closed.
                    let _ = self.validated.remember(host, digest);
                }
            }
            // Envoy before 1.39 does not say; the listener's validation is then the only guard.
            None => self.consider_validity_notice(host, notices),
            // Not validated on this handshake: admitted only if it is a resumed session of a
            // certificate this Envoy validated on a full handshake.
            Some(_) => match &digest {
                Some(digest) if self.validated.was_validated(host, digest)? => {
                    return Ok((Some(digest.clone()), true))
                }
                _ => return Err(Refusal::bare(Reason::CertificateUnvalidated)),
            },
        }
        Ok((digest, false))
    }

    /// Steps 4 and 5 (but the clock): the certificate's X509-SVID checks, cached by digest.
    pub(super) fn svid(
        &mut self,
        host: &impl Host,
        digest: Option<String>,
    ) -> Result<Rc<SvidFacts>, Refusal> {
        let checked = match digest.as_deref().and_then(|d| self.cache.get(d)) {
            Some(checked) => checked,
            None => {
                let checked: Checked =
                    SvidFacts::from_der(&peer_certificate_der(host, digest.as_deref())?).map(Rc::new);
                if let Some(digest) = digest {
                    self.cache.insert(digest, checked.clone());
                }
                checked
            }
        };
        checked.map_err(|e| Refusal::because(Reason::from(&e), &e))
    }

    /// On the first request without `connection.peer_certificate_valid`, queues
    /// [`NO_VALIDITY_NOTICE`] unless another worker already said it.
    fn consider_validity_notice(&mut self, host: &impl Host, notices: &mut Vec<Notice>) {
        if self.validity_notice_considered {
            return;
        }
        self.validity_notice_considered = true;
        if let Ok((None, _)) = host.shared_data(NO_VALIDITY_NOTICE_KEY) {
            if host.set_shared_data(NO_VALIDITY_NOTICE_KEY, b"said", None).is_ok() {
                notices.push(Notice::new(Level::Warn, NO_VALIDITY_NOTICE));
            }
        }
    }
}

/// Step 2: the peer address as text (bytes that are not UTF-8 replaced).
pub(super) fn source_address(host: &impl Host) -> Result<Option<String>, Refusal> {
    Ok(host.property(property::SOURCE_ADDRESS)?.map(|raw| {
        String::from_utf8(raw).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
    }))
}

/// Step 5, the clock: within notBefore..notAfter (checked on every request, never cached).
pub(super) fn validity_window(peer: &SvidFacts, host: &impl Host) -> Result<(), Refusal> {
    match peer.check_time(host.now()?) {
        Ok(()) => Ok(()),
        Err(TimeError::Expired) => Err(Refusal::bare(Reason::SvidExpired)),
        Err(TimeError::NotYetValid) => Err(Refusal::bare(Reason::SvidNotYetValid)),
    }
}

/// Step 2: a loopback TCP peer.
pub(super) fn check_loopback(source: Option<&str>) -> Result<(), Refusal> {
    let source = source.ok_or(Refusal::bare(Reason::SourceAddressUnavailable))?;
    let address: SocketAddr = source.parse().map_err(|_| {
        Refusal::because(Reason::SourceAddressUnavailable, format!("unparsable source address {source:?}"))
    })?;
    // A TCP peer always has a port; the connection manager gives port 0 to an address it took
    // from x-forwarded-for (or another header), which any client can write.
    if address.port() == 0 {
        return Err(Refusal::because(
            Reason::SourceAddressForwarded,
            format!(
                "{source} was taken from a request header, not from the connection: \
                 set use_remote_address: true on this listener's HTTP connection manager"
            ),
        ));
    }
    if address.ip().to_canonical().is_loopback() {
        Ok(())
    } else {
        Err(Refusal::bare(Reason::NotLoopback))
    }
}

/// The connection's certificate digest, when the host has one (64 lowercase hex characters).
fn peer_certificate_digest(host: &impl Host) -> Result<Option<String>, Refusal> {
    let Some(raw) = host.property(property::PEER_CERTIFICATE_DIGEST)? else {
        return Ok(None);
    };
    match String::from_utf8(raw) {
        Ok(mut digest) if digest.len() == 64 && digest.bytes().all(|b| b.is_ascii_hexdigit()) => {
            digest.make_ascii_lowercase();
            Ok(Some(digest))
        }
        Ok(digest) if digest.is_empty() => Ok(None),
        _ => Err(Refusal::because(Reason::CertificateUnavailable, "malformed certificate digest")),
    }
}

/// The peer certificate: from `connection.peer_certificate` where Envoy has it, else from the
/// XFCC element this proxy added. Either way it must hash to the connection's digest (if known),
/// since the cache trusts the digest as the certificate's name.
fn peer_certificate_der(host: &impl Host, digest: Option<&str>) -> Result<Vec<u8>, Refusal> {
    let der = match host.property(property::PEER_CERTIFICATE)? {
        Some(text) if !text.is_empty() => {
            pem::certificate_der(&text).map_err(|e| Refusal::because(Reason::CertificateInvalid, e))?
        }
        _ => {
            if !host.has_request_headers() {
                return Err(Refusal::because(Reason::CertificateUnavailable, NO_CERTIFICATE_PROPERTY_DETAIL));
            }
            let digest = digest.ok_or_else(|| {
                Refusal::because(Reason::CertificateUnavailable, "no peer certificate property and no digest")
            })?;
            let header = host.request_header(XFCC_HEADER)?.ok_or_else(|| {
                Refusal::because(
                    Reason::CertificateUnavailable,
                    "no peer certificate property and no XFCC header",
                )
            })?;
            return xfcc::peer_certificate_der(&header, digest)
                .map_err(|e| Refusal::because(Reason::CertificateUnavailable, e));
        }
    };
    match digest {
        Some(digest) if pem::sha256_hex(&der) != digest => Err(Refusal::because(
            Reason::CertificateUnavailable,
            "peer certificate does not match the connection's digest",
        )),
        _ => Ok(der),
    }
}
