//! CRUD, selectors, patches, status subresource and errors.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Service};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::core::{DynamicObject, GroupVersionKind};
use kube::discovery::ApiResource;
use kube::ResourceExt;
use serde_json::json;

use crate::{api_error, deployment_json, setup, TestResult};

#[tokio::test]
async fn deployments_crud_and_label_selectors() -> TestResult {
    let (emu, client) = setup().await?;
    let api: Api<Deployment> = Api::default_namespaced(client);
    for (name, tier) in [("podinfo", "web"), ("backend", "db"), ("worker", "web")] {
        let mut d = deployment_json(name, "ghcr.io/stefanprodan/podinfo:6.0.0");
        d["metadata"]["labels"]["tier"] = json!(tier);
        if name == "worker" {
            d["metadata"]["labels"]["canary"] = json!("true");
        }
        let created = api
            .create(&PostParams::default(), &serde_json::from_value(d)?)
            .await?;
        assert_eq!(created.metadata.generation, Some(1));
        assert!(created.metadata.uid.is_some());
        assert!(created.metadata.creation_timestamp.is_some());
        // Defaults the real API server applies.
        let spec = created.spec.clone().unwrap_or_default();
        assert_eq!(spec.progress_deadline_seconds, Some(600));
        assert_eq!(spec.revision_history_limit, Some(10));
        assert_eq!(
            spec.strategy.and_then(|s| s.type_),
            Some("RollingUpdate".to_string())
        );
    }
    let got = api.get("podinfo").await?;
    assert_eq!(got.metadata.namespace.as_deref(), Some("test"));

    let names = |list: kube::core::ObjectList<Deployment>| -> Vec<String> {
        list.items.iter().map(|d| d.name_any()).collect()
    };
    assert_eq!(
        names(api.list(&ListParams::default()).await?),
        ["backend", "podinfo", "worker"]
    );
    assert_eq!(
        names(api.list(&ListParams::default().labels("tier=web")).await?),
        ["podinfo", "worker"]
    );
    assert_eq!(
        names(api.list(&ListParams::default().labels("tier!=web")).await?),
        ["backend"]
    );
    assert_eq!(
        names(
            api.list(&ListParams::default().labels("app in (backend,worker)"))
                .await?
        ),
        ["backend", "worker"]
    );
    assert_eq!(
        names(
            api.list(&ListParams::default().labels("app notin (backend),tier==web"))
                .await?
        ),
        ["podinfo", "worker"]
    );
    assert_eq!(
        names(api.list(&ListParams::default().labels("canary")).await?),
        ["worker"]
    );
    assert_eq!(
        names(api.list(&ListParams::default().labels("!canary")).await?),
        ["backend", "podinfo"]
    );
    assert_eq!(
        names(
            api.list(&ListParams::default().fields("metadata.name=backend"))
                .await?
        ),
        ["backend"]
    );
    assert_eq!(
        names(
            api.list(&ListParams::default().fields("metadata.name!=backend"))
                .await?
        ),
        ["podinfo", "worker"]
    );
    // Paging with limit/continue returns everything exactly once.
    let page1 = api.list(&ListParams::default().limit(2)).await?;
    assert_eq!(page1.items.len(), 2);
    let token = page1.metadata.continue_.clone().unwrap_or_default();
    assert!(!token.is_empty());
    let page2 = api
        .list(&ListParams::default().limit(2).continue_token(&token))
        .await?;
    assert_eq!(names(page2), ["worker"]);
    // Other namespaces are not listed; all-namespace lists see everything.
    let all: Api<Deployment> = Api::all(api.clone().into_client());
    assert_eq!(all.list(&ListParams::default()).await?.items.len(), 3);
    let default_ns: Api<Deployment> = Api::namespaced(api.clone().into_client(), "default");
    assert!(default_ns
        .list(&ListParams::default())
        .await?
        .items
        .is_empty());
    // A bad selector is a 400.
    let err = api_error(api.list(&ListParams::default().labels("app in (")).await);
    assert_eq!(err.code, 400);

    // Replace.
    let mut d = api.get("podinfo").await?;
    if let Some(spec) = d.spec.as_mut() {
        spec.replicas = Some(5);
    }
    let replaced = api.replace("podinfo", &PostParams::default(), &d).await?;
    assert_eq!(replaced.metadata.generation, Some(2));
    assert_ne!(
        replaced.metadata.resource_version,
        d.metadata.resource_version
    );

    // Delete returns the object; a second delete is a 404.
    let deleted = api.delete("podinfo", &DeleteParams::default()).await?;
    assert!(deleted.left().is_some_and(|d| d.name_any() == "podinfo"));
    let err = api_error(api.delete("podinfo", &DeleteParams::default()).await);
    assert_eq!((err.code, err.reason.as_str()), (404, "NotFound"));
    let history = emu.history("apps/v1", "deployments", Some("test"), "podinfo");
    assert!(
        history.len() >= 3,
        "create, replace, delete: {}",
        history.len()
    );
    assert!(history
        .last()
        .is_some_and(|h| h["metadata"]["deletionTimestamp"].is_string()));
    Ok(())
}

