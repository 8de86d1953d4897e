//! Connection scope (the module as a network filter): Envoy from
//! `envoy-config/loopback-guard-connection.yaml`, a TCP upstream that records what reaches it,
//! and a TLS client for raw TCP (`openssl s_client`).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::envoy::{envoy_version, Settings};
use crate::pki::{Credential, Pki};
use crate::{Context, Error, Result};

pub const TEMPLATE: &str = "envoy-config/loopback-guard-connection.yaml";

/// `plugin_config` (a JSON object, `""` for none) with `fields` added.
fn with_fields(plugin_config: &str, fields: &[(&str, &str)]) -> Result<String> {
    let text = if plugin_config.trim().is_empty() { "{}" } else { plugin_config };
    let mut config: serde_json::Value =
        serde_json::from_str(text).map_err(|e| Error::new(format!("plugin config {text:?}: {e}")))?;
    let object = config.as_object_mut().ok_or_else(|| Error::new("the plugin config is not an object"))?;
    for (name, value) in fields {
        object.insert((*name).to_owned(), serde_json::Value::String((*value).to_owned()));
    }
    Ok(config.to_string())
}

/// Settings for the connection-scope template: the HTTP listeners with `plugin_config` plus
/// `"scope":"connection","on_deny":"rbac"`, the TCP listener with `"scope":"connection"`,
/// tcp_proxy dialling `upstream` (a [`Recorder`]'s port).
pub fn settings(plugin_config: &str, upstream: u16) -> Result<(Settings, u16)> {
    let http = with_fields(plugin_config, &[("scope", "connection"), ("on_deny", "rbac")])?;
    let tcp = with_fields(plugin_config, &[("scope", "connection")])?;
    let tcp_port = free_port()?;
    let mut settings = Settings::with_plugin_config(&http);
    settings.template = TEMPLATE;
    settings.extra_values = vec![
        ("TCP_PORT", tcp_port.to_string()),
        ("TCP_UPSTREAM_PORT", upstream.to_string()),
        ("TCP_CONNECT_MODE", tcp_connect_mode()?.to_owned()),
        ("TCP_PLUGIN_CONFIG", tcp.replace('\'', "''")),
    ];
    Ok((settings, tcp_port))
}

/// Whether this Envoy's tcp_proxy has `upstream_connect_mode` (and `max_early_data_bytes`):
/// 1.38.2 and 1.40.0 accept both, 1.36.4 neither (`envoy --mode validate`); 1.37 is not in the
/// matrix, so it is not assumed.
pub fn has_upstream_connect_mode() -> Result<bool> {
    let version = envoy_version()?;
    Ok((version.major, version.minor) >= (1, 38))
}

fn tcp_connect_mode() -> Result<&'static str> {
    Ok(match has_upstream_connect_mode()? {
        // The first bytes are buffered while tcp_proxy dials (at most this many).
        true => "upstream_connect_mode: ON_DOWNSTREAM_DATA\n          max_early_data_bytes: 65536",
        false => "# upstream_connect_mode: not in this Envoy (1.36 has none)",
    })
}

fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(listener.local_addr().context("finding a free port")?.port())
}

/// What a [`Recorder`] saw.
#[derive(Default, Debug, Clone)]
pub struct Recorded {
    pub connections: usize,
    pub bytes: Vec<u8>,
}

/// A TCP upstream on 127.0.0.1 that counts the connections it accepts, keeps every byte it
/// receives, and echoes them back.
pub struct Recorder {
    port: u16,
    seen: Arc<Mutex<Recorded>>,
}

impl Recorder {
    pub fn start() -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").context("binding the TCP upstream")?;
        let port = listener.local_addr().context("the TCP upstream's port")?.port();
        let seen = Arc::new(Mutex::new(Recorded::default()));
        let shared = Arc::clone(&seen);
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                if let Ok(mut seen) = shared.lock() {
                    seen.connections += 1;
                }
                let shared = Arc::clone(&shared);
                thread::spawn(move || echo(stream, &shared));
            }
        });
        Ok(Self { port, seen })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn seen(&self) -> Recorded {
        self.seen.lock().map(|seen| seen.clone()).unwrap_or_default()
    }
}

