//! A Kayenta-style judge: each metric of the canary is compared with the same metric of the
//! baseline (the primary) and classified, then the classifications are weighed into a score and a
//! verdict.
//!
//! Per metric ([`classify`]):
//!
//! * value samples (latencies, or any per-interval values) are compared with the Mann–Whitney U
//!   test, their summaries are the medians; request counts (errors out of requests) with the
//!   pooled two-proportion z-test, their summaries are the error rates;
//! * the relative effect is `(canary − baseline) / |baseline|` of the summaries;
//! * **High** / **Low**: the difference is significant (`p < alpha`) *and* the effect is beyond
//!   the floor (`|effect| > effect_floor`), upwards / downwards (the sign of canary − baseline
//!   summary). An undefined effect (a baseline of 0 against a non-zero canary, or an infinite
//!   summary such as the median of mostly timed-out requests) is beyond any floor. Anything else
//!   is **Pass**, including a significant difference with equal summaries;
//! * **NoData**: fewer than `min_samples` values (NaNs don't count) or `min_requests` requests on
//!   either side, counts that cannot be (more errors than requests), a sample of the wrong shape
//!   for the metric, or an invalid `alpha` / `effect_floor`. The reason says which.
//!
//! Like Kayenta, a directional metric only fails in its bad direction: a Latency or ErrorRate
//! metric (and a Generic one with [`Direction::Increase`]) that is Low is reported as Low, an
//! improvement, and counts as a pass; [`Direction::Decrease`] mirrors that; with
//! [`Direction::Either`] both High and Low fail. NoData never passes.
//!
//! For the whole canary ([`judge`]): `score = 100 × Σ weight(passing) / Σ weight(all)`, NoData
//! included in the denominator. A critical metric that fails (bad direction or NoData) fails the
//! canary outright: score 0, [`JudgeVerdict::Fail`]. Otherwise `score ≥ pass_score` is
//! [`JudgeVerdict::Pass`], `score ≥ marginal_score` [`JudgeVerdict::Marginal`], anything else (including no
//! metric at all, or thresholds that are NaN) [`JudgeVerdict::Fail`].

use std::cmp::Ordering;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::stats;

/// Which way a change is bad.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Direction {
    /// An increase is bad (latency, errors, CPU).
    #[default]
    Increase,
    /// A decrease is bad (throughput, success rate, cache hits).
    Decrease,
    /// Any change is bad.
    Either,
}

/// What a metric measures, which decides the test and the bad direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Measure {
    /// Higher is worse; value samples compared with Mann–Whitney. Request counts are refused
    /// (NoData).
    Latency,
    /// Higher is worse; request counts compared with the two-proportion test, or value samples
    /// (e.g. per-interval error ratios) with Mann–Whitney.
    ErrorRate,
    /// Either shape of sample, in the given direction.
    Generic { direction: Direction },
}

impl Measure {
    /// The direction in which a change fails the metric.
    pub fn direction(self) -> Direction {
        match self {
            Measure::Latency | Measure::ErrorRate => Direction::Increase,
            Measure::Generic { direction } => direction,
        }
    }
}

/// How one metric is judged. Deserialising fills every field but `name` and `kind` with its
/// default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricConfig {
    pub name: String,
    pub kind: Measure,
    /// A failure of this metric (bad direction or NoData) fails the whole canary.
    #[serde(default)]
    pub critical: bool,
    /// Share of the score; a weight that is not a finite number `≥ 0` counts as 0. Default 1.
    #[serde(default = "default_weight")]
    pub weight: f64,
    /// Significance level, in `(0, 1]`. Default 0.05.
    #[serde(default = "default_alpha")]
    pub alpha: f64,
    /// Relative change (0.1 = 10%) up to which a significant difference still passes. Default 0.1.
    #[serde(default = "default_effect_floor")]
    pub effect_floor: f64,
    /// Values needed on each side, NaNs not counted. Default 10.
    #[serde(default = "default_min_samples")]
    pub min_samples: usize,
    /// Requests needed on each side, for request counts. Default 100.
    #[serde(default = "default_min_requests")]
    pub min_requests: u64,
    /// For a latency histogram: the quantile of the pooled requests whose bucket bound splits
    /// slow requests from the others. Default 0.9.
    #[serde(default = "default_quantile")]
    pub quantile: f64,
}

fn default_weight() -> f64 {
    1.0
}
fn default_alpha() -> f64 {
    0.05
}
fn default_effect_floor() -> f64 {
    0.1
}
fn default_min_samples() -> usize {
    10
}
fn default_min_requests() -> u64 {
    100
}
fn default_quantile() -> f64 {
    0.9
}

impl MetricConfig {
    /// A non-critical metric with the defaults: weight 1, alpha 0.05, effect floor 10%, 10
    /// samples, 100 requests.
    pub fn new(name: impl Into<String>, kind: Measure) -> MetricConfig {
        MetricConfig {
            name: name.into(),
            kind,
            critical: false,
            weight: default_weight(),
            alpha: default_alpha(),
            effect_floor: default_effect_floor(),
            min_samples: default_min_samples(),
            min_requests: default_min_requests(),
            quantile: default_quantile(),
        }
    }
}

/// What was measured for one metric, canary and baseline over the same period.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Sample {
    /// Observations (latencies, per-interval values). NaNs are ignored.
    Values {
        canary: Vec<f64>,
        baseline: Vec<f64>,
    },
    /// Errors out of requests.
    Counts {
        canary_errors: u64,
        canary_total: u64,
        baseline_errors: u64,
        baseline_total: u64,
    },
}

/// The outcome for one metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Classification {
    /// No significant change beyond the effect floor.
    Pass,
    /// Significantly higher than the baseline, beyond the floor.
    High,
    /// Significantly lower than the baseline, beyond the floor.
    Low,
    /// Not enough (usable) data to tell; never a pass.
    NoData,
    /// Not decided yet: a sequential test that has not crossed either way, or too little data
    /// while the canary is younger than the judge's window. Not a failure.
    Undecided,
}

