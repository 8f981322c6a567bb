//! The target as read at one moment, and its revision: a hash of the pod template and of the
//! configs it references.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::Api;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::config_copies::tracked_configs;
use super::Workloads;
use crate::cluster::{retry, ClusterError};

/// Labels and annotations under this prefix are aviary's own; they never count as a new revision.
pub const AVIARY_PREFIX: &str = "aviary.dev/";

impl Workloads {
    /// Reads the target once: its Deployment and the ConfigMaps and Secrets it references
    /// (optional references may point at nothing, as in Flagger), and the revision they make.
    pub async fn snapshot(&self) -> Result<TargetSnapshot, ClusterError> {
        self.snapshot_of(self.get_target().await?).await
    }

    /// [`Workloads::snapshot`] with the target as `deployment` shows it (a read just made).
    pub async fn snapshot_of(
        &self,
        deployment: Deployment,
    ) -> Result<TargetSnapshot, ClusterError> {
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
}

/// The target as read at one moment: what a promotion copies, and the revision it is.
#[derive(Debug, Clone)]
pub struct TargetSnapshot {
    pub deployment: Deployment,
    pub config_maps: Vec<(String, ConfigMap)>,
    pub secrets: Vec<(String, Secret)>,
    pub revision: String,
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
