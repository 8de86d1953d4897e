//! An Envoy shaped like an Istio sidecar, fed over xDS by a test control plane that serves what
//! istiod and istio-agent would (`integration/xds/control_plane.py`, on Python's `xds-protos`
//! and `grpcio`, installed by `scripts/xds-python.sh`).
//!
//! The sidecar's bootstrap follows istio-agent's (`tools/packaging/common/envoy_bootstrap.json`
//! in istio/istio): LDS and CDS over delta ADS on the `xds-grpc` cluster, SDS on `sds-grpc`,
//! node metadata `NAMESPACE`/`SERVICE_ACCOUNT`, `TRUST_DOMAIN` in the environment, two
//! workers. The loopback listener is the rendered EnvoyFilter's, served over LDS.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::client::{get_plain, Client, ConnectionFailed, Reply};
use crate::decision_log::{decision_lines, DecisionLine};
use crate::envoy::{envoy_bin, Ports, Stats};
use crate::pki::{Credential, Pki, NAMESPACE, SERVICE_ACCOUNT, TRUST_DOMAIN};
use crate::{read_lossy, repo_root, url_encode, Context, Error, Result};

const READY_TIMEOUT: Duration = Duration::from_secs(30);
const WORKERS: &str = "2";
/// The mesh service the route table "80" knows (Istio's outbound route for port 80).
pub const BACKEND_HOST: &str = "backend.demo.svc.cluster.local";

/// The name Istio 1.`minor`'s istiod serves a plugin resource under over ECDS (issue 8, fact 1):
/// up to 1.29 `extensions.istio.io/wasmplugin/<ns>.<name>` (`WasmPluginResourceNamePrefix` in
/// `pilot/pkg/model/extensions.go`); from 1.30 only `extensions.istio.io/trafficextension/`
/// names (`pilot/pkg/networking/core/extension_config_builder.go`), a WasmPlugin as the
/// TrafficExtension `<name>~istio-translated-wasmplugin`. `None`: that version has no such kind.
pub fn istiod_ecds_name(minor: u32, kind: &str, namespace: &str, name: &str) -> Option<String> {
    match (minor < 30, kind) {
        (true, "WasmPlugin") => Some(format!("extensions.istio.io/wasmplugin/{namespace}.{name}")),
        (false, "WasmPlugin") => Some(format!(
            "extensions.istio.io/trafficextension/{namespace}.{name}~istio-translated-wasmplugin"
        )),
        (false, "TrafficExtension") => {
            Some(format!("extensions.istio.io/trafficextension/{namespace}.{name}"))
        }
        _ => None,
    }
}

/// The Wasm PluginConfig's own `name` that istiod gives the plugin: `<ns>.<resource name>`
/// (`pilot/pkg/model/extensions.go`, the `Name` of the Wasm config, at 1.26.0 ... 1.31.0-rc.0),
/// where a WasmPlugin on 1.30+ is the translated TrafficExtension `<name>~istio-translated-wasmplugin`
/// (`pilot/pkg/config/kube/extensions/translate.go`). Envoy names the plugin's own stats after
/// it (`wasm.<this>.vm_reload`, ...).
pub fn istiod_plugin_name(minor: u32, kind: &str, namespace: &str, name: &str) -> String {
    if minor >= 30 && kind == "WasmPlugin" {
        format!("{namespace}.{name}~istio-translated-wasmplugin")
    } else {
        format!("{namespace}.{name}")
    }
}

/// The prefix of the config-discovery stats Envoy keeps for an HTTP filter delivered over ECDS
/// under `ecds_name` (the name is kept whole, `.` and `/` included), as read from a real Envoy's
/// admin `/stats`: `<prefix>config_reload`, `config_fail`, `config_conflict`, ...
pub fn ecds_stats_prefix(ecds_name: &str) -> String {
    format!("extension_config_discovery.http_filter.{ecds_name}.")
}

/// The Python with xds-protos and grpcio (installed on first use by `scripts/xds-python.sh`),
/// looked up once per test process: tests running in parallel must not install it twice.
pub fn xds_python() -> Result<PathBuf> {
    static PYTHON: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();
    PYTHON.get_or_init(|| find_xds_python().map_err(|err| err.to_string())).clone().map_err(Error::new)
}

fn find_xds_python() -> Result<PathBuf> {
    if let Some(python) = std::env::var_os("LOOPBACK_GUARD_XDS_PYTHON").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(python));
    }
    let script = repo_root().join("scripts/xds-python.sh");
    let output = Command::new(&script).output().context(format!("running {}", script.display()))?;
    if !output.status.success() {
        return Err(Error::new(format!(
            "{} failed: {}",
            script.display(),
            String::from_utf8_lossy(&output.stderr)
        )));
    }
    Ok(PathBuf::from(String::from_utf8_lossy(&output.stdout).trim()))
}

