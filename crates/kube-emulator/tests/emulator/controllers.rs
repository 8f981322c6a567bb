//! The simulated deployment and gateway controllers.

use std::time::{Duration, Instant};

use gateway_api::apis::standard::httproutes::{HttpRoute, HttpRouteParentRefs, HttpRouteSpec};
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

use crate::{deployment_json, eventually, setup, TestResult};

fn condition(d: &Deployment, kind: &str) -> Option<(String, String)> {
    d.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == kind)
        .map(|c| (c.status.clone(), c.reason.clone().unwrap_or_default()))
}

#[tokio::test]
async fn deployment_becomes_available_after_the_delay() -> TestResult {
    let (emu, client) = setup().await?;
    emu.set_ready_delay(Duration::from_millis(500));
    let api: Api<Deployment> = Api::default_namespaced(client);
    let start = Instant::now();
    api.create(
        &PostParams::default(),
        &serde_json::from_value(deployment_json("podinfo", "podinfo:1"))?,
    )
    .await?;
    // Not ready right away.
    let early = api.get("podinfo").await?;
    assert!(early
        .status
        .as_ref()
        .and_then(|s| s.observed_generation)
        .is_none());

    let ready = eventually(Duration::from_secs(5), || async {
        let d = api.get("podinfo").await.ok()?;
        let s = d.status.clone()?;
        (s.observed_generation == Some(1) && s.available_replicas == Some(2)).then_some(d)
    })
    .await
    .ok_or("deployment never became ready")?;
    assert!(start.elapsed() >= Duration::from_millis(500));
    let s = ready.status.clone().unwrap_or_default();
    assert_eq!(
        (s.replicas, s.updated_replicas, s.ready_replicas),
        (Some(2), Some(2), Some(2))
    );
    assert_eq!(
        condition(&ready, "Available"),
        Some(("True".into(), "MinimumReplicasAvailable".into()))
    );
    assert_eq!(
        condition(&ready, "Progressing"),
        Some(("True".into(), "NewReplicaSetAvailable".into()))
    );
    let status_writes = emu
        .history("apps/v1", "deployments", Some("test"), "podinfo")
        .iter()
        .filter(|h| h.pointer("/status/observedGeneration").is_some())
        .count();
    assert_eq!(
        status_writes, 1,
        "the controller writes once per generation"
    );

    // A spec change: observedGeneration lags until the controller catches up.
    emu.set_ready_delay(Duration::from_millis(100));
    let pp = PatchParams::default();
    let changed = api
        .patch(
            "podinfo",
            &pp,
            &Patch::Merge(json!({"spec": {"replicas": 3}})),
        )
        .await?;
    assert_eq!(changed.metadata.generation, Some(2));
    assert_eq!(
        changed.status.as_ref().and_then(|s| s.observed_generation),
        Some(1)
    );
    eventually(Duration::from_secs(5), || async {
        let s = api.get("podinfo").await.ok()?.status?;
        (s.observed_generation == Some(2) && s.ready_replicas == Some(3)).then_some(())
    })
    .await
    .ok_or("rollout of generation 2 never finished")?;

    // Scaling to zero is ready at once.
    emu.set_ready_delay(Duration::from_secs(30));
    api.patch(
        "podinfo",
        &pp,
        &Patch::Merge(json!({"spec": {"replicas": 0}})),
    )
    .await?;
    eventually(Duration::from_secs(2), || async {
        let s = api.get("podinfo").await.ok()?.status?;
        (s.observed_generation == Some(3)
            && s.ready_replicas.unwrap_or(0) == 0
            && s.replicas.unwrap_or(0) == 0)
            .then_some(())
    })
    .await
    .ok_or("scale to zero not reported")?;
    Ok(())
}

