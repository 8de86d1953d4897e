//! The measured run: Envoys per arm, oha bursts in interleaved rounds, raw measurements into
//! target/bench/raw-<time>/, then bench/report.py for the tables and the JSON.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::str::FromStr;
use std::thread;
use std::time::{Duration, Instant};

use loopback_guard_integration::client::get_plain;
use loopback_guard_integration::envoy::Ports;
use loopback_guard_integration::load::rss_kib;
use loopback_guard_integration::{last_lines, read_lossy, repo_root, url_encode, Context, Error, Result};
use serde_json::json;

use loopback_guard_integration::client::Client;

use crate::arms::{self, Arm};
use crate::envoy_config::{self, SHIPPED_BYTES_TO_RELEASE};
use crate::{out_dir, write_config, Certificates, Settings};

const START_TIMEOUT: Duration = Duration::from_secs(30);
/// The arms whose memory is compared at 1 and at BENCH_RSS_WORKERS workers, release off and on.
const RSS_ARMS: [&str; 5] = ["A0", "A1-min", "A1", "A3", "A3-alt"];
/// The arms whose first request after a config push is measured.
const PUSH_ARMS: [&str; 5] = ["A0", "A1-min", "A1", "A3", "A3-alt"];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Rate,
    Max,
    Newconn,
    Cpu,
    CpuNewconn,
}

impl Mode {
    fn as_str(self) -> &'static str {
        match self {
            Mode::Rate => "rate",
            Mode::Max => "max",
            Mode::Newconn => "newconn",
            Mode::Cpu => "cpu",
            Mode::CpuNewconn => "cpu-newconn",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Mode {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self> {
        [Mode::Rate, Mode::Max, Mode::Newconn, Mode::Cpu, Mode::CpuNewconn]
            .into_iter()
            .find(|mode| mode.as_str() == text)
            .ok_or_else(|| {
                Error::new(format!("unknown mode {text:?}: rate, max, newconn, cpu or cpu-newconn"))
            })
    }
}

/// One arm's Envoy, pinned to the Envoy core, killed on drop.
struct RunningEnvoy {
    child: Child,
    admin: u16,
    listen: u16,
    log_path: PathBuf,
}

impl RunningEnvoy {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The counters the report checks, as "name value" lines.
    fn stats(&self) -> Result<String> {
        let filter = format!(
            "^(http\\.loopback_strict\\.(downstream_rq_(total|2xx|4xx|5xx)|rbac\\.(allowed|denied))|wasmcustom\\..*|listener\\.127\\.0\\.0\\.1_{}\\.downstream_cx_total)$",
            self.listen
        );
        let url = format!(
            "http://127.0.0.1:{}/stats?usedonly&filter={}",
            self.admin,
            url_encode(filter.as_bytes())
        );
        let reply = get_plain(&url)?;
        if reply.status != 200 {
            return Err(Error::new(format!("GET {url}: status {}", reply.status)));
        }
        Ok(reply.body.lines().map(|line| format!("{}\n", line.replacen(": ", " ", 1))).collect())
    }

    /// (utime+stime in clock ticks, its threads' run time in ns) so far.
    fn cpu(&self) -> Result<(u64, u64)> {
        let pid = self.pid();
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).context("reading Envoy's /proc stat")?;
        // Fields 14 and 15 (utime, stime), counted after the ")" that ends the command name.
        let fields: Vec<&str> =
            stat.rsplit_once(") ").map(|(_, rest)| rest).unwrap_or("").split(' ').collect();
        let field = |index: usize| fields.get(index).and_then(|value| value.parse::<u64>().ok());
        let ticks = field(11)
            .zip(field(12))
            .map(|(utime, stime)| utime + stime)
            .ok_or_else(|| Error::new(format!("no utime/stime in /proc/{pid}/stat")))?;
        let mut ns = 0;
        for task in fs::read_dir(format!("/proc/{pid}/task")).context("listing Envoy's threads")?.flatten() {
            // A thread may end between the listing and the read.
            if let Ok(schedstat) = fs::read_to_string(task.path().join("schedstat")) {
                ns += schedstat.split(' ').next().and_then(|value| value.parse::<u64>().ok()).unwrap_or(0);
            }
        }
        Ok((ticks, ns))
    }

    fn rss_kb(&self) -> Result<u64> {
        rss_kib(self.pid())
    }

    /// VmRSS and tcmalloc's figures from admin `/memory` (bytes), at this moment.
    fn memory(&self) -> Result<serde_json::Value> {
        let url = format!("http://127.0.0.1:{}/memory", self.admin);
        let reply = get_plain(&url)?;
        if reply.status != 200 {
            return Err(Error::new(format!("GET {url}: status {}", reply.status)));
        }
        let fields: serde_json::Value =
            serde_json::from_str(&reply.body).context(format!("parsing GET {url}"))?;
        // The admin API prints uint64 as strings.
        let number = |name: &str| -> Result<u64> {
            fields
                .get(name)
                .and_then(|value| {
                    value.as_str().and_then(|text| text.parse().ok()).or_else(|| value.as_u64())
                })
                .ok_or_else(|| Error::new(format!("GET {url}: no {name} in {}", reply.body)))
        };
        let mut sample = json!({"rss_kb": self.rss_kb()?});
        for name in MEMORY_FIELDS {
            envoy_config::set(&mut sample, name, json!(number(name)?));
        }
        Ok(sample)
    }
}

/// What admin `/memory` reports (tcmalloc), every field kept.
const MEMORY_FIELDS: [&str; 6] = [
    "allocated",
    "heap_size",
    "pageheap_unmapped",
    "pageheap_free",
    "total_thread_cache",
    "total_physical_bytes",
];

impl Drop for RunningEnvoy {
    fn drop(&mut self) {
        // Already gone is fine; nothing else to do about a kill that fails.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Session<'a> {
    settings: &'a Settings,
    certificates: Certificates,
    work: tempfile::TempDir,
    run_dir: PathBuf,
    oha: PathBuf,
    clk_tck: u64,
    envoys: BTreeMap<String, RunningEnvoy>,
}

impl Session<'_> {
    /// The arm's Envoy on fresh ports with `workers` workers, ready to serve, the memory release
    /// as the run sets it.
    fn start_envoy(&self, arm: &Arm, workers: u32) -> Result<RunningEnvoy> {
        self.start_envoy_with(arm, workers, self.settings.memory_release.is_some())
    }

