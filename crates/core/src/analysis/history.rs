//! The judge over a release's history: what each deployment served in each interval since the
//! analysis began (and the primary before it), judged either sequentially (evidence accumulated
//! over the whole release, with a false-alarm bound over the planned analysis however often it
//! is read: [`super::spending`]) or over a fixed window of the latest intervals.
//!
//! The same history comes from Prometheus (range queries, one point per interval) in a rollout
//! and from a timeline in `aviary simulate`, so a judge configuration can be replayed offline.
//!
//! Per metric and method:
//!
//! | data | sequential | fixed window |
//! |---|---|---|
//! | error counts | rate test, errors per request | exact conditional test over the window |
//! | latency histogram | rate test, requests slower than a bucket bound near the quantile | exact test of the same, over the window |
//! | values (per-step quantiles, …) | Mann–Whitney over the window | Mann–Whitney over the window |
//!
//! **The primary's baseline.** The primary served alone before the analysis; those intervals
//! ([`HistoryOptions::before`]) measure its rate, and how much that rate swings from interval to
//! interval, far better than the few events it serves beside the canary. The sequential test
//! adds them to the primary's side, in disjoint chunks, one per planned interval (so every
//! interval stays an exact conditional trial), and widens its boundary by their swing. It does
//! so only while it is the sharper comparison (a baseline that swings more than the primary's
//! own sampling error is worth less than the concurrent primary) and while the primary's events
//! during the release stay within [`DRIFT_Z`] standard scores of the baseline's rate; from the
//! interval they leave it on (a deploy elsewhere, the time of day), the canary is compared with
//! the concurrent primary alone. A latency baseline also picks the bucket bound of the test:
//! the one whose share of the primary's requests above it is nearest to `1 − quantile`, set
//! before the canary served anything (and kept when the canary is compared with the
//! concurrent primary alone: "slow" then means the same in every interval).
//!
//! **Compared with the concurrent primary alone**, the swings of the two deployments'
//! shares from interval to interval are measured from the release's few intervals, so the
//! test's statistic is judged against Student's t ([`super::spending::Swings::Measured`]);
//! with a baseline, the swings cannot exceed twice the primary's baseline swings, and the
//! normal test at that ceiling is used when it says more.
//!
//! Too little data is "not yet decided" (not a failure) while the canary is younger than the
//! judge's window, and "no data" (a failure) after. A sequential test that has not crossed is
//! "not yet decided" until the planned analysis ends, and a pass then: no evidence of a
//! regression is not a failed check.

use serde::{Deserialize, Serialize};

use super::judge::{
    begin, classify_counts, classify_values, conclude, judge_verdicts, number, p_text, percent,
    relative_change, signed_percent, Classification, Direction, JudgeConfig, Judgement, Measure,
    MetricConfig, MetricVerdict,
};
use super::sequential::{above, conditional_p, slow_above, slow_requests, tail_pivot, Trial};
use super::spending::{calendar, excess_variance, spending_test, SpendingTest, Swings, GAMMA};

/// How the judge weighs a release's history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// Anytime-valid tests over every interval since the analysis began (counts and
    /// histograms); values over the window.
    #[default]
    Sequential,
    /// Every metric over the latest `window` intervals only.
    FixedWindow,
}

impl Method {
    pub const NAMES: [&'static str; 2] = ["sequential", "fixed-window"];

    pub fn as_str(self) -> &'static str {
        match self {
            Method::Sequential => "sequential",
            Method::FixedWindow => "fixed-window",
        }
    }
    /// The default significance level per metric: 0.005 for the sequential tests (their
    /// false-alarm bound holds over the whole planned analysis however often they are looked
    /// at; on the benchmark two metrics at 0.005 roll back at most 1% of good releases, noisy
    /// traffic included), 0.05 for the fixed window.
    pub fn default_alpha(self) -> f64 {
        match self {
            Method::Sequential => 0.005,
            Method::FixedWindow => 0.05,
        }
    }

    /// The default effect floor: none for the sequential tests (a rate ratio above 1 is what
    /// they look for; a floor costs them much of their power on latency), 10% for the fixed
    /// window.
    pub fn default_effect_floor(self) -> f64 {
        match self {
            Method::Sequential => 0.0,
            Method::FixedWindow => 0.1,
        }
    }
}

/// What one deployment served in one interval, for one metric.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Observation {
    /// Nothing was measured.
    Missing,
    /// Errors out of requests.
    Counts { errors: u64, total: u64 },
    /// A latency histogram: `(upper bound, cumulative count)` per bucket, Prometheus' `le`
    /// series (+inf allowed).
    Histogram { buckets: Vec<(f64, u64)> },
    /// Values (per-step quantiles and the like); NaNs are ignored.
    Values { values: Vec<f64> },
}

