//! The log reader of `loopback-guard explain-log`: any bytes as an Envoy or `kubectl logs`
//! log. Input: the log.
#![no_main]

use libfuzzer_sys::fuzz_target;
use loopback_guard_cli::explain::Summary;

fuzz_target!(|data: &[u8]| {
    let summary = Summary::of_bytes(data);
    // Streaming the same bytes gives the same summary.
    let streamed = Summary::read(data).expect("reading from memory cannot fail");
    assert_eq!(summary, streamed);
    // The counts add up.
    assert!(summary.decision_lines + summary.unparsable_lines + summary.overlong_lines <= summary.lines);
    let counted = |allowed: bool| -> u64 {
        summary
            .by_reason
            .iter()
            .filter(|(decision, _)| (*decision == "allow") == allowed)
            .flat_map(|(_, reasons)| reasons.values())
            .map(|seen| seen.count)
            .sum()
    };
    assert_eq!(counted(true) + counted(false), summary.decision_lines);
    let denied: u64 = summary.denied_principals.values().map(|denied| denied.seen.count).sum();
    assert_eq!(denied, counted(false), "every denial is under its peer principal");
    assert_eq!(summary.all.count, summary.decision_lines);
    assert_eq!(summary.all.first.is_some(), summary.all.last.is_some());
});
