//! `cargo bench --bench rollout [-- --n 1,10,50,200 --bad 20 --interval 2s --steps 10,50]`: what
//! a release of many canaries at once costs (issue 17).
//!
//! For each N: an in-process API emulator, N Deployments and N Canaries (provider `gatewayapi`,
//! the built-in `request-success-rate` with `thresholdRange.min: 99`) in one multi-document
//! file, and a local server speaking Prometheus' query API (`/api/v1/query`) that answers each
//! canary from its name in the query: 100 for a good canary, 50 for a bad one, 1 for anything
//! else (`vector(1)`). The release binary bootstraps every canary once (`aviary rollout -f FILE`),
//! every Deployment gets a new image, and the second `aviary rollout -f FILE` is measured:
//!
//! * wall ÷ schedule: the wall time of that process (start to exit) over the schedule, which is
//!   `aviary plan --json`'s `min_completion_s` (from the first tick that sees the new revision to
//!   the Succeeded tick) for a release that promotes, its `min_rollback_s` for one that rolls back
//!   under all-or-nothing (the first failure ends it), the larger of the two under `independent`
//!   with bad canaries; goal ≤ 1.02;
//! * peak RSS of the `aviary` process (its `VmHWM`, read every 10 ms); goal ≤ 30 MB + 0.5 MB
//!   per canary;
//! * API requests per canary per tick: every request the emulator logged during the release ÷ N ÷
//!   the planned ticks (schedule ÷ interval + 1: the first tick is at 0);
//! * metric queries per canary per tick: every query the Prometheus server answered, likewise.
//!
//! Then one release of `--bad` canaries (default 20) with 10% of them bad (`c009`, `c019`, ...),
//! under `all-or-nothing` and under `independent`: its verdict, exit code, the canaries
//! promoted / rolled back, and whether every canary ended with all its traffic on its primary.
//!
//! Each canary lives in a namespace of its own (`--shared-namespace`: all in `test`): the
//! emulator's deployment controller, when a Deployment or a ReplicaSet or Pod of its namespace
//! changed, works with a copy of every ReplicaSet and Pod of that namespace, so canaries sharing
//! a namespace cost it quadratically, and past a few dozen canaries on two cores the wall time
//! would measure the emulator, not aviary (the CPU column says so).
//!
//! `cargo bench` builds the `aviary` binary (release settings) first and the bench runs it
//! (`CARGO_BIN_EXE_aviary`; `AVIARY_BENCH_BIN` runs another build). Prints a Markdown table;
//! `--breakdown` adds the API requests by method and resource per canary per tick; `--keep`
//! keeps each run's directory: its files, the release's log (`--log LEVEL`: JSON, with
//! timestamps) and `requests.txt`, every API request of the release in the order answered
//! (when it came in, in ms from the first, how long it took to answer, in µs, and the size of
//! its body, in bytes).

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kube_emulator::{Config, Emulator};
use serde_json::{json, Value};

/// The namespace of every canary with `--shared-namespace`, and the kubeconfig's.
const SHARED_NS: &str = "test";

fn aviary() -> PathBuf {
    std::env::var_os("AVIARY_BENCH_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_aviary")))
}

/// The bench's options.
struct Options {
    sizes: Vec<usize>,
    /// N of the releases with 10% bad canaries; 0: none.
    bad_n: usize,
    /// `analysis.interval`, e.g. `2s`.
    interval: String,
    step_weight: u32,
    max_weight: u32,
    breakdown: bool,
    /// Keep each release's directory (kubeconfig, Canary file, logs, reports) and say where.
    keep: bool,
    /// `AVIARY_LOG` for the releases (with JSON logs, which have timestamps).
    log: Option<String>,
    /// Every canary in one namespace (default: each in a namespace of its own).
    shared_namespace: bool,
}

