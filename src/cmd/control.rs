//! `aviary promote` and `aviary abort`: requests to the runner of a rollout, through the
//! annotations of its state ConfigMap.

use std::time::Duration;

use aviary_core::exit::Exit;
use aviary_core::report::Log;
use aviary_kube::cluster::ClusterError;
use aviary_kube::lease::{Holder, LeaseGuard};
use aviary_kube::runner::{self, RunError};
use aviary_kube::state::{self, ABORT_ANNOTATION, APPROVE_ANNOTATION};

use super::rollout::connect;
use super::{runtime, AppError};
use crate::cli::{AbortArgs, ControlArgs};

/// The canary a control command (`status`, `promote`, `abort`) works on. Its names are checked
/// when it is made (exit 2 for a name the API would refuse), before a runtime or a request.
pub struct Target {
    namespace: Option<String>,
    cluster: aviary_core::request::Cluster,
}

impl Target {
    pub fn new(args: &ControlArgs) -> Result<Target, AppError> {
        Target::of(&args.name, args.namespace.clone(), args.cluster.cluster()?)
    }

    /// The canary `name` in `namespace` (else the context's) of `cluster`, names checked.
    pub fn of(
        name: &str,
        namespace: Option<String>,
        cluster: aviary_core::request::Cluster,
    ) -> Result<Target, AppError> {
        super::status::check_canary_name(name)?;
        if let Some(ns) = &namespace {
            super::status::check_namespace(ns)?;
        }
        Ok(Target { namespace, cluster })
    }

    /// A client, and the namespace: the one given, else the context's.
    pub async fn connect(&self) -> Result<(kube::Client, String), AppError> {
        let (client, default_ns) = connect(&self.cluster).await?;
        Ok((client, self.namespace.clone().unwrap_or(default_ns)))
    }
}

pub fn promote(args: &ControlArgs) -> Result<Exit, AppError> {
    let target = Target::new(args)?;
    let rt = runtime()?;
    rt.block_on(async {
        let (client, ns) = target.connect().await?;
        let (engine, _) = state::read(client.clone(), &ns, &args.name)
            .await
            .map_err(|e| AppError::from(RunError::from(e)))?;
        let revision = engine
            .and_then(|e| e.state().target_revision.clone())
            .ok_or_else(|| {
                AppError::input(format!(
                    "no rollout of canary {}.{ns} is in progress",
                    args.name
                ))
            })?;
        state::request(client, &ns, &args.name, APPROVE_ANNOTATION, &revision)
            .await
            .map_err(|e| AppError::from(RunError::from(e)))?;
        tracing::info!(
            "opened the confirm gates of {}.{ns} for revision {revision}",
            args.name
        );
        Ok(Exit::Success)
    })
}

/// `aviary abort`: asks the canary's runner to roll back, and waits until it has. The request
/// is durable (an annotation on the state ConfigMap, naming the revision under analysis): when
/// no runner holds the lease, or its holder turns out to be gone (its lease expires without it
/// acting), `abort` takes the lease and rolls back itself, so an abort never waits for a runner
/// that will not come back.
pub fn abort(args: &AbortArgs) -> Result<Exit, AppError> {
    let target = Target::new(&args.control)?;
    abort_canary(&target, &args.control.name, &args.reason)
}

