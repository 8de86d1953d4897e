//! Test certificates, built at test time.
//!
//! They are signed with a fake key: the filter never verifies signatures (Envoy did that in the
//! handshake), and leaving out a crypto backend keeps these tests buildable for
//! wasm32-unknown-unknown.
//!
//! Built for core's own tests and, with the `testing` feature, for every other crate's tests,
//! benches and fuzz targets: one of each helper for the whole workspace.
// Test code: a helper that cannot build its fixture should stop the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use rcgen::string::Ia5String;
use rcgen::{
    BasicConstraints, CertificateParams, CustomExtension, IsCa, KeyIdMethod, KeyUsagePurpose, PublicKeyData,
    SanType, SerialNumber, SignatureAlgorithm, SigningKey, PKCS_ECDSA_P256_SHA256,
};
use time::OffsetDateTime;

struct FakeKey;

impl PublicKeyData for FakeKey {
    fn der_bytes(&self) -> &[u8] {
        // An uncompressed P-256 point's shape; its value is never used.
        &[4; 65]
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        &PKCS_ECDSA_P256_SHA256
    }
}

impl SigningKey for FakeKey {
    fn sign(&self, _msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        Ok(vec![0x30, 0x06, 0x02, 0x01, 0x01, 0x02, 0x01, 0x01])
    }
}

/// Builds a DER certificate, one property at a time.
pub struct CertBuilder(CertificateParams);

impl CertBuilder {
    /// A leaf valid from 2020 to 2100, with no SAN yet.
    pub fn leaf() -> Self {
        let mut params = CertificateParams::default();
        params.key_identifier_method = KeyIdMethod::PreSpecified(vec![1; 20]);
        params.serial_number = Some(SerialNumber::from(vec![1]));
        Self(params).validity(1_577_836_800, 4_102_444_800)
    }

    /// A workload certificate shaped like Istio's: CN and one URI SAN naming `spiffe_id`,
    /// digitalSignature and keyEncipherment, client and server auth, a 16-byte serial.
    pub fn workload(spiffe_id: &str) -> Self {
        let mut builder = Self::leaf().uri(spiffe_id);
        builder.0.distinguished_name.push(rcgen::DnType::CommonName, spiffe_id);
        builder.0.is_ca = IsCa::ExplicitNoCa;
        builder.0.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        builder.0.extended_key_usages =
            vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth, rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        builder.0.serial_number = Some(SerialNumber::from(vec![0x42; 16]));
        builder
    }

    pub fn uri(mut self, uri: &str) -> Self {
        self.0.subject_alt_names.push(SanType::URI(Ia5String::try_from(uri).unwrap()));
        self
    }

    /// A subjectAltName extension holding one URI SAN with these exact bytes, which need not be
    /// ASCII (an IA5String cannot say otherwise; a forged certificate can). Use instead of
    /// [`CertBuilder::uri`] and [`CertBuilder::dns`], not with them: a certificate with two SAN
    /// extensions does not parse.
    pub fn raw_uri(mut self, uri: &[u8]) -> Self {
        // SubjectAltName ::= SEQUENCE { [6] IMPLICIT IA5String }
        let name = der_tlv(0x86, uri);
        let content = der_tlv(0x30, &name);
        self.0.custom_extensions.push(CustomExtension::from_oid_content(&[2, 5, 29, 17], content));
        self
    }

    pub fn dns(mut self, name: &str) -> Self {
        self.0.subject_alt_names.push(SanType::DnsName(Ia5String::try_from(name).unwrap()));
        self
    }

    pub fn ca(mut self) -> Self {
        self.0.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        self
    }

    pub fn key_cert_sign(mut self) -> Self {
        self.0.key_usages.push(KeyUsagePurpose::KeyCertSign);
        self
    }

    pub fn crl_sign(mut self) -> Self {
        self.0.key_usages.push(KeyUsagePurpose::CrlSign);
        self
    }

