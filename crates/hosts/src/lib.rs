//! Pipeline hosts: how aviary runs as a step of GitHub Actions, Cloud Deploy or Tekton.
//!
//! `aviary step` finds its host (from `--host`, else from the environment each host sets), reads
//! the step's inputs in the host's convention ([`PipelineHost::input`]: GitHub's `INPUT_*`,
//! Tekton's `PARAM_*`, `AVIARY_INPUT_*` elsewhere), maps them onto aviary's commands (render,
//! deploy, rollout, release, simulate), and reports the verdict in the host's terms
//! ([`PipelineHost::finish`]). Cloud Deploy's custom target is a different shape of request
//! (RENDER and DEPLOY with GCS paths): [`cloud_deploy`] reads it and writes its `results.json`.
//!
//! A host only reads and reports: it turns its inputs into a [`StepRequest`] and from that into
//! the typed requests of `aviary_core::request` (a bad value named as the input the user set),
//! and the binary's `step` command runs them. Every environment variable a host reads comes
//! through the injected [`Env`], so tests give a map and nothing leaks in from the process.

pub mod cloud_deploy;
pub mod gcs;
pub mod github;
pub mod gke;
pub mod tekton;

use std::path::{Path, PathBuf};

use aviary_core::exit::Exit;
use aviary_core::report::{Observer, Report};
use aviary_core::request::{self, BadValue, CanarySource, Origin, RenderSource};

/// Reads one environment variable; `None` when unset. Hosts take one, so tests can give a map.
pub type Env = dyn Fn(&str) -> Option<String> + Send + Sync;

/// The process environment.
pub fn process_env() -> Box<Env> {
    Box::new(|k: &str| std::env::var(k).ok())
}

/// Why a step's inputs cannot be used (exit 2, bad input).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct HostError {
    pub message: String,
    /// The fix.
    pub help: Option<String>,
}

impl HostError {
    pub fn new(message: impl Into<String>, help: impl Into<String>) -> HostError {
        HostError {
            message: message.into(),
            help: Some(help.into()),
        }
    }

    /// Bad input: exit 2.
    pub fn exit(&self) -> Exit {
        Exit::InvalidInput
    }
}

impl From<BadValue> for HostError {
    fn from(e: BadValue) -> Self {
        HostError {
            help: Some(e.help.clone()),
            message: e.to_string(),
        }
    }
}

/// Which host to speak to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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

impl HostChoice {
    /// The spellings `--host` accepts.
    pub const NAMES: &'static [&'static str] =
        &["auto", "github", "cloud-deploy", "tekton", "local"];
}

impl std::str::FromStr for HostChoice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "auto" => HostChoice::Auto,
            "github" => HostChoice::Github,
            "cloud-deploy" => HostChoice::CloudDeploy,
            "tekton" => HostChoice::Tekton,
            "local" => HostChoice::Local,
            other => {
                return Err(format!(
                    "unknown host {other:?}; use one of {}",
                    HostChoice::NAMES.join(", ")
                ))
            }
        })
    }
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
    /// The environment variable `name` of the step (through the injected [`Env`]).
    fn var(&self, name: &str) -> Option<String>;
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
    fn finish(&mut self, report: &Report, report_path: &Path) -> Result<(), FinishError>;
    /// Where the JSON report goes when the `report` input is not given.
    fn default_report(&self) -> PathBuf;
    /// The `report` input alone, resolved as the step reads it: where a step whose other inputs
    /// cannot be read still writes its report.
    fn report_input(&self) -> Option<PathBuf> {
        self.input("report").map(|p| self.resolve(PathBuf::from(p)))
    }
    /// Inputs of the host's own (Tekton's `fail-on-rollback`, its bound workspaces) checked
    /// before anything changes; an error is bad input (exit 2).
    fn check(&self) -> Result<(), HostError> {
        Ok(())
    }
    /// The process's exit for the report's `exit` (Tekton's `fail-on-rollback: "false"` turns a
    /// rollback into success; the results still say rolled back).
    fn exit(&self, exit: Exit) -> Exit {
        exit
    }
    /// A path input (or its default) as the host means it: GitHub's relative paths are in the
    /// workspace.
    fn resolve(&self, path: PathBuf) -> PathBuf {
        path
    }
    /// A writer of values the host hands to a later step of the same action (GitHub's
    /// `$GITHUB_STATE`, read back by the post step); `None` where the host has no such thing.
    fn state_saver(&self) -> Option<SaveState> {
        None
    }
    /// A value an earlier step of this action saved with [`PipelineHost::state_saver`].
    fn saved_state(&self, _name: &str) -> Option<String> {
        None
    }
}

/// Saves one named value for a later step of the action (see [`PipelineHost::state_saver`]).
pub type SaveState = std::sync::Arc<dyn Fn(&str, &str) -> Result<(), FinishError> + Send + Sync>;

