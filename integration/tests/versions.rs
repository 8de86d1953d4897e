//! What legitimately differs between Envoy versions, asserted per version. Everything else in
//! the suite expects the same outcome on every version the matrix runs (scripts/test-matrix.sh).
//!
//! Envoy gives Wasm two facts only from some version on (docs/envoy-versions.md):
//! - `connection.peer_certificate` from 1.38: before, the filter takes the client certificate
//!   from the XFCC element this proxy sets, so the listener must set one (SANITIZE_SET);
//! - `connection.peer_certificate_valid` from 1.39: only then can the filter see that Envoy did
//!   not validate a certificate (`resumption.rs` shows both sides, with resumption on).

use loopback_guard_integration::envoy::{envoy_version, Envoy, ForwardClientCert, Settings};
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
