use std::process::ExitCode;

use clap::{CommandFactory, Parser};

use aviary::cli::Cli;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // An unknown --log-level is a usage error like any other bad flag: clap's message, exit 2.
    if let Err(message) = aviary::logging::check_level(&cli.log_level) {
        Cli::command()
            .error(clap::error::ErrorKind::InvalidValue, message)
            .exit();
    }
    // One TLS provider for every client in the process (kube, reqwest, object_store, octocrab).
    let _ = rustls::crypto::ring::default_provider().install_default();
    if let Err(message) = aviary::logging::init(cli.log_format, &cli.log_level) {
        eprintln!("error: {message}");
        return ExitCode::from(aviary::exit::Exit::InvalidInput.code());
    }
    match aviary::app::run(cli) {
        Ok(exit) => ExitCode::from(exit.code()),
        // `aviary plan | head`: the reader went away; that is not a failure of ours.
        Err(aviary::app::AppError::Output(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => {
            ExitCode::SUCCESS
        }
        Err(err) => {
            err.report();
            ExitCode::from(err.exit().code())
        }
    }
}
