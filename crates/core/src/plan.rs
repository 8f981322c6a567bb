//! `aviary plan`: the schedule a Canary implies, computed by running the engine itself on a
//! simulated clock, once with every check passing and once with every check failing, so the plan
//! can never disagree with what a real run does.
//!
//! Long schedules are not run tick by tick. With every answer the same, each iteration of an
//! A/B or blue/green analysis is one tick exactly like the one before, and so is each failed
//! check on the way to the threshold; so the engine runs with at most [`SIMULATED_COUNT`]
//! iterations and threshold, and the ticks left out are added back as whole intervals. A plan
//! of `iterations: 1000000` takes as long as one of 16 (a test checks the two ways agree).

use std::io::Write;

use serde::Serialize;

use crate::engine::sim;
use crate::engine::{
    Answer, Command, Config, Engine, EngineError, HookOutcome, MetricOutcome, Phase, Readiness,
    Request, State, Strategy,
};
use crate::report::Secs;
use crate::spec::duration::format_human;
use crate::spec::HookType;

/// Enough ticks for any schedule the spec can describe: at most 100 weight steps (or the
/// iterations), the promotion steps back, and the bookkeeping ticks around them.
pub fn tick_budget(config: &Config) -> usize {
    let iterations = usize::try_from(config.iterations).unwrap_or(usize::MAX);
    iterations.saturating_add(250).min(5_000_000)
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Plan {
    pub name: String,
    pub namespace: String,
    pub provider: String,
    pub strategy: &'static str,
    /// Canary weights in order (canary strategy only).
    pub weights: Vec<u32>,
    /// Iterations (A/B testing and blue/green; 0 for canary).
    pub iterations: u32,
    pub interval_s: Secs,
    pub threshold: u32,
    /// From the first tick that sees the new revision to the tick that copies it to the primary.
    pub min_promotion_s: Secs,
    /// To the Succeeded phase (traffic back on the primary, canary scaled down).
    pub min_completion_s: Secs,
    /// To the rollback when every check fails; `null` when nothing can fail (no metrics, no webhooks).
    pub min_rollback_s: Option<Secs>,
    pub mirror: bool,
    pub skip_analysis: bool,
    pub checks: Vec<String>,
    pub gates: Vec<String>,
}

/// Answers for the fastest promotion: every gate open, every check passing.
fn passing(config: &Config) -> impl FnMut(&Request, u64) -> Answer + '_ {
    move |request, _| match request {
        Request::Readiness { .. } => Answer::Readiness(Readiness::Ready),
        Request::Webhook { hook, .. } => Answer::Webhook(match hook {
            HookType::Rollback => HookOutcome::Fail("not signalling".into()),
            _ => HookOutcome::Pass,
        }),
        Request::Metric { index, .. } => {
            let range = config
                .metrics
                .get(*index)
                .map(|m| m.range)
                .unwrap_or_default();
            Answer::Metric(MetricOutcome::Value(range.min.or(range.max).unwrap_or(0.0)))
        }
    }
}

/// Answers for the fastest rollback: gates open, every check failing, no manual rollback.
fn failing(request: &Request, _: u64) -> Answer {
    match request {
        Request::Readiness { .. } => Answer::Readiness(Readiness::Ready),
        Request::Webhook { hook, .. } => Answer::Webhook(match hook {
            HookType::PreRollout | HookType::Rollout | HookType::Rollback => {
                HookOutcome::Fail("failing on purpose".into())
            }
            _ => HookOutcome::Pass,
        }),
        Request::Metric { .. } => Answer::Metric(MetricOutcome::NoValues("planned failure".into())),
    }
}

/// Why there is no plan.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// The engine refused a simulated answer: a bug in aviary's own driver.
    #[error("internal error: {0}")]
    Engine(#[from] EngineError),
    #[error("{canary}: this Canary never promotes, even when every check passes")]
    NeverPromotes { canary: String },
}

impl PlanError {
    /// The fix, when the input is at fault.
    pub fn help(&self) -> Option<&'static str> {
        match self {
            PlanError::Engine(_) => None,
            PlanError::NeverPromotes { .. } => Some(
                "check that the analysis has a strategy (stepWeight, stepWeights or iterations) \
                 and that the Canary is not suspended",
            ),
        }
    }
}

/// Iterations and failed checks the engine runs at most for a plan; the rest are added back.
pub const SIMULATED_COUNT: u32 = 16;

/// What a plan needs from one simulated run.
#[derive(Debug, Default)]
struct Outline {
    /// The first tick that promoted.
    promoted_at: Option<u64>,
    /// The last tick.
    last_at: Option<u64>,
    verdict: Option<Phase>,
    /// Canary weights set before the promotion, consecutive repeats removed.
    weights: Vec<u32>,
}

