//! X509-SVID validation is per trust domain (SPIFFE X509-SVID, section 5): the shipped strict
//! listener validates with Envoy's SPIFFE validator, each trust domain against its own bundle.
//! A root trusted for another (federated) trust domain can issue certificates for that domain,
//! but not one naming the pod's own identity: Envoy refuses it in the handshake.

use std::fs;

use loopback_guard_integration::envoy::{Envoy, Settings, Validator};
use loopback_guard_integration::pki::{spiffe_id, Authority, CertSpec, Pki, APP_ID};
use loopback_guard_integration::scenario::{all_as_expected, report, run_cases, Case, Expected};

#[test]
fn a_second_roots_leaf_with_the_pods_id_is_refused() {
    let pki = Pki::generate().unwrap();
    let app = pki.svid("app", APP_ID).unwrap();
    let partner_ca = Authority::generate("example.org root").unwrap();
    let bundle = pki.dir().join("example-org-bundle.pem");
    fs::write(&bundle, partner_ca.cert_pem()).unwrap();
    let partner_id = spiffe_id("example.org", "demo", "app");
    let partner = pki.issue_by(&partner_ca, "partner", &CertSpec::svid(&partner_id)).unwrap();
    let impostor = pki.issue_by(&partner_ca, "impostor", &CertSpec::svid(APP_ID)).unwrap();

    let federated = Validator::SpiffeFederated { trust_domain: "example.org".into(), bundle };
    let envoy = Envoy::start(&pki, &Settings::with_plugin_config("{}").validator(federated)).unwrap();
    let cases = [
        Case::new("rightful app", Some(&app), Expected::allow("ok", Some(APP_ID))),
        // The second root is trusted, for its own trust domain: its leaf reaches the filter.
        Case::new(
            "example.org workload",
            Some(&partner),
            Expected::deny("principal_mismatch", Some(&partner_id)),
        ),
        // The same root, the pod's own SPIFFE ID: not its trust domain, refused by Envoy.
        Case::new("second root's leaf with the pod's ID", Some(&impostor), Expected::HandshakeRefused),
    ];
    let outcomes = run_cases(&envoy, &pki, &cases).unwrap();
    assert!(all_as_expected(&outcomes), "\n{}", report(&outcomes));
    let refused = &outcomes[2].observation.tls_counters;
    assert_eq!(refused.get("fail_verify_error"), Some(&1), "{refused:?}");
}
