//! Applying rendered manifests: server-side apply of every object (field manager `aviary`, labelled
//! as aviary's and with the target it was deployed for), waiting until workloads have rolled out
//! (and saying why not when they do not), and pruning what an earlier deploy of the same target
//! applied and this one no longer renders.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Event, Pod};
use kube::api::{Api, DynamicObject, ListParams, Patch};
use kube::discovery::{ApiCapabilities, ApiResource, Scope};
use kube::Client;
use serde_json::{json, Value};
use tokio::time::Instant;

use crate::cluster::{apply_params, retry, ClusterError, MANAGED_BY};
use crate::workload::deployment_readiness;
use aviary_core::engine::Readiness;

/// The label that says which deploy target an object belongs to (`--prune` works by it).
pub const TARGET_LABEL: &str = "aviary.dev/target";

/// One applied object.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct ObjectKey {
    #[serde(rename = "apiVersion")]
    pub api_version: String,
    pub kind: String,
    pub namespace: Option<String>,
    pub name: String,
}

impl std::fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{} {ns}/{}", self.kind, self.name),
            None => write!(f, "{} {}", self.kind, self.name),
        }
    }
}

/// Why a deploy did not finish.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error("{object} did not roll out: {reason}")]
    NotReady { object: String, reason: String },
}

/// Resolves kinds to API resources through discovery, once per kind.
pub struct Resolver {
    client: Client,
    cache: BTreeMap<(String, String), (ApiResource, ApiCapabilities)>,
}

impl Resolver {
    pub fn new(client: Client) -> Resolver {
        Resolver {
            client,
            cache: BTreeMap::new(),
        }
    }

    pub async fn resolve(
        &mut self,
        api_version: &str,
        kind: &str,
    ) -> Result<(ApiResource, ApiCapabilities), ClusterError> {
        let key = (api_version.to_string(), kind.to_string());
        if let Some(found) = self.cache.get(&key) {
            return Ok(found.clone());
        }
        let (group, version) = match api_version.split_once('/') {
            Some((g, v)) => (g, v),
            None => ("", api_version),
        };
        let gvk = kube::api::GroupVersionKind::gvk(group, version, kind);
        let what = format!("discover {kind} ({api_version})");
        let found = retry(&what, || kube::discovery::pinned_kind(&self.client, &gvk))
            .await
            .map_err(|e| {
                if e.is_not_found() {
                    ClusterError::Invalid(format!(
                        "the cluster does not serve {kind} in {api_version}; is its CRD installed?"
                    ))
                } else {
                    e
                }
            })?;
        self.cache.insert(key, found.clone());
        Ok(found)
    }
}

fn key_of(obj: &Value, namespace: Option<&str>) -> Result<ObjectKey, ClusterError> {
    let text = |p: &str| obj.pointer(p).and_then(Value::as_str).map(str::to_string);
    let (Some(api_version), Some(kind), Some(name)) =
        (text("/apiVersion"), text("/kind"), text("/metadata/name"))
    else {
        return Err(ClusterError::Invalid(format!(
            "a rendered object lacks apiVersion, kind or metadata.name: {}",
            obj.to_string().chars().take(200).collect::<String>()
        )));
    };
    Ok(ObjectKey {
        api_version,
        kind,
        namespace: namespace.map(str::to_string),
        name,
    })
}

/// Server-side applies `objects` (namespaced ones without a namespace go to `namespace`), each
/// labelled as aviary's and with `target`. Returns what was applied, in order.
pub async fn apply_objects(
    client: &Client,
    objects: &[Value],
    namespace: &str,
    target: &str,
) -> Result<Vec<ObjectKey>, ClusterError> {
    let mut resolver = Resolver::new(client.clone());
    let mut applied = Vec::new();
    for obj in objects {
        let api_version = obj["apiVersion"].as_str().unwrap_or_default();
        let kind = obj["kind"].as_str().unwrap_or_default();
        let (resource, caps) = resolver.resolve(api_version, kind).await?;
        let mut obj = obj.clone();
        let ns = match caps.scope {
            Scope::Namespaced => Some(
                obj.pointer("/metadata/namespace")
                    .and_then(Value::as_str)
                    .unwrap_or(namespace)
                    .to_string(),
            ),
            Scope::Cluster => None,
        };
        if let Some(ns) = &ns {
            obj["metadata"]["namespace"] = json!(ns);
        }
        let labels = obj["metadata"]
            .as_object_mut()
            .map(|m| m.entry("labels").or_insert_with(|| json!({})));
        if let Some(labels) = labels.and_then(Value::as_object_mut) {
            labels.insert(MANAGED_BY.0.into(), json!(MANAGED_BY.1));
            labels.insert(TARGET_LABEL.into(), json!(target));
        }
        let key = key_of(&obj, ns.as_deref())?;
        let api: Api<DynamicObject> = match &ns {
            Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
            None => Api::all_with(client.clone(), &resource),
        };
        let what = format!("apply {key}");
        let (params, patch) = (apply_params(), Patch::Apply(&obj));
        retry(&what, || api.patch(&key.name, &params, &patch)).await?;
        tracing::info!("applied {key}");
        applied.push(key);
    }
    Ok(applied)
}