#[tokio::test]
async fn services_and_configmaps() -> TestResult {
    let (emu, client) = setup().await?;
    let services: Api<Service> = Api::default_namespaced(client.clone());
    let svc: Service = serde_json::from_value(json!({
        "metadata": {"name": "podinfo", "labels": {"app": "podinfo"}},
        "spec": {"selector": {"app": "podinfo"}, "ports": [{"name": "http", "port": 9898}]}
    }))?;
    let created = services.create(&PostParams::default(), &svc).await?;
    let spec = created.spec.clone().unwrap_or_default();
    assert_eq!(spec.type_.as_deref(), Some("ClusterIP"));
    let ip = spec.cluster_ip.clone().unwrap_or_default();
    assert!(ip.starts_with("10.96."), "{ip}");
    // An update that omits the cluster IP keeps it.
    let mut upd = created.clone();
    if let Some(s) = upd.spec.as_mut() {
        s.cluster_ip = None;
        s.cluster_ips = None;
        s.selector = Some([("app".to_string(), "podinfo-primary".to_string())].into());
    }
    let updated = services
        .replace("podinfo", &PostParams::default(), &upd)
        .await?;
    assert_eq!(updated.spec.and_then(|s| s.cluster_ip), Some(ip));

    let cms: Api<ConfigMap> = Api::default_namespaced(client.clone());
    let cm: ConfigMap = serde_json::from_value(
        json!({"metadata": {"name": "cfg", "labels": {"a": "b"}}, "data": {"k": "v"}}),
    )?;
    cms.create(&PostParams::default(), &cm).await?;
    let err = api_error(cms.create(&PostParams::default(), &cm).await);
    assert_eq!((err.code, err.reason.as_str()), (409, "AlreadyExists"));
    assert_eq!(err.message, "configmaps \"cfg\" already exists");
    let listed = cms.list(&ListParams::default().labels("a=b")).await?;
    assert_eq!(listed.items.len(), 1);
    assert_eq!(
        listed.items[0]
            .data
            .as_ref()
            .and_then(|d| d.get("k"))
            .map(String::as_str),
        Some("v")
    );
    assert!(emu.get("v1", "configmaps", Some("test"), "cfg").is_some());
    cms.delete("cfg", &DeleteParams::default()).await?;
    assert!(emu.get("v1", "configmaps", Some("test"), "cfg").is_none());

    // Creating in a namespace that does not exist.
    let missing: Api<ConfigMap> = Api::namespaced(client.clone(), "nope");
    let err = api_error(missing.create(&PostParams::default(), &cm).await);
    assert_eq!((err.code, err.reason.as_str()), (404, "NotFound"));
    assert_eq!(err.message, "namespaces \"nope\" not found");
    // After creating the namespace it works.
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "nope"}}))?,
        )
        .await?;
    missing.create(&PostParams::default(), &cm).await?;
    // Invalid names are rejected with causes.
    let bad: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "Bad_Name"}}))?;
    let err = api_error(cms.create(&PostParams::default(), &bad).await);
    assert_eq!((err.code, err.reason.as_str()), (422, "Invalid"));
    assert!(
        err.message
            .starts_with("ConfigMap \"Bad_Name\" is invalid: metadata.name: Invalid value"),
        "{}",
        err.message
    );
    let causes = err.details.map(|d| d.causes).unwrap_or_default();
    assert_eq!(
        causes.first().map(|c| c.field.as_str()),
        Some("metadata.name")
    );
    Ok(())
}

