//! What legitimately differs between Envoy versions, asserted per version. Everything else in
//! the suite expects the same outcome on every version the matrix runs (scripts/test-matrix.sh).
//!
//! Envoy gives Wasm two facts only from some version on (docs/envoy-versions.md):
//! - `connection.peer_certificate` from 1.38: before, the filter takes the client certificate
//!   from the XFCC element this proxy sets, so the listener must set one (SANITIZE_SET);
//! - `connection.peer_certificate_valid` from 1.39: only then can the filter see that Envoy did
//!   not validate the certificate of a resumed TLS session, which is why every shipped listener
//!   turns session resumption off.

use loopback_guard_integration::client::Client;
use loopback_guard_integration::envoy::{envoy_version, Envoy, ForwardClientCert, Listener, Settings};
use loopback_guard_integration::pki::{Pki, APP_ID};
use loopback_guard_integration::scenario::{all_as_expected, report, run_cases, Case, Expected};

#[test]
fn the_certificate_comes_from_the_property_or_from_this_proxys_xfcc_element() {
    let version = envoy_version().unwrap();
    let pki = Pki::generate().unwrap();
    let app = pki.svid("app", APP_ID).unwrap();
    // SANITIZE_SET (the shipped mode): this proxy's element is there for versions that need it.
    // SANITIZE: no element at all, so only the property can give the certificate.
    for (mode, expected) in [
        (ForwardClientCert::SanitizeSet, Expected::allow("ok", Some(APP_ID))),
        (
            ForwardClientCert::Sanitize,
            if version.has_peer_certificate() {
                Expected::allow("ok", Some(APP_ID))
            } else {
                Expected::deny("certificate_unavailable", None)
            },
        ),
    ] {
        let settings = Settings::with_plugin_config("{}").forward_client_cert(mode);
        let envoy = Envoy::start(&pki, &settings).unwrap();
        let cases = [Case::new(&format!("rightful app, {mode}"), Some(&app), expected)];
        let outcomes = run_cases(&envoy, &pki, &cases).unwrap();
        assert!(
            all_as_expected(&outcomes),
            "Envoy {version} ({} path)\n{}",
            version.certificate_path(),
            report(&outcomes)
        );
    }
}

#[test]
fn with_session_resumption_on_resumed_connections_are_denied_from_envoy_1_39() {
    let version = envoy_version().unwrap();
    let pki = Pki::generate().unwrap();
    let app = pki.svid("app", APP_ID).unwrap();
    let envoy = Envoy::start(&pki, &Settings::with_plugin_config("").with_session_resumption()).unwrap();

    // One client, so one TLS session cache; a new connection per request, all but the first
    // resuming the first one's session.
    let client = Client::new(&pki.ca_path(), Some(&app)).unwrap();
    let position = envoy.log_position();
    let tls_before = envoy.listener_tls_stats(Listener::Strict).unwrap();
    let statuses: Vec<u16> =
        (0..3).map(|_| client.get(&envoy.url(Listener::Strict, "/")).unwrap().status).collect();
    let tls_after = envoy.listener_tls_stats(Listener::Strict).unwrap();
    let reasons: Vec<String> =
        envoy.decisions_since(position).iter().map(|line| line.reason().to_owned()).collect();
    let reused =
        tls_after.get("session_reused").unwrap_or(&0) - tls_before.get("session_reused").unwrap_or(&0);

    // Envoy does not validate a resumed session's certificate again (envoyproxy/envoy#21235).
    // From 1.39 it says so (connection.peer_certificate_valid false) and the filter denies;
    // before, nothing tells the filter, which admits the certificate it is shown, as it was
    // validated when the session began.
    let (want_statuses, want_reasons) = if version.has_peer_certificate_valid() {
        (vec![200, 403, 403], vec!["ok", "certificate_unvalidated", "certificate_unvalidated"])
    } else {
        (vec![200, 200, 200], vec!["ok", "ok", "ok"])
    };
    assert_eq!(reused, 2, "Envoy {version}: the client did not resume its session: {tls_after:?}");
    assert_eq!((statuses, reasons), (want_statuses, want_reasons.iter().map(|r| (*r).to_owned()).collect()));
}
