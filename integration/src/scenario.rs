//! One request observed end to end, and checked against what should have happened.
//!
//! An [`Observation`] holds everything a request left behind: the HTTP reply (or the failed
//! handshake), the decision lines the filter logged, the access log entries and the change of
//! every `loopback_guard` counter. [`Observation::check`] compares all of them with an
//! [`Expected`] outcome and lists every difference.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::client::{Client, ConnectionFailed, Reply};
use crate::decision_log::DecisionLine;
use crate::envoy::{Envoy, Listener};
use crate::pki::{Credential, Pki};
use crate::Result;

/// What the backend answers when the filter lets a request through.
pub const BACKEND_BODY: &str = "hello from the backend\n";

/// The body of the filter's 403.
pub fn deny_body(reason: &str) -> String {
    format!("loopback-guard: denied: {reason}\n")
}

/// What a request should lead to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expected {
    /// The filter ran and logged one decision.
    Decision {
        /// `allow`, `deny` or `would_deny`
        decision: &'static str,
        reason: &'static str,
        /// The SPIFFE ID the filter read from the client certificate, if it could.
        peer_principal: Option<String>,
    },
    /// Envoy's TLS layer refused the client; the filter never ran.
    HandshakeRefused,
    /// Envoy answered with this status before the filter ran (e.g. 431 for request headers over
    /// its limit): no decision, no counter, and an access log entry without a guard decision.
    EnvoyReply(u16),
}

impl Expected {
    pub fn allow(reason: &'static str, peer_principal: Option<&str>) -> Self {
        Self::decision("allow", reason, peer_principal)
    }

    pub fn deny(reason: &'static str, peer_principal: Option<&str>) -> Self {
        Self::decision("deny", reason, peer_principal)
    }

    pub fn would_deny(reason: &'static str, peer_principal: Option<&str>) -> Self {
        Self::decision("would_deny", reason, peer_principal)
    }

    fn decision(decision: &'static str, reason: &'static str, peer: Option<&str>) -> Self {
        Expected::Decision { decision, reason, peer_principal: peer.map(str::to_owned) }
    }

    /// The status Envoy should answer with (`None`: no HTTP reply at all).
    pub fn status(&self) -> Option<u16> {
        match self {
            Expected::Decision { decision, .. } if *decision == "deny" => Some(403),
            Expected::Decision { .. } => Some(200),
            Expected::HandshakeRefused => None,
            Expected::EnvoyReply(status) => Some(*status),
        }
    }

    /// The body Envoy should answer with.
    pub fn body(&self) -> Option<String> {
        match self {
            Expected::Decision { decision, reason, .. } if *decision == "deny" => Some(deny_body(reason)),
            Expected::Decision { .. } => Some(BACKEND_BODY.to_owned()),
            Expected::HandshakeRefused | Expected::EnvoyReply(_) => None,
        }
    }

    /// The counter that should go up by one (short name, see [`crate::envoy::guard_counter_name`]).
    pub fn counter(&self) -> Option<String> {
        match self {
            Expected::Decision { decision, reason, .. } => Some(match (*decision, *reason) {
                ("allow", "exempt") => "exempt".to_owned(),
                ("allow", _) => "allowed".to_owned(),
                ("would_deny", _) => "would_deny".to_owned(),
                (_, reason) => format!("denied.{reason}"),
            }),
            Expected::HandshakeRefused | Expected::EnvoyReply(_) => None,
        }
    }

    /// The Envoy log level of the decision line.
    pub fn log_level(&self) -> Option<&'static str> {
        match self {
            Expected::Decision { decision, .. } if *decision == "allow" => Some("info"),
            Expected::Decision { .. } => Some("warning"),
            Expected::HandshakeRefused | Expected::EnvoyReply(_) => None,
        }
    }
}

