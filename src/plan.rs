//! `aviary plan`: the schedule a Canary implies, computed by running the engine itself on a
//! simulated clock, once with every check passing and once with every check failing, so the plan
//! can never disagree with what a real run does.

use std::io::Write;

use serde::{Serialize, Serializer};

use crate::app::{self, AppError};
use crate::cli::PlanArgs;
use crate::engine::sim::{self, Run};
use crate::engine::{
    Answer, Command, Config, Engine, HookOutcome, MetricOutcome, Phase, Readiness, Request, State,
    Strategy,
};
use crate::exit::Exit;
use crate::spec::duration::format_human;
use crate::spec::HookType;

/// Enough ticks for any schedule the spec can describe: at most 100 weight steps (or the
/// iterations), the promotion steps back, and the bookkeeping ticks around them.
pub fn tick_budget(config: &Config) -> usize {
    let iterations = usize::try_from(config.iterations).unwrap_or(usize::MAX);
    iterations.saturating_add(250).min(5_000_000)
}

/// Seconds, printed as an integer when whole.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Secs(pub f64);

impl Serialize for Secs {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.0.fract() == 0.0 && self.0 >= 0.0 && self.0 < 9.0e15 {
            s.serialize_u64(self.0 as u64)
        } else {
            s.serialize_f64(self.0)
        }
    }
}

impl<'de> serde::Deserialize<'de> for Secs {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Secs, D::Error> {
        f64::deserialize(d).map(Secs)
    }
}

impl Secs {
    fn from_ms(ms: u64) -> Secs {
        Secs(ms as f64 / 1000.0)
    }
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

fn simulate(config: &Config, oracle: &mut dyn sim::Oracle) -> Result<Run, AppError> {
    let mut engine = Engine::new(
        config.clone(),
        State::initialized_with_new_revision("current", "next"),
    );
    Ok(sim::run(&mut engine, oracle, tick_budget(config))?)
}

pub fn compute(config: &Config) -> Result<Plan, AppError> {
    let good = simulate(config, &mut passing(config))?;
    let bad = simulate(config, &mut failing)?;

    let promoted_at = good.first_time(|c| matches!(c, Command::Promote));
    let (Some(promoted_at), Some(Phase::Succeeded)) = (promoted_at, good.verdict) else {
        return Err(AppError::input(format!(
            "{}: this Canary never promotes, even when every check passes",
            config.qualified()
        ))
        .with_help("check that the analysis has a strategy (stepWeight, stepWeights or iterations) and that the Canary is not suspended"));
    };
    let completed_at = good.ticks.last().map(|t| t.at).unwrap_or(promoted_at);
    let rollback_at = match bad.verdict {
        Some(Phase::Failed) => bad.ticks.last().map(|t| Secs::from_ms(t.at)),
        _ => None,
    };

    // The steps up to promotion; a mirroring step sends the canary no traffic and is not a weight.
    let weights: Vec<u32> = if config.strategy == Strategy::Canary && config.traffic_shifting {
        sim::weight_path(
            good.commands()
                .take_while(|c| !matches!(c, Command::Promote)),
        )
        .into_iter()
        .filter(|w| *w > 0)
        .collect()
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

pub fn run(args: &PlanArgs, out: &mut dyn Write) -> Result<Exit, AppError> {
    let (_canary, config) = app::load_config(&args.canary)?;
    let plan = compute(&config)?;
    if args.json {
        serde_json::to_writer_pretty(&mut *out, &plan).map_err(std::io::Error::from)?;
        writeln!(out)?;
    } else {
        write_human(&plan, out)?;
    }
    Ok(Exit::Success)
}

fn secs(s: Secs) -> String {
    format_human(std::time::Duration::from_secs_f64(s.0.max(0.0)))
}

fn write_human(p: &Plan, out: &mut dyn Write) -> std::io::Result<()> {
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
