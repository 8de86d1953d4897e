//! The trimmed module still cleans up after every stream. The Rust SDK keeps each HTTP context in
//! a map and removes it only in `proxy_on_delete`, which Envoy calls when the stream ends
//! (`Context::onDestroy` in source/extensions/common/wasm/context.cc: onDone, then onDelete).
//! The post-link step keeps that export (scripts/wasm-exports.txt); this test shows in Envoy that
//! the map does not grow: Envoy's resident memory stays flat over many thousand streams.
//!
//! So that the check can fail, it first runs the same load against a control: the shipped module
//! with `proxy_on_delete` removed too (by the same post-link step), whose context map grows by
//! one entry per stream. The measurement must see that growth, and the shipped module must stay
//! well below it. One test in its own test binary, because it points `LOOPBACK_GUARD_WASM` at two
//! modules in turn.

use std::path::Path;
use std::process::Command;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use loopback_guard_integration::envoy::{wasm_module, Envoy, Listener, Settings};
use loopback_guard_integration::load::{self, Plan, Sender};
use loopback_guard_integration::pki::{Credential, Pki, APP_ID};
use loopback_guard_integration::{repo_root, Error, Result};

/// Streams before the first reading (V8 tier-up, allocator and Envoy pools warmed).
const WARM_UP: u64 = 3_000;
/// Streams between the two readings.
const STREAMS: u64 = 50_000;
const REQUESTS_PER_CONNECTION: u64 = 100;
/// A leak of one context per stream must show at least this much (KiB) over `STREAMS`.
const LEAK_VISIBLE_KIB: u64 = 1_024;

/// Envoy's RSS growth (KiB) over `STREAMS` allowed requests with `module`, after a warm-up;
/// an error if any request was not answered 200 by the filter.
fn growth(module: &Path, pki: &Pki, app: &Credential) -> Result<i64> {
    // The only test in this binary: nothing else reads the variable meanwhile.
    std::env::set_var("LOOPBACK_GUARD_WASM", module);
    // Without the allocator's background release, which moves RSS whatever the module does.
    let envoy = Envoy::start(pki, &Settings::with_plugin_config("{}").without_memory_release())
        .map_err(|e| Error::new(format!("starting Envoy with {}: {e:?}", module.display())))?;
    let pid = load::envoy_pid(&envoy)?;
    let url = envoy.url(Listener::Strict, "/");
    let run = |streams: u64| -> Result<()> {
        let plan = Plan {
            senders: vec![Sender::new("app", Some(app), &url)],
            connections: streams / REQUESTS_PER_CONNECTION,
            requests_per_connection: REQUESTS_PER_CONNECTION,
            workers: 2,
            time_limit: Duration::from_secs(300),
        };
        let tally = load::run(&plan, &pki.ca_path(), &AtomicU64::new(0))?;
        if !tally.finished || tally.sender("app").status(200) != streams {
            return Err(Error::new(format!("not {streams} times 200: {tally:?}\n{}", envoy.log())));
        }
        Ok(())
    };
    run(WARM_UP)?;
    let before = load::rss_kib(pid)?;
    run(STREAMS)?;
    let after = load::rss_kib(pid)?;
    // The filter ran on every request: its counter counted them all.
    let allowed = envoy.guard_stats()?.guard_counter("allowed");
    if allowed != Some(WARM_UP + STREAMS) {
        return Err(Error::new(format!("allowed counted {allowed:?}, not {}", WARM_UP + STREAMS)));
    }
    eprintln!("{}: VmRSS {before} KiB -> {after} KiB over {STREAMS} streams", module.display());
    Ok(i64::try_from(after).unwrap_or(i64::MAX) - i64::try_from(before).unwrap_or(0))
}

#[test]
fn envoy_memory_stays_flat_over_many_streams_and_a_module_that_leaks_contexts_shows() {
    let shipped = wasm_module().unwrap();
    let work = tempfile::tempdir().unwrap();
    let control = work.path().join("no_on_delete.wasm");
    let kept: Vec<String> = std::fs::read_to_string(repo_root().join("scripts/wasm-exports.txt"))
        .unwrap()
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#') && *line != "proxy_on_delete")
        .map(str::to_owned)
        .collect();
    let status = Command::new(repo_root().join("scripts/wasm-post-link.sh"))
        .arg(&shipped)
        .arg(&control)
        .args(&kept)
        .status()
        .unwrap();
    assert!(status.success(), "making the control module failed");

    let pki = Pki::generate().unwrap();
    let app = pki.svid("app", APP_ID).unwrap();
    let leaking = growth(&control, &pki, &app).unwrap();
    let flat = growth(&shipped, &pki, &app).unwrap();
    assert!(
        leaking >= LEAK_VISIBLE_KIB as i64,
        "the control module (no proxy_on_delete) grew Envoy by only {leaking} KiB over {STREAMS} \
         streams: this measurement cannot see a context leak"
    );
    assert!(
        flat * 3 <= leaking,
        "the shipped module grew Envoy by {flat} KiB over {STREAMS} streams, the leaking control \
         by {leaking} KiB: contexts are not cleaned up"
    );
}
