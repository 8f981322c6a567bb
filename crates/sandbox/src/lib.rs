//! `aviary sandbox`: the whole release loop on one machine, with real traffic and real metrics.
//!
//! The pieces, all on loopback:
//! * the Kubernetes API emulator (`kube-emulator`), in this process;
//! * a node ([`kubelet::Node`]) that runs every Deployment as a real demo-app process
//!   ([`app`]), feeds the metrics backend its scrape targets, and keeps the traffic split in
//!   line with the routing objects aviary writes ([`routes`]);
//! * the traffic split (`splitter`): HAProxy driven through its runtime API when it is
//!   installed, else an embedded proxy;
//! * the metrics backend ([`metrics`]): Debian's Prometheus when it is installed, else the
//!   embedded store (`promlite`);
//! * clients ([`load`]) sending a steady load through the split and recording which version
//!   answered each request and how.
//!
//! On these, `aviary sandbox` releases the shipped example ([`EXAMPLE`]) twice with
//! `aviary rollout` as a child process, exactly as a pipeline would run it: version 1.0.0
//! (the bootstrap) and then the scenario's version 2.0.0, live, ending with the verdict, the
//! JSON report and the Markdown summary. The end-to-end tests and the benchmark use the same
//! [`Sandbox`].

pub mod app;
pub mod kubelet;
pub mod load;
pub mod metrics;
pub mod routes;
pub mod signals;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Args;
use kube_emulator::Emulator;
use splitter::{Engine, Splitter};
use tokio::io::{AsyncBufReadExt, BufReader};

use aviary_core::exit::Exit;
use kubelet::{Node, NodeState};
use load::{Load, LoadConfig, Stats, TaggedRequests};
use metrics::{MetricsBackend, MetricsChoice};
pub use routes::Router;
pub use signals::{Interrupt, StopSignal};

/// The namespace and name of the example's Canary.
pub const NAMESPACE: &str = "prod";
pub const CANARY: &str = "podinfo";
/// The example's image.
pub const IMAGE: &str = "ghcr.io/aviary-dev/demo";
/// The version the first release installs.
pub const STABLE_TAG: &str = "1.0.0";
/// How long the primary serves alone before the second release.
pub const BASELINE: Duration = Duration::from_secs(4);
/// How long the rollout has, after the signal the sandbox passed on, to return the traffic
/// and exit before it is killed.
pub const ROLLOUT_GRACE: Duration = Duration::from_secs(30);

/// The shipped example (`examples/sandbox`), built into the binary so that the sandbox runs
/// from anywhere: (path in the project, contents).
pub const EXAMPLE: [(&str, &str); 4] = [
    (
        "skaffold.yaml",
        include_str!("../../../examples/sandbox/skaffold.yaml"),
    ),
    (
        "k8s/deployment.yaml",
        include_str!("../../../examples/sandbox/k8s/deployment.yaml"),
    ),
    (
        "k8s/canary.yaml",
        include_str!("../../../examples/sandbox/k8s/canary.yaml"),
    ),
    (
        "k8s/canary-ab.yaml",
        include_str!("../../../examples/sandbox/k8s/canary-ab.yaml"),
    ),
];

/// What the second release does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// A healthy 2.0.0: promoted.
    Good,
    /// 2.0.0-errors answers 20% of requests with 500: rolled back on the success rate.
    Errors,
    /// 2.0.0-slow is four times slower but under the 500 ms threshold: the judge rolls it back.
    Latency,
    /// An A/B test: only requests with `x-canary: insider` reach 2.0.0, which is promoted.
    Ab,
    /// A healthy 2.0.0 on an unreliable API server (503s, conflicts, slow answers): promoted.
    Flaky,
}

/// The name a value has on the command line.
pub(crate) fn flag_value(v: impl clap::ValueEnum) -> String {
    v.to_possible_value()
        .map(|p| p.get_name().to_string())
        .unwrap_or_default()
}

impl Scenario {
    pub fn name(self) -> String {
        flag_value(self)
    }

