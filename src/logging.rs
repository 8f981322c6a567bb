//! Logs are `tracing` events: human-readable on a terminal, one JSON object per line with
//! `--log-format json`. Diagnostics about input files go through here too, so that a JSON consumer
//! gets them as structured events with their file, line and field path.
//!
//! On GitHub Actions the runner reads stderr as well as stdout for workflow commands, so in
//! GitHub mode ([`github_mode`]) every log line passes through one sanitizer,
//! [`aviary_hosts::github::safe_log`] (its module documents the runner's rules and the escape):
//! the events of the subscriber through [`LogWriter`], and the diagnostics and messages printed
//! here through [`eprint_line`]. No user text (a key of a spec, a webhook's answer, a name) can
//! then start a line with `::` or hold `##[`; aviary's own workflow commands are written by the
//! GitHub host directly, on stdout.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
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

/// The span each canary of a release of several runs in (its one field, `name`, is the
/// canary's `name.namespace`): human logs prefix its lines with it.
pub const RELEASE_MEMBER_SPAN: &str = "canary";

/// Whether log lines are escaped for the GitHub runner.
static GITHUB: AtomicBool = AtomicBool::new(false);

/// From now on every log line is escaped so that the GitHub runner reads no workflow command in
/// it. On from the start when `GITHUB_ACTIONS=true` or `AVIARY_HOST=github`; `aviary step`
/// turns it on for `--host github` too.
pub fn github_mode() {
    GITHUB.store(true, Ordering::SeqCst);
}

/// Whether [`github_mode`] is on.
pub fn is_github_mode() -> bool {
    GITHUB.load(Ordering::SeqCst)
}

/// `text` as the log may show it: escaped for the runner in GitHub mode, as it is elsewhere.
pub fn safe(text: &str) -> std::borrow::Cow<'_, str> {
    if is_github_mode() {
        aviary_hosts::github::safe_log(text)
    } else {
        std::borrow::Cow::Borrowed(text)
    }
}

/// Prints `text` and a line break on stderr, through [`safe`].
pub fn eprint_line(text: &str) {
    crate::progress::above(|| {
        let mut err = std::io::stderr().lock();
        let _ = writeln!(err, "{}", safe(text));
    });
}

/// Whether logs are for people (`--log-format human`, the default).
pub fn human() -> bool {
    matches!(
        FORMAT.get().copied().unwrap_or(LogFormat::Human),
        LogFormat::Human
    )
}

/// The subscriber's writer: one event's bytes, written to stderr through [`safe`] when the
/// event is complete (so an escape never depends on how the formatter split its writes).
#[derive(Default)]
pub struct LogWriter {
    buf: Vec<u8>,
}

impl Write for LogWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for LogWriter {
    fn drop(&mut self) {
        // Above a release's live progress lines, when a terminal shows them.
        crate::progress::above(|| {
            let mut err = std::io::stderr().lock();
            let _ = if is_github_mode() {
                err.write_all(safe(&String::from_utf8_lossy(&self.buf)).as_bytes())
            } else {
                err.write_all(&self.buf)
            };
            let _ = err.flush();
        });
    }
}

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
    if std::env::var("GITHUB_ACTIONS").is_ok_and(|v| v == "true")
        || std::env::var("AVIARY_HOST").is_ok_and(|v| v == "github")
    {
        github_mode();
    }
    // kube-client's HTTP trace layer logs every 5xx as an error with no context ("failed with
    // status 503"); aviary retries those and reports what it was doing when it gives up, so the
    // layer stays quiet unless AVIARY_LOG asks for it.
    const QUIET: &str = "kube_client::client::builder=off";
    let from_env = std::env::var("AVIARY_LOG")
        .ok()
        .filter(|v| !v.trim().is_empty());
    let filter = match from_env {
        Some(spec) => EnvFilter::try_new(&spec).map_err(|e| {
            // The caller prints this: escaped here, as it holds the user's text.
            safe(&format!(
                "AVIARY_LOG={spec:?} is not a log filter ({e}); use a level ({}) or directives such as aviary=debug",
                LEVELS.join(", ")
            ))
            .into_owned()
        })?,
        None => {
            check_level(level)?;
            EnvFilter::try_new(format!("{},{QUIET}", level.to_ascii_lowercase()))
                .unwrap_or_else(|_| EnvFilter::new(format!("info,{QUIET}")))
        }
    };
    let layer = tracing_subscriber::fmt::layer().with_writer(LogWriter::default);
    let result = match format {
        // People read events; the spans a rollout and its ticks run in (canary, namespace,
        // revision, tick) would prefix every line, so they are left out here, but for the
        // `canary` span of a release of several: its lines say which canary they are about.
        LogFormat::Human => tracing_subscriber::registry()
            .with(
                layer
                    // No colours for the runner: the escape would show their ESC as `\u001b`.
                    .with_ansi(std::io::stderr().is_terminal() && !is_github_mode())
                    .with_target(false)
                    .without_time()
                    .with_filter(filter.and(filter_fn(|meta| {
                        meta.is_event() || meta.name() == RELEASE_MEMBER_SPAN
                    }))),
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
        LogFormat::Human => eprint_line(&format!("{}{d}", prefix(d.severity))),
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
    fn github_mode_escapes_what_is_logged_and_printed() {
        github_mode();
        assert_eq!(
            safe("x\n::error::y ##[warning]"),
            "x\n\\u003a:error::y #\\u0023[warning]"
        );
    }

    #[test]
    fn levels_are_checked() {
        assert!(check_level("debug").is_ok() && check_level("WARN").is_ok());
        let e = check_level("bogus").err().unwrap_or_default();
        assert!(e.contains("error, warn, info, debug, trace"), "{e}");
    }
}
