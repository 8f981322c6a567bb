//! aviary: progressive delivery as one pipeline step.
//!
//! The binary is thin: [`cli`] parses flags (clap only), [`logging`] sets up `tracing`, and
//! [`cmd`] holds one file per command, the only place that wires the crates together:
//! `aviary-core` (pure: spec, engine, judge, report), `aviary-kube` (the cluster, routers,
//! metrics, rendering and the runner), `aviary-hosts` (GitHub Actions, Tekton, Cloud Deploy)
//! and, with the `sandbox` feature, `aviary-sandbox`.

mod cli;
mod cmd;
mod logging;
mod progress;

use std::process::ExitCode;

use clap::{CommandFactory, Parser};

use cli::Cli;

fn main() -> ExitCode {
    let cli = if invoked_as_post() {
        // GitHub runs a Docker action's `post-entrypoint` with no arguments: the name says it.
        Cli::parse_from(["aviary", "step", "--post"])
    } else {
        Cli::parse()
    };
    // The commands that may run as a container's PID 1 or change a cluster own SIGTERM/SIGINT
    // from here on (see `aviary_kube::signals`): a cancelled job stops whatever it is doing
    // (render, a download, the dev deploy, the rollout), still reports, and exits 130. The
    // others keep the default action (Ctrl-C ends them at once).
    if cli.command.handles_signals() {
        if let Err(message) = aviary_kube::signals::install() {
            eprintln!("error: {message}");
            return ExitCode::from(aviary_core::exit::Exit::Runtime.code());
        }
    }
    // An unknown --log-level is a usage error like any other bad flag: clap's message, exit 2.
    if let Err(message) = logging::check_level(&cli.log_level) {
        Cli::command()
            .error(clap::error::ErrorKind::InvalidValue, message)
            .exit();
    }
    // One TLS provider for every client in the process (kube, reqwest, object_store, octocrab).
    let _ = rustls::crypto::ring::default_provider().install_default();
    if let Err(message) = logging::init(cli.log_format, &cli.log_level) {
        eprintln!("error: {message}");
        return ExitCode::from(aviary_core::exit::Exit::InvalidInput.code());
    }
    match cmd::run(cli) {
        Ok(exit) => ExitCode::from(exit.code()),
        // `aviary plan | head`: the reader went away; that is not a failure of ours.
        Err(cmd::AppError::Output(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => {
            ExitCode::SUCCESS
        }
        Err(err) => {
            err.report();
            ExitCode::from(err.exit().code())
        }
    }
}

/// Whether the binary was started under the name `aviary-post` (a link in the image).
fn invoked_as_post() -> bool {
    std::env::args_os()
        .next()
        .map(std::path::PathBuf::from)
        .and_then(|p| p.file_name().map(|n| n == "aviary-post"))
        .unwrap_or(false)
}