#[tokio::test]
async fn stale_update_is_a_conflict_and_missing_is_not_found() -> TestResult {
    let (_emu, client) = setup().await?;
    let api: Api<Deployment> = Api::default_namespaced(client);
    let created = api
        .create(
            &PostParams::default(),
            &serde_json::from_value(deployment_json("podinfo", "podinfo:1"))?,
        )
        .await?;
    let mut first = created.clone();
    first
        .metadata
        .labels
        .get_or_insert_with(Default::default)
        .insert("x".into(), "1".into());
    api.replace("podinfo", &PostParams::default(), &first)
        .await?;
    // `created` still carries the old resourceVersion.
    let mut stale = created;
    stale
        .metadata
        .labels
        .get_or_insert_with(Default::default)
        .insert("x".into(), "2".into());
    let err = api_error(api.replace("podinfo", &PostParams::default(), &stale).await);
    assert_eq!((err.code, err.reason.as_str()), (409, "Conflict"));
    assert_eq!(
        err.message,
        "Operation cannot be fulfilled on deployments.apps \"podinfo\": the object has been modified; please apply your changes to the latest version and try again"
    );
    // Without a resourceVersion the update is unconditional for a built-in type.
    stale.metadata.resource_version = None;
    let forced = api
        .replace("podinfo", &PostParams::default(), &stale)
        .await?;
    assert_eq!(forced.labels().get("x").map(String::as_str), Some("2"));

    let err = api_error(api.get("missing").await);
    assert_eq!((err.code, err.reason.as_str()), (404, "NotFound"));
    assert_eq!(err.message, "deployments.apps \"missing\" not found");
    let details = err.details.unwrap_or_else(|| panic!("no details"));
    assert_eq!(
        (
            details.name.as_str(),
            details.group.as_str(),
            details.kind.as_str()
        ),
        ("missing", "apps", "deployments")
    );
    assert!(api.get_opt("missing").await?.is_none());
    Ok(())
}

#[tokio::test]
async fn deployment_validation() -> TestResult {
    let (_emu, client) = setup().await?;
    let api: Api<Deployment> = Api::default_namespaced(client);
    let mut d = deployment_json("podinfo", "podinfo:1");
    d["spec"]["template"]["metadata"]["labels"] = json!({"app": "other"});
    let err = api_error(
        api.create(&PostParams::default(), &serde_json::from_value(d)?)
            .await,
    );
    assert_eq!((err.code, err.reason.as_str()), (422, "Invalid"));
    assert!(
        err.message
            .contains("`selector` does not match template `labels`"),
        "{}",
        err.message
    );

    api.create(
        &PostParams::default(),
        &serde_json::from_value(deployment_json("podinfo", "podinfo:1"))?,
    )
    .await?;
    let patch = json!({"spec": {"selector": {"matchLabels": {"app": "x"}}, "template": {"metadata": {"labels": {"app": "x"}}}}});
    let err = api_error(
        api.patch("podinfo", &PatchParams::default(), &Patch::Merge(&patch))
            .await,
    );
    assert_eq!(err.code, 422);
    assert!(
        err.message.contains("spec.selector: Invalid value")
            && err.message.contains("field is immutable"),
        "{}",
        err.message
    );
    Ok(())
}

