//! `aviary simulate`: the engine on a simulated clock, answering its questions from a timeline.
//!
//! ```yaml
//! metrics:            # the i-th value answers the i-th query of that metric; the last repeats
//!   request-success-rate: [99.9, 99.5, 70]   # null means "no values found"; .nan is NaN
//! webhooks:           # per webhook name: pass/fail per call, the last repeats; default pass
//!   confirm-promotion: [fail, fail, pass]
//! judge:              # analysis.judge's data, per judge metric: canary and primary, a row per interval
//!   errors:                                  # error-rate: [errors, requests]
//!     canary:  [[2, 500], [1, 800], [0, 900]]
//!     primary: [[20, 4500], [15, 4200], [18, 4100]]
//!   latency:                                 # latency histogram: cumulative counts per bound
//!     buckets: [0.05, 0.1, 0.25, 0.5, .inf]
//!     canary:  [[120, 300, 390, 398, 400]]
//!     primary: [[1100, 2700, 3500, 3590, 3600]]
//!     baseline: [[1000, 2400, 3300, 3560, 3600]]  # optional: the primary before the
//!                                                 # analysis, oldest first (sequential method)
//!   p90:                                     # latency without buckets, increase, decrease:
//!     canary:  [[0.11, 0.12], [0.13]]        #   the samples of each interval
//!     primary: [[0.10, 0.11], [0.10]]
//! ```
//!
//! With a `judge:` section the judge's check is not scripted (`metrics.judge` must then be left
//! out): the i-th time the engine asks for it (from 0), the judge
//! ([`crate::analysis::judge_history`], with the Canary's method, metrics and scores) sees
//! intervals 0..=i of every metric, the last row repeating when a list runs out (at most
//! [`MAX_JUDGE_HISTORY`] of them); its window is `ceil(window / analysis.interval)` intervals (at
//! least 1), and the canary is young while `(i + 1) × interval` is under the window. A row may be
//! `null` (nothing measured). Every metric of the judge needs data, canary and primary the same
//! number of rows; histogram rows have one count per bound, each at least the one before; errors
//! are at most the requests. The judge's reasons (its own, and each metric's verdict) are added
//! to the tick as info events `judge: ...` right after its check, as the runner logs them.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io::Write;

use crate::analysis::{judge_history, HistoryOptions, Interval, Observation};
use crate::engine::config::JUDGE_CHECK;
use crate::engine::sim::{self, Run};
use crate::engine::{
    Answer, Command, Config, Engine, EngineError, EventLevel, HookOutcome, MetricOutcome,
    Readiness, Request, State,
};
use crate::spec::duration::format_human;
use crate::spec::yaml::{self, Node, Value};
use crate::spec::{Diagnostic, JudgeKind, JudgeMetric, JudgeSpec, SpecError};

