//! The decision's steps, each case on the fake host.
use super::*;
use crate::host::{property, HostError, XFCC_HEADER};
use crate::pem;
use crate::test_case;
use crate::testing::{
    url_encode, CertBuilder, FakeHost, ProbeAuthority, FAKE_NOW as NOW, PROBE_AUTHORITIES, PROBE_CONFIG,
};

const APP: &str = "spiffe://cluster.local/ns/shop/sa/app";
const ROGUE: &str = "spiffe://cluster.local/ns/shop/sa/rogue";

fn guard(json: &str) -> Guard {
    let host = FakeHost::default()
        .with_property(&["xds", "node", "metadata", "NAMESPACE"], "shop")
        .with_property(&["xds", "node", "metadata", "SERVICE_ACCOUNT"], "app");
    Guard::new(Policy::from_json(json.as_bytes(), None).unwrap(), &host)
}

/// A request from 127.0.0.1 over mTLS presenting `cert`, as Envoy 1.40 describes it.
fn request(cert: &CertBuilder) -> FakeHost {
    FakeHost::default()
        .with_property(property::SOURCE_ADDRESS, "127.0.0.1:40000")
        .with_property(property::MTLS, [1])
        .with_property(property::PEER_CERTIFICATE_VALID, [1])
        .with_property(property::PEER_CERTIFICATE, cert.pem())
        .with_property(property::PEER_CERTIFICATE_DIGEST, pem::sha256_hex(&cert.der()))
}

/// The same request as an Envoy without `connection.peer_certificate` describes it.
fn request_via_xfcc(cert: &CertBuilder) -> FakeHost {
    let digest = pem::sha256_hex(&cert.der());
    request(cert)
        .without_property(property::PEER_CERTIFICATE)
        .without_property(property::PEER_CERTIFICATE_VALID)
        .with_header(XFCC_HEADER, &format!("Hash={digest};Cert=\"{}\";URI={APP}", url_encode(cert.pem())))
}

/// A request over a TLS connection without a client certificate.
fn no_certificate() -> FakeHost {
    request(&app())
        .without_property(property::MTLS)
        .without_property(property::PEER_CERTIFICATE)
        .without_property(property::PEER_CERTIFICATE_DIGEST)
        .without_property(property::PEER_CERTIFICATE_VALID)
}

fn app() -> CertBuilder {
    CertBuilder::leaf().uri(APP)
}

/// A health probe as curl sends it to the loopback listener: no certificate, no body.
fn probe() -> FakeHost {
    FakeHost::default().with_header(":method", "GET").with_header(":authority", "127.0.0.1:16443")
}