    /// The image tag of the new release.
    pub fn tag(self) -> &'static str {
        match self {
            Scenario::Errors => "2.0.0-errors",
            Scenario::Latency => "2.0.0-slow",
            _ => "2.0.0",
        }
    }

    /// The Skaffold profile of the example to render.
    pub fn profile(self) -> &'static str {
        match self {
            Scenario::Ab => "prod-ab",
            _ => "prod",
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Scenario::Good => "a healthy release",
            Scenario::Errors => "a release that answers 20% of its requests with HTTP 500",
            Scenario::Latency => {
                "a release four times slower, still under the 500 ms threshold (a job for the judge)"
            }
            Scenario::Ab => "an A/B test for the requests carrying `x-canary: insider`",
            Scenario::Flaky => {
                "a healthy release on an API server that fails 10% of its requests"
            }
        }
    }

    /// The verdict a correct rollout reaches.
    pub fn expected(self) -> aviary_core::report::Verdict {
        match self {
            Scenario::Errors | Scenario::Latency => aviary_core::report::Verdict::RolledBack,
            _ => aviary_core::report::Verdict::Promoted,
        }
    }
}

/// Which traffic split to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ProxyChoice {
    /// HAProxy when it is installed, else the embedded proxy.
    Auto,
    /// Debian's `haproxy`, driven through its runtime API (an error when it is missing).
    Haproxy,
    /// The embedded proxy.
    Embedded,
}

/// `aviary sandbox`.
#[derive(Debug, Args)]
pub struct SandboxArgs {
    /// What the new release does.
    #[arg(long, value_enum, default_value = "good")]
    pub scenario: Scenario,

    /// The traffic provider aviary drives (and the sandbox's proxy follows).
    #[arg(long, value_enum, default_value = "gatewayapi")]
    pub router: Router,

    /// The metrics backend.
    #[arg(long, value_enum, default_value = "auto")]
    pub metrics: MetricsChoice,

    /// The traffic split.
    #[arg(long, value_enum, default_value = "auto")]
    pub proxy: ProxyChoice,

    /// Client requests per second through the split.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(5..=2000))]
    pub rate: u32,

    /// Where the sandbox keeps its files (kubeconfig, example, report, summary, logs); default:
    /// a new directory under the system's temporary directory. It is left in place.
    #[arg(long, value_name = "DIR")]
    pub workdir: Option<PathBuf>,

    /// Write the release's JSON report here too (it is always in the workdir).
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
}

/// What a sandbox is made of.
#[derive(Debug, Clone)]
pub struct Options {
    pub router: Router,
    pub metrics: MetricsChoice,
    pub proxy: ProxyChoice,
    /// The binary with the `demo-app` and `rollout` commands (this one, or the tests' build).
    pub aviary: PathBuf,
    pub workdir: PathBuf,
    pub rate: u32,
    /// Every n-th client request carries `x-canary: insider`.
    pub tag_every: Option<u32>,
}

/// Errors that stop the sandbox itself (not a rollout's verdict).
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("sandbox: {0}")]
    Io(#[from] std::io::Error),
    #[error("sandbox: the traffic split: {0}")]
    Split(String),
    /// A choice this machine cannot honour (exit 2).
    #[error("sandbox: {0}")]
    Setup(String),
    /// Options that do not go together (exit 2), with the fix.
    #[error("{message}")]
    Usage { message: String, help: String },
    /// The first release did not leave the primary serving.
    #[error("sandbox: {0}")]
    Bootstrap(String),
    /// A signal asked the sandbox to stop.
    #[error("sandbox: stopped by {}", .0.name())]
    Interrupted(StopSignal),
}

impl SandboxError {
    /// The user's to fix (exit 2), not the machine's.
    pub fn is_usage(&self) -> bool {
        matches!(self, SandboxError::Setup(_) | SandboxError::Usage { .. })
    }
}

/// A running sandbox.
pub struct Sandbox {
    pub emulator: Arc<Emulator>,
    pub splitter: Arc<Splitter>,
    pub metrics: Arc<MetricsBackend>,
    pub node: Arc<Mutex<NodeState>>,
    pub load: Load,
    pub options: Options,
    pub kubeconfig: PathBuf,
    /// The example project, written out.
    pub example: PathBuf,
    /// The signal that stops the sandbox: passed on to a running rollout, and it cuts the
    /// bootstrap's waits short.
    interrupt: Interrupt,
    stop: tokio::sync::watch::Sender<bool>,
    node_task: tokio::task::JoinHandle<()>,
}

/// How one `aviary rollout` went.
#[derive(Debug, Clone)]
pub struct Release {
    /// Its exit code; 128 + the signal's number when a signal ended it.
    pub exit_code: i32,
    /// The signal the sandbox passed on to it, and when (Unix ms).
    pub interrupted: Option<(StopSignal, u64)>,
    pub started_ms: u64,
    pub ended_ms: u64,
    pub wall: Duration,
    /// The rollout process's peak resident set (VmHWM), in KiB, as last read while it ran.
    pub peak_rss_kib: Option<u64>,
    /// When the rollout announced its rollback ("Rolling back ..."), Unix ms.
    pub rollback_decided_ms: Option<u64>,
    /// Its log messages: (Unix ms when read, level, message).
    pub messages: Vec<(u64, String, String)>,
    pub report: Option<aviary_core::report::Report>,
}

