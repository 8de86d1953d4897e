//! The X509-SVID rules a peer certificate must meet, checked on a DER certificate.
//!
//! Envoy has already verified the chain and the signature during the handshake; what it does not
//! know is SPIFFE: that the certificate names exactly one workload, in a valid SPIFFE ID, and is
//! a leaf. Those facts are extracted once per certificate ([`SvidFacts::from_der`]) and cached;
//! the validity window is checked on every request ([`SvidFacts::check_time`]).
//!
//! Of the certificate's extensions only the three the rules read are parsed (subjectAltName,
//! basicConstraints, keyUsage): x509-parser's default deep parse of every known extension costs
//! more than the rest of the certificate, and its table of parsers makes most of the module's
//! X.509 code. Each of the three is read exactly as the deep parse reads it (the same parser,
//! the same handling of duplicates and of malformed values); a test checks that on mutated
//! certificates.

use std::fmt;

use x509_parser::certificate::{X509Certificate, X509CertificateParser};
use x509_parser::der_parser::oid::Oid;
use x509_parser::error::X509Error;
use x509_parser::extensions::{BasicConstraints, GeneralName, KeyUsage, SubjectAlternativeName};
use x509_parser::nom::Parser;
use x509_parser::oid_registry::{
    OID_X509_EXT_BASIC_CONSTRAINTS, OID_X509_EXT_KEY_USAGE, OID_X509_EXT_SUBJECT_ALT_NAME,
};
use x509_parser::prelude::FromDer;

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
            X509CertificateParser::new().with_deep_parse_extensions(false).parse(der).map_err(parse_error)?;
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

/// As nom says it, but with the error's Display rather than its Debug, whose code for every
/// type of x509-parser's errors would be in the module only for this.
fn parse_error(e: x509_parser::nom::Err<X509Error>) -> SvidError {
    use x509_parser::nom::{Err, Needed};
    SvidError::Unparsable(match e {
        Err::Incomplete(Needed::Size(n)) => format!("Parsing requires {n} bytes/chars"),
        Err::Incomplete(Needed::Unknown) => "Parsing requires more data".to_owned(),
        Err::Failure(e) => format!("Parsing Failure: {e}"),
        Err::Error(e) => format!("Parsing Error: {e}"),
    })
}

/// The value of the extension `oid`, parsed as `T`: `Ok(None)` if absent, `Err` if present more
/// than once; `Ok(Some(Err(())))` if its value does not parse (what that means is the caller's
/// choice, as it is in x509-parser's accessors).
fn extension<'a, T: FromDer<'a, X509Error>>(
    cert: &X509Certificate<'a>,
    oid: &Oid<'_>,
) -> Result<Option<Result<T, ()>>, SvidError> {
    let ext = cert.get_extension_unique(oid).map_err(|e| SvidError::Unparsable(e.to_string()))?;
    // Bytes after the value are ignored, as the deep parse ignores them.
    Ok(ext.map(|ext| T::from_der(ext.value).map(|(_, value)| value).map_err(|_| ())))
}

/// As x509-parser's accessors report an extension whose value does not parse.
fn invalid_extension() -> SvidError {
    SvidError::Unparsable(X509Error::InvalidExtensions.to_string())
}

fn single_spiffe_id(cert: &X509Certificate<'_>) -> Result<SpiffeId, SvidError> {
    let san = extension::<SubjectAlternativeName>(cert, &OID_X509_EXT_SUBJECT_ALT_NAME)?
        .transpose()
        .map_err(|()| invalid_extension())?;
    the_spiffe_id(san.as_ref().map(|san| san.general_names.as_slice()).unwrap_or_default())
}

