//! Envoy with the loopback-guard module, from `envoy-config/loopback-guard.yaml`.
//!
//! Every instance gets its own ports, working directory and log files, so tests run in parallel.
//! Envoy's own log (where the filter's decision lines go) is its stderr, written to `envoy.log`
//! unbuffered; the access log is its stdout, `access.log`, flushed every 50 ms. The process is
//! killed on drop, and when the current thread is panicking (a failed test) both logs are
//! printed first.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{self, File};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::client::get_plain;
use crate::decision_log::{decision_lines, DecisionLine};
use crate::pki::{Pki, NAMESPACE, SERVICE_ACCOUNT};
use crate::{read_lossy, repo_root, url_encode, Context, Error, Result};

mod tree;

const TEMPLATE: &str = "envoy-config/loopback-guard.yaml";
const DEFAULT_WASM: &str = "dist/loopback_guard.wasm";
const START_TIMEOUT: Duration = Duration::from_secs(30);
const START_ATTEMPTS: usize = 3;

/// The envoy binary: `ENVOY_BIN` (the Makefile sets it from `scripts/envoy.sh`).
pub fn envoy_bin() -> Result<PathBuf> {
    let bin = std::env::var_os("ENVOY_BIN").filter(|value| !value.is_empty());
    let bin = bin.map(PathBuf::from).ok_or_else(|| {
        Error::new(
            "ENVOY_BIN is not set: run `make test-integration` or `make demo` (they install Envoy \
             and set it), or set ENVOY_BIN to an envoy binary",
        )
    })?;
    if bin.is_file() {
        Ok(bin)
    } else {
        Err(Error::new(format!("ENVOY_BIN={} is not a file", bin.display())))
    }
}

/// The built module: `LOOPBACK_GUARD_WASM`, else `dist/loopback_guard.wasm` (from `make build`).
pub fn wasm_module() -> Result<PathBuf> {
    let module = std::env::var_os("LOOPBACK_GUARD_WASM")
        .filter(|value| !value.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(DEFAULT_WASM));
    if module.is_file() {
        // Envoy resolves relative paths against its own working directory, not ours.
        module.canonicalize().context(format!("resolving {}", module.display()))
    } else {
        Err(Error::new(format!("no filter module at {}: run `make build` first", module.display())))
    }
}

/// The Envoy config template, as docker-compose and the demo use it too.
pub fn template() -> Result<String> {
    let path = repo_root().join(TEMPLATE);
    fs::read_to_string(&path).context(format!("reading {}", path.display()))
}

/// Replaces every `${NAME}` in `template`, as envsubst does, but strictly: a placeholder without
/// a value, a value without a placeholder, and a bare `$` (which envsubst would also expand) are
/// errors.
pub fn render(template: &str, values: &BTreeMap<&str, String>) -> Result<String> {
    let mut out = String::with_capacity(template.len());
    let mut used = std::collections::BTreeSet::new();
    let mut rest = template;
    while let Some(dollar) = rest.find('$') {
        let (before, from_dollar) = rest.split_at(dollar);
        out.push_str(before);
        let Some(inner) = from_dollar.strip_prefix("${") else {
            return Err(Error::new(format!(
                "a bare `$` in the template near {:?}: only ${{NAME}} placeholders may use `$`",
                from_dollar.chars().take(20).collect::<String>()
            )));
        };
        let Some(end) = inner.find('}') else {
            return Err(Error::new("an unclosed `${` in the template"));
        };
        let (name, after) = inner.split_at(end);
        let value =
            values.get(name).ok_or_else(|| Error::new(format!("the template's ${{{name}}} has no value")))?;
        out.push_str(value);
        used.insert(name);
        rest = after.get(1..).unwrap_or_default();
    }
    out.push_str(rest);
    if let Some(unused) = values.keys().find(|name| !used.contains(*name)) {
        return Err(Error::new(format!("a value for {unused}, but the template has no ${{{unused}}}")));
    }
    Ok(out)
}

/// What varies between Envoy instances.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The filter's JSON configuration, on one line; `""` means all defaults.
    pub plugin_config: String,
    /// Node metadata `NAMESPACE` and `SERVICE_ACCOUNT`.
    pub namespace: String,
    pub service_account: String,
    /// `TRUST_DOMAIN` in Envoy's environment; `None` removes it.
    pub trust_domain_env: Option<String>,
    /// The loopback listeners' `forward_client_cert_details`.
    pub forward_client_cert: ForwardClientCert,
    /// Turns TLS session resumption back on in the loopback listeners, which the template
    /// turns off: Envoy's default, which users keep when they write their own listener.
    pub session_resumption: bool,
    /// Envoy's worker threads (`--concurrency`); 2 unless set, as an Istio sidecar runs.
    pub concurrency: u32,
    /// How the strict listener validates client certificates.
    pub validator: Validator,
    /// `use_remote_address` of the loopback listeners' connection managers (the template's
    /// `true` unless set): `false` only to show what a listener that leaves it out does.
    pub use_remote_address: bool,
    /// `trust_chain_verification: ACCEPT_UNTRUSTED` on both loopback listeners: Envoy then lets
    /// a certificate that fails validation through to the filter, marked as not validated.
    pub accept_untrusted: bool,
    /// WebSocket upgrades on the loopback listeners' connection managers, as Istio's own HCMs
    /// have them (the template has none).
    pub websocket_upgrades: bool,
    /// A virtual host for `*.evil.example` ahead of the template's `*` in the loopback
    /// listeners' routes, answering [`LOOK_ALIKE_STATUS`] itself: what a request that names
    /// another service reaches (Istio builds such suffix wildcards for wildcard ServiceEntries).
    pub look_alike_virtual_host: bool,
    /// The template's `memory_allocator_manager` (tcmalloc gives freed memory back in the
    /// background); off for a test that reads Envoy's RSS as the module's memory.
    pub memory_release: bool,
    /// The config template (a path under the repository); [`TEMPLATE`] unless set.
    pub template: &'static str,
    /// Values for placeholders only that template has (see `crate::connection`).
    pub extra_values: Vec<(&'static str, String)>,
}

