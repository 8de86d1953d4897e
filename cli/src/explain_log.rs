//! `explain-log`: the summary of a log's decision lines.

use crate::explain::{Seen, Summary};
use crate::{emit, open_input, ExplainArgs, Failure, Io, EXIT_OK};

pub(crate) fn run(args: &ExplainArgs, json: bool, io: &mut Io<'_>) -> Result<u8, Failure> {
    let name = match args.file.as_deref() {
        None => "standard input".to_owned(),
        Some(path) if path.as_os_str() == "-" => "standard input".to_owned(),
        Some(path) => path.display().to_string(),
    };
    let input = open_input(args.file.as_deref(), io)?;
    let summary = Summary::read(input).map_err(|e| Failure::usage(format!("cannot read {name}: {e}")))?;
    if summary.looks_binary() {
        return Err(Failure::usage(format!(
            "{name} is not a text log ({} NUL bytes in {} lines) and holds no loopback-guard decision line",
            summary.nul_bytes, summary.lines
        )));
    }
    let text = if json { json_text(&summary, args.top) } else { text(&summary, args.top, &name, io) };
    emit(io, &text)?;
    Ok(EXIT_OK)
}

fn json_text(summary: &Summary, top: usize) -> String {
    let reasons: Vec<_> = summary
        .reasons()
        .into_iter()
        .map(|(decision, reason, seen)| {
            serde_json::json!({
                "decision": decision, "reason": reason,
                "count": seen.count, "first": seen.first, "last": seen.last,
            })
        })
        .collect();
    let denied: Vec<_> = summary
        .top_denied(top)
        .into_iter()
        .map(|(peer, denied)| {
            serde_json::json!({
                "peer_principal": peer, "count": denied.seen.count,
                "first": denied.seen.first, "last": denied.seen.last, "reasons": denied.reasons,
            })
        })
        .collect();
    let document = serde_json::json!({
        "lines": summary.lines,
        "decision_lines": summary.decision_lines,
        "unparsable_lines": summary.unparsable_lines,
        "non_utf8_lines": summary.non_utf8_lines,
        "overlong_lines": summary.overlong_lines,
        "first": summary.all.first,
        "last": summary.all.last,
        "by_reason": reasons,
        "denied_principals": denied,
        "expected_principals": summary.expected_principals,
    });
    format!("{document:#}\n")
}

fn when(seen: &Seen) -> (String, String) {
    let show = |time: &Option<String>| time.clone().unwrap_or_else(|| "-".into());
    (show(&seen.first), show(&seen.last))
}

fn text(summary: &Summary, top: usize, name: &str, io: &Io<'_>) -> String {
    let style = io.style;
    let mut out = format!(
        "{name}: {} lines, {} decision lines, {} unparsable",
        summary.lines, summary.decision_lines, summary.unparsable_lines
    );
    if summary.non_utf8_lines > 0 {
        out.push_str(&format!(", {} not UTF-8 (read with replacement characters)", summary.non_utf8_lines));
    }
    if summary.overlong_lines > 0 {
        out.push_str(&format!(", {} over 1 MiB (skipped)", summary.overlong_lines));
    }
    out.push('\n');
    if summary.decision_lines == 0 {
        out.push_str(
            "No loopback-guard decision lines. Denials are logged at warning, allowed requests at \
             info: is this Envoy's (istio-proxy's) log, and is it at least at warning?\n",
        );
        return out;
    }
    let (first, last) = when(&summary.all);
    out.push_str(&format!("First decision {first}, last {last}\n"));
    if !summary.expected_principals.is_empty() {
        let expected: Vec<&str> = summary.expected_principals.iter().map(String::as_str).collect();
        out.push_str(&format!("Expected principal: {}\n", expected.join(", ")));
    }

    out.push_str(&format!("\n{}\n", style.bold("Decisions by reason")));
    let rows: Vec<[String; 5]> = summary
        .reasons()
        .into_iter()
        .map(|(decision, reason, seen)| {
            let (first, last) = when(seen);
            [seen.count.to_string(), decision.to_owned(), reason.to_owned(), first, last]
        })
        .collect();
    table(
        &mut out,
        ["count", "decision", "reason", "first seen", "last seen"],
        &rows,
        |column, cell| match (column, cell) {
            (1, "allow") => style.good(cell),
            (1, "deny") => style.bad(cell),
            (1, "would_deny") => style.warn(cell),
            _ => cell.to_owned(),
        },
    );

    let denied = summary.top_denied(top);
    if denied.is_empty() {
        out.push_str("\nNothing denied.\n");
        return out;
    }
    out.push_str(&format!("\n{}\n", style.bold("Peer principals denied most")));
    let rows: Vec<[String; 5]> = denied
        .into_iter()
        .map(|(peer, denied)| {
            let (first, last) = when(&denied.seen);
            let mut reasons: Vec<(&String, &u64)> = denied.reasons.iter().collect();
            reasons.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
            let reasons: Vec<String> = reasons.iter().map(|(reason, n)| format!("{reason} ({n})")).collect();
            [
                denied.seen.count.to_string(),
                peer.unwrap_or("(none: no certificate or no valid SVID)").to_owned(),
                reasons.join(", "),
                first,
                last,
            ]
        })
        .collect();
    table(&mut out, ["count", "peer principal", "reasons", "first seen", "last seen"], &rows, |_, cell| {
        cell.to_owned()
    });
    out
}

/// Left-aligned columns (the count right-aligned), two spaces apart.
fn table<const N: usize>(
    out: &mut String,
    header: [&str; N],
    rows: &[[String; N]],
    paint: impl Fn(usize, &str) -> String,
) {
    let mut widths = header.map(|title| title.chars().count());
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let header = header.map(str::to_owned);
    for (index, row) in std::iter::once(&header).chain(rows).enumerate() {
        let cells: Vec<String> = row
            .iter()
            .zip(widths)
            .enumerate()
            .map(|(column, (cell, width))| {
                let padding = " ".repeat(width.saturating_sub(cell.chars().count()));
                let shown = if index == 0 { cell.clone() } else { paint(column, cell) };
                if column == 0 {
                    format!("{padding}{shown}")
                } else {
                    format!("{shown}{padding}")
                }
            })
            .collect();
        out.push_str(&format!("  {}\n", cells.join("  ").trim_end()));
    }
}