    /// The same with the memory release on (the shipped setting) or off (Envoy's default).
    fn start_envoy_with(&self, arm: &Arm, workers: u32, release: bool) -> Result<RunningEnvoy> {
        let mut attempt = 1;
        loop {
            match self.start_envoy_once(arm, workers, release) {
                Err(err) if attempt < 3 && err.to_string().contains("Address already in use") => attempt += 1,
                result => return result,
            }
        }
    }

    /// Envoy with `config`, pinned to the Envoy core, its output into `log_path`.
    fn spawn_envoy(&self, config: &Path, log_path: &Path, workers: u32) -> Result<Child> {
        let log = File::create(log_path).context(format!("creating {}", log_path.display()))?;
        Command::new("taskset")
            .args(["-c", &self.settings.envoy_cpu])
            .arg(&self.settings.envoy)
            .arg("-c")
            .arg(config)
            .args(["--concurrency", &workers.to_string(), "--log-level", &self.settings.log_level])
            .arg("--disable-hot-restart")
            .stdin(Stdio::null())
            .stdout(log.try_clone().context("opening Envoy's log")?)
            .stderr(log)
            .spawn()
            .context("running taskset (util-linux) with Envoy")
    }

    fn start_envoy_once(&self, arm: &Arm, workers: u32, release: bool) -> Result<RunningEnvoy> {
        let ports = Ports::pick()?;
        let memory_release = if release { Some(SHIPPED_BYTES_TO_RELEASE) } else { None };
        let config = write_config(
            self.settings,
            &self.certificates,
            arm,
            (ports.admin, ports.strict),
            memory_release,
            self.work.path(),
        )?;
        let log_path = config.with_extension("log");
        let child = self.spawn_envoy(&config, &log_path, workers)?;
        // taskset execs Envoy: the child's pid is Envoy's.
        let mut envoy = RunningEnvoy { child, admin: ports.admin, listen: ports.strict, log_path };
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = envoy.child.try_wait() {
                return Err(Error::new(format!(
                    "the Envoy of arm {} exited ({status}):\n{}",
                    arm.name,
                    tail(&envoy.log_path, 30)
                )));
            }
            if get_plain(&format!("http://127.0.0.1:{}/ready", envoy.admin))
                .is_ok_and(|reply| reply.status == 200)
            {
                return Ok(envoy);
            }
            thread::sleep(Duration::from_millis(100));
        }
        Err(Error::new(format!(
            "the Envoy of arm {} was not ready after {}s:\n{}",
            arm.name,
            START_TIMEOUT.as_secs(),
            tail(&envoy.log_path, 30)
        )))
    }

