//! `aviary rollout`: a canary release on the cluster until it is promoted or rolled back.

use std::time::Duration;

use aviary_core::exit::Exit;
use aviary_core::report::{Log, Report, Verdict};
use aviary_core::request::{self, CanarySource, Prerendered};
use aviary_core::spec::{self, Canary};
use aviary_kube::cluster::{self, ClusterError};
use aviary_kube::deploy;
use aviary_kube::lease::{Holder, LeaseGuard};
use aviary_kube::runner::{self, ExternalPhase, Options, Outcome, RunError};

use super::{runtime, AppError};

/// Connects to the cluster of `target`: a client and the context's namespace.
pub async fn connect(target: &request::Cluster) -> Result<(kube::Client, String), AppError> {
    cluster::connect(
        target.kubeconfig.as_deref(),
        target.context.as_deref(),
        target.request_timeout,
    )
    .await
    .map_err(|e| AppError::from(RunError::Cluster(e)))
}

/// What a rollout needs beyond its request.
#[derive(Default)]
pub struct RunContext {
    /// Every tick is recorded here (a host watches it for live progress).
    pub log: Log,
    /// One externally driven phase (Cloud Deploy) instead of the whole schedule.
    pub phase: Option<ExternalPhase>,
    /// Called with the canary's namespace and name once this run holds its Lease, before it
    /// changes anything (GitHub keeps them in the step's state for the post step).
    pub started: Option<Started>,
}

/// See [`RunContext::started`].
pub type Started = Box<dyn FnOnce(&[(String, String)]) + Send>;

impl std::fmt::Debug for RunContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunContext")
            .field("log", &self.log)
            .field("phase", &self.phase)
            .field("started", &self.started.is_some())
            .finish()
    }
}

/// Refuses a Canary whose provider aviary does not route (knative, appmesh, apisix, ...), at the
/// line of its `spec.provider`, with what to use instead: the decoder's warning about that line
/// (`warnings`), made an error.
fn refuse_unrouted(
    canary: &Canary,
    default_provider: &spec::Provider,
    warnings: &[spec::Diagnostic],
) -> Result<(), AppError> {
    let provider = canary.provider.as_ref().unwrap_or(default_provider);
    let spec::Provider::Other(name) = provider else {
        return Ok(());
    };
    // This Canary's warning: the first about its provider after the start of its document.
    let said = format!("aviary does not route provider {name}:");
    let warning = warnings
        .iter()
        .filter(|w| {
            w.file == canary.origin.file
                && w.line >= canary.origin.line
                && w.message.starts_with(&said)
        })
        .min_by_key(|w| w.line);
    let line = warning.map_or(canary.origin.line, |w| w.line);
    let mut error = spec::Diagnostic::error(
        &canary.origin.file,
        line,
        "spec.provider",
        format!(
            "aviary does not route provider {name}, so it cannot roll out {}",
            canary.qualified_name()
        ),
    );
    if let Some(help) = warning.and_then(|w| w.help.clone()) {
        error = error.with_help(help);
    }
    Err(spec::SpecError::Invalid {
        errors: vec![error],
        warnings: Vec::new(),
    }
    .into())
}

/// `aviary rollout`.
pub fn run(req: &request::Rollout) -> Result<Exit, AppError> {
    let result = run_rollout(req, RunContext::default());
    super::finish(result, req.report.as_deref(), "rollout")
}

