//! The ConfigMaps and Secrets a pod template references, and their `-primary` copies.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, Patch};
use serde_json::Value;

use super::{TargetSnapshot, Workloads};
use crate::cluster::{apply_params, managed_labels, retry, ClusterError};

impl Workloads {
    /// Creates or refreshes the `-primary` copies of the ConfigMaps and Secrets of a snapshot.
    pub(super) async fn copy_configs(&self, snapshot: &TargetSnapshot) -> Result<(), ClusterError> {
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
}

fn copy_meta(name: &str, namespace: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_string()),
        namespace: Some(namespace.to_string()),
        labels: Some(managed_labels(BTreeMap::new())),
        ..ObjectMeta::default()
    }
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
pub(super) fn rename_configs(template: &mut Value, configs: &TrackedConfigs) {
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

#[cfg(test)]
mod tests {
    use super::*;

    use serde_json::json;

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
