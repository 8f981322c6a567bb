//! Fault tests: outbound calls (webhooks, metrics, GitHub, GCS): hangs, huge bodies, credentials
//! in URLs, addresses that cannot be called, and the Cloud Deploy kubeconfig on disk.
//!
//! Hostile servers are real sockets on loopback: one that accepts and never answers, one that
//! streams a 500 MB body generated as it is written (never allocated). The binary runs as a
//! subprocess. Memory is the kernel's high-water mark of the child's resident set (`VmHWM` in
//! `/proc/<pid>/status`, which never goes down), read at an event that comes after the huge
//! answer was handled, with the child parked there on a call that is never answered: no sampling
//! and no timing window. Every run has a generous limit (60 s where the faults hung for
//! minutes), past which the child is killed and the test fails saying so.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::util::*;

/// Half a gigabyte, as the red-team's webhook sent.
const HUGE: u64 = 500 * 1024 * 1024;
/// Peak RSS a run may reach while a hostile server sends [`HUGE`] bytes: a rollout alone stays
/// well under it; reading the body whole takes at least 500 MiB.
const RSS_LIMIT_KIB: u64 = 256 * 1024;
/// How long any run may take (the faults hung for 300 s).
const LIMIT: Duration = Duration::from_secs(60);

/// What a finished run left.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
    took: Duration,
}

impl Run {
    fn all(&self) -> String {
        format!(
            "exit {} after {:?}\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.took, self.stdout, self.stderr
        )
    }
}

/// A child whose stdout and stderr are read as it runs.
struct Running {
    child: std::process::Child,
    started: Instant,
    out: std::thread::JoinHandle<String>,
    err: std::thread::JoinHandle<String>,
}

impl Running {
    fn start(mut cmd: Command) -> Running {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => panic!("spawn {:?}: {e}", cmd.get_program()),
        };
        fn drain(pipe: Option<impl Read + Send + 'static>) -> std::thread::JoinHandle<String> {
            std::thread::spawn(move || {
                let mut text = Vec::new();
                if let Some(mut p) = pipe {
                    let _ = p.read_to_end(&mut text);
                }
                String::from_utf8_lossy(&text).into_owned()
            })
        }
        let out = drain(child.stdout.take());
        let err = drain(child.stderr.take());
        Running {
            child,
            started: Instant::now(),
            out,
            err,
        }
    }

    /// Kills the child (if it still runs) and collects what it printed.
    fn finish(mut self, code: Option<i32>) -> Run {
        let code = match code {
            Some(c) => c,
            None => {
                let _ = self.child.kill();
                self.child.wait().ok().and_then(|s| s.code()).unwrap_or(-9)
            }
        };
        Run {
            code,
            took: self.started.elapsed(),
            stdout: self.out.join().unwrap_or_default(),
            stderr: self.err.join().unwrap_or_default(),
        }
    }
}

/// Runs `cmd` to its end, within `limit`: past it the child is killed and the test fails.
fn run(cmd: Command, limit: Duration) -> Run {
    let mut running = Running::start(cmd);
    loop {
        match running.child.try_wait() {
            Ok(Some(status)) => return running.finish(Some(status.code().unwrap_or(-1))),
            Ok(None) if running.started.elapsed() < limit => {
                std::thread::sleep(Duration::from_millis(50))
            }
            _ => {
                let run = running.finish(None);
                panic!("did not finish within {limit:?}: killed\n{}", run.all());
            }
        }
    }
}

