//! Connection scope in the benchmark (issue 20): the module as a network filter that decides
//! once per connection, ahead of the connection manager, with native RBAC on the HTTP chain
//! answering on the verdict it set as filter state (envoy-config/loopback-guard-connection.yaml);
//! and the TCP variant, the guard ahead of tcp_proxy.
//!
//! - [`arms`]: C1 (connection scope, the rightful client) and C1-deny (a rogue one), measured in
//!   the interleaved session with the other arms: their config is the plain listener of
//!   [`crate::envoy_config`] with [`adjust`] adding the two filters.
//! - [`tcp`]: after the session, bytes echoed through tcp_proxy over a new TLS connection each,
//!   interleaved rounds of T0 (tcp_proxy alone), T1 (the guard ahead of it) and T1-deny (a
//!   rogue client: closed at its first bytes): Envoy's CPU per connection.
//! - [`goals`]: issue 20's goals table from this run's figures (report.py's JSON) and [`tcp`]'s.
//!
//! Environment: BENCH_TCP_CONNECTIONS [60] (per arm and round), BENCH_TCP_ROUNDS [BENCH_ROUNDS].

use std::fs;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use loopback_guard_integration::client::get_plain;
use loopback_guard_integration::connection::{Recorder, TlsSession};
use loopback_guard_integration::envoy::Ports;
use loopback_guard_integration::{Context, Error, Result};
use serde_json::{json, Value};

use crate::arms::{Arm, Client, Expect};
use crate::envoy_config::{downstream_tls, Inputs};
use crate::{Certificates, Settings};

const RBAC_ALLOWED: &str = "http.loopback_strict.rbac.allowed";
const RBAC_DENIED: &str = "http.loopback_strict.rbac.denied";
/// The connection-scope arms, by name.
const ARMS: [&str; 2] = ["C1", "C1-deny"];
const PLUGIN_HTTP: &str = r#"{"scope":"connection","on_deny":"rbac"}"#;
const PLUGIN_TCP: &str = r#"{"scope":"connection"}"#;
const PAYLOAD: &[u8] = b"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde\n";

/// The arms: no HTTP filter of their own ([`adjust`] adds them); RBAC counts every request.
pub fn arms() -> Vec<Arm> {
    let arm = |name: &str, label: &str, client, expect, counter| Arm {
        name: name.to_owned(),
        label: label.to_owned(),
        filters: Vec::new(),
        client,
        expect,
        counter: Some(counter),
        new_connection_per_request: false,
    };
    vec![
        arm(
            "C1",
            "connection scope: guard network filter + RBAC on its verdict",
            Client::App,
            Expect::Ok,
            RBAC_ALLOWED,
        ),
        arm("C1-deny", "connection scope, rogue cert", Client::Rogue, Expect::Forbidden, RBAC_DENIED),
    ]
}

/// The network filter: the shipped module, configured as `configuration`.
fn guard_network_filter(inputs_wasm: &Path, configuration: &str) -> Value {
    json!({
        "name": "envoy.filters.network.wasm",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.network.wasm.v3.Wasm",
            "config": {
                "name": "loopback_guard",
                "root_id": "loopback_guard",
                "failure_policy": "FAIL_RELOAD",
                "configuration": {"@type": "type.googleapis.com/google.protobuf.StringValue", "value": configuration},
                "vm_config": {
                    "vm_id": "loopback_guard",
                    "runtime": "envoy.wasm.runtime.v8",
                    "code": {"local": {"filename": inputs_wasm.display().to_string()}},
                    "environment_variables": {"host_env_keys": ["TRUST_DOMAIN"]}
                }
            }
        }
    })
}

/// A connection-scope arm's config: the guard first among the network filters, and an RBAC
/// admitting only the verdict `allow` first among the HTTP filters. Other arms unchanged.
pub fn adjust(arm: &Arm, mut config: Value, inputs: &Inputs) -> Value {
    if !ARMS.contains(&arm.name.as_str()) {
        return config;
    }
    let rbac = json!({
        "name": "envoy.filters.http.rbac",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC",
            "rules": {"action": "ALLOW", "policies": {"loopback-guard": {
                "permissions": [{"any": true}],
                "principals": [{"filter_state": {"key": "wasm.loopback_guard.decision", "string_match": {"exact": "allow"}}}]
            }}}
        }
    });
    let chain = "/static_resources/listeners/0/filter_chains/0/filters";
    if let Some(filters) = config.pointer_mut(chain).and_then(Value::as_array_mut) {
        if let Some(http) = filters
            .first_mut()
            .and_then(|hcm| hcm.pointer_mut("/typed_config/http_filters"))
            .and_then(Value::as_array_mut)
        {
            http.insert(0, rbac);
        }
        filters.insert(0, guard_network_filter(inputs.guard_wasm, PLUGIN_HTTP));
    }
    config
}