impl Sandbox {
    pub async fn start(options: Options) -> Result<Sandbox, SandboxError> {
        // What runs where is decided before anything starts.
        let prometheus = match options.metrics {
            MetricsChoice::Embedded => None,
            MetricsChoice::Auto => metrics::find_prometheus(),
            MetricsChoice::Prometheus => Some(metrics::find_prometheus().ok_or_else(|| {
                SandboxError::Setup(
                    "--metrics prometheus: no prometheus binary (install Debian's `prometheus`, set AVIARY_PROMETHEUS_BIN, or use --metrics embedded)".into(),
                )
            })?),
        };
        let prometheus = prometheus
            .map(|p| executable(p, "AVIARY_PROMETHEUS_BIN", "--metrics embedded"))
            .transpose()?;
        let engine = match options.proxy {
            ProxyChoice::Embedded => Engine::Embedded,
            ProxyChoice::Auto => match splitter::find_haproxy() {
                Some(binary) => Engine::Haproxy {
                    binary: executable(binary, "AVIARY_HAPROXY", "--proxy embedded")?,
                },
                None => Engine::Embedded,
            },
            ProxyChoice::Haproxy => Engine::Haproxy {
                binary: executable(
                    splitter::find_haproxy().ok_or_else(|| {
                        SandboxError::Setup(
                            "--proxy haproxy: no haproxy binary (install Debian's `haproxy`, set AVIARY_HAPROXY, or use --proxy embedded)".into(),
                        )
                    })?,
                    "AVIARY_HAPROXY",
                    "--proxy embedded",
                )?,
            },
        };
        std::fs::create_dir_all(&options.workdir)?;
        let example = options.workdir.join("example");
        for (path, text) in EXAMPLE {
            let file = example.join(path);
            if let Some(dir) = file.parent() {
                std::fs::create_dir_all(dir)?;
            }
            std::fs::write(file, text)?;
        }
        let emulator = Emulator::start(kube_emulator::Config {
            deployment_ready_delay: Duration::from_millis(300),
            namespaces: vec![NAMESPACE.to_string(), "gateway-system".to_string()],
            ..kube_emulator::Config::default()
        })
        .await?;
        let kubeconfig = options.workdir.join("kubeconfig");
        emulator.write_kubeconfig(&kubeconfig, NAMESPACE)?;
        let metrics = MetricsBackend::start(prometheus.as_deref(), &options.workdir).await?;
        let split_dir = options.workdir.join("split");
        std::fs::create_dir_all(&split_dir)?;
        let splitter = Splitter::start(splitter::Options {
            engine,
            workdir: split_dir,
            match_headers: vec!["x-canary".to_string(), "cookie".to_string()],
        })
        .await
        .map_err(|e| match e {
            // The one thing the user chose that HAProxy can refuse: the work directory.
            splitter::Error::Invalid { .. } => SandboxError::Setup(format!("--workdir: {e}")),
            other => SandboxError::Split(other.to_string()),
        })?;
        let splitter = Arc::new(splitter);
        let emulator = Arc::new(emulator);
        let metrics = Arc::new(metrics);
        let node_state = Arc::new(Mutex::new(NodeState::default()));
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let node = Node {
            emulator: emulator.clone(),
            namespace: NAMESPACE.to_string(),
            name: CANARY.to_string(),
            router: options.router,
            app_binary: options.aviary.clone(),
            splitter: splitter.clone(),
            metrics: metrics.clone(),
            state: node_state.clone(),
        };
        let node_task = tokio::spawn(node.run(stopped));
        let load = Load::start(LoadConfig {
            target: splitter.addr(),
            rate: options.rate,
            concurrency: 16,
            tagged: options.tag_every.map(|every| TaggedRequests {
                every,
                header: "x-canary".into(),
                value: "insider".into(),
            }),
        })
        .map_err(|e| std::io::Error::other(format!("cannot start the clients: {e}")))?;
        Ok(Sandbox {
            emulator,
            splitter,
            metrics,
            node: node_state,
            load,
            options,
            kubeconfig,
            example,
            interrupt: Interrupt::never(),
            stop,
            node_task,
        })
    }

