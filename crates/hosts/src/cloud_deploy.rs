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

use super::gcs::{Gcs, GsUrl};
use super::{Env, FinishError, HostError, PipelineHost};
use aviary_core::request::{self, BadValue, CanarySource, Origin, Prerendered, RenderSource};
use aviary_kube::runner::ExternalPhase;

/// The features this custom target handles.
pub const SUPPORTED_FEATURES: &[&str] = &["CANARY"];

/// What an action answers, before it is written as `results.json` in the shape of its request
/// ([`Results::to_json`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Results {
    /// SUCCEEDED, FAILED, SKIPPED (deploy only) or NOT_SUPPORTED.
    pub result_status: &'static str,
    /// Render only (mandatory there).
    pub manifest_file: Option<String>,
    /// Deploy only.
    pub artifact_files: Vec<String>,
    pub failure_message: Option<String>,
    /// Deploy only, with SKIPPED.
    pub skip_message: Option<String>,
    pub metadata: BTreeMap<String, String>,
}

/// A render's `results.json`: `resultStatus`, `manifestFile`, `failureMessage`, `metadata` and
/// nothing else (Cloud Deploy's render contract, and the samples' `RenderResult`).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RenderResults<'a> {
    result_status: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    manifest_file: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    failure_message: Option<&'a str>,
    metadata: &'a BTreeMap<String, String>,
}

/// A deploy's `results.json`: `resultStatus`, `artifactFiles`, `failureMessage`, `skipMessage`,
/// `metadata` (Cloud Deploy's deploy contract, and the samples' `DeployResult`).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct DeployResults<'a> {
    result_status: &'a str,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    artifact_files: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    failure_message: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    skip_message: Option<&'a str>,
    metadata: &'a BTreeMap<String, String>,
}

/// The `results.json` of a request whose type is unknown: the fields both contracts share.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CommonResults<'a> {
    result_status: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    failure_message: Option<&'a str>,
    metadata: &'a BTreeMap<String, String>,
}

