use std::process::ExitCode;

use clap::Parser;

use aviary::cli::Cli;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // One TLS provider for every client in the process (kube, reqwest, object_store, octocrab).
    let _ = rustls::crypto::ring::default_provider().install_default();
    aviary::logging::init(cli.log_format, &cli.log_level);
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