/// Renders the Istio manifests for `istio_version` into `out` with `scripts/istio-manifests.py`
/// (the command behind `make istio-manifests`); returns the files written.
pub fn render_manifests(istio_version: &str, resource: Option<&str>, out: &Path) -> Result<Vec<PathBuf>> {
    let mut command = Command::new(xds_python()?);
    command.arg(repo_root().join("scripts/istio-manifests.py"));
    command.args(["--istio-version", istio_version, "--out"]).arg(out);
    if let Some(resource) = resource {
        command.args(["--resource", resource]);
    }
    let output = command.output().context("running scripts/istio-manifests.py")?;
    if !output.status.success() {
        return Err(Error::new(format!("istio-manifests.py: {}", String::from_utf8_lossy(&output.stderr))));
    }
    let mut files: Vec<PathBuf> = fs::read_dir(out)
        .context(format!("reading {}", out.display()))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "yaml"))
        .collect();
    files.sort();
    Ok(files)
}

/// The test control plane, a child process driven by one JSON command per line.
pub struct ControlPlane {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    dir: tempfile::TempDir,
}

impl ControlPlane {
    pub fn start() -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("loopback-guard-xds-")
            .tempdir()
            .context("creating a directory")?;
        let script = repo_root().join("integration/xds/control_plane.py");
        let mut child = Command::new(xds_python()?)
            .arg(&script)
            .arg("--dir")
            .arg(dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(File::create(dir.path().join("control-plane.log")).context("creating its log")?)
            .spawn()
            .context(format!("running {}", script.display()))?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err(Error::new("the control plane's stdin/stdout are not piped"));
        };
        let mut plane = ControlPlane { child, stdin, stdout: BufReader::new(stdout), dir };
        let ready = plane.read_answer()?;
        if ready.get("ready") != Some(&Value::Bool(true)) {
            return Err(Error::new(format!("the control plane did not start: {ready}")));
        }
        Ok(plane)
    }

    fn read_answer(&mut self) -> Result<Value> {
        let mut line = String::new();
        self.stdout.read_line(&mut line).context("reading the control plane's answer")?;
        if line.is_empty() {
            return Err(Error::new(format!("the control plane exited; its log:\n{}", self.log())));
        }
        serde_json::from_str(&line).context(format!("the control plane's answer {line:?}"))
    }

    /// Sends one command; its answer, or an error with the control plane's message.
    pub fn command(&mut self, command: Value) -> Result<Value> {
        writeln!(self.stdin, "{command}").context("writing to the control plane")?;
        self.stdin.flush().context("writing to the control plane")?;
        let answer = self.read_answer()?;
        if answer.get("ok") == Some(&Value::Bool(true)) {
            Ok(answer)
        } else {
            Err(Error::new(format!("control plane: {command}: {answer}")))
        }
    }

    pub fn socket(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("control-plane.log")).unwrap_or_default()
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!("----- control plane log -----\n{}\n-----", self.log());
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What one request led to, inside the sidecar.
#[derive(Debug)]
pub struct Seen {
    pub reply: std::result::Result<Reply, ConnectionFailed>,
    pub decisions: Vec<DecisionLine>,
    pub access_log: Vec<Value>,
    /// Changes of the filter's own counters (`wasmcustom.loopback_guard.*`), by short name.
    pub guard: BTreeMap<String, i64>,
    /// Changes of the loopback listener's RBAC counters (`http.loopback_guard.rbac.*`).
    pub rbac: BTreeMap<String, i64>,
}

impl Seen {
    pub fn status(&self) -> Option<u16> {
        self.reply.as_ref().ok().map(|reply| reply.status)
    }

    /// `response_code_details` of the one access log entry.
    pub fn details(&self) -> Option<&str> {
        match self.access_log.as_slice() {
            [entry] => entry.get("response_code_details").and_then(Value::as_str),
            _ => None,
        }
    }

    /// (decision, reason) of the one decision line.
    pub fn decision(&self) -> Option<(&str, &str)> {
        match self.decisions.as_slice() {
            [line] => Some((line.decision(), line.reason())),
            _ => None,
        }
    }
}

/// A sidecar-shaped Envoy connected to a [`ControlPlane`], killed on drop.
pub struct Sidecar {
    child: Child,
    dir: tempfile::TempDir,
    ports: Ports,
}

