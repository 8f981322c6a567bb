//! `aviary rollout`, `status`, `promote` and `abort`: the cluster-facing commands.

use std::io::Write;
use std::time::Duration;

use serde_json::json;

use crate::app::{self, AppError};
use crate::cli::{AbortArgs, ClusterArgs, ControlArgs, RolloutArgs};
use crate::cluster::{self, ClusterError};
use crate::exit::Exit;
use crate::runner::{self, Options, Outcome, RunError};
use crate::spec::duration::parse_go_duration;
use crate::state::{self, ABORT_ANNOTATION, APPROVE_ANNOTATION};

fn runtime() -> Result<tokio::runtime::Runtime, AppError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(AppError::Output)
}

async fn connect(args: &ClusterArgs) -> Result<(kube::Client, String), AppError> {
    let timeout = parse_go_duration(&args.request_timeout).map_err(|e| {
        AppError::input(format!("--request-timeout: {e}"))
            .with_help("for example --request-timeout 15s")
    })?;
    cluster::connect(args.kubeconfig.as_deref(), args.context.as_deref(), timeout)
        .await
        .map_err(|e| AppError::from(RunError::Cluster(e)))
}

pub fn rollout(args: &RolloutArgs) -> Result<Exit, AppError> {
    let provider = app::default_provider(&args.canary.provider)?;
    let mut canary = app::load_canary(&args.canary)?;
    let timeout = match &args.timeout {
        Some(t) => Some(parse_go_duration(t).map_err(|e| {
            AppError::input(format!("--timeout: {e}")).with_help("for example --timeout 30m")
        })?),
        None => None,
    };
    let rt = runtime()?;
    rt.block_on(async move {
        let (client, default_ns) = connect(&args.cluster).await?;
        if !canary.namespace_explicit && args.canary.namespace.is_none() {
            canary.namespace = default_ns;
        }
        let options = Options {
            provider,
            timeout,
            holder: state::holder_identity(),
            poll: Duration::from_millis(500),
        };
        tracing::info!(
            "rolling out {} (lease holder {})",
            canary.qualified_name(),
            options.holder
        );
        let outcome = runner::rollout(client, canary, options).await?;
        Ok(match outcome {
            Outcome::Promoted => {
                tracing::info!("verdict: promoted");
                Exit::Success
            }
            Outcome::Bootstrapped => {
                tracing::info!(
                    "verdict: bootstrapped (the primary was created; nothing to analyse yet)"
                );
                Exit::Success
            }
            Outcome::UpToDate { phase } => {
                if phase == crate::engine::Phase::Failed {
                    tracing::warn!(
                        "verdict: this revision was rolled back before; deploy a new one"
                    );
                    Exit::RolledBack
                } else {
                    Exit::Success
                }
            }
            Outcome::RolledBack => {
                tracing::warn!("verdict: rolled back");
                Exit::RolledBack
            }
            Outcome::Cancelled => {
                tracing::warn!("cancelled; all traffic is on the primary");
                Exit::Cancelled
            }
            Outcome::TimedOut => {
                tracing::warn!("no verdict within --timeout; all traffic is on the primary");
                Exit::NoVerdict
            }
        })
    })
}

async fn namespace(args: &ControlArgs) -> Result<(kube::Client, String), AppError> {
    let (client, default_ns) = connect(&args.cluster).await?;
    Ok((client, args.namespace.clone().unwrap_or(default_ns)))
}

pub fn status(args: &ControlArgs, out: &mut dyn Write) -> Result<Exit, AppError> {
    let rt = runtime()?;
    let (engine, control, lease) = rt.block_on(async {
        let (client, ns) = namespace(args).await?;
        let (engine, control) = state::read(client.clone(), &ns, &args.name)
            .await
            .map_err(|e| AppError::from(RunError::from(e)))?;
        let leases: kube::Api<k8s_openapi::api::coordination::v1::Lease> =
            kube::Api::namespaced(client, &ns);
        let lease = leases
            .get_opt(&state::object_name(&args.name))
            .await
            .ok()
            .flatten()
            .and_then(|l| l.spec)
            .and_then(|s| s.holder_identity);
        Ok::<_, AppError>((engine, control, lease))
    })?;
    let Some(engine) = engine else {
        return Err(AppError::input(format!(
            "no rollout state for canary {:?}; has `aviary rollout` run for it in this namespace?",
            args.name
        )));
    };
    let s = engine.state();
    if args.json {
        let value = json!({
            "canary": args.name,
            "phase": s.phase,
            "canary_weight": s.routes.canary,
            "primary_weight": s.routes.primary,
            "iterations": s.iterations,
            "failed_checks": s.failed_checks,
            "threshold": engine.config().threshold,
            "revision": s.target_revision,
            "last_promoted_revision": s.last_promoted_revision,
            "runner": lease,
            "abort_requested": control.abort,
            "approved_revision": control.approve,
        });
        serde_json::to_writer_pretty(&mut *out, &value).map_err(std::io::Error::from)?;
        writeln!(out)?;
    } else {
        writeln!(out, "{}.{}", args.name, engine.config().namespace)?;
        writeln!(out, "  phase          {}", s.phase)?;
        writeln!(
            out,
            "  traffic        primary {}% / canary {}%{}",
            s.routes.primary,
            s.routes.canary,
            if s.routes.mirror { " (mirroring)" } else { "" }
        )?;
        writeln!(
            out,
            "  failed checks  {}/{}",
            s.failed_checks,
            engine.config().threshold
        )?;
        writeln!(
            out,
            "  revision       {} (primary runs {})",
            s.target_revision.as_deref().unwrap_or("-"),
            s.last_promoted_revision.as_deref().unwrap_or("-")
        )?;
        writeln!(
            out,
            "  runner         {}",
            lease.as_deref().unwrap_or("none running")
        )?;
        if let Some(reason) = &control.abort {
            writeln!(out, "  abort          requested: {reason}")?;
        }
    }
    Ok(Exit::Success)
}

pub fn promote(args: &ControlArgs) -> Result<Exit, AppError> {
    let rt = runtime()?;
    rt.block_on(async {
        let (client, ns) = namespace(args).await?;
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

pub fn abort(args: &AbortArgs) -> Result<Exit, AppError> {
    let rt = runtime()?;
    let c = &args.control;
    rt.block_on(async {
        let (client, ns) = namespace(c).await?;
        state::request(client, &ns, &c.name, ABORT_ANNOTATION, &args.reason)
            .await
            .map_err(|e: ClusterError| AppError::from(RunError::from(e)))?;
        tracing::info!(
            "asked the runner of {}.{ns} to roll back; it acts within a second",
            c.name
        );
        Ok(Exit::Success)
    })
}