/// The status of [`Settings::look_alike_virtual_host`]'s own reply: no other route gives it.
pub const LOOK_ALIKE_STATUS: u16 = 418;

/// How the strict listener validates client certificates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Validator {
    /// The template's: Envoy's SPIFFE validator, the test trust domain's bundle `ca.pem`.
    Spiffe,
    /// The same, and another trust domain with its own bundle (a path to a PEM file).
    SpiffeFederated { trust_domain: String, bundle: PathBuf },
    /// Envoy's default validator with `ca.pem` as trusted CAs: the chain only, as Istio's
    /// ROOTCA over SDS does. The filter's own X509-SVID checks then see every certificate.
    ChainOnly,
}

impl Settings {
    /// The pod `demo/app` (see [`crate::pki`]) with this plugin configuration.
    pub fn with_plugin_config(plugin_config: &str) -> Self {
        Settings {
            plugin_config: plugin_config.to_owned(),
            namespace: NAMESPACE.to_owned(),
            service_account: SERVICE_ACCOUNT.to_owned(),
            trust_domain_env: None,
            forward_client_cert: ForwardClientCert::SanitizeSet,
            session_resumption: false,
            concurrency: 2,
            validator: Validator::Spiffe,
            use_remote_address: true,
            accept_untrusted: false,
            websocket_upgrades: false,
            look_alike_virtual_host: false,
            memory_release: true,
            template: TEMPLATE,
            extra_values: Vec::new(),
        }
    }

    /// See [`Settings::memory_release`].
    pub fn without_memory_release(mut self) -> Self {
        self.memory_release = false;
        self
    }

    /// See [`Settings::look_alike_virtual_host`].
    pub fn with_look_alike_virtual_host(mut self) -> Self {
        self.look_alike_virtual_host = true;
        self
    }

    /// See [`Settings::websocket_upgrades`].
    pub fn with_websocket_upgrades(mut self) -> Self {
        self.websocket_upgrades = true;
        self
    }

    pub fn concurrency(mut self, workers: u32) -> Self {
        self.concurrency = workers;
        self
    }

    pub fn validator(mut self, validator: Validator) -> Self {
        self.validator = validator;
        self
    }

    /// See [`Settings::use_remote_address`].
    pub fn without_use_remote_address(mut self) -> Self {
        self.use_remote_address = false;
        self
    }

    /// See [`Settings::accept_untrusted`].
    pub fn accepting_untrusted(mut self) -> Self {
        self.accept_untrusted = true;
        self
    }

    pub fn namespace(mut self, namespace: &str) -> Self {
        self.namespace = namespace.to_owned();
        self
    }

    pub fn service_account(mut self, service_account: &str) -> Self {
        self.service_account = service_account.to_owned();
        self
    }

    pub fn trust_domain_env(mut self, trust_domain: &str) -> Self {
        self.trust_domain_env = Some(trust_domain.to_owned());
        self
    }

    pub fn forward_client_cert(mut self, mode: ForwardClientCert) -> Self {
        self.forward_client_cert = mode;
        self
    }

    /// See [`Settings::session_resumption`].
    pub fn with_session_resumption(mut self) -> Self {
        self.session_resumption = true;
        self
    }
}

/// The loopback listeners (the backend listener stands in for the upstream and is never edited).
const LOOPBACK_LISTENERS: [&str; 2] = ["loopback_strict", "loopback_lenient"];
const HTTP_CONNECTION_MANAGER: &str = "envoy.filters.network.http_connection_manager";
const SPIFFE_VALIDATOR: &str = "envoy.tls.cert_validator.spiffe";
/// The template's fields that turn session resumption off, in both loopback listeners.
const RESUMPTION_OFF: [&str; 2] =
    ["disable_stateless_session_resumption", "disable_stateful_session_resumption"];

/// The rendered config, changed as `settings` asks: each change is an edit of the parsed config,
/// at a place found by structure (listener by name, its one filter chain, the connection
/// manager among its filters by name, its TLS context), and an error naming the place when the
/// template no longer has it, so that a test config cannot differ from the template in any
/// way but the one asked for.
///
/// The parser expands the template's YAML aliases (`*route_to_backend`, `*loopback_guard`,
/// `*access_log_stdout`, `*workload_certificate`): what the template shares between the two
/// loopback listeners through an anchor is two copies here, so an edit of a shared part is
/// made in every listener that names it (see [`LOOPBACK_LISTENERS`]). A config that no setting
/// changes is returned as rendered, byte for byte: the template as docker-compose runs it.
fn customise(rendered: String, cert_dir: &Path, settings: &Settings) -> Result<String> {
    let template_tree: serde_norway::Value =
        serde_norway::from_str(&rendered).context(format!("parsing the rendered {TEMPLATE}"))?;
    let mut config = template_tree.clone();
    edit(&mut config, cert_dir, settings)?;
    if config == template_tree {
        return Ok(rendered);
    }
    let text = serde_norway::to_string(&config).context("writing the edited config")?;
    Ok(format!("# {TEMPLATE}, rendered and edited by integration/src/envoy.rs (customise)\n{text}"))
}

