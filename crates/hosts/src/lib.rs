//! Pipeline hosts: how aviary runs as a step of GitHub Actions, Cloud Deploy or Tekton.
//!
//! `aviary step` finds its host (from `--host`, else from the environment each host sets), reads
//! the step's inputs in the host's convention ([`PipelineHost::input`]: GitHub's `INPUT_*`,
//! Tekton's `PARAM_*`, `AVIARY_INPUT_*` elsewhere), maps them onto aviary's commands (render,
//! deploy, rollout, release, simulate), and reports the verdict in the host's terms
//! ([`PipelineHost::finish`]). Cloud Deploy's custom target is a different shape of request
//! (RENDER and DEPLOY with GCS paths) and has its own driver in [`cloud_deploy`].

pub mod cloud_deploy;
pub mod gcs;
pub mod github;
pub mod tekton;

use std::path::{Path, PathBuf};

use crate::app::AppError;
use crate::cli::{
    CanaryArgs, ClusterArgs, DeployArgs, RenderArgs, RenderSource, RolloutArgs, SimulateArgs,
    StepArgs,
};
use aviary_core::exit::Exit;
use aviary_core::report::{Log, Observer, Report, Verdict};
use crate::rollout::{self, RunContext};

/// Reads one environment variable; `None` when unset. Hosts take one, so tests can give a map.
pub type Env = dyn Fn(&str) -> Option<String> + Send + Sync;

/// The process environment.
pub fn process_env() -> Box<Env> {
    Box::new(|k: &str| std::env::var(k).ok())
}

/// Which host to speak to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum HostChoice {
    /// Find out from the environment: `GITHUB_ACTIONS=true`, `CLOUD_DEPLOY_REQUEST_TYPE`,
    /// Tekton's `/tekton/results`; else local.
    Auto,
    Github,
    CloudDeploy,
    Tekton,
    /// No pipeline host: inputs from `AVIARY_INPUT_<NAME>`, the report file only.
    Local,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostKind {
    Github,
    CloudDeploy,
    Tekton,
    Local,
}

/// The host a step runs on.
pub fn detect(choice: HostChoice, env: &Env) -> HostKind {
    let set = |k: &str| env(k).is_some_and(|v| !v.is_empty());
    match choice {
        HostChoice::Github => HostKind::Github,
        HostChoice::CloudDeploy => HostKind::CloudDeploy,
        HostChoice::Tekton => HostKind::Tekton,
        HostChoice::Local => HostKind::Local,
        HostChoice::Auto => {
            if env("GITHUB_ACTIONS").as_deref() == Some("true") {
                HostKind::Github
            } else if set("CLOUD_DEPLOY_REQUEST_TYPE") {
                HostKind::CloudDeploy
            } else if set("RESULT_VERDICT_PATH") || Path::new("/tekton/results").is_dir() {
                HostKind::Tekton
            } else {
                HostKind::Local
            }
        }
    }
}

/// How loud an annotation is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Error,
    Warning,
    Notice,
}

/// One pipeline host: inputs in, progress and verdict out.
pub trait PipelineHost {
    fn name(&self) -> &'static str;
    /// The input `name` (action.yml / Task param spelling, e.g. `kube-context`) as given, `None`
    /// when unset.
    fn raw_input(&self, name: &str) -> Option<String>;
    /// The input `name`, trimmed; `None` when unset or empty.
    fn input(&self, name: &str) -> Option<String> {
        self.raw_input(name)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    }
    /// Keeps `secret` out of the host's logs from now on.
    fn mask(&self, _secret: &str) {}
    /// Starts a collapsible section of the log.
    fn begin(&mut self, _title: &str) {}
    fn end(&mut self) {}
    /// A message the host shows beside the log, at a file and line when there is one.
    fn annotate(&self, _level: Level, _title: &str, _message: &str, _at: Option<(&str, usize)>) {}
    /// Live progress of a rollout, tick by tick.
    fn progress(&self, _title: String) -> Option<Observer> {
        None
    }
    /// Called once the inputs are read, before anything changes.
    fn started(&mut self, _req: &StepRequest) {}
    /// Reports the verdict (outputs, summary, results). An error here fails the step.
    fn finish(&mut self, report: &Report, report_path: &Path) -> Result<(), String>;
    /// Where the JSON report goes when the `report` input is not given.
    fn default_report(&self) -> PathBuf;
}

