//! The imperative shell around the engine: drives it with a real clock against a cluster, carries
//! out its commands, answers its requests, persists its state after every step, and listens for
//! `aviary abort`/`aviary promote`.
//!
//! Everything that can stop a run early (SIGTERM/SIGINT, the run's time limit, a lease that can
//! no longer be proven ours) is one [`Stop`], raced against the whole loop: whatever the loop is
//! awaiting (a webhook, a metric query, an API call, the wait for the next tick) is dropped at
//! once, and traffic goes back to the primary under a budget of its own ([`CANCEL_BUDGET`]).
//! A run that gives up on an error does the same before it reports the error, and the report
//! says where traffic was left ([`TrafficLeft`]).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kube::Client;
use tokio::time::Instant;

use crate::cluster::ClusterError;
use crate::lease::{Keeper, LeaseLost, LockError};
use crate::routing::{self, TrafficRouter};
use crate::state::{SavedSpec, StateStore, ABORT_ANNOTATION, APPROVE_ANNOTATION};
use crate::webhooks::WebhookCaller;
use crate::workload::{Promotion, Workloads};
use aviary_core::engine::{
    Answer, Command, Config, Engine, EventLevel, Input, Phase, Request, Routes, State, Step,
    Workload,
};
use aviary_core::report::TrafficLeft;
use aviary_core::spec::{Canary, HookType, Provider};