/// Applies every change `settings` asks for to the parsed config (see [`customise`]).
fn edit(config: &mut serde_norway::Value, cert_dir: &Path, settings: &Settings) -> Result<()> {
    use serde_norway::Value;
    for name in LOOPBACK_LISTENERS {
        if settings.session_resumption {
            for field in RESUMPTION_OFF {
                tls_context(config, name)?.key(field)?.replace(&Value::Bool(true), Value::Bool(false))?;
            }
        }
        if settings.accept_untrusted {
            validation_context(config, name)?
                .insert_new("trust_chain_verification", Value::from("ACCEPT_UNTRUSTED"))?;
        }
        if !settings.use_remote_address {
            connection_manager(config, name)?
                .key("use_remote_address")?
                .replace(&Value::Bool(true), Value::Bool(false))?;
        }
        if settings.websocket_upgrades {
            let websocket = tree::mapping([("upgrade_type", Value::from("websocket"))]);
            connection_manager(config, name)?.insert_new("upgrade_configs", Value::from(vec![websocket]))?;
        }
        if settings.look_alike_virtual_host {
            // Ahead of the template's catch-all `all`, in each listener's copy of the route
            // config (one `&route_to_backend` in the template, expanded by the parser).
            let look_alike = tree::mapping([
                ("name", Value::from("look_alike")),
                ("domains", Value::from(vec!["*.evil.example"])),
                (
                    "routes",
                    Value::from(vec![tree::mapping([
                        ("match", tree::mapping([("prefix", Value::from("/"))])),
                        ("direct_response", tree::mapping([("status", Value::from(LOOK_ALIKE_STATUS))])),
                    ])]),
                ),
            ]);
            connection_manager(config, name)?
                .key("route_config")?
                .key("virtual_hosts")?
                .starting_with("all")?
                .insert(0, look_alike);
        }
    }
    if !settings.memory_release {
        let removed = config.as_mapping_mut().and_then(|root| root.remove("memory_allocator_manager"));
        if removed.is_none() {
            return Err(Error::new(format!("no memory_allocator_manager in {TEMPLATE}")));
        }
    }
    let strict = "loopback_strict";
    match &settings.validator {
        Validator::Spiffe => {}
        Validator::SpiffeFederated { trust_domain, bundle } => {
            let entry = tree::mapping([
                ("name", Value::from(trust_domain.as_str())),
                ("trust_bundle", tree::mapping([("filename", Value::from(bundle.display().to_string()))])),
            ]);
            spiffe_validator(config, strict)?.key("trust_domains")?.sequence()?.insert(0, entry);
        }
        Validator::ChainOnly => {
            // The SPIFFE validator with the test trust domain's bundle only, swapped for
            // Envoy's default validator with that bundle as trusted CAs.
            let bundle = Value::from(format!("{}/ca.pem", cert_dir.display()));
            spiffe_validator(config, strict)?
                .key("trust_domains")?
                .only()?
                .key("trust_bundle")?
                .key("filename")?
                .expect(&bundle)?;
            validation_context(config, strict)?.remove("custom_validator_config")?;
            validation_context(config, strict)?
                .insert_new("trusted_ca", tree::mapping([("filename", bundle)]))?;
        }
    }
    Ok(())
}

/// The listener named `name`.
fn listener<'a>(config: &'a mut serde_norway::Value, name: &str) -> Result<tree::At<'a>> {
    tree::At::root(config).key("static_resources")?.key("listeners")?.named(name)
}

/// The `DownstreamTlsContext` of the listener's one filter chain.
fn tls_context<'a>(config: &'a mut serde_norway::Value, name: &str) -> Result<tree::At<'a>> {
    listener(config, name)?
        .key("filter_chains")?
        .only()?
        .key("transport_socket")?
        .with_name("envoy.transport_sockets.tls")?
        .key("typed_config")
}

fn validation_context<'a>(config: &'a mut serde_norway::Value, name: &str) -> Result<tree::At<'a>> {
    tls_context(config, name)?.key("common_tls_context")?.key("validation_context")
}

/// The `SPIFFECertValidatorConfig` of the listener.
fn spiffe_validator<'a>(config: &'a mut serde_norway::Value, name: &str) -> Result<tree::At<'a>> {
    validation_context(config, name)?
        .key("custom_validator_config")?
        .with_name(SPIFFE_VALIDATOR)?
        .key("typed_config")
}

/// The `HttpConnectionManager` of the listener's one filter chain.
fn connection_manager<'a>(config: &'a mut serde_norway::Value, name: &str) -> Result<tree::At<'a>> {
    listener(config, name)?
        .key("filter_chains")?
        .only()?
        .key("filters")?
        .named(HTTP_CONNECTION_MANAGER)?
        .key("typed_config")
}

