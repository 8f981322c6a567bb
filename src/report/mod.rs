//! The verdict of a run, as every host reads it: one JSON schema (`simulate --json`, `--report
//! FILE`), the GitHub step summary, Cloud Deploy's `results.json` metadata and Tekton's results are
//! all built from the same [`Report`], so what a person reads and what a machine reads agree.
//!
//! Simulations and real rollouts produce the same [`TickLog`]s (the engine's commands per tick);
//! [`Report::from_ticks`] turns them into rows. A real run records them through a [`Log`] shared
//! with the runner, so a run that stops on an error still reports what it did.

pub mod summary;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::engine::sim::TickLog;
use crate::engine::{Command, Phase, Severity};
use crate::exit::Exit;
use crate::plan::Secs;

/// How a command ended, in the words every host's report uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The new revision is the primary now.
    Promoted,
    /// The analysis failed (or a rollback webhook fired, or it was aborted): traffic is on the
    /// primary.
    RolledBack,
    /// No verdict within the limit (a gate stayed closed, `--timeout`, the tick budget).
    NoVerdict,
    /// The first run of a target: the primary was created, nothing was analysed.
    Bootstrapped,
    /// Nothing new to roll out.
    UpToDate,
    /// Stopped by a signal; traffic is back on the primary.
    Cancelled,
    /// A target without a canary was applied and rolled out.
    Deployed,
    /// Manifests were rendered.
    Rendered,
    /// A canary phase driven from outside (Cloud Deploy's `canary-N`) reached its weight and
    /// passed its analysis; traffic stays split until the next phase.
    Advanced,
    /// The command failed before a verdict: invalid input, an unreachable cluster.
    Failed,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Promoted => "promoted",
            Verdict::RolledBack => "rolled_back",
            Verdict::NoVerdict => "no_verdict",
            Verdict::Bootstrapped => "bootstrapped",
            Verdict::UpToDate => "up_to_date",
            Verdict::Cancelled => "cancelled",
            Verdict::Deployed => "deployed",
            Verdict::Rendered => "rendered",
            Verdict::Advanced => "advanced",
            Verdict::Failed => "failed",
        }
    }

    /// Words for a sentence: "rolled back".
    pub fn human(self) -> &'static str {
        match self {
            Verdict::Promoted => "promoted",
            Verdict::RolledBack => "rolled back",
            Verdict::NoVerdict => "no verdict",
            Verdict::Bootstrapped => "bootstrapped",
            Verdict::UpToDate => "up to date",
            Verdict::Cancelled => "cancelled",
            Verdict::Deployed => "deployed",
            Verdict::Rendered => "rendered",
            Verdict::Advanced => "advanced",
            Verdict::Failed => "failed",
        }
    }

    /// Whether the pipeline should go on.
    pub fn is_success(self) -> bool {
        matches!(
            self,
            Verdict::Promoted
                | Verdict::Bootstrapped
                | Verdict::UpToDate
                | Verdict::Deployed
                | Verdict::Rendered
                | Verdict::Advanced
        )
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One row of the report: a tick.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TickReport {
    pub at_s: Secs,
    pub phase: String,
    pub canary_weight: u32,
    pub iteration: u32,
    pub failed_checks: u32,
    /// Each metric queried in this tick: its value (`null` for no values).
    pub metrics: BTreeMap<String, Option<f64>>,
    /// Each metric's verdict in this tick.
    pub verdicts: BTreeMap<String, bool>,
    /// Each webhook called in this tick: pass or fail.
    pub webhooks: BTreeMap<String, bool>,
    pub message: String,
}

/// The full verdict of a run. The first five fields are `simulate --json`'s historical schema;
/// the rest say what ran and why it ended, and are left out when they do not apply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub verdict: Verdict,
    pub failed_checks: u32,
    /// Canary weights in the order the engine set them, consecutive repeats removed.
    pub weights: Vec<u32>,
    pub duration_s: Secs,
    pub checks: Vec<TickReport>,
    /// The process's exit code (see the README's table).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<u8>,
    /// `render`, `deploy`, `rollout`, `release`, `simulate`, `cloud-deploy render`, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// The pipeline host that ran it: `github`, `cloud-deploy`, `tekton`, `local`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// `name.namespace` of the Canary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<String>,
    /// The failed-check limit (`analysis.threshold`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<u32>,
    /// The canary's weight when the run ended.
    pub canary_weight: u32,
    /// Checks (metrics, webhooks) that failed at least once, in the order they first failed.
    pub failed_metrics: Vec<String>,
    /// Why it ended, in one sentence, when it did not succeed (or what it did when it did).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Things a person should know that did not stop the run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

impl Report {
    /// A report with no ticks (render, deploy, an error before the analysis).
    pub fn new(verdict: Verdict) -> Report {
        Report {
            verdict,
            failed_checks: 0,
            weights: Vec::new(),
            duration_s: Secs(0.0),
            checks: Vec::new(),
            exit_code: None,
            command: None,
            host: None,
            target: None,
            canary: None,
            threshold: None,
            canary_weight: 0,
            failed_metrics: Vec::new(),
            message: None,
            warnings: Vec::new(),
        }
    }

    /// The report of a run whose ticks are `ticks` (times relative to the run's start).
    pub fn from_ticks(verdict: Verdict, ticks: &[TickLog]) -> Report {
        let mut checks = Vec::new();
        let mut failed_metrics: Vec<String> = Vec::new();
        // Why a run failed: Flagger's "Rolling back ..." line and the last "Halt ..." reason.
        let mut last_warning = None;
        let mut last_halt: Option<String> = None;
        let mut rolling_back: Option<String> = None;
        for tick in ticks {
            let mut metrics = BTreeMap::new();
            let mut verdicts = BTreeMap::new();
            let mut webhooks = BTreeMap::new();
            let mut messages = Vec::new();
            for command in &tick.commands {
                match command {
                    Command::Check { check } => {
                        if check.kind == "metric" {
                            metrics.insert(check.name.clone(), check.value);
                            verdicts.insert(check.name.clone(), check.passed);
                        } else {
                            webhooks.insert(check.name.clone(), check.passed);
                        }
                        // A closed confirm gate is a wait, not a failed check.
                        let gate = check.kind.starts_with("confirm-");
                        if !check.passed && !gate && !failed_metrics.contains(&check.name) {
                            failed_metrics.push(check.name.clone());
                        }
                    }
                    Command::Event { severity, message } => {
                        if *severity == Severity::Warning {
                            last_warning = Some(message.clone());
                            if message.starts_with("Halt") {
                                last_halt = Some(message.clone());
                            } else if message.starts_with("Rolling back") {
                                rolling_back = Some(message.clone());
                            }
                        }
                        messages.push(message.clone());
                    }
                    _ => {}
                }
            }
            checks.push(TickReport {
                at_s: Secs(tick.at as f64 / 1000.0),
                phase: tick.phase.to_string(),
                canary_weight: tick.routes.canary,
                iteration: tick.iterations,
                failed_checks: tick.failed_checks,
                metrics,
                verdicts,
                webhooks,
                message: messages.join("; "),
            });
        }
        let mut report = Report::new(verdict);
        report.failed_checks = ticks.last().map_or(0, |t| t.failed_checks);
        report.weights = crate::engine::sim::weight_path(ticks.iter().flat_map(|t| &t.commands));
        report.duration_s = Secs(ticks.last().map_or(0, |t| t.at) as f64 / 1000.0);
        report.canary_weight = ticks.last().map_or(0, |t| t.routes.canary);
        report.checks = checks;
        report.failed_metrics = failed_metrics;
        if !verdict.is_success() {
            report.message = match (rolling_back, last_halt) {
                (Some(r), Some(h)) => Some(format!("{r}; last failure: {h}")),
                (Some(r), None) => Some(r),
                (None, Some(h)) => Some(h),
                (None, None) => last_warning,
            };
        }
        report
    }

    /// Sets the exit code (and so finishes the report).
    pub fn exit(mut self, exit: Exit) -> Report {
        self.exit_code = Some(exit.code());
        self
    }

    /// The metrics that appear in the report, in the order they were first queried.
    pub fn metric_names(&self) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        for tick in &self.checks {
            for name in tick.metrics.keys() {
                if !names.contains(name) {
                    names.push(name.clone());
                }
            }
        }
        names
    }

    /// One line for an annotation or a results file: what happened and why.
    pub fn headline(&self) -> String {
        let what = match (&self.canary, &self.target) {
            (Some(c), _) => c.clone(),
            (None, Some(t)) => format!("target {t}"),
            (None, None) => "aviary".to_string(),
        };
        let mut line = format!("{what}: {}", self.verdict.human());
        if !self.checks.is_empty() {
            if let Some(t) = self.threshold {
                line.push_str(&format!(" (failed checks {}/{t})", self.failed_checks));
            }
        }
        if !self.failed_metrics.is_empty() && !self.verdict.is_success() {
            line.push_str(&format!("; failing: {}", self.failed_metrics.join(", ")));
        }
        if let Some(m) = &self.message {
            line.push_str(&format!(": {m}"));
        }
        line
    }

    /// Writes the report as pretty JSON to `path`.
    pub fn write(&self, path: &std::path::Path) -> std::io::Result<()> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let text = serde_json::to_string_pretty(self).map_err(std::io::Error::from)?;
        std::fs::write(path, text + "\n")
    }
}

