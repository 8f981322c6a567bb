//! The statistical judge's data: for each judged metric, what the canary and the primary served
//! in each interval (one range query per side and query, one point per `step`), handed to
//! [`aviary_core::analysis::judge_history`]. The check's value is the judgement's 0-100 score.
//!
//! The intervals start when the analysis of the revision began (the engine's `since`): the
//! sequential method reads every interval since then (at most the last 6 hours), the fixed-window
//! method the latest `window`. In judge queries `{{ interval }}` is the step, so
//! `increase(x[{{ interval }}])` evaluated every step gives disjoint per-interval counts.
//!
//! Every query goes through the judge's `provider` (a MetricTemplate's provider block), else the
//! [`MetricsProvider`](super::MetricsProvider) for built-in checks; a provider without
//! [`query_range`](super::MetricsProvider::query_range) fails the check with a message that says
//! the judge needs series.

use std::collections::BTreeMap;
use std::time::Duration;

use aviary_core::analysis::{self, HistoryOptions, Interval, Method, Observation};
use aviary_core::spec::duration::format_human;
use aviary_core::spec::{JudgeKind, JudgeMetric, JudgeSpec};

use super::provider::{MetricsProvider, RangeSeries};
use super::{render_template, Evaluator, MetricError};

/// How far back the sequential method reads a release's history.
const SEQUENTIAL_REACH_MS: u64 = 6 * 60 * 60 * 1000;
/// At most this many intervals are queried (Prometheus refuses more than 11,000 points per
/// series); older ones are left out.
const MAX_INTERVALS: u64 = 10_000;

/// The evaluation timestamps of a judgement, in Unix milliseconds: `first + k·step` up to `last`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Grid {
    first_ms: u64,
    step_ms: u64,
    count: usize,
}

impl Grid {
    /// The timestamps `start + k·step ≤ now`, `k ≥ 1`, each closing one interval.
    fn new(start_ms: u64, now_ms: u64, step_ms: u64) -> Grid {
        let step_ms = step_ms.max(1);
        let mut count = now_ms.saturating_sub(start_ms) / step_ms;
        let mut start_ms = start_ms;
        if count > MAX_INTERVALS {
            start_ms += (count - MAX_INTERVALS) * step_ms;
            count = MAX_INTERVALS;
        }
        Grid {
            first_ms: start_ms + step_ms,
            step_ms,
            count: usize::try_from(count).unwrap_or(0),
        }
    }

    fn last_ms(&self) -> u64 {
        self.first_ms + (self.count.saturating_sub(1) as u64) * self.step_ms
    }

    /// The interval a point at `at` (Unix seconds) belongs to: timestamp `k` closes the
    /// interval `(first + (k-1)·step, first + k·step]`. A point summarizes what came before its
    /// timestamp: Prometheus' `increase(x[step])` evaluated at a grid timestamp is exactly that
    /// interval; providers with buckets of their own label each point with its bucket's end, so
    /// finer buckets add up into the interval that holds them. Within a millisecond of a
    /// timestamp is on it.
    fn index(&self, at: f64) -> Option<usize> {
        if !at.is_finite() {
            return None;
        }
        let offset = at * 1000.0 - self.first_ms as f64;
        let step = self.step_ms as f64;
        if offset <= -step + 1.0 {
            return None;
        }
        let k = ((offset - 1.0) / step).ceil().max(0.0);
        if k >= self.count as f64 {
            return None;
        }
        Some(k as usize)
    }

    /// Per timestamp, the values the series have there (empty where none has a point).
    fn spread(&self, series: &[RangeSeries]) -> Vec<Vec<f64>> {
        let mut out = vec![Vec::new(); self.count];
        for s in series {
            for &(at, v) in &s.points {
                if let Some(slot) = self.index(at).and_then(|i| out.get_mut(i)) {
                    slot.push(v);
                }
            }
        }
        out
    }
}

/// `{{ interval }}` for judge queries: the step as a PromQL duration (`30s`, `1m`, `1m30s`,
/// `500ms`).
fn interval_text(step_ms: u64) -> String {
    if step_ms % 1000 == 0 {
        format_human(Duration::from_millis(step_ms))
    } else {
        format!("{step_ms}ms")
    }
}

/// A non-negative whole count; NaN, negative and infinite values are 0.
fn count(v: f64) -> u64 {
    if v.is_finite() && v > 0.0 {
        v.round() as u64
    } else {
        0
    }
}

/// A bucket bound from an `le` label (`+Inf` included).
fn parse_le(le: &str) -> Option<f64> {
    match le.trim() {
        "+Inf" | "Inf" | "+inf" | "inf" => Some(f64::INFINITY),
        other => other.parse::<f64>().ok().filter(|x| !x.is_nan()),
    }
}

