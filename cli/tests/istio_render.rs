//! `loopback-guard istio render`, run as the built binary: every supported Istio version renders,
//! and what it prints goes back through `config validate` (render -> validate round trip); the
//! versions and options it must refuse are refused with exit status 2 and a message that says why.
//! The CRD-schema validation of the same renderings is scripts/validate-manifests.py's
//! (`make test-deploy`), which drives this command through scripts/istio-manifests.py.

// Test helpers may unwrap, like the tests (clippy.toml allows it in test code only).
#![cfg(test)]

use std::path::Path;
use std::process::{Command, Output};

fn run(args: &[&str]) -> Output {
    let output = Command::new(env!("CARGO_BIN_EXE_loopback-guard")).args(args).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("panicked"), "{args:?} panicked: {stderr}");
    output
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn render(version: &str, extra: &[&str]) -> Output {
    let mut args = vec![
        "istio",
        "render",
        "--istio-version",
        version,
        "--namespace",
        "demo",
        "--workload",
        "app=demo-app",
    ];
    args.extend_from_slice(extra);
    run(&args)
}

/// The kinds in a multi-document rendering, in order.
fn kinds(yaml: &str) -> Vec<String> {
    yaml.lines().filter_map(|l| l.strip_prefix("kind: ")).map(str::to_owned).collect()
}

#[test]
fn every_supported_version_renders_and_validates() {
    let dir = tempfile::tempdir().unwrap();
    let cases: &[(&str, &[&str], &str, &str)] = &[
        ("1.26", &[], "WasmPlugin", "extensions.istio.io/wasmplugin/demo.loopback-guard"),
        ("1.27.3", &[], "WasmPlugin", "extensions.istio.io/wasmplugin/demo.loopback-guard"),
        ("1.28", &[], "WasmPlugin", "extensions.istio.io/wasmplugin/demo.loopback-guard"),
        ("1.29.6", &[], "WasmPlugin", "extensions.istio.io/wasmplugin/demo.loopback-guard"),
        ("1.30", &[], "TrafficExtension", "extensions.istio.io/trafficextension/demo.loopback-guard"),
        ("1.31", &[], "TrafficExtension", "extensions.istio.io/trafficextension/demo.loopback-guard"),
        ("1.31.0-rc.0", &[], "TrafficExtension", "extensions.istio.io/trafficextension/demo.loopback-guard"),
        ("1.31.4", &[], "TrafficExtension", "extensions.istio.io/trafficextension/demo.loopback-guard"),
        (
            "1.31",
            &["--resource", "wasmplugin"],
            "WasmPlugin",
            "extensions.istio.io/trafficextension/demo.loopback-guard~istio-translated-wasmplugin",
        ),
        (
            "1.30",
            &["--resource", "wasmplugin"],
            "WasmPlugin",
            "extensions.istio.io/trafficextension/demo.loopback-guard~istio-translated-wasmplugin",
        ),
    ];
    for (version, extra, kind, ecds_name) in cases {
        let out = render(version, extra);
        let yaml = text(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "{version} {extra:?}: {}", text(&out.stderr));
        assert_eq!(kinds(&yaml), [*kind, "EnvoyFilter"], "{version} {extra:?}");
        assert!(
            yaml.contains(&format!("- name: {ecds_name}\n")),
            "{version} {extra:?}: the listener names {ecds_name}"
        );

        // Round trip: what was printed is what `config validate` reads, and the filter accepts
        // the plugin configuration it carries.
        let file = dir.path().join(format!("rendered-{version}-{}.yaml", extra.len()));
        std::fs::write(&file, &yaml).unwrap();
        let validated = run(&["config", "validate", file.to_str().unwrap()]);
        let said = text(&validated.stdout);
        assert_eq!(validated.status.code(), Some(0), "{version}: {said}{}", text(&validated.stderr));
        let location =
            if *kind == "TrafficExtension" { "spec.wasm.pluginConfig" } else { "spec.pluginConfig" };
        assert!(said.contains(&format!("{kind} demo/loopback-guard, {location}")), "{version}: {said}");
        assert!(said.contains("valid: mode=enforce"), "{version}: {said}");
        assert!(said.contains("filter_state=true"), "{version}: {said}");
    }
}

