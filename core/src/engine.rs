//! What happens to a request, whole: the glue asks [`Engine::handle`] and applies the
//! [`Outcome`] (the decision, the lines to log, the counters to bump, the filter state to set,
//! the reply to send) without deciding anything itself.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};

use crate::cache::ById;
use crate::config::{LogAllowed, Policy, Scope, DEFAULT_LOG_FIELD_MAX_BYTES};
use crate::decision::{Decision, Guard, Reason, Verdict};
use crate::host::{connection_id, peer_address, Host};
use crate::log::{scoped_decision_line, RequestLabels};
use crate::loglimit::LogLimiter;
pub use crate::notice::{Level, Notice};
pub use crate::stats::{Counter, Reply, COUNTER_PREFIX, DECISION_STATE, REASON_STATE, REPLY_HEADERS};

/// How many connections' "first allowed request" are remembered per VM.
const RECENT_CONNECTIONS: usize = 4096;

/// Everything the glue does for one request, in this order: log `notices`, bump the counters,
/// write `log`, set `filter_state`, send `reply`; then continue only if [`Outcome::proceeds`].
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub decision: Decision,
    pub notices: Vec<Notice>,
    /// The decision's counter.
    pub counter: Counter,
    /// Whether the limiter held the decision's line back ([`Counter::LogHeldBack`]).
    pub held_back: bool,
    pub log: Option<Notice>,
    /// The access log's two filter state keys, only when `filter_state` asks for them.
    pub filter_state: Option<[(&'static str, &'static str); 2]>,
    pub reply: Option<Reply>,
}

impl Outcome {
    /// A denial that no check produced (no configuration, engine busy): always logged.
    pub fn refused(reason: Reason, detail: &str, host: &impl Host) -> Self {
        let decision = Decision::deny(reason, detail);
        let log = Some(log_line(&decision, host, DEFAULT_LOG_FIELD_MAX_BYTES, None));
        // No configuration says whether filter state is wanted: these rare denials always set it,
        // so an access log that reads it tells them apart.
        Self::new(decision, Vec::new(), log, false, true)
    }

    fn new(
        decision: Decision,
        notices: Vec<Notice>,
        log: Option<Notice>,
        held_back: bool,
        filter_state: bool,
    ) -> Self {
        let counter = Counter::of(&decision);
        let reply = (decision.verdict == Verdict::Deny).then(|| Reply::denied(decision.reason));
        let filter_state = filter_state
            .then(|| [(DECISION_STATE, decision.verdict.as_str()), (REASON_STATE, decision.reason.as_str())]);
        Self { decision, notices, counter, held_back, log, filter_state, reply }
    }

    /// Every counter to bump: the decision's, then [`Counter::LogHeldBack`] if the line was held.
    pub fn counters(&self) -> impl Iterator<Item = Counter> {
        std::iter::once(self.counter).chain(self.held_back.then_some(Counter::LogHeldBack))
    }

    /// Whether the request goes on; never after a deny, even if the reply could not be sent.
    pub fn proceeds(&self) -> bool {
        self.decision.verdict != Verdict::Deny
    }
}

/// The engine of one plugin configuration: the decision, and the memory of what was logged.
#[derive(Debug)]
pub struct Engine {
    guard: Guard,
    logged_connections: ById<()>,
    /// Bounds the lines of decisions anyone can cause (denials, audit findings, exemptions).
    limiter: LogLimiter,
}

impl Engine {
    /// Parses and validates a plugin configuration: the engine and what to log about it, or the
    /// one line that says why the configuration is refused.
    pub fn configure(
        config: &[u8],
        env_trust_domain: Option<&str>,
        host: &impl Host,
    ) -> Result<(Self, Vec<Notice>), Notice> {
        let policy = Policy::from_json(config, env_trust_domain)
            .map_err(|e| Notice::new(Level::Error, format!("loopback-guard: {e}")))?;
        let connection_scope = policy.scope == Scope::Connection;
        let mut guard = Guard::new(policy, host);
        if connection_scope {
            // Decided once per connection: nothing to remember for its later requests.
            guard = guard.without_connection_reuse();
        }
        let mut notices = prefixed(guard.take_notices());
        notices.push(Notice::new(
            Level::Info,
            format!("loopback-guard: configured: {}", configured_line(guard.policy())),
        ));
        let policy = guard.policy();
        let limiter = LogLimiter::new(policy.log_lines_per_second, policy.log_summary_seconds);
        Ok((Self { guard, logged_connections: ById::new(RECENT_CONNECTIONS), limiter }, notices))
    }

