//! The peer address the filter checks and logs is the TCP peer's, never one a header names.
//!
//! Without `use_remote_address`, Envoy's connection manager takes the downstream address from
//! the last `x-forwarded-for` entry (with port 0) and every filter sees that instead. The
//! shipped listeners set `use_remote_address: true`, so the app's own `x-forwarded-for` changes
//! nothing; on a listener that leaves it out, the filter refuses an address with port 0
//! (`source_address_forwarded`) instead of trusting it.

use loopback_guard_integration::envoy::{Envoy, Settings};
use loopback_guard_integration::pki::{Pki, APP_ID};
use loopback_guard_integration::scenario::{all_as_expected, report, run_cases, Case, Expected};

#[test]
fn on_the_shipped_listener_forwarded_for_headers_change_nothing() {
    let pki = Pki::generate().unwrap();
    let app = pki.svid("app", APP_ID).unwrap();
    let envoy = Envoy::start(&pki, &Settings::with_plugin_config(r#"{"log_allowed":"all"}"#)).unwrap();
    let cases = [
        Case::new("app behind a proxy of its own", Some(&app), Expected::allow("ok", Some(APP_ID)))
            .header("x-forwarded-for", "10.0.0.5"),
        Case::new("app naming loopback last", Some(&app), Expected::allow("ok", Some(APP_ID)))
            .header("x-forwarded-for", "1.2.3.4, 127.0.0.1"),
        Case::new("app naming a remote peer last", Some(&app), Expected::allow("ok", Some(APP_ID)))
            .header("x-forwarded-for", "127.0.0.1, 203.0.113.9"),
    ];
    let outcomes = run_cases(&envoy, &pki, &cases).unwrap();
    assert!(all_as_expected(&outcomes), "\n{}", report(&outcomes));
    // Each line names the real peer: loopback, with the client's own port.
    for outcome in &outcomes {
        let address =
            outcome.observation.decision().and_then(|line| line.field("source_address")).unwrap_or_default();
        assert!(
            address.starts_with("127.0.0.1:") && !address.ends_with(":0"),
            "{}: source_address {address:?}",
            outcome.case.name
        );
    }
}

#[test]
fn without_use_remote_address_a_header_address_is_refused_not_trusted() {
    let pki = Pki::generate().unwrap();
    let app = pki.svid("app", APP_ID).unwrap();
    let settings = Settings::with_plugin_config("").without_use_remote_address();
    let envoy = Envoy::start(&pki, &settings).unwrap();
    let cases = [
        // The header claims loopback: on a listener that believes it, that would satisfy
        // require_loopback from anywhere.
        Case::new("a loopback claim", Some(&app), Expected::deny("source_address_forwarded", None))
            .header("x-forwarded-for", "1.2.3.4, 127.0.0.1"),
        Case::new("a remote claim", Some(&app), Expected::deny("source_address_forwarded", None))
            .header("x-forwarded-for", "10.0.0.5"),
        // No header: the connection manager keeps the TCP peer.
        Case::new("no header", Some(&app), Expected::allow("ok", Some(APP_ID))),
    ];
    let outcomes = run_cases(&envoy, &pki, &cases).unwrap();
    assert!(all_as_expected(&outcomes), "\n{}", report(&outcomes));
    let line = outcomes[0].observation.decision().unwrap();
    assert_eq!(line.field("source_address"), Some("127.0.0.1:0"));
    assert!(line.field("detail").unwrap_or_default().contains("use_remote_address"), "{}", line.raw_json);
}
