//! `aviary status`: what the cluster says about a canary's rollout.

use std::io::Write;

use serde_json::json;

use crate::app::AppError;
use crate::cli::ControlArgs;
use crate::exit::Exit;
use crate::rollout::{namespace, runtime};
use crate::runner::RunError;
use crate::state;

pub fn run(args: &ControlArgs, out: &mut dyn Write) -> Result<Exit, AppError> {
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