#[tokio::test]
async fn never_ready_deployment_exceeds_its_progress_deadline() -> TestResult {
    let (emu, client) = setup().await?;
    emu.set_ready_delay(Duration::from_millis(50));
    emu.set_never_ready("test", "broken", true);
    let api: Api<Deployment> = Api::default_namespaced(client);
    let mut d = deployment_json("broken", "broken:1");
    d["spec"]["progressDeadlineSeconds"] = json!(1);
    api.create(&PostParams::default(), &serde_json::from_value(d)?)
        .await?;

    let stuck = eventually(Duration::from_secs(3), || async {
        let d = api.get("broken").await.ok()?;
        (d.status.as_ref()?.observed_generation == Some(1)).then_some(d)
    })
    .await
    .ok_or("no status")?;
    let s = stuck.status.clone().unwrap_or_default();
    assert_eq!(s.updated_replicas, Some(2));
    assert_eq!(s.unavailable_replicas, Some(2));
    assert_eq!(s.ready_replicas.unwrap_or(0), 0);
    assert_eq!(s.available_replicas.unwrap_or(0), 0);
    assert_eq!(
        condition(&stuck, "Available"),
        Some(("False".into(), "MinimumReplicasUnavailable".into()))
    );
    assert_eq!(
        condition(&stuck, "Progressing").map(|c| c.0),
        Some("True".into())
    );

    let exceeded = eventually(Duration::from_secs(4), || async {
        let d = api.get("broken").await.ok()?;
        (condition(&d, "Progressing")? == ("False".into(), "ProgressDeadlineExceeded".into()))
            .then_some(d)
    })
    .await
    .ok_or("ProgressDeadlineExceeded never reported")?;
    let msg = exceeded
        .status
        .and_then(|s| s.conditions)
        .and_then(|c| c.into_iter().find(|c| c.type_ == "Progressing"))
        .and_then(|c| c.message)
        .unwrap_or_default();
    assert!(msg.contains("has timed out progressing"), "{msg}");

    // Once fixed, it becomes available.
    emu.set_never_ready("test", "broken", false);
    eventually(Duration::from_secs(3), || async {
        let d = api.get("broken").await.ok()?;
        (condition(&d, "Available")?.0 == "True").then_some(())
    })
    .await
    .ok_or("never recovered")?;
    Ok(())
}

#[tokio::test]
async fn httproute_gets_accepted_by_the_gateway_controller() -> TestResult {
    let (emu, client) = setup().await?;
    let api: Api<HttpRoute> = Api::default_namespaced(client.clone());
    let route = HttpRoute::new(
        "podinfo",
        HttpRouteSpec {
            parent_refs: Some(vec![HttpRouteParentRefs {
                name: "gateway".into(),
                namespace: Some("istio-ingress".into()),
                ..Default::default()
            }]),
            hostnames: Some(vec!["app.example.com".into()]),
            ..Default::default()
        },
    );
    api.create(&PostParams::default(), &route).await?;
    let accepted = eventually(Duration::from_secs(3), || async {
        let r = api.get("podinfo").await.ok()?;
        let parents = r.status.as_ref()?.parents.clone();
        (!parents.is_empty()).then_some(r)
    })
    .await
    .ok_or("route never got a status")?;
    let parents = accepted
        .status
        .clone()
        .map(|s| s.parents)
        .unwrap_or_default();
    assert_eq!(parents.len(), 1);
    assert_eq!(
        parents[0].controller_name,
        kube_emulator::GATEWAY_CONTROLLER_NAME
    );
    assert_eq!(parents[0].parent_ref.name, "gateway");
    let cond = parents[0]
        .conditions
        .iter()
        .find(|c| c.type_ == "Accepted")
        .cloned()
        .ok_or("no Accepted condition")?;
    assert_eq!(
        (cond.status.as_str(), cond.reason.as_str()),
        ("True", "Accepted")
    );
    assert_eq!(cond.observed_generation, Some(1));
    assert!(parents[0]
        .conditions
        .iter()
        .any(|c| c.type_ == "ResolvedRefs" && c.status == "True"));

    // A spec change is observed again with the new generation.
    api.patch(
        "podinfo",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"hostnames": ["b.example.com"]}})),
    )
    .await?;
    eventually(Duration::from_secs(3), || async {
        let r = api.get("podinfo").await.ok()?;
        let c = r
            .status?
            .parents
            .first()?
            .conditions
            .iter()
            .find(|c| c.type_ == "Accepted")?
            .clone();
        (c.observed_generation == Some(2)).then_some(())
    })
    .await
    .ok_or("generation 2 never observed")?;
    // The same object is served as v1beta1.
    let beta = emu.get(
        "gateway.networking.k8s.io/v1beta1",
        "httproutes",
        Some("test"),
        "podinfo",
    );
    assert_eq!(
        beta.map(|b| b["apiVersion"].clone()),
        Some(json!("gateway.networking.k8s.io/v1beta1"))
    );
    Ok(())
}