/// One interval of a metric: the canary's and the primary's observations.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Interval {
    pub canary: Observation,
    pub primary: Observation,
}

/// How to read a history.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct HistoryOptions {
    pub method: Method,
    /// Intervals in the fixed window (the latest ones), at least 1.
    pub window: usize,
    /// The canary is younger than the judge's window: too little data is not a failure yet.
    pub young: bool,
    /// Intervals in the planned analysis (the Canary's steps times its interval, in judge
    /// steps): the sequential tests spend their alpha over this horizon (and the baseline is
    /// cut in this many chunks). At least 1.
    pub horizon: usize,
    /// The canary's planned share of the traffic summed over those intervals (each step's
    /// weight as a fraction), when the strategy shifts traffic by weight: the sequential tests
    /// then measure time by the canary's share of the traffic so far, so a release held back
    /// (failed checks of other metrics) keeps its alpha for the traffic it has not seen yet.
    pub planned_share: Option<f64>,
    /// Leading intervals of every history that precede the analysis: the primary's own
    /// baseline before the canary existed (canary observations are ignored). The sequential
    /// tests add them, in `horizon` equal chunks, to the primary's side of the release's
    /// intervals; the window ignores them.
    pub before: usize,
}

/// Classifies every metric over its history and judges the canary (see the module
/// documentation). Never panics.
pub fn judge_history(
    config: &JudgeConfig,
    metrics: &[(MetricConfig, Vec<Interval>)],
    options: &HistoryOptions,
) -> Judgement {
    let verdicts = metrics
        .iter()
        .map(|(metric, history)| classify_history(metric, history, options))
        .collect();
    judge_verdicts(config, verdicts)
}

/// Classifies one metric over its history.
pub fn classify_history(
    config: &MetricConfig,
    history: &[Interval],
    options: &HistoryOptions,
) -> MetricVerdict {
    let verdict = match begin(config) {
        Ok(v) => v,
        Err(invalid) => return *invalid,
    };
    let before = options.before.min(history.len());
    let (baseline, history) = history.split_at(before);
    let window = options.window.max(1);
    let recent = &history[history.len().saturating_sub(window)..];
    let has_counts = history
        .iter()
        .any(|i| matches!(i.canary, Observation::Counts { .. }));
    let has_histogram = history
        .iter()
        .any(|i| matches!(i.canary, Observation::Histogram { .. }));
    // Sequential tests look for a regression in one direction: up.
    let upward = config.kind.direction() == Direction::Increase;
    let verdict = if has_histogram {
        if options.method == Method::Sequential && upward {
            let (test, against) = sequential_test(config, history, baseline, options, true);
            sequential(config, verdict, &test, "slow requests", &against)
        } else {
            windowed_histogram(config, verdict, recent)
        }
    } else if has_counts && config.kind != Measure::Latency {
        if options.method == Method::Sequential && upward {
            let (test, against) = sequential_test(config, history, baseline, options, false);
            sequential(config, verdict, &test, "errors", &against)
        } else {
            let (ce, ct) = sum_counts(recent.iter().map(|i| &i.canary));
            let (pe, pt) = sum_counts(recent.iter().map(|i| &i.primary));
            classify_counts(config, verdict, (ce, ct), (pe, pt))
        }
    } else {
        let values = |side: fn(&Interval) -> &Observation| -> Vec<f64> {
            recent
                .iter()
                .flat_map(|i| match side(i) {
                    Observation::Values { values } => values.clone(),
                    _ => Vec::new(),
                })
                .collect()
        };
        let (canary, primary) = (values(|i| &i.canary), values(|i| &i.primary));
        if config.kind == Measure::Latency && has_counts {
            let mut verdict = verdict;
            verdict.reason = format!(
                "{}: a latency metric needs value samples or a histogram, got request counts",
                config.name
            );
            verdict
        } else {
            classify_values(config, verdict, &canary, &primary)
        }
    };
    not_yet_while_young(verdict, options.young)
}

/// Standard scores beyond which the primary's events during the release are no longer those
/// of its baseline (the rate moved: a deploy of something else, the time of day), so the
/// baseline is dropped.
const DRIFT_Z: f64 = 3.0;