#[test_case]
fn decisions() {
    let rogue = CertBuilder::leaf().uri(ROGUE);
    let allow_rogue = format!(r#"{{"allowed_principals":["{ROGUE}"]}}"#);
    let static_rogue = format!(r#"{{"principal":"{ROGUE}"}}"#);
    let cases: Vec<(&str, &str, Option<&str>, FakeHost, Verdict, Reason)> = vec![
        ("rightful app", "{}", Some("/orders"), request(&app()), Verdict::Allow, Reason::Ok),
        ("rightful app via xfcc", "{}", Some("/"), request_via_xfcc(&app()), Verdict::Allow, Reason::Ok),
        (
            "url-encoded property",
            "{}",
            Some("/"),
            request(&app()).with_property(property::PEER_CERTIFICATE, url_encode(app().pem())),
            Verdict::Allow,
            Reason::Ok,
        ),
        ("no path header", "{}", None, request(&app()), Verdict::Allow, Reason::Ok),
        (
            "ipv6 loopback",
            "{}",
            Some("/"),
            request(&app()).with_property(property::SOURCE_ADDRESS, "[::1]:4000"),
            Verdict::Allow,
            Reason::Ok,
        ),
        (
            "other loopback address",
            "{}",
            Some("/"),
            request(&app()).with_property(property::SOURCE_ADDRESS, "127.0.0.6:4000"),
            Verdict::Allow,
            Reason::Ok,
        ),
        ("allowed principal", &allow_rogue, Some("/"), request(&rogue), Verdict::Allow, Reason::Ok),
        ("static principal", &static_rogue, Some("/"), request(&rogue), Verdict::Allow, Reason::Ok),
        (
            "static principal refuses the app",
            &static_rogue,
            Some("/"),
            request(&app()),
            Verdict::Deny,
            Reason::PrincipalMismatch,
        ),
        (
            "exempt path",
            r#"{"exempt_paths":["/healthz"]}"#,
            Some("/healthz?full=1"),
            probe(),
            Verdict::Allow,
            Reason::Exempt,
        ),
        (
            "exempt is exact",
            r#"{"exempt_paths":["/healthz"]}"#,
            Some("/healthz/x"),
            probe(),
            Verdict::Deny,
            Reason::SourceAddressUnavailable,
        ),
        (
            "exempt even in audit",
            r#"{"mode":"audit","exempt_paths":["/h"]}"#,
            Some("/h"),
            probe(),
            Verdict::Allow,
            Reason::Exempt,
        ),
        (
            "forwarded loopback address",
            "{}",
            Some("/"),
            request(&app()).with_property(property::SOURCE_ADDRESS, "127.0.0.1:0"),
            Verdict::Deny,
            Reason::SourceAddressForwarded,
        ),
        ("rogue", "{}", Some("/"), request(&rogue), Verdict::Deny, Reason::PrincipalMismatch),
        (
            "rogue in audit",
            r#"{"mode":"audit"}"#,
            Some("/"),
            request(&rogue),
            Verdict::WouldDeny,
            Reason::PrincipalMismatch,
        ),
        (
            "other trust domain",
            "{}",
            Some("/"),
            request(&CertBuilder::leaf().uri("spiffe://evil.example/ns/shop/sa/app")),
            Verdict::Deny,
            Reason::PrincipalMismatch,
        ),
        (
            "remote peer",
            "{}",
            Some("/"),
            request(&app()).with_property(property::SOURCE_ADDRESS, "10.0.0.5:4000"),
            Verdict::Deny,
            Reason::NotLoopback,
        ),
        (
            "remote peer allowed by config",
            r#"{"require_loopback":false}"#,
            Some("/"),
            request(&app()).with_property(property::SOURCE_ADDRESS, "10.0.0.5:4000"),
            Verdict::Allow,
            Reason::Ok,
        ),
        (
            "mapped ipv4 loopback",
            "{}",
            Some("/"),
            request(&app()).with_property(property::SOURCE_ADDRESS, "[::ffff:127.0.0.1]:1"),
            Verdict::Allow,
            Reason::Ok,
        ),
        (
            "no source address",
            "{}",
            Some("/"),
            request(&app()).without_property(property::SOURCE_ADDRESS),
            Verdict::Deny,
            Reason::SourceAddressUnavailable,
        ),
        (
            "pipe source address",
            "{}",
            Some("/"),
            request(&app()).with_property(property::SOURCE_ADDRESS, "/tmp/sock"),
            Verdict::Deny,
            Reason::SourceAddressUnavailable,
        ),
        (
            "no certificate",
            "{}",
            Some("/"),
            no_certificate().with_property(property::MTLS, [0]),
            Verdict::Deny,
            Reason::NoClientCertificate,
        ),
        ("no mtls property", "{}", Some("/"), no_certificate(), Verdict::Deny, Reason::NoClientCertificate),
        (
            "odd mtls value",
            "{}",
            Some("/"),
            no_certificate().with_property(property::MTLS, "true"),
            Verdict::Deny,
            Reason::HostError,
        ),
        (
            "unvalidated certificate",
            "{}",
            Some("/"),
            request(&app()).with_property(property::PEER_CERTIFICATE_VALID, [0]),
            Verdict::Deny,
            Reason::CertificateUnvalidated,
        ),
        (
            "failing host call",
            "{}",
            Some("/"),
            request(&app()).with_failing_property(property::PEER_CERTIFICATE_DIGEST),
            Verdict::Deny,
            Reason::HostError,
        ),
        (
            "no certificate anywhere",
            "{}",
            Some("/"),
            request(&app()).without_property(property::PEER_CERTIFICATE),
            Verdict::Deny,
            Reason::CertificateUnavailable,
        ),
        (
            "no digest, no property",
            "{}",
            Some("/"),
            request_via_xfcc(&app()).without_property(property::PEER_CERTIFICATE_DIGEST),
            Verdict::Deny,
            Reason::CertificateUnavailable,
        ),
        (
            "malformed digest",
            "{}",
            Some("/"),
            request(&app()).with_property(property::PEER_CERTIFICATE_DIGEST, "xyz"),
            Verdict::Deny,
            Reason::CertificateUnavailable,
        ),
        (
            "digest of another certificate",
            "{}",
            Some("/"),
            request(&app()).with_property(property::PEER_CERTIFICATE_DIGEST, "0".repeat(64)),
            Verdict::Deny,
            Reason::CertificateUnavailable,
        ),
        (
            "forged xfcc",
            "{}",
            Some("/"),
            request_via_xfcc(&rogue).with_header(
                XFCC_HEADER,
                &format!("Hash={};Cert=\"{}\"", pem::sha256_hex(&rogue.der()), url_encode(app().pem())),
            ),
            Verdict::Deny,
            Reason::CertificateUnavailable,
        ),
        (
            "garbage certificate",
            "{}",
            Some("/"),
            request(&app()).with_property(property::PEER_CERTIFICATE, "garbage"),
            Verdict::Deny,
            Reason::CertificateInvalid,
        ),
        ("two uri sans", "{}", Some("/"), request(&app().uri(ROGUE)), Verdict::Deny, Reason::SvidUriSanCount),
        (
            "bad spiffe id",
            "{}",
            Some("/"),
            request(&CertBuilder::leaf().uri("spiffe://cluster.local/ns/shop/sa/app/")),
            Verdict::Deny,
            Reason::SvidBadSpiffeId,
        ),
        ("ca certificate", "{}", Some("/"), request(&app().ca()), Verdict::Deny, Reason::SvidNotLeaf),
        (
            "expired",
            "{}",
            Some("/"),
            request(&app().validity(0, NOW - 1)),
            Verdict::Deny,
            Reason::SvidExpired,
        ),
        (
            "not yet valid",
            "{}",
            Some("/"),
            request(&app().validity(NOW + 1, NOW + 2)),
            Verdict::Deny,
            Reason::SvidNotYetValid,
        ),
        (
            "local certificate principal",
            r#"{"principal_source":"local_certificate"}"#,
            Some("/"),
            request(&rogue).with_property(property::LOCAL_URI_SAN, ROGUE),
            Verdict::Allow,
            Reason::Ok,
        ),
        (
            "no local certificate principal",
            r#"{"principal_source":"local_certificate"}"#,
            Some("/"),
            request(&app()),
            Verdict::Deny,
            Reason::NoExpectedPrincipal,
        ),
    ];
    let mut seen = std::collections::HashSet::new();
    for (name, json, path, host, verdict, reason) in cases {
        let host = match path {
            Some(path) => host.with_header(":path", path),
            None => host,
        };
        let decision = guard(json).decide(&host);
        assert_eq!((decision.verdict, decision.reason), (verdict, reason), "{name}: {:?}", decision.detail);
        seen.insert(reason);
    }
    // Given without a check, by `Outcome::refused`: tested with the filter's glue (src/tests.rs).
    let refused = [Reason::Unconfigured, Reason::EngineBusy];
    let untested: Vec<_> = Reason::ALL.iter().filter(|r| !seen.contains(r) && !refused.contains(r)).collect();
    assert!(untested.is_empty(), "reasons without a case: {untested:?}");
}

#[test_case]
fn no_expected_principal_when_forced_source_is_empty() {
    let mut guard = Guard::new(
        Policy::from_json(br#"{"principal_source":"node_metadata"}"#, None).unwrap(),
        &FakeHost::default(),
    );
    let decision = guard.decide(&request(&app()));
    assert_eq!((decision.verdict, decision.reason), (Verdict::Deny, Reason::NoExpectedPrincipal));
    assert!(guard.take_notice().unwrap().contains("every request will be denied"));
}

#[test_case]
fn decision_carries_what_the_log_needs() {
    let mut guard = guard("{}");
    let cert = CertBuilder::leaf().uri(ROGUE);
    let decision = guard.decide(&request(&cert));
    assert_eq!(decision.peer_principal.unwrap().spiffe_id.as_str(), ROGUE);
    assert_eq!(decision.expected_principal.unwrap().as_str(), APP);
    assert_eq!(decision.source_address.as_deref(), Some("127.0.0.1:40000"));
    assert_eq!(decision.cert_sha256.as_deref(), Some(pem::sha256_hex(&cert.der()).as_str()));
    assert!(guard.take_notice().unwrap().contains("node_metadata"));
    assert_eq!(guard.take_notice(), None, "said once");
}

#[test_case]
fn a_cached_certificate_is_not_read_again_but_its_time_is_checked() {
    let mut guard = guard("{}");
    let cert = app().validity(0, NOW);
    let host = request(&cert);
    assert_eq!(guard.decide(&host).reason, Reason::Ok);
    let host = request(&cert).without_property(property::PEER_CERTIFICATE);
    assert_eq!(guard.decide(&host).reason, Reason::Ok, "served from the cache");
    assert!(!host.reads.borrow().iter().any(|r| r == "connection.peer_certificate"));
    assert_eq!(guard.decide(&host.at(NOW + 1)).reason, Reason::SvidExpired);
}

#[test_case]
fn failed_checks_are_cached_too() {
    let mut guard = guard("{}");
    let cert = app().ca();
    assert_eq!(guard.decide(&request(&cert)).reason, Reason::SvidNotLeaf);
    let host = request(&cert).without_property(property::PEER_CERTIFICATE);
    assert_eq!(guard.decide(&host).reason, Reason::SvidNotLeaf);
}

#[test_case]
fn cache_off_reads_every_time() {
    let mut guard = guard(r#"{"certificate_cache_size":0}"#);
    assert_eq!(guard.decide(&request(&app())).reason, Reason::Ok);
    let host = request(&app()).without_property(property::PEER_CERTIFICATE);
    assert_eq!(guard.decide(&host).reason, Reason::CertificateUnavailable);
}

#[test_case]
fn an_exempt_probe_reads_only_its_request_line_and_framing() {
    let mut guard = guard(r#"{"exempt_paths":["/healthz"]}"#);
    let host = probe().with_header(":path", "/healthz");
    assert_eq!(guard.decide(&host).reason, Reason::Exempt);
    assert_eq!(
        *host.reads.borrow(),
        [
            "header :path",
            "header :method",
            "header upgrade",
            "header :protocol",
            "header content-length",
            "header transfer-encoding",
            "header :authority"
        ]
    );
    let host = request(&app()).with_header(":path", "/orders");
    assert_eq!(guard.decide(&host).reason, Reason::Ok);
    assert_eq!(host.reads.borrow().first().map(String::as_str), Some("header :path"));
    assert!(!host.reads.borrow().iter().any(|r| r == "header :method"), "not on other paths");
}

#[test_case]
fn exempt_paths_admit_probes_only() {
    let json = r#"{"exempt_paths":["/healthz"],"exempt_authorities":["health.local","probe.local:8080"]}"#;
    // Each request: its headers on top of a probe, and the outcome without a certificate.
    let cases: Vec<(&str, FakeHost, Reason, Option<&str>)> = vec![
        ("GET probe", probe(), Reason::Exempt, None),
        ("HEAD probe", probe().with_header(":method", "HEAD"), Reason::Exempt, None),
        ("ipv6 loopback authority", probe().with_header(":authority", "[::1]:80"), Reason::Exempt, None),
        ("localhost authority", probe().with_header(":authority", "LocalHost"), Reason::Exempt, None),
        ("listed authority", probe().with_header(":authority", "health.local:9"), Reason::Exempt, None),
        (
            "listed authority and port",
            probe().with_header(":authority", "probe.local:8080"),
            Reason::Exempt,
            None,
        ),
        ("content-length 0", probe().with_header("content-length", "0"), Reason::Exempt, None),
        ("POST", probe().with_header(":method", "POST"), Reason::NoClientCertificate, Some("method")),
        ("CONNECT", probe().with_header(":method", "CONNECT"), Reason::NoClientCertificate, Some("method")),
        ("no method", FakeHost::default(), Reason::NoClientCertificate, Some("method")),
        ("GET with a body", probe().end_of_stream(false), Reason::NoClientCertificate, Some("body")),
        (
            "content-length",
            probe().with_header("content-length", "5"),
            Reason::NoClientCertificate,
            Some("body"),
        ),
        (
            "chunked",
            probe().with_header("transfer-encoding", "chunked"),
            Reason::NoClientCertificate,
            Some("body"),
        ),
        (
            "websocket",
            probe().with_header("upgrade", "websocket"),
            Reason::NoClientCertificate,
            Some("upgrade"),
        ),
        (
            "extended connect",
            probe().with_header(":protocol", "websocket"),
            Reason::NoClientCertificate,
            Some("upgrade"),
        ),
        (
            "another service",
            probe().with_header(":authority", "db.shop.svc.cluster.local"),
            Reason::NoClientCertificate,
            Some("authority"),
        ),
        (
            "listed host, other port",
            probe().with_header(":authority", "probe.local:80"),
            Reason::NoClientCertificate,
            Some("authority"),
        ),
        (
            "no authority",
            FakeHost::default().with_header(":method", "GET"),
            Reason::NoClientCertificate,
            Some("authority"),
        ),
        (
            "loopback-looking name",
            probe().with_header(":authority", "127.0.0.1.evil.example"),
            Reason::NoClientCertificate,
            Some("authority"),
        ),
    ];
    // Every authority of the shared table, under its own configuration.
    for (raw, expected) in PROBE_AUTHORITIES {
        let host = probe()
            .with_header(":authority", raw)
            .with_header(":path", "/healthz")
            .with_property(property::SOURCE_ADDRESS, "127.0.0.1:4000")
            .with_property(property::MTLS, [0]);
        let decision = guard(PROBE_CONFIG).decide(&host);
        let detail = decision.detail.clone().unwrap_or_default();
        match expected {
            ProbeAuthority::Admitted => assert_eq!(decision.reason, Reason::Exempt, "{raw:?}: {detail}"),
            ProbeAuthority::Unparsed | ProbeAuthority::Unlisted => {
                let why = match expected {
                    ProbeAuthority::Unparsed => "its authority does not parse as host[:port]",
                    _ => "its authority is neither a loopback host nor in exempt_authorities",
                };
                assert_eq!(decision.reason, Reason::NoClientCertificate, "{raw:?}");
                assert_eq!(detail, format!("exempt path, but {why}: checked in full"), "{raw:?}");
            }
        }
    }
    for (name, host, reason, why) in cases {
        let host = host
            .with_header(":path", "/healthz")
            .with_property(property::SOURCE_ADDRESS, "127.0.0.1:4000")
            .with_property(property::MTLS, [0]);
        let decision = guard(json).decide(&host);
        assert_eq!(decision.reason, reason, "{name}: {:?}", decision.detail);
        match why {
            None => assert_eq!(decision.detail, None, "{name}"),
            Some(why) => {
                let detail = decision.detail.unwrap_or_default();
                assert!(detail.starts_with("exempt path, but") && detail.contains(why), "{name}: {detail}");
            }
        }
    }
    // The full check still admits the rightful app on an exempt path, whatever it sends.
    let host = request(&app()).with_header(":path", "/healthz").with_header(":method", "POST");
    assert_eq!(guard(json).decide(&host).reason, Reason::Ok);
}

#[test_case]
fn a_resumed_session_is_admitted_only_for_a_certificate_validated_before() {
    let worker1 = request(&app());
    let worker2 =
        || request(&app()).sharing_with(&worker1).with_property(property::PEER_CERTIFICATE_VALID, [0]);
    let (mut guard1, mut guard2) = (guard("{}"), guard("{}"));
    // Never validated (ACCEPT_UNTRUSTED, or a listener without validation): denied.
    let decision = guard2.decide(&worker2());
    assert_eq!((decision.verdict, decision.reason), (Verdict::Deny, Reason::CertificateUnvalidated));
    // A full handshake validates it on one worker; a resumed session on the other is admitted.
    assert_eq!(guard1.decide(&worker1).reason, Reason::Ok);
    let decision = guard2.decide(&worker2());
    assert_eq!((decision.verdict, decision.reason), (Verdict::Allow, Reason::Ok));
    assert_eq!(decision.detail.as_deref(), Some(RESUMED_DETAIL));
    // Another certificate with the same identity, never validated: still denied.
    let other = app().validity(1_600_000_000, 4_102_444_800);
    let host = request(&other).sharing_with(&worker1).with_property(property::PEER_CERTIFICATE_VALID, [0]);
    assert_eq!(guard2.decide(&host).reason, Reason::CertificateUnvalidated);
    // No digest to look up: denied.
    let host = worker2().without_property(property::PEER_CERTIFICATE_DIGEST);
    assert_eq!(guard("{}").decide(&host).reason, Reason::CertificateUnvalidated);
    // The record's host call failing denies with host_error, never allows.
    let failing = FailingShared(worker2());
    assert_eq!(guard("{}").decide(&failing).reason, Reason::HostError);
}

/// A host whose shared data cannot be read.
struct FailingShared(FakeHost);

impl Host for FailingShared {
    fn property(&self, path: &[&str]) -> Result<Option<Vec<u8>>, HostError> {
        self.0.property(path)
    }
    fn request_header(&self, name: &str) -> Result<Option<String>, HostError> {
        self.0.request_header(name)
    }
    fn now(&self) -> Result<i64, HostError> {
        self.0.now()
    }
    fn shared_data(&self, _key: &str) -> Result<(Option<Vec<u8>>, Option<u32>), HostError> {
        Err(HostError("status 2".into()))
    }
}

#[test_case]
fn without_the_validity_property_the_operator_is_told_once_per_envoy() {
    let worker1 = request(&app()).without_property(property::PEER_CERTIFICATE_VALID);
    let worker2 = request(&app()).without_property(property::PEER_CERTIFICATE_VALID).sharing_with(&worker1);
    let (mut guard1, mut guard2) = (guard("{}"), guard("{}"));
    guard1.take_notice();
    guard2.take_notice();
    assert_eq!(guard1.decide(&worker1).reason, Reason::Ok);
    assert_eq!(guard1.take_notice().as_deref(), Some(NO_VALIDITY_NOTICE));
    assert_eq!(guard1.decide(&worker1).reason, Reason::Ok);
    assert_eq!(guard2.decide(&worker2).reason, Reason::Ok);
    assert_eq!((guard1.take_notice(), guard2.take_notice()), (None, None), "said once");
    let warm = request(&app()).without_property(property::PEER_CERTIFICATE_VALID);
    guard1.decide(&warm);
    assert!(!warm.reads.borrow().iter().any(|r| r.contains("shared")), "{:?}", warm.reads.borrow());
}

fn on_connection(host: FakeHost, id: u64) -> FakeHost {
    host.with_property(property::CONNECTION_ID, id.to_le_bytes())
}

#[test_case]
fn a_warm_request_reads_the_connection_id_and_the_clock() {
    let mut guard = guard("{}");
    let first = on_connection(request(&app()), 7);
    assert_eq!(guard.decide(&first).reason, Reason::Ok);
    let host = on_connection(request(&app()), 7);
    let decision = guard.decide(&host);
    assert_eq!(decision, guard.decide(&first), "the same decision as the first request's");
    assert_eq!(*host.reads.borrow(), ["connection.id", "clock"]);
    // With exempt paths the path comes first, as it is the request's.
    let mut guard = super::tests::guard(r#"{"exempt_paths":["/healthz"]}"#);
    guard.decide(&on_connection(request(&app()), 7).with_header(":path", "/"));
    let host = on_connection(request(&app()), 7).with_header(":path", "/orders");
    assert_eq!(guard.decide(&host).reason, Reason::Ok);
    assert_eq!(*host.reads.borrow(), ["header :path", "connection.id", "clock"]);
}

#[test_case]
fn a_connection_is_decided_once_but_its_clock_on_every_request() {
    let mut guard = guard(r#"{"mode":"audit"}"#);
    let cert = app().validity(0, NOW);
    assert_eq!(guard.decide(&on_connection(request(&cert), 1)).reason, Reason::Ok);
    let expired = guard.decide(&on_connection(request(&cert), 1).at(NOW + 1));
    assert_eq!((expired.verdict, expired.reason), (Verdict::WouldDeny, Reason::SvidExpired));
    assert_eq!(
        expired,
        guard.without_connection_reuse().decide(&on_connection(request(&cert), 1).at(NOW + 1))
    );
    // A refusal of the connection is reused too; one a later request may not share is not.
    let mut guard = super::tests::guard("{}");
    let rogue = on_connection(request(&app().uri(ROGUE)), 2);
    assert_eq!(guard.decide(&rogue).reason, Reason::SvidUriSanCount);
    let host = on_connection(FakeHost::default(), 2);
    assert_eq!(guard.decide(&host).reason, Reason::SvidUriSanCount);
    assert_eq!(*host.reads.borrow(), ["connection.id"]);
    let failing = on_connection(request(&app()), 3).with_failing_property(property::SOURCE_ADDRESS);
    assert_eq!(guard.decide(&failing).reason, Reason::HostError);
    assert_eq!(guard.decide(&on_connection(request(&app()), 3)).reason, Reason::Ok, "decided again");
    let forwarded = on_connection(request(&app()), 4).with_property(property::SOURCE_ADDRESS, "127.0.0.1:0");
    assert_eq!(guard.decide(&forwarded).reason, Reason::SourceAddressForwarded);
    let host = on_connection(request(&app()), 4).with_property(property::SOURCE_ADDRESS, "127.0.0.1:0");
    guard.decide(&host);
    assert!(host.reads.borrow().iter().any(|r| r == "source.address"), "a header's address: decided again");
    // Without a readable id: decided in full.
    let host = request(&app()).with_failing_property(property::CONNECTION_ID);
    assert_eq!(guard.decide(&host).reason, Reason::Ok);
    assert!(host.reads.borrow().iter().any(|r| r == "source.address"));
}

#[test_case]
fn reason_names_are_stable_and_unique() {
    let names: std::collections::HashSet<_> = Reason::ALL.iter().map(|r| r.as_str()).collect();
    assert_eq!(names.len(), Reason::ALL.len());
    assert_eq!(Reason::PrincipalMismatch.as_str(), "principal_mismatch");
    assert!(Reason::ALL.iter().filter(|r| r.is_allow()).count() == 2);
}
