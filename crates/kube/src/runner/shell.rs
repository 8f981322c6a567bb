//! The [`Shell`]: opens a canary's workloads, router and saved state, carries out the engine's
//! commands, answers its requests, saves its state, and returns traffic when a run stops.

use std::time::Duration;

use kube::Client;

use crate::cluster::ClusterError;
use crate::routing::{self, TrafficRouter};
use crate::state::{SavedSpec, StateStore, ABORT_ANNOTATION, APPROVE_ANNOTATION};
use crate::webhooks::WebhookCaller;
use crate::workload::{Promotion, Workloads};
use aviary_core::engine::{
    Answer, Command, Engine, EventLevel, Input, Phase, Request, Routes, Step, Workload,
};
use aviary_core::report::TrafficLeft;
use aviary_core::spec::{Canary, HookType, Provider};

use super::stop::SAVE_BUDGET;
use super::{wall_ms, Options, RunError};

/// A readiness read of the primary, and the Deployment as read.
type PrimaryRead = Result<
    (
        aviary_core::engine::Readiness,
        Option<k8s_openapi::api::apps::v1::Deployment>,
    ),
    ClusterError,
>;

pub(super) struct Shell {
    pub(super) canary: Canary,
    pub(super) workloads: Workloads,
    router: Box<dyn TrafficRouter>,
    hooks: WebhookCaller,
    pub(super) store: StateStore,
    /// The target's revision as last read (what the engine was told).
    pub(super) revision: String,
    pub(super) approved: bool,
    /// The last tick stopped because a workload was not ready yet.
    pub(super) waiting_for_readiness: bool,
    /// The target as the tick read it for its revision, until the tick changes anything: the
    /// canary's readiness check, or scaling the canary up, in the same tick uses it instead of
    /// reading it again.
    pub(super) tick_target: Option<Box<k8s_openapi::api::apps::v1::Deployment>>,
    /// The primary as the tick's readiness check read it, until the tick changes anything:
    /// scaling the canary up to the primary's replicas uses it.
    pub(super) tick_primary: Option<Box<k8s_openapi::api::apps::v1::Deployment>>,
    /// The primary's readiness read at the start of the tick, beside the target's read (see
    /// [`Shell::read_target`]), until the engine asks for it or the tick changes
    /// anything.
    pub(super) primary_read: Option<PrimaryRead>,
    /// The owner reference to the primary (its uid) from the run's last read of it: the state
    /// ConfigMap a save writes is owned by it. A uid changes only when the Deployment is made
    /// anew, which only the bootstrap does.
    primary_owner: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference>,
    /// The target as the run last read it before its first tick (discovery, then the
    /// revision), and when: the next of those reads uses it instead of reading it again
    /// ([`Shell::take_begin_read`]).
    pub(super) begin_read: Option<(
        tokio::time::Instant,
        Box<k8s_openapi::api::apps::v1::Deployment>,
    )>,
    metrics: crate::metrics::Evaluator,
    /// The index of the gate that holds an externally driven phase.
    pub(super) phase_gate: Option<usize>,
    /// The release this canary waits for before its promotion, and the index of its gate.
    pub(super) release: Option<(super::Release, usize)>,
    /// The commands carried out since the last recorded tick.
    pub(super) done: Vec<Command>,
    log: aviary_core::report::Log,
    started_ms: u64,
    /// The routes last put in place successfully (at the start: what the saved state says).
    applied: Routes,
    /// Records the engine's events in the cluster.
    events: crate::events::Recorder,
    /// The phase the engine last set (the action of the events recorded after it).
    pub(super) phase: Phase,
}