/// The one URI SAN among `names`, as a workload SPIFFE ID.
fn the_spiffe_id(names: &[GeneralName<'_>]) -> Result<SpiffeId, SvidError> {
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
    // A basicConstraints value that does not parse counts as absent, as x509-parser's
    // `basic_constraints()` has it.
    let basic = extension::<BasicConstraints>(cert, &OID_X509_EXT_BASIC_CONSTRAINTS)?.and_then(Result::ok);
    if basic.is_some_and(|bc| bc.ca) {
        return Err(SvidError::NotLeaf("basicConstraints CA is true"));
    }
    let usage = extension::<KeyUsage>(cert, &OID_X509_EXT_KEY_USAGE)?
        .transpose()
        .map_err(|()| invalid_extension())?;
    if let Some(usage) = usage {
        if usage.key_cert_sign() {
            return Err(SvidError::NotLeaf("key usage includes keyCertSign"));
        }
        if usage.crl_sign() {
            return Err(SvidError::NotLeaf("key usage includes cRLSign"));
        }
    }
    Ok(())
}

#[cfg(any(test, feature = "testing"))]
/// The checks as they were written on x509-parser's deep parse of every extension and its
/// accessors: what [`SvidFacts::from_der`] must still give, byte for byte of input (its tests
/// and the `certificate` fuzz target compare the two).
pub fn deep_parse_reference(der: &[u8]) -> Result<SvidFacts, SvidError> {
    let unparsable = |e: X509Error| SvidError::Unparsable(e.to_string());
    let (rest, cert) = x509_parser::parse_x509_certificate(der).map_err(parse_error)?;
    if !rest.is_empty() {
        return Err(SvidError::Unparsable(format!("{} bytes after the certificate", rest.len())));
    }
    let san = cert.subject_alternative_name().map_err(unparsable)?;
    // (Which URI SAN names the workload is shared with the code under test: the reference is
    // about what the parse finds.)
    let spiffe_id = the_spiffe_id(san.map(|ext| ext.value.general_names.as_slice()).unwrap_or_default())?;
    if cert.basic_constraints().map_err(unparsable)?.is_some_and(|bc| bc.value.ca) {
        return Err(SvidError::NotLeaf("basicConstraints CA is true"));
    }
    if let Some(usage) = cert.key_usage().map_err(unparsable)? {
        if usage.value.key_cert_sign() {
            return Err(SvidError::NotLeaf("key usage includes keyCertSign"));
        }
        if usage.value.crl_sign() {
            return Err(SvidError::NotLeaf("key usage includes cRLSign"));
        }
    }
    let validity = cert.validity();
    Ok(SvidFacts {
        spiffe_id,
        not_before: validity.not_before.timestamp(),
        not_after: validity.not_after.timestamp(),
    })
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

    /// Parsing only the three extensions the rules read decides exactly as the deep parse did,
    /// on valid certificates and on every single-byte corruption and truncation of them
    /// (malformed and duplicated extensions, bad lengths, bad tags, bad times).
    #[test_case]
    fn same_verdicts_as_the_deep_parse() {
        let certificates = [
            CertBuilder::workload(APP),
            CertBuilder::leaf().uri(APP).dns("app.local"),
            CertBuilder::leaf().uri(APP).ca(),
            CertBuilder::leaf().uri(APP).key_cert_sign(),
            CertBuilder::leaf().uri(APP).crl_sign(),
            CertBuilder::leaf().uri(APP).uri("spiffe://cluster.local/ns/x/sa/y"),
            // A URI SAN that is not UTF-8.
            CertBuilder::leaf().raw_uri(b"spiffe://cluster.local/ns/shop/sa/\xff"),
            // Two subjectAltName extensions.
            CertBuilder::leaf().uri(APP).raw_uri(APP.as_bytes()),
            CertBuilder::leaf(),
        ];
        let mut compared = 0;
        let mut outcomes = std::collections::BTreeSet::new();
        for builder in certificates {
            let der = builder.der();
            let mut check = |input: &[u8]| {
                let got = SvidFacts::from_der(input);
                assert_eq!(got, deep_parse_reference(input), "input {input:02x?}");
                outcomes.insert(match got {
                    Ok(_) => "ok".to_owned(),
                    Err(SvidError::Unparsable(e)) => format!("unparsable: {e}"),
                    Err(e) => format!("{:?}", std::mem::discriminant(&e)),
                });
                compared += 1;
            };
            check(&der);
            for len in 0..der.len() {
                check(&der[..len]);
            }
            for at in 0..der.len() {
                for corrupt in [|b: u8| b ^ 0x01, |b: u8| b ^ 0x80, |_| 0x00, |_| 0xff] {
                    let mut input = der.clone();
                    input[at] = corrupt(input[at]);
                    check(&input);
                }
            }
        }
        // The corpus reaches every kind of outcome, the extensions' own errors included.
        for expected in ["ok", "unparsable: duplicate extensions", "unparsable: invalid extensions"] {
            assert!(outcomes.contains(expected), "no {expected:?} among {outcomes:?} ({compared} inputs)");
        }
        assert!(outcomes.len() >= 6, "{outcomes:?}");
    }
}