/// The sequential test of one metric, and what the canary was compared with. With a baseline
/// (the primary before the analysis), the baseline's events join the primary's side and its
/// interval-to-interval variation sets the allowance for over-dispersion, until the primary's
/// own events during the release say that its rate moved; from then on (and without a
/// baseline) the canary is compared with the concurrent primary alone, with the dispersion its
/// intervals show.
fn sequential_test(
    config: &MetricConfig,
    history: &[Interval],
    baseline: &[Interval],
    options: &HistoryOptions,
    histogram: bool,
) -> (SpendingTest, String) {
    let times = clock(history, options);
    let run = |trials: &[Trial], swings: Swings| {
        spending_test(
            trials,
            1.0 + config.effect_floor,
            config.alpha,
            &times,
            GAMMA,
            swings,
        )
    };
    match against_baseline(config, history, baseline, options, histogram, &run) {
        Ok(done) => done,
        Err(Alone {
            against,
            ceiling,
            pivot,
        }) => {
            let trials = match (histogram, pivot) {
                // The baseline's bound, set before the canary served: the same "slow" in every
                // interval (the pooled quantile's bucket moves with the weight when the canary
                // is slower, and its ratio with it).
                (true, Some(le)) => histogram_trials(history, Bound::Fixed(le)),
                (true, None) => histogram_trials(history, Bound::Pooled(config.quantile)),
                (false, _) => count_trials(history),
            };
            (run(&trials, Swings::Measured { ceiling }), against)
        }
    }
}

/// The canary compared with the concurrent primary alone: how that is described, and the most
/// the two deployments' swings can add (twice the primary's baseline `κ`: neither swings more
/// than the primary did in all), when a steady baseline measured it.
struct Alone {
    against: String,
    ceiling: Option<f64>,
    /// A latency baseline's bucket bound: slow requests are those above it.
    pivot: Option<f64>,
}

impl Alone {
    /// The concurrent primary, slow requests (for a histogram) counted above the baseline's
    /// bound `pivot`, else above each interval's pooled quantile's bucket; no ceiling.
    fn new(histogram: bool, pivot: Option<f64>) -> Alone {
        let against = match pivot {
            Some(le) => format!(
                "the primary (slow: above {}s, its baseline's bucket nearest the quantile)",
                number(le)
            ),
            None if histogram => {
                "the primary (slow: above each interval's pooled quantile's bucket)".to_string()
            }
            None => "the primary".to_string(),
        };
        Alone {
            against,
            ceiling: None,
            pivot,
        }
    }
}

/// The swings of a comparison with the concurrent primary can reach at most this many times the
/// primary's baseline `κ` (its own swings, and the canary's, each at most all of the primary's).
const CEILING_FACTOR: f64 = 2.0;

/// [`sequential_test`] with the baseline on the primary's side, or `Err` with what the canary
/// is compared with instead (the concurrent primary alone: no usable baseline, a baseline less
/// sharp than the primary, or one the primary's rate has left).
fn against_baseline(
    config: &MetricConfig,
    history: &[Interval],
    baseline: &[Interval],
    options: &HistoryOptions,
    histogram: bool,
    run: &dyn Fn(&[Trial], Swings) -> SpendingTest,
) -> Result<(SpendingTest, String), Alone> {
    // The baseline's events per interval: errors, or requests above its own quantile's bound.
    let pivot = if histogram {
        let pooled = sum_histograms(baseline.iter().map(|i| &i.primary));
        Some(tail_pivot(&pooled, config.quantile).ok_or_else(|| Alone::new(histogram, None))?)
    } else {
        None
    };
    let alone = || Alone::new(histogram, pivot);
    let events = |o: &Observation| -> Option<(f64, f64)> {
        match (o, pivot) {
            (Observation::Counts { errors, total }, None) if errors <= total => {
                Some((*errors as f64, *total as f64))
            }
            (Observation::Histogram { buckets }, Some(p)) => {
                above(buckets, p).map(|(e, n)| (e as f64, n as f64))
            }
            _ => None,
        }
    };
    let base: Vec<(f64, f64)> = baseline.iter().filter_map(|i| events(&i.primary)).collect();
    let (base_events, base_requests) = base.iter().fold((0.0, 0.0), |(e, n), b| (e + b.0, n + b.1));
    if base.len() < 2 || base_events <= 0.0 {
        return Err(alone());
    }
    let kappa = excess_variance(&base);
    let rate = base_events / base_requests;
    // Which comparison tells a regression apart better, from the requests alone: the
    // concurrent primary's (conditional variance μ(1 − θ) per interval) or the baseline's (μ
    // inflated by its variation, μ(1 + κμ)), μ the canary's expected events.
    let (mut by_primary, mut by_baseline) = (0.0, 0.0);
    for t in count_requests(history) {
        let (c, q) = (t.0 as f64, t.1 as f64);
        if c > 0.0 && q > 0.0 {
            let mu = rate * c;
            by_primary += mu * q / (c + q);
            by_baseline += mu / (1.0 + kappa * mu);
        }
    }
    if by_baseline <= by_primary {
        return Err(Alone {
            ceiling: Some(CEILING_FACTOR * kappa),
            ..alone()
        });
    }
    let spread = |m: f64| m * (1.0 + kappa * m);
    let base_var: f64 = base.iter().map(|b| spread(rate * b.1)).sum::<f64>() / base_events.powi(2);
    // The first release interval at which the primary's events left the baseline's range.
    let (mut seen, mut expected, mut var) = (0.0, 0.0, 0.0);
    let mut drift = None;
    for (i, interval) in history.iter().enumerate() {
        if let Some((e, n)) = events(&interval.primary) {
            seen += e;
            expected += rate * n;
            var += spread(rate * n);
        }
        let total = var + expected * expected * base_var;
        if total > 0.0 && ((seen - expected) / total.sqrt()).abs() > DRIFT_Z {
            drift = Some(i + 1);
            break;
        }
    }
    let augmented = with_baseline(history, baseline, options.horizon);
    let trials = match pivot {
        Some(le) => histogram_trials(&augmented, Bound::Fixed(le)),
        None => count_trials(&augmented),
    };
    let with = run(&trials, Swings::Known(kappa));
    let against = match pivot {
        Some(le) => format!(
            "the primary and its {} intervals before the analysis (slow: above {}s, its \
             bucket nearest the quantile)",
            baseline.len(),
            number(le)
        ),
        None => format!(
            "the primary and its {} intervals before the analysis",
            baseline.len()
        ),
    };
    match drift {
        Some(at) if with.decided_at.map_or(true, |d| d >= at) => Err(Alone {
            against: format!("the primary alone (its rate left its baseline's at interval {at})"),
            ..alone()
        }),
        _ => Ok((with, against)),
    }
}