fn echo(mut stream: TcpStream, seen: &Mutex<Recorded>) {
    let mut buffer = [0_u8; 4096];
    while let Ok(n) = stream.read(&mut buffer) {
        let Some(bytes) = buffer.get(..n).filter(|b| !b.is_empty()) else { break };
        if let Ok(mut seen) = seen.lock() {
            seen.bytes.extend_from_slice(bytes);
        }
        if stream.write_all(bytes).is_err() {
            break;
        }
    }
}

/// A TLS connection to 127.0.0.1 through `openssl s_client` (which speaks raw bytes over TLS),
/// presenting a client certificate or none. Killed on drop.
pub struct TlsSession {
    child: std::process::Child,
    received: Arc<Mutex<Vec<u8>>>,
    reader: Option<thread::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl TlsSession {
    pub fn open(pki: &Pki, identity: Option<&Credential>, port: u16) -> Result<Self> {
        let dir = tempfile::tempdir().context("a directory for the client's key")?;
        let mut command = Command::new("openssl");
        command.args(["s_client", "-quiet", "-connect", &format!("127.0.0.1:{port}")]);
        command.arg("-CAfile").arg(pki.ca_path());
        if let Some(credential) = identity {
            let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
            std::fs::write(&cert, &credential.cert_pem).context("writing the client certificate")?;
            std::fs::write(&key, &credential.key_pem).context("writing the client key")?;
            command.arg("-cert").arg(cert).arg("-key").arg(key);
        }
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("running openssl s_client (apt-get install openssl)")?;
        let mut stdout = child.stdout.take().ok_or_else(|| Error::new("no stdout of openssl"))?;
        let received = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&received);
        let reader = thread::spawn(move || {
            let mut buffer = [0_u8; 4096];
            while let Ok(n) = stdout.read(&mut buffer) {
                match (buffer.get(..n), sink.lock()) {
                    (Some(bytes), Ok(mut sink)) if !bytes.is_empty() => sink.extend_from_slice(bytes),
                    _ => break,
                }
            }
        });
        Ok(Self { child, received, reader: Some(reader), _dir: dir })
    }

    /// Sends `bytes`; a closed connection may refuse them, which what comes back then shows.
    pub fn send(&mut self, bytes: &[u8]) {
        if let Some(stdin) = self.child.stdin.as_mut() {
            let _ = stdin.write_all(bytes).and_then(|()| stdin.flush());
        }
    }

    /// Everything received so far, once `done` says it is enough, the connection ended, or
    /// `wait` passed.
    pub fn received_until(&mut self, wait: Duration, done: impl Fn(&[u8]) -> bool) -> Vec<u8> {
        let deadline = Instant::now() + wait;
        loop {
            let bytes = self.received.lock().map(|r| r.clone()).unwrap_or_default();
            let ended = matches!(self.child.try_wait(), Ok(Some(_)));
            if done(&bytes) || ended || Instant::now() >= deadline {
                return bytes;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether openssl saw the connection end.
    pub fn ended(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }
}

impl Drop for TlsSession {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

/// Sends `payload` over TLS (presenting `identity`) to 127.0.0.1:`port` and returns what came
/// back within `wait` (the echo, or nothing when the connection is closed on it).
pub fn tls_exchange(
    pki: &Pki,
    identity: Option<&Credential>,
    port: u16,
    payload: &[u8],
    wait: Duration,
) -> Result<Vec<u8>> {
    let mut session = TlsSession::open(pki, identity, port)?;
    session.send(payload);
    Ok(session.received_until(wait, |bytes| bytes.len() >= payload.len()))
}