/// No pipeline host: inputs from `AVIARY_INPUT_<NAME>`.
pub struct Local {
    env: Box<Env>,
}

impl PipelineHost for Local {
    fn name(&self) -> &'static str {
        "local"
    }

    fn raw_input(&self, name: &str) -> Option<String> {
        (self.env)(&format!(
            "AVIARY_INPUT_{}",
            name.replace('-', "_").to_uppercase()
        ))
    }

    fn finish(&mut self, _report: &Report, _report_path: &Path) -> Result<(), String> {
        Ok(())
    }

    fn default_report(&self) -> PathBuf {
        PathBuf::from("aviary-report.json")
    }
}

/// What a step is asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepCommand {
    /// Deploy the dev target and wait for it, then roll the target out through the canary.
    Release,
    Render,
    Deploy,
    Rollout,
    Simulate,
}

impl StepCommand {
    pub fn as_str(self) -> &'static str {
        match self {
            StepCommand::Release => "release",
            StepCommand::Render => "render",
            StepCommand::Deploy => "deploy",
            StepCommand::Rollout => "rollout",
            StepCommand::Simulate => "simulate",
        }
    }

    /// Whether the command changes a cluster (and so is a GitHub Deployment).
    pub fn deploys(self) -> bool {
        matches!(
            self,
            StepCommand::Release | StepCommand::Deploy | StepCommand::Rollout
        )
    }
}

/// The inputs every host maps onto, with their defaults applied.
#[derive(Debug, Clone)]
pub struct StepRequest {
    pub command: StepCommand,
    pub target: String,
    pub dev_target: Option<String>,
    pub skaffold_file: PathBuf,
    pub profile: Option<String>,
    pub images: Vec<String>,
    pub build_artifacts: Option<PathBuf>,
    pub canary_file: Option<PathBuf>,
    pub canary_name: Option<String>,
    pub kubeconfig: Option<PathBuf>,
    pub kube_context: Option<String>,
    pub namespace: Option<String>,
    pub provider: String,
    pub timeout: String,
    pub prometheus_url: Option<String>,
    pub prometheus_token: Option<String>,
    pub metrics: Option<PathBuf>,
    pub output_dir: PathBuf,
    pub report: Option<PathBuf>,
    pub github_token: Option<String>,
    pub environment: Option<String>,
    pub environment_url: Option<String>,
}

/// The inputs a step reads, for `action.yml` and the Tekton Task to declare (tests hold them to
/// it).
pub const INPUTS: &[&str] = &[
    "command",
    "target",
    "dev-target",
    "skaffold-file",
    "profile",
    "images",
    "build-artifacts",
    "canary-file",
    "canary-name",
    "kubeconfig",
    "kube-context",
    "namespace",
    "provider",
    "timeout",
    "prometheus-url",
    "prometheus-token",
    "metrics",
    "output-dir",
    "report",
    "github-token",
    "environment",
    "environment-url",
];

