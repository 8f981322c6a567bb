//! `aviary cloud-deploy`: one render or deploy action of a Cloud Deploy custom target. The
//! request and `results.json` are `aviary_hosts::cloud_deploy`'s; this wires them to the render,
//! deploy and rollout commands.

use aviary_core::exit::Exit;
use aviary_core::report::{Report, Verdict};
use aviary_core::request;
use aviary_core::request::Prerendered;
use aviary_hosts::cloud_deploy::{
    CloudDeploy, Request, RequestType, Results, Scratch, SecretFile, SUPPORTED_FEATURES,
};
use aviary_hosts::gcs::{self, GsUrl};
use aviary_hosts::gke::{ClusterName, GkeAccess, GkeError};
use aviary_hosts::{Env, PipelineHost};
use aviary_kube::runner::ExternalPhase;
use aviary_kube::signals;

use super::rollout::{self, RunContext};
use super::AppError;

/// A GCS failure: the machine's, not the input's (exit 3); the message names the object and why.
fn gcs_error(e: gcs::GcsError) -> AppError {
    AppError::Runtime(e.to_string())
}

/// What must stay alive while the cluster is used: the fetched kubeconfig, or the GKE access.
/// Held, never read: dropping it frees the files (and stops the GKE token refresh).
#[allow(dead_code)]
enum Access {
    None,
    File(SecretFile),
    Gke(Box<GkeAccess>),
}

/// The cluster of the deploy parameters: `customTarget/gkeCluster` (endpoint, CA and the
/// execution service account's token), else `customTarget/kubeconfig` (a `gs://` URL, or a path
/// in the release source), else the environment's default kubeconfig.
fn cluster_access(
    req: &Request,
    rt: &tokio::runtime::Runtime,
    manifest_url: &GsUrl,
    manifest: &str,
) -> Result<(request::Cluster, Access), AppError> {
    let kubeconfig = req.param("kubeconfig");
    if let Some(name) = req.param("gkeCluster") {
        if kubeconfig.is_some() {
            return Err(AppError::input(
                "customTarget/gkeCluster and customTarget/kubeconfig are both set; aviary uses one",
            )
            .with_help("keep gkeCluster (a GKE cluster, reached as the execution service account) or kubeconfig"));
        }
        let name = ClusterName::parse(&name).map_err(gke_error)?;
        if req.param("kubeContext").is_some() {
            tracing::warn!("customTarget/kubeContext is ignored with customTarget/gkeCluster");
        }
        let access = GkeAccess::connect(rt, &req.gke(), &name, req.param("namespace").as_deref())
            .map_err(gke_error)?;
        let cluster = request::Cluster {
            kubeconfig: Some(access.kubeconfig.path.clone()),
            context: None,
            ..request::Cluster::default()
        };
        return Ok((cluster, Access::Gke(Box::new(access))));
    }
    let (path, access) = match kubeconfig {
        Some(k) if k.starts_with("gs://") => {
            let url = GsUrl::parse(&k)
                .map_err(|e| AppError::input(format!("customTarget/kubeconfig: {e}")))?;
            let body = rt
                .block_on(signals::guard(req.gcs().get(
                    &url,
                    "kubeconfig",
                    gcs::KUBECONFIG_MAX,
                )))?
                .map_err(gcs_error)?;
            let file = SecretFile::new("kubeconfig", &body)?;
            (Some(file.path.clone()), Access::File(file))
        }
        Some(k) => {
            let file = kubeconfig_in_source(req, rt, manifest_url, manifest, &k)?;
            (Some(file.path.clone()), Access::File(file))
        }
        None => (None, Access::None),
    };
    Ok((req.cluster(path), access))
}

fn gke_error(e: GkeError) -> AppError {
    if e.is_input() {
        AppError::input(e.to_string())
            .with_help("for example customTarget/gkeCluster: projects/my-project/locations/us-central1/clusters/prod")
    } else {
        AppError::Runtime(e.to_string())
    }
}

