//! The judge benchmark (`cargo bench -p aviary-core --bench judge`): a seeded corpus of
//! releases, each decided by the real engine under several policies, beside an oracle that marks
//! the statistical limit.
//!
//! **Corpus.** Three traffic conditions × (200 good releases + 50 of each of six regressions:
//! error rate ×1.5, ×2, ×5; latency +10%, +25%, +100%), 1,500 releases in all:
//!
//! * `normal`: per-minute traffic log-uniform in 500–4,000 requests, so the canary sees 50–2,000
//!   requests per interval between its 10% and 50% steps;
//! * `low`: ten times less;
//! * `noisy`: normal traffic, plus noise shared by both deployments each minute (latency ×
//!   e^N(0, 0.1), error rate × e^N(0, 0.3)) and noise of each deployment's own (latency ×
//!   e^N(0, 0.03), error rate × e^N(0, 0.3): overdispersed errors).
//!
//! Latency is log-normal (median 10–60 ms, σ 0.3–0.6), recorded in podinfo's (Prometheus'
//! default) histogram buckets; errors are binomial with a baseline rate log-uniform in
//! 0.05–0.5%. A regression multiplies the canary's error rate, or its latency, by its factor.
//!
//! **Policies**, each a Canary decided tick by tick by [`Engine`] with Flagger's defaults
//! (interval 1m, threshold 5, stepWeight 10, maxWeight 50), the traffic of each minute split at
//! the weight the engine had set:
//!
//! * `thresholds`: Flagger's built-ins, success rate ≥ 99% and P99 ≤ 500 ms over the last minute;
//! * `fixed-window`: the judge over a 5-minute window (errors and the latency histogram);
//! * `sequential`: the judge's sequential tests over the whole release (the same metrics), with
//!   the primary's hour before the release as its baseline (the primary's minutes before the
//!   release are drawn like the others, at weight 0).
//!
//! **Calibration**: [`calibration`] draws more good releases (2,000 per condition in the
//! benchmark), decided by the sequential judge alone, so that its false alarms are measured on
//! thousands of releases rather than 200, and the oracle is held to them on as many.
//!
//! **Oracle**: knows the baseline's error rate and latency distribution, pools every canary
//! request of the release (as it runs when promoted: the same minutes the engine's runs see,
//! 10% to 50%), and tests errors (exact binomial) and requests slower than the baseline's P90
//! (exact binomial against 10%), each at half the level, one-sided.

use std::fmt::Write as _;

use crate::analysis::rng::SplitMix as Rng;
use crate::analysis::{judge_history, stats, HistoryOptions, Interval, MetricConfig, Observation};
use crate::engine::config::JUDGE_CHECK;
use crate::engine::{
    sim, Answer, Config, Engine, HookOutcome, MetricOutcome, Phase, Readiness, Request, State,
};
use crate::spec::{self, JudgeKind, JudgeSpec, Provider};

/// podinfo's (Prometheus' default) latency buckets, seconds.
pub const BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    Normal,
    Low,
    Noisy,
}

impl Condition {
    pub const ALL: [Condition; 3] = [Condition::Normal, Condition::Low, Condition::Noisy];

    pub fn as_str(self) -> &'static str {
        match self {
            Condition::Normal => "normal",
            Condition::Low => "low traffic",
            Condition::Noisy => "noisy",
        }
    }
}

/// What the release changes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Class {
    Good,
    /// The canary's error rate times this.
    Errors(f64),
    /// The canary's latency times `1 +` this.
    Latency(f64),
}

impl Class {
    /// The classes in table order, with their number of releases per condition.
    pub const ALL: [(Class, usize); 7] = [
        (Class::Good, 200),
        (Class::Errors(1.5), 50),
        (Class::Errors(2.0), 50),
        (Class::Errors(5.0), 50),
        (Class::Latency(0.10), 50),
        (Class::Latency(0.25), 50),
        (Class::Latency(1.0), 50),
    ];

