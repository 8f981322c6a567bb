//! The Tekton Task's contract, end to end: the real binary runs with the environment the Task
//! gives its step (`PARAM_*`, `RESULT_*_PATH`, `WORKSPACE_*`), and the tests read back what Tekton
//! would read: the result files, encoded into a termination message as Tekton's entrypoint
//! encodes them. One test holds `tekton/task/aviary/0.1/aviary.yaml` to what the binary reads
//! and writes.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

use crate::util::{code, read, stderr, tempdir, with_new_revision, write};
use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every result the Task declares, in the order the step writes them.
const RESULTS: &[&str] = &[
    "verdict",
    "weight",
    "failed-checks",
    "failed-metrics",
    "exit-code",
    "report",
    "message",
    "canaries",
];

/// Kubernetes' (and Tekton's) limit of one container's termination message.
const TERMINATION_MESSAGE_LIMIT: usize = 4096;

/// The entries Tekton's entrypoint may add to a step's termination message, at their longest:
/// `StartedAt` with a time zone offset, `Reason` of a step that timed out, `ExitCode` of a step
/// with `onError: continue`.
const TEKTON_ENTRIES: &[&str] = &[
    r#"{"key":"StartedAt","value":"2026-12-02T23:52:30.123+05:30","type":3}"#,
    r#"{"key":"Reason","value":"TimeoutExceeded","type":3}"#,
    r#"{"key":"ExitCode","value":"130","type":3}"#,
];

/// A Tekton step: `aviary step` with a clean environment (nothing leaks in from the machine
/// running the tests), `HOME` in `dir`, the result paths under `dir/results`, and `env`.
fn step(dir: &Path, env: &[(&str, String)]) -> Output {
    let results = dir.join("results");
    if let Err(e) = std::fs::create_dir_all(&results) {
        panic!("{e}");
    }
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_aviary"));
    cmd.arg("step").env_clear().current_dir(dir);
    if let Ok(v) = std::env::var("PATH") {
        cmd.env("PATH", v);
    }
    cmd.env("HOME", dir).env("TMPDIR", dir);
    cmd.env("AVIARY_HOST", "tekton");
    for name in RESULTS {
        cmd.env(
            format!("RESULT_{}_PATH", name.replace('-', "_").to_uppercase()),
            results.join(name),
        );
    }
    // What Tekton substitutes for optional workspaces that are not bound.
    for ws in ["KUBECONFIG", "PROMETHEUS"] {
        cmd.env(format!("WORKSPACE_{ws}_BOUND"), "false");
        cmd.env(format!("WORKSPACE_{ws}_PATH"), "");
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    match cmd.output() {
        Ok(o) => o,
        Err(e) => panic!("{e}"),
    }
}

/// The result `name` as the step wrote it; `None` when it wrote no file.
fn result(dir: &Path, name: &str) -> Option<String> {
    std::fs::read_to_string(dir.join("results").join(name)).ok()
}

/// `s` as Go's `encoding/json` writes a string's contents (Tekton's entrypoint marshals the
/// termination message with `json.Marshal`): `"` and `\` escaped, `\n` `\r` `\t` short, other
/// control characters and the HTML-sensitive `<` `>` `&` (and U+2028/2029) as `\u00XX`.
fn go_json(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || matches!(c, '<' | '>' | '&' | '\u{2028}' | '\u{2029}') => {
                out.push_str(&format!("\\u{:04x}", c as u32))
            }
            c => out.push(c),
        }
    }
    out
}

/// The termination message Tekton's entrypoint would write for this step: its own entries
/// ([`TEKTON_ENTRIES`]) and then every result file, as `[{"key":…,"value":…,"type":N},…]`.
fn termination_message(dir: &Path) -> String {
    let mut entries: Vec<String> = TEKTON_ENTRIES.iter().map(|e| e.to_string()).collect();
    for name in RESULTS {
        if let Some(value) = result(dir, name) {
            entries.push(format!(
                r#"{{"key":"{}","value":"{}","type":1}}"#,
                go_json(name),
                go_json(&value)
            ));
        }
    }
    format!("[{}]", entries.join(","))
}

