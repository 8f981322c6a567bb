//! GitHub Actions, as a Docker container action (`action.yml`).
//!
//! Inputs arrive as `INPUT_<NAME>` with the name upper-cased and its hyphens kept
//! (`INPUT_GITHUB-TOKEN`), so they are read with `std::env`, never through a shell. Outputs go to
//! the `$GITHUB_OUTPUT` file (heredoc form with a delimiter that cannot occur in the value), the
//! summary to `$GITHUB_STEP_SUMMARY`, and workflow commands (`::group::`, `::error`,
//! `::add-mask::`) to stdout, escaped as the runner expects. With a token, the release is a
//! GitHub Deployment whose statuses follow it (in_progress, then success, failure or error).
//!
//! The Deployment is best-effort: it is created in the background while the release runs, every
//! API call has a deadline ([`aviary_kube::http::GITHUB_TIMEOUT`], `AVIARY_GITHUB_TIMEOUT`) and reads at
//! most [`aviary_kube::http::GITHUB_MAX`] of an answer, and a GitHub that fails, refuses or never answers
//! costs a warning, never the release or its exit code.
//!
//! What later steps and the runner can use is bounded by the runner: the report goes under the
//! workspace (the one directory every runner mounts into the container), and its `report`
//! output is relative to the workspace, the working directory of the later steps too; at most
//! 10 annotations of each type are kept per step ([`Annotations`]); an annotation's `file` is a
//! path in the repository or absent; every log line is escaped so that no user text is a
//! workflow command ([`log`]); the summary's user strings are escaped for Markdown ([`summary`]).

pub mod log;
pub mod summary;

pub use log::safe_log;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::{Env, FinishError, Level, PipelineHost, StepRequest};
use aviary_core::engine::sim::TickLog;
use aviary_core::report::{Report, Verdict};

/// The report's file name in the workspace when the `report` input is not given.
pub const DEFAULT_REPORT: &str = "aviary-report.json";

/// The runner keeps the first 10 annotations of each type (error, warning, notice) per step.
const KEPT_PER_TYPE: usize = 10;

/// The runner cuts an annotation's message at 4,096 characters.
const MESSAGE_MAX: usize = 4096;

/// Escapes a workflow command's message (`::error::<message>`).
pub fn escape_data(s: &str) -> String {
    s.replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

/// Escapes a workflow command's property value (`file=<value>`).
pub fn escape_property(s: &str) -> String {
    escape_data(s).replace(':', "%3A").replace(',', "%2C")
}

/// A workflow command line: `::name key=value,...::message`.
pub fn command(name: &str, properties: &[(&str, String)], message: &str) -> String {
    let props: Vec<String> = properties
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| format!("{k}={}", escape_property(v)))
        .collect();
    if props.is_empty() {
        format!("::{name}::{}", escape_data(message))
    } else {
        format!("::{name} {}::{}", props.join(","), escape_data(message))
    }
}

/// Appends `text` to `path`, the file the runner named in `$var` (`GITHUB_OUTPUT`,
/// `GITHUB_STATE`, ...), creating it if needed.
fn append_file(var: &str, path: &str, text: &str) -> Result<(), FinishError> {
    let failed = |source| FinishError::Write {
        what: format!("${var}"),
        path: path.to_string(),
        source,
    };
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(failed)?;
    f.write_all(text.as_bytes()).map_err(failed)
}

/// One `$GITHUB_OUTPUT` entry. Values with a line break use the heredoc form, with a delimiter
/// that occurs in no line of the value.
pub fn output_entry(name: &str, value: &str) -> String {
    if !value.contains('\n') && !value.contains('\r') {
        return format!("{name}={value}\n");
    }
    let mut n = std::process::id() as u64 ^ nanos();
    loop {
        let delimiter = format!("ghadelimiter_{n:016x}");
        if !value.contains(&delimiter) {
            return format!("{name}<<{delimiter}\n{value}\n{delimiter}\n");
        }
        n = n
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
    }
}

