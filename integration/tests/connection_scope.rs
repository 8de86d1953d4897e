//! Connection scope in a real Envoy: the module as a network filter (envoy-config/
//! loopback-guard-connection.yaml), deciding once per connection at its first bytes.
//!
//! The battery's kinds of peer get the same verdict and reason from the network filter as from
//! the HTTP filter (each asked in its own Envoy, with the same certificates); on the HTTP
//! listener native RBAC answers a denied connection's requests with its 403 on the filter
//! state the guard set; on the TCP listener a denied peer's bytes never reach the upstream.
//! On Envoy before 1.38 there is no `connection.peer_certificate` and no XFCC header on a
//! connection: every certificate is denied `certificate_unavailable` (docs/architecture.md).

use std::collections::BTreeSet;
use std::thread;
use std::time::Duration;

use loopback_guard_integration::client::{curl, Client, TlsVersion};
use loopback_guard_integration::connection::{has_upstream_connect_mode, settings, tls_exchange, Recorder};
use loopback_guard_integration::envoy::{envoy_version, Envoy, Listener, Settings, Validator};
use loopback_guard_integration::pki::{spiffe_id, Authority, CertSpec, Credential, Pki, APP_ID};
use loopback_guard_integration::scenario::{observe, BACKEND_BODY};
use time::OffsetDateTime;

const RBAC_BODY: &str = "RBAC: access denied";

struct Peer {
    name: &'static str,
    credential: Option<Credential>,
    /// Served on the lenient listener (no certificate), else on the strict one.
    lenient: bool,
}

/// The battery's kinds of peer. Foreign CA and expired are refused by Envoy's TLS in both
/// modes; the rest reach the filter (the chain-only validator, as Istio's).
fn peers(pki: &Pki) -> Vec<Peer> {
    let now = OffsetDateTime::now_utc();
    let other_ca = Authority::generate("another CA").unwrap();
    let rogue = spiffe_id("cluster.local", "demo", "rogue");
    let issue = |name: &str, spec: &CertSpec| Some(pki.issue(name, spec).unwrap());
    let strict = |name, credential| Peer { name, credential, lenient: false };
    vec![
        strict("rightful", issue("rightful", &CertSpec::svid(APP_ID))),
        strict("rogue service account", issue("rogue", &CertSpec::svid(&rogue))),
        strict("foreign CA", Some(pki.issue_by(&other_ca, "foreign", &CertSpec::svid(APP_ID)).unwrap())),
        Peer { name: "no certificate", credential: None, lenient: true },
        strict("two URI SANs", issue("two-sans", &CertSpec::svid(APP_ID).with_uri_sans([APP_ID, &rogue]))),
        strict("CA as leaf", issue("ca-leaf", &CertSpec::svid(APP_ID).as_ca())),
        strict(
            "expired",
            issue(
                "expired",
                &CertSpec::svid(APP_ID)
                    .valid_between(now - time::Duration::days(2), now - time::Duration::days(1)),
            ),
        ),
    ]
}

/// What one peer got: the status (or `refused`) and the decision line's verdict and reason.
#[derive(Debug, PartialEq, Eq, Clone)]
struct Verdict {
    status: String,
    decision: Option<(String, String)>,
}

fn ask(envoy: &Envoy, pki: &Pki, peer: &Peer, path: &str) -> (Verdict, Vec<String>) {
    let listener = if peer.lenient { Listener::Lenient } else { Listener::Strict };
    let seen = observe(envoy, pki, listener, peer.credential.as_ref(), path).unwrap();
    let decision = seen.decision().map(|line| (line.decision().to_owned(), line.reason().to_owned()));
    let mut notes = Vec::new();
    if let Some(line) = seen.decision() {
        notes.push(format!("scope={:?}", line.field("scope")));
        notes.push(format!("counters={:?}", seen.counters));
        if let Ok(reply) = &seen.reply {
            notes.push(format!("body={:?}", reply.body));
        }
    }
    (Verdict { status: seen.status_text(), decision }, notes)
}

#[test]
fn every_kind_of_peer_gets_the_same_verdict_and_reason_per_connection_as_per_request() {
    let version = envoy_version().unwrap();
    let pki = Pki::generate().unwrap();
    let peers = peers(&pki);
    let http = Envoy::start(&pki, &Settings::with_plugin_config("").validator(Validator::ChainOnly)).unwrap();
    let upstream = Recorder::start().unwrap();
    let (connection_settings, tcp_port) = settings("", upstream.port()).unwrap();
    let connection = Envoy::start(&pki, &connection_settings.validator(Validator::ChainOnly)).unwrap();

    let mut problems = Vec::new();
    for peer in &peers {
        let (per_request, _) = ask(&http, &pki, peer, "/orders");
        let (per_connection, notes) = ask(&connection, &pki, peer, "/orders");
        let want = match (&per_request.decision, version.has_peer_certificate()) {
            // No property and no XFCC on a connection before 1.38: never allowed.
            (Some((_, reason)), false) if reason != "no_client_certificate" => Verdict {
                status: "403".into(),
                decision: Some(("deny".into(), "certificate_unavailable".into())),
            },
            _ => per_request.clone(),
        };
        if per_connection != want {
            problems.push(format!(
                "{}: per request {per_request:?}, per connection {per_connection:?}, want {want:?}",
                peer.name
            ));
        }
        if let Some((verdict, reason)) = &per_connection.decision {
            let counter = match verdict.as_str() {
                "allow" => "allowed".to_owned(),
                _ => format!("denied.{reason}"),
            };
            let body = if verdict == "allow" { BACKEND_BODY } else { RBAC_BODY };
            let want_notes = [
                "scope=Some(\"connection\")".to_owned(),
                format!("counters={{\"{counter}\": 1}}"),
                format!("body={body:?}"),
            ];
            if notes != want_notes {
                problems.push(format!("{}: {notes:?}, want {want_notes:?}", peer.name));
            }
        }
        // The same peer on the TCP listener: its bytes round-trip only if it is admitted.
        if !peer.lenient {
            let before = upstream.seen();
            let payload = format!("hello from {}\n", peer.name).into_bytes();
            let echoed =
                tls_exchange(&pki, peer.credential.as_ref(), tcp_port, &payload, Duration::from_secs(3))
                    .unwrap();
            thread::sleep(Duration::from_millis(200));
            let after = upstream.seen();
            let arrived = after.bytes.len() - before.bytes.len();
            let allowed = want.decision.as_ref().is_some_and(|(verdict, _)| verdict == "allow");
            match allowed {
                true if echoed != payload || arrived != payload.len() => problems
                    .push(format!("{} over TCP: echoed {echoed:?}, {arrived} bytes arrived", peer.name)),
                false if !echoed.is_empty() || arrived != 0 => problems.push(format!(
                    "{} over TCP: denied, yet echoed {echoed:?}, {arrived} bytes arrived",
                    peer.name
                )),
                false if has_upstream_connect_mode().unwrap() && after.connections != before.connections => {
                    problems
                        .push(format!("{} over TCP: denied, yet the upstream saw a connection", peer.name))
                }
                _ => {}
            }
        }
        eprintln!("{:<22} per request {per_request:?} | per connection {per_connection:?}", peer.name);
    }
    assert!(problems.is_empty(), "Envoy {version}:\n{}", problems.join("\n"));
}