impl Options {
    fn parse() -> Options {
        let mut o = Options {
            sizes: vec![1, 10, 50, 200],
            bad_n: 20,
            interval: "2s".to_string(),
            step_weight: 10,
            max_weight: 50,
            breakdown: false,
            keep: false,
            log: None,
            shared_namespace: false,
        };
        let mut args = std::env::args().skip(1);
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--n" => {
                    o.sizes = args
                        .next()
                        .unwrap_or_default()
                        .split(',')
                        .filter_map(|n| n.trim().parse().ok())
                        .collect()
                }
                "--bad" => o.bad_n = args.next().and_then(|v| v.parse().ok()).unwrap_or(0),
                "--interval" => o.interval = args.next().unwrap_or(o.interval),
                "--steps" => {
                    let v = args.next().unwrap_or_default();
                    let mut parts = v.split(',').filter_map(|p| p.trim().parse().ok());
                    o.step_weight = parts.next().unwrap_or(o.step_weight);
                    o.max_weight = parts.next().unwrap_or(o.max_weight);
                }
                "--breakdown" => o.breakdown = true,
                "--keep" => o.keep = true,
                "--log" => o.log = args.next(),
                "--shared-namespace" => o.shared_namespace = true,
                _ => {} // cargo bench passes --bench
            }
        }
        o
    }

    /// The namespace of the canary `name` (and of its Deployments).
    fn ns(&self, name: &str) -> String {
        if self.shared_namespace {
            SHARED_NS.to_string()
        } else {
            name.to_string()
        }
    }
}

// ---------------------------------------------------------------------------------------------
// A Prometheus that answers per canary.

/// A local server speaking Prometheus' instant-query API (`GET`/`POST /api/v1/query`).
struct Prometheus {
    url: String,
    /// Every query answered.
    queries: Arc<AtomicUsize>,
    /// The canaries whose success rate is 50 (the others' is 100).
    bad: Arc<Mutex<HashSet<String>>>,
}

impl Prometheus {
    fn start() -> Prometheus {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the Prometheus server");
        let url = format!(
            "http://{}",
            listener.local_addr().expect("the server's address")
        );
        let queries = Arc::new(AtomicUsize::new(0));
        let bad = Arc::new(Mutex::new(HashSet::new()));
        let (q, b) = (queries.clone(), bad.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (q, b) = (q.clone(), b.clone());
                std::thread::spawn(move || serve(stream, &q, &b));
            }
        });
        Prometheus { url, queries, bad }
    }

    fn set_bad(&self, names: &[String]) {
        if let Ok(mut bad) = self.bad.lock() {
            bad.clear();
            bad.extend(names.iter().cloned());
        }
    }
}

/// Answers the requests of one (keep-alive) connection.
fn serve(stream: TcpStream, queries: &AtomicUsize, bad: &Mutex<HashSet<String>>) {
    let Ok(read_half) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(read_half);
    let mut writer = stream;
    loop {
        let mut head = String::new();
        if reader.read_line(&mut head).unwrap_or(0) == 0 {
            return;
        }
        let mut parts = head.split_whitespace();
        let method = parts.next().unwrap_or("").to_string();
        let target = parts.next().unwrap_or("").to_string();
        let mut length = 0usize;
        let mut close = false;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let l = line.trim().to_ascii_lowercase();
            if let Some(v) = l.strip_prefix("content-length:") {
                length = v.trim().parse().unwrap_or(0);
            }
            if l == "connection: close" {
                close = true;
            }
            if l.is_empty() {
                break;
            }
        }
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let (path, query) = target.split_once('?').unwrap_or((target.as_str(), ""));
        let form = if method == "POST" {
            String::from_utf8_lossy(&body).into_owned()
        } else {
            query.to_string()
        };
        let (status, text) = if path.ends_with("/api/v1/query") {
            queries.fetch_add(1, Ordering::Relaxed);
            let promql = form_value(&form, "query").unwrap_or_default();
            let value = match canary_of(&promql) {
                Some(name) if bad.lock().map(|b| b.contains(&name)).unwrap_or(false) => "50",
                Some(_) => "100",
                None => "1",
            };
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0);
            let answer = json!({"status": "success", "data": {"resultType": "vector",
                "result": [{"metric": {}, "value": [now, value]}]}});
            ("200 OK", answer.to_string())
        } else {
            (
                "404 Not Found",
                r#"{"status":"error","error":"not found"}"#.to_string(),
            )
        };
        let written = write!(
            writer,
            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{text}",
            text.len()
        );
        if written.is_err() || close {
            return;
        }
    }
}

