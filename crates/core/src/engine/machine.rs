//! One tick of the canary phase loop, written the way Flagger's scheduler reads, but without I/O.
//!
//! A tick runs as a *replay*: it starts from the state the tick began with and the answers received
//! so far. When it needs something it has no answer for, it stops with [`Need`]; the engine hands
//! the request to the runner, and when the answer arrives the tick runs again from the start. The
//! logic is deterministic, so the replay takes the same path up to the new question, and the engine
//! forwards only the commands it had not forwarded yet. This keeps the code as linear as the Go
//! original while the engine stays a plain data structure.

use crate::spec::duration::format_go_duration;
use crate::spec::HookType;

use super::config::{Config, MetricKind, Strategy};
use super::gofmt::go_float;
use super::model::*;

/// The text of Flagger's `ErrNoValuesFound`, which its "no values" events print.
const NO_VALUES_FOUND: &str = "no values found";

/// The tick cannot go on without an answer to this request.
#[derive(Debug)]
pub(crate) struct Need(pub Request);

pub(crate) type Flow<T = ()> = Result<T, Need>;

/// What a tick is for.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) enum TickKind {
    /// A scheduled analysis tick.
    Advance,
    /// Roll back now, because the runner was told to.
    Abort { reason: String },
    /// Put traffic back on the primary and forget the analysis, without a verdict.
    Cancel { reason: String },
}

/// The context of one (re)play of a tick.
pub(crate) struct Cx<'a> {
    pub cfg: &'a Config,
    pub st: State,
    pub now: Millis,
    answers: &'a [Answer],
    used: usize,
    pub out: Vec<Command>,
}

impl<'a> Cx<'a> {
    pub fn new(cfg: &'a Config, st: State, now: Millis, answers: &'a [Answer]) -> Self {
        Cx {
            cfg,
            st,
            now,
            answers,
            used: 0,
            out: Vec::new(),
        }
    }

    fn ask(&mut self, request: Request) -> Flow<Answer> {
        match self.answers.get(self.used) {
            Some(answer) => {
                self.used += 1;
                Ok(answer.clone())
            }
            None => Err(Need(request)),
        }
    }

    fn emit(&mut self, command: Command) {
        self.out.push(command);
    }

    fn info(&mut self, message: String) {
        self.emit(Command::Event {
            severity: EventLevel::Info,
            message,
        });
    }

    fn warn(&mut self, message: String) {
        self.emit(Command::Event {
            severity: EventLevel::Warning,
            message,
        });
    }

    fn set_phase(&mut self, phase: Phase) {
        if self.st.phase != phase {
            self.st.phase = phase;
            self.st.last_transition = self.now;
            self.emit(Command::SetPhase { phase });
        }
    }

    fn set_routes(&mut self, routes: Routes) {
        self.st.routes = routes;
        self.emit(Command::SetRoutes { routes });
    }

    fn check(&mut self, name: &str, kind: &str, value: Option<f64>, passed: bool) {
        self.emit(Command::Check {
            check: CheckRecord {
                name: name.to_string(),
                kind: kind.to_string(),
                value,
                passed,
            },
        });
    }

    /// Asks for a workload's readiness and applies the progress deadline to a workload that has been
    /// "not ready" for too long, so a stuck rollout fails even if nobody reports the deadline.
    fn readiness(&mut self, workload: Workload) -> Flow<Readiness> {
        let answer = self.ask(Request::Readiness { workload })?;
        let readiness = match answer {
            Answer::Readiness(r) => r,
            other => Readiness::NotReady(format!("unexpected answer {other:?}")),
        };
        let since = match workload {
            Workload::Primary => &mut self.st.primary_not_ready_since,
            Workload::Canary => &mut self.st.canary_not_ready_since,
        };
        Ok(match readiness {
            Readiness::Ready => {
                *since = None;
                Readiness::Ready
            }
            Readiness::Failed(reason) => {
                *since = None;
                Readiness::Failed(reason)
            }
            Readiness::NotReady(reason) => {
                let start = *since.get_or_insert(self.now);
                let waited = self.now.saturating_sub(start);
                if waited > self.cfg.progress_deadline_ms {
                    *since = None;
                    Readiness::Failed(format!(
                        "{reason} (not ready for {}s, more than progressDeadlineSeconds {})",
                        waited / 1000,
                        self.cfg.progress_deadline_ms / 1000
                    ))
                } else {
                    Readiness::NotReady(reason)
                }
            }
        })
    }

