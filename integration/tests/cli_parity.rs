//! `loopback-guard check` against the real thing: every certificate and configuration the
//! Envoy tests use (battery.rs, enforce.rs, exempt.rs, audit.rs, principal_source.rs) is sent
//! to a real Envoy running the built module, and the same request is described to the command.
//! Its verdict and reason must be Envoy's, and the decision line it prints must name the same
//! peer, expected principal, certificate digest and path. A certificate Envoy's TLS refuses must
//! be `handshake_refused` for the command too (it is given the listener's CA with `--ca`).
//! Bad configurations: `config validate` must print the error line Envoy's log shows.

// Test helpers may unwrap, like the tests (clippy.toml allows it in test code only).
#![cfg(test)]

use std::fs;
use std::path::Path;

use loopback_guard_integration::command::loopback_guard;
use loopback_guard_integration::envoy::{Envoy, Listener, Settings, StartError, Validator};
use loopback_guard_integration::pki::{
    spiffe_id, Authority, CertSpec, Credential, KeyUsagePurpose, Pki, APP_ID,
};
use loopback_guard_integration::scenario::{report, run_cases, Case, Expected, Outcome};
use serde_json::Value;
use time::{Duration, OffsetDateTime};

/// The certificates of battery.rs, every way an X509-SVID can be wrong plus the rightful one,
/// with what battery.rs expects of each (checked against Envoy here too).
fn battery(pki: &Pki) -> Vec<Case> {
    use Expected as E;
    let db_id = spiffe_id("cluster.local", "demo", "db");
    let now = OffsetDateTime::now_utc();
    let svid = || CertSpec::svid(APP_ID);
    let uri = |uri: &str| svid().with_uri_sans([uri]);
    let raw = |bytes: &[u8]| svid().with_raw_uri_sans([bytes.to_vec()]);
    let long_id = |len: usize| {
        let prefix = "spiffe://cluster.local/ns/demo/sa/";
        format!("{prefix}{}", "a".repeat(len - prefix.len()))
    };
    let count = || E::deny("svid_uri_san_count", None);
    let bad = || E::deny("svid_bad_spiffe_id", None);
    let not_leaf = || E::deny("svid_not_leaf", None);
    let mismatch = |id: &str| E::deny("principal_mismatch", Some(id));
    let (extended, look_alike, long) = (format!("{APP_ID}/extra"), format!("{APP_ID}x"), long_id(2048));
    // (name, certificate, issued by another CA, expected)
    let rows: Vec<(&str, CertSpec, bool, Expected)> = vec![
        ("rightful app", svid(), false, E::allow("ok", Some(APP_ID))),
        ("two URI SANs, rightful first", svid().with_uri_sans([APP_ID, &db_id]), false, count()),
        ("two URI SANs, rightful second", svid().with_uri_sans([&db_id, APP_ID]), false, count()),
        ("the rightful ID twice", svid().with_uri_sans([APP_ID, APP_ID]), false, count()),
        ("no SAN", svid().with_uri_sans(Vec::<String>::new()), false, count()),
        (
            "DNS SAN only",
            svid().with_uri_sans(Vec::<String>::new()).with_dns_sans(["app.demo.svc"]),
            false,
            count(),
        ),
        ("https URI", uri("https://cluster.local/ns/demo/sa/app"), false, bad()),
        ("urn URI", uri("urn:spiffe:cluster.local:ns:demo:sa:app"), false, bad()),
        ("empty URI", uri(""), false, bad()),
        ("trust domain only", uri("spiffe://cluster.local"), false, bad()),
        ("uppercase trust domain", uri("spiffe://CLUSTER.local/ns/demo/sa/app"), false, bad()),
        ("uppercase scheme", uri("SPIFFE://cluster.local/ns/demo/sa/app"), false, bad()),
        ("trailing slash", uri("spiffe://cluster.local/ns/demo/sa/app/"), false, bad()),
        ("empty segment", uri("spiffe://cluster.local/ns/demo//sa/app"), false, bad()),
        ("dot segment", uri("spiffe://cluster.local/ns/demo/./sa/app"), false, bad()),
        ("dot-dot segment", uri("spiffe://cluster.local/ns/demo/sa/x/../app"), false, bad()),
        ("percent-encoded character", uri("spiffe://cluster.local/ns/demo/sa/%61pp"), false, bad()),
        ("percent-encoded slash", uri("spiffe://cluster.local/ns/demo%2Fsa/app"), false, bad()),
        ("query", uri("spiffe://cluster.local/ns/demo/sa/app?x=1"), false, bad()),
        ("empty query", uri("spiffe://cluster.local/ns/demo/sa/app?"), false, bad()),
        ("fragment", uri("spiffe://cluster.local/ns/demo/sa/app#f"), false, bad()),
        ("port", uri("spiffe://cluster.local:443/ns/demo/sa/app"), false, bad()),
        ("userinfo", uri("spiffe://app@cluster.local/ns/demo/sa/app"), false, bad()),
        ("space", uri("spiffe://cluster.local/ns/demo/sa/app x"), false, bad()),
        ("2049-byte ID", uri(&long_id(2049)), false, bad()),
        ("non-ASCII, UTF-8", raw("spiffe://cluster.local/ns/demo/sa/app\u{e9}".as_bytes()), false, bad()),
        ("non-ASCII, Latin-1", raw(b"spiffe://cluster.local/ns/demo/sa/app\xe9"), false, bad()),
        (
            "non-ASCII trust domain",
            raw("spiffe://cl\u{fc}ster.local/ns/demo/sa/app".as_bytes()),
            false,
            bad(),
        ),
        ("NUL after the rightful ID", raw(b"spiffe://cluster.local/ns/demo/sa/app\0.evil"), false, bad()),
        ("a path extending the rightful ID", uri(&extended), false, mismatch(&extended)),
        ("a prefix look-alike", uri(&look_alike), false, mismatch(&look_alike)),
        ("2048-byte ID", uri(&long), false, mismatch(&long)),
        ("basicConstraints CA:TRUE", svid().as_ca(), false, not_leaf()),
        (
            "keyCertSign",
            svid().with_key_usages([KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyCertSign]),
            false,
            not_leaf(),
        ),
        (
            "cRLSign",
            svid().with_key_usages([KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::CrlSign]),
            false,
            not_leaf(),
        ),
        ("another CA", svid(), true, E::HandshakeRefused),
        (
            "expired",
            svid().valid_between(now - Duration::days(2), now - Duration::days(1)),
            false,
            E::HandshakeRefused,
        ),
        (
            "not yet valid",
            svid().valid_between(now + Duration::days(1), now + Duration::days(2)),
            false,
            E::HandshakeRefused,
        ),
    ];
    let other_ca = Authority::generate("another CA").unwrap();
    rows.into_iter()
        .enumerate()
        .map(|(i, (name, spec, other, expected))| {
            let file = format!("parity-{i:02}");
            let credential =
                if other { pki.issue_by(&other_ca, &file, &spec) } else { pki.issue(&file, &spec) };
            let credential = credential.unwrap_or_else(|e| panic!("{name}: {e}"));
            Case::new(name, Some(&credential), expected)
        })
        .collect()
}