impl Evaluator {
    /// The judge's score for the Canary's `analysis.judge`, logging every metric's verdict.
    /// `since` is when the analysis of this revision began (Unix milliseconds), if known.
    pub(crate) async fn judge_score(
        &self,
        spec: &JudgeSpec,
        since: Option<u64>,
    ) -> Result<f64, MetricError> {
        // The judge's own provider, or the Canary's Prometheus.
        let own = match &spec.provider {
            Some(p) => Some(self.judge_provider(p, spec.step).await?),
            None => None,
        };
        let provider = match &own {
            Some(p) => p.as_ref(),
            None => self.builtin_provider()?,
        };
        let now = crate::runner::wall_ms();
        let window_ms = u64::try_from(spec.window.as_millis()).unwrap_or(u64::MAX);
        let step_ms = u64::try_from(spec.step.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        let reach = match spec.method {
            Method::Sequential => SEQUENTIAL_REACH_MS,
            Method::FixedWindow => window_ms,
        };
        let earliest = now.saturating_sub(reach);
        let start = match since {
            Some(s) => s.max(earliest).min(now),
            None => now.saturating_sub(window_ms),
        };
        let engine_config =
            aviary_core::engine::Config::from_canary(&self.canary, &self.ctx.provider);
        let grid = Grid::new(start, now, step_ms);
        // The primary's side also reaches back over the baseline, before the analysis began.
        let baseline_steps = match since {
            Some(_) => u64::try_from(spec.baseline_steps()).unwrap_or(u64::MAX),
            None => 0,
        };
        let primary_grid = Grid::new(
            start.saturating_sub(baseline_steps.saturating_mul(step_ms)),
            now,
            step_ms,
        );
        let before = primary_grid.count.saturating_sub(grid.count);
        let options = HistoryOptions {
            method: spec.method,
            window: usize::try_from(window_ms.div_ceil(step_ms))
                .unwrap_or(usize::MAX)
                .max(1),
            young: since.is_some_and(|s| now.saturating_sub(s) < window_ms),
            horizon: engine_config.judge_horizon(step_ms),
            planned_share: engine_config.judge_planned_share(step_ms),
            before,
        };
        let interval = interval_text(step_ms);
        let primary = format!("{}-primary", self.ctx.target);
        let mut metrics = Vec::new();
        for m in &spec.metrics {
            let render = |query: &str, workload: &str| -> Result<String, MetricError> {
                let mut vars = BTreeMap::new();
                vars.insert("workload".to_string(), workload.to_string());
                // `{{ workload }}` is a shorthand for `{{ variables.workload }}`.
                let query = query
                    .replace("{{ workload }}", "{{ variables.workload }}")
                    .replace("{{workload}}", "{{ variables.workload }}");
                render_template(&query, &self.ctx, &interval, &vars)
                    .map_err(|e| e.context(&format!("judge metric {}", m.name)))
            };
            let side = |workload: String, grid: Grid| {
                let render = &render;
                async move {
                    self.observations(provider, m, &grid, |q| render(q, &workload))
                        .await
                }
            };
            let canary = side(self.ctx.target.clone(), grid).await?;
            let mut baseline = side(primary.clone(), primary_grid).await?;
            let concurrent = baseline.split_off(before.min(baseline.len()));
            let history = baseline
                .into_iter()
                .map(|primary| Interval {
                    canary: Observation::Missing,
                    primary,
                })
                .chain(
                    canary
                        .into_iter()
                        .zip(concurrent)
                        .map(|(canary, primary)| Interval { canary, primary }),
                )
                .collect();
            metrics.push((m.config(), history));
        }
        let judgement = analysis::judge_history(&spec.config(), &metrics, &options);
        for v in &judgement.metrics {
            tracing::info!(metric = %v.name, "judge: {}", v.reason);
        }
        tracing::info!("judge: {}", judgement.reason);
        Ok(judgement.score)
    }

    /// One workload's observation of metric `m` per timestamp of `grid`.
    async fn observations(
        &self,
        provider: &dyn MetricsProvider,
        m: &JudgeMetric,
        grid: &Grid,
        render: impl Fn(&str) -> Result<String, MetricError>,
    ) -> Result<Vec<Observation>, MetricError> {
        if grid.count == 0 {
            return Ok(Vec::new());
        }
        let range = |query: String| async move {
            let series = provider
                .query_range(
                    &query,
                    grid.first_ms as f64 / 1000.0,
                    grid.last_ms() as f64 / 1000.0,
                    Duration::from_millis(grid.step_ms),
                )
                .await;
            match series {
                Ok(s) => Ok(s),
                // No series: nothing measured at any timestamp.
                Err(MetricError::NoValues(_)) => Ok(Vec::new()),
                Err(e) => Err(e),
            }
        };
        let histogram = m
            .histogram_query
            .as_deref()
            .filter(|q| !q.trim().is_empty());
        if m.kind == JudgeKind::ErrorRate {
            let errors = m.errors_query.as_deref().unwrap_or_default();
            let total = m.total_query.as_deref().unwrap_or_default();
            let errors = grid.spread(&range(render(errors)?).await?);
            let total = grid.spread(&range(render(total)?).await?);
            Ok(errors
                .into_iter()
                .zip(total)
                .map(|(errors, total)| {
                    if total.is_empty() {
                        return Observation::Missing;
                    }
                    // Several series are added up; no error series where requests were served
                    // means no errors (an error counter often has no series until one happens).
                    let total = total.into_iter().map(count).fold(0u64, u64::saturating_add);
                    let errors = errors
                        .into_iter()
                        .map(count)
                        .fold(0u64, u64::saturating_add);
                    Observation::Counts {
                        errors: errors.min(total),
                        total,
                    }
                })
                .collect())
        } else if let (JudgeKind::Latency, Some(query)) = (m.kind, histogram) {
            let series = range(render(query)?).await?;
            let mut buckets: Vec<Vec<(f64, u64)>> = vec![Vec::new(); grid.count];
            for s in &series {
                let Some(le) = s.labels.get("le").and_then(|l| parse_le(l)) else {
                    continue;
                };
                for &(at, v) in &s.points {
                    if let Some(slot) = grid.index(at).and_then(|i| buckets.get_mut(i)) {
                        slot.push((le, count(v)));
                    }
                }
            }
            Ok(buckets
                .into_iter()
                .map(|mut b| {
                    if b.is_empty() {
                        return Observation::Missing;
                    }
                    b.sort_by(|x, y| x.0.total_cmp(&y.0));
                    // Series with the same bound (a query not summed by `le`) are added up.
                    let mut merged: Vec<(f64, u64)> = Vec::with_capacity(b.len());
                    for (le, n) in b {
                        match merged.last_mut() {
                            Some(last) if last.0 == le => last.1 = last.1.saturating_add(n),
                            _ => merged.push((le, n)),
                        }
                    }
                    Observation::Histogram { buckets: merged }
                })
                .collect())
        } else {
            let query = m.query.as_deref().unwrap_or_default();
            Ok(grid
                .spread(&range(render(query)?).await?)
                .into_iter()
                .map(|values| {
                    let values: Vec<f64> = values.into_iter().filter(|v| v.is_finite()).collect();
                    if values.is_empty() {
                        Observation::Missing
                    } else {
                        Observation::Values { values }
                    }
                })
                .collect())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_grid_closes_one_interval_per_step_after_the_start() {
        let g = Grid::new(1_000_000, 1_095_000, 30_000);
        assert_eq!(g.count, 3);
        assert_eq!(g.first_ms, 1_030_000);
        assert_eq!(g.last_ms(), 1_090_000);
        assert_eq!(g.index(1_030.0), Some(0));
        assert_eq!(g.index(1_090.0), Some(2));
        assert_eq!(g.index(1_120.0), None);
        assert_eq!(g.index(1_000.0), None);
        // Between timestamps: the interval that ends at the next one.
        assert_eq!(g.index(1_045.0), Some(1));
        assert_eq!(g.index(1_000.5), Some(0));
        assert_eq!(g.index(1_060.000_5), Some(1));
        assert_eq!(g.index(1_089.0), Some(2));
        assert_eq!(g.index(1_090.5), None);
        assert_eq!(Grid::new(5_000, 4_000, 1_000).count, 0);
        let long = Grid::new(0, 20_000_000, 1_000);
        assert_eq!(long.count, 10_000);
        assert_eq!(long.last_ms(), 20_000_000);
    }

    #[test]
    fn the_interval_is_the_step_as_a_promql_duration() {
        assert_eq!(interval_text(30_000), "30s");
        assert_eq!(interval_text(60_000), "1m");
        assert_eq!(interval_text(90_000), "1m30s");
        assert_eq!(interval_text(1_500), "1500ms");
        assert_eq!(parse_le("+Inf"), Some(f64::INFINITY));
        assert_eq!(parse_le("0.25"), Some(0.25));
        assert_eq!(parse_le("x"), None);
        assert_eq!(count(-1.0), 0);
        assert_eq!(count(f64::NAN), 0);
        assert_eq!(count(2.6), 3);
    }
}
