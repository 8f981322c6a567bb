//! The judge over a release's history: what each deployment served in each interval since the
//! analysis began, judged either sequentially (evidence accumulated over the whole release,
//! anytime-valid: [`super::sequential`]) or over a fixed window of the latest intervals.
//!
//! The same history comes from Prometheus (range queries, one point per interval) in a rollout
//! and from a timeline in `aviary simulate`, so a judge configuration can be replayed offline.
//!
//! Per metric and method:
//!
//! | data | sequential | fixed window |
//! |---|---|---|
//! | error counts | rate test, errors per request | exact conditional test over the window |
//! | latency histogram | rate test, requests slower than the pooled quantile's bucket | exact test of the same, over the window |
//! | values (per-step quantiles, …) | Mann–Whitney over the window | Mann–Whitney over the window |
//!
//! Too little data is "not yet decided" (not a failure) while the canary is younger than the
//! judge's window, and "no data" (a failure) after. A sequential test that has crossed neither
//! way is "not yet decided" however old the canary is: no evidence of a regression is not a
//! failed check.

use serde::{Deserialize, Serialize};

use super::judge::{
    begin, classify_counts, classify_values, conclude, judge_verdicts, number, p_text, percent,
    relative_change, signed_percent, Classification, Direction, JudgeConfig, Judgement, Measure,
    MetricConfig, MetricVerdict,
};
use super::sequential::{conditional_p, rate_test, slow_requests, Trial};

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
    /// The default significance level per metric: 0.02 for the sequential tests (their
    /// false-alarm bound holds however often they are looked at; on the benchmark two metrics at
    /// 0.02 roll back at most 0.5% of good releases), 0.05 for the fixed window.
    pub fn default_alpha(self) -> f64 {
        match self {
            Method::Sequential => 0.02,
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
            sequential(
                config,
                verdict,
                &histogram_trials(history, config.quantile),
                "requests slower than the pooled quantile's bucket",
            )
        } else {
            windowed_histogram(config, verdict, recent)
        }
    } else if has_counts && config.kind != Measure::Latency {
        if options.method == Method::Sequential && upward {
            sequential(config, verdict, &count_trials(history), "errors")
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

fn count_trials(history: &[Interval]) -> Vec<Trial> {
    history
        .iter()
        .filter_map(|i| match (&i.canary, &i.primary) {
            (
                Observation::Counts {
                    errors: ce,
                    total: ct,
                },
                Observation::Counts {
                    errors: pe,
                    total: pt,
                },
            ) => Some(Trial {
                canary_events: *ce,
                canary_requests: *ct,
                primary_events: *pe,
                primary_requests: *pt,
            }),
            _ => None,
        })
        .collect()
}

fn histogram_trials(history: &[Interval], quantile: f64) -> Vec<Trial> {
    history
        .iter()
        .filter_map(|i| match (&i.canary, &i.primary) {
            (Observation::Histogram { buckets: c }, Observation::Histogram { buckets: p }) => {
                slow_requests(c, p, quantile)
            }
            _ => None,
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
    trials: &[Trial],
    events: &str,
) -> MetricVerdict {
    let r0 = 1.0 + config.effect_floor;
    let test = rate_test(trials, r0, config.alpha);
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
        "{} {events} {} vs {} ({effect}, {} vs {} requests, anytime p={}, e={})",
        config.name,
        percent(canary),
        percent(primary),
        test.canary_requests,
        test.primary_requests,
        p_text(test.p_value),
        number(test.e_value)
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
    } else if test.pass {
        (
            Classification::Pass,
            true,
            format!("pass: not above the primary's{floor}"),
        )
    } else {
        (
            Classification::Undecided,
            true,
            format!("not yet decided (alpha {})", number(config.alpha)),
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
        }
    }

    fn errors() -> MetricConfig {
        MetricConfig::new("errors", Measure::ErrorRate)
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

    #[test]
    fn a_slower_histogram_is_a_regression() {
        let latency = MetricConfig::new("latency", Measure::Latency);
        let bounds = [0.025, 0.05, 0.1, 0.25, f64::INFINITY];
        let h = |fractions: [f64; 5], n: f64| Observation::Histogram {
            buckets: bounds
                .iter()
                .zip(fractions)
                .map(|(le, f)| (*le, (f * n).round() as u64))
                .collect(),
        };
        let good = [0.5, 0.8, 0.9, 0.99, 1.0];
        let slow = [0.3, 0.6, 0.8, 0.97, 1.0];
        let interval = |canary| Interval {
            canary: h(canary, 400.0),
            primary: h(good, 1600.0),
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