impl Results {
    pub fn new(status: &'static str) -> Results {
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

    /// `results.json` for a request of `kind` (`None`: a request that could not be read), with
    /// exactly the fields of that request's contract. A SKIPPED render (which the render contract
    /// does not have) is written as SUCCEEDED.
    pub fn to_json(&self, kind: Option<RequestType>) -> serde_json::Result<Vec<u8>> {
        let failure_message = self.failure_message.as_deref();
        let metadata = &self.metadata;
        match kind {
            Some(RequestType::Render) => serde_json::to_vec_pretty(&RenderResults {
                result_status: match self.result_status {
                    "SKIPPED" => "SUCCEEDED",
                    s => s,
                },
                manifest_file: self.manifest_file.as_deref(),
                failure_message,
                metadata,
            }),
            Some(RequestType::Deploy) => serde_json::to_vec_pretty(&DeployResults {
                result_status: self.result_status,
                artifact_files: &self.artifact_files,
                failure_message,
                skip_message: match self.result_status {
                    "SKIPPED" => self.skip_message.as_deref(),
                    _ => None,
                },
                metadata,
            }),
            None => serde_json::to_vec_pretty(&CommonResults {
                result_status: self.result_status,
                failure_message,
                metadata,
            }),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestType {
    Render,
    Deploy,
}

impl RequestType {
    /// `CLOUD_DEPLOY_REQUEST_TYPE`'s value; `None` for another.
    pub fn parse(value: &str) -> Option<RequestType> {
        match value {
            "RENDER" => Some(RequestType::Render),
            "DEPLOY" => Some(RequestType::Deploy),
            _ => None,
        }
    }
}

/// A Cloud Deploy request, read from its environment.
pub struct Request {
    pub kind: RequestType,
    pub features: Vec<String>,
    pub target: String,
    pub phase: String,
    pub percentage: u32,
    pub input: Option<GsUrl>,
    pub output: GsUrl,
    pub manifest: Option<GsUrl>,
    env: Box<Env>,
}

impl Request {
    /// The variable `name` of `env`, trimmed; `None` when unset or empty.
    pub fn var(env: &Env, name: &str) -> Option<String> {
        env(name)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    }

    /// Reads the request. An error here cannot be uploaded (there may be no output path): it is
    /// only logged.
    pub fn read(env: Box<Env>) -> Result<Request, HostError> {
        let var = |n: &str| Request::var(&*env, n);
        let need = |n: &str| {
            var(n).ok_or_else(|| {
                HostError::new(format!("{n} is not set"), "`aviary cloud-deploy` runs as a Cloud Deploy custom target's render or deploy action, which sets it")
            })
        };
        let gs = |n: &str, v: String| {
            GsUrl::parse(&v).map_err(|e| HostError {
                message: format!("{n}: {e}"),
                help: None,
            })
        };
        let output = gs(
            "CLOUD_DEPLOY_OUTPUT_GCS_PATH",
            need("CLOUD_DEPLOY_OUTPUT_GCS_PATH")?,
        )?;
        let kind = need("CLOUD_DEPLOY_REQUEST_TYPE")?;
        let kind = RequestType::parse(&kind).ok_or_else(|| {
            HostError::new(
                format!("CLOUD_DEPLOY_REQUEST_TYPE: unknown request type {kind:?}"),
                "aviary handles RENDER and DEPLOY",
            )
        })?;
        let percentage = match var("CLOUD_DEPLOY_PERCENTAGE_DEPLOY") {
            None => 100,
            Some(p) => p
                .parse::<u32>()
                .ok()
                .filter(|p| *p <= 100)
                .ok_or_else(|| HostError {
                    message: format!(
                        "CLOUD_DEPLOY_PERCENTAGE_DEPLOY: expected a percentage 0-100, got {p:?}"
                    ),
                    help: None,
                })?,
        };
        if var("CLOUD_DEPLOY_STORAGE_TYPE").is_some_and(|t| t != "GCS") {
            return Err(HostError {
                message: "CLOUD_DEPLOY_STORAGE_TYPE: aviary reads and writes GCS paths only".into(),
                help: None,
            });
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
    pub fn param(&self, key: &str) -> Option<String> {
        Request::var(&*self.env, &format!("CLOUD_DEPLOY_customTarget_{key}"))
    }

    /// The GCS client settings of this request's environment.
    pub fn gcs(&self) -> super::gcs::Gcs {
        super::gcs::Gcs::from_env(&*self.env)
    }

    /// The GKE settings of this request's environment (`customTarget/gkeCluster`).
    pub fn gke(&self) -> super::gke::Settings {
        super::gke::Settings::from_env(&*self.env)
    }

    /// Whether the release uses the `CANARY` feature (a `customCanaryDeployment`).
    pub fn canary(&self) -> bool {
        self.features.iter().any(|f| f == "CANARY")
    }

    /// The features this custom target does not handle.
    pub fn unsupported_features(&self) -> Vec<&str> {
        self.features
            .iter()
            .map(String::as_str)
            .filter(|f| !SUPPORTED_FEATURES.contains(f))
            .collect()
    }

    /// The phase a DEPLOY runs: one step of a `customCanaryDeployment`, or the whole schedule.
    pub fn external_phase(&self) -> Option<ExternalPhase> {
        if !self.canary() {
            None
        } else if self.phase == "stable" || self.percentage >= 100 {
            Some(ExternalPhase::Stable)
        } else {
            Some(ExternalPhase::Canary(self.percentage))
        }
    }

    /// The Skaffold project of a release source unpacked in `root`.
    pub fn render_source(&self, root: &Path) -> RenderSource {
        RenderSource {
            skaffold_file: root.join(
                self.param("skaffoldFile")
                    .unwrap_or_else(|| "skaffold.yaml".into()),
            ),
            profile: self.param("profile"),
            images: self
                .param("images")
                .map(|s| {
                    s.split([',', '\n'])
                        .map(str::trim)
                        .filter(|i| !i.is_empty())
                        .map(String::from)
                        .collect()
                })
                .unwrap_or_default(),
            build_artifacts: self.param("buildArtifacts").map(|p| root.join(p)),
        }
    }

    /// The cluster of the deploy parameters, with the kubeconfig at `kubeconfig` (a fetched
    /// `gs://` one is a [`SecretFile`]).
    pub fn cluster(&self, kubeconfig: Option<PathBuf>) -> request::Cluster {
        request::Cluster {
            kubeconfig,
            context: self.param("kubeContext"),
            ..request::Cluster::default()
        }
    }

    /// The deploy of rendered objects without a Canary.
    pub fn deploy(&self, cluster: request::Cluster) -> Result<request::Deploy, BadValue> {
        let timeout = match self.param("timeout") {
            Some(t) => request::duration(Origin::DeployParameter, "timeout", &t, "5m")?,
            None => std::time::Duration::from_secs(300),
        };
        Ok(request::Deploy {
            target: self.target.clone(),
            source: RenderSource::default(),
            namespace: self.param("namespace"),
            cluster,
            timeout,
            prune: false,
            report: None,
        })
    }

    /// The rollout of a rendered manifest with Canary documents.
    pub fn rollout(
        &self,
        rendered: Prerendered,
        cluster: request::Cluster,
    ) -> Result<request::Rollout, BadValue> {
        let timeout = self.param("timeout").unwrap_or_else(|| "30m".into());
        let env = |n: &str| Request::var(&*self.env, n);
        Ok(request::Rollout {
            canary: CanarySource::Rendered(rendered),
            source: RenderSource::default(),
            name: self.param("canary"),
            namespace: self.param("namespace"),
            provider: request::provider(
                Origin::DeployParameter,
                "provider",
                self.param("provider").as_deref().unwrap_or("istio"),
            )?,
            cluster,
            timeout: Some(request::duration(
                Origin::DeployParameter,
                "timeout",
                &timeout,
                "30m",
            )?),
            prometheus: request::Prometheus {
                url: self
                    .param("prometheusUrl")
                    .or_else(|| env("AVIARY_PROMETHEUS_URL")),
                token: env("AVIARY_PROMETHEUS_TOKEN"),
                username: env("AVIARY_PROMETHEUS_USERNAME"),
                password: env("AVIARY_PROMETHEUS_PASSWORD"),
            },
            report: None,
            policy: request::VerdictPolicy::parse(
                Origin::DeployParameter,
                "verdict-policy",
                &self.param("verdictPolicy").unwrap_or_default(),
            )?,
        })
    }
}

/// Cloud Deploy as a [`PipelineHost`]. Its inputs are the deploy parameters
/// (`customTarget/<key>`, the input `kube-context` being `customTarget/kubeContext`); its verdict
/// is `results.json` in the action's output path, uploaded with the JSON report beside it
/// (`aviary-report.json`, listed in `artifactFiles`) by [`PipelineHost::finish`], on success and
/// failure alike. The command sets the [`Results`] (status, manifest, metadata) as it goes.
pub struct CloudDeploy {
    pub req: Request,
    results: Results,
}

impl CloudDeploy {
    pub fn new(req: Request) -> CloudDeploy {
        CloudDeploy {
            req,
            results: Results::new("FAILED"),
        }
    }

    /// What `results.json` says when the action ends.
    pub fn set_results(&mut self, results: Results) {
        self.results = results;
    }

    /// Where the `results.json` of a request that cannot be read goes, when its environment
    /// names an output path; taken before the request is read.
    pub fn fallback_output(env: &Env) -> Option<(Gcs, GsUrl, Option<RequestType>)> {
        let output = Request::var(env, "CLOUD_DEPLOY_OUTPUT_GCS_PATH")
            .and_then(|v| GsUrl::parse(&v).ok())?;
        let kind =
            Request::var(env, "CLOUD_DEPLOY_REQUEST_TYPE").and_then(|t| RequestType::parse(&t));
        Some((Gcs::from_env(env), output, kind))
    }

    /// Uploads the FAILED `results.json` of a request that could not be read (with no output
    /// path, Cloud Deploy sees no result, and the log says why).
    pub fn fail_unread(output: Option<(Gcs, GsUrl, Option<RequestType>)>, message: &str) {
        let Some((gcs, output, kind)) = output else {
            return;
        };
        let mut results = Results::new("FAILED");
        results.failure_message = Some(message.to_string());
        if let Ok(rt) = runtime() {
            let _ = upload_results(&rt, &gcs, &output, kind, &results);
        }
    }
}

/// The runtime of the host's own GCS calls (`finish` runs outside the command's runtime).
fn runtime() -> Result<tokio::runtime::Runtime, FinishError> {
    aviary_kube::runtime().map_err(|e| {
        tracing::error!("cannot start the runtime for the GCS uploads: {e}");
        FinishError::Runtime(e)
    })
}

/// Uploads `<output>/results.json`, logging the outcome.
fn upload_results(
    rt: &tokio::runtime::Runtime,
    gcs: &Gcs,
    output: &GsUrl,
    kind: Option<RequestType>,
    results: &Results,
) -> Result<(), FinishError> {
    let url = output.join("results.json");
    let body = results.to_json(kind).map_err(|e| FinishError::Write {
        what: "results.json".into(),
        path: url.to_string(),
        source: e.into(),
    })?;
    let uploaded = rt.block_on(gcs.put(&url, body)).map_err(FinishError::from);
    match &uploaded {
        Ok(()) => tracing::info!("{url}: {}", results.result_status),
        Err(e) => tracing::error!("could not upload {url}: {e}; Cloud Deploy will see no result"),
    }
    uploaded
}

impl PipelineHost for CloudDeploy {
    fn name(&self) -> &'static str {
        "cloud-deploy"
    }

    fn raw_input(&self, name: &str) -> Option<String> {
        (self.req.env)(&format!(
            "CLOUD_DEPLOY_customTarget_{}",
            aviary_core::request::camel(name)
        ))
    }

    fn var(&self, name: &str) -> Option<String> {
        (self.req.env)(name)
    }

    fn finish(
        &mut self,
        report: &aviary_core::report::Report,
        _: &Path,
    ) -> Result<(), FinishError> {
        let rt = runtime()?;
        let gcs = self.req.gcs();
        let mut results = self.results.clone();
        let url = self.req.output.join("aviary-report.json");
        match serde_json::to_vec_pretty(report) {
            Ok(body) => match rt.block_on(gcs.put(&url, body)) {
                // A deploy lists it in `artifactFiles`; a render's contract has no such field.
                Ok(()) => match self.req.kind {
                    RequestType::Deploy => results.artifact_files.push(url.to_string()),
                    RequestType::Render => {
                        results
                            .metadata
                            .insert("aviary-report".into(), url.to_string());
                    }
                },
                Err(e) => tracing::warn!("could not upload the report: {e}"),
            },
            Err(e) => tracing::warn!("could not encode the report: {e}"),
        }
        upload_results(&rt, &gcs, &self.req.output, Some(self.req.kind), &results)
    }

    fn default_report(&self) -> PathBuf {
        PathBuf::from("aviary-report.json")
    }
}

/// Unpacks a release source (a tar.gz, as Cloud Deploy uploads a release's `--source`) into
/// `dir`. Entries that would land outside `dir` are refused.
pub fn unpack_source(source: &[u8], dir: &Path) -> std::io::Result<()> {
    tar::Archive::new(flate2::read::GzDecoder::new(source)).unpack(dir)
}

/// A private scratch directory (0700, created new, never reused), removed when dropped.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(what: &str) -> std::io::Result<Scratch> {
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
        builder
            .create(&dir)
            .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", dir.display())))?;
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
pub struct SecretFile {
    pub path: PathBuf,
    /// Keeps the memfd open (its path lives as long as the descriptor).
    _file: Option<std::fs::File>,
    _dir: Option<Scratch>,
}

impl SecretFile {
    pub fn new(name: &str, data: &[u8]) -> std::io::Result<SecretFile> {
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

    /// Replaces the contents atomically: a reader opening `path` meanwhile gets the old contents
    /// or the new, whole (a refreshed token). In memory, a new memfd takes over the descriptor
    /// number (`dup3`); on disk, a new file is renamed over the old one.
    pub fn replace(&self, data: &[u8]) -> std::io::Result<()> {
        #[cfg(target_os = "linux")]
        if let Some(file) = &self._file {
            use std::os::fd::AsRawFd;
            let name = self
                .path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let fresh = SecretFile::in_memory(&format!("replace-{name}"), data)?;
            let Some(new) = &fresh._file else {
                return Err(std::io::Error::other("no in-memory file"));
            };
            // SAFETY: both descriptors are open and owned by `File`s that outlive the call;
            // `dup3` makes `file`'s number refer to the new memfd (closing the old one) and
            // `fresh` closes its own number when dropped.
            let r = unsafe { libc::dup3(new.as_raw_fd(), file.as_raw_fd(), libc::O_CLOEXEC) };
            if r < 0 {
                return Err(std::io::Error::last_os_error());
            }
            return Ok(());
        }
        use std::io::Write;
        let next = self.path.with_extension("next");
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        options
            .open(&next)
            .and_then(|mut f| f.write_all(data).and_then(|()| f.sync_all()))
            .and_then(|()| std::fs::rename(&next, &self.path))
            .map_err(|e| {
                let _ = std::fs::remove_file(&next);
                std::io::Error::new(e.kind(), format!("{}: {e}", self.path.display()))
            })
    }

    fn on_disk(name: &str, data: &[u8]) -> std::io::Result<SecretFile> {
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
        written.map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        Ok(SecretFile {
            path,
            _file: None,
            _dir: Some(dir),
        })
    }
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

    #[cfg(target_os = "linux")]
    #[test]
    fn a_secret_file_is_replaced_whole_under_the_same_path() {
        for file in [
            SecretFile::in_memory("token", b"old-token"),
            SecretFile::on_disk("token", b"old-token"),
        ] {
            let file = match file {
                Ok(f) => f,
                Err(e) => panic!("{e}"),
            };
            assert_eq!(
                std::fs::read(&file.path).ok().as_deref(),
                Some(&b"old-token"[..])
            );
            if let Err(e) = file.replace(b"a-new-and-longer-token") {
                panic!("{e}");
            }
            assert_eq!(
                std::fs::read(&file.path).ok().as_deref(),
                Some(&b"a-new-and-longer-token"[..])
            );
            let mode = std::fs::metadata(&file.path)
                .map(|m| m.permissions().mode() & 0o777)
                .unwrap_or(0);
            assert_eq!(mode, 0o600);
        }
    }

    fn keys(body: &[u8]) -> Vec<String> {
        let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
        let mut keys: Vec<String> = v
            .as_object()
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default();
        keys.sort();
        keys
    }

    #[test]
    fn results_json_has_exactly_the_fields_of_its_request() {
        let mut r = Results::new("SUCCEEDED");
        r.manifest_file = Some("gs://b/out/manifest.yaml".into());
        r.artifact_files = vec!["gs://b/out/aviary-report.json".into()];
        r.skip_message = Some("nothing to do".into());
        let render = r.to_json(Some(RequestType::Render)).unwrap_or_default();
        assert_eq!(keys(&render), ["manifestFile", "metadata", "resultStatus"]);
        let deploy = r.to_json(Some(RequestType::Deploy)).unwrap_or_default();
        assert_eq!(keys(&deploy), ["artifactFiles", "metadata", "resultStatus"]);
        r.result_status = "SKIPPED";
        let deploy = r.to_json(Some(RequestType::Deploy)).unwrap_or_default();
        assert_eq!(
            keys(&deploy),
            ["artifactFiles", "metadata", "resultStatus", "skipMessage"]
        );
        r.result_status = "FAILED";
        r.failure_message = Some("boom".into());
        let unread = r.to_json(None).unwrap_or_default();
        assert_eq!(
            keys(&unread),
            ["failureMessage", "metadata", "resultStatus"]
        );
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
