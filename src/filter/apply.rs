//! Applies the core's answers: what happens at configure time, per request and on the timer.

use std::cell::RefCell;

use loopback_guard_core::config::OnDeny;
use loopback_guard_core::config::TRUST_DOMAIN_ENV;
use loopback_guard_core::decision::{Decision, Reason};
use loopback_guard_core::engine::{Counter, Engine, Level, Notice, Outcome};
use loopback_guard_core::host::Host;

use super::Writes;

/// What every HTTP context of one configuration shares (one VM is one thread: no locks).
pub struct Shared {
    pub engine: RefCell<Engine>,
}

/// The ids of the proxy's counters (a list: a couple of dozen, the most frequent first).
#[derive(Clone, Default)]
pub struct Counters(Vec<(Counter, u32)>);

impl Counters {
    /// Defines every counter up front, so all of them show in stats from the start.
    pub fn define(writes: &impl Writes) -> Self {
        let mut ids = Vec::new();
        for counter in Counter::all() {
            let name = counter.name();
            match writes.define_counter(&name) {
                Ok(id) => ids.push((counter, id)),
                Err(e) => writes.log(&Notice::new(
                    Level::Error,
                    format!("loopback-guard: cannot define counter {name}: {e}"),
                )),
            }
        }
        Self(ids)
    }
}

/// The engine for a plugin configuration, or `None` (after logging why) to refuse it.
pub fn configure(config: &[u8], host: &impl Host, writes: &impl Writes) -> Option<Engine> {
    let env_trust_domain = std::env::var(TRUST_DOMAIN_ENV).ok();
    match Engine::configure(config, env_trust_domain.as_deref(), host) {
        Ok((engine, notices)) => {
            notices.iter().for_each(|notice| writes.log(notice));
            Some(engine)
        }
        Err(notice) => {
            writes.log(&notice);
            None
        }
    }
}

/// Decides on the request headers and applies the outcome; true if the request goes on.
pub fn on_request(
    shared: Option<&Shared>,
    counters: &Counters,
    host: &impl Host,
    writes: &impl Writes,
) -> bool {
    let outcome = match shared.map(|shared| shared.engine.try_borrow_mut()) {
        None => Outcome::refused(Reason::Unconfigured, "the filter has no valid configuration", host),
        Some(Ok(mut engine)) => engine.handle(host),
        Some(Err(_)) => Outcome::refused(Reason::EngineBusy, "decision engine busy", host),
    };
    apply(&outcome, counters, writes)
}

/// What a connection-scope context keeps between reads.
pub enum Connection {
    /// No byte seen yet: the certificate is not read before the first one (docs/architecture.md).
    Undecided,
    /// Decided, and going on: the decision, to check its certificate's validity at each read.
    Open(Box<Decision>),
    /// Denied: closed (or closing); no byte goes on.
    Closed,
}

/// Connection scope, at each read of the downstream: decides at the first, rechecks the clock
/// at the later ones; true if the bytes go on. A denied connection is closed, unless the
/// configuration leaves its 403s to RBAC (`on_deny: rbac`, which the filter state tells).
pub fn on_connection_data(
    state: &mut Connection,
    shared: Option<&Shared>,
    counters: &Counters,
    host: &impl Host,
    writes: &impl Writes,
) -> bool {
    let engine = shared.map(|shared| shared.engine.try_borrow_mut());
    let (outcome, on_deny) = match (&*state, engine) {
        (Connection::Closed, _) => return false,
        (Connection::Undecided, None) => {
            let why = "the filter has no valid configuration";
            (Outcome::refused(Reason::Unconfigured, why, host), OnDeny::Close)
        }
        (Connection::Undecided | Connection::Open(_), Some(Err(_))) => {
            (Outcome::refused(Reason::EngineBusy, "decision engine busy", host), OnDeny::Close)
        }
        (Connection::Undecided, Some(Ok(mut engine))) => (engine.handle(host), engine.policy().on_deny),
        (Connection::Open(decided), Some(Ok(mut engine))) => match engine.recheck(decided, host) {
            None => return true,
            // Its certificate expired while it was open: closed, whatever on_deny says.
            Some(outcome) => (outcome, OnDeny::Close),
        },
        (Connection::Open(_), None) => return true,
    };
    let mut outcome = outcome;
    // A connection has no HTTP reply: it is closed, or RBAC answers its requests.
    outcome.reply = None;
    let proceeds = apply(&outcome, counters, writes);
    if proceeds || on_deny == OnDeny::Rbac {
        *state = Connection::Open(Box::new(outcome.decision));
        return true;
    }
    *state = Connection::Closed;
    if let Err(e) = writes.close() {
        writes.log(&Notice::new(Level::Error, format!("loopback-guard: cannot close the connection: {e}")));
    }
    false
}

/// Writes the summary of held-back decision lines, if one is due.
pub fn on_tick(shared: &Shared, now_ms: u64, writes: &impl Writes) {
    let summary = shared.engine.try_borrow_mut().ok().and_then(|mut engine| engine.held_back_summary(now_ms));
    if let Some(line) = summary {
        writes.log(&line);
    }
}

fn apply(outcome: &Outcome, counters: &Counters, writes: &impl Writes) -> bool {
    outcome.notices.iter().for_each(|notice| writes.log(notice));
    for counter in outcome.counters() {
        if let Some((_, id)) = counters.0.iter().find(|(known, _)| *known == counter) {
            // A failed increment loses one count; it must not fail the request.
            let _ = writes.increment(*id);
        }
    }
    if let Some(line) = &outcome.log {
        writes.log(line);
    }
    for (key, value) in outcome.filter_state.into_iter().flatten() {
        // Without it the access log lacks two fields; the decision stands.
        let _ = writes.set_filter_state(key, value);
    }
    if let Some(reply) = &outcome.reply {
        if let Err(e) = writes.send_reply(reply) {
            writes.log(&Notice::new(Level::Error, format!("loopback-guard: cannot send the 403 reply: {e}")));
        }
    }
    outcome.proceeds()
}
