//! `check`: the filter's decision for one request, each step of it, and the line it would log.

use loopback_guard_core::config::Policy;
use loopback_guard_core::decision::{Decision, Guard, Reason, Verdict};
use loopback_guard_core::identity::SpiffeId;
use loopback_guard_core::log::{decision_line, RequestLabels};
use loopback_guard_core::svid::SvidFacts;
use serde::Serialize;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::cert::{CertFileError, PeerCertificate, TrustedCas};
use crate::handshake;
use crate::host::{CliHost, Pod, Request};
use crate::{emit, read_configs, CheckArgs, Failure, Io, Style, EXIT_OK, EXIT_REFUSED};

const METHOD: &str = "GET";
/// The verdict when the listener's handshake (`--ca`) refuses the certificate.
const HANDSHAKE_REFUSED: &str = "handshake_refused";

/// The steps of "How a decision is made" (docs/configuration.md), in order.
const STEPS: [&str; 6] = [
    "exempt path",
    "loopback peer",
    "certificate presented",
    "peer certificate",
    "X509-SVID rules",
    "principal",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
enum Status {
    /// Checked and fine; the next step runs.
    Pass,
    /// This step decided: allowed.
    Allow,
    /// This step decided: refused.
    Fail,
    /// Turned off by the configuration.
    Skip,
    /// An earlier step decided.
    NotReached,
}

impl Status {
    /// The status, padded to one width, then coloured.
    fn label(self, style: Style) -> String {
        let (text, paint): (&str, fn(Style, &str) -> String) = match self {
            Self::Pass => ("pass", Style::good),
            Self::Allow => ("allow", Style::good),
            Self::Fail => ("FAIL", Style::bad),
            Self::Skip => ("skip", Style::dim),
            Self::NotReached => ("-", Style::dim),
        };
        paint(style, &format!("{text:<5}"))
    }
}

#[derive(Debug, Serialize)]
struct Step {
    step: &'static str,
    status: Status,
    why: String,
}

/// Everything the check found, as `--output json` prints it.
#[derive(Serialize)]
struct Report<'a> {
    /// `allow`, `deny`, `would_deny`, or `handshake_refused` (with --ca).
    verdict: &'static str,
    reason: Option<&'static str>,
    detail: Option<&'a str>,
    exit_code: u8,
    certificate: Option<CertificateReport<'a>>,
    expected_principal: Option<&'a str>,
    /// Where the expected principal comes from, as the filter logs it at start.
    principal_notice: Option<&'a str>,
    configuration: Option<&'a str>,
    policy: String,
    steps: &'a [Step],
    /// The filter's log level for the decision line.
    log_level: Option<&'static str>,
    /// The line, exactly as the filter would log it.
    decision_line: Option<&'a str>,
}

#[derive(Serialize)]
struct CertificateReport<'a> {
    file: String,
    format: &'static str,
    chain_length: usize,
    sha256: &'a str,
    spiffe_id: Option<&'a str>,
    not_before: Option<String>,
    not_after: Option<String>,
}