    pub fn label(self) -> String {
        match self {
            Class::Good => "good (rolled back = false alarm)".to_string(),
            Class::Errors(f) => format!("errors ×{f}"),
            Class::Latency(f) => format!("latency +{:.0}%", f * 100.0),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    Thresholds,
    FixedWindow,
    Sequential,
    /// Flagger's thresholds and the sequential judge on the same Canary, as the README and the
    /// sandbox configure it: a tick fails when either does.
    Combined,
}

impl Policy {
    pub const ALL: [Policy; 4] = [
        Policy::Thresholds,
        Policy::FixedWindow,
        Policy::Sequential,
        Policy::Combined,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Policy::Thresholds => "thresholds",
            Policy::FixedWindow => "fixed-window judge",
            Policy::Sequential => "sequential judge",
            Policy::Combined => "thresholds + sequential judge",
        }
    }
}

/// The oracle's levels, after the policies in a row of tallies.
const ORACLE_ALPHAS: [f64; 2] = [0.05, 0.01];
/// Tallies per row: the policies, then the oracle at each level.
const COLUMNS: usize = Policy::ALL.len() + ORACLE_ALPHAS.len();
/// The policies the paired table sets against thresholds.
const PAIRED: [Policy; 2] = [Policy::Sequential, Policy::Combined];

/// One release of the corpus.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scenario {
    pub condition: Condition,
    pub class: Class,
    pub seed: u64,
    /// Requests per minute, both deployments together.
    pub traffic: f64,
    pub error_rate: f64,
    /// Median latency (seconds) and log-normal σ.
    pub median: f64,
    pub sigma: f64,
}

/// The corpus: every condition × class, seeded from `seed`; `scale` divides the number of
/// releases per class (1 for the full 1,500).
pub fn corpus(seed: u64, scale: usize) -> Vec<Scenario> {
    let mut rng = Rng(seed);
    let mut out = Vec::new();
    for condition in Condition::ALL {
        for (class, count) in Class::ALL {
            for _ in 0..(count / scale.max(1)).max(1) {
                out.push(Scenario::draw(&mut rng, condition, class));
            }
        }
    }
    out
}

/// Good releases drawn like the corpus's, `per_condition` of each condition, from a stream of
/// their own (so the corpus stays the same whatever their number): they measure the sequential
/// judge's false alarms, and set the oracle's threshold at them, on many more releases than
/// the corpus's 200 (with 200, matching the oracle to the judge's one or two false alarms
/// picks a threshold half a point of false alarms too lenient on average, in the oracle's
/// favour).
pub fn calibration(seed: u64, per_condition: usize) -> Vec<Scenario> {
    let mut rng = Rng(seed ^ 0xCA11_B4A7_E000_0001);
    Condition::ALL
        .iter()
        .flat_map(|condition| std::iter::repeat(*condition).take(per_condition))
        .map(|condition| Scenario::draw(&mut rng, condition, Class::Good))
        .collect()
}

/// How one release ended under one policy.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Outcome {
    pub rolled_back: bool,
    /// Analysis ticks (checks) until the verdict.
    pub checks: u32,
    /// Minutes from the first tick to the verdict.
    pub minutes: f64,
}

/// What each deployment served in one minute.
struct Minute {
    canary: Served,
    primary: Served,
}

struct Served {
    requests: u64,
    errors: u64,
    /// Cumulative counts per [`BUCKETS`] bound, then the total (+inf).
    buckets: [u64; BUCKETS.len() + 1],
}

impl Served {
    fn histogram(&self) -> Observation {
        let mut buckets: Vec<(f64, u64)> = BUCKETS.iter().copied().zip(self.buckets).collect();
        buckets.push((f64::INFINITY, self.requests));
        Observation::Histogram { buckets }
    }

    /// `histogram_quantile` as Prometheus computes it (linear within the bucket), in ms.
    fn quantile_ms(&self, q: f64) -> Option<f64> {
        if self.requests == 0 {
            return None;
        }
        let rank = q * self.requests as f64;
        let mut lower = (0.0, 0u64);
        for (i, &le) in BUCKETS.iter().enumerate() {
            let count = self.buckets[i];
            if count as f64 >= rank {
                let span = (count - lower.1) as f64;
                let within = if span > 0.0 {
                    (rank - lower.1 as f64) / span
                } else {
                    0.0
                };
                return Some(1000.0 * (lower.0 + (le - lower.0) * within));
            }
            lower = (le, count);
        }
        Some(1000.0 * BUCKETS[BUCKETS.len() - 1])
    }
}

impl Scenario {
    /// One release of `condition` and `class`, its traffic and its deployments' behaviour drawn
    /// from `rng`.
    fn draw(rng: &mut Rng, condition: Condition, class: Class) -> Scenario {
        let mut traffic = log_uniform(rng, 500.0, 4000.0);
        if condition == Condition::Low {
            traffic /= 10.0;
        }
        Scenario {
            condition,
            class,
            seed: rng.next_u64(),
            traffic,
            error_rate: log_uniform(rng, 0.0005, 0.005),
            median: 0.010 + 0.050 * rng.uniform(),
            sigma: 0.3 + 0.3 * rng.uniform(),
        }
    }

    fn canary_error_rate(&self) -> f64 {
        match self.class {
            Class::Errors(f) => (self.error_rate * f).min(1.0),
            _ => self.error_rate,
        }
    }

    fn canary_median(&self) -> f64 {
        match self.class {
            Class::Latency(f) => self.median * (1.0 + f),
            _ => self.median,
        }
    }