    fn envoy(&self, arm: &Arm) -> Result<&RunningEnvoy> {
        self.envoys.get(&arm.name).ok_or_else(|| Error::new(format!("no Envoy runs for arm {}", arm.name)))
    }

    /// oha against the arm's listener with the arm's client certificate, on the load core, its
    /// JSON output into `output` (or nowhere).
    fn oha(&self, arm: &Arm, envoy: &RunningEnvoy, extra: &[String], output: Option<&Path>) -> Result<Child> {
        let client = match arm.client {
            arms::Client::App => &self.certificates.app,
            arms::Client::Rogue => &self.certificates.rogue,
        };
        let stdout = match output {
            Some(path) => Stdio::from(File::create(path).context(format!("creating {}", path.display()))?),
            None => Stdio::null(),
        };
        let mut command = Command::new("taskset");
        command
            .args(["-c", &self.settings.load_cpu])
            .arg(&self.oha)
            .args(["--no-tui", "--output-format", "json", "--worker-threads", "1"])
            .args(["-c", &self.settings.connections.to_string()])
            .arg("--cacert")
            .arg(self.certificates.pki.ca_path())
            .arg("--cert")
            .arg(&client.cert_path)
            .arg("--key")
            .arg(&client.key_path)
            .args(extra);
        if arm.new_connection_per_request && !extra.iter().any(|arg| arg == "--disable-keepalive") {
            command.arg("--disable-keepalive");
        }
        command
            .arg(format!("https://127.0.0.1:{}/", envoy.listen))
            .stdin(Stdio::null())
            .stdout(stdout)
            .spawn()
            .context("running oha")
    }

    fn base(&self, round: u32, arm: &Arm, mode: Mode) -> PathBuf {
        self.run_dir.join(format!("{round}-{}-{mode}", arm.name))
    }

    fn write(&self, path: PathBuf, contents: &str) -> Result<()> {
        fs::write(&path, contents).context(format!("writing {}", path.display()))
    }

    /// The measurement's summary next to its stats and oha output.
    #[allow(clippy::too_many_arguments)]
    fn record(
        &self,
        round: u32,
        arm: &Arm,
        mode: Mode,
        requests: u32,
        cpu0: (u64, u64),
        cpu1: (u64, u64),
        wall: Duration,
    ) -> Result<()> {
        let record = json!({
            "round": round,
            "arm": arm.name,
            "mode": mode.as_str(),
            "requests": requests,
            "expect": arm.expect.as_str(),
            "counter": arm.counter.unwrap_or("none"),
            "clk_tck": self.clk_tck,
            "cpu0": [cpu0.0, cpu0.1],
            "cpu1": [cpu1.0, cpu1.1],
            "wall_ns": u64::try_from(wall.as_nanos()).unwrap_or(u64::MAX),
            "rss_kb": self.envoy(arm)?.rss_kb()?,
        });
        let mut path = self.base(round, arm, mode).into_os_string();
        path.push(".json");
        self.write(PathBuf::from(path), &format!("{record}\n"))
    }

