//! The whole admission decision over a host whose every answer the fuzzer picks: properties
//! present, absent, failing or garbage; the certificate by property or by XFCC, with forged
//! elements; the clock anywhere. Beyond "never panics" it checks the properties an attacker
//! would try to break: nothing is allowed but a valid SVID of an admitted principal (or an exempt
//! path), the certificate judged is the connection's, and the cache never changes a decision.
//!
//! Input: config, flags A, flags B, clock (one byte each), then two length-prefixed blobs X and
//! Y (garbage for whichever facts the flags say), then the connection's certificate (DER) to
//! the end.
#![no_main]

use libfuzzer_sys::fuzz_target;
use loopback_guard_core::config::{Mode, Policy};
use loopback_guard_core::decision::{Guard, Reason, Verdict};
use loopback_guard_core::host::{property, XFCC_HEADER};
use loopback_guard_core::pem::sha256_hex;
use loopback_guard_core::svid::SvidFacts;
use loopback_guard_core::testing::{pem_encode, url_encode, FakeHost};
use loopback_guard_fuzz::Reader;

const APP: &str = "spiffe://cluster.local/ns/shop/sa/app";

const CONFIGS: &[&str] = &[
    "{}",
    r#"{"principal":"spiffe://cluster.local/ns/shop/sa/app"}"#,
    r#"{"principal_source":"static","principal":"spiffe://cluster.local/ns/shop/sa/app","mode":"audit"}"#,
    r#"{"allowed_principals":["spiffe://cluster.local/ns/shop/sa/rogue"],"exempt_paths":["/healthz"]}"#,
    r#"{"principal_source":"local_certificate"}"#,
    r#"{"principal_source":"node_metadata","require_loopback":false}"#,
    r#"{"certificate_cache_size":0}"#,
    r#"{"certificate_cache_size":1,"log_allowed":"all"}"#,
];

