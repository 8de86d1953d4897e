//! The filter's decision lines, as Envoy prints them:
//!
//! ```text
//! [2026-01-01 00:00:00.000][4242][warning][wasm] [source/...] wasm log loopback_guard loopback_guard: {"decision":"deny",...}
//! ```

use serde_json::Value;

const MARKER: &str = "{\"decision\":";

/// One decision line: Envoy's log level and the filter's JSON object.
#[derive(Clone, Debug)]
pub struct DecisionLine {
    /// Envoy's level for the line: `info`, `warning`, ...
    pub level: String,
    /// The id of the Envoy thread (worker) that wrote it.
    pub thread: String,
    pub json: Value,
    /// The JSON object as it appeared in the log.
    pub raw_json: String,
}

impl DecisionLine {
    /// Parses a log line, if it is a decision line.
    pub fn parse(line: &str) -> Option<Self> {
        let start = line.find(MARKER)?;
        let raw_json = line.get(start..)?.trim_end();
        let json: Value = serde_json::from_str(raw_json).ok()?;
        // "[time][thread][level][logger] ..." -> the third bracketed field.
        let level = line.split("][").nth(2).unwrap_or_default().to_owned();
        let thread = line.split("][").nth(1).unwrap_or_default().to_owned();
        Some(DecisionLine { level, thread, json, raw_json: raw_json.to_owned() })
    }

    /// A string field; `None` when absent or `null`.
    pub fn field(&self, name: &str) -> Option<&str> {
        self.json.get(name).and_then(Value::as_str)
    }

    pub fn decision(&self) -> &str {
        self.field("decision").unwrap_or_default()
    }

    pub fn reason(&self) -> &str {
        self.field("reason").unwrap_or_default()
    }

    pub fn peer_principal(&self) -> Option<&str> {
        self.field("peer_principal")
    }

    pub fn expected_principal(&self) -> Option<&str> {
        self.field("expected_principal")
    }

    pub fn path(&self) -> Option<&str> {
        self.field("path")
    }
}

const SUMMARY_MARKER: &str = "{\"decision_lines_held_back\":";

/// The summaries of decision lines the filter held back (`{"decision_lines_held_back":{..}}`)
/// in `log`, in order.
pub fn held_back_summaries(log: &str) -> Vec<Value> {
    log.lines()
        .filter_map(|line| serde_json::from_str(line.get(line.find(SUMMARY_MARKER)?..)?.trim_end()).ok())
        .collect()
}

/// Every decision line in `log`, in order.
pub fn decision_lines(log: &str) -> Vec<DecisionLine> {
    log.lines().filter_map(DecisionLine::parse).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_envoy_wasm_log_line() {
        let line = r#"[2026-11-23 01:42:36.082][9670][warning][wasm] [source/extensions/common/wasm/context.cc:1192] wasm log loopback_guard loopback_guard: {"decision":"deny","reason":"principal_mismatch","peer_principal":"spiffe://cluster.local/ns/demo/sa/db"}"#;
        let parsed = DecisionLine::parse(line).unwrap();
        assert_eq!(parsed.level, "warning");
        assert_eq!(parsed.decision(), "deny");
        assert_eq!(parsed.reason(), "principal_mismatch");
        assert_eq!(parsed.peer_principal(), Some("spiffe://cluster.local/ns/demo/sa/db"));
    }

    #[test]
    fn null_peer_principal_is_none_and_other_lines_are_skipped() {
        let log = "[t][1][info][main] starting\n\
                   [t][1][info][wasm] x: {\"decision\":\"allow\",\"reason\":\"exempt\",\"peer_principal\":null}\n";
        let lines = decision_lines(log);
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0].peer_principal(), None);
        assert_eq!(lines[0].level, "info");
    }
}
