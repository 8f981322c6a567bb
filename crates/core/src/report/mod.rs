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
use crate::engine::{Command, EventLevel, Millis, Phase};
use crate::exit::Exit;

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
    /// How many consecutive ticks this row stands for: 1, or more for a folded row (see
    /// [`Recorder`]), whose ticks all had this row's phase, weight, failed checks and check
    /// results.
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub ticks: u64,
    /// The last tick of a folded row (its time, iteration, values and message); the row itself
    /// is its first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last: Option<Box<TickReport>>,
}

fn one() -> u64 {
    1
}

fn is_one(n: &u64) -> bool {
    *n == 1
}

impl TickReport {
    /// The time of the last tick this row stands for.
    pub fn until_s(&self) -> Secs {
        self.last.as_ref().map_or(self.at_s, |l| l.at_s)
    }
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
    /// Where a run that stopped before its verdict (a signal, the time limit, a cluster that
    /// kept failing, a lost lease) left the traffic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic: Option<TrafficLeft>,
    /// A release of several canaries: how their verdicts combined (`all-or-nothing`,
    /// `independent`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    /// A release of several canaries: each one's report, in the order they were named.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub canaries: Vec<Report>,
    /// A release of several canaries: the one whose verdict the release took (the report's
    /// ticks, weights and charts are its).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_by: Option<String>,
}

/// Where traffic was when a run stopped before its verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrafficLeft {
    /// The weights the routing objects were last set to (by this run, or as its saved state
    /// says when it set none).
    pub primary: u32,
    pub canary: u32,
    /// Whether all traffic is on the primary: false when returning it failed, and the canary
    /// keeps serving `canary`% until a re-run or a person moves it.
    pub on_primary: bool,
    /// The run stopped during the promotion: the primary already runs the analysed revision,
    /// so both sides serve it, and the next run finishes moving traffic to the primary.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub promoting: bool,
}

impl TrafficLeft {
    /// One sentence for messages and annotations.
    pub fn describe(&self) -> String {
        if self.on_primary {
            "all traffic is on the primary".to_string()
        } else if self.promoting {
            format!(
                "stopped during the promotion: primary {}% / canary {}% both serve the analysed revision, and the next run finishes moving traffic to the primary",
                self.primary, self.canary
            )
        } else {
            format!(
                "traffic could not be returned to the primary: the routes were last set to primary {}% / canary {}%; re-run the rollout or `aviary abort` to return it",
                self.primary, self.canary
            )
        }
    }
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
            traffic: None,
            policy: None,
            canaries: Vec::new(),
            decided_by: None,
        }
    }

    /// The report of a release of several canaries under `policy`: the verdict and exit code of
    /// the member that ended worst (an error before a rollback, a rollback before no verdict,
    /// a cancel, a success), its ticks and weights for the charts, every member in
    /// [`Report::canaries`], and one sentence per member in the message.
    pub fn release(policy: &str, members: Vec<Report>) -> Report {
        // Worst exit first; among successes, the one where most happened (a promotion says
        // more than "up to date"); then the first named.
        let rank = |r: &Report| {
            let exit = exit_of(r);
            let by_exit = RELEASE_ORDER
                .iter()
                .position(|e| *e == exit)
                .unwrap_or(RELEASE_ORDER.len());
            let by_verdict = SUCCESS_ORDER
                .iter()
                .position(|v| *v == r.verdict)
                .unwrap_or(SUCCESS_ORDER.len());
            (by_exit, by_verdict)
        };
        let worst = members
            .iter()
            .enumerate()
            .min_by_key(|(i, r)| (rank(r), *i))
            .map(|(_, r)| r);
        let mut report = match worst {
            Some(w) => {
                let mut r = Report::new(w.verdict);
                r.failed_checks = w.failed_checks;
                r.weights = w.weights.clone();
                r.checks = w.checks.clone();
                r.threshold = w.threshold;
                r.canary_weight = w.canary_weight;
                r.traffic = w.traffic;
                r.exit_code = Some(exit_of(w).code());
                r.decided_by = w.canary.clone();
                r
            }
            None => Report::new(Verdict::UpToDate).exit(Exit::Success),
        };
        report.duration_s = Secs(members.iter().map(|m| m.duration_s.0).fold(0.0, f64::max));
        for m in &members {
            for name in &m.failed_metrics {
                let qualified = match &m.canary {
                    Some(c) => format!("{c}/{name}"),
                    None => name.clone(),
                };
                if !report.failed_metrics.contains(&qualified) {
                    report.failed_metrics.push(qualified);
                }
            }
            report.warnings.extend(m.warnings.iter().cloned());
        }
        let each: Vec<String> = members.iter().map(Report::headline).collect();
        report.message = Some(format!(
            "{} canaries ({policy}): {}",
            members.len(),
            each.join("; ")
        ));
        report.policy = Some(policy.to_string());
        report.canaries = members;
        report
    }

    /// The report of a run whose ticks are `ticks` (times relative to the run's start).
    pub fn from_ticks(verdict: Verdict, ticks: &[TickLog]) -> Report {
        let mut recorder = Recorder::default();
        for tick in ticks {
            recorder.push(tick);
        }
        recorder.report(verdict)
    }

    /// Sets the exit code (and so finishes the report).
    pub fn exit(mut self, exit: Exit) -> Report {
        self.exit_code = Some(exit.code());
        self
    }

    /// Every canary of the run with its verdict, `name.namespace=verdict` joined by commas (the
    /// pipelines' `canaries` output): each member of a release, or the run's one canary; empty
    /// when the run had none (render, deploy).
    pub fn canaries_line(&self) -> String {
        let entry = |r: &Report| {
            r.canary
                .as_deref()
                .map(|c| format!("{c}={}", r.verdict.as_str()))
        };
        if self.canaries.is_empty() {
            return entry(self).unwrap_or_default();
        }
        self.canaries
            .iter()
            .map(|m| entry(m).unwrap_or_else(|| format!("-={}", m.verdict.as_str())))
            .collect::<Vec<_>>()
            .join(",")
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
}