#[tokio::test]
async fn merge_json_and_strategic_patches() -> TestResult {
    let (_emu, client) = setup().await?;
    let api: Api<Deployment> = Api::default_namespaced(client.clone());
    let mut d = deployment_json("podinfo", "podinfo:1");
    d["spec"]["template"]["spec"]["containers"] = json!([
        {"name": "app", "image": "podinfo:1", "env": [{"name": "A", "value": "1"}]},
        {"name": "sidecar", "image": "envoy:1"}
    ]);
    api.create(&PostParams::default(), &serde_json::from_value(d)?)
        .await?;
    let pp = PatchParams::default();

    // RFC 7386 merge patch: null deletes, maps merge, lists replace.
    let merged = api
        .patch("podinfo", &pp, &Patch::Merge(json!({"metadata": {"labels": {"tier": null, "track": "stable"}}, "spec": {"replicas": 3}})))
        .await?;
    let labels = merged.labels();
    assert!(!labels.contains_key("tier"));
    assert_eq!(labels.get("track").map(String::as_str), Some("stable"));
    assert_eq!(merged.spec.as_ref().and_then(|s| s.replicas), Some(3));
    assert_eq!(merged.metadata.generation, Some(2));

    // RFC 6902 JSON patch.
    let ops: json_patch::Patch = serde_json::from_value(json!([
        {"op": "test", "path": "/spec/replicas", "value": 3},
        {"op": "replace", "path": "/spec/replicas", "value": 4},
        {"op": "add", "path": "/metadata/annotations", "value": {"a": "b"}}
    ]))?;
    let patched = api.patch("podinfo", &pp, &Patch::<()>::Json(ops)).await?;
    assert_eq!(patched.spec.as_ref().and_then(|s| s.replicas), Some(4));
    assert_eq!(
        patched.annotations().get("a").map(String::as_str),
        Some("b")
    );
    let failing: json_patch::Patch = serde_json::from_value(json!([
        {"op": "test", "path": "/spec/replicas", "value": 99},
        {"op": "replace", "path": "/spec/replicas", "value": 1}
    ]))?;
    let err = api_error(api.patch("podinfo", &pp, &Patch::<()>::Json(failing)).await);
    assert_eq!((err.code, err.reason.as_str()), (422, "Invalid"));
    let bad_path: json_patch::Patch = serde_json::from_value(
        json!([{"op": "replace", "path": "/spec/nothing/here", "value": 1}]),
    )?;
    assert_eq!(
        api_error(
            api.patch("podinfo", &pp, &Patch::<()>::Json(bad_path))
                .await
        )
        .code,
        422
    );
    assert_eq!(
        api.get("podinfo").await?.spec.and_then(|s| s.replicas),
        Some(4)
    );

    // Strategic merge: containers by name, env by name, $patch: delete.
    let smp = json!({"spec": {"template": {"spec": {"containers": [
        {"name": "app", "image": "podinfo:2", "env": [{"name": "B", "value": "2"}]},
        {"name": "sidecar", "$patch": "delete"}
    ]}}}});
    let patched = api.patch("podinfo", &pp, &Patch::Strategic(smp)).await?;
    let containers = patched
        .spec
        .and_then(|s| s.template.spec)
        .map(|s| s.containers)
        .unwrap_or_default();
    assert_eq!(containers.len(), 1);
    assert_eq!(containers[0].image.as_deref(), Some("podinfo:2"));
    let env: Vec<String> = containers[0]
        .env
        .iter()
        .flatten()
        .map(|e| e.name.clone())
        .collect();
    assert_eq!(env, ["A", "B"]);
    // Containers keep the server-side defaults after the patch.
    assert_eq!(
        containers[0].termination_message_path.as_deref(),
        Some("/dev/termination-log")
    );

    // Patching a missing object is a 404.
    let err = api_error(
        api.patch("missing", &pp, &Patch::Merge(json!({"a": 1})))
            .await,
    );
    assert_eq!(err.code, 404);

    // Strategic merge is refused for custom resources (415), as the real server does.
    let gvk = GroupVersionKind::gvk("flagger.app", "v1beta1", "Canary");
    let ar = ApiResource::from_gvk_with_plural(&gvk, "canaries");
    let canaries: Api<DynamicObject> = Api::namespaced_with(client, "test", &ar);
    let canary: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "flagger.app/v1beta1", "kind": "Canary",
        "metadata": {"name": "podinfo"},
        "spec": {
            "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
            "analysis": {"interval": "1m"}
        }
    }))?;
    canaries.create(&PostParams::default(), &canary).await?;
    let err = api_error(
        canaries
            .patch(
                "podinfo",
                &pp,
                &Patch::Strategic(json!({"spec": {"skipAnalysis": true}})),
            )
            .await,
    );
    assert_eq!(
        (err.code, err.reason.as_str()),
        (415, "UnsupportedMediaType")
    );
    let merged = canaries
        .patch(
            "podinfo",
            &pp,
            &Patch::Merge(json!({"spec": {"skipAnalysis": true}})),
        )
        .await?;
    assert_eq!(merged.data["spec"]["skipAnalysis"], true);
    Ok(())
}

