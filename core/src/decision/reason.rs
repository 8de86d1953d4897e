//! What a decision says: its verdict, its reason (and the step each reason belongs to), and
//! the facts the decision log needs.

use std::rc::Rc;

use crate::host::HostError;
use crate::identity::SpiffeId;
use crate::svid::{SvidError, SvidFacts};

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

/// The steps of "How a decision is made" (docs/configuration.md), in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Step {
    ExemptPath,
    LoopbackPeer,
    CertificatePresented,
    PeerCertificate,
    SvidRules,
    Principal,
}

impl Step {
    pub const ALL: [Step; 6] = [
        Self::ExemptPath,
        Self::LoopbackPeer,
        Self::CertificatePresented,
        Self::PeerCertificate,
        Self::SvidRules,
        Self::Principal,
    ];

    /// The step's name, as docs/configuration.md heads it.
    pub fn title(self) -> &'static str {
        match self {
            Self::ExemptPath => "Exempt path",
            Self::LoopbackPeer => "Loopback peer",
            Self::CertificatePresented => "Certificate presented",
            Self::PeerCertificate => "Peer certificate",
            Self::SvidRules => "X509-SVID rules",
            Self::Principal => "Principal",
        }
    }

    /// Its number in that list, from 1.
    pub fn number(self) -> usize {
        self as usize + 1
    }

    /// Every reason this step decides with.
    pub fn reasons(self) -> impl Iterator<Item = Reason> {
        Reason::ALL.iter().copied().filter(move |reason| reason.step() == Some(self))
    }
}

macro_rules! reasons {
    ($($variant:ident => $name:literal, $step:expr, $doc:literal;)*) => {
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

            /// The step that decides with this reason; `None` for a failure outside the steps
            /// (a host call, no configuration, a re-entrant call).
            pub fn step(self) -> Option<Step> {
                match self {
                    $(Self::$variant => $step,)*
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

use Step::*;

reasons! {
    Ok => "ok", Some(Principal), "The peer's SVID names an admitted principal.";
    Exempt => "exempt", Some(ExemptPath), "The path is in `exempt_paths`.";
    NotLoopback => "not_loopback", Some(LoopbackPeer), "The peer address is not in 127.0.0.0/8 or ::1.";
    SourceAddressUnavailable => "source_address_unavailable", Some(LoopbackPeer), "The peer address is missing or unreadable.";
    SourceAddressForwarded => "source_address_forwarded", Some(LoopbackPeer), "The peer address was rebuilt from a request header (port 0), not taken from the TCP peer.";
    NoClientCertificate => "no_client_certificate", Some(CertificatePresented), "The peer presented no certificate.";
    CertificateUnvalidated => "certificate_unvalidated", Some(CertificatePresented), "Envoy did not validate the presented certificate, on this handshake or an earlier one.";
    CertificateUnavailable => "certificate_unavailable", Some(PeerCertificate), "The peer certificate could not be obtained (or proven to be the connection's).";
    CertificateInvalid => "certificate_invalid", Some(SvidRules), "The peer certificate does not decode or parse.";
    SvidUriSanCount => "svid_uri_san_count", Some(SvidRules), "The certificate has no URI SAN, or more than one.";
    SvidBadSpiffeId => "svid_bad_spiffe_id", Some(SvidRules), "The URI SAN is not a valid workload SPIFFE ID.";
    SvidNotLeaf => "svid_not_leaf", Some(SvidRules), "The certificate is a CA or may sign certificates or CRLs.";
    SvidExpired => "svid_expired", Some(SvidRules), "The certificate's notAfter has passed.";
    SvidNotYetValid => "svid_not_yet_valid", Some(SvidRules), "The certificate's notBefore is in the future.";
    NoExpectedPrincipal => "no_expected_principal", Some(Principal), "No source gave the pod's own principal.";
    PrincipalMismatch => "principal_mismatch", Some(Principal), "The SVID is valid but names another principal.";
    HostError => "host_error", None, "A host call failed.";
    Unconfigured => "unconfigured", None, "The filter has no valid configuration.";
    EngineBusy => "engine_busy", None, "The decision engine was already in use (a re-entrant call).";
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
pub(super) struct Facts {
    /// Why a request on an exempt path did not qualify as a probe.
    pub(super) not_a_probe: Option<&'static str>,
    pub(super) resumed: bool,
    pub(super) peer: Option<Rc<SvidFacts>>,
    pub(super) expected: Option<Rc<SpiffeId>>,
    pub(super) source_address: Option<Rc<str>>,
    pub(super) cert_sha256: Option<Rc<str>>,
    pub(super) connection_id: Option<u64>,
}

impl Facts {
    pub(super) fn into_decision(self, verdict: Verdict, reason: Reason, detail: Option<String>) -> Decision {
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

/// A failed step: the reason, and a detail when it helps the operator.
#[derive(Debug, Clone)]
pub(super) struct Refusal(pub(super) Reason, pub(super) Option<String>);

impl Refusal {
    pub(super) fn bare(reason: Reason) -> Self {
        Self(reason, None)
    }

    pub(super) fn because(reason: Reason, detail: impl ToString) -> Self {
        Self(reason, Some(detail.to_string()))
    }
}

impl From<HostError> for Refusal {
    fn from(error: HostError) -> Self {
        Self::because(Reason::HostError, error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_case;

    /// docs/configuration.md's "How a decision is made" lists the steps in this order, each
    /// named as [`Step::title`], and names every reason of a step in that step's paragraph.
    #[test_case]
    fn the_documented_steps_are_these() {
        let doc = include_str!("../../../docs/configuration.md");
        let section = doc.split("## How a decision is made").nth(1).unwrap_or_default();
        let section = section.split("\n## ").next().unwrap_or_default();
        let mut paragraphs = Vec::new();
        for line in section.lines() {
            let numbered = line
                .split_once(". **")
                .filter(|(n, _)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
            match numbered {
                Some((_, rest)) => {
                    let (title, text) = rest.split_once(".**").unwrap_or((rest, ""));
                    paragraphs.push((title.to_owned(), text.to_owned()));
                }
                None if line.starts_with("   ") => {
                    if let Some((_, text)) = paragraphs.last_mut() {
                        text.push_str(line);
                    }
                }
                None => {}
            }
        }
        let titles: Vec<&str> = paragraphs.iter().map(|(title, _)| title.as_str()).collect();
        let want: Vec<&str> = Step::ALL.iter().map(|step| step.title()).collect();
        assert_eq!(titles, want);
        for ((_, text), step) in paragraphs.iter().zip(Step::ALL) {
            for reason in step.reasons() {
                assert!(
                    text.contains(&format!("`{}`", reason.as_str())),
                    "step {}: no `{}`",
                    step.title(),
                    reason.as_str()
                );
            }
        }
        // Every reason but the three failures outside the steps belongs to one.
        let stepless: Vec<Reason> = Reason::ALL.iter().copied().filter(|r| r.step().is_none()).collect();
        assert_eq!(stepless, [Reason::HostError, Reason::Unconfigured, Reason::EngineBusy]);
    }
}