    fn call_hook(&mut self, index: usize, phase: Phase) -> Flow<HookOutcome> {
        let hook = &self.cfg.webhooks[index];
        let request = Request::Webhook {
            index,
            name: hook.name.clone(),
            hook: hook.hook,
            phase,
        };
        let outcome = match self.ask(request)? {
            Answer::Webhook(o) => o,
            other => HookOutcome::Fail(format!("unexpected answer {other:?}")),
        };
        let (name, kind) = (hook.name.clone(), hook.hook.as_str());
        self.check(&name, kind, None, outcome == HookOutcome::Pass);
        Ok(outcome)
    }

    fn hooks(&self, hook: HookType) -> Vec<(usize, String)> {
        self.cfg
            .hooks_of(hook)
            .map(|(i, h)| (i, h.name.clone()))
            .collect()
    }
}

/// Runs one tick (or an abort) against the context.
pub(crate) fn run(cx: &mut Cx<'_>, kind: &TickKind) -> Flow {
    match kind {
        TickKind::Advance => advance(cx),
        TickKind::Abort { reason } => abort(cx, reason),
        TickKind::Cancel { reason } => cancel(cx, reason),
    }
}

fn primary_name(cfg: &Config) -> String {
    format!("{}-primary.{}", cfg.target, cfg.namespace)
}