/// Information time at the end of each of the release's intervals: the canary's share of the
/// requests so far over its planned share (all of alpha spent at [`SHARE_SPENT`] of it), or the
/// calendar. Shares are set by the weights before each interval's events, so time never
/// depends on the events tested.
fn clock(history: &[Interval], options: &HistoryOptions) -> Vec<f64> {
    match options.planned_share.filter(|p| *p > 0.0) {
        Some(planned) => {
            let mut seen = 0.0;
            count_requests(history)
                .map(|(c, q)| {
                    if c > 0 && q > 0 {
                        seen += c as f64 / (c as f64 + q as f64);
                    }
                    (seen / (SHARE_SPENT * planned)).min(1.0)
                })
                .collect()
        }
        None => {
            let requests: Vec<Trial> = count_requests(history)
                .map(|(c, q)| Trial {
                    canary_requests: c,
                    primary_requests: q,
                    ..Trial::default()
                })
                .collect();
            calendar(&requests, options.horizon)
        }
    }
}

/// The share of the planned traffic by which all of alpha is spent: the canary's observed share
/// scatters around its weight, and the last planned step should not fall short of time 1.
const SHARE_SPENT: f64 = 0.9;

/// The canary's and the primary's requests per interval (counts or histograms), `(0, 0)` where
/// a side has none.
fn count_requests(history: &[Interval]) -> impl Iterator<Item = (u64, u64)> + '_ {
    let requests = |o: &Observation| match o {
        Observation::Counts { total, .. } => *total,
        Observation::Histogram { buckets } => buckets.iter().map(|b| b.1).max().unwrap_or(0),
        _ => 0,
    };
    history
        .iter()
        .map(move |i| (requests(&i.canary), requests(&i.primary)))
}

/// The release's intervals with the primary's baseline history added to their primary side:
/// interval `i` (of the first `horizon`) gets the `i`-th of `horizon` equal, disjoint chunks of
/// `baseline`, so every trial stays independent of the others.
fn with_baseline(history: &[Interval], baseline: &[Interval], horizon: usize) -> Vec<Interval> {
    let horizon = horizon.max(1);
    // Chunks start with the canary's first requests, as the test's time does.
    let start = count_requests(history)
        .position(|(c, q)| c > 0 && q > 0)
        .unwrap_or(history.len());
    history
        .iter()
        .enumerate()
        .map(|(i, interval)| {
            let Some(i) = i.checked_sub(start).filter(|i| *i < horizon) else {
                return interval.clone();
            };
            let chunk = &baseline[i * baseline.len() / horizon..(i + 1) * baseline.len() / horizon];
            let primary = match &interval.primary {
                Observation::Counts { .. } | Observation::Missing
                    if chunk
                        .iter()
                        .any(|c| matches!(c.primary, Observation::Counts { .. })) =>
                {
                    let (e, t) = sum_counts(
                        std::iter::once(&interval.primary).chain(chunk.iter().map(|c| &c.primary)),
                    );
                    Observation::Counts {
                        errors: e,
                        total: t,
                    }
                }
                Observation::Histogram { .. } | Observation::Missing
                    if chunk
                        .iter()
                        .any(|c| matches!(c.primary, Observation::Histogram { .. })) =>
                {
                    Observation::Histogram {
                        buckets: sum_histograms(
                            std::iter::once(&interval.primary)
                                .chain(chunk.iter().map(|c| &c.primary)),
                        ),
                    }
                }
                other => other.clone(),
            };
            Interval {
                canary: interval.canary.clone(),
                primary,
            }
        })
        .collect()
}