fn nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Prints a workflow command on stdout and flushes it, so it lands between the log lines it
/// belongs to.
fn emit(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// What we send to `POST /repos/{owner}/{repo}/deployments`.
#[derive(Debug, Serialize)]
struct NewDeployment<'a> {
    #[serde(rename = "ref")]
    git_ref: &'a str,
    environment: &'a str,
    description: String,
    auto_merge: bool,
    required_contexts: Vec<String>,
    transient_environment: bool,
    production_environment: bool,
    payload: serde_json::Value,
}

#[derive(Debug, Deserialize)]
struct DeploymentCreated {
    id: u64,
}

/// What we send to `POST .../deployments/{id}/statuses`.
#[derive(Debug, Serialize)]
struct NewStatus<'a> {
    state: &'a str,
    description: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    log_url: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    environment_url: Option<&'a str>,
    environment: &'a str,
    auto_inactive: bool,
}

#[derive(Debug, Deserialize)]
struct StatusCreated {
    #[allow(dead_code)]
    id: u64,
}

/// A GitHub Deployment that follows the step.
struct Deployment {
    client: octocrab::Octocrab,
    repo: String,
    id: u64,
    environment: String,
    log_url: Option<String>,
    environment_url: Option<String>,
    /// Each API call's deadline.
    deadline: Duration,
}

/// What the background task needs to create the Deployment.
struct NewDeploymentRequest {
    api: String,
    token: String,
    repo: String,
    git_ref: String,
    environment: String,
    description: String,
    log_url: Option<String>,
    environment_url: Option<String>,
    deadline: Duration,
}

impl Deployment {
    /// Creates the Deployment and sets it in progress (a status that fails is only a warning,
    /// returned beside it).
    async fn start(req: NewDeploymentRequest) -> Result<(Deployment, Option<String>), String> {
        let api = aviary_core::urls::redact(&req.api);
        let client = octocrab::Octocrab::builder()
            .base_uri(req.api.as_str())
            .map_err(|e| format!("GITHUB_API_URL {api:?}: {e}"))?
            .personal_token(req.token)
            .set_connect_timeout(Some(aviary_kube::http::CONNECT_TIMEOUT))
            // Past the deadline (which `post` enforces around the call, retries included): a
            // read timeout at the deadline itself raced it, and its retry sent the request
            // once more just before the deadline dropped it.
            .set_read_timeout(Some(req.deadline.saturating_mul(2)))
            .set_write_timeout(Some(req.deadline.saturating_mul(2)))
            // One immediate retry of a failed connection or a 5xx; the deadline bounds both.
            .add_retry_config(octocrab::service::middleware::retry::RetryConfig::Simple(1))
            .build()
            .map_err(|e| aviary_core::urls::redact_in_text(&e.to_string()))?;
        let body = NewDeployment {
            git_ref: &req.git_ref,
            environment: &req.environment,
            description: req.description,
            auto_merge: false,
            required_contexts: Vec::new(),
            transient_environment: false,
            production_environment: req.environment.contains("prod"),
            payload: serde_json::json!({"tool": "aviary"}),
        };
        let created: DeploymentCreated = post(
            &client,
            &format!("/repos/{}/deployments", req.repo),
            &body,
            req.deadline,
        )
        .await?;
        let d = Deployment {
            client,
            repo: req.repo,
            id: created.id,
            environment: req.environment,
            log_url: req.log_url,
            environment_url: req.environment_url,
            deadline: req.deadline,
        };
        // A Deployment that exists gets its final status even if this one is not taken.
        let warning = match d.status("in_progress", "aviary is rolling out").await {
            Ok(()) => None,
            Err(e) => Some(format!(
                "could not set GitHub Deployment {} to in_progress: {e}",
                d.id
            )),
        };
        Ok((d, warning))
    }

    async fn status(&self, state: &str, description: &str) -> Result<(), String> {
        let body = NewStatus {
            state,
            description: truncate(description, 140),
            log_url: self.log_url.as_deref(),
            environment_url: self.environment_url.as_deref(),
            environment: &self.environment,
            auto_inactive: true,
        };
        let _: StatusCreated = post(
            &self.client,
            &format!("/repos/{}/deployments/{}/statuses", self.repo, self.id),
            &body,
            self.deadline,
        )
        .await?;
        Ok(())
    }
}