#[tokio::test]
async fn deployments_get_replicasets_and_pods() -> TestResult {
    use k8s_openapi::api::apps::v1::ReplicaSet;
    use k8s_openapi::api::core::v1::Pod;
    use kube::api::{DeleteParams, ListParams};
    use kube::ResourceExt;

    let (emu, client) = setup().await?;
    emu.set_ready_delay(Duration::from_millis(50));
    emu.set_never_ready("test", "broken", true);
    let deployments: Api<Deployment> = Api::default_namespaced(client.clone());
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    let replicasets: Api<ReplicaSet> = Api::default_namespaced(client.clone());
    deployments
        .create(
            &PostParams::default(),
            &serde_json::from_value(deployment_json("podinfo", "podinfo:1"))?,
        )
        .await?;
    deployments
        .create(
            &PostParams::default(),
            &serde_json::from_value(deployment_json("broken", "broken:1"))?,
        )
        .await?;

    let running = eventually(Duration::from_secs(3), || async {
        let list = pods
            .list(&ListParams::default().labels("app=podinfo"))
            .await
            .ok()?;
        (list.items.len() == 2).then_some(list.items)
    })
    .await
    .ok_or("podinfo pods never appeared")?;
    for p in &running {
        assert!(p.name_any().starts_with("podinfo-"), "{}", p.name_any());
        assert!(p.labels().contains_key("pod-template-hash"));
        let st = p.status.clone().unwrap_or_default();
        assert_eq!(st.phase.as_deref(), Some("Running"));
        let ready = st
            .conditions
            .unwrap_or_default()
            .into_iter()
            .find(|c| c.type_ == "Ready")
            .map(|c| c.status);
        assert_eq!(ready.as_deref(), Some("True"));
    }
    let crashing = eventually(Duration::from_secs(3), || async {
        let list = pods
            .list(&ListParams::default().labels("app=broken"))
            .await
            .ok()?;
        let p = list.items.first()?.clone();
        p.status.as_ref()?.container_statuses.as_ref()?;
        Some(p)
    })
    .await
    .ok_or("broken pods never appeared")?;
    let waiting = crashing
        .status
        .and_then(|s| s.container_statuses)
        .and_then(|c| c.into_iter().next())
        .and_then(|c| c.state)
        .and_then(|s| s.waiting)
        .and_then(|w| w.reason);
    assert_eq!(waiting.as_deref(), Some("CrashLoopBackOff"));

    // A template change rolls over to a new ReplicaSet; the old one is scaled to zero.
    let first_rs: Vec<String> = replicasets
        .list(&ListParams::default().labels("app=podinfo"))
        .await?
        .items
        .iter()
        .map(|r| r.name_any())
        .collect();
    assert_eq!(first_rs.len(), 1);
    let patch = json!({"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "podinfo:2"}]}}}});
    deployments
        .patch("podinfo", &PatchParams::default(), &Patch::Strategic(patch))
        .await?;
    eventually(Duration::from_secs(3), || async {
        let list = pods
            .list(&ListParams::default().labels("app=podinfo"))
            .await
            .ok()?;
        let images: Vec<String> = list
            .items
            .iter()
            .filter_map(|p| p.spec.as_ref()?.containers.first()?.image.clone())
            .collect();
        (images == ["podinfo:2", "podinfo:2"]).then_some(())
    })
    .await
    .ok_or("pods never rolled over")?;
    let old = replicasets.get(&first_rs[0]).await?;
    assert_eq!(old.spec.and_then(|s| s.replicas), Some(0));

    // Deleting the Deployment garbage-collects its ReplicaSets and Pods.
    deployments
        .delete("podinfo", &DeleteParams::default())
        .await?;
    assert!(pods
        .list(&ListParams::default().labels("app=podinfo"))
        .await?
        .items
        .is_empty());
    assert!(replicasets
        .list(&ListParams::default().labels("app=podinfo"))
        .await?
        .items
        .is_empty());
    Ok(())
}

/// The deployment controller works only on what changed, and in slices: a Deployment it left
/// alone since its rollout still gets a deleted Pod back, and 60 Deployments changed at once
/// all roll out while the API server keeps answering between the controller's slices.
#[tokio::test]
async fn the_controller_heals_settled_deployments_and_rolls_out_many_at_once() -> TestResult {
    use k8s_openapi::api::core::v1::Pod;
    use kube::api::{DeleteParams, ListParams};
    use kube::ResourceExt;

    let (emu, client) = setup().await?;
    emu.set_ready_delay(Duration::from_millis(20));
    let deployments: Api<Deployment> = Api::default_namespaced(client.clone());
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    const N: usize = 60;
    for i in 0..N {
        deployments
            .create(
                &PostParams::default(),
                &serde_json::from_value(deployment_json(&format!("app{i:03}"), "app:1"))?,
            )
            .await?;
    }
    let rolled_out = |image: &'static str| {
        let deployments = deployments.clone();
        async move {
            let list = deployments.list(&ListParams::default()).await.ok()?;
            let done = list.items.iter().filter(|d| {
                let image_now = d
                    .spec
                    .as_ref()
                    .and_then(|s| s.template.spec.as_ref())
                    .and_then(|s| s.containers.first())
                    .and_then(|c| c.image.as_deref());
                let s = d.status.clone().unwrap_or_default();
                image_now == Some(image)
                    && s.observed_generation == d.metadata.generation
                    && s.updated_replicas == Some(2)
                    && s.available_replicas == Some(2)
            });
            (done.count() == N).then_some(())
        }
    };
    eventually(Duration::from_secs(60), || rolled_out("app:1"))
        .await
        .ok_or("the first rollout of every Deployment never completed")?;

    // A Pod of a Deployment the controller has settled: deleted, it comes back.
    let victim = pods
        .list(&ListParams::default().labels("app=app007"))
        .await?
        .items
        .first()
        .map(|p| p.name_any())
        .ok_or("app007 has no pods")?;
    pods.delete(&victim, &DeleteParams::default()).await?;
    eventually(Duration::from_secs(10), || async {
        let names: Vec<String> = pods
            .list(&ListParams::default().labels("app=app007"))
            .await
            .ok()?
            .items
            .iter()
            .map(|p| p.name_any())
            .collect();
        (names.len() == 2 && !names.contains(&victim)).then_some(())
    })
    .await
    .ok_or("the deleted pod of a settled Deployment was never replaced")?;

    // Every Deployment changed at once: each rolls out to the new image.
    for i in 0..N {
        let patch = json!({"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "app:2"}]}}}});
        deployments
            .patch(
                &format!("app{i:03}"),
                &PatchParams::default(),
                &Patch::Strategic(patch),
            )
            .await?;
    }
    eventually(Duration::from_secs(60), || rolled_out("app:2"))
        .await
        .ok_or("not every Deployment rolled out its new template")?;
    Ok(())
}

/// The deployment controller gives way to requests being answered, but only for a moment: a
/// Deployment still rolls out, and an HTTPRoute is still accepted, while a request is in flight
/// the whole time (held by a latency fault).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_controllers_keep_up_while_requests_are_in_flight() -> TestResult {
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::ListParams;
    use kube_emulator::{Fault, FaultKind};

    let (emu, client) = setup().await?;
    emu.set_ready_delay(Duration::from_millis(20));
    emu.set_faults(vec![Fault {
        method: Some("GET".into()),
        path_regex: "/configmaps$".into(),
        probability: 1.0,
        kind: FaultKind::Latency(Duration::from_secs(120)),
        seed: 7,
    }]);
    let configmaps: Api<ConfigMap> = Api::default_namespaced(client.clone());
    let held = tokio::spawn(async move { configmaps.list(&ListParams::default()).await });
    // The held request has reached the emulator: it is being answered from now on.
    eventually(Duration::from_secs(10), || async {
        emu.answering().then_some(())
    })
    .await
    .ok_or("the held request never reached the emulator")?;

    let deployments: Api<Deployment> = Api::default_namespaced(client.clone());
    deployments
        .create(
            &PostParams::default(),
            &serde_json::from_value(deployment_json("podinfo", "podinfo:1"))?,
        )
        .await?;
    let routes: Api<HttpRoute> = Api::default_namespaced(client.clone());
    let route = HttpRoute {
        metadata: kube::api::ObjectMeta {
            name: Some("podinfo".into()),
            ..Default::default()
        },
        spec: HttpRouteSpec {
            parent_refs: Some(vec![HttpRouteParentRefs {
                name: "gateway".into(),
                ..Default::default()
            }]),
            ..Default::default()
        },
        status: None,
    };
    routes.create(&PostParams::default(), &route).await?;
    let rolled_out = eventually(Duration::from_secs(30), || async {
        let s = deployments.get("podinfo").await.ok()?.status?;
        (s.available_replicas == Some(2)).then_some(())
    })
    .await;
    let accepted = eventually(Duration::from_secs(30), || async {
        let parents = routes.get("podinfo").await.ok()?.status?.parents;
        (!parents.is_empty()).then_some(())
    })
    .await;
    let still_held = !held.is_finished();
    held.abort();
    rolled_out.ok_or("the Deployment never rolled out while a request was in flight")?;
    accepted.ok_or("the HTTPRoute was never accepted while a request was in flight")?;
    assert!(still_held, "the request was in flight the whole time");
    Ok(())
}
