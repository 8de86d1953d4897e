//! A client that keeps its TLS session cache (as most HTTP clients do) opens every connection
//! after the first with a session ticket. Envoy does not re-validate a resumed session's client
//! certificate and reports it as unvalidated, so the listener must turn resumption off for the
//! filter to admit the rightful app on every connection.

use loopback_guard_integration::client::Client;
use loopback_guard_integration::envoy::{Envoy, Listener, Settings};
use loopback_guard_integration::pki::{Pki, APP_ID};
use loopback_guard_integration::scenario::BACKEND_BODY;

#[test]
fn a_client_that_resumes_tls_sessions_is_admitted_on_every_connection() {
    let pki = Pki::generate().unwrap();
    let app = pki.svid("app", APP_ID).unwrap();
    let envoy = Envoy::start(&pki, &Settings::with_plugin_config("")).unwrap();

    // One client, so one TLS session cache; it opens a new connection per request.
    let client = Client::new(&pki.ca_path(), Some(&app)).unwrap();
    let position = envoy.log_position();
    let before = envoy.guard_stats().unwrap();
    let replies: Vec<_> = (0..3).map(|_| client.get(&envoy.url(Listener::Strict, "/")).unwrap()).collect();
    let changes = envoy.guard_stats().unwrap().guard_changes_since(&before);
    let decisions: Vec<_> = envoy
        .decisions_since(position)
        .iter()
        .map(|line| (line.decision().to_owned(), line.reason().to_owned()))
        .collect();

    for reply in &replies {
        assert_eq!((reply.status, reply.body.as_str()), (200, BACKEND_BODY), "{decisions:?}");
    }
    assert_eq!(decisions, vec![("allow".to_owned(), "ok".to_owned()); 3]);
    assert_eq!(changes, [("allowed".to_owned(), 3)].into());
}
