//! The decision log line: one JSON object per decision, with stable field names.
//!
//! Certificates appear only by digest; the query string is cut from the path because it may
//! carry tokens. Every string field is cut to a configured length, with a visible marker, so a
//! client-chosen path or request id cannot make a line of any size.

use std::borrow::Cow;

use serde::Serialize;

use crate::decision::Decision;

/// Request facts the decision itself did not need, read by the glue only when logging.
#[derive(Debug, Clone, Default)]
pub struct RequestLabels<'a> {
    pub connection_id: Option<u64>,
    pub request_id: Option<&'a str>,
    pub method: Option<&'a str>,
    pub path: Option<&'a str>,
}

#[derive(Serialize)]
struct Line<'a> {
    decision: &'static str,
    reason: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<Cow<'a, str>>,
    peer_principal: Option<Cow<'a, str>>,
    expected_principal: Option<Cow<'a, str>>,
    source_address: Option<Cow<'a, str>>,
    connection_id: Option<u64>,
    request_id: Option<Cow<'a, str>>,
    method: Option<Cow<'a, str>>,
    path: Option<Cow<'a, str>>,
    cert_sha256: Option<Cow<'a, str>>,
    /// `"connection"` for a connection-scope decision; absent from a request's line, which is
    /// byte for byte what it was before connection scope existed.
    #[serde(skip_serializing_if = "Option::is_none")]
    scope: Option<&'static str>,
}

/// What a cut field ends with: `…[truncated: <length> bytes]`.
pub const TRUNCATION_MARKER: &str = "…[truncated: ";

/// `value`, cut to at most `max` bytes (at a character boundary) followed by the marker and
/// the original length when it is longer.
pub fn capped(value: &str, max: usize) -> Cow<'_, str> {
    if value.len() <= max {
        return Cow::Borrowed(value);
    }
    let mut end = max;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(format!("{}{TRUNCATION_MARKER}{} bytes]", value.get(..end).unwrap_or_default(), value.len()))
}

fn cap(value: Option<&str>, max: usize) -> Option<Cow<'_, str>> {
    value.map(|v| capped(v, max))
}

/// The log line of `decision` (starts with `{"decision":`); every string field at most
/// `max_field_bytes` long before JSON escaping, plus the truncation marker.
pub fn decision_line(decision: &Decision, labels: &RequestLabels<'_>, max_field_bytes: usize) -> String {
    scoped_decision_line(decision, labels, max_field_bytes, None)
}

/// [`decision_line`], ending with `"scope":<scope>` when `scope` is given.
pub fn scoped_decision_line(
    decision: &Decision,
    labels: &RequestLabels<'_>,
    max_field_bytes: usize,
    scope: Option<&'static str>,
) -> String {
    let cap = |value| cap(value, max_field_bytes);
    let line = Line {
        decision: decision.verdict.as_str(),
        reason: decision.reason.as_str(),
        detail: cap(decision.detail.as_deref()),
        peer_principal: cap(decision.peer_principal.as_ref().map(|p| p.spiffe_id.as_str())),
        expected_principal: cap(decision.expected_principal.as_ref().map(|p| p.as_str())),
        source_address: cap(decision.source_address.as_deref()),
        connection_id: labels.connection_id,
        request_id: cap(labels.request_id),
        method: cap(labels.method),
        path: cap(labels.path.map(|p| p.split_once('?').map_or(p, |(bare, _)| bare))),
        cert_sha256: cap(decision.cert_sha256.as_deref()),
        scope,
    };
    // Serializing plain strings and numbers cannot fail; the fallback keeps the line JSON.
    serde_json::to_string(&line).unwrap_or_else(|e| {
        format!(
            r#"{{"decision":"{}","reason":"{}","detail":"log encoding failed: {e}"}}"#,
            line.decision, line.reason
        )
    })
}

#[cfg(test)]
mod tests {
    use std::rc::Rc;

    use super::*;
    use crate::decision::{Reason, Verdict};
    use crate::identity::SpiffeId;
    use crate::svid::SvidFacts;
    use crate::test_case;