/// The state entry naming the canary (`namespace/name`) a step is rolling out; empty once the
/// rollout ended (whatever its verdict). A post step that finds it set knows the step was killed
/// mid-rollout and rolls the canary back.
pub const ROLLOUT_STATE: &str = "aviary_rollout";

/// Why a host could not report a verdict (the step then fails).
#[derive(Debug, thiserror::Error)]
pub enum FinishError {
    /// A file the host reads after the step (`$GITHUB_OUTPUT`, a Tekton result).
    #[error("{what} ({path}): {source}")]
    Write {
        what: String,
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// Values the host would refuse (Tekton results over their size limit).
    #[error(
        "the results would make a {total}-byte termination message, over Tekton's {limit} per \
         step; use a shorter report path"
    )]
    TooLarge { total: usize, limit: usize },
    /// Cloud Deploy's `results.json` could not be uploaded (Cloud Deploy sees no result).
    #[error("results.json: {0}")]
    Upload(#[from] gcs::GcsError),
    /// No runtime for the host's own calls.
    #[error("cannot start the runtime for the host's calls: {0}")]
    Runtime(std::io::Error),
    /// More than one of the above.
    #[error("{}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; "))]
    Several(Vec<FinishError>),
}

impl FinishError {
    /// `Ok` when `problems` is empty, else the one problem or all of them.
    pub fn from_all(mut problems: Vec<FinishError>) -> Result<(), FinishError> {
        match problems.len() {
            0 => Ok(()),
            1 => Err(problems.remove(0)),
            _ => Err(FinishError::Several(problems)),
        }
    }
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

    fn var(&self, name: &str) -> Option<String> {
        (self.env)(name)
    }

