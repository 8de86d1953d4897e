//! Micro-benchmarks of the pure core, natively: what the filter's own code costs per request,
//! apart from Envoy, V8 and host calls (`make bench` measures those).
//!
//! - `decide/cached`: the warm path, the certificate's checks served from the cache;
//! - `decide/cache_off`: every request decodes, hashes, parses and checks the certificate;
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
    use std::collections::HashMap;
    use std::hint::black_box;

    use base64::Engine;
    use criterion::{criterion_group, Criterion};
    use loopback_guard_core::config::Policy;
    use loopback_guard_core::decision::{Guard, Reason, Verdict};
    use loopback_guard_core::host::{property, Host, HostError};
    use loopback_guard_core::log::{decision_line, RequestLabels};
    use loopback_guard_core::pem;
    use loopback_guard_core::svid::SvidFacts;
    use rcgen::string::Ia5String;
    use rcgen::{
        CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyIdMethod, KeyUsagePurpose,
        PublicKeyData, SanType, SerialNumber, SignatureAlgorithm, SigningKey, PKCS_ECDSA_P256_SHA256,
    };
    use time::OffsetDateTime;

    const NAMESPACE: &str = "bench";
    const SERVICE_ACCOUNT: &str = "app";
    const APP: &str = "spiffe://cluster.local/ns/bench/sa/app";
    const ROGUE: &str = "spiffe://cluster.local/ns/bench/sa/rogue";
    const NOW: i64 = 1_800_000_000;

    /// The filter never checks signatures (Envoy did, in the handshake), so a fake key signs: no
    /// crypto backend needed, as in the core's tests (src/testing.rs).
    struct FakeKey;

    impl PublicKeyData for FakeKey {
        fn der_bytes(&self) -> &[u8] {
            &[4; 65]
        }

        fn algorithm(&self) -> &'static SignatureAlgorithm {
            &PKCS_ECDSA_P256_SHA256
        }
    }

    impl SigningKey for FakeKey {
        fn sign(&self, _msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
            Ok(vec![0x30, 0x06, 0x02, 0x01, 0x01, 0x02, 0x01, 0x01])
        }
    }

    /// A workload certificate shaped like Istio's: CN, one URI SAN, key usages, client and
    /// server auth, authority key identifier.
    fn svid_der(spiffe_id: &str) -> Vec<u8> {
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, spiffe_id);
        params.subject_alt_names.push(SanType::URI(Ia5String::try_from(spiffe_id).unwrap()));
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.extended_key_usages =
            vec![ExtendedKeyUsagePurpose::ClientAuth, ExtendedKeyUsagePurpose::ServerAuth];
        params.key_identifier_method = KeyIdMethod::PreSpecified(vec![1; 20]);
        params.serial_number = Some(SerialNumber::from(vec![0x42; 16]));
        params.not_before = OffsetDateTime::from_unix_timestamp(NOW - 3600).unwrap();
        params.not_after = OffsetDateTime::from_unix_timestamp(NOW + 86_400).unwrap();
        params.self_signed(&FakeKey).unwrap().der().to_vec()
    }

    /// PEM as Envoy hands it over in `connection.peer_certificate` (64 columns).
    fn pem_encode(der: &[u8]) -> String {
        let body = base64::engine::general_purpose::STANDARD.encode(der);
        let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
        for line in body.as_bytes().chunks(64) {
            pem.push_str(std::str::from_utf8(line).unwrap());
            pem.push('\n');
        }
        pem.push_str("-----END CERTIFICATE-----\n");
        pem
    }

    /// The facts Envoy 1.40 gives the filter on a loopback mTLS connection; every read copies,
    /// as a host call does.
    struct BenchHost {
        properties: HashMap<String, Vec<u8>>,
    }

    impl BenchHost {
        fn presenting(spiffe_id: &str) -> Self {
            let der = svid_der(spiffe_id);
            let mut properties = HashMap::new();
            let mut set = |path: &[&str], value: Vec<u8>| properties.insert(path.join("."), value);
            set(property::SOURCE_ADDRESS, b"127.0.0.1:40000".to_vec());
            set(property::CONNECTION_ID, 7u64.to_le_bytes().to_vec());
            set(property::MTLS, vec![1]);
            set(property::PEER_CERTIFICATE_VALID, vec![1]);
            set(property::PEER_CERTIFICATE_DIGEST, pem::sha256_hex(&der).into_bytes());
            set(property::PEER_CERTIFICATE, pem_encode(&der).into_bytes());
            set(&["xds", "node", "metadata", "NAMESPACE"], NAMESPACE.as_bytes().to_vec());
            set(&["xds", "node", "metadata", "SERVICE_ACCOUNT"], SERVICE_ACCOUNT.as_bytes().to_vec());
            Self { properties }
        }
    }

    impl Host for BenchHost {
        fn property(&self, path: &[&str]) -> Result<Option<Vec<u8>>, HostError> {
            Ok(self.properties.get(&path.join(".")).cloned())
        }

        fn request_header(&self, _name: &str) -> Result<Option<String>, HostError> {
            Ok(None)
        }

        fn now(&self) -> Result<i64, HostError> {
            Ok(NOW)
        }
    }

    /// A guard configured as in the benchmark's Envoy (principal from node metadata), with the
    /// certificate already seen once.
    fn warm_guard(config: &str, host: &BenchHost, expect: Reason) -> Guard {
        let mut guard = Guard::new(Policy::from_json(config.as_bytes(), None).unwrap(), host);
        assert_eq!(guard.decide(host).reason, expect, "benchmark setup");
        guard
    }

    fn decide(c: &mut Criterion) {
        let app = BenchHost::presenting(APP);
        let rogue = BenchHost::presenting(ROGUE);
        let mut group = c.benchmark_group("decide");

        let mut guard = warm_guard("{}", &app, Reason::Ok);
        group.bench_function("cached", |b| b.iter(|| guard.decide(black_box(&app))));

        let mut guard = warm_guard(r#"{"certificate_cache_size":0}"#, &app, Reason::Ok);
        group.bench_function("cache_off", |b| b.iter(|| guard.decide(black_box(&app))));

        let mut guard = warm_guard("{}", &rogue, Reason::PrincipalMismatch);
        group.bench_function("deny_cached", |b| b.iter(|| guard.decide(black_box(&rogue))));
        group.finish();
    }

    fn certificate(c: &mut Criterion) {
        let pem_text = pem_encode(&svid_der(APP));
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
        let app = BenchHost::presenting(APP);
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