impl Sidecar {
    /// Starts Envoy and waits until it is ready as pilot-agent checks it: admin `/ready` 200,
    /// `server.state` 0 (live), `listener_manager.workers_started` 1.
    pub fn start(plane: &ControlPlane, ports: Ports) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("loopback-guard-sidecar-")
            .tempdir()
            .context("creating a directory")?;
        let config = dir.path().join("envoy.json");
        fs::write(&config, bootstrap(plane, ports).to_string()).context("writing the bootstrap")?;
        let bin = envoy_bin()?;
        let child = Command::new(&bin)
            .arg("-c")
            .arg(&config)
            .args(["--concurrency", WORKERS, "--disable-hot-restart", "-l", "info"])
            .args(["--file-flush-interval-msec", "50"])
            // Istio's injector sets TRUST_DOMAIN on istio-proxy; the plugin reads it (HOST env).
            .env("TRUST_DOMAIN", TRUST_DOMAIN)
            .stdin(Stdio::null())
            .stdout(File::create(dir.path().join("access.log")).context("creating access.log")?)
            .stderr(File::create(dir.path().join("envoy.log")).context("creating envoy.log")?)
            .spawn()
            .context(format!("running {}", bin.display()))?;
        let mut sidecar = Sidecar { child, dir, ports };
        sidecar.wait_ready()?;
        Ok(sidecar)
    }

    fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(Error::new(format!("Envoy exited ({status}); its log:\n{}", self.log())));
            }
            if self.is_ready() {
                return Ok(());
            }
            thread::sleep(Duration::from_millis(50));
        }
        Err(Error::new(format!(
            "Envoy not ready after {}s; its log:\n{}",
            READY_TIMEOUT.as_secs(),
            self.log()
        )))
    }

    /// Ready as istio-agent's readiness probe needs it (`pkg/istio-agent/health`, Envoy's
    /// `/ready` and its workers started).
    pub fn is_ready(&self) -> bool {
        let ready = get_plain(&format!("{}/ready", self.admin_url())).is_ok_and(|reply| reply.status == 200);
        let stats = self.stats("^(server\\.state|listener_manager\\.workers_started)$").unwrap_or_default();
        ready
            && stats.0.get("server.state") == Some(&0)
            && stats.0.get("listener_manager.workers_started") == Some(&1)
    }

    pub fn admin_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.ports.admin)
    }

    /// GET `path` (with its query) on the admin interface; the body, parsed as JSON.
    pub fn admin_json(&self, path: &str) -> Result<Value> {
        let url = format!("{}{path}", self.admin_url());
        let reply = get_plain(&url)?;
        if reply.status != 200 {
            return Err(Error::new(format!("GET {url}: {}", reply.status)));
        }
        serde_json::from_str(&reply.body).context(format!("GET {url}: not JSON"))
    }

    pub fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.ports.strict)
    }

    pub fn stats(&self, filter: &str) -> Result<Stats> {
        let url = format!("{}/stats?filter={}", self.admin_url(), url_encode(filter.as_bytes()));
        let reply = get_plain(&url)?;
        if reply.status != 200 {
            return Err(Error::new(format!("GET {url}: {}", reply.status)));
        }
        Ok(Stats::parse(&reply.body))
    }

    pub fn log(&self) -> String {
        read_lossy(&self.dir.path().join("envoy.log"))
    }

    pub fn access_log(&self) -> String {
        read_lossy(&self.dir.path().join("access.log"))
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// One GET with `identity` (a new connection) and `Host: host`, and what it led to.
    pub fn observe(&self, pki: &Pki, identity: Option<&Credential>, host: &str) -> Result<Seen> {
        let client = Client::new(&pki.ca_path(), identity)?;
        let (log_at, access_at) = (self.log().len(), self.access_log().len());
        let guard_before = self.stats("^wasmcustom\\.loopback_guard\\.")?;
        let rbac_before = self.stats(RBAC_STATS)?;
        let reply = client.get_with_headers(&self.url("/"), &[("host".to_owned(), host.as_bytes().to_vec())]);
        // The access log line comes after the stream ends, up to one flush interval later.
        let deadline = Instant::now() + Duration::from_secs(2);
        let access = |sidecar: &Sidecar| -> Vec<Value> {
            sidecar
                .access_log()
                .get(access_at..)
                .unwrap_or_default()
                .lines()
                .filter_map(|line| serde_json::from_str(line).ok())
                .collect()
        };
        while reply.is_ok() && access(self).is_empty() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(20));
        }
        if reply.is_err() {
            thread::sleep(Duration::from_millis(200));
        }
        Ok(Seen {
            decisions: decision_lines(self.log().get(log_at..).unwrap_or_default()),
            access_log: access(self),
            guard: changes(
                &guard_before,
                &self.stats("^wasmcustom\\.loopback_guard\\.")?,
                "wasmcustom.loopback_guard.",
            ),
            rbac: changes(&rbac_before, &self.stats(RBAC_STATS)?, RBAC_SCOPE),
            reply,
        })
    }

    /// After a config change Envoy answered: waits until both workers apply it, i.e. until
    /// `identity` gets `status` on 8 new connections in a row (each may land on either worker).
    pub fn settle(&self, pki: &Pki, identity: &Credential, status: u16) -> Result<()> {
        let client = Client::new(&pki.ca_path(), Some(identity))?;
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut streak = 0;
        let mut last = None;
        while Instant::now() < deadline {
            let got = client
                .get_with_headers(&self.url("/"), &[("host".to_owned(), BACKEND_HOST.as_bytes().to_vec())])
                .ok()
                .map(|reply| reply.status);
            streak = if got == Some(status) { streak + 1 } else { 0 };
            if streak == 8 {
                // Let the access log lines of these requests be flushed (every 50 ms) before
                // the next observation marks where its own lines begin.
                thread::sleep(Duration::from_millis(200));
                return Ok(());
            }
            last = got;
            thread::sleep(Duration::from_millis(20));
        }
        Err(Error::new(format!("{} never got {status} steadily (last {last:?})", identity.name)))
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!(
                "----- sidecar Envoy log -----\n{}\n----- access log -----\n{}\n-----",
                self.log(),
                self.access_log()
            );
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The RBAC filter's stats on the loopback listener. Envoy 1.40 keeps a filter's stats in its
/// connection manager's scope (`http.loopback_guard.rbac.`) even when the filter came over
/// ECDS; Envoy 1.36.4 was seen to keep those of an ECDS filter's default config in
/// `extension_config_discovery.http_filter.<filter name, dots and all>.rbac.` instead.
const RBAC_STATS: &str = "^(http\\.loopback_guard|extension_config_discovery\\.http_filter\\..+)\\.rbac\\.";
/// What [`changes`] strips from an RBAC stat's name, wherever its scope is.
const RBAC_SCOPE: &str = ".rbac.";

/// The counters that changed, named without `prefix` (or, for a prefix starting with `.`,
/// without everything up to and including its first occurrence).
fn changes(before: &Stats, after: &Stats, prefix: &str) -> BTreeMap<String, i64> {
    after
        .0
        .iter()
        .filter_map(|(name, value)| {
            let short = if prefix.starts_with('.') {
                name.split_once(prefix).map(|(_, rest)| rest)?
            } else {
                name.strip_prefix(prefix)?
            };
            let was = before.0.get(name).copied().unwrap_or(0);
            let change = i64::try_from(*value).ok()? - i64::try_from(was).ok()?;
            (change != 0).then(|| (short.to_owned(), change))
        })
        .collect()
}

/// The bootstrap: istio-agent's shape, with the test's sockets and ports.
fn bootstrap(plane: &ControlPlane, ports: Ports) -> Value {
    let h2 = json!({
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            "explicit_http_config": {"http2_protocol_options": {}}
        }
    });
    let pipe_cluster = |name: &str, socket: PathBuf| {
        json!({
            "name": name, "type": "STATIC", "connect_timeout": "1s",
            "typed_extension_protocol_options": h2,
            "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [
                {"endpoint": {"address": {"pipe": {"path": socket.display().to_string()}}}}]}]}
        })
    };
    json!({
        "node": {
            "id": format!("sidecar~127.0.0.1~demo-app-0.{NAMESPACE}~{NAMESPACE}.svc.cluster.local"),
            "cluster": format!("demo-app.{NAMESPACE}"),
            "metadata": {"NAMESPACE": NAMESPACE, "SERVICE_ACCOUNT": SERVICE_ACCOUNT, "MESH_ID": TRUST_DOMAIN,
                         "CLUSTER_ID": "Kubernetes", "LABELS": {"app": "demo-app"}}
        },
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": ports.admin}}},
        "dynamic_resources": {
            "lds_config": {"ads": {}, "initial_fetch_timeout": "0s", "resource_api_version": "V3"},
            "cds_config": {"ads": {}, "initial_fetch_timeout": "0s", "resource_api_version": "V3"},
            "ads_config": {
                "api_type": "DELTA_GRPC", "set_node_on_first_message_only": true, "transport_api_version": "V3",
                "grpc_services": [{"envoy_grpc": {"cluster_name": "xds-grpc"}}]
            }
        },
        "static_resources": {
            "clusters": [pipe_cluster("xds-grpc", plane.socket("xds.sock")),
                         pipe_cluster("sds-grpc", plane.socket("sds.sock"))],
            // Stands in for the destination pod: answers what the route table "80" routes to.
            "listeners": [{
                "name": "backend",
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": ports.backend}},
                "filter_chains": [{"filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                        "stat_prefix": "backend",
                        "route_config": {"virtual_hosts": [{"name": "backend", "domains": ["*"], "routes": [{
                            "match": {"prefix": "/"},
                            "direct_response": {"status": 200, "body": {"inline_string": crate::scenario::BACKEND_BODY}}
                        }]}]},
                        "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}]
                    }
                }]}]
            }]
        }
    })
}
