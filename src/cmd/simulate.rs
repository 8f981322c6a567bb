//! `aviary simulate`: the engine on a simulated clock against a timeline (see
//! `aviary_core::simulate`).

use std::io::Write;

use aviary_core::engine::{Command, Config, EventLevel};
use aviary_core::exit::Exit;
use aviary_core::report::{exit_of, Report, Verdict};
use aviary_core::request;
use aviary_core::simulate::{self, Timeline, MAX_TICKS};

use super::AppError;

pub fn run(args: &request::Simulate, json: bool, out: &mut dyn Write) -> Result<Exit, AppError> {
    let (config, report) = run_report(args)?;
    super::write_report(&report, args.report.as_deref())?;
    if json {
        serde_json::to_writer_pretty(&mut *out, &report).map_err(std::io::Error::from)?;
        writeln!(out)?;
    } else {
        simulate::write_human(&config, &report, out)?;
    }
    Ok(exit_of(&report))
}

/// Runs a simulation and reports it.
pub fn run_report(args: &request::Simulate) -> Result<(Config, Report), AppError> {
    let (_canary, config) = super::load_config(&args.canary)?;
    let file = args.metrics.display().to_string();
    let text = aviary_kube::files::read_spec_input(&args.metrics)?;
    let timeline = Timeline::parse(&file, &text, &config)?;
    let max_ticks = args
        .max_ticks
        .unwrap_or_else(|| aviary_core::plan::tick_budget(&config));
    if max_ticks == 0 || max_ticks > MAX_TICKS {
        return Err(AppError::input(format!(
            "--max-ticks must be 1-{MAX_TICKS}, got {max_ticks}"
        ))
        .with_help("leave it out to run the schedule's length plus 250 ticks"));
    }
    let mut recorder = aviary_core::report::Recorder::new();
    let end = simulate::simulate(&config, &timeline, max_ticks, &mut |tick| {
        for command in &tick.commands {
            if let Command::Event { severity, message } = command {
                match severity {
                    EventLevel::Info => tracing::debug!(at_ms = tick.at, "{message}"),
                    EventLevel::Warning => {
                        tracing::debug!(at_ms = tick.at, warning = true, "{message}")
                    }
                }
            }
        }
        recorder.push(&tick);
    })?;
    let mut report = recorder.report(simulate::verdict_of(end.verdict));
    report.failed_checks = end.state.failed_checks;
    report.command = Some("simulate".into());
    report.canary = Some(config.qualified());
    report.threshold = Some(config.threshold);
    let exit = exit_of(&report);
    let report = report.exit(exit);
    if report.verdict == Verdict::NoVerdict {
        tracing::warn!(
            "no verdict after {} ticks; the last phase was {}",
            end.ticks,
            end.state.phase
        );
    }
    Ok((config, report))
}