#[tokio::test]
async fn status_subresource_semantics() -> TestResult {
    let (_emu, client) = setup().await?;
    let gvk = GroupVersionKind::gvk("flagger.app", "v1beta1", "Canary");
    let ar = ApiResource::from_gvk_with_plural(&gvk, "canaries");
    let api: Api<DynamicObject> = Api::namespaced_with(client, "test", &ar);
    let canary: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "flagger.app/v1beta1", "kind": "Canary",
        "metadata": {"name": "podinfo"},
        "spec": {
            "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
            "analysis": {"interval": "1m"}
        },
        "status": {"phase": "Ignored"}
    }))?;
    let created = api.create(&PostParams::default(), &canary).await?;
    assert!(
        created.data.get("status").is_none(),
        "status is dropped on create"
    );

    let pp = PatchParams::default();
    let after_status = api
        .patch_status("podinfo", &pp, &Patch::Merge(json!({"status": {"phase": "Progressing"}, "spec": {"analysis": {"interval": "5m"}}})))
        .await?;
    assert_eq!(after_status.data["status"]["phase"], "Progressing");
    assert_eq!(
        after_status.data["spec"]["analysis"]["interval"], "1m",
        "spec ignored by /status"
    );
    assert_eq!(
        after_status.metadata.generation,
        Some(1),
        "a status change does not bump the generation"
    );

    let after_main = api
        .patch(
            "podinfo",
            &pp,
            &Patch::Merge(
                json!({"status": {"phase": "Failed"}, "spec": {"analysis": {"interval": "2m"}}}),
            ),
        )
        .await?;
    assert_eq!(
        after_main.data["status"]["phase"], "Progressing",
        "status ignored by the main resource"
    );
    assert_eq!(after_main.data["spec"]["analysis"]["interval"], "2m");
    assert_eq!(after_main.metadata.generation, Some(2));

    let got = api.get_status("podinfo").await?;
    assert_eq!(got.data["status"]["phase"], "Progressing");
    // PUT on /status with a stale resourceVersion conflicts too.
    let mut stale = created;
    stale.data["status"] = json!({"phase": "Succeeded"});
    let err = api_error(
        api.replace_status("podinfo", &PostParams::default(), &stale)
            .await,
    );
    assert_eq!(err.code, 409);
    // A custom resource needs a resourceVersion on PUT, like the real server.
    let mut unconditional = api.get("podinfo").await?;
    unconditional.metadata.resource_version = None;
    let err = api_error(
        api.replace("podinfo", &PostParams::default(), &unconditional)
            .await,
    );
    assert_eq!(err.code, 422);
    Ok(())
}

#[tokio::test]
async fn metadata_only_calls() -> TestResult {
    let (_emu, client) = setup().await?;
    let api: Api<ConfigMap> = Api::default_namespaced(client);
    let cm: ConfigMap = serde_json::from_value(
        json!({"metadata": {"name": "m", "labels": {"a": "b"}}, "data": {"big": "x"}}),
    )?;
    api.create(&PostParams::default(), &cm).await?;
    let meta = api.get_metadata("m").await?;
    assert_eq!(
        meta.types.as_ref().map(|t| t.kind.as_str()),
        Some("PartialObjectMetadata")
    );
    assert_eq!(meta.labels().get("a").map(String::as_str), Some("b"));
    let list = api
        .list_metadata(&ListParams::default().labels("a=b"))
        .await?;
    assert_eq!(list.items.len(), 1);
    assert_eq!(list.items[0].name_any(), "m");
    Ok(())
}

#[tokio::test]
async fn custom_resource_definitions_are_served() -> TestResult {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;

    let (_emu, client) = setup().await?;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    // The built-in custom types are installed CRDs.
    let canary = crds.get("canaries.flagger.app").await?;
    assert_eq!(canary.spec.names.kind, "Canary");
    let established = canary
        .status
        .and_then(|s| s.conditions)
        .unwrap_or_default()
        .into_iter()
        .any(|c| c.type_ == "Established" && c.status == "True");
    assert!(established);
    let httproutes = crds.get("httproutes.gateway.networking.k8s.io").await?;
    let versions: Vec<String> = httproutes
        .spec
        .versions
        .iter()
        .map(|v| v.name.clone())
        .collect();
    assert_eq!(versions, ["v1", "v1beta1"]);

    // Creating a CRD serves its type; deleting it removes the type and its objects.
    let widget_crd: CustomResourceDefinition = serde_json::from_value(json!({
        "metadata": {"name": "widgets.example.com"},
        "spec": {
            "group": "example.com",
            "names": {"kind": "Widget", "plural": "widgets", "singular": "widget", "listKind": "WidgetList"},
            "scope": "Namespaced",
            "versions": [{"name": "v1", "served": true, "storage": true,
                          "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]
        }
    }))?;
    crds.create(&PostParams::default(), &widget_crd).await?;
    let gvk = GroupVersionKind::gvk("example.com", "v1", "Widget");
    let ar = ApiResource::from_gvk_with_plural(&gvk, "widgets");
    let widgets: Api<DynamicObject> = Api::namespaced_with(client.clone(), "test", &ar);
    let w: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}, "spec": {"size": 1}
    }))?;
    widgets.create(&PostParams::default(), &w).await?;
    assert_eq!(widgets.get("w").await?.data["spec"]["size"], 1);
    let discovery = kube::Discovery::new(client.clone()).run().await?;
    assert!(discovery.has_group("example.com"));

    crds.delete("widgets.example.com", &DeleteParams::default())
        .await?;
    let err = api_error(widgets.get("w").await);
    assert_eq!(err.code, 404);
    // A CRD whose name does not match its names is invalid.
    let mut bad = widget_crd;
    bad.metadata.name = Some("wrong.example.com".into());
    bad.metadata.resource_version = None;
    let err = api_error(crds.create(&PostParams::default(), &bad).await);
    assert_eq!(err.code, 422);
    Ok(())
}