/// A scripted sequence of answers.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Timeline {
    /// `None` is "no values found".
    pub metrics: BTreeMap<String, Vec<Option<f64>>>,
    /// `true` is a pass (2xx).
    pub webhooks: BTreeMap<String, Vec<bool>>,
    /// The `judge:` section: per metric of `analysis.judge`, what the canary and the primary
    /// served in each analysis interval. Empty: no section (the judge's score, if any, is
    /// scripted under `metrics`).
    pub judge: BTreeMap<String, Vec<Interval>>,
    /// Per judge metric, what the primary served in each interval before the analysis (its
    /// `baseline:` rows, oldest first), for the sequential method.
    pub judge_baseline: BTreeMap<String, Vec<Observation>>,
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
        let mut judge_section = false;
        for (key, value) in entries {
            match key.as_str() {
                Some("judge") => {
                    judge_section = true;
                    let (judge, baseline) = read_judge(file, key.line, value, config, &mut errors);
                    timeline.judge = judge;
                    timeline.judge_baseline = baseline;
                }
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
                        .with_help("a timeline has `metrics:`, `webhooks:` and `judge:`"),
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
        if judge_section && timeline.metrics.contains_key(JUDGE_CHECK) {
            errors.push(
                Diagnostic::error(
                    file,
                    line_of("metrics", JUDGE_CHECK),
                    &format!("metrics.{JUDGE_CHECK}"),
                    "the judge's score is scripted here and also computed from the `judge:` section",
                )
                .with_help(format!(
                    "keep one: remove `metrics.{JUDGE_CHECK}` to replay the judge on the data, \
                     or the `judge:` section to script its score"
                )),
            );
        }
        for name in &metric_names {
            // With a `judge:` section the judge's score comes from its data.
            let replayed = judge_section && *name == JUDGE_CHECK;
            if !replayed && !timeline.metrics.contains_key(*name) {
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

/// Reads the `judge:` section against the Canary's `analysis.judge`: each metric's intervals,
/// and its `baseline:` rows where given.
fn read_judge(
    file: &str,
    line: usize,
    node: &Node,
    config: &Config,
    errors: &mut Vec<Diagnostic>,
) -> (
    BTreeMap<String, Vec<Interval>>,
    BTreeMap<String, Vec<Observation>>,
) {
    let mut out = BTreeMap::new();
    let mut baselines = BTreeMap::new();
    let Some(spec) = &config.judge else {
        errors.push(
            Diagnostic::error(
                file,
                line,
                "judge",
                format!(
                    "the Canary {} has no statistical judge (analysis.judge)",
                    config.qualified()
                ),
            )
            .with_help(
                "remove the `judge:` section, or add `analysis.judge` to the Canary \
                 (apiVersion aviary.dev/v1alpha1)",
            ),
        );
        return (out, baselines);
    };
    let names: Vec<&str> = spec.metrics.iter().map(|m| m.name.as_str()).collect();
    let entries: &[(Node, Node)] = match &node.value {
        Value::Map(entries) => entries,
        Value::Null => &[],
        _ => {
            errors.push(
                Diagnostic::error(
                    file,
                    line,
                    "judge",
                    format!(
                        "expected a mapping of judge metric to its data, got {}",
                        node.describe()
                    ),
                )
                .with_help(format!(
                    "give `canary:` and `primary:` intervals for each of: {}",
                    list(&names)
                )),
            );
            return (out, baselines);
        }
    };
    let mut given = Vec::new();
    for (key, value) in entries {
        let Some(name) = key.as_str() else {
            errors.push(Diagnostic::error(
                file,
                key.line,
                "judge",
                format!("expected a judge metric's name, got {}", key.describe()),
            ));
            continue;
        };
        given.push(name.to_string());
        let path = format!("judge.{name}");
        let Some(metric) = spec.metrics.iter().find(|m| m.name == name) else {
            errors.push(
                Diagnostic::error(
                    file,
                    key.line,
                    &path,
                    format!(
                        "the judge of the Canary {} has no metric {name:?}",
                        config.qualified()
                    ),
                )
                .with_help(format!("its metrics are: {}", list(&names))),
            );
            continue;
        };
        if let Some((intervals, before)) =
            read_judge_metric(file, &path, key.line, metric, value, errors)
        {
            out.insert(name.to_string(), intervals);
            if !before.is_empty() {
                baselines.insert(name.to_string(), before);
            }
        }
    }
    for name in &names {
        if !given.iter().any(|g| g == name) {
            errors.push(
                Diagnostic::error(
                    file,
                    line,
                    "judge",
                    format!("no data for the judge's metric {name:?}"),
                )
                .with_help(format!(
                    "add `{name}:` with `canary:` and `primary:` intervals (every metric of the \
                     judge needs data)"
                )),
            );
        }
    }
    (out, baselines)
}

/// How a judge metric's intervals are written.
enum Shape {
    /// `[errors, requests]`.
    Counts,
    /// Cumulative counts, one per bucket bound.
    Histogram(Vec<f64>),
    /// The samples of the interval.
    Values,
}

/// Reads one judge metric's `canary`, `primary` (and `buckets`); `None` if anything is wrong.
fn read_judge_metric(
    file: &str,
    path: &str,
    line: usize,
    metric: &JudgeMetric,
    node: &Node,
    errors: &mut Vec<Diagnostic>,
) -> Option<(Vec<Interval>, Vec<Observation>)> {
    let before = errors.len();
    let kind = metric.kind.as_str();
    let example = match metric.kind {
        JudgeKind::ErrorRate => "`canary: [[2, 500], [1, 800]]` ([errors, requests] per interval)",
        JudgeKind::Latency => {
            "`buckets: [0.1, 0.5, .inf]` and `canary: [[300, 390, 400]]` (cumulative counts per \
             bucket), or `canary: [[0.11, 0.12], [0.13]]` (samples per interval)"
        }
        _ => "`canary: [[0.11, 0.12], [0.13]]` (the samples of each interval)",
    };
    let Value::Map(entries) = &node.value else {
        errors.push(
            Diagnostic::error(
                file,
                node.line,
                path,
                format!(
                    "expected a mapping with `canary` and `primary`, got {}",
                    node.describe()
                ),
            )
            .with_help(format!("for this {kind} metric, e.g. {example}")),
        );
        return None;
    };
    let (mut canary, mut primary, mut buckets, mut baseline) = (None, None, None, None);
    for (key, value) in entries {
        match key.as_str() {
            Some("canary") => canary = Some(value),
            Some("primary") => primary = Some(value),
            Some("buckets") => buckets = Some(value),
            Some("baseline") => baseline = Some(value),
            _ => errors.push(
                Diagnostic::error(
                    file,
                    key.line,
                    &format!("{path}.{}", key.scalar_text().unwrap_or_default()),
                    "unknown field of a judge metric's data",
                )
                .with_help("a judge metric has `canary:`, `primary:`, optionally `baseline:` (the primary before the analysis) and, for a latency histogram, `buckets:`"),
            ),
        }
    }
    let shape = match (metric.kind, buckets) {
        (JudgeKind::ErrorRate, None) => Shape::Counts,
        (JudgeKind::Latency, Some(b)) => Shape::Histogram(read_bounds(file, path, b, errors)),
        (_, None) => Shape::Values,
        (_, Some(b)) => {
            errors.push(
                Diagnostic::error(
                    file,
                    b.line,
                    &format!("{path}.buckets"),
                    format!(
                        "`buckets` is for a latency histogram; {} is a metric of kind {kind}",
                        metric.name
                    ),
                )
                .with_help(format!("remove `buckets:`; give e.g. {example}")),
            );
            return None;
        }
    };
    let mut sides = Vec::with_capacity(3);
    for (side, given) in [
        ("canary", canary),
        ("primary", primary),
        ("baseline", baseline),
    ] {
        let side_path = format!("{path}.{side}");
        let Some(given) = given else {
            if side == "baseline" {
                sides.push((line, Vec::new()));
                continue;
            }
            errors.push(
                Diagnostic::error(file, line, path, format!("no `{side}:` intervals"))
                    .with_help(format!("for this {kind} metric, e.g. {example}")),
            );
            continue;
        };
        let Value::Seq(rows) = &given.value else {
            errors.push(
                Diagnostic::error(
                    file,
                    given.line,
                    &side_path,
                    format!("expected a list of intervals, got {}", given.describe()),
                )
                .with_help(format!("e.g. {example}")),
            );
            continue;
        };
        if rows.is_empty() {
            errors.push(
                Diagnostic::error(file, given.line, &side_path, "no intervals").with_help(
                    if side == "baseline" {
                        "give the primary's intervals before the analysis, or remove `baseline:`"
                    } else {
                        "give at least one interval; the last one repeats"
                    },
                ),
            );
            continue;
        }
        let observations: Vec<Observation> = rows
            .iter()
            .enumerate()
            .map(|(i, row)| {
                read_row(file, &format!("{side_path}[{i}]"), row, &shape, errors)
                    .unwrap_or(Observation::Missing)
            })
            .collect();
        sides.push((given.line, observations));
    }
    if let [(_, c), (primary_line, p), ..] = sides.as_slice() {
        if c.len() != p.len() {
            errors.push(
                Diagnostic::error(
                    file,
                    *primary_line,
                    &format!("{path}.primary"),
                    format!(
                        "{} canary intervals but {} primary intervals",
                        c.len(),
                        p.len()
                    ),
                )
                .with_help("give both deployments the same intervals, one row each (null: nothing measured)"),
            );
        }
    }
    if errors.len() != before {
        return None;
    }
    let mut sides = sides.into_iter().map(|(_, o)| o);
    let (canary, primary, baseline) = (sides.next()?, sides.next()?, sides.next()?);
    Some((
        canary
            .into_iter()
            .zip(primary)
            .map(|(canary, primary)| Interval { canary, primary })
            .collect(),
        baseline,
    ))
}

/// A number (`.inf` and `.nan` included).
fn number(node: &Node) -> Option<f64> {
    match node.value {
        Value::Int(i) => Some(i as f64),
        Value::Float(f) => Some(f),
        _ => None,
    }
}

/// A count: a whole number ≥ 0.
fn count(node: &Node) -> Option<u64> {
    node.as_i64().and_then(|i| u64::try_from(i).ok())
}

/// The bucket bounds of a latency histogram: increasing numbers (`.inf` last).
fn read_bounds(file: &str, path: &str, node: &Node, errors: &mut Vec<Diagnostic>) -> Vec<f64> {
    let path = format!("{path}.buckets");
    let help = "the upper bounds (`le`) of the histogram's buckets, increasing, e.g. \
                `[0.05, 0.1, 0.25, 0.5, .inf]`";
    let items = match &node.value {
        Value::Seq(items) if !items.is_empty() => items,
        _ => {
            errors.push(
                Diagnostic::error(
                    file,
                    node.line,
                    &path,
                    format!("expected a list of bucket bounds, got {}", node.describe()),
                )
                .with_help(help),
            );
            return Vec::new();
        }
    };
    let mut bounds: Vec<f64> = Vec::with_capacity(items.len());
    for (i, n) in items.iter().enumerate() {
        match number(n) {
            Some(b) if !b.is_nan() && bounds.last().map_or(true, |last| b > *last) => {
                bounds.push(b)
            }
            _ => {
                errors.push(
                    Diagnostic::error(
                        file,
                        n.line,
                        &format!("{path}[{i}]"),
                        format!(
                            "expected a bound above the one before, got {}",
                            n.describe()
                        ),
                    )
                    .with_help(help),
                );
                return Vec::new();
            }
        }
    }
    bounds
}

/// One interval of one deployment.
fn read_row(
    file: &str,
    path: &str,
    row: &Node,
    shape: &Shape,
    errors: &mut Vec<Diagnostic>,
) -> Option<Observation> {
    if row.is_null() {
        return Some(Observation::Missing);
    }
    let mut fail = |message: String, help: &str| {
        errors.push(Diagnostic::error(file, row.line, path, message).with_help(help));
        None
    };
    let Value::Seq(items) = &row.value else {
        let help = match shape {
            Shape::Counts => "each interval is `[errors, requests]`, e.g. `[2, 500]` (null: nothing measured)",
            Shape::Histogram(_) => "each interval is a list of cumulative counts, one per bucket (null: nothing measured)",
            Shape::Values => "each interval is a list of samples, e.g. `[0.11, 0.12]` (`[]` or null: none)",
        };
        return fail(format!("expected a list, got {}", row.describe()), help);
    };
    match shape {
        Shape::Counts => {
            let help = "an error-rate metric gives each interval as `[errors, requests]`, \
                        whole numbers with errors ≤ requests, e.g. `[2, 500]`";
            match items.as_slice() {
                [e, t] => match (count(e), count(t)) {
                    (Some(errors), Some(total)) if errors <= total => {
                        Some(Observation::Counts { errors, total })
                    }
                    (Some(e), Some(t)) => fail(format!("{e} errors out of {t} requests"), help),
                    _ => fail(
                        format!(
                            "expected [errors, requests] as whole numbers ≥ 0, got [{}, {}]",
                            e.describe(),
                            t.describe()
                        ),
                        help,
                    ),
                },
                _ => fail(
                    format!(
                        "expected [errors, requests], got {} number{}",
                        items.len(),
                        if items.len() == 1 { "" } else { "s" }
                    ),
                    help,
                ),
            }
        }
        Shape::Histogram(bounds) => {
            let help = "a histogram row has one cumulative count per bucket bound (Prometheus' \
                        `le` series): whole numbers, each at least the one before";
            if items.len() != bounds.len() {
                return fail(
                    format!("{} counts for {} buckets", items.len(), bounds.len()),
                    help,
                );
            }
            let mut buckets: Vec<(f64, u64)> = Vec::with_capacity(items.len());
            for (n, le) in items.iter().zip(bounds) {
                match count(n) {
                    Some(c) if buckets.last().map_or(true, |(_, last)| c >= *last) => {
                        buckets.push((*le, c))
                    }
                    Some(c) => {
                        let last = buckets.last().map_or(0, |b| b.1);
                        return fail(
                            format!(
                                "the counts are not cumulative: {c} after {last} (bucket le={le})"
                            ),
                            help,
                        );
                    }
                    None => {
                        return fail(format!("expected a count ≥ 0, got {}", n.describe()), help)
                    }
                }
            }
            Some(Observation::Histogram { buckets })
        }
        Shape::Values => {
            let mut values = Vec::with_capacity(items.len());
            for n in items {
                match number(n) {
                    Some(v) => values.push(v),
                    None => return fail(
                        format!("expected a number, got {}", n.describe()),
                        "each interval is a list of samples, e.g. `[0.11, 0.12]` (.nan is ignored)",
                    ),
                }
            }
            Some(Observation::Values { values })
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

/// The most intervals the replayed judge looks back over: a Prometheus range query returns at
/// most 11,000 points, and a longer history would make a long simulation quadratic.
pub const MAX_JUDGE_HISTORY: usize = 10_000;

/// Answers requests from a timeline, counting calls per name.
struct Scripted<'a> {
    config: &'a Config,
    timeline: &'a Timeline,
    calls: BTreeMap<String, usize>,
    /// What the replayed judge said during the current tick (its reasons), for the tick's log.
    notes: &'a RefCell<Vec<String>>,
}

impl Scripted<'_> {
    /// The judge on the timeline's data: the i-th request sees intervals 0..=i.
    fn judge(&mut self, spec: &JudgeSpec) -> Answer {
        let n = self
            .calls
            .entry(format!("metric/{JUDGE_CHECK}"))
            .or_insert(0);
        let i = *n;
        *n += 1;
        let interval_ms = self.config.interval_ms.max(1);
        let window_ms = u64::try_from(spec.window.as_millis()).unwrap_or(u64::MAX);
        let window = usize::try_from(window_ms.div_ceil(interval_ms))
            .unwrap_or(usize::MAX)
            .max(1);
        let age = u64::try_from(i)
            .unwrap_or(u64::MAX)
            .saturating_add(1)
            .saturating_mul(interval_ms);
        let options = HistoryOptions {
            method: spec.method,
            window,
            young: age < window_ms,
            horizon: self.config.judge_horizon(interval_ms),
            planned_share: self.config.judge_planned_share(interval_ms),
            before: self
                .timeline
                .judge_baseline
                .values()
                .map(Vec::len)
                .max()
                .unwrap_or(0),
        };
        let first = i.saturating_add(1).saturating_sub(MAX_JUDGE_HISTORY);
        let metrics: Vec<_> = spec
            .metrics
            .iter()
            .map(|m| {
                let data = self
                    .timeline
                    .judge
                    .get(&m.name)
                    .map_or(&[][..], Vec::as_slice);
                // The primary's baseline first, padded at the front to the longest one
                // (`before` is the same for every metric).
                let baseline = self
                    .timeline
                    .judge_baseline
                    .get(&m.name)
                    .map_or(&[][..], Vec::as_slice);
                let padding = options.before.saturating_sub(baseline.len());
                let history = std::iter::repeat(Observation::Missing)
                    .take(padding)
                    .chain(baseline.iter().cloned())
                    .map(|primary| Interval {
                        canary: Observation::Missing,
                        primary,
                    })
                    .chain((first..=i).filter_map(|k| data.get(k).or(data.last()).cloned()))
                    .collect();
                (m.config(), history)
            })
            .collect();
        let judgement = judge_history(&spec.config(), &metrics, &options);
        let mut notes = self.notes.borrow_mut();
        notes.push(format!("judge: {}", judgement.reason));
        for v in &judgement.metrics {
            // A critical failure's reason already quotes the metric's.
            if !judgement.reason.contains(&v.reason) {
                notes.push(format!("judge: {}", v.reason));
            }
        }
        Answer::Metric(MetricOutcome::Value(judgement.score))
    }

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
            Request::Metric { name, .. }
                if name == JUDGE_CHECK && !self.timeline.judge.is_empty() =>
            {
                match &self.config.judge {
                    Some(spec) => self.judge(spec),
                    None => Answer::Metric(MetricOutcome::NoValues("no judge configured".into())),
                }
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
    let notes = RefCell::new(Vec::new());
    let mut oracle = Scripted {
        config,
        timeline,
        calls: BTreeMap::new(),
        notes: &notes,
    };
    sim::run_with(&mut engine, &mut oracle, max_ticks, &mut |mut tick| {
        add_notes(&mut tick, notes.take());
        record(tick)
    })
}

/// The replayed judge's reasons, as info events right after the judge's check (the runner
/// logs them; here they go in the tick's events, so the report shows them).
fn add_notes(tick: &mut sim::TickLog, notes: Vec<String>) {
    if notes.is_empty() {
        return;
    }
    let at = tick
        .commands
        .iter()
        .position(|c| matches!(c, Command::Check { check } if check.name == JUDGE_CHECK))
        .map_or(tick.commands.len(), |p| p + 1);
    let events = notes.into_iter().map(|message| Command::Event {
        severity: EventLevel::Info,
        message,
    });
    tick.commands.splice(at..at, events);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Phase;
    use crate::spec::{self, Provider};

    /// A Canary judged by the statistical judge alone: an error rate and a latency histogram.
    const JUDGED: &str = "apiVersion: aviary.dev/v1alpha1
kind: Canary
metadata:
  name: podinfo
  namespace: test
spec:
  targetRef: {apiVersion: apps/v1, kind: Deployment, name: podinfo}
  service:
    port: 9898
  analysis:
    interval: 1m
    threshold: 2
    maxWeight: 50
    stepWeight: 10
    judge:
      window: 3m
      metrics:
        - name: errors
          kind: error-rate
          errorsQuery: 'e{w=\"{{ workload }}\"}'
          totalQuery: 't{w=\"{{ workload }}\"}'
        - name: latency
          kind: latency
          histogramQuery: 'h{w=\"{{ workload }}\"}'
";

    fn config_of(text: &str) -> Config {
        let docs = match spec::load_str("canary.yaml", text) {
            Ok(d) => d,
            Err(e) => panic!("{e}"),
        };
        Config::from_canary(&docs.canaries[0], &Provider::Istio)
    }

    fn judged() -> Config {
        config_of(JUDGED)
    }

    /// Latency data where canary and primary are alike (`[[...]]` rows of 5 buckets).
    const FAST: &str = "  latency:
    buckets: [0.025, 0.05, 0.1, 0.25, .inf]
    canary: [[200, 320, 360, 396, 400]]
    primary: [[800, 1280, 1440, 1584, 1600]]
";

    fn replay(config: &Config, text: &str) -> Run {
        let timeline = match Timeline::parse("timeline.yaml", text, config) {
            Ok(t) => t,
            Err(e) => panic!("{e}"),
        };
        match simulate_run(config, &timeline, 300) {
            Ok(run) => run,
            Err(e) => panic!("{e}"),
        }
    }

    fn events(run: &Run) -> Vec<String> {
        run.ticks
            .iter()
            .flat_map(|t| &t.commands)
            .filter_map(|c| match c {
                Command::Event { message, .. } => Some(message.clone()),
                _ => None,
            })
            .collect()
    }

    fn judge_scores(run: &Run) -> Vec<f64> {
        run.ticks
            .iter()
            .flat_map(|t| &t.commands)
            .filter_map(|c| match c {
                Command::Check { check } if check.name == JUDGE_CHECK => check.value,
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_canary_that_errs_five_times_more_is_rolled_back_by_the_judge() {
        let text = format!(
            "judge:\n  errors:\n    canary: [[10, 500]]\n    primary: [[18, 4500]]\n{FAST}"
        );
        let run = replay(&judged(), &text);
        assert_eq!(run.verdict, Some(Phase::Failed), "{:?}", events(&run));
        assert_eq!(run.state.failed_checks, 2);
        let scores = judge_scores(&run);
        // The latency passes, the errors do not: half the weight.
        assert_eq!(scores.last(), Some(&50.0), "{scores:?}");
        let events = events(&run);
        assert!(
            events.iter().any(|e| e.starts_with("judge: score 50")
                && e.contains("not passing: \"errors\" (high)")),
            "{events:?}"
        );
        assert!(
            events
                .iter()
                .any(|e| e.starts_with("judge: errors errors") && e.contains("high")),
            "{events:?}"
        );
    }

    #[test]
    fn equal_error_rates_are_promoted() {
        let text = format!(
            "judge:\n  errors:\n    canary: [[2, 500], [1, 800], [4, 900]]\n    primary: [[18, 4500], [8, 4200], [16, 4100]]\n{FAST}"
        );
        let run = replay(&judged(), &text);
        assert_eq!(run.verdict, Some(Phase::Succeeded), "{:?}", events(&run));
        assert_eq!(run.state.failed_checks, 0);
        let scores = judge_scores(&run);
        assert!(scores.len() >= 5, "{scores:?}");
        assert!(scores.iter().all(|s| *s == 100.0), "{scores:?}");
    }

    #[test]
    fn a_slow_canary_histogram_is_rolled_back() {
        let text = "judge:
  errors:
    canary: [[0, 500]]
    primary: [[0, 4500]]
  latency:
    buckets: [0.025, 0.05, 0.1, 0.25, .inf]
    canary: [[120, 240, 320, 388, 400]]
    primary: [[800, 1280, 1440, 1584, 1600]]
";
        let run = replay(&judged(), text);
        assert_eq!(run.verdict, Some(Phase::Failed), "{:?}", events(&run));
        let events = events(&run);
        assert!(
            events.iter().any(|e| e.contains("\"latency\" (high)")),
            "{events:?}"
        );
    }

    #[test]
    fn a_young_canary_without_data_is_not_a_failed_check() {
        // Nothing measured in the first two intervals (younger than the 3m window), then alike.
        let text = format!(
            "judge:\n  errors:\n    canary: [null, [0, 0], [2, 500]]\n    primary: [null, [0, 0], [18, 4500]]\n{FAST}"
        );
        let run = replay(&judged(), &text);
        let scores = judge_scores(&run);
        assert_eq!(&scores[..2], &[100.0, 100.0], "{:?}", events(&run));
        assert!(
            events(&run)
                .iter()
                .any(|e| e.contains("younger than the judge's window")),
            "{:?}",
            events(&run)
        );
        assert_eq!(run.verdict, Some(Phase::Succeeded));
        assert_eq!(run.state.failed_checks, 0);

        // Once older than the window, no data is a failure.
        let text = format!("judge:\n  errors:\n    canary: [null]\n    primary: [null]\n{FAST}");
        let run = replay(&judged(), &text);
        assert_eq!(&judge_scores(&run)[..3], &[100.0, 100.0, 50.0]);
        assert_eq!(run.verdict, Some(Phase::Failed));
    }

    #[test]
    fn the_primarys_baseline_in_a_timeline_joins_the_comparison() {
        // The canary errs four times as often as the primary, whose few concurrent errors
        // cannot show it; its hour before the analysis (60 rows) can.
        let release = "judge:
  errors:
    canary: [[2, 500]]
    primary: [[2, 1500]]
";
        let run = replay(&judged(), &format!("{release}{FAST}"));
        assert_eq!(run.verdict, Some(Phase::Succeeded), "{:?}", events(&run));
        let baseline = vec!["[2, 2000]"; 60].join(", ");
        let run = replay(
            &judged(),
            &format!(
                "{release}    baseline: [{baseline}]
{FAST}"
            ),
        );
        assert_eq!(run.verdict, Some(Phase::Failed), "{:?}", events(&run));
        assert!(
            events(&run)
                .iter()
                .any(|e| e.contains("its 60 intervals before the analysis") && e.contains("high")),
            "{:?}",
            events(&run)
        );
    }

    #[test]
    fn the_judge_replays_on_other_metrics_timelines_too() {
        // A Canary with a threshold metric as well: it needs values, the judge does not.
        let config = config_of(&JUDGED.replace(
            "    judge:\n",
            "    metrics:\n      - name: request-success-rate\n        thresholdRange: {min: 99}\n    judge:\n",
        ));
        let text = format!(
            "metrics:\n  request-success-rate: [99.9]\njudge:\n  errors:\n    canary: [[2, 500]]\n    primary: [[18, 4500]]\n{FAST}"
        );
        let run = replay(&config, &text);
        assert_eq!(run.verdict, Some(Phase::Succeeded), "{:?}", events(&run));
        // Value samples for a latency metric without buckets.
        let text = "metrics:\n  request-success-rate: [99.9]\njudge:\n  errors:\n    canary: [[2, 500]]\n    primary: [[18, 4500]]\n  latency:\n    canary: [[0.11, 0.12, 0.1, 0.13, 0.12, 0.11, 0.1, 0.12, 0.11, 0.13]]\n    primary: [[0.11, 0.12, 0.1, 0.13, 0.12, 0.11, 0.1, 0.12, 0.11, 0.13]]\n";
        let run = replay(&config, text);
        assert_eq!(run.verdict, Some(Phase::Succeeded), "{:?}", events(&run));
    }

    #[test]
    fn the_sandbox_judge_example_is_rolled_back_by_the_judge() {
        let config = config_of(include_str!("../../../examples/sandbox/k8s/canary.yaml"));
        let text = include_str!("../../../examples/sandbox/timelines/judge.yaml");
        let run = replay(&config, text);
        assert_eq!(run.verdict, Some(Phase::Failed), "{:?}", events(&run));
        // One interval cannot tell how much the counts swing (no baseline in the timeline):
        // undecided at the first check, decided at the second, failed at both after.
        assert_eq!(
            judge_scores(&run),
            vec![100.0, 0.0, 0.0],
            "{:?}",
            events(&run)
        );
        let events = events(&run);
        assert!(
            events
                .iter()
                .any(|e| e.starts_with("judge: critical metric \"latency\" failed")),
            "{events:?}"
        );
    }

    /// The errors of a timeline, as `line: path: message`.
    fn errors_of(config: &Config, text: &str) -> Vec<String> {
        match Timeline::parse("timeline.yaml", text, config) {
            Ok(_) => panic!("accepted: {text}"),
            Err(SpecError::Invalid { errors, .. }) => errors
                .iter()
                .map(|d| {
                    assert!(d.help.is_some(), "no help: {d:?}");
                    format!("{}: {}: {}", d.line, d.path, d.message)
                })
                .collect(),
            Err(e) => panic!("{e}"),
        }
    }

    fn assert_error(config: &Config, text: &str, expected: &str) {
        let errors = errors_of(config, text);
        assert!(
            errors.iter().any(|e| e == expected),
            "expected {expected:?} in {errors:?}"
        );
    }

    #[test]
    fn bad_judge_sections_point_at_line_and_path() {
        let config = judged();
        let errors = "  errors:\n    canary: [[2, 500]]\n    primary: [[18, 4500]]\n";
        // Errors above requests.
        assert_error(
            &config,
            &format!("judge:\n  errors:\n    canary: [[2, 500], [1, 800],\n      [9, 8]]\n    primary: [[1, 5], [1, 5], [1, 5]]\n{FAST}"),
            "4: judge.errors.canary[2]: 9 errors out of 8 requests",
        );
        // Sample lists for an error-rate metric.
        assert_error(
            &config,
            &format!("judge:\n  errors:\n    canary: [[0.1, 0.2, 0.3]]\n    primary: [[18, 4500]]\n{FAST}"),
            "3: judge.errors.canary[0]: expected [errors, requests], got 3 numbers",
        );
        // Unequal interval counts.
        assert_error(
            &config,
            &format!("judge:\n  errors:\n    canary: [[2, 500], [2, 500]]\n    primary: [[18, 4500]]\n{FAST}"),
            "4: judge.errors.primary: 2 canary intervals but 1 primary intervals",
        );
        // A histogram row with a count missing, and one that is not cumulative.
        assert_error(
            &config,
            &format!("judge:\n{errors}  latency:\n    buckets: [0.1, 0.5, .inf]\n    canary: [[1, 2, 3], [1, 2]]\n    primary: [[1, 2, 3], [1, 2, 3]]\n"),
            "7: judge.latency.canary[1]: 2 counts for 3 buckets",
        );
        assert_error(
            &config,
            &format!("judge:\n{errors}  latency:\n    buckets: [0.1, 0.5, .inf]\n    canary: [[1, 2, 3]]\n    primary:\n      - [5, 4, 6]\n"),
            "9: judge.latency.primary[0]: the counts are not cumulative: 4 after 5 (bucket le=0.5)",
        );
        // A baseline row of the wrong shape, and an empty baseline.
        assert_error(
            &config,
            &format!(
                "judge:
  errors:
    canary: [[2, 500]]
    primary: [[18, 4500]]
    baseline: [[3, 900], [1]]
{FAST}"
            ),
            "5: judge.errors.baseline[1]: expected [errors, requests], got 1 number",
        );
        assert_error(
            &config,
            &format!(
                "judge:
  errors:
    canary: [[2, 500]]
    primary: [[18, 4500]]
    baseline: []
{FAST}"
            ),
            "5: judge.errors.baseline: no intervals",
        );
        // Buckets out of order, and buckets for a metric that is not a latency.
        assert_error(
            &config,
            &format!("judge:\n{errors}  latency:\n    buckets: [0.5, 0.1, .inf]\n    canary: [[1, 2, 3]]\n    primary: [[1, 2, 3]]\n"),
            "6: judge.latency.buckets[1]: expected a bound above the one before, got 0.1",
        );
        assert_error(
            &config,
            &format!("judge:\n  errors:\n    buckets: [1]\n    canary: [[2, 500]]\n    primary: [[18, 4500]]\n{FAST}"),
            "3: judge.errors.buckets: `buckets` is for a latency histogram; errors is a metric of kind error-rate",
        );
        // A metric the judge does not have, and one of its metrics without data.
        assert_error(
            &config,
            &format!("judge:\n{errors}{FAST}  p99:\n    canary: [[1]]\n    primary: [[1]]\n"),
            "9: judge.p99: the judge of the Canary podinfo.test has no metric \"p99\"",
        );
        assert_error(
            &config,
            &format!("\njudge:\n{errors}"),
            "2: judge: no data for the judge's metric \"latency\"",
        );
        // A scripted score and the judge's data.
        assert_error(
            &config,
            &format!("metrics:\n  judge: [100]\njudge:\n{errors}{FAST}"),
            "2: metrics.judge: the judge's score is scripted here and also computed from the `judge:` section",
        );
        // A Canary without a judge.
        let plain = JUDGED.split("    judge:\n").next().unwrap_or_default();
        let plain = config_of(&format!(
            "{plain}    metrics:\n      - name: request-success-rate\n        thresholdRange: {{min: 99}}\n"
        ));
        assert_error(
            &plain,
            &format!("metrics:\n  request-success-rate: [99]\njudge:\n{errors}"),
            "3: judge: the Canary podinfo.test has no statistical judge (analysis.judge)",
        );
        // Without the section, the judge's score must be scripted, as before.
        let errors = errors_of(&config, "metrics: {}\n");
        assert!(
            errors
                .iter()
                .any(|e| e.contains("no values for the Canary's metric \"judge\"")),
            "{errors:?}"
        );
    }
}