    /// From now on `interrupt` stops the sandbox's releases: a running rollout gets the
    /// signal (and returns the traffic to the primary), and the bootstrap stops waiting.
    pub fn stop_on(&mut self, interrupt: Interrupt) {
        self.interrupt = interrupt;
    }

    /// Turns the API server's fault injection on: a share of requests under the namespace
    /// fail with 503, PATCHes with 409, and some are slow.
    pub fn make_api_flaky(&self) {
        let under = format!("/namespaces/{NAMESPACE}/");
        let regex = format!(".*{}.*", aviary_kube::routing::regex_escape(&under));
        let fault = |method: Option<&str>, p: f64, kind, seed| kube_emulator::Fault {
            method: method.map(str::to_string),
            path_regex: regex.clone(),
            probability: p,
            kind,
            seed,
        };
        self.emulator.set_faults(vec![
            fault(None, 0.1, kube_emulator::FaultKind::Status(503), 7),
            fault(
                Some("PATCH"),
                0.1,
                kube_emulator::FaultKind::Status(409),
                11,
            ),
            fault(
                Some("GET"),
                0.05,
                kube_emulator::FaultKind::Latency(Duration::from_millis(300)),
                13,
            ),
        ]);
    }

    /// `aviary rollout` for the example at `tag`, as a pipeline would run it. The run is named
    /// after the release (`AVIARY_RUN_ID`), so a re-run of a killed one resumes at once.
    pub fn rollout_command(
        &self,
        tag: &str,
        profile: &str,
        report: Option<&Path>,
    ) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(&self.options.aviary);
        cmd.env(
            "AVIARY_RUN_ID",
            format!("sandbox-{}/{tag}", std::process::id()),
        );
        cmd.args(["--log-format", "json", "rollout", "--target", "prod"])
            .arg("--skaffold-file")
            .arg(self.example.join("skaffold.yaml"))
            .args(["--profile", profile])
            .args(["--images", &format!("{IMAGE}={IMAGE}:{tag}")])
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(["--provider", self.options.router.provider()])
            .args(["--prometheus-url", &self.metrics.url()])
            .args(["--timeout", "5m"]);
        if let Some(report) = report {
            cmd.arg("--report").arg(report);
        }
        for var in [
            "AVIARY_LOG",
            "AVIARY_LOG_FORMAT",
            "AVIARY_PROMETHEUS_URL",
            "AVIARY_PROMETHEUS_TOKEN",
            "AVIARY_PROMETHEUS_USERNAME",
            "AVIARY_PROMETHEUS_PASSWORD",
            "KUBECONFIG",
            "GITHUB_RUN_ID",
            "CLOUD_DEPLOY_ROLLOUT",
            "TEKTON_PIPELINE_RUN",
            "PIPELINE_RUN",
            "TEKTON_TASK_RUN",
        ] {
            cmd.env_remove(var);
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        // Its own process group: it gets one signal, the one the sandbox passes on, not a
        // second one from the terminal.
        signals::own_group(&mut cmd);
        cmd
    }

