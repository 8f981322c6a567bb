//! How a run ends: an [`Outcome`], or a [`RunError`] (with the exit code class it maps to).

use crate::cluster::ClusterError;
use crate::lease::LockError;
use aviary_core::engine::Phase;
use aviary_core::report::TrafficLeft;

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
    /// An externally driven canary phase
    /// ([`ExternalPhase::Canary`](super::ExternalPhase::Canary)) reached its weight and passed
    /// its analysis there; traffic stays split until the next phase.
    Held { weight: u32 },
}

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
