//! Concurrent load on the loopback listeners, bounded in count and in time, and Envoy's resident
//! memory while it runs.
//!
//! A [`Plan`] opens `connections` connections in all, `workers` at a time, and sends
//! `requests_per_connection` requests on each (HTTP/1.1 keep-alive). The n-th connection belongs
//! to the n-th [`Sender`] in turn, so a plan with many senders churns client certificates. Every
//! URL must be on 127.0.0.1. The plan stops at `time_limit` even when unfinished, and says so:
//! a slow machine fails a test with a message, never hangs it.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use ureq::tls::TlsConfig;
use ureq::Agent;

use crate::envoy::Envoy;
use crate::pki::Credential;
use crate::{Context, Error, Result};

/// How long one request may take before it counts as a failure.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// An HTTP client with these TLS settings. With `keep_alive` it sends every request over one
/// connection while that stays open; without, each request opens its own.
pub fn agent(tls: TlsConfig, keep_alive: bool) -> Agent {
    let idle = usize::from(keep_alive);
    Agent::config_builder()
        .tls_config(tls)
        .http_status_as_error(false)
        .max_idle_connections(idle)
        .max_idle_connections_per_host(idle)
        .timeout_global(Some(REQUEST_TIMEOUT))
        .build()
        .into()
}

/// GET `url` with `agent`: the status, or why no HTTP reply came back.
pub fn get(agent: &Agent, url: &str) -> std::result::Result<u16, String> {
    let mut response = agent.get(url).call().map_err(|err| err.to_string())?;
    // Read the body to the end, so the connection can carry the next request.
    response.body_mut().read_to_vec().map_err(|err| format!("reading the body: {err}"))?;
    Ok(response.status().as_u16())
}

/// One kind of client in a load.
#[derive(Clone, Debug)]
pub struct Sender {
    /// How the results are reported.
    pub name: String,
    pub identity: Option<Credential>,
    /// Where its requests go: `https://127.0.0.1:<port>/<path>`.
    pub url: String,
}

impl Sender {
    pub fn new(name: &str, identity: Option<&Credential>, url: &str) -> Self {
        Sender { name: name.to_owned(), identity: identity.cloned(), url: url.to_owned() }
    }
}

/// How much load, from whom.
#[derive(Clone, Debug)]
pub struct Plan {
    /// The n-th connection is the `n % senders.len()`-th sender's.
    pub senders: Vec<Sender>,
    /// Connections opened in all.
    pub connections: u64,
    pub requests_per_connection: u64,
    /// Connections open at the same time (one thread each).
    pub workers: usize,
    /// The plan stops here, finished or not.
    pub time_limit: Duration,
}

impl Plan {
    pub fn requests(&self) -> u64 {
        self.connections * self.requests_per_connection
    }
}

/// What one sender's requests came back with.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SenderTally {
    pub connections: u64,
    /// HTTP status -> how many requests got it.
    pub statuses: BTreeMap<u16, u64>,
    /// Requests that got no HTTP reply (refused handshake, reset, time-out).
    pub failures: u64,
    pub first_failure: Option<String>,
}

impl SenderTally {
    pub fn requests(&self) -> u64 {
        self.statuses.values().sum::<u64>() + self.failures
    }

    pub fn status(&self, status: u16) -> u64 {
        self.statuses.get(&status).copied().unwrap_or(0)
    }
}

/// What a plan did.
#[derive(Clone, Debug, Default)]
pub struct Tally {
    /// By sender name (senders with the same name are added up).
    pub by_sender: BTreeMap<String, SenderTally>,
    pub elapsed: Duration,
    /// False when the time limit stopped the plan early.
    pub finished: bool,
}

impl Tally {
    pub fn requests(&self) -> u64 {
        self.by_sender.values().map(SenderTally::requests).sum()
    }

    pub fn sender(&self, name: &str) -> SenderTally {
        self.by_sender.get(name).cloned().unwrap_or_default()
    }

