//! The HTTP context: decide on the request headers, then count, log, record and enforce.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::rc::Rc;

use loopback_guard_core::config::LogAllowed;
use loopback_guard_core::decision::{Decision, Reason, Verdict};
use loopback_guard_core::host::{property, Host};
use loopback_guard_core::log::{decision_line, RequestLabels};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::Action;

use super::host::{label_header, ProxyHost};
use super::root::Shared;

pub struct Http {
    shared: Option<Rc<Shared>>,
}

impl Http {
    pub fn new(shared: Option<Rc<Shared>>) -> Self {
        Self { shared }
    }
}

impl Context for Http {}

impl HttpContext for Http {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let Some(shared) = &self.shared else {
            let decision = Decision::deny(Reason::HostError, "the filter has no valid configuration");
            log_decision(&decision);
            return enforce(&decision);
        };
        let (decision, log_allowed) = match shared.guard.try_borrow_mut() {
            Ok(mut guard) => {
                let decision = guard.decide(&ProxyHost);
                if let Some(notice) = guard.take_notice() {
                    log::info!("loopback-guard: {notice}");
                }
                (decision, guard.policy().log_allowed)
            }
            Err(_) => (Decision::deny(Reason::HostError, "decision engine busy"), LogAllowed::All),
        };
        shared.metrics.record(&decision);
        let log = match (decision.verdict, log_allowed) {
            (Verdict::Deny | Verdict::WouldDeny, _) | (Verdict::Allow, LogAllowed::All) => true,
            (Verdict::Allow, LogAllowed::None) => false,
            (Verdict::Allow, LogAllowed::FirstPerConnection) => {
                connection_key(&decision).is_some_and(|key| {
                    shared.logged_connections.try_borrow_mut().is_ok_and(|mut seen| seen.first_time(key))
                })
            }
        };
        if log {
            log_decision(&decision);
        }
        enforce(&decision)
    }
}

/// Tells connections apart for `first_per_connection` without another host call: while a
/// connection is open its source address (ip:port) is its own. A port reused after a close may
/// go unlogged once while the old key is remembered; that only skips a log line.
fn connection_key(decision: &Decision) -> Option<u64> {
    match &decision.source_address {
        Some(address) => {
            let mut hasher = DefaultHasher::new();
            address.hash(&mut hasher);
            Some(hasher.finish())
        }
        // An exempt request did not read its address.
        None => connection_id(),
    }
}

/// Records the outcome for the access log, then lets the request on or answers 403.
fn enforce(decision: &Decision) -> Action {
    // Filter state `wasm.loopback_guard.decision` / `.reason`, for `%FILTER_STATE(...)%`.
    let _ =
        hostcalls::set_property(vec!["loopback_guard.decision"], Some(decision.verdict.as_str().as_bytes()));
    let _ = hostcalls::set_property(vec!["loopback_guard.reason"], Some(decision.reason.as_str().as_bytes()));
    if decision.verdict != Verdict::Deny {
        return Action::Continue;
    }
    let body = format!("loopback-guard: denied: {}\n", decision.reason.as_str());
    if let Err(status) = hostcalls::send_http_response(
        403,
        vec![("content-type", "text/plain; charset=utf-8")],
        Some(body.as_bytes()),
    ) {
        log::error!("loopback-guard: cannot send the 403 reply: {status:?}");
    }
    // Never Continue after a deny, even if the reply could not be sent.
    Action::Pause
}

fn connection_id() -> Option<u64> {
    let raw = ProxyHost.property(property::CONNECTION_ID).ok().flatten()?;
    Some(u64::from_le_bytes(raw.try_into().ok()?))
}

fn log_decision(decision: &Decision) {
    // Labels are read only for a line that is written: each is a host call.
    let path = label_header(":path");
    let method = label_header(":method");
    let request_id = label_header("x-request-id");
    let labels = RequestLabels {
        connection_id: connection_id(),
        request_id: request_id.as_deref(),
        method: method.as_deref(),
        path: path.as_deref(),
    };
    let line = decision_line(decision, &labels);
    match decision.verdict {
        Verdict::Allow => log::info!("{line}"),
        Verdict::Deny | Verdict::WouldDeny => log::warn!("{line}"),
    }
}
