//! The filter's decision lines, as Envoy prints them, read with the command's own parser:
//!
//! ```text
//! [2026-01-01 00:00:00.000][4242][warning][wasm] [source/...] wasm log loopback_guard loopback_guard: {"decision":"deny",...}
//! ```

use serde_json::Value;

/// The command's parser of decision lines (`loopback-guard explain-log` reads them with it).
pub use loopback_guard_cli::explain::DecisionLine;

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