/// The release source of a deploy: named by the render on the manifest's first line, else
/// `CLOUD_DEPLOY_INPUT_GCS_PATH` when that is an archive.
fn release_source_of(req: &Request, manifest: &str) -> Option<GsUrl> {
    let marked = manifest
        .lines()
        .next()
        .and_then(|l| l.strip_prefix(SOURCE_MARK))
        .and_then(|u| GsUrl::parse(u.trim()).ok());
    marked.or_else(|| {
        req.input
            .clone()
            .filter(|u| u.path.ends_with(".tgz") || u.path.ends_with(".tar.gz"))
    })
}

/// `customTarget/kubeconfig` as a path in the release source: the source is fetched and unpacked
/// in a private scratch directory, the file read into memory, and the directory removed.
fn kubeconfig_in_source(
    req: &Request,
    rt: &tokio::runtime::Runtime,
    manifest_url: &GsUrl,
    manifest: &str,
    path: &str,
) -> Result<SecretFile, AppError> {
    let param = format!("customTarget/kubeconfig ({path})");
    let relative = std::path::Path::new(path);
    let inside = relative.components().all(|c| {
        matches!(
            c,
            std::path::Component::Normal(_) | std::path::Component::CurDir
        )
    });
    if !inside {
        return Err(AppError::input(format!(
            "{param}: not a path in the release source (it must be relative, without `..`)"
        ))
        .with_help("give the kubeconfig's path in the release source (k8s/kubeconfig), or a gs:// URL, or customTarget/gkeCluster"));
    }
    let source = release_source_of(req, manifest).ok_or_else(|| {
        AppError::input(format!(
            "{param}: a path in the release source, but {manifest_url} does not say where the \
             release source is (it was not rendered by aviary's render action)"
        ))
        .with_help("render the release with aviary's custom target, or give a gs:// URL")
    })?;
    let archive = rt
        .block_on(signals::guard(req.gcs().get(
            &source,
            "release source",
            gcs::SOURCE_MAX,
        )))?
        .map_err(|e| AppError::Runtime(format!("{param}: {e}")))?;
    let scratch = Scratch::new("source")?;
    aviary_hosts::cloud_deploy::unpack_source(&archive, &scratch.0).map_err(|e| {
        AppError::input(format!(
            "{param}: {source} is not a tar.gz release source: {e}"
        ))
    })?;
    let not_read = |why: String| {
        AppError::input(format!("{param}: cannot read it in the release source {source}: {why}"))
            .with_help("the path is relative to the directory given to `gcloud deploy releases create --source`")
    };
    // Through symlinks too, the file must be in the source.
    let file =
        std::fs::canonicalize(scratch.0.join(relative)).map_err(|e| not_read(e.to_string()))?;
    let root = std::fs::canonicalize(&scratch.0)?;
    if !file.starts_with(&root) {
        return Err(not_read("it is a link out of the release source".into()));
    }
    let body = aviary_kube::files::read_text(&file).map_err(|e| {
        not_read(match e {
            aviary_core::spec::input::ReadError::Io(e) => e.to_string(),
            aviary_core::spec::input::ReadError::TooLarge => "it is too large".into(),
            aviary_core::spec::input::ReadError::NotUtf8 { .. } => "it is not UTF-8 text".into(),
        })
    })?;
    Ok(SecretFile::new("kubeconfig", body.as_bytes())?)
}

/// The render's warning when no image was substituted (also in `results.json`'s metadata as
/// `aviary-warning`).
pub const NO_IMAGES: &str = "no image was substituted: neither customTarget/images nor \
    customTarget/buildArtifacts is set, so the workloads keep their images as written in the \
    manifests. `gcloud deploy releases create --images` does not reach a custom target's render; \
    set the deploy parameter customTarget/images (name=ref,...) on the target or with \
    `--deploy-parameters`, or customTarget/buildArtifacts (a `skaffold build --file-output` file \
    in the release source)";

/// The first line of a rendered manifest: where its release source is.
const SOURCE_MARK: &str = "# aviary-release-source: ";

