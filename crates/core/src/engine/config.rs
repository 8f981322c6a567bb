//! The slice of a Canary the engine needs, with Flagger's derived values computed once.

use serde::{Deserialize, Serialize};

use crate::spec::{BuiltinMetric, Canary, HookType, MetricSource, Provider, ThresholdRange};

/// How a metric's value is judged and named in messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MetricKind {
    /// `request-success-rate`: a percentage.
    SuccessRate,
    /// `request-duration`: milliseconds.
    Duration,
    /// Deprecated inline `query`.
    Query,
    /// A `MetricTemplate`.
    Template,
    /// The statistical judge (`analysis.judge`): the value is its 0-100 score.
    Judge,
}

/// The name the statistical judge's check goes by (in reports and timelines).
pub const JUDGE_CHECK: &str = "judge";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricCheck {
    pub name: String,
    pub kind: MetricKind,
    pub range: ThresholdRange,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HookRef {
    pub name: String,
    pub hook: HookType,
}

/// The rollout strategy a spec implies, decided as Flagger decides it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// Progressive traffic shifting by weight.
    Canary,
    /// `match` + `iterations`: matching requests go to the canary.
    AbTesting,
    /// `iterations` without `match`.
    BlueGreen,
}

impl Strategy {
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::Canary => "canary",
            Strategy::AbTesting => "ab-testing",
            Strategy::BlueGreen => "blue-green",
        }
    }
}

/// Everything the engine reads from a Canary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Config {
    /// Canary name and namespace, as used in Flagger's event messages.
    pub name: String,
    pub namespace: String,
    /// `targetRef.name`.
    pub target: String,
    /// The provider's name (the router that drives the canary).
    pub provider: String,
    /// The provider as Flagger's "no values found for <provider> metric" events name it: the
    /// provider with `:service` appended for a Service target. Empty: `provider`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub metrics_provider: String,
    /// `false` for the `kubernetes` provider, which cannot shift traffic (Flagger runs blue/green).
    pub traffic_shifting: bool,
    pub skip_analysis: bool,
    pub suspend: bool,
    pub interval_ms: u64,
    pub threshold: u32,
    pub max_weight: u32,
    pub step_weight: u32,
    pub step_weights: Vec<u32>,
    pub step_weight_promotion: u32,
    /// After Flagger's adjustment (the kubernetes provider turns 0 into 10).
    pub iterations: u32,
    /// The warnings Flagger records on every analysis tick that passes, before it picks the
    /// strategy, when it adjusts the spec for the kubernetes provider (a dropped `match`, the
    /// iterations it sets).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub provider_warnings: Vec<String>,
    pub strategy: Strategy,
    pub mirror: bool,
    pub mirror_weight: Option<u32>,
    pub progress_deadline_ms: u64,
    /// Webhooks in spec order.
    pub webhooks: Vec<HookRef>,
    /// Metrics in the order Flagger checks them: built-ins and inline queries first, then templates,
    /// each group in spec order.
    pub metrics: Vec<MetricCheck>,
    /// `analysis.judge`, whose score is the [`JUDGE_CHECK`] check (`simulate` replays it on a
    /// timeline's data).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub judge: Option<crate::spec::JudgeSpec>,
}

impl Config {
    /// `default_provider` stands in for Flagger's `-mesh-provider` flag when the spec names none
    /// (Flagger's own default is `istio`).
    pub fn from_canary(canary: &Canary, default_provider: &Provider) -> Config {
        let provider = canary
            .provider
            .clone()
            .unwrap_or_else(|| default_provider.clone());
        let traffic_shifting = provider != Provider::Kubernetes;
        let analysis = canary.analysis.clone().unwrap_or_default();
        // Flagger: SkipAnalysis() is true when there is no analysis at all.
        let skip_analysis = canary.skip_analysis || canary.analysis.is_none();

        let ab_requested = !analysis.r#match.is_empty() && traffic_shifting;
        let mut iterations = analysis.iterations;
        let mut provider_warnings = Vec::new();
        if !traffic_shifting {
            if !analysis.r#match.is_empty() {
                provider_warnings
                    .push("A/B testing is not supported when using the kubernetes provider".into());
            }
            if iterations < 1 {
                provider_warnings.push(
                    "Progressive traffic is not supported when using the kubernetes provider"
                        .into(),
                );
                provider_warnings.push("Setting canaryAnalysis.iterations: 10".into());
                iterations = 10;
            }
        }
        let strategy = if ab_requested && iterations > 0 {
            Strategy::AbTesting
        } else if iterations > 0 {
            Strategy::BlueGreen
        } else {
            Strategy::Canary
        };

        let mut metrics = Vec::new();
        let mut templated = Vec::new();
        for m in &analysis.metrics {
            let kind = match &m.source {
                MetricSource::Builtin(BuiltinMetric::RequestSuccessRate) => MetricKind::SuccessRate,
                MetricSource::Builtin(BuiltinMetric::RequestDuration) => MetricKind::Duration,
                MetricSource::Query(_) => MetricKind::Query,
                MetricSource::Template { .. } => MetricKind::Template,
            };
            let check = MetricCheck {
                name: m.name.clone(),
                kind,
                range: m.threshold_range,
            };
            if kind == MetricKind::Template {
                templated.push(check);
            } else {
                metrics.push(check);
            }
        }
        metrics.extend(templated);
        if let Some(judge) = &analysis.judge {
            // The judge runs last, after every threshold check passed.
            metrics.push(MetricCheck {
                name: JUDGE_CHECK.to_string(),
                kind: MetricKind::Judge,
                range: crate::spec::ThresholdRange {
                    min: Some(judge.pass_score),
                    max: None,
                },
            });
        }

