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

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::{Env, FinishError, Level, PipelineHost, StepRequest};
use aviary_core::engine::sim::TickLog;
use aviary_core::report::{summary, Report, Verdict};

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
            .set_read_timeout(Some(req.deadline))
            .set_write_timeout(Some(req.deadline))
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

/// A warning in the log and as an annotation. Main thread only: the command holds stdout's
/// lock while it runs, so a background task logs with `tracing` and leaves annotations to
/// [`Github::finish`].
fn warn(title: &str, message: &str) {
    tracing::warn!("{message}");
    emit(&command(
        "warning",
        &[("title", title.to_string())],
        message,
    ));
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
        }
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
        let Some(path) = self.var(var) else {
            return Ok(());
        };
        let failed = |source| FinishError::Write {
            what: format!("${var}"),
            path: path.clone(),
            source,
        };
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(failed)?;
        f.write_all(text.as_bytes()).map_err(failed)
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
        out.push_str(&output_entry("report", &report_path.display().to_string()));
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
        let name = match level {
            Level::Error => "error",
            Level::Warning => "warning",
            Level::Notice => "notice",
        };
        let mut props = Vec::new();
        if let Some((file, line)) = at {
            let workspace = self.var("GITHUB_WORKSPACE").unwrap_or_default();
            let file = file
                .strip_prefix(&format!("{workspace}/"))
                .unwrap_or(file)
                .trim_start_matches("./");
            props.push(("file", file.to_string()));
            if line > 0 {
                props.push(("line", line.to_string()));
            }
        }
        props.push(("title", title.to_string()));
        emit(&command(name, &props, message));
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
        let title = format!("aviary: {}", report.verdict.human());
        match report.verdict {
            v if v.is_success() => self.annotate(Level::Notice, &title, &report.headline(), None),
            Verdict::NoVerdict | Verdict::Cancelled => {
                self.annotate(Level::Warning, &title, &report.headline(), None)
            }
            _ => self.annotate(Level::Error, &title, &report.headline(), None),
        }
        if let (Some(task), Some(rt)) = (self.deployment.take(), self.rt.take()) {
            let state = Self::deployment_state(report.verdict);
            let headline = report.headline();
            let deadline = self.deadline;
            rt.block_on(async {
                // The creation had the whole release to finish; give it one more deadline.
                let created = match tokio::time::timeout(deadline, task).await {
                    Ok(Ok((created, warnings))) => {
                        for w in warnings {
                            emit(&command(
                                "warning",
                                &[("title", "aviary: GitHub Deployment".to_string())],
                                &w,
                            ));
                        }
                        created
                    }
                    Ok(Err(e)) => {
                        warn(
                            "aviary: GitHub Deployment",
                            &format!("the GitHub Deployment task failed: {e}"),
                        );
                        None
                    }
                    Err(_) => {
                        warn(
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
                        warn(
                            "aviary: GitHub Deployment",
                            &format!("could not set GitHub Deployment {} to {state}: {e}", d.id),
                        );
                    }
                }
            });
            // Connections still open to a GitHub that does not answer are dropped, not awaited.
            rt.shutdown_background();
        }
        FinishError::from_all(problems)
    }

    fn default_report(&self) -> PathBuf {
        // RUNNER_TEMP is shared with later steps of the job; the workspace is too.
        match self.var("RUNNER_TEMP") {
            Some(dir) => PathBuf::from(dir).join("aviary-report.json"),
            None => PathBuf::from("aviary-report.json"),
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

    #[test]
    fn long_descriptions_fit_githubs_140_characters() {
        let t = truncate(&"x".repeat(300), 140);
        assert_eq!(t.chars().count(), 140);
        assert!(t.ends_with('…'));
    }
}