/// `aviary cloud-deploy`: one render or deploy action.
pub fn run(env: Box<Env>) -> Result<Exit, AppError> {
    let rt = super::runtime()?;
    // A request that cannot be read still gets its FAILED results.json when it says where to.
    let fallback = CloudDeploy::fallback_output(&*env);
    let req = match Request::read(env).map_err(AppError::from) {
        Ok(req) => req,
        Err(e) => {
            CloudDeploy::fail_unread(fallback, &e.to_string());
            return Err(e);
        }
    };
    tracing::info!(
        "Cloud Deploy {} of target {} (phase {}, {}%){}",
        match req.kind {
            RequestType::Render => "render",
            RequestType::Deploy => "deploy",
        },
        req.target,
        req.phase,
        req.percentage,
        if req.features.is_empty() {
            String::new()
        } else {
            format!(", features {}", req.features.join(","))
        }
    );
    let unsupported = req.unsupported_features();
    let (results, report, exit) = if !unsupported.is_empty() {
        let message = format!(
            "aviary does not support the Cloud Deploy feature(s) {}; it supports {}",
            unsupported.join(", "),
            SUPPORTED_FEATURES.join(", ")
        );
        tracing::error!("{message}");
        let mut results = Results::new("NOT_SUPPORTED");
        results.failure_message = Some(message.clone());
        let mut report = Report::new(Verdict::Failed);
        report.message = Some(message);
        (results, report.exit(Exit::InvalidInput), Exit::InvalidInput)
    } else {
        match req.kind {
            RequestType::Render => render(&req, &rt),
            RequestType::Deploy => deploy(&req, &rt),
        }
    };
    let mut report = report;
    report.host = Some("cloud-deploy".into());
    report.target = report.target.or_else(|| Some(req.target.clone()));
    let mut host = CloudDeploy::new(req);
    host.set_results(results);
    let path = host.default_report();
    if host.finish(&report, &path).is_err() && exit == Exit::Success {
        return Ok(Exit::Runtime);
    }
    Ok(exit)
}

/// The Results and exit code of an action that failed with `err`.
fn failed(err: AppError, command: &str) -> (Results, Report, Exit) {
    err.report();
    let report = super::failed_report(&err, command);
    let mut results = Results::new("FAILED");
    results.failure_message = report.message.clone();
    let exit = err.exit();
    (results, report, exit)
}

fn render(req: &Request, rt: &tokio::runtime::Runtime) -> (Results, Report, Exit) {
    match try_render(req, rt) {
        Ok((results, report)) => (results, report, Exit::Success),
        Err(e) => failed(e, "cloud-deploy render"),
    }
}

fn try_render(req: &Request, rt: &tokio::runtime::Runtime) -> Result<(Results, Report), AppError> {
    let input = req.input.as_ref().ok_or_else(|| {
        AppError::input(
            "CLOUD_DEPLOY_INPUT_GCS_PATH is not set: there is no release source to render",
        )
    })?;
    let source = rt
        .block_on(signals::guard(req.gcs().get(
            input,
            "release source",
            gcs::SOURCE_MAX,
        )))?
        .map_err(gcs_error)?;
    let scratch = Scratch::new("render")?;
    aviary_hosts::cloud_deploy::unpack_source(&source, &scratch.0).map_err(|e| {
        AppError::input(format!("{input}: not a tar.gz release source: {e}"))
            .with_help("Cloud Deploy uploads the release's --source directory as a tar.gz")
    })?;
    let render_source = req.render_source(&scratch.0);
    let opts = aviary_kube::render::options(&req.target, &render_source)?;
    let mut rendered = aviary_kube::render::render(&opts)?;
    // `gcloud deploy releases create --images` never reaches a custom render: without the deploy
    // parameters below, nothing is substituted, and the workloads would run the images as written.
    let no_images = (render_source.images.is_empty() && render_source.build_artifacts.is_none())
        .then(|| NO_IMAGES.to_string());
    rendered.warnings.extend(no_images.clone());
    for w in &rendered.warnings {
        tracing::warn!("{w}");
    }
    // Where the release source is, for a deploy that reads a file of it (`customTarget/kubeconfig`
    // as a path): Cloud Deploy hands the deploy the manifest, not the source.
    let mut text = format!("{SOURCE_MARK}{input}\n");
    text.push_str(&aviary_kube::render::to_yaml(&rendered.objects));
    if !rendered.canary_docs.is_empty() {
        text.push_str(&aviary_kube::render::to_yaml(&rendered.canary_docs));
    }
    let manifest = req.output.join("manifest.yaml");
    rt.block_on(signals::guard(req.gcs().put(&manifest, text.into_bytes())))?
        .map_err(gcs_error)?;
    let canaries: Vec<String> = rendered
        .canary_docs
        .iter()
        .filter(|d| d["kind"] == "Canary")
        .filter_map(|d| d["metadata"]["name"].as_str().map(String::from))
        .collect();
    let mut results = Results::new("SUCCEEDED");
    results.manifest_file = Some(manifest.to_string());
    results
        .metadata
        .insert("aviary-objects".into(), rendered.objects.len().to_string());
    results
        .metadata
        .insert("aviary-release-source".into(), input.to_string());
    if let Some(w) = no_images {
        results.metadata.insert("aviary-warning".into(), w);
    }
    if !canaries.is_empty() {
        results
            .metadata
            .insert("aviary-canary".into(), canaries.join(","));
    }
    let mut report = Report::new(Verdict::Rendered);
    report.command = Some("cloud-deploy render".into());
    report.target = Some(req.target.clone());
    report.message = Some(format!(
        "rendered {} object(s) to {manifest}",
        rendered.objects.len()
    ));
    report.warnings = rendered.warnings;
    Ok((results, report.exit(Exit::Success)))
}