/// Everything one request left behind.
#[derive(Debug)]
pub struct Observation {
    pub path: String,
    pub reply: std::result::Result<Reply, ConnectionFailed>,
    pub decisions: Vec<DecisionLine>,
    pub access_log: Vec<Value>,
    /// Whether the filter was asked to set filter state, which the access log shows.
    pub filter_state: bool,
    /// Changed `loopback_guard` counters, by short name.
    pub counters: BTreeMap<String, i64>,
    /// Changed TLS counters of the listener (`handshake`, `fail_verify_error`, ...).
    pub tls_counters: BTreeMap<String, i64>,
}

/// How long to wait for the access log line of a request that got a reply.
const ACCESS_LOG_WAIT: Duration = Duration::from_secs(5);
/// How long to let a refused connection leave traces (it should leave none).
const SETTLE: Duration = Duration::from_millis(300);

/// Sends `GET path` to `listener` over a fresh connection, presenting `identity` (or no
/// certificate), and gathers what it left behind.
pub fn observe(
    envoy: &Envoy,
    pki: &Pki,
    listener: Listener,
    identity: Option<&Credential>,
    path: &str,
) -> Result<Observation> {
    observe_with_headers(envoy, pki, listener, identity, path, &[])
}

/// [`observe`], with extra request headers.
pub fn observe_with_headers(
    envoy: &Envoy,
    pki: &Pki,
    listener: Listener,
    identity: Option<&Credential>,
    path: &str,
    headers: &[(String, Vec<u8>)],
) -> Result<Observation> {
    let client = Client::new(&pki.ca_path(), identity)?;
    let position = envoy.log_position();
    let before = envoy.guard_stats()?;
    let tls_before = envoy.listener_tls_stats(listener)?;
    let reply = client.get_with_headers(&envoy.url(listener, path), headers);
    // The decision line is written before the reply is sent; the access log line after the
    // stream ends and up to one flush interval later.
    if reply.is_ok() {
        let deadline = Instant::now() + ACCESS_LOG_WAIT;
        while envoy.access_entries_since(position).is_empty() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(20));
        }
    } else {
        thread::sleep(SETTLE);
    }
    let after = envoy.guard_stats()?;
    let tls_after = envoy.listener_tls_stats(listener)?;
    Ok(Observation {
        path: path.to_owned(),
        reply,
        decisions: envoy.decisions_since(position),
        access_log: envoy.access_entries_since(position),
        filter_state: envoy.filter_state(),
        counters: after.guard_changes_since(&before),
        tls_counters: changes(&tls_before, &tls_after),
    })
}

/// The counters that changed from `before` to `after`, with how much.
fn changes(before: &BTreeMap<String, u64>, after: &BTreeMap<String, u64>) -> BTreeMap<String, i64> {
    after
        .iter()
        .filter_map(|(name, after)| {
            let before = before.get(name).copied().unwrap_or(0);
            let change = i64::try_from(*after).ok()? - i64::try_from(before).ok()?;
            (change != 0).then(|| (name.clone(), change))
        })
        .collect()
}

impl Observation {
    /// The one decision line, if exactly one was logged.
    pub fn decision(&self) -> Option<&DecisionLine> {
        match self.decisions.as_slice() {
            [line] => Some(line),
            _ => None,
        }
    }

    /// `200`, `403`, ... or `refused` (no HTTP reply).
    pub fn status_text(&self) -> String {
        match &self.reply {
            Ok(reply) => reply.status.to_string(),
            Err(_) => "refused".to_owned(),
        }
    }