    #[test_case]
    fn one_json_object_with_stable_fields() {
        let peer = SvidFacts {
            spiffe_id: SpiffeId::parse("spiffe://td/ns/a/sa/rogue").unwrap(),
            not_before: 0,
            not_after: 1,
        };
        let decision = Decision {
            verdict: Verdict::Deny,
            reason: Reason::PrincipalMismatch,
            detail: None,
            peer_principal: Some(Rc::new(peer)),
            expected_principal: Some(Rc::new(SpiffeId::parse("spiffe://td/ns/a/sa/app").unwrap())),
            source_address: Some("127.0.0.1:5000".into()),
            cert_sha256: Some("ab".repeat(32).into()),
            connection_id: None,
        };
        let labels = RequestLabels {
            connection_id: Some(7),
            request_id: Some("r-1"),
            method: Some("GET"),
            path: Some("/orders?token=secret\"\n"),
        };
        let line = decision_line(&decision, &labels, 256);
        assert!(line.starts_with(r#"{"decision":"deny","reason":"principal_mismatch","#), "{line}");
        assert!(!line.contains('\n') && !line.contains("secret"), "{line}");
        let parsed: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(parsed["peer_principal"], "spiffe://td/ns/a/sa/rogue");
        assert_eq!(parsed["expected_principal"], "spiffe://td/ns/a/sa/app");
        assert_eq!(parsed["source_address"], "127.0.0.1:5000");
        assert_eq!(parsed["connection_id"], 7);
        assert_eq!(parsed["request_id"], "r-1");
        assert_eq!(parsed["method"], "GET");
        assert_eq!(parsed["path"], "/orders");
        assert_eq!(parsed["cert_sha256"], "ab".repeat(32));
        assert!(parsed.get("detail").is_none());
    }

    #[test_case]
    fn a_connection_line_ends_with_its_scope_and_a_request_line_has_none() {
        let decision = Decision::deny(Reason::NoClientCertificate, "x");
        let request = decision_line(&decision, &RequestLabels::default(), 256);
        let connection = scoped_decision_line(&decision, &RequestLabels::default(), 256, Some("connection"));
        assert!(!request.contains("scope"), "{request}");
        assert_eq!(connection, format!("{},\"scope\":\"connection\"}}", request.trim_end_matches('}')));
    }

    #[test_case]
    fn unknowns_are_null() {
        let decision = Decision {
            verdict: Verdict::WouldDeny,
            reason: Reason::NoClientCertificate,
            detail: Some("quote \" and newline \n".into()),
            peer_principal: None,
            expected_principal: None,
            source_address: None,
            cert_sha256: None,
            connection_id: None,
        };
        let line = decision_line(&decision, &RequestLabels::default(), 256);
        assert!(!line.contains('\n'));
        let parsed: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(parsed["decision"], "would_deny");
        assert_eq!(parsed["detail"], "quote \" and newline \n");
        for field in [
            "peer_principal",
            "expected_principal",
            "source_address",
            "connection_id",
            "request_id",
            "method",
            "path",
            "cert_sha256",
        ] {
            assert!(parsed[field].is_null(), "{field}");
        }
    }

    #[test_case]
    fn long_fields_are_cut_with_a_marker() {
        let decision = Decision {
            verdict: Verdict::Deny,
            reason: Reason::NoClientCertificate,
            detail: Some("d".repeat(20_000)),
            peer_principal: None,
            expected_principal: None,
            source_address: Some("127.0.0.1:1".into()),
            cert_sha256: None,
            connection_id: None,
        };
        let path = format!("/{}", "p".repeat(20_480));
        let id = "é".repeat(10_000);
        let labels = RequestLabels {
            connection_id: Some(1),
            request_id: Some(&id),
            method: Some("GET"),
            path: Some(&path),
        };
        let line = decision_line(&decision, &labels, 100);
        assert!(line.len() < 1000, "{} bytes", line.len());
        let parsed: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(parsed["path"], format!("/{}{TRUNCATION_MARKER}20481 bytes]", "p".repeat(99)));
        assert_eq!(parsed["request_id"], format!("{}{TRUNCATION_MARKER}20000 bytes]", "é".repeat(50)));
        assert!(parsed["detail"].as_str().unwrap().ends_with("[truncated: 20000 bytes]"));
        assert_eq!(parsed["source_address"], "127.0.0.1:1", "short fields stay as they are");
        assert_eq!(parsed["method"], "GET");
    }

    #[test_case]
    fn capped_cuts_at_a_character_boundary() {
        let cases = [
            ("abc", 3, "abc"),
            ("abcd", 3, "abc…[truncated: 4 bytes]"),
            ("éé", 3, "é…[truncated: 4 bytes]"),
            ("", 0, ""),
        ];
        for (value, max, want) in cases {
            assert_eq!(capped(value, max), want, "{value:?} {max}");
        }
    }
}
