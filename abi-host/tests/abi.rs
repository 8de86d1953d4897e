//! The shipped module (dist/loopback_guard.wasm, from `make build`) under a host that answers
//! what real Envoy rarely does. Whatever the host answers, the module must never trap (a trap is a
//! panic in the filter: Envoy would lose the VM and every later request on that worker); a
//! request it cannot decide is denied with 403 and a reason, a configuration it cannot read is
//! refused. What Envoy itself answers is in the integration tests, with a real Envoy.

use std::path::PathBuf;

use loopback_guard_abi_host::{run, status, Answer, Host, Run, CONTINUE, PAUSE};
use loopback_guard_core::pem::sha256_hex;
use loopback_guard_core::testing::CertBuilder;

const APP: &str = "spiffe://cluster.local/ns/demo/sa/app";
const ROGUE: &str = "spiffe://cluster.local/ns/demo/sa/rogue";
/// 2023-11-14, inside the test certificates' validity.
const NOW_NANOS: u64 = 1_700_000_000_000_000_000;
/// `proxy_log` levels.
const WARN: u32 = 3;
const ERROR: u32 = 4;

/// The built module: `LOOPBACK_GUARD_WASM` (the Makefile sets it), else dist/loopback_guard.wasm.
fn module() -> Result<Vec<u8>, String> {
    let path = std::env::var_os("LOOPBACK_GUARD_WASM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../dist/loopback_guard.wasm"));
    std::fs::read(&path).map_err(|e| format!("{}: {e}: run `make build` first", path.display()))
}