fn example(path: &str) -> String {
    root().join(path).display().to_string()
}

/// Item 13: results are measured as Tekton encodes them, beside Tekton's own entries, and a
/// message that would not fit is shortened with a marker instead of failing the TaskRun; the
/// report keeps it whole.
#[test]
fn results_that_would_overflow_the_termination_message_are_shortened_with_a_marker() {
    let tmp = tempdir();
    let dir = tmp.path();
    // A canary file that does not exist, whose path (and so the error message) is ~3,000
    // characters that Go's encoder writes as six bytes each.
    let missing = dir.join(
        (0..15)
            .map(|_| "&<>".repeat(66))
            .collect::<Vec<_>>()
            .join("/"),
    );
    let report = dir.join("report.json");
    let out = step(
        dir,
        &[
            ("PARAM_COMMAND", "simulate".into()),
            ("PARAM_CANARY_FILE", missing.display().to_string()),
            (
                "PARAM_METRICS",
                example("examples/istio/timelines/good.yaml"),
            ),
            ("PARAM_REPORT", report.display().to_string()),
        ],
    );
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert_eq!(result(dir, "verdict").as_deref(), Some("failed"));
    assert_eq!(result(dir, "exit-code").as_deref(), Some("2"));
    let message = result(dir, "message").unwrap_or_default();
    assert!(message.starts_with("cannot read "), "{message}");
    assert!(message.contains("truncated"), "no marker: {message}");
    let encoded = termination_message(dir);
    assert!(
        encoded.len() <= TERMINATION_MESSAGE_LIMIT,
        "{} bytes: {encoded}",
        encoded.len()
    );
    // The report has the whole message.
    let full: Value = serde_json::from_str(&read(&report)).unwrap_or_default();
    let full = full["message"].as_str().unwrap_or_default();
    assert!(full.contains(&missing.display().to_string()), "{full}");
    assert!(message.len() < full.len(), "{message}");
}

