//! The built `loopback-guard` binary, run as a user runs it: exit status, standard output and
//! standard error. Certificates are made here, at test time.

// Test helpers may unwrap, like the tests (clippy.toml allows it in test code only).
#![cfg(test)]

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use rcgen::string::Ia5String;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair, SanType};

const APP: &str = "spiffe://cluster.local/ns/demo/sa/app";
const ROGUE: &str = "spiffe://cluster.local/ns/demo/sa/db";

struct Files {
    dir: tempfile::TempDir,
}

impl Files {
    fn new() -> Self {
        Self { dir: tempfile::tempdir().unwrap() }
    }

    fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.dir.path().join(name);
        fs::write(&path, contents).unwrap();
        path
    }
}

/// (CA PEM, leaf PEM, leaf DER, key PEM) for an SVID of `id`, valid from 2020 to 2100.
fn svid(id: &str, ca: bool) -> (String, String, Vec<u8>, String) {
    let mut ca_params = CertificateParams::default();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let issuer = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let mut params = CertificateParams::default();
    params.subject_alt_names.push(SanType::URI(Ia5String::try_from(id).unwrap()));
    params.is_ca = if ca { IsCa::Ca(BasicConstraints::Unconstrained) } else { IsCa::ExplicitNoCa };
    params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    params.not_after = rcgen::date_time_ymd(2100, 1, 1);
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    (issuer.pem(), cert.pem(), cert.der().to_vec(), key.serialize_pem())
}

fn run(args: &[&str]) -> Output {
    run_with_stdin(args, None)
}

