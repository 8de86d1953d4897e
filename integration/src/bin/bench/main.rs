//! `make bench`: what loopback-guard costs Envoy per request, against no filter, an empty wasm
//! filter (as the SDK builds it, A1, and with only the callbacks loopback-guard exports, A1-min)
//! and Envoy's native RBAC, in a real Envoy (docs/performance.md explains the method and
//! the figures). `make bench-validate` (`bench validate`) only renders every arm's config and
//! checks it with `envoy --mode validate`.
//!
//! The arms are in [`arms`], their Envoy config in [`envoy_config`]. One interleaved session: one
//! Envoy per arm, all started up front and warmed up, each with one worker and all pinned to one
//! core (only the one under load is busy); oha, the load generator, on the other core. Each round
//! measures every arm in turn, in each mode (`BENCH_MODES`):
//!
//! - `rate`: keep-alive, at a fixed rate (`BENCH_RATE`) that every arm sustains: Envoy's CPU per
//!   request, p50, p99. At a fixed rate Envoy's batching (requests per wake-up) is alike in every
//!   arm, so the CPU difference is the filter's, not the rate's.
//! - `max`: keep-alive, as fast as it goes: requests/s, p50, p99.
//! - `newconn`: a new TLS connection (full handshake) per request, as fast as it goes.
//! - `cpu`, `cpu-newconn` (not by default): every arm at once, each at a fixed rate, keep-alive or
//!   not: immune to drift of the machine's speed, but the Envoys then take turns on one core with
//!   cold caches, which costs a wasm filter several times more than a warm core does.
//!
//! Bursts are short, rounds many, and each round starts one arm further on, so the machine's
//! drift in speed spreads over every arm alike; every comparison is made within a round
//! (bench/report.py), and the median over rounds is reported.
//!
//! Per measurement: oha's requests/s, p50 and p99; Envoy's CPU time (utime+stime from
//! /proc/<pid>/stat in clock ticks, and its threads' run time in ns from schedstat); Envoy's RSS;
//! its counters before and after, which must show that every request took the arm's path. Every
//! arm's VmRSS and tcmalloc figures (admin `/memory`) after the warm-up and at the end. Then, for
//! A0, A1-min, A1 and A3, the memory at 1 and at `BENCH_RSS_WORKERS` workers with the bootstrap's
//! memory release off and on (after a warm-up of new connections and a pause, and again after as
//! many requests more), and the time from a config push (a listener with the arm's filter, a fresh
//! VM, through a watched LDS file) to the first answered request. The report ends with issue 19's
//! goals table and the module's 20 biggest functions (bench/build-named.sh, bench/wasm_sizes.py).
//!
//! Output: tables on stdout, every number in target/bench/bench-<time>.json (and latest.json),
//! raw measurements in target/bench/raw-<time>/.
//!
//! Environment (defaults in brackets):
//!   BENCH_ROUNDS [20], BENCH_MODES [rate max newconn], BENCH_RATE [4000] (mode rate),
//!   BENCH_REQUESTS [2000] (per arm and round, modes rate and max), BENCH_NEWCONN_REQUESTS [300],
//!   BENCH_CPU_RATE [500], BENCH_CPU_REQUESTS [2000], BENCH_CPU_NEWCONN_RATE [100],
//!   BENCH_CPU_NEWCONN_REQUESTS [300], BENCH_CONNECTIONS [8] (oha's concurrent connections),
//!   BENCH_WARMUP [3000] (requests per arm before measuring: V8 tier-up, the certificate cache),
//!   BENCH_ARMS [every arm of arms::standard, and the -alt arms with BENCH_GUARD_ALT_WASM],
//!   BENCH_GUARD_ALT_WASM (another build of the module, run as A3-alt, A4-alt, A3-deny-alt and
//!   compared with A3, A4, A3-deny), BENCH_PROBES (extra arms "A1+<calls>", the empty
//!   filter making host calls, space-separated, e.g. "property:connection.mtls*20 time*20,metric*20"),
//!   BENCH_RSS_WORKERS [2] (0: no memory phase), BENCH_MEMORY_RELEASE [1] (0: the measured arms
//!   without the shipped memory_allocator_manager), BENCH_MEMORY_SETTLE_MS [90000] (the pause
//!   before memory is read: tcmalloc releases the last free pages about a minute after they were freed), BENCH_PUSHES [5] (config pushes per arm; 0: none), BENCH_ENVOY_CPU [0], BENCH_LOAD_CPU [1],
//!   BENCH_TLS_RESUMPTION [0] (1: Envoy's default), BENCH_LOG_LEVEL [info], BENCH_STRICT [0]
//!   (1: exit 1 when a target is missed), BENCH_PERF [0] (1: `perf record` of Envoy during every
//!   burst of mode rate, into target/bench/perf-<arm>-r<round>.data), OHA_VERSION [1.16.0];
//!   ENVOY_BIN, LOOPBACK_GUARD_WASM, LOOPBACK_GUARD_BENCH_EMPTY_WASM,
//!   LOOPBACK_GUARD_BENCH_EMPTY_MIN_WASM and LOOPBACK_GUARD_BENCH_FULL_WASM (the Makefile sets
//!   them), LOOPBACK_GUARD_BENCH_NAMED_WASM (else bench/build-named.sh makes it).