/// Seconds, printed as an integer when whole.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Secs(pub f64);

impl Serialize for Secs {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.0.fract() == 0.0 && self.0 >= 0.0 && self.0 < 9.0e15 {
            s.serialize_u64(self.0 as u64)
        } else {
            s.serialize_f64(self.0)
        }
    }
}

impl<'de> serde::Deserialize<'de> for Secs {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Secs, D::Error> {
        f64::deserialize(d).map(Secs)
    }
}

impl Secs {
    pub fn from_ms(ms: u64) -> Secs {
        Secs(ms as f64 / 1000.0)
    }
}

/// Exit codes from worst to best, for the verdict of a release of several canaries.
const RELEASE_ORDER: [Exit; 7] = [
    Exit::InvalidInput,
    Exit::Runtime,
    Exit::Locked,
    Exit::RolledBack,
    Exit::NoVerdict,
    Exit::Cancelled,
    Exit::Success,
];

/// Successful verdicts from the one where most happened, for the verdict of a release.
const SUCCESS_ORDER: [Verdict; 4] = [
    Verdict::Promoted,
    Verdict::Advanced,
    Verdict::Bootstrapped,
    Verdict::UpToDate,
];

/// The exit code a report stands for: the one it records, else its verdict's.
pub fn exit_of(report: &Report) -> Exit {
    if let Some(code) = report.exit_code {
        if let Some(exit) = Exit::ALL.iter().find(|e| e.code() == code) {
            return *exit;
        }
    }
    match report.verdict {
        v if v.is_success() => Exit::Success,
        Verdict::RolledBack => Exit::RolledBack,
        Verdict::NoVerdict => Exit::NoVerdict,
        Verdict::Cancelled => Exit::Cancelled,
        _ => Exit::Runtime,
    }
}

/// Alike ticks in a row that keep a row each before the rest of them are folded into one.
pub const FOLD_AFTER: u32 = 20;
/// Past this many rows, ticks also fold when only their values differ (same verdicts).
pub const MAX_ROWS: usize = 2_000;
/// Past this many rows, the oldest rows after the first `MAX_ROWS / 2` are dropped (and counted
/// in a warning), so a report never holds more than this.
pub const HARD_ROWS: usize = 4_000;
/// Weight changes listed in `weights` at most.
const MAX_WEIGHTS: usize = 1_000;