impl Shell {
    /// Finds the canary's workloads, builds its router and reads its saved state.
    pub(super) async fn open(
        client: Client,
        canary: Canary,
        provider: &Provider,
        options: &Options,
        events: crate::events::Recorder,
    ) -> Result<(Shell, Option<Engine>, crate::state::Control), RunError> {
        let (workloads, target) =
            Workloads::discover_read(client.clone(), &canary, provider).await?;
        events.regarding(&target);
        // A spec the router cannot express is the user's to fix (exit 2), not the cluster's.
        let router = routing::for_canary(&canary, provider, &workloads).map_err(|e| match e {
            ClusterError::Invalid(message) => RunError::RouterCannot(message),
            other => RunError::Cluster(other),
        })?;
        let mut store = StateStore::new(client.clone(), &canary.namespace, &canary.name);
        // A release reads every canary's state with one LIST; a lone run reads its own.
        let listed = match &options.controls {
            Some(controls) => controls.state_of(&store).await,
            None => None,
        };
        let (saved, control) = match listed {
            Some(read) => store.load_from(Some(read))?,
            None => store.load().await?,
        };
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
        )
        .with_clients(options.http.clone());
        let shell = Shell {
            canary,
            workloads,
            router,
            hooks: WebhookCaller::with_clients(options.http.clone()),
            store,
            revision: String::new(),
            approved: false,
            waiting_for_readiness: false,
            tick_target: None,
            tick_primary: None,
            primary_read: None,
            primary_owner: None,
            begin_read: Some((tokio::time::Instant::now(), Box::new(target))),
            metrics,
            phase_gate: None,
            release: None,
            done: Vec::new(),
            log: options.log.clone(),
            started_ms: wall_ms(),
            applied,
            events,
            phase: Phase::Initializing,
        };
        Ok((shell, saved, control))
    }

    /// The target as read just before (the run's start, within a second, with nothing changed
    /// since), once; None when the caller must read it.
    pub(super) fn take_begin_read(
        &mut self,
    ) -> Option<Box<k8s_openapi::api::apps::v1::Deployment>> {
        self.begin_read
            .take()
            .filter(|(at, _)| at.elapsed() < std::time::Duration::from_secs(1))
            .map(|(_, target)| target)
    }

    /// The tick's read of the target (its revision). With `primary` (the engine asks for the
    /// primary's readiness on every tick: [`Engine::asks_primary_readiness`]) the primary is read
    /// at the same time and kept for the engine's question, so that on a busy API server the
    /// tick waits for its two reads once, not one after the other.
    pub(super) async fn read_target(
        &mut self,
        primary: bool,
    ) -> Result<crate::workload::TargetSnapshot, ClusterError> {
        if !primary {
            return self.workloads.snapshot().await;
        }
        let (target, primary) =
            tokio::join!(self.workloads.snapshot(), self.workloads.readiness(true));
        self.primary_read = Some(primary);
        target
    }

    async fn execute(&mut self, command: &Command) -> Result<(), RunError> {
        // A command that may change the workloads makes a read from before it stale (the
        // phase, an event or a check record leave the Deployments as they are; routes may not:
        // `kubernetes:replicas` routes by scaling them). The command itself may use this tick's
        // reads (a scale-up: the replicas of both).
        let (target, primary) = if matches!(
            command,
            Command::SetPhase { .. } | Command::Event { .. } | Command::Check { .. }
        ) {
            (None, None)
        } else {
            self.begin_read = None;
            self.primary_read = None;
            (self.tick_target.take(), self.tick_primary.take())
        };
        self.done.push(command.clone());
        match command {
            Command::Bootstrap => {
                self.primary_owner = None;
                self.workloads.bootstrap().await?
            }
            Command::ScaleCanaryUp => {
                self.workloads
                    .scale_canary_up(target.as_deref(), primary.as_deref())
                    .await?
            }
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
                self.phase = *phase;
            }
            Command::Event { severity, message } => {
                match severity {
                    EventLevel::Info => tracing::info!("{message}"),
                    EventLevel::Warning => tracing::warn!("{message}"),
                }
                self.events
                    .record(*severity, &self.phase.to_string(), message);
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
                let cached = if primary {
                    None
                } else {
                    self.tick_target.take()
                };
                let prefetched = if primary {
                    self.primary_read.take()
                } else {
                    None
                };
                let read = match cached {
                    // Once per tick at most: a check repeated while waiting reads it again.
                    Some(target) => Ok(self.workloads.target_readiness(&target)),
                    None => match prefetched {
                        Some(read) => read,
                        None => self.workloads.readiness(primary).await,
                    }
                    .map(|(readiness, read)| {
                        if primary {
                            // Kept for this tick's scale-up, and its uid for every save.
                            if let Some(read) = &read {
                                self.primary_owner = self.workloads.owner_of_primary(read);
                            }
                            self.tick_primary = read.map(Box::new);
                        }
                        readiness
                    }),
                };
                let readiness = match read {
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
                // Not opened by `aviary promote`: the release is one change.
                if let Some((release, gate)) = &self.release {
                    if *gate == *index {
                        use super::Gate;
                        return Answer::Webhook(
                            match release.pass(&self.canary.qualified_name()) {
                                Gate::Open => aviary_core::engine::HookOutcome::Pass,
                                Gate::Waiting(others) => {
                                    aviary_core::engine::HookOutcome::Fail(format!(
                                        "waiting for {} of the release to pass {} analysis",
                                        others.join(", "),
                                        if others.len() == 1 { "its" } else { "their" }
                                    ))
                                }
                                Gate::Failed(why) => aviary_core::engine::HookOutcome::Fail(why),
                            },
                        );
                    }
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
            Request::Metric { name, since, .. } => {
                let outcome = self.metrics.evaluate_at(name, *since).await;
                if let aviary_core::engine::MetricOutcome::NoValues(detail) = &outcome {
                    // The event says "no values found" in Flagger's words; what the query
                    // returned and why it counts as no values goes to the log.
                    tracing::info!(check = %name, "{name}: {detail}");
                }
                Answer::Metric(outcome)
            }
        }
    }

    /// Records the commands carried out since the last tick as one tick of the report.
    pub(super) fn record(&mut self, engine: &Engine) {
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
    pub(super) async fn run_step(
        &mut self,
        engine: &mut Engine,
        mut step: Step,
    ) -> Result<(), RunError> {
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
    pub(super) async fn save(&mut self, engine: &Engine) -> Result<(), RunError> {
        let owner = match &self.primary_owner {
            Some(owner) => Some(owner.clone()),
            None => self.workloads.primary_owner().await.unwrap_or(None),
        };
        self.store.save(engine, owner).await?;
        Ok(())
    }

    /// Where traffic is, as far as this run knows, with the engine in `phase`.
    pub(super) fn traffic_in(&self, phase: Phase) -> TrafficLeft {
        TrafficLeft {
            primary: self.applied.primary,
            canary: self.applied.canary,
            on_primary: self.applied.canary == 0 && !self.applied.mirror,
            promoting: matches!(phase, Phase::Promoting | Phase::Finalising),
        }
    }

    /// Returns traffic to the primary and saves a state from which the next run restarts the
    /// analysis, within `budget` (and [`SAVE_BUDGET`] for the save). Says where traffic was left.
    pub(super) async fn cancel(
        &mut self,
        engine: &mut Engine,
        reason: &str,
        budget: Duration,
    ) -> TrafficLeft {
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
    /// Whether it wrote them (or tried to).
    pub(super) async fn reconcile_routes(&mut self, saved: Routes) -> bool {
        let observed = match self.router.observed().await {
            Ok(o) => o,
            Err(e) => {
                tracing::warn!("could not read the routing objects back: {e}");
                return false;
            }
        };
        let Some(live) = observed.routes else {
            return false; // not created yet: the next traffic change creates them
        };
        let expected = match self.router.expressed(&saved).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!("could not tell what the routing objects should say: {e}");
                return false;
            }
        };
        if live == expected {
            return false;
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
        true
    }

    /// Acts on an abort request: rolls the analysis back and clears the request.
    pub(super) async fn abort(
        &mut self,
        engine: &mut Engine,
        reason: &str,
    ) -> Result<(), RunError> {
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
