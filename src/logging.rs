//! Logs are `tracing` events: human-readable on a terminal, one JSON object per line with
//! `--log-format json`. Diagnostics about input files go through here too, so that a JSON consumer
//! gets them as structured events with their file, line and field path.

use std::io::IsTerminal;
use std::sync::OnceLock;

use clap::ValueEnum;
use tracing_subscriber::filter::{filter_fn, FilterExt};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use aviary_core::spec::{Diagnostic, Severity};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines (coloured on a terminal).
    Human,
    /// One JSON object per line.
    Json,
}

static FORMAT: OnceLock<LogFormat> = OnceLock::new();

/// The levels `--log-level` accepts, quietest first.
pub const LEVELS: [&str; 5] = ["error", "warn", "info", "debug", "trace"];

/// Checks a `--log-level` value: one of [`LEVELS`] (any case).
pub fn check_level(level: &str) -> Result<(), String> {
    if LEVELS.iter().any(|l| l.eq_ignore_ascii_case(level)) {
        Ok(())
    } else {
        Err(format!(
            "invalid value {level:?} for '--log-level <LOG_LEVEL>' [possible values: {}]",
            LEVELS.join(", ")
        ))
    }
}

/// Installs the global subscriber. Logs go to stderr; stdout is for the command's own output.
/// `AVIARY_LOG` (e.g. `debug`, `aviary=trace`) overrides `level`; one that is not a valid filter
/// is an error (the caller exits 2), not silently ignored.
pub fn init(format: LogFormat, level: &str) -> Result<(), String> {
    let _ = FORMAT.set(format);
    // kube-client's HTTP trace layer logs every 5xx as an error with no context ("failed with
    // status 503"); aviary retries those and reports what it was doing when it gives up, so the
    // layer stays quiet unless AVIARY_LOG asks for it.
    const QUIET: &str = "kube_client::client::builder=off";
    let from_env = std::env::var("AVIARY_LOG")
        .ok()
        .filter(|v| !v.trim().is_empty());
    let filter = match from_env {
        Some(spec) => EnvFilter::try_new(&spec).map_err(|e| {
            format!(
                "AVIARY_LOG={spec:?} is not a log filter ({e}); use a level ({}) or directives such as aviary=debug",
                LEVELS.join(", ")
            )
        })?,
        None => {
            check_level(level)?;
            EnvFilter::try_new(format!("{},{QUIET}", level.to_ascii_lowercase()))
                .unwrap_or_else(|_| EnvFilter::new(format!("info,{QUIET}")))
        }
    };
    let layer = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let result = match format {
        // People read events; the spans a rollout and its ticks run in (canary, namespace,
        // revision, tick) would prefix every line, so they are left out here.
        LogFormat::Human => tracing_subscriber::registry()
            .with(
                layer
                    .with_ansi(std::io::stderr().is_terminal())
                    .with_target(false)
                    .without_time()
                    .with_filter(filter.and(filter_fn(|meta| meta.is_event()))),
            )
            .try_init(),
        // Machines get each event with its spans (`span`, `spans`), so a log can be filtered
        // by canary or revision.
        LogFormat::Json => tracing_subscriber::registry()
            .with(layer.json().flatten_event(true).with_filter(filter))
            .try_init(),
    };
    // A subscriber is already installed only in tests that call init twice; keep the first.
    let _ = result;
    Ok(())
}

/// Reports a diagnostic: as plain `file:line: path: message` text on stderr for people, or as a
/// structured event for JSON consumers.
pub fn diagnostic(d: &Diagnostic) {
    match FORMAT.get().copied().unwrap_or(LogFormat::Human) {
        LogFormat::Human => eprintln!("{}{d}", prefix(d.severity)),
        LogFormat::Json => {
            let help = d.help.as_deref().unwrap_or("");
            match d.severity {
                Severity::Error => tracing::error!(
                    file = %d.file, line = d.line, path = %d.path, help, "{}", d.message
                ),
                Severity::Warning => tracing::warn!(
                    file = %d.file, line = d.line, path = %d.path, help, "{}", d.message
                ),
            }
        }
    }
}

fn prefix(severity: Severity) -> &'static str {
    match severity {
        Severity::Error => "error: ",
        // The warning prefix is part of the diagnostic's own rendering.
        Severity::Warning => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_are_checked() {
        assert!(check_level("debug").is_ok() && check_level("WARN").is_ok());
        let e = check_level("bogus").err().unwrap_or_default();
        assert!(e.contains("error, warn, info, debug, trace"), "{e}");
    }
}
