//! The admission decision: a pure function of the policy, the host facts and the clock.
//!
//! The steps run in a fixed order and the first failing one decides; anything unexpected denies
//! with its own reason. Nothing allows by default: the only `Allow` outcomes are an exempt path
//! and a certificate that passed every check and names an admitted principal.

use std::net::SocketAddr;
use std::rc::Rc;

use crate::authority::Authority;
use crate::cache::{ById, CertCache, Checked};
use crate::config::{Mode, Policy};
use crate::engine::{Level, Notice};
use crate::host::{connection_id, peer_address, property, Host, HostError, XFCC_HEADER};
use crate::identity::SpiffeId;
use crate::principal::{self, Expected, Source};
use crate::svid::{SvidError, SvidFacts, TimeError};
use crate::validated::Validated;
use crate::{pem, xfcc};

/// The detail of a decision admitted on a resumed TLS session.
pub const RESUMED_DETAIL: &str =
    "TLS session resumed: Envoy validated this certificate on an earlier handshake, not on this one";

/// Said once per Envoy on a version without `connection.peer_certificate_valid`.
pub const NO_VALIDITY_NOTICE: &str = "this Envoy does not report connection.peer_certificate_valid \
    (Envoy before 1.39): the filter cannot tell a validated client certificate from one the \
    listener let through unvalidated, so the listener's certificate validation is the only \
    guard of the chain of trust (docs/envoy-versions.md)";

/// How many connections' outcomes each engine remembers (see [`Guard::decide`]).
pub const CONNECTIONS: usize = 4096;

/// The shared-data key that makes [`NO_VALIDITY_NOTICE`] once per Envoy rather than per worker.
const NO_VALIDITY_NOTICE_KEY: &str = "loopback_guard.notice.no_validity_property";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    Deny,
    /// Audit mode: the request goes through, but enforcement would have denied it.
    WouldDeny,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::Deny => "deny",
            Self::WouldDeny => "would_deny",
        }
    }
}

macro_rules! reasons {
    ($($variant:ident => $name:literal, $doc:literal;)*) => {
        /// Why a decision came out as it did. The names are stable: logs, metrics and the 403
        /// body use them.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Reason {
            $(#[doc = $doc] $variant,)*
        }

        impl Reason {
            pub const ALL: &'static [Reason] = &[$(Reason::$variant,)*];

            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $name,)*
                }
            }

            /// The body of the 403 that denies for this reason, built at compile time.
            pub fn reply_body(self) -> &'static str {
                match self {
                    $(Self::$variant => concat!("loopback-guard: denied: ", $name, "\n"),)*
                }
            }
        }
    };
}

reasons! {
    Ok => "ok", "The peer's SVID names an admitted principal.";
    Exempt => "exempt", "The path is in `exempt_paths`.";
    NotLoopback => "not_loopback", "The peer address is not in 127.0.0.0/8 or ::1.";
    SourceAddressUnavailable => "source_address_unavailable", "The peer address is missing or unreadable.";
    SourceAddressForwarded => "source_address_forwarded", "The peer address was rebuilt from a request header (port 0), not taken from the TCP peer.";
    NoClientCertificate => "no_client_certificate", "The peer presented no certificate.";
    CertificateUnvalidated => "certificate_unvalidated", "Envoy did not validate the presented certificate, on this handshake or an earlier one.";
    CertificateUnavailable => "certificate_unavailable", "The peer certificate could not be obtained (or proven to be the connection's).";
    CertificateInvalid => "certificate_invalid", "The peer certificate does not decode or parse.";
    SvidUriSanCount => "svid_uri_san_count", "The certificate has no URI SAN, or more than one.";
    SvidBadSpiffeId => "svid_bad_spiffe_id", "The URI SAN is not a valid workload SPIFFE ID.";
    SvidNotLeaf => "svid_not_leaf", "The certificate is a CA or may sign certificates or CRLs.";
    SvidExpired => "svid_expired", "The certificate's notAfter has passed.";
    SvidNotYetValid => "svid_not_yet_valid", "The certificate's notBefore is in the future.";
    NoExpectedPrincipal => "no_expected_principal", "No source gave the pod's own principal.";
    PrincipalMismatch => "principal_mismatch", "The SVID is valid but names another principal.";
    HostError => "host_error", "A host call failed.";
    Unconfigured => "unconfigured", "The filter has no valid configuration.";
    EngineBusy => "engine_busy", "The decision engine was already in use (a re-entrant call).";
}

impl Reason {
    pub fn is_allow(self) -> bool {
        matches!(self, Self::Ok | Self::Exempt)
    }
}

impl From<&SvidError> for Reason {
    fn from(error: &SvidError) -> Self {
        match error {
            SvidError::Unparsable(_) => Self::CertificateInvalid,
            SvidError::UriSanCount(_) => Self::SvidUriSanCount,
            SvidError::BadSpiffeId(_) => Self::SvidBadSpiffeId,
            SvidError::NotLeaf(_) => Self::SvidNotLeaf,
        }
    }
}

/// The outcome for one request, with what the decision log needs.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub verdict: Verdict,
    pub reason: Reason,
    /// Why, in words, when the reason alone does not say it.
    pub detail: Option<String>,
    pub peer_principal: Option<Rc<SvidFacts>>,
    pub expected_principal: Option<Rc<SpiffeId>>,
    pub source_address: Option<Rc<str>>,
    pub cert_sha256: Option<Rc<str>>,
    /// `connection.id`, when the decision read it (every decision but an exempt probe's).
    pub connection_id: Option<u64>,
}

impl Decision {
    /// A deny that no check produced, e.g. when the filter has no valid configuration.
    pub fn deny(reason: Reason, detail: impl Into<String>) -> Self {
        Self {
            verdict: Verdict::Deny,
            reason,
            detail: Some(detail.into()),
            peer_principal: None,
            expected_principal: None,
            source_address: None,
            cert_sha256: None,
            connection_id: None,
        }
    }
}

/// Everything known about the request while the decision is being made.
#[derive(Default)]
struct Facts {
    /// Why a request on an exempt path did not qualify as a probe.
    not_a_probe: Option<&'static str>,
    resumed: bool,
    peer: Option<Rc<SvidFacts>>,
    expected: Option<Rc<SpiffeId>>,
    source_address: Option<Rc<str>>,
    cert_sha256: Option<Rc<str>>,
    connection_id: Option<u64>,
}

impl Facts {
    fn into_decision(self, verdict: Verdict, reason: Reason, detail: Option<String>) -> Decision {
        Decision {
            verdict,
            reason,
            detail,
            peer_principal: self.peer,
            expected_principal: self.expected,
            source_address: self.source_address,
            cert_sha256: self.cert_sha256,
            connection_id: self.connection_id,
        }
    }
}