/// The `check` arguments that describe `case` on the Envoy of `settings` to the command.
fn check_args(
    pki: &Pki,
    settings: &Settings,
    case: &Case,
    outcome: &Outcome,
    config_dir: &Path,
) -> Vec<String> {
    let mut args: Vec<String> = vec!["check".into(), "--output".into(), "json".into()];
    match &case.identity {
        Some(credential) => args.extend(["--cert".into(), credential.cert_path.display().to_string()]),
        None => args.push("--no-cert".into()),
    }
    // The listener trusts ca.pem and serves server.pem, whose URI SAN is the pod's ID.
    args.extend(["--ca".into(), pki.ca_path().display().to_string(), "--principal".into(), APP_ID.into()]);
    if !settings.plugin_config.is_empty() {
        let file = config_dir.join("plugin.json");
        fs::write(&file, &settings.plugin_config).unwrap();
        args.extend(["--config".into(), file.display().to_string()]);
    }
    // Empty node metadata is no node metadata, for the filter as for the command.
    if !settings.namespace.is_empty() && !settings.service_account.is_empty() {
        args.extend(["--namespace".into(), settings.namespace.clone()]);
        args.extend(["--service-account".into(), settings.service_account.clone()]);
    }
    if let Some(trust_domain) = &settings.trust_domain_env {
        args.extend(["--trust-domain".into(), trust_domain.clone()]);
    }
    args.extend(["--path".into(), case.path.clone()]);
    if let Some(source) = outcome.observation.decision().and_then(|line| line.field("source_address")) {
        args.extend(["--source".into(), source.to_owned()]);
    }
    args
}

