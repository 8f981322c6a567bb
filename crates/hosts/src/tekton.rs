//! Tekton: the catalog Task (`tekton/task/aviary/<version>/aviary.yaml`) passes its params as
//! `PARAM_<NAME>` environment variables (never into a script), the paths of its results as
//! `RESULT_<NAME>_PATH` (`$(results.<name>.path)`, `/tekton/results/<name>` by default), and its
//! optional workspaces as `WORKSPACE_<NAME>_BOUND` (`"true"`/`"false"`) and `WORKSPACE_<NAME>_PATH`
//! (empty when not bound).
//!
//! Results travel in the step container's termination message, which Kubernetes caps at 4096
//! bytes per container. Tekton's entrypoint writes it (`pkg/termination`) as the JSON array
//! `[{"key":"<result>","value":"<contents>","type":1},…]` (Go's `json.Marshal`, so `<`, `>` and
//! `&` cost six bytes each), and puts its own entries in the same array: `StartedAt` (an RFC 3339
//! time with milliseconds), `Reason` (`TimeoutExceeded`, `Cancelled`) and, for `onError:
//! continue`, `ExitCode`, all `"type":3`. An array over 4096 bytes fails the step. So the results
//! are measured as Tekton encodes them, with room kept for Tekton's entries; a `message` or
//! `failed-metrics` that would not fit is shortened with a marker (the report file keeps them
//! whole), and only a report path too long to fit fails the step.

use std::path::{Path, PathBuf};

use super::{Env, FinishError, HostError, PipelineHost};
use aviary_core::exit::Exit;
use aviary_core::report::{exit_of, Report};

/// What one step container's termination message may weigh (Kubernetes' per-container cap,
/// Tekton's `MaxContainerTerminationMessageLength`). The pod-wide 12 KiB cap, shared by all its
/// containers, leaves each of the Task's three (`prepare`, `working-dir-initializer`, the step)
/// these 4096.
pub const TERMINATION_MESSAGE_LIMIT: usize = 4096;

/// Room kept for the entries Tekton writes beside ours: `StartedAt` with a time zone offset is
/// 69 bytes with its comma, `Reason` `TimeoutExceeded` 52, `ExitCode` 42; the rest is margin for
/// entries a later Tekton may add.
pub const TEKTON_RESERVED: usize = 256;

/// What the JSON array of our results may weigh, brackets included.
pub const RESULTS_LIMIT: usize = TERMINATION_MESSAGE_LIMIT - TEKTON_RESERVED;

/// The results the step writes, in order: the Task declares exactly these.
pub const RESULTS: &[&str] = &[
    "verdict",
    "weight",
    "failed-checks",
    "failed-metrics",
    "exit-code",
    "report",
    "message",
    "canaries",
];

/// Params only the Task has, beside the inputs every host reads ([`crate::INPUTS`]).
pub const INPUTS: &[&str] = &["fail-on-rollback"];

/// The files looked for, in order, in the `kubeconfig` workspace when the `kubeconfig` param is
/// empty (a Secret's keys: `kubeconfig` as the catalog's kubernetes Tasks use, or `config` as in
/// `~/.kube`).
pub const KUBECONFIG_FILES: &[&str] = &["kubeconfig", "config"];

/// The file of the `prometheus` workspace (a Secret's key) that holds the bearer token.
pub const PROMETHEUS_TOKEN_FILE: &str = "token";

/// Ends a `message` result that was shortened to fit.
pub const MESSAGE_MARKER: &str = "… (truncated; the report has all of it)";

/// Ends a `failed-metrics` result that was shortened to fit: the names before it are whole.
pub const LIST_MARKER: &str = "…";

/// The bytes `c` takes inside a JSON string written by Go's `encoding/json` (which escapes the
/// HTML-sensitive characters too). `\b` and `\f` are counted as `\u0008`/`\u000c`, as older Go
/// writes them: never less than Tekton's encoding.
fn go_json_char_len(c: char) -> usize {
    match c {
        '"' | '\\' | '\n' | '\r' | '\t' => 2,
        '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => 6,
        c if (c as u32) < 0x20 => 6,
        c => c.len_utf8(),
    }
}

/// The bytes `s` takes inside a JSON string written by Go's `encoding/json`.
pub fn go_json_len(s: &str) -> usize {
    s.chars().map(go_json_char_len).sum()
}

