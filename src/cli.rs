//! Command-line definitions, and the one place flags become typed requests
//! (`aviary_core::request`): each `…Args::request` checks its values and names a bad one as the
//! flag the user typed. Nothing past `cmd` sees a clap struct.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use aviary_core::request::{self, BadValue, CanarySource, Origin};
use aviary_hosts::HostChoice;

use crate::logging::LogFormat;

/// Progressive delivery as one pipeline step: canary, A/B and blue/green releases driven by
/// Flagger-compatible Canary specs, without an in-cluster operator.
#[derive(Debug, Parser)]
#[command(
    name = "aviary",
    version,
    propagate_version = true,
    max_term_width = 100
)]
pub struct Cli {
    /// Log format: `human` for people, `json` for machines (one object per line, on stderr).
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "human",
        env = "AVIARY_LOG_FORMAT"
    )]
    pub log_format: LogFormat,

    /// Minimum log level (error, warn, info, debug, trace). `AVIARY_LOG` overrides it.
    #[arg(long, global = true, default_value = "info")]
    pub log_level: String,

    #[command(subcommand)]
    pub command: Commands,
}

#[derive(Debug, Subcommand)]
pub enum Commands {
    /// Check Canary and MetricTemplate files and report every problem with its line and fix.
    Validate(ValidateArgs),
    /// Show the schedule a Canary implies: strategy, weights or iterations, and the fastest times
    /// to promotion and to rollback.
    Plan(PlanArgs),
    /// Run the canary engine on a simulated clock against a scripted timeline of metric values and
    /// webhook results, and show what it decides at every tick.
    Simulate(SimulateArgs),
    /// Render a target and apply it, waiting until its workloads have rolled out (no canary).
    Deploy(DeployArgs),
    /// Run a canary release on the cluster until it is promoted or rolled back.
    Rollout(RolloutArgs),
    /// Show the state of a canary's rollout, as stored in the cluster.
    Status(ControlArgs),
    /// Open the confirm gates (confirm-rollout, confirm-traffic-increase, confirm-promotion) of the
    /// revision a running rollout is analysing.
    Promote(ControlArgs),
    /// Roll a running rollout back now.
    Abort(AbortArgs),
    /// Render a Skaffold project's manifests for a target: kustomize overlays and raw YAML, with the
    /// images built for this release substituted; Canary documents are written apart.
    Render(RenderArgs),
    /// Run as a pipeline step: read the host's inputs (GitHub Actions `INPUT_*`, Tekton
    /// `PARAM_*`, Cloud Deploy `CLOUD_DEPLOY_*`), run the command they ask for, and report the
    /// verdict in the host's terms (outputs, summary, annotations, results).
    Step(StepArgs),
    /// Run as a Cloud Deploy custom target's render or deploy action (CLOUD_DEPLOY_REQUEST_TYPE).
    CloudDeploy,
    /// See a release on this machine: an emulated cluster, the demo app as real processes, a real
    /// traffic split and metrics from real requests; releases the shipped example live and ends
    /// with the verdict and the report a pipeline would get.
    #[cfg(feature = "sandbox")]
    Sandbox(aviary_sandbox::SandboxArgs),
    /// The sandbox's demo app (started by `aviary sandbox`).
    #[cfg(feature = "sandbox")]
    #[command(hide = true)]
    DemoApp(aviary_sandbox::app::DemoAppArgs),
}

impl Commands {
    /// Whether the command stops cleanly on SIGTERM/SIGINT (handlers installed at start).
    pub fn handles_signals(&self) -> bool {
        matches!(
            self,
            Commands::Step(_)
                | Commands::CloudDeploy
                | Commands::Rollout(_)
                | Commands::Deploy(_)
                | Commands::Render(_)
        )
    }
}