impl Classification {
    pub fn as_str(self) -> &'static str {
        match self {
            Classification::Pass => "pass",
            Classification::High => "high",
            Classification::Low => "low",
            Classification::NoData => "no data",
            Classification::Undecided => "not yet decided",
        }
    }
}

/// One metric's classification with the statistics behind it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricVerdict {
    pub name: String,
    pub classification: Classification,
    /// Whether it counts as passing in the score: Pass, or High/Low in the harmless direction.
    pub passed: bool,
    pub critical: bool,
    /// The weight used in the score (a configured weight that is not a finite number `≥ 0` is 0).
    pub weight: f64,
    /// Two-sided p-value of the test, when one ran.
    pub p_value: Option<f64>,
    /// Relative change of the summaries, `(canary − baseline) / |baseline|`, when it is a finite
    /// number (not when the baseline is 0 and the canary isn't, or a summary is infinite).
    pub effect: Option<f64>,
    /// Absolute change: the Hodges–Lehmann shift (values) or the difference of the error rates
    /// (counts).
    pub shift: Option<f64>,
    /// Median (values) or error rate (counts) of the canary and of the baseline.
    pub canary_summary: Option<f64>,
    pub baseline_summary: Option<f64>,
    /// Values (NaNs not counted) or requests, canary then baseline.
    pub samples: (u64, u64),
    /// For people: `p99 latency 412 vs 298 (+38%, p=0.0004): high`.
    pub reason: String,
}

/// Score thresholds for the whole canary.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct JudgeConfig {
    /// Score (0-100) at or above which the canary passes. Default 95.
    #[serde(default = "default_pass_score")]
    pub pass_score: f64,
    /// Score at or above which a canary that does not pass is marginal. Default 75.
    #[serde(default = "default_marginal_score")]
    pub marginal_score: f64,
}

fn default_pass_score() -> f64 {
    95.0
}
fn default_marginal_score() -> f64 {
    75.0
}

impl Default for JudgeConfig {
    fn default() -> Self {
        JudgeConfig {
            pass_score: default_pass_score(),
            marginal_score: default_marginal_score(),
        }
    }
}

/// The verdict on the whole canary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum JudgeVerdict {
    Pass,
    Marginal,
    Fail,
}

impl JudgeVerdict {
    pub fn as_str(self) -> &'static str {
        match self {
            JudgeVerdict::Pass => "pass",
            JudgeVerdict::Marginal => "marginal",
            JudgeVerdict::Fail => "fail",
        }
    }
}

/// The judgement on the whole canary, with every metric's verdict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Judgement {
    /// 0-100; 0 when a critical metric failed.
    pub score: f64,
    pub verdict: JudgeVerdict,
    pub metrics: Vec<MetricVerdict>,
    pub reason: String,
}

/// Classifies one metric; see the module documentation. Never panics.
pub fn classify(config: &MetricConfig, sample: &Sample) -> MetricVerdict {
    let mut verdict = match begin(config) {
        Ok(v) => v,
        Err(invalid) => return *invalid,
    };
    match (config.kind, sample) {
        (Measure::Latency, Sample::Counts { .. }) => {
            verdict.reason = format!(
                "{}: a latency metric needs value samples, got request counts",
                config.name
            );
            verdict
        }
        (_, Sample::Values { canary, baseline }) => {
            classify_values(config, verdict, canary, baseline)
        }
        (
            _,
            &Sample::Counts {
                canary_errors,
                canary_total,
                baseline_errors,
                baseline_total,
            },
        ) => classify_counts(
            config,
            verdict,
            (canary_errors, canary_total),
            (baseline_errors, baseline_total),
        ),
    }
}

/// A metric's verdict before any data: no data, nothing passed. `Err` (with the reason) when
/// the configuration is invalid.
pub(super) fn begin(config: &MetricConfig) -> Result<MetricVerdict, Box<MetricVerdict>> {
    let mut verdict = MetricVerdict {
        name: config.name.clone(),
        classification: Classification::NoData,
        passed: false,
        critical: config.critical,
        weight: effective_weight(config.weight),
        p_value: None,
        effect: None,
        shift: None,
        canary_summary: None,
        baseline_summary: None,
        samples: (0, 0),
        reason: String::new(),
    };
    match check_config(config) {
        Ok(()) => Ok(verdict),
        Err(problem) => {
            verdict.reason = format!("{}: invalid configuration: {problem}", config.name);
            Err(Box::new(verdict))
        }
    }
}

/// Classifies every metric and judges the canary; see the module documentation. Never panics;
/// the score is always in `[0, 100]`.
pub fn judge(config: &JudgeConfig, metrics: &[(MetricConfig, Sample)]) -> Judgement {
    let verdicts = metrics
        .iter()
        .map(|(metric, sample)| classify(metric, sample))
        .collect();
    judge_verdicts(config, verdicts)
}

