//! The apex, primary and canary Services, and the selector changes of the replica-ratio router.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString as K8sIntOrString;
use kube::api::{Api, Patch, PatchParams};
use serde_json::{json, Value};

use super::Workloads;
use crate::cluster::{apply_params, managed_labels, retry, ClusterError};
use aviary_core::spec::{CustomMetadata, IntOrString};

impl Workloads {
    pub(super) fn selector(&self, value: &str) -> BTreeMap<String, String> {
        BTreeMap::from([(self.label_key.clone(), value.to_string())])
    }

    /// Creates or updates Service `name` the way Flagger's Service reconciler does: a ClusterIP
    /// Service selecting `selector`, with `meta`'s labels and annotations and the Canary's
    /// `trafficDistribution`. `may_be_headless` is true for the primary and canary Services,
    /// which `service.headless` makes headless (`clusterIP: None`); the apex never is.
    ///
    /// A live Service keeps its cluster IP: Kubernetes does not let an update turn a Service
    /// headless or back, and Flagger only sets `clusterIP: None` when it creates the Service, so
    /// a change of `service.headless` reaches a Service that is recreated (deleted, then
    /// re-created by the next rollout); the mismatch is logged. Label and annotation keys listed
    /// in `service.unmanagedMetadata` that the live Service has keep their live values.
    pub(super) async fn apply_service(
        &self,
        name: &str,
        selector: BTreeMap<String, String>,
        meta: Option<&CustomMetadata>,
        may_be_headless: bool,
    ) -> Result<(), ClusterError> {
        let api: Api<Service> = Api::namespaced(self.client.clone(), &self.namespace);
        let what = format!("read Service {name}.{}", self.namespace);
        let live = retry(&what, || api.get_opt(name)).await?;
        let headless = may_be_headless && self.headless;
        let live_ip = live
            .as_ref()
            .and_then(|s| s.spec.as_ref())
            .and_then(|s| s.cluster_ip.clone());
        if let Some(ip) = &live_ip {
            if headless != (ip == "None") {
                tracing::warn!(
                    "Service {name}.{} is {}headless and service.headless is {headless}: the cluster IP of a live Service cannot change; delete the Service for the next rollout to recreate it",
                    self.namespace,
                    if ip == "None" { "" } else { "not " },
                );
            }
        }
        let svc = self.desired_service(name, selector, meta, headless, live.as_ref());
        let what = format!("apply Service {name}.{}", self.namespace);
        let (params, patch) = (apply_params(), Patch::Apply(&svc));
        retry(&what, || api.patch(name, &params, &patch)).await?;
        Ok(())
    }

    /// The Service aviary applies (see [`Workloads::apply_service`]); `live` is the Service in
    /// the cluster, if any.
    fn desired_service(
        &self,
        name: &str,
        selector: BTreeMap<String, String>,
        meta: Option<&CustomMetadata>,
        headless: bool,
        live: Option<&Service>,
    ) -> Service {
        let target_port = match &self.target_port {
            Some(IntOrString::Int(i)) => K8sIntOrString::Int(i32::try_from(*i).unwrap_or(0)),
            Some(IntOrString::String(s)) => K8sIntOrString::String(s.clone()),
            None => K8sIntOrString::Int(i32::from(self.port)),
        };
        let mut labels = meta.map(|m| m.labels.clone()).unwrap_or_default();
        let mut annotations = meta.map(|m| m.annotations.clone()).unwrap_or_default();
        let live_meta = live.map(|s| &s.metadata);
        keep_live(
            &mut labels,
            live_meta.and_then(|m| m.labels.as_ref()),
            &self.unmanaged.labels,
        );
        keep_live(
            &mut annotations,
            live_meta.and_then(|m| m.annotations.as_ref()),
            &self.unmanaged.annotations,
        );
        let live_ip = live
            .and_then(|s| s.spec.as_ref())
            .and_then(|s| s.cluster_ip.as_deref());
        // `None` is applied on creation, and kept (still owned) while the live one is headless.
        let cluster_ip =
            (headless && live_ip.map_or(true, |ip| ip == "None")).then(|| "None".into());
        Service {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                namespace: Some(self.namespace.clone()),
                labels: Some(managed_labels(labels)),
                annotations: (!annotations.is_empty()).then_some(annotations),
                ..ObjectMeta::default()
            },
            spec: Some(ServiceSpec {
                type_: Some("ClusterIP".into()),
                cluster_ip,
                selector: Some(selector),
                ports: Some(vec![ServicePort {
                    name: Some(self.port_name.clone()),
                    port: i32::from(self.port),
                    target_port: Some(target_port),
                    protocol: Some("TCP".into()),
                    app_protocol: self.app_protocol.clone(),
                    ..ServicePort::default()
                }]),
                traffic_distribution: self.traffic_distribution.clone(),
                ..ServiceSpec::default()
            }),
            status: None,
        }
    }

    /// Points a Service's selector at pods with `key: value` (the replica-ratio router selects on
    /// a label both workloads share).
    pub async fn set_service_selector(
        &self,
        name: &str,
        selector: BTreeMap<String, String>,
    ) -> Result<(), ClusterError> {
        let api: Api<Service> = Api::namespaced(self.client.clone(), &self.namespace);
        let what = format!("set the selector of Service {name}.{}", self.namespace);
        // A merge patch merges maps: keys of the old selector that must go are set to null.
        let old = retry(&what, || api.get_opt(name))
            .await?
            .and_then(|s| s.spec)
            .and_then(|s| s.selector)
            .unwrap_or_default();
        let mut selector_patch: serde_json::Map<String, Value> =
            old.into_keys().map(|k| (k, Value::Null)).collect();
        for (k, v) in selector {
            selector_patch.insert(k, Value::String(v));
        }
        let patch = json!({ "spec": { "selector": selector_patch } });
        let (params, patch) = (PatchParams::default(), Patch::Merge(&patch));
        retry(&what, || api.patch(name, &params, &patch)).await?;
        Ok(())
    }
}

