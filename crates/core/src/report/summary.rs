//! The report as GitHub-flavoured Markdown: the verdict, a table per check, and Mermaid
//! `xychart-beta` charts of the canary weight and each metric over time (GitHub renders Mermaid
//! in step summaries). A step summary may hold at most 1 MiB, so long runs are sampled and the
//! event list is cut to its end. A folded row (many alike ticks, see `report::Recorder`) counts
//! as all its ticks in the table and as its first and last tick in the charts.

use std::fmt::Write;

use super::{Report, Verdict};

/// Charts keep at most this many points: enough to see a rollout's shape, small enough to render.
const MAX_POINTS: usize = 60;
/// Events listed at the end of the summary (the last ones).
const MAX_EVENTS: usize = 30;
/// Metrics that get a chart of their own.
const MAX_METRIC_CHARTS: usize = 4;

/// The summary of `report`, `links` being extra `(label, url)` lines (the run, the environment).
pub fn markdown(report: &Report, links: &[(String, String)]) -> String {
    let mut md = String::new();
    let icon = if report.verdict.is_success() {
        "✅"
    } else if report.verdict == Verdict::NoVerdict || report.verdict == Verdict::Cancelled {
        "⚠️"
    } else {
        "❌"
    };
    let subject = report
        .canary
        .clone()
        .or_else(|| report.target.as_ref().map(|t| format!("target {t}")))
        .unwrap_or_else(|| "aviary".into());
    let _ = writeln!(
        md,
        "## {icon} {}: {}\n",
        cell(&subject),
        report.verdict.human()
    );
    if let Some(m) = &report.message {
        let _ = writeln!(md, "> {}\n", m.replace('\n', " "));
    }
    md.push_str("| | |\n|---|---|\n");
    row(
        &mut md,
        "verdict",
        &format!("**{}**", report.verdict.as_str()),
    );
    if let Some(c) = &report.command {
        row(&mut md, "command", &format!("`{}`", cell(c)));
    }
    if let Some(t) = &report.target {
        row(&mut md, "target", &cell(t));
    }
    if !report.weights.is_empty() {
        let path: Vec<String> = report.weights.iter().map(|w| format!("{w}%")).collect();
        row(&mut md, "canary weights", &path.join(" → "));
    }
    row(
        &mut md,
        "canary weight at the end",
        &format!("{}%", report.canary_weight),
    );
    if let Some(t) = report.threshold {
        row(
            &mut md,
            "failed checks",
            &format!("{}/{t}", report.failed_checks),
        );
    }
    if !report.checks.is_empty() {
        row(
            &mut md,
            "analysis time",
            &crate::spec::duration::format_human(std::time::Duration::from_secs_f64(
                report.duration_s.0.max(0.0),
            )),
        );
    }
    if let Some(code) = report.exit_code {
        row(&mut md, "exit code", &code.to_string());
    }
    for (label, url) in links {
        row(&mut md, &cell(label), &format!("[{}]({url})", cell(label)));
    }
    md.push('\n');

    canaries_table(&mut md, report);
    checks_table(&mut md, report);
    charts(&mut md, report);
    for w in &report.warnings {
        let _ = writeln!(md, "> [!WARNING]\n> {}\n", w.replace('\n', " "));
    }
    events(&mut md, report);
    md
}

/// A release of several canaries: one row per canary, and whose checks and charts follow.
fn canaries_table(md: &mut String, report: &Report) {
    if report.canaries.is_empty() {
        return;
    }
    let _ = writeln!(
        md,
        "### Canaries ({}, {})\n",
        report.canaries.len(),
        cell(report.policy.as_deref().unwrap_or("release"))
    );
    md.push_str("| canary | verdict | canary weights | failed checks | failing | why |\n|---|---|---|---:|---|---|\n");
    for m in &report.canaries {
        let weights: Vec<String> = m.weights.iter().map(|w| format!("{w}%")).collect();
        let failed = match m.threshold {
            Some(t) if !m.checks.is_empty() => format!("{}/{t}", m.failed_checks),
            _ => "–".into(),
        };
        let _ = writeln!(
            md,
            "| {} | {} | {} | {failed} | {} | {} |",
            cell(m.canary.as_deref().unwrap_or("-")),
            m.verdict.as_str(),
            if weights.is_empty() {
                "–".into()
            } else {
                weights.join(" → ")
            },
            cell(&m.failed_metrics.join(", ")),
            cell(m.message.as_deref().unwrap_or("")),
        );
    }
    md.push('\n');
    if let Some(c) = &report.decided_by {
        let _ = writeln!(
            md,
            "The checks, charts and events below are {}'s (the release took its verdict).\n",
            cell(c)
        );
    }
}