    /// One minute at canary weight `weight` (percent).
    fn minute(&self, rng: &mut Rng, weight: u32) -> Minute {
        let total = poisson_like(rng, self.traffic);
        let canary_requests = binomial(rng, total, f64::from(weight.min(100)) / 100.0);
        let noisy = self.condition == Condition::Noisy;
        let (shared_latency, shared_errors) = if noisy {
            ((0.1 * rng.normal()).exp(), (0.3 * rng.normal()).exp())
        } else {
            (1.0, 1.0)
        };
        let serve = |rng: &mut Rng, requests: u64, median: f64, rate: f64| {
            let (own_latency, own_errors) = if noisy {
                ((0.03 * rng.normal()).exp(), (0.3 * rng.normal()).exp())
            } else {
                (1.0, 1.0)
            };
            let rate = (rate * shared_errors * own_errors).min(1.0);
            let median = median * shared_latency * own_latency;
            let mut counts = [0u64; BUCKETS.len() + 1];
            for _ in 0..requests {
                let latency = median * (self.sigma * rng.normal()).exp();
                let bucket = BUCKETS
                    .iter()
                    .position(|le| latency <= *le)
                    .unwrap_or(BUCKETS.len());
                counts[bucket] += 1;
            }
            let mut cumulative = [0u64; BUCKETS.len() + 1];
            let mut sum = 0;
            for (c, n) in cumulative.iter_mut().zip(counts) {
                sum += n;
                *c = sum;
            }
            Served {
                requests,
                errors: binomial(rng, requests, rate),
                buckets: cumulative,
            }
        };
        Minute {
            canary: serve(
                rng,
                canary_requests,
                self.canary_median(),
                self.canary_error_rate(),
            ),
            primary: serve(rng, total - canary_requests, self.median, self.error_rate),
        }
    }

    /// The oracle's verdict at level `alpha`: `true` is a rollback.
    pub fn oracle(&self, alpha: f64) -> bool {
        self.oracle_p() < alpha
    }

    /// The oracle's p-value: the smaller of its two tests' (errors, slow requests), doubled
    /// (each runs at half the level), so that it rolls back at level `alpha` when this is
    /// below `alpha`. Comparing it with a threshold set on the good releases gives the
    /// oracle's power at any false-alarm level, the judge's among them.
    pub fn oracle_p(&self) -> f64 {
        // The release's own minutes (the engine's runs draw the same ones while the weights
        // agree), so that the oracle and the policies are compared on the same traffic.
        let mut rng = Rng(self.seed);
        let mut draws = Rng(self.seed ^ 0x5EED_0F0E_AC1E);
        let (mut requests, mut errors, mut slow) = (0u64, 0u64, 0u64);
        // The baseline's P90, known to the oracle: median · e^(1.2816 σ).
        let p90 = self.median * (1.281_551_565_5 * self.sigma).exp();
        // The engine's first minute is served at weight 0 (the analysis starts after it).
        let _ = self.minute(&mut rng, 0);
        for weight in [10, 20, 30, 40, 50] {
            let m = self.minute(&mut rng, weight);
            requests += m.canary.requests;
            errors += m.canary.errors;
            // Slower than the baseline's P90, counted exactly (the oracle sees requests, not
            // buckets): drawn again from the canary's distribution.
            for _ in 0..m.canary.requests {
                let latency = self.canary_median() * (self.sigma * draws.normal()).exp();
                if latency > p90 {
                    slow += 1;
                }
            }
        }
        let p = stats::binomial_sf(errors, requests, self.error_rate)
            .min(stats::binomial_sf(slow, requests, 0.1));
        (2.0 * p).min(1.0)
    }

    /// The release decided by the engine under `policy`.
    pub fn run(&self, config: &Config) -> Outcome {
        let mut engine = Engine::new(
            config.clone(),
            State::initialized_with_new_revision("1", "2"),
        );
        let mut rng = Rng(self.seed);
        let mut history: Vec<Minute> = Vec::new();
        // The primary's minutes before the release, as many as the judge's baseline reads.
        let baseline: Vec<Minute> = {
            let minutes = config.judge.as_ref().map_or(0, JudgeSpec::baseline_steps);
            let mut rng = Rng(self.seed ^ 0xBA5E_11AE);
            (0..minutes).map(|_| self.minute(&mut rng, 0)).collect()
        };
        let interval_ms = 60_000u64;
        let mut checks = 0u32;
        for k in 0..40u64 {
            let now = k * interval_ms;
            if k > 0 {
                let weight = engine.state().routes.canary;
                history.push(self.minute(&mut rng, weight));
            }
            let mut asked = false;
            let mut oracle = |request: &Request, _now: u64| -> Answer {
                match request {
                    Request::Readiness { .. } => Answer::Readiness(Readiness::Ready),
                    Request::Webhook { .. } => Answer::Webhook(HookOutcome::Pass),
                    Request::Metric { name, .. } => {
                        asked = true;
                        Answer::Metric(metric(config, name, &baseline, &history))
                    }
                }
            };
            let log = match sim::tick(&mut engine, now, &mut oracle) {
                Ok(log) => log,
                Err(_) => break,
            };
            if asked {
                checks += 1;
            }
            let verdict = log.commands.iter().find_map(|c| match c {
                crate::engine::Command::SetPhase { phase } if phase.is_verdict() => Some(*phase),
                _ => None,
            });
            if let Some(phase) = verdict {
                return Outcome {
                    rolled_back: phase == Phase::Failed,
                    checks,
                    minutes: now as f64 / 60_000.0,
                };
            }
        }
        Outcome {
            rolled_back: false,
            checks,
            minutes: f64::NAN,
        }
    }
}