/// The bytes of `{"key":"<name>","value":"<value>","type":1}` as Tekton writes it.
fn entry_len(name: &str, value: &str) -> usize {
    r#"{"key":"","value":"","type":1}"#.len() + go_json_len(name) + go_json_len(value)
}

/// The bytes of the JSON array of `results` (brackets and commas included), as Tekton's
/// entrypoint would write it without entries of its own.
pub fn encoded_len(results: &[(&str, String)]) -> usize {
    let entries: usize = results.iter().map(|(n, v)| entry_len(n, v)).sum();
    2 + entries + results.len().saturating_sub(1)
}

/// The longest start of `text` (whole characters) that, followed by [`MESSAGE_MARKER`], takes
/// at most `room` encoded bytes; empty when not even the marker fits.
fn shorten_text(text: &str, room: usize) -> String {
    let marker = go_json_len(MESSAGE_MARKER);
    if room < marker {
        return String::new();
    }
    let mut out = String::new();
    let mut used = marker;
    for c in text.chars() {
        used += go_json_char_len(c);
        if used > room {
            break;
        }
        out.push(c);
    }
    out.push_str(MESSAGE_MARKER);
    out
}

/// The first whole names of the comma-separated `list`, then [`LIST_MARKER`] as a last item,
/// taking at most `room` encoded bytes; empty when not even the marker fits.
fn shorten_list(list: &str, room: usize) -> String {
    let marker = go_json_len(LIST_MARKER);
    let mut out = String::new();
    for name in list.split(',') {
        let sep = usize::from(!out.is_empty());
        if go_json_len(&out) + sep + go_json_len(name) + 1 + marker > room {
            break;
        }
        if sep == 1 {
            out.push(',');
        }
        out.push_str(name);
    }
    if out.is_empty() {
        return if marker <= room {
            LIST_MARKER.to_string()
        } else {
            String::new()
        };
    }
    out.push(',');
    out.push_str(LIST_MARKER);
    out
}

