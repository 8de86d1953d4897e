//! What Envoy does when the module fails, under each `failure_policy`: a module that cannot load,
//! and a module that crashes (traps) while handling a request. An authorization filter must never
//! let a request through because it failed.
//!
//! The real module does not crash on any input we know of, so the crash comes from a stand-in: a
//! minimal proxy-wasm module, assembled here byte by byte, that lets a request through unless it
//! has more than [`CRASH_ABOVE_HEADERS`] headers, and then executes `unreachable` (what a Rust
//! panic compiles to with `panic = "abort"`). That is a filter with a panic-on-input bug that an
//! attacker in the pod can trigger at will.
//!
//! Each case runs the shared template (`envoy-config/loopback-guard.yaml`), as the harness renders
//! it, with the module path, the `failure_policy` value and the ports replaced.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use loopback_guard_integration::client::{self, get_plain};
use loopback_guard_integration::envoy::{envoy_bin, wasm_module, Envoy, Ports, Settings, Stats};
use loopback_guard_integration::load;
use loopback_guard_integration::pki::{Credential, Pki, APP_ID};
use loopback_guard_integration::{Context, Error, Result};
use serde_json::Value;

const POLICY_KEY: &str = "failure_policy: ";

/// `text` with the value of its one `failure_policy:` replaced by `policy`, and the value it had.
fn replace_policy(text: &str, policy: &str) -> Result<(String, String)> {
    let mut found = text.match_indices(POLICY_KEY);
    let (Some((at, _)), None) = (found.next(), found.next()) else {
        return Err(Error::new(format!("the config does not have exactly one `{POLICY_KEY}`")));
    };
    let (head, tail) = text.split_at(at + POLICY_KEY.len());
    let end = tail.find(|c: char| c.is_whitespace()).unwrap_or(tail.len());
    let (old, rest) = tail.split_at(end);
    Ok((format!("{head}{policy}{rest}"), old.to_owned()))
}

/// The stand-in traps on a request with more headers than this (Envoy counts the pseudo-headers
/// and the ones it adds itself; an ordinary request here has about ten).
const CRASH_ABOVE_HEADERS: u8 = 40;
/// How many extra headers the crashing request carries.
const CRASH_HEADERS: usize = 60;

// ---------------------------------------------------------------------------------------------
// The stand-in module, in the WebAssembly binary format.