/// Flagger's `advanceCanary`, step by step.
fn advance(cx: &mut Cx<'_>) -> Flow {
    let cfg = cx.cfg;
    if cfg.suspend {
        cx.info("skipping canary run as object is suspended".to_string());
        return Ok(());
    }

    // Bootstrap: create the primary, wait for it, point the apex at it, scale the target down.
    if cx.st.phase == Phase::Initializing {
        cx.emit(Command::Bootstrap);
        if !cfg.skip_analysis {
            match cx.readiness(Workload::Primary)? {
                Readiness::Ready => {}
                Readiness::NotReady(reason) => {
                    cx.warn(format!("{} not ready: {reason}", primary_name(cfg)));
                    return Ok(());
                }
                Readiness::Failed(reason) => {
                    // Unlike Flagger, leave traffic where it is: the target still serves it, and
                    // routing it to a primary that never became ready would lose it.
                    cx.warn(format!(
                        "Initialization failed! {} not ready: {reason}; traffic stays on {}",
                        primary_name(cfg),
                        cfg.target_qualified()
                    ));
                    cx.set_phase(Phase::Failed);
                    return Ok(());
                }
            }
        }
        cx.set_routes(Routes::PRIMARY);
        cx.emit(Command::ScaleCanaryToZero);
        cx.st.last_applied_revision = cx.st.target_revision.clone();
        cx.st.last_promoted_revision = cx.st.target_revision.clone();
        cx.set_phase(Phase::Initialized);
        cx.info(format!("Initialization done! {}", cfg.qualified()));
        return Ok(());
    }

    let new_revision = cx.st.has_new_revision();
    if !cx.st.phase.is_active() && !new_revision {
        return Ok(());
    }

    if !cfg.skip_analysis {
        match cx.readiness(Workload::Primary)? {
            Readiness::Ready => {}
            Readiness::NotReady(reason) => {
                cx.warn(format!("{} not ready: {reason}", primary_name(cfg)));
                return Ok(());
            }
            Readiness::Failed(reason) => {
                let err = format!("{} not ready: {reason}", primary_name(cfg));
                cx.warn(err.clone());
                if matches!(cx.st.phase, Phase::Promoting | Phase::Finalising) {
                    return failed_promotion(cx, &err);
                }
                return rollback(cx);
            }
        }
    }

    // Flagger's checkCanaryStatus: start the analysis of a new revision.
    if !matches!(
        cx.st.phase,
        Phase::Progressing | Phase::WaitingPromotion | Phase::Promoting | Phase::Finalising
    ) {
        // Flagger announces every confirm-rollout hook that passes, on each call.
        if let Some((name, _)) = until_failure(
            cx,
            HookType::ConfirmRollout,
            Phase::Progressing,
            "Confirm-rollout check",
        )? {
            if cx.st.phase != Phase::Waiting {
                cx.set_phase(Phase::Waiting);
                cx.warn(format!(
                    "Halt {} advancement waiting for approval {name}",
                    cfg.qualified()
                ));
            }
            return Ok(());
        }
        cx.info(format!(
            "New revision detected! Scaling up {}",
            cfg.target_qualified()
        ));
        cx.emit(Command::ScaleCanaryUp);
        if cx.st.routes != Routes::PRIMARY {
            cx.set_routes(Routes::PRIMARY);
        }
        cx.st.failed_checks = 0;
        cx.st.iterations = 0;
        cx.st.canary_not_ready_since = None;
        cx.st.last_applied_revision = cx.st.target_revision.clone();
        cx.st.analysis_started = Some(cx.now);
        cx.set_phase(Phase::Progressing);
        return Ok(());
    }

    // A new revision during the analysis restarts it.
    if matches!(cx.st.phase, Phase::Progressing | Phase::WaitingPromotion) && new_revision {
        cx.set_routes(Routes::PRIMARY);
        cx.st.failed_checks = 0;
        cx.st.iterations = 0;
        cx.st.canary_not_ready_since = None;
        cx.st.last_applied_revision = cx.st.target_revision.clone();
        cx.st.analysis_started = Some(cx.now);
        cx.set_phase(Phase::Progressing);
        cx.info(format!(
            "New revision detected! Restarting analysis for {}",
            cfg.target_qualified()
        ));
        return Ok(());
    }

    match cx.readiness(Workload::Canary)? {
        Readiness::Ready => {}
        Readiness::NotReady(reason) => {
            cx.warn(format!("{} not ready: {reason}", cfg.target_qualified()));
            return Ok(());
        }
        Readiness::Failed(reason) => {
            cx.warn(format!(
                "Rolling back {} progress deadline exceeded {reason}",
                cfg.qualified()
            ));
            return rollback(cx);
        }
    }

    if cfg.skip_analysis {
        if cx.st.failed_checks >= cfg.threshold {
            return rollback(cx);
        }
        cx.set_routes(Routes::PRIMARY);
        cx.info(format!(
            "Copying {} template spec to {}",
            cfg.target_qualified(),
            primary_name(cfg)
        ));
        cx.emit(Command::Promote {
            revision: cx.st.last_applied_revision.clone(),
        });
        cx.emit(Command::ScaleCanaryToZero);
        cx.st.last_promoted_revision = cx.st.last_applied_revision.clone();
        cx.set_phase(Phase::Succeeded);
        // Flagger 1.44 runs the post-rollout hooks of a skipped analysis too.
        post_rollout_hooks(cx, Phase::Succeeded)?;
        cx.info(format!(
            "Promotion completed! Canary analysis was skipped for {}",
            cfg.target_qualified()
        ));
        return Ok(());
    }

    if matches!(
        cx.st.phase,
        Phase::Progressing | Phase::Waiting | Phase::WaitingPromotion
    ) {
        let phase = cx.st.phase;
        for (index, name) in cx.hooks(HookType::Rollback) {
            match cx.call_hook(index, phase)? {
                HookOutcome::Pass => {
                    cx.warn(format!("Rollback check {name} passed"));
                    cx.warn(format!(
                        "Rolling back {} manual webhook invoked",
                        cfg.qualified()
                    ));
                    return rollback(cx);
                }
                HookOutcome::Fail(_) => {
                    cx.info(format!("Rollback hook {name} not signaling a rollback"));
                }
            }
        }
    }

    if cx.st.phase == Phase::Promoting {
        promotion_traffic_shift(cx);
        return Ok(());
    }

    if cx.st.phase == Phase::Finalising {
        cx.emit(Command::ScaleCanaryToZero);
        cx.st.last_promoted_revision = cx.st.last_applied_revision.clone();
        cx.set_phase(Phase::Succeeded);
        post_rollout_hooks(cx, Phase::Succeeded)?;
        cx.info(format!(
            "Promotion completed! Scaling down {}",
            cfg.target_qualified()
        ));
        return Ok(());
    }

    if cx.st.failed_checks >= cfg.threshold {
        return rollback(cx);
    }

    let mirrored = cx.st.routes.mirror;
    if cx.st.routes.canary == 0 && cx.st.iterations == 0 && !(cfg.mirror && mirrored) {
        cx.info(format!(
            "Starting canary analysis for {}",
            cfg.target_qualified()
        ));
        if !pre_rollout_hooks(cx)? {
            cx.st.failed_checks += 1;
            return Ok(());
        }
    } else if !analysis(cx)? {
        cx.st.failed_checks += 1;
        return Ok(());
    }

    for warning in &cfg.provider_warnings {
        cx.warn(warning.clone());
    }

    match cfg.strategy {
        Strategy::AbTesting => run_ab(cx),
        Strategy::BlueGreen => run_blue_green(cx),
        Strategy::Canary => {
            if cfg.next_step_weight(cx.st.routes.canary) > 0 {
                if !mirrored
                    && cx.st.phase != Phase::WaitingPromotion
                    && !confirm_traffic_increase(cx)?
                {
                    return Ok(());
                }
                run_canary(cx)?;
            }
            Ok(())
        }
    }
}