/// Item 15: a rollback fails the TaskRun by default; with `fail-on-rollback: "false"` the step
/// succeeds while the results still say what happened (as GitHub's outputs do).
#[test]
fn a_rollback_fails_the_taskrun_unless_fail_on_rollback_is_false() {
    let simulate_bad = |dir: &Path, extra: &[(&str, String)]| {
        let mut env = vec![
            ("PARAM_COMMAND", "simulate".to_string()),
            (
                "PARAM_CANARY_FILE",
                example("examples/istio/overlays/prod/canary.yaml"),
            ),
            (
                "PARAM_METRICS",
                example("examples/istio/timelines/bad.yaml"),
            ),
            (
                "PARAM_REPORT",
                dir.join("report.json").display().to_string(),
            ),
        ];
        env.extend(extra.iter().cloned());
        step(dir, &env)
    };
    for (setting, exit) in [(None, 1), (Some("true"), 1), (Some("false"), 0)] {
        let tmp = tempdir();
        let dir = tmp.path();
        let extra: Vec<(&str, String)> = setting
            .map(|s| vec![("PARAM_FAIL_ON_ROLLBACK", s.to_string())])
            .unwrap_or_default();
        let out = simulate_bad(dir, &extra);
        assert_eq!(code(&out), exit, "{setting:?}: {}", stderr(&out));
        assert_eq!(result(dir, "verdict").as_deref(), Some("rolled_back"));
        assert_eq!(
            result(dir, "exit-code").as_deref(),
            Some("1"),
            "{setting:?}"
        );
        assert_eq!(
            result(dir, "failed-metrics").as_deref(),
            Some("request-duration")
        );
        let message = result(dir, "message").unwrap_or_default();
        assert!(message.contains("request duration"), "{message}");
        assert!(!message.ends_with('\n'), "{message:?}");
    }
    // Anything but true or false is refused, named as the param.
    let tmp = tempdir();
    let out = simulate_bad(tmp.path(), &[("PARAM_FAIL_ON_ROLLBACK", "no".into())]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    let message = result(tmp.path(), "message").unwrap_or_default();
    assert!(message.contains("fail-on-rollback"), "{message}");
}

/// A Prometheus that answers every query with 100 and keeps each request's `Authorization`.
struct Prometheus {
    url: String,
    authorizations: Arc<Mutex<Vec<String>>>,
}

impl Prometheus {
    fn start() -> Prometheus {
        let listener = match TcpListener::bind("127.0.0.1:0") {
            Ok(l) => l,
            Err(e) => panic!("bind: {e}"),
        };
        let url = match listener.local_addr() {
            Ok(a) => format!("http://{a}"),
            Err(e) => panic!("{e}"),
        };
        let authorizations = Arc::new(Mutex::new(Vec::new()));
        let seen = authorizations.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let seen = seen.clone();
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(&stream);
                    let mut auth = String::new();
                    loop {
                        let mut line = String::new();
                        match reader.read_line(&mut line) {
                            Ok(0) | Err(_) => return,
                            Ok(_) => {}
                        }
                        let line = line.trim();
                        if line.is_empty() {
                            break;
                        }
                        if let Some((k, v)) = line.split_once(':') {
                            if k.eq_ignore_ascii_case("authorization") {
                                auth = v.trim().to_string();
                            }
                        }
                    }
                    if let Ok(mut all) = seen.lock() {
                        all.push(auth);
                    }
                    let body = r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1700000000,"100"]}]}}"#;
                    let mut w = &stream;
                    let _ = write!(
                        w,
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                });
            }
        });
        Prometheus {
            url,
            authorizations,
        }
    }
}

