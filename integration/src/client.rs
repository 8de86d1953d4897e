//! HTTPS with an optional client certificate, a new connection per request.
//!
//! A new connection per request keeps cases independent: the filter logs allowed requests once
//! per connection by default. A [`Client`] keeps its TLS session cache, so a second request
//! through the same `Client` resumes the TLS session (as most real clients do); a new `Client`
//! makes a full handshake.

use std::fmt;
use std::fs;
use std::path::Path;
use std::time::Duration;

use ureq::http::HeaderValue;
use ureq::tls::{Certificate, ClientCert, PrivateKey, RootCerts, TlsConfig};
use ureq::Agent;

use crate::pki::Credential;
use crate::{Context, Result};

/// What came back over HTTP.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub body: String,
}

/// The connection failed before any HTTP reply: typically Envoy's TLS layer refused the client
/// certificate (or the lack of one). With TLS 1.3 the client only learns it when reading.
#[derive(Clone, Debug)]
pub struct ConnectionFailed(pub String);

impl fmt::Display for ConnectionFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "connection failed: {}", self.0)
    }
}

/// TLS settings for a client that trusts `ca_path` and presents `identity`, if any.
pub fn tls_config(ca_path: &Path, identity: Option<&Credential>) -> Result<TlsConfig> {
    let ca_pem = fs::read(ca_path).context(format!("reading {}", ca_path.display()))?;
    let ca = Certificate::from_pem(&ca_pem).context(format!("parsing {}", ca_path.display()))?;
    let client_cert = match identity {
        None => None,
        Some(credential) => {
            let cert = Certificate::from_pem(credential.cert_pem.as_bytes())
                .context(format!("parsing the certificate {:?}", credential.name))?;
            let key = PrivateKey::from_pem(credential.key_pem.as_bytes())
                .context(format!("parsing the key of {:?}", credential.name))?;
            Some(ClientCert::new_with_certs(&[cert], key))
        }
    };
    Ok(TlsConfig::builder().root_certs(RootCerts::new_with_certs(&[ca])).client_cert(client_cert).build())
}

/// An HTTPS client that trusts one CA and presents `identity`, if any.
pub struct Client {
    agent: Agent,
}

impl Client {
    pub fn new(ca_path: &Path, identity: Option<&Credential>) -> Result<Self> {
        let tls = tls_config(ca_path, identity)?;
        let agent: Agent = Agent::config_builder()
            .tls_config(tls)
            .http_status_as_error(false)
            .max_idle_connections(0)
            .timeout_global(Some(Duration::from_secs(10)))
            .build()
            .into();
        Ok(Client { agent })
    }

    /// GET `url`; any HTTP status is a [`Reply`], a failed connection or handshake is an error.
    pub fn get(&self, url: &str) -> std::result::Result<Reply, ConnectionFailed> {
        self.get_with_headers(url, &[])
    }

    /// GET `url` with extra request headers (name, value bytes), sent as they are.
    pub fn get_with_headers(
        &self,
        url: &str,
        headers: &[(String, Vec<u8>)],
    ) -> std::result::Result<Reply, ConnectionFailed> {
        let mut request = self.agent.get(url);
        for (name, value) in headers {
            // Bytes, not a string: a header value may carry obs-text (bytes >= 0x80).
            let value = HeaderValue::from_bytes(value)
                .map_err(|err| ConnectionFailed(format!("header {name}: not sendable: {err}")))?;
            request = request.header(name.as_str(), value);
        }
        let mut response = request.call().map_err(|err| ConnectionFailed(err.to_string()))?;
        let status = response.status().as_u16();
        let body = response
            .body_mut()
            .read_to_string()
            .map_err(|err| ConnectionFailed(format!("reading the body: {err}")))?;
        Ok(Reply { status, body })
    }
}

/// GET over plain HTTP (Envoy's admin endpoint).
pub fn get_plain(url: &str) -> Result<Reply> {
    let agent: Agent = Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(5)))
        .build()
        .into();
    let mut response = agent.get(url).call().context(format!("GET {url}"))?;
    let status = response.status().as_u16();
    let body = response.body_mut().read_to_string().context(format!("reading the body of GET {url}"))?;
    Ok(Reply { status, body })
}

/// The TLS versions [`curl`] may offer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsVersion {
    V1_2,
    V1_3,
}

impl fmt::Display for TlsVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TlsVersion::V1_2 => "TLS 1.2",
            TlsVersion::V1_3 => "TLS 1.3",
        })
    }
}

/// Runs one `curl` for all of `urls`, each over a new connection (`Connection: close`), as the
/// issue reproduced it: curl keeps its TLS session between them, so every connection after the
/// first resumes the first one's session (with a session ticket or ID, as the server allows).
/// Returns each URL's status, 0 where no HTTP reply came.
pub fn curl(
    ca_path: &Path,
    identity: Option<&Credential>,
    tls: TlsVersion,
    urls: &[String],
) -> Result<Vec<u16>> {
    curl_with(ca_path, identity, tls, &[], urls)
}

/// [`curl`] with more of curl's arguments before the URLs (a method, headers, a body, ...).
pub fn curl_with(
    ca_path: &Path,
    identity: Option<&Credential>,
    tls: TlsVersion,
    args: &[&str],
    urls: &[String],
) -> Result<Vec<u16>> {
    let mut command = std::process::Command::new("curl");
    command.args(args);
    command.args([
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}\\n",
        "-H",
        "Connection: close",
        "--max-time",
        "10",
    ]);
    command.arg("--cacert").arg(ca_path);
    match tls {
        TlsVersion::V1_2 => command.args(["--tlsv1.2", "--tls-max", "1.2"]),
        TlsVersion::V1_3 => command.args(["--tlsv1.3"]),
    };
    if let Some(credential) = identity {
        command.arg("--cert").arg(&credential.cert_path).arg("--key").arg(&credential.key_path);
    }
    for url in urls {
        // curl applies one -o to one URL.
        command.args(["-o", "/dev/null", url.as_str()]);
    }
    let output = command.output().context("running curl (install it: apt-get install curl)")?;
    let text = String::from_utf8_lossy(&output.stdout);
    let statuses: Vec<u16> = text.lines().map(|line| line.trim().parse().unwrap_or(0)).collect();
    if statuses.len() != urls.len() {
        return Err(crate::Error::new(format!(
            "curl printed {} statuses for {} URLs: {text:?} {}",
            statuses.len(),
            urls.len(),
            String::from_utf8_lossy(&output.stderr)
        )));
    }
    Ok(statuses)
}