/// The answer to a metric request from the minutes served so far. The judge is configured by
/// the Canary's `analysis.judge`, as decoded from the spec.
fn metric(config: &Config, name: &str, baseline: &[Minute], history: &[Minute]) -> MetricOutcome {
    let Some(last) = history.last() else {
        return MetricOutcome::NoValues("no traffic yet".into());
    };
    match name {
        "request-success-rate" => {
            let c = &last.canary;
            if c.requests == 0 {
                return MetricOutcome::NoValues("no canary requests".into());
            }
            MetricOutcome::Value(100.0 * (1.0 - c.errors as f64 / c.requests as f64))
        }
        "request-duration" => match last.canary.quantile_ms(0.99) {
            Some(ms) => MetricOutcome::Value(ms),
            None => MetricOutcome::NoValues("no canary requests".into()),
        },
        n if n == JUDGE_CHECK => {
            let Some(spec) = &config.judge else {
                return MetricOutcome::Error("the Canary has no judge".into());
            };
            let counts = |s: &Served| Observation::Counts {
                errors: s.errors,
                total: s.requests,
            };
            let metrics: Vec<(MetricConfig, Vec<Interval>)> = spec
                .metrics
                .iter()
                .map(|m| {
                    let history = baseline
                        .iter()
                        .chain(history)
                        .map(|minute| match m.kind {
                            JudgeKind::ErrorRate => Interval {
                                canary: counts(&minute.canary),
                                primary: counts(&minute.primary),
                            },
                            _ => Interval {
                                canary: minute.canary.histogram(),
                                primary: minute.primary.histogram(),
                            },
                        })
                        .collect();
                    (m.config(), history)
                })
                .collect();
            let interval = config.interval_ms.max(1);
            let window_ms = u64::try_from(spec.window.as_millis()).unwrap_or(u64::MAX);
            let window = usize::try_from(window_ms.div_ceil(interval))
                .unwrap_or(usize::MAX)
                .max(1);
            let judgement = judge_history(
                &spec.config(),
                &metrics,
                &HistoryOptions {
                    method: spec.method,
                    window,
                    young: history.len() < window,
                    horizon: config.judge_horizon(interval),
                    planned_share: config.judge_planned_share(interval),
                    before: baseline.len(),
                },
            );
            MetricOutcome::Value(judgement.score)
        }
        other => MetricOutcome::Error(format!("no metric {other}")),
    }
}

/// The judge of both judge policies: the README's example (with placeholder queries; the
/// benchmark answers them from the corpus).
const JUDGE: &str = "    judge:
      window: 5m
      step: 1m
      baseline: 1h
      passScore: 95
      metrics:
        - name: errors
          kind: error-rate
          errorsQuery: e
          totalQuery: t
        - name: latency
          kind: latency
          histogramQuery: h
          critical: true
";

/// The engine's configuration for `policy`: a Canary with Flagger's defaults, routed by weight.
pub fn policy_config(policy: Policy) -> Result<Config, String> {
    policy_config_with(policy, None)
}

