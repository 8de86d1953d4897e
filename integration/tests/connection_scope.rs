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
use loopback_guard_integration::connection::{
    has_upstream_connect_mode, settings, tls_exchange, Recorder, TlsSession,
};
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

// Test helpers: a failure is a test failure.
#[allow(clippy::unwrap_used)]
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

#[allow(clippy::unwrap_used)]
fn ask(envoy: &Envoy, pki: &Pki, peer: &Peer, path: &str) -> (Verdict, Vec<String>) {
    let listener = if peer.lenient { Listener::Lenient } else { Listener::Strict };
    let seen = observe(envoy, pki, listener, peer.credential.as_ref(), path).unwrap();
    let decision = seen.decision().map(|line| (line.decision().to_owned(), line.reason().to_owned()));
    let mut notes = Vec::new();
    if let Some(line) = seen.decision() {
        notes.push(format!("scope={:?}", line.field("scope")));
        // The request's access log line reads the verdict the connection set (connection
        // scope always sets it; the HTTP filter here is not asked to).
        if line.field("scope").is_some() {
            let logged = seen
                .access_log
                .first()
                .map(|entry| (entry["guard_decision"].clone(), entry["guard_reason"].clone()));
            let want = Some((line.decision().into(), line.reason().into()));
            if logged != want {
                notes.push(format!("access log {logged:?}, want {want:?}"));
            }
        }
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
                tls_exchange(&pki, peer.credential.as_ref(), tcp_port, &payload, Duration::from_secs(8))
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

/// `n` HTTP/1.1 GETs of `path` for `authority`, pipelined on one connection.
fn pipelined(n: usize, path: &str, authority: &str, extra: &str) -> Vec<u8> {
    (0..n)
        .map(|_| format!("GET {path} HTTP/1.1\r\nhost: {authority}\r\n{extra}\r\n"))
        .collect::<String>()
        .into_bytes()
}

/// The status codes of the HTTP/1.1 responses in `bytes`, in order.
fn statuses(bytes: &[u8]) -> Vec<u16> {
    let text = String::from_utf8_lossy(bytes);
    text.match_indices("HTTP/1.1 ")
        .filter_map(|(at, _)| text.get(at + 9..at + 12).and_then(|code| code.parse().ok()))
        .collect()
}

#[test]
fn many_requests_on_one_connection_share_one_decision_line_and_one_count() {
    let pki = Pki::generate().unwrap();
    let app = pki.svid("app", APP_ID).unwrap();
    let rogue = pki.svid("rogue", &spiffe_id("cluster.local", "demo", "rogue")).unwrap();
    let upstream = Recorder::start().unwrap();
    let (settings, _) = settings("", upstream.port()).unwrap();
    let envoy = Envoy::start(&pki, &settings).unwrap();
    let port = envoy.ports().strict;
    let version = envoy_version().unwrap();
    let rightful = if version.has_peer_certificate() {
        (200, "allowed", "ok")
    } else {
        (403, "denied.certificate_unavailable", "certificate_unavailable")
    };
    for (who, credential, (status, counter, reason)) in [
        ("rightful", &app, rightful),
        (
            "rogue",
            &rogue,
            if version.has_peer_certificate() {
                (403, "denied.principal_mismatch", "principal_mismatch")
            } else {
                rightful
            },
        ),
    ] {
        let position = envoy.log_position();
        let before = envoy.guard_stats().unwrap();
        // One request after the other on the same connection (keep-alive).
        let mut session = TlsSession::open(&pki, Some(credential), port).unwrap();
        let mut got = Vec::new();
        for n in 1..=5 {
            session.send(&pipelined(1, "/orders", "localhost", ""));
            got = session.received_until(Duration::from_secs(5), |bytes| statuses(bytes).len() >= n);
        }
        drop(session);
        thread::sleep(Duration::from_millis(200));
        let changes = envoy.guard_stats().unwrap().guard_changes_since(&before);
        let lines = envoy.decisions_since(position);
        assert_eq!(statuses(&got), vec![status; 5], "{who}: {}", String::from_utf8_lossy(&got));
        assert_eq!(lines.len(), 1, "{who}: one line per connection: {lines:?}");
        assert_eq!((lines[0].reason(), lines[0].field("scope")), (reason, Some("connection")), "{who}");
        assert_eq!(lines[0].path(), None, "{who}: a connection has no path");
        assert_eq!(changes, [(counter.to_owned(), 1)].into(), "{who}: counted per connection");
    }
}

#[test]
fn rbac_admits_an_exempt_probe_as_strictly_as_the_http_filter_and_nothing_else() {
    let pki = Pki::generate().unwrap();
    let upstream = Recorder::start().unwrap();
    let (settings, _) = settings("", upstream.port()).unwrap();
    let envoy = Envoy::start(&pki, &settings).unwrap();
    let port = envoy.ports().lenient;
    // No client certificate: the connection is denied no_client_certificate, and only a probe
    // gets through RBAC.
    let cases: [(&str, Vec<u8>, u16); 9] = [
        ("GET /healthz to localhost", pipelined(1, "/healthz", "localhost", ""), 200),
        ("HEAD-less GET /healthz to 127.0.0.1:15000", pipelined(1, "/healthz", "127.0.0.1:15000", ""), 200),
        ("GET /healthz?x=1", pipelined(1, "/healthz?x=1", "localhost", ""), 200),
        ("GET /orders", pipelined(1, "/orders", "localhost", ""), 403),
        ("GET /healthz to localhost:99999", pipelined(1, "/healthz", "localhost:99999", ""), 403),
        ("GET /healthz to another service", pipelined(1, "/healthz", "orders.shop.svc", ""), 403),
        ("GET /healthz to a look-alike", pipelined(1, "/healthz", "localhost.evil.example", ""), 403),
        ("GET /healthz with a body", pipelined(1, "/healthz", "localhost", "content-length: 2\r\n"), 403),
        (
            "GET /healthz asking for an upgrade",
            pipelined(1, "/healthz", "localhost", "connection: upgrade\r\nupgrade: websocket\r\n"),
            403,
        ),
    ];
    let mut problems = Vec::new();
    for (name, request, want) in cases {
        let mut request = request;
        if name.contains("with a body") {
            request.extend_from_slice(b"hi");
        }
        let mut session = TlsSession::open(&pki, None, port).unwrap();
        session.send(&request);
        let got =
            statuses(&session.received_until(Duration::from_secs(5), |bytes| !statuses(bytes).is_empty()));
        if got != [want] {
            problems.push(format!("{name}: {got:?}, want {want}"));
        }
    }
    let post = b"POST /healthz HTTP/1.1\r\nhost: localhost\r\ncontent-length: 0\r\n\r\n";
    let mut session = TlsSession::open(&pki, None, port).unwrap();
    session.send(post);
    let got = statuses(&session.received_until(Duration::from_secs(5), |bytes| !statuses(bytes).is_empty()));
    if got != [403] {
        problems.push(format!("POST /healthz: {got:?}, want 403"));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn a_connection_whose_certificate_expires_is_closed_at_its_next_read() {
    let version = envoy_version().unwrap();
    if !version.has_peer_certificate() {
        eprintln!("Envoy {version}: connection scope admits no certificate before 1.38 (nothing expires)");
        return;
    }
    let pki = Pki::generate().unwrap();
    let now = OffsetDateTime::now_utc();
    // Long enough for Envoy to start and the handshake to pass on a loaded machine.
    let not_after = now + time::Duration::seconds(10);
    let short = CertSpec::svid(APP_ID).valid_between(now - time::Duration::minutes(1), not_after);
    let short = pki.issue("short-lived", &short).unwrap();
    let upstream = Recorder::start().unwrap();
    let (settings, tcp_port) = settings("", upstream.port()).unwrap();
    let envoy = Envoy::start(&pki, &settings).unwrap();

    let position = envoy.log_position();
    let mut session = TlsSession::open(&pki, Some(&short), tcp_port).unwrap();
    session.send(b"before\n");
    let echoed = session.received_until(Duration::from_secs(8), |bytes| bytes.len() >= 7);
    assert_eq!(echoed, b"before\n", "{:#?}", envoy.decisions_since(position));
    // notAfter passes (the certificate's times are whole seconds; Envoy's clock may lag ours).
    let left = u64::try_from((not_after - OffsetDateTime::now_utc()).whole_milliseconds()).unwrap_or(0);
    thread::sleep(Duration::from_millis(left + 2000));
    let before = envoy.guard_stats().unwrap();
    session.send(b"after\n");
    let later = session.received_until(Duration::from_secs(3), |bytes| bytes.len() > 7);
    thread::sleep(Duration::from_millis(300));
    assert_eq!(later, b"before\n", "nothing more came back");
    assert!(session.ended(), "Envoy closed the connection");
    assert_eq!(upstream.seen().bytes, b"before\n", "the bytes after expiry never reached the upstream");
    let changes = envoy.guard_stats().unwrap().guard_changes_since(&before);
    assert_eq!(changes, [("denied.svid_expired".to_owned(), 1)].into());
    let reasons: Vec<(String, String)> = envoy
        .decisions_since(position)
        .iter()
        .map(|line| (line.reason().to_owned(), line.field("scope").unwrap_or_default().to_owned()))
        .collect();
    let want =
        [("ok", "connection"), ("svid_expired", "connection")].map(|(a, b)| (a.to_owned(), b.to_owned()));
    assert_eq!(reasons, want);
}

#[test]
fn with_resumption_on_every_connection_on_both_workers_is_decided_and_admitted() {
    let version = envoy_version().unwrap();
    let pki = Pki::generate().unwrap();
    let app = pki.svid("app", APP_ID).unwrap();
    let upstream = Recorder::start().unwrap();
    let (settings, _) = settings("", upstream.port()).unwrap();
    let envoy = Envoy::start(&pki, &settings.with_session_resumption()).unwrap();
    let urls: Vec<String> = (0..12).map(|n| envoy.url(Listener::Strict, &format!("/r{n}"))).collect();
    let want = if version.has_peer_certificate() { (200, "ok") } else { (403, "certificate_unavailable") };
    for tls in [TlsVersion::V1_3, TlsVersion::V1_2] {
        let position = envoy.log_position();
        let tls_before = envoy.listener_tls_stats(Listener::Strict).unwrap();
        let before = envoy.guard_stats().unwrap();
        let statuses = curl(&pki.ca_path(), Some(&app), tls, &urls).unwrap();
        let tls_after = envoy.listener_tls_stats(Listener::Strict).unwrap();
        let changes = envoy.guard_stats().unwrap().guard_changes_since(&before);
        let lines = envoy.decisions_since(position);
        let reused =
            tls_after.get("session_reused").unwrap_or(&0) - tls_before.get("session_reused").unwrap_or(&0);
        assert_eq!(reused, 11, "Envoy {version}, {tls}: curl did not resume");
        assert_eq!(statuses, vec![want.0; 12], "Envoy {version}, {tls}: {lines:#?}");
        let reasons: BTreeSet<_> = lines.iter().map(|line| (line.reason(), line.field("scope"))).collect();
        assert_eq!(reasons, [(want.1, Some("connection"))].into(), "Envoy {version}, {tls}");
        let counter = if want.0 == 200 { "allowed" } else { "denied.certificate_unavailable" };
        assert_eq!(changes.get(counter), Some(&12), "Envoy {version}, {tls}: {changes:?}");
        // Denials beyond the log limit are counted, not logged; every admitted one is logged.
        if want.0 == 200 {
            assert_eq!(lines.len(), 12, "Envoy {version}, {tls}");
            let threads: BTreeSet<&str> = lines.iter().map(|line| line.thread.as_str()).collect();
            assert_eq!(threads.len(), 2, "Envoy {version}, {tls}: both workers decided: {threads:?}");
        }
    }
    // The same client as one full handshake and resumed ones, through the HTTP client too.
    let client = Client::new(&pki.ca_path(), Some(&app)).unwrap();
    for _ in 0..3 {
        let reply = client.get(&envoy.url(Listener::Strict, "/")).unwrap();
        assert_eq!(reply.status, want.0);
    }
}