fn deploy(req: &Request, rt: &tokio::runtime::Runtime) -> (Results, Report, Exit) {
    let report = match try_deploy(req, rt) {
        Ok(report) => report,
        Err(e) => return failed(e, "cloud-deploy deploy"),
    };
    let exit = aviary_core::report::exit_of(&report);
    let skipped = match exit {
        Exit::Success => skip_message(req.external_phase(), &report),
        _ => None,
    };
    let mut results = Results::new(match (exit, &skipped) {
        (Exit::Success, Some(_)) => "SKIPPED",
        (Exit::Success, None) => "SUCCEEDED",
        _ => "FAILED",
    });
    if let Some(why) = skipped {
        tracing::info!("phase {} skipped: {why}", req.phase);
        results.skip_message = Some(why);
    }
    if exit != Exit::Success {
        results.failure_message = Some(report.headline());
    }
    let m = &mut results.metadata;
    m.insert("aviary-verdict".into(), report.verdict.as_str().into());
    m.insert(
        "aviary-canary-weight".into(),
        report.canary_weight.to_string(),
    );
    m.insert(
        "aviary-failed-checks".into(),
        report.failed_checks.to_string(),
    );
    if !report.failed_metrics.is_empty() {
        m.insert(
            "aviary-failed-metrics".into(),
            report.failed_metrics.join(","),
        );
    }
    if let Some(c) = &report.canary {
        m.insert("aviary-canary".into(), c.clone());
    }
    if !report.canaries.is_empty() {
        m.insert("aviary-canaries".into(), report.canaries_line());
    }
    (results, report, exit)
}

/// Why a canary phase (`canary-N` of a `customCanaryDeployment`) that ended well did not do what
/// the phase is for, moving the canary to N%: the run only bootstrapped the primary (the Canary's
/// first rollout: there is no canary yet), the target already runs this release (nothing to
/// shift), or the manifest has no Canary (its objects are applied by the `stable` phase). Cloud
/// Deploy is told SKIPPED then. The `stable` phase always did its work (a bootstrap is the
/// deploy), and is never skipped.
fn skip_message(phase: Option<ExternalPhase>, report: &Report) -> Option<String> {
    let Some(ExternalPhase::Canary(weight)) = phase else {
        return None;
    };
    if !report.canaries.is_empty() {
        // A release of several canaries: its verdict is the least advanced of theirs, so each
        // of them was bootstrapped or already up to date.
        let names: Vec<&str> = report
            .canaries
            .iter()
            .filter_map(|c| c.canary.as_deref())
            .collect();
        let all = format!(
            "the {} canaries of the release ({})",
            names.len(),
            names.join(", ")
        );
        return match report.verdict {
            Verdict::Bootstrapped => Some(format!(
                "no canary of the release has an earlier release to compare ({all}: each was \
                 bootstrapped from this release or already runs it), so nothing was shifted to \
                 {weight}%"
            )),
            Verdict::UpToDate => Some(format!(
                "{all} already run this release; there is nothing to shift to {weight}%"
            )),
            _ => None,
        };
    }
    let canary = report.canary.as_deref().unwrap_or("the Canary");
    match report.verdict {
        Verdict::Bootstrapped => Some(format!(
            "first rollout of {canary}: its primary was created from this release and takes all \
             traffic; there is no earlier release to compare, so nothing was shifted to {weight}%"
        )),
        Verdict::UpToDate => Some(format!(
            "{canary} already runs this release; there is nothing to shift to {weight}%"
        )),
        Verdict::Deployed => Some(format!(
            "the manifest has no Canary, so there is no canary to take to {weight}%; the stable \
             phase applies it"
        )),
        _ => None,
    }
}

