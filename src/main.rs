use std::process::ExitCode;

use clap::Parser;

use aviary::cli::Cli;

fn main() -> ExitCode {
    let cli = Cli::parse();
    aviary::logging::init(cli.log_format, &cli.log_level);
    match aviary::app::run(cli) {
        Ok(exit) => ExitCode::from(exit.code()),
        Err(err) => {
            err.report();
            ExitCode::from(err.exit().code())
        }
    }
}
