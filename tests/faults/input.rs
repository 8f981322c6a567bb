//! Fault tests: bad input (specs, timelines, flags, files) that must be refused with exit 2 and
//! never hang or grow (issue 12, items 12, 14, 15, 16 and 17).
//!
//! Each runs the real binary on files in a temp dir. Memory is bounded by behaviour, not by
//! measuring: the child runs under `ulimit -d` (its heap), so growth makes it abort and the test
//! fail; time is bounded by a generous deadline after which the child is killed.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::util::*;

fn s(p: &Path) -> &str {
    p.to_str().unwrap_or_default()
}

/// Runs aviary with `args`, its data segment (heap) limited to `heap_mib` MiB when given, and
/// kills it after `limit` (a generous deadline: a hang, not a slow machine, is what fails).
fn run_limited(
    args: &[&str],
    env: &[(&str, &str)],
    heap_mib: Option<u64>,
    limit: Duration,
) -> Output {
    let bin = aviary_bin();
    let mut cmd = match heap_mib {
        Some(mib) => {
            let mut c = Command::new("sh");
            c.arg("-c")
                .arg(format!("ulimit -d {} && exec \"$0\" \"$@\"", mib * 1024))
                .arg(&bin);
            c
        }
        None => Command::new(&bin),
    };
    cmd.args(args)
        .env_remove("AVIARY_LOG")
        .env_remove("AVIARY_LOG_FORMAT")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => panic!("cannot run aviary: {e}"),
    };
    // Read the pipes on threads so that a large output cannot block the child.
    let mut out_pipe = child.stdout.take();
    let mut err_pipe = child.stderr.take();
    let out_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(p) = out_pipe.as_mut() {
            let _ = std::io::Read::read_to_end(p, &mut buf);
        }
        buf
    });
    let err_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(p) = err_pipe.as_mut() {
            let _ = std::io::Read::read_to_end(p, &mut buf);
        }
        buf
    });
    let start = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if start.elapsed() > limit => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "aviary {} did not finish within {limit:?} (killed)",
                    args.join(" ")
                );
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => panic!("waiting for aviary: {e}"),
        }
    };
    let out = Output {
        status,
        stdout: out_reader.join().unwrap_or_default(),
        stderr: err_reader.join().unwrap_or_default(),
    };
    let err = stderr(&out);
    assert!(!err.contains("panicked"), "aviary panicked: {err}");
    assert!(
        !err.contains("memory allocation of"),
        "aviary ran out of its {heap_mib:?} MiB heap: {err}"
    );
    out
}

/// Runs aviary with a one-minute deadline and no memory limit.
fn aviary(args: &[&str]) -> Output {
    run_limited(args, &[], None, Duration::from_secs(60))
}

fn json(out: &Output) -> Value {
    match serde_json::from_slice(&out.stdout) {
        Ok(v) => v,
        Err(e) => panic!(
            "stdout is not JSON ({e}): {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            stderr(out)
        ),
    }
}

/// Asserts exit 2 and that stderr holds each of `needles`.
#[track_caller]
fn refused(out: &Output, needles: &[&str]) {
    let err = stderr(out);
    assert_eq!(code(out), 2, "expected exit 2: {err}");
    for n in needles {
        assert!(err.contains(n), "stderr lacks {n:?}:\n{err}");
    }
}

/// A Flagger A/B test (gloo, a header match), interval 10s, with `analysis` lines added.
fn ab_canary(iterations: &str) -> String {
    format!(
        "apiVersion: flagger.app/v1beta1
kind: Canary
metadata:
  name: podinfo
  namespace: test
spec:
  provider: gloo
  targetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: podinfo
  service:
    port: 9898
  analysis:
    interval: 10s
    threshold: 2
    iterations: {iterations}
    match:
      - headers:
          x-canary:
            exact: insider
    metrics:
      - name: request-success-rate
        thresholdRange:
          min: 99
        interval: 1m
"
    )
}

const AB_TIMELINE: &str = "metrics:\n  request-success-rate: [99.9, 100]\n";