fn abort(cx: &mut Cx<'_>, reason: &str) -> Flow {
    let cfg = cx.cfg;
    match cx.st.phase {
        Phase::Progressing | Phase::Waiting | Phase::WaitingPromotion => {
            cx.warn(format!(
                "Rolling back {} abort requested: {reason}",
                cfg.qualified()
            ));
            rollback(cx)
        }
        Phase::Promoting | Phase::Finalising => {
            cx.warn(format!(
                "Abort of {} ignored: the canary was already promoted to {} and the promotion is completing",
                cfg.qualified(),
                primary_name(cfg)
            ));
            Ok(())
        }
        phase => {
            cx.info(format!(
                "Nothing to abort for {}: no analysis is running (phase {phase})",
                cfg.qualified()
            ));
            Ok(())
        }
    }
}

/// Shutdown without a verdict: traffic back to the primary, canary to zero, and the state wound back
/// to "initialized, new revision pending", so the next run starts this revision's analysis afresh.
fn cancel(cx: &mut Cx<'_>, reason: &str) -> Flow {
    let cfg = cx.cfg;
    match cx.st.phase {
        Phase::Progressing | Phase::Waiting | Phase::WaitingPromotion => {
            cx.set_routes(Routes::PRIMARY);
            cx.emit(Command::ScaleCanaryToZero);
            cx.st.failed_checks = 0;
            cx.st.iterations = 0;
            cx.st.canary_not_ready_since = None;
            cx.st.last_applied_revision = cx.st.last_promoted_revision.clone();
            cx.set_phase(Phase::Initialized);
            cx.warn(format!(
                "Cancelled {}: {reason}; all traffic is back on {}, and the next run restarts the analysis",
                cfg.qualified(),
                primary_name(cfg)
            ));
        }
        Phase::Promoting | Phase::Finalising => cx.warn(format!(
            "Cancelled {} during promotion: {reason}; the next run finishes the promotion",
            cfg.qualified()
        )),
        _ => {}
    }
    Ok(())
}

/// Flagger's `rollback`: all traffic back to the primary, canary to zero, phase Failed.
fn rollback(cx: &mut Cx<'_>) -> Flow {
    let cfg = cx.cfg;
    if cx.st.failed_checks >= cfg.threshold {
        cx.warn(format!(
            "Rolling back {} failed checks threshold reached {}",
            cfg.qualified(),
            cx.st.failed_checks
        ));
    }
    cx.set_routes(Routes::PRIMARY);
    cx.warn(format!("Canary failed! Scaling down {}", cfg.qualified()));
    cx.emit(Command::ScaleCanaryToZero);
    cx.st.canary_not_ready_since = None;
    cx.set_phase(Phase::Failed);
    post_rollout_hooks(cx, Phase::Failed)?;
    Ok(())
}

/// The primary did not become ready after it was given the canary's spec (`err` says why, as the
/// readiness warning did). The canary runs the same revision and is healthy, so it stays up, as in
/// Flagger 1.44; Flagger leaves the routes as they are, aviary gives the canary all the traffic
/// (the primary may still hold a share during a gradual promotion).
fn failed_promotion(cx: &mut Cx<'_>, err: &str) -> Flow {
    let cfg = cx.cfg;
    if cfg.traffic_shifting {
        cx.set_routes(Routes::split(100, RouteScope::All));
    }
    cx.warn(format!(
        "Promotion of {} failed, primary not ready: {err}",
        cfg.qualified()
    ));
    cx.set_phase(Phase::Failed);
    post_rollout_hooks(cx, Phase::Failed)?;
    Ok(())
}