fn row(md: &mut String, key: &str, value: &str) {
    let _ = writeln!(md, "| {key} | {value} |");
}

/// A table cell: pipes would end the cell, newlines the row.
fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace(['\n', '\r'], " ")
}

fn checks_table(md: &mut String, report: &Report) {
    #[derive(Default)]
    struct Row {
        kind: &'static str,
        runs: usize,
        failed: usize,
        last: Option<Option<f64>>,
        last_passed: bool,
    }
    let mut rows: Vec<(String, Row)> = Vec::new();
    fn entry(rows: &mut Vec<(String, Row)>, name: &str, kind: &'static str) -> usize {
        match rows.iter().position(|(n, _)| n == name) {
            Some(i) => i,
            None => {
                rows.push((
                    name.to_string(),
                    Row {
                        kind,
                        ..Row::default()
                    },
                ));
                rows.len() - 1
            }
        }
    }
    for tick in &report.checks {
        // Every tick of a folded row had the same results; its values end with its last tick's.
        let n = usize::try_from(tick.ticks.max(1)).unwrap_or(usize::MAX);
        let last = tick.last.as_deref().unwrap_or(tick);
        for (name, passed) in &tick.verdicts {
            let i = entry(&mut rows, name, "metric");
            let r = &mut rows[i].1;
            r.runs = r.runs.saturating_add(n);
            r.failed = r.failed.saturating_add(if *passed { 0 } else { n });
            r.last = Some(last.metrics.get(name).copied().flatten());
            r.last_passed = *passed;
        }
        for (name, passed) in &tick.webhooks {
            let i = entry(&mut rows, name, "webhook");
            let r = &mut rows[i].1;
            r.runs = r.runs.saturating_add(n);
            r.failed = r.failed.saturating_add(if *passed { 0 } else { n });
            r.last_passed = *passed;
        }
    }
    if rows.is_empty() {
        return;
    }
    md.push_str("### Checks\n\n| check | kind | runs | failed | last value | last result |\n|---|---|---:|---:|---:|---|\n");
    for (name, r) in &rows {
        let value = match r.last {
            Some(Some(v)) => format!("{v:.2}"),
            Some(None) => "no values".into(),
            None => "–".into(),
        };
        let result = if r.last_passed {
            "✅ pass"
        } else {
            "❌ fail"
        };
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {value} | {result} |",
            cell(name),
            r.kind,
            r.runs,
            r.failed
        );
    }
    md.push('\n');
}

/// Evenly spaced indices of at most `MAX_POINTS` out of `n`, first and last included.
fn sample(n: usize) -> Vec<usize> {
    if n <= MAX_POINTS {
        return (0..n).collect();
    }
    let mut picked: Vec<usize> = (0..MAX_POINTS)
        .map(|i| i * (n - 1) / (MAX_POINTS - 1))
        .collect();
    picked.dedup();
    picked
}

fn seconds_label(s: f64) -> String {
    if s.fract() == 0.0 {
        format!("\"{}s\"", s as u64)
    } else {
        format!("\"{s:.1}s\"")
    }
}

fn number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v:.3}")
    }
}

fn chart(md: &mut String, title: &str, y_label: &str, points: &[(f64, f64)], y_range: (f64, f64)) {
    let picked = sample(points.len());
    let xs: Vec<String> = picked.iter().map(|&i| seconds_label(points[i].0)).collect();
    let ys: Vec<String> = picked.iter().map(|&i| number(points[i].1)).collect();
    let _ = writeln!(
        md,
        "```mermaid\nxychart-beta\n    title \"{}\"\n    x-axis [{}]\n    y-axis \"{}\" {} --> {}\n    line [{}]\n```\n",
        title.replace('"', "'"),
        xs.join(", "),
        y_label.replace('"', "'"),
        number(y_range.0),
        number(y_range.1),
        ys.join(", ")
    );
}

