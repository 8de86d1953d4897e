//! Enforce mode, the pod's principal from node metadata: one Envoy, one row per kind of client.
//! Certificates of every wrong shape are in `battery.rs`.

use loopback_guard_integration::envoy::{Envoy, Listener, Settings};
use loopback_guard_integration::pki::{spiffe_id, Pki, APP_ID};
use loopback_guard_integration::scenario::{all_as_expected, report, run_cases, Case, Expected};

#[test]
fn enforce_mode_admits_only_the_pods_own_svid() {
    let pki = Pki::generate().unwrap();
    let other_sa_id = spiffe_id("cluster.local", "demo", "db");
    let other_td_id = spiffe_id("example.org", "demo", "app");

    let app = pki.svid("app", APP_ID).unwrap();
    let other_sa = pki.svid("other-sa", &other_sa_id).unwrap();
    let other_td = pki.svid("other-td", &other_td_id).unwrap();

    let envoy = Envoy::start(&pki, &Settings::with_plugin_config(r#"{"filter_state":true}"#)).unwrap();
    let cases = [
        Case::new("rightful app", Some(&app), Expected::allow("ok", Some(APP_ID))),
        Case::new("rightful app, again", Some(&app), Expected::allow("ok", Some(APP_ID))),
        Case::new(
            "another service account, same CA",
            Some(&other_sa),
            Expected::deny("principal_mismatch", Some(&other_sa_id)),
        ),
        // The listener validates per trust domain: the test CA is example.org's root nowhere.
        Case::new("another trust domain, same CA", Some(&other_td), Expected::HandshakeRefused),
        Case::new("no certificate", None, Expected::deny("no_client_certificate", None))
            .on(Listener::Lenient),
        Case::new("rightful app", Some(&app), Expected::allow("ok", Some(APP_ID))).on(Listener::Lenient),
        // The strict listener's TLS refuses it before the filter runs.
        Case::new("no certificate", None, Expected::HandshakeRefused),
    ];
    // Node metadata names the pod, so every decision knows whom it expected.
    let cases = cases.map(|case| match case.expected {
        Expected::Decision { .. } => case.expecting_principal(APP_ID),
        Expected::HandshakeRefused | Expected::EnvoyReply(_) => case,
    });
    let outcomes = run_cases(&envoy, &pki, &cases).unwrap();
    assert!(all_as_expected(&outcomes), "\n{}", report(&outcomes));
}
