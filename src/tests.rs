//! The glue against a fake proxy: what it writes for each kind of outcome, and that a failing
//! host call neither panics nor lets a denied request through.

use std::cell::{Cell, RefCell};

use loopback_guard_core::engine::{Level, Notice, Reply};
use loopback_guard_core::host::{property, HostError};
use loopback_guard_core::pem;
use loopback_guard_core::testing::{CertBuilder, FakeHost};

use crate::filter::apply::{
    configure, on_connection_data, on_request, on_tick, Connection, Counters, Shared,
};
use crate::filter::Writes;

const APP: &str = "spiffe://cluster.local/ns/shop/sa/app";

/// Records every write; `failing` makes each one fail.
#[derive(Default)]
struct FakeProxy {
    failing: Cell<bool>,
    logs: RefCell<Vec<(Level, String)>>,
    counters: RefCell<Vec<String>>,
    increments: RefCell<Vec<String>>,
    filter_state: RefCell<Vec<(String, String)>>,
    replies: RefCell<Vec<Reply>>,
    closes: Cell<usize>,
}

impl FakeProxy {
    fn fail(&self) -> Result<(), HostError> {
        match self.failing.get() {
            true => Err(HostError("status 10".into())),
            false => Ok(()),
        }
    }

    fn decision_lines(&self) -> Vec<serde_json::Value> {
        let logs = self.logs.borrow();
        logs.iter().filter_map(|(_, line)| serde_json::from_str(line).ok()).collect()
    }

    fn take(&self) {
        self.logs.borrow_mut().clear();
        self.increments.borrow_mut().clear();
        self.filter_state.borrow_mut().clear();
        self.replies.borrow_mut().clear();
    }
}

impl Writes for FakeProxy {
    fn log(&self, notice: &Notice) {
        self.logs.borrow_mut().push((notice.level, notice.text.clone()));
    }

    fn define_counter(&self, name: &str) -> Result<u32, HostError> {
        self.fail()?;
        let mut counters = self.counters.borrow_mut();
        counters.push(name.to_owned());
        Ok(u32::try_from(counters.len() - 1).unwrap())
    }

    fn increment(&self, counter: u32) -> Result<(), HostError> {
        let name = self.counters.borrow()[counter as usize].clone();
        self.fail()?;
        self.increments.borrow_mut().push(name);
        Ok(())
    }

    fn set_filter_state(&self, key: &str, value: &str) -> Result<(), HostError> {
        self.fail()?;
        self.filter_state.borrow_mut().push((key.to_owned(), value.to_owned()));
        Ok(())
    }

    fn send_reply(&self, reply: &Reply) -> Result<(), HostError> {
        self.fail()?;
        self.replies.borrow_mut().push(*reply);
        Ok(())
    }

    fn close(&self) -> Result<(), HostError> {
        self.closes.set(self.closes.get() + 1);
        self.fail()
    }
}

fn pod() -> FakeHost {
    FakeHost::default()
        .with_property(&["xds", "node", "metadata", "NAMESPACE"], "shop")
        .with_property(&["xds", "node", "metadata", "SERVICE_ACCOUNT"], "app")
}

fn setup(json: &str) -> (Shared, Counters, FakeProxy) {
    let proxy = FakeProxy::default();
    let counters = Counters::define(&proxy);
    let engine = configure(json.as_bytes(), &pod(), &proxy).unwrap();
    proxy.take();
    (Shared { engine: RefCell::new(engine) }, counters, proxy)
}

/// The app's request on connection `port`, as Envoy 1.40 describes it.
fn request(port: u16) -> FakeHost {
    let cert = CertBuilder::leaf().uri(APP);
    FakeHost::default()
        .with_property(property::SOURCE_ADDRESS, format!("127.0.0.1:{port}"))
        .with_property(property::MTLS, [1])
        .with_property(property::PEER_CERTIFICATE_VALID, [1])
        .with_property(property::PEER_CERTIFICATE, cert.pem())
        .with_property(property::PEER_CERTIFICATE_DIGEST, pem::sha256_hex(&cert.der()))
        .with_header(":path", "/orders?token=secret")
        .with_header(":method", "GET")
}

