//! How many decision lines a worker writes for requests anyone in the pod can send.
//!
//! A denial (or an audit finding, or an exempt probe) needs no certificate, so without a bound
//! any process could write the decision log as fast as it can open connections, and push every
//! earlier decision out of the node's log retention. Two rules bound it, per worker VM:
//! the first line per connection and reason (later ones on the same connection are only
//! counted), and at most `log_lines_per_second` lines per second (a token bucket as deep as one
//! second's worth). What is held back is counted per reason and reported in one summary line
//! every `log_summary_seconds`. Counters are not affected: they count every decision.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::cache::Bounded;
use crate::decision::Reason;

/// Connection-and-reason pairs remembered per VM.
const RECENT: usize = 4096;

#[derive(Debug)]
pub struct LogLimiter {
    per_second: u32,
    summary_ms: u64,
    /// Milli-lines available; a line costs 1000.
    tokens: u64,
    refilled_at_ms: u64,
    seen: Bounded<(u64, Reason), ()>,
    held_back: BTreeMap<&'static str, u64>,
    summary_due_ms: Option<u64>,
}

impl LogLimiter {
    pub fn new(per_second: u32, summary_seconds: u32) -> Self {
        Self {
            per_second,
            summary_ms: u64::from(summary_seconds) * 1000,
            tokens: u64::from(per_second) * 1000,
            refilled_at_ms: 0,
            seen: Bounded::new(RECENT),
            held_back: BTreeMap::new(),
            summary_due_ms: None,
        }
    }

    /// Whether to write the line of a decision with `reason` on connection `connection`
    /// (`None` when the connection is unknown: only the rate applies). A line not written is
    /// counted for the next summary.
    pub fn admit(&mut self, now_ms: u64, connection: Option<u64>, reason: Reason) -> bool {
        self.refill(now_ms);
        let first = connection.is_none_or(|id| self.seen.insert((id, reason), ()));
        if first && self.tokens >= 1000 {
            self.tokens -= 1000;
            return true;
        }
        *self.held_back.entry(reason.as_str()).or_default() += 1;
        self.summary_due_ms.get_or_insert(now_ms.saturating_add(self.summary_ms));
        false
    }

    /// The summary line, once `log_summary_seconds` have passed since the first line held back.
    pub fn summary(&mut self, now_ms: u64) -> Option<String> {
        let due = self.summary_due_ms?;
        if now_ms < due {
            return None;
        }
        #[derive(Serialize)]
        struct Summary<'a> {
            decision_lines_held_back: &'a BTreeMap<&'static str, u64>,
            total: u64,
            seconds: u64,
        }
        let line = serde_json::to_string(&Summary {
            decision_lines_held_back: &self.held_back,
            total: self.held_back.values().sum(),
            seconds: (self.summary_ms / 1000).max(1),
        })
        .ok();
        self.held_back.clear();
        self.summary_due_ms = None;
        line
    }

    fn refill(&mut self, now_ms: u64) {
        let elapsed = now_ms.saturating_sub(self.refilled_at_ms);
        let full = u64::from(self.per_second) * 1000;
        self.tokens =
            self.tokens.saturating_add(elapsed.saturating_mul(u64::from(self.per_second))).min(full);
        self.refilled_at_ms = self.refilled_at_ms.max(now_ms);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_case;

    #[test_case]
    fn first_per_connection_and_reason() {
        let mut limiter = LogLimiter::new(100, 10);
        assert!(limiter.admit(0, Some(1), Reason::PrincipalMismatch));
        assert!(!limiter.admit(1, Some(1), Reason::PrincipalMismatch), "same connection and reason");
        assert!(limiter.admit(2, Some(1), Reason::NotLoopback), "another reason");
        assert!(limiter.admit(3, Some(2), Reason::PrincipalMismatch), "another connection");
    }

    #[test_case]
    fn the_rate_is_bounded_and_refills() {
        let mut limiter = LogLimiter::new(5, 10);
        let written = (0..1000).filter(|n| limiter.admit(0, Some(*n), Reason::NoClientCertificate)).count();
        assert_eq!(written, 5, "a burst of one second's worth");
        assert!(!limiter.admit(199, Some(5000), Reason::NoClientCertificate));
        assert!(limiter.admit(400, Some(5001), Reason::NoClientCertificate), "one line per 200 ms");
        let written = (0..1000)
            .filter(|n| limiter.admit(60_000, Some(10_000 + n), Reason::NoClientCertificate))
            .count();
        assert_eq!(written, 5, "never more than the bucket, however long the pause");
    }

    #[test_case]
    fn held_back_lines_are_summarised_per_reason() {
        let mut limiter = LogLimiter::new(1, 10);
        assert!(limiter.admit(0, Some(1), Reason::NotLoopback));
        for n in 0..7 {
            assert!(!limiter.admit(100, Some(2 + n), Reason::NotLoopback));
        }
        assert!(!limiter.admit(200, None, Reason::PrincipalMismatch));
        assert_eq!(limiter.summary(5_000), None, "not yet due");
        let line = limiter.summary(10_100).unwrap();
        let parsed: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(parsed["decision_lines_held_back"]["not_loopback"], 7);
        assert_eq!(parsed["decision_lines_held_back"]["principal_mismatch"], 1);
        assert_eq!(parsed["total"], 8);
        assert_eq!(parsed["seconds"], 10);
        assert_eq!(limiter.summary(30_000), None, "nothing held back since");
    }

    #[test_case]
    fn remembered_pairs_are_bounded() {
        let mut limiter = LogLimiter::new(10_000, 1);
        for n in 0..(RECENT as u64 * 2) {
            limiter.admit(n, Some(n), Reason::NotLoopback);
        }
        assert_eq!(limiter.seen.len(), RECENT);
    }
}