/// Builds a [`Report`] tick by tick in memory that does not grow with the number of ticks.
///
/// Every tick becomes a row, except that in a run of *alike* ticks (the same phase, weight,
/// failed checks, check results and values, and the same message up to its numbers, such as
/// "iteration 7/1000") the first [`FOLD_AFTER`] keep rows of their own and the rest fold into
/// one row that counts them (`ticks`) and holds the last of them (`last`). So an A/B test of a
/// million iterations reports a few dozen rows. Past [`MAX_ROWS`] rows, ticks fold even when
/// their values differ (a real run's metrics vary every tick); past [`HARD_ROWS`], the middle of
/// the run is dropped and a warning says which ticks the report leaves out. The totals (failed
/// checks, weights, failed metrics, the reason) always cover every tick.
#[derive(Debug, Clone, Default)]
pub struct Recorder {
    rows: Vec<TickReport>,
    /// Separate alike rows so far in the current run of alike ticks (the first included).
    streak: u32,
    /// Whether the last row is the folded row of the current run of alike ticks.
    folding: bool,
    ticks: u64,
    last_phase: Option<Phase>,
    last_at: Millis,
    last_failed: u32,
    last_canary: u32,
    weights: Vec<u32>,
    weights_cut: bool,
    failed_metrics: Vec<String>,
    last_warning: Option<String>,
    last_halt: Option<String>,
    rolling_back: Option<String>,
    /// Ticks dropped by the hard cap, and the span they covered (seconds).
    dropped: u64,
    dropped_span: Option<(f64, f64)>,
}

impl Recorder {
    pub fn new() -> Recorder {
        Recorder::default()
    }

    /// How many ticks were recorded.
    pub fn ticks(&self) -> u64 {
        self.ticks
    }

    /// How many rows the report has now.
    pub fn rows(&self) -> usize {
        self.rows.len()
    }

    /// The phase after the last tick.
    pub fn last_phase(&self) -> Option<Phase> {
        self.last_phase
    }

    /// Records one tick.
    pub fn push(&mut self, tick: &TickLog) {
        self.ticks += 1;
        self.last_phase = Some(tick.phase);
        self.last_at = tick.at;
        self.last_failed = tick.failed_checks;
        self.last_canary = tick.routes.canary;
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
                    if !check.passed && !gate && !self.failed_metrics.contains(&check.name) {
                        self.failed_metrics.push(check.name.clone());
                    }
                }
                Command::Event { severity, message } => {
                    if *severity == EventLevel::Warning {
                        self.last_warning = Some(message.clone());
                        if message.starts_with("Halt") {
                            self.last_halt = Some(message.clone());
                        } else if message.starts_with("Rolling back") {
                            self.rolling_back = Some(message.clone());
                        }
                    }
                    messages.push(message.clone());
                }
                Command::SetRoutes { routes } if self.weights.last() != Some(&routes.canary) => {
                    if self.weights.len() < MAX_WEIGHTS {
                        self.weights.push(routes.canary);
                    } else {
                        self.weights_cut = true;
                    }
                }
                _ => {}
            }
        }
        let row = TickReport {
            at_s: Secs(tick.at as f64 / 1000.0),
            phase: tick.phase.to_string(),
            canary_weight: tick.routes.canary,
            iteration: tick.iterations,
            failed_checks: tick.failed_checks,
            metrics,
            verdicts,
            webhooks,
            message: messages.join("; "),
            ticks: 1,
            last: None,
        };
        self.add_row(row);
    }

    fn add_row(&mut self, row: TickReport) {
        let loose = self.rows.len() >= MAX_ROWS;
        let alike = self.rows.last().is_some_and(|prev| {
            let prev = prev.last.as_deref().unwrap_or(prev);
            alike(prev, &row, loose)
        });
        if !alike {
            self.streak = 1;
            self.folding = false;
            self.rows.push(row);
        } else if self.folding {
            if let Some(fold) = self.rows.last_mut() {
                fold.ticks += 1;
                fold.last = Some(Box::new(row));
            }
        } else if self.streak < FOLD_AFTER {
            self.streak += 1;
            self.rows.push(row);
        } else {
            self.folding = true;
            self.rows.push(row);
        }
        if self.rows.len() > HARD_ROWS {
            let dropped = self.rows.remove(HARD_ROWS / 2);
            self.dropped += dropped.ticks;
            let (from, to) = (dropped.at_s.0, dropped.until_s().0);
            self.dropped_span = Some(match self.dropped_span {
                Some((a, _)) => (a, to),
                None => (from, to),
            });
        }
    }

    /// The report of the ticks so far.
    pub fn report(&self, verdict: Verdict) -> Report {
        let mut report = Report::new(verdict);
        if self.ticks > 0 {
            report.failed_checks = self.last_failed;
            report.duration_s = Secs(self.last_at as f64 / 1000.0);
            report.canary_weight = self.last_canary;
        }
        report.weights = self.weights.clone();
        report.checks = self.rows.clone();
        report.failed_metrics = self.failed_metrics.clone();
        if !verdict.is_success() {
            report.message = match (&self.rolling_back, &self.last_halt) {
                (Some(r), Some(h)) => Some(format!("{r}; last failure: {h}")),
                (Some(r), None) => Some(r.clone()),
                (None, Some(h)) => Some(h.clone()),
                (None, None) => self.last_warning.clone(),
            };
        }
        if let Some((from, to)) = self.dropped_span {
            report.warnings.push(format!(
                "the run changed course too often to list: {} ticks from {from}s to {to}s are left out of the rows of this report (it keeps at most {HARD_ROWS}); the counts per check cover the rows shown, the totals cover every tick",
                self.dropped
            ));
        }
        if self.weights_cut {
            report.warnings.push(format!(
                "the canary weight changed more than {MAX_WEIGHTS} times; `weights` lists the first {MAX_WEIGHTS}"
            ));
        }
        report
    }
}

