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
//! With `--services N` (N > 1) the sandbox runs N services side by side ([`SERVICES`]):
//! podinfo, the shipped example, and services derived from it by name (see
//! [`write_services`]), each with its own Deployment, Canary, split, clients and metrics, and
//! releases all of them in one `aviary rollout` run under a verdict policy. Only the second
//! service gets the scenario's version; the others get its healthy base (`2.0.0`).
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

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kube_emulator::Emulator;
use splitter::{Engine, Splitter};

use kubelet::{Node, NodeState, Routed};
use load::{Load, LoadConfig, TaggedRequests};
use metrics::{MetricsBackend, MetricsChoice};

pub use args::{Policy, SandboxArgs, Scenario};
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
/// The services of `aviary sandbox --services N`: the first N of these. The first is the
/// shipped example's.
pub const SERVICES: [&str; 5] = [CANARY, "cart", "search", "checkout", "ledger"];
/// The most services a sandbox runs.
pub const MAX_SERVICES: usize = SERVICES.len();

/// One service of the sandbox: a Deployment and its Canary of the same name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    pub name: String,
    /// The image its Deployment runs (its tag is the release's version).
    pub image: String,
    /// The host its clients ask for.
    pub host: String,
    /// Its preview host (`service.previewHosts`), which only its canary serves.
    pub preview_host: String,
}

impl Service {
    /// The `index`-th of [`SERVICES`] (the first is the shipped example's podinfo).
    pub fn nth(index: usize) -> Service {
        let name = SERVICES[index.min(MAX_SERVICES - 1)];
        Service {
            name: name.to_string(),
            image: if index == 0 {
                IMAGE.to_string()
            } else {
                format!("ghcr.io/aviary-dev/{name}")
            },
            host: format!("{name}.example.com"),
            preview_host: format!("canary.{name}.example.com"),
        }
    }
}

/// A further service's split and clients (the first service's are [`Sandbox::splitter`] and
/// [`Sandbox::load`]).
pub struct ServiceTraffic {
    pub service: Service,
    pub splitter: Arc<Splitter>,
    pub load: Load,
}

/// Which of `n` services gets a release's own version: the second when there are several
/// (the first, podinfo, stays the example as it always was), else the only one.
pub fn bad_service(n: usize) -> usize {
    usize::from(n > 1)
}

