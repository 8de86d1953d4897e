//! Test certificates, built at test time.
//!
//! They are signed with a fake key: the filter never verifies signatures (Envoy did that in the
//! handshake), and leaving out a crypto backend keeps these tests buildable for
//! wasm32-unknown-unknown.

use rcgen::string::Ia5String;
use rcgen::{
    BasicConstraints, CertificateParams, IsCa, KeyIdMethod, KeyUsagePurpose, PublicKeyData,
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

    pub fn uri(mut self, uri: &str) -> Self {
        self.0.subject_alt_names.push(SanType::URI(Ia5String::try_from(uri).unwrap()));
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

/// PEM text of a DER certificate, wrapped at 64 columns as Envoy prints it.
pub fn pem_encode(der: &[u8]) -> String {
    use base64::Engine;
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in body.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).unwrap());
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
    pem
}
