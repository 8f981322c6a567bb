//! The imperative shell around the engine: drives it with a real clock against a cluster, carries
//! out its commands, answers its requests, persists its state after every step, holds the lease,
//! and listens for `aviary abort`/`aviary promote`, SIGTERM/SIGINT and the run's timeout.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kube::Client;
use tokio::time::Instant;

use crate::cluster::ClusterError;
use crate::engine::{
    Answer, Command, Config, Engine, Input, Phase, Request, Severity, State, Step, Workload,
};
use crate::routing::{self, TrafficRouter};
use crate::spec::{Canary, HookType, Provider};
use crate::state::{LeaseGuard, LockError, StateStore, ABORT_ANNOTATION, APPROVE_ANNOTATION};
use crate::webhooks::WebhookCaller;
use crate::workload::Workloads;

/// How soon a tick that waited on a workload's readiness is repeated.
const READINESS_POLL: Duration = Duration::from_secs(2);
/// The first re-check of a workload that was not ready; it doubles up to [`READINESS_POLL`].
const FIRST_READINESS_POLL: Duration = Duration::from_millis(250);

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The new revision was promoted.
    Promoted,
    /// The primary was created from the target; there was nothing to analyse yet.
    Bootstrapped,
    /// No new revision: nothing to do. Carries the last verdict.
    UpToDate { phase: Phase },
    /// The revision was rolled back.
    RolledBack,
    /// Stopped by a signal; traffic is back on the primary.
    Cancelled,
    /// The run's time limit passed first; traffic is back on the primary.
    TimedOut,
    /// An externally driven canary phase ([`ExternalPhase::Canary`]) reached its weight and
    /// passed its analysis there; traffic stays split until the next phase.
    Held { weight: u32 },
}

/// A phase of a canary whose weights are driven from outside: Cloud Deploy's
/// `customCanaryDeployment` runs aviary once per phase (`canary-25`, `canary-50`, `stable`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExternalPhase {
    /// Take the canary to this weight (1-99), analyse it there once, and stop with traffic split.
    Canary(u32),
    /// Finish: promote a canary that an earlier phase left at some weight (after one more passing
    /// analysis there), or run the Canary's own schedule when no phase came before.
    Stable,
}

/// The name of the confirm-promotion gate that holds an externally driven phase at its weight.
pub const PHASE_GATE: &str = "next-phase";

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Locked(LockError),
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error("{0}")]
    Unsupported(String),
    #[error("internal error: {0}")]
    Engine(#[from] crate::engine::EngineError),
}

impl From<LockError> for RunError {
    fn from(e: LockError) -> Self {
        match e {
            LockError::Cluster(c) => RunError::Cluster(c),
            held => RunError::Locked(held),
        }
    }
}

pub struct Options {
    pub provider: Provider,
    /// Stop (returning traffic to the primary) after this long.
    pub timeout: Option<Duration>,
    /// Who holds the lease.
    pub holder: String,
    /// How often to look for abort/promote requests and signals between ticks.
    pub poll: Duration,
    /// MetricTemplates known locally (from the spec file or the rendered target).
    pub templates: Vec<crate::spec::MetricTemplate>,
    /// Prometheus for built-in metrics when the Canary has no `metricsServer`.
    pub prometheus: Option<String>,
    pub prometheus_auth: crate::metrics::Auth,
    /// Every tick is recorded here, for the report.
    pub log: crate::report::Log,
    /// Run one externally driven phase instead of the whole schedule.
    pub phase: Option<ExternalPhase>,
}

/// The engine's configuration for one externally driven phase, and the index of the gate that
/// holds it (none for `stable`).
fn phase_config(
    mut config: Config,
    phase: ExternalPhase,
    state: &State,
) -> Result<(Config, Option<usize>), RunError> {
    let hold_at = |config: &mut Config, weight: u32| {
        config.step_weight = 0;
        config.step_weights = vec![weight];
        config.max_weight = weight;
    };
    match phase {
        ExternalPhase::Canary(weight) => {
            if config.strategy != crate::engine::Strategy::Canary {
                return Err(RunError::Unsupported(format!(
                    "{}: a canary phase at {weight}% needs a canary strategy, but this Canary uses {}; give the target a standard (non-canary) strategy, or the Canary stepWeights",
                    config.qualified(),
                    config.strategy.as_str()
                )));
            }
            if !(1..=99).contains(&weight) {
                return Err(RunError::Unsupported(format!(
                    "{}: a canary phase must be between 1% and 99%, not {weight}%",
                    config.qualified()
                )));
            }
            hold_at(&mut config, weight);
            config.webhooks.push(crate::engine::HookRef {
                name: PHASE_GATE.to_string(),
                hook: HookType::ConfirmPromotion,
            });
            let gate = config.webhooks.len() - 1;
            Ok((config, Some(gate)))
        }
        ExternalPhase::Stable => {
            let w = state.routes.canary;
            if matches!(state.phase, Phase::Progressing | Phase::WaitingPromotion) && w > 0 {
                hold_at(&mut config, w);
            }
            Ok((config, None))
        }
    }
}

