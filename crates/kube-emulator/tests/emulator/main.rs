//! Tests of the emulator through the real kube-rs client, connected the way the product
//! connects: from a kubeconfig file.

mod api;
mod apply;
mod controllers;
mod discovery;
mod faults;
mod kubectl_apply;
mod kubectl_get;
mod openapi;
mod watch;

use std::sync::atomic::{AtomicU64, Ordering};

use kube::config::{KubeConfigOptions, Kubeconfig};
use kube_emulator::{Config, Emulator};

pub type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// A kube client built from the emulator's kubeconfig written to a file.
pub async fn client_for(
    emu: &Emulator,
    namespace: &str,
) -> Result<kube::Client, Box<dyn std::error::Error + Send + Sync>> {
    Ok(kube::Client::try_from(config_for(emu, namespace).await?)?)
}

pub async fn config_for(
    emu: &Emulator,
    namespace: &str,
) -> Result<kube::Config, Box<dyn std::error::Error + Send + Sync>> {
    static N: AtomicU64 = AtomicU64::new(0);
    let path = std::env::temp_dir().join(format!(
        "kube-emulator-test-{}-{}.yaml",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    emu.write_kubeconfig(&path, namespace)?;
    let kubeconfig = Kubeconfig::read_from(&path)?;
    let _ = std::fs::remove_file(&path);
    Ok(kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?)
}

/// An emulator with namespaces `default` and `test`, and a client for `test`.
pub async fn setup() -> Result<(Emulator, kube::Client), Box<dyn std::error::Error + Send + Sync>> {
    let emu = Emulator::start(Config {
        namespaces: vec!["default".into(), "test".into()],
        ..Config::default()
    })
    .await?;
    let client = client_for(&emu, "test").await?;
    Ok((emu, client))
}

/// The API error of a failed call.
pub fn api_error<T: std::fmt::Debug>(r: Result<T, kube::Error>) -> kube::core::Status {
    match r {
        Err(kube::Error::Api(s)) => *s,
        other => panic!("expected an API error, got {other:?}"),
    }
}

/// Polls `f` until it returns Some or the timeout passes.
pub async fn eventually<T, F, Fut>(timeout: std::time::Duration, mut f: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return Some(v);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
}

pub fn deployment_json(name: &str, image: &str) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": {"app": name, "tier": "web"}},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": image, "ports": [{"containerPort": 9898, "name": "http"}]}]}
            }
        }
    })
}