/// A canary release (istio), with `extra` appended under `spec.analysis`.
fn canary_with(target: &str, extra: &str) -> String {
    format!(
        "apiVersion: flagger.app/v1beta1
kind: Canary
metadata:
  name: podinfo
  namespace: test
spec:
  provider: istio
  targetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: {target}
  service:
    port: 9898
  analysis:
    interval: 1m
    threshold: 5
    maxWeight: 50
    stepWeight: 10
{extra}"
    )
}

// ---- item 12: huge schedules --------------------------------------------------------------------

#[test]
fn f12_plan_of_a_million_iterations_is_exact_and_takes_little_memory() {
    let dir = tempdir();
    let canary = write(dir.path(), "canary.yaml", ab_canary("1000000"));
    // Before the fix the plan ran both simulations tick by tick: over 2 GB, and an abort under
    // this limit. One tick per iteration, then the promotion: (1000000 + 1) x 10s.
    let out = run_limited(
        &["plan", "-f", s(&canary), "--json"],
        &[],
        Some(256),
        Duration::from_secs(60),
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let plan = json(&out);
    assert_eq!(plan["iterations"], 1_000_000);
    assert_eq!(plan["min_promotion_s"], 10_000_010);
    assert_eq!(plan["min_completion_s"], 10_000_030);
    // Two failed checks roll it back (one tick to start, one iteration, two failures, the
    // rollback), the million iterations notwithstanding.
    assert_eq!(plan["min_rollback_s"], 40);
}

#[test]
fn f12_iterations_past_the_bound_are_refused_with_the_bound() {
    let dir = tempdir();
    let canary = write(dir.path(), "canary.yaml", ab_canary("2147483647"));
    for cmd in ["validate", "plan"] {
        let out = aviary(&[cmd, "-f", s(&canary)]);
        refused(
            &out,
            &[
                &format!("{}:17: spec.analysis.iterations: expected an integer 0-1000000, got 2147483647", s(&canary)),
                "help: iterations is how many analysis ticks",
            ],
        );
    }
    let canary = write(
        dir.path(),
        "threshold.yaml",
        canary_with("podinfo", "").replace("threshold: 5", "threshold: 5000000"),
    );
    refused(
        &aviary(&["validate", "-f", s(&canary)]),
        &[":16: spec.analysis.threshold: expected an integer 0-1000000, got 5000000"],
    );
    let canary = write(
        dir.path(),
        "interval.yaml",
        canary_with("podinfo", "").replace("interval: 1m", "interval: 48h"),
    );
    refused(
        &aviary(&["validate", "-f", s(&canary)]),
        &[":15: spec.analysis.interval: expected an interval of at most 24h, got \"48h\""],
    );
}

#[test]
fn f12_simulate_of_150000_ticks_runs_in_flat_memory_and_reports_them_folded() {
    let dir = tempdir();
    let canary = write(dir.path(), "canary.yaml", ab_canary("150000"));
    let timeline = write(dir.path(), "timeline.yaml", AB_TIMELINE);
    // ~2 KiB per tick kept before the fix: over 500 MB for these ticks, an abort under 128 MiB.
    let out = run_limited(
        &[
            "simulate",
            "-f",
            s(&canary),
            "--metrics",
            s(&timeline),
            "--json",
        ],
        &[],
        Some(128),
        Duration::from_secs(120),
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let r = json(&out);
    assert_eq!(r["verdict"], "promoted");
    // New revision, 150000 iterations, promoting, finalising, succeeded: 150004 ticks.
    assert_eq!(r["duration_s"], 1_500_030);
    let rows = r["checks"].as_array().cloned().unwrap_or_default();
    assert!(rows.len() < 40, "{} rows", rows.len());
    let ticks: u64 = rows
        .iter()
        .map(|row| row["ticks"].as_u64().unwrap_or(1))
        .sum();
    assert_eq!(ticks, 150_004, "every tick is counted once");
    let folded = rows.iter().find(|row| row.get("last").is_some());
    let Some(folded) = folded else {
        panic!("no folded row: {rows:?}")
    };
    assert_eq!(folded["metrics"]["request-success-rate"], 100.0);
    assert_eq!(folded["last"]["iteration"], 150_000);
    assert_eq!(
        folded["last"]["message"],
        "Advance podinfo.test canary iteration 150000/150000"
    );
    // The human table shows the fold in one line.
    let out = run_limited(
        &["simulate", "-f", s(&canary), "--metrics", s(&timeline)],
        &[],
        Some(128),
        Duration::from_secs(120),
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(text.lines().count() < 50, "{text}");
    assert!(text.contains("more ticks like the one above"), "{text}");
    assert!(
        text.contains("verdict: promoted after 416h40m30s"),
        "{text}"
    );
}

// ---- item 14: rawYaml globs ------------------------------------------------------------------

#[test]
fn f14_a_raw_yaml_glob_with_ten_stars_matches_in_linear_time() {
    let dir = tempdir();
    let skaffold = write(
        dir.path(),
        "skaffold.yaml",
        "apiVersion: skaffold/v4beta13\nkind: Config\nmanifests:\n  rawYaml:\n    - k8s/*a*a*a*a*a*a*a*a*a*a*b.yaml\n",
    );
    // Forty a's and no b: a backtracking matcher tries every way to place ten stars in it.
    write(
        dir.path(),
        &format!("k8s/{}.yaml", "a".repeat(40)),
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: never\n",
    );
    write(
        dir.path(),
        "k8s/aaaaaaaaaab.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: matched\n",
    );
    let out = run_limited(
        &[
            "render",
            "--target",
            "prod",
            "--skaffold-file",
            s(&skaffold),
        ],
        &[],
        None,
        Duration::from_secs(20),
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(text.contains("name: matched"), "{text}");
    assert!(!text.contains("name: never"), "{text}");
}

// ---- item 15: what validate let through -------------------------------------------------------

#[test]
fn f15_empty_file_is_refused() {
    let dir = tempdir();
    for (name, text) in [
        ("empty.yaml", ""),
        ("comments.yaml", "# a Canary will go here\n"),
        ("separators.yaml", "---\n---\n"),
        ("null.yaml", "null\n"),
    ] {
        let file = write(dir.path(), name, text);
        let out = aviary(&["validate", "-f", s(&file)]);
        refused(
            &out,
            &[
                &format!("{}: the file is empty", s(&file)),
                "help: a Canary starts with",
            ],
        );
    }
}

#[test]
fn f15_truncated_file_without_its_canary_is_refused() {
    let dir = tempdir();
    // Flagger's podinfo file cut after its Deployment, before the Canary.
    let file = write(
        dir.path(),
        "podinfo.yaml",
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: podinfo\n  namespace: test\nspec:\n  replicas: 2\n---\n",
    );
    refused(
        &aviary(&["validate", "-f", s(&file)]),
        &[&format!(
            "{}:1: no Canary or MetricTemplate in this file, only Deployment (apps/v1) at line 1",
            s(&file)
        )],
    );
}

const TEMPLATE: &str = "apiVersion: flagger.app/v1beta1
kind: MetricTemplate
metadata:
  name: not-found-percentage
  namespace: test
spec:
  provider:
    type: prometheus
    address: http://prometheus.istio-system:9090
  query: |
    100 - sum(
        rate(
            istio_requests_total{
              reporter=\"destination\",
              destination_workload_namespace=\"{{ namespace }}\",
              destination_workload=\"{{ target }}\",
              response_code!=\"404\"
            }[{{ interval }}]
        )
    )
";

#[test]
fn f15_template_only_file_is_checked_on_its_own() {
    // Flagger takes a MetricTemplate on its own (it is applied apart from the Canary): a file of
    // templates is valid when each passes every check it can get alone, with a warning that its
    // {{ variables.* }} and uses need the Canary.
    let dir = tempdir();
    let templates = write(dir.path(), "templates.yaml", TEMPLATE);
    let out = aviary(&["validate", "-f", s(&templates)]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let err = stderr(&out);
    for needle in [
        format!(
            "{}:1: warning: MetricTemplates without a Canary",
            s(&templates)
        ),
        "could not be checked".to_string(),
        "help: pass the Canary's file too, e.g. aviary validate -f canary.yaml -f".to_string(),
    ] {
        assert!(
            err.contains(needle.as_str()),
            "stderr lacks {needle:?}:\n{err}"
        );
    }
    // Alone, a template still gets every check it can: a bad placeholder is exit 2.
    let bad = write(
        dir.path(),
        "bad.yaml",
        TEMPLATE.replace("{{ target }}", "{{ nosuch }}"),
    );
    refused(
        &aviary(&["validate", "-f", s(&bad)]),
        &["spec.query: unknown placeholder {{ nosuch }}"],
    );
    // An empty or truncated file stays exit 2.
    let empty = write(dir.path(), "empty.yaml", "# nothing\n---\n");
    refused(
        &aviary(&["validate", "-f", s(&empty)]),
        &["the file is empty"],
    );
    let cut = write(
        dir.path(),
        "cut.yaml",
        &TEMPLATE[..TEMPLATE.find("  query").unwrap_or(0)],
    );
    refused(
        &aviary(&["validate", "-f", s(&cut)]),
        &["spec: missing required field \"query\""],
    );
    // Beside the Canary that uses it, the same file is valid, without that warning.
    let canary = write(
        dir.path(),
        "canary.yaml",
        canary_with(
            "podinfo",
            "    metrics:\n    - name: not-found\n      templateRef:\n        name: not-found-percentage\n      thresholdRange:\n        min: 99\n",
        ),
    );
    let out = aviary(&["validate", "-f", s(&canary), "-f", s(&templates)]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        !stderr(&out).contains("without a Canary"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn f15_unknown_or_unclosed_placeholders_in_a_query_are_refused() {
    let dir = tempdir();
    let nosuch = write(
        dir.path(),
        "nosuch.yaml",
        TEMPLATE.replace("{{ target }}", "{{ nosuch }}"),
    );
    refused(
        &aviary(&["validate", "-f", s(&nosuch)]),
        &[
            &format!(
                "{}:16: spec.query: unknown placeholder {{{{ nosuch }}}}",
                s(&nosuch)
            ),
            "help: a query may use name, namespace, target, service, ingress, route, interval",
        ],
    );
    let unclosed = write(
        dir.path(),
        "unclosed.yaml",
        TEMPLATE.replace("[{{ interval }}]", "[{{ interval ]"),
    );
    refused(
        &aviary(&["validate", "-f", s(&unclosed)]),
        &[&format!(
            "{}:18: spec.query: unclosed placeholder \"{{{{ interval ]\": this '{{{{' has no '}}}}'",
            s(&unclosed)
        )],
    );
    // An inline (deprecated) query gets the same check.
    let inline = write(
        dir.path(),
        "inline.yaml",
        canary_with(
            "podinfo",
            "    metrics:\n    - name: errors\n      query: sum(rate(x{ns=\"{{ namespace\"}[1m]))\n      thresholdRange:\n        max: 1\n",
        ),
    );
    refused(
        &aviary(&["validate", "-f", s(&inline)]),
        &[&format!(
            "{}:21: spec.analysis.metrics[0].query: unclosed placeholder",
            s(&inline)
        )],
    );
}

#[test]
fn f15_a_template_variable_the_metric_does_not_set_is_refused() {
    let dir = tempdir();
    let text = format!(
        "{}---\n{}",
        TEMPLATE.replace("{{ target }}", "{{ variables.workload }}"),
        canary_with(
            "podinfo",
            "    metrics:\n    - name: not-found\n      templateRef:\n        name: not-found-percentage\n        namespace: test\n      templateVariables:\n        app: podinfo\n      thresholdRange:\n        min: 99\n",
        )
    );
    let file = write(dir.path(), "canary.yaml", text);
    refused(
        &aviary(&["validate", "-f", s(&file)]),
        &[
            &format!(
                "{}:45: spec.analysis.metrics[0].templateVariables: metric \"not-found\" uses MetricTemplate not-found-percentage.test",
                s(&file)
            ),
            "needs {{ variables.workload }}, but templateVariables sets app",
            "help: add `workload: VALUE` under templateVariables",
        ],
    );
}

#[test]
fn f15_metric_interval_of_0s_is_refused() {
    let dir = tempdir();
    let file = write(
        dir.path(),
        "canary.yaml",
        canary_with(
            "podinfo",
            "    metrics:\n    - name: request-success-rate\n      thresholdRange:\n        min: 99\n      interval: 0s\n",
        ),
    );
    refused(
        &aviary(&["validate", "-f", s(&file)]),
        &[&format!(
            "{}:23: spec.analysis.metrics[0].interval: expected a query window of at least 1s, got \"0s\"",
            s(&file)
        )],
    );
}

#[test]
fn f15_infinite_threshold_range_is_refused() {
    let dir = tempdir();
    for (bound, value, line) in [
        ("min", ".inf", 22),
        ("max", "-.inf", 22),
        ("min", ".NaN", 22),
    ] {
        let file = write(
            dir.path(),
            "canary.yaml",
            canary_with(
                "podinfo",
                &format!("    metrics:\n    - name: request-success-rate\n      thresholdRange:\n        {bound}: {value}\n"),
            ),
        );
        let out = aviary(&["validate", "-f", s(&file)]);
        refused(
            &out,
            &[&format!(
                "{}:{line}: spec.analysis.metrics[0].thresholdRange.{bound}: expected a",
                s(&file)
            )],
        );
        assert!(
            !stderr(&out).contains("neither min nor max"),
            "{}",
            stderr(&out)
        );
    }
}

#[test]
fn f15_names_too_long_for_the_objects_aviary_derives_are_refused() {
    let dir = tempdir();
    // 55 characters: podinfo-...-primary is 63, the most a Service name may be.
    let ok = "a".repeat(55);
    let file = write(dir.path(), "ok.yaml", canary_with(&ok, ""));
    let out = aviary(&["validate", "-f", s(&file)]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let long = "a".repeat(56);
    let file = write(dir.path(), "long.yaml", canary_with(&long, ""));
    refused(
        &aviary(&["validate", "-f", s(&file)]),
        &[
            &format!("{}:11: spec.targetRef.name: \"{long}\" is 56 characters, so the primary's Service \"{long}-primary\" would be 64, over Kubernetes' limit of 63", s(&file)),
            "help: shorten targetRef.name to at most 55 characters, or set service.name",
        ],
    );
    // A short service.name names the Services instead, and its own length is checked.
    let file = write(
        dir.path(),
        "service.yaml",
        canary_with(&long, "").replace("    port: 9898", "    name: podinfo\n    port: 9898"),
    );
    let out = aviary(&["validate", "-f", s(&file)]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let file = write(
        dir.path(),
        "service-long.yaml",
        canary_with("podinfo", "").replace(
            "    port: 9898",
            &format!("    name: {long}\n    port: 9898"),
        ),
    );
    refused(
        &aviary(&["validate", "-f", s(&file)]),
        &[&format!(
            "{}:13: spec.service.name: \"{long}\" is 56 characters",
            s(&file)
        )],
    );
    // A dotted target is a valid Deployment name but cannot name a Service.
    let file = write(dir.path(), "dotted.yaml", canary_with("podinfo.v2", ""));
    refused(
        &aviary(&["validate", "-f", s(&file)]),
        &[&format!(
            "{}:11: spec.targetRef.name: \"podinfo.v2\" cannot name a Service",
            s(&file)
        )],
    );
    // The Canary's own name becomes <name>-aviary, the state ConfigMap and Lease.
    let name = format!("{}.{}", "b".repeat(200), "c".repeat(47));
    let file = write(
        dir.path(),
        "canary-name.yaml",
        canary_with("podinfo", "").replace(
            "  name: podinfo\n  namespace",
            &format!("  name: {name}\n  namespace"),
        ),
    );
    refused(
        &aviary(&["validate", "-f", s(&file)]),
        &[&format!(
            "{}:4: metadata.name: the Canary's name is 248 characters",
            s(&file)
        )],
    );
}

#[test]
fn f15_an_unknown_log_level_is_refused() {
    let dir = tempdir();
    let file = write(dir.path(), "canary.yaml", canary_with("podinfo", ""));
    let out = aviary(&["--log-level", "bogus", "validate", "-f", s(&file)]);
    refused(
        &out,
        &["--log-level", "bogus", "error, warn, info, debug, trace"],
    );
    // AVIARY_LOG overrides --log-level; one that is no filter is refused too, not ignored.
    let out = run_limited(
        &["validate", "-f", s(&file)],
        &[("AVIARY_LOG", "aviary=[")],
        None,
        Duration::from_secs(60),
    );
    refused(&out, &["AVIARY_LOG=\"aviary=[\" is not a log filter"]);
    let out = run_limited(
        &["--log-level", "DEBUG", "validate", "-f", s(&file)],
        &[("AVIARY_LOG", "warn")],
        None,
        Duration::from_secs(60),
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
}

// ---- item 16: a byte-order mark --------------------------------------------------------------

#[test]
fn f16_a_utf8_byte_order_mark_is_accepted() {
    let dir = tempdir();
    let mut canary = b"\xEF\xBB\xBF".to_vec();
    canary.extend_from_slice(ab_canary("10").as_bytes());
    let canary = write(dir.path(), "canary.yaml", canary);
    let out = aviary(&["validate", "-f", s(&canary)]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let mut timeline = b"\xEF\xBB\xBF".to_vec();
    timeline.extend_from_slice(AB_TIMELINE.as_bytes());
    let timeline = write(dir.path(), "timeline.yaml", timeline);
    let out = aviary(&[
        "simulate",
        "-f",
        s(&canary),
        "--metrics",
        s(&timeline),
        "--json",
    ]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(json(&out)["verdict"], "promoted");
    // UTF-16 is named as such, with the fix.
    let utf16 = write(
        dir.path(),
        "utf16.yaml",
        b"\xFF\xFEa\x00:\x00 \x001\x00\n\x00",
    );
    refused(
        &aviary(&["validate", "-f", s(&utf16)]),
        &[&format!(
            "{}:1: the file is UTF-16 text; aviary reads UTF-8",
            s(&utf16)
        )],
    );
}

// ---- item 17: input size ---------------------------------------------------------------------

#[test]
fn f17_dev_zero_is_refused_at_the_cap_without_growing() {
    let dir = tempdir();
    let canary = write(dir.path(), "canary.yaml", ab_canary("10"));
    // Before the fix /dev/zero was read until memory ran out (2.6 GB); under this limit that is
    // an abort. The cap is 16 MiB.
    let cases: Vec<Vec<&str>> = vec![
        vec!["validate", "-f", "/dev/zero"],
        vec!["plan", "-f", "/dev/zero"],
        vec!["simulate", "-f", s(&canary), "--metrics", "/dev/zero"],
        vec!["render", "--target", "prod", "--skaffold-file", "/dev/zero"],
    ];
    for args in &cases {
        let out = run_limited(args, &[], Some(200), Duration::from_secs(60));
        refused(
            &out,
            &["/dev/zero: the file is larger than 16 MiB, the most aviary reads from one input file"],
        );
    }
    // An ordinary file over the cap, too.
    let big = write(dir.path(), "big.yaml", "#".repeat(17 << 20));
    let out = run_limited(
        &["validate", "-f", s(&big)],
        &[],
        Some(200),
        Duration::from_secs(60),
    );
    refused(
        &out,
        &[&format!("{}: the file is larger than 16 MiB", s(&big))],
    );
}

#[test]
fn f17_a_fifo_nobody_writes_to_does_not_hang() {
    let dir = tempdir();
    let fifo = dir.path().join("canary.yaml");
    let made = Command::new("mkfifo").arg(&fifo).status();
    assert!(made.is_ok_and(|s| s.success()), "mkfifo failed");
    // Before the fix aviary blocked in open(2) for a writer that never came.
    let out = run_limited(
        &["validate", "-f", s(&fifo)],
        &[],
        None,
        Duration::from_secs(20),
    );
    refused(&out, &[&format!("{}: the file is empty", s(&fifo))]);
}
