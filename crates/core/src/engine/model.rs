//! The engine's vocabulary: its persisted state, what it is told (inputs and answers) and what it
//! asks for (requests) or orders (commands).

use serde::{Deserialize, Serialize};

use crate::spec::HookType;

/// Milliseconds on the caller's clock. The engine never reads a clock: every input that needs the
/// time carries it, so a simulation and a real run are the same code.
pub type Millis = u64;

/// Flagger's canary phases, with Flagger's spelling on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum Phase {
    /// No primary yet: it is being created from the target.
    #[default]
    Initializing,
    /// The primary serves all traffic; waiting for a new revision of the target.
    Initialized,
    /// A confirm-rollout gate is closed.
    Waiting,
    /// Analysis is running and traffic is being shifted.
    Progressing,
    /// Analysis finished; a confirm-promotion gate is closed.
    WaitingPromotion,
    /// The canary's spec was copied to the primary; traffic is moving back to it.
    Promoting,
    /// All traffic is on the promoted primary; the canary is being scaled down.
    Finalising,
    /// The revision was promoted.
    Succeeded,
    /// The revision was rolled back.
    Failed,
}

impl Phase {
    pub const ALL: [Phase; 9] = [
        Phase::Initializing,
        Phase::Initialized,
        Phase::Waiting,
        Phase::Progressing,
        Phase::WaitingPromotion,
        Phase::Promoting,
        Phase::Finalising,
        Phase::Succeeded,
        Phase::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Initializing => "Initializing",
            Phase::Initialized => "Initialized",
            Phase::Waiting => "Waiting",
            Phase::Progressing => "Progressing",
            Phase::WaitingPromotion => "WaitingPromotion",
            Phase::Promoting => "Promoting",
            Phase::Finalising => "Finalising",
            Phase::Succeeded => "Succeeded",
            Phase::Failed => "Failed",
        }
    }

    /// A rollout of one revision is over: promoted or rolled back.
    pub fn is_verdict(self) -> bool {
        matches!(self, Phase::Succeeded | Phase::Failed)
    }

    /// A revision is being analysed or promoted (Flagger's `shouldAdvance` phases).
    pub fn is_active(self) -> bool {
        matches!(
            self,
            Phase::Progressing
                | Phase::Waiting
                | Phase::WaitingPromotion
                | Phase::Promoting
                | Phase::Finalising
        )
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which requests a traffic split applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RouteScope {
    /// The weights split all traffic.
    #[default]
    All,
    /// A/B testing: the weights apply to requests matching `analysis.match`; every other request
    /// goes to the primary.
    Matched,
}

/// The routing a router must put in place. Weights are percentages and always sum to 100.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Routes {
    pub primary: u32,
    pub canary: u32,
    /// Copy (a share of) the primary's traffic to the canary; responses come from the primary.
    pub mirror: bool,
    /// Percentage of traffic mirrored, when `mirror` (Flagger's `mirrorWeight`); `None` means all.
    pub mirror_weight: Option<u32>,
    pub scope: RouteScope,
}

impl Routes {
    /// Everything on the primary, no mirroring, no match.
    pub const PRIMARY: Routes = Routes {
        primary: 100,
        canary: 0,
        mirror: false,
        mirror_weight: None,
        scope: RouteScope::All,
    };

    pub fn split(canary: u32, scope: RouteScope) -> Routes {
        let canary = canary.min(100);
        Routes {
            primary: 100 - canary,
            canary,
            mirror: false,
            mirror_weight: None,
            scope,
        }
    }
}

impl Default for Routes {
    fn default() -> Self {
        Routes::PRIMARY
    }
}

/// Everything the engine remembers between ticks: Flagger's `CanaryStatus`, plus the readiness
/// clocks that let the engine enforce `progressDeadlineSeconds` itself.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct State {
    pub phase: Phase,
    /// The routes the engine last ordered (Flagger reads them back from the router).
    pub routes: Routes,
    pub iterations: u32,
    pub failed_checks: u32,
    /// The newest revision of the target that the runner has seen.
    pub target_revision: Option<String>,
    /// The revision this status describes (Flagger's `lastAppliedSpec`).
    pub last_applied_revision: Option<String>,
    /// The revision last promoted to the primary.
    pub last_promoted_revision: Option<String>,
    pub last_transition: Millis,
    pub primary_not_ready_since: Option<Millis>,
    pub canary_not_ready_since: Option<Millis>,
    /// When the analysis of `last_applied_revision` began (its first Progressing tick), for
    /// the judge: its history starts there, and it is young until its window has passed.
    /// Absent in states saved before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis_started: Option<Millis>,
}

