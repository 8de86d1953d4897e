//! A throwaway PKI, generated at test time into a temporary directory that is removed on drop.
//!
//! The directory holds what the Envoy config expects under `CERT_DIR`: `ca.pem` (the CA that
//! Envoy trusts for client certificates), `server.pem` + `server-key.pem` (the pod's own workload
//! certificate, URI SAN [`APP_ID`]), and every client certificate issued, as `<name>.pem` +
//! `<name>-key.pem`. CA keys stay in memory.

use std::fs;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use loopback_guard_core::testing::der_tlv;
use rcgen::string::Ia5String;
pub use rcgen::KeyUsagePurpose;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, CustomExtension, DnType, ExtendedKeyUsagePurpose,
    IsCa, KeyPair, SanType,
};
use time::{Duration, OffsetDateTime};

use crate::{Context, Error, Result};

/// The trust domain of the test mesh.
pub const TRUST_DOMAIN: &str = "cluster.local";
/// The pod's namespace and service account, as the node metadata in the demo and tests says.
pub const NAMESPACE: &str = "demo";
pub const SERVICE_ACCOUNT: &str = "app";
/// The pod's own SPIFFE ID: the server certificate's URI SAN and the rightful app's identity.
pub const APP_ID: &str = "spiffe://cluster.local/ns/demo/sa/app";

/// `spiffe://<trust_domain>/ns/<namespace>/sa/<service_account>`, as Istio names workloads.
pub fn spiffe_id(trust_domain: &str, namespace: &str, service_account: &str) -> String {
    format!("spiffe://{trust_domain}/ns/{namespace}/sa/{service_account}")
}

/// What goes into a certificate. Start from [`CertSpec::svid`] and change what the case needs.
#[derive(Clone, Debug)]
pub struct CertSpec {
    pub common_name: String,
    /// URIs, in order; written as they are, even when they are not valid SPIFFE IDs.
    pub uri_sans: Vec<String>,
    /// URIs as raw bytes, for what rcgen refuses to write (an IA5String holds ASCII only). When
    /// set, the subjectAltName extension is built here, byte by byte: these URIs, then
    /// `dns_sans`; `uri_sans` and `ip_sans` are then not written.
    pub raw_uri_sans: Option<Vec<Vec<u8>>>,
    pub dns_sans: Vec<String>,
    pub ip_sans: Vec<IpAddr>,
    /// basicConstraints CA:TRUE
    pub ca: bool,
    pub key_usages: Vec<KeyUsagePurpose>,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
}

impl CertSpec {
    /// A well-formed X509-SVID for `spiffe_id`, valid from an hour ago for a day.
    pub fn svid(spiffe_id: &str) -> Self {
        let now = OffsetDateTime::now_utc();
        CertSpec {
            common_name: spiffe_id.to_owned(),
            uri_sans: vec![spiffe_id.to_owned()],
            raw_uri_sans: None,
            dns_sans: Vec::new(),
            ip_sans: Vec::new(),
            ca: false,
            key_usages: vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment],
            not_before: now - Duration::hours(1),
            not_after: now + Duration::days(1),
        }
    }

    pub fn with_uri_sans<S: Into<String>>(mut self, uris: impl IntoIterator<Item = S>) -> Self {
        self.uri_sans = uris.into_iter().map(Into::into).collect();
        self
    }

    /// URI SANs given as bytes, written into the certificate unchecked (see `raw_uri_sans`).
    pub fn with_raw_uri_sans(mut self, uris: impl IntoIterator<Item = Vec<u8>>) -> Self {
        self.raw_uri_sans = Some(uris.into_iter().collect());
        self
    }

    pub fn with_dns_sans<S: Into<String>>(mut self, names: impl IntoIterator<Item = S>) -> Self {
        self.dns_sans = names.into_iter().map(Into::into).collect();
        self
    }

    /// basicConstraints CA:TRUE, with the key usages a CA has.
    pub fn as_ca(mut self) -> Self {
        self.ca = true;
        self.key_usages =
            vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        self
    }

    pub fn with_key_usages(mut self, usages: impl IntoIterator<Item = KeyUsagePurpose>) -> Self {
        self.key_usages = usages.into_iter().collect();
        self
    }

    pub fn valid_between(mut self, not_before: OffsetDateTime, not_after: OffsetDateTime) -> Self {
        self.not_before = not_before;
        self.not_after = not_after;
        self
    }

    fn params(&self) -> Result<CertificateParams> {
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, self.common_name.as_str());
        if let Some(raw_uris) = &self.raw_uri_sans {
            params.custom_extensions.push(raw_subject_alt_names(raw_uris, &self.dns_sans));
        } else {
            for uri in &self.uri_sans {
                params.subject_alt_names.push(SanType::URI(ia5(uri)?));
            }
            for name in &self.dns_sans {
                params.subject_alt_names.push(SanType::DnsName(ia5(name)?));
            }
            for ip in &self.ip_sans {
                params.subject_alt_names.push(SanType::IpAddress(*ip));
            }
        }
        params.is_ca = if self.ca { IsCa::Ca(BasicConstraints::Unconstrained) } else { IsCa::ExplicitNoCa };
        params.key_usages = self.key_usages.clone();
        if !self.ca {
            params.extended_key_usages =
                vec![ExtendedKeyUsagePurpose::ClientAuth, ExtendedKeyUsagePurpose::ServerAuth];
        }
        params.not_before = self.not_before;
        params.not_after = self.not_after;
        params.use_authority_key_identifier_extension = true;
        Ok(params)
    }
}