pub(crate) fn run(args: &CheckArgs, json: bool, io: &mut Io<'_>) -> Result<u8, Failure> {
    let now = match &args.at {
        Some(at) => OffsetDateTime::parse(at, &Rfc3339)
            .map_err(|e| Failure::usage(format!("--at {at:?} is not an RFC 3339 time: {e}")))?
            .unix_timestamp(),
        None => OffsetDateTime::now_utc().unix_timestamp(),
    };
    let (configuration, policy) = policy(args)?;
    let usage = |e: CertFileError| Failure::usage(e.to_string());
    let peer = args.cert.as_deref().map(PeerCertificate::read).transpose().map_err(usage)?;
    let cas = args.ca.as_deref().map(TrustedCas::read).transpose().map_err(usage)?;
    let listener_principal = match (&args.principal, &args.namespace, &args.service_account) {
        (Some(id), _, _) => Some(id.clone()),
        // Istio's sidecar serves the pod's own workload certificate on the listener.
        (None, Some(ns), Some(sa)) => {
            SpiffeId::for_service_account(&policy.trust_domain, ns, sa).ok().map(|id| id.as_str().to_owned())
        }
        _ => None,
    };
    let pod = Pod {
        namespace: args.namespace.clone(),
        service_account: args.service_account.clone(),
        listener_principal,
    };
    let request = Request {
        source_address: args.source.clone(),
        path: args.path.clone(),
        method: METHOD.into(),
        authority: args.authority.clone(),
        now,
    };
    let host = CliHost { peer: peer.as_ref(), pod: &pod, request: &request };
    let handshake = match (&peer, &cas) {
        (Some(peer), Some(cas)) => Some(handshake::handshake(peer, cas, now)),
        _ => None,
    };

    let mut guard = Guard::new(policy.clone(), &host);
    let mut notice = guard.take_notice();
    // A refused handshake ends the connection before the filter sees a request.
    let decision = match &handshake {
        Some(Err(_)) => None,
        _ => Some(guard.decide(&host)),
    };
    notice = notice.or_else(|| guard.take_notice());
    let labels =
        RequestLabels { connection_id: None, request_id: None, method: Some(METHOD), path: Some(&args.path) };
    let line = decision.as_ref().map(|decision| decision_line(decision, &labels, policy.log_field_max_bytes));

    let svid = peer.as_ref().map(|peer| SvidFacts::from_der(&peer.der));
    let svid = svid.as_ref().and_then(|facts| facts.as_ref().ok());
    let mut all_steps = Vec::new();
    if let Some(handshake) = &handshake {
        all_steps.push(match handshake {
            Ok(why) => Step { step: "TLS handshake", status: Status::Pass, why: why.clone() },
            Err(why) => Step { step: "TLS handshake", status: Status::Fail, why: why.clone() },
        });
    }
    match &decision {
        Some(decision) => all_steps.extend(steps(&policy, decision, &request, svid, cas.is_some())),
        None => all_steps.extend(STEPS.iter().map(|step| Step {
            step,
            status: Status::NotReached,
            why: String::new(),
        })),
    }
    let verdict = decision.as_ref().map_or(HANDSHAKE_REFUSED, |d| d.verdict.as_str());
    let allowed = decision.as_ref().is_some_and(|d| d.verdict == Verdict::Allow);
    let code = if allowed { EXIT_OK } else { EXIT_REFUSED };
    let log_level = decision.as_ref().map(|_| if allowed { "info" } else { "warning" });

    let text = if json {
        let report = Report {
            verdict,
            reason: decision.as_ref().map(|d| d.reason.as_str()),
            detail: decision.as_ref().and_then(|d| d.detail.as_deref()),
            exit_code: code,
            certificate: peer.as_ref().map(|peer| CertificateReport {
                file: peer.path.display().to_string(),
                format: peer.format.as_str(),
                chain_length: peer.chain_length,
                sha256: &peer.sha256,
                spiffe_id: svid.map(|s| s.spiffe_id.as_str()),
                not_before: svid.map(|s| time_text(s.not_before)),
                not_after: svid.map(|s| time_text(s.not_after)),
            }),
            expected_principal: decision
                .as_ref()
                .and_then(|d| d.expected_principal.as_ref())
                .map(|p| p.as_str()),
            principal_notice: notice.as_deref(),
            configuration: configuration.as_deref(),
            policy: crate::policy_summary(&policy),
            steps: &all_steps,
            log_level,
            decision_line: line.as_deref(),
        };
        serde_json::to_string_pretty(&report).map_err(|e| Failure::usage(e.to_string()))? + "\n"
    } else {
        let style = io.style;
        let mut out = String::new();
        let mut field =
            |name: &str, value: &str| out.push_str(&format!("{:<12} {value}\n", style.bold(name)));
        match &peer {
            Some(peer) => {
                let chain = match peer.chain_length {
                    1 => String::new(),
                    n => format!(", the leaf of a chain of {n}"),
                };
                field("certificate", &format!("{} ({}{chain})", peer.path.display(), peer.format.as_str()));
                let id = match svid {
                    Some(s) => format!(
                        "{}, valid {} to {}",
                        s.spiffe_id,
                        time_text(s.not_before),
                        time_text(s.not_after)
                    ),
                    None => "not an X509-SVID (see the X509-SVID rules)".into(),
                };
                field("", &id);
                field("", &format!("sha256 {}", peer.sha256));
            }
            None => field("certificate", "none presented (--no-cert)"),
        }
        field("pod", &pod_text(&pod, notice.as_deref()));
        field("request", &format!("{METHOD} {} from {} at {}", args.path, args.source, time_text(now)));
        field("config", &configuration.clone().unwrap_or_else(|| "none: every default".into()));
        field("", &crate::policy_summary(&policy));
        out.push_str(&format!("\n{}\n", style.bold("Steps (the first that fails decides)")));
        let first = if handshake.is_some() { 0 } else { 1 };
        for (number, step) in all_steps.iter().enumerate() {
            let row =
                format!("  {}. {:<22} {} {}", number + first, step.step, step.status.label(style), step.why);
            out.push_str(row.trim_end());
            out.push('\n');
        }
        match (&decision, &line) {
            (Some(decision), Some(line)) => {
                let verdict = match decision.verdict {
                    Verdict::Allow => style.good(verdict),
                    Verdict::Deny => style.bad(verdict),
                    Verdict::WouldDeny => style.warn(verdict),
                };
                out.push_str(&format!(
                    "\n{} {verdict}, {}\n",
                    style.bold("Verdict:"),
                    decision.reason.as_str()
                ));
                out.push_str(&format!("  {}\n", consequence(decision)));
                let level = log_level.unwrap_or_default();
                out.push_str(&format!("\n{} (at {level}):\n{line}\n", style.bold("The filter would log")));
            }
            _ => {
                out.push_str(&format!("\n{} {}\n", style.bold("Verdict:"), style.bad(HANDSHAKE_REFUSED)));
                out.push_str(
                    "  Envoy's TLS turns the client away before the filter runs (the listener's \
                     ssl.fail_verify_error counter): no request, no decision line.\n",
                );
            }
        }
        out
    };
    emit(io, &text)?;
    Ok(code)
}

