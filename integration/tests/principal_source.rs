//! Where the pod's own principal comes from: node metadata (the zero-config default), the
//! TRUST_DOMAIN environment variable, the listener's own certificate, or the configuration.

use loopback_guard_integration::envoy::{Envoy, Settings, Validator};
use loopback_guard_integration::pki::{spiffe_id, Pki, APP_ID};
use loopback_guard_integration::scenario::{all_as_expected, report, run_cases, Case, Expected};

#[test]
fn zero_config_takes_the_principal_from_node_metadata() {
    let pki = Pki::generate().unwrap();
    let app = pki.svid("app", APP_ID).unwrap();
    let same_sa_other_ns_id = spiffe_id("cluster.local", "other", "app");
    let same_sa_other_ns = pki.svid("same-sa-other-ns", &same_sa_other_ns_id).unwrap();

    let envoy = Envoy::start(&pki, &Settings::with_plugin_config("")).unwrap();
    let cases = [
        Case::new("rightful app", Some(&app), Expected::allow("ok", Some(APP_ID)))
            .expecting_principal(APP_ID),
        Case::new(
            "same service account, another namespace",
            Some(&same_sa_other_ns),
            Expected::deny("principal_mismatch", Some(&same_sa_other_ns_id)),
        )
        .expecting_principal(APP_ID),
    ];
    let outcomes = run_cases(&envoy, &pki, &cases).unwrap();
    assert!(all_as_expected(&outcomes), "\n{}", report(&outcomes));
}

#[test]
fn zero_config_follows_node_metadata_to_another_namespace() {
    let pki = Pki::generate().unwrap();
    let app = pki.svid("app", APP_ID).unwrap();
    let moved_id = spiffe_id("cluster.local", "other", "app");
    let moved = pki.svid("moved", &moved_id).unwrap();

    let envoy = Envoy::start(&pki, &Settings::with_plugin_config("").namespace("other")).unwrap();
    let cases = [
        Case::new("app of namespace demo", Some(&app), Expected::deny("principal_mismatch", Some(APP_ID)))
            .expecting_principal(&moved_id),
        Case::new("app of namespace other", Some(&moved), Expected::allow("ok", Some(&moved_id)))
            .expecting_principal(&moved_id),
    ];
    let outcomes = run_cases(&envoy, &pki, &cases).unwrap();
    assert!(all_as_expected(&outcomes), "\n{}", report(&outcomes));
}

#[test]
fn the_trust_domain_comes_from_the_environment_unless_configured() {
    let pki = Pki::generate().unwrap();
    let app = pki.svid("app", APP_ID).unwrap();
    let example_id = spiffe_id("example.org", "demo", "app");
    let example = pki.svid("example", &example_id).unwrap();

    // The listener validates per trust domain: the test CA is example.org's root too here.
    let federated = Validator::SpiffeFederated { trust_domain: "example.org".into(), bundle: pki.ca_path() };
    let from_env = Envoy::start(
        &pki,
        &Settings::with_plugin_config("").trust_domain_env("example.org").validator(federated),
    )
    .unwrap();
    let cases = [
        Case::new("app of cluster.local", Some(&app), Expected::deny("principal_mismatch", Some(APP_ID)))
            .expecting_principal(&example_id),
        Case::new("app of example.org", Some(&example), Expected::allow("ok", Some(&example_id)))
            .expecting_principal(&example_id),
    ];
    let outcomes = run_cases(&from_env, &pki, &cases).unwrap();
    assert!(all_as_expected(&outcomes), "\n{}", report(&outcomes));
    from_env.stop();

    let configured = Envoy::start(
        &pki,
        &Settings::with_plugin_config(r#"{"trust_domain":"cluster.local"}"#).trust_domain_env("example.org"),
    )
    .unwrap();
    let cases = [Case::new("app of cluster.local", Some(&app), Expected::allow("ok", Some(APP_ID)))
        .expecting_principal(APP_ID)];
    let outcomes = run_cases(&configured, &pki, &cases).unwrap();
    assert!(all_as_expected(&outcomes), "\n{}", report(&outcomes));
}

#[test]
fn local_certificate_source_ignores_node_metadata() {
    let pki = Pki::generate().unwrap();
    let app = pki.svid("app", APP_ID).unwrap();
    let metadata_id = spiffe_id("cluster.local", "other", "nobody");
    let metadata_match = pki.svid("metadata-match", &metadata_id).unwrap();

    // Node metadata names another pod; the listener's certificate (server.pem) names APP_ID.
    let envoy = Envoy::start(
        &pki,
        &Settings::with_plugin_config(r#"{"principal_source":"local_certificate"}"#)
            .namespace("other")
            .service_account("nobody"),
    )
    .unwrap();
    let cases = [
        Case::new("rightful app", Some(&app), Expected::allow("ok", Some(APP_ID)))
            .expecting_principal(APP_ID),
        Case::new(
            "the identity node metadata names",
            Some(&metadata_match),
            Expected::deny("principal_mismatch", Some(&metadata_id)),
        )
        .expecting_principal(APP_ID),
    ];
    let outcomes = run_cases(&envoy, &pki, &cases).unwrap();
    assert!(all_as_expected(&outcomes), "\n{}", report(&outcomes));
}

#[test]
fn auto_falls_back_to_the_local_certificate_without_node_metadata() {
    let pki = Pki::generate().unwrap();
    let app = pki.svid("app", APP_ID).unwrap();

    let envoy =
        Envoy::start(&pki, &Settings::with_plugin_config("").namespace("").service_account("")).unwrap();
    let cases = [Case::new("rightful app", Some(&app), Expected::allow("ok", Some(APP_ID)))
        .expecting_principal(APP_ID)];
    let outcomes = run_cases(&envoy, &pki, &cases).unwrap();
    assert!(all_as_expected(&outcomes), "\n{}", report(&outcomes));
}

#[test]
fn a_static_principal_and_allowed_principals_match_exactly() {
    let pki = Pki::generate().unwrap();
    let sidekick_id = spiffe_id("cluster.local", "demo", "sidekick");
    let db_id = spiffe_id("cluster.local", "demo", "db");
    let app = pki.svid("app", APP_ID).unwrap();
    let sidekick = pki.svid("sidekick", &sidekick_id).unwrap();
    let db = pki.svid("db", &db_id).unwrap();
    let below_app_id = format!("{APP_ID}/extra");
    let below_app = pki.svid("below-app", &below_app_id).unwrap();

    let config = format!(
        r#"{{"principal":"{APP_ID}","principal_source":"static","allowed_principals":["{sidekick_id}"]}}"#
    );
    // Node metadata names another pod: a static principal must not look at it.
    let envoy = Envoy::start(&pki, &Settings::with_plugin_config(&config).namespace("other")).unwrap();
    let cases = [
        Case::new("the configured principal", Some(&app), Expected::allow("ok", Some(APP_ID)))
            .expecting_principal(APP_ID),
        Case::new("an allowed principal", Some(&sidekick), Expected::allow("ok", Some(&sidekick_id))),
        Case::new("neither", Some(&db), Expected::deny("principal_mismatch", Some(&db_id))),
        Case::new(
            "a path below the principal (no prefix match)",
            Some(&below_app),
            Expected::deny("principal_mismatch", Some(&below_app_id)),
        ),
    ];
    let outcomes = run_cases(&envoy, &pki, &cases).unwrap();
    assert!(all_as_expected(&outcomes), "\n{}", report(&outcomes));
}
