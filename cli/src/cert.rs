//! Certificate files as a process presents them (a PEM chain as istio-agent writes
//! `cert-chain.pem`, one PEM certificate, or DER), and the CAs a listener trusts.

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

use loopback_guard_core::pem;
use x509_parser::certificate::X509Certificate;
use x509_parser::prelude::FromDer;

/// Where the peer certificate was read from, and in which form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertFormat {
    Pem,
    Der,
}

impl CertFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pem => "PEM",
            Self::Der => "DER",
        }
    }
}

/// The client certificate a process presents: the leaf of the file (a PEM chain, as
/// istio-agent's `cert-chain.pem`, starts with it).
#[derive(Debug, Clone)]
pub struct PeerCertificate {
    pub path: PathBuf,
    pub format: CertFormat,
    /// Certificates in the file (the leaf and any intermediates).
    pub chain_length: usize,
    /// The leaf.
    pub der: Vec<u8>,
    /// Every certificate of the file, the leaf first.
    pub chain: Vec<Vec<u8>>,
    /// Lowercase hex SHA-256 of the DER: `connection.sha256_peer_certificate_digest`.
    pub sha256: String,
}

/// A certificate file the CLI cannot use, with what was wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFileError(pub String);

impl fmt::Display for CertFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CertFileError {}

const BEGIN: &str = "-----BEGIN ";
const END: &str = "-----END ";
const DASHES: &str = "-----";

impl PeerCertificate {
    pub fn read(path: &Path) -> Result<Self, CertFileError> {
        let bytes =
            fs::read(path).map_err(|e| CertFileError(format!("cannot read {}: {e}", path.display())))?;
        Self::parse(path, &bytes)
    }

    /// A certificate from the bytes of `path`: PEM (one certificate or a chain, leaf first) or DER.
    pub fn parse(path: &Path, bytes: &[u8]) -> Result<Self, CertFileError> {
        let (format, chain) = certificates(path, bytes)?;
        let der = chain.first().cloned().unwrap_or_default();
        let sha256 = pem::sha256_hex(&der);
        Ok(Self { path: path.to_owned(), format, chain_length: chain.len(), der, chain, sha256 })
    }

    /// The leaf as Envoy gives it in `connection.peer_certificate`: PEM, 64 columns, newlines.
    pub fn envoy_pem(&self) -> String {
        pem::certificate_pem(&self.der)
    }
}

/// Every certificate in a PEM or DER file, in order (at least one).
fn certificates(path: &Path, bytes: &[u8]) -> Result<(CertFormat, Vec<Vec<u8>>), CertFileError> {
    let name = path.display();
    let error = |what: String| CertFileError(format!("{name}: {what}"));
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(error("the file is empty, not a certificate".into()));
    }
    if contains(bytes, BEGIN.as_bytes()) {
        let text = std::str::from_utf8(bytes).map_err(|_| error("PEM text that is not UTF-8".into()))?;
        let blocks = pem_blocks(text).map_err(error)?;
        let mut chain = Vec::new();
        for block in blocks.iter().filter(|block| block.label == "CERTIFICATE") {
            let number = chain.len() + 1;
            let der = pem::certificate_der(block.text.as_bytes())
                .map_err(|e| error(format!("certificate {number}: {e}")))?;
            check_der_envelope(&der)
                .map_err(|e| error(format!("certificate {number}: its content is not DER: {e}")))?;
            chain.push(der);
        }
        if chain.is_empty() {
            let labels: Vec<&str> = blocks.iter().map(|block| block.label).collect();
            return Err(error(format!(
                "no CERTIFICATE block, only {}: pass the certificate file, not the key",
                labels.join(", ")
            )));
        }
        Ok((CertFormat::Pem, chain))
    } else if bytes.first() == Some(&0x30) {
        check_der_envelope(bytes).map_err(|e| error(format!("not a DER certificate: {e}")))?;
        Ok((CertFormat::Der, vec![bytes.to_vec()]))
    } else if std::str::from_utf8(bytes).is_ok() {
        Err(error("text without a -----BEGIN CERTIFICATE----- block: not a certificate".into()))
    } else {
        Err(error("neither PEM nor DER (DER starts with a SEQUENCE, 0x30): not a certificate".into()))
    }
}

/// The CAs the listener trusts for client certificates (`validation_context.trusted_ca`).
#[derive(Debug, Clone)]
pub struct TrustedCas {
    pub path: PathBuf,
    pub ders: Vec<Vec<u8>>,
}

impl TrustedCas {
    pub fn read(path: &Path) -> Result<Self, CertFileError> {
        let bytes =
            fs::read(path).map_err(|e| CertFileError(format!("cannot read {}: {e}", path.display())))?;
        let (_, ders) = certificates(path, &bytes)?;
        for (index, der) in ders.iter().enumerate() {
            X509Certificate::from_der(der).map_err(|e| {
                CertFileError(format!("{}: certificate {} does not parse: {e}", path.display(), index + 1))
            })?;
        }
        Ok(Self { path: path.to_owned(), ders })
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|window| window == needle)
}

struct PemBlock<'a> {
    label: &'a str,
    /// From `-----BEGIN` to the end of `-----END <label>-----`.
    text: &'a str,
}