/// `POST route` with a JSON `body`, within `deadline` (retries included), reading at most
/// [`aviary_kube::http::GITHUB_MAX`] of the answer.
async fn post<B: Serialize, R: DeserializeOwned>(
    client: &octocrab::Octocrab,
    route: &str,
    body: &B,
    deadline: Duration,
) -> Result<R, String> {
    let call = async {
        let response = client._post(route, Some(body)).await.map_err(describe)?;
        let status = response.status();
        let stream = http_body_util::BodyDataStream::new(response.into_body());
        if !status.is_success() {
            let excerpt = aviary_kube::http::read_at_most(stream, 4096)
                .await
                .unwrap_or(aviary_kube::http::Excerpt {
                    bytes: Vec::new(),
                    truncated: false,
                });
            // GitHub's errors are `{"message": ..., "documentation_url": ...}`.
            let message = serde_json::from_slice::<serde_json::Value>(&excerpt.bytes)
                .ok()
                .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(String::from))
                .unwrap_or_else(|| excerpt.text(200));
            return Err(format!(
                "GitHub answered {}: {}",
                status.as_u16(),
                aviary_core::urls::redact_in_text(&message)
            ));
        }
        let bytes = aviary_kube::http::read_capped(stream, aviary_kube::http::GITHUB_MAX)
            .await
            .map_err(|e| match e {
                aviary_kube::http::CappedError::TooLarge { cap } => format!(
                    "GitHub answered with more than {}; aviary reads at most that",
                    aviary_kube::http::size(cap)
                ),
                aviary_kube::http::CappedError::Read(e) => describe(e),
            })?;
        serde_json::from_slice::<R>(&bytes)
            .map_err(|e| format!("GitHub's answer is not the JSON expected: {e}"))
    };
    match tokio::time::timeout(deadline, call).await {
        Ok(result) => result,
        Err(_) => Err(format!(
            "the GitHub API did not answer within {} (AVIARY_GITHUB_TIMEOUT)",
            aviary_core::spec::duration::format_human(deadline)
        )),
    }
}

/// An octocrab error in one line (its Display is terse; the GitHub message is what helps), any
/// URL in it redacted.
fn describe(e: octocrab::Error) -> String {
    let text = match e {
        octocrab::Error::GitHub { source, .. } => {
            format!("GitHub answered {}: {}", source.status_code, source.message)
        }
        other => {
            let mut parts = vec![other.to_string()];
            let mut current = std::error::Error::source(&other);
            while let Some(source) = current {
                let text = source.to_string();
                if !parts.iter().any(|p| p.contains(&text)) {
                    parts.push(text);
                }
                current = source.source();
            }
            parts.join(": ")
        }
    };
    aviary_core::urls::redact_in_text(&text)
}

/// The annotations of a step, within what the runner keeps: [`KEPT_PER_TYPE`] of each type.
/// The verdict is kept apart and always shown (one slot of its type); of the other nine, eight
/// are shown as they come, and the ninth is held back: at the end it is shown if it was the
/// last, else replaced by one "and N more" annotation.
#[derive(Debug, Default)]
pub struct Annotations {
    shown: [usize; 3],
    held: [Option<String>; 3],
    dropped: [usize; 3],
}

impl Annotations {
    /// Shown as they come, of each type.
    const AT_ONCE: usize = KEPT_PER_TYPE - 2;

    fn index(level: Level) -> usize {
        match level {
            Level::Error => 0,
            Level::Warning => 1,
            Level::Notice => 2,
        }
    }

    /// The workflow command to print now for an annotation `line` of `level`, if any.
    pub fn add(&mut self, level: Level, line: String) -> Option<String> {
        let i = Self::index(level);
        if self.shown[i] < Self::AT_ONCE {
            self.shown[i] += 1;
            Some(line)
        } else if self.held[i].is_none() && self.dropped[i] == 0 {
            self.held[i] = Some(line);
            None
        } else {
            self.dropped[i] += 1;
            None
        }
    }

