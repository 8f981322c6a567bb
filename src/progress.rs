//! Live progress of a release in a terminal: one line per canary (its weight, phase, failed
//! checks and time), redrawn in place under the log. In CI logs, under GitHub and with JSON logs
//! there are no such lines: every event is a log line of its own, prefixed with its canary.

use std::io::IsTerminal;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aviary_core::engine::Phase;
use aviary_core::report::Log;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// The progress lines being drawn, if any: log lines are written above them.
static ACTIVE: Mutex<Option<MultiProgress>> = Mutex::new(None);

/// Runs `write` (a log line going to stderr) with the progress lines cleared, and draws them
/// again after it, so that the line ends up above them; just runs it when none are drawn.
pub fn above<T>(write: impl FnOnce() -> T) -> T {
    let active = ACTIVE.lock().ok().and_then(|a| a.clone());
    match active {
        Some(multi) => multi.suspend(write),
        None => write(),
    }
}

/// Whether a person is watching stderr: a terminal, human logs, not a CI runner.
fn watched(human_logs: bool) -> bool {
    human_logs
        && std::io::stderr().is_terminal()
        && !crate::logging::is_github_mode()
        && std::env::var_os("CI").is_none()
}

/// The progress of a release's canaries, when [`watched`].
pub struct Release {
    lines: Vec<ProgressBar>,
    /// More canaries than the terminal has rows: one line with a count per phase instead.
    summary: Option<Arc<Mutex<Vec<Option<Phase>>>>>,
}

impl Release {
    /// Progress lines for the canaries `names` (the release's order), or None when nobody
    /// watches a terminal.
    pub fn start(names: &[String], human_logs: bool) -> Option<Release> {
        if names.len() < 2 || !watched(human_logs) {
            return None;
        }
        let rows = console::Term::stderr().size().0 as usize;
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(4));
        let width = names.iter().map(|n| n.chars().count()).max().unwrap_or(0);
        let (lines, summary) = if names.len() + 4 <= rows {
            let style = ProgressStyle::with_template(&format!(
                "{{prefix:<{width}}} ▕{{bar:20}}▏{{pos:>3}}%  {{msg}}  {{elapsed}}"
            ))
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("█▌ ");
            let lines = names
                .iter()
                .map(|name| {
                    let line = multi.add(ProgressBar::new(100).with_style(style.clone()));
                    line.set_prefix(name.clone());
                    line.set_message("waiting for its first tick");
                    line
                })
                .collect();
            (lines, None)
        } else {
            let style = ProgressStyle::with_template(
                "{prefix} ▕{bar:20}▏{pos}/{len} ended  {msg}  {elapsed}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("█▌ ");
            let line = multi.add(ProgressBar::new(names.len() as u64).with_style(style));
            line.set_prefix(format!("{} canaries", names.len()));
            (
                vec![line],
                Some(Arc::new(Mutex::new(vec![None; names.len()]))),
            )
        };
        for line in &lines {
            line.enable_steady_tick(Duration::from_secs(1));
        }
        if let Ok(mut active) = ACTIVE.lock() {
            *active = Some(multi);
        }
        Some(Release { lines, summary })
    }

    /// Shows the ticks of the canary at `index` (of the names given to [`Release::start`]) as
    /// they are recorded in its `log`.
    pub fn follow(&self, index: usize, log: &Log) {
        match &self.summary {
            None => {
                let Some(line) = self.lines.get(index).cloned() else {
                    return;
                };
                log.observe(move |tick| {
                    line.set_position(u64::from(tick.routes.canary.min(100)));
                    line.set_message(format!(
                        "{} · failed checks {}",
                        tick.phase, tick.failed_checks
                    ));
                });
            }
            Some(phases) => {
                let (Some(line), phases) = (self.lines.first().cloned(), phases.clone()) else {
                    return;
                };
                log.observe(move |tick| {
                    let Ok(mut phases) = phases.lock() else {
                        return;
                    };
                    if let Some(p) = phases.get_mut(index) {
                        *p = Some(tick.phase);
                    }
                    let ended = phases
                        .iter()
                        .filter(|p| matches!(p, Some(Phase::Succeeded | Phase::Failed)))
                        .count();
                    line.set_position(ended as u64);
                    line.set_message(phase_counts(&phases));
                });
            }
        }
    }

    /// Leaves the line of the canary at `index` as it is: its run ended.
    pub fn ended(&self, index: usize) {
        if self.summary.is_none() {
            if let Some(line) = self.lines.get(index) {
                line.abandon();
            }
        }
    }
}

impl Drop for Release {
    /// Stops drawing (however the release ended); the last lines stay on the terminal.
    fn drop(&mut self) {
        if let Ok(mut active) = ACTIVE.lock() {
            *active = None;
        }
        for line in &self.lines {
            line.abandon();
        }
    }
}

/// "12 Progressing · 3 WaitingPromotion · 5 Succeeded": how many canaries are in each phase,
/// in the engine's order; canaries without a tick yet as "waiting".
fn phase_counts(phases: &[Option<Phase>]) -> String {
    let mut counts: Vec<(String, usize)> = Vec::new();
    for p in phases {
        let name = p.map_or_else(|| "waiting".to_string(), |p| p.to_string());
        match counts.iter_mut().find(|(n, _)| *n == name) {
            Some((_, c)) => *c += 1,
            None => counts.push((name, 1)),
        }
    }
    counts
        .iter()
        .map(|(n, c)| format!("{c} {n}"))
        .collect::<Vec<_>>()
        .join(" · ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phase_counts_name_each_phase_once_in_order_of_appearance() {
        let phases = [
            Some(Phase::Progressing),
            None,
            Some(Phase::Succeeded),
            Some(Phase::Progressing),
        ];
        assert_eq!(
            phase_counts(&phases),
            "2 Progressing · 1 waiting · 1 Succeeded"
        );
    }
}
