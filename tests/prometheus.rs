//! Metric analysis against a real Prometheus.
//!
//! `prometheus` (Debian's package; CI installs it with apt) scrapes, every second, three small HTTP
//! workloads started here on loopback: a good canary (`podinfo`: every request 200, 20 ms), a bad
//! one (`backend`: every 5th request 500 and slow, 200 ms / 800 ms) and the good canary's primary
//! (half of its requests fail, which no canary query may count). Each workload serves its own
//! traffic and exposes, in Prometheus' text format, the families Flagger's built-in queries read:
//! Istio's `istio_requests_total` / `istio_request_duration_milliseconds`, the pods' own
//! `http_request_duration_seconds` (with `kubernetes_namespace`/`kubernetes_pod_name` attached as
//! target labels, as a Kubernetes scrape config does), ingress-nginx's and Gloo's Envoy metrics.
//! The test drives real requests through them and checks what the queries make of it.
//!
//! The failure modes (Prometheus down, slow, answering garbage or 5xx) run against loopback
//! servers without Prometheus.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aviary_core::engine::MetricOutcome;
use aviary_core::spec::{BuiltinMetric, Provider};
use aviary_kube::metrics::{
    builtin_query, render_template, Auth, Evaluator, MetricContext, MetricError, PrometheusClient,
};
use serde_json::json;

// =============================================================================================
// Workloads.

/// Who a workload is, in the labels of each metric family.
#[derive(Clone)]
struct Identity {
    namespace: &'static str,
    /// Istio's `destination_workload`.
    workload: &'static str,
    /// `kubernetes_pod_name`, attached by the scrape config.
    pod: &'static str,
    /// Gloo's `envoy_cluster_name`.
    cluster: &'static str,
    /// ingress-nginx's `ingress` and `canary` labels (`canary` empty for the primary's traffic).
    ingress: &'static str,
    canary_upstream: &'static str,
}

/// How a workload answers: every `error_every`-th request fails with 500 and takes `slow_ms`;
/// the others take `fast_ms`.
#[derive(Clone, Copy)]
struct Behaviour {
    error_every: Option<u64>,
    fast_ms: f64,
    slow_ms: f64,
}

#[derive(Default)]
struct Counts {
    ok: u64,
    failed: u64,
}

struct Workload {
    id: Identity,
    addr: SocketAddr,
    counts: Arc<Mutex<Counts>>,
}

impl Workload {
    /// `(ok, failed)` requests served so far.
    fn served(&self) -> (u64, u64) {
        match self.counts.lock() {
            Ok(c) => (c.ok, c.failed),
            Err(e) => panic!("{e}"),
        }
    }

    /// The labels a Kubernetes scrape config would attach to the pod's metrics.
    fn target_labels(&self) -> [(&'static str, &'static str); 2] {
        [
            ("kubernetes_namespace", self.id.namespace),
            ("kubernetes_pod_name", self.id.pod),
        ]
    }
}

const ISTIO_BUCKETS_MS: [f64; 13] = [
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0,
];
const HTTP_BUCKETS_S: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

fn start_workload(id: Identity, behaviour: Behaviour) -> Workload {
    let listener = bind();
    let addr = local_addr(&listener);
    let counts = Arc::new(Mutex::new(Counts::default()));
    let shared = counts.clone();
    let identity = id.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let (id, counts) = (identity.clone(), shared.clone());
            std::thread::spawn(move || serve_workload(stream, &id, behaviour, &counts));
        }
    });
    Workload { id, addr, counts }
}

fn serve_workload(stream: TcpStream, id: &Identity, b: Behaviour, counts: &Mutex<Counts>) {
    let Some((path, _)) = read_head(&stream) else {
        return;
    };
    let (status, body) = if path == "/metrics" {
        let (ok, failed) = match counts.lock() {
            Ok(c) => (c.ok, c.failed),
            Err(_) => return,
        };
        (200, exposition(id, b, ok, failed))
    } else {
        let Ok(mut c) = counts.lock() else {
            return;
        };
        let n = c.ok + c.failed + 1;
        let fail = b.error_every.is_some_and(|k| n % k == 0);
        if fail {
            c.failed += 1;
        } else {
            c.ok += 1;
        }
        if fail {
            (500, "fail\n".to_string())
        } else {
            (200, "ok\n".to_string())
        }
    };
    respond(&stream, status, "text/plain; version=0.0.4", &body);
}

