//! Reading Envoy's log (or `kubectl logs` output) for the filter's decision lines.
//!
//! A decision line ends with the JSON object the filter logs, whatever comes before it:
//!
//! ```text
//! [2026-12-01 23:12:07.123][17][warning][wasm] [source/...] wasm log loopback_guard loopback_guard: {"decision":"deny",...}
//! 2026-12-01T23:12:07.123456789Z [2026-12-01 23:12:07.123][17][warning][wasm] ...   (kubectl logs --timestamps)
//! ```
//!
//! Nothing in the input is fatal: bytes that are not UTF-8 are replaced, and a line that
//! announces a decision but does not hold one is counted as unparsable.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, BufRead};

use serde::Serialize;
use serde_json::Value;

const MARKER: &str = "{\"decision\":";
/// Longer lines are counted, not parsed: no decision line comes near it.
const MAX_LINE: usize = 1 << 20;

/// One decision line: the filter's JSON object, and what the log's prefix says of it.
#[derive(Clone, Debug, PartialEq)]
pub struct DecisionLine {
    /// Envoy's level for the line (`info`, `warning`, ...), the third `[...]` of its prefix.
    pub level: String,
    /// The id of the Envoy thread (worker) that wrote it, the second `[...]`.
    pub thread: String,
    /// The line's time stamp, Envoy's or the one `kubectl logs --timestamps` puts first.
    pub time: Option<String>,
    pub json: Value,
    /// The JSON object as it appeared in the log.
    pub raw_json: String,
}

impl DecisionLine {
    /// The decision line in `line`: `None` when there is none, or when the text after the
    /// marker is not a JSON object with a `decision` and a `reason`.
    pub fn parse(line: &str) -> Option<Self> {
        let start = line.find(MARKER)?;
        let (prefix, rest) = line.split_at(start);
        let mut values = serde_json::Deserializer::from_str(rest).into_iter::<Value>();
        let json = values.next()?.ok()?;
        json.get("decision")?.as_str()?;
        json.get("reason")?.as_str()?;
        let raw_json = rest.get(..values.byte_offset())?.to_owned();
        let bracketed = |n: usize| prefix.split("][").nth(n).unwrap_or_default().to_owned();
        Some(Self { level: bracketed(2), thread: bracketed(1), time: log_time(prefix), json, raw_json })
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

/// When something was seen, and how often.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Seen {
    pub count: u64,
    /// The log's time stamp of the first and the last line, when the lines have one.
    pub first: Option<String>,
    pub last: Option<String>,
}

impl Seen {
    fn add(&mut self, time: Option<&str>) {
        self.count += 1;
        if let Some(time) = time {
            if self.first.as_deref().is_none_or(|first| sortable(time) < sortable(first)) {
                self.first = Some(time.to_owned());
            }
            if self.last.as_deref().is_none_or(|last| sortable(time) >= sortable(last)) {
                self.last = Some(time.to_owned());
            }
        }
    }
}

/// Envoy's `2026-12-01 23:12:07.123` and kubectl's `2026-12-01T23:12:07.123Z` in one order.
fn sortable(time: &str) -> String {
    time.replace('T', " ").trim_end_matches('Z').to_owned()
}

/// A peer principal that was denied (or would have been), and why.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Denied {
    #[serde(flatten)]
    pub seen: Seen,
    /// Reason -> count.
    pub reasons: BTreeMap<String, u64>,
}

/// Everything `explain-log` reports.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub lines: u64,
    pub decision_lines: u64,
    /// Lines that carry `{"decision":` but no decision object the CLI can read.
    pub unparsable_lines: u64,
    /// Lines whose bytes were not all UTF-8 (read with replacement characters).
    pub non_utf8_lines: u64,
    /// Lines over 1 MiB, skipped.
    pub overlong_lines: u64,
    /// NUL bytes (in lines read): a sign that the input is not a text log at all.
    pub nul_bytes: u64,
    /// All decision lines.
    pub all: Seen,
    /// `decision` -> `reason` -> when.
    pub by_reason: BTreeMap<String, BTreeMap<String, Seen>>,
    /// Peer principal (`null`: none, e.g. no certificate) of denied and would-be-denied requests.
    pub denied_principals: BTreeMap<Option<String>, Denied>,
    /// The expected principals the decisions name.
    pub expected_principals: BTreeSet<String>,
}

impl Summary {
    /// Reads `input` to its end.
    pub fn read(mut input: impl BufRead) -> io::Result<Self> {
        let mut summary = Self::default();
        let mut line = Vec::new();
        loop {
            line.clear();
            let read = read_line(&mut input, &mut line)?;
            if read == 0 {
                break;
            }
            summary.add_line(&line);
        }
        Ok(summary)
    }

    /// Reads a whole input held in memory.
    pub fn of_bytes(bytes: &[u8]) -> Self {
        let mut summary = Self::default();
        for line in bytes.split(|byte| *byte == b'\n') {
            summary.add_line(line);
        }
        if bytes.ends_with(b"\n") || bytes.is_empty() {
            // `split` yields an empty last piece after a final newline: not a line.
            summary.lines = summary.lines.saturating_sub(1);
        }
        summary
    }