/// The TCP arms' Envoy config: the loopback TLS listener, `guard` or not ahead of tcp_proxy to
/// 127.0.0.1:`upstream`, which tcp_proxy dials at the first bytes the filters let through.
fn tcp_config(
    settings: &Settings,
    certificates: &Certificates,
    ports: (u16, u16),
    upstream: u16,
    guard: bool,
) -> Value {
    let mut filters = Vec::new();
    if guard {
        filters.push(guard_network_filter(&settings.guard_wasm, PLUGIN_TCP));
    }
    filters.push(json!({
        "name": "envoy.filters.network.tcp_proxy",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
            "stat_prefix": "loopback_tcp",
            "cluster": "echo",
            "upstream_connect_mode": "ON_DOWNSTREAM_DATA",
            "max_early_data_bytes": 65536
        }
    }));
    let address = |port: u16| json!({"socket_address": {"address": "127.0.0.1", "port_value": port}});
    json!({
        "node": {"id": "loopback-guard-bench", "cluster": "loopback-guard-bench",
                 "metadata": {"NAMESPACE": loopback_guard_integration::pki::NAMESPACE,
                              "SERVICE_ACCOUNT": loopback_guard_integration::pki::SERVICE_ACCOUNT}},
        "admin": {"address": address(ports.0)},
        "static_resources": {
            "listeners": [{
                "name": "loopback_tcp",
                "address": address(ports.1),
                "filter_chains": [{
                    "transport_socket": downstream_tls(certificates.pki.dir(), settings.tls_resumption),
                    "filters": filters
                }]
            }],
            "clusters": [{
                "name": "echo", "type": "STATIC", "connect_timeout": "1s",
                "load_assignment": {"cluster_name": "echo", "endpoints": [{"lb_endpoints": [{"endpoint": {"address": address(upstream)}}]}]}
            }]
        }
    })
}

struct TcpEnvoy {
    child: Child,
    listen: u16,
}

impl Drop for TcpEnvoy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl TcpEnvoy {
    fn start(
        settings: &Settings,
        certificates: &Certificates,
        dir: &Path,
        name: &str,
        upstream: u16,
        guard: bool,
    ) -> Result<Self> {
        let ports = Ports::pick()?;
        let config = tcp_config(settings, certificates, (ports.admin, ports.strict), upstream, guard);
        let path = dir.join(format!("envoy-{name}.json"));
        fs::write(&path, config.to_string()).context(format!("writing {}", path.display()))?;
        let log = fs::File::create(path.with_extension("log")).context("creating an Envoy log")?;
        let child = Command::new("taskset")
            .args(["-c", &settings.envoy_cpu])
            .arg(&settings.envoy)
            .arg("-c")
            .arg(&path)
            .args(["--concurrency", "1", "--log-level", "warning", "--disable-hot-restart"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().context("opening Envoy's log")?)
            .stderr(log)
            .spawn()
            .context("running taskset with Envoy")?;
        let envoy = TcpEnvoy { child, listen: ports.strict };
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if get_plain(&format!("http://127.0.0.1:{}/ready", ports.admin)).is_ok_and(|r| r.status == 200) {
                return Ok(envoy);
            }
            thread::sleep(Duration::from_millis(100));
        }
        Err(Error::new(format!("the Envoy of {name} did not become ready")))
    }

    /// Its threads' run time so far, in ns (schedstat), as measure.rs reads it.
    fn cpu_ns(&self) -> Result<u64> {
        let pid = self.child.id();
        let mut ns = 0;
        for task in fs::read_dir(format!("/proc/{pid}/task")).context("listing Envoy's threads")?.flatten() {
            let text = fs::read_to_string(task.path().join("schedstat")).unwrap_or_default();
            ns += text.split_whitespace().next().and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        }
        Ok(ns)
    }
}