    /// notBefore and notAfter, in seconds since the Unix epoch.
    pub fn validity(mut self, not_before: i64, not_after: i64) -> Self {
        self.0.not_before = OffsetDateTime::from_unix_timestamp(not_before).unwrap();
        self.0.not_after = OffsetDateTime::from_unix_timestamp(not_after).unwrap();
        self
    }

    pub fn der(&self) -> Vec<u8> {
        self.0.self_signed(&FakeKey).unwrap().der().to_vec()
    }

    pub fn pem(&self) -> String {
        pem_encode(&self.der())
    }
}

/// One DER tag-length-value with a definite length (short form below 128 bytes, else long).
pub fn der_tlv(tag: u8, value: &[u8]) -> Vec<u8> {
    let len = value.len();
    let mut out = vec![tag];
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes: Vec<u8> = len.to_be_bytes().into_iter().skip_while(|b| *b == 0).collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend(bytes);
    }
    out.extend_from_slice(value);
    out
}

/// PEM text of a DER certificate, wrapped at 64 columns as Envoy prints it.
pub use crate::pem::certificate_pem as pem_encode;

/// Percent-encodes as Envoy writes the PEM into XFCC's `Cert` value and, on versions that
/// encode it, into `connection.peer_certificate`: every byte but ASCII letters, digits and
/// `* - . _`, with uppercase hex digits (`Http::Utility::PercentEncoding`, the table
/// `kUrlEncodedCharTable` in envoy's source/common/http/utility.cc).
pub fn url_encode(text: impl AsRef<[u8]>) -> String {
    let mut out = String::new();
    for &byte in text.as_ref() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'*' | b'-' | b'.' | b'_') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Shared data: key -> (value, compare-and-swap token).
type SharedData = std::collections::HashMap<String, (Vec<u8>, u32)>;

/// A [`Host`](crate::host::Host) over maps: `.with_property(..)`, `.with_header(..)`.
#[derive(Default, Clone)]
pub struct FakeHost {
    properties: std::collections::HashMap<String, Result<Vec<u8>, String>>,
    headers: std::collections::HashMap<String, String>,
    pub reads: std::cell::RefCell<Vec<String>>,
    /// Reads are not recorded (for benchmarks, where recording would be measured too).
    untraced: bool,
    now: Option<i64>,
    end_of_stream: Option<bool>,
    /// A connection's host (connection scope): no request headers at all.
    no_request_headers: bool,
    /// Shared data: key -> (value, token); shared by clones, as the VMs of one Envoy share it.
    shared: std::rc::Rc<std::cell::RefCell<SharedData>>,
    /// How many more writes lose a compare-and-swap race.
    cas_conflicts: std::rc::Rc<std::cell::Cell<usize>>,
}

/// The clock of every [`FakeHost`] unless set with [`FakeHost::at`].
pub const FAKE_NOW: i64 = 1_800_000_000;

impl FakeHost {
    pub fn with_property(mut self, path: &[&str], value: impl Into<Vec<u8>>) -> Self {
        self.set(path, value);
        self
    }

    pub fn with_failing_property(mut self, path: &[&str]) -> Self {
        self.fail(path);
        self
    }

    pub fn set(&mut self, path: &[&str], value: impl Into<Vec<u8>>) {
        self.properties.insert(path.join("."), Ok(value.into()));
    }

    /// Reading `path` fails as a host call can.
    pub fn fail(&mut self, path: &[&str]) {
        self.properties.insert(path.join("."), Err("status 1".into()));
    }

    pub fn set_header(&mut self, name: &str, value: &str) {
        self.headers.insert(name.to_owned(), value.to_owned());
    }

    /// A request header as set.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }

    /// A property as set, unless it was set to fail.
    pub fn property_value(&self, path: &[&str]) -> Option<&[u8]> {
        self.properties.get(&path.join(".")).and_then(|value| value.as_deref().ok())
    }

