//! The per-connection reuse of decisions against full decisions: one sequence of requests, over
//! several connections with certificates of every kind and a clock that moves, through an
//! engine that decides once per connection and through one that decides every request in full.
//! Every outcome (verdict, reason, detail, log line, counters, reply) must be the same. Driven
//! by a pseudo-random sequence in the core's tests and by the fuzzer (`connection_reuse`).
//!
//! A test helper (the `testing` feature): it reports a difference by panicking.
#![allow(clippy::panic, clippy::indexing_slicing)]

use std::rc::Rc;

use crate::engine::Engine;
use crate::host::property;
use crate::pem;
use crate::testing::{url_encode, CertBuilder, FakeHost, FAKE_NOW as NOW};

const APP: &str = "spiffe://cluster.local/ns/shop/sa/app";
const ROGUE: &str = "spiffe://cluster.local/ns/shop/sa/rogue";

const CONFIGS: &[&str] = &[
    "{}",
    r#"{"mode":"audit"}"#,
    r#"{"exempt_paths":["/healthz"]}"#,
    r#"{"exempt_paths":["/healthz"],"mode":"audit","log_allowed":"all"}"#,
    r#"{"principal_source":"local_certificate"}"#,
    r#"{"require_loopback":false,"log_allowed":"none"}"#,
    r#"{"allowed_principals":["spiffe://cluster.local/ns/shop/sa/rogue"],"log_allowed":"all"}"#,
    r#"{"certificate_cache_size":0,"log_lines_per_second":1}"#,
];

/// A client certificate: its PEM and digest.
struct Cert {
    pem: String,
    digest: String,
}

fn cert(builder: CertBuilder) -> Cert {
    Cert { pem: builder.pem(), digest: pem::sha256_hex(&builder.der()) }
}

thread_local! {
    static CERTS: Rc<Vec<Cert>> = Rc::new(vec![
        cert(CertBuilder::workload(APP)),
        cert(CertBuilder::workload(APP).validity(NOW - 100, NOW + 4)),
        cert(CertBuilder::workload(APP).validity(NOW + 3, NOW + 1000)),
        cert(CertBuilder::workload(ROGUE)),
        cert(CertBuilder::workload(APP).uri(ROGUE)),
        cert(CertBuilder::workload(APP).ca()),
        cert(CertBuilder::workload(APP).validity(NOW - 1000, NOW - 1)),
    ]);
}

/// Reads the input front to back; past the end, zeros.
struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn next(&mut self) -> u8 {
        let (first, rest) = self.0.split_first().map_or((0, &[][..]), |(b, rest)| (*b, rest));
        self.0 = rest;
        first
    }
}

/// One connection's facts, as a host without the request's.
fn connection(kind: u8, id: u64, certs: &[Cert]) -> FakeHost {
    let mut host = FakeHost::default().untraced();
    // Envoy never gives two connections one id (the premise of the reuse); a missing or
    // malformed id must fall back to full decisions.
    match kind & 3 {
        0 | 1 => host.set(property::CONNECTION_ID, id.to_le_bytes()),
        2 => host.set(property::CONNECTION_ID, [1, 2, 3]),
        _ => {}
    }
    let port = 40000 + id;
    match (kind >> 2) & 7 {
        0..=4 => host.set(property::SOURCE_ADDRESS, format!("127.0.0.1:{port}")),
        5 => host.set(property::SOURCE_ADDRESS, format!("10.0.0.1:{port}")),
        6 => host.set(property::SOURCE_ADDRESS, "127.0.0.1:0"),
        _ => {}
    }
    host.set(property::LOCAL_URI_SAN, APP);
    let which = usize::from(kind >> 5);
    match which {
        // No certificate.
        7 => host.set(property::MTLS, [0]),
        _ => {
            let cert = &certs[which % certs.len()];
            host.set(property::MTLS, [1]);
            host.set(property::PEER_CERTIFICATE_DIGEST, cert.digest.as_str());
            host.set(property::PEER_CERTIFICATE, url_encode(&cert.pem));
            // Some of them on resumed sessions.
            let valid: u8 = u8::from(id % 3 != 2);
            host.set(property::PEER_CERTIFICATE_VALID, [valid]);
        }
    }
    host
}

/// Runs the sequence `input` describes through both engines; panics at the first difference.
pub fn run(input: &[u8]) {
    let mut input = Bytes(input);
    let config = CONFIGS[usize::from(input.next()) % CONFIGS.len()];
    let pod = FakeHost::default()
        .untraced()
        .with_property(&["xds", "node", "metadata", "NAMESPACE"], "shop")
        .with_property(&["xds", "node", "metadata", "SERVICE_ACCOUNT"], "app");
    let configure = || match Engine::configure(config.as_bytes(), None, &pod) {
        Ok((engine, _)) => engine,
        Err(e) => panic!("{config}: {}", e.text),
    };
    let (mut reusing, mut fresh) = (configure(), configure().without_connection_reuse());
    // Each engine in an Envoy of its own: the record of validated certificates is not shared.
    let (envoy_a, envoy_b) = (FakeHost::default(), FakeHost::default());
    let certs = CERTS.with(Rc::clone);
    let connections: Vec<FakeHost> = (0..4).map(|id| connection(input.next(), id, &certs)).collect();
    let mut now = NOW - 5;
    let mut request_id = 0;
    while !input.0.is_empty() {
        let request = input.next();
        now += i64::from(request >> 6);
        request_id += 1;
        let mut host = connections[usize::from(request & 3)].clone().at(now).end_of_stream(request & 32 == 0);
        let path = ["/", "/healthz", "/healthz?probe=1", "/orders"][usize::from((request >> 2) & 3)];
        host.set_header(":path", path);
        host.set_header(":method", if request & 16 == 0 { "GET" } else { "POST" });
        host.set_header(":authority", "localhost:8080");
        host.set_header("x-request-id", &request_id.to_string());
        let a = reusing.handle(&host.clone().sharing_with(&envoy_a));
        let b = fresh.handle(&host.sharing_with(&envoy_b));
        assert_eq!(a, b, "{config}: request {request_id} at {now} ({request:#04x}) differs");
    }
    let end = u64::try_from(now).unwrap_or(0).saturating_add(3600) * 1000;
    assert_eq!(
        reusing.held_back_summary(end),
        fresh.held_back_summary(end),
        "{config}: the summaries differ"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_case;

    /// xorshift64: a fixed sequence, the same on every run.
    fn bytes(seed: u64, len: usize) -> Vec<u8> {
        let mut x = seed;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x.to_le_bytes()[3]
            })
            .collect()
    }

    #[test_case]
    fn reused_decisions_equal_full_decisions() {
        for seed in 1..=400_u64 {
            run(&bytes(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15), 64));
        }
    }

    #[test_case]
    fn every_configuration_and_connection_kind_is_run() {
        // The sequences above reach each configuration and kind; one long run of each as well.
        for config in 0..CONFIGS.len() {
            for kinds in [[0x00, 0x20, 0x40, 0x60], [0x80, 0xa0, 0xc0, 0xe0], [0x04, 0x14, 0x18, 0x1c]] {
                let mut input = vec![u8::try_from(config).unwrap_or(0)];
                input.extend(kinds);
                input.extend(bytes(u64::try_from(config).unwrap_or(0) + 7, 200));
                run(&input);
            }
        }
    }
}