/// Called with every tick as it is recorded.
pub type Observer = Box<dyn FnMut(&TickLog) + Send>;

/// What a runner did, tick by tick, shared with whoever reports it. Cloning shares the log.
#[derive(Clone, Default)]
pub struct Log {
    inner: Arc<Mutex<LogInner>>,
}

#[derive(Default)]
struct LogInner {
    ticks: Vec<TickLog>,
    observer: Option<Observer>,
}

impl Log {
    pub fn new() -> Log {
        Log::default()
    }

    /// Calls `f` with every tick as it is recorded (a host's live progress).
    pub fn observe(&self, f: impl FnMut(&TickLog) + Send + 'static) {
        if let Ok(mut inner) = self.inner.lock() {
            inner.observer = Some(Box::new(f));
        }
    }

    pub fn push(&self, tick: TickLog) {
        if let Ok(mut inner) = self.inner.lock() {
            if let Some(f) = inner.observer.as_mut() {
                f(&tick);
            }
            inner.ticks.push(tick);
        }
    }

    pub fn ticks(&self) -> Vec<TickLog> {
        self.inner
            .lock()
            .map(|inner| inner.ticks.clone())
            .unwrap_or_default()
    }

    /// The phase of the last tick.
    pub fn last_phase(&self) -> Option<Phase> {
        self.inner
            .lock()
            .ok()
            .and_then(|inner| inner.ticks.last().map(|t| t.phase))
    }
}

