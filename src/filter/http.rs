//! The HTTP context: decide on the request headers, then count, log, record and enforce.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::rc::Rc;

use loopback_guard_core::config::{LogAllowed, DEFAULT_LOG_FIELD_MAX_BYTES};
use loopback_guard_core::decision::{Decision, Reason, Verdict, NO_VALIDITY_NOTICE};
use loopback_guard_core::host::{property, Host};
use loopback_guard_core::log::{decision_line, RequestLabels};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::Action;

use super::host::{label_header, now_ms, ProxyHost};
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
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let Some(shared) = &self.shared else {
            let decision = Decision::deny(Reason::HostError, "the filter has no valid configuration");
            log_decision(&decision, DEFAULT_LOG_FIELD_MAX_BYTES);
            return enforce(&decision);
        };
        let host = ProxyHost { end_of_stream };
        let (decision, log_allowed, max_field_bytes) = match shared.guard.try_borrow_mut() {
            Ok(mut guard) => {
                let decision = guard.decide(&host);
                while let Some(notice) = guard.take_notice() {
                    if notice == NO_VALIDITY_NOTICE {
                        log::warn!("loopback-guard: {notice}");
                    } else {
                        log::info!("loopback-guard: {notice}");
                    }
                }
                (decision, guard.policy().log_allowed, guard.policy().log_field_max_bytes)
            }
            Err(_) => (
                Decision::deny(Reason::HostError, "decision engine busy"),
                LogAllowed::All,
                DEFAULT_LOG_FIELD_MAX_BYTES,
            ),
        };
        shared.metrics.record(&decision);
        // Allowed requests with a certificate follow `log_allowed`; anything a process without
        // the app's certificate can cause (a denial, an audit finding, an exemption) is bounded
        // by the limiter on top.
        let wanted = match (decision.verdict, log_allowed) {
            (Verdict::Deny | Verdict::WouldDeny, _) | (Verdict::Allow, LogAllowed::All) => true,
            (Verdict::Allow, LogAllowed::None) => false,
            (Verdict::Allow, LogAllowed::FirstPerConnection) => {
                connection_key(&decision).is_some_and(|key| {
                    shared.logged_connections.try_borrow_mut().is_ok_and(|mut seen| seen.first_time(key))
                })
            }
        };
        let unauthenticated = decision.verdict != Verdict::Allow || decision.reason == Reason::Exempt;
        let log = wanted
            && (!unauthenticated
                || shared.limiter.try_borrow_mut().is_ok_and(|mut limiter| {
                    limiter.admit(now_ms(), connection_key(&decision), decision.reason)
                }));
        if log {
            log_decision(&decision, max_field_bytes);
        } else if wanted {
            shared.metrics.record_held_back();
        }
        enforce(&decision)
    }
}

/// Tells connections apart without another host call where it can: while a connection is open
/// its source address (ip:port) is its own. A port reused after a close may go unlogged once
/// while the old key is remembered; that only skips a log line. An address without a real port
/// (rebuilt from a header) or none at all falls back to the connection id.
fn connection_key(decision: &Decision) -> Option<u64> {
    match &decision.source_address {
        Some(address) if !address.ends_with(":0") => {
            let mut hasher = DefaultHasher::new();
            address.hash(&mut hasher);
            Some(hasher.finish())
        }
        _ => connection_id(),
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
    let raw = ProxyHost::default().property(property::CONNECTION_ID).ok().flatten()?;
    Some(u64::from_le_bytes(raw.try_into().ok()?))
}

fn log_decision(decision: &Decision, max_field_bytes: usize) {
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
    let line = decision_line(decision, &labels, max_field_bytes);
    match decision.verdict {
        Verdict::Allow => log::info!("{line}"),
        Verdict::Deny | Verdict::WouldDeny => log::warn!("{line}"),
    }
}