/// The canary a built-in query of the `gatewayapi` provider is about: the target in
/// `kubernetes_pod_name=~"<target>-[0-9a-zA-Z]+(-[0-9a-zA-Z]+)"`.
fn canary_of(promql: &str) -> Option<String> {
    let rest = promql.split_once("kubernetes_pod_name=~\"")?.1;
    let name: String = rest
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric())
        .collect();
    (!name.is_empty()).then_some(name)
}

/// The decoded value of `key` in an `application/x-www-form-urlencoded` string.
fn form_value(form: &str, key: &str) -> Option<String> {
    form.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(k) == key).then(|| percent_decode(v))
    })
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

// ---------------------------------------------------------------------------------------------
// The cluster and the canaries.

fn names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("c{i:03}")).collect()
}

/// 10% of the canaries, spread out: `c009`, `c019`, ...
fn bad_names(n: usize) -> Vec<String> {
    (0..n)
        .filter(|i| i % 10 == 9)
        .map(|i| format!("c{i:03}"))
        .collect()
}

fn deployment(o: &Options, name: &str, image: &str) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": o.ns(name), "labels": {"app": name}},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [container(name, image)]}
            }
        }
    })
}

fn container(name: &str, image: &str) -> Value {
    json!({"name": name, "image": image, "ports": [{"containerPort": 9898, "name": "http"}]})
}

fn canaries(names: &[String], o: &Options) -> String {
    names
        .iter()
        .map(|name| {
            format!(
                "apiVersion: aviary.dev/v1alpha1
kind: Canary
metadata:
  name: {name}
  namespace: {ns}
spec:
  provider: gatewayapi
  targetRef: {{apiVersion: apps/v1, kind: Deployment, name: {name}}}
  progressDeadlineSeconds: 60
  service:
    port: 9898
    gatewayRefs: [{{name: public, namespace: gateway-system}}]
  analysis:
    interval: {interval}
    threshold: 2
    maxWeight: {max}
    stepWeight: {step}
    metrics:
      - name: request-success-rate
        thresholdRange: {{min: 99}}
        interval: 1m
",
                ns = o.ns(name),
                interval = o.interval,
                max = o.max_weight,
                step = o.step_weight,
            )
        })
        .collect::<Vec<_>>()
        .join("---\n")
}

