//! The SPIFFE ID conformance table, `testdata/spiffe-ids.tsv`, run through both places an ID
//! enters the filter: the plugin configuration (`principal`, `allowed_principals`) and the URI
//! SAN of a peer certificate. The two must agree with the table, and so with each other: an ID
//! the operator can configure is exactly an ID a certificate can present.

use crate::config::Policy;
use crate::svid::{SvidError, SvidFacts};
use crate::test_case;
use crate::testing::CertBuilder;

const TABLE: &str = include_str!("../testdata/spiffe-ids.tsv");

struct Row {
    line: usize,
    id: String,
    valid: bool,
    why: String,
}

impl Row {
    fn name(&self) -> String {
        let shown: String = self.id.chars().take(80).collect();
        format!("line {} ({}): {shown:?}", self.line, self.why)
    }
}

fn rows() -> Vec<Row> {
    TABLE
        .lines()
        .enumerate()
        .filter(|(_, line)| !line.is_empty() && !line.starts_with('#'))
        .map(|(i, line)| {
            let line_no = i + 1;
            let columns: Vec<&str> = line.split('\t').collect();
            let [id, verdict, why, source] = columns[..] else {
                panic!("line {line_no}: expected 4 tab-separated columns, got {}", columns.len());
            };
            assert!(!why.is_empty() && !source.is_empty(), "line {line_no}: why and source are required");
            let valid = match verdict {
                "valid" => true,
                "invalid" => false,
                other => panic!("line {line_no}: verdict {other:?} is not valid or invalid"),
            };
            Row { line: line_no, id: unescape(id, line_no), valid, why: why.to_owned() }
        })
        .collect()
}

/// Decodes the id column's escapes (see the table's header).
fn unescape(raw: &str, line: usize) -> String {
    let mut out = String::new();
    let mut rest = raw;
    while let Some(at) = rest.find('\\') {
        out.push_str(&rest[..at]);
        let escape = &rest[at + 1..];
        let (decoded, used) = match escape.as_bytes().first() {
            Some(b'\\') => ("\\".to_owned(), 1),
            Some(b't') => ("\t".to_owned(), 1),
            Some(b'n') => ("\n".to_owned(), 1),
            Some(b'r') => ("\r".to_owned(), 1),
            Some(b'u') => {
                let body = escape.strip_prefix("u{").and_then(|s| s.split_once('}'));
                let (hex, _) = body.unwrap_or_else(|| panic!("line {line}: bad \\u escape"));
                let c = u32::from_str_radix(hex, 16).ok().and_then(char::from_u32);
                let c = c.unwrap_or_else(|| panic!("line {line}: bad \\u{{{hex}}}"));
                (c.to_string(), hex.len() + 3)
            }
            Some(b'{') => {
                let (body, _) =
                    escape[1..].split_once('}').unwrap_or_else(|| panic!("line {line}: bad \\{{"));
                let (text, count) =
                    body.rsplit_once('*').unwrap_or_else(|| panic!("line {line}: \\{{TEXT*N}} needs a '*'"));
                let count: usize =
                    count.parse().unwrap_or_else(|_| panic!("line {line}: bad count {count:?}"));
                (text.repeat(count), body.len() + 2)
            }
            other => panic!("line {line}: unknown escape {other:?}"),
        };
        out.push_str(&decoded);
        rest = &escape[used..];
    }
    out.push_str(rest);
    out
}

/// Every mismatch at once, so a failing run shows the whole picture rather than the first row.
fn assert_no_mismatches(check: &str, mismatches: Vec<String>) {
    assert!(mismatches.is_empty(), "{check}: {} rows disagree:\n{}", mismatches.len(), mismatches.join("\n"));
}

#[test_case]
fn table_is_well_formed() {
    let rows = rows();
    let valid = rows.iter().filter(|r| r.valid).count();
    assert!(rows.len() >= 60, "only {} rows", rows.len());
    assert!(valid >= 20 && rows.len() - valid >= 40, "{valid} valid of {}", rows.len());
    let mut seen = std::collections::HashSet::new();
    for row in &rows {
        assert!(seen.insert(row.id.as_str()), "duplicate row: {}", row.name());
    }
}

#[test_case]
fn escapes_decode() {
    assert_eq!(unescape(r"a\\b\tc\nd\re", 0), "a\\b\tc\nd\re");
    assert_eq!(unescape(r"x\u{E9}\u{1F92F}\u{0}", 0), "x\u{e9}\u{1f92f}\u{0}");
    assert_eq!(unescape(r"/\{ab*3}/\{a/*2}z", 0), "/ababab/a/a/z");
    assert_eq!(unescape("plain", 0), "plain");
}

#[test_case]
fn configured_principal() {
    let mut mismatches = Vec::new();
    for row in rows() {
        let json = serde_json::json!({ "principal": row.id }).to_string();
        match (row.valid, Policy::from_json(json.as_bytes(), None)) {
            (true, Ok(policy)) if policy.principal.as_ref().map(|p| p.as_str()) == Some(row.id.as_str()) => {}
            (false, Err(e)) if e.field == "principal" => {}
            (_, got) => mismatches.push(format!("{}: got {:?}", row.name(), got.map(|p| p.principal))),
        }
    }
    assert_no_mismatches("principal", mismatches);
}

#[test_case]
fn allowed_principal() {
    let mut mismatches = Vec::new();
    for row in rows() {
        // Second in the list, so the error must name the entry, not just the field.
        let json = serde_json::json!({ "allowed_principals": ["spiffe://td/first", row.id] }).to_string();
        let got = Policy::from_json(json.as_bytes(), None);
        let got =
            got.map(|p| p.allowed_principals.iter().map(|id| id.as_str().to_owned()).collect::<Vec<_>>());
        match (row.valid, got) {
            (true, Ok(ids)) if ids == ["spiffe://td/first", &row.id] => {}
            (false, Err(e)) if e.field == "allowed_principals[1]" && e.to_string().contains(&e.field) => {}
            (_, got) => mismatches.push(format!("{}: got {got:?}", row.name())),
        }
    }
    assert_no_mismatches("allowed_principals", mismatches);
}

#[test_case]
fn certificate_uri_san() {
    let mut mismatches = Vec::new();
    for row in rows() {
        // rcgen writes only ASCII into an IA5String; other IDs go in as raw bytes, as a forged
        // certificate would carry them. ASCII IDs are checked both ways.
        let mut builders = vec![("raw", CertBuilder::leaf().raw_uri(row.id.as_bytes()))];
        if row.id.is_ascii() {
            builders.push(("ia5", CertBuilder::leaf().uri(&row.id)));
        }
        for (how, builder) in builders {
            match (row.valid, SvidFacts::from_der(&builder.der())) {
                (true, Ok(facts)) if facts.spiffe_id.as_str() == row.id => {}
                (false, Err(SvidError::BadSpiffeId(_))) => {}
                (_, got) => mismatches.push(format!("{} [{how} SAN]: got {got:?}", row.name())),
            }
        }
    }
    assert_no_mismatches("certificate URI SAN", mismatches);
}

/// Bytes that are not UTF-8 cannot be a table row (the configuration is JSON text), but a
/// certificate can carry them: the URI SAN still counts as the one URI SAN and is refused.
#[test_case]
fn certificate_uri_san_not_utf8() {
    for bytes in [&b"spiffe://td/caf\xe9"[..], b"spiffe://td/\xff", b"\xc3("] {
        let got = SvidFacts::from_der(&CertBuilder::leaf().raw_uri(bytes).der());
        assert!(matches!(got, Err(SvidError::BadSpiffeId(_))), "{bytes:?}: {got:?}");
    }
}
