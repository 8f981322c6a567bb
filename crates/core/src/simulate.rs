//! `aviary simulate`: the engine on a simulated clock, answering its questions from a timeline.
//!
//! ```yaml
//! metrics:            # the i-th value answers the i-th query of that metric; the last repeats
//!   request-success-rate: [99.9, 99.5, 70]   # null means "no values found"; .nan is NaN
//! webhooks:           # per webhook name: pass/fail per call, the last repeats; default pass
//!   confirm-promotion: [fail, fail, pass]
//! ```

use std::collections::BTreeMap;
use std::io::Write;

use crate::engine::sim::{self, Run};
use crate::engine::{
    Answer, Config, Engine, EngineError, HookOutcome, MetricOutcome, Readiness, Request, State,
};
use crate::spec::duration::format_human;
use crate::spec::yaml::{self, Node, Value};
use crate::spec::{Diagnostic, SpecError};

/// A scripted sequence of answers.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Timeline {
    /// `None` is "no values found".
    pub metrics: BTreeMap<String, Vec<Option<f64>>>,
    /// `true` is a pass (2xx).
    pub webhooks: BTreeMap<String, Vec<bool>>,
}

impl Timeline {
    /// Reads a timeline from `text` (of `file`) and checks it against the Canary it will drive.
    pub fn parse(file: &str, text: &str, config: &Config) -> Result<Timeline, SpecError> {
        let text = crate::spec::input::strip_bom(text);
        let invalid = |errors: Vec<Diagnostic>| SpecError::Invalid {
            errors,
            warnings: Vec::new(),
        };
        let docs = yaml::parse_documents(file, text).map_err(invalid)?;
        let mut errors = Vec::new();
        let mut timeline = Timeline::default();
        let root = match docs.as_slice() {
            [root] => root,
            [] => {
                return Err(invalid(vec![Diagnostic::error(
                    file,
                    0,
                    "",
                    "the timeline is empty",
                )
                .with_help(
                    "add `metrics:` with one list of values per metric of the Canary",
                )]))
            }
            [_, second, ..] => {
                return Err(invalid(vec![Diagnostic::error(
                    file,
                    second.line,
                    "",
                    "a timeline is one YAML document, this file has several",
                )]))
            }
        };
        let Value::Map(entries) = &root.value else {
            return Err(invalid(vec![Diagnostic::error(
                file,
                root.line,
                "",
                format!(
                    "expected a mapping with `metrics` and `webhooks`, got {}",
                    root.describe()
                ),
            )]));
        };
        for (key, value) in entries {
            match key.as_str() {
                Some("metrics") => {
                    timeline.metrics =
                        read_series(file, "metrics", value, &mut errors, |n| match &n.value {
                            Value::Null => Ok(None),
                            Value::Int(i) => Ok(Some(*i as f64)),
                            Value::Float(f) => Ok(Some(*f)),
                            _ => Err("expected a number, null (no values) or .nan"),
                        });
                }
                Some("webhooks") => {
                    timeline.webhooks =
                        read_series(file, "webhooks", value, &mut errors, |n| match &n.value {
                            Value::Bool(b) => Ok(*b),
                            Value::Str(s) if s == "pass" => Ok(true),
                            Value::Str(s) if s == "fail" => Ok(false),
                            _ => Err("expected pass or fail"),
                        });
                }
                _ => errors.push(
                    Diagnostic::error(file, key.line, &key.describe(), "unknown timeline section")
                        .with_help("a timeline has `metrics:` and `webhooks:`"),
                ),
            }
        }
        // Every value must belong to the Canary, and every metric of the Canary needs values.
        let metric_names: Vec<&str> = config.metrics.iter().map(|m| m.name.as_str()).collect();
        let hook_names: Vec<&str> = config.webhooks.iter().map(|h| h.name.as_str()).collect();
        let line_of = |section: &str, name: &str| -> usize {
            root.get(section)
                .and_then(|s| s.entry(name))
                .map_or(root.line, |(k, _)| k.line)
        };
        for name in timeline.metrics.keys() {
            if !metric_names.contains(&name.as_str()) {
                errors.push(
                    Diagnostic::error(
                        file,
                        line_of("metrics", name),
                        &format!("metrics.{name}"),
                        format!("the Canary {} has no metric {name:?}", config.qualified()),
                    )
                    .with_help(format!("its metrics are: {}", list(&metric_names))),
                );
            }
        }
        for name in &metric_names {
            if !timeline.metrics.contains_key(*name) {
                errors.push(
                    Diagnostic::error(
                        file,
                        root.get("metrics").map_or(root.line, |n| n.line),
                        "metrics",
                        format!("no values for the Canary's metric {name:?}"),
                    )
                    .with_help(format!(
                        "add `{name}: [value, ...]` (null for \"no values found\")"
                    )),
                );
            }
        }
        for name in timeline.webhooks.keys() {
            if !hook_names.contains(&name.as_str()) {
                errors.push(
                    Diagnostic::error(
                        file,
                        line_of("webhooks", name),
                        &format!("webhooks.{name}"),
                        format!("the Canary {} has no webhook {name:?}", config.qualified()),
                    )
                    .with_help(format!("its webhooks are: {}", list(&hook_names))),
                );
            }
        }
        if errors.is_empty() {
            Ok(timeline)
        } else {
            Err(invalid(errors))
        }
    }
}

