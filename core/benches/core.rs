//! Micro-benchmarks of the pure core, natively: what the filter's own code costs per request,
//! apart from Envoy, V8 and host calls (`make bench` measures those).
//!
//! - `decide/cached`: the warm path, the certificate's checks served from the cache;
//! - `decide/cache_off`: a new connection's first request with the certificate cache off: it
//!   decodes, hashes, parses and checks the certificate (the first sight of a certificate);
//! - `decide/deny_cached`: a rogue certificate, cached;
//! - `certificate/parse_and_validate`: PEM to DER, then the X509-SVID checks;
//! - `log/decision_line`: the JSON line of one allowed decision (logged per request with
//!   `log_allowed: all`).
//!
//! Run: `cargo bench -p loopback-guard-core --bench core`.

// A benchmark whose setup fails has nothing to measure: stopping loudly is the right outcome.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[cfg(target_arch = "wasm32")]
fn main() {}

#[cfg(not(target_arch = "wasm32"))]
criterion::criterion_main!(native::benches);

#[cfg(not(target_arch = "wasm32"))]
mod native {
    use std::hint::black_box;

    use criterion::{criterion_group, Criterion};
    use loopback_guard_core::config::Policy;
    use loopback_guard_core::decision::{Guard, Reason, Verdict};
    use loopback_guard_core::host::property;
    use loopback_guard_core::log::{decision_line, RequestLabels};
    use loopback_guard_core::pem;
    use loopback_guard_core::svid::SvidFacts;
    use loopback_guard_core::testing::{pem_encode, CertBuilder, FakeHost};

    const APP: &str = "spiffe://cluster.local/ns/bench/sa/app";
    const ROGUE: &str = "spiffe://cluster.local/ns/bench/sa/rogue";

    /// The facts Envoy 1.40 gives the filter on a loopback mTLS connection presenting an
    /// Istio-shaped certificate of `spiffe_id` (signed by a fake key: the filter never checks
    /// signatures); every read copies, as a host call does, and none is recorded.
    fn presenting(spiffe_id: &str) -> FakeHost {
        let der = CertBuilder::workload(spiffe_id).der();
        FakeHost::default()
            .untraced()
            .with_property(property::SOURCE_ADDRESS, "127.0.0.1:40000")
            .with_property(property::CONNECTION_ID, 7u64.to_le_bytes())
            .with_property(property::MTLS, [1])
            .with_property(property::PEER_CERTIFICATE_VALID, [1])
            .with_property(property::PEER_CERTIFICATE_DIGEST, pem::sha256_hex(&der))
            .with_property(property::PEER_CERTIFICATE, pem_encode(&der))
            .with_property(&["xds", "node", "metadata", "NAMESPACE"], "bench")
            .with_property(&["xds", "node", "metadata", "SERVICE_ACCOUNT"], "app")
    }

    /// A guard configured as in the benchmark's Envoy (principal from node metadata), with the
    /// certificate already seen once.
    fn warm_guard(config: &str, host: &FakeHost, expect: Reason) -> Guard {
        let mut guard = Guard::new(Policy::from_json(config.as_bytes(), None).unwrap(), host);
        assert_eq!(guard.decide(host).reason, expect, "benchmark setup");
        guard
    }

    fn decide(c: &mut Criterion) {
        let app = presenting(APP);
        let rogue = presenting(ROGUE);
        let mut group = c.benchmark_group("decide");

        let mut guard = warm_guard("{}", &app, Reason::Ok);
        group.bench_function("cached", |b| b.iter(|| guard.decide(black_box(&app))));

        // A new connection each time (its first request is decided in full, not reused), with
        // the certificate cache off: the first sight of a certificate.
        let mut guard = warm_guard(r#"{"certificate_cache_size":0}"#, &app, Reason::Ok);
        let mut fresh = app.clone();
        let mut connection = 7u64;
        group.bench_function("cache_off", |b| {
            b.iter(|| {
                connection += 1;
                fresh.set(property::CONNECTION_ID, connection.to_le_bytes());
                guard.decide(black_box(&fresh))
            })
        });

        let mut guard = warm_guard("{}", &rogue, Reason::PrincipalMismatch);
        group.bench_function("deny_cached", |b| b.iter(|| guard.decide(black_box(&rogue))));
        group.finish();
    }

    fn certificate(c: &mut Criterion) {
        let pem_text = pem_encode(&CertBuilder::workload(APP).der());
        let parsed = SvidFacts::from_der(&pem::certificate_der(pem_text.as_bytes()).unwrap()).unwrap();
        assert_eq!(parsed.spiffe_id.as_str(), APP, "benchmark setup");
        let mut group = c.benchmark_group("certificate");
        group.bench_function("parse_and_validate", |b| {
            b.iter(|| {
                let der = pem::certificate_der(black_box(pem_text.as_bytes())).unwrap();
                SvidFacts::from_der(&der)
            })
        });
        group.bench_function("sha256_hex", |b| {
            let der = pem::certificate_der(pem_text.as_bytes()).unwrap();
            b.iter(|| pem::sha256_hex(black_box(&der)))
        });
        group.finish();
    }

    fn log_line(c: &mut Criterion) {
        let app = presenting(APP);
        let mut guard = warm_guard("{}", &app, Reason::Ok);
        let decision = guard.decide(&app);
        assert_eq!(decision.verdict, Verdict::Allow, "benchmark setup");
        let labels = RequestLabels {
            connection_id: Some(7),
            request_id: Some("0f6c3b1e-8c1b-4a5e-9b1e-3a1f2c4d5e6f"),
            method: Some("GET"),
            path: Some("/"),
        };
        c.bench_function("log/decision_line", |b| {
            b.iter(|| decision_line(black_box(&decision), &labels, 256))
        });
    }

    criterion_group!(benches, decide, certificate, log_line);
}
