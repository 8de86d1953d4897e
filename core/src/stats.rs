//! Everything the filter emits besides its log lines, in one table: the counters and their
//! prefix, the filter state keys an access log reads, and the 403 reply.

use crate::decision::{Decision, Reason, Verdict};

/// The prefix of every counter: `loopback_guard.allowed`, `.denied.<reason>`, ...
pub const COUNTER_PREFIX: &str = "loopback_guard";
/// Filter state keys, read in an access log as `%FILTER_STATE(wasm.loopback_guard.decision)%`.
pub const DECISION_STATE: &str = "loopback_guard.decision";
pub const REASON_STATE: &str = "loopback_guard.reason";
/// A counter in the proxy's stats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Counter {
    Allowed,
    Exempt,
    WouldDeny,
    /// A decision line the log limiter held back.
    LogHeldBack,
    /// One per deny reason.
    Denied(Reason),
}

impl Counter {
    /// Every counter, so that all of them can be defined up front and show in stats from the start.
    pub fn all() -> impl Iterator<Item = Counter> {
        [Self::Allowed, Self::Exempt, Self::WouldDeny, Self::LogHeldBack]
            .into_iter()
            .chain(Reason::ALL.iter().filter(|reason| !reason.is_allow()).map(|reason| Self::Denied(*reason)))
    }

    pub fn name(self) -> String {
        match self {
            Self::Allowed => format!("{COUNTER_PREFIX}.allowed"),
            Self::Exempt => format!("{COUNTER_PREFIX}.exempt"),
            Self::WouldDeny => format!("{COUNTER_PREFIX}.would_deny"),
            Self::LogHeldBack => format!("{COUNTER_PREFIX}.log_held_back"),
            Self::Denied(reason) => format!("{COUNTER_PREFIX}.denied.{}", reason.as_str()),
        }
    }

    /// The counter every decision bumps.
    pub fn of(decision: &Decision) -> Self {
        match (decision.verdict, decision.reason) {
            (Verdict::Allow, Reason::Exempt) => Self::Exempt,
            (Verdict::Allow, _) => Self::Allowed,
            (Verdict::WouldDeny, _) => Self::WouldDeny,
            (Verdict::Deny, reason) => Self::Denied(reason),
        }
    }
}

/// The headers of every 403 the filter sends.
pub const REPLY_HEADERS: &[(&str, &str)] = &[("content-type", "text/plain; charset=utf-8")];

/// The local reply that ends a denied request: all of it fixed at compile time, so a flood of
/// denials formats nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reply {
    pub status: u32,
    pub headers: &'static [(&'static str, &'static str)],
    pub body: &'static str,
}

impl Reply {
    pub fn denied(reason: Reason) -> Self {
        Self { status: 403, headers: REPLY_HEADERS, body: reason.reply_body() }
    }
}