/// `results` made to fit [`RESULTS_LIMIT`]: unchanged when they do; else `message` is
/// shortened, then `canaries`, then `failed-metrics`; an error when even that is not enough (a long report
/// path, which cannot be cut without pointing elsewhere).
pub fn fit(
    mut results: Vec<(&'static str, String)>,
) -> Result<Vec<(&'static str, String)>, FinishError> {
    for (name, shorten) in [
        ("message", shorten_text as fn(&str, usize) -> String),
        ("canaries", shorten_list),
        ("failed-metrics", shorten_list),
    ] {
        let total = encoded_len(&results);
        if total <= RESULTS_LIMIT {
            return Ok(results);
        }
        if let Some((_, value)) = results.iter_mut().find(|(n, _)| *n == name) {
            let room = go_json_len(value).saturating_sub(total - RESULTS_LIMIT);
            *value = shorten(value, room);
        }
    }
    let total = encoded_len(&results);
    if total <= RESULTS_LIMIT {
        Ok(results)
    } else {
        Err(FinishError::TooLarge {
            total: total + TEKTON_RESERVED,
            limit: TERMINATION_MESSAGE_LIMIT,
        })
    }
}

pub struct Tekton {
    env: Box<Env>,
}

impl Tekton {
    pub fn new(env: Box<Env>) -> Tekton {
        Tekton { env }
    }

    fn env(&self, name: &str) -> Option<String> {
        (self.env)(name).filter(|v| !v.trim().is_empty())
    }

    fn result_path(&self, name: &str) -> PathBuf {
        let key = format!("RESULT_{}_PATH", name.replace('-', "_").to_uppercase());
        match self.env(&key) {
            Some(p) => PathBuf::from(p),
            None => PathBuf::from("/tekton/results").join(name),
        }
    }

    /// The path of the optional workspace `name` when it is bound (`$(workspaces.<name>.bound)`
    /// is `"true"` and its path is not empty).
    fn workspace(&self, name: &str) -> Option<PathBuf> {
        let upper = name.replace('-', "_").to_uppercase();
        if self.env(&format!("WORKSPACE_{upper}_BOUND")).as_deref() != Some("true") {
            return None;
        }
        self.env(&format!("WORKSPACE_{upper}_PATH"))
            .map(PathBuf::from)
    }

    /// The kubeconfig of the bound `kubeconfig` workspace: its first file of
    /// [`KUBECONFIG_FILES`] that exists, else the first one's path (for the error to name).
    fn workspace_kubeconfig(&self) -> Option<PathBuf> {
        let dir = self.workspace("kubeconfig")?;
        let found = KUBECONFIG_FILES
            .iter()
            .map(|f| dir.join(f))
            .find(|p| p.is_file());
        Some(found.unwrap_or_else(|| dir.join(KUBECONFIG_FILES[0])))
    }

    /// The bearer token of the bound `prometheus` workspace, trimmed.
    fn workspace_token(&self) -> Option<Result<String, HostError>> {
        let path = self.workspace("prometheus")?.join(PROMETHEUS_TOKEN_FILE);
        let help = "bind a Secret with the key `token` to the prometheus workspace, e.g. \
                    kubectl create secret generic prometheus-token --from-literal=token=...";
        Some(match std::fs::read_to_string(&path) {
            Ok(t) if !t.trim().is_empty() => Ok(t.trim().to_string()),
            Ok(_) => Err(HostError::new(
                format!("workspace `prometheus`: {} is empty", path.display()),
                help,
            )),
            Err(e) => Err(HostError::new(
                format!(
                    "workspace `prometheus`: cannot read {}: {e}",
                    path.display()
                ),
                help,
            )),
        })
    }

    /// The `fail-on-rollback` param: `true` unless it says `false`.
    fn fail_on_rollback(&self) -> Result<bool, HostError> {
        match self
            .input("fail-on-rollback")
            .map(|v| v.to_ascii_lowercase())
        {
            None => Ok(true),
            Some(v) if v == "true" => Ok(true),
            Some(v) if v == "false" => Ok(false),
            Some(v) => Err(HostError::new(
                format!("input `fail-on-rollback`: expected \"true\" or \"false\", got {v:?}"),
                "for example `fail-on-rollback: \"false\"` to let a rollback end the step with 0",
            )),
        }
    }

    /// The results this step writes, in the order of [`RESULTS`], before [`fit`].
    pub fn results(report: &Report, report_path: &Path) -> Vec<(&'static str, String)> {
        vec![
            ("verdict", report.verdict.as_str().to_string()),
            ("weight", report.canary_weight.to_string()),
            ("failed-checks", report.failed_checks.to_string()),
            ("failed-metrics", report.failed_metrics.join(",")),
            ("exit-code", exit_of(report).code().to_string()),
            ("report", report_path.display().to_string()),
            ("message", report.message.clone().unwrap_or_default()),
            ("canaries", report.canaries_line()),
        ]
    }
}

impl PipelineHost for Tekton {
    fn name(&self) -> &'static str {
        "tekton"
    }

    fn raw_input(&self, name: &str) -> Option<String> {
        let param = (self.env)(&format!("PARAM_{}", name.replace('-', "_").to_uppercase()));
        let given = param.as_deref().is_some_and(|v| !v.trim().is_empty());
        match name {
            // The param wins; else the bound workspace's file.
            "kubeconfig" if !given => self
                .workspace_kubeconfig()
                .map(|p| p.display().to_string())
                .or(param),
            // Never a param (it would show in the TaskRun): the bound Secret's `token`.
            "prometheus-token" => self.workspace_token().and_then(Result::ok),
            _ => param,
        }
    }

    fn var(&self, name: &str) -> Option<String> {
        (self.env)(name)
    }

    fn check(&self) -> Result<(), HostError> {
        self.fail_on_rollback()?;
        if let Some(Err(e)) = self.workspace_token() {
            return Err(e);
        }
        if self.env("PARAM_KUBECONFIG").is_none() {
            if let Some(path) = self.workspace_kubeconfig().filter(|p| !p.is_file()) {
                let dir = path.parent().unwrap_or(Path::new("")).display().to_string();
                return Err(HostError::new(
                    format!(
                        "workspace `kubeconfig` is bound but {dir} holds none of {}",
                        KUBECONFIG_FILES.join(", ")
                    ),
                    "bind a Secret with the key `kubeconfig` (kubectl create secret generic \
                     cluster --from-file=kubeconfig=./kubeconfig), or set the kubeconfig param \
                     to the file's path",
                ));
            }
        }
        Ok(())
    }

    fn exit(&self, exit: Exit) -> Exit {
        // The results still say rolled_back and exit-code 1; only the TaskRun succeeds.
        match (exit, self.fail_on_rollback()) {
            (Exit::RolledBack, Ok(false)) => Exit::Success,
            _ => exit,
        }
    }

    fn finish(&mut self, report: &Report, report_path: &Path) -> Result<(), FinishError> {
        let results = fit(Self::results(report, report_path))?;
        let mut problems = Vec::new();
        for (name, value) in results {
            let path = self.result_path(name);
            // Tekton reads a result as written: no trailing newline.
            if let Err(source) = std::fs::write(&path, value.as_bytes()) {
                problems.push(FinishError::Write {
                    what: format!("result {name}"),
                    path: path.display().to_string(),
                    source,
                });
            }
        }
        FinishError::from_all(problems)
    }

    fn default_report(&self) -> PathBuf {
        PathBuf::from("aviary-report.json")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aviary_core::report::Verdict;
    use std::collections::HashMap;
    use std::path::Path;

    /// A directory of its own for one test's result files.
    fn results_dir(test: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("aviary-tekton-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        if let Err(e) = std::fs::create_dir_all(&dir) {
            panic!("{}: {e}", dir.display());
        }
        dir
    }

    fn host(dir: &Path, extra: &[(&str, String)]) -> Tekton {
        let mut map: HashMap<String, String> = RESULTS
            .iter()
            .map(|n| {
                (
                    format!("RESULT_{}_PATH", n.replace('-', "_").to_uppercase()),
                    dir.join(n).display().to_string(),
                )
            })
            .collect();
        for (k, v) in extra {
            map.insert(k.to_string(), v.clone());
        }
        Tekton::new(Box::new(move |k: &str| map.get(k).cloned()))
    }

    /// The result files of `dir` as Tekton's entrypoint encodes them (Go's `json.Marshal`:
    /// `<`, `>`, `&` as `\u003c`…), with a `StartedAt` entry of its own.
    fn termination_message(dir: &Path) -> usize {
        let mut total =
            r#"[{"key":"StartedAt","value":"2026-12-02T23:52:30.123+05:30","type":3}"#.len();
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let value = std::fs::read_to_string(entry.path()).unwrap_or_default();
            let escaped: usize = value
                .chars()
                .map(|c| match c {
                    '<' | '>' | '&' => 6,
                    '"' | '\\' | '\n' => 2,
                    c => c.len_utf8(),
                })
                .sum();
            let key = entry.file_name().to_string_lossy().len();
            total += r#",{"key":"","value":"","type":1}"#.len() + key + escaped;
        }
        total + 1
    }

    #[test]
    fn results_are_measured_as_tekton_encodes_them_and_a_long_message_is_shortened() {
        let dir = results_dir("encoded");
        // 1,500 characters: under 4096 as raw bytes, 9,000 bytes once Go escapes them.
        let mut report = Report::new(Verdict::Failed);
        report.message = Some(format!("cannot read {}", "<&>".repeat(500)));
        let mut tk = host(&dir, &[]);
        if let Err(e) = tk.finish(&report, Path::new("/workspace/source/aviary-report.json")) {
            panic!("{e}");
        }
        let size = termination_message(&dir);
        assert!(size <= 4096, "a {size}-byte termination message");
        let message = std::fs::read_to_string(dir.join("message")).unwrap_or_default();
        assert!(message.starts_with("cannot read <&>"), "{message}");
        assert!(
            message.ends_with("(truncated; the report has all of it)"),
            "{message}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_release_of_many_canaries_lists_them_cut_at_a_name_with_a_marker() {
        let dir = results_dir("canaries");
        let members = (0..200)
            .map(|i| {
                let mut m = Report::new(Verdict::Promoted);
                m.canary = Some(format!("service-{i:03}.prod"));
                m
            })
            .collect();
        let report = Report::release("all-or-nothing", members);
        let mut tk = host(&dir, &[]);
        if let Err(e) = tk.finish(&report, Path::new("aviary-report.json")) {
            panic!("{e}");
        }
        assert!(termination_message(&dir) <= 4096);
        let canaries = std::fs::read_to_string(dir.join("canaries")).unwrap_or_default();
        assert!(
            canaries.starts_with("service-000.prod=promoted,service-001.prod=promoted,"),
            "{canaries}"
        );
        assert!(canaries.ends_with(",…"), "{canaries}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn many_failed_metrics_are_cut_at_a_name_with_a_marker() {
        let dir = results_dir("metrics");
        let mut report = Report::new(Verdict::RolledBack);
        report.failed_metrics = (0..400).map(|i| format!("metric-{i:03}")).collect();
        report.message = Some("x".repeat(3000));
        let mut tk = host(&dir, &[]);
        if let Err(e) = tk.finish(&report, Path::new("aviary-report.json")) {
            panic!("{e}");
        }
        assert!(termination_message(&dir) <= 4096);
        let metrics = std::fs::read_to_string(dir.join("failed-metrics")).unwrap_or_default();
        assert!(metrics.starts_with("metric-000,metric-001,"), "{metrics}");
        assert!(metrics.ends_with(",…"), "{metrics}");
        let names: Vec<&str> = metrics.split(',').collect();
        assert!(
            names[..names.len() - 1]
                .iter()
                .all(|n| n.len() == "metric-000".len()),
            "a name was cut: {metrics}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_report_path_that_cannot_fit_fails_clearly() {
        let dir = results_dir("toolong");
        let report = Report::new(Verdict::Promoted);
        // 3,900 bytes of path: under 4096 raw, over once Tekton's own entries are counted.
        let path = format!("/workspace/{}", "d/".repeat(1945));
        let mut tk = host(&dir, &[]);
        match tk.finish(&report, Path::new(&path)) {
            Err(e @ FinishError::TooLarge { .. }) => {
                assert!(e.to_string().contains("report path"), "{e}")
            }
            other => panic!("{other:?}"),
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn unbound_workspaces_give_nothing_and_the_kubeconfig_param_wins() {
        let dir = results_dir("workspaces");
        let ws = dir.join("ws");
        for (name, text) in [("kubeconfig", "apiVersion: v1\n"), ("token", "t0k\n")] {
            if let Err(e) =
                std::fs::create_dir_all(&ws).and_then(|_| std::fs::write(ws.join(name), text))
            {
                panic!("{e}");
            }
        }
        let ws_path = ws.display().to_string();
        // As Tekton substitutes them when the workspaces are not bound.
        let unbound = host(
            &dir,
            &[
                ("WORKSPACE_KUBECONFIG_BOUND", "false".into()),
                ("WORKSPACE_KUBECONFIG_PATH", String::new()),
                ("WORKSPACE_PROMETHEUS_BOUND", "false".into()),
                ("WORKSPACE_PROMETHEUS_PATH", String::new()),
                ("PARAM_KUBECONFIG", String::new()),
            ],
        );
        assert_eq!(unbound.check(), Ok(()));
        assert_eq!(unbound.input("kubeconfig"), None);
        assert_eq!(unbound.input("prometheus-token"), None);
        let bound = host(
            &dir,
            &[
                ("WORKSPACE_KUBECONFIG_BOUND", "true".into()),
                ("WORKSPACE_KUBECONFIG_PATH", ws_path.clone()),
                ("WORKSPACE_PROMETHEUS_BOUND", "true".into()),
                ("WORKSPACE_PROMETHEUS_PATH", ws_path.clone()),
                ("PARAM_KUBECONFIG", String::new()),
            ],
        );
        assert_eq!(bound.check(), Ok(()));
        assert_eq!(
            bound.input("kubeconfig"),
            Some(ws.join("kubeconfig").display().to_string())
        );
        assert_eq!(bound.input("prometheus-token").as_deref(), Some("t0k"));
        let param = host(
            &dir,
            &[
                ("WORKSPACE_KUBECONFIG_BOUND", "true".into()),
                ("WORKSPACE_KUBECONFIG_PATH", ws_path),
                ("PARAM_KUBECONFIG", "/etc/other/kubeconfig".into()),
            ],
        );
        assert_eq!(
            param.input("kubeconfig").as_deref(),
            Some("/etc/other/kubeconfig")
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn fail_on_rollback_false_turns_only_a_rollback_into_success() {
        let dir = results_dir("exit");
        let keep = host(&dir, &[]);
        assert_eq!(keep.exit(Exit::RolledBack), Exit::RolledBack);
        let lenient = host(&dir, &[("PARAM_FAIL_ON_ROLLBACK", "False".into())]);
        assert_eq!(lenient.exit(Exit::RolledBack), Exit::Success);
        for other in [
            Exit::InvalidInput,
            Exit::Runtime,
            Exit::NoVerdict,
            Exit::Cancelled,
        ] {
            assert_eq!(lenient.exit(other), other);
        }
        let bad = host(&dir, &[("PARAM_FAIL_ON_ROLLBACK", "yes".into())]);
        match bad.check() {
            Err(e) => assert!(e.message.starts_with("input `fail-on-rollback`"), "{e}"),
            Ok(()) => panic!("accepted yes"),
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
