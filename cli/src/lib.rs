//! The `loopback-guard` command: the filter's decision outside Envoy.
//!
//! - `check`: what the filter decides for a certificate, step by step, and the line it logs.
//! - `config validate`: the error Envoy's log would show for a configuration, or its summary.
//! - `explain-log`: the decision lines of an Envoy log, summed up.
//! - `istio render`: the Istio manifests for one Istio version ([`istio`]).
//!
//! Every decision is made by `loopback-guard-core`, the code the module runs; [`host`] describes
//! the request as Envoy 1.40 would. [`run`] is the whole command, so tests and the demo call it
//! with their own arguments and writers. Exit status: 0 allow / valid, 1 deny / invalid, 2 bad
//! usage or input.

use std::ffi::OsString;
use std::fs;
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use clap::{ArgGroup, Args, Parser, Subcommand, ValueEnum};
use loopback_guard_core::config::Policy;

pub mod cert;
mod check;
pub mod explain;
mod explain_log;
mod handshake;
pub mod host;
pub mod istio;
pub mod manifest;
mod style;
mod validate;

pub use style::Style;

/// Allowed, or a valid configuration.
pub const EXIT_OK: u8 = 0;
/// Denied (or would be, in audit mode), or an invalid configuration.
pub const EXIT_REFUSED: u8 = 1;
/// Bad usage, or input that cannot be read.
pub const EXIT_USAGE: u8 = 2;

#[derive(Parser, Debug)]
#[command(
    name = "loopback-guard",
    version,
    about = "Check a certificate, validate a configuration and explain decision logs of the \
             loopback-guard Envoy filter, with the filter's own code",
    after_help = "Exit status: 0 allow / valid, 1 deny / would_deny / invalid, 2 bad usage or unreadable input."
)]
struct Cli {
    /// Output format.
    #[arg(long, global = true, value_enum, default_value_t = Output::Text)]
    output: Output,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Output {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// The decision the filter would make for a request presenting this certificate.
    Check(Box<CheckArgs>),
    /// Plugin configurations.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Sum up the decision lines of an Envoy (or `kubectl logs`) log.
    ExplainLog(ExplainArgs),
    /// Istio manifests for one Istio version.
    Istio {
        #[command(subcommand)]
        command: istio::IstioCommand,
    },
}

#[derive(Subcommand, Debug)]
enum ConfigCommand {
    /// Validate a plugin configuration (JSON) or the WasmPlugin / TrafficExtension / EnvoyFilter
    /// manifest that carries it, as the filter does when Envoy loads it.
    Validate(ValidateArgs),
}

#[derive(Args, Debug)]
#[command(group(ArgGroup::new("peer").required(true).args(["cert", "no_cert"])))]
struct CheckArgs {
    /// The client certificate: PEM, DER, or a PEM chain with the leaf first (istio-agent's
    /// cert-chain.pem).
    #[arg(long, value_name = "FILE")]
    cert: Option<PathBuf>,
    /// A connection without a client certificate (a listener that only requests one lets it
    /// reach the filter).
    #[arg(long)]
    no_cert: bool,
    /// The CAs the listener trusts for client certificates (its validation_context.trusted_ca,
    /// e.g. the mesh root): also decide the TLS handshake, which turns away a certificate of
    /// another CA or out of its validity before the filter runs. This models a listener that
    /// validates the chain only (Istio's ROOTCA); Envoy's SPIFFE validator also turns away,
    /// in the handshake, a certificate whose URI SAN names no configured trust domain.
    #[arg(long, value_name = "FILE")]
    ca: Option<PathBuf>,
    /// The plugin configuration: JSON, or a manifest that carries it [default: every default].
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// The pod's namespace (node metadata NAMESPACE).
    #[arg(long, value_name = "NS", requires = "service_account")]
    namespace: Option<String>,
    /// The pod's service account (node metadata SERVICE_ACCOUNT).
    #[arg(long, value_name = "SA", requires = "namespace")]
    service_account: Option<String>,
    /// TRUST_DOMAIN in the Wasm VM's environment (Istio passes the sidecar's).
    #[arg(long, value_name = "TD")]
    trust_domain: Option<String>,
    /// The pod's own SPIFFE ID, as the certificate the listener serves carries it [default: the
    /// one --namespace and --service-account name].
    #[arg(long, value_name = "ID")]
    principal: Option<String>,
    /// The peer's address, ip:port.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:50000")]
    source: String,
    /// The request path.
    #[arg(long, default_value = "/")]
    path: String,
    /// The request's authority (`Host`), as an app calling the loopback listener sends it.
    #[arg(long, value_name = "HOST[:PORT]", default_value = "127.0.0.1:16443")]
    authority: String,
    /// The proxy's clock, RFC 3339 (e.g. 2026-12-01T23:12:07Z) [default: now].
    #[arg(long, value_name = "RFC3339")]
    at: Option<String>,
}

#[derive(Args, Debug)]
struct ValidateArgs {
    /// The plugin's JSON configuration, or YAML holding it.
    #[arg(value_name = "FILE")]
    file: PathBuf,
    /// TRUST_DOMAIN in the Wasm VM's environment, which the configuration may rely on.
    #[arg(long, value_name = "TD")]
    trust_domain: Option<String>,
}

#[derive(Args, Debug)]
struct ExplainArgs {
    /// The log; `-` or nothing reads standard input.
    #[arg(value_name = "FILE")]
    file: Option<PathBuf>,
    /// How many denied peer principals to list.
    #[arg(long, value_name = "N", default_value_t = 10)]
    top: usize,
}

/// Where the command reads and writes.
pub struct Io<'a> {
    pub stdin: &'a mut dyn Read,
    pub stdout: &'a mut dyn Write,
    pub stderr: &'a mut dyn Write,
    /// Colours and bold, for a terminal.
    pub style: Style,
}

