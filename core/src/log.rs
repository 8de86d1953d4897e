//! The decision log line: one JSON object per decision, with stable field names.
//!
//! Certificates appear only by digest; the query string is cut from the path because it may
//! carry tokens.

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
    detail: Option<&'a str>,
    peer_principal: Option<&'a str>,
    expected_principal: Option<&'a str>,
    source_address: Option<&'a str>,
    connection_id: Option<u64>,
    request_id: Option<&'a str>,
    method: Option<&'a str>,
    path: Option<&'a str>,
    cert_sha256: Option<&'a str>,
}

/// The log line of `decision` (starts with `{"decision":`).
pub fn decision_line(decision: &Decision, labels: &RequestLabels<'_>) -> String {
    let line = Line {
        decision: decision.verdict.as_str(),
        reason: decision.reason.as_str(),
        detail: decision.detail.as_deref(),
        peer_principal: decision.peer_principal.as_ref().map(|p| p.spiffe_id.as_str()),
        expected_principal: decision.expected_principal.as_ref().map(|p| p.as_str()),
        source_address: decision.source_address.as_deref(),
        connection_id: labels.connection_id,
        request_id: labels.request_id,
        method: labels.method,
        path: labels.path.map(|p| p.split_once('?').map_or(p, |(bare, _)| bare)),
        cert_sha256: decision.cert_sha256.as_deref(),
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
            cert_sha256: Some("ab".repeat(32)),
        };
        let labels = RequestLabels {
            connection_id: Some(7),
            request_id: Some("r-1"),
            method: Some("GET"),
            path: Some("/orders?token=secret\"\n"),
        };
        let line = decision_line(&decision, &labels);
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
    fn unknowns_are_null() {
        let decision = Decision {
            verdict: Verdict::WouldDeny,
            reason: Reason::NoClientCertificate,
            detail: Some("quote \" and newline \n".into()),
            peer_principal: None,
            expected_principal: None,
            source_address: None,
            cert_sha256: None,
        };
        let line = decision_line(&decision, &RequestLabels::default());
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
}
