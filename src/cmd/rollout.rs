//! `aviary rollout`, `status`, `promote` and `abort`: the cluster-facing commands.

use std::time::Duration;

use crate::app::{self, AppError};
use crate::cli::{AbortArgs, ClusterArgs, ControlArgs, DeployArgs, RolloutArgs};
use aviary_kube::cluster::{self, ClusterError};
use aviary_core::exit::Exit;
use aviary_kube::lease::{Holder, LeaseGuard};
use aviary_core::report::{Log, Report, Verdict};
use aviary_kube::runner::{self, ExternalPhase, Options, Outcome, RunError};
use aviary_core::spec::duration::parse_go_duration;
use aviary_core::spec::{self, Canary};
use aviary_kube::state::{self, ABORT_ANNOTATION, APPROVE_ANNOTATION};
use crate::{deploy, render};

/// The async runtime of a command (one per process: a cluster command, a host's API calls).
pub(crate) fn runtime() -> Result<tokio::runtime::Runtime, AppError> {
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

/// What a rollout needs beyond its flags.
#[derive(Debug, Default)]
pub struct RunContext {
    /// Every tick is recorded here (a host watches it for live progress).
    pub log: Log,
    /// One externally driven phase (Cloud Deploy) instead of the whole schedule.
    pub phase: Option<ExternalPhase>,
    /// Objects and Canary documents rendered elsewhere (Cloud Deploy's manifest), used instead of
    /// `--target`/`-f`.
    pub rendered: Option<Prerendered>,
}

/// A rendered target: what Cloud Deploy's render step left in its manifest.
#[derive(Debug)]
pub struct Prerendered {
    pub label: String,
    pub target: String,
    pub objects: Vec<serde_json::Value>,
    pub canary_docs: Vec<serde_json::Value>,
}

/// `aviary rollout`.
pub fn rollout(args: &RolloutArgs) -> Result<Exit, AppError> {
    let result = run_rollout(args, RunContext::default());
    finish(result, args.report.as_deref(), "rollout")
}

/// Writes `--report` (also for a command that failed) and turns a report into its exit code.
pub fn finish(
    result: Result<Report, AppError>,
    path: Option<&std::path::Path>,
    command: &str,
) -> Result<Exit, AppError> {
    let (report, err) = match result {
        Ok(report) => (report, None),
        Err(e) => (failed_report(&e, command), Some(e)),
    };
    write_report(&report, path)?;
    match err {
        Some(e) => Err(e),
        None => Ok(exit_of(&report)),
    }
}

/// Writes `report` to the `--report` file, when one was asked for.
pub fn write_report(report: &Report, path: Option<&std::path::Path>) -> Result<(), AppError> {
    let Some(path) = path else {
        return Ok(());
    };
    report.write(path).map_err(|e| {
        AppError::Output(std::io::Error::new(
            e.kind(),
            format!("--report {}: {e}", path.display()),
        ))
    })
}

/// The report of a command that stopped on an error.
pub fn failed_report(err: &AppError, command: &str) -> Report {
    let mut report = Report::new(Verdict::Failed);
    report.command = Some(command.to_string());
    if let AppError::Run(run) = err {
        if let RunError::GaveUp { traffic, .. } = run.as_ref() {
            report.traffic = Some(*traffic);
        }
    }
    report.message = Some(match err {
        AppError::Spec(aviary_core::spec::SpecError::Invalid { errors, .. }) => errors
            .iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join("; "),
        other => other.to_string(),
    });
    report.exit(err.exit())
}

/// The exit code a report stands for.
pub fn exit_of(report: &Report) -> Exit {
    if let Some(code) = report.exit_code {
        if let Some(exit) = Exit::ALL.iter().find(|e| e.code() == code) {
            return *exit;
        }
    }
    match report.verdict {
        v if v.is_success() => Exit::Success,
        Verdict::RolledBack => Exit::RolledBack,
        Verdict::NoVerdict => Exit::NoVerdict,
        Verdict::Cancelled => Exit::Cancelled,
        _ => Exit::Runtime,
    }
}

/// Runs a rollout and reports it.
pub fn run_rollout(args: &RolloutArgs, ctx: RunContext) -> Result<Report, AppError> {
    let provider = app::default_provider(&args.provider)?;
    // A rendered target (its objects are applied first; Cloud Deploy brings it rendered), or a
    // Canary file.
    let rendered = match (ctx.rendered, &args.target) {
        (Some(pre), _) => Some(pre),
        (None, Some(target)) => {
            let opts = render::options(target, &args.source)?;
            let rendered = render::render(&opts)?;
            for w in &rendered.warnings {
                tracing::warn!("{w}");
            }
            Some(Prerendered {
                label: format!(
                    "{} (target {target}, rendered)",
                    opts.skaffold_file.display()
                ),
                target: target.clone(),
                objects: rendered.objects,
                canary_docs: rendered.canary_docs,
            })
        }
        (None, None) => None,
    };
    let (docs, label, objects) = match (rendered, &args.file) {
        (Some(pre), _) => (
            spec::load_str(&pre.label, &render::to_yaml(&pre.canary_docs))?,
            pre.label,
            Some((pre.target, pre.objects)),
        ),
        (None, Some(file)) => (spec::load_file(file)?, file.display().to_string(), None),
        (None, None) => {
            return Err(
                AppError::input("give the Canary with -f FILE, or a target with --target")
                    .with_help("for example: aviary rollout --target prod"),
            )
        }
    };
    let templates = docs.templates.clone();
    let mut canary = app::pick_canary(
        docs,
        &label,
        args.name.as_deref(),
        args.namespace.as_deref(),
    )?;
    let timeout = match &args.timeout {
        Some(t) => Some(parse_go_duration(t).map_err(|e| {
            AppError::input(format!("--timeout: {e}")).with_help("for example --timeout 30m")
        })?),
        None => None,
    };
    // Every address the run would call, checked before anything changes (exit 2).
    aviary_core::urls::check_addresses(&canary, &templates, args.prometheus_url.as_deref()).map_err(
        |errors| spec::SpecError::Invalid {
            errors,
            warnings: Vec::new(),
        },
    )?;
    let log = ctx.log.clone();
    let target = objects.as_ref().map(|(t, _)| t.clone());
    let prometheus_auth = match (
        &args.prometheus_token,
        &args.prometheus_username,
        &args.prometheus_password,
    ) {
        (Some(token), _, _) if !token.is_empty() => aviary_kube::metrics::Auth::Bearer(token.clone()),
        (_, Some(username), Some(password)) if !username.is_empty() && !password.is_empty() => {
            aviary_kube::metrics::Auth::Basic {
                username: username.clone(),
                password: password.clone(),
            }
        }
        _ => aviary_kube::metrics::Auth::None,
    };
    let options = Options {
        provider: provider.clone(),
        poll: Duration::from_millis(500),
        templates,
        prometheus: args.prometheus_url.clone(),
        prometheus_auth,
        log: log.clone(),
        phase: ctx.phase,
    };
    let rt = runtime()?;
    let outcome = rt.block_on(async {
        // From here on a signal or the time limit stops the command wherever it is.
        let mut stop = runner::Stop::new(timeout)?;
        let connected = stop.guard(connect(&args.cluster)).await;
        let (client, default_ns) = match connected {
            Ok(connected) => connected?,
            Err(reason) => return Ok((stopped_early(reason)?, canary)),
        };
        if !canary.namespace_explicit && args.namespace.is_none() {
            canary.namespace = default_ns;
        }
        // The lease first: a runner that cannot have it changes nothing (exit 4), not even the
        // target Deployment a rendered target would apply.
        let me = Holder::this_process(&|k| std::env::var(k).ok());
        let acquired = stop
            .guard(LeaseGuard::acquire(
                client.clone(),
                &canary.namespace,
                &canary.name,
                &me,
            ))
            .await;
        let lease = match acquired {
            Ok(lease) => lease.map_err(RunError::from)?,
            Err(reason) => return Ok((stopped_early(reason)?, canary)),
        };
        stop.watch_lease(lease.keep());
        tracing::info!(
            "rolling out {} (lease holder {})",
            canary.qualified_name(),
            lease.identity()
        );
        let run = async {
            if let Some((target, objects)) = objects {
                match stop
                    .guard(apply_for_rollout(&client, &canary, &target, objects))
                    .await
                {
                    Ok(applied) => applied?,
                    Err(reason) => return stopped_early(reason),
                }
            }
            runner::rollout(client.clone(), canary.clone(), options, &mut stop)
                .await
                .map_err(AppError::from)
        };
        let outcome = run.await;
        drop(stop);
        match tokio::time::timeout(Duration::from_secs(5), lease.release()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!("could not release the lease: {e}"),
            Err(_) => tracing::warn!("could not release the lease in time; it expires by itself"),
        }
        Ok::<_, AppError>((outcome?, canary))
    })?;
    let (outcome, canary) = outcome;
    let mut traffic = None;
    let (verdict, exit, message) = match outcome {
        Outcome::Promoted => (Verdict::Promoted, Exit::Success, None),
        Outcome::Bootstrapped => (
            Verdict::Bootstrapped,
            Exit::Success,
            Some("the primary was created from this revision; the next release is analysed".to_string()),
        ),
        Outcome::UpToDate {
            phase: aviary_core::engine::Phase::Failed,
        } => (
            Verdict::RolledBack,
            Exit::RolledBack,
            Some("this revision was rolled back before; deploy a new one".to_string()),
        ),
        Outcome::UpToDate { .. } => (
            Verdict::UpToDate,
            Exit::Success,
            Some("this revision already went through a rollout; nothing to do".to_string()),
        ),
        Outcome::RolledBack { aborted } => (
            Verdict::RolledBack,
            Exit::RolledBack,
            aborted.map(|reason| format!("aborted: {reason}; all traffic is on the primary")),
        ),
        Outcome::Cancelled { signal, traffic: t } => {
            traffic = Some(t);
            // Stopped during the promotion, traffic is split between two copies of the analysed
            // revision: nothing unanalysed serves, so the cancel is clean.
            let exit = if t.on_primary || t.promoting {
                Exit::Cancelled
            } else {
                Exit::Runtime
            };
            (
                Verdict::Cancelled,
                exit,
                Some(format!("cancelled by {signal}; {}", t.describe())),
            )
        }
        Outcome::TimedOut { traffic: t } => {
            traffic = Some(t);
            let exit = if t.on_primary || t.promoting {
                Exit::NoVerdict
            } else {
                Exit::Runtime
            };
            (
                Verdict::NoVerdict,
                exit,
                Some(format!("no verdict within --timeout; {}", t.describe())),
            )
        }
        Outcome::Held { weight } => (
            Verdict::Advanced,
            Exit::Success,
            Some(format!("the canary passed its analysis at {weight}%; traffic stays split until the next phase")),
        ),
    };
    let mut report = log.report(verdict);
    if report.message.is_none() || traffic.is_some() {
        report.message = message.or(report.message);
    }
    report.traffic = traffic;
    let config = aviary_core::engine::Config::from_canary(&canary, &provider);
    report.command = Some("rollout".into());
    report.canary = Some(canary.qualified_name());
    report.target = target;
    report.threshold = Some(config.threshold);
    match verdict {
        Verdict::RolledBack | Verdict::Cancelled | Verdict::NoVerdict => {
            tracing::warn!("verdict: {} ({})", verdict.human(), report.headline())
        }
        _ => tracing::info!("verdict: {} ({})", verdict.human(), report.headline()),
    }
    Ok(report.exit(exit))
}

/// The outcome of a run stopped before its rollout began: it moved no traffic.
fn stopped_early(reason: runner::StopReason) -> Result<Outcome, AppError> {
    let on_primary = aviary_core::report::TrafficLeft {
        primary: 100,
        canary: 0,
        on_primary: true,
        promoting: false,
    };
    match reason {
        runner::StopReason::Signal(signal) => Ok(Outcome::Cancelled {
            signal,
            traffic: on_primary,
        }),
        runner::StopReason::TimedOut(_) => Ok(Outcome::TimedOut {
            traffic: on_primary,
        }),
        runner::StopReason::Lease(lost) => Err(AppError::from(RunError::GaveUp {
            reason: lost.to_string(),
            traffic: on_primary,
        })),
    }
}

/// Applies a rendered target before its rollout: everything, the canary's target Deployment
/// included (that is how the new revision arrives), and waits for the other workloads. Once a
/// primary exists, the target keeps the replica count the rollout left it with (zero between
/// releases), so re-applying an unchanged revision does not wake the canary up.
async fn apply_for_rollout(
    client: &kube::Client,
    canary: &Canary,
    target: &str,
    mut objects: Vec<serde_json::Value>,
) -> Result<(), AppError> {
    use k8s_openapi::api::apps::v1::Deployment;
    let ns = canary.namespace.clone();
    let deployments: kube::Api<Deployment> = kube::Api::namespaced(client.clone(), &ns);
    let primary = format!("{}-primary", canary.target_ref.name);
    let cluster_err = |e: kube::Error| {
        AppError::from(RunError::Cluster(ClusterError::api("read the primary", e)))
    };
    let has_primary = deployments
        .get_opt(&primary)
        .await
        .map_err(cluster_err)?
        .is_some();
    let is_target = |o: &serde_json::Value| {
        o["kind"] == "Deployment"
            && o["metadata"]["name"] == canary.target_ref.name.as_str()
            && o["metadata"]["namespace"].as_str().unwrap_or(&ns) == ns
    };
    if has_primary {
        let live = deployments
            .get_opt(&canary.target_ref.name)
            .await
            .map_err(cluster_err)?
            .and_then(|d| d.spec)
            .and_then(|s| s.replicas);
        if let Some(replicas) = live {
            for o in objects.iter_mut().filter(|o| is_target(o)) {
                o["spec"]["replicas"] = serde_json::json!(replicas);
            }
        }
    }
    let applied = deploy::apply_objects(client, &objects, &ns, target)
        .await
        .map_err(|e| AppError::from(RunError::Cluster(e)))?;
    let others: Vec<_> = applied
        .into_iter()
        .filter(|k| !(k.kind == "Deployment" && k.name == canary.target_ref.name))
        .collect();
    deploy::wait_for_rollouts(client, &others, Duration::from_secs(300)).await?;
    Ok(())
}

/// `aviary deploy`.
pub fn deploy(args: &DeployArgs) -> Result<Exit, AppError> {
    finish(run_deploy(args), args.report.as_deref(), "deploy")
}

/// Renders, applies and waits for a target without a canary, and reports it.
pub fn run_deploy(args: &DeployArgs) -> Result<Report, AppError> {
    let opts = render::options(&args.target, &args.source)?;
    let rendered = render::render(&opts)?;
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

/// Applies already rendered `objects` as `args` says (its render flags unused) and waits for them.
pub fn deploy_objects(
    args: &DeployArgs,
    objects: Vec<serde_json::Value>,
    warnings: Vec<String>,
) -> Result<Report, AppError> {
    let timeout = parse_go_duration(&args.timeout).map_err(|e| {
        AppError::input(format!("--timeout: {e}")).with_help("for example --timeout 5m")
    })?;
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
        deploy::wait_for_rollouts(&client, &applied, timeout).await?;
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

pub(crate) async fn namespace(args: &ControlArgs) -> Result<(kube::Client, String), AppError> {
    // Names the API would refuse are the user's to fix (exit 2), before any request.
    crate::status::check_canary_name(&args.name)?;
    if let Some(ns) = &args.namespace {
        crate::status::check_namespace(ns)?;
    }
    let (client, default_ns) = connect(&args.cluster).await?;
    Ok((client, args.namespace.clone().unwrap_or(default_ns)))
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

/// `aviary abort`: asks the canary's runner to roll back, and waits until it has. The request
/// is durable (an annotation on the state ConfigMap, naming the revision under analysis): when
/// no runner holds the lease, or its holder turns out to be gone (its lease expires without it
/// acting), `abort` takes the lease and rolls back itself, so an abort never waits for a runner
/// that will not come back.
pub fn abort(args: &AbortArgs) -> Result<Exit, AppError> {
    let rt = runtime()?;
    let c = &args.control;
    rt.block_on(async {
        let mut stop = runner::Stop::new(None)?;
        let (client, ns) = namespace(c).await?;
        let name = c.name.as_str();
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
            reason: args.reason.clone(),
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
                    let result = abort_here(&mut stop, &client, &mut store, name, &ns, &args.reason).await;
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
