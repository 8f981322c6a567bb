//! End-to-end tests of the `aviary` binary: plan and simulate on every shipped example, and bad
//! input of every kind we can think of (clear message, exit code 2, no panic).

use std::process::{Command, Output};

use serde_json::Value;

use crate::util::{code, stderr, stdout, tempdir, write};

fn aviary(args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_aviary"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("AVIARY_LOG")
        .env_remove("AVIARY_LOG_FORMAT")
        .output();
    match out {
        Ok(out) => {
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(!stderr.contains("panicked"), "aviary panicked: {stderr}");
            out
        }
        Err(e) => panic!("cannot run aviary: {e}"),
    }
}

fn json(out: &Output) -> Value {
    match serde_json::from_slice(&out.stdout) {
        Ok(v) => v,
        Err(e) => panic!("not JSON ({e}): {}\nstderr: {}", stdout(out), stderr(out)),
    }
}

fn example(name: &str) -> String {
    format!("examples/{name}/overlays/prod/canary.yaml")
}

fn timeline(name: &str, which: &str) -> String {
    format!("examples/{name}/timelines/{which}.yaml")
}

fn plan(name: &str) -> Value {
    let out = aviary(&["plan", "-f", &example(name), "--json"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    json(&out)
}

fn simulate(name: &str, which: &str) -> (i32, Value) {
    let out = aviary(&[
        "simulate",
        "-f",
        &example(name),
        "--metrics",
        &timeline(name, which),
        "--json",
    ]);
    (code(&out), json(&out))
}

fn ints(v: &Value) -> Vec<i64> {
    v.as_array()
        .map(|a| a.iter().filter_map(Value::as_i64).collect())
        .unwrap_or_default()
}

// ---- plan -------------------------------------------------------------------------------------

#[test]
fn plan_gatewayapi() {
    let p = plan("gatewayapi");
    assert_eq!(p["strategy"], "canary");
    assert_eq!(ints(&p["weights"]), vec![10, 20, 30, 40, 50]);
    assert_eq!(p["iterations"], 0);
    assert_eq!(p["interval_s"], 60);
    assert_eq!(p["threshold"], 5);
    // t0 scale-up, t1 pre-rollout + 10%, t2-t5 20-50%, t6 promote.
    assert_eq!(p["min_promotion_s"], 360);
    assert_eq!(p["min_completion_s"], 480);
    // A failing pre-rollout hook fails t1..t5; the rollback comes at t6.
    assert_eq!(p["min_rollback_s"], 360);
}

#[test]
fn plan_istio() {
    let p = plan("istio");
    assert_eq!(p["strategy"], "canary");
    assert_eq!(ints(&p["weights"]), vec![10, 20, 30, 40, 50]);
    assert_eq!(p["min_promotion_s"], 360);
    assert_eq!(p["min_rollback_s"], 360);
    assert_eq!(p["provider"], "istio");
}

#[test]
fn plan_gloo_canary() {
    let p = plan("gloo-canary");
    assert_eq!(p["strategy"], "canary");
    assert_eq!(
        ints(&p["weights"]),
        vec![5, 10, 15, 20, 25, 30, 35, 40, 45, 50]
    );
    assert_eq!(p["interval_s"], 10);
    // Ten steps set at t1..t10, promotion at t11.
    assert_eq!(p["min_promotion_s"], 110);
    assert_eq!(p["min_completion_s"], 130);
    assert_eq!(p["min_rollback_s"], 60);
}

#[test]
fn plan_gloo_ab() {
    let p = plan("gloo-ab");
    assert_eq!(p["strategy"], "ab-testing");
    assert_eq!(ints(&p["weights"]), Vec::<i64>::new());
    assert_eq!(p["iterations"], 10);
    assert_eq!(p["threshold"], 2);
    // t1..t10 iterations, t11 promote, t12 routes back, t13 done.
    assert_eq!(p["min_promotion_s"], 110);
    assert_eq!(p["min_completion_s"], 130);
    // No pre-rollout hook: iteration 1 at t1, the load test fails at t2 and t3, rollback at t4.
    assert_eq!(p["min_rollback_s"], 40);
}

#[test]
fn plan_human_output_names_the_schedule() {
    let out = aviary(&["plan", "-f", &example("gloo-canary")]);
    assert_eq!(code(&out), 0);
    let text = stdout(&out);
    assert!(text.contains("5% → 10% → 15%"), "{text}");
    assert!(
        text.contains("fastest 1m50s (completed after 2m10s)"),
        "{text}"
    );
    assert!(text.contains("fastest 1m"), "{text}");
}

#[test]
fn plan_with_kubernetes_provider_is_blue_green() {
    let out = aviary(&[
        "plan",
        "-f",
        "tests/fixtures/no-provider.yaml",
        "--provider",
        "kubernetes",
        "--json",
    ]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let p = json(&out);
    assert_eq!(p["strategy"], "blue-green");
    assert_eq!(p["iterations"], 10);
    let out = aviary(&["plan", "-f", "tests/fixtures/no-provider.yaml", "--json"]);
    assert_eq!(json(&out)["strategy"], "canary");
}

// ---- simulate ---------------------------------------------------------------------------------

#[test]
fn simulate_gatewayapi_good_promotes() {
    let (code, r) = simulate("gatewayapi", "good");
    assert_eq!(code, 0);
    assert_eq!(r["verdict"], "promoted");
    assert_eq!(r["failed_checks"], 0);
    assert_eq!(ints(&r["weights"]), vec![10, 20, 30, 40, 50, 0]);
    let checks = r["checks"].as_array().map(Vec::len);
    assert_eq!(checks, Some(9));
    assert_eq!(r["checks"][1]["message"], "Starting canary analysis for podinfo.prod; Pre-rollout check smoke-test passed; Advance podinfo.prod canary weight 10");
    assert_eq!(r["checks"][2]["metrics"]["success-rate"], 99.9);
    assert_eq!(r["checks"][2]["metrics"]["request-duration"], 212.0);
}

#[test]
fn simulate_gatewayapi_bad_rolls_back_after_five_failures() {
    let (code, r) = simulate("gatewayapi", "bad");
    assert_eq!(code, 1);
    assert_eq!(r["verdict"], "rolled_back");
    assert_eq!(r["failed_checks"], 5);
    assert_eq!(ints(&r["weights"]), vec![10, 20, 0]);
    assert_eq!(r["duration_s"], 480);
    assert_eq!(
        r["checks"][3]["message"],
        "Halt podinfo.prod advancement success-rate 97.20 < 99"
    );
    assert_eq!(r["checks"][3]["verdicts"]["success-rate"], false);
    let last = &r["checks"][8];
    assert_eq!(last["phase"], "Failed");
    assert_eq!(
        last["message"],
        "Rolling back podinfo.prod failed checks threshold reached 5; Canary failed! Scaling down podinfo.prod"
    );
}

#[test]
fn simulate_istio_good_and_latency_regression() {
    let (code, r) = simulate("istio", "good");
    assert_eq!((code, r["verdict"].as_str()), (0, Some("promoted")));
    assert_eq!(ints(&r["weights"]), vec![10, 20, 30, 40, 50, 0]);

    let (code, r) = simulate("istio", "bad");
    assert_eq!((code, r["verdict"].as_str()), (1, Some("rolled_back")));
    assert_eq!(ints(&r["weights"]), vec![10, 20, 0]);
    assert_eq!(
        r["checks"][3]["message"],
        "Halt podinfo.test advancement request duration 780ms > 500ms"
    );
    assert_eq!(r["checks"][3]["metrics"]["request-success-rate"], 99.9);
}

#[test]
fn simulate_gloo_canary_no_values_fail() {
    let (code, r) = simulate("gloo-canary", "good");
    assert_eq!((code, r["verdict"].as_str()), (0, Some("promoted")));
    assert_eq!(
        ints(&r["weights"]),
        vec![5, 10, 15, 20, 25, 30, 35, 40, 45, 50, 0]
    );

    let (code, r) = simulate("gloo-canary", "bad");
    assert_eq!((code, r["verdict"].as_str()), (1, Some("rolled_back")));
    assert_eq!(ints(&r["weights"]), vec![5, 10, 15, 0]);
    assert_eq!(
        r["checks"][4]["metrics"]["request-success-rate"],
        Value::Null
    );
    assert_eq!(
        r["checks"][4]["message"],
        "Halt advancement no values found for gloo metric request-success-rate probably podinfo.test is not receiving traffic: no values found"
    );
    assert_eq!(r["duration_s"], 90);
}

#[test]
fn simulate_gloo_ab() {
    let (code, r) = simulate("gloo-ab", "good");
    assert_eq!((code, r["verdict"].as_str()), (0, Some("promoted")));
    assert_eq!(ints(&r["weights"]), vec![100, 0]);
    assert_eq!(
        r["checks"][10]["message"],
        "Advance podinfo.test canary iteration 10/10"
    );

    let (code, r) = simulate("gloo-ab", "bad");
    assert_eq!((code, r["verdict"].as_str()), (1, Some("rolled_back")));
    assert_eq!(r["failed_checks"], 2);
    assert_eq!(ints(&r["weights"]), vec![100, 0]);
    assert_eq!(r["duration_s"], 60);
}

#[test]
fn simulate_human_output_shows_every_tick() {
    let out = aviary(&[
        "simulate",
        "-f",
        &example("istio"),
        "--metrics",
        &timeline("istio", "bad"),
    ]);
    assert_eq!(code(&out), 1);
    let text = stdout(&out);
    assert!(text.contains("780.00 FAIL"), "{text}");
    assert!(
        text.contains("verdict: rolled back after 8m (failed checks 5/5)"),
        "{text}"
    );
    assert_eq!(text.lines().count(), 1 + 1 + 9 + 1, "{text}");
}

#[test]
fn simulate_gate_that_never_opens_has_no_verdict() {
    let tmp = tempdir();
    let dir = tmp.path();
    let canary = write(
        dir,
        "canary.yaml",
        format!("{GOOD}    webhooks:\n      - name: approve\n        type: confirm-rollout\n        url: http://gate.test/\n"),
    );
    let tl = write(
        dir,
        "gate.yaml",
        "metrics:\n  request-success-rate: [99.9]\nwebhooks:\n  approve: [fail]\n",
    );
    let out = aviary(&[
        "simulate",
        "-f",
        canary.to_str().unwrap_or_default(),
        "--metrics",
        tl.to_str().unwrap_or_default(),
        "--max-ticks",
        "20",
        "--json",
    ]);
    assert_eq!(code(&out), 5, "{}", stderr(&out));
    let r = json(&out);
    assert_eq!(r["verdict"], "no_verdict");
    assert_eq!(r["checks"].as_array().map(Vec::len), Some(20));
    assert_eq!(r["checks"][19]["phase"], "Waiting");
    assert_eq!(
        r["checks"][0]["message"],
        "Halt podinfo.test advancement waiting for approval approve"
    );
    assert!(stderr(&out).contains("no verdict after 20 ticks; the last phase was Waiting"));
}

// ---- bad input ----------------------------------------------------------------------------------

/// Runs `plan` on `text` and returns (exit code, stderr).
fn plan_text(text: &str) -> (i32, String) {
    let tmp = tempdir();
    let dir = tmp.path();
    let file = write(dir, "canary.yaml", text);
    let out = aviary(&["plan", "-f", file.to_str().unwrap_or_default()]);
    (
        code(&out),
        stderr(&out).replace(&format!("{}/", dir.display()), ""),
    )
}

const GOOD: &str = "apiVersion: flagger.app/v1beta1
kind: Canary
metadata:
  name: podinfo
  namespace: test
spec:
  targetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: podinfo
  service:
    port: 9898
  analysis:
    interval: 1m
    threshold: 5
    maxWeight: 50
    stepWeight: 10
    metrics:
      - name: request-success-rate
        thresholdRange:
          min: 99
";

#[test]
fn the_good_base_spec_is_valid() {
    let (code, err) = plan_text(GOOD);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn not_yaml() {
    let (code, err) = plan_text("apiVersion: [flagger.app/v1beta1\nkind: Canary\n");
    assert_eq!(code, 2);
    assert!(err.contains("canary.yaml:"), "{err}");
}

#[test]
fn wrong_kind() {
    let (code, err) =
        plan_text("apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: podinfo\n");
    assert_eq!(code, 2);
    assert!(
        err.contains("no Canary found (it has Deployment (apps/v1) at line 1)"),
        "{err}"
    );
}

#[test]
fn missing_target_ref() {
    let text = GOOD.replace(
        "  targetRef:\n    apiVersion: apps/v1\n    kind: Deployment\n    name: podinfo\n",
        "",
    );
    let (code, err) = plan_text(&text);
    assert_eq!(code, 2);
    assert!(err.contains("canary.yaml:6: spec"), "{err}");
    assert!(err.contains("targetRef"), "{err}");
}

#[test]
fn wrong_type_names_file_line_path_and_value() {
    let text = GOOD.replace("stepWeight: 10", "stepWeight: ten");
    let (code, err) = plan_text(&text);
    assert_eq!(code, 2);
    assert!(
        err.contains(
            r#"canary.yaml:17: spec.analysis.stepWeight: expected an integer 1-100, got "ten""#
        ),
        "{err}"
    );
}

#[test]
fn negative_weight() {
    let text = GOOD.replace("maxWeight: 50", "maxWeight: -10");
    let (code, err) = plan_text(&text);
    assert_eq!(code, 2);
    assert!(
        err.contains("canary.yaml:16: spec.analysis.maxWeight: expected an integer 0-100, got -10"),
        "{err}"
    );
}

#[test]
fn unknown_webhook_type() {
    let text = format!(
        "{GOOD}    webhooks:\n      - name: gate\n        type: confirm-deploy\n        url: http://gate.test/\n"
    );
    let (code, err) = plan_text(&text);
    assert_eq!(code, 2);
    assert!(
        err.contains("canary.yaml:24: spec.analysis.webhooks[0].type"),
        "{err}"
    );
    assert!(
        err.contains("confirm-promotion"),
        "the message lists the valid types: {err}"
    );
}

#[test]
fn several_errors_are_reported_together() {
    let text = GOOD
        .replace("stepWeight: 10", "stepWeight: ten")
        .replace("port: 9898", "port: 0")
        .replace("threshold: 5", "threshold: many");
    let (code, err) = plan_text(&text);
    assert_eq!(code, 2);
    for needle in [
        "spec.analysis.stepWeight",
        "spec.service.port",
        "spec.analysis.threshold",
    ] {
        assert!(err.contains(needle), "missing {needle}: {err}");
    }
    assert!(err.contains("3 errors found"), "{err}");
}

#[test]
fn missing_file_and_multiple_canaries() {
    let out = aviary(&["plan", "-f", "does/not/exist.yaml"]);
    assert_eq!(code(&out), 2);
    assert!(
        stderr(&out).contains("cannot read does/not/exist.yaml"),
        "{}",
        stderr(&out)
    );

    let two = format!(
        "{GOOD}---\n{}",
        GOOD.replace("name: podinfo\n  namespace", "name: other\n  namespace")
    );
    let (code, err) = plan_text(&two);
    assert_eq!(code, 2);
    assert!(err.contains("holds 2 Canaries (podinfo, other)"), "{err}");
    assert!(err.contains("--name podinfo"), "{err}");
}

#[test]
fn usage_errors_exit_2() {
    let out = aviary(&["plan"]);
    assert_eq!(code(&out), 2);
    let out = aviary(&["frobnicate"]);
    assert_eq!(code(&out), 2);
    let out = aviary(&["plan", "-f", &example("istio"), "--provider", "mesh9000"]);
    assert_eq!(code(&out), 2);
    assert!(
        stderr(&out).contains("unknown provider \"mesh9000\""),
        "{}",
        stderr(&out)
    );
    // A verdict policy that does not exist is refused before anything is read or changed,
    // naming the flag and the two it could be.
    let out = aviary(&[
        "rollout",
        "-f",
        &example("istio"),
        "--verdict-policy",
        "all",
        "--kubeconfig",
        "/nonexistent/kubeconfig",
    ]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("--verdict-policy"), "{err}");
    assert!(err.contains("unknown verdict policy \"all\""), "{err}");
    assert!(
        err.contains("all-or-nothing") && err.contains("independent"),
        "{err}"
    );
}

#[test]
fn bad_timelines() {
    let tmp = tempdir();
    let dir = tmp.path();
    let cases: [(&str, &str); 6] = [
        ("metrics: [", "timeline.yaml:1"),
        (
            "metrics:\n  request-success-rate: [99]\n  request-duration: [1]\n  latency: [5]\n",
            "timeline.yaml:4: metrics.latency: the Canary podinfo.test has no metric \"latency\"",
        ),
        (
            "metrics:\n  request-success-rate: [99, high]\n  request-duration: [1]\n",
            "timeline.yaml:2: metrics.request-success-rate[1]: expected a number, null (no values) or .nan, got \"high\"",
        ),
        (
            "metrics:\n  request-success-rate: [99]\n",
            "no values for the Canary's metric \"request-duration\"",
        ),
        (
            "metrics:\n  request-success-rate: [99]\n  request-duration: [1]\nwebhooks:\n  load-test: [maybe]\n",
            "timeline.yaml:5: webhooks.load-test[0]: expected pass or fail, got \"maybe\"",
        ),
        ("", "the timeline is empty"),
    ];
    for (text, needle) in cases {
        let tl = write(dir, "timeline.yaml", text);
        let out = aviary(&[
            "simulate",
            "-f",
            &example("istio"),
            "--metrics",
            tl.to_str().unwrap_or_default(),
        ]);
        let err = stderr(&out).replace(&format!("{}/", dir.display()), "");
        assert_eq!(code(&out), 2, "{text:?}: {err}");
        assert!(
            err.contains(needle),
            "{text:?}: expected {needle:?} in {err}"
        );
    }
}

#[test]
fn validate_reports_warnings_and_json() {
    let out = aviary(&[
        "validate",
        "-f",
        &example("gatewayapi"),
        &example("gloo-ab"),
    ]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stdout(&out).contains(
        "examples/gatewayapi/overlays/prod/canary.yaml: ok (1 Canary, 1 MetricTemplate)"
    ));

    let out = aviary(&["validate", "-f", &example("istio"), "--json"]);
    let v = json(&out);
    assert_eq!(v[0]["valid"], true);
    assert_eq!(v[0]["canaries"][0]["analysis"]["threshold"], 5);
}

#[test]
fn json_logs_carry_the_diagnostic_fields() {
    let tmp = tempdir();
    let dir = tmp.path();
    let file = write(
        dir,
        "canary.yaml",
        GOOD.replace("stepWeight: 10", "stepWeight: ten"),
    );
    let out = aviary(&[
        "--log-format",
        "json",
        "plan",
        "-f",
        file.to_str().unwrap_or_default(),
    ]);
    assert_eq!(code(&out), 2);
    let first = stderr(&out)
        .lines()
        .next()
        .map(str::to_string)
        .unwrap_or_default();
    let v: Value = serde_json::from_str(&first).unwrap_or(Value::Null);
    assert_eq!(v["level"], "ERROR", "{first}");
    assert_eq!(v["line"], 17, "{first}");
    assert_eq!(v["path"], "spec.analysis.stepWeight", "{first}");
}

#[test]
fn short_intervals_are_an_aviary_addition() {
    let tmp = tempdir();
    let dir = tmp.path();
    let flagger = write(
        dir,
        "flagger.yaml",
        GOOD.replace("interval: 1m", "interval: 2s"),
    );
    let out = aviary(&["plan", "-f", flagger.to_str().unwrap_or_default(), "--json"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(json(&out)["interval_s"], 10);
    assert!(
        stderr(&out).contains("Flagger raises intervals below 10s to 10s"),
        "{}",
        stderr(&out)
    );

    let aviary_spec = write(
        dir,
        "aviary.yaml",
        GOOD.replace("interval: 1m", "interval: 2s")
            .replace("flagger.app/v1beta1", "aviary.dev/v1alpha1"),
    );
    let out = aviary(&[
        "plan",
        "-f",
        aviary_spec.to_str().unwrap_or_default(),
        "--json",
    ]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let p = json(&out);
    assert_eq!(p["interval_s"], 2);
    assert_eq!(p["min_promotion_s"], 12);
}

#[test]
fn replica_ratio_rejects_what_it_cannot_express() {
    let ab = GOOD
        .replace("flagger.app/v1beta1", "aviary.dev/v1alpha1")
        .replace("spec:\n", "spec:\n  provider: kubernetes:replicas\n")
        .replace(
            "    stepWeight: 10\n",
            "    stepWeight: 10\n    iterations: 5\n    match:\n      - headers:\n          x-canary:\n            exact: insider\n",
        );
    let (code, err) = plan_text(&ab);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("spec.analysis.match: match is not supported by provider kubernetes:replicas: A/B testing needs a router that can match requests"),
        "{err}"
    );
    assert!(err.contains("spec.analysis.iterations"), "{err}");

    let flagger = GOOD.replace("spec:\n", "spec:\n  provider: kubernetes:replicas\n");
    let (code, err) = plan_text(&flagger);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("provider kubernetes:replicas is an aviary addition"),
        "{err}"
    );

    let fine = GOOD
        .replace("flagger.app/v1beta1", "aviary.dev/v1alpha1")
        .replace("spec:\n", "spec:\n  provider: kubernetes:replicas\n");
    let (code, err) = plan_text(&fine);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn plan_and_simulate_the_replica_ratio_example() {
    let p = plan("kubernetes");
    assert_eq!(p["strategy"], "canary");
    assert_eq!(p["provider"], "kubernetes:replicas");
    assert_eq!(ints(&p["weights"]), vec![25, 50, 75]);
    assert_eq!(p["interval_s"], 30);
    // Steps at t1..t3, promotion at t4 (120 s), done at t6; a failing smoke test rolls back at t4.
    assert_eq!(p["min_promotion_s"], 120);
    assert_eq!(p["min_completion_s"], 180);
    assert_eq!(p["min_rollback_s"], 120);

    let (code, r) = simulate("kubernetes", "good");
    assert_eq!((code, r["verdict"].as_str()), (0, Some("promoted")));
    assert_eq!(ints(&r["weights"]), vec![25, 50, 75, 0]);
    let (code, r) = simulate("kubernetes", "bad");
    assert_eq!((code, r["verdict"].as_str()), (1, Some("rolled_back")));
    assert_eq!(ints(&r["weights"]), vec![25, 0]);
    assert_eq!(r["failed_checks"], 3);
    assert_eq!(r["duration_s"], 150);
}

#[test]
fn every_example_overlay_is_a_valid_spec() {
    for name in [
        "gatewayapi",
        "cloud-deploy",
        "istio",
        "gloo-canary",
        "gloo-ab",
        "kubernetes",
    ] {
        let out = aviary(&["validate", "-f", &example(name)]);
        assert_eq!(code(&out), 0, "{name}: {}", stderr(&out));
        assert!(
            !stderr(&out).contains("warning"),
            "{name}: {}",
            stderr(&out)
        );
    }
}

const JUDGED: &str = "apiVersion: aviary.dev/v1alpha1
kind: Canary
metadata:
  name: podinfo
  namespace: test
spec:
  targetRef: {apiVersion: apps/v1, kind: Deployment, name: podinfo}
  service:
    port: 9898
  analysis:
    interval: 1m
    threshold: 2
    maxWeight: 50
    stepWeight: 10
    metrics:
      - name: request-success-rate
        thresholdRange: {min: 99}
    judge:
      passScore: 90
      metrics:
        - name: p99-latency
          kind: latency
          query: 'histogram_quantile(0.99, rate(x{pod=~\"{{ workload }}-.*\"}[1m]))'
";

#[test]
fn the_judge_is_a_check_the_engine_counts() {
    let tmp = tempdir();
    let dir = tmp.path();
    let canary = write(dir, "canary.yaml", JUDGED);
    let timeline = write(
        dir,
        "timeline.yaml",
        "metrics:\n  request-success-rate: [99.9]\n  judge: [97, 60]\n",
    );
    let out = aviary(&[
        "simulate",
        "-f",
        canary.to_str().unwrap_or_default(),
        "--metrics",
        timeline.to_str().unwrap_or_default(),
        "--json",
    ]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let r = json(&out);
    assert_eq!(r["verdict"], "rolled_back");
    assert_eq!(ints(&r["weights"]), vec![10, 20, 0]);
    assert_eq!(
        r["checks"][3]["message"],
        "Halt podinfo.test advancement judge score 60 < 90"
    );
    assert_eq!(r["checks"][2]["metrics"]["judge"], 97.0);

    // Under flagger.app the judge is not part of the API: an unknown field, ignored with a warning.
    let flagger = write(
        dir,
        "flagger.yaml",
        JUDGED.replace("aviary.dev/v1alpha1", "flagger.app/v1beta1"),
    );
    let out = aviary(&["validate", "-f", flagger.to_str().unwrap_or_default()]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("spec.analysis.judge: unknown field \"judge\""),
        "{}",
        stderr(&out)
    );

    // A latency metric without its query, and scores in the wrong order.
    let bad = JUDGED
        .replace(
            "      passScore: 90\n",
            "      passScore: 70\n      marginalScore: 80\n      method: sometimes\n      baseline: an hour\n",
        )
        .replace("          query: 'histogram_quantile(0.99, rate(x{pod=~\"{{ workload }}-.*\"}[1m]))'\n", "");
    let (code, err) = plan_text(&bad);
    assert_eq!(code, 2, "{err}");
    // A method it does not know, a baseline that is not a duration.
    assert!(err.contains("spec.analysis.judge.method"), "{err}");
    assert!(err.contains("sequential"), "{err}");
    assert!(err.contains("spec.analysis.judge.baseline"), "{err}");
    assert!(
        err.contains("spec.analysis.judge.metrics[0]: missing required field \"query\""),
        "{err}"
    );
    assert!(
        err.contains("marginalScore 80 is above passScore 70"),
        "{err}"
    );
}

// ---- Flagger's event texts, byte for byte ----------------------------------------------------------

/// Simulates `canary` (a spec text) on `timeline`; returns the exit code, the verdict and each
/// tick's events (joined with "; ", as the report writes them).
fn simulate_text(canary: &str, timeline: &str) -> (i32, String, Vec<String>) {
    let tmp = tempdir();
    let dir = tmp.path();
    let c = write(dir, "canary.yaml", canary);
    let t = write(dir, "timeline.yaml", timeline);
    let out = aviary(&[
        "simulate",
        "-f",
        c.to_str().unwrap_or_default(),
        "--metrics",
        t.to_str().unwrap_or_default(),
        "--json",
    ]);
    let r = json(&out);
    let messages = r["checks"]
        .as_array()
        .map(|rows| {
            rows.iter()
                .map(|row| row["message"].as_str().unwrap_or_default().to_string())
                .collect()
        })
        .unwrap_or_default();
    (
        code(&out),
        r["verdict"].as_str().unwrap_or_default().to_string(),
        messages,
    )
}

#[test]
fn simulate_kubernetes_provider_without_iterations_warns_as_flagger() {
    let canary = GOOD.replace("spec:\n", "spec:\n  provider: kubernetes\n");
    let (code, verdict, messages) =
        simulate_text(&canary, "metrics:\n  request-success-rate: [99.9]\n");
    assert_eq!((code, verdict.as_str()), (0, "promoted"), "{messages:?}");
    assert_eq!(
        messages[1],
        "Starting canary analysis for podinfo.test; \
         Progressive traffic is not supported when using the kubernetes provider; \
         Setting canaryAnalysis.iterations: 10; \
         Advance podinfo.test canary iteration 1/10"
    );
    assert_eq!(
        messages[2],
        "Progressive traffic is not supported when using the kubernetes provider; \
         Setting canaryAnalysis.iterations: 10; \
         Advance podinfo.test canary iteration 2/10"
    );
}

#[test]
fn simulate_gates_announce_as_flagger() {
    let canary = format!(
        "{GOOD}    webhooks:\n      - name: approve\n        type: confirm-rollout\n        url: http://gate.test/\n      - name: ship-it\n        type: confirm-promotion\n        url: http://gate.test/\n"
    );
    let (code, verdict, messages) = simulate_text(
        &canary,
        "metrics:\n  request-success-rate: [99.9]\nwebhooks:\n  ship-it: [fail, fail, fail, pass]\n",
    );
    assert_eq!((code, verdict.as_str()), (0, "promoted"), "{messages:?}");
    // The confirm-rollout gate passes on its first call and says so.
    assert_eq!(
        messages[0],
        "Confirm-rollout check approve passed; New revision detected! Scaling up podinfo.test"
    );
    // The closed confirm-promotion gate is announced once, then passes.
    let waiting: Vec<&String> = messages
        .iter()
        .filter(|m| m.contains("waiting for promotion approval"))
        .collect();
    assert_eq!(
        waiting,
        vec!["Halt podinfo.test advancement waiting for promotion approval ship-it"]
    );
    assert!(
        messages.iter().any(|m| m
            == "Confirm-promotion check ship-it passed; Copying podinfo.test template spec to podinfo-primary.test"),
        "{messages:?}"
    );
}

#[test]
fn simulate_query_thresholds_and_nan_read_as_flagger() {
    let canary = GOOD.replace(
        "      - name: request-success-rate\n        thresholdRange:\n          min: 99\n",
        "      - name: errors\n        query: sum(rate(errors[1m]))\n        thresholdRange:\n          max: 0.00001\n      - name: volume\n        query: sum(rate(requests[1m]))\n        thresholdRange:\n          min: 1000000\n",
    );
    let (code, verdict, messages) = simulate_text(
        &canary,
        "metrics:\n  errors: [0, 0.5, 0, .nan, 0]\n  volume: [2000000, 10]\n",
    );
    assert_eq!((code, verdict.as_str()), (1, "rolled_back"), "{messages:?}");
    assert_eq!(
        messages[3],
        "Halt podinfo.test advancement errors 0.50 > 1e-05"
    );
    assert_eq!(
        messages[4],
        "Halt podinfo.test advancement volume 10.00 < 1e+06"
    );
    assert_eq!(
        messages[5],
        "Halt advancement no values found for metric: errors"
    );
}

#[test]
fn simulate_skip_analysis_runs_post_rollout_hooks() {
    let canary = format!(
        "{}    webhooks:\n      - name: notify\n        type: post-rollout\n        url: http://notify.test/\n",
        GOOD.replace("  service:\n", "  skipAnalysis: true\n  service:\n")
    );
    let (code, verdict, messages) =
        simulate_text(&canary, "metrics:\n  request-success-rate: [99.9]\n");
    assert_eq!((code, verdict.as_str()), (0, "promoted"), "{messages:?}");
    assert_eq!(
        messages.last().map(String::as_str),
        Some(
            "Copying podinfo.test template spec to podinfo-primary.test; \
             Post-rollout check notify passed; \
             Promotion completed! Canary analysis was skipped for podinfo.test"
        )
    );
}

#[test]
fn simulate_blue_green_mirroring_is_no_event() {
    let canary = GOOD
        .replace("spec:\n", "spec:\n  provider: istio\n")
        .replace(
            "    maxWeight: 50\n    stepWeight: 10\n",
            "    iterations: 2\n    mirror: true\n",
        );
    let (code, verdict, messages) =
        simulate_text(&canary, "metrics:\n  request-success-rate: [99.9]\n");
    assert_eq!((code, verdict.as_str()), (0, "promoted"), "{messages:?}");
    assert_eq!(
        messages[1],
        "Starting canary analysis for podinfo.test; Advance podinfo.test canary iteration 1/2"
    );
    assert!(
        messages
            .iter()
            .any(|m| m == "Stop traffic mirroring and route all traffic to canary"),
        "{messages:?}"
    );
}