mod arms;
mod connection;
mod envoy_config;
mod measure;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::str::FromStr;

use loopback_guard_integration::envoy::{envoy_bin, wasm_module};
use loopback_guard_integration::pki::{spiffe_id, Pki, APP_ID, NAMESPACE, TRUST_DOMAIN};
use loopback_guard_integration::{repo_root, Context, Error, Result};

use crate::arms::Arm;
use crate::measure::Mode;

fn main() -> ExitCode {
    let validate_only = match std::env::args().nth(1).as_deref() {
        None => false,
        Some("validate") => true,
        Some(other) => {
            eprintln!("bench: unknown argument {other:?}; usage: bench [validate]");
            return ExitCode::from(2);
        }
    };
    let result = Settings::from_env().and_then(|settings| {
        if validate_only {
            validate(&settings).and_then(|()| connection::validate_tcp(&settings)).map(|()| ExitCode::SUCCESS)
        } else {
            measure::run(&settings).and_then(|code| connection::after_session(&settings, code))
        }
    });
    result.unwrap_or_else(|err| {
        eprintln!("bench: error: {err}");
        ExitCode::FAILURE
    })
}

/// Everything the environment sets.
pub struct Settings {
    pub rounds: u32,
    pub modes: Vec<Mode>,
    pub rate: u32,
    pub requests: u32,
    pub newconn_requests: u32,
    pub cpu_rate: u32,
    pub cpu_requests: u32,
    pub cpu_newconn_rate: u32,
    pub cpu_newconn_requests: u32,
    pub connections: u32,
    pub warmup: u32,
    pub arms: Vec<Arm>,
    pub rss_workers: u32,
    pub envoy_cpu: String,
    pub load_cpu: String,
    pub tls_resumption: bool,
    pub log_level: String,
    pub strict: bool,
    pub perf: bool,
    pub oha_version: String,
    pub envoy: PathBuf,
    pub guard_wasm: PathBuf,
    pub empty_wasm: PathBuf,
    pub empty_min_wasm: PathBuf,
    pub guard_full_wasm: PathBuf,
    pub guard_alt_wasm: Option<PathBuf>,
    /// The shipped module built by the same post-link step with its function names kept, for
    /// the size table (`LOOPBACK_GUARD_BENCH_NAMED_WASM`; none: no table).
    pub guard_named_wasm: Option<PathBuf>,
    /// The memory release of the measured arms (`BENCH_MEMORY_RELEASE`: 1, as shipped, or 0).
    pub memory_release: Option<u64>,
    /// The pause after a warm-up before memory is read, for the release to act.
    pub memory_settle: std::time::Duration,
    /// Config pushes per arm (`BENCH_PUSHES`).
    pub pushes: u32,
}