/// The configuration and its policy; an invalid one ends the check as Envoy would refuse it.
fn policy(args: &CheckArgs) -> Result<(Option<String>, Policy), Failure> {
    let Some(path) = &args.config else {
        let policy = Policy::from_json(b"", args.trust_domain.as_deref())
            .map_err(|e| Failure::usage(format!("--trust-domain: {e}")))?;
        return Ok((None, policy));
    };
    let mut configs = read_configs(path)?;
    let config = match configs.len() {
        1 => configs.remove(0),
        n => {
            let places: Vec<String> = configs.iter().map(|c| c.location.clone()).collect();
            return Err(Failure::usage(format!(
                "{} holds {n} plugin configurations; pass a file with one: {}",
                path.display(),
                places.join("; ")
            )));
        }
    };
    let policy = Policy::from_json(&config.json, args.trust_domain.as_deref()).map_err(|e| {
        Failure::usage(format!(
            "{}: Envoy would refuse this configuration, the filter logging\n  loopback-guard: {e}",
            config.location
        ))
    })?;
    Ok((Some(config.location), policy))
}

fn pod_text(pod: &Pod, notice: Option<&str>) -> String {
    let metadata = match (&pod.namespace, &pod.service_account) {
        (Some(ns), Some(sa)) => format!("node metadata NAMESPACE={ns} SERVICE_ACCOUNT={sa}"),
        _ => "no node metadata".into(),
    };
    let listener = match &pod.listener_principal {
        Some(id) => format!("listener certificate {id}"),
        None => "no listener certificate".into(),
    };
    match notice {
        Some(notice) => format!("{metadata}; {listener}\n{:<12} {notice}", ""),
        None => format!("{metadata}; {listener}"),
    }
}