impl std::fmt::Debug for Log {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Log")
            .field("ticks", &self.ticks().len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{CheckRecord, Routes};

    fn tick(at: u64, canary: u32, failed: u32, commands: Vec<Command>) -> TickLog {
        TickLog {
            at,
            phase: Phase::Progressing,
            routes: Routes::split(canary, crate::engine::RouteScope::All),
            iterations: 0,
            failed_checks: failed,
            commands,
            exchanges: Vec::new(),
        }
    }

    fn check(name: &str, kind: &str, value: Option<f64>, passed: bool) -> Command {
        Command::Check {
            check: CheckRecord {
                name: name.into(),
                kind: kind.into(),
                value,
                passed,
            },
        }
    }

    #[test]
    fn failed_metrics_name_failures_but_not_closed_gates() {
        let ticks = vec![
            tick(
                0,
                10,
                0,
                vec![
                    check("request-success-rate", "metric", Some(99.9), true),
                    check("approval", "confirm-promotion", None, false),
                ],
            ),
            tick(
                10_000,
                10,
                1,
                vec![
                    check("request-success-rate", "metric", Some(80.0), false),
                    Command::Event {
                        severity: Severity::Warning,
                        message: "Halt advancement success rate 80.00% < 99%".into(),
                    },
                ],
            ),
        ];
        let r = Report::from_ticks(Verdict::RolledBack, &ticks);
        assert_eq!(r.failed_metrics, vec!["request-success-rate".to_string()]);
        assert_eq!(r.failed_checks, 1);
        assert_eq!(r.canary_weight, 10);
        assert_eq!(
            r.message.as_deref(),
            Some("Halt advancement success rate 80.00% < 99%")
        );
        assert_eq!(r.checks[1].metrics["request-success-rate"], Some(80.0));
        let ok = Report::from_ticks(Verdict::Promoted, &ticks);
        assert_eq!(ok.message, None, "a success carries no failure reason");
        let mut ticks = ticks;
        let warn = |m: &str| Command::Event {
            severity: Severity::Warning,
            message: m.into(),
        };
        ticks.push(tick(
            20_000,
            0,
            2,
            vec![
                warn("Rolling back podinfo.prod failed checks threshold reached 2"),
                warn("Canary failed! Scaling down podinfo.prod"),
            ],
        ));
        let r = Report::from_ticks(Verdict::RolledBack, &ticks);
        assert_eq!(
            r.message.as_deref(),
            Some("Rolling back podinfo.prod failed checks threshold reached 2; last failure: Halt advancement success rate 80.00% < 99%"),
            "the reason, not the boilerplate"
        );
    }

    #[test]
    fn optional_fields_stay_out_of_the_json_until_set() {
        let r = Report::new(Verdict::Rendered);
        let v = serde_json::to_value(&r).unwrap_or_default();
        assert_eq!(v["verdict"], "rendered");
        assert!(v.get("exit_code").is_none() && v.get("canary").is_none());
        let v = serde_json::to_value(r.exit(Exit::RolledBack)).unwrap_or_default();
        assert_eq!(v["exit_code"], 1);
    }

    #[test]
    fn the_log_tells_its_observer_about_each_tick() {
        let log = Log::new();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        log.observe(move |t| {
            if let Ok(mut v) = s.lock() {
                v.push(t.routes.canary)
            }
        });
        log.push(tick(0, 0, 0, vec![]));
        log.push(tick(1, 20, 0, vec![]));
        assert_eq!(*seen.lock().unwrap_or_else(|e| e.into_inner()), vec![0, 20]);
        assert_eq!(log.ticks().len(), 2);
    }
}
