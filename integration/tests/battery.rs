//! The certificate battery: one client certificate per way an X509-SVID can be wrong, each
//! generated now from the test CA (or, for the handshake cases, from another CA or out of its
//! validity), sent to one real Envoy. Every row is denied with its own reason, or refused by
//! Envoy's TLS before the filter runs; none is ever allowed. The rightful app is asked first
//! and last, so the battery also shows that the same Envoy still admits it afterwards.
//!
//! Each row checks the status and body, exactly one decision line (decision, reason, peer
//! principal, level, path, and the digest of the certificate sent), the counter, and the access
//! log; a refused handshake checks that the filter never ran and which TLS counter Envoy raised.
//! The expected outcomes are the same on every Envoy version: before 1.38 the filter reads the
//! certificate from the XFCC element this proxy sets (docs/envoy-versions.md) and must reach the
//! same verdict on it.

use loopback_guard_integration::envoy::{Envoy, Listener, Settings, Validator};
use loopback_guard_integration::pki::{
    spiffe_id, Authority, CertSpec, Credential, KeyUsagePurpose, Pki, APP_ID,
};
use loopback_guard_integration::scenario::{report, run_cases, Case, Expected, Outcome};
use time::{Duration, OffsetDateTime};

/// What a row's certificate must lead to.
enum Want {
    /// Denied with this reason; the SVID names no principal (it is not a valid X509-SVID).
    Refused(&'static str),
    /// A valid X509-SVID of another principal: denied `principal_mismatch`, naming it.
    Mismatch,
    /// Envoy's TLS refuses the handshake, and raises this counter of the listener's TLS stats.
    Handshake(&'static str),
    Allowed,
}

/// One row: a name, who issues the certificate, what goes into it, and what must happen.
struct Row {
    name: &'static str,
    spec: CertSpec,
    issuer: Issuer,
    want: Want,
}

enum Issuer {
    TrustedCa,
    OtherCa,
}

fn row(name: &'static str, spec: CertSpec, want: Want) -> Row {
    Row { name, spec, issuer: Issuer::TrustedCa, want }
}

fn uri(name: &'static str, uri: &str, want: Want) -> Row {
    row(name, CertSpec::svid(APP_ID).with_uri_sans([uri]), want)
}

fn raw_uri(name: &'static str, bytes: &[u8], want: Want) -> Row {
    row(name, CertSpec::svid(APP_ID).with_raw_uri_sans([bytes.to_vec()]), want)
}

/// A valid SPIFFE ID of exactly `len` bytes in the test trust domain.
fn id_of_length(len: usize) -> String {
    let prefix = "spiffe://cluster.local/ns/demo/sa/";
    format!("{prefix}{}", "a".repeat(len - prefix.len()))
}

fn rows() -> Vec<Row> {
    use Want::*;
    let db_id = spiffe_id("cluster.local", "demo", "db");
    let now = OffsetDateTime::now_utc();
    let svid = || CertSpec::svid(APP_ID);
    vec![
        row("rightful app", svid(), Allowed),
        // How many URIs
        row(
            "two URI SANs, the rightful ID first",
            svid().with_uri_sans([APP_ID, &db_id]),
            Refused("svid_uri_san_count"),
        ),
        row(
            "two URI SANs, the rightful ID second",
            svid().with_uri_sans([&db_id, APP_ID]),
            Refused("svid_uri_san_count"),
        ),
        row("the rightful ID twice", svid().with_uri_sans([APP_ID, APP_ID]), Refused("svid_uri_san_count")),
        row(
            "no SAN, the ID as subject CN only",
            svid().with_uri_sans(Vec::<String>::new()),
            Refused("svid_uri_san_count"),
        ),
        row(
            "DNS SAN only",
            svid().with_uri_sans(Vec::<String>::new()).with_dns_sans(["app.demo.svc.cluster.local"]),
            Refused("svid_uri_san_count"),
        ),
        // Not a SPIFFE ID, or not one in canonical form
        uri("https URI", "https://cluster.local/ns/demo/sa/app", Refused("svid_bad_spiffe_id")),
        uri("urn URI", "urn:spiffe:cluster.local:ns:demo:sa:app", Refused("svid_bad_spiffe_id")),
        uri("empty URI", "", Refused("svid_bad_spiffe_id")),
        uri("trust domain only", "spiffe://cluster.local", Refused("svid_bad_spiffe_id")),
        uri("uppercase trust domain", "spiffe://CLUSTER.local/ns/demo/sa/app", Refused("svid_bad_spiffe_id")),
        uri("uppercase scheme", "SPIFFE://cluster.local/ns/demo/sa/app", Refused("svid_bad_spiffe_id")),
        uri("trailing slash", "spiffe://cluster.local/ns/demo/sa/app/", Refused("svid_bad_spiffe_id")),
        uri("empty segment", "spiffe://cluster.local/ns/demo//sa/app", Refused("svid_bad_spiffe_id")),
        uri("dot segment /./", "spiffe://cluster.local/ns/demo/./sa/app", Refused("svid_bad_spiffe_id")),
        uri(
            "dot-dot segment /../",
            "spiffe://cluster.local/ns/demo/sa/x/../app",
            Refused("svid_bad_spiffe_id"),
        ),
        uri(
            "percent-encoded character",
            "spiffe://cluster.local/ns/demo/sa/%61pp",
            Refused("svid_bad_spiffe_id"),
        ),
        uri(
            "percent-encoded slash",
            "spiffe://cluster.local/ns/demo%2Fsa/app",
            Refused("svid_bad_spiffe_id"),
        ),
        uri("query", "spiffe://cluster.local/ns/demo/sa/app?x=1", Refused("svid_bad_spiffe_id")),
        uri("empty query", "spiffe://cluster.local/ns/demo/sa/app?", Refused("svid_bad_spiffe_id")),
        uri("fragment", "spiffe://cluster.local/ns/demo/sa/app#f", Refused("svid_bad_spiffe_id")),
        uri("port", "spiffe://cluster.local:443/ns/demo/sa/app", Refused("svid_bad_spiffe_id")),
        uri("userinfo", "spiffe://app@cluster.local/ns/demo/sa/app", Refused("svid_bad_spiffe_id")),
        uri("space", "spiffe://cluster.local/ns/demo/sa/app x", Refused("svid_bad_spiffe_id")),
        uri("2049-byte ID", &id_of_length(2049), Refused("svid_bad_spiffe_id")),
        // Bytes rcgen will not write into an IA5String: built by hand.
        raw_uri(
            "non-ASCII, UTF-8 (app\u{e9})",
            "spiffe://cluster.local/ns/demo/sa/app\u{e9}".as_bytes(),
            Refused("svid_bad_spiffe_id"),
        ),
        raw_uri(
            "non-ASCII, a Latin-1 byte",
            b"spiffe://cluster.local/ns/demo/sa/app\xe9",
            Refused("svid_bad_spiffe_id"),
        ),
        raw_uri(
            "non-ASCII trust domain",
            "spiffe://cl\u{fc}ster.local/ns/demo/sa/app".as_bytes(),
            Refused("svid_bad_spiffe_id"),
        ),
        raw_uri(
            "a NUL byte after the rightful ID",
            b"spiffe://cluster.local/ns/demo/sa/app\0.evil",
            Refused("svid_bad_spiffe_id"),
        ),
        // Valid SPIFFE IDs, but not the pod's: exact match only
        uri("a path that extends the rightful ID", &format!("{APP_ID}/extra"), Mismatch),
        uri("a prefix look-alike", &format!("{APP_ID}x"), Mismatch),
        uri("2048-byte ID (valid, another principal)", &id_of_length(2048), Mismatch),
        // Not a leaf
        row("basicConstraints CA:TRUE", svid().as_ca(), Refused("svid_not_leaf")),
        row(
            "keyCertSign",
            svid().with_key_usages([KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyCertSign]),
            Refused("svid_not_leaf"),
        ),
        row(
            "cRLSign",
            svid().with_key_usages([KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::CrlSign]),
            Refused("svid_not_leaf"),
        ),
        // Envoy's own validation
        Row {
            name: "another CA",
            spec: svid(),
            issuer: Issuer::OtherCa,
            want: Handshake("fail_verify_error"),
        },
        row(
            "expired",
            svid().valid_between(now - Duration::days(2), now - Duration::days(1)),
            Handshake("fail_verify_error"),
        ),
        row(
            "not yet valid",
            svid().valid_between(now + Duration::days(1), now + Duration::days(2)),
            Handshake("fail_verify_error"),
        ),
        row("rightful app, after all of the above", svid(), Allowed),
    ]
}

/// Whether Envoy's SPIFFE validator refuses the row's certificate before the filter sees it: a
/// CA or a certificate that may sign (its leaf precheck), or one whose first URI SAN does not
/// name the listener's trust domain as `spiffe://<trust domain>/...` (the bundle it looks up).
fn spiffe_validator_refuses(row: &Row) -> bool {
    let signs = row.spec.ca
        || row
            .spec
            .key_usages
            .iter()
            .any(|u| matches!(u, KeyUsagePurpose::KeyCertSign | KeyUsagePurpose::CrlSign));
    let first_uri = match &row.spec.raw_uri_sans {
        Some(raw) => raw.first().map(|bytes| String::from_utf8_lossy(bytes).into_owned()),
        None => row.spec.uri_sans.first().cloned(),
    };
    let trust_domain = first_uri
        .as_deref()
        .and_then(|uri| uri.strip_prefix("spiffe://"))
        .and_then(|rest| rest.split_once('/'))
        .map(|(domain, _)| domain.to_owned());
    signs || trust_domain.as_deref() != Some("cluster.local")
}

/// The filter's own X509-SVID checks: behind a listener that validates the chain only (as
/// Istio's ROOTCA over SDS does), every row reaches the filter and is denied with its reason.
#[test]
fn every_malformed_svid_is_denied_with_its_own_reason() {
    run_battery(Validator::ChainOnly);
}

/// The shipped listener (Envoy's SPIFFE validator) refuses in the handshake what is not an
/// X509-SVID of its trust domain; the filter still denies the rest with its reason.
#[test]
fn on_the_shipped_listener_envoy_refuses_what_is_not_an_svid_of_the_trust_domain() {
    run_battery(Validator::Spiffe);
}

// The body of the two tests above: a failure is a test failure.
#[allow(clippy::unwrap_used, clippy::panic)]
fn run_battery(validator: Validator) {
    let pki = Pki::generate().unwrap();
    let other_ca = Authority::generate("another CA").unwrap();
    let mut rows = rows();
    if validator == Validator::Spiffe {
        for row in &mut rows {
            if spiffe_validator_refuses(row) {
                row.want = Want::Handshake("fail_verify_error");
            }
        }
    }
    let credentials: Vec<Credential> = rows
        .iter()
        .enumerate()
        .map(|(i, row)| {
            let name = format!("battery-{i:02}");
            match row.issuer {
                Issuer::TrustedCa => pki.issue(&name, &row.spec),
                Issuer::OtherCa => pki.issue_by(&other_ca, &name, &row.spec),
            }
            .unwrap_or_else(|err| panic!("{}: {err}", row.name))
        })
        .collect();

    let cases: Vec<Case> = rows
        .iter()
        .zip(&credentials)
        .map(|(row, credential)| {
            let expected = match row.want {
                Want::Allowed => Expected::allow("ok", Some(APP_ID)),
                Want::Refused(reason) => Expected::deny(reason, None),
                Want::Mismatch => {
                    Expected::deny("principal_mismatch", row.spec.uri_sans.first().map(String::as_str))
                }
                Want::Handshake(_) => Expected::HandshakeRefused,
            };
            Case::new(row.name, Some(credential), expected).on(Listener::Strict)
        })
        .collect();

    // Long enough for the 2048-byte SPIFFE ID to be logged whole.
    let settings = Settings::with_plugin_config(r#"{"log_field_max_bytes":4096}"#).validator(validator);
    let envoy = Envoy::start(&pki, &settings).unwrap();
    let outcomes = run_cases(&envoy, &pki, &cases).unwrap();
    let mut problems: Vec<String> = Vec::new();
    for ((row, credential), outcome) in rows.iter().zip(&credentials).zip(&outcomes) {
        problems.extend(more_problems(row, credential, outcome));
    }
    // Shown with --nocapture (and by the matrix script's log), so a run documents each row.
    eprintln!("{}", report(&outcomes));
    let all_ok = outcomes.iter().all(Outcome::as_expected) && problems.is_empty();
    assert!(all_ok, "\n{}\n{}", report(&outcomes), problems.join("\n"));
}

/// What the scenario does not check itself: the certificate the decision names, and why a
/// handshake was refused.
fn more_problems(row: &Row, credential: &Credential, outcome: &Outcome) -> Vec<String> {
    let mut problems = Vec::new();
    match row.want {
        Want::Handshake(counter) => {
            if outcome.observation.tls_counters.get(counter) != Some(&1) {
                problems.push(format!(
                    "  {}: expected the listener's ssl.{counter} to go up by 1, TLS counters changed: {:?}",
                    row.name, outcome.observation.tls_counters
                ));
            }
        }
        _ => {
            let logged = outcome.observation.decision().and_then(|line| line.field("cert_sha256"));
            let sent = credential.sha256_hex();
            if logged != Some(sent.as_str()) {
                problems
                    .push(format!("  {}: decision log names certificate {logged:?}, sent {sent}", row.name));
            }
        }
    }
    problems
}