/// What Envoy does with the request.
fn consequence(decision: &Decision) -> String {
    match decision.verdict {
        Verdict::Allow => "Envoy passes the request on to its route.".into(),
        Verdict::Deny => format!(
            "Envoy answers 403 with the body \"loopback-guard: denied: {}\" and counts \
             loopback_guard.denied.{}.",
            decision.reason.as_str(),
            decision.reason.as_str()
        ),
        Verdict::WouldDeny => {
            "Audit mode: Envoy passes the request on, and counts loopback_guard.would_deny.".into()
        }
    }
}

fn time_text(seconds: i64) -> String {
    OffsetDateTime::from_unix_timestamp(seconds)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| format!("@{seconds}"))
}

/// Which step a reason comes from (docs/configuration.md, "How a decision is made").
fn step_of(reason: Reason) -> Option<usize> {
    Some(match reason {
        Reason::Exempt => 0,
        Reason::NotLoopback | Reason::SourceAddressUnavailable | Reason::SourceAddressForwarded => 1,
        Reason::NoClientCertificate | Reason::CertificateUnvalidated => 2,
        Reason::CertificateUnavailable => 3,
        Reason::CertificateInvalid
        | Reason::SvidUriSanCount
        | Reason::SvidBadSpiffeId
        | Reason::SvidNotLeaf
        | Reason::SvidExpired
        | Reason::SvidNotYetValid => 4,
        Reason::Ok | Reason::PrincipalMismatch | Reason::NoExpectedPrincipal => 5,
        // host_error, unconfigured, engine_busy, and reasons the core may add later: shown
        // without a step.
        _ => return None,
    })
}

/// The steps, from the decision the core made: those before the deciding one passed (or were
/// turned off), the deciding one says why, later ones were not reached.
fn steps(
    policy: &Policy,
    decision: &Decision,
    request: &Request,
    svid: Option<&SvidFacts>,
    handshake_checked: bool,
) -> Vec<Step> {
    let decided = step_of(decision.reason);
    let reason = decision.reason;
    let detail = decision.detail.as_deref();
    let address = request.source_address.as_str();
    let bare_path = request.path.split_once('?').map_or(request.path.as_str(), |(bare, _)| bare);
    let expected = decision.expected_principal.as_ref().map(|p| p.as_str().to_owned());
    let peer = decision.peer_principal.as_ref().map(|p| p.spiffe_id.as_str().to_owned());
    let explain = |fallback: String| match detail {
        Some(detail) => format!("{}: {detail}", reason.as_str()),
        None => format!("{}: {fallback}", reason.as_str()),
    };
    let Some(_) = decided else {
        // A host error, or a reason this command does not place: no step can be called passed.
        let mut steps: Vec<Step> =
            STEPS.iter().map(|step| Step { step, status: Status::NotReached, why: String::new() }).collect();
        let status = if reason.is_allow() { Status::Allow } else { Status::Fail };
        steps.push(Step { step: "decision", status, why: explain(reason.as_str().replace('_', " ")) });
        return steps;
    };
    STEPS
        .iter()
        .enumerate()
        .map(|(index, name)| {
            let (status, why) = match decided {
                Some(at) if index > at => (Status::NotReached, String::new()),
                Some(at) if index == at => {
                    let why = match reason {
                        Reason::Exempt => {
                            format!("{bare_path} is in exempt_paths: admitted without any check")
                        }
                        Reason::NotLoopback => explain(format!("{address} is not in 127.0.0.0/8 or ::1")),
                        Reason::SourceAddressUnavailable => {
                            explain(format!("{address:?} is not an ip:port address"))
                        }
                        Reason::NoClientCertificate => {
                            explain("no client certificate was presented (connection.mtls is false)".into())
                        }
                        Reason::SvidExpired => explain(match svid {
                            Some(s) => format!(
                                "notAfter {} is before {}",
                                time_text(s.not_after),
                                time_text(request.now)
                            ),
                            None => "the certificate has expired".into(),
                        }),
                        Reason::SvidNotYetValid => explain(match svid {
                            Some(s) => format!(
                                "notBefore {} is after {}",
                                time_text(s.not_before),
                                time_text(request.now)
                            ),
                            None => "the certificate is not valid yet".into(),
                        }),
                        Reason::Ok => match (&peer, &expected) {
                            (Some(peer), Some(expected)) if peer == expected => {
                                format!("{peer} is the expected principal")
                            }
                            (Some(peer), expected) => format!(
                                "{peer} is in allowed_principals (expected principal: {})",
                                expected.as_deref().unwrap_or("none")
                            ),
                            (None, _) => "admitted".into(),
                        },
                        Reason::PrincipalMismatch => explain(format!(
                            "{} is neither the expected principal {} nor in allowed_principals",
                            peer.as_deref().unwrap_or("the peer"),
                            expected.as_deref().unwrap_or("(none)")
                        )),
                        other => explain(other.as_str().replace('_', " ")),
                    };
                    (if reason.is_allow() { Status::Allow } else { Status::Fail }, why)
                }
                _ => passed(index, policy, request, bare_path, svid, decision, handshake_checked),
            };
            Step { step: name, status, why }
        })
        .collect()
}