/// Judges metrics that are already classified (e.g. by [`classify`], one at a time as their
/// data came in). Uses each verdict's `passed`, `critical` and `weight`; a NoData verdict never
/// passes, whatever its `passed` says.
pub fn judge_verdicts(config: &JudgeConfig, metrics: Vec<MetricVerdict>) -> Judgement {
    let fails = |m: &MetricVerdict| !m.passed || m.classification == Classification::NoData;

    let critical: Vec<String> = metrics
        .iter()
        .filter(|m| m.critical && fails(m))
        .map(|m| format!("critical metric {:?} failed: {}", m.name, m.reason))
        .collect();
    if !critical.is_empty() {
        return Judgement {
            score: 0.0,
            verdict: JudgeVerdict::Fail,
            reason: critical.join("; "),
            metrics,
        };
    }
    if metrics.is_empty() {
        return Judgement {
            score: 0.0,
            verdict: JudgeVerdict::Fail,
            reason: "no metrics to judge".to_string(),
            metrics,
        };
    }

    let largest = metrics
        .iter()
        .map(|m| effective_weight(m.weight))
        .fold(0.0, f64::max);
    if largest <= 0.0 {
        return Judgement {
            score: 0.0,
            verdict: JudgeVerdict::Fail,
            reason: format!(
                "no metric has a positive weight ({} metrics)",
                metrics.len()
            ),
            metrics,
        };
    }
    // Huge weights are scaled down by a power of two, which is exact, so that no sum overflows.
    let scale = if largest > 2f64.powi(1000) {
        2f64.powi(-1000)
    } else {
        1.0
    };
    let (mut passing, mut total) = (0.0f64, 0.0f64);
    for m in &metrics {
        let w = effective_weight(m.weight) * scale;
        total += w;
        if !fails(m) {
            passing += w;
        }
    }
    let score = (100.0 * passing / total).clamp(0.0, 100.0);
    let verdict = if score >= config.pass_score {
        JudgeVerdict::Pass
    } else if score >= config.marginal_score {
        JudgeVerdict::Marginal
    } else {
        JudgeVerdict::Fail
    };

    let mut reason = format!(
        "score {} (pass at {}, marginal at {}): {}",
        number(score),
        number(config.pass_score),
        number(config.marginal_score),
        verdict.as_str()
    );
    let failing: Vec<String> = metrics
        .iter()
        .filter(|m| fails(m))
        .map(|m| format!("{:?} ({})", m.name, m.classification.as_str()))
        .collect();
    if failing.is_empty() {
        let _ = write!(reason, "; all {} metrics pass", metrics.len());
    } else {
        let _ = write!(reason, "; not passing: {}", failing.join(", "));
    }
    let undecided: Vec<String> = metrics
        .iter()
        .filter(|m| m.classification == Classification::Undecided)
        .map(|m| format!("{:?}", m.name))
        .collect();
    if !undecided.is_empty() {
        let _ = write!(reason, " (not yet decided: {})", undecided.join(", "));
    }
    Judgement {
        score,
        verdict,
        metrics,
        reason,
    }
}

fn effective_weight(weight: f64) -> f64 {
    if weight.is_finite() && weight > 0.0 {
        weight
    } else {
        0.0
    }
}

pub(super) fn check_config(config: &MetricConfig) -> Result<(), String> {
    if !(config.alpha > 0.0 && config.alpha <= 1.0) {
        return Err(format!("alpha must be in (0, 1], got {}", config.alpha));
    }
    if !(config.effect_floor >= 0.0 && config.effect_floor.is_finite()) {
        return Err(format!(
            "effect_floor must be a number >= 0, got {}",
            config.effect_floor
        ));
    }
    Ok(())
}

pub(super) fn classify_values(
    config: &MetricConfig,
    mut verdict: MetricVerdict,
    canary: &[f64],
    baseline: &[f64],
) -> MetricVerdict {
    let usable = |values: &[f64]| values.iter().filter(|v| !v.is_nan()).count();
    let (n_canary, n_baseline) = (usable(canary), usable(baseline));
    verdict.samples = (count(n_canary), count(n_baseline));
    let ignored = (canary.len() - n_canary) + (baseline.len() - n_baseline);
    let ignored = if ignored > 0 {
        format!(" ({ignored} NaN values ignored)")
    } else {
        String::new()
    };

    let need = config.min_samples;
    if n_canary < need || n_baseline < need {
        verdict.reason = format!(
            "{}: not enough data: {}, need {need}{ignored}",
            config.name,
            shortfall(n_canary, n_baseline, need, "samples")
        );
        return verdict;
    }
    let Some(mw) = stats::mann_whitney_u(canary, baseline) else {
        verdict.reason = format!(
            "{}: no data: {n_canary} canary and {n_baseline} baseline samples{ignored}",
            config.name
        );
        return verdict;
    };
    verdict.p_value = Some(mw.p_value);
    verdict.shift = finite(mw.hodges_lehmann);
    verdict.canary_summary = finite(mw.median_a);
    verdict.baseline_summary = finite(mw.median_b);
    if mw.median_a.is_nan() || mw.median_b.is_nan() {
        verdict.reason = format!(
            "{}: cannot compare: a median is undefined (its middle values are -inf and +inf)",
            config.name
        );
        return verdict;
    }
    conclude(
        config,
        verdict,
        mw.p_value,
        mw.median_a,
        mw.median_b,
        number,
    )
}

pub(super) fn classify_counts(
    config: &MetricConfig,
    mut verdict: MetricVerdict,
    (canary_errors, canary_total): (u64, u64),
    (baseline_errors, baseline_total): (u64, u64),
) -> MetricVerdict {
    verdict.samples = (canary_total, baseline_total);
    for (side, errors, total) in [
        ("canary", canary_errors, canary_total),
        ("baseline", baseline_errors, baseline_total),
    ] {
        if errors > total {
            verdict.reason = format!(
                "{}: invalid counts: the {side} has {errors} errors out of {total} requests",
                config.name
            );
            return verdict;
        }
    }
    let need = config.min_requests;
    if canary_total < need || baseline_total < need {
        verdict.reason = format!(
            "{}: not enough data: {}, need {need}",
            config.name,
            shortfall(canary_total, baseline_total, need, "requests")
        );
        return verdict;
    }
    let Some(test) =
        exact_two_proportion(canary_errors, canary_total, baseline_errors, baseline_total)
    else {
        verdict.reason = format!(
            "{}: no data: {canary_total} canary and {baseline_total} baseline requests",
            config.name
        );
        return verdict;
    };
    verdict.p_value = Some(test.p_value);
    verdict.shift = Some(test.difference);
    verdict.canary_summary = Some(test.rate_a);
    verdict.baseline_summary = Some(test.rate_b);
    conclude(
        config,
        verdict,
        test.p_value,
        test.rate_a,
        test.rate_b,
        percent,
    )
}

