//! Workloads, as Flagger manages them: the target Deployment is the canary; aviary clones it to
//! `<target>-primary` (with `-primary` copies of the ConfigMaps and Secrets it references), creates
//! the apex, primary and canary Services, checks readiness the way Flagger does, scales the canary,
//! and promotes by copying the canary's pod template to the primary.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::autoscaling::v2::{
    CrossVersionObjectReference, HorizontalPodAutoscaler, HorizontalPodAutoscalerSpec,
};
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString as K8sIntOrString;
use kube::api::{Api, Patch, PatchParams};
use kube::Client;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::cluster::{apply_params, managed_labels, retry, ClusterError};
use aviary_core::engine::Readiness;
use aviary_core::spec::{Canary, CustomMetadata, IntOrString};

/// The selector labels Flagger looks for, in order.
pub const SELECTOR_LABELS: [&str; 3] = ["app", "name", "app.kubernetes.io/name"];

/// Labels and annotations under this prefix are aviary's own; they never count as a new revision.
pub const AVIARY_PREFIX: &str = "aviary.dev/";

/// The primary/canary pair of one Canary.
#[derive(Clone)]
pub struct Workloads {
    client: Client,
    pub namespace: String,
    /// The target Deployment (the canary).
    pub target: String,
    /// `<target>-primary`.
    pub primary: String,
    /// The selector label key (`app`, ...) and the target's value for it.
    pub label_key: String,
    pub label_value: String,
    /// Apex service name (`service.name`, default the target's name).
    pub service: String,
    port: u16,
    port_name: String,
    target_port: Option<IntOrString>,
    app_protocol: Option<String>,
    apex_meta: Option<CustomMetadata>,
    primary_meta: Option<CustomMetadata>,
    canary_meta: Option<CustomMetadata>,
    autoscaler: Option<String>,
    primary_min_replicas: Option<i32>,
    primary_max_replicas: Option<i32>,
    primary_ready_threshold: u32,
    canary_ready_threshold: u32,
    /// Replica-ratio mode: a label on the pods of both workloads that the apex Service selects.
    pub shared_label: Option<(String, String)>,
}

/// The label both workloads' pods carry in replica-ratio mode (value: the apex Service's name).
pub const SHARED_LABEL: &str = "aviary.dev/service";