/// Now, in milliseconds since the Unix epoch.
pub fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// What stops a wait between ticks early.
enum Wake {
    Tick,
    Signal(&'static str),
    Abort(String),
    TimedOut,
}

struct Shell {
    canary: Canary,
    workloads: Workloads,
    router: Box<dyn TrafficRouter>,
    hooks: WebhookCaller,
    store: StateStore,
    revision: String,
    approved: bool,
    /// The last tick stopped because a workload was not ready yet.
    waiting_for_readiness: bool,
    metrics: crate::metrics::Evaluator,
    /// The index of the gate that holds an externally driven phase.
    phase_gate: Option<usize>,
    /// The commands carried out since the last recorded tick.
    done: Vec<Command>,
    log: crate::report::Log,
    started_ms: u64,
}

impl Shell {
    async fn execute(&mut self, command: &Command) -> Result<(), ClusterError> {
        self.done.push(command.clone());
        match command {
            Command::Bootstrap => self.workloads.bootstrap().await,
            Command::ScaleCanaryUp => self.workloads.scale_canary_up().await,
            Command::ScaleCanaryToZero => self.workloads.scale_canary_to_zero().await,
            Command::SetRoutes { routes } => self.router.set_routes(routes).await,
            Command::Promote => self.workloads.promote().await,
            Command::SetPhase { phase } => {
                tracing::info!(phase = %phase, "phase {phase}");
                Ok(())
            }
            Command::Event { severity, message } => {
                match severity {
                    Severity::Info => tracing::info!("{message}"),
                    Severity::Warning => tracing::warn!("{message}"),
                }
                self.send_event(*severity, message).await;
                Ok(())
            }
            Command::Check { check } => {
                let value = check
                    .value
                    .map(|v| format!(" ({})", (v * 1e4).round() / 1e4))
                    .unwrap_or_default();
                tracing::info!(
                    check = %check.name, kind = %check.kind, passed = check.passed, value = check.value,
                    "check {} {}{value}", check.name, if check.passed { "passed" } else { "failed" }
                );
                Ok(())
            }
        }
    }

    /// Posts an event to the `event` webhooks, as Flagger does. Failures are logged only.
    async fn send_event(&self, severity: Severity, message: &str) {
        let Some(analysis) = &self.canary.analysis else {
            return;
        };
        for hook in analysis
            .webhooks
            .iter()
            .filter(|h| h.hook_type == HookType::Event)
        {
            let mut hook = hook.clone();
            hook.metadata
                .insert("eventMessage".into(), message.to_string());
            hook.metadata.insert(
                "eventType".into(),
                match severity {
                    Severity::Info => "Normal".into(),
                    Severity::Warning => "Warning".into(),
                },
            );
            let outcome = self
                .hooks
                .call(
                    &hook,
                    &self.canary.name,
                    &self.canary.namespace,
                    Phase::Progressing,
                    &self.revision,
                )
                .await;
            if let crate::engine::HookOutcome::Fail(e) = outcome {
                tracing::debug!("event webhook {}: {e}", hook.name);
            }
        }
    }