/// The subjectAltName extension (OID 2.5.29.17), DER by hand: `SEQUENCE OF GeneralName`, each
/// URI as `[6] IMPLICIT IA5String` and each DNS name as `[2] IMPLICIT IA5String`, bytes as given.
fn raw_subject_alt_names(uris: &[Vec<u8>], dns_names: &[String]) -> CustomExtension {
    let mut names = Vec::new();
    for uri in uris {
        names.extend(der_tlv(0x86, uri));
    }
    for name in dns_names {
        names.extend(der_tlv(0x82, name.as_bytes()));
    }
    CustomExtension::from_oid_content(&[2, 5, 29, 17], der_tlv(0x30, &names))
}

fn ia5(value: &str) -> Result<Ia5String> {
    Ia5String::try_from(value).context(format!("{value:?} cannot be put in a certificate"))
}

/// A certificate authority whose key never leaves memory.
pub struct Authority {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Authority {
    pub fn generate(common_name: &str) -> Result<Self> {
        let key = KeyPair::generate().context("generating a CA key")?;
        let now = OffsetDateTime::now_utc();
        let spec = CertSpec {
            common_name: common_name.to_owned(),
            uri_sans: Vec::new(),
            raw_uri_sans: None,
            dns_sans: Vec::new(),
            ip_sans: Vec::new(),
            ca: false,
            key_usages: Vec::new(),
            not_before: now - Duration::hours(1),
            not_after: now + Duration::days(7),
        };
        let params = spec.as_ca().params()?;
        let issuer = CertifiedIssuer::self_signed(params, key)
            .context(format!("self-signing the CA {common_name:?}"))?;
        Ok(Authority { issuer })
    }

    pub fn cert_pem(&self) -> String {
        self.issuer.pem()
    }

