//! The X509-SVID rules a peer certificate must meet, checked on a DER certificate.
//!
//! Envoy has already verified the chain and the signature during the handshake; what it does not
//! know is SPIFFE: that the certificate names exactly one workload, in a valid SPIFFE ID, and is
//! a leaf. Those facts are extracted once per certificate ([`SvidFacts::from_der`]) and cached;
//! the validity window is checked on every request ([`SvidFacts::check_time`]).

use std::fmt;

use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;

use crate::identity::{SpiffeId, SpiffeIdError};

/// The SAN `GeneralName` tag of a uniformResourceIdentifier.
const URI_NAME_TAG: u32 = 6;

/// What the filter needs to know about a certificate that passed the X509-SVID rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SvidFacts {
    pub spiffe_id: SpiffeId,
    /// notBefore, seconds since the Unix epoch.
    pub not_before: i64,
    /// notAfter, seconds since the Unix epoch.
    pub not_after: i64,
}

/// Why a certificate is not a usable X509-SVID. Each variant maps to one decision reason.
#[derive(Debug, Clone, PartialEq)]
pub enum SvidError {
    /// Not a parsable X.509 certificate (or its extensions are malformed or duplicated).
    Unparsable(String),
    /// An X509-SVID carries exactly one URI SAN.
    UriSanCount(usize),
    /// The URI SAN is not a valid workload SPIFFE ID.
    BadSpiffeId(SpiffeIdError),
    /// A CA certificate, or one allowed to sign certificates or CRLs, is not a leaf SVID.
    NotLeaf(&'static str),
}

impl fmt::Display for SvidError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unparsable(e) => write!(f, "certificate does not parse: {e}"),
            Self::UriSanCount(n) => write!(f, "certificate has {n} URI SANs, an X509-SVID has 1"),
            Self::BadSpiffeId(e) => write!(f, "URI SAN {e}"),
            Self::NotLeaf(why) => write!(f, "certificate is not a leaf: {why}"),
        }
    }
}

impl std::error::Error for SvidError {}

/// The validity window does not contain the current time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeError {
    Expired,
    NotYetValid,
}

impl SvidFacts {
    /// Applies the X509-SVID rules to a DER certificate.
    pub fn from_der(der: &[u8]) -> Result<Self, SvidError> {
        let (rest, cert) =
            x509_parser::parse_x509_certificate(der).map_err(|e| SvidError::Unparsable(e.to_string()))?;
        if !rest.is_empty() {
            return Err(SvidError::Unparsable(format!("{} bytes after the certificate", rest.len())));
        }
        let spiffe_id = single_spiffe_id(&cert)?;
        check_leaf(&cert)?;
        let validity = cert.validity();
        Ok(Self {
            spiffe_id,
            not_before: validity.not_before.timestamp(),
            not_after: validity.not_after.timestamp(),
        })
    }

    /// Checks that `now` (seconds since the Unix epoch) lies within notBefore..=notAfter.
    pub fn check_time(&self, now: i64) -> Result<(), TimeError> {
        if now < self.not_before {
            Err(TimeError::NotYetValid)
        } else if now > self.not_after {
            Err(TimeError::Expired)
        } else {
            Ok(())
        }
    }
}

fn single_spiffe_id(cert: &X509Certificate<'_>) -> Result<SpiffeId, SvidError> {
    let san = cert.subject_alternative_name().map_err(|e| SvidError::Unparsable(e.to_string()))?;
    let names = san.map(|ext| ext.value.general_names.as_slice()).unwrap_or_default();
    // A URI the parser could not read as IA5String (e.g. non-ASCII bytes) still is a URI SAN:
    // it counts, and it is refused as a SPIFFE ID rather than silently skipped.
    let uris: Vec<Result<&str, SvidError>> = names
        .iter()
        .filter_map(|name| match name {
            GeneralName::URI(uri) => Some(Ok(*uri)),
            GeneralName::Invalid(tag, _) if tag.0 == URI_NAME_TAG => Some(Err(SvidError::BadSpiffeId(
                SpiffeIdError::Invalid(spiffe::SpiffeIdError::BadPathSegmentChar),
            ))),
            _ => None,
        })
        .collect();
    match uris.as_slice() {
        [only] => only.clone().and_then(|uri| SpiffeId::parse(uri).map_err(SvidError::BadSpiffeId)),
        other => Err(SvidError::UriSanCount(other.len())),
    }
}