/// Aborts the canary `name` of `target` (see [`abort`]).
pub fn abort_canary(target: &Target, name: &str, reason: &str) -> Result<Exit, AppError> {
    let rt = runtime()?;
    rt.block_on(async {
        let mut stop = runner::Stop::new(None)?;
        let (client, ns) = target.connect().await?;
        let cluster_err = |e: ClusterError| AppError::from(RunError::from(e));
        let mut store = state::StateStore::new(client.clone(), &ns, name);
        let (engine, _) = store.load().await.map_err(cluster_err)?;
        let Some(engine) = engine else {
            return Err(AppError::input(format!(
                "no rollout of canary {name}.{ns} was found (no ConfigMap {}); is the name and namespace right?",
                state::object_name(name)
            )));
        };
        let request = state::AbortRequest {
            reason: reason.to_string(),
            revision: engine.state().target_revision.clone(),
        };
        state::request(client.clone(), &ns, name, ABORT_ANNOTATION, &request.to_annotation())
            .await
            .map_err(cluster_err)?;
        let me = Holder {
            run: "aviary abort".into(),
            ..Holder::this_process(&|k| std::env::var(k).ok())
        };
        let give_up = tokio::time::Instant::now()
            + aviary_kube::lease::lease_duration()
            + Duration::from_secs(10);
        let mut told = false;
        loop {
            let (engine, control) = store.load().await.map_err(cluster_err)?;
            if control.abort.is_none() {
                // A runner acted on it.
                let phase = engine.map(|e| e.state().phase);
                if phase == Some(aviary_core::engine::Phase::Failed) {
                    tracing::info!("the runner of {name}.{ns} rolled it back: all traffic is on the primary");
                } else {
                    tracing::info!(
                        "the runner of {name}.{ns} took the request; nothing was being analysed (phase {})",
                        phase.map(|p| p.to_string()).unwrap_or_else(|| "-".into())
                    );
                }
                return Ok(Exit::Success);
            }
            match LeaseGuard::acquire(client.clone(), &ns, name, &me).await {
                Ok(lease) => {
                    stop.watch_lease(lease.keep());
                    let result = abort_here(&mut stop, &client, &mut store, name, &ns, reason).await;
                    drop(stop);
                    if let Err(e) = lease.release().await {
                        tracing::warn!("could not release the lease: {e}");
                    }
                    return result;
                }
                Err(aviary_kube::lease::LockError::Held { holder, until, .. }) => {
                    if !told {
                        tracing::info!(
                            "asked the runner of {name}.{ns} ({holder}) to roll back; waiting for it (if it does not act, this command rolls back itself once its lease expires at {until})"
                        );
                        told = true;
                    }
                }
                Err(aviary_kube::lease::LockError::Cluster(e)) => return Err(cluster_err(e)),
            }
            if tokio::time::Instant::now() >= give_up {
                return Err(AppError::Runtime(format!(
                    "the runner of {name}.{ns} keeps its lease but did not act on the abort; the request stays, and the canary is rolled back by its runner or by the next `aviary rollout` of this revision"
                )));
            }
            if let Err(reason) = stop.guard(tokio::time::sleep(Duration::from_millis(500))).await {
                tracing::warn!(
                    "stopped ({reason:?}); the abort request stays: the runner or the next run of this revision rolls back"
                );
                return Ok(Exit::Cancelled);
            }
        }
    })
}

/// The rollback of an abort that no runner will carry out (the caller holds the lease).
async fn abort_here(
    stop: &mut runner::Stop,
    client: &kube::Client,
    store: &mut state::StateStore,
    name: &str,
    ns: &str,
    reason: &str,
) -> Result<Exit, AppError> {
    let cluster_err = |e: ClusterError| AppError::from(RunError::from(e));
    // Read again under the lease: a runner may have acted just before it ended.
    let (_, control) = store.load().await.map_err(cluster_err)?;
    if control.abort.is_none() {
        tracing::info!("the runner of {name}.{ns} acted on the abort before it ended");
        return Ok(Exit::Success);
    }
    let Some(spec) = store.saved_spec().cloned() else {
        return Err(AppError::Runtime(format!(
            "no runner is rolling out {name}.{ns}, and its saved state does not record the Canary (an older aviary wrote it); the abort request stays: the next `aviary rollout` of this revision rolls back"
        )));
    };
    tracing::info!("no runner is rolling out {name}.{ns}; rolling it back here");
    let work = runner::abort_without_runner(client.clone(), spec, reason, Log::new());
    match stop.guard(work).await {
        Ok(Ok(Some(traffic))) => {
            tracing::info!("rolled {name}.{ns} back: {}", traffic.describe());
            Ok(Exit::Success)
        }
        Ok(Ok(None)) => {
            tracing::info!("nothing to abort: no analysis of {name}.{ns} is running");
            Ok(Exit::Success)
        }
        Ok(Err(e)) => Err(e.into()),
        Err(reason) => Err(AppError::Runtime(format!(
            "stopped during the rollback ({reason:?}); the abort request stays: re-run `aviary abort`"
        ))),
    }
}