    /// Without the memory of connections: every request decided in full (for comparisons).
    pub fn without_connection_reuse(mut self) -> Self {
        self.guard = self.guard.without_connection_reuse();
        self
    }

    pub fn policy(&self) -> &Policy {
        self.guard.policy()
    }

    /// How often [`Engine::held_back_summary`] should be asked, in seconds.
    pub fn summary_period_seconds(&self) -> u64 {
        u64::from(self.policy().log_summary_seconds)
    }

    /// Decides on one request (in connection scope: on one connection, at its first bytes) and
    /// says what to do about it. A connection's outcome has no reply (the glue closes it, or
    /// leaves the 403 to RBAC) and always sets the filter state, which RBAC matches.
    pub fn handle(&mut self, host: &impl Host) -> Outcome {
        let decision = self.guard.decide(host);
        let notices = prefixed(self.guard.take_notices());
        let wanted = self.wanted(&decision, host);
        let written = wanted && (!unauthenticated(&decision) || self.within_limit(&decision, host));
        let log = written.then(|| self.line(&decision, host));
        self.scoped(Outcome::new(decision, notices, log, wanted && !written, self.policy().filter_state))
    }

    /// A connection admitted before, at a later read: `None` while its decision stands, else
    /// the refusal its certificate's validity window now gives (always logged: once per
    /// connection, for a certificate that was admitted).
    pub fn recheck(&mut self, decided: &Decision, host: &impl Host) -> Option<Outcome> {
        let decision = self.guard.recheck(decided, host)?;
        let log = Some(self.line(&decision, host));
        Some(self.scoped(Outcome::new(decision, Vec::new(), log, false, self.policy().filter_state)))
    }

    fn connection_scope(&self) -> bool {
        self.policy().scope == Scope::Connection
    }

    fn line(&self, decision: &Decision, host: &impl Host) -> Notice {
        let scope = self.connection_scope().then_some(Scope::Connection.as_str());
        log_line(decision, host, self.policy().log_field_max_bytes, scope)
    }

    fn scoped(&self, mut outcome: Outcome) -> Outcome {
        if self.connection_scope() {
            outcome.reply = None;
            let decision = &outcome.decision;
            outcome.filter_state =
                Some([(DECISION_STATE, decision.verdict.as_str()), (REASON_STATE, decision.reason.as_str())]);
        }
        outcome
    }

    /// The summary of held-back decision lines, if one is due.
    pub fn held_back_summary(&mut self, now_ms: u64) -> Option<Notice> {
        self.limiter.summary(now_ms).map(|line| Notice::new(Level::Warn, line))
    }

    /// Whether `log_allowed` wants the line: allowed requests with a certificate follow it;
    /// every other decision is wanted (and bounded by the limiter).
    fn wanted(&mut self, decision: &Decision, host: &impl Host) -> bool {
        match (decision.verdict, self.policy().log_allowed) {
            (Verdict::Deny | Verdict::WouldDeny, _) | (Verdict::Allow, LogAllowed::All) => true,
            (Verdict::Allow, LogAllowed::None) => false,
            // A connection is decided once: every decision is its first.
            (Verdict::Allow, LogAllowed::FirstPerConnection) if self.connection_scope() => true,
            (Verdict::Allow, LogAllowed::FirstPerConnection) => {
                connection_key(decision, host).is_some_and(|key| self.logged_connections.insert(key, ()))
            }
        }
    }

    fn within_limit(&mut self, decision: &Decision, host: &impl Host) -> bool {
        let key = connection_key(decision, host);
        self.limiter.admit(host.now_ms(), key, decision.reason)
    }
}

