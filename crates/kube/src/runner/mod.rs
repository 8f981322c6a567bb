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
//!
//! The runner's files:
//! - `mod.rs`: the entry points ([`rollout`], [`abort_without_runner`]) and the tick loop.
//! - `outcome.rs`: how a run ends, [`Outcome`] or [`RunError`].
//! - `phase.rs`: Cloud Deploy's externally driven phases ([`ExternalPhase`]).
//! - `release.rs`: several canaries released at once under one verdict policy ([`Release`]).
//! - `stop.rs`: what stops a run early ([`Stop`]) and how a stopped run returns traffic.
//! - `shell.rs`: the shell that carries out the engine's commands and answers its requests.
//! - `tests.rs`: the loop against the API emulator.

mod controls;
mod outcome;
mod phase;
mod release;
mod schedule;
mod shell;
mod stop;

pub use controls::Controls;
pub use outcome::{Outcome, RunError};
pub use phase::{ExternalPhase, PHASE_GATE};
pub use release::{Gate, Policy, Release, RELEASE_GATE};
pub use stop::{Stop, StopReason, CANCEL_BUDGET};

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kube::Client;
use tokio::time::Instant;

use crate::routing;
use crate::state::{SavedSpec, StateStore, ABORT_ANNOTATION};
use aviary_core::engine::{Command, Config, Engine, Input, Phase, State};
use aviary_core::report::TrafficLeft;
use aviary_core::spec::{Canary, Provider};
use phase::phase_config;
use schedule::Ticks;
use shell::Shell;
use stop::{stopped, stopped_before_start, ALL_ON_PRIMARY};

/// How soon a tick that waited on a workload's readiness is repeated.
const READINESS_POLL: Duration = Duration::from_secs(2);
/// The first re-check of a workload that was not ready; it doubles up to [`READINESS_POLL`].
const FIRST_READINESS_POLL: Duration = Duration::from_millis(250);
/// Ticks in a row whose cluster calls failed before the run gives up.
const FAILED_TICKS: u32 = 3;
/// How long a run that ended waits for its events to be recorded in the cluster.
const EVENTS_FLUSH: Duration = Duration::from_secs(1);

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
    /// The release this canary is one of, when a target renders several.
    pub release: Option<Release>,
    /// The release's shared reader of control requests (else each run reads its own).
    pub controls: Option<Controls>,
    /// The run's HTTP clients, for metrics and webhooks (shared by every canary of a release).
    pub http: crate::http::Clients,
}

/// Now, in milliseconds since the Unix epoch.
pub fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Drives `canary` on the cluster until a verdict. The caller holds the canary's lease (and
/// has told `stop` to watch it). A canary of a release tells the others how it ended.
pub async fn rollout(
    client: Client,
    canary: Canary,
    options: Options,
    stop: &mut Stop,
) -> Result<Outcome, RunError> {
    let release = options.release.clone();
    let member = canary.qualified_name();
    let log = options.log.clone();
    // Events go to the cluster too, from a task of their own; what is queued when the run ends
    // gets a moment to be written.
    let events = crate::events::Recorder::start(client.clone());
    // On the heap: the run's state machine is large (most of all in debug builds), and a
    // caller that awaits it on its own stack (a test's block_on, a command's) need not fit it.
    let result = Box::pin(rollout_alone(client, canary, options, stop, events.clone())).await;
    events.close(EVENTS_FLUSH).await;
    if let Some(release) = release {
        match &result {
            Ok(Outcome::UpToDate {
                phase: Phase::Failed,
            }) => release.fail(&member, "this revision was rolled back before"),
            // Nothing (more) for the others to wait for. A signal and the time limit stop every
            // member at once: each returns its own traffic, none is rolled back on another's
            // account.
            Ok(Outcome::Promoted)
            | Ok(Outcome::Held { .. })
            | Ok(Outcome::Bootstrapped)
            | Ok(Outcome::UpToDate { .. })
            | Ok(Outcome::Cancelled { .. })
            | Ok(Outcome::TimedOut { .. }) => release.leave(&member),
            Ok(Outcome::RolledBack { aborted }) => {
                let failed = log
                    .report(aviary_core::report::Verdict::RolledBack)
                    .failed_metrics;
                let why = match aborted {
                    Some(reason) => format!("aborted: {reason}"),
                    None if failed.is_empty() => "rolled back".to_string(),
                    None => format!("rolled back: {}", failed.join(", ")),
                };
                release.fail(&member, &why);
            }
            Err(e) => release.fail(&member, &e.to_string()),
        }
    }
    result
}

