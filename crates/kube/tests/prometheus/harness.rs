//! The harness of the Prometheus tests, shared by aviary-kube's metrics tests
//! (`crates/kube/tests/prometheus.rs`) and the binary's end-to-end test of a rollout judged by
//! Prometheus (`tests/prometheus.rs`, which includes this file by its path): small HTTP workloads
//! on loopback exposing the metric families Flagger's queries read, load against them, a real
//! Prometheus scraping them, and the loopback plumbing.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aviary_kube::metrics::{Auth, PrometheusClient};
use tempfile::TempDir;

// =============================================================================================
// Workloads.

/// Who a workload is, in the labels of each metric family.
#[derive(Clone)]
pub struct Identity {
    pub namespace: &'static str,
    /// Istio's `destination_workload`.
    pub workload: &'static str,
    /// `kubernetes_pod_name`, attached by the scrape config.
    pub pod: &'static str,
    /// Gloo's `envoy_cluster_name`.
    pub cluster: &'static str,
    /// ingress-nginx's `ingress` and `canary` labels (`canary` empty for the primary's traffic).
    pub ingress: &'static str,
    pub canary_upstream: &'static str,
}

/// How a workload answers: every `error_every`-th request fails with 500 and takes `slow_ms`;
/// the others take `fast_ms`.
#[derive(Clone, Copy)]
pub struct Behaviour {
    pub error_every: Option<u64>,
    pub fast_ms: f64,
    pub slow_ms: f64,
}

#[derive(Default)]
pub struct Counts {
    ok: u64,
    failed: u64,
}

pub struct Workload {
    pub id: Identity,
    pub addr: SocketAddr,
    pub counts: Arc<Mutex<Counts>>,
}

impl Workload {
    /// `(ok, failed)` requests served so far.
    pub fn served(&self) -> (u64, u64) {
        match self.counts.lock() {
            Ok(c) => (c.ok, c.failed),
            Err(e) => panic!("{e}"),
        }
    }

    /// The labels a Kubernetes scrape config would attach to the pod's metrics.
    pub fn target_labels(&self) -> [(&'static str, &'static str); 2] {
        [
            ("kubernetes_namespace", self.id.namespace),
            ("kubernetes_pod_name", self.id.pod),
        ]
    }
}

pub const ISTIO_BUCKETS_MS: [f64; 13] = [
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0,
];
pub const HTTP_BUCKETS_S: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

pub fn start_workload(id: Identity, behaviour: Behaviour) -> Workload {
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

pub fn serve_workload(stream: TcpStream, id: &Identity, b: Behaviour, counts: &Mutex<Counts>) {
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
pub fn exposition(id: &Identity, b: Behaviour, ok: u64, failed: u64) -> String {
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
pub struct Load {
    pub stop: Arc<AtomicBool>,
    pub sent: Arc<AtomicUsize>,
}

impl Load {
    pub fn start(targets: Vec<SocketAddr>, limit: usize, max: Duration) -> Load {
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

pub struct Prometheus {
    pub child: Child,
    /// Its configuration, log and data, removed when it is dropped.
    pub dir: TempDir,
    pub url: String,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn prometheus_binary() -> PathBuf {
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
pub type Job<'a> = (&'a str, SocketAddr, &'a [(&'a str, &'a str)]);

/// Starts Prometheus on a free loopback port, scraping each job every second, and waits until it
/// answers queries.
pub async fn start_prometheus(jobs: &[Job<'_>]) -> Prometheus {
    start_prometheus_in(jobs, None).await
}

/// Starts Prometheus, scraping nothing, over a TSDB backfilled (`promtool tsdb
/// create-blocks-from openmetrics`) with `openmetrics`: samples with explicit timestamps, so a
/// test can give a release a history of any length without waiting for it.
pub async fn start_prometheus_with_history(openmetrics: &str) -> Prometheus {
    start_prometheus_in(&[], Some(openmetrics)).await
}

async fn start_prometheus_in(jobs: &[Job<'_>], history: Option<&str>) -> Prometheus {
    let binary = prometheus_binary();
    let dir = match tempfile::Builder::new()
        .prefix("aviary-prometheus-")
        .tempdir()
    {
        Ok(d) => d,
        Err(e) => panic!("cannot create a temporary directory: {e}"),
    };
    if let Some(history) = history {
        let input = dir.path().join("history.om");
        write(&input, history);
        let promtool = binary.with_file_name("promtool");
        let out = Command::new(&promtool)
            .args(["tsdb", "create-blocks-from", "openmetrics"])
            .arg(&input)
            .arg(dir.path().join("data"))
            .output();
        match out {
            Ok(o) if o.status.success() => {}
            Ok(o) => panic!(
                "promtool could not backfill: {}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            ),
            Err(e) => panic!("cannot run {}: {e}", promtool.display()),
        }
    }
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
    let config_path = dir.path().join("prometheus.yml");
    write(&config_path, &config);
    let port = free_port();
    let log = match std::fs::File::create(dir.path().join("prometheus.log")) {
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
            dir.path().join("data").display()
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
                let log = std::fs::read_to_string(prometheus.dir.path().join("prometheus.log"))
                    .unwrap_or_default();
                panic!("prometheus did not come up: {e}\n{log}");
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    prometheus
}

// =============================================================================================
// Loopback plumbing.

pub fn read_head(stream: &TcpStream) -> Option<(String, BTreeMap<String, String>)> {
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

pub fn respond(stream: &TcpStream, status: u16, content_type: &str, body: &str) {
    let mut w = stream;
    let _ = write!(
        w,
        "HTTP/1.1 {status} X\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = w.flush();
}

/// One plain GET; the status code, or `None` when the request failed.
pub fn get(addr: SocketAddr, path: &str) -> Option<u16> {
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

pub fn client(url: &str, timeout: Duration, retries: u32) -> PrometheusClient {
    match PrometheusClient::new(url, Auth::None, BTreeMap::new(), false, timeout, retries) {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    }
}

pub fn bind() -> TcpListener {
    match TcpListener::bind("127.0.0.1:0") {
        Ok(l) => l,
        Err(e) => panic!("bind: {e}"),
    }
}

pub fn local_addr(l: &TcpListener) -> SocketAddr {
    match l.local_addr() {
        Ok(a) => a,
        Err(e) => panic!("{e}"),
    }
}

pub fn free_port() -> u16 {
    local_addr(&bind()).port()
}

pub fn write(path: &Path, text: &str) {
    if let Err(e) = std::fs::write(path, text) {
        panic!("{}: {e}", path.display());
    }
}