/// What the HTTP connection manager does with the `x-forwarded-client-cert` header (Envoy's
/// `forward_client_cert_details`), on a connection with a client certificate. The template's
/// `set_current_client_cert_details` (`cert`, `uri`) is what an element set by this proxy holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ForwardClientCert {
    /// Removes the client's header; adds nothing. (Envoy's default.)
    Sanitize,
    /// Passes the client's header on; adds nothing.
    ForwardOnly,
    /// Passes the client's header on and appends this proxy's element.
    AppendForward,
    /// Replaces the client's header with this proxy's element. (The shipped configs.)
    SanitizeSet,
    /// Passes the client's header on, with or without mTLS; adds nothing.
    AlwaysForwardOnly,
}

impl ForwardClientCert {
    /// The enum value as Envoy's config spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            ForwardClientCert::Sanitize => "SANITIZE",
            ForwardClientCert::ForwardOnly => "FORWARD_ONLY",
            ForwardClientCert::AppendForward => "APPEND_FORWARD",
            ForwardClientCert::SanitizeSet => "SANITIZE_SET",
            ForwardClientCert::AlwaysForwardOnly => "ALWAYS_FORWARD_ONLY",
        }
    }
}

impl fmt::Display for ForwardClientCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An Envoy release, from `envoy --version`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct EnvoyVersion {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

impl EnvoyVersion {
    /// `envoy --version` prints `envoy  version: <commit>/1.40.0/Clean/RELEASE/BoringSSL`.
    pub fn parse(version_output: &str) -> Option<Self> {
        let field = version_output.split("version:").nth(1)?.trim().split('/').nth(1)?;
        let mut numbers = field.split('.').map(|part| part.parse::<u32>().ok());
        match (numbers.next(), numbers.next(), numbers.next(), numbers.next()) {
            (Some(Some(major)), Some(Some(minor)), Some(Some(patch)), None) => {
                Some(EnvoyVersion { major, minor, patch })
            }
            _ => None,
        }
    }

    /// Whether Wasm sees `connection.peer_certificate` (the client certificate as PEM). Seen
    /// absent on 1.36.4 and 1.37.0, present on 1.38.2, 1.39.3 and 1.40.0: without it the filter
    /// takes the certificate from the XFCC element this proxy sets.
    pub fn has_peer_certificate(self) -> bool {
        (self.major, self.minor) >= (1, 38)
    }

    /// Whether Wasm sees `connection.peer_certificate_valid`. Seen absent up to 1.38.2, present
    /// on 1.39.3 and 1.40.0.
    pub fn has_peer_certificate_valid(self) -> bool {
        (self.major, self.minor) >= (1, 39)
    }

    /// Which way the filter gets the client certificate on this version.
    pub fn certificate_path(self) -> &'static str {
        if self.has_peer_certificate() {
            "connection.peer_certificate"
        } else {
            "x-forwarded-client-cert"
        }
    }
}

impl fmt::Display for EnvoyVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// The version of the Envoy the tests run (`ENVOY_BIN`).
pub fn envoy_version() -> Result<EnvoyVersion> {
    let bin = envoy_bin()?;
    let output = Command::new(&bin)
        .arg("--version")
        .output()
        .context(format!("running {} --version", bin.display()))?;
    let text = String::from_utf8_lossy(&output.stdout);
    EnvoyVersion::parse(&text).ok_or_else(|| {
        Error::new(format!("no version in the output of {} --version: {text:?}", bin.display()))
    })
}

/// The listeners of the config.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Listener {
    /// Requires a client certificate (the app-to-sidecar hop).
    Strict,
    /// Requests a client certificate but lets a client without one through to the filter.
    Lenient,
}

impl fmt::Display for Listener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Listener::Strict => "strict",
            Listener::Lenient => "lenient",
        })
    }
}

#[derive(Clone, Copy, Debug)]
pub struct Ports {
    pub admin: u16,
    pub strict: u16,
    pub lenient: u16,
    pub backend: u16,
}

impl Ports {
    /// Four ports the kernel just handed out, so parallel instances rarely collide (and a
    /// collision is retried).
    pub fn pick() -> Result<Self> {
        let listeners = (0..4)
            .map(|_| TcpListener::bind("127.0.0.1:0").context("finding a free port"))
            .collect::<Result<Vec<_>>>()?;
        let ports = listeners
            .iter()
            .map(|listener| listener.local_addr().map(|addr| addr.port()).context("finding a free port"))
            .collect::<Result<Vec<_>>>()?;
        match ports.as_slice() {
            [admin, strict, lenient, backend] => {
                Ok(Ports { admin: *admin, strict: *strict, lenient: *lenient, backend: *backend })
            }
            _ => Err(Error::new("finding four free ports")),
        }
    }
}

/// A rendered config in its own directory, with the values that went into it.
struct Rendered {
    dir: tempfile::TempDir,
    config_path: PathBuf,
    ports: Ports,
}

