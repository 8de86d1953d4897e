//! TLS session resumption, which Envoy keeps on unless a listener turns it off.
//!
//! Envoy does not validate the client certificate of a resumed session again, and from 1.39
//! reports it as not validated (envoyproxy/envoy#21235). The filter admits a resumed session
//! when this Envoy validated the same certificate on a full handshake (on any worker), and
//! keeps denying a certificate Envoy never validated, resumed or not (docs/envoy-versions.md).
//! Every Envoy here runs two workers, as an Istio sidecar does, so sessions created on one
//! worker resume on the other.

use std::collections::BTreeSet;

use loopback_guard_integration::client::{curl, Client, TlsVersion};
use loopback_guard_integration::envoy::{envoy_version, Envoy, Listener, Settings, Validator};
use loopback_guard_integration::pki::{Authority, CertSpec, Pki, APP_ID};
use loopback_guard_integration::scenario::BACKEND_BODY;

/// Connections per client run: enough that, with two workers, resumed sessions land on the
/// worker that did not see the full handshake (the odds of not are 1 in 2^11).
const CONNECTIONS: usize = 12;

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

#[test]
fn with_resumption_on_the_rightful_app_is_admitted_on_every_connection_and_worker() {
    let version = envoy_version().unwrap();
    let pki = Pki::generate().unwrap();
    let app = pki.svid("app", APP_ID).unwrap();
    let settings = Settings::with_plugin_config(r#"{"log_allowed":"all"}"#).with_session_resumption();
    let envoy = Envoy::start(&pki, &settings).unwrap();
    let urls: Vec<String> =
        (0..CONNECTIONS).map(|n| envoy.url(Listener::Strict, &format!("/r{n}"))).collect();

    for tls in [TlsVersion::V1_3, TlsVersion::V1_2] {
        let position = envoy.log_position();
        let before = envoy.guard_stats().unwrap();
        let tls_before = envoy.listener_tls_stats(Listener::Strict).unwrap();
        let statuses = curl(&pki.ca_path(), Some(&app), tls, &urls).unwrap();
        let tls_after = envoy.listener_tls_stats(Listener::Strict).unwrap();
        let changes = envoy.guard_stats().unwrap().guard_changes_since(&before);
        let decisions = envoy.decisions_since(position);

        let reused =
            tls_after.get("session_reused").unwrap_or(&0) - tls_before.get("session_reused").unwrap_or(&0);
        assert_eq!(
            reused as usize,
            CONNECTIONS - 1,
            "Envoy {version}, {tls}: curl did not resume: {tls_after:?}"
        );
        assert_eq!(statuses, vec![200; CONNECTIONS], "Envoy {version}, {tls}: {decisions:#?}");
        let reasons: Vec<_> = decisions.iter().map(|line| (line.decision(), line.reason())).collect();
        assert_eq!(reasons, vec![("allow", "ok"); CONNECTIONS], "Envoy {version}, {tls}");
        // Counted across both workers: Envoy adds up each worker's Wasm counters in /stats.
        assert_eq!(changes, [("allowed".to_owned(), CONNECTIONS as i64)].into(), "Envoy {version}, {tls}");
        let threads: BTreeSet<&str> = decisions.iter().map(|line| line.thread.as_str()).collect();
        assert_eq!(threads.len(), 2, "Envoy {version}, {tls}: both workers decided: {threads:?}");
        if version.has_peer_certificate_valid() {
            // The resumed connections were admitted because the first one validated the
            // certificate, and say so.
            let resumed =
                decisions.iter().filter(|line| line.field("detail").is_some_and(|d| d.contains("resumed")));
            assert_eq!(resumed.count(), CONNECTIONS - 1, "Envoy {version}, {tls}: {decisions:#?}");
        }
    }
}

#[test]
fn a_certificate_envoy_never_validated_stays_denied_resumed_or_not() {
    let version = envoy_version().unwrap();
    let pki = Pki::generate().unwrap();
    let app = pki.svid("app", APP_ID).unwrap();
    // Another root, which the listener does not trust, issues the pod's own identity.
    let foreign_ca = Authority::generate("foreign CA").unwrap();
    let foreign = pki.issue_by(&foreign_ca, "foreign", &CertSpec::svid(APP_ID)).unwrap();
    // ACCEPT_UNTRUSTED lets a certificate that fails validation through to the filter, marked
    // as not validated (the SPIFFE validator does not implement it: the default one here).
    let settings = Settings::with_plugin_config("")
        .with_session_resumption()
        .accepting_untrusted()
        .validator(Validator::ChainOnly);
    let envoy = Envoy::start(&pki, &settings).unwrap();
    let urls: Vec<String> = (0..4).map(|n| envoy.url(Listener::Strict, &format!("/u{n}"))).collect();

    for tls in [TlsVersion::V1_3, TlsVersion::V1_2] {
        let position = envoy.log_position();
        let before = envoy.guard_stats().unwrap();
        let tls_before = envoy.listener_tls_stats(Listener::Strict).unwrap();
        let statuses = curl(&pki.ca_path(), Some(&foreign), tls, &urls).unwrap();
        let tls_after = envoy.listener_tls_stats(Listener::Strict).unwrap();
        let changes = envoy.guard_stats().unwrap().guard_changes_since(&before);
        let decisions = envoy.decisions_since(position);
        let reused =
            tls_after.get("session_reused").unwrap_or(&0) - tls_before.get("session_reused").unwrap_or(&0);
        assert_eq!(reused, 3, "Envoy {version}, {tls}: curl did not resume: {tls_after:?}");
        if version.has_peer_certificate_valid() {
            assert_eq!(statuses, vec![403; 4], "Envoy {version}, {tls}");
            assert_eq!(changes, [("denied.certificate_unvalidated".to_owned(), 4)].into());
            // Denial lines: the first per connection and reason, within the rate.
            let reasons: Vec<_> = decisions.iter().map(|line| (line.decision(), line.reason())).collect();
            assert_eq!(reasons, vec![("deny", "certificate_unvalidated"); 4], "Envoy {version}, {tls}");
        } else {
            // Before 1.39 Envoy does not tell the filter that it did not validate: the
            // listener's validation is the only guard, as the notice below says.
            assert_eq!(statuses, vec![200; 4], "Envoy {version}, {tls}");
        }
    }
    // The rightful app on the same listener is admitted on every connection.
    let statuses = curl(&pki.ca_path(), Some(&app), TlsVersion::V1_3, &urls).unwrap();
    assert_eq!(statuses, vec![200; 4], "Envoy {version}");

    let notices = envoy.log().matches("does not report connection.peer_certificate_valid").count();
    let want = usize::from(!version.has_peer_certificate_valid());
    assert_eq!(notices, want, "Envoy {version}: the notice, once per Envoy on versions without the property");
}
