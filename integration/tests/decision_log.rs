//! The decision log stays bounded whatever a process without a certificate sends: every field
//! is capped with a visible marker, and denial lines are limited per worker (the first per
//! connection and reason, then `log_lines_per_second`), with a summary of what was held back.
//! The counters still count every request.

use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use loopback_guard_integration::decision_log::held_back_summaries;
use loopback_guard_integration::envoy::{Envoy, Listener, Settings};
use loopback_guard_integration::load::{self, Plan, Sender};
use loopback_guard_integration::pki::Pki;
use loopback_guard_integration::scenario::{observe_with_headers, Expected};

const MARKER: &str = "…[truncated: ";

#[test]
fn a_20_kb_path_and_request_id_give_a_bounded_line() {
    let pki = Pki::generate().unwrap();
    let envoy = Envoy::start(&pki, &Settings::with_plugin_config("")).unwrap();
    let path = format!("/{}", "p".repeat(20 * 1024));
    let request_id = "r".repeat(20 * 1024);
    let headers = [("x-request-id".to_owned(), request_id.clone().into_bytes())];
    let observation = observe_with_headers(&envoy, &pki, Listener::Lenient, None, &path, &headers).unwrap();

    assert_eq!(observation.status_text(), "403");
    assert_eq!(observation.counters, [("denied.no_client_certificate".to_owned(), 1)].into());
    let line = observation.decision().expect("one decision line");
    // Default cap: 256 bytes per field, plus the marker with the original length.
    assert!(line.raw_json.len() < 2048, "a {} byte line: {}", line.raw_json.len(), line.raw_json);
    let logged_path = line.path().unwrap_or_default();
    assert_eq!(logged_path, format!("{}{MARKER}{} bytes]", &path[..256], path.len()));
    // Envoy passes the client's request id on (or replaces it): either way it is bounded.
    let logged_id = line.field("request_id").unwrap_or_default();
    assert!(logged_id.len() <= 256 + 40, "{logged_id}");
    if logged_id.starts_with('r') {
        assert_eq!(logged_id, format!("{}{MARKER}{} bytes]", &request_id[..256], request_id.len()));
    }
    let expected = Expected::deny("no_client_certificate", None);
    assert_eq!(line.reason(), "no_client_certificate");
    assert_eq!(expected.log_level(), Some(line.level.as_str()));
}

#[test]
fn a_denial_flood_keeps_the_log_rate_bounded_and_the_counters_exact() {
    let pki = Pki::generate().unwrap();
    let config = r#"{"log_lines_per_second":5,"log_summary_seconds":1}"#;
    let envoy = Envoy::start(&pki, &Settings::with_plugin_config(config)).unwrap();
    let before = envoy.guard_stats().unwrap();
    let position = envoy.log_position();

    // Processes without a certificate, each connection sending several requests.
    let plan = Plan {
        senders: vec![Sender::new("no certificate", None, &envoy.url(Listener::Lenient, "/flood"))],
        connections: 200,
        requests_per_connection: 5,
        workers: 4,
        time_limit: Duration::from_secs(120),
    };
    let started = Instant::now();
    let tally = load::run(&plan, &pki.ca_path(), &AtomicU64::new(0)).unwrap();
    let elapsed = started.elapsed();
    assert!(tally.finished, "the flood did not finish: {tally:?}");
    assert_eq!(tally.sender("no certificate").status(403), 1000, "{tally:?}");

    // Every request counted, across both workers.
    let changes = envoy.guard_stats().unwrap().guard_changes_since(&before);
    assert_eq!(changes.get("denied.no_client_certificate"), Some(&1000), "{changes:?}");
    let lines = envoy.decisions_since(position).len() as u64;
    let held_back = changes.get("log_held_back").copied().unwrap_or(0) as u64;
    assert_eq!(lines + held_back, 1000, "every denial is either a line or held back: {changes:?}");
    // Per worker: a burst of one second's worth, then the rate.
    let bound = 2 * 5 * (elapsed.as_secs() + 2);
    assert!(lines <= bound, "{lines} lines in {elapsed:?} (at most {bound})");
    assert!(lines >= 5, "the first denials are logged: {lines}");

    // The summaries (one per worker and second at most) add up to what was held back.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut total = 0;
    while Instant::now() < deadline {
        let log = envoy.log();
        let summaries = held_back_summaries(log.get(..).unwrap_or_default());
        total = summaries
            .iter()
            .map(|s| s["decision_lines_held_back"]["no_client_certificate"].as_u64().unwrap_or(0))
            .sum();
        if total == held_back {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(total, held_back, "the summaries report every line held back");
}