fn list(names: &[&str]) -> String {
    if names.is_empty() {
        "(none)".to_string()
    } else {
        names.join(", ")
    }
}

/// Reads `name: [v, v, ...]` pairs of one section.
fn read_series<T>(
    file: &str,
    section: &str,
    node: &Node,
    errors: &mut Vec<Diagnostic>,
    item: impl Fn(&Node) -> Result<T, &'static str>,
) -> BTreeMap<String, Vec<T>> {
    let mut out = BTreeMap::new();
    let entries = match &node.value {
        Value::Map(entries) => entries,
        Value::Null => return out,
        _ => {
            errors.push(Diagnostic::error(
                file,
                node.line,
                section,
                format!(
                    "expected a mapping of name to list, got {}",
                    node.describe()
                ),
            ));
            return out;
        }
    };
    for (key, value) in entries {
        let Some(name) = key.as_str() else {
            errors.push(Diagnostic::error(
                file,
                key.line,
                section,
                format!("expected a name, got {}", key.describe()),
            ));
            continue;
        };
        let path = format!("{section}.{name}");
        // A single value is a list of one.
        let items: Vec<&Node> = match &value.value {
            Value::Seq(items) => items.iter().collect(),
            _ => vec![value],
        };
        if items.is_empty() {
            errors.push(
                Diagnostic::error(file, value.line, &path, "the list is empty")
                    .with_help("give at least one value; the last one repeats"),
            );
            continue;
        }
        let mut values = Vec::with_capacity(items.len());
        for (i, n) in items.iter().enumerate() {
            match item(n) {
                Ok(v) => values.push(v),
                Err(expected) => errors.push(Diagnostic::error(
                    file,
                    n.line,
                    &format!("{path}[{i}]"),
                    format!("{expected}, got {}", n.describe()),
                )),
            }
        }
        out.insert(name.to_string(), values);
    }
    out
}

/// Answers requests from a timeline, counting calls per name.
struct Scripted<'a> {
    timeline: &'a Timeline,
    calls: BTreeMap<String, usize>,
}

impl Scripted<'_> {
    fn next<T: Clone>(&mut self, key: String, series: Option<&Vec<T>>) -> Option<T> {
        let n = self.calls.entry(key).or_insert(0);
        let value = series.and_then(|s| s.get(*n).or(s.last())).cloned();
        *n += 1;
        value
    }
}

impl sim::Oracle for Scripted<'_> {
    fn answer(&mut self, request: &Request, _now: u64) -> Answer {
        match request {
            Request::Readiness { .. } => Answer::Readiness(Readiness::Ready),
            Request::Webhook { name, .. } => {
                let pass = self
                    .next(format!("webhook/{name}"), self.timeline.webhooks.get(name))
                    .unwrap_or(true);
                Answer::Webhook(if pass {
                    HookOutcome::Pass
                } else {
                    HookOutcome::Fail("the timeline says fail".into())
                })
            }
            Request::Metric { name, .. } => {
                match self.next(format!("metric/{name}"), self.timeline.metrics.get(name)) {
                    Some(Some(v)) => Answer::Metric(MetricOutcome::Value(v)),
                    _ => Answer::Metric(MetricOutcome::NoValues("no values found".into())),
                }
            }
        }
    }
}

pub use crate::report::{Report, TickReport, Verdict};

/// The most ticks `--max-ticks` may ask for: ten times the longest analysis `validate` accepts
/// (a million iterations), and about a minute of simulation.
pub const MAX_TICKS: usize = 10_000_000;

