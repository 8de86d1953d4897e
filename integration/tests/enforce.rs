//! Enforce mode, the pod's principal from node metadata: one Envoy, one row per kind of client.

use loopback_guard_integration::envoy::{Envoy, Listener, Settings};
use loopback_guard_integration::pki::{spiffe_id, Authority, CertSpec, KeyUsagePurpose, Pki, APP_ID};
use loopback_guard_integration::scenario::{all_as_expected, report, run_cases, Case, Expected};

#[test]
fn enforce_mode_admits_only_the_pods_own_svid() {
    let pki = Pki::generate().unwrap();
    let other_sa_id = spiffe_id("cluster.local", "demo", "db");
    let other_td_id = spiffe_id("example.org", "demo", "app");

    let app = pki.svid("app", APP_ID).unwrap();
    let other_sa = pki.svid("other-sa", &other_sa_id).unwrap();
    let other_td = pki.svid("other-td", &other_td_id).unwrap();
    let two_uris =
        pki.issue("two-uris", &CertSpec::svid(APP_ID).with_uri_sans([APP_ID, &other_sa_id])).unwrap();
    let no_uri = pki
        .issue(
            "no-uri",
            &CertSpec::svid(APP_ID).with_uri_sans(Vec::<String>::new()).with_dns_sans(["app.demo.svc"]),
        )
        .unwrap();
    let not_spiffe =
        pki.issue("not-spiffe", &CertSpec::svid(APP_ID).with_uri_sans(["https://app.demo.svc/"])).unwrap();
    let uppercase_td = pki
        .issue(
            "uppercase-td",
            &CertSpec::svid(APP_ID).with_uri_sans(["spiffe://CLUSTER.local/ns/demo/sa/app"]),
        )
        .unwrap();
    let ca_leaf = pki.issue("ca-leaf", &CertSpec::svid(APP_ID).as_ca()).unwrap();
    let cert_signer = pki
        .issue(
            "cert-signer",
            &CertSpec::svid(APP_ID)
                .with_key_usages([KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyCertSign]),
        )
        .unwrap();
    let untrusted_ca = Authority::generate("untrusted CA").unwrap();
    let untrusted = pki.issue_by(&untrusted_ca, "untrusted", &CertSpec::svid(APP_ID)).unwrap();

    let envoy = Envoy::start(&pki, &Settings::with_plugin_config("{}")).unwrap();
    // A certificate that is not an X509-SVID has no peer principal in the log, even when its
    // URI SAN would be a valid SPIFFE ID (the CA leaf): only an SVID names a principal.
    let cases = [
        Case::new("rightful app", Some(&app), Expected::allow("ok", Some(APP_ID))),
        Case::new("rightful app, again", Some(&app), Expected::allow("ok", Some(APP_ID))),
        Case::new(
            "another service account, same CA",
            Some(&other_sa),
            Expected::deny("principal_mismatch", Some(&other_sa_id)),
        ),
        Case::new(
            "another trust domain, same CA",
            Some(&other_td),
            Expected::deny("principal_mismatch", Some(&other_td_id)),
        ),
        Case::new("two URI SANs", Some(&two_uris), Expected::deny("svid_uri_san_count", None)),
        Case::new("no URI SAN", Some(&no_uri), Expected::deny("svid_uri_san_count", None)),
        Case::new("URI SAN not a SPIFFE ID", Some(&not_spiffe), Expected::deny("svid_bad_spiffe_id", None)),
        Case::new("uppercase trust domain", Some(&uppercase_td), Expected::deny("svid_bad_spiffe_id", None)),
        Case::new("CA certificate as leaf", Some(&ca_leaf), Expected::deny("svid_not_leaf", None)),
        Case::new("leaf with keyCertSign", Some(&cert_signer), Expected::deny("svid_not_leaf", None)),
        Case::new("no certificate", None, Expected::deny("no_client_certificate", None))
            .on(Listener::Lenient),
        Case::new("rightful app", Some(&app), Expected::allow("ok", Some(APP_ID))).on(Listener::Lenient),
        // The strict listener's TLS refuses these before the filter runs.
        Case::new("no certificate", None, Expected::HandshakeRefused),
        Case::new("untrusted CA", Some(&untrusted), Expected::HandshakeRefused),
    ];
    // Node metadata names the pod, so every decision knows whom it expected.
    let cases = cases.map(|case| match case.expected {
        Expected::Decision { .. } => case.expecting_principal(APP_ID),
        Expected::HandshakeRefused => case,
    });
    let outcomes = run_cases(&envoy, &pki, &cases).unwrap();
    assert!(all_as_expected(&outcomes), "\n{}", report(&outcomes));
}