/// Item 15: with the `kubeconfig` workspace bound (a Secret with a `kubeconfig` key) and the
/// `kubeconfig` param empty, the step reaches the cluster through that file; with the
/// `prometheus` workspace bound (a Secret with a `token` key), every query carries the token.
#[test]
fn kubeconfig_and_prometheus_token_come_from_their_bound_workspaces() {
    let (c, _hook, canary) = with_new_revision(
        "gatewayapi",
        "    maxWeight: 50\n    stepWeight: 25\n    metrics:\n      - name: request-success-rate\n        thresholdRange: {min: 99}\n        interval: 1m",
    );
    let prometheus = Prometheus::start();
    let tmp = tempdir();
    let dir = tmp.path();
    let kubeconfig_ws = dir.join("ws/kubeconfig");
    write(&kubeconfig_ws, "kubeconfig", read(&c.kubeconfig));
    // Secrets made with `kubectl create secret --from-file` often end in a newline.
    let prometheus_ws = dir.join("ws/prometheus");
    write(&prometheus_ws, "token", "s3cr3t-t0ken\n");
    let out = step(
        dir,
        &[
            ("PARAM_COMMAND", "rollout".into()),
            ("PARAM_CANARY_FILE", canary.display().to_string()),
            ("PARAM_PROMETHEUS_URL", prometheus.url.clone()),
            ("PARAM_KUBECONFIG", String::new()),
            (
                "PARAM_REPORT",
                dir.join("report.json").display().to_string(),
            ),
            ("WORKSPACE_KUBECONFIG_BOUND", "true".into()),
            (
                "WORKSPACE_KUBECONFIG_PATH",
                kubeconfig_ws.display().to_string(),
            ),
            ("WORKSPACE_PROMETHEUS_BOUND", "true".into()),
            (
                "WORKSPACE_PROMETHEUS_PATH",
                prometheus_ws.display().to_string(),
            ),
        ],
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(result(dir, "verdict").as_deref(), Some("promoted"));
    let seen = prometheus
        .authorizations
        .lock()
        .map(|a| a.clone())
        .unwrap_or_default();
    assert!(!seen.is_empty(), "no query reached Prometheus");
    assert!(seen.iter().all(|a| a == "Bearer s3cr3t-t0ken"), "{seen:?}");
    // The token is nowhere in what the step leaves behind.
    for name in RESULTS {
        assert!(!result(dir, name).unwrap_or_default().contains("s3cr3t"));
    }
    assert!(!read(&dir.join("report.json")).contains("s3cr3t"));
    assert!(!stderr(&out).contains("s3cr3t"));
}

/// A bound workspace without the file the Task documents is bad input, named as the workspace,
/// before anything changes.
#[test]
fn a_bound_workspace_without_its_file_is_bad_input() {
    let tmp = tempdir();
    let dir = tmp.path();
    let empty = dir.join("ws/empty");
    if let Err(e) = std::fs::create_dir_all(&empty) {
        panic!("{e}");
    }
    for ws in ["KUBECONFIG", "PROMETHEUS"] {
        let out = step(
            dir,
            &[
                ("PARAM_COMMAND", "rollout".into()),
                (
                    "PARAM_CANARY_FILE",
                    example("examples/istio/overlays/prod/canary.yaml"),
                ),
                (
                    "PARAM_REPORT",
                    dir.join("report.json").display().to_string(),
                ),
                (&format!("WORKSPACE_{ws}_BOUND"), "true".into()),
                (&format!("WORKSPACE_{ws}_PATH"), empty.display().to_string()),
            ],
        );
        assert_eq!(code(&out), 2, "{ws}: {}", stderr(&out));
        let message = result(dir, "message").unwrap_or_default();
        assert!(
            message.contains(&format!("workspace `{}`", ws.to_lowercase())),
            "{message}"
        );
    }
}

/// The Task as YAML: a mapping from the parsed document.
fn task() -> Value {
    let path = root().join("tekton/task/aviary/0.1/aviary.yaml");
    let text = read(&path);
    match aviary_core::spec::yaml::parse_documents("aviary.yaml", &text) {
        Ok(docs) if docs.len() == 1 => docs[0].to_json(),
        Ok(docs) => panic!("{} documents in {}", docs.len(), path.display()),
        Err(e) => panic!("{}: {e:?}", path.display()),
    }
}

fn names(list: &Value) -> Vec<String> {
    list.as_array()
        .map(|l| {
            l.iter()
                .filter_map(|i| i["name"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// Item 14 (and the contract of 13 and 15): the Task passes only params the binary reads and
/// declares every result it writes, its step names its command (no registry lookup of the
/// entrypoint), its image is pinned by digest, the catalog files are there, and the samples use
/// the maintained git-clone.
#[test]
fn the_task_agrees_with_the_binary() {
    let task = task();
    let spec = &task["spec"];
    let steps = spec["steps"].as_array().cloned().unwrap_or_default();
    assert_eq!(steps.len(), 1, "one step");
    let step = &steps[0];
    let env: Vec<(String, Value)> = step["env"]
        .as_array()
        .map(|l| {
            l.iter()
                .filter_map(|e| Some((e["name"].as_str()?.to_string(), e.clone())))
                .collect()
        })
        .unwrap_or_default();
    let env_value = |name: &str| -> Option<String> {
        env.iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, e)| e["value"].as_str().map(String::from))
    };

    // Params: each one the Task declares (but the image) reaches the step as PARAM_<NAME>, and
    // each PARAM_ the step gets is an input the binary reads.
    let params = names(&spec["params"]);
    let reads: Vec<&str> = aviary_hosts::INPUTS
        .iter()
        .chain(aviary_hosts::tekton::INPUTS.iter())
        .copied()
        .collect();
    for param in params.iter().filter(|p| *p != "image") {
        let var = format!("PARAM_{}", param.replace('-', "_").to_uppercase());
        assert_eq!(
            env_value(&var).as_deref(),
            Some(format!("$(params.{param})").as_str()),
            "the step does not get the param {param} as {var}"
        );
    }
    for (name, _) in env.iter().filter(|(n, _)| n.starts_with("PARAM_")) {
        let input = name["PARAM_".len()..].to_lowercase().replace('_', "-");
        assert!(
            reads.contains(&input.as_str()),
            "the step gets {name}, which the binary does not read"
        );
        assert!(params.contains(&input), "{name} is not a declared param");
    }
    // A token never travels as a param (it would show in the TaskRun): a Secret workspace.
    assert!(!params.iter().any(|p| p.contains("token")), "{params:?}");

    // Results: the declared ones are exactly those the binary writes, each given its path.
    assert_eq!(aviary_hosts::tekton::RESULTS, RESULTS);
    assert_eq!(names(&spec["results"]), RESULTS);
    for name in RESULTS {
        let var = format!("RESULT_{}_PATH", name.replace('-', "_").to_uppercase());
        assert_eq!(
            env_value(&var).as_deref(),
            Some(format!("$(results.{name}.path)").as_str()),
            "the step does not get {var}"
        );
    }

    // Workspaces: the optional ones the binary reads, with their bound flag and path.
    let workspaces = spec["workspaces"].as_array().cloned().unwrap_or_default();
    for ws in ["kubeconfig", "prometheus"] {
        let decl = workspaces.iter().find(|w| w["name"] == ws);
        assert!(
            decl.is_some_and(|w| w["optional"] == true),
            "optional workspace {ws}"
        );
        let upper = ws.to_uppercase();
        assert_eq!(
            env_value(&format!("WORKSPACE_{upper}_BOUND")).as_deref(),
            Some(format!("$(workspaces.{ws}.bound)").as_str())
        );
        assert_eq!(
            env_value(&format!("WORKSPACE_{upper}_PATH")).as_deref(),
            Some(format!("$(workspaces.{ws}.path)").as_str())
        );
    }

    // What the step writes fits the termination message at the Task's defaults, whatever the
    // run said: the longest verdict, exit code and counts, every metric failing, a long message
    // full of characters Go escapes; and the room kept for Tekton covers its entries.
    use aviary_core::report::{Report, Verdict};
    use aviary_hosts::tekton::{self, Tekton};
    let tekton_entries: usize = TEKTON_ENTRIES.iter().map(|e| e.len() + 1).sum();
    assert!(
        tekton_entries <= tekton::TEKTON_RESERVED,
        "{tekton_entries}"
    );
    assert_eq!(
        tekton::RESULTS_LIMIT + tekton::TEKTON_RESERVED,
        TERMINATION_MESSAGE_LIMIT
    );
    let default_report = spec["params"]
        .as_array()
        .and_then(|l| l.iter().find(|p| p["name"] == "report"))
        .and_then(|p| p["default"].as_str())
        .unwrap_or_default()
        .to_string();
    let mut report = Report::new(Verdict::Cancelled);
    report.failed_checks = u32::MAX;
    report.canary_weight = 100;
    report.failed_metrics = (0..200)
        .map(|i| format!("request-success-rate-{i}"))
        .collect();
    report.message = Some("<&>\"\n".repeat(2000));
    let path = Path::new("/workspace/source").join(&default_report);
    let written = match tekton::fit(Tekton::results(&report, &path)) {
        Ok(r) => r,
        Err(e) => panic!("{e}"),
    };
    let names_written: Vec<&str> = written.iter().map(|(n, _)| *n).collect();
    assert_eq!(names_written, RESULTS);
    let encoded = format!(
        "[{},{}]",
        TEKTON_ENTRIES.join(","),
        written
            .iter()
            .map(|(n, v)| format!(
                r#"{{"key":"{}","value":"{}","type":1}}"#,
                go_json(n),
                go_json(v)
            ))
            .collect::<Vec<_>>()
            .join(",")
    );
    assert!(
        encoded.len() <= TERMINATION_MESSAGE_LIMIT,
        "{}",
        encoded.len()
    );
    assert_eq!(
        written
            .iter()
            .find(|(n, _)| *n == "report")
            .map(|(_, v)| v.as_str()),
        Some(path.display().to_string().as_str())
    );

    // The step names its command (the Dockerfile's ENTRYPOINT), so the controller does not
    // look the entrypoint up in the registry.
    assert_eq!(
        step["command"],
        serde_json::json!(["/usr/local/bin/aviary"])
    );
    assert_eq!(
        step["args"],
        serde_json::json!(["step", "--host", "tekton"])
    );
    let dockerfile = read(&root().join("Dockerfile"));
    assert!(
        dockerfile.contains("ENTRYPOINT [\"/usr/local/bin/aviary\"]"),
        "{dockerfile}"
    );

    // The image: a param whose default is pinned by digest.
    assert_eq!(step["image"], "$(params.image)");
    let image = spec["params"]
        .as_array()
        .and_then(|l| l.iter().find(|p| p["name"] == "image"))
        .and_then(|p| p["default"].as_str())
        .unwrap_or_default()
        .to_string();
    let version = task["metadata"]["labels"]["app.kubernetes.io/version"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let (reference, digest) = image.split_once("@sha256:").unwrap_or(("", ""));
    assert!(
        reference.starts_with(&format!("ghcr.io/aviary-dev/aviary:{version}.")),
        "{image}"
    );
    assert!(
        digest.len() == 64
            && digest
                .chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()),
        "not pinned by a sha256 digest: {image}"
    );

    // Catalog layout: OWNERS beside the versions.
    let owners = read(&root().join("tekton/task/aviary/OWNERS"));
    assert!(
        owners.contains("approvers:") && owners.contains("reviewers:"),
        "tekton/task/aviary/OWNERS: {owners}"
    );

    // The samples and docs use the maintained git-clone (tektoncd-catalog/git-clone through the
    // git resolver), not the catalog's deprecated 0.9.
    let readme = read(&root().join("README.md"));
    let tekton_section = readme
        .split("### Tekton")
        .nth(1)
        .and_then(|s| s.split("\n### ").next())
        .unwrap_or_default()
        .to_string();
    for (what, text) in [
        ("README.md ### Tekton", tekton_section),
        (
            "the Task's README",
            read(&root().join("tekton/task/aviary/0.1/README.md")),
        ),
        (
            "samples/pipeline.yaml",
            read(&root().join("tekton/task/aviary/0.1/samples/pipeline.yaml")),
        ),
    ] {
        assert!(!text.contains("git-clone/0.9"), "{what} uses git-clone 0.9");
    }
    let pipeline = read(&root().join("tekton/task/aviary/0.1/samples/pipeline.yaml"));
    let pipeline = match aviary_core::spec::yaml::parse_documents("pipeline.yaml", &pipeline) {
        Ok(docs) if !docs.is_empty() => docs[0].to_json(),
        other => panic!("samples/pipeline.yaml: {other:?}"),
    };
    let clone = pipeline["spec"]["tasks"]
        .as_array()
        .and_then(|t| t.iter().find(|t| t["name"] == "fetch-source"))
        .cloned()
        .unwrap_or(Value::Null);
    let git_ref = &clone["taskRef"];
    assert_eq!(git_ref["resolver"], "git", "{clone}");
    let ref_param = |n: &str| {
        git_ref["params"]
            .as_array()
            .and_then(|l| l.iter().find(|p| p["name"] == n))
            .and_then(|p| p["value"].as_str())
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(
        ref_param("url"),
        "https://github.com/tektoncd-catalog/git-clone.git"
    );
    assert_eq!(ref_param("pathInRepo"), "task/git-clone/git-clone.yaml");
    assert!(ref_param("revision").starts_with('v'), "{clone}");
}