fn promotion_traffic_shift(cx: &mut Cx<'_>) {
    let cfg = cx.cfg;
    if !cfg.traffic_shifting {
        cx.set_phase(Phase::Finalising);
        return;
    }
    let step = cfg.step_weight_promotion;
    if step == 0 || cx.st.routes.canary == 0 {
        cx.info("Routing all traffic to primary".to_string());
        cx.set_routes(Routes::PRIMARY);
        cx.set_phase(Phase::Finalising);
        return;
    }
    let canary = cx.st.routes.canary.saturating_sub(step);
    let routes = if canary == 0 {
        Routes::PRIMARY
    } else {
        Routes::split(canary, cx.st.routes.scope)
    };
    cx.set_routes(routes);
    cx.info(format!(
        "Advance {} primary weight {}",
        cfg.qualified(),
        routes.primary
    ));
    if routes.primary == 100 {
        cx.set_phase(Phase::Finalising);
    }
}

/// Calls the webhooks of one type in spec order and stops at the first that fails, returning its
/// name and error. Each one that passes is announced as "`passed` NAME passed" (unless `passed` is
/// empty), in Flagger's words.
fn until_failure(
    cx: &mut Cx<'_>,
    hook: HookType,
    phase: Phase,
    passed: &str,
) -> Flow<Option<(String, String)>> {
    for (index, name) in cx.hooks(hook) {
        match cx.call_hook(index, phase)? {
            HookOutcome::Pass if passed.is_empty() => {}
            HookOutcome::Pass => cx.info(format!("{passed} {name} passed")),
            HookOutcome::Fail(err) => return Ok(Some((name, err))),
        }
    }
    Ok(None)
}

fn pre_rollout_hooks(cx: &mut Cx<'_>) -> Flow<bool> {
    let failure = until_failure(
        cx,
        HookType::PreRollout,
        Phase::Progressing,
        "Pre-rollout check",
    )?;
    if let Some((name, err)) = failure {
        let q = cx.cfg.qualified();
        cx.warn(format!(
            "Halt {q} advancement pre-rollout check {name} failed {err}"
        ));
        return Ok(false);
    }
    Ok(true)
}

fn post_rollout_hooks(cx: &mut Cx<'_>, phase: Phase) -> Flow<bool> {
    let failure = until_failure(cx, HookType::PostRollout, phase, "Post-rollout check")?;
    if let Some((name, err)) = failure {
        cx.warn(format!("Post-rollout hook {name} failed {err}"));
        return Ok(false);
    }
    Ok(true)
}

fn confirm_traffic_increase(cx: &mut Cx<'_>) -> Flow<bool> {
    let failure = until_failure(
        cx,
        HookType::ConfirmTrafficIncrease,
        Phase::Progressing,
        "Confirm-traffic-increase check",
    )?;
    if let Some((name, _)) = failure {
        let q = cx.cfg.qualified();
        cx.warn(format!(
            "Halt {q} advancement waiting for traffic increase approval {name}"
        ));
        return Ok(false);
    }
    Ok(true)
}

/// The promotion gate. A closed gate parks the canary in WaitingPromotion (analysis keeps running
/// there, so failed checks can still roll it back); an open one lets the caller promote. The gate
/// is asked on every tick. Flagger 1.44, after the first refusal, steps the status iterations back
/// to `iterations - 1`, so in A/B testing and blue/green it asks only every other tick (the ticks
/// between re-announce "Advance … canary iteration N/N"); aviary does not follow that, so an opened
/// gate is acted on within one interval (README, "differs from Flagger").
fn confirm_promotion(cx: &mut Cx<'_>) -> Flow<bool> {
    let failure = until_failure(
        cx,
        HookType::ConfirmPromotion,
        Phase::Progressing,
        "Confirm-promotion check",
    )?;
    if let Some((name, _)) = failure {
        // Announced once, when the canary starts waiting, as Flagger does.
        if cx.st.phase != Phase::WaitingPromotion {
            cx.set_phase(Phase::WaitingPromotion);
            let q = cx.cfg.qualified();
            cx.warn(format!(
                "Halt {q} advancement waiting for promotion approval {name}"
            ));
        }
        return Ok(false);
    }
    Ok(true)
}