    /// What is left to print before the verdict: each held annotation, or one that counts those
    /// the runner would not have kept.
    pub fn rest(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        for level in [Level::Error, Level::Warning, Level::Notice] {
            let i = Self::index(level);
            let held = self.held[i].take();
            let dropped = std::mem::take(&mut self.dropped[i]);
            match (held, dropped) {
                (Some(line), 0) => out.push(line),
                (Some(_), n) => {
                    let n = n + 1;
                    let (name, what) = match level {
                        Level::Error => ("error", "errors"),
                        Level::Warning => ("warning", "warnings"),
                        Level::Notice => ("notice", "notices"),
                    };
                    out.push(command(
                        name,
                        &[("title", format!("aviary: {n} more {what}"))],
                        &format!(
                            "and {n} more {what}, not shown here (GitHub keeps {KEPT_PER_TYPE} annotations of each type per step); see the log, the step summary and the report"
                        ),
                    ));
                }
                (None, _) => {}
            }
        }
        out
    }
}

/// What the background task leaves: the Deployment if it was created, and the warnings to
/// annotate.
type Started = (Option<Deployment>, Vec<String>);

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut t: String = s.chars().take(max.saturating_sub(1)).collect();
    t.push('…');
    t
}

pub struct Github {
    env: Box<Env>,
    /// The Deployment's client lives on this runtime (its connections belong to it).
    rt: Option<tokio::runtime::Runtime>,
    /// The Deployment being created in the background.
    deployment: Option<tokio::task::JoinHandle<Started>>,
    /// The `environment-url` input, linked from the summary.
    environment_url: Option<String>,
    /// Each GitHub API call's deadline.
    deadline: Duration,
    in_group: bool,
    annotations: Mutex<Annotations>,
}

impl Github {
    pub fn new(env: Box<Env>) -> Github {
        Github {
            env,
            rt: None,
            deployment: None,
            environment_url: None,
            deadline: aviary_kube::http::GITHUB_TIMEOUT,
            in_group: false,
            annotations: Mutex::new(Annotations::default()),
        }
    }

    /// The workspace (`GITHUB_WORKSPACE`: `/github/workspace` in the container).
    fn workspace(&self) -> Option<PathBuf> {
        self.var("GITHUB_WORKSPACE").map(PathBuf::from)
    }

    /// `file` as a path in the repository (relative to the workspace), when it is a file there;
    /// `None` for anything else (a rendered stream, a file outside the workspace), so that an
    /// annotation never points at a place the repository does not have.
    pub fn repo_path(&self, file: &str) -> Option<String> {
        let workspace = self.workspace()?;
        let path = Path::new(file);
        let path = if path.is_absolute() {
            path.to_path_buf()
        } else {
            workspace.join(path)
        };
        let path = path.canonicalize().ok().filter(|p| p.is_file())?;
        let workspace = workspace.canonicalize().ok()?;
        let relative = path.strip_prefix(&workspace).ok()?;
        let parts: Vec<String> = relative
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        (!parts.is_empty()).then(|| parts.join("/"))
    }

    /// The workflow command of an annotation.
    fn annotation(
        &self,
        level: Level,
        title: &str,
        message: &str,
        at: Option<(&str, usize)>,
    ) -> String {
        let name = match level {
            Level::Error => "error",
            Level::Warning => "warning",
            Level::Notice => "notice",
        };
        let mut props = Vec::new();
        if let Some((file, line)) = at.and_then(|(f, l)| Some((self.repo_path(f)?, l))) {
            props.push(("file", file));
            if line > 0 {
                props.push(("line", line.to_string()));
            }
        }
        props.push(("title", title.to_string()));
        command(name, &props, &truncate(message, MESSAGE_MAX))
    }

    /// A warning in the log and as an annotation (within the budget). Main thread only: the
    /// command holds stdout's lock while it runs, so a background task logs with `tracing` and
    /// leaves annotations to [`Github::finish`].
    fn warn(&self, title: &str, message: &str) {
        tracing::warn!("{message}");
        self.annotate(Level::Warning, title, message, None);
    }