    /// One arm alone: one measurement.
    fn burst(&self, round: u32, arm: &Arm, mode: Mode, requests: u32) -> Result<()> {
        let mut extra = vec!["-n".to_owned(), requests.to_string()];
        match mode {
            Mode::Rate => extra.extend(["-q".to_owned(), self.settings.rate.to_string()]),
            Mode::Newconn => extra.push("--disable-keepalive".to_owned()),
            _ => {}
        }
        let envoy = self.envoy(arm)?;
        let base = self.base(round, arm, mode).display().to_string();
        self.write(format!("{base}.stats0").into(), &envoy.stats()?)?;
        let perf = if self.settings.perf && mode == Mode::Rate {
            let data = out_dir().join(format!("perf-{}-r{round}.data", arm.name));
            let child = Command::new("perf")
                .args([
                    "record",
                    "-q",
                    "-e",
                    "cpu-clock",
                    "-F",
                    "4999",
                    "-g",
                    "-p",
                    &envoy.pid().to_string(),
                    "-o",
                ])
                .arg(data)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context("running perf record")?;
            thread::sleep(Duration::from_millis(300));
            Some(child)
        } else {
            None
        };
        let cpu0 = envoy.cpu()?;
        let started = Instant::now();
        let status = self.oha(arm, envoy, &extra, Some(Path::new(&format!("{base}.oha.json"))))?.wait();
        let wall = started.elapsed();
        let cpu1 = envoy.cpu()?;
        if let Some(mut perf) = perf {
            // perf writes its file on SIGINT.
            let _ = Command::new("kill").args(["-INT", &perf.id().to_string()]).status();
            let _ = perf.wait();
        }
        check_oha(arm, status)?;
        self.write(format!("{base}.stats1").into(), &envoy.stats()?)?;
        self.record(round, arm, mode, requests, cpu0, cpu1, wall)
    }

    /// Every arm at once, each at `rate` requests/s: each Envoy's CPU per request is its own, and
    /// a machine that speeds up or slows down does so for all of them alike.
    fn together(&self, round: u32, mode: Mode, requests: u32, rate: u32) -> Result<()> {
        let mut extra = vec!["-n".to_owned(), requests.to_string(), "-q".to_owned(), rate.to_string()];
        if mode == Mode::CpuNewconn {
            extra.push("--disable-keepalive".to_owned());
        }
        let mut before = Vec::new();
        for arm in &self.settings.arms {
            let envoy = self.envoy(arm)?;
            let base = self.base(round, arm, mode).display().to_string();
            self.write(format!("{base}.stats0").into(), &envoy.stats()?)?;
            before.push(envoy.cpu()?);
        }
        let started = Instant::now();
        let mut running = Vec::new();
        for arm in &self.settings.arms {
            let base = self.base(round, arm, mode).display().to_string();
            running.push(self.oha(
                arm,
                self.envoy(arm)?,
                &extra,
                Some(Path::new(&format!("{base}.oha.json"))),
            )?);
        }
        let statuses: Vec<_> = running.iter_mut().map(Child::wait).collect();
        let wall = started.elapsed();
        for ((arm, status), cpu0) in self.settings.arms.iter().zip(statuses).zip(before) {
            check_oha(arm, status)?;
            let envoy = self.envoy(arm)?;
            let cpu1 = envoy.cpu()?;
            let base = self.base(round, arm, mode).display().to_string();
            self.write(format!("{base}.stats1").into(), &envoy.stats()?)?;
            self.record(round, arm, mode, requests, cpu0, cpu1, wall)?;
        }
        Ok(())
    }

    fn warm_up(&self, arm: &Arm, envoy: &RunningEnvoy, keep_alive: bool) -> Result<()> {
        let mut extra = vec!["-n".to_owned(), self.settings.warmup.to_string()];
        if !keep_alive {
            extra.push("--disable-keepalive".to_owned());
        }
        check_oha(arm, self.oha(arm, envoy, &extra, None)?.wait())
    }

    /// The memory phase for one worker count: the arms' Envoys with the memory release off and
    /// on, all started at once; each warmed up in turn with new connections (many at once, so that
    /// every worker serves some); one pause (tcmalloc gives pages back in steps, the last about a
    /// minute after they were freed); every memory read ("warm"); then as many requests more
    /// (new connections and keep-alive) each, the same pause, and every memory read again ("end").
    fn memory_phase(&self, arms: &[&Arm], workers: u32) -> Result<()> {
        let mut group = Vec::new();
        for release in [false, true] {
            for arm in arms {
                group.push((*arm, release, self.start_envoy_with(arm, workers, release)?));
            }
        }
        for (arm, _, envoy) in &group {
            self.warm_up(arm, envoy, false)?;
        }
        thread::sleep(self.settings.memory_settle);
        let mut warm = Vec::new();
        for (_, _, envoy) in &group {
            warm.push(envoy.memory()?);
        }
        for (arm, _, envoy) in &group {
            self.warm_up(arm, envoy, false)?;
            self.warm_up(arm, envoy, true)?;
        }
        thread::sleep(self.settings.memory_settle);
        for ((arm, release, envoy), warm) in group.iter().zip(warm) {
            let end = envoy.memory()?;
            let record = json!({
                "arm": arm.name, "workers": workers, "release": release,
                "rss_kb": warm.get("rss_kb"), "warm": warm, "end": end,
            });
            let switch = if *release { "on" } else { "off" };
            self.write(
                self.run_dir.join(format!("rss-{}-w{workers}-{switch}.json", arm.name)),
                &format!("{record}\n"),
            )?;
        }
        Ok(())
    }

