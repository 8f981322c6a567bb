//! aviary's world-facing layer: everything that talks to a cluster, a metrics backend, a
//! webhook, a file or a `kustomize` process, and the runner that carries the core's engine out.
//!
//! - [`cluster`] connects (kubeconfig, contexts, timeouts, retries); [`workload`] makes and copies
//!   the primary and canary workloads; [`routing`] has one file per router (Gateway API, Istio,
//!   Gloo, NGINX Ingress, plain Kubernetes); [`state`] and [`lease`] keep a rollout's state and its
//!   one runner in the cluster.
//! - [`metrics`] answers the engine's metric queries through the [`metrics::MetricsProvider`]
//!   seam; [`webhooks`] calls Flagger-style webhooks; [`http`] holds the limits every outbound
//!   call obeys (deadlines, body caps, redaction).
//! - [`render`] turns a Skaffold/Kustomize project into objects; [`deploy`] applies them and
//!   waits; [`files`] reads every input file under one cap.
//! - [`runner`] is the shell around `aviary_core::engine`: it executes the engine's commands
//!   against the cluster, answers its requests, and stops cleanly on a signal, a timeout or a
//!   lost lease; [`signals`] records SIGTERM/SIGINT for the whole process from its start.
//!
//! Data flows one way: this crate uses `aviary_core`, never the hosts or the binary.

pub mod cluster;
pub mod deploy;
pub mod events;
pub mod files;
pub mod http;
pub mod lease;
pub mod metrics;
pub mod render;
pub mod routing;
pub mod runner;
pub mod signals;
pub mod state;
pub mod webhooks;
pub mod workload;

/// The async runtime of one command (a cluster command, a host's API calls): two workers, all
/// drivers. One per process.
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
}

#[cfg(test)]
pub(crate) mod testing {
    //! What the crate's tests against the API server emulator share.

    use std::time::Duration;

    use kube_emulator::{Config, Emulator};

    /// An emulated API server with the namespace `test` (Deployments ready after
    /// `ready_delay`) and a client connected through its kubeconfig (written in a temporary
    /// directory, gone once the client has read it).
    pub(crate) async fn emulated(ready_delay: Duration) -> (Emulator, kube::Client) {
        let config = Config {
            deployment_ready_delay: ready_delay,
            namespaces: vec!["test".into()],
            ..Config::default()
        };
        let emu = match Emulator::start(config).await {
            Ok(e) => e,
            Err(e) => panic!("emulator: {e}"),
        };
        let dir = match tempfile::tempdir() {
            Ok(d) => d,
            Err(e) => panic!("temp dir: {e}"),
        };
        let kubeconfig = dir.path().join("kubeconfig");
        if let Err(e) = emu.write_kubeconfig(&kubeconfig, "test") {
            panic!("kubeconfig: {e}");
        }
        match crate::cluster::connect(Some(&kubeconfig), None, Duration::from_secs(5)).await {
            Ok((client, _)) => (emu, client),
            Err(e) => panic!("connect: {e}"),
        }
    }
}
