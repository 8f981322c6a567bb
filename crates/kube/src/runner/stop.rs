//! What stops a run early (a signal, the time limit, the lease) and what a stopped run does:
//! traffic back to the primary within [`CANCEL_BUDGET`], and the outcome that says where it was
//! left.

use std::time::Duration;

use tokio::time::Instant;

use crate::cluster::ClusterError;
use crate::lease::{Keeper, LeaseLost};
use aviary_core::engine::{Config, Engine};
use aviary_core::report::TrafficLeft;

use super::shell::Shell;
use super::{Outcome, RunError};

/// How long returning traffic to the primary may take when a run stops early (its API calls
/// are retried within it); the state is saved after that, within [`SAVE_BUDGET`]. Both fit in
/// the 10 s a GitHub runner gives a cancelled step between its SIGINT and its SIGKILL.
pub const CANCEL_BUDGET: Duration = Duration::from_secs(7);
/// How long the last save of a stopping run may take.
pub(super) const SAVE_BUDGET: Duration = Duration::from_secs(2);

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

/// SIGTERM and SIGINT, as [`crate::signals`] records them for the whole process: a signal that
/// came before this run began (during render, a download, the dev deploy) stops it at once.
struct Signals;

impl Signals {
    fn new() -> Result<Signals, RunError> {
        crate::signals::install().map_err(|e| RunError::Cluster(ClusterError::Invalid(e)))?;
        Ok(Signals)
    }

    async fn recv(&mut self) -> &'static str {
        crate::signals::wait().await
    }
}

/// A run stopped by `reason` once its shell is open: traffic back to the primary (unless the
/// lease is in other hands), and the outcome or error that says where it was left.
pub(super) async fn stopped(
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
pub(super) fn stopped_before_start(
    reason: StopReason,
    traffic: TrafficLeft,
) -> Result<Outcome, RunError> {
    match reason {
        StopReason::Signal(signal) => Ok(Outcome::Cancelled { signal, traffic }),
        StopReason::TimedOut(_) => Ok(Outcome::TimedOut { traffic }),
        StopReason::Lease(lost) => Err(RunError::GaveUp {
            reason: lost.to_string(),
            traffic,
        }),
    }
}

pub(super) const ALL_ON_PRIMARY: TrafficLeft = TrafficLeft {
    primary: 100,
    canary: 0,
    on_primary: true,
    promoting: false,
};