/// Too little data while the canary is young is not decided yet, rather than a failure.
fn not_yet_while_young(mut verdict: MetricVerdict, young: bool) -> MetricVerdict {
    let short = verdict.reason.contains("not enough data") || verdict.reason.contains("no data");
    if young && verdict.classification == Classification::NoData && short {
        verdict.classification = Classification::Undecided;
        verdict.passed = true;
        verdict.reason = format!(
            "{} (not yet decided: the canary is younger than the judge's window)",
            verdict.reason
        );
    }
    verdict
}

fn sum_counts<'a>(observations: impl Iterator<Item = &'a Observation>) -> (u64, u64) {
    observations.fold((0u64, 0u64), |(e, t), o| match o {
        Observation::Counts { errors, total } => {
            (e.saturating_add(*errors), t.saturating_add(*total))
        }
        _ => (e, t),
    })
}

/// One trial per interval, in order; an interval without counts on both sides is an empty
/// (unusable) trial, so positions stay calendar time.
fn count_trials(history: &[Interval]) -> Vec<Trial> {
    history
        .iter()
        .map(|i| match (&i.canary, &i.primary) {
            (
                Observation::Counts {
                    errors: ce,
                    total: ct,
                },
                Observation::Counts {
                    errors: pe,
                    total: pt,
                },
            ) => Trial {
                canary_events: *ce,
                canary_requests: *ct,
                primary_events: *pe,
                primary_requests: *pt,
            },
            _ => Trial::default(),
        })
        .collect()
}

/// Where a histogram's slow requests begin.
#[derive(Debug, Clone, Copy)]
enum Bound {
    /// At the bucket bound at or below this quantile of each interval's pooled requests
    /// ([`slow_requests`]).
    Pooled(f64),
    /// Above this bucket bound ([`slow_above`]).
    Fixed(f64),
}

/// One trial per interval, as [`count_trials`].
fn histogram_trials(history: &[Interval], bound: Bound) -> Vec<Trial> {
    history
        .iter()
        .map(|i| match (&i.canary, &i.primary) {
            (Observation::Histogram { buckets: c }, Observation::Histogram { buckets: p }) => {
                match bound {
                    Bound::Pooled(quantile) => slow_requests(c, p, quantile),
                    Bound::Fixed(le) => slow_above(c, p, le),
                }
                .unwrap_or_default()
            }
            _ => Trial::default(),
        })
        .collect()
}

/// Bucket counts summed over intervals, per bound.
fn sum_histograms<'a>(observations: impl Iterator<Item = &'a Observation>) -> Vec<(f64, u64)> {
    let mut sum: Vec<(f64, u64)> = Vec::new();
    for o in observations {
        if let Observation::Histogram { buckets } = o {
            for &(le, n) in buckets {
                match sum.iter_mut().find(|b| b.0 == le) {
                    Some(b) => b.1 = b.1.saturating_add(n),
                    None => sum.push((le, n)),
                }
            }
        }
    }
    sum
}

fn windowed_histogram(
    config: &MetricConfig,
    mut verdict: MetricVerdict,
    recent: &[Interval],
) -> MetricVerdict {
    let canary = sum_histograms(recent.iter().map(|i| &i.canary));
    let primary = sum_histograms(recent.iter().map(|i| &i.primary));
    let Some(trial) = slow_requests(&canary, &primary, config.quantile) else {
        verdict.reason = format!(
            "{}: no data: no requests on a side, or the {} quantile is in the last bucket",
            config.name,
            number(config.quantile)
        );
        return verdict;
    };
    verdict.samples = (trial.canary_requests, trial.primary_requests);
    let need = config.min_requests;
    if trial.canary_requests < need || trial.primary_requests < need {
        verdict.reason = format!(
            "{}: not enough data: {} canary and {} baseline requests, need {need}",
            config.name, trial.canary_requests, trial.primary_requests
        );
        return verdict;
    }
    let (Some(high), Some(low)) = (
        conditional_p(&trial, 1.0, true),
        conditional_p(&trial, 1.0, false),
    ) else {
        verdict.reason = format!("{}: no data", config.name);
        return verdict;
    };
    let share = |e: u64, n: u64| e as f64 / n as f64;
    let (c, p) = (
        share(trial.canary_events, trial.canary_requests),
        share(trial.primary_events, trial.primary_requests),
    );
    verdict.canary_summary = Some(c);
    verdict.baseline_summary = Some(p);
    conclude(
        config,
        verdict,
        (2.0 * high.min(low)).clamp(0.0, 1.0),
        c,
        p,
        percent,
    )
}