/// Whether `row` may fold into a row ending with `prev`: the same phase, weight, failed checks,
/// checks and results, and the same message once its numbers are left out; the same values
/// too unless `loose`.
fn alike(prev: &TickReport, row: &TickReport, loose: bool) -> bool {
    let same_values = || {
        prev.metrics.len() == row.metrics.len()
            && prev
                .metrics
                .iter()
                .zip(&row.metrics)
                .all(|((ka, va), (kb, vb))| {
                    ka == kb && (loose || va.map(f64::to_bits) == vb.map(f64::to_bits))
                })
    };
    prev.phase == row.phase
        && prev.canary_weight == row.canary_weight
        && prev.failed_checks == row.failed_checks
        && prev.verdicts == row.verdicts
        && prev.webhooks == row.webhooks
        && same_values()
        && without_numbers(&prev.message) == without_numbers(&row.message)
}

/// The message with every run of digits (and the `.` between them) as `#`.
fn without_numbers(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut in_number = false;
    for c in message.chars() {
        if c.is_ascii_digit() || (in_number && c == '.') {
            if !in_number {
                out.push('#');
                in_number = true;
            }
        } else {
            in_number = false;
            out.push(c);
        }
    }
    out
}

/// Called with every tick as it is recorded.
pub type Observer = Box<dyn FnMut(&TickLog) + Send>;

/// The engine ticks a [`Log`] keeps as they are (for [`Log::ticks`]): the first and the last
/// half of this many.
const KEPT_TICKS: usize = 1_000;

/// What a runner did, tick by tick, shared with whoever reports it. Cloning shares the log. Its
/// memory does not grow with the run: [`Log::report`] comes from a [`Recorder`].
#[derive(Clone, Default)]
pub struct Log {
    inner: Arc<Mutex<LogInner>>,
}

