//! `aviary cloud-deploy`: one render or deploy action of a Cloud Deploy custom target. The
//! request and `results.json` are `aviary_hosts::cloud_deploy`'s; this wires them to the render,
//! deploy and rollout commands.

use std::path::PathBuf;

use aviary_core::exit::Exit;
use aviary_core::report::{Report, Verdict};
use aviary_core::request::Prerendered;
use aviary_hosts::cloud_deploy::{
    CloudDeploy, Request, RequestType, Results, Scratch, SecretFile, SUPPORTED_FEATURES,
};
use aviary_hosts::gcs::{self, GsUrl};
use aviary_hosts::{Env, PipelineHost};

use super::rollout::{self, RunContext};
use super::AppError;

/// A GCS failure: the machine's, not the input's (exit 3); the message names the object and why.
fn gcs_error(e: gcs::GcsError) -> AppError {
    AppError::Runtime(e.to_string())
}

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
        .block_on(req.gcs().get(input, "release source", gcs::SOURCE_MAX))
        .map_err(gcs_error)?;
    let scratch = Scratch::new("render")?;
    aviary_hosts::cloud_deploy::unpack_source(&source, &scratch.0).map_err(|e| {
        AppError::input(format!("{input}: not a tar.gz release source: {e}"))
            .with_help("Cloud Deploy uploads the release's --source directory as a tar.gz")
    })?;
    let render_source = req.render_source(&scratch.0);
    let opts = aviary_kube::render::options(&req.target, &render_source)?;
    let rendered = aviary_kube::render::render(&opts)?;
    for w in &rendered.warnings {
        tracing::warn!("{w}");
    }
    let mut text = aviary_kube::render::to_yaml(&rendered.objects);
    if !rendered.canary_docs.is_empty() {
        text.push_str(&aviary_kube::render::to_yaml(&rendered.canary_docs));
    }
    let manifest = req.output.join("manifest.yaml");
    rt.block_on(req.gcs().put(&manifest, text.into_bytes()))
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
    let mut results = Results::new(if exit == Exit::Success {
        "SUCCEEDED"
    } else {
        "FAILED"
    });
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
    (results, report, exit)
}

fn try_deploy(req: &Request, rt: &tokio::runtime::Runtime) -> Result<Report, AppError> {
    let manifest_url = req.manifest.as_ref().ok_or_else(|| {
        AppError::input("CLOUD_DEPLOY_MANIFEST_GCS_PATH is not set: there is no manifest to deploy")
    })?;
    let text = rt
        .block_on(req.gcs().get(manifest_url, "manifest", gcs::MANIFEST_MAX))
        .map_err(gcs_error)?;
    let text = String::from_utf8_lossy(&text).into_owned();
    let label = manifest_url.to_string();
    let all = aviary_kube::render::manifests::parse_objects(&label, &text)?;
    let (canary_docs, objects): (Vec<_>, Vec<_>) = all
        .into_iter()
        .partition(aviary_kube::render::manifests::is_canary_doc);

    // `_kubeconfig_file` lives until the function returns: the kube client reads the file by
    // path when it connects.
    let (kubeconfig, _kubeconfig_file) = match req.param("kubeconfig") {
        Some(k) if k.starts_with("gs://") => {
            let url = GsUrl::parse(&k)
                .map_err(|e| AppError::input(format!("customTarget/kubeconfig: {e}")))?;
            let body = rt
                .block_on(req.gcs().get(&url, "kubeconfig", gcs::KUBECONFIG_MAX))
                .map_err(gcs_error)?;
            let file = SecretFile::new("kubeconfig", &body)?;
            (Some(file.path.clone()), Some(file))
        }
        Some(k) => (Some(PathBuf::from(k)), None),
        None => (None, None),
    };
    let cluster = req.cluster(kubeconfig);
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
