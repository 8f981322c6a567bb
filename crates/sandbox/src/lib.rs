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
//!
//! The library is here and in `release.rs` (one release, [`Sandbox::release`]); the
//! `aviary sandbox` command and its live view ([`run`]) are in `command.rs`, its arguments
//! ([`SandboxArgs`], [`Scenario`]) in `args.rs`.

pub mod app;
pub mod kubelet;
pub mod load;
pub mod metrics;
pub mod routes;
pub mod signals;

mod args;
mod command;
mod release;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kube_emulator::Emulator;
use splitter::{Engine, Splitter};

use kubelet::{Node, NodeState};
use load::{Load, LoadConfig, TaggedRequests};
use metrics::{MetricsBackend, MetricsChoice};

pub use args::{SandboxArgs, Scenario};
pub use command::run;
pub use release::{peak_rss, time_to_primary, Release};
pub use routes::Router;
pub use signals::{Interrupt, StopSignal};

/// The namespace and name of the example's Canary.
pub const NAMESPACE: &str = "prod";
pub const CANARY: &str = "podinfo";
/// The example's preview host (`service.previewHosts`): its requests always reach the canary.
pub const PREVIEW_HOST: &str = "canary.podinfo.example.com";
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
    /// Every n-th client request goes to [`PREVIEW_HOST`] (recorded apart: see
    /// [`load::Load::previews_since`]).
    pub preview_every: Option<u32>,
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
            preview: options.preview_every.map(|every| load::PreviewRequests {
                every,
                host: PREVIEW_HOST.into(),
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