        Config {
            name: canary.name.clone(),
            namespace: canary.namespace.clone(),
            target: canary.target_ref.name.clone(),
            provider: provider.name().to_string(),
            // Flagger names the provider as written (`gatewayapi:v1`), `:service` added for a
            // Service target.
            metrics_provider: {
                let written = canary
                    .provider_written
                    .as_deref()
                    .filter(|_| canary.provider.as_ref() == Some(&provider))
                    .unwrap_or(provider.name());
                if canary.target_ref.kind.as_deref() == Some("Service") {
                    format!("{written}:service")
                } else if written != provider.name() {
                    written.to_string()
                } else {
                    String::new()
                }
            },
            traffic_shifting,
            skip_analysis,
            suspend: canary.suspend,
            interval_ms: u64::try_from(analysis.interval.as_millis()).unwrap_or(u64::MAX),
            threshold: analysis.threshold.max(1),
            max_weight: analysis.max_weight,
            step_weight: analysis.step_weight,
            step_weights: analysis.step_weights.clone(),
            step_weight_promotion: analysis.step_weight_promotion,
            iterations,
            provider_warnings,
            strategy,
            mirror: analysis.mirror,
            mirror_weight: analysis.mirror_weight,
            progress_deadline_ms: u64::from(canary.progress_deadline_seconds).saturating_mul(1000),
            webhooks: analysis
                .webhooks
                .iter()
                .map(|w| HookRef {
                    name: w.name.clone(),
                    hook: w.hook_type,
                })
                .collect(),
            metrics,
            judge: analysis.judge.clone(),
        }
    }

    /// Flagger's `maxWeight()`: the last `stepWeights` entry, else `maxWeight`, else 100.
    pub fn effective_max_weight(&self) -> u32 {
        if let Some(last) = self.step_weights.last() {
            return (*last).min(100);
        }
        if self.max_weight > 0 {
            return self.max_weight.min(100);
        }
        100
    }

    /// The canary weights, in order, of the checks a canary release that passes every one of
    /// them runs before promotion: one per step up to the maximum weight (Flagger's
    /// `nextStepWeight`, capped at the maximum as [`Config::effective_max_weight`] caps it).
    fn planned_weights(&self) -> Vec<u32> {
        let max = self.effective_max_weight();
        let mut weights = Vec::new();
        let mut weight = 0u32;
        // Weights only grow, and by at least 1 a step: at most 100 steps.
        while weight < max && weights.len() <= 101 {
            let step = self.next_step_weight(weight);
            if step == 0 {
                break;
            }
            weight = weight.saturating_add(step).min(max);
            weights.push(weight);
        }
        weights
    }

    /// The analysis checks a release that passes every one of them runs before promotion: one
    /// per weight step up to the maximum weight (plus the mirroring step), or `iterations` for
    /// A/B testing and blue/green. At least 1. The judge's sequential tests spend their alpha
    /// over this many intervals.
    pub fn planned_checks(&self) -> u32 {
        match self.strategy {
            Strategy::AbTesting | Strategy::BlueGreen => self.iterations.max(1),
            Strategy::Canary => {
                let steps = u32::try_from(self.planned_weights().len()).unwrap_or(u32::MAX);
                steps.saturating_add(u32::from(self.mirror)).max(1)
            }
        }
    }

    /// The canary's planned share of the traffic summed over the judge's steps of `step_ms`
    /// (each check's weight as a fraction, times the steps in an interval), when the strategy
    /// shifts traffic by weight; `None` for A/B testing, blue/green and mirroring.
    pub fn judge_planned_share(&self, step_ms: u64) -> Option<f64> {
        if self.strategy != Strategy::Canary || !self.traffic_shifting || self.mirror {
            return None;
        }
        let sum: f64 = self
            .planned_weights()
            .iter()
            .map(|w| f64::from(*w) / 100.0)
            .sum();
        let steps_per_check = self.interval_ms as f64 / step_ms.max(1) as f64;
        (sum > 0.0).then_some(sum * steps_per_check)
    }

    /// The planned analysis in judge steps of `step_ms`: [`Config::planned_checks`] intervals.
    pub fn judge_horizon(&self, step_ms: u64) -> usize {
        let planned = u64::from(self.planned_checks()).saturating_mul(self.interval_ms);
        usize::try_from(planned.div_ceil(step_ms.max(1)))
            .unwrap_or(usize::MAX)
            .max(1)
    }

    /// Flagger's `nextStepWeight()`: how much to add to `canary_weight` at the next step.
    pub fn next_step_weight(&self, canary_weight: u32) -> u32 {
        if self.step_weight > 0 || self.step_weights.is_empty() {
            return self.step_weight;
        }
        let max_step = 100u32.saturating_sub(canary_weight);
        if max_step == 0 {
            return 1;
        }
        if canary_weight == 0 {
            return self.step_weights[0].min(max_step);
        }
        for pair in self.step_weights.windows(2) {
            if pair[0] == canary_weight {
                return pair[1].saturating_sub(canary_weight).min(max_step);
            }
        }
        max_step
    }

    /// The provider named in "no values found for <provider> metric" events.
    pub fn metrics_provider(&self) -> &str {
        if self.metrics_provider.is_empty() {
            &self.provider
        } else {
            &self.metrics_provider
        }
    }

    /// `name.namespace`.
    pub fn qualified(&self) -> String {
        format!("{}.{}", self.name, self.namespace)
    }

    /// `target.namespace`.
    pub fn target_qualified(&self) -> String {
        format!("{}.{}", self.target, self.namespace)
    }

    pub fn hooks_of(&self, hook: HookType) -> impl Iterator<Item = (usize, &HookRef)> + '_ {
        self.webhooks
            .iter()
            .enumerate()
            .filter(move |(_, h)| h.hook == hook)
    }
}