    /// The `report` output: a path later steps can open. They run on the runner with the
    /// workspace as their working directory, where the container's `/github/workspace` is
    /// another path; so a report in the workspace is named relative to it.
    pub fn report_output(&self, report_path: &Path) -> String {
        let relative = self.workspace().and_then(|ws| {
            let abs = if report_path.is_absolute() {
                report_path.to_path_buf()
            } else {
                ws.join(report_path)
            };
            let rel = abs
                .strip_prefix(&ws)
                .ok()
                .map(Path::to_path_buf)
                .or_else(|| {
                    let ws = ws.canonicalize().ok()?;
                    let dir = abs.parent()?.canonicalize().ok()?;
                    Some(dir.strip_prefix(&ws).ok()?.join(abs.file_name()?))
                })?;
            (!rel.as_os_str().is_empty()).then(|| rel.display().to_string())
        });
        relative.unwrap_or_else(|| report_path.display().to_string())
    }

    fn var(&self, name: &str) -> Option<String> {
        (self.env)(name).filter(|v| !v.is_empty())
    }

    fn run_url(&self) -> Option<String> {
        let server = self
            .var("GITHUB_SERVER_URL")
            .unwrap_or_else(|| "https://github.com".into());
        Some(format!(
            "{server}/{}/actions/runs/{}",
            self.var("GITHUB_REPOSITORY")?,
            self.var("GITHUB_RUN_ID")?
        ))
    }

    fn append(&self, var: &str, text: &str) -> Result<(), FinishError> {
        match self.var(var) {
            Some(path) => append_file(var, &path, text),
            None => Ok(()),
        }
    }

    fn outputs(&self, report: &Report, report_path: &std::path::Path) -> String {
        let mut out = String::new();
        out.push_str(&output_entry("verdict", report.verdict.as_str()));
        out.push_str(&output_entry("weight", &report.canary_weight.to_string()));
        out.push_str(&output_entry(
            "failed-checks",
            &report.failed_checks.to_string(),
        ));
        out.push_str(&output_entry(
            "failed-metrics",
            &report.failed_metrics.join(","),
        ));
        out.push_str(&output_entry(
            "exit-code",
            &report.exit_code.unwrap_or(0).to_string(),
        ));
        out.push_str(&output_entry("canaries", &report.canaries_line()));
        out.push_str(&output_entry("report", &self.report_output(report_path)));
        out.push_str(&output_entry(
            "message",
            report.message.as_deref().unwrap_or(""),
        ));
        out
    }

    fn deployment_state(verdict: Verdict) -> &'static str {
        match verdict {
            v if v.is_success() => "success",
            Verdict::RolledBack => "failure",
            _ => "error",
        }
    }
}