/// Prometheus' text format for a workload that served `ok` good and `failed` failed requests.
fn exposition(id: &Identity, b: Behaviour, ok: u64, failed: u64) -> String {
    let mut out = String::new();
    let mut line = |s: String| {
        out.push_str(&s);
        out.push('\n');
    };
    let below = |le: f64, fast: f64, slow: f64| {
        (if fast <= le { ok } else { 0 }) + (if slow <= le { failed } else { 0 })
    };
    let ns = id.namespace;
    let (fast_ms, slow_ms) = (b.fast_ms, b.slow_ms);
    let (fast_s, slow_s) = (fast_ms / 1000.0, slow_ms / 1000.0);
    let sum_ms = fast_ms * ok as f64 + slow_ms * failed as f64;

    line("# TYPE istio_requests_total counter".into());
    let dest = format!(
        "reporter=\"destination\",destination_workload_namespace=\"{ns}\",destination_workload=\"{}\"",
        id.workload
    );
    line(format!(
        "istio_requests_total{{{dest},response_code=\"200\"}} {ok}"
    ));
    line(format!(
        "istio_requests_total{{{dest},response_code=\"500\"}} {failed}"
    ));
    // The client side's view, which the queries must ignore (`reporter="destination"`).
    let source = dest.replace("reporter=\"destination\"", "reporter=\"source\"");
    line(format!(
        "istio_requests_total{{{source},response_code=\"503\"}} {}",
        ok + failed
    ));
    line("# TYPE istio_request_duration_milliseconds histogram".into());
    for le in ISTIO_BUCKETS_MS {
        let n = below(le, fast_ms, slow_ms);
        line(format!(
            "istio_request_duration_milliseconds_bucket{{{dest},le=\"{le}\"}} {n}"
        ));
    }
    let total = ok + failed;
    line(format!(
        "istio_request_duration_milliseconds_bucket{{{dest},le=\"+Inf\"}} {total}"
    ));
    line(format!(
        "istio_request_duration_milliseconds_sum{{{dest}}} {sum_ms}"
    ));
    line(format!(
        "istio_request_duration_milliseconds_count{{{dest}}} {total}"
    ));

    line("# TYPE http_request_duration_seconds histogram".into());
    for (status, count, secs) in [("200", ok, fast_s), ("500", failed, slow_s)] {
        let labels = format!("method=\"GET\",path=\"/\",status=\"{status}\"");
        for le in HTTP_BUCKETS_S {
            let n = if secs <= le { count } else { 0 };
            line(format!(
                "http_request_duration_seconds_bucket{{{labels},le=\"{le}\"}} {n}"
            ));
        }
        line(format!(
            "http_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {count}"
        ));
        line(format!(
            "http_request_duration_seconds_sum{{{labels}}} {}",
            secs * count as f64
        ));
        line(format!(
            "http_request_duration_seconds_count{{{labels}}} {count}"
        ));
    }

    let nginx = format!(
        "namespace=\"{ns}\",ingress=\"{}\",canary=\"{}\"",
        id.ingress, id.canary_upstream
    );
    line("# TYPE nginx_ingress_controller_requests counter".into());
    line(format!(
        "nginx_ingress_controller_requests{{{nginx},status=\"200\"}} {ok}"
    ));
    line(format!(
        "nginx_ingress_controller_requests{{{nginx},status=\"500\"}} {failed}"
    ));
    line("# TYPE nginx_ingress_controller_response_duration_seconds histogram".into());
    line(format!(
        "nginx_ingress_controller_response_duration_seconds_bucket{{{nginx},le=\"+Inf\"}} {total}"
    ));
    line(format!(
        "nginx_ingress_controller_response_duration_seconds_sum{{{nginx}}} {}",
        sum_ms / 1000.0
    ));
    line(format!(
        "nginx_ingress_controller_response_duration_seconds_count{{{nginx}}} {total}"
    ));

    let envoy = format!("envoy_cluster_name=\"{}\"", id.cluster);
    line("# TYPE envoy_cluster_upstream_rq counter".into());
    line(format!(
        "envoy_cluster_upstream_rq{{{envoy},envoy_response_code=\"200\"}} {ok}"
    ));
    line(format!(
        "envoy_cluster_upstream_rq{{{envoy},envoy_response_code=\"500\"}} {failed}"
    ));
    line("# TYPE envoy_cluster_upstream_rq_time histogram".into());
    for le in ISTIO_BUCKETS_MS {
        let n = below(le, fast_ms, slow_ms);
        line(format!(
            "envoy_cluster_upstream_rq_time_bucket{{{envoy},le=\"{le}\"}} {n}"
        ));
    }
    line(format!(
        "envoy_cluster_upstream_rq_time_bucket{{{envoy},le=\"+Inf\"}} {total}"
    ));
    line(format!(
        "envoy_cluster_upstream_rq_time_sum{{{envoy}}} {sum_ms}"
    ));
    line(format!(
        "envoy_cluster_upstream_rq_time_count{{{envoy}}} {total}"
    ));

    // A label value with a quote, a backslash and a newline, for the escaping round trip.
    line("# TYPE aviary_test_info gauge".into());
    line(format!(
        "aviary_test_info{{workload=\"{}\",tricky=\"a\\\"b\\\\c\\nd\"}} 1",
        id.workload
    ));
    out
}

/// Sends GET requests at the workloads until stopped, at most `limit` each and for `max` at most.
struct Load {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicUsize>,
}

impl Load {
    fn start(targets: Vec<SocketAddr>, limit: usize, max: Duration) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicUsize::new(0));
        for addr in targets {
            let (stop, sent) = (stop.clone(), sent.clone());
            std::thread::spawn(move || {
                let started = Instant::now();
                for _ in 0..limit {
                    if stop.load(Ordering::SeqCst) || started.elapsed() > max {
                        break;
                    }
                    if get(addr, "/").is_some() {
                        sent.fetch_add(1, Ordering::SeqCst);
                    }
                    std::thread::sleep(Duration::from_millis(2));
                }
            });
        }
        Load { stop, sent }
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

// =============================================================================================
// Prometheus.

struct Prometheus {
    child: Child,
    dir: PathBuf,
    url: String,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn prometheus_binary() -> PathBuf {
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("prometheus"))
            .find(|p| p.is_file())
    });
    match on_path.or_else(|| {
        let p = PathBuf::from("/usr/bin/prometheus");
        p.is_file().then_some(p)
    }) {
        Some(p) => p,
        None => panic!(
            "the `prometheus` binary is not installed: these tests run a real Prometheus; install it with `apt-get install prometheus` (CI does)"
        ),
    }
}

/// A scrape job: its name, the target's address and the labels attached to the target.
type Job<'a> = (&'a str, SocketAddr, &'a [(&'a str, &'a str)]);