/// A decision anyone can cause without the app's certificate: a denial, an audit finding, an
/// exemption.
fn unauthenticated(decision: &Decision) -> bool {
    decision.verdict != Verdict::Allow || decision.reason == Reason::Exempt
}

fn prefixed(notices: Vec<Notice>) -> Vec<Notice> {
    notices.into_iter().map(|n| Notice::new(n.level, format!("loopback-guard: {}", n.text))).collect()
}

/// Tells connections apart: by the id the decision read; else (an exempt probe's decision reads
/// none) by the source address (ip:port), which is the connection's own while it is open (a port
/// reused after a close may go unlogged once while the old key is remembered; that only skips a
/// log line); else, for an address without a real port (rebuilt from a header) or none at all,
/// by reading the id.
fn connection_key(decision: &Decision, host: &impl Host) -> Option<u64> {
    if decision.connection_id.is_some() {
        return decision.connection_id;
    }
    match peer_address(decision.source_address.as_deref()) {
        Some(address) => {
            let mut hasher = DefaultHasher::new();
            address.hash(&mut hasher);
            Some(hasher.finish())
        }
        None => connection_id(host),
    }
}

/// The decision's line. Labels are read only for a line that is written: each is a host call;
/// one that cannot be read is left out.
fn log_line(
    decision: &Decision,
    host: &impl Host,
    max_field_bytes: usize,
    scope: Option<&'static str>,
) -> Notice {
    let headers = host.request_headers(&[":path", ":method", "x-request-id"]);
    let header = |at: usize| headers.get(at).and_then(Option::as_deref);
    let labels = RequestLabels {
        connection_id: decision.connection_id.or_else(|| connection_id(host)),
        request_id: header(2),
        method: header(1),
        path: header(0),
    };
    let level = match decision.verdict {
        Verdict::Allow => Level::Info,
        Verdict::Deny | Verdict::WouldDeny => Level::Warn,
    };
    Notice::new(level, scoped_decision_line(decision, &labels, max_field_bytes, scope))
}