fn render_config(pki: &Pki, settings: &Settings) -> Result<Rendered> {
    if settings.plugin_config.contains('\n') {
        return Err(Error::new(
            "the plugin configuration must be one line (it goes into a one-line YAML string)",
        ));
    }
    let ports = Ports::pick()?;
    let mut values = BTreeMap::from([
        ("ADMIN_PORT", ports.admin.to_string()),
        ("LISTEN_PORT", ports.strict.to_string()),
        ("LENIENT_PORT", ports.lenient.to_string()),
        ("BACKEND_PORT", ports.backend.to_string()),
        ("BACKEND_HOST", "127.0.0.1".to_owned()),
        ("CERT_DIR", pki.dir().display().to_string()),
        ("WASM", wasm_module()?.display().to_string()),
        // A single-quoted YAML string: '' is how it spells '.
        ("PLUGIN_CONFIG", settings.plugin_config.replace('\'', "''")),
        ("NAMESPACE", settings.namespace.clone()),
        ("SERVICE_ACCOUNT", settings.service_account.clone()),
        ("FORWARD_CLIENT_CERT", settings.forward_client_cert.as_str().to_owned()),
        ("TRUST_DOMAIN", crate::pki::TRUST_DOMAIN.to_owned()),
    ]);
    values.extend(settings.extra_values.iter().cloned());
    let path = repo_root().join(settings.template);
    let template = fs::read_to_string(&path).context(format!("reading {}", path.display()))?;
    let rendered = customise(render(&template, &values)?, pki.dir(), settings)?;
    let dir = tempfile::Builder::new()
        .prefix("loopback-guard-envoy-")
        .tempdir()
        .context("creating Envoy's working directory")?;
    let config_path = dir.path().join("envoy.yaml");
    fs::write(&config_path, rendered).context(format!("writing {}", config_path.display()))?;
    Ok(Rendered { dir, config_path, ports })
}

fn envoy_command(bin: &Path, config_path: &Path, settings: &Settings) -> Command {
    let mut command = Command::new(bin);
    command
        .arg("-c")
        .arg(config_path)
        .args(["--disable-hot-restart", "--concurrency", &settings.concurrency.to_string(), "-l", "info"])
        .args(["--file-flush-interval-msec", "50"])
        .env_remove("TRUST_DOMAIN")
        .stdin(Stdio::null());
    if let Some(trust_domain) = &settings.trust_domain_env {
        command.env("TRUST_DOMAIN", trust_domain);
    }
    command
}

/// The outcome of `envoy --mode validate`.
#[derive(Debug)]
pub struct Validation {
    pub passed: bool,
    pub output: String,
}

/// Renders the template for `settings` and runs `envoy --mode validate -c` on it.
pub fn validate(pki: &Pki, settings: &Settings) -> Result<Validation> {
    let rendered = render_config(pki, settings)?;
    let output = envoy_command(&envoy_bin()?, &rendered.config_path, settings)
        .args(["--mode", "validate"])
        .output()
        .context("running envoy --mode validate")?;
    Ok(Validation {
        passed: output.status.success(),
        output: format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    })
}

/// Why Envoy did not come up.
pub enum StartError {
    /// The harness could not prepare or launch Envoy.
    Harness(Error),
    /// Envoy exited during start-up, e.g. because it refused the config.
    Exited { status: String, log: String },
    /// Envoy kept running but did not report ready in time.
    NotReady { log: String },
}

impl StartError {
    /// Envoy's log, when Envoy ran at all.
    pub fn log(&self) -> Option<&str> {
        match self {
            StartError::Harness(_) => None,
            StartError::Exited { log, .. } | StartError::NotReady { log } => Some(log),
        }
    }
}

impl From<Error> for StartError {
    fn from(err: Error) -> Self {
        StartError::Harness(err)
    }
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::Harness(err) => write!(f, "could not start Envoy: {err}"),
            StartError::Exited { status, log } => {
                write!(f, "Envoy exited during start-up ({status}); its log:\n{log}")
            }
            StartError::NotReady { log } => {
                write!(f, "Envoy was not ready after {}s; its log:\n{log}", START_TIMEOUT.as_secs())
            }
        }
    }
}

// `unwrap()` on a failed start prints the log readably rather than as one escaped string.
impl fmt::Debug for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::error::Error for StartError {}

/// Byte offsets into the two logs, to read only what a request added.
#[derive(Clone, Copy, Debug, Default)]
pub struct LogPosition {
    envoy: usize,
    access: usize,
}

/// A running Envoy, killed on drop.
pub struct Envoy {
    child: Child,
    rendered: Rendered,
    log_path: PathBuf,
    access_log_path: PathBuf,
    /// Whether the plugin configuration asks for filter state (`"filter_state": true`).
    filter_state: bool,
}

impl Envoy {
    /// Starts Envoy and waits until its admin endpoint reports it ready.
    pub fn start(pki: &Pki, settings: &Settings) -> std::result::Result<Envoy, StartError> {
        let bin = envoy_bin()?;
        let mut attempt = 1;
        loop {
            match Self::start_once(&bin, pki, settings) {
                Err(StartError::Exited { log, .. })
                    if attempt < START_ATTEMPTS && log.contains("Address already in use") =>
                {
                    attempt += 1;
                }
                result => return result,
            }
        }
    }

    fn start_once(bin: &Path, pki: &Pki, settings: &Settings) -> std::result::Result<Envoy, StartError> {
        let rendered = render_config(pki, settings)?;
        let log_path = rendered.dir.path().join("envoy.log");
        let access_log_path = rendered.dir.path().join("access.log");
        let stderr = File::create(&log_path).context(format!("creating {}", log_path.display()))?;
        let stdout =
            File::create(&access_log_path).context(format!("creating {}", access_log_path.display()))?;
        let child = envoy_command(bin, &rendered.config_path, settings)
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .context(format!("running {}", bin.display()))?;
        let filter_state = serde_json::from_str::<serde_json::Value>(&settings.plugin_config)
            .is_ok_and(|config| config.get("filter_state") == Some(&serde_json::Value::Bool(true)));
        let mut envoy = Envoy { child, rendered, log_path, access_log_path, filter_state };
        envoy.wait_ready()?;
        Ok(envoy)
    }

