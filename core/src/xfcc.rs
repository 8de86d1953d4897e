//! The `x-forwarded-client-cert` fallback, for Envoy versions without
//! `connection.peer_certificate`.
//!
//! The header is attacker-reachable: depending on `forward_client_cert_details`, Envoy may pass a
//! client's own header through. So a certificate is taken from it only when it provably is the
//! connection's: from the element this proxy appended (the last one), whose `Hash` equals the
//! connection's `connection.sha256_peer_certificate_digest`, and whose `Cert` itself hashes to
//! that digest. A forged element cannot meet the last rule without the real certificate bytes.

use std::fmt;

use crate::pem::{self, sha256_hex, PemError};

/// One element of the header: its key=value pairs, keys lowercased.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Element {
    pairs: Vec<(String, String)>,
}

impl Element {
    /// The value of `key` (case-insensitive); an error if the key appears more than once.
    pub fn unique(&self, key: &str) -> Result<Option<&str>, XfccError> {
        let mut values = self.pairs.iter().filter(|(k, _)| k.eq_ignore_ascii_case(key));
        let first = values.next().map(|(_, v)| v.as_str());
        if values.next().is_some() {
            return Err(XfccError::DuplicateKey(key.to_owned()));
        }
        Ok(first)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum XfccError {
    /// The header does not follow Envoy's XFCC grammar.
    Malformed(&'static str),
    /// The header has no element.
    Empty,
    DuplicateKey(String),
    MissingHash,
    /// The last element's `Hash` is not the connection's certificate digest.
    HashMismatch,
    MissingCert,
    Cert(PemError),
    /// The `Cert` value does not hash to the connection's certificate digest.
    CertDigestMismatch,
}

impl fmt::Display for XfccError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Malformed(why) => write!(f, "malformed XFCC header: {why}"),
            Self::Empty => f.write_str("XFCC header has no element"),
            Self::DuplicateKey(key) => write!(f, "XFCC element has {key} more than once"),
            Self::MissingHash => f.write_str("XFCC element has no Hash"),
            Self::HashMismatch => f.write_str("XFCC Hash is not the connection's certificate digest"),
            Self::MissingCert => f.write_str("XFCC element has no Cert"),
            Self::Cert(e) => write!(f, "XFCC Cert: {e}"),
            Self::CertDigestMismatch => {
                f.write_str("XFCC Cert does not hash to the connection's certificate digest")
            }
        }
    }
}

impl std::error::Error for XfccError {}

/// Parses the header into its elements.
///
/// Grammar (Envoy's): elements separated by `,`, pairs by `;`, `key=value`. A value containing
/// `,` `;` or `"` is double-quoted; inside the quotes a backslash escapes the next character
/// (Envoy writes `\"`, `\\`, and in some versions `\;` and `\,`). Envoy writes `URI=` values
/// unquoted even when they contain `=`, which is unambiguous since a key never does.
pub fn parse(header: &str) -> Result<Vec<Element>, XfccError> {
    let mut elements = Vec::new();
    let mut element = Element::default();
    let mut chars = header.chars().peekable();
    loop {
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            match c {
                '=' => break,
                ',' | ';' | '"' | '\\' => return Err(XfccError::Malformed("unexpected character in a key")),
                _ => key.push(c),
            }
            chars.next();
        }
        if chars.next() != Some('=') {
            return Err(XfccError::Malformed("pair without '='"));
        }
        let key = key.trim();
        if key.is_empty() {
            return Err(XfccError::Malformed("empty key"));
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    Some('"') => break,
                    Some('\\') => match chars.next() {
                        Some(escaped) => value.push(escaped),
                        None => return Err(XfccError::Malformed("unterminated quoted value")),
                    },
                    Some(c) => value.push(c),
                    None => return Err(XfccError::Malformed("unterminated quoted value")),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                match c {
                    ',' | ';' => break,
                    '"' | '\\' => {
                        return Err(XfccError::Malformed("unquoted value with a reserved character"))
                    }
                    _ => value.push(c),
                }
                chars.next();
            }
        }
        element.pairs.push((key.to_ascii_lowercase(), value));
        match chars.next() {
            Some(';') => {}
            Some(',') => elements.push(std::mem::take(&mut element)),
            None => {
                elements.push(element);
                return Ok(elements);
            }
            Some(_) => return Err(XfccError::Malformed("text after a quoted value")),
        }
    }
}