/// The configuration in one line, for the proxy's log at start-up.
pub fn configured_line(policy: &Policy) -> String {
    format!(
        "mode={} principal_source={} trust_domain={} allowed_principals={} exempt_paths={:?} \
         exempt_authorities={:?} require_loopback={} log_allowed={} certificate_cache_size={} \
         log_field_max_bytes={} log_lines_per_second={} log_summary_seconds={} filter_state={}{}",
        policy.mode.as_str(),
        policy.principal_source.as_str(),
        policy.trust_domain.as_str(),
        policy.allowed_principals.len(),
        policy.exempt_paths,
        policy.exempt_authorities,
        policy.require_loopback,
        policy.log_allowed.as_str(),
        policy.certificate_cache_size,
        policy.log_field_max_bytes,
        policy.log_lines_per_second,
        policy.log_summary_seconds,
        policy.filter_state,
        match policy.scope {
            // The request scope's line stays as it was.
            Scope::Request => String::new(),
            Scope::Connection => format!(" scope=connection on_deny={}", policy.on_deny.as_str()),
        }
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::property;
    use crate::test_case;
    use crate::testing::FakeHost;

    fn engine(json: &str) -> Engine {
        let pod = FakeHost::default()
            .with_property(&["xds", "node", "metadata", "NAMESPACE"], "shop")
            .with_property(&["xds", "node", "metadata", "SERVICE_ACCOUNT"], "app");
        Engine::configure(json.as_bytes(), None, &pod).unwrap().0
    }

    /// A request without a client certificate from 127.0.0.1:`port`.
    fn anonymous(port: u16) -> FakeHost {
        FakeHost::default()
            .with_property(property::SOURCE_ADDRESS, format!("127.0.0.1:{port}"))
            .with_header(":path", "/orders?token=1")
    }

    #[test_case]
    fn counter_names_are_stable() {
        let names: Vec<String> = Counter::all().map(Counter::name).collect();
        assert_eq!(
            names[..4],
            [
                "loopback_guard.allowed",
                "loopback_guard.exempt",
                "loopback_guard.would_deny",
                "loopback_guard.log_held_back"
            ]
        );
        assert!(names.contains(&"loopback_guard.denied.principal_mismatch".to_owned()));
        assert!(names.contains(&"loopback_guard.denied.unconfigured".to_owned()));
        assert!(names.contains(&"loopback_guard.denied.engine_busy".to_owned()));
        assert_eq!(names.len(), 4 + Reason::ALL.len() - 2, "one per deny reason, none for ok and exempt");
    }

    #[test_case]
    fn a_denial_is_counted_logged_recorded_and_answered() {
        let outcome = engine("{}").handle(&anonymous(40000));
        assert!(!outcome.proceeds());
        assert_eq!(outcome.counters().collect::<Vec<_>>(), [Counter::Denied(Reason::NoClientCertificate)]);
        assert_eq!(outcome.filter_state, None, "not asked for");
        let reply = outcome.reply.unwrap();
        assert_eq!((reply.status, reply.body), (403, "loopback-guard: denied: no_client_certificate\n"));
        assert_eq!(reply.headers, [("content-type", "text/plain; charset=utf-8")]);
        let line = outcome.log.unwrap();
        assert_eq!(line.level, Level::Warn);
        assert!(
            line.text.starts_with(r#"{"decision":"deny","reason":"no_client_certificate","#),
            "{}",
            line.text
        );
        assert!(line.text.contains(r#""path":"/orders""#));
    }

    #[test_case]
    fn filter_state_is_set_only_when_asked_for() {
        let asked = engine(r#"{"filter_state":true}"#).handle(&anonymous(40000));
        assert_eq!(
            asked.filter_state,
            Some([(DECISION_STATE, "deny"), (REASON_STATE, "no_client_certificate")])
        );
        let refused = Outcome::refused(Reason::Unconfigured, "why", &anonymous(40000));
        assert_eq!(refused.filter_state, Some([(DECISION_STATE, "deny"), (REASON_STATE, "unconfigured")]));
    }

    #[test_case]
    fn every_reply_body_names_its_reason() {
        for reason in Reason::ALL {
            assert_eq!(reason.reply_body(), format!("loopback-guard: denied: {}\n", reason.as_str()));
        }
    }

    #[test_case]
    fn audit_findings_go_on_without_a_reply() {
        let outcome = engine(r#"{"mode":"audit"}"#).handle(&anonymous(40000));
        assert!(outcome.proceeds() && outcome.reply.is_none());
        assert_eq!(outcome.counters().collect::<Vec<_>>(), [Counter::WouldDeny]);
    }

    #[test_case]
    fn lines_anyone_can_cause_are_limited_per_connection_and_reason() {
        let mut engine = engine("{}");
        assert!(engine.handle(&anonymous(40000)).log.is_some());
        let again = engine.handle(&anonymous(40000));
        assert_eq!(again.log, None);
        assert_eq!(
            again.counters().collect::<Vec<_>>(),
            [Counter::Denied(Reason::NoClientCertificate), Counter::LogHeldBack]
        );
        assert!(engine.handle(&anonymous(40001)).log.is_some(), "another connection");
        let summary = engine.held_back_summary(u64::MAX).unwrap();
        assert_eq!(summary.level, Level::Warn);
        assert!(summary.text.starts_with(r#"{"decision_lines_held_back":{"no_client_certificate":1}"#));
    }

    #[test_case]
    fn a_refusal_without_a_check_is_always_logged() {
        for reason in [Reason::Unconfigured, Reason::EngineBusy] {
            let outcome = Outcome::refused(reason, "why", &anonymous(40000));
            assert_eq!(outcome.counters().collect::<Vec<_>>(), [Counter::Denied(reason)]);
            assert!(outcome
                .log
                .unwrap()
                .text
                .contains(&format!(r#""reason":"{}","detail":"why""#, reason.as_str())));
            assert_eq!(outcome.reply.unwrap().body, format!("loopback-guard: denied: {}\n", reason.as_str()));
        }
    }

    /// `cert`, validated, on connection 9 from 127.0.0.1.
    fn on_connection_9(cert: &crate::testing::CertBuilder) -> FakeHost {
        FakeHost::default()
            .with_property(property::CONNECTION_ID, 9_u64.to_le_bytes())
            .with_property(property::SOURCE_ADDRESS, "127.0.0.1:40000")
            .with_property(property::PEER_CERTIFICATE_VALID, [1])
            .with_property(property::PEER_CERTIFICATE, cert.pem())
            .with_property(property::PEER_CERTIFICATE_DIGEST, crate::pem::sha256_hex(&cert.der()))
    }

    #[test_case]
    fn a_warm_allowed_request_reads_the_connection_id_and_the_clock() {
        use crate::testing::CertBuilder;
        let cert = CertBuilder::workload("spiffe://cluster.local/ns/shop/sa/app");
        let request = || on_connection_9(&cert);
        let mut engine = engine("{}");
        let first = engine.handle(&request());
        assert!(first.log.is_some(), "the connection's first allowed request is logged");
        let host = request();
        let warm = engine.handle(&host);
        assert_eq!((warm.counters().collect::<Vec<_>>(), &warm.log), (vec![Counter::Allowed], &None));
        assert_eq!(warm.decision, first.decision);
        assert_eq!(*host.reads.borrow(), ["connection.id", "clock"]);
    }

    #[test_case]
    fn a_connection_is_decided_without_a_reply_with_filter_state_and_rechecked_by_the_clock() {
        use crate::testing::CertBuilder;
        let cert = CertBuilder::workload("spiffe://cluster.local/ns/shop/sa/app");
        let connection = |now: i64| on_connection_9(&cert).at(now);
        let mut engine = engine(r#"{"scope":"connection"}"#);
        let now = crate::testing::FAKE_NOW;
        let allowed = engine.handle(&connection(now));
        assert!(allowed.proceeds() && allowed.reply.is_none());
        assert_eq!(allowed.filter_state, Some([(DECISION_STATE, "allow"), (REASON_STATE, "ok")]));
        let line = allowed.log.unwrap().text;
        assert!(line.starts_with(r#"{"decision":"allow","reason":"ok","#), "{line}");
        assert!(line.ends_with(r#","scope":"connection"}"#), "{line}");
        assert_eq!(engine.recheck(&allowed.decision, &connection(now + 1)), None);
        let expired = engine.recheck(&allowed.decision, &connection(4_102_444_801)).unwrap();
        assert!(!expired.proceeds() && expired.reply.is_none());
        assert_eq!(expired.counters().collect::<Vec<_>>(), [Counter::Denied(Reason::SvidExpired)]);
        assert!(expired.log.unwrap().text.contains(r#""reason":"svid_expired""#));

        let denied = engine.handle(&anonymous(40001));
        assert!(!denied.proceeds() && denied.reply.is_none());
        assert_eq!(
            denied.filter_state,
            Some([(DECISION_STATE, "deny"), (REASON_STATE, "no_client_certificate")])
        );
        assert!(engine.recheck(&denied.decision, &anonymous(40001)).is_none(), "denied for good already");
    }

    #[test_case]
    fn a_connection_without_the_certificate_property_is_denied_certificate_unavailable() {
        use crate::testing::CertBuilder;
        let cert = CertBuilder::workload("spiffe://cluster.local/ns/shop/sa/app");
        let host = FakeHost::default()
            .with_property(property::SOURCE_ADDRESS, "127.0.0.1:40000")
            .with_property(property::MTLS, [1])
            .with_property(property::PEER_CERTIFICATE_DIGEST, crate::pem::sha256_hex(&cert.der()))
            .without_request_headers();
        let outcome = engine(r#"{"scope":"connection"}"#).handle(&host);
        assert_eq!(outcome.counters().collect::<Vec<_>>(), [Counter::Denied(Reason::CertificateUnavailable)]);
        assert_eq!(outcome.decision.detail.as_deref(), Some(crate::decision::NO_CERTIFICATE_PROPERTY_DETAIL));
    }

    #[test_case]
    fn a_bad_configuration_is_one_error_line() {
        let error = Engine::configure(br#"{"mode":"strict"}"#, None, &FakeHost::default()).unwrap_err();
        assert_eq!(error.level, Level::Error);
        assert!(error.text.starts_with("loopback-guard: ") && error.text.contains("mode"), "{}", error.text);
    }
}