    /// Reads are not recorded in [`FakeHost::reads`].
    pub fn untraced(mut self) -> Self {
        self.untraced = true;
        self
    }

    fn trace(&self, read: impl FnOnce() -> String) {
        if !self.untraced {
            self.reads.borrow_mut().push(read());
        }
    }

    pub fn without_property(mut self, path: &[&str]) -> Self {
        self.properties.remove(&path.join("."));
        self
    }

    pub fn at(mut self, now: i64) -> Self {
        self.now = Some(now);
        self
    }

    /// Whether the request headers ended the stream (a bodiless GET does unless told otherwise).
    pub fn end_of_stream(mut self, end: bool) -> Self {
        self.end_of_stream = Some(end);
        self
    }

    /// The next `n` shared-data writes fail as if another worker had written first.
    pub fn with_cas_conflicts(self, n: usize) -> Self {
        self.cas_conflicts.set(n);
        self
    }

    /// The same shared data as `other` (another worker of the same Envoy).
    pub fn sharing_with(mut self, other: &FakeHost) -> Self {
        self.shared = std::rc::Rc::clone(&other.shared);
        self
    }

    /// A connection's host, as the network filter has it: no request headers.
    pub fn without_request_headers(mut self) -> Self {
        self.no_request_headers = true;
        self
    }

    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.set_header(name, value);
        self
    }
}

impl crate::host::Host for FakeHost {
    fn property(&self, path: &[&str]) -> Result<Option<Vec<u8>>, crate::host::HostError> {
        let key = path.join(".");
        self.trace(|| key.clone());
        match self.properties.get(&key) {
            None => Ok(None),
            Some(Ok(v)) => Ok(Some(v.clone())),
            Some(Err(e)) => Err(crate::host::HostError(e.clone())),
        }
    }

    fn request_header(&self, name: &str) -> Result<Option<String>, crate::host::HostError> {
        self.trace(|| format!("header {name}"));
        Ok(self.headers.get(name).filter(|_| !self.no_request_headers).cloned())
    }

    fn now(&self) -> Result<i64, crate::host::HostError> {
        self.trace(|| "clock".to_owned());
        Ok(self.now.unwrap_or(FAKE_NOW))
    }

    fn end_of_stream(&self) -> bool {
        self.end_of_stream.unwrap_or(true)
    }

    fn has_request_headers(&self) -> bool {
        !self.no_request_headers
    }

    fn shared_data(&self, key: &str) -> Result<(Option<Vec<u8>>, Option<u32>), crate::host::HostError> {
        self.trace(|| format!("shared {key}"));
        Ok(match self.shared.borrow().get(key) {
            Some((value, cas)) => (Some(value.clone()), Some(*cas)),
            None => (None, None),
        })
    }

