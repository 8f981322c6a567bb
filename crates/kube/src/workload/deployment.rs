//! The primary Deployment, as Flagger's deployment controller keeps it: initialisation, the primary
//! built from the target, scaling, the canary's pod labels, and promotion.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use kube::api::{Api, Patch, PatchParams};
use serde_json::{json, Value};

use super::config_copies::{rename_configs, tracked_configs};
use super::Workloads;
use crate::cluster::{apply_params, managed_labels, retry, ClusterError};

impl Workloads {
    fn deployments(&self) -> Api<Deployment> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    pub(super) async fn get(&self, name: &str) -> Result<Option<Deployment>, ClusterError> {
        let api = self.deployments();
        let what = format!("read Deployment {name}.{}", self.namespace);
        retry(&what, || api.get_opt(name)).await
    }

    pub(super) async fn get_target(&self) -> Result<Deployment, ClusterError> {
        self.get(&self.target).await?.ok_or_else(|| {
            ClusterError::Invalid(format!(
                "Deployment {}.{} (the canary) disappeared",
                self.target, self.namespace
            ))
        })
    }

    /// Creates what Flagger's initialisation creates: the primary (only if absent), the `-primary`
    /// config copies, the primary autoscaler and the three services, the apex selecting the primary.
    pub async fn bootstrap(&self) -> Result<(), ClusterError> {
        let snapshot = self.snapshot().await?;
        self.copy_configs(&snapshot).await?;
        let target = &snapshot.deployment;
        if self.get(&self.primary).await?.is_none() {
            let replicas = target
                .spec
                .as_ref()
                .and_then(|s| s.replicas)
                .unwrap_or(1)
                .max(self.primary_min_replicas.unwrap_or(1));
            let primary = self.primary_from(target, Some(replicas))?;
            self.apply_deployment(&self.primary, &primary).await?;
        }
        self.apply_primary_autoscaler().await?;
        let primary_selector = self.selector(&self.primary_label_value());
        let apex_selector = match &self.shared_label {
            Some((k, v)) => BTreeMap::from([(k.clone(), v.clone())]),
            None => primary_selector.clone(),
        };
        self.apply_service(&self.service, apex_selector, self.apex_meta.as_ref(), false)
            .await?;
        self.apply_service(
            &self.primary_service(),
            primary_selector,
            self.primary_meta.as_ref(),
            true,
        )
        .await?;
        self.apply_service(
            &self.canary_service(),
            self.selector(&self.label_value),
            self.canary_meta.as_ref(),
            true,
        )
        .await
    }

    /// The primary Deployment aviary wants, built from the target.
    fn primary_from(
        &self,
        target: &Deployment,
        replicas: Option<i32>,
    ) -> Result<Deployment, ClusterError> {
        let spec = target.spec.clone().unwrap_or_default();
        let configs = tracked_configs(target);
        let mut template = serde_json::to_value(&spec.template)
            .map_err(|e| ClusterError::Invalid(format!("pod template: {e}")))?;
        rename_configs(&mut template, &configs);
        let mut pod_labels = json!({ &self.label_key: self.primary_label_value() });
        if let Some((k, v)) = &self.shared_label {
            pod_labels[k] = json!(v);
        }
        if let Some(labels) = template
            .pointer_mut("/metadata/labels")
            .and_then(Value::as_object_mut)
        {
            if let Some(extra) = pod_labels.as_object() {
                labels.extend(extra.clone());
            }
        } else if let Some(meta) = template.as_object_mut() {
            meta.insert("metadata".into(), json!({ "labels": pod_labels }));
        }
        let template = serde_json::from_value(template)
            .map_err(|e| ClusterError::Invalid(format!("pod template: {e}")))?;

        let mut labels = target.metadata.labels.clone().unwrap_or_default();
        labels.insert(self.label_key.clone(), self.primary_label_value());
        let mut annotations = target.metadata.annotations.clone().unwrap_or_default();
        annotations.remove("kubectl.kubernetes.io/last-applied-configuration");
        annotations.retain(|k, _| !k.starts_with("deployment.kubernetes.io/"));
        Ok(Deployment {
            metadata: ObjectMeta {
                name: Some(self.primary.clone()),
                namespace: Some(self.namespace.clone()),
                labels: Some(managed_labels(labels)),
                annotations: (!annotations.is_empty()).then_some(annotations),
                ..ObjectMeta::default()
            },
            spec: Some(DeploymentSpec {
                replicas,
                selector: LabelSelector {
                    match_labels: Some(BTreeMap::from([(
                        self.label_key.clone(),
                        self.primary_label_value(),
                    )])),
                    ..LabelSelector::default()
                },
                template,
                strategy: spec.strategy,
                min_ready_seconds: spec.min_ready_seconds,
                progress_deadline_seconds: spec.progress_deadline_seconds,
                revision_history_limit: spec.revision_history_limit,
                paused: None,
            }),
            status: None,
        })
    }