async fn rollout_alone(
    client: Client,
    canary: Canary,
    options: Options,
    stop: &mut Stop,
    events: crate::events::Recorder,
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
        .guard(Shell::open(client, canary, &provider, &options, events))
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
    let (mut config, phase_gate) = match options.phase {
        Some(phase) => phase_config(config, phase, &state)?,
        None => (config, None),
    };
    shell.phase_gate = phase_gate;
    // A canary of an all-or-nothing release waits at a gate of its own before its promotion.
    if let Some(release) = options.release.as_ref().filter(|r| r.gated()) {
        config.webhooks.push(aviary_core::engine::HookRef {
            name: RELEASE_GATE.to_string(),
            hook: aviary_core::spec::HookType::ConfirmPromotion,
        });
        shell.release = Some((release.clone(), config.webhooks.len() - 1));
    }
    let mut engine = Engine::new(config.clone(), state);
    let start_phase = engine.state().phase;
    shell.phase = start_phase;

    let begin = async {
        let read = match shell.take_begin_read() {
            Some(target) => shell.workloads.snapshot_of(*target).await?,
            None => shell.workloads.snapshot().await?,
        };
        let revision = read.revision.clone();
        shell.revision = revision.clone();
        // The first tick, a moment later, checks this read instead of making another.
        shell.begin_read = Some((Instant::now(), Box::new(read.deployment)));
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
    // Boxed, as the run itself (see `rollout`): its reads would deepen the caller's stack.
    match stop.guard(Box::pin(begin)).await {
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
        match stop.guard(shell.reconcile_routes(saved)).await {
            // Putting the routes back may have scaled the workloads (`kubernetes:replicas`).
            Ok(true) => shell.begin_read = None,
            Ok(false) => {}
            Err(reason) => return stopped(&mut shell, &mut engine, &config, reason).await,
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
    let member = shell.canary.qualified_name();
    // The canaries of a release start their ticks spread over a moment, not all at once, on a
    // grid from the release's start.
    let first_tick_at = options
        .release
        .as_ref()
        .map(|release| release.first_tick_at(&member, interval));
    let mut ticks_due = Ticks::new(first_tick_at);
    if let Some(at) = first_tick_at {
        let now = Instant::now();
        if at > now {
            tracing::debug!(
                "first tick in {} ms (staggered start)",
                (at - now).as_millis()
            );
            tokio::time::sleep_until(at).await;
        }
    }
    loop {
        // Ticks keep to a grid (each one due an interval after the slot of the one before),
        // so the time a tick spends on the cluster and the metrics, or its wait at a release's
        // gate, does not add up over a release.
        ticks_due.begin(Instant::now());
        // A new revision applied while we run restarts the analysis, as in Flagger.
        (shell.tick_target, shell.tick_primary, shell.primary_read) = (None, None, None);
        let read = match shell.take_begin_read() {
            // The run's first read, made just before this first tick: the revision it began with.
            Some(deployment) => Ok((shell.revision.clone(), deployment)),
            None => shell
                .read_target(engine.asks_primary_readiness())
                .await
                .map(|read| (read.revision, Box::new(read.deployment))),
        };
        match read {
            Ok((current, _)) if current != shell.revision => {
                tracing::info!(
                    "the target changed: revision {current} replaces {}",
                    shell.revision
                );
                new_revision(shell, engine, current)?;
            }
            Ok((_, deployment)) => shell.tick_target = Some(deployment),
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
                tokio::select! {
                    abort = abort_requested(&watcher, options.controls.as_ref(), analysed.as_deref()) => abort.reason,
                    reason = release_failed(options.release.clone(), member.clone()) => reason,
                }
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
            Err(reason) => {
                tracing::warn!("abort requested during a tick: {reason}");
                shell.done.clear();
                if let Some(outcome) = rolled_back(shell, engine, reason).await? {
                    return Ok(outcome);
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
            // A phase's canary passed at its weight. In an all-or-nothing release it stays
            // (its analysis running) until every other canary passed there too, so that one
            // failing later still rolls it back.
            Phase::WaitingPromotion
                if held
                    && options
                        .release
                        .as_ref()
                        .filter(|r| r.gated())
                        .map_or(true, |r| r.pass(&member) == Gate::Open) =>
            {
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
        let next = ticks_due.next(wait);
        loop {
            match read_control(options.controls.as_ref(), &shell.store).await {
                Ok(c) => {
                    if let Some(abort) = c.abort {
                        let analysed = engine.state().target_revision.clone();
                        if abort.applies_to(analysed.as_deref()) {
                            if let Some(outcome) = rolled_back(shell, engine, abort.reason).await? {
                                return Ok(outcome);
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
            // Another canary of an all-or-nothing release failed: this one follows it back.
            let phase = engine.state().phase;
            let release = options.release.as_ref();
            if matches!(
                phase,
                Phase::Progressing | Phase::Waiting | Phase::WaitingPromotion
            ) {
                if let Some(reason) = release.and_then(|r| r.failure_for(&member)) {
                    tracing::warn!("{reason}");
                    if let Some(outcome) = rolled_back(shell, engine, reason).await? {
                        return Ok(outcome);
                    }
                }
            }
            // The release gate opened while this canary waited at it: promote now, not an
            // interval later, in the place of the tick that held it.
            if phase == Phase::WaitingPromotion && release.is_some_and(|r| r.open_for(&member)) {
                ticks_due.in_place();
                break;
            }
            let now = Instant::now();
            if now >= next {
                ticks_due.waited_for(next);
                break;
            }
            let changed = async {
                match release {
                    Some(r) => r.changed().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(options.poll.min(next - now)) => {}
                _ = changed => {}
            }
        }
    }
}

/// Waits until an abort request for `analysed` (the revision under analysis) is found.
async fn abort_requested(
    watcher: &StateStore,
    controls: Option<&Controls>,
    analysed: Option<&str>,
) -> crate::state::AbortRequest {
    loop {
        if let Ok(control) = read_control(controls, watcher).await {
            if let Some(abort) = control.abort.filter(|a| a.applies_to(analysed)) {
                return abort;
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Rolls the analysis back for `reason` (an abort request, or another canary of the release
/// that failed): the outcome when it is rolled back, `None` when the engine had nothing to roll
/// back in its phase.
async fn rolled_back(
    shell: &mut Shell,
    engine: &mut Engine,
    reason: String,
) -> Result<Option<Outcome>, RunError> {
    shell.abort(engine, &reason).await?;
    Ok(
        (engine.state().phase == Phase::Failed).then_some(Outcome::RolledBack {
            aborted: Some(reason),
        }),
    )
}

/// The canary's control requests: from the release's shared reader when there is one, else
/// from its own state ConfigMap.
async fn read_control(
    controls: Option<&Controls>,
    store: &StateStore,
) -> Result<crate::state::Control, crate::cluster::ClusterError> {
    match controls {
        Some(controls) => controls.read(store).await,
        None => store.control().await,
    }
}

/// Waits until another canary of `release` (all-or-nothing) failed; the reason this one rolls
/// back. Never resolves without a release.
async fn release_failed(release: Option<Release>, member: String) -> String {
    let Some(release) = release else {
        return std::future::pending().await;
    };
    loop {
        // Subscribed before looking, so a failure between the two is not missed.
        let changed = release.changed();
        if let Some(reason) = release.failure_for(&member) {
            return reason;
        }
        changed.await;
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
        release: None,
        controls: None,
        http: crate::http::Clients::default(),
    };
    let config = Config::from_canary(&spec.canary, &spec.provider);
    let events = crate::events::Recorder::start(client.clone());
    let result = abort_with(client, spec, reason, options, config, events.clone()).await;
    events.close(EVENTS_FLUSH).await;
    result
}

async fn abort_with(
    client: Client,
    spec: SavedSpec,
    reason: &str,
    options: Options,
    config: Config,
    events: crate::events::Recorder,
) -> Result<Option<TrafficLeft>, RunError> {
    let (mut shell, saved, _) =
        Shell::open(client, spec.canary, &spec.provider, &options, events).await?;
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