/// Waits until every Deployment, StatefulSet and DaemonSet in `applied` has rolled out, logging
/// progress; fails with the reason (the failing pod's container state and its last events).
pub async fn wait_for_rollouts(
    client: &Client,
    applied: &[ObjectKey],
    timeout: Duration,
) -> Result<(), DeployError> {
    let deadline = Instant::now() + timeout;
    for key in applied {
        if !matches!(
            key.kind.as_str(),
            "Deployment" | "StatefulSet" | "DaemonSet"
        ) {
            continue;
        }
        let ns = key.namespace.clone().unwrap_or_default();
        let mut last = String::new();
        loop {
            let readiness = workload_readiness(client, key, &ns).await?;
            match readiness {
                Readiness::Ready => {
                    tracing::info!("{key} rolled out");
                    break;
                }
                Readiness::NotReady(why) => {
                    if why != last {
                        tracing::info!("waiting for {key}: {why}");
                        last = why.clone();
                    }
                    if Instant::now() >= deadline {
                        let reason = failing_pods(client, key, &ns).await.unwrap_or_default();
                        return Err(DeployError::NotReady {
                            object: key.to_string(),
                            reason: format!(
                                "not ready after {}s ({why}){reason}",
                                timeout.as_secs()
                            ),
                        });
                    }
                }
                Readiness::Failed(why) => {
                    let reason = failing_pods(client, key, &ns).await.unwrap_or_default();
                    return Err(DeployError::NotReady {
                        object: key.to_string(),
                        reason: format!("{why}{reason}"),
                    });
                }
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    Ok(())
}

async fn workload_readiness(
    client: &Client,
    key: &ObjectKey,
    ns: &str,
) -> Result<Readiness, ClusterError> {
    let what = format!("read {key}");
    Ok(match key.kind.as_str() {
        "Deployment" => {
            let api: Api<Deployment> = Api::namespaced(client.clone(), ns);
            match retry(&what, || api.get_opt(&key.name)).await? {
                Some(d) => deployment_readiness(&d, 100),
                None => Readiness::NotReady("it does not exist".into()),
            }
        }
        "StatefulSet" => {
            let api: Api<StatefulSet> = Api::namespaced(client.clone(), ns);
            match retry(&what, || api.get_opt(&key.name)).await? {
                Some(s) => {
                    let desired = s.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
                    let st = s.status.unwrap_or_default();
                    let generation = s.metadata.generation.unwrap_or(0);
                    if st.observed_generation.unwrap_or(0) < generation {
                        Readiness::NotReady("the controller has not seen the new spec yet".into())
                    } else if st.updated_replicas.unwrap_or(0) < desired
                        || st.ready_replicas.unwrap_or(0) < desired
                    {
                        Readiness::NotReady(format!(
                            "{} of {desired} updated replicas are ready",
                            st.ready_replicas
                                .unwrap_or(0)
                                .min(st.updated_replicas.unwrap_or(0))
                        ))
                    } else {
                        Readiness::Ready
                    }
                }
                None => Readiness::NotReady("it does not exist".into()),
            }
        }
        _ => {
            let api: Api<DaemonSet> = Api::namespaced(client.clone(), ns);
            match retry(&what, || api.get_opt(&key.name)).await? {
                Some(d) => {
                    let st = d.status.unwrap_or_default();
                    let generation = d.metadata.generation.unwrap_or(0);
                    if st.observed_generation.unwrap_or(0) < generation {
                        Readiness::NotReady("the controller has not seen the new spec yet".into())
                    } else if st.updated_number_scheduled.unwrap_or(0) < st.desired_number_scheduled
                        || st.number_available.unwrap_or(0) < st.desired_number_scheduled
                    {
                        Readiness::NotReady(format!(
                            "{} of {} pods are updated and available",
                            st.number_available.unwrap_or(0),
                            st.desired_number_scheduled
                        ))
                    } else {
                        Readiness::Ready
                    }
                }
                None => Readiness::NotReady("it does not exist".into()),
            }
        }
    })
}

/// `; pod X: container c is waiting: CrashLoopBackOff (back-off 5m0s...); last events: ...`
async fn failing_pods(client: &Client, key: &ObjectKey, ns: &str) -> Result<String, ClusterError> {
    let selector = match key.kind.as_str() {
        "Deployment" => {
            let api: Api<Deployment> = Api::namespaced(client.clone(), ns);
            api.get_opt(&key.name)
                .await
                .ok()
                .flatten()
                .and_then(|d| d.spec)
                .and_then(|s| s.selector.match_labels)
        }
        "StatefulSet" => {
            let api: Api<StatefulSet> = Api::namespaced(client.clone(), ns);
            api.get_opt(&key.name)
                .await
                .ok()
                .flatten()
                .and_then(|d| d.spec)
                .and_then(|s| s.selector.match_labels)
        }
        _ => {
            let api: Api<DaemonSet> = Api::namespaced(client.clone(), ns);
            api.get_opt(&key.name)
                .await
                .ok()
                .flatten()
                .and_then(|d| d.spec)
                .and_then(|s| s.selector.match_labels)
        }
    };
    let Some(selector) = selector else {
        return Ok(String::new());
    };
    let label_selector = selector
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let lp = ListParams::default().labels(&label_selector);
    let what = format!("list the pods of {key}");
    let list = retry(&what, || pods.list(&lp)).await?;
    let mut out = String::new();
    for pod in list.items.iter().take(3) {
        let name = pod.metadata.name.clone().unwrap_or_default();
        let statuses = pod
            .status
            .as_ref()
            .and_then(|s| s.container_statuses.clone())
            .unwrap_or_default();
        for c in statuses.iter().filter(|c| !c.ready) {
            let state = c.state.clone().unwrap_or_default();
            let detail = if let Some(w) = state.waiting {
                format!(
                    "waiting: {}{}",
                    w.reason.unwrap_or_default(),
                    w.message.map(|m| format!(" ({m})")).unwrap_or_default()
                )
            } else if let Some(t) = state.terminated {
                format!(
                    "terminated: {} (exit code {})",
                    t.reason.unwrap_or_default(),
                    t.exit_code
                )
            } else {
                "running but not ready".into()
            };
            out.push_str(&format!("; pod {name}: container {} is {detail}", c.name));
        }
        let events: Api<Event> = Api::namespaced(client.clone(), ns);
        let lp = ListParams::default().fields(&format!("involvedObject.name={name}"));
        if let Ok(list) = events.list(&lp).await {
            let mut items = list.items;
            items.sort_by_key(|e| e.last_timestamp.clone().map(|t| t.0));
            let last: Vec<String> = items
                .iter()
                .rev()
                .take(3)
                .map(|e| {
                    format!(
                        "{} {}",
                        e.reason.clone().unwrap_or_default(),
                        e.message.clone().unwrap_or_default()
                    )
                })
                .collect();
            if !last.is_empty() {
                out.push_str(&format!("; last events of {name}: {}", last.join(" | ")));
            }
        }
    }
    Ok(out)
}

/// The ConfigMap in which a target's applied objects are recorded.
pub fn inventory_name(target: &str) -> String {
    format!("aviary-inventory-{target}")
}

/// Reads what the previous deploy of `target` applied.
pub async fn read_inventory(
    client: &Client,
    namespace: &str,
    target: &str,
) -> Result<Vec<ObjectKey>, ClusterError> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let name = inventory_name(target);
    let what = format!("read ConfigMap {name}.{namespace}");
    let cm = retry(&what, || api.get_opt(&name)).await?;
    Ok(cm
        .and_then(|c| c.data)
        .and_then(|d| d.get("objects").cloned())
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default())
}

/// Records what this deploy of `target` applied.
pub async fn write_inventory(
    client: &Client,
    namespace: &str,
    target: &str,
    applied: &[ObjectKey],
) -> Result<(), ClusterError> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let name = inventory_name(target);
    let text = serde_json::to_string(applied)
        .map_err(|e| ClusterError::Invalid(format!("inventory: {e}")))?;
    let cm = json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace,
                     "labels": {MANAGED_BY.0: MANAGED_BY.1, TARGET_LABEL: target}},
        "data": {"objects": text},
    });
    let what = format!("write ConfigMap {name}.{namespace}");
    let (params, patch) = (apply_params(), Patch::Apply(&cm));
    retry(&what, || api.patch(&name, &params, &patch)).await?;
    Ok(())
}