    /// Runs one release to its end. `show` gets every log message as it arrives. A signal
    /// (see [`Sandbox::stop_on`]) is passed on to the rollout, which returns the traffic to
    /// the primary and exits; if it is still running [`ROLLOUT_GRACE`] later, it is killed.
    /// After a signal, no release starts ([`SandboxError::Interrupted`]).
    pub async fn release(
        &self,
        tag: &str,
        profile: &str,
        report: Option<&Path>,
        mut show: impl FnMut(&str, &str),
    ) -> Result<Release, SandboxError> {
        // Asked to stop already: no new rollout.
        if let Some(signal) = self.interrupt.get() {
            return Err(SandboxError::Interrupted(signal));
        }
        let started_ms = aviary_kube::runner::wall_ms();
        let started = Instant::now();
        let mut child = self.rollout_command(tag, profile, report).spawn()?;
        let pid = child.id();
        let stderr = child
            .stderr
            .take()
            .ok_or_else(|| std::io::Error::other("the rollout process has no stderr"))?;
        let mut lines = BufReader::new(stderr).lines();
        let mut messages = Vec::new();
        let mut peak_rss_kib = None;
        let mut rollback_decided_ms = None;
        let mut rss_tick = tokio::time::interval(Duration::from_millis(20));
        let mut interrupted = None;
        let mut grace = std::pin::pin!(tokio::time::sleep(Duration::MAX));
        let mut killed = false;
        loop {
            tokio::select! {
                signal = self.interrupt.wait(), if interrupted.is_none() => {
                    interrupted = Some((signal, aviary_kube::runner::wall_ms()));
                    let passed = pid.is_some_and(|pid| signals::send(pid, signal));
                    show(
                        "INFO",
                        &format!(
                            "sandbox: {} received; {}",
                            signal.name(),
                            if passed {
                                "passed on to the rollout, which returns the traffic to the primary"
                            } else {
                                "the rollout has already exited"
                            }
                        ),
                    );
                    grace.as_mut().reset(tokio::time::Instant::now() + ROLLOUT_GRACE);
                }
                () = &mut grace, if !killed => {
                    killed = true;
                    let message = format!(
                        "sandbox: the rollout did not exit within {} s of the signal: killed; the traffic may still be split",
                        ROLLOUT_GRACE.as_secs()
                    );
                    tracing::warn!("{message}");
                    show("WARN", &message);
                    let _ = child.start_kill();
                }
                line = lines.next_line() => match line? {
                    Some(line) => {
                        let now = aviary_kube::runner::wall_ms();
                        let (level, message) = parse_log_line(&line);
                        if rollback_decided_ms.is_none() && message.starts_with("Rolling back") {
                            rollback_decided_ms = Some(now);
                        }
                        show(&level, &message);
                        messages.push((now, level, message));
                    }
                    None => break,
                },
                _ = rss_tick.tick() => {
                    if let Some(kib) = pid.and_then(peak_rss) {
                        peak_rss_kib = Some(kib);
                    }
                }
            }
        }
        let status = child.wait().await?;
        let exit_code = status
            .code()
            .or_else(|| std::os::unix::process::ExitStatusExt::signal(&status).map(|s| 128 + s))
            .unwrap_or(-1);
        let report = report.and_then(|p| {
            let text = std::fs::read_to_string(p).ok()?;
            serde_json::from_str(&text).ok()
        });
        Ok(Release {
            exit_code,
            interrupted,
            started_ms,
            ended_ms: aviary_kube::runner::wall_ms(),
            wall: started.elapsed(),
            peak_rss_kib,
            rollback_decided_ms,
            messages,
            report,
        })
    }

    /// Release 1 ([`STABLE_TAG`]), which creates the primary; then the clients start, and the
    /// primary serves them alone for [`BASELINE`] so that the judge has something to compare
    /// the canary with.
    pub async fn bootstrap(
        &self,
        profile: &str,
        show: impl FnMut(&str, &str),
    ) -> Result<Release, SandboxError> {
        let first = self.release(STABLE_TAG, profile, None, show).await?;
        if let Some(signal) = self.interrupt.get() {
            return Err(SandboxError::Interrupted(signal));
        }
        if first.exit_code != 0 {
            return Err(SandboxError::Bootstrap(format!(
                "the first release failed (exit {}); see its messages",
                first.exit_code
            )));
        }
        let serving = self
            .wait_for(Duration::from_secs(10), |n| {
                n.changes
                    .last()
                    .is_some_and(|c| c.primary.as_deref() == Some(STABLE_TAG) && c.canary.is_none())
            })
            .await;
        if !serving {
            return Err(SandboxError::Bootstrap(
                "the primary did not take the traffic after the first release".into(),
            ));
        }
        self.load.resume();
        tokio::select! {
            () = tokio::time::sleep(BASELINE) => Ok(first),
            signal = self.interrupt.wait() => Err(SandboxError::Interrupted(signal)),
        }
    }

    /// The version the primary side of the split runs now.
    pub fn primary_version(&self) -> Option<String> {
        let node = self.node.lock().ok()?;
        node.changes.last().and_then(|c| c.primary.clone())
    }

    /// Waits until `ok` holds for the node's state, up to `limit`.
    pub async fn wait_for(&self, limit: Duration, ok: impl Fn(&NodeState) -> bool) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if self.node.lock().is_ok_and(|n| ok(&n)) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    /// Stops the clients, the node (and its processes), the proxy and the metrics backend.
    pub async fn shutdown(self) -> Vec<load::Sample> {
        let samples = self.load.stop().await;
        let _ = self.stop.send(true);
        let _ = self.node_task.await;
        if let Ok(splitter) = Arc::try_unwrap(self.splitter) {
            splitter.shutdown().await;
        }
        if let Ok(metrics) = Arc::try_unwrap(self.metrics) {
            metrics.stop().await;
        }
        samples
    }
}

