//! `make demo`: the filter in a local Envoy, in front of a backend, asked by the rightful app and
//! by strangers. Prints who got what and why, and exits non-zero if anything is not as expected.

use std::process::{Command, ExitCode};

use loopback_guard_integration::command::loopback_guard;
use loopback_guard_integration::envoy::{envoy_bin, wasm_module, Envoy, Listener, Settings};
use loopback_guard_integration::pki::{spiffe_id, Pki, APP_ID, NAMESPACE, SERVICE_ACCOUNT};
use loopback_guard_integration::scenario::{all_as_expected, report, run_cases, Case, Expected};
use loopback_guard_integration::Result;

/// Zero configuration but one exempt path: the pod's principal comes from node metadata.
const PLUGIN_CONFIG: &str = r#"{"exempt_paths":["/healthz"],"filter_state":true}"#;

fn main() -> ExitCode {
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(err) => {
            eprintln!("demo failed: {err}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<bool> {
    let envoy_path = envoy_bin()?;
    let module = wasm_module()?;
    println!("loopback-guard demo\n");
    println!("  Envoy     {} ({})", envoy_path.display(), envoy_version(&envoy_path));
    println!("  module    {}", module.display());

    let pki = Pki::generate()?;
    let db_id = spiffe_id("cluster.local", NAMESPACE, "db");
    let app = pki.svid("app", APP_ID)?;
    let db = pki.svid("db", &db_id)?;
    println!("  certs     a throwaway CA and certificates in {} (removed at the end)", pki.dir().display());

    let envoy = Envoy::start(&pki, &Settings::with_plugin_config(PLUGIN_CONFIG))
        .map_err(|err| loopback_guard_integration::Error::new(err.to_string()))?;
    let ports = envoy.ports();
    println!("  pod       namespace {NAMESPACE}, service account {SERVICE_ACCOUNT} (node metadata)");
    println!("            so the only identity admitted is {APP_ID}");
    println!("  filter    {PLUGIN_CONFIG}");
    println!("  listeners 127.0.0.1:{} requires a client certificate (the app-to-sidecar hop)", ports.strict);
    println!("            127.0.0.1:{} only asks for one, so the filter sees clients without", ports.lenient);
    println!();

    let cases = [
        Case::new(
            &format!("the rightful app (sa {SERVICE_ACCOUNT})"),
            Some(&app),
            Expected::allow("ok", Some(APP_ID)),
        ),
        Case::new(
            "another service account (sa db)",
            Some(&db),
            Expected::deny("principal_mismatch", Some(&db_id)),
        ),
        Case::new("a process with no certificate", None, Expected::deny("no_client_certificate", None))
            .on(Listener::Lenient),
        Case::new("a health probe with no certificate", None, Expected::allow("exempt", None))
            .on(Listener::Lenient)
            .path("/healthz"),
        Case::new("a process with no certificate", None, Expected::HandshakeRefused),
    ];
    let outcomes = run_cases(&envoy, &pki, &cases)?;

    println!("Requests (\"refused\": Envoy's TLS turned the client away before the filter ran)\n");
    println!("{}", report(&outcomes));

    println!("The filter's decision lines, from Envoy's log\n");
    for outcome in &outcomes {
        for line in &outcome.observation.decisions {
            println!("  {:<9} {}", format!("[{}]", line.level), line.raw_json);
        }
    }

    println!("\nIts counters, from Envoy's /stats\n");
    for (name, value) in envoy.guard_stats()?.0 {
        if value > 0 {
            println!("  {name}: {value}");
        }
    }

    println!("\nThe access log (decision and reason read from filter state)\n");
    for line in envoy.access_log().lines() {
        match serde_json::from_str::<serde_json::Value>(line) {
            Ok(entry) => {
                let field = |name: &str| match entry.get(name) {
                    Some(serde_json::Value::String(text)) => text.clone(),
                    Some(other) => other.to_string(),
                    None => "-".to_owned(),
                };
                println!(
                    "  {} {:<9} guard_decision={:<6} guard_reason={:<22} peer_uri_san={}",
                    field("status"),
                    field("path"),
                    field("guard_decision"),
                    field("guard_reason"),
                    field("peer_uri_san"),
                );
            }
            Err(_) => println!("  {line}"),
        }
    }

    // The same question without Envoy: the command runs the filter's own decision code.
    let cert = db.cert_path.display().to_string();
    let check = ["check", "--cert", &cert, "--namespace", NAMESPACE, "--service-account", SERVICE_ACCOUNT];
    println!("\nThe same decision without Envoy, for the certificate of sa db\n");
    println!("  $ loopback-guard {}\n", check.join(" "));
    let output = loopback_guard(&check);
    for line in output.stdout.lines().chain(output.stderr.lines()) {
        println!("{}", format!("  {line}").trim_end());
    }
    let check_as_expected = output.code == 1 && output.stdout.contains("Verdict: deny, principal_mismatch");
    println!("  (exit status {})", output.code);

    let as_expected = all_as_expected(&outcomes) && check_as_expected;
    if !as_expected {
        eprintln!("\nNot every outcome is as expected. Envoy's log:\n{}", envoy.log());
    }
    envoy.stop();
    println!();
    if as_expected {
        println!("All {} outcomes as expected. Envoy stopped.", outcomes.len());
    } else {
        println!("Some outcomes were NOT as expected (see above). Envoy stopped.");
    }
    Ok(as_expected)
}

/// `1.40.0` out of `envoy --version`, or a placeholder: the version is only shown.
fn envoy_version(envoy: &std::path::Path) -> String {
    let output = Command::new(envoy).arg("--version").output();
    let text = output.map(|output| String::from_utf8_lossy(&output.stdout).into_owned()).unwrap_or_default();
    // "envoy  version: <commit>/1.40.0/Clean/RELEASE/BoringSSL"
    text.split("version:")
        .nth(1)
        .and_then(|rest| rest.trim().split('/').nth(1))
        .map_or_else(|| "version unknown".to_owned(), str::to_owned)
}
