//! The shell's loop (`rollout` → `drive`) against the API emulator, in-process: what it applies,
//! when it promotes, and that a revision applied during the analysis restarts it.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, Patch, PatchParams};
use kube_emulator::Emulator;
use serde_json::json;

use super::*;
use crate::metrics::Auth;

const CANARY: &str = "
apiVersion: aviary.dev/v1alpha1
kind: Canary
metadata: {name: podinfo, namespace: test}
spec:
  provider: kubernetes:replicas
  targetRef: {apiVersion: apps/v1, kind: Deployment, name: podinfo}
  service: {port: 9898}
  analysis: {interval: 1s, threshold: 2, maxWeight: 50, stepWeight: 25}
";

fn deployment(image: &str) -> serde_json::Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "podinfo", "namespace": "test", "labels": {"app": "podinfo"}},
        "spec": {
            "replicas": 4,
            "selector": {"matchLabels": {"app": "podinfo"}},
            "template": {
                "metadata": {"labels": {"app": "podinfo"}},
                "spec": {"containers": [{"name": "podinfo", "image": image}]}
            }
        }
    })
}

fn options() -> Options {
    Options {
        provider: Provider::KubernetesReplicas,
        poll: Duration::from_millis(100),
        templates: Vec::new(),
        prometheus: None,
        prometheus_auth: Auth::None,
        log: aviary_core::report::Log::new(),
        phase: None,
        release: None,
        controls: None,
        http: crate::http::Clients::default(),
    }
}

struct Cluster {
    emu: Emulator,
    client: Client,
}

async fn cluster() -> Cluster {
    let (emu, client) = crate::testing::emulated(Duration::from_millis(50)).await;
    Cluster { emu, client }
}

fn canary() -> Canary {
    match aviary_core::spec::load_str("canary.yaml", CANARY) {
        Ok(mut docs) if docs.canaries.len() == 1 => docs.canaries.remove(0),
        Ok(docs) => panic!("{} canaries", docs.canaries.len()),
        Err(e) => panic!("{e}"),
    }
}

async fn set_image(client: &Client, image: &str) {
    let api: Api<Deployment> = Api::namespaced(client.clone(), "test");
    let patch = Patch::Apply(deployment(image));
    if let Err(e) = api
        .patch("podinfo", &PatchParams::apply("test").force(), &patch)
        .await
    {
        panic!("apply {image}: {e}");
    }
}