impl State {
    /// A canary that was bootstrapped with `current` and has just seen `next`: the state in which a
    /// pipeline usually hands a new revision to the engine.
    pub fn initialized_with_new_revision(current: &str, next: &str) -> State {
        State {
            phase: Phase::Initialized,
            target_revision: Some(next.to_string()),
            last_applied_revision: Some(current.to_string()),
            last_promoted_revision: Some(current.to_string()),
            ..State::default()
        }
    }

    /// The target has a revision the status has not taken in yet.
    pub fn has_new_revision(&self) -> bool {
        self.target_revision.is_some() && self.target_revision != self.last_applied_revision
    }
}

/// One of the two workloads the engine reasons about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Workload {
    /// `<target>-primary`, which serves stable traffic.
    Primary,
    /// The target itself, which runs the revision under analysis.
    Canary,
}

/// What the engine needs to know before it can go on with a tick. The runner performs it and answers
/// with the matching [`Answer`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "request", rename_all = "kebab-case")]
pub enum Request {
    /// Is this workload rolled out and available (Flagger's `IsPrimaryReady` / `IsCanaryReady`)?
    Readiness { workload: Workload },
    /// Call webhook `index` of the config (named `name`), reporting `phase` in its payload.
    Webhook {
        index: usize,
        name: String,
        hook: HookType,
        phase: Phase,
    },
    /// Query metric `index` of the config (named `name`). `since`: when the analysis of this
    /// revision began (the judge's history starts there), when the engine knows it.
    Metric {
        index: usize,
        name: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        since: Option<Millis>,
    },
}

/// The answer to a [`Request`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "answer", content = "value", rename_all = "kebab-case")]
pub enum Answer {
    Readiness(Readiness),
    Webhook(HookOutcome),
    Metric(MetricOutcome),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Readiness {
    Ready,
    /// Still rolling out; the message says how far (Flagger's "waiting for rollout to finish ...").
    NotReady(String),
    /// Will not become ready: the progress deadline was exceeded.
    Failed(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HookOutcome {
    /// 2xx (up to 202): the check passed, the gate is open, or the rollback is requested.
    Pass,
    /// Anything else, with the reason.
    Fail(String),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MetricOutcome {
    Value(f64),
    /// The query returned no sample (or NaN): a failed check, never a pass.
    NoValues(String),
    /// The query itself failed.
    Error(String),
}

/// How an event reads: Kubernetes' `Normal` (`Info`) or `Warning`. (Diagnostics about input
/// files have their own `spec::Severity`.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventLevel {
    Info,
    Warning,
}

/// The result of one check, for reports (step summary, JSON report, `simulate`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckRecord {
    pub name: String,
    /// `metric` or the webhook type.
    pub kind: String,
    /// The metric's value; `None` for webhooks and for "no values".
    pub value: Option<f64>,
    pub passed: bool,
}

/// What the engine orders. Each command is idempotent, so re-running one after a crash is safe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "kebab-case")]
pub enum Command {
    /// Create (or reconcile) the primary workload and the apex/primary/canary services from the target.
    Bootstrap,
    /// Scale the canary (the target) back up to its desired replicas.
    ScaleCanaryUp,
    /// Scale the canary (the target) to zero.
    ScaleCanaryToZero,
    /// Put these routes in place.
    SetRoutes { routes: Routes },
    /// Copy the canary's pod template (and tracked config) to the primary, provided the canary
    /// still is `revision`, the one that was analysed: a runner that finds another revision
    /// there must not copy it (it restarts the analysis instead).
    Promote {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        revision: Option<String>,
    },
    /// Record the new phase (and persist the state).
    SetPhase { phase: Phase },
    /// A Flagger-style event for the log, the report and `event` webhooks.
    Event {
        severity: EventLevel,
        message: String,
    },
    /// The outcome of one check.
    Check { check: CheckRecord },
}
