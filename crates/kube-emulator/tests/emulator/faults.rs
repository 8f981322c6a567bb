//! Fault injection, the request log, and the blocking start-up.

use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, ListParams, PostParams};
use kube_emulator::{Config, Emulator, Fault, FaultKind};
use serde_json::json;

use crate::{api_error, client_for, config_for, setup, TestResult};

fn fault(path_regex: &str, probability: f64, kind: FaultKind) -> Fault {
    Fault {
        method: Some("GET".into()),
        path_regex: path_regex.into(),
        probability,
        kind,
        seed: 7,
    }
}

#[tokio::test]
async fn injected_status_faults_reach_the_client() -> TestResult {
    let (emu, _) = setup().await?;
    // kube's default client retries 503s for minutes; this one reports the first answer.
    let mut config = config_for(&emu, "test").await?;
    config.default_retry = false;
    let client = kube::Client::try_from(config)?;
    let api: Api<ConfigMap> = Api::default_namespaced(client);

    emu.set_faults(vec![fault(
        "^/api/v1/namespaces/test/configmaps$",
        1.0,
        FaultKind::Status(503),
    )]);
    let err = api_error(api.list(&ListParams::default()).await);
    assert_eq!((err.code, err.reason.as_str()), (503, "ServiceUnavailable"));
    // Other paths and methods are untouched.
    api.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "a"}}))?,
    )
    .await?;

    emu.set_faults(vec![fault("configmaps/a$", 1.0, FaultKind::Status(409))]);
    let err = api_error(api.get("a").await);
    assert_eq!((err.code, err.reason.as_str()), (409, "Conflict"));
    assert!(
        err.message
            .starts_with("Operation cannot be fulfilled on configmaps \"a\""),
        "{}",
        err.message
    );

    emu.set_faults(Vec::new());
    assert_eq!(api.list(&ListParams::default()).await?.items.len(), 1);

    let log = emu.requests();
    let injected: Vec<_> = log.iter().filter(|r| r.injected_fault).collect();
    assert_eq!(injected.len(), 2);
    assert_eq!(
        (injected[0].method.as_str(), injected[0].status),
        ("GET", 503)
    );
    Ok(())
}

#[tokio::test]
async fn default_client_retries_through_intermittent_faults() -> TestResult {
    let (emu, client) = setup().await?;
    let api: Api<ConfigMap> = Api::default_namespaced(client);
    emu.set_faults(vec![fault("/configmaps$", 0.5, FaultKind::Status(503))]);
    for _ in 0..5 {
        api.list(&ListParams::default()).await?;
    }
    let log = emu.requests();
    let lists = log.iter().filter(|r| r.path.ends_with("/configmaps"));
    let (faulted, ok): (Vec<_>, Vec<_>) = lists.partition(|r| r.injected_fault);
    assert_eq!(ok.len(), 5);
    assert!(!faulted.is_empty(), "seed 7 at 50% injects some faults");
    assert!(faulted.iter().all(|r| r.status == 503));
    Ok(())
}

#[tokio::test]
async fn latency_and_timeout_faults() -> TestResult {
    let (emu, _) = setup().await?;
    let mut config = config_for(&emu, "test").await?;
    config.default_retry = false;
    config.read_timeout = Some(Duration::from_millis(500));
    let client = kube::Client::try_from(config)?;
    let api: Api<ConfigMap> = Api::default_namespaced(client);

    emu.set_faults(vec![fault(
        "/configmaps$",
        1.0,
        FaultKind::Latency(Duration::from_millis(200)),
    )]);
    let start = std::time::Instant::now();
    api.list(&ListParams::default()).await?;
    assert!(start.elapsed() >= Duration::from_millis(200));

    emu.set_faults(vec![fault("/configmaps$", 1.0, FaultKind::Timeout)]);
    let start = std::time::Instant::now();
    let r = api.list(&ListParams::default()).await;
    assert!(r.is_err(), "the client gives up: {r:?}");
    assert!(start.elapsed() < Duration::from_secs(10));
    Ok(())
}

#[tokio::test]
async fn request_log_records_method_path_status_and_body() -> TestResult {
    let (emu, client) = setup().await?;
    emu.clear_requests();
    let api: Api<ConfigMap> = Api::default_namespaced(client);
    api.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "logged"}}))?,
    )
    .await?;
    let _ = api.get("absent").await;
    let log = emu.requests();
    assert_eq!(log.len(), 2);
    assert_eq!(
        (log[0].method.as_str(), log[0].path.as_str(), log[0].status),
        ("POST", "/api/v1/namespaces/test/configmaps", 201)
    );
    assert_eq!(log[0].content_type.as_deref(), Some("application/json"));
    assert_eq!(
        log[0].body.as_ref().map(|b| b["metadata"]["name"].clone()),
        Some(json!("logged"))
    );
    assert_eq!(
        (log[1].method.as_str(), log[1].path.as_str(), log[1].status),
        ("GET", "/api/v1/namespaces/test/configmaps/absent", 404)
    );
    assert!(!log[1].injected_fault);
    emu.clear_requests();
    assert!(emu.requests().is_empty());
    Ok(())
}

#[test]
fn blocking_emulator_serves_other_runtimes() -> TestResult {
    let emu = Emulator::start_blocking(Config::default())?;
    let inserted = emu.insert(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "seeded"}, "data": {"a": "b"}}))?;
    assert!(inserted["metadata"]["uid"].is_string());
    assert!(emu
        .insert(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "seeded"}}))
        .is_err());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let client = client_for(&emu, "default").await?;
        let cms: Api<ConfigMap> = Api::default_namespaced(client.clone());
        let got = cms.get("seeded").await?;
        assert_eq!(
            got.data.and_then(|d| d.get("a").cloned()).as_deref(),
            Some("b")
        );
        let namespaces: Api<Namespace> = Api::all(client);
        let ns = namespaces.get("default").await?;
        assert_eq!(ns.status.and_then(|s| s.phase).as_deref(), Some("Active"));
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
    })?;
    let url = emu.url();
    drop(emu);
    // The server is gone after drop.
    let addr = url.trim_start_matches("http://");
    assert!(std::net::TcpStream::connect_timeout(
        &addr.parse().map_err(|e| format!("{e}"))?,
        Duration::from_millis(200)
    )
    .is_err());
    Ok(())
}

#[tokio::test]
async fn binary_writes_a_kubeconfig_and_serves() -> TestResult {
    use std::io::BufRead;
    let path = std::env::temp_dir().join(format!("kube-emulator-bin-{}.yaml", std::process::id()));
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_kube-emulator"))
        .args([
            "--kubeconfig",
            &path.display().to_string(),
            "--namespace",
            "canary",
            "--ready-delay-ms",
            "10",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    let result = async {
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut line = String::new();
        std::io::BufReader::new(stdout).read_line(&mut line)?;
        assert!(line.starts_with("http://127.0.0.1:"), "{line}");
        let kubeconfig = kube::config::Kubeconfig::read_from(&path)?;
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?;
        assert_eq!(config.default_namespace, "canary");
        let client = kube::Client::try_from(config)?;
        let namespaces: Api<Namespace> = Api::all(client);
        let names: Vec<String> = namespaces
            .list(&ListParams::default())
            .await?
            .items
            .into_iter()
            .filter_map(|n| n.metadata.name)
            .collect();
        assert_eq!(names, ["canary", "default"]);
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
    }
    .await;
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_file(&path);
    result
}