#[derive(Default)]
struct LogInner {
    recorder: Recorder,
    /// The first `KEPT_TICKS / 2` ticks, then a window of the last ones.
    head: Vec<TickLog>,
    tail: std::collections::VecDeque<TickLog>,
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
            inner.recorder.push(&tick);
            if inner.head.len() < KEPT_TICKS / 2 {
                inner.head.push(tick);
            } else {
                if inner.tail.len() >= KEPT_TICKS / 2 {
                    inner.tail.pop_front();
                }
                inner.tail.push_back(tick);
            }
        }
    }

    /// The report of every tick so far. Prefer it to `Report::from_ticks(verdict, &log.ticks())`,
    /// which sees only the ticks [`Log::ticks`] keeps.
    pub fn report(&self, verdict: Verdict) -> Report {
        self.inner
            .lock()
            .map(|inner| inner.recorder.report(verdict))
            .unwrap_or_else(|_| Report::new(verdict))
    }

    /// The engine's ticks: all of them for a run of up to 1,000 ticks; for a longer one the
    /// first and the last 500 (see [`Log::report`] for a report of all of them).
    pub fn ticks(&self) -> Vec<TickLog> {
        self.inner
            .lock()
            .map(|inner| inner.head.iter().chain(&inner.tail).cloned().collect())
            .unwrap_or_default()
    }

    /// How many ticks were recorded.
    pub fn len(&self) -> u64 {
        self.inner
            .lock()
            .map(|inner| inner.recorder.ticks())
            .unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The phase of the last tick.
    pub fn last_phase(&self) -> Option<Phase> {
        self.inner
            .lock()
            .ok()
            .and_then(|inner| inner.recorder.last_phase())
    }
}

impl std::fmt::Debug for Log {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Log").field("ticks", &self.len()).finish()
    }
}

#[cfg(test)]
mod release_tests {
    use super::*;

    fn member(name: &str, verdict: Verdict, exit: Exit, failed: &[&str]) -> Report {
        let mut r = Report::new(verdict);
        r.canary = Some(name.to_string());
        r.failed_metrics = failed.iter().map(|f| f.to_string()).collect();
        r.weights = vec![10, 20];
        r.exit(exit)
    }

    #[test]
    fn a_release_takes_its_worst_members_verdict_and_exit_and_keeps_every_member() {
        let r = Report::release(
            "all-or-nothing",
            vec![
                member("a.ns", Verdict::UpToDate, Exit::Success, &[]),
                member("b.ns", Verdict::Cancelled, Exit::Cancelled, &[]),
                member("c.ns", Verdict::RolledBack, Exit::RolledBack, &["errors"]),
                member("d.ns", Verdict::RolledBack, Exit::RolledBack, &[]),
            ],
        );
        assert_eq!(r.verdict, Verdict::RolledBack);
        assert_eq!(exit_of(&r), Exit::RolledBack);
        assert_eq!(r.decided_by.as_deref(), Some("c.ns"));
        assert_eq!(r.failed_metrics, vec!["c.ns/errors".to_string()]);
        assert_eq!(r.canaries.len(), 4);
        assert_eq!(r.policy.as_deref(), Some("all-or-nothing"));
        let message = r.message.unwrap_or_default();
        assert!(
            message.starts_with("4 canaries (all-or-nothing): a.ns: up to date"),
            "{message}"
        );
        assert!(
            message.contains("c.ns: rolled back; failing: errors"),
            "{message}"
        );
        // An error outranks a rollback.
        let r = Report::release(
            "independent",
            vec![
                member("a.ns", Verdict::RolledBack, Exit::RolledBack, &[]),
                member("b.ns", Verdict::Failed, Exit::Runtime, &[]),
            ],
        );
        assert_eq!(exit_of(&r), Exit::Runtime);
    }