/// Gives each of the `keys` that `live` has its live value in `desired` (Flagger's
/// `unmanagedMetadata`: such a key is neither overwritten nor removed).
fn keep_live(
    desired: &mut BTreeMap<String, String>,
    live: Option<&BTreeMap<String, String>>,
    keys: &[String],
) {
    let Some(live) = live else { return };
    for key in keys {
        if let Some(value) = live.get(key) {
            desired.insert(key.clone(), value.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use k8s_openapi::api::core::v1::Service;
    use kube::api::{Api, DeleteParams, Patch, PatchParams};
    use kube::Client;
    use kube_emulator::Emulator;
    use serde_json::{json, Value};

    use crate::workload::Workloads;
    use aviary_core::spec::{Canary, Provider};

    fn canary(service: &str) -> Canary {
        let text = format!(
            "
apiVersion: flagger.app/v1beta1
kind: Canary
metadata: {{name: podinfo, namespace: test}}
spec:
  provider: kubernetes
  targetRef: {{apiVersion: apps/v1, kind: Deployment, name: podinfo}}
  service:
    port: 9898
{service}
"
        );
        match aviary_core::spec::load_str("canary.yaml", &text) {
            Ok(mut docs) if docs.canaries.len() == 1 => docs.canaries.remove(0),
            Ok(docs) => panic!("{} canaries", docs.canaries.len()),
            Err(e) => panic!("{e}"),
        }
    }

    async fn cluster() -> (Emulator, Client) {
        let (emu, client) = crate::testing::emulated(Duration::from_millis(10)).await;
        let deployment = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "podinfo", "namespace": "test"},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": "podinfo"}},
                "template": {
                    "metadata": {"labels": {"app": "podinfo"}},
                    "spec": {"containers": [{"name": "podinfo", "image": "podinfo:1"}]}
                }
            }
        });
        if let Err(e) = emu.insert(deployment) {
            panic!("{e}");
        }
        (emu, client)
    }

    async fn bootstrap(client: &Client, service: &str) {
        let canary = canary(service);
        let workloads =
            match Workloads::discover(client.clone(), &canary, &Provider::Kubernetes).await {
                Ok(w) => w,
                Err(e) => panic!("discover: {e}"),
            };
        if let Err(e) = workloads.bootstrap().await {
            panic!("bootstrap: {e}");
        }
    }

    fn service(emu: &Emulator, name: &str) -> Value {
        match emu.get("v1", "services", Some("test"), name) {
            Some(s) => s,
            None => panic!("no Service {name}"),
        }
    }

    const SERVICE: &str = "    headless: true
    trafficDistribution: PreferClose
    primary:
      labels: {tier: web}
      annotations: {note: aviary}
    unmanagedMetadata:
      labels: [tier, team]
      annotations: [note, external-dns.alpha.kubernetes.io/hostname]";

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_primary_and_canary_services_are_headless_and_all_three_get_the_traffic_distribution(
    ) {
        let (emu, client) = cluster().await;
        bootstrap(&client, SERVICE).await;
        for name in ["podinfo-primary", "podinfo-canary"] {
            let svc = service(&emu, name);
            assert_eq!(svc["spec"]["clusterIP"], "None", "{name}: {svc}");
            assert_eq!(svc["spec"]["trafficDistribution"], "PreferClose", "{name}");
        }
        let apex = service(&emu, "podinfo");
        assert_ne!(apex["spec"]["clusterIP"], "None", "{apex}");
        assert!(apex["spec"]["clusterIP"].is_string(), "{apex}");
        assert_eq!(apex["spec"]["trafficDistribution"], "PreferClose");

        // A second run applies the same headless Services without an error.
        bootstrap(&client, SERVICE).await;
        assert_eq!(service(&emu, "podinfo-canary")["spec"]["clusterIP"], "None");

        // Turned off, the live Services keep their cluster IP (it cannot change on an update)
        // and lose the traffic distribution; a Service created anew is not headless.
        let api: Api<Service> = Api::namespaced(client.clone(), "test");
        if let Err(e) = api.delete("podinfo-canary", &DeleteParams::default()).await {
            panic!("{e}");
        }
        bootstrap(&client, "    primary: {labels: {tier: web}}").await;
        let primary = service(&emu, "podinfo-primary");
        assert_eq!(primary["spec"]["clusterIP"], "None", "{primary}");
        assert!(
            primary["spec"].get("trafficDistribution").is_none(),
            "{primary}"
        );
        let canary = service(&emu, "podinfo-canary");
        assert!(
            canary["spec"]["clusterIP"]
                .as_str()
                .is_some_and(|ip| ip != "None"),
            "{canary}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn unmanaged_labels_and_annotations_keep_their_live_values() {
        let (emu, client) = cluster().await;
        bootstrap(&client, SERVICE).await;
        let primary = service(&emu, "podinfo-primary");
        assert_eq!(primary["metadata"]["labels"]["tier"], "web");
        assert_eq!(primary["metadata"]["annotations"]["note"], "aviary");

        // Another controller changes keys aviary sets and adds one of its own.
        let api: Api<Service> = Api::namespaced(client.clone(), "test");
        let patch = json!({"metadata": {
            "labels": {"tier": "edge", "team": "payments"},
            "annotations": {"note": "theirs", "external-dns.alpha.kubernetes.io/hostname": "a.example"}
        }});
        if let Err(e) = api
            .patch(
                "podinfo-primary",
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
        {
            panic!("{e}");
        }
        bootstrap(&client, SERVICE).await;
        let primary = service(&emu, "podinfo-primary");
        let meta = &primary["metadata"];
        assert_eq!(meta["labels"]["tier"], "edge", "{meta}");
        assert_eq!(meta["labels"]["team"], "payments", "{meta}");
        assert_eq!(meta["annotations"]["note"], "theirs", "{meta}");
        assert_eq!(
            meta["annotations"]["external-dns.alpha.kubernetes.io/hostname"],
            "a.example"
        );

        // Without unmanagedMetadata, aviary's values win again.
        bootstrap(
            &client,
            "    primary: {labels: {tier: web}, annotations: {note: aviary}}",
        )
        .await;
        let meta = service(&emu, "podinfo-primary")["metadata"].clone();
        assert_eq!(meta["labels"]["tier"], "web", "{meta}");
        assert_eq!(meta["annotations"]["note"], "aviary", "{meta}");
    }

    #[test]
    fn only_listed_keys_the_live_object_has_are_kept() {
        let mut desired = std::collections::BTreeMap::from([
            ("a".to_string(), "ours".to_string()),
            ("b".to_string(), "ours".to_string()),
        ]);
        let live = std::collections::BTreeMap::from([
            ("a".to_string(), "theirs".to_string()),
            ("b".to_string(), "theirs".to_string()),
        ]);
        super::keep_live(
            &mut desired,
            Some(&live),
            &["a".to_string(), "c".to_string()],
        );
        assert_eq!(desired["a"], "theirs");
        assert_eq!(desired["b"], "ours");
        assert!(!desired.contains_key("c"));
    }
}
