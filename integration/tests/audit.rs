//! Audit mode never denies: a rogue reaches the backend, and the filter logs `would_deny`.

use loopback_guard_integration::envoy::{Envoy, Listener, Settings};
use loopback_guard_integration::pki::{spiffe_id, Pki, APP_ID};
use loopback_guard_integration::scenario::{all_as_expected, report, run_cases, Case, Expected};

#[test]
fn audit_mode_lets_a_rogue_through_with_would_deny() {
    let pki = Pki::generate().unwrap();
    let rogue_id = spiffe_id("cluster.local", "demo", "db");
    let app = pki.svid("app", APP_ID).unwrap();
    let rogue = pki.svid("rogue", &rogue_id).unwrap();

    let envoy =
        Envoy::start(&pki, &Settings::with_plugin_config(r#"{"mode":"audit","filter_state":true}"#)).unwrap();
    let cases = [
        Case::new("rightful app", Some(&app), Expected::allow("ok", Some(APP_ID))),
        Case::new(
            "another service account",
            Some(&rogue),
            Expected::would_deny("principal_mismatch", Some(&rogue_id)),
        ),
        Case::new("no certificate", None, Expected::would_deny("no_client_certificate", None))
            .on(Listener::Lenient),
        // Audit mode relaxes the filter, not the listener's TLS.
        Case::new("no certificate", None, Expected::HandshakeRefused),
    ];
    let outcomes = run_cases(&envoy, &pki, &cases).unwrap();
    assert!(all_as_expected(&outcomes), "\n{}", report(&outcomes));
}
