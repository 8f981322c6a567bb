//! Cloud Deploy custom target: aviary as the render and deploy actions of a `CustomTargetType`.
//!
//! Cloud Deploy runs the container in Cloud Build with `CLOUD_DEPLOY_REQUEST_TYPE` RENDER or
//! DEPLOY, GCS paths for what to read and where to write, and deploy parameters
//! `customTarget/<key>` as `CLOUD_DEPLOY_customTarget_<key>`. Each action uploads
//! `<CLOUD_DEPLOY_OUTPUT_GCS_PATH>/results.json` — always, on failure too — before exiting.
//!
//! - RENDER fetches the release source (a tar.gz), renders the target with the Skaffold project in
//!   it, and uploads `manifest.yaml`: the objects, then the Canary documents.
//! - DEPLOY fetches that manifest and applies it; without a Canary it waits for the workloads, with
//!   one it runs the canary. For the `CANARY` feature (a `customCanaryDeployment`), each phase is
//!   one step of the canary: `canary-N` takes it to `CLOUD_DEPLOY_PERCENTAGE_DEPLOY` percent and
//!   analyses it there once, `stable` promotes it. Without the feature, `stable` runs the Canary's
//!   own schedule from start to verdict.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::gcs::{self, GsUrl};
use super::Env;
use crate::app::AppError;
use crate::cli::{ClusterArgs, DeployArgs, RenderSource, RolloutArgs};
use aviary_core::exit::Exit;
use aviary_core::report::{Report, Verdict};
use crate::rollout::{self, Prerendered, RunContext};
use aviary_kube::runner::ExternalPhase;

/// The features this custom target handles.
pub const SUPPORTED_FEATURES: &[&str] = &["CANARY"];

/// `results.json`, as Cloud Deploy reads it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Results {
    /// SUCCEEDED, FAILED, SKIPPED (deploy only) or NOT_SUPPORTED.
    pub result_status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub manifest_file: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub artifact_files: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure_message: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skip_message: Option<String>,
    pub metadata: BTreeMap<String, String>,
}