enum Exemption {
    NotExempt,
    /// An exempt path, and a health probe.
    Probe,
    /// An exempt path, but not a probe, for this reason: checked in full.
    NotAProbe(&'static str),
}

/// A failed step: the reason, and a detail when it helps the operator.
#[derive(Debug, Clone)]
struct Refusal(Reason, Option<String>);

impl Refusal {
    fn bare(reason: Reason) -> Self {
        Self(reason, None)
    }

    fn because(reason: Reason, detail: impl ToString) -> Self {
        Self(reason, Some(detail.to_string()))
    }
}

impl From<HostError> for Refusal {
    fn from(error: HostError) -> Self {
        Self::because(Reason::HostError, error)
    }
}

/// What a connection's first decision found, reused for the connection's later requests.
#[derive(Debug)]
struct Connection {
    source_address: Option<Rc<str>>,
    cert_sha256: Option<Rc<str>>,
    resumed: bool,
    outcome: ConnectionOutcome,
}

#[derive(Debug)]
enum ConnectionOutcome {
    /// A step before the clock failed.
    Refused(Refusal),
    /// The peer's SVID, and the outcome of the steps after the clock (`None`: admitted).
    Peer { peer: Rc<SvidFacts>, expected: Option<Rc<SpiffeId>>, after: Option<Refusal> },
}

/// Whether a refusal before the clock is the connection's for good: not a failed host call,
/// not a certificate that a later request's XFCC header might supply, not a session that a
/// later record of its certificate would admit.
fn lasting(refusal: &Refusal) -> bool {
    matches!(
        refusal.0,
        Reason::NotLoopback
            | Reason::NoClientCertificate
            | Reason::CertificateInvalid
            | Reason::SvidUriSanCount
            | Reason::SvidBadSpiffeId
            | Reason::SvidNotLeaf
    )
}

/// The decision engine of one plugin configuration, with its certificate cache.
#[derive(Debug)]
pub struct Guard {
    policy: Policy,
    expected: Expected,
    cache: CertCache,
    /// Messages for the operator, each to be logged once (see [`Guard::take_notices`]).
    notices: Vec<Notice>,
    local_notice_given: bool,
    validated: Validated,
    validity_notice_considered: bool,
    /// Outcomes by connection id: every fact but the path and the clock is the connection's.
    connections: ById<Rc<Connection>>,
}

impl Guard {
    /// Builds the engine; the expected principal is resolved now where it can be.
    pub fn new(policy: Policy, host: &impl Host) -> Self {
        let expected = Expected::resolve(&policy, host);
        let cache = CertCache::new(policy.certificate_cache_size);
        let notices = match expected {
            // Said at the first request, when the certificate is known.
            Expected::LocalCertificate => Vec::new(),
            Expected::Unavailable(_) => vec![Notice::new(Level::Error, expected.to_string())],
            Expected::Known(..) => vec![Notice::new(Level::Info, expected.to_string())],
        };
        Self {
            policy,
            expected,
            cache,
            notices,
            local_notice_given: false,
            validated: Validated::default(),
            validity_notice_considered: false,
            connections: ById::new(CONNECTIONS),
        }
    }