/// Runs a rollout and reports it.
pub fn run_rollout(args: &request::Rollout, ctx: RunContext) -> Result<Report, AppError> {
    let provider = args.provider.clone();
    // A rendered target (its objects are applied first; Cloud Deploy brings it rendered), or a
    // Canary file.
    let rendered = match &args.canary {
        CanarySource::Rendered(pre) => Some(pre.clone()),
        CanarySource::Target(target) => {
            let opts = aviary_kube::render::options(target, &args.source)?;
            let rendered = aviary_kube::render::render(&opts)?;
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
        CanarySource::File(_) => None,
    };
    let (docs, label, objects) = match (rendered, &args.canary) {
        (Some(pre), _) => (
            spec::load_str(&pre.label, &aviary_kube::render::to_yaml(&pre.canary_docs))?,
            pre.label,
            Some((pre.target, pre.objects)),
        ),
        (None, CanarySource::File(file)) => (
            aviary_kube::files::load_spec_file(file)?,
            file.display().to_string(),
            None,
        ),
        (None, _) => {
            return Err(AppError::input("a rollout needs a Canary file or a target")
                .with_help("for example: aviary rollout --target prod"))
        }
    };
    let templates = docs.templates.clone();
    // The decoder's warnings about `spec.provider`: a provider aviary does not route is refused
    // below at that line.
    let provider_warnings: Vec<spec::Diagnostic> = docs
        .warnings
        .iter()
        .filter(|w| w.path == "spec.provider")
        .cloned()
        .collect();
    if args.name.is_none() && docs.canaries.len() > 1 {
        let canaries = super::all_canaries(docs, &label, args.namespace.as_deref());
        return run_release(args, ctx, canaries, templates, &provider_warnings, objects);
    }
    let mut canary = super::pick_canary(
        docs,
        &label,
        args.name.as_deref(),
        args.namespace.as_deref(),
    )?;
    let timeout = args.timeout;
    // Every event of the run carries the canary (JSON logs: `span`/`spans`); the runner records
    // the revision once it has read it.
    let span = tracing::info_span!(
        "rollout",
        canary = %canary.name,
        namespace = tracing::field::Empty,
        revision = tracing::field::Empty,
    );
    check_canary(&canary, &templates, args, &provider, &provider_warnings)?;
    let log = ctx.log.clone();
    let started = ctx.started;
    let target = objects.as_ref().map(|(t, _)| t.clone());
    let prometheus_auth = prometheus_auth(args);
    let options = Options {
        provider: provider.clone(),
        poll: Duration::from_millis(500),
        templates,
        prometheus: args.prometheus.url.clone(),
        prometheus_auth,
        log: log.clone(),
        phase: ctx.phase,
        release: None,
        controls: None,
        http: aviary_kube::http::Clients::default(),
    };
    let rt = runtime()?;
    let outcome = rt.block_on(tracing::Instrument::instrument(
        async {
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
            tracing::Span::current().record("namespace", canary.namespace.as_str());
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
            if let Some(started) = started {
                started(&[(canary.namespace.clone(), canary.name.clone())]);
            }
            tracing::info!(
                "rolling out {} (lease holder {})",
                canary.qualified_name(),
                lease.identity()
            );
            let run = async {
                if let Some((target, objects)) = objects {
                    match stop
                        .guard(apply_for_rollout(
                            &client,
                            std::slice::from_ref(&canary),
                            &canary.namespace,
                            &target,
                            objects,
                        ))
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
            release_leases(vec![lease]).await;
            Ok::<_, AppError>((outcome?, canary))
        },
        span,
    ))?;
    let (outcome, canary) = outcome;
    let report = outcome_report(outcome, &log, &canary, &provider, target);
    log_verdict(&report);
    Ok(report)
}

/// A release of several canaries (every Canary of the file or rendered target): all checked
/// before anything changes, every Lease taken before anything is applied (one held elsewhere:
/// exit 4, nothing changed), the target applied once, then every canary driven at once by its
/// own runner under `args.policy`; one report with each canary's.
fn run_release(
    args: &request::Rollout,
    ctx: RunContext,
    mut canaries: Vec<Canary>,
    templates: Vec<spec::MetricTemplate>,
    provider_warnings: &[spec::Diagnostic],
    objects: Option<(String, Vec<serde_json::Value>)>,
) -> Result<Report, AppError> {
    let provider = args.provider.clone();
    for canary in &canaries {
        check_canary(canary, &templates, args, &provider, provider_warnings)?;
    }
    let policy = args.policy;
    let target = objects.as_ref().map(|(t, _)| t.clone());
    let prometheus_auth = prometheus_auth(args);
    let rt = runtime()?;
    let ended = rt.block_on(async {
        // From here on a signal or the time limit stops the command wherever it is.
        let started_at = tokio::time::Instant::now();
        let mut stop = runner::Stop::new(args.timeout)?;
        let stopped_before = |reason, canaries: Vec<Canary>| {
            let outcome = stopped_early(reason)?;
            Ok::<_, AppError>(
                canaries
                    .into_iter()
                    .map(|c| (c, Ok(outcome.clone()), Log::default()))
                    .collect::<Vec<_>>(),
            )
        };
        let (client, default_ns) = match stop.guard(connect(&args.cluster)).await {
            Ok(connected) => connected?,
            Err(reason) => return stopped_before(reason, canaries),
        };
        for canary in &mut canaries {
            if !canary.namespace_explicit && args.namespace.is_none() {
                canary.namespace = default_ns.clone();
            }
        }
        canaries.sort_by_key(|c| c.qualified_name());
        let names: Vec<String> = canaries.iter().map(|c| c.qualified_name()).collect();
        tracing::info!(
            "releasing {} canaries at once ({}), verdict policy {policy}",
            canaries.len(),
            names.join(", ")
        );
        // Every Lease first: a release that cannot have one of them changes nothing (exit 4),
        // not even the Deployments of the others.
        let me = Holder::this_process(&|k| std::env::var(k).ok());
        let (leases, refused) = match stop.guard(acquire_leases(&client, &canaries, &me)).await {
            Ok(taken) => taken,
            Err(reason) => return stopped_before(reason, canaries),
        };
        if let Some(e) = refused {
            release_leases(leases).await;
            return Err(AppError::from(RunError::from(e)));
        }
        if let Some(started) = ctx.started {
            // The post step of a GitHub job rolls back every canary of the release.
            let held: Vec<(String, String)> = canaries
                .iter()
                .map(|c| (c.namespace.clone(), c.name.clone()))
                .collect();
            started(&held);
        }
        if let Some((target, objects)) = objects {
            let ns = args.namespace.clone().unwrap_or_else(|| default_ns.clone());
            match stop
                .guard(apply_for_rollout(&client, &canaries, &ns, &target, objects))
                .await
            {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    release_leases(leases).await;
                    return Err(e);
                }
                Err(reason) => {
                    release_leases(leases).await;
                    return stopped_before(reason, canaries);
                }
            }
        }
        drop(stop);
        // The release's schedule starts with the command: its ticks keep to a grid from here.
        let release = runner::Release::new(policy, names.clone()).since(started_at);
        // One reader of every canary's `aviary abort`/`promote` requests for the release.
        let controls = runner::Controls::start(
            client.clone(),
            canaries.iter().map(|c| c.namespace.clone()).collect(),
            Duration::from_millis(500),
        );
        let left = args.timeout.map(|t| t.saturating_sub(started_at.elapsed()));
        // Two HTTP clients for every canary's metrics and webhooks, not three per canary.
        let http = aviary_kube::http::Clients::default();
        // In a terminal, one live line per canary.
        let progress = crate::progress::Release::start(&names, crate::logging::human());
        let runs = canaries
            .into_iter()
            .zip(leases)
            .enumerate()
            .map(|(i, (canary, lease))| {
                let log = Log::default();
                if let Some(progress) = &progress {
                    progress.follow(i, &log);
                }
                let options = Options {
                    provider: provider.clone(),
                    poll: Duration::from_millis(500),
                    templates: templates.clone(),
                    prometheus: args.prometheus.url.clone(),
                    prometheus_auth: prometheus_auth.clone(),
                    log: log.clone(),
                    phase: ctx.phase,
                    release: Some(release.clone()),
                    controls: Some(controls.clone()),
                    http: http.clone(),
                };
                let client = client.clone();
                let qualified = canary.qualified_name();
                let span = tracing::info_span!(
                    "rollout",
                    canary = %canary.name,
                    namespace = %canary.namespace,
                    revision = tracing::field::Empty,
                );
                let run = async move {
                    let outcome = match runner::Stop::new(left) {
                        Ok(mut stop) => {
                            stop.watch_lease(lease.keep());
                            tracing::info!(
                                "rolling out {} (lease holder {})",
                                canary.qualified_name(),
                                lease.identity()
                            );
                            let outcome =
                                runner::rollout(client, canary.clone(), options, &mut stop).await;
                            drop(stop);
                            outcome
                        }
                        Err(e) => Err(e),
                    };
                    release_leases(vec![lease]).await;
                    (canary, outcome.map_err(AppError::from), log)
                };
                let member = tracing::info_span!("canary", name = %qualified);
                tracing::Instrument::instrument(tracing::Instrument::instrument(run, span), member)
            });
        let mut set = tokio::task::JoinSet::new();
        for (i, run) in runs.enumerate() {
            set.spawn(async move { (i, run.await) });
        }
        let mut ended = Vec::new();
        while let Some(joined) = set.join_next().await {
            match joined {
                Ok(one) => {
                    if let Some(progress) = &progress {
                        progress.ended(one.0);
                    }
                    ended.push(one);
                }
                Err(e) => return Err(AppError::Runtime(format!("a canary's runner failed: {e}"))),
            }
        }
        // The live lines stop here, before the verdicts are logged.
        drop(progress);
        ended.sort_by_key(|(i, _)| *i);
        Ok(ended.into_iter().map(|(_, one)| one).collect())
    })?;
    let members: Vec<Report> = ended
        .into_iter()
        .map(|(canary, outcome, log)| {
            let report = match outcome {
                Ok(outcome) => outcome_report(outcome, &log, &canary, &provider, target.clone()),
                Err(e) => {
                    e.report();
                    let mut report = super::failed_report(&e, "rollout");
                    report.canary = Some(canary.qualified_name());
                    report.target = target.clone();
                    report
                }
            };
            log_verdict(&report);
            report
        })
        .collect();
    let mut report = Report::release(policy.as_str(), members);
    report.command = Some("rollout".into());
    report.target = target;
    log_verdict(&report);
    Ok(report)
}

/// How many Leases a release asks for at once.
const LEASES_AT_ONCE: usize = 16;

/// Takes the Lease of every canary, [`LEASES_AT_ONCE`] at a time in name order: the Leases
/// taken (in the order of `canaries`, all of them when nothing was refused) and the refusal
/// of the first canary, in name order, whose Lease could not be had. Once one is refused no
/// other is asked for; the caller gives back the ones taken.
async fn acquire_leases(
    client: &kube::Client,
    canaries: &[Canary],
    me: &Holder,
) -> (Vec<LeaseGuard>, Option<aviary_kube::lease::LockError>) {
    // One LIST for the decisions (each write is still conditional on what was read).
    let namespaces = canaries.iter().map(|c| c.namespace.clone()).collect();
    let mut listed = aviary_kube::lease::list_leases(client, &namespaces).await;
    let mut set = tokio::task::JoinSet::new();
    let mut taken: Vec<(usize, LeaseGuard)> = Vec::new();
    let mut refused: Option<(usize, aviary_kube::lease::LockError)> = None;
    let mut next = 0;
    loop {
        while refused.is_none() && next < canaries.len() && set.len() < LEASES_AT_ONCE {
            let (client, me) = (client.clone(), me.clone());
            let (namespace, name) = (
                canaries[next].namespace.clone(),
                canaries[next].name.clone(),
            );
            // Only a listed Lease saves its read: one the LIST did not show may still exist
            // (made without aviary's label), and is read on its own.
            let read = listed.as_mut().and_then(|leases| {
                leases.remove(&(
                    namespace.clone(),
                    aviary_core::spec::state_object_name(&name),
                ))
            });
            let i = next;
            set.spawn(async move {
                let acquired = LeaseGuard::acquire_read(client, &namespace, &name, &me, read);
                (i, acquired.await)
            });
            next += 1;
        }
        let Some(joined) = set.join_next().await else {
            break;
        };
        match joined {
            Ok((i, Ok(lease))) => taken.push((i, lease)),
            Ok((i, Err(e))) => {
                if !matches!(&refused, Some((first, _)) if *first <= i) {
                    refused = Some((i, e));
                }
            }
            Err(e) => {
                // A task that panicked: the canary it was for counts as refused.
                let e = aviary_kube::lease::LockError::Cluster(
                    aviary_kube::cluster::ClusterError::Invalid(format!(
                        "taking a Lease failed: {e}"
                    )),
                );
                refused = refused.or(Some((usize::MAX, e)));
            }
        }
    }
    taken.sort_by_key(|(i, _)| *i);
    (
        taken.into_iter().map(|(_, lease)| lease).collect(),
        refused.map(|(_, e)| e),
    )
}

/// Gives up `leases` (each within 5 s; one not released expires by itself).
async fn release_leases(leases: Vec<LeaseGuard>) {
    for lease in leases {
        match tokio::time::timeout(Duration::from_secs(5), lease.release()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!("could not release the lease: {e}"),
            Err(_) => tracing::warn!("could not release the lease in time; it expires by itself"),
        }
    }
}

/// Everything about `canary` that can be refused before anything changes (exit 2): the
/// addresses it would call, what a router needs, a provider aviary does not route.
fn check_canary(
    canary: &Canary,
    templates: &[spec::MetricTemplate],
    args: &request::Rollout,
    provider: &spec::Provider,
    provider_warnings: &[spec::Diagnostic],
) -> Result<(), AppError> {
    // Every address the run would call, checked before anything changes (exit 2).
    aviary_core::addresses::check_addresses(canary, templates, args.prometheus.url.as_deref())
        .map_err(|errors| spec::SpecError::Invalid {
            errors,
            warnings: Vec::new(),
        })?;
    // What Flagger's CRD lets a Canary leave out and a router needs (spec.service), exit 2.
    let missing = spec::check_runnable(canary, provider);
    if !missing.is_empty() {
        return Err(spec::SpecError::Invalid {
            errors: missing,
            warnings: Vec::new(),
        }
        .into());
    }
    // A provider aviary does not route, or a route it cannot attach: refused before anything
    // changes (exit 2). A provider routed with an HTTPRoute where Flagger writes another object
    // is said once.
    refuse_unrouted(canary, provider, provider_warnings)?;
    let routed_by = canary.provider.as_ref().unwrap_or(provider);
    // Preview hosts the provider cannot route: the rollout goes on without them, said once.
    if let Some((problem, fix)) = spec::preview_gap(&canary.service, routed_by) {
        tracing::warn!("{}: {problem}; {fix}", canary.qualified_name());
    }
    match aviary_kube::routing::preflight(canary, routed_by) {
        Ok(Some(line)) => tracing::warn!("{line}"),
        Ok(None) => {}
        Err(errors) => {
            return Err(spec::SpecError::Invalid {
                errors,
                warnings: Vec::new(),
            }
            .into())
        }
    }
    Ok(())
}

/// The credentials for `--prometheus-url`.
fn prometheus_auth(args: &request::Rollout) -> aviary_kube::metrics::Auth {
    match (
        &args.prometheus.token,
        &args.prometheus.username,
        &args.prometheus.password,
    ) {
        (Some(token), _, _) if !token.is_empty() => {
            aviary_kube::metrics::Auth::Bearer(token.clone())
        }
        (_, Some(username), Some(password)) if !username.is_empty() && !password.is_empty() => {
            aviary_kube::metrics::Auth::Basic {
                username: username.clone(),
                password: password.clone(),
            }
        }
        _ => aviary_kube::metrics::Auth::None,
    }
}

/// The report of one canary's run that ended with `outcome`.
fn outcome_report(
    outcome: Outcome,
    log: &Log,
    canary: &Canary,
    provider: &spec::Provider,
    target: Option<String>,
) -> Report {
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
    let config = aviary_core::engine::Config::from_canary(canary, provider);
    report.command = Some("rollout".into());
    report.canary = Some(canary.qualified_name());
    report.target = target;
    report.threshold = Some(config.threshold);
    report.exit(exit)
}

/// Logs a report's verdict, as a warning when it is not a success.
fn log_verdict(report: &Report) {
    match report.verdict {
        Verdict::RolledBack | Verdict::Cancelled | Verdict::NoVerdict | Verdict::Failed => {
            tracing::warn!(
                "verdict: {} ({})",
                report.verdict.human(),
                report.headline()
            )
        }
        _ => tracing::info!(
            "verdict: {} ({})",
            report.verdict.human(),
            report.headline()
        ),
    }
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

/// Applies a rendered target before its rollout: everything, each canary's target Deployment
/// included (that is how the new revision arrives), and waits for the other workloads. Once a
/// primary exists, a target keeps the replica count the rollout left it with (zero between
/// releases), so re-applying an unchanged revision does not wake its canary up. `ns` is the
/// namespace of objects that name none.
async fn apply_for_rollout(
    client: &kube::Client,
    canaries: &[Canary],
    ns: &str,
    target: &str,
    mut objects: Vec<serde_json::Value>,
) -> Result<(), AppError> {
    use k8s_openapi::api::apps::v1::Deployment;
    let cluster_err = |e: kube::Error| {
        AppError::from(RunError::Cluster(ClusterError::api("read the primary", e)))
    };
    for canary in canaries {
        let cns = canary.namespace.as_str();
        let deployments: kube::Api<Deployment> = kube::Api::namespaced(client.clone(), cns);
        let primary = format!("{}-primary", canary.target_ref.name);
        let has_primary = deployments
            .get_opt(&primary)
            .await
            .map_err(cluster_err)?
            .is_some();
        if !has_primary {
            continue;
        }
        let is_target = |o: &serde_json::Value| {
            o["kind"] == "Deployment"
                && o["metadata"]["name"] == canary.target_ref.name.as_str()
                && o["metadata"]["namespace"].as_str().unwrap_or(ns) == cns
        };
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
    let applied = deploy::apply_objects(client, &objects, ns, target)
        .await
        .map_err(|e| AppError::from(RunError::Cluster(e)))?;
    let others: Vec<_> = applied
        .into_iter()
        .filter(|k| {
            !canaries
                .iter()
                .any(|c| k.kind == "Deployment" && k.name == c.target_ref.name)
        })
        .collect();
    deploy::wait_for_rollouts(client, &others, Duration::from_secs(300)).await?;
    Ok(())
}