fn leb_u32(mut value: u32, out: &mut Vec<u8>) {
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// Signed LEB128, for `i32.const` (the values used here are small and non-negative).
fn leb_i32(value: u8, out: &mut Vec<u8>) {
    if value < 0x40 {
        out.push(value);
    } else {
        out.extend([value | 0x80, 0x00]);
    }
}

fn section(id: u8, items: &[Vec<u8>], out: &mut Vec<u8>) {
    let mut body = Vec::new();
    leb_u32(items.len() as u32, &mut body);
    for item in items {
        body.extend(item);
    }
    out.push(id);
    leb_u32(body.len() as u32, out);
    out.extend(body);
}

fn name(text: &str) -> Vec<u8> {
    let mut out = Vec::new();
    leb_u32(text.len() as u32, &mut out);
    out.extend(text.as_bytes());
    out
}

/// A function body without locals: `code` then `end`.
fn body(code: &[u8]) -> Vec<u8> {
    let mut inner = vec![0x00]; // no locals
    inner.extend(code);
    inner.push(0x0b);
    let mut out = Vec::new();
    leb_u32(inner.len() as u32, &mut out);
    out.extend(inner);
    out
}

/// The stand-in, as WAT:
///
/// ```text
/// (module
///   (memory (export "memory") 2)
///   (func (export "proxy_abi_version_0_2_0"))
///   (func (export "proxy_on_memory_allocate") (param i32) (result i32) (i32.const 1024))
///   (func (export "proxy_on_context_create") (param i32 i32))
///   (func (export "proxy_on_vm_start") (param i32 i32) (result i32) (i32.const 1))
///   (func (export "proxy_on_configure") (param i32 i32) (result i32) (i32.const 1))
///   (func (export "proxy_on_request_headers") (param $ctx i32) (param $headers i32) (param i32)
///         (result i32)
///     (if (i32.gt_u (local.get $headers) (i32.const CRASH_ABOVE_HEADERS)) (then unreachable))
///     (i32.const 0)))   ;; Continue
/// ```
fn crashing_module() -> Vec<u8> {
    const I32: u8 = 0x7f;
    let func_type = |params: &[u8], results: &[u8]| {
        let mut t = vec![0x60];
        leb_u32(params.len() as u32, &mut t);
        t.extend(params);
        leb_u32(results.len() as u32, &mut t);
        t.extend(results);
        t
    };
    let types = [
        func_type(&[], &[]),
        func_type(&[I32], &[I32]),
        func_type(&[I32, I32], &[]),
        func_type(&[I32, I32], &[I32]),
        func_type(&[I32, I32, I32], &[I32]),
    ];
    // (export name, type index, body)
    let mut on_request_headers = vec![0x20, 0x01, 0x41]; // local.get 1, i32.const ..
    leb_i32(CRASH_ABOVE_HEADERS, &mut on_request_headers);
    on_request_headers.extend([0x4b, 0x04, 0x40, 0x00, 0x0b, 0x41, 0x00]); // gt_u if unreachable end; i32.const 0
    let functions: [(&str, u8, Vec<u8>); 6] = [
        ("proxy_abi_version_0_2_0", 0, body(&[])),
        ("proxy_on_memory_allocate", 1, body(&[0x41, 0x80, 0x08])), // i32.const 1024
        ("proxy_on_context_create", 2, body(&[])),
        ("proxy_on_vm_start", 3, body(&[0x41, 0x01])),
        ("proxy_on_configure", 3, body(&[0x41, 0x01])),
        ("proxy_on_request_headers", 4, body(&on_request_headers)),
    ];

    let mut out = b"\0asm\x01\0\0\0".to_vec();
    section(1, &types, &mut out);
    let signatures: Vec<Vec<u8>> = functions.iter().map(|(_, t, _)| vec![*t]).collect();
    section(3, &signatures, &mut out);
    section(5, &[vec![0x00, 0x02]], &mut out); // one memory, at least 2 pages
    let mut exports = vec![[name("memory"), vec![0x02, 0x00]].concat()];
    for (index, (export, _, _)) in functions.iter().enumerate() {
        exports.push([name(export), vec![0x00, index as u8]].concat());
    }
    section(7, &exports, &mut out);
    let bodies: Vec<Vec<u8>> = functions.iter().map(|(_, _, b)| b.clone()).collect();
    section(10, &bodies, &mut out);
    out
}

// ---------------------------------------------------------------------------------------------
// Envoy from the shared template with a given module and failure policy.

struct PolicyEnvoy {
    child: Child,
    dir: tempfile::TempDir,
    admin: u16,
    strict: u16,
}

enum Start {
    Running(PolicyEnvoy),
    Exited(String),
}

/// The shared template as the harness renders it (every placeholder filled, whatever the template
/// grows), and the ports that went into it.
struct BaseConfig {
    text: String,
    ports: [u16; 4],
}

impl BaseConfig {
    fn render(pki: &Pki) -> Result<Self> {
        let envoy =
            Envoy::start(pki, &Settings::with_plugin_config("{}")).map_err(|e| Error::new(e.to_string()))?;
        let text = fs::read_to_string(envoy.config_path()).context("reading the rendered config")?;
        let p = envoy.ports();
        envoy.stop();
        Ok(BaseConfig { text, ports: [p.admin, p.strict, p.lenient, p.backend] })
    }

    /// The config with other ports, `module` instead of the real module and `policy` instead of
    /// the shipped failure policy. An error if the config no longer has what this replaces.
    fn with(&self, ports: [u16; 4], module: &Path, policy: &str) -> Result<String> {
        let real = wasm_module()?.display().to_string();
        if self.text.matches(&real).count() != 1 {
            return Err(Error::new(format!("the config does not name the module {real} once")));
        }
        let (text, _) = replace_policy(&self.text, policy)?;
        let mut text = text.replace(&real, &module.display().to_string());
        for (old, new) in self.ports.iter().zip(ports) {
            let old = format!("port_value: {old} ");
            if !text.contains(&old) {
                return Err(Error::new(format!("no {old:?} in the config")));
            }
            text = text.replace(&old, &format!("port_value: {new} "));
        }
        Ok(text)
    }
}

impl PolicyEnvoy {
    /// Envoy with `module` under `policy` (e.g. `FAIL_RELOAD`); `Exited` with the log if it
    /// refuses to start.
    fn start(base: &BaseConfig, module: &Path, policy: &str) -> Result<Start> {
        for _attempt in 0..3 {
            let picked = Ports::pick()?;
            let ports = [picked.admin, picked.strict, picked.lenient, picked.backend];
            let [admin, strict, _, _] = ports;
            let dir =
                tempfile::Builder::new().prefix("loopback-guard-failure-").tempdir().context("a temp dir")?;
            let config = dir.path().join("envoy.yaml");
            fs::write(&config, base.with(ports, module, policy)?).context("writing the config")?;
            let log = File::create(dir.path().join("envoy.log")).context("creating envoy.log")?;
            let access_log = File::create(dir.path().join("access.log")).context("creating access.log")?;
            let child = Command::new(envoy_bin()?)
                .arg("-c")
                .arg(&config)
                .args(["--disable-hot-restart", "--concurrency", "1", "-l", "info"])
                .args(["--file-flush-interval-msec", "50"])
                .stdin(Stdio::null())
                .stdout(access_log)
                .stderr(log)
                .spawn()
                .context("running envoy")?;
            let mut envoy = PolicyEnvoy { child, dir, admin, strict };
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                if let Some(status) = envoy.child.try_wait().context("waiting for envoy")? {
                    let log = envoy.log();
                    if log.contains("Address already in use") {
                        break; // another attempt, with other ports
                    }
                    return Ok(Start::Exited(format!("{status}\n{log}")));
                }
                let ready = get_plain(&format!("http://127.0.0.1:{admin}/ready"));
                if ready.is_ok_and(|reply| reply.status == 200) {
                    return Ok(Start::Running(envoy));
                }
                if Instant::now() > deadline {
                    return Err(Error::new(format!("Envoy not ready in 30 s:\n{}", envoy.log())));
                }
                thread::sleep(Duration::from_millis(50));
            }
        }
        Err(Error::new("no free ports for Envoy after 3 attempts"))
    }

    fn log(&self) -> String {
        String::from_utf8_lossy(&fs::read(self.dir.path().join("envoy.log")).unwrap_or_default()).into_owned()
    }

    fn stats(&self) -> Result<Stats> {
        Ok(Stats::parse(&get_plain(&format!("http://127.0.0.1:{}/stats", self.admin))?.body))
    }

    fn url(&self) -> String {
        format!("https://127.0.0.1:{}/", self.strict)
    }

    /// `response_code_details` of the access log entries with `status`, counted.
    fn response_code_details(&self, status: u16) -> BTreeMap<String, u64> {
        // The access log is flushed every 50 ms.
        thread::sleep(Duration::from_millis(200));
        let log = fs::read_to_string(self.dir.path().join("access.log")).unwrap_or_default();
        let mut counts = BTreeMap::new();
        for entry in log.lines().filter_map(|line| serde_json::from_str::<Value>(line).ok()) {
            let got = entry.get("status").and_then(|s| s.as_u64().or_else(|| s.as_str()?.parse().ok()));
            if got == Some(u64::from(status)) {
                let details = entry.get("response_code_details").and_then(Value::as_str).unwrap_or("-");
                *counts.entry(details.to_owned()).or_default() += 1;
            }
        }
        counts
    }
}