    fn set_shared_data(
        &self,
        key: &str,
        value: &[u8],
        cas: Option<u32>,
    ) -> Result<bool, crate::host::HostError> {
        self.trace(|| format!("set shared {key}"));
        if self.cas_conflicts.get() > 0 {
            self.cas_conflicts.set(self.cas_conflicts.get() - 1);
            return Ok(false);
        }
        let mut shared = self.shared.borrow_mut();
        let current = shared.get(key).map(|(_, token)| *token);
        if cas.is_some() && current.is_some() && cas != current {
            return Ok(false);
        }
        let next = current.unwrap_or(0) + 1;
        shared.insert(key.to_owned(), (value.to_vec(), next));
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_case;

    #[test_case]
    fn url_encode_keeps_what_envoy_keeps() {
        assert_eq!(
            url_encode("-----BEGIN CERTIFICATE-----\nab+/=\n"),
            "-----BEGIN%20CERTIFICATE-----%0Aab%2B%2F%3D%0A"
        );
        assert_eq!(url_encode(b"a.b_c*d~e\xe9 "), "a.b_c*d%7Ee%E9%20");
    }

    #[test_case]
    fn der_lengths_use_the_short_and_long_forms() {
        assert_eq!(der_tlv(0x04, &[7; 3]), [0x04, 3, 7, 7, 7]);
        assert_eq!(der_tlv(0x04, &[0; 127])[..2], [0x04, 127]);
        assert_eq!(der_tlv(0x04, &[0; 128])[..3], [0x04, 0x81, 128]);
        assert_eq!(der_tlv(0x04, &[0; 300])[..4], [0x04, 0x82, 1, 44]);
    }

    #[test_case]
    fn pem_round_trips_through_the_core() {
        for len in 0..70 {
            let der: Vec<u8> = (0..len).map(|i| (i * 37 % 256) as u8).collect();
            let pem = pem_encode(&der);
            assert_eq!(crate::pem::certificate_der(pem.as_bytes()), Ok(der.clone()));
            assert_eq!(crate::pem::certificate_der(url_encode(&pem).as_bytes()), Ok(der));
        }
    }
}

/// What the guard makes of a probe's authority (see [`PROBE_AUTHORITIES`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeAuthority {
    /// A loopback host or an `exempt_authorities` entry: the probe is exempt.
    Admitted,
    /// Not an authority by the grammar (`crate::authority`): checked in full.
    Unparsed,
    /// An authority, but neither loopback nor listed: checked in full.
    Unlisted,
}

/// The plugin configuration [`PROBE_AUTHORITIES`] is decided under.
pub const PROBE_CONFIG: &str =
    r#"{"exempt_paths":["/healthz"],"exempt_authorities":["probe.local","health.local:8080"]}"#;

/// Authorities of a bodiless `GET /healthz` without a certificate under [`PROBE_CONFIG`], and
/// what each must come to. One table for the core, the command and the filter in Envoy. The
/// first seven were admitted as loopback before issue 17 (a probe could reach a wildcard
/// virtual host such as `*.evil.example` without any identity).
pub const PROBE_AUTHORITIES: &[(&str, ProbeAuthority)] = {
    use ProbeAuthority::*;
    &[
        ("localhost:80@api.evil.example", Unparsed),
        ("127.0.0.1:1@api.evil.example", Unparsed),
        ("localhost:x.evil.example", Unparsed),
        ("[::1].evil.example", Unparsed),
        ("[::1]@api.evil.example", Unparsed),
        ("probe.local:x.evil.example", Unparsed),
        ("probe.local:1@api.evil.example", Unparsed),
        ("health.local:8080@x.evil.example", Unparsed),
        ("localhost:80:80", Unparsed),
        ("localhost:+80", Unparsed),
        ("localhost:\u{ff18}\u{ff10}", Unparsed),
        ("localhost:", Unparsed),
        ("localhost:99999", Unparsed),
        ("127.0.0.1%00", Unparsed),
        ("[::1", Unparsed),
        ("[::1]x.evil.example", Unparsed),
        ("localhost,x.evil.example", Unparsed),
        ("l\u{f6}calhost", Unparsed),
        ("127.1", Unlisted),
        ("0x7f.0.0.1", Unlisted),
        ("localhost.", Unlisted),
        ("x.localhost", Unlisted),
        ("localhost.evil.example", Unlisted),
        ("127.0.0.1.evil.example", Unlisted),
        ("probe.local.evil.example", Unlisted),
        ("health.local:80", Unlisted),
        ("db.demo.svc.cluster.local", Unlisted),
        ("localhost", Admitted),
        ("localhost:8080", Admitted),
        ("LOCALHOST", Admitted),
        ("127.0.0.1", Admitted),
        ("127.0.0.2:16443", Admitted),
        ("[::1]:80", Admitted),
        ("[::1]", Admitted),
        ("[::ffff:127.0.0.1]:80", Admitted),
        ("probe.local", Admitted),
        ("Probe.Local:9", Admitted),
        ("health.local:8080", Admitted),
    ]
};