/// The classification from the p-value and the two (non-NaN) summaries.
pub(super) fn conclude(
    config: &MetricConfig,
    mut verdict: MetricVerdict,
    p_value: f64,
    canary: f64,
    baseline: f64,
    show: fn(f64) -> String,
) -> MetricVerdict {
    let effect = relative_change(canary, baseline);
    let change = canary.partial_cmp(&baseline).unwrap_or(Ordering::Equal);
    let significant = p_value < config.alpha;
    // An undefined relative change (from a baseline of 0, or to infinity) is beyond any floor.
    let beyond_floor = effect.map_or(true, |e| e.abs() > config.effect_floor);
    let direction = config.kind.direction();

    let (classification, outcome) = if !significant {
        (
            Classification::Pass,
            format!(
                "pass, no significant difference (alpha {})",
                number(config.alpha)
            ),
        )
    } else if change == Ordering::Equal {
        (
            Classification::Pass,
            "pass, significant but the summaries are equal".to_string(),
        )
    } else if !beyond_floor {
        (
            Classification::Pass,
            format!(
                "pass, significant but within the {} effect floor",
                signed_percent(config.effect_floor).trim_start_matches('+')
            ),
        )
    } else if change == Ordering::Greater {
        let outcome = if direction == Direction::Decrease {
            "high, which passes: only a decrease fails this metric"
        } else {
            "high"
        };
        (Classification::High, outcome.to_string())
    } else {
        let outcome = if direction == Direction::Increase {
            "low, an improvement"
        } else {
            "low"
        };
        (Classification::Low, outcome.to_string())
    };

    verdict.passed = match classification {
        Classification::Pass => true,
        Classification::High => direction == Direction::Decrease,
        Classification::Low => direction == Direction::Increase,
        Classification::NoData => false,
        Classification::Undecided => true,
    };
    verdict.classification = classification;
    verdict.effect = effect;
    let effect_text = match effect {
        Some(e) => signed_percent(e),
        None => "relative change undefined".to_string(),
    };
    verdict.reason = format!(
        "{} {} vs {} ({effect_text}, p={}): {outcome}",
        config.name,
        show(canary),
        show(baseline),
        p_text(p_value)
    );
    verdict
}

/// The two error rates compared with the exact conditional test: given all errors of both
/// sides, the canary's share is binomial with its share of the requests when the rates are
/// equal. Two-sided p-value (twice the smaller tail, at most 1). Unlike the z-test it stays at
/// its nominal level when errors are rare and the split is uneven (1:9 at the first step).
fn exact_two_proportion(
    errors_a: u64,
    total_a: u64,
    errors_b: u64,
    total_b: u64,
) -> Option<stats::TwoProportion> {
    let trial = super::sequential::Trial {
        canary_events: errors_a,
        canary_requests: total_a,
        primary_events: errors_b,
        primary_requests: total_b,
    };
    let high = super::sequential::conditional_p(&trial, 1.0, true)?;
    let low = super::sequential::conditional_p(&trial, 1.0, false)?;
    let z = stats::two_proportion_z(errors_a, total_a, errors_b, total_b)?;
    Some(stats::TwoProportion {
        p_value: (2.0 * high.min(low)).clamp(0.0, 1.0),
        ..z
    })
}

/// `(canary − baseline) / |baseline|`, 0 for equal values, `None` when not a finite number.
pub(super) fn relative_change(canary: f64, baseline: f64) -> Option<f64> {
    if canary == baseline {
        return Some(0.0);
    }
    finite((canary - baseline) / baseline.abs())
}

pub(super) fn finite(x: f64) -> Option<f64> {
    x.is_finite().then_some(x)
}

pub(super) fn count(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

/// "4 canary samples", "3 baseline requests" or "4 canary and 3 baseline samples".
pub(super) fn shortfall<T: PartialOrd + std::fmt::Display>(
    canary: T,
    baseline: T,
    need: T,
    unit: &str,
) -> String {
    match (canary < need, baseline < need) {
        (true, true) => format!("{canary} canary and {baseline} baseline {unit}"),
        (true, false) => format!("{canary} canary {unit}"),
        _ => format!("{baseline} baseline {unit}"),
    }
}

/// A number for people: integers as such, otherwise 4 significant digits, exponents for the very
/// large and very small.
pub(super) fn number(x: f64) -> String {
    if !x.is_finite() {
        return format!("{x}");
    }
    if x == 0.0 {
        return "0".to_string();
    }
    let magnitude = x.abs().log10().floor();
    if !(-4.0..15.0).contains(&magnitude) {
        return format!("{x:.3e}");
    }
    let decimals = (3.0 - magnitude).max(0.0) as usize;
    let text = format!("{x:.decimals$}");
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        text
    }
}

/// A rate as a percentage: 0.02 → "2%".
pub(super) fn percent(rate: f64) -> String {
    format!("{}%", number(rate * 100.0))
}

/// A relative change as a signed percentage: 0.3826 → "+38%", -0.031 → "-3.1%".
pub(super) fn signed_percent(change: f64) -> String {
    let pct = change * 100.0;
    if pct.abs() >= 10.0 {
        format!("{pct:+.0}%")
    } else {
        format!("{pct:+.1}%")
    }
}