/// One connection: handshake, the payload, its echo (or, denied, nothing). Whether it echoed.
fn exchange(certificates: &Certificates, rogue: bool, port: u16) -> Result<bool> {
    let identity = if rogue { &certificates.rogue } else { &certificates.app };
    let mut session = TlsSession::open(&certificates.pki, Some(identity), port)?;
    session.send(PAYLOAD);
    let got = session.received_until(Duration::from_secs(5), |bytes| bytes.len() >= PAYLOAD.len());
    Ok(got == PAYLOAD)
}

fn median(mut values: Vec<f64>) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied()
}

/// The TCP figures: Envoy CPU per connection (µs) of T0, T1 and T1-deny, and T1 - T0 per round.
pub fn tcp(settings: &Settings) -> Result<Value> {
    let per_round: u32 = crate::number("BENCH_TCP_CONNECTIONS", 60)?;
    let rounds: u32 = crate::number("BENCH_TCP_ROUNDS", settings.rounds)?;
    let certificates = Certificates::generate()?;
    let work =
        tempfile::Builder::new().prefix("loopback-guard-bench-tcp-").tempdir().context("a work dir")?;
    let upstream = Recorder::start()?;
    let t0 = TcpEnvoy::start(settings, &certificates, work.path(), "T0", upstream.port(), false)?;
    let t1 = TcpEnvoy::start(settings, &certificates, work.path(), "T1", upstream.port(), true)?;
    let arms: [(&str, &TcpEnvoy, bool); 3] = [("T0", &t0, false), ("T1", &t1, false), ("T1-deny", &t1, true)];
    for (_, envoy, rogue) in arms {
        for _ in 0..10 {
            exchange(&certificates, rogue, envoy.listen)?;
        }
    }
    let mut cpu: [Vec<f64>; 3] = Default::default();
    let mut guard_delta = Vec::new();
    for round in 0..rounds {
        eprintln!("bench: TCP round {}/{rounds}", round + 1);
        let mut this_round = [0.0; 3];
        // Each round starts one arm further on, as the session's rounds do.
        for (index, &(name, envoy, rogue)) in arms.iter().enumerate().cycle().skip(round as usize % 3).take(3)
        {
            let before = envoy.cpu_ns()?;
            for _ in 0..per_round {
                if exchange(&certificates, rogue, envoy.listen)? == rogue {
                    return Err(Error::new(format!("{name}: a connection did not take the arm's path")));
                }
            }
            let us = (envoy.cpu_ns()? - before) as f64 / 1000.0 / f64::from(per_round);
            if let (Some(slot), Some(all)) = (this_round.get_mut(index), cpu.get_mut(index)) {
                *slot = us;
                all.push(us);
            }
        }
        let [t0, t1, _] = this_round;
        guard_delta.push(t1 - t0);
    }
    let [c0, c1, c2] = cpu;
    let deny_delta: Vec<f64> = c2.iter().zip(&c0).map(|(d, a)| d - a).collect();
    Ok(json!({
        "connections_per_round": per_round,
        "rounds": rounds,
        "cpu_us_per_connection": {"T0": median(c0), "T1": median(c1), "T1-deny": median(c2)},
        "T1_minus_T0_us": median(guard_delta),
        "T1-deny_minus_T0_us": median(deny_delta),
    }))
}

