//! The step summary: the report's Markdown ([`aviary_core::report::summary`]) made from a copy
//! of the report whose every user string (canary, target, check names, messages, warnings,
//! link URLs) is safe in each place the summary puts it.
//!
//! What would break the Markdown, and what this does about it:
//! - a line break (CR, LF) ends a table row, a blockquote, or a Mermaid `title "…"` line (and a
//!   line of backticks would then close the chart's fence): each becomes its control picture
//!   (`␍`, `␊`), as do the other C0 controls, so two names stay two names;
//! - `|` ends a table cell: the summary escapes it (`\|`), and a backslash before it is doubled
//!   here so that the escape is not itself escaped;
//! - `"` ends a Mermaid string: the summary writes it as `'`;
//! - `<` could open or close HTML (`</details>`): it becomes `&lt;`;
//! - backticks cannot reach past a cell or a line once the above holds;
//! - a link URL is percent-encoded where Markdown would end it (spaces, parentheses, brackets).

use aviary_core::report::{summary, Report, TickReport};

/// The step summary of `report`, with `links` (label, URL) under its table.
pub fn markdown(report: &Report, links: &[(String, String)]) -> String {
    let links: Vec<(String, String)> = links
        .iter()
        .map(|(label, url)| (text(label), url_safe(url)))
        .collect();
    summary::markdown(&safe_report(report), &links)
}

/// `report` with every user string made safe for the summary.
fn safe_report(report: &Report) -> Report {
    let mut r = report.clone();
    for s in [&mut r.command, &mut r.target, &mut r.canary, &mut r.message]
        .into_iter()
        .flatten()
    {
        *s = text(s);
    }
    for s in r.failed_metrics.iter_mut().chain(r.warnings.iter_mut()) {
        *s = text(s);
    }
    for tick in &mut r.checks {
        safe_tick(tick);
    }
    r
}

fn safe_tick(t: &mut TickReport) {
    t.phase = text(&t.phase);
    t.message = text(&t.message);
    t.metrics = std::mem::take(&mut t.metrics)
        .into_iter()
        .map(|(k, v)| (text(&k), v))
        .collect();
    t.verdicts = std::mem::take(&mut t.verdicts)
        .into_iter()
        .map(|(k, v)| (text(&k), v))
        .collect();
    t.webhooks = std::mem::take(&mut t.webhooks)
        .into_iter()
        .map(|(k, v)| (text(&k), v))
        .collect();
    if let Some(last) = &mut t.last {
        safe_tick(last);
    }
}

/// A user string as one line of Markdown text (see the module's list).
pub fn text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut backslashes = 0usize;
    for c in s.chars() {
        match c {
            '\\' => {
                backslashes += 1;
                out.push(c);
                continue;
            }
            '|' => {
                // `\|` would reach the table as `\\|`: an escaped backslash, then a cell's end.
                out.extend(std::iter::repeat('\\').take(backslashes));
                out.push('|');
            }
            '<' => out.push_str("&lt;"),
            '\u{7f}' => out.push('\u{2421}'),
            c if (c as u32) < 0x20 && c != '\t' => {
                out.push(char::from_u32(0x2400 + c as u32).unwrap_or('\u{fffd}'))
            }
            c => out.push(c),
        }
        backslashes = 0;
    }
    out
}

/// A URL for `[label](url)`: what would end the link or the line, percent-encoded.
fn url_safe(url: &str) -> String {
    let mut out = String::with_capacity(url.len());
    for c in url.chars() {
        if c.is_whitespace()
            || c.is_control()
            || matches!(
                c,
                '(' | ')' | '<' | '>' | '[' | ']' | '|' | '`' | '"' | '\\'
            )
        {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("%{b:02X}"));
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use aviary_core::report::{Secs, Verdict};
    use std::collections::BTreeMap;

    const HOSTILE: &str = "p99\r\n```\n## injected | cell `code\" \\|x </details>";

    fn tick(at: f64, value: f64, message: &str) -> TickReport {
        TickReport {
            at_s: Secs(at),
            phase: "Progressing".into(),
            canary_weight: 10,
            iteration: 0,
            failed_checks: 0,
            metrics: BTreeMap::from([(HOSTILE.to_string(), Some(value))]),
            verdicts: BTreeMap::from([(HOSTILE.to_string(), false)]),
            webhooks: BTreeMap::from([(format!("hook {HOSTILE}"), false)]),
            message: message.into(),
            ticks: 1,
            last: None,
        }
    }

    /// Cells of a table row, split as GitHub splits them (`\` escapes the next character).
    fn cells(row: &str) -> usize {
        let mut n = 0usize;
        let mut chars = row.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => {
                    chars.next();
                }
                '|' => n += 1,
                _ => {}
            }
        }
        n.saturating_sub(1)
    }

    #[test]
    fn user_strings_cannot_break_the_summarys_tables_charts_or_quotes() {
        let mut report = Report::new(Verdict::RolledBack);
        report.canary = Some(format!("podinfo {HOSTILE}"));
        report.target = Some(HOSTILE.into());
        report.message = Some(format!("rolled back\r> {HOSTILE}"));
        report.warnings = vec![HOSTILE.into()];
        report.threshold = Some(2);
        report.checks = vec![tick(0.0, 1.0, HOSTILE), tick(10.0, 2.0, "")];
        let links = [(
            "environment".to_string(),
            "https://shop.example.com/a b)(\n## x".to_string(),
        )];
        let md = markdown(&report, &links);
        let lines: Vec<&str> = md.split(['\r', '\n']).collect();
        // Nothing the user wrote starts a line of its own: no injected heading, no stray fence.
        assert!(
            !lines
                .iter()
                .any(|l| l.starts_with("## injected") || l.starts_with("## x")),
            "{md}"
        );
        let fences = lines.iter().filter(|l| l.starts_with("```")).count();
        let charts = lines.iter().filter(|l| **l == "```mermaid").count();
        assert_eq!(fences, 2 * charts, "{md}");
        assert!(charts >= 2, "{md}");
        // Every row of a table has as many cells as its header.
        let mut header: Option<usize> = None;
        for line in &lines {
            if !line.starts_with('|') {
                header = None;
                continue;
            }
            match header {
                None => header = Some(cells(line)),
                Some(n) => assert_eq!(cells(line), n, "{line:?} in\n{md}"),
            }
        }
        // Mermaid strings hold no quote of their own.
        for line in lines
            .iter()
            .filter(|l| l.trim_start().starts_with("title "))
        {
            assert_eq!(line.matches('"').count(), 2, "{line}");
        }
        assert_eq!(
            md.matches("</details>").count(),
            md.matches("<details>").count()
        );
        assert!(
            md.contains("(https://shop.example.com/a%20b%29%28%0A##%20x)"),
            "{md}"
        );
    }

    #[test]
    fn text_keeps_names_apart_and_readable() {
        assert_eq!(text("a\nb"), "a\u{240a}b");
        assert_ne!(text("a\nb"), text("a b"));
        assert_eq!(text("x \\| y"), "x \\\\| y");
        assert_eq!(text("request-success-rate"), "request-success-rate");
    }
}