    async fn answer(&mut self, request: &Request) -> Answer {
        match request {
            Request::Readiness { workload } => {
                let primary = *workload == Workload::Primary;
                let readiness = match self.workloads.readiness(primary).await {
                    Ok(r) => r,
                    Err(e) => crate::engine::Readiness::NotReady(e.to_string()),
                };
                if matches!(readiness, crate::engine::Readiness::NotReady(_)) {
                    self.waiting_for_readiness = true;
                }
                Answer::Readiness(readiness)
            }
            Request::Webhook {
                index, hook, phase, ..
            } => {
                let gate = matches!(
                    hook,
                    HookType::ConfirmRollout
                        | HookType::ConfirmTrafficIncrease
                        | HookType::ConfirmPromotion
                );
                if Some(*index) == self.phase_gate {
                    return Answer::Webhook(crate::engine::HookOutcome::Fail(
                        "held at this weight until the pipeline starts the next phase".into(),
                    ));
                }
                if gate && self.approved {
                    return Answer::Webhook(crate::engine::HookOutcome::Pass);
                }
                let Some(w) = self
                    .canary
                    .analysis
                    .as_ref()
                    .and_then(|a| a.webhooks.get(*index))
                else {
                    return Answer::Webhook(crate::engine::HookOutcome::Fail(
                        "no such webhook".into(),
                    ));
                };
                Answer::Webhook(
                    self.hooks
                        .call(
                            w,
                            &self.canary.name,
                            &self.canary.namespace,
                            *phase,
                            &self.revision,
                        )
                        .await,
                )
            }
            Request::Metric { name, .. } => Answer::Metric(self.metrics.evaluate(name).await),
        }
    }

    /// Records the commands carried out since the last tick as one tick of the report.
    fn record(&mut self, engine: &Engine) {
        let s = engine.state();
        self.log.push(crate::engine::sim::TickLog {
            at: wall_ms().saturating_sub(self.started_ms),
            phase: s.phase,
            routes: s.routes,
            iterations: s.iterations,
            failed_checks: s.failed_checks,
            commands: std::mem::take(&mut self.done),
            exchanges: Vec::new(),
        });
    }