impl StepRequest {
    /// Reads the inputs of `host`.
    pub fn read(host: &dyn PipelineHost) -> Result<StepRequest, AppError> {
        let get = |n: &str| host.input(n);
        let command = match get("command").as_deref() {
            None | Some("release") => StepCommand::Release,
            Some("render") => StepCommand::Render,
            Some("deploy") => StepCommand::Deploy,
            Some("rollout") => StepCommand::Rollout,
            Some("simulate") => StepCommand::Simulate,
            Some(other) => {
                return Err(
                    AppError::input(format!("input `command`: unknown command {other:?}"))
                        .with_help("use one of release, render, deploy, rollout, simulate"),
                )
            }
        };
        let path = |n: &str| get(n).map(PathBuf::from);
        let req = StepRequest {
            command,
            target: get("target").unwrap_or_else(|| "prod".into()),
            // `dev-target: ""` (or `none`) skips the dev deploy of a release; unset means `dev`.
            dev_target: match host.raw_input("dev-target").map(|t| t.trim().to_string()) {
                Some(t) if t.is_empty() || t == "none" => None,
                Some(t) => Some(t),
                None => Some("dev".into()),
            },
            skaffold_file: path("skaffold-file").unwrap_or_else(|| "skaffold.yaml".into()),
            profile: get("profile"),
            images: get("images")
                .map(|s| {
                    s.split([',', '\n'])
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(String::from)
                        .collect()
                })
                .unwrap_or_default(),
            build_artifacts: path("build-artifacts"),
            canary_file: path("canary-file"),
            canary_name: get("canary-name"),
            kubeconfig: path("kubeconfig"),
            kube_context: get("kube-context"),
            namespace: get("namespace"),
            provider: get("provider").unwrap_or_else(|| "istio".into()),
            timeout: get("timeout").unwrap_or_else(|| "30m".into()),
            prometheus_url: get("prometheus-url")
                .or_else(|| std::env::var("AVIARY_PROMETHEUS_URL").ok()),
            prometheus_token: get("prometheus-token")
                .or_else(|| std::env::var("AVIARY_PROMETHEUS_TOKEN").ok()),
            metrics: path("metrics"),
            output_dir: path("output-dir").unwrap_or_else(|| "aviary-rendered".into()),
            report: path("report"),
            github_token: get("github-token"),
            environment: get("environment"),
            environment_url: get("environment-url"),
        };
        if req.command == StepCommand::Simulate
            && (req.canary_file.is_none() || req.metrics.is_none())
        {
            return Err(AppError::input(
                "command simulate needs the inputs `canary-file` and `metrics`",
            )
            .with_help("for example canary-file: k8s/canary.yaml, metrics: k8s/timeline.yaml"));
        }
        Ok(req)
    }

    /// Values that must never be shown: tokens and passwords, from inputs or the environment.
    pub fn secrets(&self) -> Vec<String> {
        let mut out: Vec<String> = [&self.github_token, &self.prometheus_token]
            .into_iter()
            .flatten()
            .cloned()
            .collect();
        for var in ["AVIARY_PROMETHEUS_TOKEN", "AVIARY_PROMETHEUS_PASSWORD"] {
            if let Ok(v) = std::env::var(var) {
                out.push(v);
            }
        }
        out.retain(|s| !s.trim().is_empty());
        out
    }

    fn source(&self) -> RenderSource {
        RenderSource {
            skaffold_file: self.skaffold_file.clone(),
            profile: self.profile.clone(),
            images: self.images.clone(),
            build_artifacts: self.build_artifacts.clone(),
        }
    }

    fn cluster(&self) -> ClusterArgs {
        ClusterArgs {
            kubeconfig: self.kubeconfig.clone(),
            context: self.kube_context.clone(),
            request_timeout: "15s".into(),
        }
    }

    fn deploy_args(&self, target: &str) -> DeployArgs {
        DeployArgs {
            target: target.to_string(),
            source: self.source(),
            namespace: self.namespace.clone(),
            cluster: self.cluster(),
            timeout: "5m".into(),
            prune: false,
            report: None,
        }
    }

    pub fn rollout_args(&self) -> RolloutArgs {
        RolloutArgs {
            file: self.canary_file.clone(),
            target: if self.canary_file.is_some() {
                None
            } else {
                Some(self.target.clone())
            },
            source: self.source(),
            name: self.canary_name.clone(),
            namespace: self.namespace.clone(),
            provider: self.provider.clone(),
            cluster: self.cluster(),
            timeout: Some(self.timeout.clone()),
            prometheus_url: self.prometheus_url.clone(),
            prometheus_token: self.prometheus_token.clone(),
            prometheus_username: std::env::var("AVIARY_PROMETHEUS_USERNAME").ok(),
            prometheus_password: std::env::var("AVIARY_PROMETHEUS_PASSWORD").ok(),
            report: None,
        }
    }
}