fn promote(cx: &mut Cx<'_>) {
    let cfg = cx.cfg;
    cx.info(format!(
        "Copying {} template spec to {}",
        cfg.target_qualified(),
        primary_name(cfg)
    ));
    cx.emit(Command::Promote {
        revision: cx.st.last_applied_revision.clone(),
    });
    cx.set_phase(Phase::Promoting);
}

/// Rollout webhooks, then metrics in order; the first failure stops the check.
fn analysis(cx: &mut Cx<'_>) -> Flow<bool> {
    let cfg = cx.cfg;
    let q = cfg.qualified();
    if let Some((name, err)) = until_failure(cx, HookType::Rollout, Phase::Progressing, "")? {
        cx.warn(format!(
            "Halt {q} advancement external check {name} failed {err}"
        ));
        return Ok(false);
    }
    for (index, metric) in cfg.metrics.iter().enumerate() {
        let answer = cx.ask(Request::Metric {
            index,
            name: metric.name.clone(),
            since: cx.st.analysis_started,
        })?;
        let outcome = match answer {
            Answer::Metric(m) => m,
            other => MetricOutcome::Error(format!("unexpected answer {other:?}")),
        };
        let value = match outcome {
            MetricOutcome::Value(v) if !v.is_nan() => v,
            MetricOutcome::Value(_) | MetricOutcome::NoValues(_) => {
                // Flagger's words, with its error text (`ErrNoValuesFound`) where it prints one,
                // for an empty result and for NaN alike; the runner logs the details it found.
                let reason = match outcome {
                    MetricOutcome::NoValues(r) => r,
                    _ => NO_VALUES_FOUND.to_string(),
                };
                cx.check(&metric.name, "metric", None, false);
                let message = match metric.kind {
                    MetricKind::SuccessRate => format!(
                        "Halt advancement no values found for {} metric {} probably {} is not receiving traffic: {NO_VALUES_FOUND}",
                        cfg.metrics_provider(),
                        metric.name,
                        cfg.target_qualified()
                    ),
                    MetricKind::Duration => format!(
                        "Halt advancement no values found for {} metric {} probably {} is not receiving traffic",
                        cfg.metrics_provider(),
                        metric.name,
                        cfg.target_qualified()
                    ),
                    MetricKind::Query => {
                        format!("Halt advancement no values found for metric: {}", metric.name)
                    }
                    MetricKind::Template => format!(
                        "Halt advancement no values found for custom metric: {}: {NO_VALUES_FOUND}",
                        metric.name
                    ),
                    MetricKind::Judge => format!("Halt advancement judge: {reason}"),
                };
                cx.warn(message);
                return Ok(false);
            }
            MetricOutcome::Error(err) => {
                cx.check(&metric.name, "metric", None, false);
                let message = match metric.kind {
                    MetricKind::SuccessRate | MetricKind::Duration => {
                        format!("Prometheus query failed: {err}")
                    }
                    MetricKind::Query => {
                        format!("Prometheus query failed for {}: {err}", metric.name)
                    }
                    MetricKind::Template | MetricKind::Judge => {
                        format!("Metric query failed for {}: {err}", metric.name)
                    }
                };
                cx.warn(message);
                return Ok(false);
            }
        };
        let failure = check_range(&q, metric.kind, &metric.name, value, metric.range);
        cx.check(&metric.name, "metric", Some(value), failure.is_none());
        if let Some(message) = failure {
            cx.warn(message);
            return Ok(false);
        }
    }
    Ok(true)
}

