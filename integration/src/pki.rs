//! A throwaway PKI, generated at test time into a temporary directory that is removed on drop.
//!
//! The directory holds what the Envoy config expects under `CERT_DIR`: `ca.pem` (the CA that
//! Envoy trusts for client certificates), `server.pem` + `server-key.pem` (the pod's own workload
//! certificate, URI SAN [`APP_ID`]), and every client certificate issued, as `<name>.pem` +
//! `<name>-key.pem`. CA keys stay in memory.

use std::fs;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use rcgen::string::Ia5String;
pub use rcgen::KeyUsagePurpose;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    SanType,
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
        for uri in &self.uri_sans {
            params.subject_alt_names.push(SanType::URI(ia5(uri)?));
        }
        for name in &self.dns_sans {
            params.subject_alt_names.push(SanType::DnsName(ia5(name)?));
        }
        for ip in &self.ip_sans {
            params.subject_alt_names.push(SanType::IpAddress(*ip));
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

    fn sign(&self, spec: &CertSpec) -> Result<(String, String)> {
        let key = KeyPair::generate().context("generating a key")?;
        let cert = spec
            .params()?
            .signed_by(&key, &self.issuer)
            .context(format!("signing a certificate for {:?}", spec.common_name))?;
        Ok((cert.pem(), key.serialize_pem()))
    }
}

/// A certificate and its key, on disk and in memory.
#[derive(Clone, Debug)]
pub struct Credential {
    pub name: String,
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
    pub cert_pem: String,
    pub key_pem: String,
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
    let (cert_pem, key_pem) = authority.sign(spec)?;
    let cert_path = dir.join(format!("{name}.pem"));
    let key_path = dir.join(format!("{name}-key.pem"));
    write(&cert_path, &cert_pem)?;
    write(&key_path, &key_pem)?;
    Ok(Credential { name: name.to_owned(), cert_path, key_path, cert_pem, key_pem })
}

fn write(path: &Path, contents: &str) -> Result<()> {
    fs::write(path, contents).context(format!("writing {}", path.display()))
}
