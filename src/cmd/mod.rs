//! Runs a parsed command line: shared loading of the Canary, error reporting, exit codes.

use std::io::Write;

use crate::cli::{CanaryArgs, Cli, Command};
use aviary_core::engine::{Config, EngineError};
use aviary_core::exit::Exit;
use crate::logging;
use aviary_core::spec::{self, Canary, Diagnostic, Provider, SpecError};

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
            AppError::Render(e) => e.exit(),
            AppError::Deploy(e) => match e.as_ref() {
                aviary_kube::deploy::DeployError::NotReady { .. } => Exit::RolledBack,
                aviary_kube::deploy::DeployError::Cluster(_) => Exit::Runtime,
            },
            AppError::Run(e) => match e.as_ref() {
                aviary_kube::runner::RunError::Locked(_) => Exit::Locked,
                aviary_kube::runner::RunError::Unsupported(_) => Exit::InvalidInput,
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
        Command::Validate(args) => crate::validate::run(&args, &mut out)?,
        Command::Plan(args) => aviary_core::plan::run(&args, &mut out)?,
        Command::Simulate(args) => aviary_core::simulate::run(&args, &mut out)?,
        Command::Deploy(args) => crate::rollout::deploy(&args)?,
        Command::Rollout(args) => crate::rollout::rollout(&args)?,
        Command::Status(args) => crate::status::run(&args, &mut out)?,
        Command::Promote(args) => crate::rollout::promote(&args)?,
        Command::Abort(args) => crate::rollout::abort(&args)?,
        Command::Render(args) => aviary_kube::render::run(&args, &mut out)?,
        Command::Step(args) => aviary_hosts::run(&args)?,
        Command::CloudDeploy => aviary_hosts::cloud_deploy::run(aviary_hosts::process_env())?,
        Command::Sandbox(args) => aviary_sandbox::run(&args)?,
        Command::DemoApp(args) => aviary_sandbox::app::run(&args)?,
    };
    out.flush()?;
    Ok(exit)
}

/// Reads the Canary a command works on, reporting the spec's warnings on the way.
pub fn load_canary(args: &CanaryArgs) -> Result<Canary, AppError> {
    let docs = spec::load_file(&args.file)?;
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
    let mut canary = match (name, canaries.len()) {
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
    Ok(canary)
}

/// Parses `--provider`.
pub fn default_provider(name: &str) -> Result<Provider, AppError> {
    Ok(match name {
        "kubernetes" => Provider::Kubernetes,
        "kubernetes:replicas" => Provider::KubernetesReplicas,
        "istio" => Provider::Istio,
        "gloo" => Provider::Gloo,
        "nginx" => Provider::Nginx,
        "gatewayapi" | "gatewayapi:v1" | "gatewayapi:v1beta1" => Provider::GatewayApi,
        other => {
            return Err(
                AppError::input(format!("--provider: unknown provider {other:?}"))
                    .with_help("use one of kubernetes, istio, gloo, nginx, gatewayapi"),
            )
        }
    })
}

/// The engine's view of the Canary named by `args`.
pub fn load_config(args: &CanaryArgs) -> Result<(Canary, Config), AppError> {
    let provider = default_provider(&args.provider)?;
    let canary = load_canary(args)?;
    let config = Config::from_canary(&canary, &provider);
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
