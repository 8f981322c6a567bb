//! Discovery and version.

use kube::discovery::{verbs, Discovery, Scope};

use crate::{setup, TestResult};

#[tokio::test]
async fn discovery_finds_builtin_and_gateway_resources() -> TestResult {
    let (_emu, client) = setup().await?;
    let version = client.apiserver_version().await?;
    assert_eq!(
        (version.major.as_str(), version.minor.as_str()),
        ("1", "33")
    );
    assert_eq!(version.git_version, "v1.33.0-emulator");

    let discovery = Discovery::new(client.clone()).run().await?;
    let apps = discovery.get("apps").ok_or("no apps group")?;
    assert_eq!(apps.preferred_version_or_latest(), "v1");
    let (ar, caps) = apps
        .recommended_resources()
        .into_iter()
        .find(|(ar, _)| ar.plural == "deployments")
        .ok_or("no deployments")?;
    assert_eq!(ar.kind, "Deployment");
    assert_eq!(caps.scope, Scope::Namespaced);
    assert!(caps.supports_operation(verbs::WATCH) && caps.supports_operation(verbs::PATCH));
    assert!(caps
        .subresources
        .iter()
        .any(|(s, _)| s.plural == "deployments/status" || s.plural == "status"));

    assert!(discovery.has_group("gateway.networking.k8s.io"));
    let gw = discovery
        .get("gateway.networking.k8s.io")
        .ok_or("no gateway group")?;
    assert_eq!(gw.preferred_version_or_latest(), "v1");
    assert!(gw
        .versioned_resources("v1beta1")
        .iter()
        .any(|(ar, _)| ar.kind == "HTTPRoute"));
    let (gc, gc_caps) = gw
        .recommended_resources()
        .into_iter()
        .find(|(ar, _)| ar.kind == "GatewayClass")
        .ok_or("no gatewayclasses")?;
    assert_eq!(
        (gc.plural.as_str(), gc_caps.scope.clone()),
        ("gatewayclasses", Scope::Cluster)
    );
    assert!(discovery.has_group("flagger.app"));
    let core = discovery.get("").ok_or("no core group")?;
    assert!(core
        .recommended_resources()
        .iter()
        .any(|(ar, _)| ar.plural == "services"));

    // Aggregated discovery (two requests) gives the same answer.
    let aggregated = Discovery::new(client).run_aggregated().await?;
    assert!(aggregated.has_group("gateway.networking.k8s.io"));
    let gvk = kube::core::GroupVersionKind::gvk("apps", "v1", "Deployment");
    assert!(aggregated.resolve_gvk(&gvk).is_some());
    let svc = kube::core::GroupVersionKind::gvk("", "v1", "Service");
    assert!(aggregated.resolve_gvk(&svc).is_some());
    Ok(())
}