    /// Without the memory of connections: every request decided in full (for comparisons).
    pub fn without_connection_reuse(mut self) -> Self {
        self.connections = ById::new(0);
        self
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    pub fn expected(&self) -> &Expected {
        &self.expected
    }

    /// A one-time message for the operator (where the expected principal comes from, what this
    /// Envoy cannot tell the filter), if one is due.
    pub fn take_notice(&mut self) -> Option<String> {
        (!self.notices.is_empty()).then(|| self.notices.remove(0).text)
    }

    /// Every one-time message due, with the level to log it at.
    pub fn take_notices(&mut self) -> Vec<Notice> {
        std::mem::take(&mut self.notices)
    }

    /// Decides on one request: the steps of "How a decision is made" (docs/configuration.md),
    /// in order; the first that fails decides. Each step reads only the facts it needs (a host
    /// call costs about as much as the rest of the decision) and returns them.
    pub fn decide(&mut self, host: &impl Host) -> Decision {
        let mut facts = Facts::default();
        if let Expected::Known(id, _) = &self.expected {
            facts.expected = Some(Rc::clone(id));
        }
        macro_rules! step {
            ($step:expr) => {
                match $step {
                    Ok(value) => value,
                    Err(refusal) => return self.refused(refusal, facts),
                }
            };
        }
        match step!(self.exemption(host)) {
            Exemption::Probe => return self.conclude(Reason::Exempt, facts),
            Exemption::NotAProbe(why) => facts.not_a_probe = Some(why),
            Exemption::NotExempt => {}
        }
        // The rest is the connection's but for the clock: decided on its first request, reused
        // on the later ones. Without a readable id, every request is decided in full.
        let id = connection_id(host);
        facts.connection_id = id;
        if let Some(connection) = id.and_then(|id| self.connections.get(&id)) {
            return self.reuse(&connection, facts, host);
        }
        let peer = match self.connection_steps(host, &mut facts) {
            Ok(peer) => peer,
            Err(refusal) => {
                if lasting(&refusal) {
                    self.remember(id, &facts, ConnectionOutcome::Refused(refusal.clone()));
                }
                return self.refused(refusal, facts);
            }
        };
        step!(validity_window(&peer, host));
        let after = self.principal_steps(host, &peer, &mut facts);
        if let Ok(()) | Err(Refusal(Reason::PrincipalMismatch, _)) = after {
            let expected = facts.expected.clone();
            let outcome = ConnectionOutcome::Peer { peer, expected, after: after.clone().err() };
            self.remember(id, &facts, outcome);
        }
        match after {
            Ok(()) => self.conclude(Reason::Ok, facts),
            Err(refusal) => self.refused(refusal, facts),
        }
    }

    /// Steps 2 to 5 but the clock: the connection's peer address and certificate.
    fn connection_steps(&mut self, host: &impl Host, facts: &mut Facts) -> Result<Rc<SvidFacts>, Refusal> {
        facts.source_address = source_address(host)?.map(Rc::from);
        if self.policy.require_loopback {
            check_loopback(facts.source_address.as_deref())?;
        }
        let (digest, resumed) = self.presented_certificate(host)?;
        facts.resumed = resumed;
        facts.cert_sha256 = digest.as_deref().map(Rc::from);
        let peer = self.svid(host, digest)?;
        facts.peer = Some(Rc::clone(&peer));
        Ok(peer)
    }

    /// Steps 6 and 7: the pod's own principal, and the peer's against it.
    fn principal_steps(
        &mut self,
        host: &impl Host,
        peer: &SvidFacts,
        facts: &mut Facts,
    ) -> Result<(), Refusal> {
        let expected = self.expected_principal(host)?;
        facts.expected = Some(Rc::clone(&expected));
        if peer.spiffe_id != *expected && !self.policy.allowed_principals.contains(&peer.spiffe_id) {
            return Err(Refusal::bare(Reason::PrincipalMismatch));
        }
        Ok(())
    }

    /// Keeps a connection's outcome, unless its address may be a request's: port 0 is one the
    /// connection manager rebuilt from a header, which may differ on the next request.
    fn remember(&mut self, id: Option<u64>, facts: &Facts, outcome: ConnectionOutcome) {
        let Some(id) = id else { return };
        if peer_address(facts.source_address.as_deref()).is_none() {
            return;
        }
        let connection = Connection {
            source_address: facts.source_address.clone(),
            cert_sha256: facts.cert_sha256.clone(),
            resumed: facts.resumed,
            outcome,
        };
        self.connections.insert(id, Rc::new(connection));
    }

    /// A later request of a known connection: its outcome, with the validity window checked
    /// against the clock again, as a full decision would.
    fn reuse(&self, connection: &Connection, mut facts: Facts, host: &impl Host) -> Decision {
        facts.source_address = connection.source_address.clone();
        facts.cert_sha256 = connection.cert_sha256.clone();
        facts.resumed = connection.resumed;
        match &connection.outcome {
            ConnectionOutcome::Refused(refusal) => self.refused(refusal.clone(), facts),
            ConnectionOutcome::Peer { peer, expected, after } => {
                facts.peer = Some(Rc::clone(peer));
                if let Err(refusal) = validity_window(peer, host) {
                    return self.refused(refusal, facts);
                }
                facts.expected = expected.clone();
                match after {
                    None => self.conclude(Reason::Ok, facts),
                    Some(refusal) => self.refused(refusal.clone(), facts),
                }
            }
        }
    }

    fn conclude(&self, reason: Reason, facts: Facts) -> Decision {
        let detail = facts.resumed.then(|| RESUMED_DETAIL.to_owned());
        facts.into_decision(Verdict::Allow, reason, detail)
    }

    fn refused(&self, Refusal(reason, detail): Refusal, facts: Facts) -> Decision {
        let verdict = match self.policy.mode {
            Mode::Enforce => Verdict::Deny,
            Mode::Audit => Verdict::WouldDeny,
        };
        let detail = match (facts.not_a_probe, detail) {
            (Some(why), Some(detail)) => Some(format!("exempt path, but {why}; {detail}")),
            (Some(why), None) => Some(format!("exempt path, but {why}: checked in full")),
            (None, detail) => detail,
        };
        facts.into_decision(verdict, reason, detail)
    }

    /// Step 1: whether the path is exempt, and if so whether the request is a probe.
    fn exemption(&self, host: &impl Host) -> Result<Exemption, Refusal> {
        if self.policy.exempt_paths.is_empty() {
            return Ok(Exemption::NotExempt);
        }
        let Some(path) = host.request_header(":path")? else { return Ok(Exemption::NotExempt) };
        let bare = path.split_once('?').map_or(path.as_str(), |(bare, _)| bare);
        if !self.policy.exempt_paths.iter().any(|exempt| exempt == bare) {
            return Ok(Exemption::NotExempt);
        }
        Ok(match not_a_probe(host, &self.policy.exempt_authorities)? {
            None => Exemption::Probe,
            Some(why) => Exemption::NotAProbe(why),
        })
    }

    /// Step 3: the digest of the presented certificate (if the host has one), and whether it
    /// was admitted on a resumed session rather than validated on this handshake.
    fn presented_certificate(&mut self, host: &impl Host) -> Result<(Option<String>, bool), Refusal> {
        // A digest exists only for a presented certificate: where there is one, it answers
        // `connection.mtls` too.
        let digest = peer_certificate_digest(host)?;
        if digest.is_none() {
            match host.property(property::MTLS)?.as_deref() {
                Some([1]) => {}
                Some([0]) | None => return Err(Refusal::bare(Reason::NoClientCertificate)),
                Some(other) => {
                    return Err(Refusal::because(Reason::HostError, format!("connection.mtls is {other:?}")))
                }
            }
        }
        match host.property(property::PEER_CERTIFICATE_VALID)?.as_deref() {
            Some([1]) => {
                if let Some(digest) = &digest {
                    // Best effort: if it cannot be recorded, a resumed session of this
                    // certificate is denied later, which fails closed.
                    let _ = self.validated.remember(host, digest);
                }
            }
            // Envoy before 1.39 does not say; the listener's validation is then the only guard.
            None => self.consider_validity_notice(host),
            // Not validated on this handshake: admitted only if it is a resumed session of a
            // certificate this Envoy validated on a full handshake.
            Some(_) => match &digest {
                Some(digest) if self.validated.was_validated(host, digest)? => {
                    return Ok((Some(digest.clone()), true))
                }
                _ => return Err(Refusal::bare(Reason::CertificateUnvalidated)),
            },
        }
        Ok((digest, false))
    }

    /// Steps 4 and 5 (but the clock): the certificate's X509-SVID checks, cached by digest.
    fn svid(&mut self, host: &impl Host, digest: Option<String>) -> Result<Rc<SvidFacts>, Refusal> {
        let checked = match digest.as_deref().and_then(|d| self.cache.get(d)) {
            Some(checked) => checked,
            None => {
                let checked: Checked =
                    SvidFacts::from_der(&peer_certificate_der(host, digest.as_deref())?).map(Rc::new);
                if let Some(digest) = digest {
                    self.cache.insert(digest, checked.clone());
                }
                checked
            }
        };
        checked.map_err(|e| Refusal::because(Reason::from(&e), &e))
    }

    /// Step 6: the pod's own principal.
    fn expected_principal(&mut self, host: &impl Host) -> Result<Rc<SpiffeId>, Refusal> {
        match &self.expected {
            Expected::Known(id, _) => Ok(Rc::clone(id)),
            Expected::Unavailable(why) => Err(Refusal::because(Reason::NoExpectedPrincipal, why)),
            Expected::LocalCertificate => {
                let id = principal::from_local_certificate(host)
                    .map_err(|why| Refusal::because(Reason::NoExpectedPrincipal, why))?;
                let id = Rc::new(id);
                if !self.local_notice_given {
                    self.local_notice_given = true;
                    let text = Expected::Known(Rc::clone(&id), Source::LocalCertificate).to_string();
                    self.notices.push(Notice::new(Level::Info, text));
                }
                Ok(id)
            }
        }
    }
}

impl Guard {
    /// On the first request without `connection.peer_certificate_valid`, queues
    /// [`NO_VALIDITY_NOTICE`] unless another worker already said it.
    fn consider_validity_notice(&mut self, host: &impl Host) {
        if self.validity_notice_considered {
            return;
        }
        self.validity_notice_considered = true;
        if let Ok((None, _)) = host.shared_data(NO_VALIDITY_NOTICE_KEY) {
            if host.set_shared_data(NO_VALIDITY_NOTICE_KEY, b"said", None).is_ok() {
                self.notices.push(Notice::new(Level::Warn, NO_VALIDITY_NOTICE));
            }
        }
    }
}

/// Why a request on an exempt path is not a health probe (`None`: it is one). A probe is a GET
/// or HEAD without a body, without an upgrade to another protocol, to a loopback authority or
/// one in `exempt_authorities`: it cannot carry data in, open a tunnel, or be routed under the
/// pod's identity to another service.
fn not_a_probe(host: &impl Host, authorities: &[String]) -> Result<Option<&'static str>, HostError> {
    match host.request_header(":method")?.as_deref() {
        Some("GET" | "HEAD") => {}
        _ => return Ok(Some("the method is not GET or HEAD")),
    }
    if host.request_header("upgrade")?.is_some() || host.request_header(":protocol")?.is_some() {
        return Ok(Some("it asks for a protocol upgrade"));
    }
    if !host.end_of_stream() {
        return Ok(Some("a body follows the headers"));
    }
    let has_length = host.request_header("content-length")?.is_some_and(|length| length.trim() != "0");
    if has_length || host.request_header("transfer-encoding")?.is_some() {
        return Ok(Some("it announces a body"));
    }
    let Some(raw) = host.request_header(":authority")? else { return Ok(Some("it names no authority")) };
    // By the grammar, never by prefix: `localhost:1@evil.example` is no loopback authority.
    let authority = match Authority::parse(&raw) {
        Ok(authority) => authority,
        Err(_) => return Ok(Some("its authority does not parse as host[:port]")),
    };
    let listed =
        || authorities.iter().filter_map(|entry| Authority::parse(entry).ok()).any(|e| authority.is(&e));
    if !(authority.is_loopback() || listed()) {
        return Ok(Some("its authority is neither a loopback host nor in exempt_authorities"));
    }
    Ok(None)
}

/// Step 2: the peer address as text (bytes that are not UTF-8 replaced).
fn source_address(host: &impl Host) -> Result<Option<String>, Refusal> {
    Ok(host.property(property::SOURCE_ADDRESS)?.map(|raw| {
        String::from_utf8(raw).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
    }))
}

/// Step 5, the clock: within notBefore..notAfter (checked on every request, never cached).
fn validity_window(peer: &SvidFacts, host: &impl Host) -> Result<(), Refusal> {
    match peer.check_time(host.now()?) {
        Ok(()) => Ok(()),
        Err(TimeError::Expired) => Err(Refusal::bare(Reason::SvidExpired)),
        Err(TimeError::NotYetValid) => Err(Refusal::bare(Reason::SvidNotYetValid)),
    }
}

/// Step 2: a loopback TCP peer.
fn check_loopback(source: Option<&str>) -> Result<(), Refusal> {
    let source = source.ok_or(Refusal::bare(Reason::SourceAddressUnavailable))?;
    let address: SocketAddr = source.parse().map_err(|_| {
        Refusal::because(Reason::SourceAddressUnavailable, format!("unparsable source address {source:?}"))
    })?;
    // A TCP peer always has a port; the connection manager gives port 0 to an address it took
    // from x-forwarded-for (or another header), which any client can write.
    if address.port() == 0 {
        return Err(Refusal::because(
            Reason::SourceAddressForwarded,
            format!(
                "{source} was taken from a request header, not from the connection: \
                 set use_remote_address: true on this listener's HTTP connection manager"
            ),
        ));
    }
    if address.ip().to_canonical().is_loopback() {
        Ok(())
    } else {
        Err(Refusal::bare(Reason::NotLoopback))
    }
}

/// The connection's certificate digest, when the host has one (64 lowercase hex characters).
fn peer_certificate_digest(host: &impl Host) -> Result<Option<String>, Refusal> {
    let Some(raw) = host.property(property::PEER_CERTIFICATE_DIGEST)? else {
        return Ok(None);
    };
    match String::from_utf8(raw) {
        Ok(mut digest) if digest.len() == 64 && digest.bytes().all(|b| b.is_ascii_hexdigit()) => {
            digest.make_ascii_lowercase();
            Ok(Some(digest))
        }
        Ok(digest) if digest.is_empty() => Ok(None),
        _ => Err(Refusal::because(Reason::CertificateUnavailable, "malformed certificate digest")),
    }
}

/// The peer certificate: from `connection.peer_certificate` where Envoy has it, else from the
/// XFCC element this proxy added. Either way it must hash to the connection's digest (if known),
/// since the cache trusts the digest as the certificate's name.
fn peer_certificate_der(host: &impl Host, digest: Option<&str>) -> Result<Vec<u8>, Refusal> {
    let der = match host.property(property::PEER_CERTIFICATE)? {
        Some(text) if !text.is_empty() => {
            pem::certificate_der(&text).map_err(|e| Refusal::because(Reason::CertificateInvalid, e))?
        }
        _ => {
            let digest = digest.ok_or_else(|| {
                Refusal::because(Reason::CertificateUnavailable, "no peer certificate property and no digest")
            })?;
            let header = host.request_header(XFCC_HEADER)?.ok_or_else(|| {
                Refusal::because(
                    Reason::CertificateUnavailable,
                    "no peer certificate property and no XFCC header",
                )
            })?;
            return xfcc::peer_certificate_der(&header, digest)
                .map_err(|e| Refusal::because(Reason::CertificateUnavailable, e));
        }
    };
    match digest {
        Some(digest) if pem::sha256_hex(&der) != digest => Err(Refusal::because(
            Reason::CertificateUnavailable,
            "peer certificate does not match the connection's digest",
        )),
        _ => Ok(der),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_case;
    use crate::testing::{
        url_encode, CertBuilder, FakeHost, ProbeAuthority, FAKE_NOW as NOW, PROBE_AUTHORITIES, PROBE_CONFIG,
    };

    const APP: &str = "spiffe://cluster.local/ns/shop/sa/app";
    const ROGUE: &str = "spiffe://cluster.local/ns/shop/sa/rogue";

    fn guard(json: &str) -> Guard {
        let host = FakeHost::default()
            .with_property(&["xds", "node", "metadata", "NAMESPACE"], "shop")
            .with_property(&["xds", "node", "metadata", "SERVICE_ACCOUNT"], "app");
        Guard::new(Policy::from_json(json.as_bytes(), None).unwrap(), &host)
    }

    /// A request from 127.0.0.1 over mTLS presenting `cert`, as Envoy 1.40 describes it.
    fn request(cert: &CertBuilder) -> FakeHost {
        FakeHost::default()
            .with_property(property::SOURCE_ADDRESS, "127.0.0.1:40000")
            .with_property(property::MTLS, [1])
            .with_property(property::PEER_CERTIFICATE_VALID, [1])
            .with_property(property::PEER_CERTIFICATE, cert.pem())
            .with_property(property::PEER_CERTIFICATE_DIGEST, pem::sha256_hex(&cert.der()))
    }

    /// The same request as an Envoy without `connection.peer_certificate` describes it.
    fn request_via_xfcc(cert: &CertBuilder) -> FakeHost {
        let digest = pem::sha256_hex(&cert.der());
        request(cert)
            .without_property(property::PEER_CERTIFICATE)
            .without_property(property::PEER_CERTIFICATE_VALID)
            .with_header(XFCC_HEADER, &format!("Hash={digest};Cert=\"{}\";URI={APP}", url_encode(cert.pem())))
    }

    /// A request over a TLS connection without a client certificate.
    fn no_certificate() -> FakeHost {
        request(&app())
            .without_property(property::MTLS)
            .without_property(property::PEER_CERTIFICATE)
            .without_property(property::PEER_CERTIFICATE_DIGEST)
            .without_property(property::PEER_CERTIFICATE_VALID)
    }

    fn app() -> CertBuilder {
        CertBuilder::leaf().uri(APP)
    }

    /// A health probe as curl sends it to the loopback listener: no certificate, no body.
    fn probe() -> FakeHost {
        FakeHost::default().with_header(":method", "GET").with_header(":authority", "127.0.0.1:16443")
    }

    #[test_case]
    fn decisions() {
        let rogue = CertBuilder::leaf().uri(ROGUE);
        let allow_rogue = format!(r#"{{"allowed_principals":["{ROGUE}"]}}"#);
        let static_rogue = format!(r#"{{"principal":"{ROGUE}"}}"#);
        let cases: Vec<(&str, &str, Option<&str>, FakeHost, Verdict, Reason)> = vec![
            ("rightful app", "{}", Some("/orders"), request(&app()), Verdict::Allow, Reason::Ok),
            ("rightful app via xfcc", "{}", Some("/"), request_via_xfcc(&app()), Verdict::Allow, Reason::Ok),
            (
                "url-encoded property",
                "{}",
                Some("/"),
                request(&app()).with_property(property::PEER_CERTIFICATE, url_encode(app().pem())),
                Verdict::Allow,
                Reason::Ok,
            ),
            ("no path header", "{}", None, request(&app()), Verdict::Allow, Reason::Ok),
            (
                "ipv6 loopback",
                "{}",
                Some("/"),
                request(&app()).with_property(property::SOURCE_ADDRESS, "[::1]:4000"),
                Verdict::Allow,
                Reason::Ok,
            ),
            (
                "other loopback address",
                "{}",
                Some("/"),
                request(&app()).with_property(property::SOURCE_ADDRESS, "127.0.0.6:4000"),
                Verdict::Allow,
                Reason::Ok,
            ),
            ("allowed principal", &allow_rogue, Some("/"), request(&rogue), Verdict::Allow, Reason::Ok),
            ("static principal", &static_rogue, Some("/"), request(&rogue), Verdict::Allow, Reason::Ok),
            (
                "static principal refuses the app",
                &static_rogue,
                Some("/"),
                request(&app()),
                Verdict::Deny,
                Reason::PrincipalMismatch,
            ),
            (
                "exempt path",
                r#"{"exempt_paths":["/healthz"]}"#,
                Some("/healthz?full=1"),
                probe(),
                Verdict::Allow,
                Reason::Exempt,
            ),
            (
                "exempt is exact",
                r#"{"exempt_paths":["/healthz"]}"#,
                Some("/healthz/x"),
                probe(),
                Verdict::Deny,
                Reason::SourceAddressUnavailable,
            ),
            (
                "exempt even in audit",
                r#"{"mode":"audit","exempt_paths":["/h"]}"#,
                Some("/h"),
                probe(),
                Verdict::Allow,
                Reason::Exempt,
            ),
            (
                "forwarded loopback address",
                "{}",
                Some("/"),
                request(&app()).with_property(property::SOURCE_ADDRESS, "127.0.0.1:0"),
                Verdict::Deny,
                Reason::SourceAddressForwarded,
            ),
            ("rogue", "{}", Some("/"), request(&rogue), Verdict::Deny, Reason::PrincipalMismatch),
            (
                "rogue in audit",
                r#"{"mode":"audit"}"#,
                Some("/"),
                request(&rogue),
                Verdict::WouldDeny,
                Reason::PrincipalMismatch,
            ),
            (
                "other trust domain",
                "{}",
                Some("/"),
                request(&CertBuilder::leaf().uri("spiffe://evil.example/ns/shop/sa/app")),
                Verdict::Deny,
                Reason::PrincipalMismatch,
            ),
            (
                "remote peer",
                "{}",
                Some("/"),
                request(&app()).with_property(property::SOURCE_ADDRESS, "10.0.0.5:4000"),
                Verdict::Deny,
                Reason::NotLoopback,
            ),
            (
                "remote peer allowed by config",
                r#"{"require_loopback":false}"#,
                Some("/"),
                request(&app()).with_property(property::SOURCE_ADDRESS, "10.0.0.5:4000"),
                Verdict::Allow,
                Reason::Ok,
            ),
            (
                "mapped ipv4 loopback",
                "{}",
                Some("/"),
                request(&app()).with_property(property::SOURCE_ADDRESS, "[::ffff:127.0.0.1]:1"),
                Verdict::Allow,
                Reason::Ok,
            ),
            (
                "no source address",
                "{}",
                Some("/"),
                request(&app()).without_property(property::SOURCE_ADDRESS),
                Verdict::Deny,
                Reason::SourceAddressUnavailable,
            ),
            (
                "pipe source address",
                "{}",
                Some("/"),
                request(&app()).with_property(property::SOURCE_ADDRESS, "/tmp/sock"),
                Verdict::Deny,
                Reason::SourceAddressUnavailable,
            ),
            (
                "no certificate",
                "{}",
                Some("/"),
                no_certificate().with_property(property::MTLS, [0]),
                Verdict::Deny,
                Reason::NoClientCertificate,
            ),
            (
                "no mtls property",
                "{}",
                Some("/"),
                no_certificate(),
                Verdict::Deny,
                Reason::NoClientCertificate,
            ),
            (
                "odd mtls value",
                "{}",
                Some("/"),
                no_certificate().with_property(property::MTLS, "true"),
                Verdict::Deny,
                Reason::HostError,
            ),
            (
                "unvalidated certificate",
                "{}",
                Some("/"),
                request(&app()).with_property(property::PEER_CERTIFICATE_VALID, [0]),
                Verdict::Deny,
                Reason::CertificateUnvalidated,
            ),
            (
                "failing host call",
                "{}",
                Some("/"),
                request(&app()).with_failing_property(property::PEER_CERTIFICATE_DIGEST),
                Verdict::Deny,
                Reason::HostError,
            ),
            (
                "no certificate anywhere",
                "{}",
                Some("/"),
                request(&app()).without_property(property::PEER_CERTIFICATE),
                Verdict::Deny,
                Reason::CertificateUnavailable,
            ),
            (
                "no digest, no property",
                "{}",
                Some("/"),
                request_via_xfcc(&app()).without_property(property::PEER_CERTIFICATE_DIGEST),
                Verdict::Deny,
                Reason::CertificateUnavailable,
            ),
            (
                "malformed digest",
                "{}",
                Some("/"),
                request(&app()).with_property(property::PEER_CERTIFICATE_DIGEST, "xyz"),
                Verdict::Deny,
                Reason::CertificateUnavailable,
            ),
            (
                "digest of another certificate",
                "{}",
                Some("/"),
                request(&app()).with_property(property::PEER_CERTIFICATE_DIGEST, "0".repeat(64)),
                Verdict::Deny,
                Reason::CertificateUnavailable,
            ),
            (
                "forged xfcc",
                "{}",
                Some("/"),
                request_via_xfcc(&rogue).with_header(
                    XFCC_HEADER,
                    &format!("Hash={};Cert=\"{}\"", pem::sha256_hex(&rogue.der()), url_encode(app().pem())),
                ),
                Verdict::Deny,
                Reason::CertificateUnavailable,
            ),
            (
                "garbage certificate",
                "{}",
                Some("/"),
                request(&app()).with_property(property::PEER_CERTIFICATE, "garbage"),
                Verdict::Deny,
                Reason::CertificateInvalid,
            ),
            (
                "two uri sans",
                "{}",
                Some("/"),
                request(&app().uri(ROGUE)),
                Verdict::Deny,
                Reason::SvidUriSanCount,
            ),
            (
                "bad spiffe id",
                "{}",
                Some("/"),
                request(&CertBuilder::leaf().uri("spiffe://cluster.local/ns/shop/sa/app/")),
                Verdict::Deny,
                Reason::SvidBadSpiffeId,
            ),
            ("ca certificate", "{}", Some("/"), request(&app().ca()), Verdict::Deny, Reason::SvidNotLeaf),
            (
                "expired",
                "{}",
                Some("/"),
                request(&app().validity(0, NOW - 1)),
                Verdict::Deny,
                Reason::SvidExpired,
            ),
            (
                "not yet valid",
                "{}",
                Some("/"),
                request(&app().validity(NOW + 1, NOW + 2)),
                Verdict::Deny,
                Reason::SvidNotYetValid,
            ),
            (
                "local certificate principal",
                r#"{"principal_source":"local_certificate"}"#,
                Some("/"),
                request(&rogue).with_property(property::LOCAL_URI_SAN, ROGUE),
                Verdict::Allow,
                Reason::Ok,
            ),
            (
                "no local certificate principal",
                r#"{"principal_source":"local_certificate"}"#,
                Some("/"),
                request(&app()),
                Verdict::Deny,
                Reason::NoExpectedPrincipal,
            ),
        ];
        let mut seen = std::collections::HashSet::new();
        for (name, json, path, host, verdict, reason) in cases {
            let host = match path {
                Some(path) => host.with_header(":path", path),
                None => host,
            };
            let decision = guard(json).decide(&host);
            assert_eq!(
                (decision.verdict, decision.reason),
                (verdict, reason),
                "{name}: {:?}",
                decision.detail
            );
            seen.insert(reason);
        }
        // Given without a check, by `Outcome::refused`: tested with the filter's glue (src/tests.rs).
        let refused = [Reason::Unconfigured, Reason::EngineBusy];
        let untested: Vec<_> =
            Reason::ALL.iter().filter(|r| !seen.contains(r) && !refused.contains(r)).collect();
        assert!(untested.is_empty(), "reasons without a case: {untested:?}");
    }

    #[test_case]
    fn no_expected_principal_when_forced_source_is_empty() {
        let mut guard = Guard::new(
            Policy::from_json(br#"{"principal_source":"node_metadata"}"#, None).unwrap(),
            &FakeHost::default(),
        );
        let decision = guard.decide(&request(&app()));
        assert_eq!((decision.verdict, decision.reason), (Verdict::Deny, Reason::NoExpectedPrincipal));
        assert!(guard.take_notice().unwrap().contains("every request will be denied"));
    }

    #[test_case]
    fn decision_carries_what_the_log_needs() {
        let mut guard = guard("{}");
        let cert = CertBuilder::leaf().uri(ROGUE);
        let decision = guard.decide(&request(&cert));
        assert_eq!(decision.peer_principal.unwrap().spiffe_id.as_str(), ROGUE);
        assert_eq!(decision.expected_principal.unwrap().as_str(), APP);
        assert_eq!(decision.source_address.as_deref(), Some("127.0.0.1:40000"));
        assert_eq!(decision.cert_sha256.as_deref(), Some(pem::sha256_hex(&cert.der()).as_str()));
        assert!(guard.take_notice().unwrap().contains("node_metadata"));
        assert_eq!(guard.take_notice(), None, "said once");
    }

    #[test_case]
    fn a_cached_certificate_is_not_read_again_but_its_time_is_checked() {
        let mut guard = guard("{}");
        let cert = app().validity(0, NOW);
        let host = request(&cert);
        assert_eq!(guard.decide(&host).reason, Reason::Ok);
        let host = request(&cert).without_property(property::PEER_CERTIFICATE);
        assert_eq!(guard.decide(&host).reason, Reason::Ok, "served from the cache");
        assert!(!host.reads.borrow().iter().any(|r| r == "connection.peer_certificate"));
        assert_eq!(guard.decide(&host.at(NOW + 1)).reason, Reason::SvidExpired);
    }

    #[test_case]
    fn failed_checks_are_cached_too() {
        let mut guard = guard("{}");
        let cert = app().ca();
        assert_eq!(guard.decide(&request(&cert)).reason, Reason::SvidNotLeaf);
        let host = request(&cert).without_property(property::PEER_CERTIFICATE);
        assert_eq!(guard.decide(&host).reason, Reason::SvidNotLeaf);
    }

    #[test_case]
    fn cache_off_reads_every_time() {
        let mut guard = guard(r#"{"certificate_cache_size":0}"#);
        assert_eq!(guard.decide(&request(&app())).reason, Reason::Ok);
        let host = request(&app()).without_property(property::PEER_CERTIFICATE);
        assert_eq!(guard.decide(&host).reason, Reason::CertificateUnavailable);
    }

    #[test_case]
    fn an_exempt_probe_reads_only_its_request_line_and_framing() {
        let mut guard = guard(r#"{"exempt_paths":["/healthz"]}"#);
        let host = probe().with_header(":path", "/healthz");
        assert_eq!(guard.decide(&host).reason, Reason::Exempt);
        assert_eq!(
            *host.reads.borrow(),
            [
                "header :path",
                "header :method",
                "header upgrade",
                "header :protocol",
                "header content-length",
                "header transfer-encoding",
                "header :authority"
            ]
        );
        let host = request(&app()).with_header(":path", "/orders");
        assert_eq!(guard.decide(&host).reason, Reason::Ok);
        assert_eq!(host.reads.borrow().first().map(String::as_str), Some("header :path"));
        assert!(!host.reads.borrow().iter().any(|r| r == "header :method"), "not on other paths");
    }

    #[test_case]
    fn exempt_paths_admit_probes_only() {
        let json =
            r#"{"exempt_paths":["/healthz"],"exempt_authorities":["health.local","probe.local:8080"]}"#;
        // Each request: its headers on top of a probe, and the outcome without a certificate.
        let cases: Vec<(&str, FakeHost, Reason, Option<&str>)> = vec![
            ("GET probe", probe(), Reason::Exempt, None),
            ("HEAD probe", probe().with_header(":method", "HEAD"), Reason::Exempt, None),
            ("ipv6 loopback authority", probe().with_header(":authority", "[::1]:80"), Reason::Exempt, None),
            ("localhost authority", probe().with_header(":authority", "LocalHost"), Reason::Exempt, None),
            ("listed authority", probe().with_header(":authority", "health.local:9"), Reason::Exempt, None),
            (
                "listed authority and port",
                probe().with_header(":authority", "probe.local:8080"),
                Reason::Exempt,
                None,
            ),
            ("content-length 0", probe().with_header("content-length", "0"), Reason::Exempt, None),
            ("POST", probe().with_header(":method", "POST"), Reason::NoClientCertificate, Some("method")),
            (
                "CONNECT",
                probe().with_header(":method", "CONNECT"),
                Reason::NoClientCertificate,
                Some("method"),
            ),
            ("no method", FakeHost::default(), Reason::NoClientCertificate, Some("method")),
            ("GET with a body", probe().end_of_stream(false), Reason::NoClientCertificate, Some("body")),
            (
                "content-length",
                probe().with_header("content-length", "5"),
                Reason::NoClientCertificate,
                Some("body"),
            ),
            (
                "chunked",
                probe().with_header("transfer-encoding", "chunked"),
                Reason::NoClientCertificate,
                Some("body"),
            ),
            (
                "websocket",
                probe().with_header("upgrade", "websocket"),
                Reason::NoClientCertificate,
                Some("upgrade"),
            ),
            (
                "extended connect",
                probe().with_header(":protocol", "websocket"),
                Reason::NoClientCertificate,
                Some("upgrade"),
            ),
            (
                "another service",
                probe().with_header(":authority", "db.shop.svc.cluster.local"),
                Reason::NoClientCertificate,
                Some("authority"),
            ),
            (
                "listed host, other port",
                probe().with_header(":authority", "probe.local:80"),
                Reason::NoClientCertificate,
                Some("authority"),
            ),
            (
                "no authority",
                FakeHost::default().with_header(":method", "GET"),
                Reason::NoClientCertificate,
                Some("authority"),
            ),
            (
                "loopback-looking name",
                probe().with_header(":authority", "127.0.0.1.evil.example"),
                Reason::NoClientCertificate,
                Some("authority"),
            ),
        ];
        // Every authority of the shared table, under its own configuration.
        for (raw, expected) in PROBE_AUTHORITIES {
            let host = probe()
                .with_header(":authority", raw)
                .with_header(":path", "/healthz")
                .with_property(property::SOURCE_ADDRESS, "127.0.0.1:4000")
                .with_property(property::MTLS, [0]);
            let decision = guard(PROBE_CONFIG).decide(&host);
            let detail = decision.detail.clone().unwrap_or_default();
            match expected {
                ProbeAuthority::Admitted => assert_eq!(decision.reason, Reason::Exempt, "{raw:?}: {detail}"),
                ProbeAuthority::Unparsed | ProbeAuthority::Unlisted => {
                    let why = match expected {
                        ProbeAuthority::Unparsed => "its authority does not parse as host[:port]",
                        _ => "its authority is neither a loopback host nor in exempt_authorities",
                    };
                    assert_eq!(decision.reason, Reason::NoClientCertificate, "{raw:?}");
                    assert_eq!(detail, format!("exempt path, but {why}: checked in full"), "{raw:?}");
                }
            }
        }
        for (name, host, reason, why) in cases {
            let host = host
                .with_header(":path", "/healthz")
                .with_property(property::SOURCE_ADDRESS, "127.0.0.1:4000")
                .with_property(property::MTLS, [0]);
            let decision = guard(json).decide(&host);
            assert_eq!(decision.reason, reason, "{name}: {:?}", decision.detail);
            match why {
                None => assert_eq!(decision.detail, None, "{name}"),
                Some(why) => {
                    let detail = decision.detail.unwrap_or_default();
                    assert!(
                        detail.starts_with("exempt path, but") && detail.contains(why),
                        "{name}: {detail}"
                    );
                }
            }
        }
        // The full check still admits the rightful app on an exempt path, whatever it sends.
        let host = request(&app()).with_header(":path", "/healthz").with_header(":method", "POST");
        assert_eq!(guard(json).decide(&host).reason, Reason::Ok);
    }

    #[test_case]
    fn a_resumed_session_is_admitted_only_for_a_certificate_validated_before() {
        let worker1 = request(&app());
        let worker2 =
            || request(&app()).sharing_with(&worker1).with_property(property::PEER_CERTIFICATE_VALID, [0]);
        let (mut guard1, mut guard2) = (guard("{}"), guard("{}"));
        // Never validated (ACCEPT_UNTRUSTED, or a listener without validation): denied.
        let decision = guard2.decide(&worker2());
        assert_eq!((decision.verdict, decision.reason), (Verdict::Deny, Reason::CertificateUnvalidated));
        // A full handshake validates it on one worker; a resumed session on the other is admitted.
        assert_eq!(guard1.decide(&worker1).reason, Reason::Ok);
        let decision = guard2.decide(&worker2());
        assert_eq!((decision.verdict, decision.reason), (Verdict::Allow, Reason::Ok));
        assert_eq!(decision.detail.as_deref(), Some(RESUMED_DETAIL));
        // Another certificate with the same identity, never validated: still denied.
        let other = app().validity(1_600_000_000, 4_102_444_800);
        let host =
            request(&other).sharing_with(&worker1).with_property(property::PEER_CERTIFICATE_VALID, [0]);
        assert_eq!(guard2.decide(&host).reason, Reason::CertificateUnvalidated);
        // No digest to look up: denied.
        let host = worker2().without_property(property::PEER_CERTIFICATE_DIGEST);
        assert_eq!(guard("{}").decide(&host).reason, Reason::CertificateUnvalidated);
        // The record's host call failing denies with host_error, never allows.
        let failing = FailingShared(worker2());
        assert_eq!(guard("{}").decide(&failing).reason, Reason::HostError);
    }

    /// A host whose shared data cannot be read.
    struct FailingShared(FakeHost);

    impl Host for FailingShared {
        fn property(&self, path: &[&str]) -> Result<Option<Vec<u8>>, HostError> {
            self.0.property(path)
        }
        fn request_header(&self, name: &str) -> Result<Option<String>, HostError> {
            self.0.request_header(name)
        }
        fn now(&self) -> Result<i64, HostError> {
            self.0.now()
        }
        fn shared_data(&self, _key: &str) -> Result<(Option<Vec<u8>>, Option<u32>), HostError> {
            Err(HostError("status 2".into()))
        }
    }

    #[test_case]
    fn without_the_validity_property_the_operator_is_told_once_per_envoy() {
        let worker1 = request(&app()).without_property(property::PEER_CERTIFICATE_VALID);
        let worker2 =
            request(&app()).without_property(property::PEER_CERTIFICATE_VALID).sharing_with(&worker1);
        let (mut guard1, mut guard2) = (guard("{}"), guard("{}"));
        guard1.take_notice();
        guard2.take_notice();
        assert_eq!(guard1.decide(&worker1).reason, Reason::Ok);
        assert_eq!(guard1.take_notice().as_deref(), Some(NO_VALIDITY_NOTICE));
        assert_eq!(guard1.decide(&worker1).reason, Reason::Ok);
        assert_eq!(guard2.decide(&worker2).reason, Reason::Ok);
        assert_eq!((guard1.take_notice(), guard2.take_notice()), (None, None), "said once");
        let warm = request(&app()).without_property(property::PEER_CERTIFICATE_VALID);
        guard1.decide(&warm);
        assert!(!warm.reads.borrow().iter().any(|r| r.contains("shared")), "{:?}", warm.reads.borrow());
    }

    fn on_connection(host: FakeHost, id: u64) -> FakeHost {
        host.with_property(property::CONNECTION_ID, id.to_le_bytes())
    }

    #[test_case]
    fn a_warm_request_reads_the_connection_id_and_the_clock() {
        let mut guard = guard("{}");
        let first = on_connection(request(&app()), 7);
        assert_eq!(guard.decide(&first).reason, Reason::Ok);
        let host = on_connection(request(&app()), 7);
        let decision = guard.decide(&host);
        assert_eq!(decision, guard.decide(&first), "the same decision as the first request's");
        assert_eq!(*host.reads.borrow(), ["connection.id", "clock"]);
        // With exempt paths the path comes first, as it is the request's.
        let mut guard = super::tests::guard(r#"{"exempt_paths":["/healthz"]}"#);
        guard.decide(&on_connection(request(&app()), 7).with_header(":path", "/"));
        let host = on_connection(request(&app()), 7).with_header(":path", "/orders");
        assert_eq!(guard.decide(&host).reason, Reason::Ok);
        assert_eq!(*host.reads.borrow(), ["header :path", "connection.id", "clock"]);
    }

    #[test_case]
    fn a_connection_is_decided_once_but_its_clock_on_every_request() {
        let mut guard = guard(r#"{"mode":"audit"}"#);
        let cert = app().validity(0, NOW);
        assert_eq!(guard.decide(&on_connection(request(&cert), 1)).reason, Reason::Ok);
        let expired = guard.decide(&on_connection(request(&cert), 1).at(NOW + 1));
        assert_eq!((expired.verdict, expired.reason), (Verdict::WouldDeny, Reason::SvidExpired));
        assert_eq!(
            expired,
            guard.without_connection_reuse().decide(&on_connection(request(&cert), 1).at(NOW + 1))
        );
        // A refusal of the connection is reused too; one a later request may not share is not.
        let mut guard = super::tests::guard("{}");
        let rogue = on_connection(request(&app().uri(ROGUE)), 2);
        assert_eq!(guard.decide(&rogue).reason, Reason::SvidUriSanCount);
        let host = on_connection(FakeHost::default(), 2);
        assert_eq!(guard.decide(&host).reason, Reason::SvidUriSanCount);
        assert_eq!(*host.reads.borrow(), ["connection.id"]);
        let failing = on_connection(request(&app()), 3).with_failing_property(property::SOURCE_ADDRESS);
        assert_eq!(guard.decide(&failing).reason, Reason::HostError);
        assert_eq!(guard.decide(&on_connection(request(&app()), 3)).reason, Reason::Ok, "decided again");
        let forwarded =
            on_connection(request(&app()), 4).with_property(property::SOURCE_ADDRESS, "127.0.0.1:0");
        assert_eq!(guard.decide(&forwarded).reason, Reason::SourceAddressForwarded);
        let host = on_connection(request(&app()), 4).with_property(property::SOURCE_ADDRESS, "127.0.0.1:0");
        guard.decide(&host);
        assert!(
            host.reads.borrow().iter().any(|r| r == "source.address"),
            "a header's address: decided again"
        );
        // Without a readable id: decided in full.
        let host = request(&app()).with_failing_property(property::CONNECTION_ID);
        assert_eq!(guard.decide(&host).reason, Reason::Ok);
        assert!(host.reads.borrow().iter().any(|r| r == "source.address"));
    }

    #[test_case]
    fn reason_names_are_stable_and_unique() {
        let names: std::collections::HashSet<_> = Reason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(names.len(), Reason::ALL.len());
        assert_eq!(Reason::PrincipalMismatch.as_str(), "principal_mismatch");
        assert!(Reason::ALL.iter().filter(|r| r.is_allow()).count() == 2);
    }
}