fn try_deploy(req: &Request, rt: &tokio::runtime::Runtime) -> Result<Report, AppError> {
    let manifest_url = req.manifest.as_ref().ok_or_else(|| {
        AppError::input("CLOUD_DEPLOY_MANIFEST_GCS_PATH is not set: there is no manifest to deploy")
    })?;
    let text = rt
        .block_on(signals::guard(req.gcs().get(
            manifest_url,
            "manifest",
            gcs::MANIFEST_MAX,
        )))?
        .map_err(gcs_error)?;
    let text = String::from_utf8_lossy(&text).into_owned();
    let label = manifest_url.to_string();
    let all = aviary_kube::render::manifests::parse_objects(&label, &text)?;
    let (canary_docs, objects): (Vec<_>, Vec<_>) = all
        .into_iter()
        .partition(aviary_kube::render::manifests::is_canary_doc);

    if canary_docs.is_empty() && matches!(req.external_phase(), Some(ExternalPhase::Canary(_))) {
        // Nothing for a canary phase to do (see `skip_message`); the stable phase applies it.
        let mut report = Report::new(Verdict::Deployed);
        report.command = Some(format!("cloud-deploy deploy {}", req.phase));
        report.message = Some("no Canary in the manifest: nothing to do in a canary phase".into());
        return Ok(report.exit(Exit::Success));
    }

    // `_access` lives until the function returns: the kube client reads the kubeconfig (and
    // the GKE token) by path while it runs.
    let (cluster, _access) = cluster_access(req, rt, manifest_url, &text)?;
    if canary_docs.is_empty() {
        let mut report = super::deploy::deploy_objects(&req.deploy(cluster)?, objects, Vec::new())?;
        report.command = Some("cloud-deploy deploy".into());
        return Ok(report);
    }
    let rendered = Prerendered {
        label,
        target: req.target.clone(),
        objects,
        canary_docs,
    };
    let ctx = RunContext {
        phase: req.external_phase(),
        ..RunContext::default()
    };
    let mut report = rollout::run_rollout(&req.rollout(rendered, cluster)?, ctx)?;
    report.command = Some(format!("cloud-deploy deploy {}", req.phase));
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(name: &str, verdict: Verdict) -> Report {
        let mut r = Report::new(verdict);
        r.canary = Some(name.to_string());
        r
    }

    /// A canary phase of a release whose canaries were all bootstrapped or already up to date
    /// is skipped, with a message that names every canary; one that moved a canary is not.
    #[test]
    fn a_release_that_shifted_nothing_skips_its_canary_phase_naming_every_canary() {
        let phase = Some(ExternalPhase::Canary(25));
        let both = Report::release(
            "all-or-nothing",
            vec![
                member("api.prod", Verdict::Bootstrapped),
                member("web.prod", Verdict::UpToDate),
            ],
        );
        let why = skip_message(phase, &both).unwrap_or_default();
        assert!(
            why.contains("the 2 canaries of the release (api.prod, web.prod)")
                && why.contains("25%")
                && !why.contains("the Canary"),
            "{why}"
        );
        let current = Report::release(
            "all-or-nothing",
            vec![
                member("api.prod", Verdict::UpToDate),
                member("web.prod", Verdict::UpToDate),
            ],
        );
        let why = skip_message(phase, &current).unwrap_or_default();
        assert!(why.contains("already run this release"), "{why}");
        let moved = Report::release(
            "all-or-nothing",
            vec![
                member("api.prod", Verdict::Advanced),
                member("web.prod", Verdict::UpToDate),
            ],
        );
        assert_eq!(skip_message(phase, &moved), None);
        assert_eq!(skip_message(Some(ExternalPhase::Stable), &both), None);
    }
}