impl Drop for PolicyEnvoy {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!("----- Envoy log -----\n{}\n----- end -----", self.log());
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Requests that reached the backend (the listener standing in for the upstream service).
fn backend_requests(envoy: &PolicyEnvoy) -> Result<u64> {
    Ok(envoy.stats()?.0.get("http.backend.downstream_rq_total").copied().unwrap_or(0))
}

/// A `wasm.*` stat (`wasm.envoy.wasm.runtime.v8.created`, `wasm.loopback_guard.vm_reload_success`...).
fn wasm_stat(stats: &Stats, name: &str) -> u64 {
    stats.0.get(&format!("wasm.{name}")).copied().unwrap_or(0)
}

const CREATED: &str = "envoy.wasm.runtime.v8.created";
const RELOADED: &str = "loopback_guard.vm_reload_success";
const RELOAD_FAILED: &str = "loopback_guard.vm_reload_failure";
const RELOAD_BACKED_OFF: &str = "loopback_guard.vm_reload_backoff";

/// A PKI, the shared config rendered, the stand-in module on disk and the app's certificate.
struct Fixture {
    pki: Pki,
    base: BaseConfig,
    module_dir: tempfile::TempDir,
    app: Credential,
}

impl Fixture {
    fn new() -> Result<Self> {
        let pki = Pki::generate()?;
        let base = BaseConfig::render(&pki)?;
        let module_dir =
            tempfile::Builder::new().prefix("loopback-guard-modules-").tempdir().context("a temp dir")?;
        fs::write(module_dir.path().join("crash.wasm"), crashing_module()).context("writing crash.wasm")?;
        let app = pki.svid("app", APP_ID)?;
        Ok(Fixture { pki, base, module_dir, app })
    }