/// Each row's tick, and the last tick of a folded row after it.
fn points(report: &Report) -> impl Iterator<Item = &super::TickReport> {
    report
        .checks
        .iter()
        .flat_map(|t| std::iter::once(t).chain(t.last.as_deref()))
}

fn charts(md: &mut String, report: &Report) {
    if points(report).nth(1).is_none() {
        return;
    }
    md.push_str("### Canary weight and metrics over time\n\n");
    let weights: Vec<(f64, f64)> = points(report)
        .map(|t| (t.at_s.0, f64::from(t.canary_weight)))
        .collect();
    chart(md, "Canary weight", "weight (%)", &weights, (0.0, 100.0));
    for name in report.metric_names().into_iter().take(MAX_METRIC_CHARTS) {
        let points: Vec<(f64, f64)> = points(report)
            .filter_map(|t| {
                t.metrics
                    .get(&name)
                    .copied()
                    .flatten()
                    .filter(|v| v.is_finite())
                    .map(|v| (t.at_s.0, v))
            })
            .collect();
        if points.is_empty() {
            continue;
        }
        let lo = points.iter().map(|p| p.1).fold(f64::INFINITY, f64::min);
        let hi = points.iter().map(|p| p.1).fold(f64::NEG_INFINITY, f64::max);
        let pad = ((hi - lo) * 0.1).max(hi.abs() * 0.01).max(0.01);
        let range = ((lo - pad).max(0.0_f64.min(lo)), hi + pad);
        chart(md, &name, &name, &points, range);
    }
}

