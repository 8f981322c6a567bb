//! Server-side apply through `Patch::Apply`.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, Patch, PatchParams};
use kube::ResourceExt;
use serde_json::json;

use crate::{api_error, deployment_json, setup, TestResult};

#[tokio::test]
async fn apply_creates_updates_and_removes_dropped_fields() -> TestResult {
    let (_emu, client) = setup().await?;
    let api: Api<Deployment> = Api::default_namespaced(client);
    let pp = PatchParams::apply("aviary").force();

    let mut d = deployment_json("podinfo", "podinfo:1");
    d["metadata"]["annotations"] = json!({"owner": "aviary", "temporary": "yes"});
    let created = api.patch("podinfo", &pp, &Patch::Apply(&d)).await?;
    assert_eq!(created.metadata.generation, Some(1));
    assert_eq!(
        created.annotations().get("temporary").map(String::as_str),
        Some("yes")
    );
    let mf = created.metadata.managed_fields.clone().unwrap_or_default();
    assert_eq!(mf.len(), 1);
    assert_eq!(mf[0].manager.as_deref(), Some("aviary"));
    assert_eq!(mf[0].operation.as_deref(), Some("Apply"));
    assert_eq!(mf[0].fields_type.as_deref(), Some("FieldsV1"));
    let fields = serde_json::to_value(&mf[0].fields_v1)?;
    assert!(fields.pointer("/f:spec/f:replicas").is_some(), "{fields}");
    assert!(
        fields
            .pointer("/f:spec/f:template/f:spec/f:containers/k:{\"name\":\"app\"}/f:image")
            .is_some(),
        "{fields}"
    );

    // Re-applying the same thing is a no-op: same resourceVersion.
    let again = api.patch("podinfo", &pp, &Patch::Apply(&d)).await?;
    assert_eq!(
        again.metadata.resource_version,
        created.metadata.resource_version
    );

    // Update: a new image, and the `temporary` annotation is no longer sent.
    d["metadata"]["annotations"] = json!({"owner": "aviary"});
    d["spec"]["template"]["spec"]["containers"][0]["image"] = json!("podinfo:2");
    let updated = api.patch("podinfo", &pp, &Patch::Apply(&d)).await?;
    assert_eq!(updated.metadata.generation, Some(2));
    assert!(
        !updated.annotations().contains_key("temporary"),
        "dropped field removed"
    );
    assert_eq!(
        updated.annotations().get("owner").map(String::as_str),
        Some("aviary")
    );
    let image = updated
        .spec
        .and_then(|s| s.template.spec)
        .and_then(|s| s.containers.first().and_then(|c| c.image.clone()));
    assert_eq!(image.as_deref(), Some("podinfo:2"));
    Ok(())
}

#[tokio::test]
async fn apply_conflicts_between_managers() -> TestResult {
    let (_emu, client) = setup().await?;
    let api: Api<ConfigMap> = Api::default_namespaced(client);
    let first = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg"}, "data": {"a": "1", "b": "1"}});
    api.patch("cfg", &PatchParams::apply("first"), &Patch::Apply(&first))
        .await?;

    // Another manager sets a field `first` owns to another value: conflict without force.
    let second = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg"}, "data": {"a": "2"}});
    let err = api_error(
        api.patch("cfg", &PatchParams::apply("second"), &Patch::Apply(&second))
            .await,
    );
    assert_eq!((err.code, err.reason.as_str()), (409, "Conflict"));
    assert_eq!(
        err.message,
        "Apply failed with 1 conflict: conflict with \"first\" using v1: .data.a"
    );
    let causes = err.details.map(|d| d.causes).unwrap_or_default();
    assert_eq!(
        causes
            .first()
            .map(|c| (c.reason.as_str(), c.field.as_str())),
        Some(("FieldManagerConflict", ".data.a"))
    );

    // Applying the same value is shared ownership, not a conflict.
    let same = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg"}, "data": {"b": "1"}});
    api.patch("cfg", &PatchParams::apply("second"), &Patch::Apply(&same))
        .await?;
    // `first` stops sending b: still owned by `second`, so it stays.
    let first_without_b = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg"}, "data": {"a": "1"}});
    let cm = api
        .patch(
            "cfg",
            &PatchParams::apply("first"),
            &Patch::Apply(&first_without_b),
        )
        .await?;
    assert_eq!(
        cm.data
            .as_ref()
            .and_then(|d| d.get("b"))
            .map(String::as_str),
        Some("1")
    );

    // With force the field moves to `second`.
    let forced = api
        .patch(
            "cfg",
            &PatchParams::apply("second").force(),
            &Patch::Apply(&second),
        )
        .await?;
    assert_eq!(
        forced
            .data
            .as_ref()
            .and_then(|d| d.get("a"))
            .map(String::as_str),
        Some("2")
    );
    let managers: Vec<String> = forced
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter_map(|m| m.manager.clone())
        .collect();
    assert!(
        !managers.contains(&"first".to_string()),
        "first lost its only field: {managers:?}"
    );

    // fieldManager is required for apply (kube checks it too, so send the request by hand).
    let req = http::Request::patch("/api/v1/namespaces/test/configmaps/cfg")
        .header("content-type", "application/apply-patch+yaml")
        .body(serde_json::to_vec(&second)?)?;
    let err = api_error(api.into_client().request::<ConfigMap>(req).await);
    assert_eq!((err.code, err.reason.as_str()), (422, "Invalid"));
    assert!(
        err.message.contains("fieldManager: Required value"),
        "{}",
        err.message
    );
    Ok(())
}