impl Settings {
    fn from_env() -> Result<Self> {
        let guard_alt_wasm =
            var("BENCH_GUARD_ALT_WASM").map(|path| existing(&path, "BENCH_GUARD_ALT_WASM")).transpose()?;
        let names = match var("BENCH_ARMS") {
            Some(list) => words(&list),
            None => {
                let mut names: Vec<String> = arms::standard().into_iter().map(|arm| arm.name).collect();
                if guard_alt_wasm.is_some() {
                    names.extend(arms::guard_alt().into_iter().map(|arm| arm.name));
                }
                names
            }
        };
        if guard_alt_wasm.is_none() && names.iter().any(|name| name.ends_with("-alt")) {
            return Err(Error::new("the -alt arms need BENCH_GUARD_ALT_WASM (the other build's module)"));
        }
        let probes = var("BENCH_PROBES").map(|list| words(&list)).unwrap_or_default();
        let modes = words(&var("BENCH_MODES").unwrap_or_else(|| "rate max newconn".to_owned()))
            .iter()
            .map(|mode| mode.parse())
            .collect::<Result<Vec<Mode>>>()?;
        let built_by_make = |name: &str| {
            var(name).map(|path| existing(&path, name)).unwrap_or_else(|| {
                Err(Error::new(format!("{name} is not set: run `make bench` (it builds bench/empty-filter)")))
            })
        };
        Ok(Settings {
            rounds: number("BENCH_ROUNDS", 20)?,
            modes,
            rate: number("BENCH_RATE", 4000)?,
            requests: number("BENCH_REQUESTS", 2000)?,
            newconn_requests: number("BENCH_NEWCONN_REQUESTS", 300)?,
            cpu_rate: number("BENCH_CPU_RATE", 500)?,
            cpu_requests: number("BENCH_CPU_REQUESTS", 2000)?,
            cpu_newconn_rate: number("BENCH_CPU_NEWCONN_RATE", 100)?,
            cpu_newconn_requests: number("BENCH_CPU_NEWCONN_REQUESTS", 300)?,
            connections: number("BENCH_CONNECTIONS", 8)?,
            warmup: number("BENCH_WARMUP", 3000)?,
            arms: arms::select(&names, &probes)?,
            rss_workers: number("BENCH_RSS_WORKERS", 2)?,
            envoy_cpu: var("BENCH_ENVOY_CPU").unwrap_or_else(|| "0".to_owned()),
            load_cpu: var("BENCH_LOAD_CPU").unwrap_or_else(|| "1".to_owned()),
            tls_resumption: flag("BENCH_TLS_RESUMPTION")?,
            log_level: var("BENCH_LOG_LEVEL").unwrap_or_else(|| "info".to_owned()),
            strict: flag("BENCH_STRICT")?,
            perf: flag("BENCH_PERF")?,
            oha_version: var("OHA_VERSION").unwrap_or_else(|| "1.16.0".to_owned()),
            envoy: envoy_bin()?,
            guard_wasm: wasm_module()?,
            empty_wasm: built_by_make("LOOPBACK_GUARD_BENCH_EMPTY_WASM")?,
            empty_min_wasm: built_by_make("LOOPBACK_GUARD_BENCH_EMPTY_MIN_WASM")?,
            guard_full_wasm: built_by_make("LOOPBACK_GUARD_BENCH_FULL_WASM")?,
            guard_alt_wasm,
            guard_named_wasm: var("LOOPBACK_GUARD_BENCH_NAMED_WASM")
                .map(|path| existing(&path, "LOOPBACK_GUARD_BENCH_NAMED_WASM"))
                .transpose()?,
            memory_release: match var("BENCH_MEMORY_RELEASE").as_deref() {
                None | Some("1") => Some(envoy_config::SHIPPED_BYTES_TO_RELEASE),
                Some("0") => None,
                Some(other) => {
                    return Err(Error::new(format!("BENCH_MEMORY_RELEASE is 0 or 1, not {other:?}")))
                }
            },
            memory_settle: std::time::Duration::from_millis(number("BENCH_MEMORY_SETTLE_MS", 90_000)?),
            pushes: number("BENCH_PUSHES", 5)?,
        })
    }
}

/// `path` made absolute (Envoy resolves relative paths against its own directory), or an error
/// naming the variable that gave it.
fn existing(path: &str, name: &str) -> Result<PathBuf> {
    Path::new(path).canonicalize().context(format!("{name}={path}"))
}

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|value| !value.trim().is_empty())
}

fn words(list: &str) -> Vec<String> {
    list.split_whitespace().map(str::to_owned).collect()
}

