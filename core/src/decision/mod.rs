//! The admission decision: a pure function of the policy, the host facts and the clock.
//!
//! The steps run in a fixed order and the first failing one decides; anything unexpected denies
//! with its own reason. Nothing allows by default: the only `Allow` outcomes are an exempt path
//! and a certificate that passed every check and names an admitted principal.

//!
//! The steps live in their own files: [`probe`] (step 1), [`peer`] (steps 2 to 5), and here the
//! principal (step 6) and the memory of connections; [`reason`] names the outcomes, each with its
//! step.

mod peer;
mod probe;
mod reason;
#[cfg(test)]
mod tests;

use std::rc::Rc;

use crate::cache::ById;
use crate::config::{Mode, Policy};
use crate::host::{connection_id, peer_address, Host};
use crate::identity::SpiffeId;
use crate::notice::{Level, Notice};
use crate::principal::{self, Expected, Source};
use crate::svid::SvidFacts;

use peer::{check_loopback, source_address, validity_window, PeerSteps};
pub use peer::{NO_CERTIFICATE_PROPERTY_DETAIL, NO_VALIDITY_NOTICE, RESUMED_DETAIL};
use probe::Exemption;
pub use reason::{Decision, Reason, Step, Verdict};
use reason::{Facts, Refusal};

/// How many connections' outcomes each engine remembers (see [`Guard::decide`]).
pub const CONNECTIONS: usize = 4096;

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
    /// Steps 2 to 5, with the certificate cache and the record of validated certificates.
    peer: PeerSteps,
    /// Messages for the operator, each to be logged once (see [`Guard::take_notices`]).
    notices: Vec<Notice>,
    local_notice_given: bool,
    /// Outcomes by connection id: every fact but the path and the clock is the connection's.
    connections: ById<Rc<Connection>>,
}

impl Guard {
    /// Builds the engine; the expected principal is resolved now where it can be.
    pub fn new(policy: Policy, host: &impl Host) -> Self {
        let expected = Expected::resolve(&policy, host);
        let peer = PeerSteps::new(policy.certificate_cache_size);
        let notices = match expected {
            // Said at the first request, when the certificate is known.
            Expected::LocalCertificate => Vec::new(),
            Expected::Unavailable(_) => vec![Notice::new(Level::Error, expected.to_string())],
            Expected::Known(..) => vec![Notice::new(Level::Info, expected.to_string())],
        };
        Self {
            policy,
            expected,
            peer,
            notices,
            local_notice_given: false,
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
        match step!(probe::exemption(&self.policy, host)) {
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
        let (digest, resumed) = self.peer.presented_certificate(host, &mut self.notices)?;
        facts.resumed = resumed;
        facts.cert_sha256 = digest.as_deref().map(Rc::from);
        let peer = self.peer.svid(host, digest)?;
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

    /// A connection decided before, at a later read: its decision stands unless the validity
    /// window of the certificate it admitted has since closed (the clock only, no parse). Then
    /// the refusal, as a full decision would give it now.
    pub fn recheck(&self, decided: &Decision, host: &impl Host) -> Option<Decision> {
        let peer = decided.peer_principal.as_ref().filter(|_| decided.verdict == Verdict::Allow)?;
        let refusal = validity_window(peer, host).err()?;
        let facts = Facts {
            peer: Some(Rc::clone(peer)),
            expected: decided.expected_principal.clone(),
            source_address: decided.source_address.clone(),
            cert_sha256: decided.cert_sha256.clone(),
            connection_id: decided.connection_id,
            ..Facts::default()
        };
        Some(self.refused(refusal, facts))
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