    /// One line, with or without its `\n`.
    pub fn add_line(&mut self, raw: &[u8]) {
        self.lines += 1;
        if raw.len() > MAX_LINE {
            self.overlong_lines += 1;
            return;
        }
        self.nul_bytes += raw.iter().filter(|byte| **byte == 0).count() as u64;
        let text = String::from_utf8_lossy(raw);
        if matches!(text, std::borrow::Cow::Owned(_)) {
            self.non_utf8_lines += 1;
        }
        if !text.contains(MARKER) {
            return;
        }
        let Some(line) = DecisionLine::parse(&text) else {
            self.unparsable_lines += 1;
            return;
        };
        let (decision, reason, json) = (line.decision().to_owned(), line.reason().to_owned(), &line.json);
        let time = line.time.as_deref();
        self.decision_lines += 1;
        self.all.add(time);
        self.by_reason.entry(decision.clone()).or_default().entry(reason.clone()).or_default().add(time);
        if let Some(expected) = json.get("expected_principal").and_then(Value::as_str) {
            if self.expected_principals.len() < 100 {
                self.expected_principals.insert(expected.to_owned());
            }
        }
        if decision != "allow" {
            let peer = json.get("peer_principal").and_then(Value::as_str).map(str::to_owned);
            let denied = self.denied_principals.entry(peer).or_default();
            denied.seen.add(time);
            *denied.reasons.entry(reason).or_default() += 1;
        }
    }

    /// Denied peer principals, most often denied first.
    pub fn top_denied(&self, limit: usize) -> Vec<(Option<&str>, &Denied)> {
        let mut top: Vec<_> = self.denied_principals.iter().map(|(peer, d)| (peer.as_deref(), d)).collect();
        top.sort_by(|a, b| b.1.seen.count.cmp(&a.1.seen.count).then(a.0.cmp(&b.0)));
        top.truncate(limit);
        top
    }

    /// (decision, reason, when), most frequent first.
    pub fn reasons(&self) -> Vec<(&str, &str, &Seen)> {
        let mut all: Vec<_> = self
            .by_reason
            .iter()
            .flat_map(|(decision, reasons)| {
                reasons.iter().map(move |(reason, seen)| (decision.as_str(), reason.as_str(), seen))
            })
            .collect();
        all.sort_by(|a, b| b.2.count.cmp(&a.2.count).then((a.0, a.1).cmp(&(b.0, b.1))));
        all
    }

    /// Not a text log: NUL bytes, and nothing found in it.
    pub fn looks_binary(&self) -> bool {
        self.nul_bytes > 0 && self.decision_lines == 0
    }
}