fuzz_target!(|data: &[u8]| {
    let mut input = Reader::new(data);
    let config = CONFIGS[usize::from(input.byte()) % CONFIGS.len()];
    let (a, b, clock) = (input.byte(), input.byte(), input.byte());
    let x = input.blob();
    let y = input.blob();
    let der = input.rest();
    let (x_text, y_text) = (String::from_utf8_lossy(x), String::from_utf8_lossy(y));
    let digest = sha256_hex(der);
    let pem = pem_encode(der);

    let now = match clock % 6 {
        2 => i64::MIN,
        3 => i64::MAX,
        4 => 0,
        5 => -1,
        _ => 1_800_000_000,
    };
    // What decides whether a request on an exempt path is a probe.
    let end_of_stream = (clock >> 3) & 1 == 0;
    let mut host = FakeHost::default().untraced().at(now).end_of_stream(end_of_stream);
    match b & 7 {
        0 | 1 => host.set(property::SOURCE_ADDRESS, "127.0.0.1:40000"),
        2 => host.set(property::SOURCE_ADDRESS, "[::1]:40000"),
        3 => host.set(property::SOURCE_ADDRESS, "10.0.0.1:40000"),
        4 => {}
        5 => host.set(property::SOURCE_ADDRESS, x),
        6 => host.set(property::SOURCE_ADDRESS, "[::ffff:127.0.0.1]:1"),
        _ => host.fail(property::SOURCE_ADDRESS),
    }
    match a & 3 {
        0 | 1 => host.set(property::MTLS, [1]),
        2 => host.set(property::MTLS, [0]),
        _ => host.set(property::MTLS, x),
    }
    match (a >> 2) & 3 {
        0 => host.set(property::PEER_CERTIFICATE_VALID, [1]),
        1 => {}
        2 => host.set(property::PEER_CERTIFICATE_VALID, [0]),
        _ => host.fail(property::PEER_CERTIFICATE_VALID),
    }
    let digest_is_the_connections = match (a >> 4) & 3 {
        0 => {
            host.set(property::PEER_CERTIFICATE_DIGEST, digest.as_str());
            true
        }
        1 => {
            host.set(property::PEER_CERTIFICATE_DIGEST, digest.to_uppercase());
            true
        }
        2 => false,
        _ => {
            host.set(property::PEER_CERTIFICATE_DIGEST, y);
            false
        }
    };
    match (a >> 6) & 3 {
        0 => host.set(property::PEER_CERTIFICATE, pem.as_str()),
        1 => host.set(property::PEER_CERTIFICATE, url_encode(&pem)),
        2 => {
            // The fallback: this proxy's element last, whatever the client sent before it.
            let ours = format!("Hash={digest};Cert=\"{}\";URI={APP}", url_encode(&pem));
            let header = if y.is_empty() { ours } else { format!("{y_text},{ours}") };
            host.set_header(XFCC_HEADER, &header);
        }
        _ => host.set(property::PEER_CERTIFICATE, y),
    }
    if (b >> 7) & 1 == 1 && (a >> 6) & 3 != 2 {
        // A client's own header, passed through, next to the property.
        host.set_header(XFCC_HEADER, &y_text);
    }
    let path = match (b >> 3) & 3 {
        0 => Some("/"),
        1 => Some("/healthz?probe=1"),
        2 => None,
        _ => Some(x_text.as_ref()),
    };
    if let Some(path) = path {
        host.set_header(":path", path);
    }
    let probe_headers: [(&str, &str); 4] =
        [(":method", "GET"), (":method", "POST"), (":authority", "127.0.0.1:1"), ("upgrade", "websocket")];
    for (bit, (name, value)) in probe_headers.iter().enumerate() {
        if (clock >> (4 + bit)) & 1 == 1 {
            host.set_header(name, value);
        }
    }
    if clock >> 4 == 0 {
        host.set_header(":authority", &x_text);
    }
    if (b >> 5) & 1 == 0 {
        host.set(&["xds", "node", "metadata", "NAMESPACE"], "shop");
        host.set(&["xds", "node", "metadata", "SERVICE_ACCOUNT"], "app");
    } else {
        host.set(&["xds", "node", "metadata", "NAMESPACE"], x);
        host.set(&["node", "metadata", "SERVICE_ACCOUNT"], y);
    }
    if (b >> 6) & 1 == 0 {
        host.set(property::LOCAL_URI_SAN, APP);
    } else {
        host.set(property::LOCAL_URI_SAN, x);
    }

    let Ok(policy) = Policy::from_json(config.as_bytes(), None) else {
        panic!("fuzz configuration {config} does not validate")
    };
    let mut guard = Guard::new(policy.clone(), &host);
    let first = guard.decide(&host);
    let _ = guard.take_notice();

    // The verdict follows the reason and the mode.
    match first.verdict {
        Verdict::Allow => assert!(first.reason.is_allow(), "allowed with {:?}", first.reason),
        Verdict::Deny => assert!(!first.reason.is_allow() && policy.mode == Mode::Enforce),
        Verdict::WouldDeny => assert!(!first.reason.is_allow() && policy.mode == Mode::Audit),
    }
    if first.reason == Reason::Exempt {
        let bare = path.map(|p| p.split_once('?').map_or(p, |(bare, _)| bare));
        assert!(bare.is_some_and(|bare| policy.exempt_paths.iter().any(|e| e == bare)), "exempt {path:?}");
        // Only a probe: GET or HEAD, no body, no upgrade.
        let header = |name: &str| host.header(name);
        assert!(matches!(header(":method"), Some("GET" | "HEAD")), "exempt {:?}", header(":method"));
        assert!(end_of_stream && header("upgrade").is_none(), "exempt with a body or an upgrade");
    }
    if first.reason == Reason::Ok {
        // A presented certificate: Envoy says so, or has its digest (which exists only then).
        let presented = host.property_value(property::MTLS) == Some(&[1])
            || host.property_value(property::PEER_CERTIFICATE_DIGEST).is_some_and(|d| !d.is_empty());
        assert!(presented, "ok without a presented certificate");
        let peer = first.peer_principal.as_ref().expect("ok without a peer principal");
        let expected = first.expected_principal.as_ref().expect("ok without an expected principal");
        assert!(
            peer.spiffe_id == **expected || policy.allowed_principals.contains(&peer.spiffe_id),
            "ok for {} while expecting {expected}",
            peer.spiffe_id
        );
        assert!(peer.check_time(now).is_ok(), "ok outside the validity window");
        if policy.require_loopback {
            let source = first.source_address.as_deref().expect("ok without a source address");
            let source: std::net::SocketAddr = source.parse().expect("ok from an unparsable source");
            assert!(source.ip().to_canonical().is_loopback(), "ok from {source}");
            assert_ne!(source.port(), 0, "ok from an address rebuilt from a header");
        }
        // The certificate judged is the connection's, however the header was forged.
        if digest_is_the_connections {
            assert_eq!(SvidFacts::from_der(der).as_ref(), Ok(&**peer), "judged another certificate");
        }
    }

    // A second request on the same connection facts: from the cache or not, the same outcome.
    let second = guard.decide(&host);
    assert_eq!((second.verdict, second.reason), (first.verdict, first.reason), "{first:?} then {second:?}");
});