/// [`policy_config`], the judge's `baseline` replaced where given.
fn policy_config_with(policy: Policy, baseline: Option<&str>) -> Result<Config, String> {
    let judge = match baseline {
        Some(b) => JUDGE.replace("baseline: 1h", &format!("baseline: {b}")),
        None => JUDGE.to_string(),
    };
    let thresholds = "    metrics:
      - name: request-success-rate
        thresholdRange:
          min: 99
        interval: 1m
      - name: request-duration
        thresholdRange:
          max: 500
        interval: 1m
";
    let checks = match policy {
        Policy::Thresholds => thresholds.to_string(),
        Policy::FixedWindow => judge.replace("judge:\n", "judge:\n      method: fixed-window\n"),
        Policy::Sequential => judge,
        Policy::Combined => format!("{thresholds}{judge}"),
    };
    let text = format!(
        "apiVersion: aviary.dev/v1alpha1
kind: Canary
metadata:
  name: app
  namespace: bench
spec:
  targetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: app
  service:
    port: 80
  analysis:
    interval: 1m
    threshold: 5
    stepWeight: 10
    maxWeight: 50
{checks}"
    );
    let docs = spec::load_str("bench.yaml", &text).map_err(|e| e.to_string())?;
    let canary = docs
        .canaries
        .first()
        .ok_or_else(|| "the benchmark's Canary did not load".to_string())?;
    Ok(Config::from_canary(canary, &Provider::Istio))
}

/// Per class and policy: releases, rolled back, and the checks and minutes to verdict.
#[derive(Debug, Clone, Default)]
pub struct Tally {
    pub releases: usize,
    pub rolled_back: usize,
    /// Checks and minutes summed over the rolled-back releases, then over the promoted ones.
    pub rollback_checks: f64,
    pub rollback_minutes: f64,
    pub promote_checks: f64,
    pub promote_minutes: f64,
}

impl Tally {
    fn add(&mut self, o: &Outcome) {
        self.releases += 1;
        let minutes = if o.minutes.is_finite() {
            o.minutes
        } else {
            0.0
        };
        if o.rolled_back {
            self.rolled_back += 1;
            self.rollback_checks += f64::from(o.checks);
            self.rollback_minutes += minutes;
        } else {
            self.promote_checks += f64::from(o.checks);
            self.promote_minutes += minutes;
        }
    }

    /// The rolled-back share with its 95% Wilson interval, in percent.
    pub fn share(&self) -> (f64, f64, f64) {
        wilson(self.rolled_back, self.releases)
    }
}

