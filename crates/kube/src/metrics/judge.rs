//! The statistical judge's data: for each judged metric, the canary's and the primary's samples
//! over the window (range queries for values, instant queries for error counts), handed to
//! [`aviary_core::analysis::judge`]. The check's value is the judgement's 0-100 score.
//!
//! Every query goes through the [`MetricsProvider`](super::MetricsProvider) for built-in checks;
//! a provider without [`query_range`](super::MetricsProvider::query_range) fails the check with
//! a message that says the judge needs series.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use aviary_core::analysis::{self, Direction, JudgeConfig, MetricConfig, Sample};
use aviary_core::spec::{JudgeKind, JudgeMetric, JudgeSpec};

use super::{render_template, Evaluator, MetricError};

impl Evaluator {
    /// The judge's score for the Canary's `analysis.judge`, logging every metric's verdict.
    pub(crate) async fn judge_score(&self, spec: &JudgeSpec) -> Result<f64, MetricError> {
        // Through the provider seam: values come from `query_range`, counts from `query`.
        let provider = self.builtin_provider()?;
        let end = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        let start = end - spec.window.as_secs_f64();
        let primary = format!("{}-primary", self.ctx.target);
        let mut pairs = Vec::new();
        for m in &spec.metrics {
            let render = |query: &str, workload: &str| -> Result<String, MetricError> {
                let mut vars = BTreeMap::new();
                vars.insert("workload".to_string(), workload.to_string());
                // `{{ workload }}` is a shorthand for `{{ variables.workload }}`.
                let query = query
                    .replace("{{ workload }}", "{{ variables.workload }}")
                    .replace("{{workload}}", "{{ variables.workload }}");
                render_template(&query, &self.ctx, &spec.window_text, &vars)
                    .map_err(|e| e.context(&format!("judge metric {}", m.name)))
            };
            let sample = match m.kind {
                JudgeKind::ErrorRate => {
                    let errors = m.errors_query.as_deref().unwrap_or_default();
                    let total = m.total_query.as_deref().unwrap_or_default();
                    let count = |v: Result<f64, MetricError>| match v {
                        Ok(x) if x.is_finite() && x >= 0.0 => Ok(x.round() as u64),
                        Ok(_) | Err(MetricError::NoValues(_)) => Ok(0),
                        Err(e) => Err(e),
                    };
                    Sample::Counts {
                        canary_errors: count(
                            provider.query(&render(errors, &self.ctx.target)?).await,
                        )?,
                        canary_total: count(
                            provider.query(&render(total, &self.ctx.target)?).await,
                        )?,
                        baseline_errors: count(provider.query(&render(errors, &primary)?).await)?,
                        baseline_total: count(provider.query(&render(total, &primary)?).await)?,
                    }
                }
                _ => {
                    let query = m.query.as_deref().unwrap_or_default();
                    let values = |v: Result<Vec<f64>, MetricError>| match v {
                        Ok(x) => Ok(x),
                        Err(MetricError::NoValues(_)) => Ok(Vec::new()),
                        Err(e) => Err(e),
                    };
                    Sample::Values {
                        canary: values(
                            provider
                                .query_range(
                                    &render(query, &self.ctx.target)?,
                                    start,
                                    end,
                                    spec.step,
                                )
                                .await,
                        )?,
                        baseline: values(
                            provider
                                .query_range(&render(query, &primary)?, start, end, spec.step)
                                .await,
                        )?,
                    }
                }
            };
            pairs.push((metric_config(m), sample));
        }
        let judgement = analysis::judge(
            &JudgeConfig {
                pass_score: spec.pass_score,
                marginal_score: spec.marginal_score,
            },
            &pairs,
        );
        for v in &judgement.metrics {
            tracing::info!(metric = %v.name, "judge: {}", v.reason);
        }
        tracing::info!("judge: {}", judgement.reason);
        Ok(judgement.score)
    }
}

fn metric_config(m: &JudgeMetric) -> MetricConfig {
    let kind = match m.kind {
        JudgeKind::Latency => analysis::Measure::Latency,
        JudgeKind::ErrorRate => analysis::Measure::ErrorRate,
        JudgeKind::Increase => analysis::Measure::Generic {
            direction: Direction::Increase,
        },
        JudgeKind::Decrease => analysis::Measure::Generic {
            direction: Direction::Decrease,
        },
    };
    let mut config = MetricConfig::new(m.name.clone(), kind);
    config.critical = m.critical;
    config.weight = m.weight;
    config.alpha = m.alpha;
    config.effect_floor = m.effect_floor;
    config.min_samples = usize::try_from(m.min_samples).unwrap_or(10);
    config.min_requests = m.min_requests;
    config
}