/// Every difference between what Envoy did and what the command says, for one case.
fn differences(pki: &Pki, settings: &Settings, outcome: &Outcome, config_dir: &Path) -> Vec<String> {
    let case = &outcome.case;
    let args = check_args(pki, settings, case, outcome, config_dir);
    let output = loopback_guard(&args);
    let name = &case.name;
    let Ok(report) = serde_json::from_str::<Value>(&output.stdout) else {
        return vec![format!(
            "{name}: the command said {:?} {:?} (exit {})",
            output.stdout, output.stderr, output.code
        )];
    };
    let said = |field: &str| report.get(field).and_then(Value::as_str).map(str::to_owned);
    let (verdict, reason) = (said("verdict"), said("reason"));
    let mut problems = Vec::new();
    match (outcome.observation.decision(), &outcome.observation.reply) {
        (Some(line), _) => {
            let envoy = (Some(line.decision().to_owned()), Some(line.reason().to_owned()));
            if (verdict.clone(), reason.clone()) != envoy {
                problems
                    .push(format!("{name}: Envoy decided {envoy:?}, the command {:?}", (verdict, reason)));
            }
            let printed = said("decision_line").and_then(|line| serde_json::from_str::<Value>(&line).ok());
            for field in [
                "decision",
                "reason",
                "peer_principal",
                "expected_principal",
                "cert_sha256",
                "path",
                "source_address",
            ] {
                let command = printed.as_ref().and_then(|p| p.get(field)).cloned().unwrap_or(Value::Null);
                let filter = line.json.get(field).cloned().unwrap_or(Value::Null);
                if command != filter {
                    problems.push(format!(
                        "{name}: decision line {field}: Envoy {filter}, the command {command}"
                    ));
                }
            }
            let want_code = if line.decision() == "allow" { 0 } else { 1 };
            if output.code != want_code {
                problems.push(format!("{name}: exit status {}, expected {want_code}", output.code));
            }
        }
        (None, Err(_)) if case.identity.is_some() => {
            if verdict.as_deref() != Some("handshake_refused") || output.code != 1 {
                problems.push(format!(
                    "{name}: Envoy's TLS refused the certificate; the command said {verdict:?} {reason:?} (exit {})",
                    output.code
                ));
            }
        }
        // A listener that requires a certificate refuses a client without one; `--no-cert`
        // describes the listener that lets it through to the filter, which denies it.
        (None, Err(_)) => {
            if output.code != 1 || reason.as_deref() != Some("no_client_certificate") {
                problems.push(format!("{name}: no certificate, the command said {verdict:?} {reason:?}"));
            }
        }
        (None, Ok(reply)) => {
            problems.push(format!("{name}: Envoy answered {} without a decision", reply.status))
        }
    }
    problems
}

/// Runs `cases` on an Envoy with `settings`, and each through the command; returns the rows
/// compared and every problem. The listener validates the chain only (as Istio's ROOTCA does),
/// which is what `check --ca` models: every certificate the CA signed reaches the filter.
fn compare(pki: &Pki, settings: &Settings, cases: &[Case]) -> (usize, Vec<String>) {
    let config_dir = tempfile::tempdir().unwrap();
    let settings = &settings.clone().validator(Validator::ChainOnly);
    let envoy = Envoy::start(pki, settings).unwrap();
    let outcomes = run_cases(&envoy, pki, cases).unwrap();
    envoy.stop();
    let mut problems: Vec<String> = outcomes
        .iter()
        .filter(|outcome| !outcome.as_expected())
        .map(|outcome| {
            format!("{}: Envoy not as its test expects:\n{}", outcome.case.name, report(&outcomes))
        })
        .take(1)
        .collect();
    for outcome in &outcomes {
        problems.extend(differences(pki, settings, outcome, config_dir.path()));
    }
    (outcomes.len(), problems)
}

fn assert_parity(results: Vec<(usize, Vec<String>)>) {
    let compared: usize = results.iter().map(|(n, _)| n).sum();
    let problems: Vec<String> = results.into_iter().flat_map(|(_, p)| p).collect();
    assert!(problems.is_empty(), "{} of {compared} rows differ:\n{}", problems.len(), problems.join("\n"));
    eprintln!("{compared} requests: the command agrees with Envoy on every one");
}