/// Runs `cmd` until `event()` holds, then reads the child's peak resident memory (KiB) and kills
/// it. The test parks the child at the event (a call that is never answered), so it is alive
/// when read; if it ends first, or the event does not come within `limit`, the test fails.
fn peak_rss_at(cmd: Command, event: impl Fn() -> bool, limit: Duration) -> (u64, Run) {
    let mut running = Running::start(cmd);
    let pid = running.child.id();
    loop {
        if event() {
            let status = read(Path::new(&format!("/proc/{pid}/status")));
            let hwm = status
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok());
            let run = running.finish(None);
            match hwm {
                Some(kib) => return (kib, run),
                None => panic!("no VmHWM for {pid} at the event:\n{status}\n{}", run.all()),
            }
        }
        if let Ok(Some(status)) = running.child.try_wait() {
            let run = running.finish(Some(status.code().unwrap_or(-1)));
            panic!("ended before the event:\n{}", run.all());
        }
        if running.started.elapsed() > limit {
            let run = running.finish(None);
            panic!("no event within {limit:?}: killed\n{}", run.all());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// How a [`Server`] answers one request.
#[derive(Clone, Debug)]
enum Reply {
    /// Keep the connection open and never answer.
    Never,
    /// A status and a small body.
    Text(u16, String),
    /// A status and a body of `prefix`, `len` bytes of `x`, `suffix`, generated as it is
    /// written.
    Huge(u16, &'static str, u64, &'static str),
    /// A GCS object of `len` bytes (the headers object_store needs), generated as written.
    Object(u64),
}

/// A hostile HTTP server on loopback: every request is recorded (`METHOD /path`) and answered as
/// `policy` says. One request per connection.
struct Server {
    url: String,
    requests: Arc<Mutex<Vec<String>>>,
    /// Connections held open by [`Reply::Never`].
    _held: Arc<Mutex<Vec<TcpStream>>>,
}

impl Server {
    fn start(policy: impl Fn(&str, &str) -> Reply + Send + Sync + 'static) -> Server {
        let listener = match TcpListener::bind("127.0.0.1:0") {
            Ok(l) => l,
            Err(e) => panic!("bind: {e}"),
        };
        let url = match listener.local_addr() {
            Ok(a) => format!("http://{a}"),
            Err(e) => panic!("{e}"),
        };
        let requests = Arc::new(Mutex::new(Vec::new()));
        let held = Arc::new(Mutex::new(Vec::new()));
        let policy = Arc::new(policy);
        let (r, h) = (requests.clone(), held.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (r, h, policy) = (r.clone(), h.clone(), policy.clone());
                std::thread::spawn(move || serve(stream, &r, &h, &*policy));
            }
        });
        Server {
            url,
            requests,
            _held: held,
        }
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

fn serve(
    stream: TcpStream,
    requests: &Mutex<Vec<String>>,
    held: &Mutex<Vec<TcpStream>>,
    policy: &(dyn Fn(&str, &str) -> Reply + Send + Sync),
) {
    let mut reader = BufReader::new(&stream);
    let mut head = String::new();
    if reader.read_line(&mut head).unwrap_or(0) == 0 {
        return;
    }
    let mut parts = head.split_whitespace();
    let (method, path) = (
        parts.next().unwrap_or("").to_string(),
        parts.next().unwrap_or("").to_string(),
    );
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            break;
        }
        let l = line.trim().to_ascii_lowercase();
        if let Some(v) = l.strip_prefix("content-length:") {
            length = v.trim().parse().unwrap_or(0);
        }
        if l.is_empty() {
            break;
        }
    }
    let mut body = vec![0; length];
    let _ = reader.read_exact(&mut body);
    if let Ok(mut r) = requests.lock() {
        r.push(format!("{method} {path}"));
    }
    let mut w = &stream;
    match policy(&method, &path) {
        Reply::Never => {
            if let Ok(mut h) = held.lock() {
                h.push(stream);
            }
        }
        Reply::Text(code, text) => {
            let _ = write!(
                w,
                "HTTP/1.1 {code} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{text}",
                text.len()
            );
        }
        Reply::Huge(code, prefix, len, suffix) => {
            let total = prefix.len() as u64 + len + suffix.len() as u64;
            if write!(
                w,
                "HTTP/1.1 {code} X\r\ncontent-type: application/json\r\ncontent-length: {total}\r\nconnection: close\r\n\r\n{prefix}"
            )
            .is_ok()
            {
                stream_x(w, len);
                let _ = w.write_all(suffix.as_bytes());
            }
        }
        Reply::Object(len) => {
            if write!(
                w,
                "HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\ncontent-length: {len}\r\netag: \"1\"\r\nlast-modified: Tue, 01 Jan 2030 00:00:00 GMT\r\nconnection: close\r\n\r\n"
            )
            .is_ok()
            {
                stream_x(w, len);
            }
        }
    }
}

