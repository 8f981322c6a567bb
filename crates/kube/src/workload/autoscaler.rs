//! The primary's HorizontalPodAutoscaler, cloned from the Canary's `autoscalerRef`.

use std::collections::BTreeMap;

use k8s_openapi::api::autoscaling::v2::{
    CrossVersionObjectReference, HorizontalPodAutoscaler, HorizontalPodAutoscalerSpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, Patch};

use super::Workloads;
use crate::cluster::{apply_params, managed_labels, retry, ClusterError};

impl Workloads {
    /// Clones the HPA named by `autoscalerRef` to `<hpa>-primary`, targeting the primary.
    pub(super) async fn apply_primary_autoscaler(&self) -> Result<(), ClusterError> {
        let Some(name) = &self.autoscaler else {
            return Ok(());
        };
        let api: Api<HorizontalPodAutoscaler> =
            Api::namespaced(self.client.clone(), &self.namespace);
        let what = format!("read HorizontalPodAutoscaler {name}.{}", self.namespace);
        let Some(hpa) = retry(&what, || api.get_opt(name)).await? else {
            return Err(ClusterError::Invalid(format!(
                "HorizontalPodAutoscaler {name}.{} (the Canary's autoscalerRef) does not exist",
                self.namespace
            )));
        };
        let spec = hpa.spec;
        let primary_name = format!("{name}-primary");
        let clone = HorizontalPodAutoscaler {
            metadata: ObjectMeta {
                name: Some(primary_name.clone()),
                namespace: Some(self.namespace.clone()),
                labels: Some(managed_labels(BTreeMap::new())),
                ..ObjectMeta::default()
            },
            spec: HorizontalPodAutoscalerSpec {
                scale_target_ref: CrossVersionObjectReference {
                    api_version: Some("apps/v1".into()),
                    kind: "Deployment".into(),
                    name: self.primary.clone(),
                },
                min_replicas: self.primary_min_replicas.or(spec.min_replicas),
                max_replicas: self.primary_max_replicas.unwrap_or(spec.max_replicas),
                metrics: spec.metrics,
                behavior: spec.behavior,
            },
            status: None,
        };
        let what = format!(
            "apply HorizontalPodAutoscaler {primary_name}.{}",
            self.namespace
        );
        let (params, patch) = (apply_params(), Patch::Apply(&clone));
        retry(&what, || api.patch(&primary_name, &params, &patch)).await?;
        Ok(())
    }
}