/// Like `read_until(b'\n')`, but keeps at most [`MAX_LINE`] + 1 bytes of a line.
fn read_line(input: &mut impl BufRead, line: &mut Vec<u8>) -> io::Result<usize> {
    let mut total = 0;
    loop {
        let buffer = match input.fill_buf() {
            Ok(buffer) => buffer,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if buffer.is_empty() {
            return Ok(total);
        }
        let (chunk, done) = match buffer.iter().position(|byte| *byte == b'\n') {
            Some(newline) => (buffer.get(..newline).unwrap_or_default(), Some(newline + 1)),
            None => (buffer, None),
        };
        if line.len() <= MAX_LINE {
            line.extend_from_slice(
                chunk.get(..(MAX_LINE + 1 - line.len()).min(chunk.len())).unwrap_or_default(),
            );
        }
        let used = done.unwrap_or(buffer.len());
        total += used;
        input.consume(used);
        if done.is_some() {
            return Ok(total);
        }
    }
}

/// The time stamp of a log line: Envoy's `[2026-12-01 23:12:07.123]`, else the RFC 3339 stamp
/// `kubectl logs --timestamps` puts first.
fn log_time(prefix: &str) -> Option<String> {
    let mut search = prefix;
    while let Some(open) = search.find('[') {
        let rest = search.get(open + 1..)?;
        if let Some(close) = rest.find(']') {
            let inside = rest.get(..close)?;
            if is_time(inside, ' ') {
                return Some(inside.to_owned());
            }
        }
        search = rest;
    }
    let first = prefix.split_whitespace().next()?;
    is_time(first, 'T').then(|| first.to_owned())
}

/// `YYYY-MM-DD<sep>HH:MM:SS`, then anything (fractions, a zone).
fn is_time(text: &str, separator: char) -> bool {
    let pattern = format!("dddd-dd-dd{separator}dd:dd:dd");
    text.len() >= pattern.len()
        && text.chars().zip(pattern.chars()).all(|(c, p)| if p == 'd' { c.is_ascii_digit() } else { c == p })
}

#[cfg(test)]
mod tests {
    use super::*;

    const DENY: &str = r#"[2026-12-01 23:12:07.123][17][warning][wasm] [source/extensions/common/wasm/context.cc:1192] wasm log loopback_guard loopback_guard: {"decision":"deny","reason":"principal_mismatch","peer_principal":"spiffe://cluster.local/ns/demo/sa/db","expected_principal":"spiffe://cluster.local/ns/demo/sa/app","path":"/"}"#;

    #[test]
    fn reads_decisions_whatever_the_prefix() {
        let log = format!(
            "{DENY}\n\
             [2026-12-01 23:12:05.000][17][info][main] starting\n\
             2026-12-01T23:13:00.5Z [2026-12-01 23:13:00.500][17][info][wasm] x: {{\"decision\":\"allow\",\"reason\":\"ok\"}}\n\
             2026-12-01T23:14:00Z {{\"decision\":\"would_deny\",\"reason\":\"no_client_certificate\",\"peer_principal\":null}}\n\
             {{\"decision\":\"deny\",\"reason\":\"principal_mismatch\",\"peer_principal\":\"spiffe://cluster.local/ns/demo/sa/db\"}} trailing\n\
             [2026-12-01 23:11:00.000][17][warning][wasm] {{\"decision\":\"deny\",\"reason\":\"principal_mismatch\",\"peer_principal\":\"spiffe://cluster.local/ns/demo/sa/db\"}}\n\
             cut: {{\"decision\":\"deny\",\"reas\n\
             {{\"decision\":1,\"reason\":\"x\"}}\n\
             bytes "
        );
        let mut log = log.into_bytes();
        log.extend_from_slice(b"\xff\xfe {\"decision\":\"deny\",\"reason\":\"not_loopback\"}\n");
        let summary = Summary::of_bytes(&log);
        assert_eq!(summary.lines, 9);
        assert_eq!((summary.decision_lines, summary.unparsable_lines, summary.non_utf8_lines), (6, 2, 1));
        assert_eq!(summary.by_reason["deny"]["principal_mismatch"].count, 3);
        let db = &summary.denied_principals[&Some("spiffe://cluster.local/ns/demo/sa/db".to_owned())];
        assert_eq!(db.seen.count, 3);
        assert_eq!(db.seen.first.as_deref(), Some("2026-12-01 23:11:00.000"));
        assert_eq!(db.seen.last.as_deref(), Some("2026-12-01 23:12:07.123"));
        assert_eq!(summary.denied_principals[&None].reasons["no_client_certificate"], 1);
        assert_eq!(summary.all.first.as_deref(), Some("2026-12-01 23:11:00.000"));
        assert_eq!(summary.all.last.as_deref(), Some("2026-12-01T23:14:00Z"));
        assert_eq!(summary.by_reason["allow"]["ok"].first.as_deref(), Some("2026-12-01 23:13:00.500"));
        assert_eq!(summary.top_denied(1)[0].0, Some("spiffe://cluster.local/ns/demo/sa/db"));
        assert_eq!(summary.reasons()[0].1, "principal_mismatch");
        assert!(summary.expected_principals.contains("spiffe://cluster.local/ns/demo/sa/app"));
        assert!(!summary.looks_binary());
    }

    #[test]
    fn streaming_and_in_memory_agree() {
        let log = format!("{DENY}\n\nx\n{DENY}");
        let streamed = Summary::read(log.as_bytes()).unwrap();
        assert_eq!(streamed, Summary::of_bytes(log.as_bytes()));
        assert_eq!(streamed.lines, 4);
        assert_eq!(Summary::of_bytes(b"").lines, 0);
        assert_eq!(Summary::read(&b""[..]).unwrap().lines, 0);
        assert_eq!(Summary::of_bytes(b"a\n").lines, 1);
    }

    #[test]
    fn binary_input_is_counted_not_fatal() {
        let binary: Vec<u8> = (0..=255u8).cycle().take(10_000).collect();
        let summary = Summary::of_bytes(&binary);
        assert!(summary.looks_binary());
        assert_eq!(summary.decision_lines, 0);
        let mut long = vec![b'a'; MAX_LINE + 10];
        long.extend_from_slice(format!("\n{DENY}\n").as_bytes());
        let summary = Summary::read(long.as_slice()).unwrap();
        assert_eq!((summary.lines, summary.overlong_lines, summary.decision_lines), (2, 1, 1));
    }

    #[test]
    fn time_stamps() {
        assert_eq!(log_time("[2026-12-01 23:12:07.123][1][info]"), Some("2026-12-01 23:12:07.123".into()));
        assert_eq!(log_time("2026-12-01T23:12:07Z x"), Some("2026-12-01T23:12:07Z".into()));
        assert_eq!(log_time("[x][2026-12-01 23:12:07]"), Some("2026-12-01 23:12:07".into()));
        assert_eq!(log_time("[12][info] x"), None);
        assert_eq!(log_time("[2026-12-01 23:1"), None);
        assert_eq!(log_time(""), None);
    }
}