/// The report of a finished simulation (`simulate --json`).
pub fn report(run: &Run) -> Report {
    let mut recorder = crate::report::Recorder::new();
    for tick in &run.ticks {
        recorder.push(tick);
    }
    let mut report = recorder.report(verdict_of(run.verdict));
    report.failed_checks = run.state.failed_checks;
    report
}

pub fn verdict_of(phase: Option<crate::engine::Phase>) -> Verdict {
    match phase {
        Some(crate::engine::Phase::Succeeded) => Verdict::Promoted,
        Some(_) => Verdict::RolledBack,
        None => Verdict::NoVerdict,
    }
}

/// Runs `config` against `timeline` from a freshly seen revision, handing each tick to `record`
/// as it ends (nothing is kept, so a long simulation runs in constant memory).
pub fn simulate(
    config: &Config,
    timeline: &Timeline,
    max_ticks: usize,
    record: &mut dyn FnMut(sim::TickLog),
) -> Result<sim::End, EngineError> {
    let mut engine = Engine::new(
        config.clone(),
        State::initialized_with_new_revision("current", "next"),
    );
    let mut oracle = Scripted {
        timeline,
        calls: BTreeMap::new(),
    };
    sim::run_with(&mut engine, &mut oracle, max_ticks, record)
}

/// Runs `config` against `timeline` and keeps every tick (tests, short runs).
pub fn simulate_run(
    config: &Config,
    timeline: &Timeline,
    max_ticks: usize,
) -> Result<Run, EngineError> {
    let mut ticks = Vec::new();
    let end = simulate(config, timeline, max_ticks, &mut |t| ticks.push(t))?;
    Ok(Run {
        ticks,
        state: end.state,
        verdict: end.verdict,
    })
}

fn secs(s: crate::report::Secs) -> String {
    format_human(std::time::Duration::from_secs_f64(s.0.max(0.0)))
}

/// The simulation as people read it: a row per tick (alike ticks folded) and the verdict.
pub fn write_human(config: &Config, report: &Report, out: &mut dyn Write) -> std::io::Result<()> {
    writeln!(
        out,
        "{}: {} strategy, interval {}, threshold {}",
        config.qualified(),
        config.strategy.as_str(),
        secs(crate::report::Secs(config.interval_ms as f64 / 1000.0)),
        config.threshold
    )?;
    if config.strategy == crate::engine::Strategy::AbTesting {
        writeln!(
            out,
            "(A/B testing: the weight is the share of requests matching analysis.match; all others stay on the primary)"
        )?;
    }
    let names: Vec<&str> = config.metrics.iter().map(|m| m.name.as_str()).collect();
    let width = |n: &str| n.len().max(9);
    write!(
        out,
        "{:>7}  {:<16} {:>6} {:>4} {:>6}",
        "t", "phase", "weight", "iter", "failed"
    )?;
    for n in &names {
        write!(out, "  {:<w$}", n, w = width(n))?;
    }
    writeln!(out, "  events")?;
    for row in &report.checks {
        if let Some(last) = &row.last {
            write_row(out, &names, row)?;
            if row.ticks > 2 {
                writeln!(
                    out,
                    "{:>7}  … {} more ticks like the one above and the one below",
                    "",
                    row.ticks - 2
                )?;
            }
            write_row(out, &names, last)?;
        } else {
            write_row(out, &names, row)?;
        }
    }
    let verdict = match report.verdict {
        Verdict::NoVerdict => "no verdict (stopped at the tick limit)",
        other => other.human(),
    };
    writeln!(
        out,
        "verdict: {verdict} after {} (failed checks {}/{})",
        secs(report.duration_s),
        report.failed_checks,
        config.threshold
    )
}

/// One row of the human table.
fn write_row(out: &mut dyn Write, names: &[&str], t: &TickReport) -> std::io::Result<()> {
    let width = |n: &str| n.len().max(9);
    write!(
        out,
        "{:>7}  {:<16} {:>5}% {:>4} {:>6}",
        secs(t.at_s),
        t.phase,
        t.canary_weight,
        t.iteration,
        t.failed_checks
    )?;
    for n in names {
        let cell = match (t.metrics.get(*n), t.verdicts.get(*n)) {
            (Some(Some(v)), Some(ok)) => format!("{v:.2} {}", if *ok { "ok" } else { "FAIL" }),
            (Some(None), _) => "no values FAIL".to_string(),
            _ => String::new(),
        };
        write!(out, "  {:<w$}", cell, w = width(n))?;
    }
    writeln!(out, "  {}", t.message)
}