    /// Every way this observation differs from `expected`; empty when it is as expected.
    pub fn check(&self, expected: &Expected) -> Vec<String> {
        let mut problems = Vec::new();
        match (&self.reply, expected.status(), expected.body()) {
            (Ok(reply), Some(status), Some(body)) => {
                if reply.status != status || reply.body != body {
                    problems.push(format!(
                        "reply: expected {status} {body:?}, got {} {:?}",
                        reply.status, reply.body
                    ));
                }
            }
            (Ok(reply), Some(status), None) => {
                if reply.status != status {
                    problems.push(format!("reply: expected {status}, got {} {:?}", reply.status, reply.body));
                }
            }
            (Ok(reply), None, _) => problems.push(format!(
                "reply: expected the handshake to be refused, got {} {:?}",
                reply.status, reply.body
            )),
            (Err(err), Some(status), _) => {
                problems.push(format!("reply: expected {status}, got {err}"));
            }
            (Err(_), None, _) => {}
        }

        match expected {
            Expected::Decision { decision, reason, peer_principal } => match self.decision() {
                None => problems.push(format!(
                    "decision log: expected one line, got {}: {:?}",
                    self.decisions.len(),
                    self.decisions.iter().map(|line| &line.raw_json).collect::<Vec<_>>()
                )),
                Some(line) => {
                    let got = (line.decision(), line.reason(), line.peer_principal());
                    let want = (*decision, *reason, peer_principal.as_deref());
                    if got != want {
                        problems.push(format!(
                            "decision log: expected (decision, reason, peer_principal) = {want:?}, got {got:?}"
                        ));
                    }
                    if let Some(level) = expected.log_level() {
                        if line.level != level {
                            problems
                                .push(format!("decision log: expected level {level}, got {}", line.level));
                        }
                    }
                    // The filter logs the path without its query (which may carry secrets).
                    let path = self.path.split('?').next().unwrap_or_default();
                    if line.path() != Some(path) {
                        problems.push(format!("decision log: expected path {path:?}, got {:?}", line.path()));
                    }
                }
            },
            Expected::HandshakeRefused | Expected::EnvoyReply(_) => {
                if !self.decisions.is_empty() {
                    problems.push(format!(
                        "decision log: expected none (the filter never ran), got {:?}",
                        self.decisions.iter().map(|line| &line.raw_json).collect::<Vec<_>>()
                    ));
                }
            }
        }

        let want_counters: BTreeMap<String, i64> =
            expected.counter().into_iter().map(|name| (name, 1)).collect();
        if self.counters != want_counters {
            problems.push(format!("counters: expected changes {want_counters:?}, got {:?}", self.counters));
        }

        self.check_access_log(expected, &mut problems);
        problems
    }

    fn check_access_log(&self, expected: &Expected, problems: &mut Vec<String>) {
        match (expected, self.access_log.as_slice()) {
            (Expected::HandshakeRefused, []) => {}
            (Expected::HandshakeRefused, entries) => {
                problems.push(format!("access log: expected no entry, got {}", entries.len()))
            }
            (Expected::EnvoyReply(_), [entry]) => {
                let decision = entry.get("guard_decision").cloned().unwrap_or(Value::Null);
                if !decision.is_null() {
                    problems.push(format!("access log: expected no guard_decision, got {decision}"));
                }
            }
            (Expected::EnvoyReply(_), entries) => {
                problems.push(format!("access log: expected one entry, got {}", entries.len()))
            }
            (Expected::Decision { decision, reason, .. }, [entry]) => {
                let field = |name: &str| entry.get(name).cloned().unwrap_or(Value::Null);
                let got = (field("guard_decision"), field("guard_reason"));
                // Filter state is set only when the configuration asks for it.
                let want = match self.filter_state {
                    true => (Value::from(*decision), Value::from(*reason)),
                    false => (Value::Null, Value::Null),
                };
                if got != want {
                    problems.push(format!(
                        "access log: expected (guard_decision, guard_reason) = {want:?}, got {got:?}"
                    ));
                }
            }
            (Expected::Decision { .. }, entries) => {
                problems.push(format!("access log: expected one entry, got {}", entries.len()))
            }
        }
    }
}

/// One row of a table of requests: who sends what where, and what should happen.
#[derive(Clone, Debug)]
pub struct Case {
    pub name: String,
    pub listener: Listener,
    pub identity: Option<Credential>,
    pub path: String,
    pub expected: Expected,
    /// When set, the decision line's `expected_principal` must be this.
    pub expected_principal: Option<String>,
    /// Extra request headers, sent as they are.
    pub headers: Vec<(String, Vec<u8>)>,
}