fn image_of(emu: &Emulator, name: &str) -> Option<String> {
    emu.get("apps/v1", "deployments", Some("test"), name)
        .and_then(|d| {
            d["spec"]["template"]["spec"]["containers"][0]["image"]
                .as_str()
                .map(String::from)
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_loop_bootstraps_then_promotes_the_analysed_revision() {
    let c = cluster().await;
    if let Err(e) = c.emu.insert(deployment("podinfo:1.0")) {
        panic!("{e}");
    }
    let mut stop = match Stop::new(Some(Duration::from_secs(120))) {
        Ok(s) => s,
        Err(e) => panic!("{e}"),
    };
    // The first run makes the primary from what is there; nothing is analysed.
    let first = rollout(c.client.clone(), canary(), options(), &mut stop).await;
    assert!(matches!(first, Ok(Outcome::Bootstrapped)), "{first:?}");
    assert_eq!(
        image_of(&c.emu, "podinfo-primary").as_deref(),
        Some("podinfo:1.0")
    );

    // A new revision is analysed step by step (25%, 50%) and promoted.
    set_image(&c.client, "podinfo:2.0").await;
    let options = options();
    let log = options.log.clone();
    let second = rollout(c.client.clone(), canary(), options, &mut stop).await;
    assert!(matches!(second, Ok(Outcome::Promoted)), "{second:?}");
    assert_eq!(
        image_of(&c.emu, "podinfo-primary").as_deref(),
        Some("podinfo:2.0")
    );
    let report = log.report(aviary_core::report::Verdict::Promoted);
    assert!(
        report.weights.contains(&50),
        "the canary reached 50% before the promotion: {:?}",
        report.weights
    );
    // Done: the canary is scaled to zero, and a third run finds nothing to do.
    let third = rollout(c.client.clone(), canary(), self::options(), &mut stop).await;
    assert!(matches!(third, Ok(Outcome::UpToDate { .. })), "{third:?}");
    // The release's story is told in the cluster: Flagger's texts, as Events regarding the
    // target Deployment (its uid, which `kubectl describe` selects on), from aviary.
    let uid = c
        .emu
        .get("apps/v1", "deployments", Some("test"), "podinfo")
        .and_then(|d| d["metadata"]["uid"].as_str().map(String::from))
        .unwrap_or_default();
    let notes = events_about(&c.emu, "podinfo", |notes| {
        notes
            .iter()
            .any(|(_, n, _)| n.starts_with("Promotion completed!"))
    })
    .await;
    for text in [
        "Starting canary analysis for podinfo.test",
        "Advance podinfo.test canary weight 25",
        "Advance podinfo.test canary weight 50",
    ] {
        assert!(
            notes
                .iter()
                .any(|(kind, n, _)| n == text && kind == "Normal"),
            "{text}: {notes:?}"
        );
    }
    let events = c.emu.list("v1", "events", Some("test"));
    assert!(events
        .iter()
        .all(|e| e["involvedObject"]["uid"] == uid.as_str()
            && e["involvedObject"]["kind"] == "Deployment"
            && e["reportingComponent"] == "aviary"
            && e["reason"] == "Synced"));
}

/// The Events regarding Deployment `target` as `(type, note, series count)`, once `done` says
/// they are all there (they are written by a task of their own), or after 30 s.
async fn events_about(
    emu: &Emulator,
    target: &str,
    done: impl Fn(&[(String, String, u64)]) -> bool,
) -> Vec<(String, String, u64)> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let notes: Vec<(String, String, u64)> = emu
            .list("events.k8s.io/v1", "events", Some("test"))
            .iter()
            .filter(|e| e["regarding"]["name"] == target)
            .map(|e| {
                (
                    e["type"].as_str().unwrap_or_default().to_string(),
                    e["note"].as_str().unwrap_or_default().to_string(),
                    e["series"]["count"].as_u64().unwrap_or(1),
                )
            })
            .collect();
        if done(&notes) || tokio::time::Instant::now() > deadline {
            return notes;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A rollback is told with Warning Events, and a check failing tick after tick is one Event
/// whose series counts the ticks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_is_recorded_as_warning_events_with_repeats_counted_in_a_series() {
    let c = cluster().await;
    if let Err(e) = c.emu.insert(deployment("podinfo:1.0")) {
        panic!("{e}");
    }
    let mut stop = match Stop::new(Some(Duration::from_secs(120))) {
        Ok(s) => s,
        Err(e) => panic!("{e}"),
    };
    let first = rollout(c.client.clone(), canary(), options(), &mut stop).await;
    assert!(matches!(first, Ok(Outcome::Bootstrapped)), "{first:?}");
    let hook = failing_hook().await;
    let yaml = CANARY.replace(
        "stepWeight: 25}",
        &format!("stepWeight: 25, webhooks: [{{name: acceptance, url: \"{hook}\"}}]}}"),
    );
    let failing = match aviary_core::spec::load_str("canary.yaml", &yaml) {
        Ok(mut docs) if docs.canaries.len() == 1 => docs.canaries.remove(0),
        other => panic!("{other:?}"),
    };
    set_image(&c.client, "podinfo:2.0").await;
    let second = rollout(c.client.clone(), failing, options(), &mut stop).await;
    assert!(
        matches!(second, Ok(Outcome::RolledBack { .. })),
        "{second:?}"
    );
    let notes = events_about(&c.emu, "podinfo", |notes| {
        notes
            .iter()
            .any(|(_, n, _)| n.starts_with("Canary failed!"))
    })
    .await;
    assert!(
        notes.iter().any(|(kind, n, _)| kind == "Warning"
            && n == "Rolling back podinfo.test failed checks threshold reached 2"),
        "{notes:?}"
    );
    assert!(
        notes
            .iter()
            .any(|(kind, n, _)| kind == "Warning" && n.starts_with("Canary failed!")),
        "{notes:?}"
    );
    // The webhook failed on every tick until the threshold: one Event, counted.
    let repeated: Vec<_> = notes
        .iter()
        .filter(|(_, n, _)| n.contains("acceptance"))
        .collect();
    assert_eq!(repeated.len(), 1, "{notes:?}");
    assert!(repeated[0].2 >= 2, "{notes:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revision_applied_during_the_analysis_restarts_it_and_only_that_one_is_promoted() {
    let c = cluster().await;
    if let Err(e) = c.emu.insert(deployment("podinfo:1.0")) {
        panic!("{e}");
    }
    let mut stop = match Stop::new(Some(Duration::from_secs(120))) {
        Ok(s) => s,
        Err(e) => panic!("{e}"),
    };
    let first = rollout(c.client.clone(), canary(), options(), &mut stop).await;
    assert!(matches!(first, Ok(Outcome::Bootstrapped)), "{first:?}");
    set_image(&c.client, "podinfo:2.0").await;

    // While the loop analyses 2.0, 3.0 is applied as soon as the canary takes traffic.
    let client = c.client.clone();
    let swap = tokio::spawn(async move {
        let api: Api<Deployment> = Api::namespaced(client.clone(), "test");
        for _ in 0..600 {
            let primary = api.get_opt("podinfo-primary").await.ok().flatten();
            let canary_replicas = api
                .get_opt("podinfo")
                .await
                .ok()
                .flatten()
                .and_then(|d| d.spec)
                .and_then(|s| s.replicas)
                .unwrap_or(0);
            if primary.is_some() && canary_replicas > 0 {
                set_image(&client, "podinfo:3.0").await;
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    });
    let second = rollout(c.client.clone(), canary(), options(), &mut stop).await;
    assert!(
        matches!(swap.await, Ok(true)),
        "3.0 was applied during the analysis"
    );
    assert!(matches!(second, Ok(Outcome::Promoted)), "{second:?}");
    // 2.0 was never promoted unanalysed: the primary went from 1.0 straight to 3.0.
    assert_eq!(
        image_of(&c.emu, "podinfo-primary").as_deref(),
        Some("podinfo:3.0")
    );
    let images: Vec<String> = c
        .emu
        .history("apps/v1", "deployments", Some("test"), "podinfo-primary")
        .iter()
        .filter_map(|d| {
            d["spec"]["template"]["spec"]["containers"][0]["image"]
                .as_str()
                .map(String::from)
        })
        .collect();
    assert!(
        !images.iter().any(|i| i == "podinfo:2.0"),
        "the primary ran 2.0: {images:?}"
    );
}

/// A local webhook that fails every call (HTTP 500).
async fn failing_hook() -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = match tokio::net::TcpListener::bind("127.0.0.1:0").await {
        Ok(l) => l,
        Err(e) => panic!("{e}"),
    };
    let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 8192];
                let _ = stream.read(&mut buf).await;
                let _ = stream
                    .write_all(
                        b"HTTP/1.1 500 X\r\ncontent-length: 2\r\nconnection: close\r\n\r\nno",
                    )
                    .await;
            });
        }
    });
    format!("http://127.0.0.1:{port}/")
}

