//! GitHub Actions' contract, end to end: the real binary runs as the container action runs
//! (`aviary step` with `GITHUB_*` and `INPUT_*`, the workspace as a directory of its own), and
//! the tests read what the runner and later steps would: stdout and stderr split the runner's
//! way, `$GITHUB_OUTPUT`, the step summary and the report file.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Output};

use aviary_hosts::github::log::{is_command, runner_lines};
use serde_json::Value;

use crate::util::{code, outputs, read, stderr, stdout, tempdir, write};

/// A hostile string: were it printed as it is, the runner would read an error annotation at a
/// file of the attacker's, a warning, and a legacy `##[error]`.
const EVIL: &str = "x\n::error file=evil.yaml,line=1::pwned\r::warning::pwned ##[error]pwned";

/// `aviary step` as GitHub runs the action: a clean environment with the runner's variables,
/// the inputs as `INPUT_<NAME>` (hyphens kept), in `cwd`.
fn step(
    ws: &Path,
    files: &Path,
    cwd: &Path,
    inputs: &[(&str, &str)],
    extra: &[(&str, &str)],
) -> Output {
    let mut cmd = Command::new(crate::util::aviary_bin());
    cmd.arg("step").current_dir(cwd).env_clear();
    for k in ["PATH", "HOME", "TMPDIR"] {
        if let Ok(v) = std::env::var(k) {
            cmd.env(k, v);
        }
    }
    let vars = [
        ("GITHUB_ACTIONS", "true".to_string()),
        ("CI", "true".into()),
        ("GITHUB_REPOSITORY", "acme/shop".into()),
        ("GITHUB_RUN_ID", "4242".into()),
        (
            "GITHUB_SHA",
            "0123456789abcdef0123456789abcdef01234567".into(),
        ),
        ("GITHUB_SERVER_URL", "https://github.com".into()),
        ("GITHUB_WORKSPACE", ws.display().to_string()),
        ("GITHUB_OUTPUT", files.join("output").display().to_string()),
        (
            "GITHUB_STEP_SUMMARY",
            files.join("summary.md").display().to_string(),
        ),
        // A runner older than v2.329 does not mount its temp directory into the container.
        ("RUNNER_TEMP", "/home/runner/work/_temp".into()),
    ];
    for (k, v) in vars {
        cmd.env(k, v);
    }
    for (k, v) in inputs {
        cmd.env(format!("INPUT_{}", k.to_uppercase()), v);
    }
    for (k, v) in extra {
        cmd.env(k, v);
    }
    match cmd.output() {
        Ok(o) => o,
        Err(e) => panic!("{e}"),
    }
}

/// The workflow commands the runner would read in everything the step printed, split its way.
fn commands(out: &Output) -> Vec<String> {
    let all = format!("{}\n{}", stdout(out), stderr(out));
    runner_lines(&all)
        .into_iter()
        .filter(|l| is_command(l))
        .map(String::from)
        .collect()
}

/// Every workflow command in the step's output is one aviary meant: stderr holds none, and on
/// stdout each is a group, a mask, or an annotation with aviary's title, never one of `EVIL`'s.
fn assert_only_intended_commands(out: &Output) {
    for line in runner_lines(&stderr(out)) {
        assert!(
            !is_command(line),
            "a command on stderr: {line:?}\n{}",
            stderr(out)
        );
    }
    for line in commands(out) {
        let intended = line == "::endgroup::"
            || (line.starts_with("::group::") && !line.contains("pwned"))
            || line.starts_with("::add-mask::")
            || ["::error ", "::warning ", "::notice "].iter().any(|p| {
                line.starts_with(p)
                    && line
                        .split("::")
                        .nth(1)
                        .is_some_and(|props| props.contains("title="))
            });
        assert!(intended, "not aviary's: {line:?}\n{}", stdout(out));
        assert!(!line.starts_with("::error file=evil.yaml"), "{line}");
    }
}

const TEMPLATE: &str = "apiVersion: flagger.app/v1beta1
kind: MetricTemplate
metadata:
  name: latency
  namespace: prod
spec:
  provider:
    type: prometheus
    address: http://prometheus.monitoring:9090
  query: histogram_quantile(0.99, rate(x[1m]))
---
";

/// A Canary named `name` with one metric per entry of `metrics` (each from the `latency`
/// template when `templated`).
fn canary(name: &str, metrics: &[&str], templated: bool) -> String {
    let mut text = format!(
        "{}apiVersion: flagger.app/v1beta1
kind: Canary
metadata:
  name: {name}
  namespace: prod
spec:
  provider: gatewayapi:v1
  targetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: podinfo
  service:
    port: 9898
  analysis:
    interval: 1m
    threshold: 2
    maxWeight: 50
    stepWeight: 10
    metrics:
",
        if templated { TEMPLATE } else { "" }
    );
    for m in metrics {
        text.push_str(&format!("      - name: {}\n", yaml_string(m)));
        if templated {
            text.push_str("        templateRef:\n          name: latency\n");
        }
        text.push_str("        thresholdRange:\n          max: 500\n        interval: 30s\n");
    }
    text
}