/// The healthy base of a demo version: `2.0.0-errors` → `2.0.0` (the tag without the
/// behaviour its suffix picks, see [`app::Behaviour::from_image`]).
pub fn healthy(tag: &str) -> &str {
    tag.split_once('-').map_or(tag, |(base, _)| base)
}

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
    /// How many services (1 to [`MAX_SERVICES`]), released together.
    pub services: usize,
    /// How their verdicts combine (passed on as `aviary rollout --verdict-policy` when there
    /// are several).
    pub verdict_policy: Policy,
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
    /// The first service's split.
    pub splitter: Arc<Splitter>,
    pub metrics: Arc<MetricsBackend>,
    pub node: Arc<Mutex<NodeState>>,
    /// The first service's clients.
    pub load: Load,
    /// Every further service's split and clients (`--services N`).
    pub others: Vec<ServiceTraffic>,
    pub options: Options,
    pub kubeconfig: PathBuf,
    /// The example project, written out.
    pub example: PathBuf,
    /// The Skaffold file the rollouts render: the example's `skaffold.yaml`, or with several
    /// services `services.yaml`, which requires it and every further service's config.
    pub skaffold_file: PathBuf,
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
        if !(1..=MAX_SERVICES).contains(&options.services) {
            return Err(SandboxError::Usage {
                message: format!("--services {}: out of range", options.services),
                help: format!("run 1 to {MAX_SERVICES} services"),
            });
        }
        std::fs::create_dir_all(&options.workdir)?;
        let example = options.workdir.join("example");
        for (path, text) in EXAMPLE {
            let file = example.join(path);
            if let Some(dir) = file.parent() {
                std::fs::create_dir_all(dir)?;
            }
            std::fs::write(file, text)?;
        }
        let services: Vec<Service> = (0..options.services).map(Service::nth).collect();
        let skaffold_file = if services.len() > 1 {
            write_services(&example, &services)?
        } else {
            example.join("skaffold.yaml")
        };
        let emulator = Emulator::start(kube_emulator::Config {
            deployment_ready_delay: Duration::from_millis(300),
            namespaces: vec![NAMESPACE.to_string(), "gateway-system".to_string()],
            ..kube_emulator::Config::default()
        })
        .await?;
        let kubeconfig = options.workdir.join("kubeconfig");
        emulator.write_kubeconfig(&kubeconfig, NAMESPACE)?;
        let metrics = MetricsBackend::start(prometheus.as_deref(), &options.workdir).await?;
        // One split per service: the first's in `split`, the others' in `split-<name>`.
        let mut splitters = Vec::new();
        for (i, service) in services.iter().enumerate() {
            let split_dir = match i {
                0 => options.workdir.join("split"),
                _ => options.workdir.join(format!("split-{}", service.name)),
            };
            std::fs::create_dir_all(&split_dir)?;
            let splitter = Splitter::start(splitter::Options {
                engine: engine.clone(),
                workdir: split_dir,
                match_headers: vec!["x-canary".to_string(), "cookie".to_string()],
            })
            .await
            .map_err(|e| match e {
                // The one thing the user chose that HAProxy can refuse: the work directory.
                splitter::Error::Invalid { .. } => SandboxError::Setup(format!("--workdir: {e}")),
                other if i == 0 => SandboxError::Split(other.to_string()),
                other => SandboxError::Split(format!("{}: {other}", service.name)),
            })?;
            splitters.push(Arc::new(splitter));
        }
        let emulator = Arc::new(emulator);
        let metrics = Arc::new(metrics);
        let node_state = Arc::new(Mutex::new(NodeState::default()));
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let node = Node {
            emulator: emulator.clone(),
            namespace: NAMESPACE.to_string(),
            services: services
                .iter()
                .zip(&splitters)
                .map(|(service, splitter)| Routed {
                    name: service.name.clone(),
                    splitter: splitter.clone(),
                })
                .collect(),
            router: options.router,
            app_binary: options.aviary.clone(),
            metrics: metrics.clone(),
            state: node_state.clone(),
        };
        let node_task = tokio::spawn(node.run(stopped));
        let mut traffic = Vec::new();
        for (service, splitter) in services.into_iter().zip(splitters) {
            let load = Load::start(LoadConfig {
                target: splitter.addr(),
                host: service.host.clone(),
                rate: options.rate,
                concurrency: 16,
                tagged: options.tag_every.map(|every| TaggedRequests {
                    every,
                    header: "x-canary".into(),
                    value: "insider".into(),
                }),
                preview: options.preview_every.map(|every| load::PreviewRequests {
                    every,
                    host: service.preview_host.clone(),
                }),
            })
            .map_err(|e| {
                std::io::Error::other(format!("cannot start the clients of {}: {e}", service.name))
            })?;
            traffic.push(ServiceTraffic {
                service,
                splitter,
                load,
            });
        }
        let mut traffic = traffic.into_iter();
        let Some(first) = traffic.next() else {
            return Err(SandboxError::Setup("no service to run".into()));
        };
        Ok(Sandbox {
            emulator,
            splitter: first.splitter,
            metrics,
            node: node_state,
            load: first.load,
            others: traffic.collect(),
            options,
            kubeconfig,
            example,
            skaffold_file,
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
        let names = self.service_names();
        let serving = self
            .wait_for(Duration::from_secs(10), |n| {
                names.iter().all(|name| {
                    n.changes_of(name).last().is_some_and(|c| {
                        c.primary.as_deref() == Some(STABLE_TAG) && c.canary.is_none()
                    })
                })
            })
            .await;
        if !serving {
            return Err(SandboxError::Bootstrap(if names.len() == 1 {
                "the primary did not take the traffic after the first release".into()
            } else {
                "the primaries did not all take the traffic after the first release".into()
            }));
        }
        for (_, load) in self.loads() {
            load.resume();
        }
        tokio::select! {
            () = tokio::time::sleep(BASELINE) => Ok(first),
            signal = self.interrupt.wait() => Err(SandboxError::Interrupted(signal)),
        }
    }

    /// The version the primary side of the split runs now.
    pub fn primary_version(&self) -> Option<String> {
        self.primary_version_of(CANARY)
    }

    /// The version the primary side of the service `name`'s split runs now.
    pub fn primary_version_of(&self, name: &str) -> Option<String> {
        let node = self.node.lock().ok()?;
        node.changes_of(name).last().and_then(|c| c.primary.clone())
    }

    /// Every service, the first one first.
    pub fn services(&self) -> Vec<Service> {
        (0..self.options.services).map(Service::nth).collect()
    }

    /// The names of every service, the first one first.
    pub fn service_names(&self) -> Vec<String> {
        self.services().into_iter().map(|s| s.name).collect()
    }

    /// Every service's clients, the first one's first.
    pub fn loads(&self) -> Vec<(&str, &Load)> {
        std::iter::once((CANARY, &self.load))
            .chain(
                self.others
                    .iter()
                    .map(|t| (t.service.name.as_str(), &t.load)),
            )
            .collect()
    }

    /// The version each service gets in a release of `tag`: the one at [`bad_service`] gets
    /// `tag` itself, the others its [`healthy`] base.
    pub fn versions(&self, tag: &str) -> Vec<(Service, String)> {
        let n = self.options.services;
        self.services()
            .into_iter()
            .enumerate()
            .map(|(i, s)| {
                let version = if i == bad_service(n) {
                    tag
                } else {
                    healthy(tag)
                };
                (s, version.to_string())
            })
            .collect()
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

    /// Stops the clients, the node (and its processes), the proxy and the metrics backend;
    /// returns the first service's client samples.
    pub async fn shutdown(self) -> Vec<load::Sample> {
        self.shutdown_services()
            .await
            .into_iter()
            .next()
            .map(|(_, samples)| samples)
            .unwrap_or_default()
    }

    /// Stops everything as [`Sandbox::shutdown`] does; returns every service's client
    /// samples, the first service's first.
    pub async fn shutdown_services(self) -> Vec<(String, Vec<load::Sample>)> {
        let mut all = vec![(CANARY.to_string(), self.load.stop().await)];
        let mut splitters = vec![self.splitter];
        for t in self.others {
            all.push((t.service.name, t.load.stop().await));
            splitters.push(t.splitter);
        }
        let _ = self.stop.send(true);
        let _ = self.node_task.await;
        for splitter in splitters {
            if let Ok(splitter) = Arc::try_unwrap(splitter) {
                splitter.shutdown().await;
            }
        }
        if let Ok(metrics) = Arc::try_unwrap(self.metrics) {
            metrics.stop().await;
        }
        all
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

/// Writes the project of a release of several services into `example` (which holds the
/// shipped example, podinfo) and returns its root Skaffold file, `services.yaml`: it requires
/// the example's `skaffold.yaml` and, for every further service, `services/<name>/`, a copy
/// of the example renamed to the service (its Deployment, Canaries, hosts and image).
pub fn write_services(example: &Path, services: &[Service]) -> Result<PathBuf, SandboxError> {
    let mut root = format!(
        "# Written by `aviary sandbox --services {}`: the shipped example (podinfo) and, in\n\
         # services/, a copy of it for every further service, released together by one\n\
         # `aviary rollout`. The profiles (`prod`, `prod-ab`) apply to every config that has them.\n\
         apiVersion: skaffold/v4beta11\nkind: Config\nmetadata:\n  name: services\nrequires:\n  - path: skaffold.yaml\n",
        services.len()
    );
    for service in services.iter().skip(1) {
        let dir = example.join("services").join(&service.name);
        std::fs::create_dir_all(dir.join("k8s"))?;
        for (path, text) in EXAMPLE {
            let derived = derive(path, text, service)?;
            std::fs::write(dir.join(path), derived)?;
        }
        root.push_str(&format!(
            "  - path: services/{}/skaffold.yaml\n",
            service.name
        ));
    }
    let file = example.join("services.yaml");
    std::fs::write(&file, root)?;
    Ok(file)
}

/// One file of the shipped example, renamed for `service`.
fn derive(path: &str, text: &str, service: &Service) -> Result<String, SandboxError> {
    // Each replacement must find what it replaces: an example changed under it is an error
    // that names the file, not a service that silently renders as podinfo.
    let replace = |text: &str, from: &str, to: &str| {
        if text.contains(from) {
            Ok(text.replace(from, to))
        } else {
            Err(SandboxError::Setup(format!(
                "examples/sandbox/{path}: no {from:?} to rename for the service {}",
                service.name
            )))
        }
    };
    let image_line = |indent: &str| format!("{indent}image: {IMAGE}\n");
    let derived = match path {
        "skaffold.yaml" => {
            let t = replace(
                text,
                "\n  name: demo\n",
                &format!("\n  name: {}\n", service.name),
            )?;
            replace(
                &t,
                &image_line("    - "),
                &format!("    - image: {}\n", service.image),
            )?
        }
        "k8s/deployment.yaml" => {
            let t = replace(
                text,
                &image_line("          "),
                &format!("          image: {}\n", service.image),
            )?;
            replace(&t, CANARY, &service.name)?
        }
        _ => replace(text, CANARY, &service.name)?,
    };
    Ok(format!(
        "# The sandbox's service {}: examples/sandbox/{path} renamed.\n{derived}",
        service.name
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bad_service_and_the_healthy_base() {
        assert_eq!(bad_service(1), 0);
        assert_eq!(bad_service(3), 1);
        assert_eq!(healthy("2.0.0-errors"), "2.0.0");
        assert_eq!(healthy("2.0.0"), "2.0.0");
        assert_eq!(Service::nth(0).image, IMAGE);
        assert_eq!(Service::nth(2).host, "search.example.com");
    }

    /// The project of three services renders, with every service's own Deployment, image and
    /// Canary, and nothing of a further service still named podinfo.
    #[test]
    fn three_services_render_each_with_its_own_names_and_image() {
        let dir = std::env::temp_dir().join(format!(
            "aviary-sandbox-services-{}-{}",
            std::process::id(),
            aviary_kube::runner::wall_ms()
        ));
        let example = dir.join("example");
        for (path, text) in EXAMPLE {
            let file = example.join(path);
            std::fs::create_dir_all(file.parent().unwrap()).unwrap();
            std::fs::write(file, text).unwrap();
        }
        let services: Vec<Service> = (0..3).map(Service::nth).collect();
        let root = write_services(&example, &services).unwrap();
        let cart = std::fs::read_to_string(example.join("services/cart/k8s/canary.yaml")).unwrap();
        let text: String = cart.lines().skip(1).collect::<Vec<_>>().join("\n");
        assert!(!text.contains("podinfo"), "{cart}");
        assert!(text.contains("canary.cart.example.com"), "{cart}");
        let rendered = aviary_kube::render::render(&aviary_kube::render::RenderOptions {
            skaffold_file: root,
            target: "prod".into(),
            profile: Some("prod".into()),
            images: services
                .iter()
                .map(|s| (s.image.clone(), format!("{}:2.0.0", s.image)))
                .collect(),
            build_artifacts: None,
        });
        let _ = std::fs::remove_dir_all(&dir);
        let rendered = rendered.unwrap();
        assert!(rendered.warnings.is_empty(), "{:?}", rendered.warnings);
        let mut deployments: Vec<(String, String)> = rendered
            .objects
            .iter()
            .filter(|o| o["kind"] == "Deployment")
            .map(|o| {
                (
                    o["metadata"]["name"].as_str().unwrap_or("").to_string(),
                    o["spec"]["template"]["spec"]["containers"][0]["image"]
                        .as_str()
                        .unwrap_or("")
                        .to_string(),
                )
            })
            .collect();
        deployments.sort();
        assert_eq!(
            deployments,
            [
                (
                    "cart".to_string(),
                    "ghcr.io/aviary-dev/cart:2.0.0".to_string()
                ),
                ("podinfo".to_string(), format!("{IMAGE}:2.0.0")),
                (
                    "search".to_string(),
                    "ghcr.io/aviary-dev/search:2.0.0".to_string()
                ),
            ]
        );
        let mut canaries: Vec<(&str, &str)> = rendered
            .canary_docs
            .iter()
            .map(|c| {
                (
                    c["metadata"]["name"].as_str().unwrap_or(""),
                    c["spec"]["service"]["hosts"][0].as_str().unwrap_or(""),
                )
            })
            .collect();
        canaries.sort_unstable();
        assert_eq!(
            canaries,
            [
                ("cart", "cart.example.com"),
                ("podinfo", "podinfo.example.com"),
                ("search", "search.example.com"),
            ]
        );
    }

    #[test]
    fn a_changed_example_is_an_error_naming_the_file() {
        let e = derive(
            "k8s/deployment.yaml",
            "kind: Deployment\n",
            &Service::nth(1),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("examples/sandbox/k8s/deployment.yaml") && e.contains("cart"),
            "{e}"
        );
    }
}
