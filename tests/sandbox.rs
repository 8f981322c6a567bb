//! End-to-end releases on the sandbox's real data path: Debian's Prometheus scraping real
//! demo-app processes, HAProxy splitting real client traffic through its runtime API, and the
//! real `aviary rollout` binary driving an emulated API server. What the clients saw is
//! checked from their side of the proxy.
//!
//! These tests need `prometheus` and `haproxy` (`.ci/run` installs both); without them they
//! fail with a message saying so, rather than pass without testing anything.

use std::path::PathBuf;
use std::time::Duration;

use aviary::report::Verdict;
use aviary::sandbox::load::{Sample, Stats};
use aviary::sandbox::metrics::MetricsChoice;
use aviary::sandbox::{
    time_to_primary, Options, ProxyChoice, Release, Router, Sandbox, Scenario, STABLE_TAG,
};

fn workdir(name: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("aviary-sandbox-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn require_real_components() {
    assert!(
        aviary::sandbox::metrics::find_prometheus().is_some(),
        "these tests run Debian's prometheus: install it (bash .ci/run does) or set AVIARY_PROMETHEUS_BIN"
    );
    assert!(
        splitter::find_haproxy().is_some(),
        "these tests run Debian's haproxy: install it (bash .ci/run does) or set AVIARY_HAPROXY"
    );
}

/// A sandbox on the real components, with release 1 (the bootstrap) done and the primary
/// serving for a few seconds, so the judge has a baseline.
async fn sandbox(name: &str, router: Router, tag_every: Option<u32>, profile: &str) -> Sandbox {
    require_real_components();
    let sandbox = Sandbox::start(Options {
        router,
        metrics: MetricsChoice::Prometheus,
        proxy: ProxyChoice::Haproxy,
        aviary: PathBuf::from(env!("CARGO_BIN_EXE_aviary")),
        workdir: workdir(name),
        rate: 50,
        tag_every,
    })
    .await
    .expect("the sandbox starts");
    assert!(sandbox.metrics.is_real() && sandbox.splitter.describe().contains("HAProxy"));
    sandbox
        .bootstrap(profile, |_, _| {})
        .await
        .expect("release 1 bootstraps the primary");
    sandbox
}

async fn release(sandbox: &Sandbox, scenario: Scenario) -> Release {
    let report = sandbox
        .options
        .workdir
        .join(format!("report-{}.json", scenario.name()));
    let r = sandbox
        .release(scenario.tag(), scenario.profile(), Some(&report), |_, _| {})
        .await
        .expect("the release runs");
    assert!(r.report.is_some(), "no report: {:#?}", r.messages);
    r
}

fn during(samples: &[Sample], from_ms: u64, to_ms: u64) -> Vec<Sample> {
    samples
        .iter()
        .filter(|s| s.sent_ms >= from_ms && s.sent_ms < to_ms)
        .cloned()
        .collect()
}

fn messages(r: &Release) -> String {
    r.messages
        .iter()
        .map(|(_, l, m)| format!("{l} {m}"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_good_release_is_promoted_without_a_failed_request() {
    let sb = sandbox("good", Router::GatewayApi, None, "prod").await;
    let r = release(&sb, Scenario::Good).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let changes = sb.node.lock().unwrap().changes.clone();
    let samples = sb.shutdown().await;
    let report = r.report.clone().unwrap();
    assert_eq!(r.exit_code, 0, "{}", messages(&r));
    assert_eq!(report.verdict, Verdict::Promoted);
    assert_eq!(report.weights, vec![20, 40, 60, 0]);
    // The proxy followed every weight aviary set, and ended on the new primary alone.
    let weights: Vec<u8> = changes.iter().map(|c| c.canary_weight).collect();
    for w in [20, 40, 60] {
        assert!(weights.contains(&w), "split weights {weights:?}");
    }
    let last = changes.last().unwrap();
    assert_eq!(
        (last.primary.as_deref(), last.canary_weight),
        (Some("2.0.0"), 0)
    );
    // The clients saw the canary's share grow, and no request failed at any point.
    let all = Stats::of(&samples);
    assert_eq!(
        all.errors, 0,
        "client errors during a good release: {all:?}"
    );
    let canary_phase = Stats::of(&during(&samples, r.started_ms, r.ended_ms));
    assert!(canary_phase.share("2.0.0") > 10.0, "{canary_phase:?}");
    let after = Stats::of(&during(&samples, r.ended_ms + 500, u64::MAX));
    assert!(after.requests > 20);
    assert_eq!(after.share("2.0.0"), 100.0, "{after:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_with_errors_rolls_back_and_clients_recover() {
    let sb = sandbox("errors", Router::GatewayApi, None, "prod").await;
    let r = release(&sb, Scenario::Errors).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let samples = sb.shutdown().await;
    let report = r.report.clone().unwrap();
    assert_eq!(r.exit_code, 1, "{}", messages(&r));
    assert_eq!(report.verdict, Verdict::RolledBack);
    assert!(
        report
            .failed_metrics
            .contains(&"request-success-rate".to_string()),
        "{:?}",
        report.failed_metrics
    );
    let decided = r.rollback_decided_ms.expect("the rollback is announced");
    // Before the decision, the clients that reached the canary saw its 20% of 500s...
    let canary = during(&samples, r.started_ms, decided);
    let served_by_canary: Vec<&Sample> = canary
        .iter()
        .filter(|s| s.version.as_deref() == Some("2.0.0-errors"))
        .collect();
    assert!(served_by_canary.len() >= 20, "{}", served_by_canary.len());
    let failed = served_by_canary.iter().filter(|s| s.status == 500).count();
    let share = failed as f64 / served_by_canary.len() as f64;
    assert!((0.1..=0.3).contains(&share), "canary error share {share}");
    // ...and within a second of the decision every client is back on the primary, at the
    // primary's error rate (none).
    let recovered = time_to_primary(&samples, decided, STABLE_TAG);
    assert!(
        recovered <= 1000,
        "clients back on the primary after {recovered} ms"
    );
    let after = Stats::of(&during(&samples, decided + 1000, u64::MAX));
    assert!(after.requests > 50, "{after:?}");
    assert_eq!(after.errors, 0, "{after:?}");
    assert_eq!(after.share(STABLE_TAG), 100.0, "{after:?}");
    let before = Stats::of(&during(&samples, 0, r.started_ms));
    assert_eq!(before.errors, 0, "baseline {before:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_latency_regression_under_the_thresholds_is_caught_by_the_judge() {
    let sb = sandbox("latency", Router::GatewayApi, None, "prod").await;
    let r = release(&sb, Scenario::Latency).await;
    let samples = sb.shutdown().await;
    let report = r.report.clone().unwrap();
    assert_eq!(r.exit_code, 1, "{}", messages(&r));
    assert_eq!(report.verdict, Verdict::RolledBack);
    // The fixed thresholds passed: only the judge, comparing canary and primary, failed.
    assert_eq!(
        report.failed_metrics,
        vec!["judge".to_string()],
        "{}",
        messages(&r)
    );
    let judged: Vec<f64> = report
        .checks
        .iter()
        .filter_map(|t| t.metrics.get("request-duration").copied().flatten())
        .collect();
    assert!(
        !judged.is_empty() && judged.iter().all(|ms| *ms < 500.0),
        "{judged:?}"
    );
    // The clients felt it: the canary's answers were slower.
    let phase = during(&samples, r.started_ms, r.ended_ms);
    let latency = |v: &str| {
        let l: Vec<f64> = phase
            .iter()
            .filter(|s| s.version.as_deref() == Some(v))
            .map(|s| s.latency_ms)
            .collect();
        l.iter().sum::<f64>() / l.len().max(1) as f64
    };
    assert!(latency("2.0.0-slow") > 2.0 * latency(STABLE_TAG));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ab_test_sends_only_matching_requests_to_the_canary() {
    let sb = sandbox("ab", Router::GatewayApi, Some(3), "prod-ab").await;
    let r = release(&sb, Scenario::Ab).await;
    let changes = sb.node.lock().unwrap().changes.clone();
    let samples = sb.shutdown().await;
    assert_eq!(r.exit_code, 0, "{}", messages(&r));
    assert_eq!(r.report.as_ref().unwrap().verdict, Verdict::Promoted);
    // The window in which the proxy routed by header, from its own change log.
    let start = changes
        .iter()
        .find(|c| c.matches > 0 && c.canary.is_some())
        .expect("the split routed by header")
        .at_ms;
    // It ends when the matches go, or when the promotion gives the primary the new version.
    let end = changes
        .iter()
        .find(|c| c.at_ms > start && (c.matches == 0 || c.primary.as_deref() != Some(STABLE_TAG)))
        .map_or(u64::MAX, |c| c.at_ms);
    // Requests sent inside it (with 100 ms of slack at each end for requests in flight).
    let window = during(&samples, start + 100, end.saturating_sub(100));
    let tagged: Vec<&Sample> = window.iter().filter(|s| s.tagged).collect();
    let untagged: Vec<&Sample> = window.iter().filter(|s| !s.tagged).collect();
    assert!(
        tagged.len() >= 50 && untagged.len() >= 100,
        "{} {}",
        tagged.len(),
        untagged.len()
    );
    assert!(
        tagged.iter().all(|s| s.version.as_deref() == Some("2.0.0")),
        "a tagged request reached the primary"
    );
    assert!(
        untagged
            .iter()
            .all(|s| s.version.as_deref() == Some(STABLE_TAG)),
        "an untagged request reached the canary"
    );
    assert_eq!(Stats::of(&samples).errors, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_killed_mid_way_is_finished_by_the_next_run() {
    let sb = sandbox("killed", Router::GatewayApi, None, "prod").await;
    let mut child = sb
        .rollout_command(Scenario::Good.tag(), "prod", None)
        .spawn()
        .expect("the rollout starts");
    assert!(
        sb.wait_for(Duration::from_secs(30), |n| n
            .changes
            .last()
            .is_some_and(|c| c.canary_weight >= 40))
            .await,
        "the first run shifts traffic"
    );
    child.start_kill().expect("SIGKILL");
    let _ = child.wait().await;
    let killed_at = aviary::runner::wall_ms();
    // Killed without warning, it leaves traffic where it was: the clients are still served.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let meanwhile = Stats::of(&sb.load.since(killed_at));
    assert_eq!(meanwhile.errors, 0, "{meanwhile:?}");
    assert!(meanwhile.share("2.0.0") > 20.0, "{meanwhile:?}");
    let report = sb.options.workdir.join("rerun.json");
    let rerun = sb
        .release(Scenario::Good.tag(), "prod", Some(&report), |_, _| {})
        .await
        .expect("the re-run runs");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let samples = sb.shutdown().await;
    assert_eq!(rerun.exit_code, 0, "{}", messages(&rerun));
    assert_eq!(rerun.report.as_ref().unwrap().verdict, Verdict::Promoted);
    let after = Stats::of(&during(&samples, rerun.ended_ms + 500, u64::MAX));
    assert_eq!(after.share("2.0.0"), 100.0, "{after:?}");
    assert_eq!(Stats::of(&samples).errors, 0);
}

/// Runs `aviary sandbox ARGS --workdir DIR`, expecting exit `code`; returns its stdout.
fn run_sandbox(args: &[&str], dir: &std::path::Path, code: i32) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_aviary"))
        .arg("sandbox")
        .args(args)
        .arg("--workdir")
        .arg(dir)
        .output()
        .expect("aviary sandbox runs");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(
        out.status.code(),
        Some(code),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The README's main job, on the embedded equivalents (what a machine without Prometheus and
/// HAProxy gets): the command itself, its live output, its verdict and its files.
#[test]
fn the_sandbox_command_promotes_on_the_embedded_components() {
    let dir = workdir("cli-embedded");
    let stdout = run_sandbox(&["--metrics", "embedded", "--proxy", "embedded"], &dir, 0);
    assert!(stdout.contains("embedded proxy"), "{stdout}");
    assert!(
        stdout.contains("embedded Prometheus-compatible store"),
        "{stdout}"
    );
    assert!(stdout.contains("split: canary 20%"), "{stdout}");
    assert!(stdout.contains("verdict: promoted (exit 0)"), "{stdout}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).unwrap()).unwrap();
    assert_eq!(report["verdict"], "promoted");
    assert_eq!(report["weights"], serde_json::json!([20, 40, 60, 0]));
    let summary = std::fs::read_to_string(dir.join("summary.md")).unwrap();
    assert!(summary.contains("xychart-beta"), "{summary}");
}

/// The Istio router through the command, on the real components: a bad release is rolled back.
#[test]
fn the_sandbox_command_rolls_back_a_bad_release_on_istio() {
    require_real_components();
    let dir = workdir("cli-istio");
    let stdout = run_sandbox(&["--scenario", "errors", "--router", "istio"], &dir, 1);
    assert!(
        stdout.contains("HAProxy") && stdout.contains("Prometheus 2"),
        "{stdout}"
    );
    assert!(stdout.contains("verdict: rolled_back (exit 1)"), "{stdout}");
    assert!(
        stdout.contains("rollback: clients were all on the primary (1.0.0)"),
        "{stdout}"
    );
    let vs = std::fs::read_to_string(dir.join("report.json")).unwrap();
    assert!(vs.contains("request-success-rate"), "{vs}");
}

/// The replica-ratio router through the command, on an API server that fails a share of its
/// requests: retried, and promoted.
#[test]
fn the_sandbox_command_promotes_through_api_faults_on_replica_ratio() {
    require_real_components();
    let dir = workdir("cli-flaky");
    let stdout = run_sandbox(
        &["--scenario", "flaky", "--router", "kubernetes:replicas"],
        &dir,
        0,
    );
    assert!(stdout.contains("the API server now fails 10%"), "{stdout}");
    // Two replicas each: the split moves in halves, as the replicas do.
    assert!(stdout.contains("split: canary 50%"), "{stdout}");
    assert!(stdout.contains("verdict: promoted (exit 0)"), "{stdout}");
    assert!(stdout.contains("errors 0.0%"), "{stdout}");
    let after: Vec<&str> = stdout
        .lines()
        .filter(|l| l.contains("after the release"))
        .collect();
    assert!(after.iter().all(|l| l.contains("2.0.0 100%")), "{after:?}");
}

/// Bad choices are refused before anything starts, with exit 2, saying what and how to fix it.
#[test]
fn the_sandbox_command_refuses_what_it_cannot_do() {
    let refused = |args: &[&str], env: &[(&str, &str)], says: &[&str]| {
        let dir = workdir("refused");
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_aviary"))
            .arg("sandbox")
            .args(args)
            .arg("--workdir")
            .arg(&dir)
            .envs(env.iter().copied())
            .output()
            .expect("aviary sandbox runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        for s in says {
            assert!(stderr.contains(s), "{args:?}: {stderr}");
        }
    };
    refused(
        &["--scenario", "ab", "--router", "kubernetes:replicas"],
        &[],
        &[
            "--scenario ab needs a router that can route by header",
            "use --router gatewayapi",
        ],
    );
    refused(&["--rate", "1"], &[], &["--rate", "5..=2000"]);
    refused(
        &["--metrics", "prometheus"],
        &[("AVIARY_PROMETHEUS_BIN", "/nonexistent/prometheus")],
        &[
            "/nonexistent/prometheus is not an executable file",
            "AVIARY_PROMETHEUS_BIN",
            "--metrics embedded",
        ],
    );
    refused(
        &["--proxy", "haproxy", "--metrics", "embedded"],
        &[("AVIARY_HAPROXY", "/nonexistent/haproxy")],
        &[
            "/nonexistent/haproxy is not an executable file",
            "AVIARY_HAPROXY",
        ],
    );
}

/// HAProxy's runtime API needs a plain work directory; one with a space is refused as input.
#[test]
fn a_workdir_haproxy_cannot_use_is_refused() {
    require_real_components();
    let dir = workdir("with space").join("a b");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_aviary"))
        .args([
            "sandbox",
            "--proxy",
            "haproxy",
            "--metrics",
            "embedded",
            "--workdir",
        ])
        .arg(&dir)
        .output()
        .expect("aviary sandbox runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--workdir") && stderr.contains("choose a plain path"),
        "{stderr}"
    );
}