fn wilson(k: usize, n: usize) -> (f64, f64, f64) {
    if n == 0 {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    let (k, n) = (k as f64, n as f64);
    let z = 1.959_963_984_540_054f64;
    let p = k / n;
    let denom = 1.0 + z * z / n;
    let centre = (p + z * z / (2.0 * n)) / denom;
    let half = z * (p * (1.0 - p) / n + z * z / (4.0 * n * n)).sqrt() / denom;
    (
        100.0 * p,
        100.0 * (centre - half).max(0.0),
        100.0 * (centre + half).min(1.0),
    )
}

/// Every release under every policy and the oracle, tallied per condition and class.
pub struct Results {
    /// `[condition][class][policy]`, then the oracle at each of [`ORACLE_ALPHAS`] as more
    /// "policies".
    pub tallies: Vec<Vec<[Tally; COLUMNS]>>,
    /// `[condition][class][one of PAIRED]`: the releases thresholds and that policy decided
    /// alike (both rolled back a regression, both promoted a good release), with the checks
    /// each took.
    pub paired: Vec<Vec<[Paired; PAIRED.len()]>>,
    /// `[condition][class]`: each release's [`Scenario::oracle_p`].
    pub oracle_p: Vec<Vec<Vec<f64>>>,
    /// `[condition]`: each [`calibration`] release's verdict under the sequential judge (`true`:
    /// rolled back) and its oracle p-value.
    pub calibration: Vec<Vec<(bool, f64)>>,
}

/// Checks to the same verdict, release by release, under thresholds and a judge policy.
#[derive(Debug, Clone, Default)]
pub struct Paired {
    pub releases: usize,
    pub thresholds_checks: f64,
    pub judge_checks: f64,
    /// Releases where the sequential judge took fewer / more checks.
    pub fewer: usize,
    pub more: usize,
}

pub fn run(scenarios: &[Scenario], progress: &mut dyn FnMut(usize)) -> Result<Results, String> {
    run_with(scenarios, &[], None, progress)
}

/// [`run`], with [`calibration`] releases (decided by the sequential judge only) and the
/// sequential judge's `baseline` set to `baseline` (e.g. `0s`: the concurrent primary alone)
/// instead of the README's. `progress` counts both.
pub fn run_with(
    scenarios: &[Scenario],
    calibration: &[Scenario],
    baseline: Option<&str>,
    progress: &mut dyn FnMut(usize),
) -> Result<Results, String> {
    let configs = Policy::ALL
        .iter()
        .map(|p| policy_config_with(*p, baseline))
        .collect::<Result<Vec<_>, _>>()?;
    let mut tallies: Vec<Vec<[Tally; COLUMNS]>> = Condition::ALL
        .iter()
        .map(|_| Class::ALL.iter().map(|_| Default::default()).collect())
        .collect();
    let mut paired: Vec<Vec<[Paired; PAIRED.len()]>> = Condition::ALL
        .iter()
        .map(|_| Class::ALL.iter().map(|_| Default::default()).collect())
        .collect();
    let mut oracle_p: Vec<Vec<Vec<f64>>> = Condition::ALL
        .iter()
        .map(|_| Class::ALL.iter().map(|_| Vec::new()).collect())
        .collect();
    for (i, s) in scenarios.iter().enumerate() {
        let ci = Condition::ALL
            .iter()
            .position(|c| *c == s.condition)
            .unwrap_or(0);
        let ki = Class::ALL
            .iter()
            .position(|(c, _)| *c == s.class)
            .unwrap_or(0);
        let row = &mut tallies[ci][ki];
        let outcomes: Vec<Outcome> = configs.iter().map(|c| s.run(c)).collect();
        for (tally, outcome) in row.iter_mut().zip(&outcomes) {
            tally.add(outcome);
        }
        let expected = s.class != Class::Good;
        let t = &outcomes[0];
        for (pair, policy) in paired[ci][ki].iter_mut().zip(PAIRED) {
            let Some(q) = Policy::ALL
                .iter()
                .position(|p| *p == policy)
                .and_then(|i| outcomes.get(i))
            else {
                continue;
            };
            if t.rolled_back == expected && q.rolled_back == expected {
                pair.releases += 1;
                pair.thresholds_checks += f64::from(t.checks);
                pair.judge_checks += f64::from(q.checks);
                if q.checks < t.checks {
                    pair.fewer += 1;
                } else if q.checks > t.checks {
                    pair.more += 1;
                }
            }
        }
        let p = s.oracle_p();
        for (slot, alpha) in ORACLE_ALPHAS.iter().enumerate() {
            row[Policy::ALL.len() + slot].add(&Outcome {
                rolled_back: p < *alpha,
                checks: 0,
                minutes: f64::NAN,
            });
        }
        oracle_p[ci][ki].push(p);
        progress(i + 1);
    }
    let sequential = Policy::ALL
        .iter()
        .position(|p| *p == Policy::Sequential)
        .and_then(|i| configs.get(i))
        .ok_or("no sequential policy")?;
    let mut calibrated: Vec<Vec<(bool, f64)>> = Condition::ALL.iter().map(|_| Vec::new()).collect();
    for (i, s) in calibration.iter().enumerate() {
        let ci = Condition::ALL
            .iter()
            .position(|c| *c == s.condition)
            .unwrap_or(0);
        calibrated[ci].push((s.run(sequential).rolled_back, s.oracle_p()));
        progress(scenarios.len() + i + 1);
    }
    Ok(Results {
        tallies,
        paired,
        oracle_p,
        calibration: calibrated,
    })
}

impl Results {
    /// The oracle held to the false alarms `policy` raised on the good releases of
    /// `condition` (index into [`Condition::ALL`]; for the sequential judge, the calibration
    /// releases too): the threshold on its p-value below which exactly as many of those good
    /// releases fall (the next good p-value), and per class the share of the corpus's
    /// releases it rolls back there, in percent. `None` without good releases.
    pub fn oracle_matched(&self, condition: usize, policy: Policy) -> Option<(f64, Vec<f64>)> {
        let good = Class::ALL.iter().position(|(c, _)| *c == Class::Good)?;
        let (alarms, mut p) = self.good_releases(condition, policy)?;
        if p.is_empty() {
            return None;
        }
        p.sort_by(f64::total_cmp);
        // Rolling back strictly below the (alarms + 1)-th smallest good p-value raises at
        // most `alarms` false alarms (fewer on ties); past every good release, any p-value.
        let threshold = p.get(alarms).copied().unwrap_or(f64::INFINITY);
        let share = |ps: &[f64]| {
            let k = ps.iter().filter(|v| **v < threshold).count();
            if ps.is_empty() {
                f64::NAN
            } else {
                100.0 * k as f64 / ps.len() as f64
            }
        };
        let shares = self.oracle_p[condition]
            .iter()
            .enumerate()
            // The good row: over every good release the threshold was set on.
            .map(|(ki, ps)| if ki == good { share(&p) } else { share(ps) })
            .collect();
        Some((threshold, shares))
    }

    /// The good releases of `condition` that `policy` decided (the corpus's; for the
    /// sequential judge, the calibration's too): how many it rolled back, and each one's
    /// [`Scenario::oracle_p`]. `None` for a condition or policy the tallies do not have.
    fn good_releases(&self, condition: usize, policy: Policy) -> Option<(usize, Vec<f64>)> {
        let good = Class::ALL.iter().position(|(c, _)| *c == Class::Good)?;
        let column = Policy::ALL.iter().position(|p| *p == policy)?;
        let mut alarms = self.tallies.get(condition)?.get(good)?[column].rolled_back;
        let mut p = self.oracle_p.get(condition)?.get(good)?.clone();
        if policy == Policy::Sequential {
            for (rolled_back, oracle) in self.calibration.get(condition).into_iter().flatten() {
                alarms += usize::from(*rolled_back);
                p.push(*oracle);
            }
        }
        Some((alarms, p))
    }

    /// The sequential judge's false alarms on the good releases of `condition`, the corpus's
    /// and the calibration's: `(rolled back, releases)`.
    pub fn sequential_false_alarms(&self, condition: usize) -> (usize, usize) {
        self.good_releases(condition, Policy::Sequential)
            .map_or((0, 0), |(alarms, p)| (alarms, p.len()))
    }

    /// One Markdown row per condition: the sequential judge's false alarms over every good
    /// release (corpus and calibration), with a 95% interval, and the oracle's p-value threshold
    /// at them.
    pub fn false_alarm_table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "| condition | good releases | sequential judge's false alarms (95% interval) | oracle held to them: p < |"
        );
        let _ = writeln!(out, "|---|---:|---:|---:|");
        for (ci, condition) in Condition::ALL.iter().enumerate() {
            let (k, n) = self.sequential_false_alarms(ci);
            let (p, lo, hi) = wilson(k, n);
            let threshold = self
                .oracle_matched(ci, Policy::Sequential)
                .map_or_else(|| "–".to_string(), |(t, _)| format!("{t:.2e}"));
            let _ = writeln!(
                out,
                "| {} | {n} | {p:.2}% ({lo:.2}–{hi:.2}) · {k} | {threshold} |",
                condition.as_str()
            );
        }
        out
    }

    /// Checks to the same verdict on the releases both decided alike: thresholds against the
    /// sequential judge, one Markdown row per condition and class with any such release.
    pub fn paired_table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "| condition | class | against thresholds | decided alike | thresholds checks | its checks | fewer / more |"
        );
        let _ = writeln!(out, "|---|---|---|---:|---:|---:|---:|");
        for (ci, condition) in Condition::ALL.iter().enumerate() {
            for (ki, (class, _)) in Class::ALL.iter().enumerate() {
                for (p, policy) in self.paired[ci][ki].iter().zip(PAIRED) {
                    if p.releases == 0 {
                        continue;
                    }
                    let n = p.releases as f64;
                    let _ = writeln!(
                        out,
                        "| {} | {} | {} | {} | {:.2} | {:.2} | {} / {} |",
                        condition.as_str(),
                        class.label(),
                        policy.as_str(),
                        p.releases,
                        p.thresholds_checks / n,
                        p.judge_checks / n,
                        p.fewer,
                        p.more
                    );
                }
            }
        }
        out
    }

    /// The Markdown table: per condition and class, the rolled-back share (95% interval) and
    /// the mean checks to verdict for each policy, and the oracle.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "| condition | class | n | thresholds | fixed-window judge | sequential judge | thresholds + sequential | oracle α=0.05 | oracle α=0.01 | oracle at the sequential judge's false alarms |"
        );
        let _ = writeln!(out, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|");
        for (ci, condition) in Condition::ALL.iter().enumerate() {
            let matched = self.oracle_matched(ci, Policy::Sequential);
            for (ki, (class, _)) in Class::ALL.iter().enumerate() {
                let row = &self.tallies[ci][ki];
                let mut line = format!(
                    "| {} | {} | {} ",
                    condition.as_str(),
                    class.label(),
                    row[0].releases
                );
                for t in &row[..Policy::ALL.len()] {
                    let (p, lo, hi) = t.share();
                    // Checks and minutes to the verdict this row is about: promotion for good
                    // releases, rollback for regressions.
                    let (n, checks, minutes) = if *class == Class::Good {
                        (
                            t.releases - t.rolled_back,
                            t.promote_checks,
                            t.promote_minutes,
                        )
                    } else {
                        (t.rolled_back, t.rollback_checks, t.rollback_minutes)
                    };
                    let _ = write!(line, "| {p:.1}% ({lo:.1}–{hi:.1})");
                    if n > 0 {
                        let _ = write!(
                            line,
                            " · {:.1} / {:.1}′",
                            checks / n as f64,
                            minutes / n as f64
                        );
                    }
                    line.push(' ');
                }
                for t in &row[Policy::ALL.len()..] {
                    let (p, _, _) = t.share();
                    let _ = write!(line, "| {p:.1}% ");
                }
                match matched.as_ref().and_then(|(threshold, shares)| {
                    shares.get(ki).map(|share| (*threshold, *share))
                }) {
                    // The threshold once per condition, on its good releases' row.
                    Some((threshold, share)) if *class == Class::Good => {
                        let _ = write!(line, "| {share:.1}% (p < {threshold:.2e}) ");
                    }
                    Some((_, share)) => {
                        let _ = write!(line, "| {share:.1}% ");
                    }
                    None => line.push_str("| – "),
                }
                line.push('|');
                let _ = writeln!(out, "{line}");
            }
        }
        out
    }
}