#[tokio::test]
async fn kube_runtime_event_recorder_works() -> TestResult {
    use kube::runtime::events::{Event, EventType, Recorder, Reporter};

    let (emu, client) = setup().await?;
    let cms: Api<ConfigMap> = Api::default_namespaced(client.clone());
    let cm = cms
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "target"}}))?,
        )
        .await?;
    let recorder = Recorder::new(
        client,
        Reporter {
            controller: "aviary".into(),
            instance: None,
        },
    );
    let event = Event {
        type_: EventType::Normal,
        reason: "Promoted".into(),
        note: Some("canary promoted".into()),
        action: "Promote".into(),
        secondary: None,
    };
    let reference = kube::Resource::object_ref(&cm, &());
    recorder.publish(&event, &reference).await?;
    // The same event again becomes a series (a merge patch of the stored one).
    recorder.publish(&event, &reference).await?;
    let events = emu.list("events.k8s.io/v1", "events", Some("test"));
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["reason"], "Promoted");
    assert_eq!(events[0]["regarding"]["name"], "target");
    Ok(())
}

#[tokio::test]
async fn events_of_both_groups_are_one_resource_in_two_views() -> TestResult {
    use k8s_openapi::api::core::v1::Event as CoreEvent;
    use k8s_openapi::api::events::v1::Event;

    let (_emu, client) = setup().await?;
    let events: Api<Event> = Api::default_namespaced(client.clone());
    let core: Api<CoreEvent> = Api::default_namespaced(client.clone());
    let event = |name: &str, target: &str, note: &str| {
        serde_json::from_value::<Event>(json!({
            "metadata": {"name": name},
            "eventTime": "2026-12-05T10:00:00.000000Z",
            "regarding": {"apiVersion": "apps/v1", "kind": "Deployment", "name": target, "namespace": "test", "uid": format!("uid-{target}")},
            "note": note, "reason": "Synced", "type": "Warning", "action": "Progressing",
            "reportingController": "aviary", "reportingInstance": "aviary-test",
        }))
    };
    events
        .create(
            &PostParams::default(),
            &event("podinfo.1", "podinfo", "Halt advancement")?,
        )
        .await?;
    events
        .create(
            &PostParams::default(),
            &event("other.1", "other", "Advance")?,
        )
        .await?;
    // The core view, selected as `kubectl describe deployment podinfo` selects.
    let described = core
        .list(&ListParams::default().fields(
            "involvedObject.name=podinfo,involvedObject.namespace=test,involvedObject.kind=Deployment,involvedObject.uid=uid-podinfo",
        ))
        .await?;
    assert_eq!(described.items.len(), 1);
    let e = &described.items[0];
    assert_eq!(e.message.as_deref(), Some("Halt advancement"));
    assert_eq!(e.reporting_component.as_deref(), Some("aviary"));
    assert_eq!(e.type_.as_deref(), Some("Warning"));
    // A repeat counted in the events.k8s.io view shows in both.
    events
        .patch(
            "podinfo.1",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"series": {"count": 2, "lastObservedTime": "2026-12-05T10:01:00.000000Z"}}),
            ),
        )
        .await?;
    let selected = events
        .list(&ListParams::default().fields("regarding.name=podinfo,reportingController=aviary"))
        .await?;
    assert_eq!(selected.items.len(), 1);
    assert_eq!(selected.items[0].series.as_ref().map(|s| s.count), Some(2));
    assert_eq!(selected.items[0].note.as_deref(), Some("Halt advancement"));
    let seen = core.get("podinfo.1").await?;
    assert_eq!(seen.series.as_ref().and_then(|s| s.count), Some(2));
    // What the real server refuses of an events.k8s.io Event.
    let mut bad = event("bad", "podinfo", "x")?;
    bad.type_ = Some("Info".into());
    bad.action = None;
    let status = api_error(events.create(&PostParams::default(), &bad).await);
    assert_eq!(status.code, 422);
    assert!(
        status.message.contains("action: Required value"),
        "{}",
        status.message
    );
    assert!(
        status.message.contains("type: Invalid value: \"Info\""),
        "{}",
        status.message
    );
    Ok(())
}