fn check_leaf(cert: &X509Certificate<'_>) -> Result<(), SvidError> {
    let basic = cert.basic_constraints().map_err(|e| SvidError::Unparsable(e.to_string()))?;
    if basic.is_some_and(|bc| bc.value.ca) {
        return Err(SvidError::NotLeaf("basicConstraints CA is true"));
    }
    let usage = cert.key_usage().map_err(|e| SvidError::Unparsable(e.to_string()))?;
    if let Some(usage) = usage {
        if usage.value.key_cert_sign() {
            return Err(SvidError::NotLeaf("key usage includes keyCertSign"));
        }
        if usage.value.crl_sign() {
            return Err(SvidError::NotLeaf("key usage includes cRLSign"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_case;
    use crate::testing::CertBuilder;

    const APP: &str = "spiffe://cluster.local/ns/shop/sa/app";

    #[test_case]
    fn svid_rules() {
        let cases: Vec<(&str, CertBuilder, Result<&str, fn(&SvidError) -> bool>)> = vec![
            ("one spiffe uri", CertBuilder::leaf().uri(APP), Ok(APP)),
            ("plus dns san", CertBuilder::leaf().uri(APP).dns("app.local"), Ok(APP)),
            ("no san", CertBuilder::leaf(), Err(|e| *e == SvidError::UriSanCount(0))),
            ("dns only", CertBuilder::leaf().dns("app"), Err(|e| *e == SvidError::UriSanCount(0))),
            (
                "two uris",
                CertBuilder::leaf().uri(APP).uri("spiffe://cluster.local/ns/x/sa/y"),
                Err(|e| *e == SvidError::UriSanCount(2)),
            ),
            (
                "https uri",
                CertBuilder::leaf().uri("https://app"),
                Err(|e| matches!(e, SvidError::BadSpiffeId(_))),
            ),
            ("empty uri", CertBuilder::leaf().uri(""), Err(|e| matches!(e, SvidError::BadSpiffeId(_)))),
            (
                "uppercase trust domain",
                CertBuilder::leaf().uri("spiffe://Cluster.local/ns/shop/sa/app"),
                Err(|e| *e == SvidError::BadSpiffeId(SpiffeIdError::NotCanonical)),
            ),
            ("ca", CertBuilder::leaf().uri(APP).ca(), Err(|e| matches!(e, SvidError::NotLeaf(_)))),
            (
                "key cert sign",
                CertBuilder::leaf().uri(APP).key_cert_sign(),
                Err(|e| matches!(e, SvidError::NotLeaf(_))),
            ),
            (
                "crl sign",
                CertBuilder::leaf().uri(APP).crl_sign(),
                Err(|e| matches!(e, SvidError::NotLeaf(_))),
            ),
        ];
        for (name, builder, expected) in cases {
            let got = SvidFacts::from_der(&builder.der());
            match (expected, got) {
                (Ok(id), Ok(facts)) => assert_eq!(facts.spiffe_id.as_str(), id, "{name}"),
                (Err(matches), Err(e)) => assert!(matches(&e), "{name}: unexpected error {e:?}"),
                (expected, got) => panic!("{name}: expected {:?}, got {got:?}", expected.ok()),
            }
        }
    }

    #[test_case]
    fn garbage_is_unparsable() {
        for input in [&b""[..], b"\x30", b"not a certificate", &[0x30, 0x82, 0xff, 0xff]] {
            assert!(matches!(SvidFacts::from_der(input), Err(SvidError::Unparsable(_))));
        }
        let mut der = CertBuilder::leaf().uri(APP).der();
        der.push(0);
        assert!(matches!(SvidFacts::from_der(&der), Err(SvidError::Unparsable(_))));
    }

    #[test_case]
    fn validity_window() {
        let facts = SvidFacts::from_der(&CertBuilder::leaf().uri(APP).validity(1_000, 2_000).der()).unwrap();
        assert_eq!((facts.not_before, facts.not_after), (1_000, 2_000));
        assert_eq!(facts.check_time(999), Err(TimeError::NotYetValid));
        assert_eq!(facts.check_time(1_000), Ok(()));
        assert_eq!(facts.check_time(2_000), Ok(()));
        assert_eq!(facts.check_time(2_001), Err(TimeError::Expired));
    }
}