    fn start(&self, policy: &str) -> Result<PolicyEnvoy> {
        match PolicyEnvoy::start(&self.base, &self.module_dir.path().join("crash.wasm"), policy)? {
            Start::Running(envoy) => Ok(envoy),
            Start::Exited(log) => {
                Err(Error::new(format!("Envoy did not start with the stand-in under {policy}: {log}")))
            }
        }
    }

    /// One request on a new connection, as the rightful app; `crash` adds the headers the
    /// stand-in crashes on. The status (`None`: no HTTP reply), and how many requests reached
    /// the backend meanwhile.
    fn send(&self, envoy: &PolicyEnvoy, crash: bool) -> Result<(Option<u16>, u64)> {
        let agent = load::agent(client::tls_config(&self.pki.ca_path(), Some(&self.app))?, false);
        let before = backend_requests(envoy)?;
        let mut request = agent.get(&envoy.url());
        for i in 0..if crash { CRASH_HEADERS } else { 0 } {
            request = request.header(format!("x-filler-{i}"), "1");
        }
        let status = request.call().ok().map(|mut response| {
            let _ = response.body_mut().read_to_vec();
            response.status().as_u16()
        });
        Ok((status, backend_requests(envoy)? - before))
    }
}

const REFUSED: (Option<u16>, u64) = (Some(503), 0);
const PASSED: (Option<u16>, u64) = (Some(200), 1);

#[test]
fn a_module_that_cannot_load_keeps_envoy_from_starting_under_every_policy() {
    let fixture = Fixture::new().unwrap();
    let real = fs::read(wasm_module().unwrap()).unwrap();
    let modules: [(&str, Option<Vec<u8>>); 4] = [
        ("not a wasm module", Some(b"this is not a wasm module".to_vec())),
        ("an empty file", Some(Vec::new())),
        ("the real module cut in half", Some(real[..real.len() / 2].to_vec())),
        ("a missing file", None),
    ];
    let mut problems = Vec::new();
    for (what, bytes) in &modules {
        let path = fixture.module_dir.path().join(format!("{}.wasm", what.replace(' ', "-")));
        if let Some(bytes) = bytes {
            fs::write(&path, bytes).unwrap();
        }
        let expected =
            if bytes.is_some() { "Unable to create Wasm plugin loopback_guard" } else { "Invalid path" };
        for policy in ["FAIL_CLOSED", "FAIL_RELOAD", "FAIL_OPEN"] {
            match PolicyEnvoy::start(&fixture.base, &path, policy).unwrap() {
                Start::Running(envoy) => {
                    let reply = fixture.send(&envoy, false).unwrap();
                    problems.push(format!("{what}, {policy}: Envoy started (a request got {reply:?})"));
                }
                Start::Exited(log) if !log.contains(expected) => {
                    problems.push(format!("{what}, {policy}: Envoy exited without {expected:?}:\n{log}"))
                }
                Start::Exited(_) => {}
            }
        }
    }
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

#[test]
fn after_a_crash_fail_closed_refuses_every_request_until_envoy_restarts() {
    let fixture = Fixture::new().unwrap();
    let envoy = fixture.start("FAIL_CLOSED").unwrap();
    let before = envoy.stats().unwrap();

    // The stand-in lets ordinary requests through while it runs.
    for _ in 0..3 {
        assert_eq!(fixture.send(&envoy, false).unwrap(), PASSED, "before the crash");
    }
    assert_eq!(fixture.send(&envoy, true).unwrap(), REFUSED, "the request that crashes the module");
    assert!(envoy.log().contains("Function: proxy_on_request_headers failed"), "no crash in Envoy's log");
    let after_crash: Vec<_> = (0..20).map(|_| fixture.send(&envoy, false).unwrap()).collect();
    assert_eq!(after_crash, vec![REFUSED; 20], "right after the crash");
    // Longer than FAIL_RELOAD's back-off: nothing comes back by itself.
    thread::sleep(Duration::from_millis(2500));
    let later: Vec<_> = (0..5).map(|_| fixture.send(&envoy, false).unwrap()).collect();
    assert_eq!(later, vec![REFUSED; 5], "2.5 s later");

    let after = envoy.stats().unwrap();
    for name in [CREATED, RELOADED, RELOAD_FAILED, RELOAD_BACKED_OFF] {
        assert_eq!(wasm_stat(&after, name), wasm_stat(&before, name), "wasm.{name}");
    }
    let details = envoy.response_code_details(503);
    assert_eq!(details, BTreeMap::from([("wasm_fail_stream".to_owned(), 26)]), "why the 503s");
}

#[test]
fn after_a_crash_fail_reload_refuses_until_a_fresh_vm_runs() {
    let fixture = Fixture::new().unwrap();
    let envoy = fixture.start("FAIL_RELOAD").unwrap();
    let before = envoy.stats().unwrap();

    assert_eq!(fixture.send(&envoy, false).unwrap(), PASSED, "before any crash");
    let mut refused = 0;
    for round in 1..=2 {
        assert_eq!(fixture.send(&envoy, true).unwrap(), REFUSED, "crash {round}");
        // Until Envoy has replaced the VM (after a back-off of about a second), requests are
        // refused: none passes without the module.
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            match fixture.send(&envoy, false).unwrap() {
                PASSED => break,
                REFUSED => refused += 1,
                other => panic!("after crash {round}: {other:?}"),
            }
            assert!(Instant::now() < deadline, "no fresh VM 15 s after crash {round}");
            thread::sleep(Duration::from_millis(100));
        }
    }

    let after = envoy.stats().unwrap();
    let change = |name| wasm_stat(&after, name) - wasm_stat(&before, name);
    assert_eq!(change(RELOADED), 2, "one fresh VM per crash");
    assert_eq!(change(RELOAD_FAILED), 0);
    // Every request refused after a crash was refused by the back-off, not let through.
    assert_eq!(change(RELOAD_BACKED_OFF), refused, "refused while backing off");
    assert_eq!(change(CREATED), 2);
    let details = envoy.response_code_details(503);
    assert_eq!(details, BTreeMap::from([("wasm_fail_stream".to_owned(), refused + 2)]), "why the 503s");
}

/// Why the shipped configs never fail open: after one crash, the filter is gone and requests it
/// would have judged go straight to the backend.
#[test]
fn fail_open_lets_requests_through_unchecked_after_a_crash() {
    let fixture = Fixture::new().unwrap();
    let envoy = fixture.start("FAIL_OPEN").unwrap();
    assert_eq!(fixture.send(&envoy, false).unwrap(), PASSED, "before the crash");
    assert_eq!(fixture.send(&envoy, true).unwrap(), REFUSED, "the request that crashes the module");
    // The same request again: the module would crash on it (so it never lets it through), but
    // it no longer runs.
    assert_eq!(fixture.send(&envoy, true).unwrap(), PASSED, "the same request after the crash");
}

/// The shipped configs fail closed: the Envoy template with `FAIL_CLOSED` or `FAIL_RELOAD` (both
/// refuse every request while the module is down, as the tests above show), the Istio
/// WasmPlugin with their counterparts `FAIL_CLOSE` or `FAIL_RELOAD`. Never open.
#[test]
fn the_shipped_configs_never_fail_open() {
    let root = loopback_guard_integration::repo_root();
    let template = fs::read_to_string(root.join("envoy-config/loopback-guard.yaml")).unwrap();
    let (_, envoy_policy) = replace_policy(&template, "-").unwrap();
    assert!(["FAIL_CLOSED", "FAIL_RELOAD"].contains(&envoy_policy.as_str()), "the template: {envoy_policy}");

    let plugin = fs::read_to_string(root.join("deploy/istio/wasmplugin.yaml")).unwrap();
    let strategies: Vec<&str> =
        plugin.lines().filter_map(|line| line.trim().strip_prefix("failStrategy:")).map(str::trim).collect();
    assert!(
        matches!(strategies.as_slice(), [one] if ["FAIL_CLOSE", "FAIL_RELOAD"].contains(one)),
        "deploy/istio/wasmplugin.yaml: failStrategy {strategies:?}"
    );
}