/// `binary` when it is an executable file; else a setup error naming the variable that can
/// point at it and the choice that needs none.
fn executable(binary: PathBuf, variable: &str, instead: &str) -> Result<PathBuf, SandboxError> {
    if aviary_kube::render::kustomize::is_executable(&binary) {
        Ok(binary)
    } else {
        Err(SandboxError::Setup(format!(
            "{} is not an executable file; point {variable} at one, unset it, or use {instead}",
            binary.display()
        )))
    }
}

/// The level and message of one of aviary's JSON log lines (the line itself when it is not
/// JSON).
fn parse_log_line(line: &str) -> (String, String) {
    match serde_json::from_str::<serde_json::Value>(line) {
        Ok(v) => (
            v.get("level")
                .and_then(|l| l.as_str())
                .unwrap_or("INFO")
                .to_string(),
            v.get("message")
                .and_then(|m| m.as_str())
                .unwrap_or_default()
                .to_string(),
        ),
        Err(_) => ("INFO".to_string(), line.to_string()),
    }
}

/// A process's peak resident set size (`VmHWM`) in KiB.
pub fn peak_rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// The time from a rollback's announcement to the moment after which every client request
/// was answered by `primary_version`: the send time of the last request after the decision
/// that the primary did not answer, minus the decision time (0 when there was none).
pub fn time_to_primary(samples: &[load::Sample], decided_ms: u64, primary_version: &str) -> u64 {
    samples
        .iter()
        .filter(|s| s.sent_ms >= decided_ms)
        .filter(|s| {
            s.version.as_deref() != Some(primary_version) || s.status >= 500 || s.status == 0
        })
        .map(|s| s.sent_ms - decided_ms)
        .max()
        .unwrap_or(0)
}