/// Every `-----BEGIN X-----` ... `-----END X-----` block, in order; a block without its end is
/// a truncated file.
fn pem_blocks(text: &str) -> Result<Vec<PemBlock<'_>>, String> {
    let mut blocks = Vec::new();
    let mut offset = 0;
    while let Some(found) = text.get(offset..).and_then(|rest| rest.find(BEGIN)) {
        let start = offset + found;
        let after_begin = start + BEGIN.len();
        let rest = text.get(after_begin..).unwrap_or_default();
        let label_end = rest.find(DASHES).ok_or("a -----BEGIN line without its closing dashes")?;
        let label = rest.get(..label_end).unwrap_or_default();
        let end_line = format!("{END}{label}{DASHES}");
        let body_start = after_begin + label_end + DASHES.len();
        let Some(end) = text.get(body_start..).and_then(|rest| rest.find(&end_line)) else {
            return Err(format!(
                "truncated PEM: block {} ({label}) has no {end_line} line",
                blocks.len() + 1
            ));
        };
        let stop = body_start + end + end_line.len();
        blocks.push(PemBlock { label, text: text.get(start..stop).unwrap_or_default() });
        offset = stop;
    }
    Ok(blocks)
}

/// The outer DER TLV: a SEQUENCE whose length is exactly the rest of the bytes. Whether its
/// content is a certificate the filter accepts is the decision's question (`certificate_invalid`).
fn check_der_envelope(der: &[u8]) -> Result<(), String> {
    let (&tag, rest) = der.split_first().ok_or("no bytes")?;
    if tag != 0x30 {
        return Err(format!("starts with 0x{tag:02x}, not a SEQUENCE (0x30)"));
    }
    let (&first, rest) = rest.split_first().ok_or("truncated: no length")?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 {
            return Err(format!("unsupported length form 0x{first:02x}"));
        }
        let bytes = rest.get(..count).ok_or("truncated in its length")?;
        let len = bytes.iter().fold(0usize, |len, byte| len << 8 | usize::from(*byte));
        (len, rest.get(count..).unwrap_or_default())
    };
    match rest.len().cmp(&len) {
        std::cmp::Ordering::Less => Err(format!("truncated: {len} bytes announced, {} present", rest.len())),
        std::cmp::Ordering::Greater => Err(format!("{} bytes after the certificate", rest.len() - len)),
        std::cmp::Ordering::Equal => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    fn parse(bytes: &[u8]) -> Result<PeerCertificate, CertFileError> {
        PeerCertificate::parse(Path::new("x.pem"), bytes)
    }

    fn pem_of(der: &[u8], label: &str) -> String {
        let body = base64::engine::general_purpose::STANDARD.encode(der);
        format!("-----BEGIN {label}-----\n{body}\n-----END {label}-----\n")
    }

    // A DER SEQUENCE standing in for a certificate: the envelope is all this file checks.
    const SEQ: &[u8] = &[0x30, 0x03, 0x02, 0x01, 0x07];

    #[test]
    fn reads_der_pem_and_chains() {
        let der = parse(SEQ).unwrap();
        assert_eq!((der.format, der.chain_length, der.der.as_slice()), (CertFormat::Der, 1, SEQ));
        let pem = parse(pem_of(SEQ, "CERTIFICATE").as_bytes()).unwrap();
        assert_eq!((pem.format, pem.chain_length), (CertFormat::Pem, 1));
        let other = [0x30, 0x00];
        let chain = format!("{}{}", pem_of(SEQ, "CERTIFICATE"), pem_of(&other, "CERTIFICATE"));
        let chain = parse(chain.as_bytes()).unwrap();
        assert_eq!((chain.chain_length, chain.der.as_slice()), (2, SEQ), "the leaf comes first");
        let with_key = format!("{}{}", pem_of(&[1, 2], "PRIVATE KEY"), pem_of(SEQ, "CERTIFICATE"));
        assert_eq!(parse(with_key.as_bytes()).unwrap().der, SEQ);
        assert_eq!(pem.sha256, pem::sha256_hex(SEQ));
        assert_eq!(pem::certificate_der(pem.envoy_pem().as_bytes()).unwrap(), SEQ);
    }

    #[test]
    fn refuses_what_is_not_a_certificate() {
        let pem = pem_of(SEQ, "CERTIFICATE");
        let cases: Vec<(&str, Vec<u8>, &str)> = vec![
            ("empty", vec![], "empty"),
            ("blank", b"\n \n".to_vec(), "empty"),
            ("text", b"hello\n".to_vec(), "without a -----BEGIN CERTIFICATE-----"),
            ("binary", vec![0xff, 0x00, 0x12], "neither PEM nor DER"),
            ("key only", pem_of(&[1], "PRIVATE KEY").into_bytes(), "only PRIVATE KEY"),
            ("truncated pem", pem.as_bytes()[..pem.len() - 12].to_vec(), "truncated PEM"),
            ("cut header", b"-----BEGIN CERTIF".to_vec(), "closing dashes"),
            ("truncated der", SEQ[..4].to_vec(), "truncated: 3 bytes announced, 2 present"),
            ("der with trailing bytes", [SEQ, &[0]].concat(), "1 bytes after"),
            (
                "not der inside pem",
                pem_of(b"hello", "CERTIFICATE").into_bytes(),
                "certificate 1: its content is not DER",
            ),
            (
                "bad base64",
                b"-----BEGIN CERTIFICATE-----\n!!\n-----END CERTIFICATE-----\n".to_vec(),
                "base64",
            ),
            ("non-utf8 pem", [b"-----BEGIN CERTIFICATE-----\n\xff".as_slice()].concat(), "not UTF-8"),
        ];
        for (name, input, want) in cases {
            let error = parse(&input).expect_err(name);
            assert!(error.0.starts_with("x.pem: ") && error.0.contains(want), "{name}: {error}");
        }
    }
}