#[test]
fn out_writes_the_files_and_drops_the_other_family() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().to_str().unwrap();
    let first = render("1.29", &["--with-demo", "--out", out]);
    assert_eq!(first.status.code(), Some(0), "{}", text(&first.stderr));
    for name in ["wasmplugin.yaml", "envoyfilter-loopback-listener.yaml", "demo-app.yaml", "backend.yaml"] {
        assert!(Path::new(out).join(name).exists(), "{name}");
    }
    let second = render("1.31", &["--with-demo", "--out", out]);
    assert_eq!(second.status.code(), Some(0), "{}", text(&second.stderr));
    assert!(
        text(&second.stderr).contains("ECDS name extensions.istio.io/trafficextension/demo.loopback-guard")
    );
    assert!(Path::new(out).join("trafficextension.yaml").exists());
    assert!(
        !Path::new(out).join("wasmplugin.yaml").exists(),
        "the 1.29 WasmPlugin stayed beside the 1.31 listener"
    );
    let validated = run(&["config", "validate", &format!("{out}/trafficextension.yaml")]);
    assert_eq!(validated.status.code(), Some(0), "{}", text(&validated.stdout));
}

#[test]
fn own_namespace_workload_and_image() {
    let digest = "0123456789abcdef".repeat(4);
    let image = format!("registry.example.com:5000/guards/loopback-guard:0.1.0@sha256:{digest}");
    let out = run(&[
        "istio",
        "render",
        "--istio-version",
        "1.31.0-rc.0",
        "--namespace",
        "shop",
        "--workload",
        "app=cart,version=v2",
        "--image",
        &image,
    ]);
    let yaml = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(yaml.contains("- name: extensions.istio.io/trafficextension/shop.loopback-guard\n"), "{yaml}");
    assert!(yaml.contains("url: oci://registry.example.com:5000/guards/loopback-guard:0.1.0\n"), "{yaml}");
    assert!(
        yaml.contains(&format!("sha256: {digest}\n")) || yaml.contains(&format!("sha256: '{digest}'\n")),
        "{yaml}"
    );
    assert_eq!(yaml.matches("namespace: shop\n").count(), 2, "{yaml}");
    assert_eq!(yaml.matches("      version: v2\n").count(), 2, "selector and workloadSelector: {yaml}");
    assert!(!yaml.contains("namespace: demo"), "{yaml}");
    assert!(!yaml.contains("kind: Deployment"), "no demo app without --with-demo: {yaml}");
}

#[test]
fn refusals_say_why() {
    let hex = "ab".repeat(32);
    let no_digest = "registry.example.com/loopback-guard:0.1.0".to_owned();
    let bad_digest = format!("registry.example.com/loopback-guard@sha256:{}", &hex[..60]);
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["--istio-version", "1.32", "--namespace", "demo", "--workload", "app=demo-app"],
            "newer than the newest Istio this renderer knows, 1.31 (read at 1.31.0-rc.0)",
        ),
        (
            vec!["--istio-version", "1.32.0-alpha.0", "--namespace", "demo", "--workload", "app=demo-app"],
            "newest Istio this renderer knows, 1.31",
        ),
        (
            vec!["--istio-version", "1.25", "--namespace", "demo", "--workload", "app=demo-app"],
            "misspelt prefix",
        ),
        (
            vec!["--istio-version", "2.0", "--namespace", "demo", "--workload", "app=demo-app"],
            "supported are 1.26 to 1.31",
        ),
        (
            vec!["--istio-version", "1.31.x", "--namespace", "demo", "--workload", "app=demo-app"],
            "expected 1.MINOR",
        ),
        (
            vec![
                "--istio-version",
                "1.29",
                "--namespace",
                "demo",
                "--workload",
                "app=demo-app",
                "--resource",
                "trafficextension",
            ],
            "no TrafficExtension (new in 1.30)",
        ),
        (
            vec!["--istio-version", "1.31", "--namespace", "Demo", "--workload", "app=demo-app"],
            "--namespace \"Demo\"",
        ),
        (vec!["--istio-version", "1.31", "--namespace", "demo", "--workload", "app"], "expected KEY=VALUE"),
        (vec!["--istio-version", "1.31", "--namespace", "demo", "--workload", "app=a,app=b"], "given twice"),
        (
            vec![
                "--istio-version",
                "1.31",
                "--namespace",
                "demo",
                "--workload",
                "app=demo-app",
                "--image",
                &no_digest,
            ],
            "pin the image by its manifest digest",
        ),
        (
            vec![
                "--istio-version",
                "1.31",
                "--namespace",
                "demo",
                "--workload",
                "app=demo-app",
                "--image",
                &bad_digest,
            ],
            "sha256:<64 lowercase hex>",
        ),
        (
            vec![
                "--istio-version",
                "1.31",
                "--namespace",
                "shop",
                "--workload",
                "app=demo-app",
                "--with-demo",
            ],
            "--with-demo: the demo app runs in namespace demo",
        ),
    ];
    for (args, message) in cases {
        let mut full = vec!["istio", "render"];
        full.extend_from_slice(&args);
        let out = run(&full);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(message), "{args:?}: {err}");
        assert!(out.stdout.is_empty(), "{args:?} printed a rendering");
    }
}