/// `aviary step`.
#[derive(Debug, Args)]
pub struct StepArgs {
    /// The pipeline host; `auto` finds it from the environment.
    #[arg(
        long,
        default_value = "auto",
        env = "AVIARY_HOST",
        value_parser = host_choice()
    )]
    pub host: HostChoice,

    /// Where to write the JSON report (default: the `report` input, else the host's default).
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,

    /// Run as the action's post step (the image's `aviary-post` entrypoint): when the main step
    /// was killed mid-rollout (its saved state still names the canary), roll that canary back.
    #[arg(long, conflicts_with = "report")]
    pub post: bool,
}

/// How to reach the cluster.
#[derive(Debug, Args)]
pub struct ClusterArgs {
    /// Kubeconfig file (default: $KUBECONFIG, then ~/.kube/config, then the in-cluster service account).
    #[arg(long, value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,

    /// Kubeconfig context (default: the current context).
    #[arg(long, value_name = "NAME")]
    pub context: Option<String>,

    /// Give up on one API request after this long and try it again (a Go duration).
    #[arg(long, value_name = "DURATION", default_value = "15s")]
    pub request_timeout: String,
}

#[derive(Debug, Args)]
pub struct RolloutArgs {
    /// File with the Canary (multi-document YAML). Either this or --target.
    #[arg(
        short = 'f',
        long = "file",
        value_name = "FILE",
        required_unless_present = "target",
        conflicts_with = "target"
    )]
    pub file: Option<PathBuf>,

    /// Render the Skaffold project for this target, apply it and roll out its Canary.
    #[arg(long, value_name = "TARGET")]
    pub target: Option<String>,

    #[command(flatten)]
    pub source: RenderSource,

    /// Roll out only this Canary (default: every Canary of the file or target, at once).
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,

    /// Namespace for a Canary (and rendered objects) that name none (default: the context's).
    #[arg(short = 'n', long, value_name = "NAMESPACE")]
    pub namespace: Option<String>,

    /// Provider to assume when the Canary sets no `spec.provider` (Flagger's `-mesh-provider`).
    #[arg(long, value_name = "PROVIDER", default_value = "istio")]
    pub provider: String,

    #[command(flatten)]
    pub cluster: ClusterArgs,

    /// Give up after this long (a Go duration such as 30m), returning traffic to the primary.
    #[arg(long, value_name = "DURATION")]
    pub timeout: Option<String>,

    /// With several Canaries: all-or-nothing (none is promoted until every changed one passed
    /// its analysis; one rolled back rolls the others back) or independent.
    #[arg(long, value_name = "POLICY", default_value = "all-or-nothing")]
    pub verdict_policy: String,

    /// Prometheus for the built-in metrics (and templates without an address) when the Canary
    /// sets no `metricsServer`. A path prefix is kept (Google Managed Prometheus' frontend).
    #[arg(long, value_name = "URL", env = "AVIARY_PROMETHEUS_URL")]
    pub prometheus_url: Option<String>,

    /// Bearer token for --prometheus-url (never logged).
    #[arg(
        long,
        value_name = "TOKEN",
        env = "AVIARY_PROMETHEUS_TOKEN",
        hide_env_values = true
    )]
    pub prometheus_token: Option<String>,

    /// Basic-auth user for --prometheus-url (with AVIARY_PROMETHEUS_PASSWORD; never logged).
    #[arg(
        long,
        value_name = "USER",
        env = "AVIARY_PROMETHEUS_USERNAME",
        hide_env_values = true
    )]
    pub prometheus_username: Option<String>,

    /// Basic-auth password for --prometheus-url; prefer the environment variable.
    #[arg(
        long,
        value_name = "PASSWORD",
        env = "AVIARY_PROMETHEUS_PASSWORD",
        hide_env_values = true
    )]
    pub prometheus_password: Option<String>,

    /// Write the full JSON report (the schema of `simulate --json`) to this file, also when the
    /// rollout fails.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ControlArgs {
    /// The Canary's name.
    #[arg(value_name = "CANARY")]
    pub name: String,

    /// The Canary's namespace (default: the context's namespace).
    #[arg(short = 'n', long, value_name = "NAMESPACE")]
    pub namespace: Option<String>,

    #[command(flatten)]
    pub cluster: ClusterArgs,

    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct AbortArgs {
    #[command(flatten)]
    pub control: ControlArgs,

    /// Why, for the events and the report.
    #[arg(long, default_value = "aborted with `aviary abort`")]
    pub reason: String,
}

