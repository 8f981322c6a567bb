//! The commands: one file each, and the only place that wires the crates together. A command
//! takes its typed request (from `cli`, or from a host in `step` and `cloud-deploy`), calls
//! `aviary_kube` and `aviary_core`, and returns an exit code; here is what they share: the error
//! every command can stop with, loading the Canary, and writing reports.

pub mod cloud_deploy;
pub mod control;
pub mod deploy;
pub mod plan;
pub mod render;
pub mod rollout;
#[cfg(feature = "sandbox")]
pub mod sandbox;
pub mod simulate;
pub mod status;
pub mod step;
pub mod validate;

use std::io::Write;

use aviary_core::engine::{Config, EngineError};
use aviary_core::exit::Exit;
use aviary_core::report::{Report, Verdict};
use aviary_core::request::{BadValue, CanaryFile};
use aviary_core::spec::{self, Canary, Diagnostic, SpecError};

use crate::cli::{Cli, Commands};
use crate::logging;

/// Everything that can stop a command, mapped to an exit code.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// Input that cannot be used, with the fix when we know it.
    #[error("{message}")]
    Input {
        message: String,
        help: Option<String>,
    },
    /// The engine refused an input: a bug in aviary's own driver.
    #[error("internal error: {0}")]
    Engine(#[from] EngineError),
    #[error("cannot write output: {0}")]
    Output(#[from] std::io::Error),
    #[error(transparent)]
    Run(Box<aviary_kube::runner::RunError>),
    #[error(transparent)]
    Deploy(Box<aviary_kube::deploy::DeployError>),
    #[error(transparent)]
    Render(#[from] aviary_kube::render::RenderError),
    /// The machine failed us (a process that would not start, a port, a file).
    #[error("{0}")]
    Runtime(String),
    /// SIGTERM/SIGINT before the rollout began (render, a download, the dev deploy): that work
    /// was stopped; no rollout had moved traffic.
    #[error("{0}; stopped before the rollout began")]
    Cancelled(#[from] aviary_kube::signals::Interrupted),
}

impl AppError {
    pub fn input(message: impl Into<String>) -> Self {
        AppError::Input {
            message: message.into(),
            help: None,
        }
    }

    pub fn with_help(self, help: impl Into<String>) -> Self {
        match self {
            AppError::Input { message, .. } => AppError::Input {
                message,
                help: Some(help.into()),
            },
            other => other,
        }
    }

    pub fn exit(&self) -> Exit {
        match self {
            // A file the user named but we cannot read is bad input, not a broken environment.
            AppError::Spec(_) | AppError::Input { .. } => Exit::InvalidInput,
            AppError::Engine(_) | AppError::Output(_) | AppError::Runtime(_) => Exit::Runtime,
            AppError::Cancelled(_) => Exit::Cancelled,
            AppError::Render(e) => e.exit(),
            AppError::Deploy(e) => match e.as_ref() {
                aviary_kube::deploy::DeployError::NotReady { .. } => Exit::RolledBack,
                aviary_kube::deploy::DeployError::Cluster(_) => Exit::Runtime,
            },
            AppError::Run(e) => match e.as_ref() {
                aviary_kube::runner::RunError::Locked(_) => Exit::Locked,
                e if e.is_invalid_input() => Exit::InvalidInput,
                _ => Exit::Runtime,
            },
        }
    }

    /// Prints the error the way the log format wants it.
    pub fn report(&self) {
        match self {
            AppError::Spec(SpecError::Invalid { errors, warnings }) => {
                for d in warnings.iter().chain(errors) {
                    logging::diagnostic(d);
                }
                let n = errors.len();
                tracing::error!(
                    "{n} error{} found; nothing was changed",
                    if n == 1 { "" } else { "s" }
                );
            }
            AppError::Input {
                message,
                help: Some(help),
            } => tracing::error!("{message}\n  help: {help}"),
            other => tracing::error!("{other}"),
        }
    }
}

pub fn run(cli: Cli) -> Result<Exit, AppError> {
    let mut out = std::io::stdout().lock();
    let exit = match cli.command {
        Commands::Validate(args) => validate::run(&args, &mut out)?,
        Commands::Plan(args) => plan::run(&args.canary.request()?, args.json, &mut out)?,
        Commands::Simulate(args) => simulate::run(&args.request()?, args.json, &mut out)?,
        Commands::Deploy(args) => deploy::run(&args.request()?)?,
        Commands::Rollout(args) => rollout::run(&args.request()?)?,
        Commands::Status(args) => status::run(&args, &mut out)?,
        Commands::Promote(args) => control::promote(&args)?,
        Commands::Abort(args) => control::abort(&args)?,
        Commands::Render(args) => render::run(&args.request(), &mut out)?,
        Commands::Step(args) => step::run(&args)?,
        Commands::CloudDeploy => cloud_deploy::run(aviary_hosts::process_env())?,
        #[cfg(feature = "sandbox")]
        Commands::Sandbox(args) => sandbox::run(&args)?,
        #[cfg(feature = "sandbox")]
        Commands::DemoApp(args) => sandbox::demo_app(&args)?,
    };
    out.flush()?;
    Ok(exit)
}

/// Reads the Canary a command works on, reporting the spec's warnings on the way.
pub fn load_canary(args: &CanaryFile) -> Result<Canary, AppError> {
    let docs = aviary_kube::files::load_spec_file(&args.file)?;
    let file = args.file.display().to_string();
    pick_canary(docs, &file, args.name.as_deref(), args.namespace.as_deref())
}

/// The Canary named `name` (or the only one) of `docs`, with `namespace` for one that has none.
pub fn pick_canary(
    docs: spec::Documents,
    file: &str,
    name: Option<&str>,
    namespace: Option<&str>,
) -> Result<Canary, AppError> {
    for w in &docs.warnings {
        logging::diagnostic(w);
    }
    let mut canaries = docs.canaries;
    let canary = match (name, canaries.len()) {
        (_, 0) => {
            let found = if docs.skipped.is_empty() {
                "no documents".to_string()
            } else {
                docs.skipped
                    .iter()
                    .map(|(api, kind, origin)| format!("{kind} ({api}) at line {}", origin.line))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            return Err(AppError::input(format!("{file}: no Canary found (it has {found})"))
                .with_help("aviary reads `kind: Canary` with apiVersion flagger.app/v1beta1 or aviary.dev/v1alpha1"));
        }
        (None, 1) => canaries.remove(0),
        (None, _) => {
            let names: Vec<_> = canaries.iter().map(|c| c.name.as_str()).collect();
            return Err(AppError::input(format!(
                "{file} holds {} Canaries ({}); pick one",
                names.len(),
                names.join(", ")
            ))
            .with_help(format!("pass --name {}", names[0])));
        }
        (Some(name), _) => match canaries.iter().position(|c| c.name == name) {
            Some(i) => canaries.remove(i),
            None => {
                let names: Vec<_> = canaries.iter().map(|c| c.name.as_str()).collect();
                return Err(AppError::input(format!(
                    "{file}: no Canary named {name:?} (it has {})",
                    names.join(", ")
                )));
            }
        },
    };
    Ok(with_namespace(canary, file, namespace))
}

/// Every Canary of `docs` (a release of several), each with `namespace` when it names none,
/// reporting the spec's warnings on the way.
pub fn all_canaries(docs: spec::Documents, file: &str, namespace: Option<&str>) -> Vec<Canary> {
    for w in &docs.warnings {
        logging::diagnostic(w);
    }
    docs.canaries
        .into_iter()
        .map(|c| with_namespace(c, file, namespace))
        .collect()
}

/// `canary` in `namespace` when it names none (`-n`); said once when it names another.
fn with_namespace(mut canary: Canary, file: &str, namespace: Option<&str>) -> Canary {
    if let Some(ns) = namespace {
        if !canary.namespace_explicit {
            canary.namespace = ns.to_string();
        } else if canary.namespace != ns {
            tracing::warn!(
                "{file}: Canary {} sets metadata.namespace {}; ignoring -n {ns}",
                canary.name,
                canary.namespace
            );
        }
    }
    canary
}

/// The engine's view of the Canary named by `args`.
pub fn load_config(args: &CanaryFile) -> Result<(Canary, Config), AppError> {
    let canary = load_canary(args)?;
    let config = Config::from_canary(&canary, &args.provider);
    Ok((canary, config))
}

/// Renders diagnostics as a JSON array (for `--json` outputs).
pub fn diagnostics_json(ds: &[Diagnostic]) -> serde_json::Value {
    serde_json::to_value(ds).unwrap_or(serde_json::Value::Null)
}

impl From<aviary_kube::runner::RunError> for AppError {
    fn from(e: aviary_kube::runner::RunError) -> Self {
        AppError::Run(Box::new(e))
    }
}

impl From<aviary_kube::deploy::DeployError> for AppError {
    fn from(e: aviary_kube::deploy::DeployError) -> Self {
        AppError::Deploy(Box::new(e))
    }
}

/// A host's inputs that cannot be used: bad input, with its fix.
impl From<aviary_hosts::HostError> for AppError {
    fn from(e: aviary_hosts::HostError) -> Self {
        AppError::Input {
            message: e.message,
            help: e.help,
        }
    }
}

/// A Canary that never promotes is bad input; an engine refusal is aviary's own bug.
impl From<aviary_core::plan::PlanError> for AppError {
    fn from(e: aviary_core::plan::PlanError) -> Self {
        match e {
            aviary_core::plan::PlanError::Engine(e) => AppError::Engine(e),
            other => AppError::Input {
                message: other.to_string(),
                help: other.help().map(String::from),
            },
        }
    }
}

impl From<BadValue> for AppError {
    fn from(e: BadValue) -> Self {
        AppError::Input {
            message: e.to_string(),
            help: Some(e.help),
        }
    }
}

/// Writes `--report` (also for a command that failed) and turns a report into its exit code.
pub fn finish(
    result: Result<Report, AppError>,
    path: Option<&std::path::Path>,
    command: &str,
) -> Result<Exit, AppError> {
    let (report, err) = match result {
        Ok(report) => (report, None),
        Err(e) => (failed_report(&e, command), Some(e)),
    };
    write_report(&report, path)?;
    match err {
        Some(e) => Err(e),
        None => Ok(aviary_core::report::exit_of(&report)),
    }
}

/// Writes `report` to the `--report` file, when one was asked for.
pub fn write_report(report: &Report, path: Option<&std::path::Path>) -> Result<(), AppError> {
    let Some(path) = path else {
        return Ok(());
    };
    aviary_kube::files::write_report(report, path).map_err(|e| {
        AppError::Output(std::io::Error::new(
            e.kind(),
            format!("--report {}: {e}", path.display()),
        ))
    })
}

/// The report of a command that stopped on an error.
pub fn failed_report(err: &AppError, command: &str) -> Report {
    let verdict = match err.exit() {
        Exit::Cancelled => Verdict::Cancelled,
        _ => Verdict::Failed,
    };
    let mut report = Report::new(verdict);
    report.command = Some(command.to_string());
    if let AppError::Run(run) = err {
        if let aviary_kube::runner::RunError::GaveUp { traffic, .. } = run.as_ref() {
            report.traffic = Some(*traffic);
        }
    }
    report.message = Some(match err {
        AppError::Spec(SpecError::Invalid { errors, .. }) => errors
            .iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join("; "),
        other => other.to_string(),
    });
    report.exit(err.exit())
}

/// The runtime of a command that talks to the cluster or a host's API.
pub fn runtime() -> Result<tokio::runtime::Runtime, AppError> {
    aviary_kube::runtime().map_err(AppError::Output)
}