    /// Runs a step to completion: commands in order, requests answered. Stops at the first
    /// command that fails.
    async fn run_step(&mut self, engine: &mut Engine, mut step: Step) -> Result<(), RunError> {
        loop {
            for command in &step.commands {
                self.execute(command).await?;
            }
            let Some((id, request)) = step.request.take() else {
                return Ok(());
            };
            let answer = self.answer(&request).await;
            step = engine.handle(Input::Answer { id, answer })?;
        }
    }
}

/// Drives `canary` on the cluster until a verdict.
pub async fn rollout(
    client: Client,
    canary: Canary,
    options: Options,
) -> Result<Outcome, RunError> {
    let provider = canary
        .provider
        .clone()
        .unwrap_or_else(|| options.provider.clone());
    if !routing::supported(&provider) {
        return Err(RunError::Unsupported(format!(
            "{}: aviary cannot drive the {} provider yet (it drives {})",
            canary.qualified_name(),
            provider.name(),
            routing::SUPPORTED.join(", ")
        )));
    }
    let config = Config::from_canary(&canary, &options.provider);
    let ns = canary.namespace.clone();
    let lease = LeaseGuard::acquire(client.clone(), &ns, &canary.name, &options.holder).await?;
    let result = drive(client, canary, config, &provider, &options, &lease).await;
    if let Err(e) = lease.release().await {
        tracing::warn!("could not release the lease: {e}");
    }
    result
}

async fn drive(
    client: Client,
    canary: Canary,
    config: Config,
    provider: &Provider,
    options: &Options,
    lease: &LeaseGuard,
) -> Result<Outcome, RunError> {
    let workloads = Workloads::discover(client.clone(), &canary, provider).await?;
    // A spec the router cannot express is the user's to fix (exit 2), not the cluster's.
    let router = routing::for_canary(&canary, provider, &workloads).map_err(|e| match e {
        ClusterError::Invalid(message) => RunError::Unsupported(message),
        other => RunError::Cluster(other),
    })?;
    let mut store = StateStore::new(client.clone(), &canary.namespace, &canary.name);
    let (saved, control) = store.load().await?;
    let resumed = saved.is_some();
    let state = saved
        .map(|e| e.state().clone())
        .unwrap_or_else(State::default);
    let (config, phase_gate) = match options.phase {
        Some(phase) => phase_config(config, phase, &state)?,
        None => (config, None),
    };
    let mut engine = Engine::new(config.clone(), state);
    if control.abort.is_some() {
        tracing::info!("clearing an abort request left from an earlier run");
        store.clear_control(ABORT_ANNOTATION).await?;
    }
    let revision = workloads.revision().await?;
    let canary_for_metrics = canary.clone();
    let mut shell = Shell {
        canary,
        workloads,
        router,
        hooks: WebhookCaller::new(),
        store,
        revision: revision.clone(),
        approved: control.approve.as_deref() == Some(revision.as_str()),
        waiting_for_readiness: false,
        metrics: crate::metrics::Evaluator::new(
            &canary_for_metrics,
            provider,
            options.templates.clone(),
            Some(client.clone()),
            options.prometheus.clone(),
            options.prometheus_auth.clone(),
        ),
        phase_gate,
        done: Vec::new(),
        log: options.log.clone(),
        started_ms: wall_ms(),
    };
    engine.handle(Input::Revision {
        revision: revision.clone(),
    })?;
    let start_phase = engine.state().phase;
    if resumed {
        tracing::info!(
            "resuming {} in phase {start_phase} at canary weight {}%",
            config.qualified(),
            engine.state().routes.canary
        );
    }
    if start_phase.is_verdict() && !engine.state().has_new_revision() {
        tracing::info!(
            "{}: revision {revision} already went through a rollout ({start_phase}); nothing to do",
            config.qualified()
        );
        return Ok(Outcome::UpToDate { phase: start_phase });
    }
    if start_phase == Phase::Initialized && !engine.state().has_new_revision() {
        tracing::info!(
            "{}: revision {revision} is already the primary; nothing to do",
            config.qualified()
        );
        return Ok(Outcome::UpToDate { phase: start_phase });
    }

    let interval = Duration::from_millis(config.interval_ms.max(1));
    let started = Instant::now();
    let deadline = options.timeout.map(|t| started + t);
    let mut signals = Signals::new()?;
    let mut failures = 0u32;
    let mut last_renew = Instant::now();
    let mut revision = revision;
    let mut readiness_poll = FIRST_READINESS_POLL;
    loop {
        // Ticks keep to the interval from when each one started, so the time a tick spends on
        // the cluster and the metrics does not add up over a release.
        let tick_started = Instant::now();
        // This tick ended an externally driven phase at its weight.
        let mut held = false;
        // A new revision applied while we run restarts the analysis, as in Flagger.
        match shell.workloads.revision().await {
            Ok(current) if current != revision => {
                tracing::info!("the target changed: revision {current} replaces {revision}");
                revision = current;
                shell.revision = revision.clone();
                shell.approved = false;
                engine.handle(Input::Revision {
                    revision: revision.clone(),
                })?;
            }
            Ok(_) => {}
            Err(e) => tracing::warn!("could not read the target's revision: {e}"),
        }
        let snapshot = engine.clone();
        shell.waiting_for_readiness = false;
        let step = engine.handle(Input::Tick { now: wall_ms() })?;
        let result = shell.run_step(&mut engine, step).await;
        match result {
            Ok(()) => {
                failures = 0;
                held = shell.phase_gate.is_some()
                    && shell.done.iter().any(|c| {
                        matches!(c, Command::Check { check } if check.name == PHASE_GATE && !check.passed)
                    });
                shell.record(&engine);
                let owner = shell.workloads.primary_owner().await.unwrap_or(None);
                shell.store.save(&engine, owner).await?;
            }
            Err(RunError::Cluster(e)) => {
                failures += 1;
                tracing::warn!("tick failed ({failures} in a row): {e}; it will be retried");
                engine = snapshot;
                shell.done.clear();
                if failures >= 3 {
                    cancel(&mut shell, &mut engine, "the cluster keeps failing").await;
                    return Err(RunError::Cluster(e));
                }
            }
            Err(other) => return Err(other),
        }
        let state = engine.state();
        tracing::info!(
            phase = %state.phase,
            weight = state.routes.canary,
            iterations = state.iterations,
            failed_checks = state.failed_checks,
            "{}: {} · canary {}% · failed checks {}/{}",
            config.qualified(),
            state.phase,
            state.routes.canary,
            state.failed_checks,
            config.threshold
        );
        match state.phase {
            Phase::Succeeded if state.last_promoted_revision.as_deref() == Some(&revision) => {
                return Ok(Outcome::Promoted)
            }
            Phase::Failed => return Ok(Outcome::RolledBack),
            Phase::WaitingPromotion if held => {
                return Ok(Outcome::Held {
                    weight: state.routes.canary,
                })
            }
            Phase::Initialized if start_phase == Phase::Initializing => {
                return Ok(Outcome::Bootstrapped)
            }
            _ => {}
        }

        // Wait for the next tick, watching for requests, signals and the deadline. A tick that
        // only waited for a workload to become ready comes back sooner than the interval (after
        // 250 ms, doubling up to 2 s): it counts no check, and a pipeline should not idle a
        // whole interval on a rollout.
        let wait = if shell.waiting_for_readiness {
            let wait = interval.min(readiness_poll);
            readiness_poll = (readiness_poll * 2).min(READINESS_POLL);
            wait
        } else {
            readiness_poll = FIRST_READINESS_POLL;
            interval
        };
        let next = tick_started + wait;
        let wake = loop {
            if deadline.is_some_and(|d| Instant::now() >= d) {
                break Wake::TimedOut;
            }
            if last_renew.elapsed() >= Duration::from_secs(10) {
                if let Err(e) = lease.renew().await {
                    tracing::warn!("could not renew the lease: {e}");
                }
                last_renew = Instant::now();
            }
            match shell.store.control().await {
                Ok(c) => {
                    if let Some(reason) = c.abort {
                        break Wake::Abort(reason);
                    }
                    let approved = c.approve.as_deref() == Some(revision.as_str());
                    if approved && !shell.approved {
                        tracing::info!("gates opened by `aviary promote` for revision {revision}");
                    }
                    shell.approved = approved;
                }
                Err(e) => tracing::debug!("could not read control requests: {e}"),
            }
            let now = Instant::now();
            if now >= next {
                break Wake::Tick;
            }
            let nap = options.poll.min(next - now);
            tokio::select! {
                sig = signals.recv() => break Wake::Signal(sig),
                _ = tokio::time::sleep(nap) => {}
            }
        };
        match wake {
            Wake::Tick => {}
            Wake::Signal(name) => {
                cancel(&mut shell, &mut engine, &format!("received {name}")).await;
                return Ok(Outcome::Cancelled);
            }
            Wake::TimedOut => {
                let limit = options.timeout.unwrap_or_default();
                cancel(
                    &mut shell,
                    &mut engine,
                    &format!("the run's time limit of {}s passed", limit.as_secs()),
                )
                .await;
                return Ok(Outcome::TimedOut);
            }
            Wake::Abort(reason) => {
                let step = engine.handle(Input::Abort {
                    now: wall_ms(),
                    reason: reason.clone(),
                })?;
                shell.run_step(&mut engine, step).await?;
                shell.record(&engine);
                let owner = shell.workloads.primary_owner().await.unwrap_or(None);
                shell.store.save(&engine, owner).await?;
                shell.store.clear_control(ABORT_ANNOTATION).await?;
                if engine.state().phase == Phase::Failed {
                    return Ok(Outcome::RolledBack);
                }
            }
        }
    }
}

/// Returns traffic to the primary and saves a state from which the next run restarts the
/// analysis. Best effort: failures are logged, the caller is exiting anyway.
async fn cancel(shell: &mut Shell, engine: &mut Engine, reason: &str) {
    let step = match engine.handle(Input::Cancel {
        now: wall_ms(),
        reason: reason.to_string(),
    }) {
        Ok(step) => step,
        Err(e) => {
            tracing::error!("cannot cancel: {e}");
            return;
        }
    };
    if let Err(e) = shell.run_step(engine, step).await {
        tracing::error!("while returning traffic to the primary: {e}");
    }
    shell.record(engine);
    let owner = shell.workloads.primary_owner().await.unwrap_or(None);
    if let Err(e) = shell.store.save(engine, owner).await {
        tracing::error!("could not save the state: {e}");
    }
    let _ = shell.store.clear_control(APPROVE_ANNOTATION).await;
}

/// SIGTERM and SIGINT.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> Result<Signals, RunError> {
        use tokio::signal::unix::{signal, SignalKind};
        let io = |e: std::io::Error| {
            RunError::Cluster(ClusterError::Invalid(format!(
                "cannot listen for signals: {e}"
            )))
        };
        Ok(Signals {
            term: signal(SignalKind::terminate()).map_err(io)?,
            int: signal(SignalKind::interrupt()).map_err(io)?,
        })
    }

    async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }
}