fn no_certificate() -> FakeHost {
    request(40000)
        .without_property(property::MTLS)
        .without_property(property::PEER_CERTIFICATE)
        .without_property(property::PEER_CERTIFICATE_DIGEST)
        .without_property(property::PEER_CERTIFICATE_VALID)
}

fn state(proxy: &FakeProxy) -> Vec<(String, String)> {
    proxy.filter_state.borrow().clone()
}

fn pair(decision: &str, reason: &str) -> Vec<(String, String)> {
    vec![("loopback_guard.decision".into(), decision.into()), ("loopback_guard.reason".into(), reason.into())]
}

#[test]
fn every_counter_is_defined_up_front() {
    let proxy = FakeProxy::default();
    Counters::define(&proxy);
    let counters = proxy.counters.borrow();
    for name in ["allowed", "exempt", "would_deny", "log_held_back", "denied.no_client_certificate"] {
        assert!(counters.contains(&format!("loopback_guard.{name}")), "{name}: {counters:?}");
    }
    for name in ["denied.unconfigured", "denied.engine_busy", "denied.host_error"] {
        assert!(counters.contains(&format!("loopback_guard.{name}")), "{name}");
    }
    assert!(!counters.iter().any(|c| c.ends_with("denied.ok") || c.ends_with("denied.exempt")));
}

#[test]
fn configuring_says_where_the_principal_comes_from_and_what_is_configured() {
    let proxy = FakeProxy::default();
    assert!(configure(b"{}", &pod(), &proxy).is_some());
    let logs = proxy.logs.borrow();
    assert_eq!(logs.len(), 2, "{logs:?}");
    assert_eq!(logs[0].0, Level::Info);
    assert!(logs[0].1.starts_with("loopback-guard: ") && logs[0].1.contains(APP), "{logs:?}");
    assert!(logs[1].1.starts_with("loopback-guard: configured: mode=enforce "), "{logs:?}");
}

