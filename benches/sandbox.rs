//! `cargo bench --bench sandbox`: what a release costs on the sandbox's real data path.
//!
//! * rollout overhead: the wall time of `aviary rollout` for a good release (process start,
//!   render, apply and every tick) divided by the analysis schedule the Canary configures
//!   (`aviary plan`'s completion time); target ≤ 1.02;
//! * rollback to primary: from the rollout announcing its rollback to the moment after which
//!   every client request is answered by the primary; target ≤ 1 s;
//! * peak RSS of the `aviary rollout` process during a release; target < 30 MB;
//! * cold start of `aviary --version`.
//!
//! It uses Prometheus and HAProxy when they are installed (and says so), else the embedded
//! equivalents. `AVIARY_BENCH_RUNS` (default 1) repeats the releases.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use aviary_sandbox::metrics::MetricsChoice;
use aviary_sandbox::{
    time_to_primary, Options, ProxyChoice, Router, Sandbox, Scenario, STABLE_TAG,
};

fn aviary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_aviary"))
}

fn schedule_s(example: &std::path::Path) -> f64 {
    let out = Command::new(aviary())
        .args(["plan", "--json", "--provider", "gatewayapi:v1", "-f"])
        .arg(example.join("k8s/canary.yaml"))
        .output()
        .expect("aviary plan runs");
    let plan: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("aviary plan --json prints JSON");
    plan["min_completion_s"]
        .as_f64()
        .expect("a completion time")
}

struct Run {
    overhead: f64,
    wall_s: f64,
    schedule_s: f64,
    rollback_ms: u64,
    proxy_ms: u64,
    peak_rss_kib: u64,
}

/// The components of one set of runs: what is installed, or the embedded equivalents.
#[derive(Clone, Copy)]
enum Components {
    Installed,
    Embedded,
}

async fn one_run(i: u32, components: Components) -> (Run, String) {
    let (metrics, proxy) = match components {
        Components::Installed => (MetricsChoice::Auto, ProxyChoice::Auto),
        Components::Embedded => (MetricsChoice::Embedded, ProxyChoice::Embedded),
    };
    // The two sandboxes' work directories, removed at the end of the run.
    let dir = tempfile::Builder::new()
        .prefix(&format!("aviary-bench-{i}-"))
        .tempdir()
        .expect("a temporary directory");
    let options = |name: &str, rate: u32| Options {
        router: Router::GatewayApi,
        metrics,
        proxy,
        aviary: aviary(),
        workdir: dir.path().join(name),
        rate,
        tag_every: None,
        preview_every: None,
        services: 1,
        verdict_policy: aviary_sandbox::Policy::AllOrNothing,
    };
    let mut peak = 0u64;

    // A good release: overhead and memory.
    let sb = Sandbox::start(options("good", 50)).await.expect("sandbox");
    let components = format!("{}; {}", sb.splitter.describe(), sb.metrics.describe());
    let schedule = schedule_s(&sb.example);
    let first = sb.bootstrap("prod", |_, _| {}).await.expect("release 1");
    let good = sb
        .release(Scenario::Good.tag(), "prod", None, |_, _| {})
        .await
        .expect("release 2");
    assert_eq!(good.exit_code, 0, "the good release was not promoted");
    peak = peak
        .max(first.peak_rss_kib.unwrap_or(0))
        .max(good.peak_rss_kib.unwrap_or(0));
    sb.shutdown().await;

    // A bad release: the way back to the primary, with enough clients (400 requests/s, one
    // every 12 ms on the canary at 20%) to see the switch to within a few milliseconds.
    let sb = Sandbox::start(options("errors", 400))
        .await
        .expect("sandbox");
    let first = sb.bootstrap("prod", |_, _| {}).await.expect("release 1");
    let bad = sb
        .release(Scenario::Errors.tag(), "prod", None, |_, _| {})
        .await
        .expect("release 2");
    assert_eq!(bad.exit_code, 1, "the bad release was not rolled back");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let decided = bad.rollback_decided_ms.expect("a rollback decision");
    let applied = sb
        .node
        .lock()
        .ok()
        .and_then(|n| {
            n.changes
                .iter()
                .find(|c| c.at_ms >= decided && c.canary_weight == 0)
                .map(|c| c.at_ms - decided)
        })
        .expect("the proxy went back to the primary");
    let samples = sb.shutdown().await;
    peak = peak
        .max(first.peak_rss_kib.unwrap_or(0))
        .max(bad.peak_rss_kib.unwrap_or(0));
    (
        Run {
            overhead: good.wall.as_secs_f64() / schedule,
            wall_s: good.wall.as_secs_f64(),
            schedule_s: schedule,
            rollback_ms: time_to_primary(&samples, decided, STABLE_TAG),
            proxy_ms: applied,
            peak_rss_kib: peak,
        },
        components,
    )
}

fn cold_start() -> (f64, f64) {
    let mut times: Vec<f64> = (0..30)
        .map(|_| {
            let t = Instant::now();
            let out = Command::new(aviary())
                .arg("--version")
                .output()
                .expect("runs");
            assert!(out.status.success());
            t.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    times.sort_by(f64::total_cmp);
    (times[times.len() / 2], times[times.len() - 1])
}

fn main() {
    // `cargo bench` passes --bench; a `cargo test --benches` run passes nothing and should be quick.
    if !std::env::args().any(|a| a == "--bench") {
        println!("sandbox bench: run it with `cargo bench --bench sandbox`");
        return;
    }
    let runs: u32 = std::env::var("AVIARY_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
        .max(1);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let (cold_median, cold_max) = cold_start();
    let installed =
        aviary_sandbox::metrics::find_prometheus().is_some() || splitter::find_haproxy().is_some();
    let sets: &[Components] = if installed {
        &[Components::Installed, Components::Embedded]
    } else {
        &[Components::Embedded]
    };
    for set in sets {
        let mut results = Vec::new();
        let mut components = String::new();
        for i in 0..runs {
            let (run, c) = runtime.block_on(one_run(i, *set));
            components = c;
            results.push(run);
        }
        report(runs, &components, &results);
    }
    println!("cold start --version  {cold_median:.1} ms median, {cold_max:.1} ms max of 30");
}

fn report(runs: u32, components: &str, results: &[Run]) {
    let worst = |f: fn(&Run) -> f64| results.iter().map(f).fold(f64::MIN, f64::max);
    println!("aviary sandbox benchmark ({runs} run(s)) on {components}");
    println!(
        "rollout overhead      {:.3} (wall {:.2} s / schedule {:.0} s; worst of runs)   target <= 1.02",
        worst(|r| r.overhead),
        worst(|r| r.wall_s),
        worst(|r| r.schedule_s)
    );
    println!(
        "rollback -> primary   {:.0} ms (clients all on the primary after the decision; the proxy had it after {:.0} ms; worst)   target <= 1000 ms",
        worst(|r| r.rollback_ms as f64),
        worst(|r| r.proxy_ms as f64)
    );
    println!(
        "peak RSS of rollout   {:.1} MiB (VmHWM of the aviary rollout process; worst)   target < 30 MB",
        worst(|r| r.peak_rss_kib as f64) / 1024.0
    );
}