/// `aviary sandbox`.
pub fn run(args: &SandboxArgs) -> Result<Exit, SandboxError> {
    if args.scenario == Scenario::Ab && !args.router.matches_headers() {
        return Err(SandboxError::Usage {
            message: format!(
                "--scenario ab needs a router that can route by header; {} cannot",
                args.router.name()
            ),
            help: "use --router gatewayapi or --router istio".into(),
        });
    }
    let aviary = std::env::current_exe()?;
    let workdir = match &args.workdir {
        Some(dir) => dir.clone(),
        None => std::env::temp_dir().join(format!(
            "aviary-sandbox-{}-{}",
            std::process::id(),
            aviary_kube::runner::wall_ms()
        )),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let options = Options {
        router: args.router,
        metrics: args.metrics,
        proxy: args.proxy,
        aviary,
        workdir,
        rate: args.rate,
        tag_every: (args.scenario == Scenario::Ab).then_some(3),
    };
    runtime.block_on(async {
        // SIGINT and SIGTERM stop the sandbox in order from here on (see `signals`); before
        // this nothing has started.
        let interrupt = Interrupt::listen()?;
        run_scenario(args, options, interrupt).await
    })
}

async fn run_scenario(
    args: &SandboxArgs,
    options: Options,
    interrupt: Interrupt,
) -> Result<Exit, SandboxError> {
    let scenario = args.scenario;
    let mut out = std::io::stdout();
    let t0 = Instant::now();
    let stamp = move || format!("[{:>5.1}s]", t0.elapsed().as_secs_f64());
    writeln!(
        out,
        "aviary sandbox · scenario {} ({}) · router {}",
        scenario.name(),
        scenario.describe(),
        args.router.name()
    )?;
    // A signal while the components start is acted on once they have (a few seconds at most).
    let mut sandbox = Sandbox::start(options).await?;
    sandbox.stop_on(interrupt.clone());
    let workdir = sandbox.options.workdir.clone();
    writeln!(
        out,
        "  cluster  the Kubernetes API emulator at {} (kubeconfig {})",
        sandbox.emulator.url(),
        sandbox.kubeconfig.display()
    )?;
    writeln!(out, "  traffic  {}", sandbox.splitter.describe())?;
    writeln!(out, "  metrics  {}", sandbox.metrics.describe())?;
    writeln!(
        out,
        "  app      `aviary demo-app` processes, one per Deployment"
    )?;
    writeln!(
        out,
        "  clients  {} requests/s through the split{}",
        args.rate,
        if scenario == Scenario::Ab {
            ", every third with `x-canary: insider`"
        } else {
            ""
        }
    )?;
    writeln!(out, "  files    {}", workdir.display())?;

    let report_path = workdir.join("report.json");
    let second = match releases(&sandbox, args, &report_path, stamp).await {
        Ok(second) => second,
        Err(e) => {
            sandbox.shutdown().await;
            return Err(e);
        }
    };

    // Stopped by a signal: the rollout got it and returned the traffic to the primary before
    // it exited. The proxy follows within a sync period; then the clients see the primary
    // alone for a second, and only then do they, the demo apps, the proxy and the metrics
    // backend stop, in that order.
    let stopped = interrupt.get();
    let mut on_primary = true;
    if let Some(signal) = stopped {
        writeln!(
            out,
            "{} {} received: stopping{}",
            stamp(),
            signal.name(),
            match &second {
                Some(r) if r.interrupted.is_some() && r.exit_code == 130 => {
                    "; the rollout returned the traffic to the primary and exited 130".to_string()
                }
                Some(r) if r.interrupted.is_some() => {
                    format!("; the rollout exited {}", r.exit_code)
                }
                _ => String::new(),
            }
        )?;
        on_primary = sandbox
            .wait_for(Duration::from_secs(5), |n| {
                n.changes
                    .last()
                    .map_or(true, |c| c.canary_weight == 0 && c.matches == 0)
            })
            .await;
        if !on_primary {
            writeln!(
                out,
                "{} warning: the split still sends requests to the canary",
                stamp()
            )?;
        }
    }
    if sandbox.load.is_active() {
        let since = aviary_kube::runner::wall_ms();
        let (view, what) = match stopped {
            Some(_) if on_primary => (Duration::from_secs(1), "the traffic returned"),
            Some(_) => (Duration::from_secs(1), "the signal"),
            None => (Duration::from_millis(1500), "the release"),
        };
        tokio::select! {
            () = tokio::time::sleep(view) => {}
            _ = interrupt.wait(), if stopped.is_none() => {}
        }
        writeln!(
            out,
            "{} clients after {what}: {}",
            stamp(),
            describe_stats(&Stats::of(&sandbox.load.since(since)))
        )?;
    }
    let primary_after = sandbox.primary_version();
    let (problems, changes) = sandbox
        .node
        .lock()
        .map(|n| (n.problems.clone(), n.changes.clone()))
        .unwrap_or_default();
    let samples = sandbox.shutdown().await;
    std::fs::write(
        workdir.join("splits.json"),
        serde_json::to_string_pretty(&changes).map_err(std::io::Error::other)?,
    )?;
    std::fs::write(
        workdir.join("clients.json"),
        serde_json::to_string(&samples).map_err(std::io::Error::other)?,
    )?;

    // The verdict, and what a pipeline would get.
    writeln!(out)?;
    if let Some((signal, at_ms)) = interrupt.received() {
        writeln!(
            out,
            "stopped by {}; clients from the signal until they stopped: {}",
            signal.name(),
            describe_stats(&Stats::of(samples.iter().filter(|s| s.sent_ms >= at_ms)))
        )?;
    }
    if let Some(second) = &second {
        report_release(&mut out, args, second, &report_path, &workdir, &samples)?;
        if let Some(decided) = second.rollback_decided_ms {
            let primary = primary_after
                .clone()
                .unwrap_or_else(|| STABLE_TAG.to_string());
            writeln!(
                out,
                "rollback: clients were all on the primary ({primary}) {} ms after the decision",
                time_to_primary(&samples, decided, &primary)
            )?;
        }
        if let Some(kib) = second.peak_rss_kib {
            writeln!(
                out,
                "the rollout process peaked at {:.1} MiB resident",
                kib as f64 / 1024.0
            )?;
        }
    }
    for p in problems {
        writeln!(out, "sandbox problem: {p}")?;
    }
    if second.is_some() {
        writeln!(
            out,
            "report: {}\nsummary: {}",
            report_path.display(),
            workdir.join("summary.md").display()
        )?;
    }
    writeln!(
        out,
        "split log: {}\nclient log: {}",
        workdir.join("splits.json").display(),
        workdir.join("clients.json").display()
    )?;
    Ok(match (stopped.or(interrupt.get()), &second) {
        (Some(_), _) | (None, None) => Exit::Cancelled,
        (None, Some(second)) => Exit::from_code(second.exit_code),
    })
}

/// Release 1 (the bootstrap), then release 2, live. `None` when a signal stopped the sandbox
/// before release 2 began.
async fn releases(
    sandbox: &Sandbox,
    args: &SandboxArgs,
    report_path: &Path,
    stamp: impl Fn() -> String + Copy,
) -> Result<Option<Release>, SandboxError> {
    let scenario = args.scenario;
    let mut out = std::io::stdout();
    if sandbox.interrupt.get().is_some() {
        return Ok(None);
    }
    // Release 1: the bootstrap. aviary creates the primary and routes all traffic to it.
    writeln!(
        out,
        "\n{} release 1: {IMAGE}:{STABLE_TAG} (first release: the primary is created)",
        stamp()
    )?;
    match sandbox
        .bootstrap(scenario.profile(), |_, message| {
            println!("{} {message}", stamp())
        })
        .await
    {
        Ok(_) => {}
        Err(SandboxError::Interrupted(_)) => return Ok(None),
        Err(e) => return Err(e),
    }
    let before = aviary_kube::runner::wall_ms();
    writeln!(
        out,
        "{} clients: {}",
        stamp(),
        describe_stats(&Stats::of(&sandbox.load.since(before.saturating_sub(3000))))
    )?;

    if scenario == Scenario::Flaky {
        sandbox.make_api_flaky();
        writeln!(out, "{} the API server now fails 10% of the requests in {NAMESPACE} (503, 409 on PATCH, slow GETs)", stamp())?;
    }

    // Release 2: the scenario's version, live.
    let tag = scenario.tag();
    writeln!(
        out,
        "\n{} release 2: {IMAGE}:{tag} ({})",
        stamp(),
        scenario.describe()
    )?;
    let live = {
        let node = sandbox.node.clone();
        let samples = &sandbox.load;
        let mut last_line = Instant::now();
        let mut last_weight: Option<u8> = None;
        move |_: &str, message: &str| {
            println!("{} {message}", stamp());
            let weight = node
                .lock()
                .ok()
                .and_then(|n| n.changes.last().map(|c| c.canary_weight));
            if last_line.elapsed() >= Duration::from_millis(900) || weight != last_weight {
                let window = samples.since(aviary_kube::runner::wall_ms().saturating_sub(2000));
                println!(
                    "{}   ↳ split: canary {}% · clients (last 2s): {}",
                    stamp(),
                    weight.unwrap_or(0),
                    describe_stats(&Stats::of(&window))
                );
                last_line = Instant::now();
                last_weight = weight;
            }
        }
    };
    match sandbox
        .release(tag, scenario.profile(), Some(report_path), live)
        .await
    {
        Ok(second) => Ok(Some(second)),
        Err(SandboxError::Interrupted(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The verdict of release 2 and the files a pipeline would get.
fn report_release(
    out: &mut impl std::io::Write,
    args: &SandboxArgs,
    second: &Release,
    report_path: &Path,
    workdir: &Path,
    samples: &[load::Sample],
) -> Result<(), SandboxError> {
    let scenario = args.scenario;
    match &second.report {
        Some(report) => {
            writeln!(
                out,
                "verdict: {} (exit {}) — {}",
                report.verdict.as_str(),
                second.exit_code,
                report.headline()
            )?;
            let summary = aviary_core::report::summary::markdown(report, &[]);
            std::fs::write(workdir.join("summary.md"), summary)?;
            if let Some(extra) = &args.report {
                std::fs::copy(report_path, extra)?;
            }
            if report.verdict != scenario.expected()
                && report.verdict != aviary_core::report::Verdict::Cancelled
            {
                writeln!(
                    out,
                    "note: the {} scenario is expected to end {}",
                    scenario.name(),
                    scenario.expected().as_str()
                )?;
            }
        }
        None => writeln!(
            out,
            "verdict: none (exit {}): the rollout wrote no report",
            second.exit_code
        )?,
    }
    writeln!(
        out,
        "release 2 took {:.1}s; clients during it: {}",
        second.wall.as_secs_f64(),
        describe_stats(&Stats::of(samples.iter().filter(|s| {
            (second.started_ms..=second.ended_ms).contains(&s.sent_ms)
        })))
    )?;
    Ok(())
}

fn describe_stats(s: &Stats) -> String {
    if s.requests == 0 {
        return "no requests".into();
    }
    let versions: Vec<String> = s
        .versions
        .keys()
        .map(|v| format!("{v} {:.0}%", s.share(v)))
        .collect();
    format!(
        "{} req · {} · errors {:.1}% · p99 {:.0} ms",
        s.requests,
        if versions.is_empty() {
            "no version".to_string()
        } else {
            versions.join(", ")
        },
        s.error_rate(),
        s.p99_ms
    )
}