impl Results {
    fn new(status: &'static str) -> Results {
        let mut metadata = BTreeMap::new();
        metadata.insert(
            "custom-target-source".to_string(),
            format!("aviary {}", env!("CARGO_PKG_VERSION")),
        );
        Results {
            result_status: status,
            manifest_file: None,
            artifact_files: Vec::new(),
            failure_message: None,
            skip_message: None,
            metadata,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RequestType {
    Render,
    Deploy,
}

/// A Cloud Deploy request, read from its environment.
struct Request {
    kind: RequestType,
    features: Vec<String>,
    target: String,
    phase: String,
    percentage: u32,
    input: Option<GsUrl>,
    output: GsUrl,
    manifest: Option<GsUrl>,
    env: Box<Env>,
}

impl Request {
    fn var(env: &Env, name: &str) -> Option<String> {
        env(name)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    }

    /// Reads the request. An error here cannot be uploaded (there may be no output path): it is
    /// only logged.
    fn read(env: Box<Env>) -> Result<Request, AppError> {
        let var = |n: &str| Request::var(&*env, n);
        let need = |n: &str| {
            var(n).ok_or_else(|| {
                AppError::input(format!("{n} is not set"))
                    .with_help("`aviary cloud-deploy` runs as a Cloud Deploy custom target's render or deploy action, which sets it")
            })
        };
        let gs =
            |n: &str, v: String| GsUrl::parse(&v).map_err(|e| AppError::input(format!("{n}: {e}")));
        let output = gs(
            "CLOUD_DEPLOY_OUTPUT_GCS_PATH",
            need("CLOUD_DEPLOY_OUTPUT_GCS_PATH")?,
        )?;
        let kind = match need("CLOUD_DEPLOY_REQUEST_TYPE")?.as_str() {
            "RENDER" => RequestType::Render,
            "DEPLOY" => RequestType::Deploy,
            other => {
                return Err(AppError::input(format!(
                    "CLOUD_DEPLOY_REQUEST_TYPE: unknown request type {other:?}"
                ))
                .with_help("aviary handles RENDER and DEPLOY"))
            }
        };
        let percentage = match var("CLOUD_DEPLOY_PERCENTAGE_DEPLOY") {
            None => 100,
            Some(p) => p.parse::<u32>().ok().filter(|p| *p <= 100).ok_or_else(|| {
                AppError::input(format!(
                    "CLOUD_DEPLOY_PERCENTAGE_DEPLOY: expected a percentage 0-100, got {p:?}"
                ))
            })?,
        };
        if var("CLOUD_DEPLOY_STORAGE_TYPE").is_some_and(|t| t != "GCS") {
            return Err(AppError::input(
                "CLOUD_DEPLOY_STORAGE_TYPE: aviary reads and writes GCS paths only",
            ));
        }
        let input = match var("CLOUD_DEPLOY_INPUT_GCS_PATH") {
            Some(v) => Some(gs("CLOUD_DEPLOY_INPUT_GCS_PATH", v)?),
            None => None,
        };
        let manifest = match var("CLOUD_DEPLOY_MANIFEST_GCS_PATH") {
            Some(v) => Some(gs("CLOUD_DEPLOY_MANIFEST_GCS_PATH", v)?),
            None => None,
        };
        Ok(Request {
            kind,
            features: var("CLOUD_DEPLOY_FEATURES")
                .map(|f| {
                    f.split(',')
                        .map(|s| s.trim().to_string())
                        .filter(|s| !s.is_empty())
                        .collect()
                })
                .unwrap_or_default(),
            target: var("CLOUD_DEPLOY_TARGET").unwrap_or_else(|| "prod".into()),
            phase: var("CLOUD_DEPLOY_PHASE").unwrap_or_else(|| "stable".into()),
            percentage,
            input,
            output,
            manifest,
            env,
        })
    }

    /// A deploy parameter `customTarget/<key>`.
    fn param(&self, key: &str) -> Option<String> {
        Request::var(&*self.env, &format!("CLOUD_DEPLOY_customTarget_{key}"))
    }

    fn canary(&self) -> bool {
        self.features.iter().any(|f| f == "CANARY")
    }
}

/// A private scratch directory (0700, created new, never reused), removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(what: &str) -> Result<Scratch, AppError> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let dir =
            std::env::temp_dir().join(format!("aviary-{what}-{}-{nanos}", std::process::id()));
        let mut builder = std::fs::DirBuilder::new();
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        // `create`, not `create_all`: a directory someone prepared under that name is refused.
        builder.create(&dir).map_err(|e| {
            AppError::Output(std::io::Error::new(
                e.kind(),
                format!("{}: {e}", dir.display()),
            ))
        })?;
        Ok(Scratch(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A secret file (a kubeconfig fetched from GCS) that the kube client reads by path.
///
/// On Linux it never touches a disk: it is an anonymous in-memory file (`memfd_create`) read
/// through `/proc/self/fd/N`, which only this process (and root) can open, and which the kernel
/// frees however the process ends, SIGKILL included. Elsewhere, or where memfd is not available,
/// it is a 0600 file in a fresh 0700 directory, removed when dropped (every return and error
/// path, and SIGTERM/SIGINT, which the runner turns into a return).
struct SecretFile {
    path: PathBuf,
    /// Keeps the memfd open (its path lives as long as the descriptor).
    _file: Option<std::fs::File>,
    _dir: Option<Scratch>,
}

impl SecretFile {
    fn new(name: &str, data: &[u8]) -> Result<SecretFile, AppError> {
        #[cfg(target_os = "linux")]
        match SecretFile::in_memory(name, data) {
            Ok(f) => return Ok(f),
            Err(e) => tracing::debug!(
                "no in-memory file for the {name} ({e}); using a private temporary file"
            ),
        }
        SecretFile::on_disk(name, data)
    }

    #[cfg(target_os = "linux")]
    fn in_memory(name: &str, data: &[u8]) -> std::io::Result<SecretFile> {
        use std::io::Write;
        use std::os::fd::{AsRawFd, FromRawFd};
        use std::os::unix::fs::PermissionsExt;
        let cname = std::ffi::CString::new(format!("aviary-{name}"))
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        // SAFETY: `cname` is a valid NUL-terminated string; the descriptor returned is new and
        // owned by the `File` made from it right away.
        let fd = unsafe { libc::memfd_create(cname.as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `fd` is a valid descriptor that nothing else owns.
        let mut file = unsafe { std::fs::File::from_raw_fd(fd) };
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        file.write_all(data)?;
        let path = PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()));
        // Readable through its path (a /proc that is mounted), with what was written.
        if std::fs::read(&path)? != data {
            return Err(std::io::Error::other(
                "the in-memory file reads back differently",
            ));
        }
        Ok(SecretFile {
            path,
            _file: Some(file),
            _dir: None,
        })
    }

    fn on_disk(name: &str, data: &[u8]) -> Result<SecretFile, AppError> {
        use std::io::Write;
        let dir = Scratch::new(name)?;
        let path = dir.0.join(name);
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let written = options
            .open(&path)
            .and_then(|mut f| f.write_all(data).and_then(|()| f.sync_all()));
        written.map_err(|e| {
            AppError::Output(std::io::Error::new(
                e.kind(),
                format!("{}: {e}", path.display()),
            ))
        })?;
        Ok(SecretFile {
            path,
            _file: None,
            _dir: Some(dir),
        })
    }
}

/// A GCS failure: the machine's, not the input's (exit 3); the message names the object and why.
fn gcs_error(e: gcs::GcsError) -> AppError {
    AppError::Runtime(e.to_string())
}

/// `aviary cloud-deploy`: one render or deploy action.
pub fn run(env: Box<Env>) -> Result<Exit, AppError> {
    let rt = rollout::runtime()?;
    // A request that cannot be read still gets its FAILED results.json when it says where to.
    let output =
        Request::var(&*env, "CLOUD_DEPLOY_OUTPUT_GCS_PATH").and_then(|v| GsUrl::parse(&v).ok());
    let req = match Request::read(env) {
        Ok(req) => req,
        Err(e) => {
            if let Some(output) = output {
                let mut results = Results::new("FAILED");
                results.failure_message = Some(e.to_string());
                upload_results(&rt, &output, &results);
            }
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
    let unsupported: Vec<&String> = req
        .features
        .iter()
        .filter(|f| !SUPPORTED_FEATURES.contains(&f.as_str()))
        .collect();
    let (results, report, exit) = if !unsupported.is_empty() {
        let names: Vec<&str> = unsupported.iter().map(|s| s.as_str()).collect();
        let message = format!(
            "aviary does not support the Cloud Deploy feature(s) {}; it supports {}",
            names.join(", "),
            SUPPORTED_FEATURES.join(", ")
        );
        tracing::error!("{message}");
        let mut results = Results::new("NOT_SUPPORTED");
        results.failure_message = Some(message.clone());
        let mut report = Report::new(Verdict::Failed);
        report.message = Some(message);
        (
            results,
            Some(report.exit(Exit::InvalidInput)),
            Exit::InvalidInput,
        )
    } else {
        match req.kind {
            RequestType::Render => render(&req, &rt),
            RequestType::Deploy => deploy(&req, &rt),
        }
    };
    let results = match report {
        Some(mut report) => {
            report.host = Some("cloud-deploy".into());
            report.target = report.target.or_else(|| Some(req.target.clone()));
            let url = req.output.join("aviary-report.json");
            let mut results = results;
            match serde_json::to_vec_pretty(&report) {
                Ok(body) => match rt.block_on(gcs::put(&url, body)) {
                    Ok(()) => results.artifact_files.push(url.to_string()),
                    Err(e) => tracing::warn!("could not upload the report: {e}"),
                },
                Err(e) => tracing::warn!("could not encode the report: {e}"),
            }
            results
        }
        None => results,
    };
    if !upload_results(&rt, &req.output, &results) {
        return Ok(if exit == Exit::Success {
            Exit::Runtime
        } else {
            exit
        });
    }
    Ok(exit)
}

/// Uploads `<output>/results.json`; false (logged) when it could not.
fn upload_results(rt: &tokio::runtime::Runtime, output: &GsUrl, results: &Results) -> bool {
    let url = output.join("results.json");
    let uploaded = serde_json::to_vec_pretty(results)
        .map_err(|e| e.to_string())
        .and_then(|body| rt.block_on(gcs::put(&url, body)).map_err(|e| e.to_string()));
    match uploaded {
        Ok(()) => {
            tracing::info!("{url}: {}", results.result_status);
            true
        }
        Err(e) => {
            tracing::error!("could not upload {url}: {e}; Cloud Deploy will see no result");
            false
        }
    }
}

/// The Results and exit code of an action that failed with `err`.
fn failed(err: AppError, command: &str) -> (Results, Option<Report>, Exit) {
    err.report();
    let report = rollout::failed_report(&err, command);
    let mut results = Results::new("FAILED");
    results.failure_message = report.message.clone();
    let exit = err.exit();
    (results, Some(report), exit)
}

fn render(req: &Request, rt: &tokio::runtime::Runtime) -> (Results, Option<Report>, Exit) {
    match try_render(req, rt) {
        Ok((results, report)) => (results, Some(report), Exit::Success),
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
        .block_on(gcs::get(input, "release source", gcs::SOURCE_MAX))
        .map_err(gcs_error)?;
    let scratch = Scratch::new("render")?;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(&source[..]));
    // `unpack` refuses entries that would land outside the directory.
    archive.unpack(&scratch.0).map_err(|e| {
        AppError::input(format!("{input}: not a tar.gz release source: {e}"))
            .with_help("Cloud Deploy uploads the release's --source directory as a tar.gz")
    })?;
    let skaffold_file = scratch.0.join(
        req.param("skaffoldFile")
            .unwrap_or_else(|| "skaffold.yaml".into()),
    );
    let render_source = RenderSource {
        skaffold_file,
        profile: req.param("profile"),
        images: req
            .param("images")
            .map(|s| s.split(',').map(|i| i.trim().to_string()).collect())
            .unwrap_or_default(),
        build_artifacts: req.param("buildArtifacts").map(|p| scratch.0.join(p)),
    };
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
    rt.block_on(gcs::put(&manifest, text.into_bytes()))
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

fn deploy(req: &Request, rt: &tokio::runtime::Runtime) -> (Results, Option<Report>, Exit) {
    let report = match try_deploy(req, rt) {
        Ok(report) => report,
        Err(e) => return failed(e, "cloud-deploy deploy"),
    };
    let exit = rollout::exit_of(&report);
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
    (results, Some(report), exit)
}

fn try_deploy(req: &Request, rt: &tokio::runtime::Runtime) -> Result<Report, AppError> {
    let manifest_url = req.manifest.as_ref().ok_or_else(|| {
        AppError::input("CLOUD_DEPLOY_MANIFEST_GCS_PATH is not set: there is no manifest to deploy")
    })?;
    let text = rt
        .block_on(gcs::get(manifest_url, "manifest", gcs::MANIFEST_MAX))
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
                .block_on(gcs::get(&url, "kubeconfig", gcs::KUBECONFIG_MAX))
                .map_err(gcs_error)?;
            let file = SecretFile::new("kubeconfig", &body)?;
            (Some(file.path.clone()), Some(file))
        }
        Some(k) => (Some(PathBuf::from(k)), None),
        None => (None, None),
    };
    let cluster = ClusterArgs {
        kubeconfig,
        context: req.param("kubeContext"),
        request_timeout: "15s".into(),
    };
    let namespace = req.param("namespace");
    let unused_source = || RenderSource {
        skaffold_file: Path::new("skaffold.yaml").to_path_buf(),
        profile: None,
        images: Vec::new(),
        build_artifacts: None,
    };
    if canary_docs.is_empty() {
        let args = DeployArgs {
            target: req.target.clone(),
            source: unused_source(),
            namespace,
            cluster,
            timeout: req.param("timeout").unwrap_or_else(|| "5m".into()),
            prune: false,
            report: None,
        };
        let mut report = rollout::deploy_objects(&args, objects, Vec::new())?;
        report.command = Some("cloud-deploy deploy".into());
        return Ok(report);
    }
    let phase = if !req.canary() {
        None
    } else if req.phase == "stable" || req.percentage >= 100 {
        Some(ExternalPhase::Stable)
    } else {
        Some(ExternalPhase::Canary(req.percentage))
    };
    let args = RolloutArgs {
        file: None,
        target: Some(req.target.clone()),
        source: unused_source(),
        name: req.param("canary"),
        namespace,
        provider: req.param("provider").unwrap_or_else(|| "istio".into()),
        cluster,
        timeout: Some(req.param("timeout").unwrap_or_else(|| "30m".into())),
        prometheus_url: req
            .param("prometheusUrl")
            .or_else(|| std::env::var("AVIARY_PROMETHEUS_URL").ok()),
        prometheus_token: std::env::var("AVIARY_PROMETHEUS_TOKEN").ok(),
        prometheus_username: std::env::var("AVIARY_PROMETHEUS_USERNAME").ok(),
        prometheus_password: std::env::var("AVIARY_PROMETHEUS_PASSWORD").ok(),
        report: None,
    };
    let ctx = RunContext {
        phase,
        rendered: Some(Prerendered {
            label,
            target: req.target.clone(),
            objects,
            canary_docs,
        }),
        ..RunContext::default()
    };
    let mut report = rollout::run_rollout(&args, ctx)?;
    report.command = Some(format!("cloud-deploy deploy {}", req.phase));
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    const SECRET: &[u8] =
        b"apiVersion: v1\nkind: Config\nusers: [{name: u, user: {token: s3cr3t}}]\n";

    #[cfg(target_os = "linux")]
    #[test]
    fn a_secret_file_lives_in_memory_readable_only_by_its_path() {
        let file = match SecretFile::in_memory("kubeconfig", SECRET) {
            Ok(f) => f,
            Err(e) => panic!("{e}"),
        };
        assert!(
            file.path.starts_with("/proc/self/fd/"),
            "{}",
            file.path.display()
        );
        assert_eq!(std::fs::read(&file.path).ok().as_deref(), Some(SECRET));
        // Not a file on any disk: the descriptor points at an anonymous memfd.
        let target = std::fs::read_link(&file.path)
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        assert!(target.starts_with("/memfd:aviary-kubeconfig"), "{target}");
        let mode = std::fs::metadata(&file.path)
            .map(|m| m.permissions().mode() & 0o777)
            .unwrap_or(0);
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn the_fallback_is_a_private_file_in_a_private_directory_removed_on_drop() {
        let file = match SecretFile::on_disk("kubeconfig", SECRET) {
            Ok(f) => f,
            Err(e) => panic!("{e}"),
        };
        let mode = |p: &Path| {
            std::fs::metadata(p)
                .map(|m| m.permissions().mode() & 0o777)
                .unwrap_or(0)
        };
        let dir = file
            .path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        assert_eq!(mode(&file.path), 0o600);
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(std::fs::read(&file.path).ok().as_deref(), Some(SECRET));
        drop(file);
        assert!(!dir.exists(), "{} left behind", dir.display());
    }
}