fn simulate(config: &Config, oracle: &mut dyn sim::Oracle) -> Result<Outline, EngineError> {
    let mut engine = Engine::new(
        config.clone(),
        State::initialized_with_new_revision("current", "next"),
    );
    let mut outline = Outline::default();
    let end = sim::run_with(&mut engine, oracle, tick_budget(config), &mut |tick| {
        outline.last_at = Some(tick.at);
        for c in &tick.commands {
            match c {
                Command::Promote { .. } if outline.promoted_at.is_none() => {
                    outline.promoted_at = Some(tick.at);
                }
                Command::SetRoutes { routes }
                    if outline.promoted_at.is_none()
                        && outline.weights.last() != Some(&routes.canary) =>
                {
                    outline.weights.push(routes.canary);
                }
                _ => {}
            }
        }
    })?;
    outline.verdict = end.verdict;
    Ok(outline)
}

pub fn compute(config: &Config) -> Result<Plan, PlanError> {
    compute_with(config, SIMULATED_COUNT)
}

/// The plan, running the engine with at most `count` iterations and failed checks and adding
/// the ticks left out back as intervals.
fn compute_with(config: &Config, count: u32) -> Result<Plan, PlanError> {
    let count = count.max(2);
    let mut short = config.clone();
    // Iterations count only for A/B testing and blue/green: one tick each, all alike.
    let extra_iterations = if config.strategy == Strategy::Canary {
        0
    } else {
        config.iterations.saturating_sub(count)
    };
    short.iterations -= extra_iterations;
    // With every check failing, each tick until the threshold adds one failed check.
    let extra_failures = config.threshold.saturating_sub(count);
    short.threshold -= extra_failures;
    let later = |at: u64, extra: u32| {
        at.saturating_add(config.interval_ms.max(1).saturating_mul(u64::from(extra)))
    };

    let good = simulate(&short, &mut passing(&short))?;
    let bad = simulate(&short, &mut failing)?;

    let promoted_at = good.promoted_at.map(|t| later(t, extra_iterations));
    let (Some(promoted_at), Some(Phase::Succeeded)) = (promoted_at, good.verdict) else {
        return Err(PlanError::NeverPromotes {
            canary: config.qualified(),
        });
    };
    let completed_at = good
        .last_at
        .map_or(promoted_at, |t| later(t, extra_iterations));
    let rollback_at = match bad.verdict {
        Some(Phase::Failed) => bad.last_at.map(|t| Secs::from_ms(later(t, extra_failures))),
        _ => None,
    };

    // The steps up to promotion; a mirroring step sends the canary no traffic and is not a weight.
    let weights: Vec<u32> = if config.strategy == Strategy::Canary && config.traffic_shifting {
        good.weights.into_iter().filter(|w| *w > 0).collect()
    } else {
        Vec::new()
    };

    let checks = config
        .webhooks
        .iter()
        .filter(|h| matches!(h.hook, HookType::PreRollout | HookType::Rollout))
        .map(|h| format!("{} ({} webhook)", h.name, h.hook))
        .chain(config.metrics.iter().map(|m| {
            let mut s = m.name.clone();
            match (m.range.min, m.range.max) {
                (Some(min), Some(max)) => s.push_str(&format!(" in [{min}, {max}]")),
                (Some(min), None) => s.push_str(&format!(" >= {min}")),
                (None, Some(max)) => s.push_str(&format!(" <= {max}")),
                (None, None) => {}
            }
            s
        }))
        .collect();
    let gates = config
        .webhooks
        .iter()
        .filter(|h| {
            matches!(
                h.hook,
                HookType::ConfirmRollout
                    | HookType::ConfirmTrafficIncrease
                    | HookType::ConfirmPromotion
                    | HookType::Rollback
            )
        })
        .map(|h| format!("{} ({})", h.name, h.hook))
        .collect();

    Ok(Plan {
        name: config.name.clone(),
        namespace: config.namespace.clone(),
        provider: config.provider.clone(),
        strategy: config.strategy.as_str(),
        weights,
        iterations: if config.strategy == Strategy::Canary {
            0
        } else {
            config.iterations
        },
        interval_s: Secs::from_ms(config.interval_ms),
        threshold: config.threshold,
        min_promotion_s: Secs::from_ms(promoted_at),
        min_completion_s: Secs::from_ms(completed_at),
        min_rollback_s: rollback_at,
        mirror: config.mirror,
        skip_analysis: config.skip_analysis,
        checks,
        gates,
    })
}

fn secs(s: Secs) -> String {
    format_human(std::time::Duration::from_secs_f64(s.0.max(0.0)))
}

