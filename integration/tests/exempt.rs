//! Exempt paths (health probes) pass without any identity check; only exact paths are exempt.

use loopback_guard_integration::envoy::{Envoy, Listener, Settings};
use loopback_guard_integration::pki::{spiffe_id, Pki, APP_ID};
use loopback_guard_integration::scenario::{all_as_expected, report, run_cases, Case, Expected};

#[test]
fn exempt_paths_pass_without_a_principal_match() {
    let pki = Pki::generate().unwrap();
    let rogue_id = spiffe_id("cluster.local", "demo", "db");
    let app = pki.svid("app", APP_ID).unwrap();
    let rogue = pki.svid("rogue", &rogue_id).unwrap();

    let envoy =
        Envoy::start(&pki, &Settings::with_plugin_config(r#"{"exempt_paths":["/healthz"]}"#)).unwrap();
    let cases = [
        Case::new("another service account", Some(&rogue), Expected::allow("exempt", None)).path("/healthz"),
        Case::new("another service account, with a query", Some(&rogue), Expected::allow("exempt", None))
            .path("/healthz?probe=liveness"),
        Case::new("no certificate", None, Expected::allow("exempt", None))
            .path("/healthz")
            .on(Listener::Lenient),
        Case::new(
            "another service account, below the exempt path",
            Some(&rogue),
            Expected::deny("principal_mismatch", Some(&rogue_id)),
        )
        .path("/healthz/more"),
        Case::new(
            "another service account, a longer path",
            Some(&rogue),
            Expected::deny("principal_mismatch", Some(&rogue_id)),
        )
        .path("/healthzz"),
        Case::new(
            "another service account, elsewhere",
            Some(&rogue),
            Expected::deny("principal_mismatch", Some(&rogue_id)),
        )
        .path("/api"),
        Case::new("rightful app, elsewhere", Some(&app), Expected::allow("ok", Some(APP_ID)))
            .path("/api?x=1"),
    ];
    let outcomes = run_cases(&envoy, &pki, &cases).unwrap();
    assert!(all_as_expected(&outcomes), "\n{}", report(&outcomes));
}
