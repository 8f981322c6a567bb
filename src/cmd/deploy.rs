//! `aviary deploy`: a target rendered, applied and waited for, with no canary.

use aviary_core::exit::Exit;
use aviary_core::report::{Report, Verdict};
use aviary_core::request;
use aviary_kube::cluster::ClusterError;
use aviary_kube::deploy;
use aviary_kube::runner::RunError;

use super::rollout::connect;
use super::{runtime, AppError};

/// `aviary deploy`.
pub fn run(req: &request::Deploy) -> Result<Exit, AppError> {
    super::finish(run_deploy(req), req.report.as_deref(), "deploy")
}

/// Renders, applies and waits for a target without a canary, and reports it.
pub fn run_deploy(args: &request::Deploy) -> Result<Report, AppError> {
    let opts = aviary_kube::render::options(&args.target, &args.source)?;
    let rendered = aviary_kube::render::render(&opts)?;
    for w in &rendered.warnings {
        tracing::warn!("{w}");
    }
    if !rendered.canary_docs.is_empty() {
        tracing::info!(
            "target {}: {} Canary/MetricTemplate document(s) are not applied by `deploy`; use `aviary rollout --target {}`",
            args.target,
            rendered.canary_docs.len(),
            args.target
        );
    }
    deploy_objects(args, rendered.objects, rendered.warnings)
}

/// Applies already rendered `objects` as `args` says (its render source unused) and waits for
/// them.
pub fn deploy_objects(
    args: &request::Deploy,
    objects: Vec<serde_json::Value>,
    warnings: Vec<String>,
) -> Result<Report, AppError> {
    let timeout = args.timeout;
    let rt = runtime()?;
    rt.block_on(async {
        let (client, default_ns) = connect(&args.cluster).await?;
        let ns = args.namespace.clone().unwrap_or(default_ns);
        let run_err = |e: ClusterError| AppError::from(RunError::Cluster(e));
        let previous = deploy::read_inventory(&client, &ns, &args.target)
            .await
            .map_err(run_err)?;
        let applied = deploy::apply_objects(&client, &objects, &ns, &args.target)
            .await
            .map_err(run_err)?;
        // The inventory is what this target may still have in the cluster: after a prune, what
        // was just applied; without one, that and everything recorded before.
        let inventory = if args.prune {
            deploy::prune(&client, &previous, &applied, &args.target)
                .await
                .map_err(run_err)?;
            applied.clone()
        } else {
            let mut all = previous.clone();
            all.extend(applied.iter().cloned());
            all.sort();
            all.dedup();
            all
        };
        deploy::write_inventory(&client, &ns, &args.target, &inventory)
            .await
            .map_err(run_err)?;
        // A cancelled job stops waiting (what was applied stays applied, as with kubectl).
        aviary_kube::signals::guard(deploy::wait_for_rollouts(&client, &applied, timeout))
            .await??;
        let message = format!(
            "{} objects applied, every workload rolled out",
            applied.len()
        );
        tracing::info!("target {}: {message}", args.target);
        let mut report = Report::new(Verdict::Deployed);
        report.command = Some("deploy".into());
        report.target = Some(args.target.clone());
        report.message = Some(message);
        report.warnings = warnings;
        Ok(report.exit(Exit::Success))
    })
}