/// Starts Prometheus on a free loopback port, scraping each job every second, and waits until it
/// answers queries.
async fn start_prometheus(jobs: &[Job<'_>]) -> Prometheus {
    let binary = prometheus_binary();
    let dir = temp_dir("prometheus");
    let mut config = String::from(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\n  evaluation_interval: 1s\nscrape_configs:\n",
    );
    for (job, addr, labels) in jobs {
        config.push_str(&format!(
            "- job_name: {job}\n  static_configs:\n  - targets: ['{addr}']\n"
        ));
        if !labels.is_empty() {
            config.push_str("    labels:\n");
            for (k, v) in *labels {
                config.push_str(&format!("      {k}: '{v}'\n"));
            }
        }
    }
    let config_path = dir.join("prometheus.yml");
    write(&config_path, &config);
    let port = free_port();
    let log = match std::fs::File::create(dir.join("prometheus.log")) {
        Ok(f) => f,
        Err(e) => panic!("{e}"),
    };
    let log2 = match log.try_clone() {
        Ok(f) => f,
        Err(e) => panic!("{e}"),
    };
    let child = Command::new(&binary)
        .arg(format!("--config.file={}", config_path.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--log.level=warn")
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2)
        .spawn();
    let child = match child {
        Ok(c) => c,
        Err(e) => panic!("cannot start {}: {e}", binary.display()),
    };
    let prometheus = Prometheus {
        child,
        dir,
        url: format!("http://127.0.0.1:{port}"),
    };
    let probe = client(&prometheus.url, Duration::from_secs(1), 0);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match probe.is_online().await {
            Ok(()) => break,
            Err(e) if Instant::now() > deadline => {
                let log = std::fs::read_to_string(prometheus.dir.join("prometheus.log"))
                    .unwrap_or_default();
                panic!("prometheus did not come up: {e}\n{log}");
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    prometheus
}

// =============================================================================================
// A reverse proxy serving Prometheus under `/prefix`, behind authentication.

const TOKEN: &str = "s3cret-token";
/// `aviary:hunter2`.
const BASIC: &str = "Basic YXZpYXJ5Omh1bnRlcjI=";

/// Forwards `GET /prefix/api/v1/query?...` carrying `Bearer s3cret-token` or basic
/// `aviary:hunter2` to Prometheus' `/api/v1/query?...`; 401 without them, 404 elsewhere.
fn start_proxy(upstream: &str) -> (String, Arc<AtomicUsize>) {
    let upstream: SocketAddr = match upstream.trim_start_matches("http://").parse() {
        Ok(a) => a,
        Err(e) => panic!("{e}"),
    };
    let listener = bind();
    let base = format!("http://{}/prefix", local_addr(&listener));
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let counter = counter.clone();
            std::thread::spawn(move || {
                let Some((target, headers)) = read_head(&stream) else {
                    return;
                };
                counter.fetch_add(1, Ordering::SeqCst);
                let Some(query) = target.strip_prefix("/prefix/api/v1/query") else {
                    respond(&stream, 404, "text/plain", "404 page not found\n");
                    return;
                };
                let auth = headers.get("authorization").map(String::as_str);
                let bearer = format!("Bearer {TOKEN}");
                if auth != Some(bearer.as_str()) && auth != Some(BASIC) {
                    respond(&stream, 401, "text/plain", "unauthorized\n");
                    return;
                }
                let Ok(mut up) = TcpStream::connect(upstream) else {
                    respond(&stream, 502, "text/plain", "bad gateway\n");
                    return;
                };
                let request =
                    format!("GET /api/v1/query{query} HTTP/1.0\r\nHost: {upstream}\r\n\r\n");
                let mut answer = Vec::new();
                if up.write_all(request.as_bytes()).is_err() || up.read_to_end(&mut answer).is_err()
                {
                    respond(&stream, 502, "text/plain", "bad gateway\n");
                    return;
                }
                let mut w = &stream;
                let _ = w.write_all(&answer);
            });
        }
    });
    (base, hits)
}

// =============================================================================================
// The tests.

fn ctx(provider: Provider, target: &str) -> MetricContext {
    MetricContext {
        name: target.to_string(),
        namespace: "test".into(),
        target: target.to_string(),
        service: target.to_string(),
        ingress: target.to_string(),
        route: target.to_string(),
        provider,
    }
}

const WINDOW: &str = "30s";

async fn builtin(c: &PrometheusClient, provider: Provider, target: &str, m: BuiltinMetric) -> f64 {
    let query = match builtin_query(m, &ctx(provider.clone(), target), WINDOW) {
        Ok(q) => q,
        Err(e) => panic!("{e}"),
    };
    match c.query(&query).await {
        Ok(v) => v,
        Err(e) => panic!("{provider:?} {m:?} {target}: {e}\nquery: {query}"),
    }
}

fn assert_near(what: &str, got: f64, want: f64, tolerance: f64) {
    assert!(
        (got - want).abs() <= tolerance,
        "{what}: got {got}, expected {want} ± {tolerance}"
    );
}

const GOOD_P99_MS: f64 = 24.85; // all in (10, 25]: 10 + 15 × 0.99
const BAD_P99_MS: f64 = 975.0; // 20 % in (500, 1000]: 500 + 500 × (0.99 − 0.8) / 0.2

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn queries_against_a_real_prometheus() {
    let started = Instant::now();
    let good = start_workload(
        Identity {
            namespace: "test",
            workload: "podinfo",
            pod: "podinfo-7d9f8c6b5-x2x9k",
            cluster: "test-podinfo-canaryupstream-9898_test",
            ingress: "podinfo",
            canary_upstream: "test-podinfo-canary-9898",
        },
        Behaviour {
            error_every: None,
            fast_ms: 20.0,
            slow_ms: 20.0,
        },
    );
    let bad = start_workload(
        Identity {
            namespace: "test",
            workload: "backend",
            pod: "backend-5c8d7f9b6-q2w3e",
            cluster: "test-backend-canaryupstream-8080_test",
            ingress: "backend",
            canary_upstream: "test-backend-canary-8080",
        },
        Behaviour {
            error_every: Some(5),
            fast_ms: 200.0,
            slow_ms: 800.0,
        },
    );
    let primary = start_workload(
        Identity {
            namespace: "test",
            workload: "podinfo-primary",
            pod: "podinfo-primary-6b7c8d9f5-abcde",
            cluster: "test-podinfo-primaryupstream-9898_test",
            ingress: "podinfo",
            canary_upstream: "",
        },
        Behaviour {
            error_every: Some(2),
            fast_ms: 3000.0,
            slow_ms: 3000.0,
        },
    );
    let load = Load::start(
        vec![good.addr, bad.addr, primary.addr],
        20_000,
        Duration::from_secs(60),
    );
    let prom = start_prometheus(&[
        ("good", good.addr, &good.target_labels()),
        ("bad", bad.addr, &bad.target_labels()),
        ("primary", primary.addr, &primary.target_labels()),
    ])
    .await;
    let c = client(&prom.url, Duration::from_secs(5), 2);

    // Wait (polling, not sleeping blindly) until every workload is up and was scraped 3 times.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let up = c.query("count(up{job=~\"good|bad|primary\"} == 1)").await;
        let scrapes = c
            .query("min(count_over_time(up{job=~\"good|bad|primary\"}[30s]))")
            .await;
        match (&up, &scrapes) {
            (Ok(u), Ok(n)) if *u == 3.0 && *n >= 3.0 => break,
            _ if Instant::now() > deadline => {
                panic!("prometheus did not scrape the workloads: up {up:?}, scrapes {scrapes:?}")
            }
            _ => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
    let sent = load.sent.load(Ordering::SeqCst);
    assert!(
        sent > 100,
        "only {sent} requests went through the workloads"
    );
    assert_eq!(good.served().1, 0, "the good canary never fails");
    let (ok, failed) = bad.served();
    assert!(
        failed > 0 && ok / failed == 4,
        "the bad canary fails one request in five: {ok}/{failed}"
    );

    // --- Built-in queries, per provider -------------------------------------------------------
    use BuiltinMetric::{RequestDuration as Duration_, RequestSuccessRate as Success};
    for provider in [
        Provider::Istio,
        Provider::Kubernetes,
        Provider::KubernetesReplicas,
        Provider::GatewayApi,
        Provider::Gloo,
    ] {
        let p = format!("{provider:?}");
        let rate = builtin(&c, provider.clone(), "podinfo", Success).await;
        assert_near(&format!("{p} good success rate"), rate, 100.0, 0.01);
        let rate = builtin(&c, provider.clone(), "backend", Success).await;
        assert_near(&format!("{p} bad success rate"), rate, 80.0, 3.0);
        let p99 = builtin(&c, provider.clone(), "podinfo", Duration_).await;
        assert_near(&format!("{p} good P99 ms"), p99, GOOD_P99_MS, 0.5);
        let p99 = builtin(&c, provider.clone(), "backend", Duration_).await;
        assert_near(&format!("{p} bad P99 ms"), p99, BAD_P99_MS, 25.0);
    }
    // NGINX: the canary's share of the ingress' traffic (`canary!=""`); duration is the mean.
    let rate = builtin(&c, Provider::Nginx, "podinfo", Success).await;
    assert_near("nginx good success rate", rate, 100.0, 0.01);
    let rate = builtin(&c, Provider::Nginx, "backend", Success).await;
    assert_near("nginx bad success rate", rate, 80.0, 3.0);
    let mean = builtin(&c, Provider::Nginx, "podinfo", Duration_).await;
    assert_near("nginx good mean ms", mean, 20.0, 0.5);
    let mean = builtin(&c, Provider::Nginx, "backend", Duration_).await;
    assert_near("nginx bad mean ms", mean, 320.0, 15.0);

    // --- The Evaluator, from Canary and MetricTemplate specs --------------------------------
    let specs = format!(
        r#"
apiVersion: flagger.app/v1beta1
kind: MetricTemplate
metadata:
  name: error-rate
  namespace: test
spec:
  provider:
    type: prometheus
    address: {url}
  query: |
    100 * sum(
      rate(
        istio_requests_total{{
          reporter="destination",
          destination_workload_namespace="{{{{ namespace }}}}",
          destination_workload=~"{{{{ target }}}}",
          response_code=~"{{{{ variables.codes }}}}"
        }}[{{{{ interval }}}}]
      )
    )
    /
    sum(rate(istio_requests_total{{reporter="destination", destination_workload_namespace="{{{{ namespace }}}}", destination_workload=~"{{{{ target }}}}"}}[{{{{interval}}}}]))
---
apiVersion: flagger.app/v1beta1
kind: MetricTemplate
metadata:
  name: tricky
  namespace: test
spec:
  provider:
    type: prometheus
  query: |
    sum(aviary_test_info{{workload="{{{{ target }}}}", tricky="{{{{ variables.value }}}}"}})
"#,
        url = prom.url
    );
    let docs = decode(&format!(
        "{specs}---\n{}---\n{}",
        canary_yaml("podinfo", "istio"),
        canary_yaml("backend", "gatewayapi")
    ));
    let podinfo = find_canary(&docs, "podinfo");
    let backend = find_canary(&docs, "backend");
    let evaluator = |canary: &aviary_core::spec::Canary, provider: Provider| {
        Evaluator::new(
            canary,
            &provider,
            docs.templates.clone(),
            None,
            Some(prom.url.clone()),
            Auth::None,
        )
    };
    let e = evaluator(&podinfo, Provider::Istio);
    assert_value(
        e.evaluate("request-success-rate").await,
        100.0,
        0.01,
        "podinfo success",
    );
    assert_value(
        e.evaluate("request-duration").await,
        GOOD_P99_MS,
        0.5,
        "podinfo p99",
    );
    assert_value(
        e.evaluate("error-rate").await,
        0.0,
        0.01,
        "podinfo error-rate template",
    );
    assert_value(
        e.evaluate("tricky-label").await,
        1.0,
        0.0,
        "escaped label value round trip",
    );
    let e = evaluator(&backend, Provider::GatewayApi);
    assert_value(
        e.evaluate("request-success-rate").await,
        80.0,
        3.0,
        "backend success",
    );
    assert_value(
        e.evaluate("request-duration").await,
        BAD_P99_MS,
        25.0,
        "backend p99",
    );
    assert_value(
        e.evaluate("error-rate").await,
        20.0,
        3.0,
        "backend error-rate template",
    );
    match e.evaluate("inline").await {
        MetricOutcome::NoValues(m) => assert!(m.contains("no values found"), "{m}"),
        other => panic!("inline query for a workload without traffic: {other:?}"),
    }

    // --- No values, NaN, infinity, errors ------------------------------------------------------
    let no_values = [
        "sum(rate(istio_requests_total{destination_workload=\"nowhere\"}[30s]))",
        "0/0",
        "vector(0) / vector(0)",
        "vector(1) / vector(0)",
        "sum(rate(istio_requests_total{destination_workload=\"podinfo\",response_code=\"500\"}[30s])) / sum(rate(istio_requests_total{destination_workload=\"podinfo\",response_code=\"500\"}[30s]))",
    ];
    for q in no_values {
        match c.query(q).await {
            Err(MetricError::NoValues(m)) => {
                assert!(m.starts_with("no values found for query"), "{q}: {m}")
            }
            other => panic!("{q}: expected no values, got {other:?}"),
        }
    }
    match c.query("sum(").await {
        Err(MetricError::Failed(m)) => {
            assert!(
                m.contains("400 Bad Request") && m.contains("parse error"),
                "{m}"
            )
        }
        other => panic!("a syntax error: {other:?}"),
    }
    match c.query("up[1m]").await {
        Err(MetricError::Failed(m)) => assert!(m.contains("range vector"), "{m}"),
        other => panic!("a range vector: {other:?}"),
    }
    match c.query("scalar(vector(42))").await {
        Ok(v) => assert_eq!(v, 42.0),
        other => panic!("a scalar: {other:?}"),
    }

    // --- An injection attempt stays a label value ----------------------------------------------
    let template = r#"sum(istio_requests_total{destination_workload_namespace="{{ namespace }}"})"#;
    let mut evil = ctx(Provider::Istio, "podinfo");
    evil.namespace = r#"x"} or vector(1) or up{a=""#.to_string();
    // Spliced in verbatim, the namespace turns the query into `sum(... or vector(1) or up)`,
    // which has a value although no series has that namespace:
    let naive = template.replace("{{ namespace }}", &evil.namespace);
    assert!(
        matches!(c.query(&naive).await, Ok(v) if v >= 1.0),
        "the attack string must work on a naive substitution for this test to mean anything"
    );
    let rendered = match render_template(template, &evil, "1m", &BTreeMap::new()) {
        Ok(q) => q,
        Err(e) => panic!("{e}"),
    };
    match c.query(&rendered).await {
        Err(MetricError::NoValues(_)) => {}
        other => panic!("the injection changed the query {rendered}: {other:?}"),
    }
    let mut evil_interval = ctx(Provider::Istio, "podinfo");
    evil_interval.namespace = "test".into();
    assert!(
        builtin_query(Success, &evil_interval, "1m]) or vector(1) or rate(up[1m").is_err(),
        "a window that is not a duration must be refused"
    );

    // --- A path prefix and credentials (a GMP-style base URL behind a proxy) -----------------
    let (base, hits) = start_proxy(&prom.url);
    let authed = |auth: Auth| match PrometheusClient::new(
        &base,
        auth,
        BTreeMap::new(),
        false,
        Duration::from_secs(5),
        2,
    ) {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    };
    let bearer = authed(Auth::Bearer(TOKEN.into()));
    if let Err(e) = bearer.is_online().await {
        panic!("through the proxy: {e}");
    }
    let rate = builtin(&bearer, Provider::Istio, "backend", Success).await;
    assert_near("success rate through the prefix", rate, 80.0, 3.0);
    let basic = authed(Auth::Basic {
        username: "aviary".into(),
        password: "hunter2".into(),
    });
    assert!(matches!(basic.query("vector(7)").await, Ok(v) if v == 7.0));
    let before = hits.load(Ordering::SeqCst);
    let wrong = authed(Auth::Bearer("wrong-token-value".into()));
    match wrong.query("vector(1)").await {
        Err(MetricError::Failed(m)) => {
            assert!(m.contains("401"), "{m}");
            assert!(!m.contains("wrong-token-value"), "the token leaked: {m}");
        }
        other => panic!("a wrong token: {other:?}"),
    }
    assert_eq!(
        hits.load(Ordering::SeqCst),
        before + 1,
        "a 401 is not retried"
    );
    let unprefixed = base.trim_end_matches("/prefix").to_string();
    match client_with(&unprefixed, Auth::Bearer(TOKEN.into()))
        .query("vector(1)")
        .await
    {
        Err(MetricError::Failed(m)) => assert!(m.contains("404"), "{m}"),
        other => panic!("without the prefix: {other:?}"),
    }

    // --- Templates and secretRefs read from a cluster ------------------------------------------
    cluster_templates_and_secrets(&base, &podinfo).await;

    drop(load);
    let elapsed = started.elapsed();
    assert!(
        elapsed < Duration::from_secs(60),
        "the Prometheus test took {elapsed:?}"
    );
}

/// MetricTemplates and their Secrets come from the cluster when the spec files do not have them.
async fn cluster_templates_and_secrets(proxy_base: &str, podinfo: &aviary_core::spec::Canary) {
    use kube_emulator::{Config, Emulator, ResourceType};
    let config = Config {
        namespaces: vec!["default".into(), "test".into(), "monitoring".into()],
        extra_resources: vec![ResourceType::new(
            "flagger.app",
            "v1beta1",
            "MetricTemplate",
            "metrictemplates",
            true,
            false,
        )],
        ..Config::default()
    };
    let emu = match Emulator::start(config).await {
        Ok(e) => e,
        Err(e) => panic!("emulator: {e}"),
    };
    let objects = [
        json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "prom-token", "namespace": "monitoring"},
            "data": {"token": "czNjcmV0LXRva2Vu"}}),
        json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "prom-basic", "namespace": "test"},
            "data": {"username": "YXZpYXJ5", "password": "aHVudGVyMg=="}}),
        json!({"apiVersion": "flagger.app/v1beta1", "kind": "MetricTemplate",
            "metadata": {"name": "cluster-rate", "namespace": "monitoring"},
            "spec": {"provider": {"type": "prometheus", "address": proxy_base,
                                  "secretRef": {"name": "prom-token"}},
                     "query": "sum(rate(istio_requests_total{reporter=\"destination\",destination_workload=~\"{{ target }}\",destination_workload_namespace=\"{{ namespace }}\"}[{{ interval }}])) > bool 0"}}),
        json!({"apiVersion": "flagger.app/v1beta1", "kind": "MetricTemplate",
            "metadata": {"name": "error-rate", "namespace": "test"},
            "spec": {"provider": {"type": "prometheus", "address": proxy_base,
                                  "secretRef": {"name": "prom-basic"}},
                     "query": "vector({{ variables.codes }})"}}),
        json!({"apiVersion": "flagger.app/v1beta1", "kind": "MetricTemplate",
            "metadata": {"name": "tricky", "namespace": "test"},
            "spec": {"provider": {"type": "prometheus", "address": proxy_base,
                                  "secretRef": {"name": "missing"}},
                     "query": "vector(1)"}}),
    ];
    for o in objects {
        if let Err(e) = emu.insert(o) {
            panic!("{e}");
        }
    }
    let e = Evaluator::new(
        podinfo,
        &Provider::Istio,
        Vec::new(),
        Some(kube_client(&emu).await),
        None,
        Auth::None,
    );
    // A bearer token from the template's namespace, through the path prefix.
    assert_value(
        e.evaluate("cluster-rate").await,
        1.0,
        0.0,
        "cluster template, token",
    );
    // `codes` is `5.*` here, which is not a number: the value is refused before it is sent.
    match e.evaluate("error-rate").await {
        MetricOutcome::Error(m) => assert!(m.contains("outside a quoted string"), "{m}"),
        other => panic!("{other:?}"),
    }
    match e.evaluate("tricky-label").await {
        MetricOutcome::Error(m) => {
            assert!(m.contains("Secret missing.test not found"), "{m}")
        }
        other => panic!("{other:?}"),
    }
    // Basic auth from a Secret: same template name, a Canary whose variable is a number.
    let docs = decode(&canary_yaml("podinfo", "istio").replace("codes: \"5.*\"", "codes: \"3\""));
    let canary = find_canary(&docs, "podinfo");
    let kube = kube_client(&emu).await;
    let e = Evaluator::new(
        &canary,
        &Provider::Istio,
        Vec::new(),
        Some(kube),
        None,
        Auth::None,
    );
    assert_value(
        e.evaluate("error-rate").await,
        3.0,
        0.0,
        "cluster template, basic auth",
    );
}