/// `s` as a YAML double-quoted string.
fn yaml_string(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

fn report_at(ws: &Path, files: &Path) -> (std::collections::BTreeMap<String, String>, Value) {
    let o = outputs(&read(&files.join("output")));
    let path = o.get("report").cloned().unwrap_or_default();
    let report = serde_json::from_str(&read(&ws.join(&path))).unwrap_or(Value::Null);
    (o, report)
}

#[test]
fn github_report_lands_in_the_workspace_and_its_output_opens_from_there() {
    let tmp = tempdir();
    let ws = tmp.path().join("workspace");
    let files = tmp.path().join("file_commands");
    let elsewhere = tmp.path().join("elsewhere");
    for d in [&ws, &files, &elsewhere] {
        if let Err(e) = std::fs::create_dir_all(d) {
            panic!("{e}");
        }
    }
    write(
        &ws,
        "k8s/canary.yaml",
        canary("podinfo", &["request-duration"], false),
    );
    write(
        &ws,
        "k8s/timeline.yaml",
        "metrics:\n  request-duration: [212, 230, 198, 241, 200, 210]\n",
    );
    // Relative inputs are paths in the workspace, wherever the process runs.
    let inputs = [
        ("command", "simulate"),
        ("canary-file", "k8s/canary.yaml"),
        ("metrics", "k8s/timeline.yaml"),
    ];
    let out = step(&ws, &files, &elsewhere, &inputs, &[]);
    assert_eq!(code(&out), 0, "{}\n{}", stdout(&out), stderr(&out));
    let (o, report) = report_at(&ws, &files);
    // A later step runs on the runner with the workspace as its working directory: a path
    // relative to it is one it can open (the container's /github/workspace is not).
    assert_eq!(
        o.get("report").map(String::as_str),
        Some("aviary-report.json"),
        "{o:?}"
    );
    assert_eq!(report["verdict"], "promoted", "{report}");
    assert_eq!(report["host"], "github");

    // A `report` input in the workspace comes back relative to it too.
    let out = step(
        &ws,
        &files,
        &elsewhere,
        &[inputs.as_slice(), &[("report", "reports/canary.json")]].concat(),
        &[],
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let o = outputs(&read(&files.join("output")));
    assert_eq!(
        o.get("report").map(String::as_str),
        Some("reports/canary.json")
    );
    assert!(ws.join("reports/canary.json").is_file());
}

#[test]
fn github_no_user_text_becomes_a_workflow_command() {
    let tmp = tempdir();
    let ws = tmp.path().join("ws");
    let files = tmp.path().to_path_buf();
    let evil_metric = format!("p99 {EVIL}");
    let inputs = [
        ("command", "simulate"),
        ("canary-file", "canary.yaml"),
        ("metrics", "timeline.yaml"),
    ];

    // A hostile metric name through a whole simulation: its ticks, its verdict, its summary.
    write(&ws, "canary.yaml", canary("podinfo", &[&evil_metric], true));
    write(
        &ws,
        "timeline.yaml",
        format!(
            "metrics:\n  {}: [212, 900, 900, 900]\n",
            yaml_string(&evil_metric)
        ),
    );
    let out = step(&ws, &files, &ws, &inputs, &[("AVIARY_LOG", "debug")]);
    assert_eq!(code(&out), 1, "{}\n{}", stdout(&out), stderr(&out));
    assert!(
        stderr(&out).contains("pwned"),
        "the name is logged: {}",
        stderr(&out)
    );
    assert_only_intended_commands(&out);
    let summary = read(&files.join("summary.md"));
    assert!(!summary.lines().any(|l| l.starts_with("::")), "{summary}");
    let lines: Vec<&str> = summary.split(['\r', '\n']).collect();
    let fences = lines.iter().filter(|l| l.starts_with("```")).count();
    let charts = lines.iter().filter(|l| **l == "```mermaid").count();
    assert!(charts >= 2 && fences == 2 * charts, "{summary}");

    // A hostile key of the timeline: a spec error, printed and annotated.
    write(
        &ws,
        "timeline.yaml",
        format!(
            "metrics:\n  {}: [212]\n  {}: [1]\n",
            yaml_string(&evil_metric),
            yaml_string(EVIL)
        ),
    );
    let out = step(&ws, &files, &ws, &inputs, &[]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(stderr(&out).contains("pwned"), "{}", stderr(&out));
    assert_only_intended_commands(&out);

    // A hostile Canary name, in JSON logs this time: still escaped, still valid JSON.
    write(
        &ws,
        "canary.yaml",
        canary(&yaml_string(EVIL), &["request-duration"], false),
    );
    write(
        &ws,
        "timeline.yaml",
        "metrics:\n  request-duration: [212]\n",
    );
    let out = step(&ws, &files, &ws, &inputs, &[("AVIARY_LOG_FORMAT", "json")]);
    assert_ne!(code(&out), 0, "{}", stderr(&out));
    assert_only_intended_commands(&out);
    for line in stderr(&out).lines() {
        assert!(
            serde_json::from_str::<Value>(line).is_ok(),
            "not JSON: {line}"
        );
    }
}

/// A webhook that answers every call with `status` and `body`.
fn hostile_hook(status: u16, body: &'static str) -> String {
    let listener = match TcpListener::bind("127.0.0.1:0") {
        Ok(l) => l,
        Err(e) => panic!("{e}"),
    };
    let url = format!(
        "http://{}/",
        listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default()
    );
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let mut buf = [0u8; 65536];
            let _ = stream.set_read_timeout(Some(std::time::Duration::from_millis(200)));
            let _ = stream.read(&mut buf);
            let _ = write!(
                stream,
                "HTTP/1.1 {status} X\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    url
}

#[test]
fn github_a_webhooks_answer_is_no_workflow_command() {
    let c = crate::util::cluster();
    let hook = hostile_hook(
        500,
        "no\n::error file=evil.yaml,line=1::pwned\r##[error]pwned\r\n::warning::pwned",
    );
    let canary = c.write(
        "canary.yaml",
        &crate::util::canary_yaml("gatewayapi", &hook, "    maxWeight: 60\n    stepWeight: 20"),
    );
    c.apply_target("podinfo:1", 2);
    let out = c.run(&canary);
    assert_eq!(code(&out), 0, "bootstrap: {}", stderr(&out));
    c.apply_target("podinfo:2", 2);
    let tmp = tempdir();
    let dir = tmp.path();
    let kubeconfig = c.kubeconfig.display().to_string();
    let canary = canary.display().to_string();
    let out = step(
        dir,
        dir,
        dir,
        &[
            ("command", "rollout"),
            ("canary-file", &canary),
            ("kubeconfig", &kubeconfig),
            ("timeout", "2m"),
        ],
        &[],
    );
    assert_eq!(code(&out), 1, "{}\n{}", stdout(&out), stderr(&out));
    assert!(
        stderr(&out).contains("pwned"),
        "the answer is logged: {}",
        stderr(&out)
    );
    assert_only_intended_commands(&out);
}

#[test]
fn github_twelve_spec_errors_keep_the_verdict_annotation() {
    let tmp = tempdir();
    let ws = tmp.path().join("ws");
    let names: Vec<String> = (1..=12).map(|i| format!("metric-{i}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    write(&ws, "canary.yaml", canary("podinfo", &names, false));
    write(&ws, "timeline.yaml", "metrics:\n  metric-1: [1]\n");
    let out = step(
        &ws,
        tmp.path(),
        &ws,
        &[
            ("command", "simulate"),
            ("canary-file", "canary.yaml"),
            ("metrics", "timeline.yaml"),
        ],
        &[],
    );
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    let errors: Vec<String> = stdout(&out)
        .lines()
        .filter(|l| l.starts_with("::error"))
        .map(String::from)
        .collect();
    // The runner keeps the first 10 of a type: the verdict is among them, and the rest counted.
    assert!(errors.len() <= 10, "{errors:#?}");
    assert!(
        errors
            .iter()
            .take(10)
            .any(|l| l.contains("title=aviary%3A failed::")),
        "{errors:#?}"
    );
    assert!(
        errors.iter().any(|l| l.contains("::and 4 more errors")),
        "{errors:#?}"
    );
    assert_eq!(
        errors
            .iter()
            .filter(|l| l.contains("file=canary.yaml"))
            .count(),
        8
    );
}

#[test]
fn github_annotations_of_a_rendered_target_name_no_rendered_stream() {
    let tmp = tempdir();
    let ws = tmp.path().join("ws");
    let app = ws.join("sub/app");
    write(
        &app,
        "skaffold.yaml",
        "apiVersion: skaffold/v4beta11
kind: Config
metadata:
  name: app
manifests:
  rawYaml:
    - k8s/canary.yaml
profiles:
  - name: prod
",
    );
    let text =
        canary("podinfo", &["request-duration"], false).replace("threshold: 2", "threshold: two");
    write(&app, "k8s/canary.yaml", &text);
    let out = step(
        &ws,
        tmp.path(),
        &ws,
        &[
            ("command", "rollout"),
            ("target", "prod"),
            ("skaffold-file", "sub/app/skaffold.yaml"),
        ],
        &[],
    );
    assert_eq!(code(&out), 2, "{}\n{}", stdout(&out), stderr(&out));
    let stdout = stdout(&out);
    let annotation = stdout
        .lines()
        .find(|l| l.starts_with("::error") && l.contains("threshold"))
        .unwrap_or_else(|| panic!("no annotation of the threshold in {stdout}"));
    // The line of a rendered stream is no line of a file in the repository: neither is named.
    assert!(
        !annotation.contains("file=") && !annotation.contains("line="),
        "{annotation}"
    );
    assert!(
        annotation.starts_with("::error title=spec.analysis.threshold::"),
        "{annotation}"
    );
}