fn number<T: FromStr>(name: &str, default: T) -> Result<T> {
    match var(name) {
        None => Ok(default),
        Some(value) => {
            value.trim().parse().map_err(|_| Error::new(format!("{name}={value:?} is not a number")))
        }
    }
}

fn flag(name: &str) -> Result<bool> {
    match var(name).as_deref() {
        None | Some("0") => Ok(false),
        Some("1") => Ok(true),
        Some(other) => Err(Error::new(format!("{name} is 0 or 1, not {other:?}"))),
    }
}

/// The run's certificates: the CA and the pod's workload certificate ([`Pki`]), the rightful
/// client and a rogue one (same CA, another SPIFFE ID).
pub struct Certificates {
    pub pki: Pki,
    pub app: loopback_guard_integration::pki::Credential,
    pub rogue: loopback_guard_integration::pki::Credential,
}

impl Certificates {
    pub fn generate() -> Result<Self> {
        let pki = Pki::generate()?;
        let app = pki.svid("app", APP_ID)?;
        let rogue = pki.svid("rogue", &spiffe_id(TRUST_DOMAIN, NAMESPACE, "rogue"))?;
        Ok(Certificates { pki, app, rogue })
    }
}

/// What the arms' configs are made of in this run, for these ports and memory release.
pub fn inputs<'a>(
    settings: &'a Settings,
    certificates: &'a Certificates,
    ports: (u16, u16),
    memory_release: Option<u64>,
) -> envoy_config::Inputs<'a> {
    envoy_config::Inputs {
        admin_port: ports.0,
        listen_port: ports.1,
        cert_dir: certificates.pki.dir(),
        guard_wasm: &settings.guard_wasm,
        empty_wasm: &settings.empty_wasm,
        empty_min_wasm: &settings.empty_min_wasm,
        guard_full_wasm: &settings.guard_full_wasm,
        guard_alt_wasm: settings.guard_alt_wasm.as_deref(),
        tls_resumption: settings.tls_resumption,
        memory_release,
        vm_suffix: "",
    }
}

/// Arm names may hold what a file name must not (a probe's calls).
pub fn safe_name(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).collect()
}

/// Writes the arm's config for these ports and memory release into `dir`; returns its path.
pub fn write_config(
    settings: &Settings,
    certificates: &Certificates,
    arm: &Arm,
    ports: (u16, u16),
    memory_release: Option<u64>,
    dir: &Path,
) -> Result<PathBuf> {
    let inputs = inputs(settings, certificates, ports, memory_release);
    let config = connection::adjust(arm, envoy_config::config(arm, &inputs), &inputs);
    let text = serde_json::to_string_pretty(&config).context("serializing an Envoy config")?;
    let safe = safe_name(&arm.name);
    let release = if memory_release.is_some() { "" } else { "-norelease" };
    let path = dir.join(format!("envoy-{safe}{release}.json"));
    fs::write(&path, text).context(format!("writing {}", path.display()))?;
    Ok(path)
}

/// Every arm's config, checked by `envoy --mode validate` (its modules are loaded too).
fn validate(settings: &Settings) -> Result<()> {
    let certificates = Certificates::generate()?;
    let work = tempfile::Builder::new()
        .prefix("loopback-guard-bench-")
        .tempdir()
        .context("creating a working directory")?;
    let mut failed = Vec::new();
    for arm in &settings.arms {
        let config =
            write_config(settings, &certificates, arm, (0, 0), settings.memory_release, work.path())?;
        let output = Command::new(&settings.envoy)
            .args(["--mode", "validate", "--log-level", "error", "-c"])
            .arg(&config)
            .stdin(Stdio::null())
            .output()
            .context(format!("running {} --mode validate", settings.envoy.display()))?;
        if output.status.success() {
            eprintln!("bench: {}: config valid", arm.name);
        } else {
            eprintln!(
                "bench: {}: config INVALID ({}):\n{}{}",
                arm.name,
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
            failed.push(arm.name.clone());
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(Error::new(format!("the configs of {} do not validate", failed.join(", "))))
    }
}

/// `target/bench` of the repository.
pub fn out_dir() -> PathBuf {
    repo_root().join("target").join("bench")
}