fn run_with_stdin(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_loopback-guard"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut pipe = child.stdin.take().unwrap();
    // A command that does not read its input may have exited already: a broken pipe is fine.
    let _ = pipe.write_all(stdin.unwrap_or_default());
    drop(pipe);
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("panicked"), "{args:?} panicked: {stderr}");
    assert!(!output.stdout.contains(&0x1b), "{args:?}: colours in piped output");
    output
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).unwrap()
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn check_decides_as_the_filter() {
    let files = Files::new();
    let (ca, app, app_der, app_key) = svid(APP, false);
    let (_, rogue, _, _) = svid(ROGUE, false);
    let (_, ca_leaf, _, _) = svid(APP, true);
    let app_pem = files.write("app.pem", &app);
    let app_der = files.write("app.der", &app_der);
    let chain = files.write("cert-chain.pem", format!("{app}{ca}"));
    let with_key = files.write("with-key.pem", format!("{app_key}{app}"));
    let rogue = files.write("rogue.pem", &rogue);
    let ca_leaf = files.write("ca-leaf.pem", &ca_leaf);
    let audit = files.write("audit.json", r#"{"mode":"audit"}"#);
    let exempt = files.write("exempt.json", r#"{"exempt_paths":["/healthz"]}"#);
    let allow_rogue = files.write("allow.json", format!(r#"{{"allowed_principals":["{ROGUE}"]}}"#));
    let wasm_plugin = files.write(
        "wasmplugin.yaml",
        "apiVersion: extensions.istio.io/v1alpha1\nkind: WasmPlugin\nmetadata: {name: lg, namespace: demo}\n\
         spec:\n  pluginConfig:\n    mode: audit\n",
    );
    let pod = ["--namespace", "demo", "--service-account", "app"];

    // (name, arguments after the pod, exit status, decision, reason)
    let cases: Vec<(&str, Vec<&str>, i32, &str, &str)> = vec![
        ("rightful app, PEM", vec!["--cert", path(&app_pem)], 0, "allow", "ok"),
        ("rightful app, DER", vec!["--cert", path(&app_der)], 0, "allow", "ok"),
        ("rightful app, istio-agent chain", vec!["--cert", path(&chain)], 0, "allow", "ok"),
        ("key and certificate in one file", vec!["--cert", path(&with_key)], 0, "allow", "ok"),
        ("rogue", vec!["--cert", path(&rogue)], 1, "deny", "principal_mismatch"),
        (
            "rogue, audit",
            vec!["--cert", path(&rogue), "--config", path(&audit)],
            1,
            "would_deny",
            "principal_mismatch",
        ),
        (
            "rogue, audit from a WasmPlugin",
            vec!["--cert", path(&rogue), "--config", path(&wasm_plugin)],
            1,
            "would_deny",
            "principal_mismatch",
        ),
        ("rogue, allowed", vec!["--cert", path(&rogue), "--config", path(&allow_rogue)], 0, "allow", "ok"),
        (
            "rogue, exempt path",
            vec!["--cert", path(&rogue), "--config", path(&exempt), "--path", "/healthz?x=1"],
            0,
            "allow",
            "exempt",
        ),
        ("no certificate", vec!["--no-cert"], 1, "deny", "no_client_certificate"),
        ("a CA certificate", vec!["--cert", path(&ca_leaf)], 1, "deny", "svid_not_leaf"),
        (
            "not loopback",
            vec!["--cert", path(&app_pem), "--source", "10.0.0.1:4000"],
            1,
            "deny",
            "not_loopback",
        ),
        (
            "before notBefore",
            vec!["--cert", path(&app_pem), "--at", "2019-06-01T00:00:00Z"],
            1,
            "deny",
            "svid_not_yet_valid",
        ),
        (
            "after notAfter",
            vec!["--cert", path(&app_pem), "--at", "2100-01-02T00:00:00+01:00"],
            1,
            "deny",
            "svid_expired",
        ),
    ];
    for (name, extra, code, decision, reason) in cases {
        let args: Vec<&str> = ["check"].into_iter().chain(pod).chain(extra).collect();
        let output = run(&args);
        let stdout = text(&output.stdout);
        assert_eq!(output.status.code(), Some(code), "{name}: {stdout}{}", text(&output.stderr));
        assert!(stdout.contains(&format!("Verdict: {decision}, {reason}")), "{name}: {stdout}");
        assert!(stdout.contains("6. Principal"), "{name}: every step is listed: {stdout}");
        let line = stdout.lines().last().unwrap();
        let logged: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(
            (logged["decision"].as_str(), logged["reason"].as_str()),
            (Some(decision), Some(reason)),
            "{name}"
        );

        let json_args: Vec<&str> = args.iter().copied().chain(["--output", "json"]).collect();
        let output = run(&json_args);
        let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        assert_eq!(
            (report["verdict"].as_str(), report["reason"].as_str()),
            (Some(decision), Some(reason)),
            "{name}"
        );
        assert_eq!(report["exit_code"], code, "{name}");
        // The filter's own outcome: the counter it bumps, and what it logs at configure.
        let counter = match (decision, reason) {
            ("allow", "exempt") => "loopback_guard.exempt".to_owned(),
            ("allow", _) => "loopback_guard.allowed".to_owned(),
            ("would_deny", _) => "loopback_guard.would_deny".to_owned(),
            (_, reason) => format!("loopback_guard.denied.{reason}"),
        };
        assert_eq!(report["counter"].as_str(), Some(counter.as_str()), "{name}");
        let configured = report["notices"].as_array().unwrap().iter().any(|n| {
            n["level"] == "info"
                && n["text"].as_str().unwrap().starts_with("loopback-guard: configured: mode=")
        });
        assert!(configured, "{name}: {}", report["notices"]);
        assert_eq!(report["decision_line"].as_str(), Some(line), "{name}: the same line in both outputs");
        assert_eq!(report["steps"].as_array().unwrap().len(), 6, "{name}");
    }
}

/// The command decides a probe's authority as the filter does (the table is the core's, and
/// integration/tests/exempt.rs sends it to Envoy): parsed by the grammar, never by prefix.
#[test]
fn check_decides_probe_authorities_by_the_grammar() {
    use loopback_guard_core::testing::{ProbeAuthority, PROBE_AUTHORITIES, PROBE_CONFIG};
    let files = Files::new();
    let config = files.write("probe.json", PROBE_CONFIG);
    for (raw, expected) in PROBE_AUTHORITIES {
        let args =
            ["check", "--no-cert", "--config", path(&config), "--path", "/healthz", "--authority", raw];
        let output = run(&args);
        let stdout = text(&output.stdout);
        let logged: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
        let (code, decision, reason, why) = match expected {
            ProbeAuthority::Admitted => (0, "allow", "exempt", None),
            ProbeAuthority::Unparsed => {
                (1, "deny", "no_client_certificate", Some("does not parse as host[:port]"))
            }
            ProbeAuthority::Unlisted => (1, "deny", "no_client_certificate", Some("neither a loopback host")),
        };
        assert_eq!(output.status.code(), Some(code), "{raw:?}: {stdout}");
        assert_eq!(
            (logged["decision"].as_str(), logged["reason"].as_str()),
            (Some(decision), Some(reason)),
            "{raw:?}"
        );
        if let Some(why) = why {
            let detail = logged["detail"].as_str().unwrap_or_default();
            assert!(
                detail.starts_with("exempt path, but its authority") && detail.contains(why),
                "{raw:?}: {detail}"
            );
        }
    }
    // An entry that is itself no authority is refused, naming it, as Envoy would refuse it.
    let bad = files
        .write("bad.json", r#"{"exempt_paths":["/healthz"],"exempt_authorities":["probe.local:1@evil"]}"#);
    let output = run(&["config", "validate", path(&bad)]);
    assert_eq!(output.status.code(), Some(1));
    let stdout = text(&output.stdout);
    assert!(
        stdout.contains(r#"exempt_authorities[0]: "probe.local:1@evil" must be an authority, host or host:port: it has userinfo"#),
        "{stdout}"
    );
}

#[test]
fn check_shows_why_at_the_deciding_step() {
    let files = Files::new();
    let (_, rogue, _, _) = svid(ROGUE, false);
    let rogue = files.write("rogue.pem", &rogue);
    let output = run(&["check", "--cert", path(&rogue), "--namespace", "demo", "--service-account", "app"]);
    let stdout = text(&output.stdout);
    for want in [
        "2. Loopback peer          pass",
        "5. X509-SVID rules        pass  one URI SAN, spiffe://cluster.local/ns/demo/sa/db",
        "6. Principal              FAIL  principal_mismatch: spiffe://cluster.local/ns/demo/sa/db is neither the \
         expected principal spiffe://cluster.local/ns/demo/sa/app",
        "expected principal spiffe://cluster.local/ns/demo/sa/app (from node_metadata)",
        "Envoy answers 403 with the body \"loopback-guard: denied: principal_mismatch\"",
    ] {
        assert!(stdout.contains(want), "missing {want:?} in\n{stdout}");
    }
    // Without node metadata, the listener's certificate (--principal) names the pod.
    let output = run(&["check", "--cert", path(&rogue), "--principal", ROGUE, "--output", "json"]);
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["reason"], "ok");
    assert_eq!(report["expected_principal"], ROGUE);
    // No pod identity at all: nothing to compare with.
    let output = run(&["check", "--cert", path(&rogue)]);
    assert_eq!(output.status.code(), Some(1));
    assert!(text(&output.stdout).contains("Verdict: deny, no_expected_principal"));
}

#[test]
fn check_with_ca_decides_the_handshake_too() {
    let files = Files::new();
    let (ca, app, _, _) = svid(APP, false);
    let (other_ca, _, _, _) = svid(APP, false);
    let ca = files.write("ca.pem", &ca);
    let other_ca = files.write("other-ca.pem", &other_ca);
    let app = files.write("app.pem", &app);
    let pod = ["--namespace", "demo", "--service-account", "app"];
    let cases: Vec<(&str, Vec<&str>, i32, &str, &str)> = vec![
        ("the trusted CA", vec!["--ca", path(&ca)], 0, "allow", "0. TLS handshake          pass  chains to"),
        ("another CA", vec!["--ca", path(&other_ca)], 1, "handshake_refused", "is not signed by a CA in"),
        (
            "expired",
            vec!["--ca", path(&ca), "--at", "2101-01-01T00:00:00Z"],
            1,
            "handshake_refused",
            "expired at",
        ),
        ("no --ca", vec![], 0, "allow", "taken as validated"),
    ];
    for (name, extra, code, verdict, why) in cases {
        let args: Vec<&str> = ["check", "--cert", path(&app)].into_iter().chain(pod).chain(extra).collect();
        let output = run(&args);
        let stdout = text(&output.stdout);
        assert_eq!(output.status.code(), Some(code), "{name}: {stdout}");
        assert!(stdout.contains(&format!("Verdict: {verdict}")) && stdout.contains(why), "{name}: {stdout}");
        let args: Vec<&str> = args.into_iter().chain(["--output", "json"]).collect();
        let report: serde_json::Value = serde_json::from_slice(&run(&args).stdout).unwrap();
        assert_eq!(report["verdict"], verdict, "{name}");
        assert_eq!(report["decision_line"].is_null(), verdict == "handshake_refused", "{name}");
    }
}

#[test]
fn bad_input_is_exit_2_with_a_clear_message() {
    let files = Files::new();
    let (_, app, _, key) = svid(APP, false);
    let app_pem = files.write("app.pem", &app);
    let truncated = files.write("truncated.pem", &app[..app.len() - 30]);
    let not_cert = files.write("notes.txt", "hello\n");
    let key = files.write("key.pem", &key);
    let binary = files.write("random.bin", [0xffu8, 0xd8, 0xff, 0xe0, 0, 1, 2]);
    let empty = files.write("empty.json", "");
    let invalid = files.write("invalid.json", r#"{"mode":"block"}"#);
    let no_plugin = files.write(
        "no-plugin.yaml",
        "apiVersion: extensions.istio.io/v1alpha1\nkind: WasmPlugin\nspec: {url: oci://x}\n",
    );
    let two = files.write(
        "two.yaml",
        "kind: WasmPlugin\nspec: {pluginConfig: {}}\n---\nkind: WasmPlugin\nspec: {pluginConfig: {}}\n",
    );
    let missing = files.dir.path().join("missing.pem");
    let app_arg = ["--cert", path(&app_pem), "--namespace", "demo", "--service-account", "app"];
    let with_app = |extra: &[&'static str]| -> Vec<String> {
        ["check"].iter().chain(&app_arg).chain(extra).map(|s| s.to_string()).collect()
    };
    let owned = |args: &[&str]| args.iter().map(|s| s.to_string()).collect::<Vec<_>>();

    let cases: Vec<(&str, Vec<String>, &str)> = vec![
        ("missing certificate", owned(&["check", "--cert", path(&missing)]), "cannot read"),
        ("not a certificate", owned(&["check", "--cert", path(&not_cert)]), "not a certificate"),
        ("truncated PEM", owned(&["check", "--cert", path(&truncated)]), "truncated PEM"),
        ("a key", owned(&["check", "--cert", path(&key)]), "no CERTIFICATE block, only PRIVATE KEY"),
        ("binary", owned(&["check", "--cert", path(&binary)]), "neither PEM nor DER"),
        ("a directory", owned(&["check", "--cert", path(files.dir.path())]), "cannot read"),
        ("--ca not a certificate", with_app(&["--ca", "/dev/null"]), "the file is empty"),
        ("empty config", owned(&["check", "--cert", path(&app_pem), "--config", path(&empty)]), "empty"),
        (
            "invalid config",
            owned(&["check", "--cert", path(&app_pem), "--config", path(&invalid)]),
            "loopback-guard: invalid configuration: mode: ",
        ),
        (
            "manifest without plugin config",
            owned(&["check", "--no-cert", "--config", path(&no_plugin)]),
            "no plugin configuration in WasmPlugin",
        ),
        (
            "two plugin configs",
            owned(&["check", "--no-cert", "--config", path(&two)]),
            "holds 2 plugin configurations",
        ),
        ("bad --at", with_app(&["--at", "yesterday"]), "--at \"yesterday\" is not an RFC 3339 time"),
        ("bad trust domain", with_app(&["--trust-domain", "Bad Domain"]), "TRUST_DOMAIN"),
        ("no certificate option", owned(&["check"]), "--cert"),
        (
            "both certificate options",
            owned(&["check", "--no-cert", "--cert", path(&app_pem)]),
            "cannot be used with",
        ),
        ("namespace alone", owned(&["check", "--no-cert", "--namespace", "demo"]), "--service-account"),
        ("unknown subcommand", owned(&["frobnicate"]), "unrecognized subcommand"),
        ("validate: missing", owned(&["config", "validate", path(&missing)]), "cannot read"),
        ("validate: empty", owned(&["config", "validate", path(&empty)]), "the file is empty"),
        (
            "validate: no plugin config",
            owned(&["config", "validate", path(&no_plugin)]),
            "no plugin configuration",
        ),
        ("explain-log: missing", owned(&["explain-log", path(&missing)]), "cannot read"),
        ("explain-log: binary", owned(&["explain-log", path(&binary)]), "is not a text log"),
        ("explain-log: a directory", owned(&["explain-log", path(files.dir.path())]), "is a directory"),
    ];
    for (name, args, want) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let output = run(&args);
        let stderr = text(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{name}: {stderr}{}", text(&output.stdout));
        assert!(stderr.contains(want), "{name}: expected {want:?} in {stderr:?}");
        assert!(output.stdout.is_empty(), "{name}: nothing on standard output");
    }
}

#[test]
fn config_validate_says_what_envoy_would() {
    let files = Files::new();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let shipped = root.join("deploy/istio/wasmplugin.yaml");
    // The shipped Envoy config, its placeholders filled in but the plugin's.
    let mut template = fs::read_to_string(root.join("envoy-config/loopback-guard.yaml")).unwrap();
    for name in
        ["ADMIN_PORT", "LISTEN_PORT", "LENIENT_PORT", "BACKEND_PORT", "BACKEND_HOST", "CERT_DIR", "WASM"]
    {
        template = template.replace(&format!("${{{name}}}"), "1");
    }
    let bootstrap = files.write("envoy.yaml", template.replace("${PLUGIN_CONFIG}", r#"{"mode":"audit"}"#));
    let bad_bootstrap =
        files.write("bad-envoy.yaml", template.replace("${PLUGIN_CONFIG}", r#"{"mode":"audit","x":1}"#));
    let valid = files.write("valid.json", r#"{"exempt_paths":["/healthz"]}"#);
    let bad_id = files.write("bad-id.json", r#"{"allowed_principals":["spiffe://td/a","spiffe://td/"]}"#);
    let not_json = files.write("not.json", "{mode: audit");
    let mixed = files.write(
        "mixed.yaml",
        "kind: WasmPlugin\nmetadata: {name: ok, namespace: demo}\nspec: {pluginConfig: {mode: audit}}\n---\n\
         kind: TrafficExtension\nmetadata: {name: bad, namespace: demo}\nspec:\n  wasm:\n    pluginConfig: {require_loopback: \"yes\"}\n",
    );

    let cases: Vec<(&str, &Path, i32, Vec<&str>)> = vec![
        ("shipped WasmPlugin", &shipped, 0, vec!["(WasmPlugin demo/loopback-guard, spec.pluginConfig): valid: mode=enforce principal_source=auto"]),
        (
            "Envoy bootstrap",
            &bootstrap,
            0,
            vec!["config.configuration.value): valid: mode=audit"],
        ),
        ("bad bootstrap", &bad_bootstrap, 1, vec!["loopback-guard: invalid configuration: x: unknown field"]),
        ("plugin JSON", &valid, 0, vec![r#"valid.json: valid: mode=enforce"#, r#"exempt_paths=["/healthz"]"#]),
        (
            "bad SPIFFE ID",
            &bad_id,
            1,
            vec![r#"bad-id.json: loopback-guard: invalid configuration: allowed_principals[1]: "spiffe://td/" is not a valid SPIFFE ID: path cannot have a trailing slash"#],
        ),
        ("not JSON", &not_json, 1, vec!["loopback-guard: invalid configuration: configuration: is not valid JSON"]),
        (
            "one of two invalid",
            &mixed,
            1,
            vec![
                "(document 1: WasmPlugin demo/ok, spec.pluginConfig): valid: mode=audit",
                "(document 2: TrafficExtension demo/bad, spec.wasm.pluginConfig): loopback-guard: invalid configuration: require_loopback: invalid type: string \"yes\", expected a boolean",
            ],
        ),
    ];
    for (name, file, code, wants) in cases {
        let output = run(&["config", "validate", path(file)]);
        let stdout = text(&output.stdout);
        assert_eq!(output.status.code(), Some(code), "{name}: {stdout}{}", text(&output.stderr));
        for want in wants {
            assert!(stdout.contains(want), "{name}: expected {want:?} in\n{stdout}");
        }
        let output = run(&["config", "validate", path(file), "--output", "json"]);
        let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        assert_eq!(report["valid"], code == 0, "{name}");
    }
    // The VM's TRUST_DOMAIN takes part in validation, as in Envoy.
    let output = run(&["config", "validate", path(&valid), "--trust-domain", "UPPER.example"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(text(&output.stdout).contains("invalid configuration: TRUST_DOMAIN (VM environment): "));
}

#[test]
fn explain_log_sums_up_decisions() {
    let deny = |time: &str, peer: &str| {
        format!(
            "[{time}][17][warning][wasm] [source/extensions/common/wasm/context.cc:1192] wasm log loopback_guard \
             loopback_guard: {{\"decision\":\"deny\",\"reason\":\"principal_mismatch\",\"peer_principal\":\"{peer}\",\
             \"expected_principal\":\"{APP}\",\"path\":\"/\"}}\n"
        )
    };
    let mut log = String::new();
    log.push_str("[2026-12-01 23:00:00.000][1][info][main] starting\n");
    log.push_str(&deny("2026-12-01 23:12:07.123", ROGUE));
    log.push_str(&deny("2026-12-01 23:14:00.000", ROGUE));
    log.push_str(&deny("2026-12-01 23:13:00.000", "spiffe://cluster.local/ns/demo/sa/cron"));
    log.push_str(
        "2026-12-01T23:15:00Z {\"decision\":\"allow\",\"reason\":\"ok\",\"peer_principal\":\"x\"}\n",
    );
    log.push_str("garbage {\"decision\":\"deny\",\"rea\n");
    let mut bytes = log.into_bytes();
    bytes.extend_from_slice(b"\xc3\x28 not utf-8\n");

    let files = Files::new();
    let file = files.write("envoy.log", &bytes);
    for args in [vec!["explain-log", path(&file)], vec!["explain-log", "-"], vec!["explain-log"]] {
        let output = run_with_stdin(&args, Some(&bytes));
        let stdout = text(&output.stdout);
        assert_eq!(output.status.code(), Some(0), "{args:?}: {}", text(&output.stderr));
        for want in [
            "7 lines, 4 decision lines, 1 unparsable, 1 not UTF-8",
            "First decision 2026-12-01 23:12:07.123, last 2026-12-01T23:15:00Z",
            "3  deny      principal_mismatch  2026-12-01 23:12:07.123  2026-12-01 23:14:00.000",
            "2  spiffe://cluster.local/ns/demo/sa/db    principal_mismatch (2)  2026-12-01 23:12:07.123  2026-12-01 23:14:00.000",
            "Expected principal: spiffe://cluster.local/ns/demo/sa/app",
        ] {
            assert!(stdout.contains(want), "{args:?}: expected {want:?} in\n{stdout}");
        }
    }
    let output = run(&["explain-log", path(&file), "--output", "json", "--top", "1"]);
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["decision_lines"], 4);
    assert_eq!(report["unparsable_lines"], 1);
    assert_eq!(report["denied_principals"].as_array().unwrap().len(), 1);
    assert_eq!(report["denied_principals"][0]["peer_principal"], ROGUE);
    assert_eq!(report["denied_principals"][0]["count"], 2);
    // A log without decision lines is read, and says so.
    let output = run_with_stdin(&["explain-log"], Some(b"[t][1][info][main] nothing here\n"));
    assert_eq!(output.status.code(), Some(0));
    assert!(text(&output.stdout).contains("No loopback-guard decision lines"));
}

#[test]
fn help_and_version_exit_0() {
    for args in [vec!["--help"], vec!["check", "--help"], vec!["--version"]] {
        let output = run(&args);
        assert_eq!(output.status.code(), Some(0), "{args:?}");
        assert!(!output.stdout.is_empty());
    }
}
