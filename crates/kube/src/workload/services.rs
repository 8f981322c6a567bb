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

    pub(super) async fn apply_service(
        &self,
        name: &str,
        selector: BTreeMap<String, String>,
        meta: Option<&CustomMetadata>,
    ) -> Result<(), ClusterError> {
        let target_port = match &self.target_port {
            Some(IntOrString::Int(i)) => K8sIntOrString::Int(i32::try_from(*i).unwrap_or(0)),
            Some(IntOrString::String(s)) => K8sIntOrString::String(s.clone()),
            None => K8sIntOrString::Int(i32::from(self.port)),
        };
        let labels = meta.map(|m| m.labels.clone()).unwrap_or_default();
        let annotations = meta.map(|m| m.annotations.clone()).unwrap_or_default();
        let svc = Service {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                namespace: Some(self.namespace.clone()),
                labels: Some(managed_labels(labels)),
                annotations: (!annotations.is_empty()).then_some(annotations),
                ..ObjectMeta::default()
            },
            spec: Some(ServiceSpec {
                type_: Some("ClusterIP".into()),
                selector: Some(selector),
                ports: Some(vec![ServicePort {
                    name: Some(self.port_name.clone()),
                    port: i32::from(self.port),
                    target_port: Some(target_port),
                    protocol: Some("TCP".into()),
                    app_protocol: self.app_protocol.clone(),
                    ..ServicePort::default()
                }]),
                ..ServiceSpec::default()
            }),
            status: None,
        };
        let api: Api<Service> = Api::namespaced(self.client.clone(), &self.namespace);
        let what = format!("apply Service {name}.{}", self.namespace);
        let (params, patch) = (apply_params(), Patch::Apply(&svc));
        retry(&what, || api.patch(name, &params, &patch)).await?;
        Ok(())
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