    /// A config push: an Envoy whose listeners come from a watched file gets a new listener with
    /// the arm's filters (a new vm_id each push: a new VM); the time from the file's move to the
    /// first answered request, and that request's own latency (a new TLS connection, the VM's
    /// first decision); then the listener is removed again. The first push into an Envoy compiles
    /// the module ("cold", as a new module version does); a later one finds V8's compilation of
    /// the same code still alive (proxy-wasm-cpp-host strips custom sections before V8 sees the
    /// bytes, and the last listener's VM lives while it drains): "warm", a changed plugin config.
    fn push(&self, arm: &Arm, envoy: &PushEnvoy, push: u32) -> Result<serde_json::Value> {
        let port = Ports::pick()?.strict;
        let suffix = format!("_push{push}");
        let inputs = envoy_config::Inputs { vm_suffix: &suffix, ..self.inputs((envoy.admin, port)) };
        let listener = envoy_config::listener(arm, &inputs, "pushed", port);
        let client = match arm.client {
            arms::Client::App => &self.certificates.app,
            arms::Client::Rogue => &self.certificates.rogue,
        };
        let agent = Client::new(&self.certificates.pki.ca_path(), Some(client))?;
        let url = format!("https://127.0.0.1:{port}/");
        let started = Instant::now();
        envoy.write_lds(vec![listener])?;
        let deadline = started + START_TIMEOUT;
        let (status, first) = loop {
            let attempt = Instant::now();
            match agent.get(&url) {
                Ok(reply) => break (reply.status, attempt.elapsed()),
                Err(_) if Instant::now() < deadline => thread::sleep(Duration::from_micros(200)),
                Err(err) => {
                    return Err(Error::new(format!(
                        "arm {}: no answer on the pushed listener after {}s: {err}\n{}",
                        arm.name,
                        START_TIMEOUT.as_secs(),
                        tail(&envoy.log_path, 30)
                    )))
                }
            }
        };
        let ready = started.elapsed();
        let want = match arm.expect {
            arms::Expect::Ok => 200,
            arms::Expect::Forbidden => 403,
        };
        if status != want {
            return Err(Error::new(format!(
                "arm {}: the pushed listener answered {status}, not {want}",
                arm.name
            )));
        }
        // Removed again, and gone, before the next push.
        envoy.write_lds(vec![])?;
        let deadline = Instant::now() + START_TIMEOUT;
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            if Instant::now() > deadline {
                return Err(Error::new(format!("arm {}: the pushed listener was not removed", arm.name)));
            }
            thread::sleep(Duration::from_millis(20));
        }
        Ok(json!({
            "arm": arm.name, "push": push, "kind": if push == 1 { "cold" } else { "warm" },
            "ready_ms": ready.as_secs_f64() * 1e3, "first_request_ms": first.as_secs_f64() * 1e3,
        }))
    }

    fn inputs(&self, ports: (u16, u16)) -> envoy_config::Inputs<'_> {
        crate::inputs(self.settings, &self.certificates, ports, self.settings.memory_release)
    }

    /// An Envoy with no listener, reading them from a watched LDS file.
    fn start_push_envoy(&self, arm: &Arm) -> Result<PushEnvoy> {
        let ports = Ports::pick()?;
        let safe = crate::safe_name(&arm.name);
        let dir = self.work.path().join(format!("push-{safe}"));
        fs::create_dir_all(&dir).context(format!("creating {}", dir.display()))?;
        let lds_path = dir.join("lds.json");
        let push = PushEnvoy { admin: ports.admin, lds_path, log_path: dir.join("envoy.log"), child: None };
        push.write_lds(vec![])?;
        let config = envoy_config::pushed_config(&self.inputs((ports.admin, 0)), &push.lds_path);
        let config_path = dir.join("bootstrap.json");
        let text = serde_json::to_string_pretty(&config).context("serializing an Envoy config")?;
        fs::write(&config_path, text).context(format!("writing {}", config_path.display()))?;
        let child = self.spawn_envoy(&config_path, &push.log_path, 1)?;
        let mut push = push;
        push.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(Ok(Some(status))) = push.child.as_mut().map(Child::try_wait) {
                return Err(Error::new(format!(
                    "the push Envoy of arm {} exited ({status}):\n{}",
                    arm.name,
                    tail(&push.log_path, 30)
                )));
            }
            if get_plain(&format!("http://127.0.0.1:{}/ready", push.admin))
                .is_ok_and(|reply| reply.status == 200)
            {
                return Ok(push);
            }
            if Instant::now() > deadline {
                return Err(Error::new(format!("the push Envoy of arm {} was not ready", arm.name)));
            }
            thread::sleep(Duration::from_millis(100));
        }
    }
}