fn log_uniform(rng: &mut Rng, lo: f64, hi: f64) -> f64 {
    (lo.ln() + (hi.ln() - lo.ln()) * rng.uniform()).exp()
}

/// Requests in a minute: the mean with Poisson-sized scatter (normal approximation).
fn poisson_like(rng: &mut Rng, mean: f64) -> u64 {
    (mean + mean.sqrt() * rng.normal()).round().max(0.0) as u64
}

/// Binomial(n, p): geometric gaps for small `p`, a normal approximation for large counts.
fn binomial(rng: &mut Rng, n: u64, p: f64) -> u64 {
    if n == 0 || p <= 0.0 {
        return 0;
    }
    if p >= 1.0 {
        return n;
    }
    if p < 0.05 {
        let log_q = (1.0 - p).ln();
        let (mut count, mut position) = (0u64, 0f64);
        loop {
            position += (rng.uniform().ln() / log_q).floor() + 1.0;
            if position > n as f64 {
                return count;
            }
            count += 1;
        }
    }
    let (mean, var) = (n as f64 * p, n as f64 * p * (1.0 - p));
    (mean + var.sqrt() * rng.normal())
        .round()
        .clamp(0.0, n as f64) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_corpus_is_seeded_and_has_every_condition_and_class() {
        let a = corpus(1, 50);
        assert_eq!(a, corpus(1, 50));
        assert_ne!(a, corpus(2, 50));
        // 200/50 good + 6 × 1 regressions, three conditions.
        assert_eq!(a.len(), 3 * (4 + 6));
        assert!(a
            .iter()
            .filter(|s| s.condition == Condition::Low)
            .all(|s| s.traffic < 400.0 && s.traffic >= 50.0));
    }

    #[test]
    fn the_oracle_held_to_a_policys_false_alarms_raises_as_many_on_the_good_releases() {
        let rows = |good_alarms: usize| {
            let mut tallies: Vec<Vec<[Tally; COLUMNS]>> =
                vec![Class::ALL.iter().map(|_| Default::default()).collect()];
            let column = Policy::ALL
                .iter()
                .position(|p| *p == Policy::Sequential)
                .unwrap_or(0);
            tallies[0][0][column].rolled_back = good_alarms;
            let mut oracle_p = vec![vec![Vec::new(); Class::ALL.len()]];
            oracle_p[0][0] = vec![0.5, 0.003, 0.2, 0.0004, 0.9];
            oracle_p[0][1] = vec![0.0001, 0.001, 0.01, 0.5];
            Results {
                tallies,
                paired: Vec::new(),
                oracle_p,
                calibration: Vec::new(),
            }
        };
        // No false alarm: below the smallest good p-value.
        let Some((threshold, shares)) = rows(0).oracle_matched(0, Policy::Sequential) else {
            panic!("no good releases");
        };
        assert_eq!(threshold, 0.0004);
        assert_eq!((shares[0], shares[1]), (0.0, 25.0));
        // Two of five: below the third smallest, two good releases and three of four bad.
        let Some((threshold, shares)) = rows(2).oracle_matched(0, Policy::Sequential) else {
            panic!("no good releases");
        };
        assert_eq!(threshold, 0.2);
        assert_eq!((shares[0], shares[1]), (40.0, 75.0));
        // Every good release rolled back: so is every release.
        let Some((_, shares)) = rows(5).oracle_matched(0, Policy::Sequential) else {
            panic!("no good releases");
        };
        assert_eq!((shares[0], shares[1]), (100.0, 100.0));
    }

    #[test]
    fn the_engine_promotes_a_good_release_and_rolls_back_a_bad_one_under_every_policy() {
        let mut good = corpus(3, 200)[0];
        good.traffic = 3000.0;
        let config = |p| match policy_config(p) {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        };
        for policy in Policy::ALL {
            let o = good.run(&config(policy));
            assert!(!o.rolled_back, "{policy:?}: {o:?}");
            // Flagger's defaults: 10% to 50% in 5 steps, then promotion.
            assert!(o.minutes.is_finite() && o.checks >= 5, "{policy:?}: {o:?}");
        }
        let mut bad = good;
        bad.class = Class::Errors(40.0);
        for policy in Policy::ALL {
            let o = bad.run(&config(policy));
            assert!(o.rolled_back, "{policy:?}: {o:?}");
        }
    }
}