/// Why step `index` passed (or was off), for a decision made after it.
fn passed(
    index: usize,
    policy: &Policy,
    request: &Request,
    bare_path: &str,
    svid: Option<&SvidFacts>,
    decision: &Decision,
    handshake_checked: bool,
) -> (Status, String) {
    match index {
        0 if policy.exempt_paths.is_empty() => (Status::Skip, "no exempt_paths configured".into()),
        0 => (Status::Pass, format!("{bare_path} is not in exempt_paths {:?}", policy.exempt_paths)),
        1 if !policy.require_loopback => (Status::Skip, "require_loopback is false".into()),
        1 => (Status::Pass, format!("{} is a loopback address", request.source_address)),
        2 if handshake_checked => (Status::Pass, "presented, and validated in the handshake".into()),
        2 => (
            Status::Pass,
            "presented; its chain is taken as validated (--ca checks it as Envoy's handshake does)".into(),
        ),
        3 => (
            Status::Pass,
            format!(
                "connection.peer_certificate, sha256 {}",
                decision.cert_sha256.as_deref().unwrap_or("unknown")
            ),
        ),
        4 => match svid {
            Some(s) => (
                Status::Pass,
                format!(
                    "one URI SAN, {}: a valid SPIFFE ID; a leaf; {} is within {} .. {}",
                    s.spiffe_id,
                    time_text(request.now),
                    time_text(s.not_before),
                    time_text(s.not_after)
                ),
            ),
            None => (Status::Pass, "a valid X509-SVID".into()),
        },
        _ => (Status::Pass, String::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_decision_without_a_step_marks_none_passed() {
        let policy = Policy::from_json(b"{}", None).unwrap();
        let request = Request {
            source_address: "127.0.0.1:1".into(),
            path: "/".into(),
            method: "GET".into(),
            authority: "127.0.0.1".into(),
            now: 0,
        };
        let decision = Decision::deny(Reason::HostError, "connection.mtls is [7]");
        let steps = steps(&policy, &decision, &request, None, false);
        assert!(steps[..6].iter().all(|step| step.status == Status::NotReached));
        assert_eq!(steps[6].status, Status::Fail);
        assert_eq!(steps[6].why, "host_error: connection.mtls is [7]");
        let decision = Decision::deny(Reason::SvidExpired, "");
        let decision = Decision { detail: None, ..decision };
        let steps = super::steps(&policy, &decision, &request, None, false);
        assert_eq!(
            steps.iter().map(|s| s.status).collect::<Vec<_>>(),
            [Status::Skip, Status::Pass, Status::Pass, Status::Pass, Status::Fail, Status::NotReached]
        );
        assert_eq!(steps[4].why, "svid_expired: the certificate has expired");
    }

    #[test]
    fn every_reason_has_a_step() {
        for reason in Reason::ALL {
            match reason {
                // Not a step's: a failing host call, a filter without configuration, re-entry.
                Reason::HostError | Reason::Unconfigured | Reason::EngineBusy => {
                    assert_eq!(step_of(*reason), None)
                }
                _ => assert!(step_of(*reason).is_some(), "{reason:?}"),
            }
        }
    }
}