/// An Envoy whose listeners come from a watched LDS file; killed on drop.
struct PushEnvoy {
    admin: u16,
    lds_path: PathBuf,
    log_path: PathBuf,
    child: Option<Child>,
}

impl PushEnvoy {
    /// A push: the new LDS file written beside and moved in (Envoy reloads on the move).
    fn write_lds(&self, listeners: Vec<serde_json::Value>) -> Result<()> {
        let text = envoy_config::lds(listeners).to_string();
        let next = self.lds_path.with_extension("next");
        fs::write(&next, text).context(format!("writing {}", next.display()))?;
        fs::rename(&next, &self.lds_path).context(format!("moving {}", next.display()))
    }
}

impl Drop for PushEnvoy {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn check_oha(arm: &Arm, status: std::io::Result<std::process::ExitStatus>) -> Result<()> {
    match status {
        Ok(status) if status.success() => Ok(()),
        Ok(status) => Err(Error::new(format!("oha failed against arm {} ({status})", arm.name))),
        Err(err) => Err(Error::new(format!("waiting for oha against arm {}: {err}", arm.name))),
    }
}

fn tail(path: &Path, lines: usize) -> String {
    last_lines(&read_lossy(path), lines)
}

/// oha from the cache, installed with `cargo install` the first time (a few minutes).
fn oha_bin(version: &str) -> Result<PathBuf> {
    let cache = std::env::var_os("LOOPBACK_GUARD_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache/loopback-guard")))
        .ok_or_else(|| Error::new("neither LOOPBACK_GUARD_CACHE nor HOME is set"))?;
    let root = cache.join("oha");
    let bin = root.join("bin").join("oha");
    if !bin.is_file() {
        eprintln!("bench: installing oha {version} into {} (a few minutes, once)", root.display());
        let status = Command::new("cargo")
            .args(["install", "--quiet", "--locked", "oha", "--version", version, "--root"])
            .arg(&root)
            .status()
            .context("running cargo install oha")?;
        if !status.success() {
            return Err(Error::new(format!("cargo install oha {version} failed ({status})")));
        }
    }
    Ok(bin)
}

/// The shipped module with its function names (`LOOPBACK_GUARD_BENCH_NAMED_WASM`, or built by
/// bench/build-named.sh), for the table of its biggest functions; "" (no table) if that fails.
fn named_module(settings: &Settings) -> String {
    if let Some(path) = &settings.guard_named_wasm {
        return path.display().to_string();
    }
    let script = repo_root().join("bench/build-named.sh");
    let built = output_of(&script.display().to_string(), &[]);
    if built.is_empty() {
        eprintln!("bench: warning: bench/build-named.sh failed: no table of the module's functions");
    }
    built
}

fn output_of(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_owned())
        .unwrap_or_default()
}

fn loadavg() -> String {
    let text = fs::read_to_string("/proc/loadavg").unwrap_or_default();
    text.split(' ').take(3).collect::<Vec<_>>().join(" ")
}