/// `kubectl patch --type merge` of a Deployment's image, over plain HTTP to the emulator.
fn set_image(emu: &Emulator, o: &Options, name: &str, image: &str) -> Result<(), String> {
    let ns = o.ns(name);
    let url = emu.url();
    let addr = url.trim_start_matches("http://");
    let body = json!({"spec": {"template": {"spec": {"containers": [container(name, image)]}}}})
        .to_string();
    let mut stream = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    write!(
        stream,
        "PATCH /apis/apps/v1/namespaces/{ns}/deployments/{name} HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer emulator-token\r\ncontent-type: application/merge-patch+json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .map_err(|e| e.to_string())?;
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    if answer.starts_with("HTTP/1.1 200") {
        Ok(())
    } else {
        Err(format!(
            "patch {name}: {}",
            answer.lines().next().unwrap_or("no answer")
        ))
    }
}

/// The canary backend's weight in the HTTPRoute of `name`.
fn canary_weight(emu: &Emulator, o: &Options, name: &str) -> i64 {
    emu.get(
        "gateway.networking.k8s.io/v1",
        "httproutes",
        Some(&o.ns(name)),
        name,
    )
    .and_then(|route| {
        route["spec"]["rules"][0]["backendRefs"]
            .as_array()
            .and_then(|b| b.iter().find(|b| b["name"] == format!("{name}-canary")))
            .and_then(|b| b["weight"].as_i64())
    })
    .unwrap_or(-1)
}

fn primary_image(emu: &Emulator, o: &Options, name: &str) -> String {
    emu.get(
        "apps/v1",
        "deployments",
        Some(&o.ns(name)),
        &format!("{name}-primary"),
    )
    .and_then(|d| {
        d["spec"]["template"]["spec"]["containers"][0]["image"]
            .as_str()
            .map(str::to_string)
    })
    .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// Running aviary.

/// How one `aviary` process ended.
struct Exit {
    code: i32,
    wall: Duration,
    /// `VmHWM`, KiB.
    peak_rss_kib: u64,
    /// User + system CPU time of the process.
    cpu: Duration,
}

fn cpu_of(usage: &libc::rusage) -> Duration {
    let tv = |t: libc::timeval| {
        Duration::from_secs(u64::try_from(t.tv_sec).unwrap_or(0))
            + Duration::from_micros(u64::try_from(t.tv_usec).unwrap_or(0))
    };
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// The CPU time this process (the emulator, the Prometheus server, the bench) used so far.
fn own_cpu() -> Duration {
    // SAFETY: `rusage` is plain data that getrusage fills in.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer to the local above.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return Duration::ZERO;
    }
    cpu_of(&usage)
}

/// Runs `cmd` to its end: exit code, wall time, peak RSS and CPU time.
///
/// The peak RSS is the process's `VmHWM` (`/proc/PID/status`), read every 10 ms until it exits:
/// `wait4`'s `ru_maxrss` cannot be used, as Linux carries the parent's high-water mark across
/// the fork and exec into the child's (it would report this process's size: the emulator's).
fn run_measured(cmd: &mut Command, log: &Path) -> Result<Exit, String> {
    let err = std::fs::File::create(log).map_err(|e| e.to_string())?;
    let started = Instant::now();
    let child = cmd
        .stdout(Stdio::null())
        .stderr(err)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", aviary().display()))?;
    let pid = libc::pid_t::try_from(child.id()).map_err(|e| e.to_string())?;
    let status_file = format!("/proc/{pid}/status");
    let mut peak_rss_kib = 0u64;
    let mut status: libc::c_int = 0;
    // SAFETY: `rusage` is plain data that wait4 fills in; the pid is our own child, reaped here
    // (the `Child` handle is never waited on after this).
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let reaped = loop {
        if let Ok(text) = std::fs::read_to_string(&status_file) {
            if let Some(kib) = text
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            {
                peak_rss_kib = peak_rss_kib.max(kib);
            }
        }
        // SAFETY: valid pointers to the locals above.
        let r = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
        match r {
            0 => std::thread::sleep(Duration::from_millis(10)),
            -1 if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted => {}
            r => break r,
        }
    };
    let wall = started.elapsed();
    drop(child);
    if reaped != pid {
        return Err(format!("wait4: {}", std::io::Error::last_os_error()));
    }
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -1
    };
    Ok(Exit {
        code,
        wall,
        peak_rss_kib,
        cpu: cpu_of(&usage),
    })
}

/// The last lines of a log (each cut at 300 characters), for an error message.
fn tail(log: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let all: Vec<String> = text
        .lines()
        .map(|l| match l.char_indices().nth(300) {
            Some((cut, _)) => format!("{} …", &l[..cut]),
            None => l.to_string(),
        })
        .collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// The plan of one canary of the file: (schedule to promotion, to rollback, interval), seconds.
fn plan(file: &Path) -> Result<(f64, f64, f64), String> {
    let out = Command::new(aviary())
        .args(["plan", "--json", "--name", "c000", "-f"])
        .arg(file)
        .output()
        .map_err(|e| e.to_string())?;
    let plan: Value = serde_json::from_slice(&out.stdout).map_err(|e| {
        format!(
            "aviary plan --json: {e}: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    let secs = |key: &str| {
        plan[key]
            .as_f64()
            .ok_or(format!("no {key} in the plan: {plan}"))
    };
    Ok((
        secs("min_completion_s")?,
        secs("min_rollback_s")?,
        secs("interval_s")?,
    ))
}

/// One release measured.
struct Run {
    n: usize,
    bad: usize,
    policy: &'static str,
    bootstrap_s: f64,
    wall_s: f64,
    schedule_s: f64,
    ticks: f64,
    peak_rss_kib: u64,
    /// CPU seconds of the aviary process, and of this process (the emulator) meanwhile.
    aviary_cpu_s: f64,
    emulator_cpu_s: f64,
    api_requests: usize,
    queries: usize,
    code: i32,
    verdict: String,
    promoted: usize,
    rolled_back: usize,
    /// Canaries with another verdict (`failed`: the run gave up on an error).
    other: usize,
    /// Canaries whose HTTPRoute sends no traffic to the canary at the end.
    on_primary: usize,
    /// Canaries whose primary runs what their verdict says (`:2` promoted, `:1` rolled back).
    primary_as_verdict: usize,
    /// API requests by `METHOD resource`.
    by_kind: BTreeMap<String, usize>,
}

impl Run {
    fn overhead(&self) -> f64 {
        self.wall_s / self.schedule_s
    }

    fn rss_goal_mib(&self) -> f64 {
        30.0 + 0.5 * self.n as f64
    }

    fn per_canary_tick(&self, count: usize) -> f64 {
        count as f64 / self.n as f64 / self.ticks
    }
}

/// The resource of an API path: `/apis/apps/v1/namespaces/test/deployments/x` → `deployments`.
fn resource(path: &str) -> String {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    match parts.iter().position(|p| *p == "namespaces") {
        Some(i) if parts.len() > i + 2 => parts[i + 2].to_string(),
        Some(_) => "namespaces".to_string(),
        None => parts.last().copied().unwrap_or("").to_string(),
    }
}

fn release(
    n: usize,
    bad: bool,
    policy: &'static str,
    o: &Options,
    prom: &Prometheus,
) -> Result<Run, String> {
    let emu = Emulator::start_blocking(Config {
        deployment_ready_delay: Duration::from_millis(100),
        namespaces: ["default", SHARED_NS]
            .iter()
            .map(|n| n.to_string())
            .chain(names(n).iter().filter(|_| !o.shared_namespace).cloned())
            .collect(),
        ..Config::default()
    })
    .map_err(|e| format!("emulator: {e}"))?;
    let dir = tempfile::Builder::new()
        .prefix("aviary-bench-rollout-")
        .tempdir()
        .map_err(|e| e.to_string())?;
    let kubeconfig = dir.path().join("kubeconfig");
    emu.write_kubeconfig(&kubeconfig, SHARED_NS)
        .map_err(|e| e.to_string())?;
    let all = names(n);
    for name in &all {
        emu.insert(deployment(o, name, &format!("{name}:1")))?;
    }
    let file = dir.path().join("canaries.yaml");
    std::fs::write(&file, canaries(&all, o)).map_err(|e| e.to_string())?;
    let (to_promotion, to_rollback, interval) = plan(&file)?;
    let bad_set = if bad { bad_names(n) } else { Vec::new() };
    prom.set_bad(&bad_set);
    let schedule_s = match (bad_set.is_empty(), policy) {
        (true, _) => to_promotion,
        (false, "all-or-nothing") => to_rollback,
        (false, _) => to_promotion.max(to_rollback),
    };
    let limit = format!("{}s", (schedule_s * 4.0 + 120.0).ceil());
    let rollout = |report: &Path| {
        let mut cmd = Command::new(aviary());
        cmd.args(["rollout", "-f"])
            .arg(&file)
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args(["--request-timeout", "10s", "--timeout", &limit])
            .args(["--prometheus-url", &prom.url, "--verdict-policy", policy])
            .arg("--report")
            .arg(report)
            .env_remove("AVIARY_LOG")
            .env_remove("AVIARY_LOG_FORMAT")
            .env_remove("KUBECONFIG")
            .env_remove("GITHUB_RUN_ID")
            .env_remove("GITHUB_REPOSITORY")
            .env_remove("GITHUB_OUTPUT")
            .env_remove("GITHUB_STEP_SUMMARY");
        if let Some(level) = &o.log {
            cmd.env("AVIARY_LOG", level)
                .env("AVIARY_LOG_FORMAT", "json");
        }
        cmd
    };

    // Every canary bootstraps its primary from `:1`.
    let log = dir.path().join("bootstrap.log");
    let report = dir.path().join("bootstrap.json");
    let boot = run_measured(&mut rollout(&report), &log)?;
    if boot.code != 0 {
        return Err(format!(
            "N={n}: the bootstrap exited {}:\n{}",
            boot.code,
            tail(&log, 20)
        ));
    }
    // Then every Deployment gets `:2` (eight requests at a time: a busy emulator answers them
    // between its controller passes).
    let emu_ref = &emu;
    for chunk in all.chunks(8) {
        std::thread::scope(|scope| {
            let patches: Vec<_> = chunk
                .iter()
                .map(|name| scope.spawn(move || set_image(emu_ref, o, name, &format!("{name}:2"))))
                .collect();
            patches
                .into_iter()
                .try_for_each(|p| p.join().unwrap_or_else(|_| Err("a patch panicked".into())))
        })?;
    }
    emu.clear_requests();
    prom.queries.store(0, Ordering::SeqCst);
    let log = dir.path().join("release.log");
    let report_path = dir.path().join("release.json");
    let emulator_cpu = own_cpu();
    let exit = run_measured(&mut rollout(&report_path), &log)?;
    let emulator_cpu = own_cpu().saturating_sub(emulator_cpu);
    let queries = prom.queries.load(Ordering::SeqCst);
    let requests = emu.requests();
    if o.keep {
        // In the order the emulator answered them, for a look at where a release's time goes:
        // when each came in (ms from the first) and how long it took to answer (µs).
        let first = requests.first().map(|r| r.received);
        let lines: String = requests
            .iter()
            .map(|r| {
                let at = first.map_or(0.0, |f| {
                    r.received.saturating_duration_since(f).as_secs_f64() * 1e3
                });
                let took = r.took.as_micros();
                let size = r.body.as_ref().map_or(0, |b| b.to_string().len());
                format!(
                    "{at:.1} {took} {} {} {} {size}\n",
                    r.status, r.method, r.path
                )
            })
            .collect();
        std::fs::write(dir.path().join("requests.txt"), lines).map_err(|e| e.to_string())?;
    }
    let mut by_kind = BTreeMap::new();
    for r in &requests {
        *by_kind
            .entry(format!("{} {}", r.method, resource(&r.path)))
            .or_insert(0) += 1;
    }
    let report: Value = std::fs::read_to_string(&report_path)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(Value::Null);
    // A file of one Canary is a rollout of one: its report has no `canaries`.
    let members = match report["canaries"].as_array() {
        Some(all) => Some(all.clone()),
        None if report["canary"].is_string() => Some(vec![report.clone()]),
        None => None,
    };
    let verdicts: Vec<(String, String)> = members
        .map(|all| {
            all.iter()
                .map(|r| {
                    (
                        r["canary"]
                            .as_str()
                            .unwrap_or("")
                            .split('.')
                            .next()
                            .unwrap_or("")
                            .to_string(),
                        r["verdict"].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    if verdicts.len() != n {
        return Err(format!(
            "N={n}: the report has {} canaries (exit {}):\n{}",
            verdicts.len(),
            exit.code,
            tail(&log, 30)
        ));
    }
    let promoted = verdicts.iter().filter(|(_, v)| v == "promoted").count();
    let rolled_back = verdicts.iter().filter(|(_, v)| v == "rolled_back").count();
    let on_primary = all
        .iter()
        .filter(|c| canary_weight(&emu, o, c) == 0)
        .count();
    let primary_as_verdict = verdicts
        .iter()
        .filter(|(c, v)| {
            let image = primary_image(&emu, o, c);
            match v.as_str() {
                "promoted" => image == format!("{c}:2"),
                "rolled_back" => image == format!("{c}:1"),
                _ => false,
            }
        })
        .count();
    if bad_set.is_empty() && exit.code != 0 {
        eprintln!(
            "N={n}: the release exited {}; the end of its log:\n{}",
            exit.code,
            tail(&log, 8)
        );
    }
    if o.keep {
        eprintln!("  kept {}", dir.keep().display());
    }
    Ok(Run {
        n,
        bad: bad_set.len(),
        policy,
        bootstrap_s: boot.wall.as_secs_f64(),
        wall_s: exit.wall.as_secs_f64(),
        schedule_s,
        ticks: schedule_s / interval + 1.0,
        peak_rss_kib: exit.peak_rss_kib,
        aviary_cpu_s: exit.cpu.as_secs_f64(),
        emulator_cpu_s: emulator_cpu.as_secs_f64(),
        api_requests: requests.len(),
        queries,
        code: exit.code,
        verdict: report["verdict"].as_str().unwrap_or("?").to_string(),
        promoted,
        rolled_back,
        other: n - promoted - rolled_back,
        on_primary,
        primary_as_verdict,
        by_kind,
    })
}

fn main() {
    let o = Options::parse();
    let prom = Prometheus::start();
    let started = Instant::now();
    let mut runs = Vec::new();
    let mut scenarios: Vec<(usize, bool, &'static str)> = o
        .sizes
        .iter()
        .map(|n| (*n, false, "all-or-nothing"))
        .collect();
    if o.bad_n > 0 {
        scenarios.push((o.bad_n, true, "all-or-nothing"));
        scenarios.push((o.bad_n, true, "independent"));
    }
    for (n, bad, policy) in scenarios {
        eprintln!("N={n}{} ({policy}) ...", if bad { ", 10% bad" } else { "" });
        match release(n, bad, policy, &o, &prom) {
            Ok(run) => {
                eprintln!(
                    "  {:.1} s (schedule {:.1} s, bootstrap {:.1} s), exit {}, CPU aviary {:.1} s, emulator {:.1} s",
                    run.wall_s,
                    run.schedule_s,
                    run.bootstrap_s,
                    run.code,
                    run.aviary_cpu_s,
                    run.emulator_cpu_s
                );
                runs.push(run);
            }
            Err(e) => eprintln!("  failed: {e}"),
        }
    }
    println!(
        "Canaries of one file released at once on the API emulator (provider gatewayapi, interval {}, stepWeight {}, maxWeight {}, threshold 2, request-success-rate min 99 from a local Prometheus API), {:.0} s in all. Schedule: `aviary plan`'s min_completion_s (min_rollback_s for an all-or-nothing release that rolls back); ticks = schedule ÷ interval + 1.\n",
        o.interval,
        o.step_weight,
        o.max_weight,
        started.elapsed().as_secs_f64()
    );
    println!("| N | bad | policy | verdict (exit) | promoted / rolled back / failed | traffic on primary | wall ÷ schedule (goal ≤ 1.02) | wall / schedule | peak RSS (goal) | API req / canary / tick | queries / canary / tick | CPU s aviary / emulator |");
    println!("|---:|---:|---|---|---|---|---:|---:|---:|---:|---:|---:|");
    for r in &runs {
        println!(
            "| {} | {} | {} | {} ({}) | {} / {} / {} | {}/{}{} | {:.3} {} | {:.1} s / {:.1} s | {:.1} MiB ({:.0}) {} | {:.2} | {:.2} | {:.1} / {:.1} |",
            r.n,
            r.bad,
            r.policy,
            r.verdict,
            r.code,
            r.promoted,
            r.rolled_back,
            r.other,
            r.on_primary,
            r.n,
            if r.primary_as_verdict == r.promoted + r.rolled_back {
                ""
            } else {
                " (a primary's image disagrees with its verdict)"
            },
            r.overhead(),
            if r.overhead() <= 1.02 { "✓" } else { "✗" },
            r.wall_s,
            r.schedule_s,
            r.peak_rss_kib as f64 / 1024.0,
            r.rss_goal_mib(),
            if (r.peak_rss_kib as f64 / 1024.0) <= r.rss_goal_mib() {
                "✓"
            } else {
                "✗"
            },
            r.per_canary_tick(r.api_requests),
            r.per_canary_tick(r.queries),
            r.aviary_cpu_s,
            r.emulator_cpu_s,
        );
    }
    if o.breakdown {
        for r in &runs {
            println!(
                "\nN={} {} ({}): API requests per canary per tick by method and resource:\n",
                r.n,
                if r.bad > 0 { "10% bad" } else { "good" },
                r.policy
            );
            let mut kinds: Vec<(&String, &usize)> = r.by_kind.iter().collect();
            kinds.sort_by(|a, b| b.1.cmp(a.1));
            for (kind, count) in kinds {
                println!("- {kind}: {:.2}", r.per_canary_tick(*count));
            }
        }
    }
}
