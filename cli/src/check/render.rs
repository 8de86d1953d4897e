//! The check, said: as text for a person, or as the JSON report (`--output json`). Everything
//! shown of the filter's behaviour comes from its `Outcome`: the decision, the line it logs and
//! at which level, the counter it bumps, the reply it sends.

use loopback_guard_core::decision::Verdict;
use loopback_guard_core::engine::Outcome;
use loopback_guard_core::notice::{Level, Notice};
use loopback_guard_core::svid::SvidFacts;
use serde::Serialize;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::steps::{self, Row, Status};
use super::{Checked, Inputs, METHOD};
use crate::host::Pod;
use crate::{Failure, Style, EXIT_OK, EXIT_REFUSED};

/// The verdict when the listener's handshake (`--ca`) refuses the certificate.
const HANDSHAKE_REFUSED: &str = "handshake_refused";
/// The prefix of every line the filter logs.
const PREFIX: &str = "loopback-guard: ";

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
    /// Every line the filter logs besides the decision line, at configure and at the request.
    notices: Vec<NoticeReport<'a>>,
    configuration: Option<&'a str>,
    policy: String,
    steps: &'a [Row],
    /// The counter the filter bumps.
    counter: Option<String>,
    /// The filter's log level for the decision line.
    log_level: Option<&'static str>,
    /// The line, exactly as the filter would log it (`null` when it logs none).
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

#[derive(Serialize)]
struct NoticeReport<'a> {
    level: &'static str,
    text: &'a str,
}

/// The command's exit status: 0 when the filter lets the request through unconditionally.
pub(super) fn exit_code(checked: &Checked) -> u8 {
    match &checked.outcome {
        Some(outcome) if outcome.decision.verdict == Verdict::Allow => EXIT_OK,
        _ => EXIT_REFUSED,
    }
}

fn level_name(level: Level) -> &'static str {
    match level {
        Level::Error => "error",
        Level::Warn => "warning",
        Level::Info => "info",
    }
}

/// Where the expected principal comes from, as the filter says it (without its prefix).
fn principal_notice(notices: &[Notice]) -> Option<&str> {
    notices
        .iter()
        .map(|n| n.text.strip_prefix(PREFIX).unwrap_or(&n.text))
        .find(|t| !t.starts_with("configured: "))
}

fn rows(inputs: &Inputs, checked: &Checked, svid: Option<&SvidFacts>) -> Vec<Row> {
    let mut rows = Vec::new();
    if let Some(handshake) = &checked.handshake {
        rows.push(match handshake {
            Ok(why) => Row { step: "TLS handshake", status: Status::Pass, why: why.clone() },
            Err(why) => Row { step: "TLS handshake", status: Status::Fail, why: why.clone() },
        });
    }
    match &checked.outcome {
        Some(outcome) => rows.extend(steps::rows(
            &inputs.policy,
            &outcome.decision,
            &inputs.request,
            svid,
            inputs.cas.is_some(),
        )),
        None => rows.extend(steps::not_reached()),
    }
    rows
}

fn svid_of(inputs: &Inputs) -> Option<SvidFacts> {
    inputs.peer.as_ref().and_then(|peer| SvidFacts::from_der(&peer.der).ok())
}

pub(super) fn json(inputs: &Inputs, checked: &Checked) -> Result<String, Failure> {
    let svid = svid_of(inputs);
    let svid = svid.as_ref();
    let rows = rows(inputs, checked, svid);
    let outcome = checked.outcome.as_ref();
    let decision = outcome.map(|o| &o.decision);
    let report = Report {
        verdict: decision.map_or(HANDSHAKE_REFUSED, |d| d.verdict.as_str()),
        reason: decision.map(|d| d.reason.as_str()),
        detail: decision.and_then(|d| d.detail.as_deref()),
        exit_code: exit_code(checked),
        certificate: inputs.peer.as_ref().map(|peer| CertificateReport {
            file: peer.path.display().to_string(),
            format: peer.format.as_str(),
            chain_length: peer.chain_length,
            sha256: &peer.sha256,
            spiffe_id: svid.map(|s| s.spiffe_id.as_str()),
            not_before: svid.map(|s| time_text(s.not_before)),
            not_after: svid.map(|s| time_text(s.not_after)),
        }),
        expected_principal: decision.and_then(|d| d.expected_principal.as_ref()).map(|p| p.as_str()),
        principal_notice: principal_notice(&checked.notices),
        notices: checked
            .notices
            .iter()
            .map(|n| NoticeReport { level: level_name(n.level), text: &n.text })
            .collect(),
        configuration: inputs.configuration.as_deref(),
        policy: crate::policy_summary(&inputs.policy),
        steps: &rows,
        counter: outcome.map(|o| o.counter.name()),
        log_level: outcome.and_then(|o| o.log.as_ref()).map(|line| level_name(line.level)),
        decision_line: outcome.and_then(|o| o.log.as_ref()).map(|line| line.text.as_str()),
    };
    Ok(serde_json::to_string_pretty(&report).map_err(|e| Failure::usage(e.to_string()))? + "\n")
}