fn machine() -> String {
    let cores = thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|line| line.strip_prefix("model name").and_then(|rest| rest.split_once(": ")))
        .map(|(_, model)| model.trim().to_owned())
        .unwrap_or_default();
    let meminfo = fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kib: f64 = meminfo
        .lines()
        .find_map(|line| line.strip_prefix("MemTotal:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0.0);
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("{cores} cores ({model}), {:.0} GiB, kernel {}", mem_kib / 1_048_576.0, kernel.trim())
}

fn sha256_file(path: &Path) -> Result<String> {
    let bytes = fs::read(path).context(format!("reading {}", path.display()))?;
    Ok(ring::digest::digest(&ring::digest::SHA256, &bytes)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

fn file_size(path: &Path) -> Result<u64> {
    Ok(fs::metadata(path).context(format!("reading {}", path.display()))?.len())
}

/// `20261201T120000Z`
fn stamp() -> String {
    let now = time::OffsetDateTime::now_utc();
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second()
    )
}

pub fn run(settings: &Settings) -> Result<ExitCode> {
    if thread::available_parallelism().map(|n| n.get()).unwrap_or(1) < 2 {
        eprintln!("bench: warning: one core: Envoy and oha will share it");
    }
    let clk_tck = output_of("getconf", &["CLK_TCK"]).parse().context("getconf CLK_TCK")?;
    let oha = oha_bin(&settings.oha_version)?;
    let stamp = stamp();
    let run_dir = out_dir().join(format!("raw-{stamp}"));
    fs::create_dir_all(&run_dir).context(format!("creating {}", run_dir.display()))?;
    let mut session = Session {
        settings,
        certificates: Certificates::generate()?,
        work: tempfile::Builder::new()
            .prefix("loopback-guard-bench-")
            .tempdir()
            .context("creating a work dir")?,
        run_dir,
        oha,
        clk_tck,
        envoys: BTreeMap::new(),
    };
    // The report's arm order and labels.
    let arms_json: Vec<_> =
        settings.arms.iter().map(|arm| json!({"name": arm.name, "label": arm.label})).collect();
    session.write(session.run_dir.join("arms.json"), &serde_json::Value::from(arms_json).to_string())?;

    let envoy_version = output_of(&settings.envoy.display().to_string(), &["--version"]);
    let envoy_version = envoy_version
        .split("version:")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or("unknown");
    let oha_version = output_of(&session.oha.display().to_string(), &["--version"]);
    let names: Vec<&str> = settings.arms.iter().map(|arm| arm.name.as_str()).collect();
    let modes: Vec<&str> = settings.modes.iter().map(|mode| mode.as_str()).collect();
    eprintln!("bench: Envoy {envoy_version}; {oha_version}");
    eprintln!("bench: {} rounds of: {}", settings.rounds, names.join(" "));
    eprintln!("bench: modes: {}; {} connections per arm", modes.join(" "), settings.connections);
    eprintln!("bench: load before the run: {}", loadavg());

    for arm in &settings.arms {
        let envoy = session.start_envoy(arm, 1)?;
        session.warm_up(arm, &envoy, true)?;
        session.envoys.insert(arm.name.clone(), envoy);
    }
    // Every arm's memory once all are warm, and at the end (minutes later: settled).
    let mut memory = BTreeMap::new();
    for arm in &settings.arms {
        memory.insert(arm.name.clone(), json!({"warm": session.envoy(arm)?.memory()?}));
    }
    let count = settings.arms.len();
    for round in 1..=settings.rounds {
        eprintln!("bench: round {round}/{} (load {})", settings.rounds, loadavg());
        // Each round starts one arm further on, so that no arm always follows the same one.
        let order: Vec<&Arm> =
            settings.arms.iter().cycle().skip((round as usize - 1) % count).take(count).collect();
        for &mode in &settings.modes {
            match mode {
                Mode::Cpu => session.together(round, mode, settings.cpu_requests, settings.cpu_rate)?,
                Mode::CpuNewconn => {
                    session.together(round, mode, settings.cpu_newconn_requests, settings.cpu_newconn_rate)?
                }
                Mode::Rate | Mode::Max => {
                    for arm in &order {
                        session.burst(round, arm, mode, settings.requests)?;
                    }
                }
                Mode::Newconn => {
                    for arm in &order {
                        session.burst(round, arm, mode, settings.newconn_requests)?;
                    }
                }
            }
        }
    }
    for arm in &settings.arms {
        if let Some(entry) = memory.get_mut(&arm.name) {
            envoy_config::set(entry, "end", session.envoy(arm)?.memory()?);
        }
    }
    session
        .write(session.run_dir.join("memory-arms.json"), &serde_json::Value::from_iter(memory).to_string())?;
    for (name, envoy) in std::mem::take(&mut session.envoys) {
        let log_path = envoy.log_path.clone();
        drop(envoy);
        // Envoy's log (A5's holds a line per request) goes with the raw data only if it warns.
        let log = fs::read_to_string(&log_path).unwrap_or_default();
        if log.contains("][error]") || log.contains("][critical]") {
            let _ = fs::copy(&log_path, session.run_dir.join(format!("envoy-{name}.log")));
        }
    }
    // Memory by worker count, the release off and on, every arm's Envoy of a worker count at once.
    if settings.rss_workers > 0 {
        let memory_arms: Vec<&Arm> =
            settings.arms.iter().filter(|arm| RSS_ARMS.contains(&arm.name.as_str())).collect();
        for workers in [1, settings.rss_workers] {
            eprintln!(
                "bench: memory: {} with {workers} worker(s), release off and on ({} s pauses)",
                memory_arms.iter().map(|arm| arm.name.as_str()).collect::<Vec<_>>().join(" "),
                settings.memory_settle.as_secs()
            );
            session.memory_phase(&memory_arms, workers)?;
        }
    }
    // Config pushes, interleaved: round n of every arm, then round n + 1; each round a new Envoy
    // per arm, pushed twice (cold, then warm).
    if settings.pushes > 0 {
        let push_arms: Vec<&Arm> =
            settings.arms.iter().filter(|arm| PUSH_ARMS.contains(&arm.name.as_str())).collect();
        let mut pushes = Vec::new();
        for round in 1..=settings.pushes {
            eprintln!("bench: config push round {round}/{}", settings.pushes);
            for arm in &push_arms {
                let envoy = session.start_push_envoy(arm)?;
                for push in [1, 2] {
                    let mut record = session.push(arm, &envoy, push)?;
                    envoy_config::set(&mut record, "round", json!(round));
                    pushes.push(record);
                }
            }
        }
        session.write(session.run_dir.join("pushes.json"), &serde_json::Value::from(pushes).to_string())?;
    }
    let load_after = loadavg();
    eprintln!("bench: load after the run: {load_after}");

    let json_path = out_dir().join(format!("bench-{stamp}.json"));
    let root = repo_root();
    let git = output_of("git", &["-C", &root.display().to_string(), "describe", "--always", "--dirty"]);
    let status = Command::new("python3")
        .arg(root.join("bench/report.py"))
        .arg(&session.run_dir)
        .arg("--json")
        .arg(&json_path)
        .args(["--machine", &machine(), "--envoy", envoy_version, "--oha", &oha_version])
        .args(["--loadavg", &load_after, "--module-sha256", &sha256_file(&settings.guard_wasm)?])
        .args(["--module-bytes", &file_size(&settings.guard_wasm)?.to_string()])
        .args(["--module-names", &named_module(settings)])
        .arg("--module-path")
        .arg(&settings.guard_wasm)
        .args(["--memory-release", &SHIPPED_BYTES_TO_RELEASE.to_string()])
        .args(["--git", if git.is_empty() { "unknown" } else { &git }])
        .args(["--strict-targets", if settings.strict { "1" } else { "0" }])
        .status()
        .context("running bench/report.py")?;
    if json_path.is_file() {
        fs::copy(&json_path, out_dir().join("latest.json")).context("copying to latest.json")?;
        eprintln!(
            "bench: numbers: {} (raw measurements: {})",
            json_path.display(),
            session.run_dir.display()
        );
    }
    Ok(match status.code() {
        Some(0) => ExitCode::SUCCESS,
        Some(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        None => ExitCode::FAILURE,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse_from_their_names_only() {
        for mode in [Mode::Rate, Mode::Max, Mode::Newconn, Mode::Cpu, Mode::CpuNewconn] {
            assert_eq!(mode.as_str().parse::<Mode>().unwrap(), mode);
        }
        let err = "fast".parse::<Mode>().unwrap_err().to_string();
        assert_eq!(err, "unknown mode \"fast\": rate, max, newconn, cpu or cpu-newconn");
    }

    #[test]
    fn stamp_is_compact_utc() {
        let stamp = stamp();
        assert_eq!(stamp.len(), 16, "{stamp}");
        assert!(stamp.ends_with('Z') && stamp.get(8..9) == Some("T"), "{stamp}");
    }
}