/// Issue 20's goals, from report.py's summary of this run and the TCP figures; printed and
/// returned (for bench-<time>.json's sibling, connection-<time>.json).
pub fn goals(report_json: &Path, tcp: &Value) -> Result<Value> {
    let text = fs::read_to_string(report_json).context(format!("reading {}", report_json.display()))?;
    let report: Value = serde_json::from_str(&text).context("parsing the report")?;
    let get = |mode: &str, arm: &str, key: &str| {
        report.pointer(&format!("/summary/{mode}/{arm}/{key}")).and_then(Value::as_f64)
    };
    let a2 = get("rate", "A2", "cpu_us_delta_vs_A0");
    let rows = [
        (
            "warm allowed request, Envoy CPU over A0 (rate)",
            get("rate", "A3", "cpu_us_delta_vs_A0"),
            get("rate", "C1", "cpu_us_delta_vs_A0"),
            a2.map(|v| format!("<= {:.1} (A2 {v:.1} + 1)", v + 1.0)),
            "us",
        ),
        (
            "throughput vs A0 (max)",
            get("max", "A3", "rps_ratio_vs_A0"),
            get("max", "C1", "rps_ratio_vs_A0"),
            Some(">= 0.95".to_owned()),
            "ratio",
        ),
        (
            "new connection per request, over A0 (newconn)",
            get("newconn", "A3", "cpu_us_delta_vs_A0"),
            get("newconn", "C1", "cpu_us_delta_vs_A0"),
            get("newconn", "A3", "cpu_us_delta_vs_A0").map(|v| format!("<= {v:.1} (A3's)")),
            "us",
        ),
        (
            "denied request (rogue, keep-alive), over A0 (rate)",
            get("rate", "A3-deny", "cpu_us_delta_vs_A0"),
            get("rate", "C1-deny", "cpu_us_delta_vs_A0"),
            None,
            "us",
        ),
    ];
    println!("\n## goals (issue 20: connection scope), from this run\n");
    println!("| figure | HTTP filter (A3) | connection scope (C1) | goal | met |");
    println!("|---|---|---|---|---|");
    let fmt = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.2}"));
    let mut out = Vec::new();
    for (name, http, connection, goal, unit) in rows {
        let met = match (name, connection, a2, http) {
            (n, Some(c), Some(a2), _) if n.starts_with("warm") => Some(c <= a2 + 1.0),
            (n, Some(c), _, _) if n.starts_with("throughput") => Some(c >= 0.95),
            (n, Some(c), _, Some(h)) if n.starts_with("new connection") => Some(c <= h),
            _ => None,
        };
        let met_text = met.map_or("-", |m| if m { "yes" } else { "NO" });
        println!(
            "| {name} ({unit}) | {} | {} | {} | {met_text} |",
            fmt(http),
            fmt(connection),
            goal.clone().unwrap_or_else(|| "reported".into())
        );
        out.push(json!({"figure": name, "http_filter": http, "connection_scope": connection, "goal": goal, "met": met, "unit": unit}));
    }
    let tcp_row = tcp.get("T1_minus_T0_us").and_then(Value::as_f64);
    let deny_row = tcp.get("T1-deny_minus_T0_us").and_then(Value::as_f64);
    println!("| TCP: bytes echoed through tcp_proxy, CPU per connection over no filter (us) | - | {} | reported | - |", fmt(tcp_row));
    println!("| TCP: a denied connection (closed at its first bytes), over no filter (us) | - | {} | reported | - |", fmt(deny_row));
    Ok(json!({"goals": out, "tcp": tcp}))
}

/// After the interleaved session: the TCP arms (unless BENCH_TCP_ROUNDS=0), then the goals
/// table, written next to the session's figures as connection-latest.json.
pub fn after_session(settings: &Settings, code: std::process::ExitCode) -> Result<std::process::ExitCode> {
    let tcp = match crate::number("BENCH_TCP_ROUNDS", settings.rounds)? {
        0 => json!({}),
        _ => tcp(settings)?,
    };
    let latest = crate::out_dir().join("latest.json");
    let figures = goals(&latest, &tcp)?;
    let path = crate::out_dir().join("connection-latest.json");
    fs::write(&path, serde_json::to_string_pretty(&figures).unwrap_or_default())
        .context(format!("writing {}", path.display()))?;
    eprintln!("bench: connection scope's figures: {}", path.display());
    Ok(code)
}

/// `bench validate`: the TCP arms' configs (T0 and T1) through `envoy --mode validate`, which
/// also loads the module and runs its configure step on `{"scope":"connection"}`.
pub fn validate_tcp(settings: &Settings) -> Result<()> {
    let certificates = Certificates::generate()?;
    let work =
        tempfile::Builder::new().prefix("loopback-guard-bench-tcp-").tempdir().context("a work dir")?;
    for (name, guard) in [("T0", false), ("T1", true)] {
        let path = work.path().join(format!("envoy-{name}.json"));
        fs::write(&path, tcp_config(settings, &certificates, (0, 0), 1, guard).to_string())
            .context(format!("writing {}", path.display()))?;
        let output = Command::new(&settings.envoy)
            .args(["--mode", "validate", "--log-level", "error", "-c"])
            .arg(&path)
            .stdin(Stdio::null())
            .output()
            .context("running envoy --mode validate")?;
        if !output.status.success() {
            return Err(Error::new(format!(
                "the config of {name} does not validate:\n{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            )));
        }
        eprintln!("bench: {name}: config valid");
    }
    Ok(())
}