/// The DER certificate of this connection's peer, taken from the header as the module docs say.
pub fn peer_certificate_der(header: &str, connection_digest: &str) -> Result<Vec<u8>, XfccError> {
    let elements = parse(header)?;
    let ours = elements.last().ok_or(XfccError::Empty)?;
    let hash = ours.unique("hash")?.ok_or(XfccError::MissingHash)?;
    if !hash.eq_ignore_ascii_case(connection_digest) {
        return Err(XfccError::HashMismatch);
    }
    let cert = ours.unique("cert")?.ok_or(XfccError::MissingCert)?;
    let der = pem::certificate_der(cert.as_bytes()).map_err(XfccError::Cert)?;
    if !sha256_hex(&der).eq_ignore_ascii_case(connection_digest) {
        return Err(XfccError::CertDigestMismatch);
    }
    Ok(der)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_case;
    use crate::testing::{url_encode, CertBuilder};

    fn pairs(element: &Element) -> Vec<(&str, &str)> {
        element.pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
    }

    #[test_case]
    fn grammar() {
        let parsed =
            parse(r#"By=spiffe://a/b;Hash=ab12;Subject="CN=x,O=\"y\";z=1";URI=spiffe://c/d,Hash=ff"#)
                .unwrap();
        assert_eq!(parsed.len(), 2);
        assert_eq!(
            pairs(&parsed[0]),
            [
                ("by", "spiffe://a/b"),
                ("hash", "ab12"),
                ("subject", r#"CN=x,O="y";z=1"#),
                ("uri", "spiffe://c/d")
            ]
        );
        assert_eq!(pairs(&parsed[1]), [("hash", "ff")]);
        assert_eq!(pairs(&parse("Hash=").unwrap()[0]), [("hash", "")]);
        // As Envoy writes them: `=` in an unquoted URI, `\;` and `\,` escapes in a quoted Subject.
        assert_eq!(pairs(&parse("URI=spiffe://td/a?x=1").unwrap()[0]), [("uri", "spiffe://td/a?x=1")]);
        assert_eq!(
            pairs(&parse(r#"Subject="CN=x\"\;Cert=\"abc\\q\;y=z,O=Foo\, Inc.";Hash=ab"#).unwrap()[0]),
            [("subject", r#"CN=x";Cert="abc\q;y=z,O=Foo, Inc."#), ("hash", "ab")]
        );
    }

    #[test_case]
    fn malformed_headers() {
        let cases = [
            ("", "pair without '='"),
            ("Hash", "pair without '='"),
            ("=x", "empty key"),
            ("Hash=a;", "pair without '='"),
            ("Hash=a,", "pair without '='"),
            ("Hash=\"unterminated", "unterminated quoted value"),
            ("Hash=\"a\"b", "text after a quoted value"),
            ("Hash=a\"b", "unquoted value with a reserved character"),
            ("Hash=\"ends in an escape\\", "unterminated quoted value"),
            ("Ha\"sh=a", "unexpected character in a key"),
            (",Hash=a", "unexpected character in a key"),
        ];
        for (header, why) in cases {
            assert_eq!(parse(header), Err(XfccError::Malformed(why)), "{header:?}");
        }
    }

    #[test_case]
    fn takes_the_certificate_only_when_it_is_the_connections() {
        let own = CertBuilder::leaf().uri("spiffe://td/ns/a/sa/app");
        let other = CertBuilder::leaf().uri("spiffe://td/ns/a/sa/rogue").validity(1, 4_102_444_800);
        let (own_der, other_der) = (own.der(), other.der());
        let (own_hash, other_hash) = (sha256_hex(&own_der), sha256_hex(&other_der));
        let own_cert = url_encode(own.pem());
        let other_cert = url_encode(other.pem());
        let element =
            |hash: &str, cert: &str| format!("Hash={hash};Cert=\"{cert}\";URI=spiffe://td/ns/a/sa/app");

        let cases: Vec<(&str, String, &str, Result<&Vec<u8>, XfccError>)> = vec![
            ("own element", element(&own_hash, &own_cert), &own_hash, Ok(&own_der)),
            ("uppercase hash", element(&own_hash.to_uppercase(), &own_cert), &own_hash, Ok(&own_der)),
            (
                "forged element before ours",
                format!("{},{}", element(&other_hash, &other_cert), element(&own_hash, &own_cert)),
                &own_hash,
                Ok(&own_der),
            ),
            (
                "forged element after ours",
                format!("{},{}", element(&own_hash, &own_cert), element(&other_hash, &other_cert)),
                &own_hash,
                Err(XfccError::HashMismatch),
            ),
            (
                "someone else's cert under our hash",
                element(&own_hash, &other_cert),
                &own_hash,
                Err(XfccError::CertDigestMismatch),
            ),
            ("no hash", format!("Cert=\"{own_cert}\""), &own_hash, Err(XfccError::MissingHash)),
            ("no cert", format!("Hash={own_hash}"), &own_hash, Err(XfccError::MissingCert)),
            (
                "two hashes",
                format!("Hash={own_hash};Hash={own_hash};Cert=\"{own_cert}\""),
                &own_hash,
                Err(XfccError::DuplicateKey("hash".into())),
            ),
            // Envoy always URL-encodes; plain PEM is still the connection's own certificate.
            (
                "cert not url-encoded",
                element(&own_hash, &own.pem().replace('\n', "")),
                &own_hash,
                Ok(&own_der),
            ),
            (
                "cert with bad base64",
                element(&own_hash, &url_encode("-----BEGIN CERTIFICATE-----\n!!\n-----END CERTIFICATE-----")),
                &own_hash,
                Err(XfccError::Cert(PemError::Base64("Invalid symbol 33, offset 0.".into()))),
            ),
            (
                "truncated cert",
                element(&own_hash, &own_cert[..own_cert.len() / 2]),
                &own_hash,
                Err(XfccError::Cert(PemError::NoCertificateBlock)),
            ),
        ];
        for (name, header, digest, expected) in cases {
            assert_eq!(peer_certificate_der(&header, digest), expected.cloned(), "{name}");
        }
    }

    #[test_case]
    fn sha256_is_lowercase_hex() {
        assert_eq!(sha256_hex(b"abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }
}
