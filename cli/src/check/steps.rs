//! The steps of "How a decision is made", as the command shows them: each step's status and why,
//! from the decision the core made. Which step a reason belongs to is the core's
//! (`Reason::step`); this file only says it in words.

use loopback_guard_core::config::Policy;
use loopback_guard_core::decision::{Decision, Reason, Step};
use loopback_guard_core::svid::SvidFacts;
use serde::Serialize;

use super::render::time_text;
use crate::host::Request;
use crate::Style;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum Status {
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
    pub(super) fn label(self, style: Style) -> String {
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

/// One row of the step list.
#[derive(Debug, Serialize)]
pub(super) struct Row {
    pub step: &'static str,
    pub status: Status,
    pub why: String,
}

/// Every step, not reached: what a refused handshake leaves.
pub(super) fn not_reached() -> Vec<Row> {
    Step::ALL
        .iter()
        .map(|step| Row { step: step.title(), status: Status::NotReached, why: String::new() })
        .collect()
}

/// The steps, from the decision the core made: those before the deciding one passed (or were
/// turned off), the deciding one says why, later ones were not reached.
pub(super) fn rows(
    policy: &Policy,
    decision: &Decision,
    request: &Request,
    svid: Option<&SvidFacts>,
    handshake_checked: bool,
) -> Vec<Row> {
    let reason = decision.reason;
    let detail = decision.detail.as_deref();
    let explain = |fallback: String| match detail {
        Some(detail) => format!("{}: {detail}", reason.as_str()),
        None => format!("{}: {fallback}", reason.as_str()),
    };
    let Some(decided) = reason.step() else {
        // A host error, no configuration, re-entry: no step can be called passed.
        let mut rows = not_reached();
        let status = if reason.is_allow() { Status::Allow } else { Status::Fail };
        rows.push(Row { step: "decision", status, why: explain(reason.as_str().replace('_', " ")) });
        return rows;
    };
    let bare_path = request.path.split_once('?').map_or(request.path.as_str(), |(bare, _)| bare);
    Step::ALL
        .iter()
        .map(|&step| {
            let (status, why) = if step > decided {
                (Status::NotReached, String::new())
            } else if step == decided {
                let status = if reason.is_allow() { Status::Allow } else { Status::Fail };
                (status, deciding(decision, request, bare_path, svid, &explain))
            } else {
                passed(step, policy, request, bare_path, svid, decision, handshake_checked)
            };
            Row { step: step.title(), status, why }
        })
        .collect()
}

/// Why the deciding step decided as it did.
fn deciding(
    decision: &Decision,
    request: &Request,
    bare_path: &str,
    svid: Option<&SvidFacts>,
    explain: &dyn Fn(String) -> String,
) -> String {
    let address = request.source_address.as_str();
    let expected = decision.expected_principal.as_ref().map(|p| p.as_str().to_owned());
    let peer = decision.peer_principal.as_ref().map(|p| p.spiffe_id.as_str().to_owned());
    match decision.reason {
        Reason::Exempt => format!("{bare_path} is in exempt_paths: admitted without any check"),
        Reason::NotLoopback => explain(format!("{address} is not in 127.0.0.0/8 or ::1")),
        Reason::SourceAddressUnavailable => explain(format!("{address:?} is not an ip:port address")),
        Reason::NoClientCertificate => {
            explain("no client certificate was presented (connection.mtls is false)".into())
        }
        Reason::SvidExpired => explain(match svid {
            Some(s) => format!("notAfter {} is before {}", time_text(s.not_after), time_text(request.now)),
            None => "the certificate has expired".into(),
        }),
        Reason::SvidNotYetValid => explain(match svid {
            Some(s) => format!("notBefore {} is after {}", time_text(s.not_before), time_text(request.now)),
            None => "the certificate is not valid yet".into(),
        }),
        Reason::Ok => match (&peer, &expected) {
            (Some(peer), Some(expected)) if peer == expected => format!("{peer} is the expected principal"),
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
    }
}

/// Why `step` passed (or was off), for a decision made after it.
fn passed(
    step: Step,
    policy: &Policy,
    request: &Request,
    bare_path: &str,
    svid: Option<&SvidFacts>,
    decision: &Decision,
    handshake_checked: bool,
) -> (Status, String) {
    match step {
        Step::ExemptPath if policy.exempt_paths.is_empty() => {
            (Status::Skip, "no exempt_paths configured".into())
        }
        Step::ExemptPath => {
            (Status::Pass, format!("{bare_path} is not in exempt_paths {:?}", policy.exempt_paths))
        }
        Step::LoopbackPeer if !policy.require_loopback => (Status::Skip, "require_loopback is false".into()),
        Step::LoopbackPeer => (Status::Pass, format!("{} is a loopback address", request.source_address)),
        Step::CertificatePresented if handshake_checked => {
            (Status::Pass, "presented, and validated in the handshake".into())
        }
        Step::CertificatePresented => (
            Status::Pass,
            "presented; its chain is taken as validated (--ca checks it as Envoy's handshake does)".into(),
        ),
        Step::PeerCertificate => (
            Status::Pass,
            format!(
                "connection.peer_certificate, sha256 {}",
                decision.cert_sha256.as_deref().unwrap_or("unknown")
            ),
        ),
        Step::SvidRules => match svid {
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
        Step::Principal => (Status::Pass, String::new()),
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
        let rows = rows(&policy, &decision, &request, None, false);
        assert!(rows[..6].iter().all(|row| row.status == Status::NotReached));
        assert_eq!(rows[6].status, Status::Fail);
        assert_eq!(rows[6].why, "host_error: connection.mtls is [7]");
        let decision = Decision::deny(Reason::SvidExpired, "");
        let decision = Decision { detail: None, ..decision };
        let rows = super::rows(&policy, &decision, &request, None, false);
        assert_eq!(
            rows.iter().map(|s| s.status).collect::<Vec<_>>(),
            [Status::Skip, Status::Pass, Status::Pass, Status::Pass, Status::Fail, Status::NotReached]
        );
        assert_eq!(rows[4].why, "svid_expired: the certificate has expired");
    }
}