    #[test]
    fn a_successful_release_says_what_happened_most() {
        let r = Report::release(
            "all-or-nothing",
            vec![
                member("a.ns", Verdict::UpToDate, Exit::Success, &[]),
                member("b.ns", Verdict::Promoted, Exit::Success, &[]),
                member("c.ns", Verdict::Bootstrapped, Exit::Success, &[]),
            ],
        );
        assert_eq!(r.verdict, Verdict::Promoted);
        assert_eq!(exit_of(&r), Exit::Success);
        assert_eq!(r.weights, vec![10, 20]);
        assert_eq!(
            r.canaries_line(),
            "a.ns=up_to_date,b.ns=promoted,c.ns=bootstrapped"
        );
        let one = member("a.ns", Verdict::RolledBack, Exit::RolledBack, &[]);
        assert_eq!(one.canaries_line(), "a.ns=rolled_back");
        assert_eq!(Report::new(Verdict::Rendered).canaries_line(), "");
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
                        severity: EventLevel::Warning,
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
            severity: EventLevel::Warning,
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

    fn advance(i: u32, value: f64) -> TickLog {
        let mut t = tick(
            u64::from(i) * 10_000,
            100,
            0,
            vec![
                check("request-success-rate", "metric", Some(value), true),
                Command::Event {
                    severity: EventLevel::Info,
                    message: format!("Advance podinfo.test canary iteration {i}/100000"),
                },
            ],
        );
        t.iterations = i;
        t
    }

    #[test]
    fn alike_ticks_fold_after_a_few_rows_and_every_tick_is_counted() {
        let mut r = Recorder::new();
        r.push(&tick(0, 0, 0, vec![]));
        for i in 1..=100_000 {
            r.push(&advance(i, 99.5));
        }
        let report = r.report(Verdict::NoVerdict);
        let rows = &report.checks;
        assert_eq!(rows.len(), 1 + FOLD_AFTER as usize + 1, "{:?}", rows.len());
        assert_eq!(rows.iter().map(|t| t.ticks).sum::<u64>(), 100_001);
        let fold = &rows[rows.len() - 1];
        assert_eq!(fold.ticks, 100_000 - u64::from(FOLD_AFTER));
        let last = fold
            .last
            .as_deref()
            .map(|l| (l.iteration, l.message.as_str()));
        assert_eq!(
            last,
            Some((
                100_000,
                "Advance podinfo.test canary iteration 100000/100000"
            ))
        );
        assert_eq!(report.duration_s, Secs(1_000_000.0));
        // A different value is a new row.
        r.push(&advance(100_001, 80.0));
        assert_eq!(r.rows(), rows.len() + 1);
    }

    #[test]
    fn varying_values_fold_past_max_rows_and_rows_stop_at_the_hard_cap() {
        let mut r = Recorder::new();
        for i in 0..20_000u32 {
            r.push(&advance(i, f64::from(i)));
        }
        // Values differ every tick: rows up to MAX_ROWS, then alike but for their values, they
        // fold as any alike ticks do.
        assert_eq!(r.rows(), MAX_ROWS + FOLD_AFTER as usize);
        // Failed checks that change every tick never fold: the hard cap holds.
        let mut r = Recorder::new();
        for i in 0..20_000u32 {
            r.push(&tick(u64::from(i) * 1000, 10, i, vec![]));
        }
        assert_eq!(r.rows(), HARD_ROWS);
        let report = r.report(Verdict::NoVerdict);
        assert_eq!(report.failed_checks, 19_999, "totals cover every tick");
        assert!(
            report
                .warnings
                .iter()
                .any(|w| w.contains("16000 ticks from 2000s to 17999s are left out")),
            "{:?}",
            report.warnings
        );
        assert_eq!(report.checks[HARD_ROWS / 2].at_s, Secs(18_000.0));
    }

    #[test]
    fn the_log_keeps_a_bounded_window_of_ticks_and_reports_all_of_them() {
        let log = Log::new();
        for i in 0..5_000u32 {
            log.push(advance(i, f64::from(i % 7)));
        }
        assert_eq!(log.len(), 5_000);
        let kept = log.ticks();
        assert_eq!(kept.len(), KEPT_TICKS);
        assert_eq!(kept.last().map(|t| t.iterations), Some(4_999));
        let report = log.report(Verdict::NoVerdict);
        assert_eq!(report.duration_s, Secs(49_990.0));
        assert_eq!(report.checks.iter().map(|t| t.ticks).sum::<u64>(), 5_000);
        // For a short run the report is the one from_ticks makes.
        let log = Log::new();
        let ticks: Vec<TickLog> = (0..30).map(|i| advance(i, 99.0)).collect();
        for t in &ticks {
            log.push(t.clone());
        }
        assert_eq!(
            log.report(Verdict::Promoted),
            Report::from_ticks(Verdict::Promoted, &ticks)
        );
    }
}