/// Makes the host `kind` on `env`.
pub fn host(kind: HostKind, env: Box<Env>) -> Box<dyn PipelineHost> {
    match kind {
        HostKind::Github => Box::new(github::Github::new(env)),
        HostKind::Tekton => Box::new(tekton::Tekton::new(env)),
        HostKind::Local | HostKind::CloudDeploy => Box::new(Local { env }),
    }
}

/// `aviary step`.
pub fn run(args: &StepArgs) -> Result<Exit, AppError> {
    let env = process_env();
    let kind = detect(args.host, &*env);
    if kind == HostKind::CloudDeploy {
        return cloud_deploy::run(env);
    }
    let mut host = host(kind, env);
    let (mut report, report_path) = match StepRequest::read(&*host) {
        Ok(req) => {
            for secret in req.secrets() {
                host.mask(&secret);
            }
            let path = args
                .report
                .clone()
                .or_else(|| req.report.clone())
                .unwrap_or_else(|| host.default_report());
            tracing::info!(
                "aviary {} on {}: target {}",
                req.command.as_str(),
                host.name(),
                req.target
            );
            host.started(&req);
            let report = match execute(&req, &mut *host) {
                Ok(report) => report,
                Err(e) => failure(&mut *host, &e, req.command.as_str()),
            };
            (report, path)
        }
        Err(e) => {
            let path = args.report.clone().unwrap_or_else(|| host.default_report());
            (failure(&mut *host, &e, "step"), path)
        }
    };
    report.host = Some(host.name().to_string());
    let mut exit = rollout::exit_of(&report);
    if let Err(e) = report.write(&report_path) {
        tracing::error!("cannot write the report {}: {e}", report_path.display());
        exit = if exit == Exit::Success {
            Exit::Runtime
        } else {
            exit
        };
    }
    if let Err(e) = host.finish(&report, &report_path) {
        tracing::error!("cannot report to {}: {e}", host.name());
        exit = if exit == Exit::Success {
            Exit::Runtime
        } else {
            exit
        };
    }
    Ok(exit)
}

/// Logs an error, annotates the host with it (spec errors at their file and line), and turns it
/// into a report.
fn failure(host: &mut dyn PipelineHost, err: &AppError, command: &str) -> Report {
    host.end();
    err.report();
    if let AppError::Spec(aviary_core::spec::SpecError::Invalid { errors, warnings }) = err {
        for (level, d) in errors
            .iter()
            .map(|d| (Level::Error, d))
            .chain(warnings.iter().map(|d| (Level::Warning, d)))
        {
            let title = if d.path.is_empty() {
                "aviary: invalid spec".to_string()
            } else {
                d.path.clone()
            };
            let message = match &d.help {
                Some(help) => format!("{}\nhelp: {help}", d.message),
                None => d.message.clone(),
            };
            host.annotate(level, &title, &message, Some((&d.file, d.line)));
        }
    }
    rollout::failed_report(err, command)
}

/// Runs the stages of a step, each in its own section of the log.
fn execute(req: &StepRequest, host: &mut dyn PipelineHost) -> Result<Report, AppError> {
    match req.command {
        StepCommand::Render => {
            host.begin(&format!("aviary render {}", req.target));
            let args = RenderArgs {
                target: req.target.clone(),
                source: req.source(),
                output: req.output_dir.clone(),
            };
            aviary_kube::render::run(&args, &mut std::io::sink())?;
            host.end();
            let mut report = Report::new(Verdict::Rendered);
            report.command = Some("render".into());
            report.target = Some(req.target.clone());
            report.message = Some(format!("rendered to {}", req.output_dir.display()));
            Ok(report.exit(Exit::Success))
        }
        StepCommand::Deploy => {
            host.begin(&format!("aviary deploy {}", req.target));
            let report = rollout::run_deploy(&req.deploy_args(&req.target))?;
            host.end();
            Ok(report)
        }
        StepCommand::Rollout => rollout_stage(req, host),
        StepCommand::Release => {
            let mut warnings = Vec::new();
            if let Some(dev) = req.dev_target.as_deref().filter(|d| *d != req.target) {
                host.begin(&format!("aviary deploy {dev}"));
                let dev_report = rollout::run_deploy(&req.deploy_args(dev))?;
                warnings.extend(dev_report.warnings);
                host.end();
            }
            let mut report = rollout_stage(req, host)?;
            report.command = Some("release".into());
            warnings.append(&mut report.warnings);
            report.warnings = warnings;
            Ok(report)
        }
        StepCommand::Simulate => {
            host.begin("aviary simulate");
            let args = SimulateArgs {
                canary: CanaryArgs {
                    file: req.canary_file.clone().unwrap_or_default(),
                    name: req.canary_name.clone(),
                    namespace: req.namespace.clone(),
                    provider: req.provider.clone(),
                },
                metrics: req.metrics.clone().unwrap_or_default(),
                json: false,
                max_ticks: None,
                report: None,
            };
            let (_, report) = aviary_core::simulate::run_report(&args)?;
            host.end();
            Ok(report)
        }
    }
}