/// Which Canary to use.
#[derive(Debug, Args)]
pub struct CanaryArgs {
    /// File with the Canary (multi-document YAML; MetricTemplates and other kinds may sit beside it).
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: PathBuf,

    /// The Canary to use when the file holds more than one.
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,

    /// Namespace for a Canary whose metadata has none (default: `default`).
    #[arg(short = 'n', long, value_name = "NAMESPACE")]
    pub namespace: Option<String>,

    /// Provider to assume when the Canary sets no `spec.provider` (Flagger's `-mesh-provider`).
    #[arg(long, value_name = "PROVIDER", default_value = "istio")]
    pub provider: String,
}

#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// Files to check.
    #[arg(short = 'f', long = "file", value_name = "FILE", required = true, num_args = 1..)]
    pub files: Vec<PathBuf>,

    /// Print the decoded objects and diagnostics as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    #[command(flatten)]
    pub canary: CanaryArgs,

    /// Print the plan as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct SimulateArgs {
    #[command(flatten)]
    pub canary: CanaryArgs,

    /// Timeline of metric values and webhook results (YAML; see the README).
    #[arg(short = 'm', long = "metrics", value_name = "TIMELINE")]
    pub metrics: PathBuf,

    /// Print the run as JSON.
    #[arg(long)]
    pub json: bool,

    /// Stop without a verdict after this many ticks (a gate that never opens, say).
    /// Default: the schedule's length plus 250 ticks.
    #[arg(long, value_name = "N")]
    pub max_ticks: Option<usize>,

    /// Also write the JSON report to this file.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct RenderArgs {
    /// The pipeline target (dev, prod, ...). The Skaffold profile of the same name applies when
    /// one exists.
    #[arg(long, value_name = "TARGET")]
    pub target: String,

    #[command(flatten)]
    pub source: RenderSource,

    /// A directory to write manifests.yaml (and canary.yaml when there are Canaries) into, or `-`
    /// to print both on stdout, manifests first.
    #[arg(short = 'o', long, value_name = "DIR", default_value = "-")]
    pub output: PathBuf,
}

/// Where manifests come from: a Skaffold project, its profile and the images built for it.
#[derive(Debug, Args)]
pub struct RenderSource {
    /// The Skaffold config; the project root is its directory.
    #[arg(long, value_name = "FILE", default_value = "skaffold.yaml")]
    pub skaffold_file: PathBuf,

    /// The Skaffold profile to apply instead of the target's (it must exist).
    #[arg(short = 'p', long, value_name = "PROFILE")]
    pub profile: Option<String>,

    /// Built images as name=ref (e.g. ghcr.io/acme/app=ghcr.io/acme/app:1@sha256:...); repeat
    /// the flag or separate them with commas. They win over --build-artifacts.
    #[arg(short = 'i', long, value_name = "NAME=REF", value_delimiter = ',')]
    pub images: Vec<String>,

    /// The file `skaffold build --file-output` writes ({"builds": [{"imageName", "tag"}]}).
    #[arg(long, value_name = "FILE")]
    pub build_artifacts: Option<PathBuf>,
}

/// `aviary deploy`.
#[derive(Debug, Args)]
pub struct DeployArgs {
    /// The pipeline target to render and apply (its Skaffold profile applies when one exists).
    #[arg(long, value_name = "TARGET")]
    pub target: String,

    #[command(flatten)]
    pub source: RenderSource,

    /// Namespace for rendered objects that name none (default: the context's namespace).
    #[arg(short = 'n', long, value_name = "NAMESPACE")]
    pub namespace: Option<String>,

    #[command(flatten)]
    pub cluster: ClusterArgs,