async fn kube_client(emu: &kube_emulator::Emulator) -> kube::Client {
    let kc = match kube::config::Kubeconfig::from_yaml(&emu.kubeconfig_yaml("test")) {
        Ok(k) => k,
        Err(e) => panic!("{e}"),
    };
    let config = match kube::Config::from_custom_kubeconfig(kc, &Default::default()).await {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    };
    match kube::Client::try_from(config) {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    }
}

fn canary_yaml(target: &str, provider: &str) -> String {
    let gateway = if provider == "gatewayapi" {
        "    gatewayRefs:\n    - name: gateway\n      namespace: default\n"
    } else {
        ""
    };
    format!(
        r#"apiVersion: flagger.app/v1beta1
kind: Canary
metadata:
  name: {target}
  namespace: test
spec:
  provider: {provider}
  targetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: {target}
  service:
    port: 9898
{gateway}  analysis:
    interval: 30s
    threshold: 5
    maxWeight: 50
    stepWeight: 10
    metrics:
    - name: request-success-rate
      interval: 30s
      thresholdRange:
        min: 99
    - name: request-duration
      interval: 30s
      thresholdRange:
        max: 500
    - name: error-rate
      interval: 30s
      templateRef:
        name: error-rate
      templateVariables:
        codes: "5.*"
      thresholdRange:
        max: 1
    - name: tricky-label
      templateRef:
        name: tricky
      templateVariables:
        value: "a\"b\\c\nd"
      thresholdRange:
        min: 1
    - name: cluster-rate
      interval: 30s
      templateRef:
        name: cluster-rate
        namespace: monitoring
      thresholdRange:
        min: 1
    - name: inline
      interval: 30s
      query: 'sum(rate(istio_requests_total{{destination_workload_namespace="{{{{ namespace }}}}",destination_workload="{{{{ target }}}}-idle"}}[{{{{ interval }}}}]))'
      thresholdRange:
        min: 1
"#
    )
}