/// Deletes the objects the previous deploy applied that this one did not, if they still carry
/// aviary's labels for this target (anything someone else took over is left alone).
pub async fn prune(
    client: &Client,
    previous: &[ObjectKey],
    applied: &[ObjectKey],
    target: &str,
) -> Result<Vec<ObjectKey>, ClusterError> {
    let keep: BTreeSet<&ObjectKey> = applied.iter().collect();
    let mut resolver = Resolver::new(client.clone());
    let mut pruned = Vec::new();
    for key in previous.iter().filter(|k| !keep.contains(k)) {
        let (resource, _) = match resolver.resolve(&key.api_version, &key.kind).await {
            Ok(found) => found,
            Err(e) => {
                tracing::warn!("cannot prune {key}: {e}");
                continue;
            }
        };
        let api: Api<DynamicObject> = match &key.namespace {
            Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
            None => Api::all_with(client.clone(), &resource),
        };
        let what = format!("read {key}");
        let Some(live) = retry(&what, || api.get_opt(&key.name)).await? else {
            continue;
        };
        let labels = live.metadata.labels.unwrap_or_default();
        let ours = labels.get(MANAGED_BY.0).map(String::as_str) == Some(MANAGED_BY.1)
            && labels.get(TARGET_LABEL).map(String::as_str) == Some(target);
        if !ours {
            tracing::info!("not pruning {key}: it is no longer labelled as aviary's for {target}");
            continue;
        }
        let what = format!("delete {key}");
        let dp = kube::api::DeleteParams::default();
        retry(&what, || api.delete(&key.name, &dp)).await?;
        tracing::info!("pruned {key}");
        pruned.push(key.clone());
    }
    Ok(pruned)
}