/// Writes `len` bytes of `x` from one static buffer, until done or the reader goes away.
fn stream_x(mut w: &TcpStream, len: u64) {
    static CHUNK: [u8; 64 * 1024] = [b'x'; 64 * 1024];
    let mut left = len;
    while left > 0 {
        let n = left.min(CHUNK.len() as u64) as usize;
        if w.write_all(&CHUNK[..n]).is_err() {
            return;
        }
        left -= n as u64;
    }
}

/// `aviary step` as a GitHub Actions Docker action runs it, in `dir`, with a clean environment.
fn github_step(dir: &Path, inputs: &[(&str, String)], env: &[(&str, String)]) -> Command {
    let mut cmd = Command::new(aviary_bin());
    cmd.arg("step").env_clear();
    for k in ["PATH", "HOME", "TMPDIR"] {
        if let Ok(v) = std::env::var(k) {
            cmd.env(k, v);
        }
    }
    let d = |name: &str| dir.join(name).display().to_string();
    for (k, v) in [
        ("GITHUB_ACTIONS", "true".to_string()),
        ("CI", "true".into()),
        ("GITHUB_REPOSITORY", "acme/shop".into()),
        ("GITHUB_RUN_ID", "4242".into()),
        (
            "GITHUB_SHA",
            "0123456789abcdef0123456789abcdef01234567".into(),
        ),
        ("GITHUB_SERVER_URL", "https://github.com".into()),
        ("GITHUB_OUTPUT", d("output")),
        ("GITHUB_STEP_SUMMARY", d("summary.md")),
        ("RUNNER_TEMP", dir.display().to_string()),
        ("AVIARY_LOG", "info".into()),
    ] {
        cmd.env(k, v);
    }
    for (k, v) in inputs {
        cmd.env(format!("INPUT_{}", k.to_uppercase()), v);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

/// A rollout step of `canary` with a GitHub token, the GitHub API at `api`.
fn rollout_step_with_github(c: &Cluster, canary: &Path, dir: &Path, api: &str) -> Command {
    github_step(
        dir,
        &[
            ("command", "rollout".into()),
            ("canary-file", canary.display().to_string()),
            ("kubeconfig", c.kubeconfig.display().to_string()),
            ("timeout", "2m".into()),
            ("github-token", "ghs_aviaryFaultToken0123456789".into()),
            ("environment", "production".into()),
        ],
        &[
            ("GITHUB_API_URL", api.to_string()),
            ("AVIARY_GITHUB_TIMEOUT", "3s".into()),
        ],
    )
}

#[test]
fn f07_a_github_api_that_never_answers_does_not_block_the_step() {
    let github = Server::start(|_, _| Reply::Never);
    let (c, _hook, canary) =
        with_new_revision("gatewayapi", "    maxWeight: 40\n    stepWeight: 20");
    let tmp = tempdir();
    let dir = tmp.path();
    let r = run(
        rollout_step_with_github(&c, &canary, dir, &github.url),
        LIMIT,
    );

    // The release went ahead and its verdict stands: GitHub is only its record.
    assert_eq!(r.code, 0, "{}", r.all());
    let o = outputs(&read(&dir.join("output")));
    assert_eq!(
        o.get("verdict").map(String::as_str),
        Some("promoted"),
        "{o:?}"
    );
    assert_eq!(
        image(&c.get("apps/v1", "deployments", "podinfo-primary")),
        "podinfo:2"
    );
    // GitHub was asked, did not answer, and the step says so as a warning.
    assert!(
        github
            .requests()
            .iter()
            .any(|r| r == "POST /repos/acme/shop/deployments"),
        "{:?}",
        github.requests()
    );
    let warning = r
        .stdout
        .lines()
        .find(|l| l.starts_with("::warning") && l.contains("GitHub Deployment"))
        .unwrap_or_else(|| panic!("no warning about the GitHub Deployment\n{}", r.all()));
    assert!(warning.contains("did not answer within 3s"), "{warning}");
}

#[test]
fn f07_b_github_statuses_that_never_answer_neither_block_nor_fail_the_release() {
    // The Deployment is created; then GitHub hangs on every status.
    let github = Server::start(|_, path| {
        if path == "/repos/acme/shop/deployments" {
            Reply::Text(201, r#"{"id": 77}"#.into())
        } else {
            Reply::Never
        }
    });
    let (c, _hook, canary) =
        with_new_revision("gatewayapi", "    maxWeight: 40\n    stepWeight: 20");
    let tmp = tempdir();
    let dir = tmp.path();
    let r = run(
        rollout_step_with_github(&c, &canary, dir, &github.url),
        LIMIT,
    );

    assert_eq!(r.code, 0, "{}", r.all());
    let o = outputs(&read(&dir.join("output")));
    assert_eq!(
        o.get("verdict").map(String::as_str),
        Some("promoted"),
        "{o:?}"
    );
    assert_eq!(o.get("exit-code").map(String::as_str), Some("0"), "{o:?}");
    // Created, then in_progress and success were both tried.
    let statuses = github
        .requests()
        .iter()
        .filter(|r| r.as_str() == "POST /repos/acme/shop/deployments/77/statuses")
        .count();
    assert_eq!(statuses, 2, "{:?}\n{}", github.requests(), r.all());
    for state in ["in_progress", "success"] {
        assert!(
            r.stdout.lines().any(|l| l.starts_with("::warning")
                && l.contains(&format!("could not set GitHub Deployment 77 to {state}"))),
            "no warning for {state}\n{}",
            r.all()
        );
    }
}

/// The environment of a Cloud Deploy action whose GCS is at `endpoint`.
fn cloud_deploy(endpoint: &str, request: &str, extra: &[(&str, String)]) -> Command {
    let mut cmd = Command::new(aviary_bin());
    cmd.arg("cloud-deploy").env_clear();
    for k in ["PATH", "HOME", "TMPDIR"] {
        if let Ok(v) = std::env::var(k) {
            cmd.env(k, v);
        }
    }
    for (k, v) in [
        ("AVIARY_GCS_ENDPOINT", endpoint.to_string()),
        ("CLOUD_DEPLOY_REQUEST_TYPE", request.into()),
        ("CLOUD_DEPLOY_PROJECT", "123456789".into()),
        ("CLOUD_DEPLOY_LOCATION", "europe-west1".into()),
        ("CLOUD_DEPLOY_DELIVERY_PIPELINE", "aviary-demo".into()),
        ("CLOUD_DEPLOY_RELEASE", "rel-1".into()),
        ("CLOUD_DEPLOY_TARGET", "prod".into()),
        ("CLOUD_DEPLOY_STORAGE_TYPE", "GCS".into()),
        (
            "CLOUD_DEPLOY_INPUT_GCS_PATH",
            "gs://pipeline-artifacts/releases/source.tgz".into(),
        ),
        (
            "CLOUD_DEPLOY_OUTPUT_GCS_PATH",
            "gs://pipeline-artifacts/out".into(),
        ),
        ("AVIARY_LOG", "info".into()),
    ] {
        cmd.env(k, v);
    }
    for (k, v) in extra {
        cmd.env(k, v);
    }
    cmd
}

#[test]
fn f07_c_a_gcs_that_never_answers_fails_the_action_with_exit_3() {
    let gcs = Server::start(|_, _| Reply::Never);
    let r = run(
        cloud_deploy(&gcs.url, "RENDER", &[("AVIARY_GCS_TIMEOUT", "2s".into())]),
        LIMIT,
    );
    // Not best-effort (Cloud Deploy needs the files), but bounded, and it says why.
    assert_eq!(r.code, 3, "{}", r.all());
    assert!(
        r.stderr
            .contains("gs://pipeline-artifacts/releases/source.tgz: GCS did not answer within 2s"),
        "{}",
        r.all()
    );
    assert!(!gcs.requests().is_empty());
}

/// A canary whose rollout webhook is `hook`, in the cluster's directory.
fn canary_with_hook(c: &Cluster, name: &str, hook: &str) -> PathBuf {
    c.write(
        name,
        &canary_yaml("gatewayapi", hook, "    maxWeight: 40\n    stepWeight: 20"),
    )
}

fn assert_small(what: &str, peak_kib: u64, run: &Run) {
    eprintln!("{what}: peak RSS {} MiB", peak_kib / 1024);
    assert!(
        peak_kib < RSS_LIMIT_KIB,
        "{what}: peak RSS {} MiB (limit {} MiB)\n{}",
        peak_kib / 1024,
        RSS_LIMIT_KIB / 1024,
        run.all()
    );
}

#[test]
fn f08_a_a_webhook_answering_500_mb_is_not_read_into_memory() {
    // The first call gets 500 MB; the second is never answered: the rollout is parked there,
    // after the first answer was handled whole.
    let calls = AtomicUsize::new(0);
    let hook = Server::start(move |_, _| {
        if calls.fetch_add(1, Ordering::SeqCst) == 0 {
            Reply::Huge(500, "", HUGE, "")
        } else {
            Reply::Never
        }
    });
    let (c, _hook, _) = with_new_revision("gatewayapi", "    maxWeight: 40\n    stepWeight: 20");
    let canary = canary_with_hook(&c, "f08a.yaml", &format!("{}/", hook.url));
    let (peak, run) = peak_rss_at(
        c.aviary(&canary, &[("AVIARY_LOG", "info")]),
        || hook.requests().len() >= 2,
        LIMIT,
    );
    assert_small("a 500 MB webhook answer", peak, &run);
    // The first check failed with the start of the answer as its reason.
    assert!(
        run.stderr
            .contains("returned 500 Internal Server Error: xxxxxxxx"),
        "{}",
        run.all()
    );
}

#[test]
fn f08_b_a_github_api_answering_500_mb_is_not_read_into_memory() {
    // Every GitHub answer is a 500 MB JSON document (valid, so a reader that takes it whole goes
    // on to the next call); the rollout's webhook is never answered, parking the step in its
    // analysis, after the Deployment was created.
    let github = Server::start(|_, _| Reply::Huge(201, "{\"id\": 77, \"pad\": \"", HUGE, "\"}"));
    let hook = Server::start(|_, _| Reply::Never);
    let (c, _hook, _) = with_new_revision("gatewayapi", "    maxWeight: 40\n    stepWeight: 20");
    let canary = canary_with_hook(&c, "f08b.yaml", &format!("{}/", hook.url));
    let tmp = tempdir();
    let dir = tmp.path();
    let (peak, run) = peak_rss_at(
        rollout_step_with_github(&c, &canary, dir, &github.url),
        || !hook.requests().is_empty() && !github.requests().is_empty(),
        LIMIT,
    );
    assert_small("a 500 MB GitHub answer", peak, &run);
}

#[test]
fn f08_c_a_release_source_over_the_cap_is_refused_not_read() {
    // A 600 MiB release source, over the 256 MiB cap; uploads are never answered, parking the
    // action on its report upload, after the source was handled.
    let gcs = Server::start(|method, _| match method {
        "GET" => Reply::Object(600 * 1024 * 1024),
        _ => Reply::Never,
    });
    let (peak, run) = peak_rss_at(
        cloud_deploy(&gcs.url, "RENDER", &[]),
        || gcs.requests().iter().any(|r| !r.starts_with("GET ")),
        LIMIT,
    );
    assert_small("a 600 MiB release source", peak, &run);
    assert!(
        run.stderr
            .contains("gs://pipeline-artifacts/releases/source.tgz: the release source is larger than 256 MiB"),
        "{}",
        run.all()
    );
}

#[test]
fn f09_a_webhook_password_and_token_appear_nowhere() {
    let password = "P4ss-f09-never-shown";
    let token = "T0ken-f09-never-shown";
    let (c, hook, _) = with_new_revision("gatewayapi", "    maxWeight: 40\n    stepWeight: 20");
    hook.set(500);
    let port = hook
        .url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let secret_url = format!("http://aviary:{password}@{port}/hook?token={token}");
    let canary = c.write(
        "secret-hook.yaml",
        &canary_yaml(
            "gatewayapi",
            &secret_url,
            "    maxWeight: 40\n    stepWeight: 20",
        ),
    );
    let tmp = tempdir();
    let dir = tmp.path();
    let step = github_step(
        dir,
        &[
            ("command", "rollout".into()),
            ("canary-file", canary.display().to_string()),
            ("kubeconfig", c.kubeconfig.display().to_string()),
            ("timeout", "2m".into()),
        ],
        &[],
    );
    let r = run(step, LIMIT);
    assert_eq!(r.code, 1, "{}", r.all());

    let report = read(&dir.join("aviary-report.json"));
    let files = [
        ("stdout (annotations)", r.stdout.clone()),
        ("stderr", r.stderr.clone()),
        ("report.json", report.clone()),
        ("$GITHUB_OUTPUT", read(&dir.join("output"))),
        ("$GITHUB_STEP_SUMMARY", read(&dir.join("summary.md"))),
    ];
    for (what, text) in &files {
        assert!(!text.is_empty(), "{what} is empty\n{}", r.all());
        for secret in [password, token] {
            assert!(
                !text.contains(secret),
                "{secret} leaked into {what}:\n{text}"
            );
        }
    }
    // The hook is still named, with its credentials hidden.
    let shown = format!("http://***@{port}/hook?token=***");
    assert!(report.contains(&shown), "{shown} not in {report}");
    assert!(
        r.stdout
            .lines()
            .any(|l| l.starts_with("::error") && l.contains(&shown)),
        "{}",
        r.all()
    );
}

#[test]
fn f11_a_an_address_that_cannot_be_called_changes_nothing_and_exits_2() {
    let (c, _hook, canary) =
        with_new_revision("gatewayapi", "    maxWeight: 40\n    stepWeight: 20");
    let before = c.route_weights();
    for (address, problem) in [
        ("ftp://x", "the scheme must be http or https"),
        ("not a url", "it is not a URL"),
    ] {
        let mut cmd = c.aviary(&canary, &[]);
        cmd.args(["--prometheus-url", address]);
        let r = run(cmd, LIMIT);
        assert_eq!(r.code, 2, "--prometheus-url {address}: {}", r.all());
        assert!(
            r.stderr.contains("--prometheus-url") && r.stderr.contains(problem),
            "{}",
            r.all()
        );
        // Nothing changed: no traffic moved, the primary still serves the old revision.
        assert_eq!(c.route_weights(), before, "{address}");
        assert_eq!(
            image(&c.get("apps/v1", "deployments", "podinfo-primary")),
            "podinfo:1"
        );
    }
}

#[test]
fn f11_b_every_address_is_checked_with_its_field_and_fix() {
    let canary = "apiVersion: flagger.app/v1beta1
kind: Canary
metadata:
  name: podinfo
  namespace: test
spec:
  metricsServer: prometheus:9090
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
    webhooks:
      - name: load
        type: rollout
        url: http://loadtester.test/
      - name: gate
        type: confirm-rollout
        url: http://admin:hunter2@
---
apiVersion: flagger.app/v1beta1
kind: MetricTemplate
metadata:
  name: errors
  namespace: test
spec:
  provider:
    type: prometheus
    address: ftp://metrics.test
  query: up
";
    let docs = match aviary_core::spec::load_str("canary.yaml", canary) {
        Ok(d) => d,
        Err(e) => panic!("{e}"),
    };
    let errors = match aviary_core::addresses::check_addresses(
        &docs.canaries[0],
        &docs.templates,
        Some("not a url"),
    ) {
        Err(e) => e,
        Ok(()) => panic!("accepted"),
    };
    let fields: Vec<(&str, &str)> = errors
        .iter()
        .map(|d| (d.file.as_str(), d.path.as_str()))
        .collect();
    assert_eq!(
        fields,
        vec![
            ("--prometheus-url", ""),
            ("canary.yaml", "spec.metricsServer"),
            ("canary.yaml", "spec.analysis.webhooks[1].url"),
            ("canary.yaml", "spec.provider.address"),
        ]
    );
    let text: Vec<String> = errors.iter().map(|d| d.to_string()).collect();
    assert!(text[0].contains("it is not a URL"), "{}", text[0]);
    assert!(
        text[1].contains("not \"prometheus\"") && text[1].contains("help: write the full address with http:// or https://, for example http://prometheus:9090"),
        "{}",
        text[1]
    );
    assert!(
        text[2].contains("webhook \"gate\"") && text[2].contains("it has no host"),
        "{}",
        text[2]
    );
    assert!(!text[2].contains("hunter2"), "{}", text[2]);
    assert!(
        text[3].contains("MetricTemplate errors.test"),
        "{}",
        text[3]
    );
    // A good canary passes.
    let good = canary
        .replace("prometheus:9090", "http://prometheus:9090")
        .replace("http://admin:hunter2@", "http://admin:hunter2@gate.test/")
        .replace("ftp://metrics.test", "https://metrics.test/prefix");
    let docs = match aviary_core::spec::load_str("canary.yaml", &good) {
        Ok(d) => d,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(
        aviary_core::addresses::check_addresses(
            &docs.canaries[0],
            &docs.templates,
            Some("http://prometheus.monitoring:9090")
        ),
        Ok(())
    );
}

/// Every file under `dir` whose content holds `needle`, with its mode.
fn files_holding(dir: &Path, needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(files_holding(&path, needle));
        } else if read(&path).contains(needle) {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path)
                .map(|m| m.permissions().mode() & 0o777)
                .unwrap_or(0);
            found.push(format!("{} (mode {mode:o})", path.display()));
        }
    }
    found
}

#[test]
fn f13_the_kubeconfig_from_gcs_is_never_on_disk_even_after_sigkill() {
    // A cluster analysing a new revision; the webhook of the Cloud Deploy manifest holds the
    // rollout in its analysis for as long as the test wants.
    let (c, _hook, _) = with_new_revision("gatewayapi", "    maxWeight: 40\n    stepWeight: 20");
    let gate = Server::start(|_, _| Reply::Never);
    let kubeconfig = read(&c.kubeconfig);
    let server_line = kubeconfig
        .lines()
        .find(|l| l.trim_start().starts_with("server:"))
        .unwrap_or_else(|| panic!("no server in {kubeconfig}"))
        .trim()
        .to_string();

    let data_dir = tempdir();
    let data = data_dir.path();
    let bucket = data.join("pipeline-artifacts");
    if let Err(e) = std::fs::create_dir_all(bucket.join("r")) {
        panic!("{e}");
    }
    let deployment = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: podinfo\n  namespace: test\n  labels: {app: podinfo}\nspec:\n  replicas: 2\n  selector:\n    matchLabels: {app: podinfo}\n  template:\n    metadata:\n      labels: {app: podinfo}\n    spec:\n      containers:\n        - name: podinfo\n          image: podinfo:2\n          ports: [{containerPort: 9898, name: http}]\n          envFrom: [{configMapRef: {name: podinfo-settings}}]\n";
    let canary = canary_yaml(
        "gatewayapi",
        &format!("{}/\n        timeout: 5m", gate.url),
        "    maxWeight: 40\n    stepWeight: 20",
    );
    let manifest = format!("{deployment}---\n{canary}");
    for (name, body) in [
        ("kubeconfig", kubeconfig.as_str()),
        ("r/manifest.yaml", &manifest),
    ] {
        if let Err(e) = std::fs::write(bucket.join(name), body) {
            panic!("{e}");
        }
    }
    let gcs = gcs::Gcs::start(data);
    // The action's temporary directory is the test's, to look into.
    let tmp_dir = tempdir();
    let tmp = tmp_dir.path();
    let mut cmd = cloud_deploy(
        &gcs.endpoint,
        "DEPLOY",
        &[
            (
                "CLOUD_DEPLOY_MANIFEST_GCS_PATH",
                "gs://pipeline-artifacts/r/manifest.yaml".into(),
            ),
            (
                "CLOUD_DEPLOY_customTarget_kubeconfig",
                "gs://pipeline-artifacts/kubeconfig".into(),
            ),
            ("CLOUD_DEPLOY_PHASE", "stable".into()),
            ("CLOUD_DEPLOY_ROLLOUT", "rollout-f13".into()),
            ("TMPDIR", tmp.display().to_string()),
        ],
    );
    let mut child = match cmd.stdout(Stdio::null()).stderr(Stdio::piped()).spawn() {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    };
    // Mid-rollout: the kubeconfig is in use, the analysis waits on the webhook.
    let started = Instant::now();
    while gate.requests().is_empty() {
        if let Ok(Some(status)) = child.try_wait() {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            panic!("the action ended ({status}) before its analysis:\n{err}");
        }
        if started.elapsed() > LIMIT {
            let _ = child.kill();
            panic!("the rollout never called its webhook");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let during = files_holding(tmp, &server_line);
    // SIGKILL: nothing can clean up after this.
    let _ = child.kill();
    let _ = child.wait();
    let after = files_holding(tmp, &server_line);
    assert!(
        during.is_empty(),
        "the kubeconfig is on disk during the rollout: {during:?}"
    );
    assert!(
        after.is_empty(),
        "the kubeconfig was left on disk after SIGKILL: {after:?}"
    );
}