#[tokio::test]
async fn updates_by_other_managers_are_tracked() -> TestResult {
    let (_emu, client) = setup().await?;
    let api: Api<Deployment> = Api::default_namespaced(client);
    api.patch(
        "podinfo",
        &PatchParams::apply("aviary"),
        &Patch::Apply(deployment_json("podinfo", "podinfo:1")),
    )
    .await?;
    // An HPA-like writer changes replicas with a merge patch.
    let scaled = api
        .patch(
            "podinfo",
            &PatchParams {
                field_manager: Some("hpa".into()),
                ..Default::default()
            },
            &Patch::Merge(json!({"spec": {"replicas": 7}})),
        )
        .await?;
    let entry = scaled
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .find(|m| m.manager.as_deref() == Some("hpa"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(entry.operation.as_deref(), Some("Update"));
    assert!(serde_json::to_value(&entry.fields_v1)?
        .pointer("/f:spec/f:replicas")
        .is_some());
    // Re-applying the old replicas without force now conflicts with the updater.
    let err = api_error(
        api.patch(
            "podinfo",
            &PatchParams::apply("aviary"),
            &Patch::Apply(deployment_json("podinfo", "podinfo:1")),
        )
        .await,
    );
    assert!(
        err.message.contains("conflict with \"hpa\""),
        "{}",
        err.message
    );
    Ok(())
}

#[tokio::test]
async fn apply_to_the_status_subresource() -> TestResult {
    use kube::core::{DynamicObject, GroupVersionKind};
    use kube::discovery::ApiResource;

    let (_emu, client) = setup().await?;
    let gvk = GroupVersionKind::gvk("flagger.app", "v1beta1", "Canary");
    let ar = ApiResource::from_gvk_with_plural(&gvk, "canaries");
    let api: Api<DynamicObject> = Api::namespaced_with(client, "test", &ar);
    let canary = json!({
        "apiVersion": "flagger.app/v1beta1", "kind": "Canary",
        "metadata": {"name": "podinfo"},
        "spec": {
            "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
            "analysis": {"interval": "1m"}
        },
        "status": {"phase": "Ignored"}
    });
    let created = api
        .patch(
            "podinfo",
            &PatchParams::apply("aviary").force(),
            &Patch::Apply(&canary),
        )
        .await?;
    assert!(
        created.data.get("status").is_none(),
        "status is not applied through the main resource"
    );

    let status = json!({
        "apiVersion": "flagger.app/v1beta1", "kind": "Canary",
        "metadata": {"name": "podinfo"},
        "status": {"phase": "Progressing", "canaryWeight": 10},
        "spec": {"targetRef": {"name": "ignored"}}
    });
    let after = api
        .patch_status(
            "podinfo",
            &PatchParams::apply("aviary-status").force(),
            &Patch::Apply(&status),
        )
        .await?;
    assert_eq!(after.data["status"]["phase"], "Progressing");
    assert_eq!(after.data["status"]["canaryWeight"], 10);
    assert_eq!(after.data["spec"]["targetRef"]["name"], "podinfo");
    let entry = after
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .find(|m| m.manager.as_deref() == Some("aviary-status"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(entry.subresource.as_deref(), Some("status"));
    assert_eq!(entry.operation.as_deref(), Some("Apply"));

    // Dropping canaryWeight from the next status apply removes it.
    let status2 = json!({
        "apiVersion": "flagger.app/v1beta1", "kind": "Canary",
        "metadata": {"name": "podinfo"},
        "status": {"phase": "Succeeded"}
    });
    let after2 = api
        .patch_status(
            "podinfo",
            &PatchParams::apply("aviary-status").force(),
            &Patch::Apply(&status2),
        )
        .await?;
    assert_eq!(after2.data["status"], json!({"phase": "Succeeded"}));
    Ok(())
}
