//! Counters in Envoy's stats: `loopback_guard.allowed`, `.exempt`, `.would_deny`,
//! `.denied.<reason>` (one per deny reason) and `.log_held_back`.

use loopback_guard_core::decision::{Decision, Reason, Verdict};
use proxy_wasm::hostcalls;
use proxy_wasm::types::MetricType;

const PREFIX: &str = "loopback_guard";

pub struct Metrics {
    allowed: Option<u32>,
    exempt: Option<u32>,
    would_deny: Option<u32>,
    log_held_back: Option<u32>,
    /// Indexed like [`Reason::ALL`]; `None` for the allow reasons.
    denied: Vec<Option<u32>>,
}

impl Metrics {
    /// Defines every counter up front, so all of them show in `/stats` from the start.
    pub fn define() -> Self {
        Self {
            allowed: counter("allowed"),
            exempt: counter("exempt"),
            would_deny: counter("would_deny"),
            log_held_back: counter("log_held_back"),
            denied: Reason::ALL
                .iter()
                .map(|reason| {
                    (!reason.is_allow()).then(|| counter(&format!("denied.{}", reason.as_str()))).flatten()
                })
                .collect(),
        }
    }

    /// One decision line the log limiter held back.
    pub fn record_held_back(&self) {
        if let Some(id) = self.log_held_back {
            let _ = hostcalls::increment_metric(id, 1);
        }
    }

    pub fn record(&self, decision: &Decision) {
        let id = match (decision.verdict, decision.reason) {
            (Verdict::Allow, Reason::Exempt) => self.exempt,
            (Verdict::Allow, _) => self.allowed,
            (Verdict::WouldDeny, _) => self.would_deny,
            (Verdict::Deny, reason) => Reason::ALL
                .iter()
                .position(|r| *r == reason)
                .and_then(|i| self.denied.get(i).copied().flatten()),
        };
        if let Some(id) = id {
            // A failed increment loses one count; it must not fail the request.
            let _ = hostcalls::increment_metric(id, 1);
        }
    }
}

fn counter(name: &str) -> Option<u32> {
    let full = format!("{PREFIX}.{name}");
    match hostcalls::define_metric(MetricType::Counter, &full) {
        Ok(id) => Some(id),
        Err(status) => {
            log::error!("loopback-guard: cannot define counter {full}: {status:?}");
            None
        }
    }
}