    fn wait_ready(&mut self) -> std::result::Result<(), StartError> {
        let ready_url = format!("{}/ready", self.admin_url());
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(StartError::Exited { status: status.to_string(), log: self.log() });
            }
            if let Ok(reply) = get_plain(&ready_url) {
                if reply.status == 200 {
                    return Ok(());
                }
            }
            thread::sleep(Duration::from_millis(50));
        }
        Err(StartError::NotReady { log: self.log() })
    }

    /// Whether the filter sets `loopback_guard.decision`/`.reason` for the access log.
    pub fn filter_state(&self) -> bool {
        self.filter_state
    }

    pub fn ports(&self) -> Ports {
        self.rendered.ports
    }

    pub fn admin_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.rendered.ports.admin)
    }

    /// `https://127.0.0.1:<port><path>` for one of the loopback listeners.
    pub fn url(&self, listener: Listener, path: &str) -> String {
        let port = match listener {
            Listener::Strict => self.rendered.ports.strict,
            Listener::Lenient => self.rendered.ports.lenient,
        };
        format!("https://127.0.0.1:{port}{path}")
    }

    pub fn config_path(&self) -> &Path {
        &self.rendered.config_path
    }

    /// Envoy's own log so far (the filter's decision lines are in it).
    pub fn log(&self) -> String {
        read_lossy(&self.log_path)
    }

    /// The access log so far: one JSON object per line.
    pub fn access_log(&self) -> String {
        read_lossy(&self.access_log_path)
    }

    pub fn log_position(&self) -> LogPosition {
        LogPosition { envoy: self.log().len(), access: self.access_log().len() }
    }

    /// Decision lines logged since `position`.
    pub fn decisions_since(&self, position: LogPosition) -> Vec<DecisionLine> {
        decision_lines(self.log().get(position.envoy..).unwrap_or_default())
    }

    /// Access log entries written since `position`.
    pub fn access_entries_since(&self, position: LogPosition) -> Vec<Value> {
        self.access_log()
            .get(position.access..)
            .unwrap_or_default()
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    }

    /// Every stat whose name contains `loopback_guard`, by its name as Envoy prints it.
    pub fn guard_stats(&self) -> Result<Stats> {
        self.stats("loopback_guard")
    }

    /// Every stat whose name matches the regular expression `filter` (Envoy's `/stats?filter=`).
    pub fn stats(&self, filter: &str) -> Result<Stats> {
        let url = format!("{}/stats?filter={}", self.admin_url(), url_encode(filter.as_bytes()));
        let reply = get_plain(&url)?;
        if reply.status != 200 {
            return Err(Error::new(format!("GET {url}: status {}: {}", reply.status, reply.body)));
        }
        Ok(Stats::parse(&reply.body))
    }

    /// The TLS statistics of a loopback listener (`listener.127.0.0.1_<port>.ssl.*`), by the
    /// name after `ssl.` (`handshake`, `fail_verify_error`, `connection_error`, ...).
    pub fn listener_tls_stats(&self, listener: Listener) -> Result<BTreeMap<String, u64>> {
        let port = match listener {
            Listener::Strict => self.rendered.ports.strict,
            Listener::Lenient => self.rendered.ports.lenient,
        };
        let prefix = format!("listener.127.0.0.1_{port}.ssl.");
        let stats = self.stats(&format!("^listener\\.127\\.0\\.0\\.1_{port}\\.ssl\\."))?;
        Ok(stats
            .0
            .into_iter()
            .filter_map(|(name, value)| Some((name.strip_prefix(&prefix)?.to_owned(), value)))
            .collect())
    }

    /// What Envoy reports about its Wasm VMs and the plugin: every stat under `wasm.` and
    /// `wasm_vm.` (VMs created and active, and on versions that have them, VM reloads and
    /// failures), without the filter's own counters (under `wasmcustom.`).
    pub fn wasm_stats(&self) -> Result<Stats> {
        self.stats("^wasm(_vm)?\\.")
    }

    /// Stops Envoy now (dropping does the same).
    pub fn stop(self) {}

    fn dump_logs(&self) {
        eprintln!(
            "----- Envoy log ({}) -----\n{}\n----- access log -----\n{}\n----- end of Envoy logs -----",
            self.log_path.display(),
            self.log(),
            self.access_log()
        );
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        if thread::panicking() {
            self.dump_logs();
        }
        // Already gone is fine; nothing else to do about a kill that fails.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Counter values from Envoy's admin `/stats`, by name exactly as Envoy prints it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats(pub BTreeMap<String, u64>);

impl Stats {
    /// Parses `name: value` lines; histograms and other non-integer values are skipped.
    pub fn parse(text: &str) -> Self {
        Stats(
            text.lines()
                .filter_map(|line| {
                    let (name, value) = line.split_once(": ")?;
                    Some((name.trim().to_owned(), value.trim().parse().ok()?))
                })
                .collect(),
        )
    }

    /// The value of the counter whose name is `loopback_guard.<name>` after any prefix Envoy
    /// adds (such as `wasmcustom.`).
    pub fn guard_counter(&self, name: &str) -> Option<u64> {
        self.0.iter().find(|(full, _)| guard_counter_name(full) == Some(name)).map(|(_, value)| *value)
    }

    /// The counters that changed from `before` to `self`, by short name (`denied.<reason>`,
    /// `allowed`, ...), with how much.
    pub fn guard_changes_since(&self, before: &Stats) -> BTreeMap<String, i64> {
        self.0
            .iter()
            .filter_map(|(full, after)| {
                let short = guard_counter_name(full)?;
                let before = before.0.get(full).copied().unwrap_or(0);
                let change = i64::try_from(*after).ok()? - i64::try_from(before).ok()?;
                (change != 0).then(|| (short.to_owned(), change))
            })
            .collect()
    }
}

/// `wasmcustom.loopback_guard.denied.no_client_certificate` -> `denied.no_client_certificate`.
pub fn guard_counter_name(full: &str) -> Option<&str> {
    let start = full.find("loopback_guard.")?;
    full.get(start + "loopback_guard.".len()..)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(pairs: &[(&'static str, &str)]) -> BTreeMap<&'static str, String> {
        pairs.iter().map(|(k, v)| (*k, (*v).to_owned())).collect()
    }

    #[test]
    fn render_replaces_every_placeholder() {
        let out = render("a: ${A}\nb: '${B}'\n", &values(&[("A", "1"), ("B", "x''y")])).unwrap();
        assert_eq!(out, "a: 1\nb: 'x''y'\n");
    }

    #[test]
    fn render_rejects_missing_unused_and_bare_dollars() {
        let cases = [
            ("missing value", "a: ${A} ${B}", values(&[("A", "1")]), "${B}"),
            ("unused value", "a: ${A}", values(&[("A", "1"), ("C", "2")]), "C"),
            ("bare dollar", "a: $A", values(&[("A", "1")]), "bare"),
            ("unclosed", "a: ${A", values(&[("A", "1")]), "unclosed"),
        ];
        for (name, template, values, needle) in cases {
            let err = render(template, &values).unwrap_err().to_string();
            assert!(err.contains(needle), "{name}: {err}");
        }
    }

    /// The template, every placeholder filled (`CERT_DIR` is `/certs`).
    fn rendered_template() -> String {
        let all = values(&[
            ("ADMIN_PORT", "1"),
            ("LISTEN_PORT", "2"),
            ("LENIENT_PORT", "3"),
            ("BACKEND_PORT", "4"),
            ("BACKEND_HOST", "127.0.0.1"),
            ("CERT_DIR", "/certs"),
            ("WASM", "/m.wasm"),
            ("PLUGIN_CONFIG", "{}"),
            ("NAMESPACE", "demo"),
            ("SERVICE_ACCOUNT", "app"),
            ("FORWARD_CLIENT_CERT", "SANITIZE_SET"),
            ("TRUST_DOMAIN", "cluster.local"),
        ]);
        render(&template().unwrap(), &all).unwrap()
    }

    #[test]
    fn the_template_renders_with_exactly_the_documented_placeholders() {
        rendered_template();
    }

    fn customised(settings: &Settings) -> serde_norway::Value {
        let text = customise(rendered_template(), Path::new("/certs"), settings).unwrap();
        serde_norway::from_str(&text).unwrap()
    }

    /// `path` in the config, `/`-separated; a listener by its name.
    fn at<'a>(config: &'a serde_norway::Value, path: &str) -> &'a serde_norway::Value {
        path.split('/').fold(config, |value, step| match value {
            serde_norway::Value::Sequence(elements) => elements
                .iter()
                .find(|element| element.get("name").and_then(serde_norway::Value::as_str) == Some(step))
                .or_else(|| elements.get(step.parse::<usize>().ok()?))
                .unwrap_or_else(|| panic!("no {step} in {path}")),
            other => other.get(step).unwrap_or_else(|| panic!("no {step} in {path}")),
        })
    }

    const TLS: &str = "filter_chains/0/transport_socket/typed_config";
    const HCM: &str = "filter_chains/0/filters/envoy.filters.network.http_connection_manager/typed_config";

    #[test]
    fn a_config_no_setting_changes_is_the_template_as_rendered() {
        let text =
            customise(rendered_template(), Path::new("/certs"), &Settings::with_plugin_config("{}")).unwrap();
        assert_eq!(text, rendered_template());
    }

    #[test]
    fn every_setting_is_an_edit_of_both_loopback_listeners_where_the_template_has_its_field() {
        let plain = Settings::with_plugin_config("{}");
        let cases: [(&str, Settings, &str, &str); 5] = [
            ("resumption", plain.clone().with_session_resumption(), TLS, "disable_stateful_session_resumption: false"),
            ("remote address", plain.clone().without_use_remote_address(), HCM, "use_remote_address: false"),
            (
                "untrusted",
                plain.clone().accepting_untrusted(),
                "filter_chains/0/transport_socket/typed_config/common_tls_context/validation_context",
                "trust_chain_verification: ACCEPT_UNTRUSTED",
            ),
            ("websocket", plain.clone().with_websocket_upgrades(), HCM, "- upgrade_type: websocket"),
            (
                "look-alike",
                plain.clone().with_look_alike_virtual_host(),
                "filter_chains/0/filters/envoy.filters.network.http_connection_manager/typed_config/route_config/virtual_hosts/0",
                "status: 418",
            ),
        ];
        for (name, settings, place, expected) in cases {
            let config = customised(&settings);
            for listener in LOOPBACK_LISTENERS {
                let value = at(&config, &format!("static_resources/listeners/{listener}/{place}"));
                let text = serde_norway::to_string(value).unwrap();
                assert!(text.contains(expected), "{name}, {listener}: {text}");
            }
            // The backend listener is never edited.
            let before: serde_norway::Value = serde_norway::from_str(&rendered_template()).unwrap();
            let backend = "static_resources/listeners/backend";
            assert_eq!(at(&config, backend), at(&before, backend), "{name}");
        }
        let config = customised(&plain.clone().with_look_alike_virtual_host());
        let hosts = at(
            &config,
            &format!("static_resources/listeners/loopback_lenient/{HCM}/route_config/virtual_hosts"),
        );
        assert_eq!(serde_norway::to_string(at(hosts, "1/name")).unwrap(), "all\n");
    }

    #[test]
    fn the_strict_listeners_validator_is_swapped_or_given_a_second_trust_domain() {
        let validation =
            format!("static_resources/listeners/loopback_strict/{TLS}/common_tls_context/validation_context");
        let config = customised(
            &Settings::with_plugin_config("{}").validator(Validator::ChainOnly).accepting_untrusted(),
        );
        let text = serde_norway::to_string(at(&config, &validation)).unwrap();
        assert_eq!(
            text,
            "trust_chain_verification: ACCEPT_UNTRUSTED\ntrusted_ca:\n  filename: /certs/ca.pem\n"
        );
        let federated = Validator::SpiffeFederated {
            trust_domain: "other.example".into(),
            bundle: "/b/other.pem".into(),
        };
        let config = customised(&Settings::with_plugin_config("{}").validator(federated));
        let domains =
            at(&config, &format!("{validation}/custom_validator_config/typed_config/trust_domains"));
        let text = serde_norway::to_string(domains).unwrap();
        assert!(
            text.starts_with(
                "- name: other.example\n  trust_bundle:\n    filename: /b/other.pem\n- name: cluster.local\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn an_edit_of_a_template_without_its_place_fails_naming_the_place() {
        let plain = Settings::with_plugin_config("{}");
        let rendered = rendered_template();
        let lenient_hcm = rendered.rfind("use_remote_address: true").unwrap();
        let mut remote_address_off = rendered.clone();
        remote_address_off.replace_range(lenient_hcm..lenient_hcm + 24, "use_remote_address: false");
        let cases = [
            (
                "listener renamed",
                rendered.replace("name: loopback_lenient", "name: loopback_other"),
                plain.clone().without_use_remote_address(),
                "expected one element named `loopback_lenient` at `static_resources.listeners[loopback_lenient]`, found 0",
            ),
            (
                "already off",
                remote_address_off,
                plain.clone().without_use_remote_address(),
                "[loopback_lenient].filter_chains[0].filters[envoy.filters.network.http_connection_manager].typed_config.use_remote_address`",
            ),
            (
                "another bundle",
                rendered.replace("trust_bundle: { filename: \"/certs/ca.pem\" }", "trust_bundle: { filename: \"/x.pem\" }"),
                plain.clone().validator(Validator::ChainOnly),
                "trust_bundle.filename`",
            ),
            (
                "catch-all not first",
                rendered.replace("- name: all\n", "- name: every\n"),
                plain.clone().with_look_alike_virtual_host(),
                "first element is named `all`",
            ),
            (
                "no resumption field",
                rendered.replace("          disable_stateless_session_resumption: true\n", ""),
                plain.clone().with_session_resumption(),
                "no `disable_stateless_session_resumption`",
            ),
        ];
        for (name, text, settings, needle) in cases {
            assert_ne!(text, rendered, "{name}: the case changes nothing");
            let err = customise(text, Path::new("/certs"), &settings).unwrap_err().to_string();
            assert!(err.contains(needle) && err.contains(TEMPLATE), "{name}: {err}");
        }
    }

    #[test]
    fn envoy_version_from_version_output() {
        let out = "\nenvoy  version: 3ad5f1a/1.36.4/Distribution/RELEASE/BoringSSL\n\n";
        let version = EnvoyVersion::parse(out).unwrap();
        assert_eq!(version.to_string(), "1.36.4");
        assert!(!version.has_peer_certificate());
        let version = EnvoyVersion::parse("envoy  version: abc/1.40.0/Clean/RELEASE/BoringSSL").unwrap();
        assert!(version.has_peer_certificate() && version.has_peer_certificate_valid());
        let version = EnvoyVersion::parse("envoy  version: abc/1.38.2/Clean/RELEASE/BoringSSL").unwrap();
        assert!(version.has_peer_certificate() && !version.has_peer_certificate_valid());
        assert_eq!(EnvoyVersion::parse("envoy  version: abc/1.40/Clean"), None);
        assert_eq!(EnvoyVersion::parse("something else"), None);
    }

    #[test]
    fn stats_changes_strip_envoys_prefix() {
        let before = Stats::parse("wasmcustom.loopback_guard.allowed: 1\n");
        let after = Stats::parse(
            "wasmcustom.loopback_guard.allowed: 2\nwasmcustom.loopback_guard.denied.principal_mismatch: 0\n",
        );
        assert_eq!(after.guard_changes_since(&before), BTreeMap::from([("allowed".to_owned(), 1)]));
        assert_eq!(after.guard_counter("allowed"), Some(2));
    }
}
