//! A configuration the filter cannot use makes Envoy refuse to start, and the one error line the
//! filter logs names the field.

use loopback_guard_integration::envoy::{Envoy, Settings, StartError};
use loopback_guard_integration::pki::Pki;

/// (case, plugin configuration, the field the error line must name)
const CASES: &[(&str, &str, &str)] = &[
    (
        "an allowed principal that is not a SPIFFE ID",
        r#"{"allowed_principals":["spiffe://cluster.local/ns/demo/sa/app","not-a-spiffe-id"]}"#,
        "allowed_principals[1]",
    ),
    ("a trust-domain-only principal", r#"{"principal":"spiffe://cluster.local"}"#, "principal"),
    ("an unknown mode", r#"{"mode":"block"}"#, "mode"),
    ("an unknown field", r#"{"allow_everyone":true}"#, "allow_everyone"),
    ("a wrong type", r#"{"require_loopback":"yes"}"#, "require_loopback"),
    ("a list given as a string", r#"{"exempt_paths":"/healthz"}"#, "exempt_paths"),
    ("not JSON", "enforce", "configuration"),
];

/// What is wrong with how Envoy handled `config`, if anything.
fn problem(pki: &Pki, name: &str, config: &str, field: &str) -> Option<String> {
    match Envoy::start(pki, &Settings::with_plugin_config(config)) {
        Ok(envoy) => {
            envoy.stop();
            Some(format!("{name}: Envoy started with {config}"))
        }
        Err(StartError::Exited { log, .. }) => {
            let errors: Vec<&str> = log
                .lines()
                .filter(|line| line.contains("[error][wasm]") && line.contains("invalid configuration"))
                .collect();
            match errors.as_slice() {
                [line] if line.contains(&format!("{field}:")) => None,
                _ => Some(format!("{name}: expected one error line naming `{field}`, got {errors:#?}")),
            }
        }
        Err(other) => Some(format!("{name}: {other}")),
    }
}

#[test]
fn a_bad_configuration_stops_envoy_and_names_the_field() {
    let pki = Pki::generate().unwrap();
    let pki = &pki;
    let problems: Vec<String> = std::thread::scope(|scope| {
        let handles: Vec<_> = CASES
            .iter()
            .map(|(name, config, field)| scope.spawn(move || problem(pki, name, config, field)))
            .collect();
        handles.into_iter().filter_map(|handle| handle.join().unwrap()).collect()
    });
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}