    async fn apply_deployment(&self, name: &str, dep: &Deployment) -> Result<(), ClusterError> {
        let api = self.deployments();
        let what = format!("apply Deployment {name}.{}", self.namespace);
        let (params, patch) = (apply_params(), Patch::Apply(dep));
        retry(&what, || api.patch(name, &params, &patch)).await?;
        Ok(())
    }

    /// Sets (or, with `None`, removes) a label on the canary's pod template. The replica-ratio
    /// router uses it to put the canary's pods behind the apex Service and take them out again.
    pub async fn set_canary_pod_label(
        &self,
        key: &str,
        value: Option<&str>,
    ) -> Result<(), ClusterError> {
        let api = self.deployments();
        let what = format!(
            "label the pods of Deployment {}.{}",
            self.target, self.namespace
        );
        let patch = json!({ "spec": { "template": { "metadata": { "labels": { key: value } } } } });
        let (params, patch) = (PatchParams::default(), Patch::Merge(&patch));
        retry(&what, || api.patch(&self.target, &params, &patch)).await?;
        Ok(())
    }

    pub async fn scale(&self, name: &str, replicas: i32) -> Result<(), ClusterError> {
        let api = self.deployments();
        let what = format!("scale Deployment {name}.{} to {replicas}", self.namespace);
        let patch = json!({ "spec": { "replicas": replicas } });
        let (params, patch) = (PatchParams::default(), Patch::Merge(&patch));
        retry(&what, || api.patch(name, &params, &patch)).await?;
        Ok(())
    }

    pub async fn replicas(&self, name: &str) -> Result<i32, ClusterError> {
        Ok(self.get(name).await?.as_ref().map_or(1, replicas_of))
    }

    /// Flagger's `ScaleFromZero`: the canary gets the primary's replica count (at least one) unless
    /// it already runs some. `target` and `primary`: the two as read a moment ago in the same
    /// tick, with nothing changed since (else they are read here).
    pub async fn scale_canary_up(
        &self,
        target: Option<&Deployment>,
        primary: Option<&Deployment>,
    ) -> Result<(), ClusterError> {
        let current = match target {
            Some(target) => replicas_of(target),
            None => self.replicas(&self.target).await?,
        };
        if current > 0 {
            return Ok(());
        }
        let primary = match primary {
            Some(primary) => replicas_of(primary),
            None => self.replicas(&self.primary).await?,
        };
        self.scale(&self.target, primary.max(1)).await
    }

    pub async fn scale_canary_to_zero(&self) -> Result<(), ClusterError> {
        self.scale(&self.target, 0).await
    }

    /// Copies the canary's pod template, strategy, minReadySeconds, labels and annotations (and
    /// replicas when there is no autoscaler) to the primary, with the configs refreshed first —
    /// provided the target still is `analysed`, the revision the analysis judged. The template
    /// and configs copied are the very ones whose hash was compared (one read), so a release
    /// applied meanwhile is never copied: it is reported as [`Promotion::Changed`] instead.
    pub async fn promote(&self, analysed: Option<&str>) -> Result<Promotion, ClusterError> {
        let snapshot = self.snapshot().await?;
        if let Some(analysed) = analysed {
            if snapshot.revision != analysed {
                return Ok(Promotion::Changed {
                    found: snapshot.revision,
                });
            }
        }
        let target = &snapshot.deployment;
        self.copy_configs(&snapshot).await?;
        let replicas = if self.autoscaler.is_some() {
            None
        } else if self.shared_label.is_some() {
            // Replica ratio: the router owns the split; keep the primary's count.
            Some(self.replicas(&self.primary).await?)
        } else {
            let primary_replicas = self.replicas(&self.primary).await?;
            Some(
                target
                    .spec
                    .as_ref()
                    .and_then(|s| s.replicas)
                    .filter(|r| *r > 0)
                    .unwrap_or(primary_replicas),
            )
        };
        let primary = self.primary_from(target, replicas)?;
        self.apply_deployment(&self.primary, &primary).await?;
        Ok(Promotion::Done)
    }

    /// An owner reference to the primary, for objects that should go when it goes.
    pub async fn primary_owner(
        &self,
    ) -> Result<Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference>, ClusterError>
    {
        Ok(self
            .get(&self.primary)
            .await?
            .and_then(|d| self.owner_of_primary(&d)))
    }

    /// The owner reference to `primary`, the primary Deployment as read.
    pub fn owner_of_primary(
        &self,
        primary: &Deployment,
    ) -> Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference> {
        Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
                api_version: "apps/v1".into(),
                kind: "Deployment".into(),
                name: self.primary.clone(),
                uid: primary.metadata.uid.clone()?,
                controller: None,
                block_owner_deletion: None,
            },
        )
    }
}

/// What a pinned promotion did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Promotion {
    /// The analysed revision is now the primary's.
    Done,
    /// The target is no longer the analysed revision (a new release was applied during the
    /// analysis): nothing was copied.
    Changed { found: String },
}

/// A Deployment's `spec.replicas` (1 when unset, as the API server defaults it).
fn replicas_of(deployment: &Deployment) -> i32 {
    deployment
        .spec
        .as_ref()
        .and_then(|s| s.replicas)
        .unwrap_or(1)
}