/// A case: its name, how its host differs from [`rightful`]'s, what the module must do.
type Case = (&'static str, Box<dyn Fn(&mut Host)>, Expect);

fn value(bytes: impl Into<Vec<u8>>) -> Answer {
    Answer::Value(bytes.into())
}

/// The pod demo/app's own request over mTLS from 127.0.0.1, as Envoy 1.40 describes it.
fn request_from(spiffe_id: &str) -> Host {
    let cert = CertBuilder::workload(spiffe_id);
    let mut host = Host {
        plugin_configuration: Some(value("{}")),
        headers: [
            (":authority", "app.demo"),
            (":path", "/orders"),
            (":method", "GET"),
            ("x-request-id", "r-1"),
        ]
        .into_iter()
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .collect(),
        now_nanos: NOW_NANOS,
        ..Host::default()
    };
    for (path, answer) in [
        ("xds.node.metadata.NAMESPACE", value("demo")),
        ("xds.node.metadata.SERVICE_ACCOUNT", value("app")),
        ("source.address", value("127.0.0.1:40000")),
        ("connection.id", value(7u64.to_le_bytes())),
        ("connection.mtls", value([1])),
        ("connection.peer_certificate_valid", value([1])),
        ("connection.peer_certificate", value(cert.pem())),
        ("connection.sha256_peer_certificate_digest", value(sha256_hex(&cert.der()))),
    ] {
        host.properties.insert(path.to_owned(), answer);
    }
    host
}

fn rightful() -> Host {
    request_from(APP)
}

/// What a case must come to.
#[derive(Debug)]
enum Expect {
    /// The request goes on: no local reply.
    Allowed,
    /// The same, after an error log line that contains this.
    AllowedLogging(&'static str),
    /// 403 with this reason in the body and the decision line.
    Denied(&'static str),
    /// 403 with this reason in the body, counted, where the host refuses every log line.
    DeniedUnlogged(&'static str),
    /// `proxy_on_configure` returns false, logging an error that contains this.
    Refused(&'static str),
}

/// What happened, or why that is not what `expect` says.
fn check(name: &str, run: &Run, expect: &Expect) -> Result<(), String> {
    let host = &run.host;
    if !host.unexpected.is_empty() || !host.faults.is_empty() {
        return Err(format!(
            "{name}: calls this host does not implement {:?}, bad pointers {:?}",
            host.unexpected, host.faults
        ));
    }
    if !run.vm_started {
        return Err(format!("{name}: proxy_on_vm_start returned false"));
    }
    match expect {
        Expect::AllowedLogging(text) if !host.lines_at(ERROR).iter().any(|line| line.contains(text)) => {
            return Err(format!("{name}: no error log line containing {text:?} in {:?}", host.log));
        }
        Expect::Allowed | Expect::AllowedLogging(_) => {
            if run.action != Some(CONTINUE) || !host.replies.is_empty() {
                return Err(format!(
                    "{name}: not allowed: action {:?}, replies {:?}",
                    run.action, host.replies
                ));
            }
        }
        Expect::Denied(reason) | Expect::DeniedUnlogged(reason) => {
            let body = format!("loopback-guard: denied: {reason}\n");
            let [reply] = host.replies.as_slice() else {
                return Err(format!("{name}: expected one local reply, got {:?}", host.replies));
            };
            if run.action != Some(PAUSE) || reply.status != 403 || reply.body != body.as_bytes() {
                return Err(format!(
                    "{name}: expected 403 {reason:?}, got action {:?}, {} {:?}",
                    run.action,
                    reply.status,
                    String::from_utf8_lossy(&reply.body)
                ));
            }
            let counter = format!("denied.{reason}");
            if !host.increments.iter().any(|(name, by)| name.ends_with(&counter) && *by == 1) {
                return Err(format!("{name}: no counter {counter} incremented: {:?}", host.increments));
            }
            let line = format!("\"reason\":\"{reason}\"");
            if matches!(expect, Expect::Denied(_))
                && !host
                    .lines_at(WARN)
                    .iter()
                    .any(|text| text.starts_with("{\"decision\":\"deny\"") && text.contains(&line))
            {
                return Err(format!("{name}: no decision line with {line} at warning in {:?}", host.log));
            }
        }
        Expect::Refused(text) => {
            if run.configured || !host.lines_at(ERROR).iter().any(|line| line.contains(text)) {
                return Err(format!(
                    "{name}: expected the configuration refused with an error containing {text:?}; configured {}, log {:?}",
                    run.configured, host.log
                ));
            }
        }
    }
    Ok(())
}

fn with_property(path: &str, answer: Answer) -> impl Fn(&mut Host) {
    let path = path.to_owned();
    move |host: &mut Host| {
        host.properties.insert(path.clone(), answer.clone());
    }
}

/// A connection without `connection.sha256_peer_certificate_digest` (the filter then asks
/// `connection.mtls`), which answers `mtls`.
fn without_digest_and(mtls: Answer) -> impl Fn(&mut Host) {
    move |host: &mut Host| {
        host.properties.remove("connection.sha256_peer_certificate_digest");
        host.properties.insert("connection.mtls".to_owned(), mtls.clone());
    }
}

fn failing(import: &'static str, code: u32) -> impl Fn(&mut Host) {
    move |host: &mut Host| {
        host.failing.insert(import, code);
    }
}

#[test]
fn the_module_never_traps_and_denies_or_refuses_what_it_cannot_read() {
    let wasm = module().unwrap();
    let truncated = {
        let mut map = loopback_guard_abi_host::serialize_map(&rightful().headers);
        map.truncate(map.len() - 9);
        map
    };
    let cases: Vec<Case> = vec![
        ("the rightful request", Box::new(|_: &mut Host| {}), Expect::Allowed),
        (
            "another principal",
            Box::new(|host: &mut Host| *host = request_from(ROGUE)),
            Expect::Denied("principal_mismatch"),
        ),
        // The SDK's logger unwraps proxy_log's status; the module's own drops a refused line.
        (
            "every log line refused, rightful",
            Box::new(failing("proxy_log", status::INTERNAL_FAILURE)),
            Expect::Allowed,
        ),
        (
            "every log line refused, another principal",
            Box::new(|host: &mut Host| {
                *host = request_from(ROGUE);
                host.failing.insert("proxy_log", status::INTERNAL_FAILURE);
            }),
            Expect::DeniedUnlogged("principal_mismatch"),
        ),
        // Property calls answered with a status other than OK and NotFound.
        (
            "peer certificate: InternalFailure",
            Box::new(with_property("connection.peer_certificate", Answer::Status(status::INTERNAL_FAILURE))),
            Expect::Denied("host_error"),
        ),
        (
            "source.address: SerializationFailure",
            Box::new(with_property("source.address", Answer::Status(status::SERIALIZATION_FAILURE))),
            Expect::Denied("host_error"),
        ),
        (
            "every property call: InternalFailure",
            Box::new(failing("proxy_get_property", status::INTERNAL_FAILURE)),
            Expect::Denied("host_error"),
        ),
        (
            "no digest; connection.mtls: BadArgument",
            Box::new(without_digest_and(Answer::Status(status::BAD_ARGUMENT))),
            Expect::Denied("host_error"),
        ),
        // Properties that are absent, or present with bytes that are no such value.
        (
            "source.address: NotFound",
            Box::new(with_property("source.address", Answer::Status(status::NOT_FOUND))),
            Expect::Denied("source_address_unavailable"),
        ),
        (
            "source.address: not UTF-8",
            Box::new(with_property("source.address", value([0xff, 0xfe, 0x00, 0x31]))),
            Expect::Denied("source_address_unavailable"),
        ),
        (
            "source.address: OK without data",
            Box::new(with_property("source.address", Answer::OkWithoutData)),
            Expect::Denied("source_address_unavailable"),
        ),
        (
            "no digest; connection.mtls: NotFound",
            Box::new(without_digest_and(Answer::Status(status::NOT_FOUND))),
            Expect::Denied("no_client_certificate"),
        ),
        (
            "no digest; connection.mtls: eight bytes",
            Box::new(without_digest_and(value([1; 8]))),
            Expect::Denied("host_error"),
        ),
        (
            "peer certificate: garbage",
            Box::new(with_property("connection.peer_certificate", value([0x30, 0x82, 0xff, 0xff, 0, 1, 2]))),
            Expect::Denied("certificate_invalid"),
        ),
        (
            "peer certificate: OK without data",
            Box::new(with_property("connection.peer_certificate", Answer::OkWithoutData)),
            Expect::Denied("certificate_unavailable"),
        ),
        (
            "certificate digest: not hex",
            Box::new(with_property("connection.sha256_peer_certificate_digest", value("zz\u{0}\u{ff}"))),
            Expect::Denied("certificate_unavailable"),
        ),
        (
            "connection.id: three bytes",
            Box::new(with_property("connection.id", value([1, 2, 3]))),
            Expect::Allowed,
        ),
        // Headers.
        (
            "header map: truncated serialisation",
            Box::new(move |host: &mut Host| host.header_map = Some(value(truncated.clone()))),
            Expect::Allowed,
        ),
        (
            "header map: InternalFailure",
            Box::new(failing("proxy_get_header_map_pairs", status::INTERNAL_FAILURE)),
            Expect::Allowed,
        ),
        (
            ":path: InternalFailure, with exempt paths",
            Box::new(|host: &mut Host| {
                host.plugin_configuration = Some(value(r#"{"exempt_paths":["/healthz"]}"#));
                host.header_answers.insert(":path".into(), Answer::Status(status::INTERNAL_FAILURE));
            }),
            Expect::Denied("host_error"),
        ),
        (
            "no certificate property; the XFCC header: InternalFailure",
            Box::new(|host: &mut Host| {
                host.properties.remove("connection.peer_certificate");
                host.header_answers
                    .insert("x-forwarded-client-cert".into(), Answer::Status(status::INTERNAL_FAILURE));
            }),
            Expect::Denied("host_error"),
        ),
        // The other host calls of a request.
        (
            "clock: InternalFailure",
            Box::new(failing("proxy_get_current_time_nanoseconds", status::INTERNAL_FAILURE)),
            Expect::Denied("host_error"),
        ),
        (
            "counter increments: NotFound",
            Box::new(failing("proxy_increment_metric", status::NOT_FOUND)),
            Expect::Allowed,
        ),
        (
            "shared data: InternalFailure",
            Box::new(failing("proxy_get_shared_data", status::INTERNAL_FAILURE)),
            Expect::Allowed,
        ),
        // Configure time.
        (
            "plugin configuration: InternalFailure",
            Box::new(failing("proxy_get_buffer_bytes", status::INTERNAL_FAILURE)),
            Expect::Refused("cannot read the plugin configuration"),
        ),
        (
            "plugin configuration: not UTF-8",
            Box::new(|host: &mut Host| host.plugin_configuration = Some(value([0x7b, 0xff, 0x7d]))),
            Expect::Refused("invalid configuration: configuration: is not UTF-8"),
        ),
        (
            "counter definitions: InternalFailure",
            Box::new(failing("proxy_define_metric", status::INTERNAL_FAILURE)),
            Expect::AllowedLogging("cannot define counter loopback_guard.allowed"),
        ),
        (
            "the summary timer: BadArgument",
            Box::new(failing("proxy_set_tick_period_milliseconds", status::BAD_ARGUMENT)),
            Expect::AllowedLogging("cannot set the log summary timer"),
        ),
    ];
    let mut failures = Vec::new();
    for (name, change, expect) in &cases {
        let mut host = rightful();
        change(&mut host);
        match run(&wasm, host) {
            Ok(outcome) => {
                if let Err(e) = check(name, &outcome, expect) {
                    failures.push(e);
                }
            }
            Err(trap) => failures.push(format!("{name}: TRAP: {trap}")),
        }
    }
    assert!(failures.is_empty(), "{} of {} cases:\n{}", failures.len(), cases.len(), failures.join("\n"));
}