fn events(md: &mut String, report: &Report) {
    let mut events: Vec<(f64, String)> = Vec::new();
    for t in &report.checks {
        if !t.message.is_empty() {
            events.push((t.at_s.0, t.message.clone()));
        }
        if let Some(last) = &t.last {
            if t.ticks > 2 {
                events.push((
                    t.at_s.0,
                    format!("… {} more ticks like this one", t.ticks - 2),
                ));
            }
            if !last.message.is_empty() {
                events.push((last.at_s.0, last.message.clone()));
            }
        }
    }
    if events.is_empty() {
        return;
    }
    md.push_str("<details><summary>Events</summary>\n\n| t | event |\n|---:|---|\n");
    let skip = events.len().saturating_sub(MAX_EVENTS);
    if skip > 0 {
        let _ = writeln!(md, "| | … {skip} earlier events |");
    }
    for (at, message) in events.into_iter().skip(skip) {
        let _ = writeln!(md, "| {}s | {} |", number(at), cell(&message));
    }
    md.push_str("\n</details>\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Secs;
    use crate::report::TickReport;
    use std::collections::BTreeMap;

    fn tick(at: f64, weight: u32, sr: Option<f64>, passed: bool, message: &str) -> TickReport {
        let mut metrics = BTreeMap::new();
        let mut verdicts = BTreeMap::new();
        metrics.insert("request-success-rate".to_string(), sr);
        verdicts.insert("request-success-rate".to_string(), passed);
        TickReport {
            at_s: Secs(at),
            phase: "Progressing".into(),
            canary_weight: weight,
            iteration: 0,
            failed_checks: 0,
            metrics,
            verdicts,
            webhooks: BTreeMap::new(),
            message: message.into(),
            ticks: 1,
            last: None,
        }
    }

    fn report() -> Report {
        let mut r = Report::new(Verdict::RolledBack);
        r.canary = Some("podinfo.prod".into());
        r.threshold = Some(2);
        r.failed_checks = 2;
        r.message = Some("Halt advancement success rate 80.00% < 99%".into());
        r.checks = vec![
            tick(0.0, 10, Some(99.5), true, ""),
            tick(10.0, 10, Some(80.0), false, "Halt | advancement"),
            tick(
                20.0,
                0,
                None,
                false,
                "Canary failed! Scaling down podinfo.prod",
            ),
        ];
        r
    }

    #[test]
    fn the_summary_names_the_verdict_the_failing_check_and_charts_the_run() {
        let md = markdown(
            &report(),
            &[("run".into(), "https://example.test/run/1".into())],
        );
        assert!(md.starts_with("## ❌ podinfo.prod: rolled back"), "{md}");
        assert!(md.contains("| failed checks | 2/2 |"), "{md}");
        assert!(
            md.contains("| request-success-rate | metric | 3 | 2 | no values | ❌ fail |"),
            "{md}"
        );
        assert!(md.contains("x-axis [\"0s\", \"10s\", \"20s\"]"), "{md}");
        assert!(md.contains("line [10, 10, 0]"), "{md}");
        // The metric chart has only the ticks with values.
        assert!(md.contains("line [99.500, 80]"), "{md}");
        assert!(
            md.contains("Halt \\| advancement"),
            "pipes are escaped: {md}"
        );
        assert!(md.contains("[run](https://example.test/run/1)"), "{md}");
    }

    #[test]
    fn a_release_lists_every_canary_and_says_whose_charts_follow() {
        let bad = {
            let mut r = report();
            r.canary = Some("api.prod".into());
            r.exit(crate::exit::Exit::RolledBack)
        };
        let mut other = Report::new(Verdict::RolledBack);
        other.canary = Some("web|x.prod".into());
        other.message = Some("aborted: rolled back with the release: api.prod failed".into());
        let mut same = Report::new(Verdict::UpToDate);
        same.canary = Some("db.prod".into());
        let release = Report::release("all-or-nothing", vec![same, bad, other]);
        let md = markdown(&release, &[]);
        assert!(md.contains("### Canaries (3, all-or-nothing)"), "{md}");
        assert!(
            md.contains("| api.prod | rolled_back | – | 2/2 |  | Halt advancement success rate"),
            "{md}"
        );
        assert!(md.contains("| db.prod | up_to_date | – | – |  |"), "{md}");
        assert!(
            md.contains("| web\\|x.prod | rolled_back |"),
            "pipes are escaped: {md}"
        );
        assert!(md.contains("below are api.prod's"), "{md}");
        // The deciding canary's checks follow.
        assert!(
            md.contains("| request-success-rate | metric | 3 | 2 |"),
            "{md}"
        );
        assert!(!markdown(&report(), &[]).contains("### Canaries"));
    }

    #[test]
    fn long_runs_are_sampled_to_a_chart_github_can_render() {
        let mut r = report();
        r.checks = (0..500)
            .map(|i| tick(f64::from(i), i % 100, Some(99.0), true, "x"))
            .collect();
        let md = markdown(&r, &[]);
        let line = md.lines().find(|l| l.contains("x-axis")).unwrap_or("");
        assert_eq!(line.matches(',').count() + 1, MAX_POINTS, "{line}");
        assert!(
            line.contains("\"0s\"") && line.contains("\"499s\""),
            "{line}"
        );
        assert!(md.contains("… 470 earlier events"), "{md}");
        assert!(md.len() < 64 * 1024);
    }

    #[test]
    fn a_folded_row_counts_all_its_ticks_and_charts_its_last() {
        let mut r = report();
        let mut fold = tick(
            10.0,
            100,
            Some(99.9),
            true,
            "Advance podinfo.prod canary iteration 2/5000",
        );
        fold.ticks = 4_998;
        fold.last = Some(Box::new(tick(
            49_990.0,
            100,
            Some(99.9),
            true,
            "Advance podinfo.prod canary iteration 4999/5000",
        )));
        r.checks = vec![tick(0.0, 0, Some(99.0), true, ""), fold];
        let md = markdown(&r, &[]);
        assert!(
            md.contains("| request-success-rate | metric | 4999 | 0 | 99.90 | ✅ pass |"),
            "{md}"
        );
        assert!(md.contains("x-axis [\"0s\", \"10s\", \"49990s\"]"), "{md}");
        assert!(
            md.contains("| 10s | … 4996 more ticks like this one |"),
            "{md}"
        );
        assert!(
            md.contains("| 49990s | Advance podinfo.prod canary iteration 4999/5000 |"),
            "{md}"
        );
    }
}