/// How soon a tick that waited on a workload's readiness is repeated.
const READINESS_POLL: Duration = Duration::from_secs(2);
/// The first re-check of a workload that was not ready; it doubles up to [`READINESS_POLL`].
const FIRST_READINESS_POLL: Duration = Duration::from_millis(250);
/// How long returning traffic to the primary may take when a run stops early (its API calls
/// are retried within it); the state is saved after that, within [`SAVE_BUDGET`]. Both fit in
/// the 10 s a GitHub runner gives a cancelled step between its SIGINT and its SIGKILL.
pub const CANCEL_BUDGET: Duration = Duration::from_secs(7);
/// How long the last save of a stopping run may take.
const SAVE_BUDGET: Duration = Duration::from_secs(2);
/// Ticks in a row whose cluster calls failed before the run gives up.
const FAILED_TICKS: u32 = 3;

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The new revision was promoted.
    Promoted,
    /// The primary was created from the target; there was nothing to analyse yet.
    Bootstrapped,
    /// No new revision: nothing to do. Carries the last verdict.
    UpToDate { phase: Phase },
    /// The revision was rolled back; `aborted` carries the reason when an abort asked for it.
    RolledBack { aborted: Option<String> },
    /// Stopped by a signal.
    Cancelled {
        signal: &'static str,
        traffic: TrafficLeft,
    },
    /// The run's time limit passed first.
    TimedOut { traffic: TrafficLeft },
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
    /// The Canary names a provider aviary has no router for (exit 2).
    #[error("{canary}: aviary cannot drive the {provider} provider yet (it drives {supported})")]
    ProviderNotDriven {
        canary: String,
        provider: String,
        supported: String,
    },
    /// The router cannot express the Canary (an A/B match NGINX cannot route, say): exit 2.
    #[error("{0}")]
    RouterCannot(String),
    /// A Cloud Deploy canary phase this Canary cannot run (exit 2).
    #[error("{canary}: a canary phase at {weight}% needs a canary strategy, but this Canary uses {strategy}; give the target a standard (non-canary) strategy, or the Canary stepWeights")]
    PhaseNeedsCanaryStrategy {
        canary: String,
        weight: u32,
        strategy: &'static str,
    },
    /// A Cloud Deploy canary phase outside 1-99% (exit 2).
    #[error("{canary}: a canary phase must be between 1% and 99%, not {weight}%")]
    PhaseOutOfRange { canary: String, weight: u32 },
    /// The engine asked for something it must not (a bug in aviary).
    #[error("internal error: {0}")]
    Internal(&'static str),
    #[error("internal error: {0}")]
    Engine(#[from] aviary_core::engine::EngineError),
    /// A workload applied before the run did not become ready.
    #[error(transparent)]
    Deploy(#[from] crate::deploy::DeployError),
    /// The run stopped after it had begun changing the cluster: `reason` says why, `traffic`
    /// where it left the traffic (back on the primary whenever that could be done).
    #[error("{reason}; {}", traffic.describe())]
    GaveUp {
        reason: String,
        traffic: TrafficLeft,
    },
    /// The target is no longer the revision that was analysed (only inside a run: it restarts
    /// the analysis).
    #[error("the target changed to revision {found} before the analysed revision was promoted")]
    RevisionChanged { found: String },
}

impl RunError {
    /// Whether the user's input is at fault (exit 2) rather than the cluster or aviary.
    pub fn is_invalid_input(&self) -> bool {
        matches!(
            self,
            RunError::ProviderNotDriven { .. }
                | RunError::RouterCannot(_)
                | RunError::PhaseNeedsCanaryStrategy { .. }
                | RunError::PhaseOutOfRange { .. }
        )
    }
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
    /// How often to look for abort/promote requests between ticks.
    pub poll: Duration,
    /// MetricTemplates known locally (from the spec file or the rendered target).
    pub templates: Vec<aviary_core::spec::MetricTemplate>,
    /// Prometheus for built-in metrics when the Canary has no `metricsServer`.
    pub prometheus: Option<String>,
    pub prometheus_auth: crate::metrics::Auth,
    /// Every tick is recorded here, for the report.
    pub log: aviary_core::report::Log,
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
            if config.strategy != aviary_core::engine::Strategy::Canary {
                return Err(RunError::PhaseNeedsCanaryStrategy {
                    canary: config.qualified(),
                    weight,
                    strategy: config.strategy.as_str(),
                });
            }
            if !(1..=99).contains(&weight) {
                return Err(RunError::PhaseOutOfRange {
                    canary: config.qualified(),
                    weight,
                });
            }
            hold_at(&mut config, weight);
            config.webhooks.push(aviary_core::engine::HookRef {
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

/// Why a run stops before its verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopReason {
    Signal(&'static str),
    TimedOut(Duration),
    Lease(LeaseLost),
}

/// What stops a run early: SIGTERM/SIGINT, the run's time limit and, once the lease is taken,
/// its loss. Created before anything changes, so a signal during render or apply counts too.
pub struct Stop {
    signals: Signals,
    deadline: Option<(Instant, Duration)>,
    keeper: Option<Keeper>,
}

impl Stop {
    /// Listens for signals from now on; `timeout` counts from now.
    pub fn new(timeout: Option<Duration>) -> Result<Stop, RunError> {
        Ok(Stop {
            signals: Signals::new()?,
            deadline: timeout.map(|t| (Instant::now() + t, t)),
            keeper: None,
        })
    }

    /// Also stop when this lease is lost.
    pub fn watch_lease(&mut self, keeper: Keeper) {
        self.keeper = Some(keeper);
    }

    /// Waits for the first reason to stop. Cancel-safe: dropping the future loses nothing.
    pub async fn wait(&mut self) -> StopReason {
        let deadline = async {
            match self.deadline {
                Some((at, limit)) => {
                    tokio::time::sleep_until(at).await;
                    limit
                }
                None => std::future::pending().await,
            }
        };
        let lease = async {
            match self.keeper.as_mut() {
                Some(k) => k.lost().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            signal = self.signals.recv() => StopReason::Signal(signal),
            lost = lease => StopReason::Lease(lost),
            limit = deadline => StopReason::TimedOut(limit),
        }
    }

    /// Runs `work` unless a reason to stop comes first (then `work` is dropped where it is).
    pub async fn guard<T>(
        &mut self,
        work: impl std::future::Future<Output = T>,
    ) -> Result<T, StopReason> {
        tokio::select! {
            biased;
            reason = self.wait() => Err(reason),
            value = work => Ok(value),
        }
    }
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

struct Shell {
    canary: Canary,
    workloads: Workloads,
    router: Box<dyn TrafficRouter>,
    hooks: WebhookCaller,
    store: StateStore,
    /// The target's revision as last read (what the engine was told).
    revision: String,
    approved: bool,
    /// The last tick stopped because a workload was not ready yet.
    waiting_for_readiness: bool,
    metrics: crate::metrics::Evaluator,
    /// The index of the gate that holds an externally driven phase.
    phase_gate: Option<usize>,
    /// The commands carried out since the last recorded tick.
    done: Vec<Command>,
    log: aviary_core::report::Log,
    started_ms: u64,
    /// The routes last put in place successfully (at the start: what the saved state says).
    applied: Routes,
}

impl Shell {
    /// Finds the canary's workloads, builds its router and reads its saved state.
    async fn open(
        client: Client,
        canary: Canary,
        provider: &Provider,
        options: &Options,
    ) -> Result<(Shell, Option<Engine>, crate::state::Control), RunError> {
        let workloads = Workloads::discover(client.clone(), &canary, provider).await?;
        // A spec the router cannot express is the user's to fix (exit 2), not the cluster's.
        let router = routing::for_canary(&canary, provider, &workloads).map_err(|e| match e {
            ClusterError::Invalid(message) => RunError::RouterCannot(message),
            other => RunError::Cluster(other),
        })?;
        let mut store = StateStore::new(client.clone(), &canary.namespace, &canary.name);
        let (saved, control) = store.load().await?;
        store.set_spec(&SavedSpec {
            canary: canary.clone(),
            provider: provider.clone(),
        });
        let applied = saved
            .as_ref()
            .map(|e| e.state().routes)
            .unwrap_or(Routes::PRIMARY);
        let metrics = crate::metrics::Evaluator::new(
            &canary,
            provider,
            options.templates.clone(),
            Some(client),
            options.prometheus.clone(),
            options.prometheus_auth.clone(),
        );
        let shell = Shell {
            canary,
            workloads,
            router,
            hooks: WebhookCaller::new(),
            store,
            revision: String::new(),
            approved: false,
            waiting_for_readiness: false,
            metrics,
            phase_gate: None,
            done: Vec::new(),
            log: options.log.clone(),
            started_ms: wall_ms(),
            applied,
        };
        Ok((shell, saved, control))
    }

    async fn execute(&mut self, command: &Command) -> Result<(), RunError> {
        self.done.push(command.clone());
        match command {
            Command::Bootstrap => self.workloads.bootstrap().await?,
            Command::ScaleCanaryUp => self.workloads.scale_canary_up().await?,
            Command::ScaleCanaryToZero => self.workloads.scale_canary_to_zero().await?,
            Command::SetRoutes { routes } => {
                self.router.set_routes(routes).await?;
                self.applied = *routes;
            }
            Command::Promote { revision } => {
                let Some(revision) = revision else {
                    return Err(RunError::Internal(
                        "a promotion without the analysed revision",
                    ));
                };
                if let Promotion::Changed { found } = self.workloads.promote(Some(revision)).await?
                {
                    return Err(RunError::RevisionChanged { found });
                }
            }
            Command::SetPhase { phase } => {
                tracing::info!(phase = %phase, "phase {phase}");
            }
            Command::Event { severity, message } => {
                match severity {
                    EventLevel::Info => tracing::info!("{message}"),
                    EventLevel::Warning => tracing::warn!("{message}"),
                }
                self.send_event(*severity, message).await;
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
            }
        }
        Ok(())
    }

    /// Posts an event to the `event` webhooks, as Flagger does. Failures are logged only.
    async fn send_event(&self, severity: EventLevel, message: &str) {
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
                    EventLevel::Info => "Normal".into(),
                    EventLevel::Warning => "Warning".into(),
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
            if let aviary_core::engine::HookOutcome::Fail(e) = outcome {
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
                    Err(e) => aviary_core::engine::Readiness::NotReady(e.to_string()),
                };
                if matches!(readiness, aviary_core::engine::Readiness::NotReady(_)) {
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
                    return Answer::Webhook(aviary_core::engine::HookOutcome::Fail(
                        "held at this weight until the pipeline starts the next phase".into(),
                    ));
                }
                if gate && self.approved {
                    return Answer::Webhook(aviary_core::engine::HookOutcome::Pass);
                }
                let Some(w) = self
                    .canary
                    .analysis
                    .as_ref()
                    .and_then(|a| a.webhooks.get(*index))
                else {
                    return Answer::Webhook(aviary_core::engine::HookOutcome::Fail(
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
        self.log.push(aviary_core::engine::sim::TickLog {
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

    /// Saves the engine (and the Canary beside it).
    async fn save(&mut self, engine: &Engine) -> Result<(), RunError> {
        let owner = self.workloads.primary_owner().await.unwrap_or(None);
        self.store.save(engine, owner).await?;
        Ok(())
    }

    /// Where traffic is, as far as this run knows, with the engine in `phase`.
    fn traffic_in(&self, phase: Phase) -> TrafficLeft {
        TrafficLeft {
            primary: self.applied.primary,
            canary: self.applied.canary,
            on_primary: self.applied.canary == 0 && !self.applied.mirror,
            promoting: matches!(phase, Phase::Promoting | Phase::Finalising),
        }
    }

    /// Returns traffic to the primary and saves a state from which the next run restarts the
    /// analysis, within `budget` (and [`SAVE_BUDGET`] for the save). Says where traffic was left.
    async fn cancel(&mut self, engine: &mut Engine, reason: &str, budget: Duration) -> TrafficLeft {
        let step = match engine.handle(Input::Cancel {
            now: wall_ms(),
            reason: reason.to_string(),
        }) {
            Ok(step) => step,
            Err(e) => {
                tracing::error!("cannot cancel: {e}");
                return self.traffic_in(engine.state().phase);
            }
        };
        match tokio::time::timeout(budget, self.run_step(engine, step)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!("while returning traffic to the primary: {e}"),
            Err(_) => tracing::error!(
                "returning traffic to the primary took longer than {}s; giving up",
                budget.as_secs()
            ),
        }
        self.record(engine);
        let traffic = self.traffic_in(engine.state().phase);
        let save = async {
            self.save(engine).await?;
            self.store.clear_control(APPROVE_ANNOTATION).await?;
            Ok::<_, RunError>(())
        };
        match tokio::time::timeout(SAVE_BUDGET, save).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!("could not save the state: {e}"),
            Err(_) => tracing::error!("could not save the state in time"),
        }
        if traffic.promoting {
            tracing::warn!("{}", traffic.describe());
        } else if !traffic.on_primary {
            tracing::error!("{}", traffic.describe());
        }
        traffic
    }

    /// Makes the routing objects say `saved` (the saved state's routes) when they say something
    /// else. Best effort: a failure is logged, and the next traffic change rewrites them anyway.
    async fn reconcile_routes(&mut self, saved: Routes) {
        let observed = match self.router.observed().await {
            Ok(o) => o,
            Err(e) => {
                tracing::warn!("could not read the routing objects back: {e}");
                return;
            }
        };
        let Some(live) = observed.routes else {
            return; // not created yet: the next traffic change creates them
        };
        let expected = match self.router.expressed(&saved).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!("could not tell what the routing objects should say: {e}");
                return;
            }
        };
        if live == expected {
            return;
        }
        tracing::warn!(
            "{} says primary {}% / canary {}%, the saved state primary {}% / canary {}% (the last run stopped between the two); putting the saved routes back",
            observed.objects,
            live.primary,
            live.canary,
            saved.primary,
            saved.canary
        );
        match self.router.set_routes(&saved).await {
            Ok(()) => self.applied = saved,
            Err(e) => {
                self.applied = live;
                tracing::warn!("could not put the saved routes back: {e}");
            }
        }
    }

    /// Acts on an abort request: rolls the analysis back and clears the request.
    async fn abort(&mut self, engine: &mut Engine, reason: &str) -> Result<(), RunError> {
        let step = engine.handle(Input::Abort {
            now: wall_ms(),
            reason: reason.to_string(),
        })?;
        self.run_step(engine, step).await?;
        self.record(engine);
        self.save(engine).await?;
        self.store.clear_control(ABORT_ANNOTATION).await?;
        Ok(())
    }
}

/// Drives `canary` on the cluster until a verdict. The caller holds the canary's lease (and
/// has told `stop` to watch it).
pub async fn rollout(
    client: Client,
    canary: Canary,
    options: Options,
    stop: &mut Stop,
) -> Result<Outcome, RunError> {
    let provider = canary
        .provider
        .clone()
        .unwrap_or_else(|| options.provider.clone());
    if !routing::supported(&provider) {
        return Err(RunError::ProviderNotDriven {
            canary: canary.qualified_name(),
            provider: provider.name().to_string(),
            supported: routing::SUPPORTED.join(", "),
        });
    }
    let config = Config::from_canary(&canary, &options.provider);
    let opened = match stop
        .guard(Shell::open(client, canary, &provider, &options))
        .await
    {
        Ok(opened) => opened?,
        Err(reason) => return stopped_before_start(reason, ALL_ON_PRIMARY),
    };
    let (mut shell, saved, control) = opened;
    let resumed = saved.is_some();
    let state = saved
        .map(|e| e.state().clone())
        .unwrap_or_else(State::default);
    let (config, phase_gate) = match options.phase {
        Some(phase) => phase_config(config, phase, &state)?,
        None => (config, None),
    };
    shell.phase_gate = phase_gate;
    let mut engine = Engine::new(config.clone(), state);
    let start_phase = engine.state().phase;

    let begin = async {
        let revision = shell.workloads.revision().await?;
        shell.revision = revision.clone();
        // The rollout's span (made by the command) carries the revision from here on.
        tracing::Span::current().record("revision", revision.as_str());
        shell.approved = control.approve.as_deref() == Some(revision.as_str());
        // An abort asked while no runner was there: act on it if it is for the revision whose
        // analysis it interrupted and that is still the target; otherwise it is stale.
        if let Some(abort) = &control.abort {
            let analysed = engine.state().target_revision.clone();
            let active = matches!(
                engine.state().phase,
                Phase::Progressing | Phase::Waiting | Phase::WaitingPromotion
            );
            if active
                && analysed.as_deref() == Some(revision.as_str())
                && abort.applies_to(analysed.as_deref())
            {
                tracing::warn!(
                    "an abort was requested while no runner was there ({}); rolling back",
                    abort.reason
                );
                shell.abort(&mut engine, &abort.reason).await?;
                return Ok(Some(Outcome::RolledBack {
                    aborted: Some(abort.reason.clone()),
                }));
            }
            tracing::info!(
                "clearing an abort request for another revision ({}; the target is {revision})",
                abort.revision.as_deref().unwrap_or("-")
            );
            shell.store.clear_control(ABORT_ANNOTATION).await?;
        }
        engine.handle(Input::Revision {
            revision: revision.clone(),
        })?;
        Ok::<_, RunError>(None)
    };
    match stop.guard(begin).await {
        Ok(Ok(Some(outcome))) => return Ok(outcome),
        Ok(Ok(None)) => {}
        Ok(Err(e)) => return Err(e),
        Err(reason) => return stopped(&mut shell, &mut engine, &config, reason).await,
    }
    if resumed {
        tracing::info!(
            "resuming {} in phase {start_phase} at canary weight {}%",
            config.qualified(),
            engine.state().routes.canary
        );
        // A run killed between changing the routes and saving its state left them ahead of the
        // state: put them back to what the state says before anything else.
        let saved = engine.state().routes;
        if let Err(reason) = stop.guard(shell.reconcile_routes(saved)).await {
            return stopped(&mut shell, &mut engine, &config, reason).await;
        }
    }
    let revision = shell.revision.clone();
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

    let result = stop
        .guard(drive(
            &mut shell,
            &mut engine,
            &config,
            &options,
            start_phase,
        ))
        .await;
    match result {
        Ok(Ok(outcome)) => Ok(outcome),
        Ok(Err(e)) => {
            // Whatever went wrong, the canary must not keep its share of traffic.
            let reason = e.to_string();
            tracing::error!("{}: giving up: {reason}", config.qualified());
            let traffic = shell
                .cancel(&mut engine, &format!("giving up: {reason}"), CANCEL_BUDGET)
                .await;
            Err(RunError::GaveUp { reason, traffic })
        }
        Err(reason) => stopped(&mut shell, &mut engine, &config, reason).await,
    }
}

/// A run stopped by `reason` once its shell is open: traffic back to the primary (unless the
/// lease is in other hands), and the outcome or error that says where it was left.
async fn stopped(
    shell: &mut Shell,
    engine: &mut Engine,
    config: &Config,
    reason: StopReason,
) -> Result<Outcome, RunError> {
    match reason {
        StopReason::Signal(signal) => {
            let traffic = shell
                .cancel(engine, &format!("received {signal}"), CANCEL_BUDGET)
                .await;
            Ok(Outcome::Cancelled { signal, traffic })
        }
        StopReason::TimedOut(limit) => {
            let traffic = shell
                .cancel(
                    engine,
                    &format!("the run's time limit of {}s passed", limit.as_secs()),
                    CANCEL_BUDGET,
                )
                .await;
            Ok(Outcome::TimedOut { traffic })
        }
        StopReason::Lease(lost) => {
            let reason = lost.to_string();
            tracing::error!("{}: {reason}", config.qualified());
            let traffic = match lost {
                // Someone else drives the canary now: touch nothing.
                LeaseLost::Taken(_) => shell.traffic_in(engine.state().phase),
                // The lease still lasts a few seconds: return traffic within them.
                LeaseLost::Unrenewable(..) => {
                    let left = crate::lease::lease_duration()
                        .saturating_sub(crate::lease::GIVE_UP_AFTER)
                        .saturating_sub(SAVE_BUDGET)
                        .max(Duration::from_secs(1));
                    shell
                        .cancel(engine, "the lease could not be renewed", left)
                        .await
                }
            };
            Err(RunError::GaveUp { reason, traffic })
        }
    }
}

/// A stop before the first tick: the run itself moved no traffic; `traffic` is where the saved
/// state (or, before it was read, the assumption of a first run) puts it.
fn stopped_before_start(reason: StopReason, traffic: TrafficLeft) -> Result<Outcome, RunError> {
    match reason {
        StopReason::Signal(signal) => Ok(Outcome::Cancelled { signal, traffic }),
        StopReason::TimedOut(_) => Ok(Outcome::TimedOut { traffic }),
        StopReason::Lease(lost) => Err(RunError::GaveUp {
            reason: lost.to_string(),
            traffic,
        }),
    }
}

const ALL_ON_PRIMARY: TrafficLeft = TrafficLeft {
    primary: 100,
    canary: 0,
    on_primary: true,
    promoting: false,
};

/// The tick loop: runs until a verdict or an error it cannot ride out. Everything it awaits may
/// be dropped by [`Stop`]; the caller then cancels from the engine's last settled state.
async fn drive(
    shell: &mut Shell,
    engine: &mut Engine,
    config: &Config,
    options: &Options,
    start_phase: Phase,
) -> Result<Outcome, RunError> {
    let interval = Duration::from_millis(config.interval_ms.max(1));
    // A second reader of the control annotations, for use while a tick holds the shell.
    let watcher = StateStore::new(
        shell.workloads.client().clone(),
        &shell.canary.namespace,
        &shell.canary.name,
    );
    let mut failures = 0u32;
    let mut ticks = 0u64;
    let mut readiness_poll = FIRST_READINESS_POLL;
    loop {
        // Ticks keep to the interval from when each one started, so the time a tick spends on
        // the cluster and the metrics does not add up over a release.
        let tick_started = Instant::now();
        // A new revision applied while we run restarts the analysis, as in Flagger.
        match shell.workloads.revision().await {
            Ok(current) if current != shell.revision => {
                tracing::info!(
                    "the target changed: revision {current} replaces {}",
                    shell.revision
                );
                new_revision(shell, engine, current)?;
            }
            Ok(_) => {}
            Err(e) => tracing::warn!("could not read the target's revision: {e}"),
        }
        let snapshot = engine.clone();
        shell.waiting_for_readiness = false;
        let step = engine.handle(Input::Tick { now: wall_ms() })?;
        let mut held = false;
        // An abort does not wait for the tick to end: the tick is dropped where it is (the
        // engine rolls back from its last settled state).
        let analysed = engine.state().target_revision.clone();
        let abortable = matches!(
            engine.state().phase,
            Phase::Progressing | Phase::Waiting | Phase::WaitingPromotion
        );
        let abort = async {
            if abortable {
                abort_requested(&watcher, analysed.as_deref()).await
            } else {
                std::future::pending().await
            }
        };
        ticks += 1;
        // Every event of a tick (queries, webhooks, route changes) in one span: JSON logs can
        // follow a tick, and its phase and weight as it began.
        let tick_span = tracing::info_span!(
            "tick",
            n = ticks,
            phase = %engine.state().phase,
            weight = engine.state().routes.canary,
        );
        let ticked = tracing::Instrument::instrument(
            async {
                tokio::select! {
                    biased;
                    abort = abort => Err(abort),
                    result = shell.run_step(engine, step) => Ok(result),
                }
            },
            tick_span,
        )
        .await;
        let result = match ticked {
            Ok(result) => result,
            Err(abort) => {
                tracing::warn!("abort requested during a tick: {}", abort.reason);
                shell.done.clear();
                shell.abort(engine, &abort.reason).await?;
                if engine.state().phase == Phase::Failed {
                    return Ok(Outcome::RolledBack {
                        aborted: Some(abort.reason),
                    });
                }
                continue;
            }
        };
        match result {
            Ok(()) => {
                failures = 0;
                held = shell.phase_gate.is_some()
                    && shell.done.iter().any(|c| {
                        matches!(c, Command::Check { check } if check.name == PHASE_GATE && !check.passed)
                    });
                shell.record(engine);
                shell.save(engine).await?;
            }
            Err(RunError::RevisionChanged { found }) => {
                // The promotion found another revision than the one analysed: copy nothing,
                // analyse the new one from the start.
                *engine = snapshot;
                shell.done.clear();
                tracing::warn!(
                    "{}: not promoting: the target changed to revision {found} during the analysis of {}; restarting the analysis",
                    config.qualified(),
                    shell.revision
                );
                new_revision(shell, engine, found)?;
                continue;
            }
            Err(RunError::Cluster(e)) => {
                failures += 1;
                tracing::warn!("tick failed ({failures} in a row): {e}; it will be retried");
                *engine = snapshot;
                shell.done.clear();
                if failures >= FAILED_TICKS {
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
            Phase::Succeeded
                if state.last_promoted_revision.as_deref() == Some(shell.revision.as_str()) =>
            {
                return Ok(Outcome::Promoted)
            }
            Phase::Failed => return Ok(Outcome::RolledBack { aborted: None }),
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

        // Wait for the next tick, watching for abort and promote requests. A tick that only
        // waited for a workload to become ready comes back sooner than the interval (after
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
        loop {
            match shell.store.control().await {
                Ok(c) => {
                    if let Some(abort) = c.abort {
                        let analysed = engine.state().target_revision.clone();
                        if abort.applies_to(analysed.as_deref()) {
                            shell.abort(engine, &abort.reason).await?;
                            if engine.state().phase == Phase::Failed {
                                return Ok(Outcome::RolledBack {
                                    aborted: Some(abort.reason),
                                });
                            }
                        } else {
                            tracing::info!(
                                "ignoring an abort request for revision {}: this run analyses {}",
                                abort.revision.as_deref().unwrap_or("-"),
                                analysed.as_deref().unwrap_or("-")
                            );
                            shell.store.clear_control(ABORT_ANNOTATION).await?;
                        }
                    }
                    let approved = c.approve.as_deref() == Some(shell.revision.as_str());
                    if approved && !shell.approved {
                        tracing::info!(
                            "gates opened by `aviary promote` for revision {}",
                            shell.revision
                        );
                    }
                    shell.approved = approved;
                }
                Err(e) => tracing::debug!("could not read control requests: {e}"),
            }
            let now = Instant::now();
            if now >= next {
                break;
            }
            tokio::time::sleep(options.poll.min(next - now)).await;
        }
    }
}

/// Waits until an abort request for `analysed` (the revision under analysis) is found.
async fn abort_requested(
    watcher: &StateStore,
    analysed: Option<&str>,
) -> crate::state::AbortRequest {
    loop {
        if let Ok(control) = watcher.control().await {
            if let Some(abort) = control.abort.filter(|a| a.applies_to(analysed)) {
                return abort;
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Tells the engine about a new revision of the target (it restarts the analysis).
fn new_revision(shell: &mut Shell, engine: &mut Engine, revision: String) -> Result<(), RunError> {
    shell.revision = revision.clone();
    tracing::Span::current().record("revision", revision.as_str());
    shell.approved = false;
    engine.handle(Input::Revision { revision })?;
    Ok(())
}

/// `aviary abort` when no runner holds the lease (the caller holds it now): rolls the saved
/// analysis back itself. Returns where traffic is, or `None` when no analysis was running.
pub async fn abort_without_runner(
    client: Client,
    spec: SavedSpec,
    reason: &str,
    log: aviary_core::report::Log,
) -> Result<Option<TrafficLeft>, RunError> {
    let options = Options {
        provider: spec.provider.clone(),
        poll: Duration::from_millis(500),
        templates: Vec::new(),
        prometheus: None,
        prometheus_auth: crate::metrics::Auth::None,
        log,
        phase: None,
    };
    let config = Config::from_canary(&spec.canary, &spec.provider);
    let (mut shell, saved, _) = Shell::open(client, spec.canary, &spec.provider, &options).await?;
    let Some(saved) = saved else {
        return Ok(None);
    };
    let mut engine = Engine::new(config, saved.state().clone());
    if !matches!(
        engine.state().phase,
        Phase::Progressing | Phase::Waiting | Phase::WaitingPromotion
    ) {
        shell.store.clear_control(ABORT_ANNOTATION).await?;
        return Ok(None);
    }
    shell.revision = engine.state().target_revision.clone().unwrap_or_default();
    if let Err(e) = shell.abort(&mut engine, reason).await {
        // Half done: put traffic back on the primary at least.
        let traffic = shell
            .cancel(&mut engine, &format!("abort failed: {e}"), CANCEL_BUDGET)
            .await;
        return Err(RunError::GaveUp {
            reason: format!("the rollback failed: {e}"),
            traffic,
        });
    }
    Ok(Some(shell.traffic_in(engine.state().phase)))
}

#[cfg(test)]
mod tests;