pub(super) fn text(inputs: &Inputs, checked: &Checked, style: Style) -> String {
    let svid = svid_of(inputs);
    let svid = svid.as_ref();
    let mut out = String::new();
    let mut field = |name: &str, value: &str| out.push_str(&format!("{:<12} {value}\n", style.bold(name)));
    match &inputs.peer {
        Some(peer) => {
            let chain = match peer.chain_length {
                1 => String::new(),
                n => format!(", the leaf of a chain of {n}"),
            };
            field("certificate", &format!("{} ({}{chain})", peer.path.display(), peer.format.as_str()));
            let id = match svid {
                Some(s) => {
                    format!(
                        "{}, valid {} to {}",
                        s.spiffe_id,
                        time_text(s.not_before),
                        time_text(s.not_after)
                    )
                }
                None => "not an X509-SVID (see the X509-SVID rules)".into(),
            };
            field("", &id);
            field("", &format!("sha256 {}", peer.sha256));
        }
        None => field("certificate", "none presented (--no-cert)"),
    }
    let request = &inputs.request;
    field("pod", &pod_text(&inputs.pod, principal_notice(&checked.notices)));
    field(
        "request",
        &format!("{METHOD} {} from {} at {}", request.path, request.source_address, time_text(request.now)),
    );
    field("config", &inputs.configuration.clone().unwrap_or_else(|| "none: every default".into()));
    field("", &crate::policy_summary(&inputs.policy));
    out.push_str(&format!("\n{}\n", style.bold("Steps (the first that fails decides)")));
    let first = if checked.handshake.is_some() { 0 } else { 1 };
    for (number, row) in rows(inputs, checked, svid).iter().enumerate() {
        let line = format!("  {}. {:<22} {} {}", number + first, row.step, row.status.label(style), row.why);
        out.push_str(line.trim_end());
        out.push('\n');
    }
    match &checked.outcome {
        Some(outcome) => {
            let decision = &outcome.decision;
            let verdict = decision.verdict.as_str();
            let verdict = match decision.verdict {
                Verdict::Allow => style.good(verdict),
                Verdict::Deny => style.bad(verdict),
                Verdict::WouldDeny => style.warn(verdict),
            };
            out.push_str(&format!("\n{} {verdict}, {}\n", style.bold("Verdict:"), decision.reason.as_str()));
            out.push_str(&format!("  {}\n", consequence(outcome)));
            match &outcome.log {
                Some(line) => out.push_str(&format!(
                    "\n{} (at {}):\n{}\n",
                    style.bold("The filter would log"),
                    level_name(line.level),
                    line.text
                )),
                None => out.push_str(&format!(
                    "\n{} no decision line for it (log_allowed={}).\n",
                    style.bold("The filter would log"),
                    inputs.policy.log_allowed.as_str()
                )),
            }
        }
        None => {
            out.push_str(&format!("\n{} {}\n", style.bold("Verdict:"), style.bad(HANDSHAKE_REFUSED)));
            out.push_str(
                "  Envoy's TLS turns the client away before the filter runs (the listener's \
                 ssl.fail_verify_error counter): no request, no decision line.\n",
            );
        }
    }
    out
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

/// What Envoy does with the request, from the filter's outcome: its reply and its counter.
fn consequence(outcome: &Outcome) -> String {
    let counter = outcome.counter.name();
    match (&outcome.reply, outcome.decision.verdict) {
        (Some(reply), _) => format!(
            "Envoy answers {} with the body \"{}\" and counts {counter}.",
            reply.status,
            reply.body.trim_end()
        ),
        (None, Verdict::WouldDeny) => {
            format!("Audit mode: Envoy passes the request on, and counts {counter}.")
        }
        (None, _) => "Envoy passes the request on to its route.".into(),
    }
}

pub(super) fn time_text(seconds: i64) -> String {
    OffsetDateTime::from_unix_timestamp(seconds)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| format!("@{seconds}"))
}