fn rollout_stage(req: &StepRequest, host: &mut dyn PipelineHost) -> Result<Report, AppError> {
    let title = format!("aviary rollout {}", req.target);
    host.begin(&title);
    let log = Log::new();
    if let Some(observer) = host.progress(title) {
        log.observe(observer);
    }
    let ctx = RunContext {
        log,
        ..RunContext::default()
    };
    let report = rollout::run_rollout(&req.rollout_args(), ctx)?;
    host.end();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> Box<Env> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Box::new(move |k: &str| map.get(k).cloned())
    }

    #[test]
    fn the_host_is_found_from_its_environment() {
        let auto = HostChoice::Auto;
        assert_eq!(
            detect(auto, &*env(&[("GITHUB_ACTIONS", "true")])),
            HostKind::Github
        );
        assert_eq!(
            detect(auto, &*env(&[("CLOUD_DEPLOY_REQUEST_TYPE", "RENDER")])),
            HostKind::CloudDeploy
        );
        assert_eq!(
            detect(
                auto,
                &*env(&[("RESULT_VERDICT_PATH", "/tekton/results/verdict")])
            ),
            HostKind::Tekton
        );
        assert_eq!(
            detect(HostChoice::Tekton, &*env(&[("GITHUB_ACTIONS", "true")])),
            HostKind::Tekton,
            "--host wins"
        );
    }

    #[test]
    fn inputs_are_read_in_each_hosts_spelling_with_defaults() {
        let gh = host(
            HostKind::Github,
            env(&[
                ("INPUT_COMMAND", "rollout"),
                ("INPUT_KUBE-CONTEXT", "gke-prod"),
                ("INPUT_IMAGES", "a=a:1,\nb=b:2"),
            ]),
        );
        let req = match StepRequest::read(&*gh) {
            Ok(r) => r,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(req.command, StepCommand::Rollout);
        assert_eq!(req.kube_context.as_deref(), Some("gke-prod"));
        assert_eq!(req.images, vec!["a=a:1", "b=b:2"]);
        assert_eq!(req.target, "prod");
        assert_eq!(req.timeout, "30m");
        let tk = host(
            HostKind::Tekton,
            env(&[
                ("PARAM_DEV_TARGET", "none"),
                ("PARAM_SKAFFOLD_FILE", "app/skaffold.yaml"),
            ]),
        );
        let req = match StepRequest::read(&*tk) {
            Ok(r) => r,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(req.command, StepCommand::Release);
        assert_eq!(req.dev_target, None);
        assert_eq!(req.skaffold_file, PathBuf::from("app/skaffold.yaml"));
    }

    #[test]
    fn an_unknown_command_is_bad_input() {
        let gh = host(HostKind::Github, env(&[("INPUT_COMMAND", "ship-it")]));
        match StepRequest::read(&*gh) {
            Err(e) => {
                assert_eq!(e.exit(), Exit::InvalidInput);
                assert!(e.to_string().contains("ship-it"), "{e}");
            }
            Ok(r) => panic!("accepted {r:?}"),
        }
    }
}