/// A failure that ends the command: what to say, and the exit status.
#[derive(Debug)]
pub(crate) struct Failure {
    pub code: u8,
    pub message: String,
}

impl Failure {
    pub fn usage(message: impl Into<String>) -> Self {
        Self { code: EXIT_USAGE, message: message.into() }
    }
}

/// Runs the command line `args` (the program name first); returns the exit status.
pub fn run<I, T>(args: I, io: &mut Io<'_>) -> u8
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_USAGE } else { EXIT_OK };
            let text =
                if io.style.enabled() { e.render().ansi().to_string() } else { e.render().to_string() };
            let out: &mut dyn Write = if e.use_stderr() { io.stderr } else { io.stdout };
            let _ = out.write_all(text.as_bytes());
            return code;
        }
    };
    let json = cli.output == Output::Json;
    let result = match &cli.command {
        Command::Check(args) => check::run(args, json, io),
        Command::Config { command: ConfigCommand::Validate(args) } => validate::run(args, json, io),
        Command::ExplainLog(args) => explain_log::run(args, json, io),
        Command::Istio { command } => istio::run(command, io),
    };
    match result {
        Ok(code) => code,
        Err(Failure { code, message }) => {
            let _ = writeln!(io.stderr, "loopback-guard: {message}");
            code
        }
    }
}

/// Writes `text` to standard output; a closed pipe is no reason to panic.
pub(crate) fn emit(io: &mut Io<'_>, text: &str) -> Result<(), Failure> {
    io.stdout.write_all(text.as_bytes()).map_err(|e| Failure::usage(format!("cannot write the output: {e}")))
}

fn read_file(path: &Path) -> Result<Vec<u8>, Failure> {
    fs::read(path).map_err(|e| Failure::usage(format!("cannot read {}: {e}", path.display())))
}

/// A plugin configuration taken from a file, and where in it.
pub(crate) struct ConfigText {
    pub location: String,
    pub json: Vec<u8>,
}

/// Every plugin configuration in `path` (exit status 2 when there is none).
pub(crate) fn read_configs(path: &Path) -> Result<Vec<ConfigText>, Failure> {
    let bytes = read_file(path)?;
    let name = path.display().to_string();
    match manifest::read(&bytes) {
        Ok(manifest::Source::PluginJson) => Ok(vec![ConfigText { location: name, json: bytes }]),
        Ok(manifest::Source::Manifest(found)) => Ok(found
            .into_iter()
            .map(|found| ConfigText {
                location: format!("{name} ({})", found.location),
                json: found.json.into_bytes(),
            })
            .collect()),
        Err(e) => Err(Failure::usage(format!("{name}: {e}"))),
    }
}

/// The filter's own summary of a policy, as it logs `configured: ...` at start, with the
/// configured principal where there is one.
pub(crate) fn policy_summary(policy: &Policy) -> String {
    let summary = loopback_guard_core::engine::configured_line(policy);
    match &policy.principal {
        Some(principal) => format!("{summary} principal={principal}"),
        None => summary,
    }
}

/// Standard input, or a file.
pub(crate) fn open_input<'a>(
    path: Option<&Path>,
    io: &'a mut Io<'_>,
) -> Result<Box<dyn io::BufRead + 'a>, Failure> {
    match path {
        None => Ok(Box::new(BufReader::new(&mut *io.stdin))),
        Some(path) if path == Path::new("-") => Ok(Box::new(BufReader::new(&mut *io.stdin))),
        Some(path) => {
            let file = fs::File::open(path)
                .map_err(|e| Failure::usage(format!("cannot read {}: {e}", path.display())))?;
            if file.metadata().is_ok_and(|m| m.is_dir()) {
                return Err(Failure::usage(format!("{} is a directory, not a log", path.display())));
            }
            Ok(Box::new(BufReader::new(file)))
        }
    }
}