fn decode(text: &str) -> aviary_core::spec::Documents {
    match aviary_core::spec::decode::decode_documents("specs.yaml", text) {
        Ok(d) => d,
        Err(e) => panic!("{e:?}\n{text}"),
    }
}

fn find_canary(docs: &aviary_core::spec::Documents, name: &str) -> aviary_core::spec::Canary {
    match docs.canaries.iter().find(|c| c.name == name) {
        Some(c) => c.clone(),
        None => panic!("no Canary {name}"),
    }
}

fn assert_value(outcome: MetricOutcome, want: f64, tolerance: f64, what: &str) {
    match outcome {
        MetricOutcome::Value(v) => assert_near(what, v, want, tolerance),
        other => panic!("{what}: {other:?}"),
    }
}

// =============================================================================================
// Failure modes, without Prometheus.

#[tokio::test]
async fn prometheus_down_fails_after_retries() {
    let port = free_port(); // bound, then released: nothing listens there
    let c = client(
        &format!("http://127.0.0.1:{port}"),
        Duration::from_secs(1),
        2,
    );
    let started = Instant::now();
    match c.query("vector(1)").await {
        Err(MetricError::Failed(m)) => {
            assert!(m.contains("cannot connect"), "{m}");
            assert!(m.contains("(3 attempts)"), "{m}");
        }
        other => panic!("{other:?}"),
    }
    // Two backoffs, 200 ms then 400 ms, happened between the three attempts.
    assert!(started.elapsed() >= Duration::from_millis(600));
    match c.is_online().await {
        Err(MetricError::Failed(m)) => assert!(m.contains("is not available"), "{m}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_slow_prometheus_times_out() {
    let (url, hits) = fake(|_, _| Reply::Hang(Duration::from_secs(5)));
    let c = client(&url, Duration::from_millis(300), 1);
    let started = Instant::now();
    match c.query("vector(1)").await {
        Err(MetricError::Failed(m)) => {
            assert!(m.contains("timed out after 300ms"), "{m}");
            assert!(m.contains("(2 attempts)"), "{m}");
        }
        other => panic!("{other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(
        hits.load(Ordering::SeqCst),
        2,
        "one retry after the first timeout"
    );
}

#[tokio::test]
async fn garbage_is_a_failure_and_is_not_retried() {
    let (url, hits) = fake(|_, _| Reply::Answer(200, "<html>this is not Prometheus</html>".into()));
    let c = client(&url, Duration::from_secs(2), 3);
    match c.query("vector(1)").await {
        Err(MetricError::Failed(m)) => {
            assert!(m.contains("did not answer with Prometheus API JSON"), "{m}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(hits.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn server_errors_are_retried_and_client_errors_are_not() {
    let ok = r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"12.5"]}]}}"#;
    let (url, hits) = fake(move |n, _| {
        if n < 3 {
            Reply::Answer(503, "overloaded".into())
        } else {
            Reply::Answer(200, ok.into())
        }
    });
    let c = client(&url, Duration::from_secs(2), 3);
    assert!(matches!(c.query("x").await, Ok(v) if v == 12.5));
    assert_eq!(hits.load(Ordering::SeqCst), 3, "two 503s, then the answer");

    let error = r#"{"status":"error","errorType":"execution","error":"query processing would load too many samples into memory"}"#;
    let (url, hits) = fake(move |_, _| Reply::Answer(422, error.into()));
    match client(&url, Duration::from_secs(2), 3).query("x").await {
        Err(MetricError::Failed(m)) => {
            assert!(
                m.contains("422")
                    && m.contains("execution: query processing would load too many samples"),
                "{m}"
            )
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(hits.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn queries_are_sent_as_flagger_sends_them() {
    let seen = Arc::new(Mutex::new(Vec::<(String, BTreeMap<String, String>)>::new()));
    let record = seen.clone();
    let (url, _) = fake(move |_, (target, headers)| {
        if let Ok(mut s) = record.lock() {
            s.push((target.to_string(), headers.clone()));
        }
        Reply::Answer(
            200,
            r#"{"status":"success","data":{"resultType":"scalar","result":[1,"1"]}}"#.into(),
        )
    });
    let headers = BTreeMap::from([("X-Scope-OrgID".to_string(), "tenant-a".to_string())]);
    let c = match PrometheusClient::new(
        &format!("{url}/base/"),
        Auth::None,
        headers,
        false,
        Duration::from_secs(2),
        0,
    ) {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    };
    assert!(matches!(c.query("sum(up{a=\"b c\"}) * 100").await, Ok(v) if v == 1.0));
    let seen = match seen.lock() {
        Ok(s) => s.clone(),
        Err(e) => panic!("{e}"),
    };
    let Some((target, headers)) = seen.first() else {
        panic!("no request");
    };
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    assert_eq!(path, "/base/api/v1/query");
    let decoded: Vec<(String, String)> = url_decode_pairs(query);
    assert_eq!(
        decoded,
        vec![("query".to_string(), "sum(up{a=\"b c\"}) * 100".to_string())]
    );
    assert_eq!(
        headers.get("x-scope-orgid").map(String::as_str),
        Some("tenant-a")
    );
    assert!(!headers.contains_key("authorization"));
}

#[test]
fn an_unknown_template_variable_is_an_error() {
    let c = ctx(Provider::Istio, "podinfo");
    let vars = BTreeMap::from([("region".to_string(), "eu".to_string())]);
    match render_template("up{zone=\"{{ variables.zone }}\"}", &c, "1m", &vars) {
        Err(MetricError::Failed(m)) => assert!(m.contains("`zone`") && m.contains("region"), "{m}"),
        other => panic!("{other:?}"),
    }
    match render_template("up{x=\"{{ canary }}\"}", &c, "1m", &vars) {
        Err(MetricError::Failed(m)) => assert!(m.contains("`canary`"), "{m}"),
        other => panic!("{other:?}"),
    }
}

// =============================================================================================
// Loopback plumbing.

enum Reply {
    Answer(u16, String),
    /// Accept the request and say nothing for this long.
    Hang(Duration),
}

/// A loopback HTTP server answering each request with `reply(n, (target, headers))`, `n` counting
/// requests from 1. Returns its URL and the request count.
fn fake<F>(reply: F) -> (String, Arc<AtomicUsize>)
where
    F: Fn(usize, (&str, &BTreeMap<String, String>)) -> Reply + Send + Sync + 'static,
{
    let listener = bind();
    let url = format!("http://{}", local_addr(&listener));
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    let reply = Arc::new(reply);
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let (counter, reply) = (counter.clone(), reply.clone());
            std::thread::spawn(move || {
                let Some((target, headers)) = read_head(&stream) else {
                    return;
                };
                let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
                match reply(n, (&target, &headers)) {
                    Reply::Answer(status, body) => {
                        respond(&stream, status, "application/json", &body)
                    }
                    Reply::Hang(d) => std::thread::sleep(d),
                }
            });
        }
    });
    (url, hits)
}

/// Reads a request's head: the target and the headers (names lowercased).
fn read_head(stream: &TcpStream) -> Option<(String, BTreeMap<String, String>)> {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let mut reader = BufReader::new(stream);
    let mut first = String::new();
    if reader.read_line(&mut first).ok()? == 0 {
        return None;
    }
    let target = first.split_whitespace().nth(1)?.to_string();
    let mut headers = BTreeMap::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            break;
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    Some((target, headers))
}

fn respond(stream: &TcpStream, status: u16, content_type: &str, body: &str) {
    let mut w = stream;
    let _ = write!(
        w,
        "HTTP/1.1 {status} X\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = w.flush();
}

/// One plain GET; the status code, or `None` when the request failed.
fn get(addr: SocketAddr, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut answer = String::new();
    s.read_to_string(&mut answer).ok()?;
    answer.split_whitespace().nth(1)?.parse().ok()
}

fn url_decode_pairs(query: &str) -> Vec<(String, String)> {
    let decode = |s: &str| -> String {
        let bytes = s.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            match (bytes[i], hex) {
                (b'+', _) => out.push(b' '),
                (b'%', Some(b)) => {
                    out.push(b);
                    i += 2;
                }
                (b, _) => out.push(b),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    };
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn client(url: &str, timeout: Duration, retries: u32) -> PrometheusClient {
    match PrometheusClient::new(url, Auth::None, BTreeMap::new(), false, timeout, retries) {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    }
}

fn client_with(url: &str, auth: Auth) -> PrometheusClient {
    match PrometheusClient::new(url, auth, BTreeMap::new(), false, Duration::from_secs(2), 0) {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    }
}

fn bind() -> TcpListener {
    match TcpListener::bind("127.0.0.1:0") {
        Ok(l) => l,
        Err(e) => panic!("bind: {e}"),
    }
}

fn local_addr(l: &TcpListener) -> SocketAddr {
    match l.local_addr() {
        Ok(a) => a,
        Err(e) => panic!("{e}"),
    }
}

fn free_port() -> u16 {
    local_addr(&bind()).port()
}

fn temp_dir(what: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let dir = std::env::temp_dir().join(format!("aviary-{what}-{}-{nanos}", std::process::id()));
    if let Err(e) = std::fs::create_dir_all(&dir) {
        panic!("{}: {e}", dir.display());
    }
    dir
}

fn write(path: &Path, text: &str) {
    if let Err(e) = std::fs::write(path, text) {
        panic!("{}: {e}", path.display());
    }
}

// =============================================================================================
// The whole loop: `aviary rollout` judging a canary by Prometheus data from real traffic.

/// A rollout with a good version promotes and with a bad one (20% 5xx) rolls back, judged by the
/// built-in success rate that a real Prometheus computes from workloads under real load.
#[test]
fn rollouts_are_judged_by_prometheus() {
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => panic!("{e}"),
    };
    let c = common::cluster();
    let pod = Identity {
        namespace: "test",
        workload: "podinfo",
        pod: "podinfo-5d7f8b9c6d-x7k2p",
        cluster: "test-podinfo-canaryupstream-9898_test",
        ingress: "podinfo",
        canary_upstream: "test-podinfo-canaryupstream-9898",
    };
    let canary = c.write(
        "canary.yaml",
        "apiVersion: aviary.dev/v1alpha1
kind: Canary
metadata:
  name: podinfo
  namespace: test
spec:
  provider: gatewayapi
  targetRef: {apiVersion: apps/v1, kind: Deployment, name: podinfo}
  service:
    port: 9898
    gatewayRefs: [{name: public, namespace: gateway-system}]
  analysis:
    interval: 2s
    threshold: 2
    maxWeight: 50
    stepWeight: 50
    metrics:
      - name: request-success-rate
        interval: 10s
        thresholdRange: {min: 99}
",
    );
    c.apply_target("podinfo:1", 2);
    common::code(&c.run(&canary));

    let judged = |version: &str, behaviour: Behaviour| -> std::process::Output {
        let workload = start_workload(pod.clone(), behaviour);
        let labels = workload.target_labels();
        let prometheus = rt.block_on(start_prometheus(&[("podinfo", workload.addr, &labels)]));
        let _load = Load::start(vec![workload.addr], 100_000, Duration::from_secs(90));
        // Let a few scrapes land so the 10s rate has data.
        std::thread::sleep(Duration::from_secs(3));
        c.apply_target(version, 2);
        let mut cmd = c.aviary(&canary, &[]);
        cmd.arg("--prometheus-url").arg(&prometheus.url);
        let out = match cmd.output() {
            Ok(o) => o,
            Err(e) => panic!("{e}"),
        };
        drop(prometheus);
        out
    };

    let good = judged(
        "podinfo:2",
        Behaviour {
            error_every: None,
            fast_ms: 20.0,
            slow_ms: 20.0,
        },
    );
    assert_eq!(common::code(&good), 0, "{}", common::stderr(&good));
    assert!(common::stderr(&good).contains("verdict: promoted"));

    let bad = judged(
        "podinfo:3",
        Behaviour {
            error_every: Some(5),
            fast_ms: 20.0,
            slow_ms: 20.0,
        },
    );
    let err = common::stderr(&bad);
    assert_eq!(common::code(&bad), 1, "{err}");
    assert!(
        err.contains("Halt podinfo.test advancement success rate") && err.contains("% < 99%"),
        "{err}"
    );
    assert!(
        err.contains("Rolling back podinfo.test failed checks threshold reached 2"),
        "{err}"
    );
    let primary = c.get("apps/v1", "deployments", "podinfo-primary");
    assert_eq!(common::image(&primary), "podinfo:2");
}

// =============================================================================================
// The statistical judge, fed by range and instant queries.

const JUDGED: &str = "apiVersion: aviary.dev/v1alpha1
kind: Canary
metadata:
  name: podinfo
  namespace: test
spec:
  provider: gatewayapi
  targetRef: {apiVersion: apps/v1, kind: Deployment, name: podinfo}
  service:
    port: 9898
  analysis:
    interval: 1m
    stepWeight: 10
    judge:
      window: 10m
      step: 30s
      metrics:
        - name: p99-latency
          kind: latency
          query: 'histogram_quantile(0.99, sum(rate(http_request_duration_seconds_bucket{pod=~\"{{ workload }}-.*\"}[1m])) by (le))'
        - name: errors
          kind: error-rate
          errorsQuery: 'sum(increase(http_requests_total{pod=~\"{{ workload }}-.*\",code=~\"5..\"}[{{ interval }}]))'
          totalQuery: 'sum(increase(http_requests_total{pod=~\"{{ workload }}-.*\"}[{{ interval }}]))'
";

/// A Prometheus stand-in answering range queries with `latency(workload)` per step and instant
/// queries with error and request counts, the workload read from the query.
fn judged_prometheus(canary_latency: f64, canary_errors: u64) -> String {
    let (url, _) = fake(move |_, (target, _)| {
        let primary = target.contains("podinfo-primary");
        if target.starts_with("/api/v1/query_range") {
            let base = if primary { 0.200 } else { canary_latency };
            let values: Vec<serde_json::Value> = (0..20)
                .map(|i| {
                    json!([
                        1_700_000_000 + i * 30,
                        format!("{}", base + (i % 5) as f64 * 0.001)
                    ])
                })
                .collect();
            let body = json!({"status": "success", "data": {"resultType": "matrix",
                "result": [{"metric": {}, "values": values}]}});
            return Reply::Answer(200, body.to_string());
        }
        let value =
            if target.contains("code%3D~") || target.contains("code=~") || target.contains("5..") {
                if primary {
                    10
                } else {
                    canary_errors
                }
            } else {
                2_000
            };
        let body = json!({"status": "success", "data": {"resultType": "vector",
            "result": [{"metric": {}, "value": [1_700_000_000, value.to_string()]}]}});
        Reply::Answer(200, body.to_string())
    });
    url
}

#[tokio::test]
async fn the_judge_scores_canary_against_primary() {
    let docs = decode(JUDGED);
    let canary = find_canary(&docs, "podinfo");
    let config = aviary_core::engine::Config::from_canary(&canary, &Provider::GatewayApi);
    let last = config.metrics.last().map(|m| (m.name.clone(), m.kind));
    assert_eq!(
        last,
        Some(("judge".to_string(), aviary_core::engine::MetricKind::Judge))
    );

    let score = |url: String| {
        let canary = canary.clone();
        async move {
            let evaluator = Evaluator::new(
                &canary,
                &Provider::GatewayApi,
                Vec::new(),
                None,
                Some(url),
                Auth::None,
            );
            evaluator.evaluate("judge").await
        }
    };
    // Same latency and error rate as the primary: 100.
    assert_value(
        score(judged_prometheus(0.200, 10)).await,
        100.0,
        0.001,
        "healthy canary",
    );
    // 50% slower: the latency metric is high, half the weight fails.
    assert_value(
        score(judged_prometheus(0.300, 10)).await,
        50.0,
        0.001,
        "slow canary",
    );
    // Slower and 10x the errors: nothing passes.
    assert_value(
        score(judged_prometheus(0.300, 100)).await,
        0.0,
        0.001,
        "broken canary",
    );
}