impl Case {
    pub fn new(name: &str, identity: Option<&Credential>, expected: Expected) -> Self {
        Case {
            name: name.to_owned(),
            listener: Listener::Strict,
            identity: identity.cloned(),
            path: "/".to_owned(),
            expected,
            expected_principal: None,
            headers: Vec::new(),
        }
    }

    /// Also send this request header.
    pub fn header(self, name: &str, value: &str) -> Self {
        self.header_bytes(name, value.as_bytes())
    }

    /// Also send this request header, its value as raw bytes (which need not be UTF-8).
    pub fn header_bytes(mut self, name: &str, value: &[u8]) -> Self {
        self.headers.push((name.to_owned(), value.to_vec()));
        self
    }

    pub fn on(mut self, listener: Listener) -> Self {
        self.listener = listener;
        self
    }

    pub fn path(mut self, path: &str) -> Self {
        self.path = path.to_owned();
        self
    }

    /// Also check the principal the filter expected (where the pod's identity came from).
    pub fn expecting_principal(mut self, principal: &str) -> Self {
        self.expected_principal = Some(principal.to_owned());
        self
    }
}

/// A case, what it left behind, and every difference from what was expected.
#[derive(Debug)]
pub struct Outcome {
    pub case: Case,
    pub observation: Observation,
    pub problems: Vec<String>,
}

impl Outcome {
    pub fn as_expected(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Whether every outcome is as expected.
pub fn all_as_expected(outcomes: &[Outcome]) -> bool {
    outcomes.iter().all(Outcome::as_expected)
}

/// Runs the cases one after another (each on its own connection).
pub fn run_cases(envoy: &Envoy, pki: &Pki, cases: &[Case]) -> Result<Vec<Outcome>> {
    cases
        .iter()
        .map(|case| {
            let observation = observe_with_headers(
                envoy,
                pki,
                case.listener,
                case.identity.as_ref(),
                &case.path,
                &case.headers,
            )?;
            let mut problems = observation.check(&case.expected);
            if let Some(want) = &case.expected_principal {
                let got = observation.decision().and_then(DecisionLine::expected_principal);
                if got != Some(want.as_str()) {
                    problems.push(format!("decision log: expected expected_principal {want:?}, got {got:?}"));
                }
            }
            Ok(Outcome { case: case.clone(), observation, problems })
        })
        .collect()
}

/// The outcomes as a table: who, listener, path, status, decision, reason, and whether each is as
/// expected; followed by the differences of those that are not.
pub fn report(outcomes: &[Outcome]) -> String {
    let rows: Vec<[String; 7]> = outcomes
        .iter()
        .map(|outcome| {
            let line = outcome.observation.decision();
            [
                outcome.case.name.clone(),
                outcome.case.listener.to_string(),
                outcome.case.path.clone(),
                outcome.observation.status_text(),
                line.map_or("-", DecisionLine::decision).to_owned(),
                line.map_or("-", DecisionLine::reason).to_owned(),
                if outcome.as_expected() { "yes" } else { "NO" }.to_owned(),
            ]
        })
        .collect();
    let header =
        ["who", "listener", "path", "status", "decision", "reason", "as expected"].map(str::to_owned);
    let mut widths = header.clone().map(|title| title.chars().count());
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(&header).chain(&rows) {
        let cells: Vec<String> =
            row.iter().zip(widths).map(|(cell, width)| format!("{cell:<width$}")).collect();
        let _ = writeln!(out, "  {}", cells.join("  ").trim_end());
    }
    for outcome in outcomes.iter().filter(|outcome| !outcome.as_expected()) {
        let _ = writeln!(out, "\n  {}: not as expected", outcome.case.name);
        for problem in &outcome.problems {
            let _ = writeln!(out, "    - {problem}");
        }
    }
    out
}
