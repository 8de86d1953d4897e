//! Exempt paths (health probes) pass without any identity check; only exact paths are exempt,
//! and only for a probe: a bodiless GET or HEAD, no upgrade, to a loopback authority.

use loopback_guard_core::testing::{ProbeAuthority, PROBE_AUTHORITIES, PROBE_CONFIG};
use loopback_guard_integration::client::{curl_with, TlsVersion};
use loopback_guard_integration::envoy::{Envoy, Listener, Settings, LOOK_ALIKE_STATUS};
use loopback_guard_integration::pki::{spiffe_id, Pki, APP_ID};
use loopback_guard_integration::scenario::{all_as_expected, report, run_cases, Case, Expected};

#[test]
fn exempt_paths_pass_without_a_principal_match() {
    let pki = Pki::generate().unwrap();
    let rogue_id = spiffe_id("cluster.local", "demo", "db");
    let app = pki.svid("app", APP_ID).unwrap();
    let rogue = pki.svid("rogue", &rogue_id).unwrap();

    let envoy =
        Envoy::start(&pki, &Settings::with_plugin_config(r#"{"exempt_paths":["/healthz"]}"#)).unwrap();
    let cases = [
        Case::new("another service account", Some(&rogue), Expected::allow("exempt", None)).path("/healthz"),
        Case::new("another service account, with a query", Some(&rogue), Expected::allow("exempt", None))
            .path("/healthz?probe=liveness"),
        Case::new("no certificate", None, Expected::allow("exempt", None))
            .path("/healthz")
            .on(Listener::Lenient),
        Case::new(
            "another service account, below the exempt path",
            Some(&rogue),
            Expected::deny("principal_mismatch", Some(&rogue_id)),
        )
        .path("/healthz/more"),
        Case::new(
            "another service account, a longer path",
            Some(&rogue),
            Expected::deny("principal_mismatch", Some(&rogue_id)),
        )
        .path("/healthzz"),
        Case::new(
            "another service account, elsewhere",
            Some(&rogue),
            Expected::deny("principal_mismatch", Some(&rogue_id)),
        )
        .path("/api"),
        Case::new("rightful app, elsewhere", Some(&app), Expected::allow("ok", Some(APP_ID)))
            .path("/api?x=1"),
    ];
    let outcomes = run_cases(&envoy, &pki, &cases).unwrap();
    assert!(all_as_expected(&outcomes), "\n{}", report(&outcomes));
}

/// One request sent with curl (which can say what a probe must not), and what it left behind.
struct Sent {
    status: u16,
    decisions: Vec<(String, String)>,
    counters: std::collections::BTreeMap<String, i64>,
}

fn send(envoy: &Envoy, pki: &Pki, args: &[&str], path: &str) -> loopback_guard_integration::Result<Sent> {
    let position = envoy.log_position();
    let before = envoy.guard_stats()?;
    let url = envoy.url(Listener::Lenient, path);
    let statuses = curl_with(&pki.ca_path(), None, TlsVersion::V1_3, args, &[url])?;
    let counters = envoy.guard_stats()?.guard_changes_since(&before);
    let decisions = envoy
        .decisions_since(position)
        .iter()
        .map(|line| (line.reason().to_owned(), line.field("detail").unwrap_or_default().to_owned()))
        .collect();
    Ok(Sent { status: statuses.first().copied().unwrap_or(0), decisions, counters })
}

#[test]
fn an_exempt_path_admits_bodiless_get_and_head_probes_to_a_loopback_authority_only() {
    let pki = Pki::generate().unwrap();
    // Upgrades on, as Istio's own connection managers have them: an exempt path must not open a
    // tunnel.
    let settings = Settings::with_plugin_config(r#"{"exempt_paths":["/healthz"]}"#).with_websocket_upgrades();
    let envoy = Envoy::start(&pki, &settings).unwrap();
    let probes: [(&str, &[&str]); 3] =
        [("GET", &[]), ("HEAD", &["-I"]), ("GET to localhost", &["-H", "Host: localhost"])];
    for (name, args) in probes {
        let sent = send(&envoy, &pki, args, "/healthz").unwrap();
        assert_eq!(sent.status, 200, "{name}");
        assert_eq!(sent.counters, [("exempt".to_owned(), 1)].into(), "{name}");
    }
    // Each of these, without a certificate, goes through the full check and is denied.
    let not_probes: [(&str, &[&str], &str); 7] = [
        ("POST with a body", &["-X", "POST", "-d", "payload"], "method"),
        ("PUT", &["-X", "PUT", "-d", ""], "method"),
        ("GET with a body", &["-X", "GET", "-d", "payload"], "body"),
        ("chunked GET", &["-X", "GET", "-H", "Transfer-Encoding: chunked", "-d", "x"], "body"),
        (
            "websocket upgrade",
            &[
                "-H",
                "Connection: Upgrade",
                "-H",
                "Upgrade: websocket",
                "-H",
                "Sec-WebSocket-Version: 13",
                "-H",
                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
            ],
            "upgrade",
        ),
        ("another service's authority", &["-H", "Host: db.demo.svc.cluster.local"], "authority"),
        (
            "absolute form",
            &["--http1.1", "--request-target", "http://db.demo.svc.cluster.local/healthz"],
            "authority",
        ),
    ];
    for (name, args, why) in not_probes {
        let sent = send(&envoy, &pki, args, "/healthz").unwrap();
        assert_eq!(sent.status, 403, "{name}: {:?}", sent.decisions);
        assert_eq!(sent.counters, [("denied.no_client_certificate".to_owned(), 1)].into(), "{name}");
        match sent.decisions.as_slice() {
            [(reason, detail)] => {
                assert_eq!(reason, "no_client_certificate", "{name}");
                assert!(detail.starts_with("exempt path, but") && detail.contains(why), "{name}: {detail}");
            }
            other => panic!("{name}: expected one decision line, got {other:?}"),
        }
    }
}

/// Issue 17: a Host that only begins like a loopback authority (or like an `exempt_authorities`
/// entry) is no probe's. Without a certificate it is denied by the full check, and it never
/// reaches the `*.evil.example` virtual host that routing would otherwise pick for it.
#[test]
fn a_look_alike_authority_is_checked_in_full_and_never_routed_elsewhere() {
    let pki = Pki::generate().unwrap();
    // Every line logged, however fast the requests come (the limiter is tested elsewhere).
    let config = format!("{},\"log_lines_per_second\":10000}}", PROBE_CONFIG.trim_end_matches('}'));
    let envoy =
        Envoy::start(&pki, &Settings::with_plugin_config(&config).with_look_alike_virtual_host()).unwrap();
    // The look-alike virtual host is there: the rightful app naming it is routed to it.
    let app = pki.svid("app", APP_ID).unwrap();
    let url = envoy.url(Listener::Strict, "/healthz");
    let host = ["--http1.1", "-H", "Host: api.evil.example"];
    assert_eq!(
        curl_with(&pki.ca_path(), Some(&app), TlsVersion::V1_3, &host, &[url]).unwrap(),
        [LOOK_ALIKE_STATUS]
    );

    let before = envoy.guard_stats().unwrap();
    let (mut exempt, mut denied, mut refused_by_envoy) = (0, 0, vec![]);
    for (index, (raw, expected)) in PROBE_AUTHORITIES.iter().enumerate() {
        let header = format!("Host: {raw}");
        let sent = send(&envoy, &pki, &["--http1.1", "-H", &header], "/healthz").unwrap();
        assert_ne!(sent.status, LOOK_ALIKE_STATUS, "{raw:?} reached the look-alike virtual host");
        if *expected == ProbeAuthority::Admitted {
            assert_eq!(sent.status, 200, "{raw:?}: {:?}", sent.decisions);
            assert_eq!(sent.counters, [("exempt".to_owned(), 1)].into(), "{raw:?}");
            assert_eq!(sent.decisions, [("exempt".to_owned(), String::new())], "{raw:?}");
            exempt += 1;
            continue;
        }
        // Envoy itself refuses some (non-ASCII, for one) with a 400 before any filter runs;
        // never one of the seven issue 17 found, which every supported Envoy lets through.
        if sent.status == 400 && *expected == ProbeAuthority::Unparsed && index >= ISSUE_17_FINDINGS {
            assert!(sent.decisions.is_empty() && sent.counters.is_empty(), "{raw:?}: {:?}", sent.decisions);
            refused_by_envoy.push(*raw);
            continue;
        }
        let why = match expected {
            ProbeAuthority::Unparsed => "its authority does not parse as host[:port]",
            _ => "its authority is neither a loopback host nor in exempt_authorities",
        };
        assert_eq!(sent.status, 403, "{raw:?}: {:?}", sent.decisions);
        assert_eq!(sent.counters, [("denied.no_client_certificate".to_owned(), 1)].into(), "{raw:?}");
        let want = ("no_client_certificate".to_owned(), format!("exempt path, but {why}: checked in full"));
        assert_eq!(sent.decisions, [want], "{raw:?}");
        denied += 1;
    }
    // Over the whole run, too: the counters rose by exactly what was sent.
    let changes = envoy.guard_stats().unwrap().guard_changes_since(&before);
    let want = [("denied.no_client_certificate".to_owned(), denied), ("exempt".to_owned(), exempt)].into();
    assert_eq!(changes, want);
    println!("refused by Envoy itself (400): {refused_by_envoy:?}");
}

/// How many of [`PROBE_AUTHORITIES`]' first entries issue 17 found admitted.
const ISSUE_17_FINDINGS: usize = 7;