/// The sequential rate test's verdict on `trials`.
fn sequential(
    config: &MetricConfig,
    mut verdict: MetricVerdict,
    test: &SpendingTest,
    events: &str,
    against: &str,
) -> MetricVerdict {
    verdict.samples = (test.canary_requests, test.primary_requests);
    if test.canary_requests == 0 || test.primary_requests == 0 {
        verdict.reason = format!(
            "{}: no data: {} canary and {} baseline requests so far",
            config.name, test.canary_requests, test.primary_requests
        );
        return verdict;
    }
    let (canary, primary) = test.rates();
    let (canary, primary) = (canary.unwrap_or(0.0), primary.unwrap_or(0.0));
    verdict.canary_summary = Some(canary);
    verdict.baseline_summary = Some(primary);
    verdict.effect = relative_change(canary, primary);
    verdict.p_value = Some(test.p_value);
    let effect = verdict
        .effect
        .map_or_else(|| "relative change undefined".to_string(), signed_percent);
    let head = format!(
        "{} {events} {} vs {} against {against} ({effect}, {} vs {} requests; {} canary \
         events, {} expected, dispersion {}; p={}, alpha spent {} of {})",
        config.name,
        percent(canary),
        percent(primary),
        test.canary_requests,
        test.primary_requests,
        test.canary_events,
        number(test.expected),
        number(test.dispersion),
        p_text(test.p_value),
        number(test.spent),
        number(config.alpha)
    );
    let floor = if config.effect_floor > 0.0 {
        format!(" by more than {}", signed_percent(config.effect_floor))
    } else {
        String::new()
    };
    let (classification, passed, outcome) = if test.regression {
        (
            Classification::High,
            false,
            format!(
                "high: above the primary's{floor} (decided at interval {})",
                test.decided_at.unwrap_or(0)
            ),
        )
    } else if test.complete {
        (
            Classification::Pass,
            true,
            format!("pass: not above the primary's{floor} over the planned analysis"),
        )
    } else {
        (
            Classification::Undecided,
            true,
            "not yet decided".to_string(),
        )
    };
    verdict.classification = classification;
    verdict.passed = passed;
    verdict.reason = format!("{head}: {outcome}");
    verdict
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(ce: u64, ct: u64, pe: u64, pt: u64) -> Interval {
        Interval {
            canary: Observation::Counts {
                errors: ce,
                total: ct,
            },
            primary: Observation::Counts {
                errors: pe,
                total: pt,
            },
        }
    }

    fn options(method: Method, young: bool) -> HistoryOptions {
        HistoryOptions {
            method,
            window: 5,
            young,
            horizon: 5,
            planned_share: None,
            before: 0,
        }
    }

    fn errors() -> MetricConfig {
        MetricConfig::new("errors", Measure::ErrorRate)
    }

    /// The sequential method's defaults (alpha 0.005, no effect floor).
    fn sequential_errors() -> MetricConfig {
        let mut c = errors();
        c.alpha = Method::Sequential.default_alpha();
        c.effect_floor = Method::Sequential.default_effect_floor();
        c
    }

    #[test]
    fn evidence_accumulates_across_intervals_that_are_each_inconclusive() {
        // The canary errs twice as often; one interval alone is not significant, the release is.
        let one = counts(6, 500, 27, 4500);
        let single = classify_history(
            &errors(),
            std::slice::from_ref(&one),
            &options(Method::FixedWindow, false),
        );
        assert_eq!(
            single.classification,
            Classification::Pass,
            "{}",
            single.reason
        );
        let history = vec![one; 12];
        let v = classify_history(&errors(), &history, &options(Method::Sequential, false));
        assert_eq!(v.classification, Classification::High, "{}", v.reason);
        assert!(!v.passed);
        assert!(v.reason.contains("decided at interval"), "{}", v.reason);
    }

    #[test]
    fn no_evidence_is_not_yet_decided_and_not_a_failure() {
        let history = vec![counts(1, 100, 9, 900); 2];
        let v = classify_history(&errors(), &history, &options(Method::Sequential, false));
        assert_eq!(v.classification, Classification::Undecided, "{}", v.reason);
        assert!(v.passed);
        let j = judge_history(
            &JudgeConfig::default(),
            &[(errors(), history)],
            &options(Method::Sequential, false),
        );
        assert_eq!(j.score, 100.0, "{}", j.reason);
        assert!(j.reason.contains("not yet decided"), "{}", j.reason);
    }

    #[test]
    fn too_little_data_fails_only_once_the_canary_is_older_than_the_window() {
        let latency = MetricConfig::new("p90", Measure::Latency);
        let few = vec![
            Interval {
                canary: Observation::Values {
                    values: vec![0.1, 0.2]
                },
                primary: Observation::Values {
                    values: vec![0.1, 0.2]
                },
            };
            2
        ];
        let young = classify_history(&latency, &few, &options(Method::FixedWindow, true));
        assert_eq!(
            young.classification,
            Classification::Undecided,
            "{}",
            young.reason
        );
        let old = classify_history(&latency, &few, &options(Method::FixedWindow, false));
        assert_eq!(old.classification, Classification::NoData, "{}", old.reason);
        // Counts with no canary request at all, sequentially: the same rule.
        let idle = vec![counts(0, 0, 3, 900); 3];
        let seq = classify_history(&errors(), &idle, &options(Method::Sequential, true));
        assert_eq!(seq.classification, Classification::Undecided);
        let seq = classify_history(&errors(), &idle, &options(Method::Sequential, false));
        assert_eq!(seq.classification, Classification::NoData);
        assert!(!seq.passed);
    }

    #[test]
    fn the_fixed_window_sees_only_the_latest_intervals() {
        // Bad early, good in the window: the fixed window passes, the sequential test does not
        // forget.
        let mut history = vec![counts(40, 500, 20, 4500); 4];
        history.extend(vec![counts(5, 500, 45, 4500); 5]);
        let fixed = classify_history(&errors(), &history, &options(Method::FixedWindow, false));
        assert_eq!(
            fixed.classification,
            Classification::Pass,
            "{}",
            fixed.reason
        );
        let seq = classify_history(&errors(), &history, &options(Method::Sequential, false));
        assert_eq!(seq.classification, Classification::High, "{}", seq.reason);
    }

    fn with_before(before: usize) -> HistoryOptions {
        HistoryOptions {
            before,
            ..options(Method::Sequential, false)
        }
    }

    /// `before` intervals of the primary alone, then the release.
    fn baseline_then(baseline: Vec<(u64, u64)>, release: Vec<Interval>) -> Vec<Interval> {
        baseline
            .into_iter()
            .map(|(errors, total)| Interval {
                canary: Observation::Missing,
                primary: Observation::Counts { errors, total },
            })
            .chain(release)
            .collect()
    }

    #[test]
    fn the_primarys_baseline_finds_what_the_concurrent_primary_alone_cannot() {
        // Rare errors, the canary at four times the rate: the concurrent primary's few errors
        // cannot tell, an hour of its history can.
        let release = vec![counts(2, 500, 2, 1500); 5];
        let alone = classify_history(&sequential_errors(), &release, &with_before(0));
        assert_ne!(
            alone.classification,
            Classification::High,
            "{}",
            alone.reason
        );
        let history = baseline_then(vec![(2, 2000); 60], release);
        let v = classify_history(&sequential_errors(), &history, &with_before(60));
        assert_eq!(v.classification, Classification::High, "{}", v.reason);
        assert!(
            v.reason.contains("its 60 intervals before the analysis"),
            "{}",
            v.reason
        );
        // The same canary at the primary's rate: a pass at the end of the planned analysis.
        let good: Vec<Interval> = (0..5).map(|_| counts(1, 1000, 1, 1000)).collect();
        let v = classify_history(
            &sequential_errors(),
            &baseline_then(vec![(2, 2000); 60], good),
            &with_before(60),
        );
        assert_eq!(v.classification, Classification::Pass, "{}", v.reason);
    }

    #[test]
    fn a_primary_whose_rate_left_its_baseline_is_compared_alone() {
        // Errors went up for everyone (the primary too) after the baseline: the canary is no
        // worse than the primary it runs beside.
        let release = vec![counts(10, 1000, 10, 1000); 5];
        let history = baseline_then(vec![(1, 1000); 60], release);
        let v = classify_history(&sequential_errors(), &history, &with_before(60));
        assert_ne!(v.classification, Classification::High, "{}", v.reason);
        assert!(v.passed);
        assert!(
            v.reason
                .contains("the primary alone (its rate left its baseline's at interval"),
            "{}",
            v.reason
        );
    }

    #[test]
    fn a_baseline_that_swings_from_interval_to_interval_is_not_trusted_over_the_primary() {
        // The same average rate (1%), steady or swinging between 0 and 2% a minute; the canary
        // at 2%. Steady, the baseline is the sharper comparison and finds the regression;
        // swinging, its minutes say little about the canary's, and the concurrent primary is
        // the comparison.
        let release = vec![counts(4, 200, 8, 800); 5];
        let steady = baseline_then(vec![(20, 2000); 60], release.clone());
        let v = classify_history(&sequential_errors(), &steady, &with_before(60));
        assert_eq!(v.classification, Classification::High, "{}", v.reason);
        assert!(v.reason.contains("before the analysis"), "{}", v.reason);
        let swinging: Vec<(u64, u64)> = (0..60)
            .map(|i| (if i % 2 == 0 { 0 } else { 40 }, 2000))
            .collect();
        let v = classify_history(
            &sequential_errors(),
            &baseline_then(swinging, release),
            &with_before(60),
        );
        assert!(v.reason.contains("against the primary ("), "{}", v.reason);
    }

    /// `n` requests in buckets of 25, 50, 100 and 250 ms and +inf, `fractions` of them at or
    /// below each bound.
    fn histogram(fractions: [f64; 5], n: f64) -> Observation {
        let bounds = [0.025, 0.05, 0.1, 0.25, f64::INFINITY];
        Observation::Histogram {
            buckets: bounds
                .iter()
                .zip(fractions)
                .map(|(le, f)| (*le, (f * n).round() as u64))
                .collect(),
        }
    }

    #[test]
    fn a_slower_canary_beside_a_swinging_baseline_is_judged_above_the_baselines_bound() {
        // The primary's minutes before the release swing between two latency profiles (10% and
        // 20% above 0.1 s): the concurrent primary is the comparison, with "slow" still the
        // baseline's bound (0.1 s), whatever the canary's weight does to the pooled quantile.
        let latency = MetricConfig::new("latency", Measure::Latency);
        let (fast, slower) = ([0.5, 0.8, 0.9, 0.99, 1.0], [0.3, 0.6, 0.8, 0.97, 1.0]);
        let baseline = (0..60).map(|i| Interval {
            canary: Observation::Missing,
            primary: histogram(if i % 2 == 0 { fast } else { slower }, 2000.0),
        });
        let release = (1..=5).map(|i| Interval {
            canary: histogram([0.05, 0.1, 0.2, 0.6, 1.0], 100.0 * f64::from(i)),
            primary: histogram(fast, 1000.0 - 100.0 * f64::from(i)),
        });
        let history: Vec<Interval> = baseline.chain(release).collect();
        let v = classify_history(&latency, &history, &with_before(60));
        assert_eq!(v.classification, Classification::High, "{}", v.reason);
        assert!(
            v.reason.contains("against the primary (slow: above 0.1s"),
            "{}",
            v.reason
        );
        // 80% of the canary's 1,500 requests above 0.1 s (the pooled quantile's bucket would
        // have moved to 0.25 s from the 40% step on, and counted 40% of them there).
        assert!(v.reason.contains("1200 canary events"), "{}", v.reason);
    }

    #[test]
    fn a_release_held_back_keeps_its_alpha_for_the_traffic_still_to_come() {
        // Planned: 10% to 50% (1.5 intervals of the canary's share). Five intervals at the
        // planned weights end the analysis; five held at 10% are a third of the way.
        let planned = HistoryOptions {
            planned_share: Some(1.5),
            ..options(Method::Sequential, false)
        };
        let at = |weight: u64| counts(0, 10 * weight, 0, 1000 - 10 * weight);
        let on_plan: Vec<Interval> = [10, 20, 30, 40, 50].into_iter().map(at).collect();
        let times = clock(&on_plan, &planned);
        assert!((times[4] - 1.0).abs() < 1e-9, "{times:?}");
        assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
        let held = vec![at(10); 5];
        let times = clock(&held, &planned);
        assert!((times[4] - 0.5 / 1.35).abs() < 1e-9, "{times:?}");
        let v = classify_history(&sequential_errors(), &held, &planned);
        assert_eq!(v.classification, Classification::Undecided, "{}", v.reason);
        let v = classify_history(&sequential_errors(), &on_plan, &planned);
        assert_eq!(v.classification, Classification::Pass, "{}", v.reason);
        // Without a planned share (A/B testing, blue/green): the calendar.
        let times = clock(&held, &options(Method::Sequential, false));
        assert_eq!(times, vec![0.2, 0.4, 0.6, 0.8, 1.0]);
    }

    #[test]
    fn a_slower_histogram_is_a_regression() {
        let latency = MetricConfig::new("latency", Measure::Latency);
        let good = [0.5, 0.8, 0.9, 0.99, 1.0];
        let slow = [0.3, 0.6, 0.8, 0.97, 1.0];
        let interval = |canary| Interval {
            canary: histogram(canary, 400.0),
            primary: histogram(good, 1600.0),
        };
        let history = vec![interval(slow); 3];
        for method in [Method::Sequential, Method::FixedWindow] {
            let v = classify_history(&latency, &history, &options(method, false));
            assert_eq!(
                v.classification,
                Classification::High,
                "{method:?}: {}",
                v.reason
            );
        }
        let history = vec![interval(good); 6];
        let v = classify_history(&latency, &history, &options(Method::Sequential, false));
        assert!(v.passed, "{}", v.reason);
        assert_ne!(v.classification, Classification::High);
    }
}
