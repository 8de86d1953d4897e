//! Every configuration the tests, the demo and the README use passes `envoy --mode validate`
//! (which also loads the module and configures it), and a bad one fails it.

use loopback_guard_integration::envoy::{validate, Settings};
use loopback_guard_integration::pki::{Pki, APP_ID};

#[test]
fn every_configuration_passes_envoy_validate() {
    let pki = Pki::generate().unwrap();
    let full = format!(
        r#"{{"mode":"enforce","principal":"{APP_ID}","principal_source":"static","trust_domain":"cluster.local","allowed_principals":["spiffe://cluster.local/ns/demo/sa/sidekick"],"exempt_paths":["/healthz","/ready"],"require_loopback":true,"log_allowed":"all","certificate_cache_size":64}}"#
    );
    let settings = [
        Settings::with_plugin_config(""),
        Settings::with_plugin_config("{}"),
        Settings::with_plugin_config(r#"{"mode":"audit","log_allowed":"none"}"#),
        Settings::with_plugin_config(r#"{"exempt_paths":["/healthz"]}"#),
        // A quote inside the JSON must survive the single-quoted YAML string.
        Settings::with_plugin_config(r#"{"exempt_paths":["/it's-fine"]}"#),
        Settings::with_plugin_config(r#"{"principal_source":"local_certificate"}"#),
        Settings::with_plugin_config(r#"{"principal_source":"node_metadata"}"#),
        Settings::with_plugin_config(r#"{"trust_domain":"example.org"}"#).trust_domain_env("cluster.local"),
        Settings::with_plugin_config("").namespace("other").service_account("nobody"),
        Settings::with_plugin_config(&full),
    ];
    // Each validation starts a V8 VM: run them side by side.
    let pki = &pki;
    let failures: Vec<String> = std::thread::scope(|scope| {
        let handles: Vec<_> = settings
            .iter()
            .map(|settings| scope.spawn(move || (settings, validate(pki, settings).unwrap())))
            .collect();
        handles
            .into_iter()
            .map(|handle| handle.join().unwrap())
            .filter(|(_, validation)| !validation.passed)
            .map(|(settings, validation)| format!("{settings:?}:\n{}", validation.output))
            .collect()
    });
    assert!(failures.is_empty(), "\n{}", failures.join("\n\n"));
}

#[test]
fn envoy_validate_rejects_a_bad_plugin_configuration() {
    let pki = Pki::generate().unwrap();
    let settings = Settings::with_plugin_config(r#"{"allowed_principals":["not-a-spiffe-id"]}"#);
    let validation = validate(&pki, &settings).unwrap();
    assert!(!validation.passed, "{}", validation.output);
    assert!(validation.output.contains("allowed_principals[0]"), "{}", validation.output);
}