/// Istio's VirtualService has its CRD's schema (Istio 1.29.2, vendored in `data/`): a field
/// the schema does not have is pruned, in either served version, and a value of the wrong
/// type is refused with 422 naming its path.
#[tokio::test]
async fn istio_virtual_service_is_pruned_and_validated() -> TestResult {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;

    let (_emu, client) = setup().await?;
    // Both kinds' CRDs carry the schema in both versions.
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for (crd, field) in [
        ("virtualservices.networking.istio.io", "http"),
        ("destinationrules.networking.istio.io", "trafficPolicy"),
    ] {
        let crd = crds.get(crd).await?;
        for v in &crd.spec.versions {
            let schema = v
                .schema
                .as_ref()
                .and_then(|s| s.open_api_v3_schema.as_ref())
                .and_then(|s| s.properties.as_ref())
                .and_then(|p| p.get("spec"))
                .and_then(|s| s.properties.as_ref());
            assert!(
                schema.is_some_and(|p| p.contains_key(field)),
                "{} {}",
                crd.spec.names.kind,
                v.name
            );
        }
    }
    for version in ["v1", "v1beta1"] {
        let gvk = GroupVersionKind::gvk("networking.istio.io", version, "VirtualService");
        let ar = ApiResource::from_gvk_with_plural(&gvk, "virtualservices");
        let vss: Api<DynamicObject> = Api::namespaced_with(client.clone(), "default", &ar);
        let name = format!("web-{version}");
        let vs = |weight: serde_json::Value| {
            json!({
                "apiVersion": format!("networking.istio.io/{version}"),
                "kind": "VirtualService",
                "metadata": {"name": name},
                "spec": {
                    "hosts": ["web"],
                    "http": [{"route": [
                        {"destination": {"host": "web-primary"}, "weight": weight, "colour": "blue"},
                        {"destination": {"host": "web-canary"}, "weight": 10},
                    ]}],
                },
            })
        };
        let created = vss
            .create(
                &PostParams::default(),
                &serde_json::from_value(vs(json!(90)))?,
            )
            .await?;
        let route = &created.data["spec"]["http"][0]["route"][0];
        assert!(route.get("colour").is_none(), "{route}");
        assert_eq!(route["weight"], 90);
        assert_eq!(route["destination"]["host"], "web-primary");
        let stored = vss.get(&name).await?;
        assert!(
            stored.data["spec"]["http"][0]["route"][0]
                .get("colour")
                .is_none(),
            "{:?}",
            stored.data
        );

        let mut bad: DynamicObject = serde_json::from_value(vs(json!("x")))?;
        bad.metadata.name = Some(format!("bad-{version}"));
        let err = api_error(vss.create(&PostParams::default(), &bad).await);
        assert_eq!((err.code, err.reason.as_str()), (422, "Invalid"));
        assert!(
            err.message
                .contains("spec.http[0].route[0].weight: Invalid value: \"string\""),
            "{}",
            err.message
        );
    }
    Ok(())
}