/// Two canaries of an all-or-nothing release in one Cloud Deploy canary phase: the one that
/// passes at the phase's weight does not leave while the other is still analysed there, and
/// when the other fails it goes back to its primary too (held canaries that had left would
/// keep serving the phase's share).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_phase_canary_of_a_release_rolls_back_when_another_fails_there() {
    let c = cluster().await;
    let hook = failing_hook().await;
    let backend_yaml = CANARY.replace("podinfo", "backend").replace(
        "stepWeight: 25}",
        &format!("stepWeight: 25, webhooks: [{{name: acceptance, url: \"{hook}\"}}]}}"),
    );
    let backend = match aviary_core::spec::load_str("backend.yaml", &backend_yaml) {
        Ok(mut docs) if docs.canaries.len() == 1 => docs.canaries.remove(0),
        Ok(docs) => panic!("{} canaries", docs.canaries.len()),
        Err(e) => panic!("{e}"),
    };
    let backend_deployment = |image: &str| {
        let text = deployment(image).to_string().replace("podinfo", "backend");
        serde_json::from_str::<serde_json::Value>(&text).unwrap_or_default()
    };
    if let Err(e) = c.emu.insert(deployment("podinfo:1.0")) {
        panic!("{e}");
    }
    if let Err(e) = c.emu.insert(backend_deployment("backend:1.0")) {
        panic!("{e}");
    }
    let stop = || match Stop::new(Some(Duration::from_secs(120))) {
        Ok(s) => s,
        Err(e) => panic!("{e}"),
    };
    for canary in [canary(), backend.clone()] {
        let first = rollout(c.client.clone(), canary, options(), &mut stop()).await;
        assert!(matches!(first, Ok(Outcome::Bootstrapped)), "{first:?}");
    }
    set_image(&c.client, "podinfo:2.0").await;
    let api: Api<Deployment> = Api::namespaced(c.client.clone(), "test");
    if let Err(e) = api
        .patch(
            "backend",
            &PatchParams::apply("test").force(),
            &Patch::Apply(backend_deployment("backend:2.0")),
        )
        .await
    {
        panic!("{e}");
    }
    let release = Release::new(
        Policy::AllOrNothing,
        ["podinfo.test", "backend.test"].map(String::from),
    );
    let phase_options = || Options {
        phase: Some(ExternalPhase::Canary(25)),
        release: Some(release.clone()),
        ..options()
    };
    let (mut one, mut other) = (stop(), stop());
    // Boxed: two runners' futures side by side would not fit on a test thread's stack.
    let (held, failed) = tokio::join!(
        Box::pin(rollout(
            c.client.clone(),
            canary(),
            phase_options(),
            &mut one
        )),
        Box::pin(rollout(
            c.client.clone(),
            backend,
            phase_options(),
            &mut other
        )),
    );
    assert!(
        matches!(&failed, Ok(Outcome::RolledBack { aborted: None })),
        "{failed:?}"
    );
    match &held {
        Ok(Outcome::RolledBack {
            aborted: Some(reason),
        }) => assert!(
            reason.contains("rolled back with the release: backend.test failed"),
            "{reason}"
        ),
        other => panic!("podinfo left the release: {other:?}"),
    }
    for name in ["podinfo", "backend"] {
        let canary_replicas = c
            .emu
            .get("apps/v1", "deployments", Some("test"), name)
            .and_then(|d| d["spec"]["replicas"].as_i64());
        assert_eq!(canary_replicas, Some(0), "{name}'s canary is scaled down");
        assert_eq!(
            image_of(&c.emu, &format!("{name}-primary")).as_deref(),
            Some(format!("{name}:1.0").as_str())
        );
    }
}