#[test]
fn log_allowed_all_writes_every_allowed_line() {
    let (shared, counters, proxy) = setup(r#"{"log_allowed":"all","filter_state":true}"#);
    for _ in 0..3 {
        assert!(on_request(Some(&shared), &counters, &request(40000), &proxy));
    }
    let lines = proxy.decision_lines();
    assert_eq!(lines.len(), 3);
    assert_eq!((lines[0]["decision"].as_str(), lines[0]["reason"].as_str()), (Some("allow"), Some("ok")));
    assert_eq!(lines[0]["path"], "/orders", "the query string is cut");
    assert_eq!(*proxy.increments.borrow(), vec!["loopback_guard.allowed"; 3]);
    assert_eq!(state(&proxy)[..2], pair("allow", "ok")[..]);
    assert!(proxy.replies.borrow().is_empty());
}

#[test]
fn log_allowed_none_writes_no_allowed_line_but_counts() {
    let (shared, counters, proxy) = setup(r#"{"log_allowed":"none"}"#);
    assert!(on_request(Some(&shared), &counters, &request(40000), &proxy));
    assert!(proxy.decision_lines().is_empty());
    assert_eq!(*proxy.increments.borrow(), vec!["loopback_guard.allowed"]);
    assert!(state(&proxy).is_empty(), "filter state only when asked for");
    assert!(!on_request(Some(&shared), &counters, &no_certificate(), &proxy), "denials are still logged");
    assert_eq!(proxy.decision_lines().len(), 1);
}

#[test]
fn log_allowed_first_per_connection_writes_one_line_per_connection() {
    let (shared, counters, proxy) = setup(r#"{"log_allowed":"first_per_connection"}"#);
    for port in [40000, 40000, 40001, 40000, 40001] {
        assert!(on_request(Some(&shared), &counters, &request(port), &proxy));
    }
    let lines = proxy.decision_lines();
    let addresses: Vec<_> = lines.iter().map(|line| line["source_address"].as_str().unwrap()).collect();
    assert_eq!(addresses, ["127.0.0.1:40000", "127.0.0.1:40001"]);
    assert_eq!(proxy.increments.borrow().len(), 5, "every request is counted");
    // A forwarded address (port 0) is told apart by the connection id instead.
    let forwarded = |id: u64| {
        request(0)
            .with_property(property::SOURCE_ADDRESS, "127.0.0.1:0")
            .with_property(property::CONNECTION_ID, id.to_le_bytes())
    };
    let (shared, counters, proxy) =
        setup(r#"{"log_allowed":"first_per_connection","require_loopback":false}"#);
    for id in [7, 7, 8] {
        assert!(on_request(Some(&shared), &counters, &forwarded(id), &proxy));
    }
    let ids: Vec<_> =
        proxy.decision_lines().iter().map(|line| line["connection_id"].as_u64().unwrap()).collect();
    assert_eq!(ids, [7, 8]);
}

#[test]
fn a_denial_is_logged_counted_recorded_and_answered_403() {
    let (shared, counters, proxy) = setup(r#"{"filter_state":true}"#);
    assert!(!on_request(Some(&shared), &counters, &no_certificate(), &proxy));
    let lines = proxy.decision_lines();
    assert_eq!(
        (lines[0]["decision"].as_str(), lines[0]["reason"].as_str()),
        (Some("deny"), Some("no_client_certificate"))
    );
    assert_eq!(proxy.logs.borrow()[0].0, Level::Warn);
    assert_eq!(*proxy.increments.borrow(), vec!["loopback_guard.denied.no_client_certificate"]);
    assert_eq!(state(&proxy), pair("deny", "no_client_certificate"));
    let replies = proxy.replies.borrow();
    assert_eq!(replies[0].status, 403);
    assert_eq!(replies[0].headers, [("content-type", "text/plain; charset=utf-8")]);
    assert_eq!(replies[0].body, "loopback-guard: denied: no_client_certificate\n");
}

#[test]
fn denials_beyond_the_limit_are_counted_as_held_back_and_summarised() {
    let (shared, counters, proxy) = setup(r#"{"log_lines_per_second":1,"log_summary_seconds":1}"#);
    assert!(!on_request(Some(&shared), &counters, &no_certificate(), &proxy));
    assert!(!on_request(
        Some(&shared),
        &counters,
        &no_certificate().with_property(property::SOURCE_ADDRESS, "127.0.0.1:40001"),
        &proxy
    ));
    assert_eq!(proxy.decision_lines().len(), 1);
    assert_eq!(proxy.increments.borrow().iter().filter(|c| c.ends_with("log_held_back")).count(), 1);
    assert_eq!(proxy.replies.borrow().len(), 2, "held back from the log, still denied");
    proxy.take();
    on_tick(&shared, u64::MAX, &proxy);
    let logs = proxy.logs.borrow();
    assert!(logs[0].1.starts_with(r#"{"decision_lines_held_back":{"no_client_certificate":1}"#), "{logs:?}");
}

#[test]
fn audit_mode_lets_the_request_on_without_a_reply() {
    let (shared, counters, proxy) = setup(r#"{"mode":"audit","filter_state":true}"#);
    assert!(on_request(Some(&shared), &counters, &no_certificate(), &proxy));
    assert_eq!(proxy.decision_lines()[0]["decision"], "would_deny");
    assert_eq!(*proxy.increments.borrow(), vec!["loopback_guard.would_deny"]);
    assert_eq!(state(&proxy), pair("would_deny", "no_client_certificate"));
    assert!(proxy.replies.borrow().is_empty());
}

#[test]
fn without_a_configuration_every_request_is_denied_unconfigured() {
    let proxy = FakeProxy::default();
    let counters = Counters::define(&proxy);
    assert!(configure(br#"{"mode":"enforce","mode":"audit"}"#, &pod(), &proxy).is_none());
    let logs = proxy.logs.borrow().clone();
    assert_eq!(logs.len(), 1);
    assert_eq!(logs[0].0, Level::Error);
    assert!(logs[0].1.starts_with("loopback-guard: "), "{logs:?}");
    proxy.take();
    assert!(!on_request(None, &counters, &request(40000), &proxy));
    let line = &proxy.decision_lines()[0];
    assert_eq!(
        (line["reason"].as_str(), line["detail"].as_str()),
        (Some("unconfigured"), Some("the filter has no valid configuration"))
    );
    assert_eq!(*proxy.increments.borrow(), vec!["loopback_guard.denied.unconfigured"]);
    assert_eq!(proxy.replies.borrow()[0].body, "loopback-guard: denied: unconfigured\n");
}

#[test]
fn an_engine_in_use_denies_engine_busy() {
    let (shared, counters, proxy) = setup("{}");
    let _in_use = shared.engine.borrow_mut();
    assert!(!on_request(Some(&shared), &counters, &request(40000), &proxy));
    assert_eq!(proxy.decision_lines()[0]["reason"], "engine_busy");
    assert_eq!(*proxy.increments.borrow(), vec!["loopback_guard.denied.engine_busy"]);
}

#[test]
fn a_failing_read_denies_host_error() {
    let (shared, counters, proxy) = setup("{}");
    let host = request(40000).with_failing_property(property::PEER_CERTIFICATE_VALID);
    assert!(!on_request(Some(&shared), &counters, &host, &proxy));
    assert_eq!(proxy.decision_lines()[0]["reason"], "host_error");
    assert_eq!(*proxy.increments.borrow(), vec!["loopback_guard.denied.host_error"]);
}

#[test]
fn failing_writes_never_let_a_denied_request_through() {
    let (shared, counters, proxy) = setup("{}");
    proxy.failing.set(true);
    assert!(!on_request(Some(&shared), &counters, &no_certificate(), &proxy), "still paused");
    assert!(proxy.increments.borrow().is_empty() && proxy.replies.borrow().is_empty());
    let logs = proxy.logs.borrow();
    assert!(logs
        .iter()
        .any(|(level, text)| *level == Level::Error && text.contains("cannot send the 403 reply")));
    assert_eq!(proxy.decision_lines().len(), 1, "the decision is still logged");
    drop(logs);
    proxy.take();
    assert!(on_request(Some(&shared), &counters, &request(40000), &proxy), "an allowed request goes on");
}

#[test]
fn counters_that_cannot_be_defined_are_reported_and_skipped() {
    let proxy = FakeProxy::default();
    proxy.failing.set(true);
    let counters = Counters::define(&proxy);
    assert!(proxy
        .logs
        .borrow()
        .iter()
        .all(|(level, text)| *level == Level::Error && text.contains("cannot define counter")));
    proxy.failing.set(false);
    let (shared, _, _) = setup("{}");
    assert!(!on_request(Some(&shared), &counters, &no_certificate(), &proxy));
    assert!(proxy.increments.borrow().is_empty());
}

#[test]
fn an_unexpected_abi_status_is_an_error_not_a_panic() {
    use crate::abi::status;
    assert_eq!(status("set_property", 0), Ok(()));
    // The SDK's wrappers panic on each of these (proxy-wasm 0.2.5 hostcalls.rs); ours return them.
    for code in [1, 2, 3, 4, 5, 7, 8, 10, 99] {
        assert_eq!(status("set_property", code), Err(HostError(format!("set_property: status {code}"))));
    }
}

#[test]
fn the_local_reply_headers_are_serialized_as_the_abi_expects() {
    let bytes = crate::abi::serialize_map(&[("content-type", "text/plain")]);
    let mut expected = vec![1, 0, 0, 0, 12, 0, 0, 0, 10, 0, 0, 0];
    expected.extend_from_slice(b"content-type\0text/plain\0");
    assert_eq!(bytes, expected);
}

#[test]
fn headers_are_picked_from_a_serialised_map() {
    use crate::abi::{pick_headers, serialize_map};
    let map = serialize_map(&[(":path", "/a"), (":method", "GET"), ("x", ""), (":path", "/b")]);
    let picked = pick_headers(&map, &[":path", "x-request-id", ":method", "x"]).unwrap();
    let want = [Some("/a"), None, Some("GET"), Some("")].map(|v| v.map(str::to_owned));
    assert_eq!(picked, want);
    assert_eq!(pick_headers(&serialize_map(&[]), &[":path"]).unwrap(), [None]);
}

#[test]
fn a_malformed_header_map_is_none_never_a_panic() {
    use crate::abi::{pick_headers, serialize_map};
    let map = serialize_map(&[(":path", "/a"), (":method", "GET")]);
    for end in 0..map.len() - 1 {
        assert_eq!(pick_headers(&map[..end], &[":method"]), None, "cut at {end}");
    }
    let mut huge = map.clone();
    huge[..4].copy_from_slice(&u32::MAX.to_le_bytes());
    assert_eq!(pick_headers(&huge, &[":path"]), None);
    let mut long_name = map;
    long_name[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
    assert_eq!(pick_headers(&long_name, &[":path"]), None);
}

/// A connection's host: the app's certificate, no request headers.
fn connection(port: u16) -> FakeHost {
    request(port).without_request_headers()
}

#[test]
fn a_connection_is_decided_once_and_its_later_reads_only_look_at_the_clock() {
    let (shared, counters, proxy) = setup(r#"{"scope":"connection"}"#);
    let mut open = Connection::Undecided;
    assert!(on_connection_data(&mut open, Some(&shared), &counters, &connection(40000), &proxy));
    let lines = proxy.decision_lines();
    assert_eq!(lines.len(), 1);
    assert_eq!((lines[0]["reason"].as_str(), lines[0]["scope"].as_str()), (Some("ok"), Some("connection")));
    assert!(lines[0]["path"].is_null(), "a connection has no path");
    assert_eq!(state(&proxy), pair("allow", "ok"), "always set: RBAC reads it");
    proxy.take();
    let later = connection(40000);
    assert!(on_connection_data(&mut open, Some(&shared), &counters, &later, &proxy));
    assert_eq!(*later.reads.borrow(), ["clock"]);
    assert!(proxy.logs.borrow().is_empty() && proxy.increments.borrow().is_empty());
    // Past the certificate's notAfter (CertBuilder::leaf: 2100): closed at the next read.
    let expired = connection(40000).at(4_102_444_801);
    assert!(!on_connection_data(&mut open, Some(&shared), &counters, &expired, &proxy));
    assert_eq!(proxy.closes.get(), 1);
    assert_eq!(proxy.decision_lines()[0]["reason"], "svid_expired");
    assert_eq!(*proxy.increments.borrow(), ["loopback_guard.denied.svid_expired"]);
    assert!(!on_connection_data(&mut open, Some(&shared), &counters, &connection(40000), &proxy));
    assert_eq!(proxy.closes.get(), 1, "closed once");
}

#[test]
fn a_denied_connection_is_closed_unless_rbac_answers_it() {
    let anonymous = || no_certificate().without_request_headers();
    let (shared, counters, proxy) = setup(r#"{"scope":"connection"}"#);
    let mut open = Connection::Undecided;
    assert!(!on_connection_data(&mut open, Some(&shared), &counters, &anonymous(), &proxy));
    assert_eq!(proxy.closes.get(), 1);
    assert!(proxy.replies.borrow().is_empty(), "no HTTP reply on a connection");
    assert_eq!(state(&proxy), pair("deny", "no_client_certificate"));
    assert!(!on_connection_data(&mut open, Some(&shared), &counters, &anonymous(), &proxy));

    let (shared, counters, proxy) = setup(r#"{"scope":"connection","on_deny":"rbac"}"#);
    let mut open = Connection::Undecided;
    assert!(on_connection_data(&mut open, Some(&shared), &counters, &anonymous(), &proxy));
    assert_eq!(proxy.closes.get(), 0);
    assert_eq!(state(&proxy), pair("deny", "no_client_certificate"));

    // No configuration, or a failing close: still no byte goes on.
    let proxy = FakeProxy::default();
    let counters = Counters::define(&proxy);
    let mut open = Connection::Undecided;
    assert!(!on_connection_data(&mut open, None, &counters, &connection(40001), &proxy));
    assert_eq!(proxy.decision_lines()[0]["reason"], "unconfigured");
    proxy.failing.set(true);
    let mut open = Connection::Undecided;
    assert!(!on_connection_data(&mut open, None, &counters, &connection(40002), &proxy));
}