    /// How long workloads may take to roll out (a Go duration).
    #[arg(long, value_name = "DURATION", default_value = "5m")]
    pub timeout: String,

    /// Delete the objects an earlier deploy of this target applied that are no longer rendered.
    #[arg(long)]
    pub prune: bool,

    /// Write the JSON report to this file, also when the deploy fails.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
}

/// `--host`: the names clap lists in `--help` and checks, read into a [`HostChoice`].
fn host_choice() -> impl clap::builder::TypedValueParser<Value = HostChoice> {
    use clap::builder::TypedValueParser;
    clap::builder::PossibleValuesParser::new(HostChoice::NAMES)
        .try_map(|name| name.parse::<HostChoice>())
}

impl RenderSource {
    pub fn source(&self) -> request::RenderSource {
        request::RenderSource {
            skaffold_file: self.skaffold_file.clone(),
            profile: self.profile.clone(),
            images: self.images.clone(),
            build_artifacts: self.build_artifacts.clone(),
        }
    }
}

impl ClusterArgs {
    pub fn cluster(&self) -> Result<request::Cluster, BadValue> {
        Ok(request::Cluster {
            kubeconfig: self.kubeconfig.clone(),
            context: self.context.clone(),
            request_timeout: request::duration(
                Origin::Flag,
                "request-timeout",
                &self.request_timeout,
                "15s",
            )?,
        })
    }
}

impl RolloutArgs {
    pub fn request(&self) -> Result<request::Rollout, BadValue> {
        // clap requires exactly one of -f and --target.
        let canary = match (&self.file, &self.target) {
            (Some(file), _) => CanarySource::File(file.clone()),
            (None, Some(target)) => CanarySource::Target(target.clone()),
            (None, None) => {
                return Err(BadValue {
                    setting: "--file".into(),
                    message: "give the Canary with -f FILE, or a target with --target".into(),
                    help: "for example: aviary rollout --target prod".into(),
                })
            }
        };
        Ok(request::Rollout {
            canary,
            source: self.source.source(),
            name: self.name.clone(),
            namespace: self.namespace.clone(),
            provider: request::provider(Origin::Flag, "provider", &self.provider)?,
            cluster: self.cluster.cluster()?,
            timeout: match &self.timeout {
                Some(t) => Some(request::duration(Origin::Flag, "timeout", t, "30m")?),
                None => None,
            },
            prometheus: request::Prometheus {
                url: self.prometheus_url.clone(),
                token: self.prometheus_token.clone(),
                username: self.prometheus_username.clone(),
                password: self.prometheus_password.clone(),
            },
            report: self.report.clone(),
            policy: request::VerdictPolicy::parse(
                Origin::Flag,
                "verdict-policy",
                &self.verdict_policy,
            )?,
        })
    }
}

impl DeployArgs {
    pub fn request(&self) -> Result<request::Deploy, BadValue> {
        Ok(request::Deploy {
            target: self.target.clone(),
            source: self.source.source(),
            namespace: self.namespace.clone(),
            cluster: self.cluster.cluster()?,
            timeout: request::duration(Origin::Flag, "timeout", &self.timeout, "5m")?,
            prune: self.prune,
            report: self.report.clone(),
        })
    }
}

impl RenderArgs {
    pub fn request(&self) -> request::Render {
        request::Render {
            target: self.target.clone(),
            source: self.source.source(),
            output: self.output.clone(),
        }
    }
}

impl CanaryArgs {
    pub fn request(&self) -> Result<request::CanaryFile, BadValue> {
        Ok(request::CanaryFile {
            file: self.file.clone(),
            name: self.name.clone(),
            namespace: self.namespace.clone(),
            provider: request::provider(Origin::Flag, "provider", &self.provider)?,
        })
    }
}

impl SimulateArgs {
    pub fn request(&self) -> Result<request::Simulate, BadValue> {
        Ok(request::Simulate {
            canary: self.canary.request()?,
            metrics: self.metrics.clone(),
            max_ticks: self.max_ticks,
            report: self.report.clone(),
        })
    }
}