/// Checks a value against its range; `Some(message)` (Flagger's wording) when it is out of range.
pub(crate) fn check_range(
    qualified: &str,
    kind: MetricKind,
    name: &str,
    value: f64,
    range: crate::spec::ThresholdRange,
) -> Option<String> {
    let below = range.min.filter(|min| value < *min);
    let above = range.max.filter(|max| value > *max);
    match kind {
        MetricKind::SuccessRate => below
            .map(|min| {
                format!(
                    "Halt {qualified} advancement success rate {value:.2}% < {}%",
                    go_float(min)
                )
            })
            .or_else(|| {
                above.map(|max| {
                    format!(
                        "Halt {qualified} advancement success rate {value:.2}% > {}%",
                        go_float(max)
                    )
                })
            }),
        MetricKind::Duration => {
            // Flagger truncates the observed latency to whole milliseconds before comparing.
            let ms = |v: f64| std::time::Duration::from_millis(v.max(0.0) as u64);
            let observed = ms(value);
            let below = range.min.filter(|min| observed < ms(*min));
            let above = range.max.filter(|max| observed > ms(*max));
            below
                .map(|min| {
                    format!(
                        "Halt {qualified} advancement request duration {} < {}",
                        format_go_duration(observed),
                        format_go_duration(ms(min))
                    )
                })
                .or_else(|| {
                    above.map(|max| {
                        format!(
                            "Halt {qualified} advancement request duration {} > {}",
                            format_go_duration(observed),
                            format_go_duration(ms(max))
                        )
                    })
                })
        }
        MetricKind::Judge => {
            below.map(|min| format!("Halt {qualified} advancement judge score {value:.0} < {min}"))
        }
        MetricKind::Query | MetricKind::Template => below
            .map(|min| {
                format!(
                    "Halt {qualified} advancement {name} {value:.2} < {}",
                    go_float(min)
                )
            })
            .or_else(|| {
                above.map(|max| {
                    format!(
                        "Halt {qualified} advancement {name} {value:.2} > {}",
                        go_float(max)
                    )
                })
            }),
    }
}

/// Flagger's `runCanary`, with one deliberate difference: the canary weight is capped at
/// `maxWeight` (Flagger can overshoot it, e.g. 20, 40, 60 for maxWeight 50 and stepWeight 20).
fn run_canary(cx: &mut Cx<'_>) -> Flow {
    let cfg = cx.cfg;
    let max_weight = cfg.effective_max_weight();
    let canary_weight = cx.st.routes.canary;
    if canary_weight < max_weight {
        let next = cfg.next_step_weight(canary_weight);
        let routes = if cfg.mirror && canary_weight == 0 {
            if !cx.st.routes.mirror {
                Routes {
                    mirror: true,
                    mirror_weight: cfg.mirror_weight,
                    ..Routes::PRIMARY
                }
            } else {
                Routes::split(next.min(max_weight), RouteScope::All)
            }
        } else {
            Routes::split((canary_weight + next).min(max_weight), RouteScope::All)
        };
        cx.set_routes(routes);
        cx.info(format!(
            "Advance {} canary weight {}",
            cfg.qualified(),
            routes.canary
        ));
        return Ok(());
    }
    if confirm_promotion(cx)? {
        promote(cx);
    }
    Ok(())
}

/// Flagger's `runAB`: matching requests go to the canary for `iterations` ticks.
fn run_ab(cx: &mut Cx<'_>) -> Flow {
    let cfg = cx.cfg;
    if cfg.iterations > cx.st.iterations {
        cx.set_routes(Routes::split(100, RouteScope::Matched));
        cx.st.iterations += 1;
        cx.info(format!(
            "Advance {} canary iteration {}/{}",
            cfg.qualified(),
            cx.st.iterations,
            cfg.iterations
        ));
        return Ok(());
    }
    if !confirm_promotion(cx)? {
        return Ok(());
    }
    promote(cx);
    Ok(())
}

/// Flagger's `runBlueGreen`: `iterations` ticks of analysis (mirroring if asked), then all traffic
/// to the canary for one more tick, then promotion.
fn run_blue_green(cx: &mut Cx<'_>) -> Flow {
    let cfg = cx.cfg;
    if cfg.iterations > cx.st.iterations {
        if cfg.traffic_shifting && cfg.mirror && !cx.st.routes.mirror {
            // Flagger only logs "Start traffic mirroring"; the route change is the record here.
            cx.set_routes(Routes {
                mirror: true,
                mirror_weight: cfg.mirror_weight,
                ..Routes::PRIMARY
            });
        }
        cx.st.iterations += 1;
        cx.info(format!(
            "Advance {} canary iteration {}/{}",
            cfg.qualified(),
            cx.st.iterations,
            cfg.iterations
        ));
        return Ok(());
    }
    if !confirm_promotion(cx)? {
        return Ok(());
    }
    if cfg.iterations == cx.st.iterations {
        if cfg.traffic_shifting {
            if cfg.mirror {
                cx.info("Stop traffic mirroring and route all traffic to canary".to_string());
            } else {
                cx.info("Routing all traffic to canary".to_string());
            }
            cx.set_routes(Routes::split(100, RouteScope::All));
        }
        cx.st.iterations += 1;
        return Ok(());
    }
    promote(cx);
    Ok(())
}
