//! Step 1: exempt paths, and whether a request on one is a health probe.

use crate::authority::Authority;
use crate::config::Policy;
use crate::host::{Host, HostError};

use super::reason::Refusal;

pub(super) enum Exemption {
    NotExempt,
    /// An exempt path, and a health probe.
    Probe,
    /// An exempt path, but not a probe, for this reason: checked in full.
    NotAProbe(&'static str),
}

/// Step 1: whether the path is exempt, and if so whether the request is a probe.
pub(super) fn exemption(policy: &Policy, host: &impl Host) -> Result<Exemption, Refusal> {
    if policy.exempt_paths.is_empty() {
        return Ok(Exemption::NotExempt);
    }
    let Some(path) = host.request_header(":path")? else { return Ok(Exemption::NotExempt) };
    let bare = path.split_once('?').map_or(path.as_str(), |(bare, _)| bare);
    if !policy.exempt_paths.iter().any(|exempt| exempt == bare) {
        return Ok(Exemption::NotExempt);
    }
    Ok(match not_a_probe(host, &policy.exempt_authorities)? {
        None => Exemption::Probe,
        Some(why) => Exemption::NotAProbe(why),
    })
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