impl PipelineHost for Github {
    fn name(&self) -> &'static str {
        "github"
    }

    fn var(&self, name: &str) -> Option<String> {
        Github::var(self, name)
    }

    fn raw_input(&self, name: &str) -> Option<String> {
        (self.env)(&format!("INPUT_{}", name.replace(' ', "_").to_uppercase()))
    }

    fn mask(&self, secret: &str) {
        for line in secret.lines().filter(|l| !l.trim().is_empty()) {
            emit(&command("add-mask", &[], line));
        }
    }

    fn begin(&mut self, title: &str) {
        self.end();
        emit(&command("group", &[], title));
        self.in_group = true;
    }

    fn end(&mut self) {
        if self.in_group {
            emit("::endgroup::");
            self.in_group = false;
        }
    }

    fn annotate(&self, level: Level, title: &str, message: &str, at: Option<(&str, usize)>) {
        let line = self.annotation(level, title, message, at);
        let now = self
            .annotations
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .add(level, line);
        if let Some(line) = now {
            emit(&line);
        }
    }

    fn resolve(&self, path: PathBuf) -> PathBuf {
        // The container's working directory is the workspace; relative inputs mean a path in
        // it wherever aviary runs.
        match self.workspace() {
            Some(ws) if path.is_relative() => ws.join(path),
            _ => path,
        }
    }

    fn progress(&self, title: String) -> Option<aviary_core::report::Observer> {
        let mut last = None;
        Some(Box::new(move |tick: &TickLog| {
            if last != Some(tick.phase) {
                last = Some(tick.phase);
                emit("::endgroup::");
                emit(&command(
                    "group",
                    &[],
                    &format!("{title} · {} · canary {}%", tick.phase, tick.routes.canary),
                ));
            }
        }))
    }

    fn started(&mut self, req: &StepRequest) {
        if !req.command.deploys() {
            return;
        }
        let Some(token) = req.github_token.clone() else {
            return;
        };
        let (Some(repo), Some(git_ref)) = (
            self.var("GITHUB_REPOSITORY"),
            self.var("GITHUB_SHA").or_else(|| self.var("GITHUB_REF")),
        ) else {
            tracing::warn!("GITHUB_REPOSITORY or GITHUB_SHA is not set: no GitHub Deployment");
            return;
        };
        let api = self
            .var("GITHUB_API_URL")
            .unwrap_or_else(|| "https://api.github.com".into());
        let environment = req
            .environment
            .clone()
            .unwrap_or_else(|| req.target.clone());
        let description = format!("aviary {} of target {}", req.command.as_str(), req.target);
        self.deadline = aviary_kube::http::timeout_from(
            "AVIARY_GITHUB_TIMEOUT",
            self.var("AVIARY_GITHUB_TIMEOUT"),
            aviary_kube::http::GITHUB_TIMEOUT,
        );
        let rt = match aviary_kube::runtime() {
            Ok(rt) => rt,
            Err(e) => {
                tracing::warn!("no GitHub Deployment: {e}");
                return;
            }
        };
        let request = NewDeploymentRequest {
            api,
            token,
            repo,
            git_ref,
            environment: environment.clone(),
            description,
            log_url: self.run_url(),
            environment_url: req.environment_url.clone(),
            deadline: self.deadline,
        };
        self.environment_url = req.environment_url.clone();
        // In the background: the release starts now, whatever GitHub does.
        let task = rt.spawn(async move {
            match Deployment::start(request).await {
                Ok((d, warning)) => {
                    tracing::info!("GitHub Deployment {} to {environment} is in progress", d.id);
                    if let Some(w) = &warning {
                        tracing::warn!("{w}");
                    }
                    (Some(d), warning.into_iter().collect())
                }
                // The release matters more than its record: warn (the token may lack
                // `deployments: write`, GitHub may be down) and go on.
                Err(e) => {
                    let message = format!("could not create a GitHub Deployment: {e}; the release goes on without it (a token needs `permissions: deployments: write`; leave github-token empty to skip the Deployment)");
                    tracing::warn!("{message}");
                    (None, vec![message])
                }
            }
        });
        self.deployment = Some(task);
        self.rt = Some(rt);
    }

    fn finish(
        &mut self,
        report: &Report,
        report_path: &std::path::Path,
    ) -> Result<(), FinishError> {
        self.end();
        let mut problems = Vec::new();
        if let Err(e) = self.append("GITHUB_OUTPUT", &self.outputs(report, report_path)) {
            problems.push(e);
        }
        let mut links = Vec::new();
        if let Some(url) = self.run_url() {
            links.push(("workflow run".to_string(), url));
        }
        if let Some(url) = self.environment_url.clone() {
            links.push(("environment".to_string(), url));
        }
        if let Err(e) = self.append("GITHUB_STEP_SUMMARY", &summary::markdown(report, &links)) {
            problems.push(e);
        }
        // The verdict always shows: it is outside the budget, whose other annotations of its
        // type leave it one of the runner's 10. It comes before the Deployment's last calls,
        // which may take a deadline or two.
        let title = format!("aviary: {}", report.verdict.human());
        let level = match report.verdict {
            v if v.is_success() => Level::Notice,
            Verdict::NoVerdict | Verdict::Cancelled => Level::Warning,
            _ => Level::Error,
        };
        emit(&self.annotation(level, &title, &report.headline(), None));
        if let (Some(task), Some(rt)) = (self.deployment.take(), self.rt.take()) {
            let state = Self::deployment_state(report.verdict);
            let headline = report.headline();
            let deadline = self.deadline;
            rt.block_on(async {
                // The creation had the whole release to finish; give it one more deadline.
                let created = match tokio::time::timeout(deadline, task).await {
                    Ok(Ok((created, warnings))) => {
                        for w in warnings {
                            self.annotate(Level::Warning, "aviary: GitHub Deployment", &w, None);
                        }
                        created
                    }
                    Ok(Err(e)) => {
                        self.warn(
                            "aviary: GitHub Deployment",
                            &format!("the GitHub Deployment task failed: {e}"),
                        );
                        None
                    }
                    Err(_) => {
                        self.warn(
                            "aviary: GitHub Deployment",
                            &format!(
                                "no GitHub Deployment: GitHub did not answer within {} (AVIARY_GITHUB_TIMEOUT); its status is left as is",
                                aviary_core::spec::duration::format_human(deadline)
                            ),
                        );
                        None
                    }
                };
                if let Some(d) = created {
                    // Best-effort: a status GitHub does not take is a warning, not a failed step.
                    if let Err(e) = d.status(state, &headline).await {
                        self.warn(
                            "aviary: GitHub Deployment",
                            &format!("could not set GitHub Deployment {} to {state}: {e}", d.id),
                        );
                    }
                }
            });
            // Connections still open to a GitHub that does not answer are dropped, not awaited.
            rt.shutdown_background();
        }
        // Last, what the budget held back (it counted the Deployment's warnings too).
        let rest = self
            .annotations
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .rest();
        for line in rest {
            emit(&line);
        }
        FinishError::from_all(problems)
    }

    fn state_saver(&self) -> Option<crate::SaveState> {
        let path = self.var("GITHUB_STATE")?;
        Some(std::sync::Arc::new(move |name: &str, value: &str| {
            append_file("GITHUB_STATE", &path, &output_entry(name, value))
        }))
    }

    fn saved_state(&self, name: &str) -> Option<String> {
        self.var(&format!("STATE_{name}"))
    }

    fn default_report(&self) -> PathBuf {
        // Under the workspace, the one directory every runner mounts into the container and
        // later steps can read (RUNNER_TEMP is mounted only by runners since v2.329/v2.331).
        // A runner always sets GITHUB_WORKSPACE; without it (a hand-made environment) the
        // temp directory is the next best place, then the working directory.
        match self
            .workspace()
            .or_else(|| self.var("RUNNER_TEMP").map(PathBuf::from))
        {
            Some(dir) => dir.join(DEFAULT_REPORT),
            None => PathBuf::from(DEFAULT_REPORT),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_and_properties_are_escaped_as_the_runner_reads_them() {
        assert_eq!(escape_data("50% done\r\nnext"), "50%25 done%0D%0Anext");
        assert_eq!(escape_property("a:b,c%"), "a%3Ab%2Cc%25");
        assert_eq!(
            command(
                "error",
                &[
                    ("file", "k8s/canary.yaml".into()),
                    ("line", "14".into()),
                    ("title", "spec.analysis: bad, very".into())
                ],
                "expected 1-100\ngot \"ten\""
            ),
            "::error file=k8s/canary.yaml,line=14,title=spec.analysis%3A bad%2C very::expected 1-100%0Agot \"ten\""
        );
        assert_eq!(command("endgroup", &[], ""), "::endgroup::");
    }

    #[test]
    fn multi_line_outputs_use_a_delimiter_that_is_not_in_the_value() {
        assert_eq!(output_entry("verdict", "promoted"), "verdict=promoted\n");
        let value = "line one\nghadelimiter_trap\nline three";
        let entry = output_entry("message", value);
        let mut lines = entry.lines();
        let head = lines.next().unwrap_or("");
        let delimiter = head.strip_prefix("message<<").unwrap_or("");
        assert!(
            !delimiter.is_empty() && !value.contains(delimiter),
            "{entry}"
        );
        assert!(entry.ends_with(&format!("\n{delimiter}\n")), "{entry}");
        assert!(
            entry.contains(&format!("<<{delimiter}\n{value}\n")),
            "{entry}"
        );
    }

    #[test]
    fn inputs_keep_their_hyphens() {
        let gh = Github::new(Box::new(|k: &str| match k {
            "INPUT_KUBE-CONTEXT" => Some(" prod-cluster ".to_string()),
            "INPUT_KUBE_CONTEXT" => Some("wrong".to_string()),
            "INPUT_EMPTY" => Some("  ".to_string()),
            _ => None,
        }));
        assert_eq!(gh.input("kube-context").as_deref(), Some("prod-cluster"));
        assert_eq!(gh.input("empty"), None);
    }

    fn github(pairs: &[(&str, &str)]) -> Github {
        let map: std::collections::HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Github::new(Box::new(move |k: &str| map.get(k).cloned()))
    }

    #[test]
    fn the_report_goes_in_the_workspace_and_its_output_is_relative_to_it() {
        let gh = github(&[
            ("GITHUB_WORKSPACE", "/github/workspace"),
            ("RUNNER_TEMP", "/home/runner/work/_temp"),
        ]);
        let path = gh.default_report();
        assert_eq!(path, PathBuf::from("/github/workspace/aviary-report.json"));
        assert_eq!(gh.report_output(&path), "aviary-report.json");
        assert_eq!(
            gh.report_output(Path::new("/github/workspace/out/r.json")),
            "out/r.json"
        );
        // A relative input is a path in the workspace.
        assert_eq!(
            gh.resolve(PathBuf::from("ci/kubeconfig")),
            PathBuf::from("/github/workspace/ci/kubeconfig")
        );
        assert_eq!(
            gh.resolve(PathBuf::from("/etc/kubeconfig")),
            PathBuf::from("/etc/kubeconfig")
        );
        // Outside the workspace, the path as it is (no later step can read a container path
        // either way).
        assert_eq!(gh.report_output(Path::new("/tmp/r.json")), "/tmp/r.json");
        let outputs = gh.outputs(&Report::new(Verdict::Promoted), &path);
        assert!(outputs.contains("report=aviary-report.json\n"), "{outputs}");
    }

    #[test]
    fn at_most_nine_annotations_of_a_type_and_the_verdict_always_shows() {
        let mut a = Annotations::default();
        let shown: Vec<String> = (1..=12)
            .filter_map(|i| a.add(Level::Error, format!("::error::spec error {i}")))
            .collect();
        assert_eq!(shown.len(), 8);
        assert!(a.add(Level::Warning, "::warning::w".into()).is_some());
        let rest = a.rest();
        assert_eq!(rest.len(), 1, "{rest:?}");
        assert!(rest[0].starts_with("::error title=aviary%3A 4 more errors::and 4 more errors"));
        // 8 + 1 + the verdict: the runner's 10.
        assert!(shown.len() + rest.len() < KEPT_PER_TYPE);

        // Nine fit: the ninth is shown at the end, as itself.
        let mut a = Annotations::default();
        let shown = (1..=9)
            .filter_map(|i| a.add(Level::Warning, format!("w{i}")))
            .count();
        assert_eq!(shown, 8);
        assert_eq!(a.rest(), vec!["w9".to_string()]);
    }

    #[test]
    fn an_annotation_points_at_a_repository_file_or_nowhere() {
        let dir = std::env::temp_dir().join(format!("aviary-gh-{}", std::process::id()));
        let sub = dir.join("k8s");
        let _ = std::fs::create_dir_all(&sub);
        let _ = std::fs::write(sub.join("canary.yaml"), "kind: Canary\n");
        let ws = dir.display().to_string();
        let gh = github(&[("GITHUB_WORKSPACE", ws.as_str())]);
        let file = sub.join("canary.yaml").display().to_string();
        assert_eq!(
            gh.annotation(Level::Error, "t", "m", Some((&file, 3))),
            "::error file=k8s/canary.yaml,line=3,title=t::m"
        );
        assert_eq!(
            gh.annotation(Level::Error, "t", "m", Some(("k8s/canary.yaml", 3))),
            "::error file=k8s/canary.yaml,line=3,title=t::m"
        );
        // A rendered stream is no file of the repository: no file, no line.
        for origin in [
            format!("{ws}/sub/app/skaffold.yaml (target prod, rendered)"),
            "sub/app/skaffold.yaml (target prod, rendered)".to_string(),
            "/etc/hostname".to_string(),
        ] {
            assert_eq!(
                gh.annotation(Level::Error, "t", "m", Some((&origin, 24))),
                "::error title=t::m",
                "{origin}"
            );
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn long_descriptions_fit_githubs_140_characters() {
        let t = truncate(&"x".repeat(300), 140);
        assert_eq!(t.chars().count(), 140);
        assert!(t.ends_with('…'));
    }
}
