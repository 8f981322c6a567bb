//! The primary/canary pair of one Canary: finding the target Deployment and its selector label,
//! and the names of the primary and the Services derived from them.

use k8s_openapi::api::apps::v1::Deployment;
use kube::api::Api;
use kube::Client;

use crate::cluster::{retry, ClusterError};
use aviary_core::spec::{Canary, CustomMetadata, IntOrString, UnmanagedMetadata};

/// The selector labels Flagger looks for, in order.
pub const SELECTOR_LABELS: [&str; 3] = ["app", "name", "app.kubernetes.io/name"];

/// The primary/canary pair of one Canary.
#[derive(Clone)]
pub struct Workloads {
    pub(super) client: Client,
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
    pub(super) port: u16,
    pub(super) port_name: String,
    pub(super) target_port: Option<IntOrString>,
    pub(super) app_protocol: Option<String>,
    pub(super) apex_meta: Option<CustomMetadata>,
    pub(super) primary_meta: Option<CustomMetadata>,
    pub(super) canary_meta: Option<CustomMetadata>,
    /// `service.headless`: the primary and canary Services are created headless.
    pub(super) headless: bool,
    /// `service.trafficDistribution`, set on the three Services.
    pub(super) traffic_distribution: Option<String>,
    /// `service.unmanagedMetadata`: label and annotation keys whose live values are kept.
    pub(super) unmanaged: UnmanagedMetadata,
    pub(super) autoscaler: Option<String>,
    pub(super) primary_min_replicas: Option<i32>,
    pub(super) primary_max_replicas: Option<i32>,
    pub(super) primary_ready_threshold: u32,
    pub(super) canary_ready_threshold: u32,
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
        Ok(Workloads::discover_read(client, canary, provider).await?.0)
    }

    /// [`Workloads::discover`], and the target as it read it.
    pub async fn discover_read(
        client: Client,
        canary: &Canary,
        provider: &aviary_core::spec::Provider,
    ) -> Result<(Workloads, Deployment), ClusterError> {
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
        let workloads = Workloads {
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
            headless: canary.service.headless,
            traffic_distribution: canary.service.traffic_distribution.clone(),
            unmanaged: canary
                .service
                .unmanaged_metadata
                .clone()
                .unwrap_or_default(),
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
        };
        Ok((workloads, dep))
    }

    pub fn client(&self) -> &Client {
        &self.client
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
}