    fn finish(&mut self, _report: &Report, _report_path: &Path) -> Result<(), FinishError> {
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
    /// `verdict-policy`: how the verdicts of the target's Canaries combine (empty: the default).
    pub verdict_policy: String,
    pub prometheus_url: Option<String>,
    pub prometheus_token: Option<String>,
    /// Basic auth for Prometheus, from `AVIARY_PROMETHEUS_USERNAME`/`_PASSWORD` only (never inputs).
    pub prometheus_username: Option<String>,
    pub prometheus_password: Option<String>,
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
    "verdict-policy",
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
    pub fn read(host: &dyn PipelineHost) -> Result<StepRequest, HostError> {
        host.check()?;
        let get = |n: &str| host.input(n);
        let command = match get("command").as_deref() {
            None | Some("release") => StepCommand::Release,
            Some("render") => StepCommand::Render,
            Some("deploy") => StepCommand::Deploy,
            Some("rollout") => StepCommand::Rollout,
            Some("simulate") => StepCommand::Simulate,
            Some(other) => {
                return Err(HostError::new(
                    format!("input `command`: unknown command {other:?}"),
                    "use one of release, render, deploy, rollout, simulate",
                ))
            }
        };
        let path = |n: &str| get(n).map(|p| host.resolve(PathBuf::from(p)));
        let req = StepRequest {
            command,
            target: get("target").unwrap_or_else(|| "prod".into()),
            // `dev-target: ""` (or `none`) skips the dev deploy of a release; unset means `dev`.
            dev_target: match host.raw_input("dev-target").map(|t| t.trim().to_string()) {
                Some(t) if t.is_empty() || t == "none" => None,
                Some(t) => Some(t),
                None => Some("dev".into()),
            },
            skaffold_file: path("skaffold-file")
                .unwrap_or_else(|| host.resolve("skaffold.yaml".into())),
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
            verdict_policy: get("verdict-policy").unwrap_or_default(),
            prometheus_url: get("prometheus-url").or_else(|| host.var("AVIARY_PROMETHEUS_URL")),
            prometheus_token: get("prometheus-token")
                .or_else(|| host.var("AVIARY_PROMETHEUS_TOKEN")),
            prometheus_username: host.var("AVIARY_PROMETHEUS_USERNAME"),
            prometheus_password: host.var("AVIARY_PROMETHEUS_PASSWORD"),
            metrics: path("metrics"),
            output_dir: path("output-dir")
                .unwrap_or_else(|| host.resolve("aviary-rendered".into())),
            report: host.report_input(),
            github_token: get("github-token"),
            environment: get("environment"),
            environment_url: get("environment-url"),
        };
        if req.command == StepCommand::Simulate
            && (req.canary_file.is_none() || req.metrics.is_none())
        {
            return Err(HostError::new(
                "command simulate needs the inputs `canary-file` and `metrics`",
                "for example canary-file: k8s/canary.yaml, metrics: k8s/timeline.yaml",
            ));
        }
        // A bad value is refused before anything changes, named as the input it came from.
        match req.command {
            StepCommand::Rollout | StepCommand::Release => {
                req.rollout()?;
            }
            StepCommand::Simulate => {
                req.simulate()?;
            }
            StepCommand::Render | StepCommand::Deploy => {}
        }
        Ok(req)
    }

    /// Values that must never be shown: tokens and passwords, from inputs or the environment.
    pub fn secrets(&self) -> Vec<String> {
        let mut out: Vec<String> = [&self.github_token]
            .into_iter()
            .flatten()
            .cloned()
            .collect();
        out.extend(self.prometheus().secrets().map(String::from));
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

    /// How the step reaches the cluster.
    pub fn cluster(&self) -> request::Cluster {
        request::Cluster {
            kubeconfig: self.kubeconfig.clone(),
            context: self.kube_context.clone(),
            ..request::Cluster::default()
        }
    }

    fn prometheus(&self) -> request::Prometheus {
        request::Prometheus {
            url: self.prometheus_url.clone(),
            token: self.prometheus_token.clone(),
            username: self.prometheus_username.clone(),
            password: self.prometheus_password.clone(),
        }
    }

    /// The deploy of `target` (the dev target of a release, or the step's target).
    pub fn deploy(&self, target: &str) -> request::Deploy {
        request::Deploy {
            target: target.to_string(),
            source: self.source(),
            namespace: self.namespace.clone(),
            cluster: self.cluster(),
            timeout: std::time::Duration::from_secs(300),
            prune: false,
            report: None,
        }
    }

    /// The rollout of the step's target (or of `canary-file`).
    pub fn rollout(&self) -> Result<request::Rollout, BadValue> {
        Ok(request::Rollout {
            canary: match &self.canary_file {
                Some(file) => CanarySource::File(file.clone()),
                None => CanarySource::Target(self.target.clone()),
            },
            source: self.source(),
            name: self.canary_name.clone(),
            namespace: self.namespace.clone(),
            provider: request::provider(Origin::Input, "provider", &self.provider)?,
            cluster: self.cluster(),
            timeout: Some(request::duration(
                Origin::Input,
                "timeout",
                &self.timeout,
                "30m",
            )?),
            prometheus: self.prometheus(),
            report: None,
            policy: request::VerdictPolicy::parse(
                Origin::Input,
                "verdict-policy",
                &self.verdict_policy,
            )?,
        })
    }

    /// The render of the step's target into `output-dir`.
    pub fn render(&self) -> request::Render {
        request::Render {
            target: self.target.clone(),
            source: self.source(),
            output: self.output_dir.clone(),
        }
    }

    /// The simulation of `canary-file` against `metrics` (both checked by [`StepRequest::read`]).
    pub fn simulate(&self) -> Result<request::Simulate, BadValue> {
        Ok(request::Simulate {
            canary: request::CanaryFile {
                file: self.canary_file.clone().unwrap_or_default(),
                name: self.canary_name.clone(),
                namespace: self.namespace.clone(),
                provider: request::provider(Origin::Input, "provider", &self.provider)?,
            },
            metrics: self.metrics.clone().unwrap_or_default(),
            max_ticks: None,
            report: None,
        })
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
    fn a_bad_value_is_named_as_the_input_it_came_from() {
        let gh = host(
            HostKind::Github,
            env(&[
                ("INPUT_COMMAND", "rollout"),
                ("INPUT_TIMEOUT", "30 minutes"),
            ]),
        );
        match StepRequest::read(&*gh) {
            Err(e) => {
                assert!(e.message.starts_with("input `timeout`: "), "{e}");
                assert!(!e.message.contains("--timeout"), "{e}");
                assert_eq!(e.help.as_deref(), Some("for example `timeout: 30m`"));
                assert_eq!(e.exit(), Exit::InvalidInput);
            }
            Ok(r) => panic!("accepted {r:?}"),
        }
        let tk = host(
            HostKind::Tekton,
            env(&[("PARAM_COMMAND", "release"), ("PARAM_PROVIDER", "knative")]),
        );
        match StepRequest::read(&*tk) {
            Err(e) => assert!(e.message.starts_with("input `provider`: "), "{e}"),
            Ok(r) => panic!("accepted {r:?}"),
        }
    }

    #[test]
    fn the_environment_a_host_reads_is_the_injected_one() {
        let local = host(
            HostKind::Local,
            env(&[
                ("AVIARY_INPUT_COMMAND", "rollout"),
                ("AVIARY_PROMETHEUS_URL", "http://prom.test:9090"),
                ("AVIARY_PROMETHEUS_USERNAME", "bob"),
                ("AVIARY_PROMETHEUS_PASSWORD", "pa55word"),
            ]),
        );
        let req = match StepRequest::read(&*local) {
            Ok(r) => r,
            Err(e) => panic!("{e}"),
        };
        let rollout = match req.rollout() {
            Ok(r) => r,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(
            rollout.prometheus.url.as_deref(),
            Some("http://prom.test:9090")
        );
        assert_eq!(rollout.prometheus.username.as_deref(), Some("bob"));
        assert_eq!(req.secrets(), vec!["pa55word".to_string()]);
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