    /// (certificate PEM, certificate DER, key PEM)
    fn sign(&self, spec: &CertSpec) -> Result<(String, Vec<u8>, String)> {
        let key = KeyPair::generate().context("generating a key")?;
        let cert = spec
            .params()?
            .signed_by(&key, &self.issuer)
            .context(format!("signing a certificate for {:?}", spec.common_name))?;
        Ok((cert.pem(), cert.der().to_vec(), key.serialize_pem()))
    }
}

/// A certificate and its key, on disk and in memory.
#[derive(Clone, Debug)]
pub struct Credential {
    pub name: String,
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
    pub cert_pem: String,
    pub cert_der: Vec<u8>,
    pub key_pem: String,
}

impl Credential {
    /// The certificate's SHA-256 in lowercase hex: Envoy's
    /// `connection.sha256_peer_certificate_digest`, the XFCC `Hash`, the log's `cert_sha256`.
    pub fn sha256_hex(&self) -> String {
        ring::digest::digest(&ring::digest::SHA256, &self.cert_der)
            .as_ref()
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect()
    }
}

/// The CA Envoy trusts, the pod's workload certificate, and a place for client certificates.
pub struct Pki {
    dir: tempfile::TempDir,
    ca: Authority,
    server: Credential,
}

impl Pki {
    pub fn generate() -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("loopback-guard-pki-")
            .tempdir()
            .context("creating a directory for the test certificates")?;
        let ca = Authority::generate("loopback-guard test CA")?;
        write(&dir.path().join("ca.pem"), &ca.cert_pem())?;
        // rustls checks the server's name, so the workload certificate also carries the loopback
        // address; its only URI SAN is still the pod's SPIFFE ID, as with Istio.
        let mut server_spec = CertSpec::svid(APP_ID).with_dns_sans(["localhost"]);
        server_spec.ip_sans = vec![IpAddr::V4(Ipv4Addr::LOCALHOST)];
        let server = issue_into(dir.path(), &ca, "server", &server_spec)?;
        Ok(Pki { dir, ca, server })
    }

    /// The directory Envoy's config calls `CERT_DIR`.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The trusted CA's certificate (clients verify the server with it too).
    pub fn ca_path(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    pub fn ca(&self) -> &Authority {
        &self.ca
    }

    /// The pod's own workload certificate, served by the loopback listeners.
    pub fn server(&self) -> &Credential {
        &self.server
    }

    /// A certificate signed by the CA that Envoy trusts.
    pub fn issue(&self, name: &str, spec: &CertSpec) -> Result<Credential> {
        issue_into(self.dir.path(), &self.ca, name, spec)
    }

    /// A well-formed X509-SVID for `spiffe_id`, signed by the trusted CA.
    pub fn svid(&self, name: &str, spiffe_id: &str) -> Result<Credential> {
        self.issue(name, &CertSpec::svid(spiffe_id))
    }

    /// A certificate signed by another CA (one Envoy does not trust).
    pub fn issue_by(&self, authority: &Authority, name: &str, spec: &CertSpec) -> Result<Credential> {
        issue_into(self.dir.path(), authority, name, spec)
    }
}

fn issue_into(dir: &Path, authority: &Authority, name: &str, spec: &CertSpec) -> Result<Credential> {
    let safe = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !safe || name == "ca" {
        return Err(Error::new(format!(
            "certificate name {name:?}: use letters, digits, - and _ (and not \"ca\")"
        )));
    }
    let (cert_pem, cert_der, key_pem) = authority.sign(spec)?;
    let cert_path = dir.join(format!("{name}.pem"));
    let key_path = dir.join(format!("{name}-key.pem"));
    write(&cert_path, &cert_pem)?;
    write(&key_path, &key_pem)?;
    Ok(Credential { name: name.to_owned(), cert_path, key_path, cert_pem, cert_der, key_pem })
}

fn write(path: &Path, contents: &str) -> Result<()> {
    fs::write(path, contents).context(format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_uri_sans_go_into_the_certificate_byte_for_byte() {
        let pki = Pki::generate().unwrap();
        let uri = b"spiffe://cluster.local/ns/demo/sa/app\xe9".to_vec();
        let spec = CertSpec::svid(APP_ID).with_raw_uri_sans([uri.clone()]);
        let credential = pki.issue("raw", &spec).unwrap();
        let san = der_tlv(0x86, &uri);
        let found = credential.cert_der.windows(san.len()).any(|window| window == san.as_slice());
        assert!(found, "the URI SAN's bytes are not in the certificate");
        // rcgen's own SAN is left out: only one subjectAltName extension (OID 2.5.29.17).
        let san_oid = [0x06, 0x03, 0x55, 0x1d, 0x11];
        assert_eq!(credential.cert_der.windows(san_oid.len()).filter(|w| *w == san_oid).count(), 1);
    }

    #[test]
    fn sha256_of_a_credential_is_lowercase_hex_of_its_der() {
        let pki = Pki::generate().unwrap();
        let hex = pki.server().sha256_hex();
        assert_eq!(hex.len(), 64);
        assert!(hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
    }
}