#[tokio::test]
async fn gloo_route_table_and_upstream_are_pruned_and_validated() -> TestResult {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;

    let (_emu, client) = setup().await?;
    // The three Gloo CRDs carry their schema.
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for (crd, field) in [
        ("routetables.gateway.solo.io", "routes"),
        ("virtualservices.gateway.solo.io", "virtualHost"),
        ("upstreams.gloo.solo.io", "kube"),
    ] {
        let crd = crds.get(crd).await?;
        let spec = crd.spec.versions[0]
            .schema
            .as_ref()
            .and_then(|s| s.open_api_v3_schema.as_ref())
            .and_then(|s| s.properties.as_ref())
            .and_then(|p| p.get("spec"))
            .and_then(|s| s.properties.as_ref());
        assert!(spec.is_some_and(|p| p.contains_key(field)), "{crd:?}");
    }

    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("gateway.solo.io", "v1", "RouteTable"),
        "routetables",
    );
    let rts: Api<DynamicObject> = Api::namespaced_with(client.clone(), "default", &ar);
    let rt = |name: &str, weight: serde_json::Value| {
        json!({
            "apiVersion": "gateway.solo.io/v1",
            "kind": "RouteTable",
            "metadata": {"name": name},
            "spec": {"routes": [{
                "matchers": [{"prefix": "/"}],
                "routeAction": {"multi": {"destinations": [
                    {
                        "destination": {"upstream": {"name": "web-primary", "namespace": "default"}, "colour": "blue"},
                        "weight": weight,
                    },
                    {"destination": {"upstream": {"name": "web-canary", "namespace": "default"}}, "weight": 10},
                ]}},
                // Free-form, kept as written.
                "options": {"envoyMetadata": {"x": {"any": ["thing"]}}},
            }]},
        })
    };
    let created = rts
        .create(
            &PostParams::default(),
            &serde_json::from_value(rt("web", json!(90)))?,
        )
        .await?;
    let route = &created.data["spec"]["routes"][0];
    let first = &route["routeAction"]["multi"]["destinations"][0];
    assert!(first["destination"].get("colour").is_none(), "{first}");
    assert_eq!(first["destination"]["upstream"]["name"], "web-primary");
    assert_eq!(first["weight"], 90);
    assert_eq!(route["options"]["envoyMetadata"]["x"]["any"][0], "thing");
    let stored = rts.get("web").await?;
    assert!(
        stored.data["spec"]["routes"][0]["routeAction"]["multi"]["destinations"][0]["destination"]
            .get("colour")
            .is_none(),
        "{:?}",
        stored.data
    );

    let err = api_error(
        rts.create(
            &PostParams::default(),
            &serde_json::from_value(rt("bad", json!("x")))?,
        )
        .await,
    );
    assert_eq!((err.code, err.reason.as_str()), (422, "Invalid"));
    assert!(
        err.message.contains(
            "spec.routes[0].routeAction.multi.destinations[0].weight: Invalid value: \"string\""
        ),
        "{}",
        err.message
    );

    // An Upstream: an unknown field of `kube` is dropped, a port that is not a number refused.
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("gloo.solo.io", "v1", "Upstream"),
        "upstreams",
    );
    let ups: Api<DynamicObject> = Api::namespaced_with(client.clone(), "default", &ar);
    let upstream = |name: &str, port: serde_json::Value| {
        json!({
            "apiVersion": "gloo.solo.io/v1",
            "kind": "Upstream",
            "metadata": {"name": name},
            "spec": {"kube": {
                "serviceName": "web-primary",
                "serviceNamespace": "default",
                "servicePort": port,
                "servicePortName": "http",
            }},
        })
    };
    let created = ups
        .create(
            &PostParams::default(),
            &serde_json::from_value(upstream("web-primary", json!(80)))?,
        )
        .await?;
    assert!(
        created.data["spec"]["kube"]
            .get("servicePortName")
            .is_none(),
        "{:?}",
        created.data
    );
    assert_eq!(created.data["spec"]["kube"]["servicePort"], 80);
    let err = api_error(
        ups.create(
            &PostParams::default(),
            &serde_json::from_value(upstream("bad", json!("http")))?,
        )
        .await,
    );
    assert_eq!((err.code, err.reason.as_str()), (422, "Invalid"));
    assert!(
        err.message
            .contains("spec.kube.servicePort: Invalid value: \"string\""),
        "{}",
        err.message
    );
    Ok(())
}

#[tokio::test]
async fn ingress_nginx_admission_refuses_invalid_canary_annotations() -> TestResult {
    use k8s_openapi::api::networking::v1::Ingress;

    let (_emu, client) = setup().await?;
    let ingresses: Api<Ingress> = Api::default_namespaced(client);
    let ingress = |name: &str, weight: &str| {
        serde_json::from_value::<Ingress>(json!({
            "metadata": {"name": name, "annotations": {
                "nginx.ingress.kubernetes.io/canary": "true",
                "nginx.ingress.kubernetes.io/canary-weight": weight,
            }},
            "spec": {"ingressClassName": "nginx", "rules": [{"host": "app.example.com", "http": {"paths": [
                {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "podinfo-canary", "port": {"number": 80}}}}
            ]}}]},
        }))
    };
    ingresses
        .create(&PostParams::default(), &ingress("podinfo-canary", "30")?)
        .await?;
    let status = api_error(
        ingresses
            .create(&PostParams::default(), &ingress("other-canary", "30%")?)
            .await,
    );
    assert_eq!(status.code, 400);
    assert_eq!(
        status.message,
        "admission webhook \"validate.nginx.ingress.kubernetes.io\" denied the request: annotation nginx.ingress.kubernetes.io/canary-weight contains invalid value 30%"
    );
    // An update is checked too, and leaves the stored Ingress as it was.
    let patch =
        json!({"metadata": {"annotations": {"nginx.ingress.kubernetes.io/canary-weight": "half"}}});
    let status = api_error(
        ingresses
            .patch(
                "podinfo-canary",
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await,
    );
    assert_eq!(status.code, 400);
    let stored = ingresses.get("podinfo-canary").await?;
    assert_eq!(
        stored.metadata.annotations.unwrap_or_default()
            ["nginx.ingress.kubernetes.io/canary-weight"],
        "30"
    );
    Ok(())
}