#[test]
fn the_command_decides_the_battery_as_envoy_does() {
    let pki = Pki::generate().unwrap();
    let mut cases = battery(&pki);
    // enforce.rs
    let other_sa_id = spiffe_id("cluster.local", "demo", "db");
    let other_td_id = spiffe_id("example.org", "demo", "app");
    let app = pki.svid("app", APP_ID).unwrap();
    let other_sa = pki.svid("other-sa", &other_sa_id).unwrap();
    let other_td = pki.svid("other-td", &other_td_id).unwrap();
    cases.extend([
        Case::new(
            "another service account",
            Some(&other_sa),
            Expected::deny("principal_mismatch", Some(&other_sa_id)),
        ),
        Case::new(
            "another trust domain",
            Some(&other_td),
            Expected::deny("principal_mismatch", Some(&other_td_id)),
        ),
        Case::new("no certificate, lenient", None, Expected::deny("no_client_certificate", None))
            .on(Listener::Lenient),
        Case::new("rightful app, lenient", Some(&app), Expected::allow("ok", Some(APP_ID)))
            .on(Listener::Lenient),
        Case::new("no certificate, strict", None, Expected::HandshakeRefused),
    ]);
    // Long enough for the 2048-byte SPIFFE ID to be logged whole.
    let settings = Settings::with_plugin_config(r#"{"log_field_max_bytes":4096}"#);
    assert_parity(vec![compare(&pki, &settings, &cases)]);
}

#[test]
fn the_command_follows_exempt_paths_and_audit_mode() {
    let pki = Pki::generate().unwrap();
    let rogue_id = spiffe_id("cluster.local", "demo", "db");
    let app = pki.svid("app", APP_ID).unwrap();
    let rogue = pki.svid("rogue", &rogue_id).unwrap();
    let mismatch = || Expected::deny("principal_mismatch", Some(&rogue_id));
    let exempt = [
        Case::new("rogue, exempt", Some(&rogue), Expected::allow("exempt", None)).path("/healthz"),
        Case::new("rogue, exempt with a query", Some(&rogue), Expected::allow("exempt", None))
            .path("/healthz?probe=liveness"),
        Case::new("no certificate, exempt", None, Expected::allow("exempt", None))
            .path("/healthz")
            .on(Listener::Lenient),
        Case::new("rogue, below the exempt path", Some(&rogue), mismatch()).path("/healthz/more"),
        Case::new("rogue, a longer path", Some(&rogue), mismatch()).path("/healthzz"),
        Case::new("rogue, elsewhere", Some(&rogue), mismatch()).path("/api"),
        Case::new("rightful app, elsewhere", Some(&app), Expected::allow("ok", Some(APP_ID)))
            .path("/api?x=1"),
    ];
    let audit = [
        Case::new("rightful app, audit", Some(&app), Expected::allow("ok", Some(APP_ID))),
        Case::new("rogue, audit", Some(&rogue), Expected::would_deny("principal_mismatch", Some(&rogue_id))),
        Case::new("no certificate, audit", None, Expected::would_deny("no_client_certificate", None))
            .on(Listener::Lenient),
        Case::new("no certificate, audit, strict", None, Expected::HandshakeRefused),
    ];
    assert_parity(vec![
        compare(&pki, &Settings::with_plugin_config(r#"{"exempt_paths":["/healthz"]}"#), &exempt),
        compare(&pki, &Settings::with_plugin_config(r#"{"mode":"audit"}"#), &audit),
    ]);
}

#[test]
fn the_command_finds_the_expected_principal_where_the_filter_does() {
    let pki = Pki::generate().unwrap();
    let id = |ns: &str, sa: &str| spiffe_id("cluster.local", ns, sa);
    let app = pki.svid("app", APP_ID).unwrap();
    let other_ns_id = id("other", "app");
    let other_ns = pki.svid("other-ns", &other_ns_id).unwrap();
    let example_id = spiffe_id("example.org", "demo", "app");
    let example = pki.svid("example", &example_id).unwrap();
    let nobody_id = id("other", "nobody");
    let nobody = pki.svid("nobody", &nobody_id).unwrap();
    let sidekick_id = id("demo", "sidekick");
    let sidekick = pki.svid("sidekick", &sidekick_id).unwrap();
    let db_id = id("demo", "db");
    let db = pki.svid("db", &db_id).unwrap();
    let below_id = format!("{APP_ID}/extra");
    let below = pki.svid("below", &below_id).unwrap();
    let allow =
        |name: &str, who: &Credential, id: &str| Case::new(name, Some(who), Expected::allow("ok", Some(id)));
    let deny = |name: &str, who: &Credential, id: &str| {
        Case::new(name, Some(who), Expected::deny("principal_mismatch", Some(id)))
    };
    let static_config = format!(
        r#"{{"principal":"{APP_ID}","principal_source":"static","allowed_principals":["{sidekick_id}"]}}"#
    );
    let setups: Vec<(Settings, Vec<Case>)> = vec![
        (
            Settings::with_plugin_config(""),
            vec![
                allow("node metadata: app", &app, APP_ID),
                deny("node metadata: other ns", &other_ns, &other_ns_id),
            ],
        ),
        (
            Settings::with_plugin_config("").namespace("other"),
            vec![
                deny("moved: app of demo", &app, APP_ID),
                allow("moved: app of other", &other_ns, &other_ns_id),
            ],
        ),
        (
            Settings::with_plugin_config("").trust_domain_env("example.org"),
            vec![
                deny("env TD: cluster.local", &app, APP_ID),
                allow("env TD: example.org", &example, &example_id),
            ],
        ),
        (
            Settings::with_plugin_config(r#"{"trust_domain":"cluster.local"}"#)
                .trust_domain_env("example.org"),
            vec![allow("configured TD wins", &app, APP_ID)],
        ),
        (
            Settings::with_plugin_config(r#"{"principal_source":"local_certificate"}"#)
                .namespace("other")
                .service_account("nobody"),
            vec![
                allow("local certificate: app", &app, APP_ID),
                deny("local certificate: metadata's", &nobody, &nobody_id),
            ],
        ),
        (
            Settings::with_plugin_config("").namespace("").service_account(""),
            vec![allow("auto without metadata", &app, APP_ID)],
        ),
        (
            Settings::with_plugin_config(&static_config).namespace("other"),
            vec![
                allow("static: the principal", &app, APP_ID),
                allow("static: allowed", &sidekick, &sidekick_id),
                deny("static: neither", &db, &db_id),
                deny("static: below the principal", &below, &below_id),
            ],
        ),
    ];
    let pki = &pki;
    // Two Envoys at a time: most of each one's life is waiting for it to start.
    let results = std::thread::scope(|scope| {
        let handles: Vec<_> = setups
            .chunks(setups.len().div_ceil(2))
            .map(|chunk| {
                scope.spawn(move || {
                    chunk.iter().map(|(settings, cases)| compare(pki, settings, cases)).collect::<Vec<_>>()
                })
            })
            .collect();
        handles.into_iter().flat_map(|handle| handle.join().unwrap()).collect()
    });
    assert_parity(results);
}

#[test]
fn config_validate_prints_the_line_envoy_logs() {
    let pki = Pki::generate().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let configs = [
        r#"{"allowed_principals":["spiffe://cluster.local/ns/demo/sa/app","not-a-spiffe-id"]}"#,
        r#"{"allow_everyone":true}"#,
        "enforce",
    ];
    let pki = &pki;
    let problems: Vec<String> = std::thread::scope(|scope| {
        let handles: Vec<_> = configs
            .iter()
            .enumerate()
            .map(|(i, config)| {
                let file = dir.path().join(format!("config-{i}.json"));
                scope.spawn(move || {
                    fs::write(&file, config).unwrap();
                    let output = loopback_guard(&["config", "validate", &file.display().to_string()]);
                    let log = match Envoy::start(pki, &Settings::with_plugin_config(config)) {
                        Err(StartError::Exited { log, .. }) => log,
                        Ok(_) => return Some(format!("{config}: Envoy started")),
                        Err(other) => return Some(format!("{config}: {other}")),
                    };
                    // "[...][error][wasm] ... wasm log ...: loopback-guard: invalid configuration: ..."
                    let envoy = log.lines().find_map(|line| {
                        line.contains("[error][wasm]")
                            .then(|| line.find("loopback-guard: invalid"))?
                            .map(|at| &line[at..])
                    });
                    let command = output.stdout.trim_end().split_once(": ").map(|(_, error)| error);
                    (output.code != 1 || envoy.is_none() || envoy != command).then(|| {
                        format!(
                            "{config}: Envoy logged {envoy:?}, the command printed {command:?} (exit {})",
                            output.code
                        )
                    })
                })
            })
            .collect();
        handles.into_iter().filter_map(|handle| handle.join().unwrap()).collect()
    });
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}