    /// Requests per second over the whole run.
    pub fn rate(&self) -> f64 {
        self.requests() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Runs `plan`; `progress` counts the requests completed so far (for a sampler to read).
pub fn run(plan: &Plan, ca_path: &Path, progress: &AtomicU64) -> Result<Tally> {
    if plan.senders.is_empty() || plan.workers == 0 {
        return Err(Error::new("a load plan needs at least one sender and one worker"));
    }
    if let Some(sender) = plan.senders.iter().find(|s| !s.url.starts_with("https://127.0.0.1:")) {
        return Err(Error::new(format!("{}: load goes to 127.0.0.1 only, not {}", sender.name, sender.url)));
    }
    // TLS settings once per sender (they share their parsed certificates between connections).
    let tls: Vec<TlsConfig> = plan
        .senders
        .iter()
        .map(|sender| crate::client::tls_config(ca_path, sender.identity.as_ref()))
        .collect::<Result<_>>()?;

    let started = Instant::now();
    let deadline = started + plan.time_limit;
    let next = AtomicU64::new(0);
    let tally: Mutex<BTreeMap<String, SenderTally>> = Mutex::new(BTreeMap::new());
    thread::scope(|scope| {
        for _ in 0..plan.workers {
            scope.spawn(|| {
                let mut local: BTreeMap<String, SenderTally> = BTreeMap::new();
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= plan.connections || Instant::now() >= deadline {
                        break;
                    }
                    let index = usize::try_from(n % plan.senders.len() as u64).unwrap_or(0);
                    let (Some(sender), Some(tls)) = (plan.senders.get(index), tls.get(index)) else {
                        break;
                    };
                    let agent = agent(tls.clone(), true);
                    let entry = local.entry(sender.name.clone()).or_default();
                    entry.connections += 1;
                    for _ in 0..plan.requests_per_connection {
                        match get(&agent, &sender.url) {
                            Ok(status) => *entry.statuses.entry(status).or_default() += 1,
                            Err(why) => {
                                entry.failures += 1;
                                entry.first_failure.get_or_insert(why);
                            }
                        }
                        progress.fetch_add(1, Ordering::Relaxed);
                    }
                }
                let mut all = tally.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                for (name, mine) in local {
                    let total = all.entry(name).or_default();
                    total.connections += mine.connections;
                    total.failures += mine.failures;
                    if total.first_failure.is_none() {
                        total.first_failure = mine.first_failure;
                    }
                    for (status, count) in mine.statuses {
                        *total.statuses.entry(status).or_default() += count;
                    }
                }
            });
        }
    });
    let by_sender = tally.into_inner().unwrap_or_else(|poisoned| poisoned.into_inner());
    let finished = next.load(Ordering::Relaxed) >= plan.connections;
    Ok(Tally { by_sender, elapsed: started.elapsed(), finished })
}

// ---------------------------------------------------------------------------------------------
// Envoy's memory

/// The process id of `envoy`: the process whose command line names its config file (each
/// instance has its own).
pub fn envoy_pid(envoy: &Envoy) -> Result<u32> {
    let config = envoy.config_path().display().to_string();
    let entries = fs::read_dir("/proc").context("listing /proc")?;
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|name| name.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(cmdline) = fs::read(entry.path().join("cmdline")) else { continue };
        let args: Vec<&[u8]> = cmdline.split(|byte| *byte == 0).collect();
        if args.contains(&config.as_bytes()) {
            found.push(pid);
        }
    }
    match found.as_slice() {
        [pid] => Ok(*pid),
        [] => Err(Error::new(format!("no process runs with {config}"))),
        _ => Err(Error::new(format!("several processes run with {config}: {found:?}"))),
    }
}

/// The resident set size of process `pid`, in KiB (`VmRSS` of `/proc/<pid>/status`).
pub fn rss_kib(pid: u32) -> Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status = fs::read_to_string(&path).context(format!("reading {path}"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| Error::new(format!("no VmRSS in {path}")))
}

/// Envoy's memory at one moment of a load.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sample {
    pub at: Duration,
    /// Requests completed when the sample was taken.
    pub requests: u64,
    pub rss_kib: u64,
}

/// Runs `work`, sampling the RSS of `pid` every `every` meanwhile (and once before and once
/// after). `progress` is the request counter `work` advances.
pub fn sample_rss_while<T>(
    pid: u32,
    every: Duration,
    progress: &AtomicU64,
    work: impl FnOnce() -> T,
) -> Result<(T, Vec<Sample>)> {
    let started = Instant::now();
    let take = || -> Result<Sample> {
        Ok(Sample {
            at: started.elapsed(),
            requests: progress.load(Ordering::Relaxed),
            rss_kib: rss_kib(pid)?,
        })
    };
    let mut samples = vec![take()?];
    let done = AtomicBool::new(false);
    let (result, during) = thread::scope(|scope| {
        let sampler = scope.spawn(|| {
            let mut during = Vec::new();
            while !done.load(Ordering::Relaxed) {
                thread::sleep(every);
                match take() {
                    Ok(sample) => during.push(sample),
                    Err(err) => return Err(err),
                }
            }
            Ok(during)
        });
        let result = work();
        done.store(true, Ordering::Relaxed);
        let during = sampler.join().unwrap_or_else(|_| Err(Error::new("the RSS sampler panicked")));
        (result, during)
    });
    samples.extend(during?);
    samples.push(take()?);
    Ok((result, samples))
}

// ---------------------------------------------------------------------------------------------
// Signs that the VM failed

/// Lines of Envoy's log that a healthy filter never causes: errors, critical lines, a panic or a
/// failed Wasm call (`Function: proxy_on_request_headers failed: ...`).
pub fn alarming_log_lines(log: &str) -> Vec<String> {
    log.lines()
        .filter(|line| {
            line.contains("][error][")
                || line.contains("][critical][")
                || line.contains("panicked")
                || line.contains("Function: proxy_")
        })
        .map(str::to_owned)
        .collect()
}