/// The plan as people read it.
pub fn write_human(p: &Plan, out: &mut dyn Write) -> std::io::Result<()> {
    writeln!(out, "{}.{}  ({} provider)", p.name, p.namespace, p.provider)?;
    let strategy = match p.strategy {
        "canary" => "canary: progressive traffic shifting",
        "ab-testing" => "A/B testing: matching requests go to the canary",
        _ => "blue/green: the canary is tested, then takes all traffic",
    };
    writeln!(out, "  strategy     {strategy}")?;
    if p.skip_analysis {
        writeln!(
            out,
            "  analysis     skipped: the new revision is promoted at once"
        )?;
    }
    if p.strategy == "canary" {
        let steps: Vec<String> = p.weights.iter().map(|w| format!("{w}%")).collect();
        let mirror = if p.mirror { "mirror → " } else { "" };
        writeln!(out, "  weights      {mirror}{}", steps.join(" → "))?;
    } else {
        writeln!(out, "  iterations   {}", p.iterations)?;
    }
    writeln!(out, "  interval     {}", secs(p.interval_s))?;
    writeln!(
        out,
        "  threshold    {} failed checks roll back",
        p.threshold
    )?;
    if !p.checks.is_empty() {
        writeln!(out, "  checks       {}", p.checks.join(", "))?;
    }
    if !p.gates.is_empty() {
        writeln!(out, "  gates        {}", p.gates.join(", "))?;
    }
    writeln!(
        out,
        "  promotion    fastest {} (completed after {})",
        secs(p.min_promotion_s),
        secs(p.min_completion_s)
    )?;
    match p.min_rollback_s {
        Some(s) => writeln!(out, "  rollback     fastest {}", secs(s))?,
        None => writeln!(
            out,
            "  rollback     only on a progress deadline or a manual abort (no checks can fail)"
        )?,
    }
    writeln!(
        out,
        "  (times count from the first tick that sees the new revision)"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{self, Provider};

    fn config(provider: &str, analysis: &str) -> Config {
        let text = format!(
            "apiVersion: flagger.app/v1beta1
kind: Canary
metadata:
  name: podinfo
  namespace: test
spec:
  provider: {provider}
  targetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: podinfo
  service:
    port: 9898
  analysis:
    interval: 10s
{analysis}"
        );
        let docs = match spec::load_str("c.yaml", &text) {
            Ok(d) => d,
            Err(e) => panic!("{e}"),
        };
        Config::from_canary(&docs.canaries[0], &Provider::Istio)
    }

    const METRIC: &str =
        "    metrics:\n    - name: request-success-rate\n      thresholdRange:\n        min: 99\n";
    const PRE: &str =
        "    webhooks:\n    - name: smoke\n      type: pre-rollout\n      url: http://t.test/\n";
    const GATE: &str = "    webhooks:\n    - name: gate\n      type: confirm-promotion\n      url: http://t.test/\n    - name: stop\n      type: rollback\n      url: http://t.test/\n";
    const ROLLOUT_HOOK: &str = "    webhooks:\n    - name: load\n      url: http://t.test/\n";

    /// The plan with iterations and threshold cut to 2 and added back must be the plan the
    /// engine gives tick by tick, for every strategy and kind of check.
    #[test]
    fn extrapolated_plans_equal_simulated_ones() {
        let shapes = [
            (
                "gloo",
                "    match:\n    - headers:\n        x: {exact: y}\n",
            ),
            ("istio", ""),
            ("kubernetes", ""),
        ];
        let checks = ["", METRIC, PRE, GATE, ROLLOUT_HOOK];
        for (provider, matches) in shapes {
            for checks in checks {
                for iterations in [1, 2, 3, 7, 40] {
                    for threshold in [1, 2, 3, 9, 33] {
                        let analysis = format!(
                            "    threshold: {threshold}\n    iterations: {iterations}\n{matches}{checks}"
                        );
                        let c = config(provider, &analysis);
                        let fast = compute_with(&c, 2).map_err(|e| e.to_string());
                        let slow = compute_with(&c, u32::MAX).map_err(|e| e.to_string());
                        assert_eq!(fast, slow, "{provider} {analysis}");
                    }
                }
            }
        }
        // A canary release has no iterations; its threshold is extrapolated all the same.
        for threshold in [1, 4, 30] {
            let c = config(
                "istio",
                &format!(
                    "    threshold: {threshold}\n    stepWeight: 20\n    maxWeight: 60\n{METRIC}"
                ),
            );
            let (fast, slow) = (compute_with(&c, 2).ok(), compute_with(&c, u32::MAX).ok());
            assert!(fast.is_some());
            assert_eq!(fast, slow);
        }
    }

    #[test]
    fn the_largest_schedules_plan_at_once_and_exactly() {
        let mut c = config(
            "gloo",
            &format!("    threshold: 2\n    iterations: 10\n    match:\n    - headers:\n        x: {{exact: y}}\n{METRIC}"),
        );
        c.iterations = u32::try_from(i32::MAX).unwrap_or(u32::MAX);
        c.threshold = 1_000_000;
        let started = std::time::Instant::now();
        let plan = compute(&c).map_err(|e| e.to_string());
        let Ok(plan) = plan else { panic!("{plan:?}") };
        // One tick per iteration after the first, then the promotion: (n + 1) intervals.
        assert_eq!(plan.min_promotion_s, Secs(21_474_836_480.0));
        assert_eq!(plan.min_completion_s, Secs(21_474_836_500.0));
        // Ticks 0 and 1 start the analysis and its first iteration, ticks 2 to 1000001 fail a
        // check each, tick 1000002 rolls back.
        assert_eq!(plan.min_rollback_s, Some(Secs(10_000_020.0)));
        assert!(started.elapsed() < std::time::Duration::from_secs(30));
    }
}