/// A p-value: 4 decimals down to 0.0001, then an exponent.
pub(super) fn p_text(p: f64) -> String {
    if p == 0.0 {
        "0".to_string()
    } else if p >= 1e-4 {
        let text = format!("{p:.4}");
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        format!("{p:.1e}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    use crate::analysis::rng::SplitMix as Rng;

    /// `n` log-normal latencies (σ = 0.3) around `median`.
    fn latencies(seed: u64, n: usize, median: f64) -> Vec<f64> {
        let mut rng = Rng(seed);
        (0..n)
            .map(|_| median * (0.3 * rng.normal()).exp())
            .collect()
    }

    fn values(canary: Vec<f64>, baseline: Vec<f64>) -> Sample {
        Sample::Values { canary, baseline }
    }

    fn counts(ce: u64, ct: u64, be: u64, bt: u64) -> Sample {
        Sample::Counts {
            canary_errors: ce,
            canary_total: ct,
            baseline_errors: be,
            baseline_total: bt,
        }
    }

    fn latency(name: &str) -> MetricConfig {
        MetricConfig::new(name, Measure::Latency)
    }

    fn errors(name: &str) -> MetricConfig {
        MetricConfig::new(name, Measure::ErrorRate)
    }

    fn generic(name: &str, direction: Direction) -> MetricConfig {
        MetricConfig::new(name, Measure::Generic { direction })
    }

    fn passing_sample() -> Sample {
        let same = latencies(7, 50, 100.0);
        values(same.clone(), same)
    }

    fn high_sample() -> Sample {
        values(latencies(1, 200, 140.0), latencies(2, 200, 100.0))
    }

    #[test]
    fn identical_samples_pass() {
        let same = latencies(3, 100, 120.0);
        let v = classify(&latency("p99 latency"), &values(same.clone(), same));
        assert_eq!(v.classification, Classification::Pass);
        assert!(v.passed);
        assert_eq!(
            (v.p_value, v.effect, v.shift),
            (Some(1.0), Some(0.0), Some(0.0))
        );
        assert_eq!(v.samples, (100, 100));
        assert!(v
            .reason
            .ends_with("pass, no significant difference (alpha 0.05)"));

        let j = judge(
            &JudgeConfig::default(),
            &[(latency("p99 latency"), passing_sample())],
        );
        assert_eq!((j.score, j.verdict), (100.0, JudgeVerdict::Pass));
        assert_eq!(
            j.reason,
            "score 100 (pass at 95, marginal at 75): pass; all 1 metrics pass"
        );
    }

    #[test]
    fn different_draws_of_one_distribution_pass() {
        for seed in 0..20 {
            let sample = values(
                latencies(2 * seed, 300, 100.0),
                latencies(2 * seed + 1, 300, 100.0),
            );
            let v = classify(&latency("p50 latency"), &sample);
            assert_eq!(v.classification, Classification::Pass, "{}", v.reason);
            assert!(v.effect.is_some_and(|e| e.abs() < 0.1), "{v:?}");
        }
    }

    #[test]
    fn forty_percent_latency_regression_is_high_and_fails() {
        let v = classify(&latency("p99 latency"), &high_sample());
        assert_eq!(v.classification, Classification::High);
        assert!(!v.passed);
        assert!(v.p_value.is_some_and(|p| p < 1e-10), "{v:?}");
        assert!(v.effect.is_some_and(|e| (0.3..0.5).contains(&e)), "{v:?}");
        assert!(v.shift.is_some_and(|s| s > 25.0), "{v:?}");
        assert!(v.reason.starts_with("p99 latency "), "{}", v.reason);
        assert!(v.reason.ends_with("): high"), "{}", v.reason);

        // Alone it is the whole score.
        let j = judge(
            &JudgeConfig::default(),
            &[(latency("p99 latency"), high_sample())],
        );
        assert_eq!((j.score, j.verdict), (0.0, JudgeVerdict::Fail));
        assert!(
            j.reason.ends_with("not passing: \"p99 latency\" (high)"),
            "{}",
            j.reason
        );

        // Next to a passing metric, half of it.
        let j = judge(
            &JudgeConfig::default(),
            &[
                (latency("p99 latency"), high_sample()),
                (errors("errors"), counts(10, 1000, 10, 1000)),
            ],
        );
        assert_eq!((j.score, j.verdict), (50.0, JudgeVerdict::Fail));
    }

    #[test]
    fn reason_shows_summaries_effect_and_p() {
        // Medians 412 and 298, fully separated, 21 against 21.
        // scipy.stats.mannwhitneyu(c, b, alternative="two-sided", method="asymptotic"):
        // U=441.0, p=3.125399998400872e-08.
        let baseline: Vec<f64> = (0..21).map(|i| f64::from(298 + i - 10)).collect();
        let canary: Vec<f64> = (0..21).map(|i| f64::from(412 + i - 10)).collect();
        let v = classify(&latency("P99 latency"), &values(canary, baseline));
        assert_eq!(v.reason, "P99 latency 412 vs 298 (+38%, p=3.1e-8): high");
        assert!((v.p_value.unwrap() - 3.125399998400872e-08).abs() < 1e-18);
        assert_eq!(
            (v.canary_summary, v.baseline_summary),
            (Some(412.0), Some(298.0))
        );
        assert_eq!(v.effect, Some(114.0 / 298.0));
        assert_eq!(v.shift, Some(114.0));
    }

    #[test]
    fn small_significant_shift_passes_thanks_to_the_effect_floor() {
        let sample = values(latencies(11, 5000, 103.0), latencies(12, 5000, 100.0));
        let v = classify(&latency("p50 latency"), &sample);
        assert!(v.p_value.is_some_and(|p| p < 0.05), "{v:?}");
        assert!(v.effect.is_some_and(|e| (0.0..0.1).contains(&e)), "{v:?}");
        assert_eq!(v.classification, Classification::Pass);
        assert!(v.passed);
        assert!(
            v.reason
                .ends_with("pass, significant but within the 10% effect floor"),
            "{}",
            v.reason
        );

        // The floor is what let it pass: at 1% the same data is high.
        let strict = MetricConfig {
            effect_floor: 0.01,
            ..latency("p50 latency")
        };
        assert_eq!(
            classify(&strict, &sample).classification,
            Classification::High
        );
    }

    #[test]
    fn too_few_samples_is_no_data_never_pass() {
        let sample = values(vec![100.0; 4], latencies(5, 50, 100.0));
        let v = classify(&latency("p99 latency"), &sample);
        assert_eq!(v.classification, Classification::NoData);
        assert!(!v.passed);
        assert_eq!(
            v.reason,
            "p99 latency: not enough data: 4 canary samples, need 10"
        );
        assert_eq!((v.p_value, v.samples), (None, (4, 50)));

        let v = classify(&latency("p99"), &values(vec![1.0; 3], vec![1.0; 2]));
        assert_eq!(
            v.reason,
            "p99: not enough data: 3 canary and 2 baseline samples, need 10"
        );

        // NoData contributes 0 to the score.
        let j = judge(
            &JudgeConfig::default(),
            &[
                (latency("p99 latency"), sample),
                (latency("p50 latency"), passing_sample()),
            ],
        );
        assert_eq!((j.score, j.verdict), (50.0, JudgeVerdict::Fail));
        assert!(
            j.reason.contains("\"p99 latency\" (no data)"),
            "{}",
            j.reason
        );

        // Even with min_samples 0 an empty sample is no data.
        let lax = MetricConfig {
            min_samples: 0,
            ..latency("p99")
        };
        let v = classify(&lax, &values(vec![], vec![1.0]));
        assert_eq!(
            (v.classification, v.passed),
            (Classification::NoData, false)
        );
    }

    #[test]
    fn error_rate_2_percent_vs_half_a_percent_is_high() {
        let v = classify(&errors("error rate"), &counts(100, 5000, 25, 5000));
        assert_eq!(v.classification, Classification::High);
        assert!(!v.passed);
        // Exact conditional test: 100 of the 125 errors in the canary, half the requests:
        // p = 2·P(X ≥ 100 | Bin(125, ½)) = 8.08544054685349e-12 (exact rational arithmetic).
        let p = v.p_value.unwrap_or(f64::NAN);
        assert!((p / 8.08544054685349e-12 - 1.0).abs() < 1e-9, "{p}");
        assert_eq!(
            (v.canary_summary, v.baseline_summary),
            (Some(0.02), Some(0.005))
        );
        assert_eq!(v.effect, Some(3.0));
        assert_eq!(v.samples, (5000, 5000));
        assert_eq!(v.reason, "error rate 2% vs 0.5% (+300%, p=8.1e-12): high");
    }

    #[test]
    fn error_rate_under_min_requests_is_no_data() {
        let v = classify(&errors("error rate"), &counts(20, 50, 0, 5000));
        assert_eq!(
            (v.classification, v.passed),
            (Classification::NoData, false)
        );
        assert_eq!(
            v.reason,
            "error rate: not enough data: 50 canary requests, need 100"
        );
        assert_eq!(v.samples, (50, 5000));
    }

    #[test]
    fn errors_from_a_clean_baseline_are_high_without_a_relative_effect() {
        // 40 of 1000 against 0 of 1000: z = 6.38…, significant; relative change undefined.
        let v = classify(&errors("error rate"), &counts(40, 1000, 0, 1000));
        assert_eq!(v.classification, Classification::High);
        assert_eq!(v.effect, None);
        assert_eq!(v.shift, Some(0.04));
        assert!(
            v.reason.contains("(relative change undefined, p="),
            "{}",
            v.reason
        );
        // No errors on either side: a pass.
        let v = classify(&errors("error rate"), &counts(0, 1000, 0, 1000));
        assert_eq!(
            (v.classification, v.effect, v.p_value),
            (Classification::Pass, Some(0.0), Some(1.0))
        );
    }

    #[test]
    fn critical_no_data_fails_outright() {
        let critical = MetricConfig {
            critical: true,
            ..latency("p99 latency")
        };
        let j = judge(
            &JudgeConfig::default(),
            &[
                (critical, values(vec![100.0; 3], latencies(1, 50, 100.0))),
                (latency("p50 latency"), passing_sample()),
                (errors("error rate"), counts(1, 1000, 1, 1000)),
                (latency("p90 latency"), passing_sample()),
            ],
        );
        assert_eq!((j.score, j.verdict), (0.0, JudgeVerdict::Fail));
        assert_eq!(
            j.reason,
            "critical metric \"p99 latency\" failed: p99 latency: not enough data: 3 canary \
             samples, need 10"
        );
        assert_eq!(j.metrics.len(), 4);
        assert_eq!(j.metrics[1].classification, Classification::Pass);
    }

    #[test]
    fn critical_high_fails_outright_but_critical_low_latency_does_not() {
        let critical = |name: &str| MetricConfig {
            critical: true,
            ..latency(name)
        };
        let j = judge(
            &JudgeConfig::default(),
            &[
                (critical("p99 latency"), high_sample()),
                (latency("p50 latency"), passing_sample()),
            ],
        );
        assert_eq!((j.score, j.verdict), (0.0, JudgeVerdict::Fail));
        assert!(j
            .reason
            .starts_with("critical metric \"p99 latency\" failed: p99 latency "));

        // A critical latency that improved (canary faster) is Low and passes.
        let faster = values(latencies(1, 200, 60.0), latencies(2, 200, 100.0));
        let j = judge(
            &JudgeConfig::default(),
            &[(critical("p99 latency"), faster)],
        );
        assert_eq!(j.metrics[0].classification, Classification::Low);
        assert!(j.metrics[0].reason.ends_with("low, an improvement"));
        assert_eq!((j.score, j.verdict), (100.0, JudgeVerdict::Pass));
    }

    #[test]
    fn directions_decide_which_change_fails() {
        let up = high_sample();
        let down = values(latencies(1, 200, 60.0), latencies(2, 200, 100.0));
        let cases = [
            (Direction::Increase, &up, Classification::High, false),
            (Direction::Increase, &down, Classification::Low, true),
            (Direction::Decrease, &up, Classification::High, true),
            (Direction::Decrease, &down, Classification::Low, false),
            (Direction::Either, &up, Classification::High, false),
            (Direction::Either, &down, Classification::Low, false),
        ];
        for (direction, sample, class, passed) in cases {
            let v = classify(&generic("throughput", direction), sample);
            assert_eq!(
                (v.classification, v.passed),
                (class, passed),
                "{direction:?}: {v:?}"
            );
        }
        // Generic metrics take counts too.
        let v = classify(
            &generic("cache misses", Direction::Either),
            &counts(25, 5000, 100, 5000),
        );
        assert_eq!((v.classification, v.passed), (Classification::Low, false));
        assert_eq!(v.effect, Some(-0.75));
    }

    #[test]
    fn score_is_weighted() {
        let weighted = |config: MetricConfig, weight: f64| MetricConfig { weight, ..config };
        let metrics = [
            (weighted(latency("a"), 3.0), passing_sample()),
            (weighted(latency("b"), 1.0), high_sample()),
            (weighted(latency("c"), 1.0), values(vec![], vec![])),
        ];
        // 100 × 3 / (3 + 1 + 1) = 60.
        let j = judge(&JudgeConfig::default(), &metrics);
        assert_eq!((j.score, j.verdict), (60.0, JudgeVerdict::Fail));
        assert_eq!(
            j.reason,
            "score 60 (pass at 95, marginal at 75): fail; not passing: \"b\" (high), \"c\" (no data)"
        );
        // Thresholds are inclusive.
        let marginal = JudgeConfig {
            pass_score: 95.0,
            marginal_score: 60.0,
        };
        assert_eq!(judge(&marginal, &metrics).verdict, JudgeVerdict::Marginal);
        let pass = JudgeConfig {
            pass_score: 60.0,
            marginal_score: 50.0,
        };
        assert_eq!(judge(&pass, &metrics).verdict, JudgeVerdict::Pass);

        // 19 of 20 equal weights pass: exactly 95, a pass by default.
        let mut many: Vec<(MetricConfig, Sample)> = (0..19)
            .map(|i| (latency(&format!("m{i}")), passing_sample()))
            .collect();
        many.push((latency("bad"), high_sample()));
        let j = judge(&JudgeConfig::default(), &many);
        assert_eq!((j.score, j.verdict), (95.0, JudgeVerdict::Pass));
        // A heavier bad metric: 19 / 21 → 90.476…, marginal.
        many[19].0.weight = 2.0;
        let j = judge(&JudgeConfig::default(), &many);
        assert!((j.score - 1900.0 / 21.0).abs() < 1e-12);
        assert_eq!(j.verdict, JudgeVerdict::Marginal);

        // Weights that are not finite numbers ≥ 0 count as 0.
        let metrics = [
            (weighted(latency("a"), 1.0), passing_sample()),
            (weighted(latency("b"), f64::NAN), high_sample()),
            (weighted(latency("c"), -5.0), high_sample()),
            (weighted(latency("d"), f64::INFINITY), high_sample()),
        ];
        let j = judge(&JudgeConfig::default(), &metrics);
        assert_eq!((j.score, j.verdict), (100.0, JudgeVerdict::Pass));
        assert_eq!(j.metrics[1].weight, 0.0);
        // Huge weights don't overflow the sums.
        let metrics = [
            (weighted(latency("a"), f64::MAX), passing_sample()),
            (weighted(latency("b"), f64::MAX), high_sample()),
        ];
        assert_eq!(judge(&JudgeConfig::default(), &metrics).score, 50.0);
    }

    #[test]
    fn nothing_to_judge_fails() {
        let j = judge(&JudgeConfig::default(), &[]);
        assert_eq!(
            (j.score, j.verdict, j.reason.as_str()),
            (0.0, JudgeVerdict::Fail, "no metrics to judge")
        );
        let zero = MetricConfig {
            weight: 0.0,
            ..latency("a")
        };
        let j = judge(&JudgeConfig::default(), &[(zero, passing_sample())]);
        assert_eq!((j.score, j.verdict), (0.0, JudgeVerdict::Fail));
        assert_eq!(j.reason, "no metric has a positive weight (1 metrics)");
    }

    #[test]
    fn nan_input_does_not_panic() {
        let nan = f64::NAN;
        // NaNs are dropped; what is left is judged.
        let mut canary = latencies(1, 200, 140.0);
        let mut baseline = latencies(2, 200, 100.0);
        canary.extend([nan; 50]);
        baseline.insert(0, nan);
        let v = classify(&latency("p99"), &values(canary, baseline));
        assert_eq!(
            (v.classification, v.samples),
            (Classification::High, (200, 200))
        );

        let v = classify(&latency("p99"), &values(vec![nan; 30], vec![1.0; 30]));
        assert_eq!(v.classification, Classification::NoData);
        assert_eq!(
            v.reason,
            "p99: not enough data: 0 canary samples, need 10 (30 NaN values ignored)"
        );

        // Infinite latencies (timeouts) in the canary: its median is +inf, high.
        let mut canary = vec![f64::INFINITY; 20];
        canary.extend([100.0; 10]);
        let v = classify(&latency("p99"), &values(canary, latencies(3, 30, 100.0)));
        assert_eq!(
            (v.classification, v.effect, v.canary_summary),
            (Classification::High, None, None)
        );
        // A median between -inf and +inf cannot be compared.
        let mut odd = vec![f64::NEG_INFINITY; 10];
        odd.extend([f64::INFINITY; 10]);
        let v = classify(
            &generic("x", Direction::Either),
            &values(odd, vec![1.0; 20]),
        );
        assert_eq!(v.classification, Classification::NoData, "{v:?}");

        // Invalid settings are no data, never a silent pass.
        for config in [
            MetricConfig {
                alpha: nan,
                ..latency("p99")
            },
            MetricConfig {
                alpha: 0.0,
                ..latency("p99")
            },
            MetricConfig {
                alpha: 1.5,
                ..latency("p99")
            },
            MetricConfig {
                effect_floor: nan,
                ..latency("p99")
            },
            MetricConfig {
                effect_floor: -0.1,
                ..latency("p99")
            },
        ] {
            let v = classify(&config, &passing_sample());
            assert_eq!(v.classification, Classification::NoData);
            assert!(
                v.reason.starts_with("p99: invalid configuration: "),
                "{}",
                v.reason
            );
        }
        let j = judge(
            &JudgeConfig {
                pass_score: nan,
                marginal_score: nan,
            },
            &[(latency("p99"), passing_sample())],
        );
        assert_eq!((j.score, j.verdict), (100.0, JudgeVerdict::Fail));
    }

    #[test]
    fn samples_of_the_wrong_shape_or_impossible_counts_are_no_data() {
        let v = classify(&latency("p99"), &counts(1, 1000, 1, 1000));
        assert_eq!(v.classification, Classification::NoData);
        assert_eq!(
            v.reason,
            "p99: a latency metric needs value samples, got request counts"
        );

        let v = classify(&errors("errors"), &counts(1001, 1000, 1, 1000));
        assert_eq!(v.classification, Classification::NoData);
        assert_eq!(
            v.reason,
            "errors: invalid counts: the canary has 1001 errors out of 1000 requests"
        );

        // Error ratios per interval are values: Mann–Whitney, an increase fails.
        let v = classify(
            &errors("error ratio"),
            &values(vec![0.05; 12], vec![0.01; 12]),
        );
        assert_eq!((v.classification, v.passed), (Classification::High, false));
    }

    #[test]
    fn reports_round_trip_through_json() {
        let j = judge(
            &JudgeConfig::default(),
            &[
                (latency("p99 latency"), high_sample()),
                (errors("error rate"), counts(100, 5000, 25, 5000)),
                (latency("p50 latency"), values(vec![1.0], vec![])),
            ],
        );
        let text = serde_json::to_string(&j).unwrap();
        assert!(text.contains("\"classification\":\"no-data\""), "{text}");
        let back: Judgement = serde_json::from_str(&text).unwrap();
        // serde_json's default float parsing may be off by an ulp: compare the JSON, then the
        // p-values with a tolerance.
        assert_eq!(
            serde_json::to_value(&back).unwrap(),
            serde_json::from_str::<serde_json::Value>(&text).unwrap()
        );
        assert_eq!(
            (back.score, back.verdict, &back.reason),
            (j.score, j.verdict, &j.reason)
        );
        for (b, m) in back.metrics.iter().zip(&j.metrics) {
            assert_eq!((b.classification, &b.reason), (m.classification, &m.reason));
            let (b, m) = (b.p_value.unwrap_or(0.0), m.p_value.unwrap_or(0.0));
            assert!((b - m).abs() <= 1e-15 * m, "{b} vs {m}");
        }

        let config: MetricConfig =
            serde_json::from_str(r#"{"name": "p99", "kind": {"type": "latency"}}"#).unwrap();
        assert_eq!(config, latency("p99"));
        let config: MetricConfig = serde_json::from_str(
            r#"{"name": "rps", "kind": {"type": "generic", "direction": "decrease"}, "critical": true}"#,
        )
        .unwrap();
        assert_eq!(config.kind.direction(), Direction::Decrease);
        assert!(config.critical);
        let sample: Sample = serde_json::from_str(
            r#"{"type": "counts", "canary_errors": 1, "canary_total": 2, "baseline_errors": 0, "baseline_total": 2}"#,
        )
        .unwrap();
        assert_eq!(sample, counts(1, 2, 0, 2));
        assert_eq!(
            serde_json::from_str::<JudgeConfig>("{}").unwrap(),
            JudgeConfig::default()
        );
    }

    fn any_f64() -> impl Strategy<Value = f64> {
        prop_oneof![
            4 => -1e3f64..1e3,
            2 => any::<f64>(),
            1 => Just(f64::NAN),
            1 => Just(f64::INFINITY),
            1 => Just(f64::NEG_INFINITY),
            1 => Just(0.0),
        ]
    }

    fn any_config() -> impl Strategy<Value = MetricConfig> {
        let kind = prop_oneof![
            Just(Measure::Latency),
            Just(Measure::ErrorRate),
            Just(Measure::Generic {
                direction: Direction::Increase
            }),
            Just(Measure::Generic {
                direction: Direction::Decrease
            }),
            Just(Measure::Generic {
                direction: Direction::Either
            }),
        ];
        let alpha = prop_oneof![3 => Just(0.05), 1 => any_f64()];
        let floor = prop_oneof![3 => Just(0.1), 1 => any_f64()];
        (
            kind,
            any::<bool>(),
            any_f64(),
            alpha,
            floor,
            0usize..15,
            0u64..300,
        )
            .prop_map(
                |(kind, critical, weight, alpha, effect_floor, min_samples, min_requests)| {
                    MetricConfig {
                        name: "m".to_string(),
                        kind,
                        critical,
                        weight,
                        alpha,
                        effect_floor,
                        min_samples,
                        min_requests,
                        quantile: 0.9,
                    }
                },
            )
    }

    fn any_sample() -> impl Strategy<Value = Sample> {
        let vals = || prop::collection::vec(any_f64(), 0..40);
        let count = prop_oneof![0u64..2000, any::<u64>()];
        prop_oneof![
            (vals(), vals()).prop_map(|(canary, baseline)| Sample::Values { canary, baseline }),
            (count.clone(), count.clone(), count.clone(), count)
                .prop_map(|(a, b, c, d)| counts(a, b, c, d)),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        #[test]
        fn judge_never_panics_and_scores_0_to_100(
            metrics in prop::collection::vec((any_config(), any_sample()), 0..6),
            pass_score in any_f64(),
            marginal_score in any_f64(),
        ) {
            let config = JudgeConfig { pass_score, marginal_score };
            let j = judge(&config, &metrics);
            prop_assert!((0.0..=100.0).contains(&j.score), "{}", j.score);
            prop_assert_eq!(j.metrics.len(), metrics.len());
            for (m, (c, _)) in j.metrics.iter().zip(&metrics) {
                if m.classification == Classification::NoData {
                    prop_assert!(!m.passed);
                }
                if let Some(p) = m.p_value {
                    prop_assert!((0.0..=1.0).contains(&p));
                }
                prop_assert!(!m.reason.is_empty());
                prop_assert!(m.weight >= 0.0 && m.weight.is_finite());
                if c.critical && !m.passed {
                    prop_assert_eq!((j.score, j.verdict), (0.0, JudgeVerdict::Fail));
                }
            }
            let expected = if j.score >= pass_score {
                JudgeVerdict::Pass
            } else if j.score >= marginal_score {
                JudgeVerdict::Marginal
            } else {
                JudgeVerdict::Fail
            };
            if j.score > 0.0 {
                prop_assert_eq!(j.verdict, expected);
            }
            prop_assert!(serde_json::to_string(&j).is_ok());
        }
    }
}
