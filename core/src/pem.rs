//! From the text Envoy hands over to DER bytes.
//!
//! `connection.peer_certificate` is PEM text, and some Envoy versions URL-encode it (as XFCC's
//! `Cert` value always is). Decoding is strict: one `CERTIFICATE` block, standard base64, nothing
//! but whitespace around it.

use std::fmt;

use base64::Engine;

const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
const END: &str = "-----END CERTIFICATE-----";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PemError {
    /// Percent-decoding gave bytes that are not UTF-8.
    NotUtf8,
    /// No `-----BEGIN CERTIFICATE-----` ... `-----END CERTIFICATE-----` block.
    NoCertificateBlock,
    /// Text other than whitespace around the block (a chain, a key, garbage).
    TrailingData,
    /// The block's body is not valid base64.
    Base64(String),
}

impl fmt::Display for PemError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotUtf8 => f.write_str("certificate text is not UTF-8"),
            Self::NoCertificateBlock => f.write_str("no PEM CERTIFICATE block"),
            Self::TrailingData => f.write_str("unexpected text around the PEM CERTIFICATE block"),
            Self::Base64(e) => write!(f, "PEM body is not valid base64: {e}"),
        }
    }
}

impl std::error::Error for PemError {}

/// Decodes a PEM certificate, URL-encoded or not, to DER.
pub fn certificate_der(text: &[u8]) -> Result<Vec<u8>, PemError> {
    if text.starts_with(BEGIN.as_bytes()) {
        let text = std::str::from_utf8(text).map_err(|_| PemError::NotUtf8)?;
        return pem_to_der(text);
    }
    // Envoy URL-encodes PEM with `%` escapes only (no `+` for spaces), so percent-decoding is
    // the exact inverse.
    let decoded = percent_encoding::percent_decode(text).decode_utf8().map_err(|_| PemError::NotUtf8)?;
    pem_to_der(&decoded)
}

fn pem_to_der(text: &str) -> Result<Vec<u8>, PemError> {
    let text = text.trim();
    let body = text.strip_prefix(BEGIN).and_then(|rest| rest.strip_suffix(END)).ok_or_else(|| {
        if text.contains(BEGIN) && text.contains(END) {
            PemError::TrailingData
        } else {
            PemError::NoCertificateBlock
        }
    })?;
    // (A byte search first: the substring search over the whole body costs more.)
    if body.as_bytes().contains(&b'-') && body.contains("-----") {
        return Err(PemError::TrailingData);
    }
    // The body without its whitespace, copied line by line rather than byte by byte; the same
    // bytes as filtering them one by one, so the same error offsets.
    let mut compact = Vec::with_capacity(body.len());
    for piece in body.as_bytes().split(|b| b.is_ascii_whitespace()) {
        compact.extend_from_slice(piece);
    }
    base64::engine::general_purpose::STANDARD.decode(compact).map_err(|e| PemError::Base64(e.to_string()))
}

/// Lowercase hex SHA-256, the form of Envoy's `connection.sha256_peer_certificate_digest`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    // Nibble by nibble rather than 32 formatter calls (`{:02x}`), which cost about as much as
    // hashing a certificate. (from_digit of a nibble is never None.)
    let nibble = |n: u8| char::from_digit(u32::from(n), 16).unwrap_or('0');
    sha2::Sha256::digest(bytes).iter().fold(String::with_capacity(64), |mut hex, byte| {
        hex.push(nibble(byte >> 4));
        hex.push(nibble(byte & 0x0f));
        hex
    })
}

/// PEM text of a DER certificate as Envoy gives it in `connection.peer_certificate`: 64
/// columns, each line ending in a newline. The inverse of [`certificate_der`].
pub fn certificate_pem(der: &[u8]) -> String {
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
    // Base64 is ASCII, so every 64-byte chunk is whole characters.
    for line in body.as_bytes().chunks(64) {
        pem.push_str(&String::from_utf8_lossy(line));
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
    pem
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_case;
    use crate::testing::{pem_encode, url_encode};

    #[test_case]
    fn decodes_pem_plain_and_url_encoded() {
        let der = vec![0x30, 0x03, 0x02, 0x01, 0x07];
        let pem = pem_encode(&der);
        let cases = [
            ("plain", pem.clone()),
            ("url-encoded", url_encode(&pem)),
            ("surrounding whitespace", format!("\n  {pem}\n\n")),
            ("crlf", pem.replace('\n', "\r\n")),
        ];
        for (name, text) in cases {
            assert_eq!(certificate_der(text.as_bytes()), Ok(der.clone()), "{name}");
        }
    }

    #[test_case]
    fn rejects_everything_else() {
        let pem = pem_encode(&[0x30, 0x00]);
        let cases: Vec<(&str, Vec<u8>, PemError)> = vec![
            ("empty", vec![], PemError::NoCertificateBlock),
            ("plain text", b"hello".to_vec(), PemError::NoCertificateBlock),
            ("bad escape bytes", b"%ff%fe".to_vec(), PemError::NotUtf8),
            ("raw non-utf8", [BEGIN.as_bytes(), b"\xff"].concat(), PemError::NotUtf8),
            ("two blocks", format!("{pem}{pem}").into_bytes(), PemError::TrailingData),
            ("text after", format!("{pem}x").into_bytes(), PemError::TrailingData),
            (
                "key label",
                pem.replace("CERTIFICATE", "PRIVATE KEY").into_bytes(),
                PemError::NoCertificateBlock,
            ),
            (
                "bad base64",
                format!("{BEGIN}\nAAAA!!!!\n{END}\n").into_bytes(),
                PemError::Base64("Invalid symbol 33, offset 4.".into()),
            ),
            ("truncated", pem.as_bytes()[..pem.len() - 10].to_vec(), PemError::NoCertificateBlock),
        ];
        for (name, input, expected) in cases {
            assert_eq!(certificate_der(&input), Err(expected), "{name}");
        }
    }

    #[test_case]
    fn sha256_hex_is_lowercase_hex() {
        // FIPS 180-2, appendix B.1.
        assert_eq!(sha256_hex(b"abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert_eq!(sha256_hex(b""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    }
}