impl Workloads {
    /// Reads the target and finds its selector label. Fails if the target does not exist or is
    /// not a Deployment aviary can manage. `provider` is the one in effect (the spec's, or the
    /// runner's default when the spec names none).
    pub async fn discover(
        client: Client,
        canary: &Canary,
        provider: &aviary_core::spec::Provider,
    ) -> Result<Workloads, ClusterError> {
        let kind = canary.target_ref.kind.as_deref().unwrap_or("Deployment");
        if kind != "Deployment" {
            return Err(ClusterError::Invalid(format!(
                "{}: targetRef.kind {kind} is not supported yet; aviary drives Deployments",
                canary.qualified_name()
            )));
        }
        let ns = canary.namespace.clone();
        let target = canary.target_ref.name.clone();
        let api: Api<Deployment> = Api::namespaced(client.clone(), &ns);
        let what = format!("read Deployment {target}.{ns}");
        let dep = retry(&what, || api.get_opt(&target)).await?.ok_or_else(|| {
            ClusterError::Invalid(format!(
                "Deployment {target}.{ns} (the Canary's targetRef) does not exist; apply it before the rollout"
            ))
        })?;
        let match_labels = dep
            .spec
            .as_ref()
            .and_then(|s| s.selector.match_labels.clone())
            .unwrap_or_default();
        let Some((label_key, label_value)) = SELECTOR_LABELS
            .iter()
            .find_map(|k| match_labels.get(*k).map(|v| (k.to_string(), v.clone())))
        else {
            return Err(ClusterError::Invalid(format!(
                "Deployment {target}.{ns}: spec.selector.matchLabels must contain one of {}",
                SELECTOR_LABELS.join(", ")
            )));
        };
        let analysis = canary.analysis.clone().unwrap_or_default();
        let scaler = canary.autoscaler_ref.as_ref();
        Ok(Workloads {
            client,
            namespace: ns,
            primary: format!("{target}-primary"),
            target,
            label_key,
            label_value,
            service: canary.service.name.clone(),
            port: canary.service.port,
            port_name: canary.service.port_name.clone(),
            target_port: canary.service.target_port.clone(),
            app_protocol: canary.service.app_protocol.clone(),
            apex_meta: canary.service.apex.clone(),
            primary_meta: canary.service.primary.clone(),
            canary_meta: canary.service.canary.clone(),
            autoscaler: scaler.map(|a| a.name.clone()),
            primary_min_replicas: scaler
                .and_then(|a| a.primary_scaler_replicas.as_ref())
                .and_then(|r| r.min_replicas),
            primary_max_replicas: scaler
                .and_then(|a| a.primary_scaler_replicas.as_ref())
                .and_then(|r| r.max_replicas),
            primary_ready_threshold: analysis.primary_ready_threshold,
            canary_ready_threshold: analysis.canary_ready_threshold,
            shared_label: (*provider == aviary_core::spec::Provider::KubernetesReplicas)
                .then(|| (SHARED_LABEL.to_string(), canary.service.name.clone())),
        })
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    fn deployments(&self) -> Api<Deployment> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    pub fn primary_label_value(&self) -> String {
        format!("{}-primary", self.label_value)
    }

    pub fn primary_service(&self) -> String {
        format!("{}-primary", self.service)
    }

    pub fn canary_service(&self) -> String {
        format!("{}-canary", self.service)
    }

    async fn get(&self, name: &str) -> Result<Option<Deployment>, ClusterError> {
        let api = self.deployments();
        let what = format!("read Deployment {name}.{}", self.namespace);
        retry(&what, || api.get_opt(name)).await
    }

    async fn get_target(&self) -> Result<Deployment, ClusterError> {
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
        self.apply_service(&self.service, apex_selector, self.apex_meta.as_ref())
            .await?;
        self.apply_service(
            &self.primary_service(),
            primary_selector,
            self.primary_meta.as_ref(),
        )
        .await?;
        self.apply_service(
            &self.canary_service(),
            self.selector(&self.label_value),
            self.canary_meta.as_ref(),
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

    fn selector(&self, value: &str) -> BTreeMap<String, String> {
        BTreeMap::from([(self.label_key.clone(), value.to_string())])
    }

    async fn apply_service(
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

    /// Clones the HPA named by `autoscalerRef` to `<hpa>-primary`, targeting the primary.
    async fn apply_primary_autoscaler(&self) -> Result<(), ClusterError> {
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

    /// Creates or refreshes the `-primary` copies of the ConfigMaps and Secrets of a snapshot.
    async fn copy_configs(&self, snapshot: &TargetSnapshot) -> Result<(), ClusterError> {
        let cms: Api<ConfigMap> = Api::namespaced(self.client.clone(), &self.namespace);
        for (name, cm) in &snapshot.config_maps {
            let copy_name = format!("{name}-primary");
            let copy = ConfigMap {
                metadata: copy_meta(&copy_name, &self.namespace),
                data: cm.data.clone(),
                binary_data: cm.binary_data.clone(),
                immutable: None,
            };
            let what = format!("apply ConfigMap {copy_name}.{}", self.namespace);
            let (params, patch) = (apply_params(), Patch::Apply(&copy));
            retry(&what, || cms.patch(&copy_name, &params, &patch)).await?;
        }
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), &self.namespace);
        for (name, secret) in &snapshot.secrets {
            let copy_name = format!("{name}-primary");
            let copy = Secret {
                metadata: copy_meta(&copy_name, &self.namespace),
                data: secret.data.clone(),
                string_data: None,
                type_: secret.type_.clone(),
                immutable: None,
            };
            let what = format!("apply Secret {copy_name}.{}", self.namespace);
            let (params, patch) = (apply_params(), Patch::Apply(&copy));
            retry(&what, || secrets.patch(&copy_name, &params, &patch)).await?;
        }
        Ok(())
    }

    /// Reads the target once: its Deployment and the ConfigMaps and Secrets it references
    /// (optional references may point at nothing, as in Flagger), and the revision they make.
    pub async fn snapshot(&self) -> Result<TargetSnapshot, ClusterError> {
        let deployment = self.get_target().await?;
        let configs = tracked_configs(&deployment);
        let cms: Api<ConfigMap> = Api::namespaced(self.client.clone(), &self.namespace);
        let mut config_maps = Vec::new();
        for name in &configs.config_maps {
            let what = format!("read ConfigMap {name}.{}", self.namespace);
            if let Some(cm) = retry(&what, || cms.get_opt(name)).await? {
                config_maps.push((name.clone(), cm));
            }
        }
        let secrets_api: Api<Secret> = Api::namespaced(self.client.clone(), &self.namespace);
        let mut secrets = Vec::new();
        for name in &configs.secrets {
            let what = format!("read Secret {name}.{}", self.namespace);
            if let Some(secret) = retry(&what, || secrets_api.get_opt(name)).await? {
                secrets.push((name.clone(), secret));
            }
        }
        let revision = revision_of(&deployment, &config_maps, &secrets);
        Ok(TargetSnapshot {
            deployment,
            config_maps,
            secrets,
            revision,
        })
    }

    /// The canary's revision: a hash of its pod template (aviary's own labels and annotations left
    /// out) and of the data of the ConfigMaps and Secrets it references.
    pub async fn revision(&self) -> Result<String, ClusterError> {
        Ok(self.snapshot().await?.revision)
    }

    /// Flagger's readiness check for one Deployment.
    pub async fn readiness(&self, primary: bool) -> Result<Readiness, ClusterError> {
        let (name, threshold) = if primary {
            (&self.primary, self.primary_ready_threshold)
        } else {
            (&self.target, self.canary_ready_threshold)
        };
        Ok(match self.get(name).await? {
            None => Readiness::NotReady(format!(
                "deployment {name}.{} does not exist yet",
                self.namespace
            )),
            Some(dep) => deployment_readiness(&dep, threshold),
        })
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
        Ok(self
            .get(name)
            .await?
            .and_then(|d| d.spec)
            .and_then(|s| s.replicas)
            .unwrap_or(1))
    }

    /// Flagger's `ScaleFromZero`: the canary gets the primary's replica count (at least one) unless
    /// it already runs some.
    pub async fn scale_canary_up(&self) -> Result<(), ClusterError> {
        let current = self.replicas(&self.target).await?;
        if current > 0 {
            return Ok(());
        }
        let primary = self.replicas(&self.primary).await?.max(1);
        self.scale(&self.target, primary).await
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
}

/// The target as read at one moment: what a promotion copies, and the revision it is.
#[derive(Debug, Clone)]
pub struct TargetSnapshot {
    pub deployment: Deployment,
    pub config_maps: Vec<(String, ConfigMap)>,
    pub secrets: Vec<(String, Secret)>,
    pub revision: String,
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

/// The revision of a target and the configs it references: a hash of its pod template (aviary's
/// own labels and annotations left out) and of the data of those ConfigMaps and Secrets.
pub fn revision_of(
    target: &Deployment,
    config_maps: &[(String, ConfigMap)],
    secrets: &[(String, Secret)],
) -> String {
    let mut template = target
        .spec
        .as_ref()
        .map(|s| serde_json::to_value(&s.template).unwrap_or(Value::Null))
        .unwrap_or(Value::Null);
    for field in ["/metadata/labels", "/metadata/annotations"] {
        if let Some(map) = template.pointer_mut(field).and_then(Value::as_object_mut) {
            map.retain(|k, _| !k.starts_with(AVIARY_PREFIX));
        }
    }
    let mut hasher = Sha256::new();
    hasher.update(canonical(&template).as_bytes());
    for (name, cm) in config_maps {
        hasher.update(format!("configmap/{name}").as_bytes());
        hasher.update(canonical(&json!({"d": cm.data, "b": cm.binary_data})).as_bytes());
    }
    for (name, s) in secrets {
        hasher.update(format!("secret/{name}").as_bytes());
        hasher.update(canonical(&json!({"d": s.data})).as_bytes());
    }
    let digest = hasher.finalize();
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

fn copy_meta(name: &str, namespace: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_string()),
        namespace: Some(namespace.to_string()),
        labels: Some(managed_labels(BTreeMap::new())),
        ..ObjectMeta::default()
    }
}

/// Flagger's `isDeploymentReady`, as a [`Readiness`].
pub fn deployment_readiness(dep: &Deployment, ready_threshold: u32) -> Readiness {
    let name = dep.metadata.name.as_deref().unwrap_or("?");
    let generation = dep.metadata.generation.unwrap_or(0);
    let status = dep.status.clone().unwrap_or_default();
    if generation > status.observed_generation.unwrap_or(0) {
        return Readiness::NotReady(
            "waiting for rollout to finish: observed deployment generation less than desired generation"
                .into(),
        );
    }
    let deadline_exceeded = status.conditions.iter().flatten().any(|c| {
        c.type_ == "Progressing" && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
    });
    if deadline_exceeded {
        return Readiness::Failed(format!(
            "deployment {name:?} exceeded its progress deadline"
        ));
    }
    let desired = dep.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let updated = status.updated_replicas.unwrap_or(0);
    let replicas = status.replicas.unwrap_or(0);
    let available = status.available_replicas.unwrap_or(0);
    if updated < desired {
        return Readiness::NotReady(format!(
            "waiting for rollout to finish: {updated} out of {desired} new replicas have been updated"
        ));
    }
    if replicas > updated {
        return Readiness::NotReady(format!(
            "waiting for rollout to finish: {} old replicas are pending termination",
            replicas - updated
        ));
    }
    let needed = (updated as f64 * f64::from(ready_threshold) / 100.0) as i32;
    if available < needed {
        return Readiness::NotReady(format!(
            "waiting for rollout to finish: {available} of {updated} (readyThreshold {ready_threshold}%) updated replicas are available"
        ));
    }
    Readiness::Ready
}

/// ConfigMaps and Secrets a pod template references.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct TrackedConfigs {
    pub config_maps: BTreeSet<String>,
    pub secrets: BTreeSet<String>,
}

pub fn tracked_configs(dep: &Deployment) -> TrackedConfigs {
    let mut out = TrackedConfigs::default();
    let template = dep
        .spec
        .as_ref()
        .map(|s| serde_json::to_value(&s.template).unwrap_or(Value::Null))
        .unwrap_or(Value::Null);
    visit_config_refs(&template, &mut |kind, name| {
        match kind {
            ConfigKind::ConfigMap => out.config_maps.insert(name.to_string()),
            ConfigKind::Secret => out.secrets.insert(name.to_string()),
        };
    });
    out
}

#[derive(Clone, Copy)]
enum ConfigKind {
    ConfigMap,
    Secret,
}

/// Calls `f` for every ConfigMap/Secret reference in a pod template (as JSON): volumes, projected
/// volume sources, `env[].valueFrom` and `envFrom[]` of containers and init containers.
fn visit_config_refs(template: &Value, f: &mut dyn FnMut(ConfigKind, &str)) {
    let spec = &template["spec"];
    for volume in spec["volumes"].as_array().into_iter().flatten() {
        if let Some(n) = volume["configMap"]["name"].as_str() {
            f(ConfigKind::ConfigMap, n);
        }
        if let Some(n) = volume["secret"]["secretName"].as_str() {
            f(ConfigKind::Secret, n);
        }
        for source in volume["projected"]["sources"]
            .as_array()
            .into_iter()
            .flatten()
        {
            if let Some(n) = source["configMap"]["name"].as_str() {
                f(ConfigKind::ConfigMap, n);
            }
            if let Some(n) = source["secret"]["name"].as_str() {
                f(ConfigKind::Secret, n);
            }
        }
    }
    for list in ["containers", "initContainers"] {
        for c in spec[list].as_array().into_iter().flatten() {
            for env in c["env"].as_array().into_iter().flatten() {
                if let Some(n) = env["valueFrom"]["configMapKeyRef"]["name"].as_str() {
                    f(ConfigKind::ConfigMap, n);
                }
                if let Some(n) = env["valueFrom"]["secretKeyRef"]["name"].as_str() {
                    f(ConfigKind::Secret, n);
                }
            }
            for from in c["envFrom"].as_array().into_iter().flatten() {
                if let Some(n) = from["configMapRef"]["name"].as_str() {
                    f(ConfigKind::ConfigMap, n);
                }
                if let Some(n) = from["secretRef"]["name"].as_str() {
                    f(ConfigKind::Secret, n);
                }
            }
        }
    }
}

/// Points every tracked ConfigMap/Secret reference of a pod template at its `-primary` copy.
fn rename_configs(template: &mut Value, configs: &TrackedConfigs) {
    let rename = |v: &mut Value, set: &BTreeSet<String>| {
        if let Some(name) = v.as_str() {
            if set.contains(name) {
                *v = Value::String(format!("{name}-primary"));
            }
        }
    };
    let Some(spec) = template.get_mut("spec") else {
        return;
    };
    if let Some(volumes) = spec.get_mut("volumes").and_then(Value::as_array_mut) {
        for volume in volumes {
            if let Some(v) = volume.pointer_mut("/configMap/name") {
                rename(v, &configs.config_maps);
            }
            if let Some(v) = volume.pointer_mut("/secret/secretName") {
                rename(v, &configs.secrets);
            }
            if let Some(sources) = volume
                .pointer_mut("/projected/sources")
                .and_then(Value::as_array_mut)
            {
                for source in sources {
                    if let Some(v) = source.pointer_mut("/configMap/name") {
                        rename(v, &configs.config_maps);
                    }
                    if let Some(v) = source.pointer_mut("/secret/name") {
                        rename(v, &configs.secrets);
                    }
                }
            }
        }
    }
    for list in ["containers", "initContainers"] {
        let Some(containers) = spec.get_mut(list).and_then(Value::as_array_mut) else {
            continue;
        };
        for c in containers {
            if let Some(envs) = c.get_mut("env").and_then(Value::as_array_mut) {
                for env in envs {
                    if let Some(v) = env.pointer_mut("/valueFrom/configMapKeyRef/name") {
                        rename(v, &configs.config_maps);
                    }
                    if let Some(v) = env.pointer_mut("/valueFrom/secretKeyRef/name") {
                        rename(v, &configs.secrets);
                    }
                }
            }
            if let Some(froms) = c.get_mut("envFrom").and_then(Value::as_array_mut) {
                for from in froms {
                    if let Some(v) = from.pointer_mut("/configMapRef/name") {
                        rename(v, &configs.config_maps);
                    }
                    if let Some(v) = from.pointer_mut("/secretRef/name") {
                        rename(v, &configs.secrets);
                    }
                }
            }
        }
    }
}

/// JSON with object keys sorted, so equal objects hash equally whatever order they came in.
fn canonical(v: &Value) -> String {
    fn sort(v: &Value) -> Value {
        match v {
            Value::Object(m) => {
                let sorted: BTreeMap<&String, Value> =
                    m.iter().map(|(k, v)| (k, sort(v))).collect();
                serde_json::to_value(sorted).unwrap_or(Value::Null)
            }
            Value::Array(a) => Value::Array(a.iter().map(sort).collect()),
            other => other.clone(),
        }
    }
    sort(v).to_string()
}

impl Workloads {
    /// An owner reference to the primary, for objects that should go when it goes.
    pub async fn primary_owner(
        &self,
    ) -> Result<Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference>, ClusterError>
    {
        Ok(self.get(&self.primary).await?.and_then(|d| {
            Some(
                k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
                    api_version: "apps/v1".into(),
                    kind: "Deployment".into(),
                    name: self.primary.clone(),
                    uid: d.metadata.uid?,
                    controller: None,
                    block_owner_deletion: None,
                },
            )
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dep(generation: i64, status: Value, replicas: i32) -> Deployment {
        let value = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "podinfo", "generation": generation},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "podinfo"}},
                     "template": {"metadata": {"labels": {"app": "podinfo"}}, "spec": {"containers": []}}},
            "status": status,
        });
        match serde_json::from_value(value) {
            Ok(d) => d,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn readiness_follows_flagger() {
        let stale = dep(2, json!({"observedGeneration": 1}), 2);
        assert!(
            matches!(deployment_readiness(&stale, 100), Readiness::NotReady(m) if m.contains("observed deployment generation"))
        );
        let updating = dep(
            1,
            json!({"observedGeneration": 1, "updatedReplicas": 1, "replicas": 2}),
            2,
        );
        assert_eq!(
            deployment_readiness(&updating, 100),
            Readiness::NotReady(
                "waiting for rollout to finish: 1 out of 2 new replicas have been updated".into()
            )
        );
        let half = dep(
            1,
            json!({"observedGeneration": 1, "updatedReplicas": 4, "replicas": 4, "availableReplicas": 2}),
            4,
        );
        assert!(
            matches!(deployment_readiness(&half, 100), Readiness::NotReady(m) if m.contains("2 of 4 (readyThreshold 100%)"))
        );
        assert_eq!(deployment_readiness(&half, 50), Readiness::Ready);
        let stuck = dep(
            1,
            json!({"observedGeneration": 1, "conditions": [
            {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}]}),
            2,
        );
        assert_eq!(
            deployment_readiness(&stuck, 100),
            Readiness::Failed("deployment \"podinfo\" exceeded its progress deadline".into())
        );
        let zero = dep(3, json!({"observedGeneration": 3}), 0);
        assert_eq!(deployment_readiness(&zero, 100), Readiness::Ready);
    }

    #[test]
    fn configs_are_found_and_renamed() {
        let value = json!({
            "metadata": {"name": "podinfo"},
            "spec": {"selector": {}, "template": {"spec": {
                "volumes": [{"name": "a", "configMap": {"name": "settings"}},
                            {"name": "b", "secret": {"secretName": "tls"}},
                            {"name": "c", "projected": {"sources": [{"configMap": {"name": "extra"}}]}}],
                "containers": [{"name": "app",
                    "env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "db", "key": "pw"}}}],
                    "envFrom": [{"configMapRef": {"name": "env"}}]}]}}}
        });
        let d: Deployment = match serde_json::from_value(value) {
            Ok(d) => d,
            Err(e) => panic!("{e}"),
        };
        let configs = tracked_configs(&d);
        assert_eq!(
            configs
                .config_maps
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>(),
            vec!["env", "extra", "settings"]
        );
        assert_eq!(
            configs
                .secrets
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>(),
            vec!["db", "tls"]
        );
        let mut template =
            serde_json::to_value(&d.spec.unwrap_or_default().template).unwrap_or(Value::Null);
        rename_configs(&mut template, &configs);
        assert_eq!(
            template.pointer("/spec/volumes/0/configMap/name"),
            Some(&json!("settings-primary"))
        );
        assert_eq!(
            template.pointer("/spec/volumes/1/secret/secretName"),
            Some(&json!("tls-primary"))
        );
        assert_eq!(
            template.pointer("/spec/containers/0/env/0/valueFrom/secretKeyRef/name"),
            Some(&json!("db-primary"))
        );
        assert_eq!(
            template.pointer("/spec/containers/0/envFrom/0/configMapRef/name"),
            Some(&json!("env-primary"))
        );
    }
}
