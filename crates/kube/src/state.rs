//! In-cluster state and the runner's lock.
//!
//! The engine's state is kept in a ConfigMap `<canary>-aviary` next to the primary (owned by it, so
//! it goes when the primary goes), written with optimistic concurrency on `resourceVersion`, so a
//! run that was killed can be resumed by the next one. Beside the engine it keeps the Canary the
//! run was started with, so that `aviary abort` and `aviary status` can reach the canary's
//! workloads and routes with nothing but its name. `aviary abort` and `aviary promote` talk to
//! a running rollout through annotations on the same ConfigMap; an abort request stays there
//! until a runner (or `aviary abort` itself) has acted on it. A `coordination.k8s.io/v1` Lease
//! of the same name ([`crate::lease`]) makes sure only one runner drives a canary at a time.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::Client;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::cluster::{managed_labels, retry, ClusterError};
use aviary_core::engine::Engine;

/// Annotation `aviary abort` sets: roll back now, with this reason.
pub const ABORT_ANNOTATION: &str = "aviary.dev/abort";
/// Annotation `aviary promote` sets: the revision whose gates are opened by hand.
pub const APPROVE_ANNOTATION: &str = "aviary.dev/approve";
/// Key of the serialised engine in the ConfigMap.
const ENGINE_KEY: &str = "engine.json";
/// Key of the Canary (and the provider in effect) the run was started with.
const SPEC_KEY: &str = "canary.json";

/// The name of the state ConfigMap and of the Lease for a Canary.
pub fn object_name(canary: &str) -> String {
    format!("{canary}-aviary")
}

/// Requests from other processes, read from the state ConfigMap's annotations.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Control {
    pub abort: Option<AbortRequest>,
    pub approve: Option<String>,
}

/// `aviary abort`'s request: roll back `revision` (the one under analysis when it was asked).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AbortRequest {
    pub reason: String,
    /// `None` in a request written by hand (a bare reason): it applies to whatever is analysed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
}

impl AbortRequest {
    /// The annotation's value.
    pub fn to_annotation(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| self.reason.clone())
    }

    /// Reads the annotation: the JSON this module writes, or a bare reason.
    pub fn from_annotation(value: &str) -> AbortRequest {
        serde_json::from_str(value).unwrap_or_else(|_| AbortRequest {
            reason: value.to_string(),
            revision: None,
        })
    }

    /// Whether it asks to roll back `revision`.
    pub fn applies_to(&self, revision: Option<&str>) -> bool {
        self.revision.is_none() || self.revision.as_deref() == revision
    }
}

impl std::fmt::Display for AbortRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.reason)
    }
}

/// The Canary a run was started with and the provider in effect: enough to rebuild its
/// workloads and router without the spec file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedSpec {
    pub canary: aviary_core::spec::Canary,
    pub provider: aviary_core::spec::Provider,
}

/// The persisted engine of one Canary.
pub struct StateStore {
    api: Api<ConfigMap>,
    name: String,
    namespace: String,
    /// The resourceVersion we last read or wrote; `None` before the object exists.
    resource_version: Option<String>,
    /// The engine text we last wrote, to tell our own writes from someone else's.
    last_written: Option<String>,
    /// The annotations (control requests) of the version at `resource_version`: a save keeps
    /// them without reading the ConfigMap first (a newer version makes the write conflict, and
    /// the conflict reads it).
    annotations: Option<BTreeMap<String, String>>,
    /// The [`SavedSpec`] to write beside the engine, as JSON.
    spec_text: Option<String>,
    /// The [`SavedSpec`] found by [`StateStore::load`].
    saved_spec: Option<SavedSpec>,
}

impl StateStore {
    pub fn new(client: Client, namespace: &str, canary: &str) -> StateStore {
        StateStore {
            api: Api::namespaced(client, namespace),
            name: object_name(canary),
            namespace: namespace.to_string(),
            resource_version: None,
            last_written: None,
            annotations: None,
            spec_text: None,
            saved_spec: None,
        }
    }

    /// Keeps `spec` beside the engine from the next save on.
    pub fn set_spec(&mut self, spec: &SavedSpec) {
        self.spec_text = serde_json::to_string(spec).ok();
    }

    /// The Canary the saved run was started with, as [`StateStore::load`] found it.
    pub fn saved_spec(&self) -> Option<&SavedSpec> {
        self.saved_spec.as_ref()
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// Reads the persisted engine, if any, and the pending control requests.
    pub async fn load(&mut self) -> Result<(Option<Engine>, Control), ClusterError> {
        let what = format!("read ConfigMap {}.{}", self.name, self.namespace);
        let read = retry(&what, || self.api.get_opt(&self.name)).await?;
        self.load_from(read)
    }

    /// [`StateStore::load`] from `read`, the ConfigMap as a read of it (a LIST's) found it.
    pub fn load_from(
        &mut self,
        read: Option<ConfigMap>,
    ) -> Result<(Option<Engine>, Control), ClusterError> {
        let Some(cm) = read else {
            self.resource_version = None;
            return Ok((None, Control::default()));
        };
        self.resource_version = cm.metadata.resource_version.clone();
        self.annotations = cm.metadata.annotations.clone();
        let control = control_of(&cm);
        let text = cm.data.as_ref().and_then(|d| d.get(ENGINE_KEY)).cloned();
        self.last_written = text.clone();
        self.saved_spec = cm
            .data
            .as_ref()
            .and_then(|d| d.get(SPEC_KEY))
            .and_then(|t| serde_json::from_str(t).ok());
        let engine = match text {
            Some(t) => Some(serde_json::from_str(&t).map_err(|e| {
                ClusterError::Invalid(format!(
                    "ConfigMap {}.{}: the saved state cannot be read ({e}); delete the ConfigMap to start over",
                    self.name, self.namespace
                ))
            })?),
            None => None,
        };
        Ok((engine, control))
    }

    /// Reads only the control annotations.
    pub async fn control(&self) -> Result<Control, ClusterError> {
        let what = format!("read ConfigMap {}.{}", self.name, self.namespace);
        Ok(retry(&what, || self.api.get_opt(&self.name))
            .await?
            .map(|cm| control_of(&cm))
            .unwrap_or_default())
    }

    /// Writes the engine. Creation and replacement both carry the resourceVersion we know, so a
    /// concurrent writer is detected rather than overwritten. A change by someone else that only
    /// touched the control annotations is merged; a different engine state is an error.
    pub async fn save(
        &mut self,
        engine: &Engine,
        owner: Option<OwnerReference>,
    ) -> Result<(), ClusterError> {
        let text = serde_json::to_string(engine)
            .map_err(|e| ClusterError::Invalid(format!("cannot serialise the state: {e}")))?;
        if self.last_written.as_deref() == Some(text.as_str()) {
            return Ok(());
        }
        let what = format!("write ConfigMap {}.{}", self.name, self.namespace);
        for _ in 0..5 {
            let mut cm = ConfigMap {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    namespace: Some(self.namespace.clone()),
                    labels: Some(managed_labels(BTreeMap::new())),
                    owner_references: owner.clone().map(|o| vec![o]),
                    resource_version: self.resource_version.clone(),
                    ..ObjectMeta::default()
                },
                data: Some(
                    [
                        (ENGINE_KEY, Some(&text)),
                        (SPEC_KEY, self.spec_text.as_ref()),
                    ]
                    .into_iter()
                    .filter_map(|(k, v)| Some((k.to_string(), v?.clone())))
                    .collect(),
                ),
                ..ConfigMap::default()
            };
            let result = match &self.resource_version {
                None => {
                    let params = PostParams::default();
                    retry(&what, || self.api.create(&params, &cm)).await
                }
                Some(_) => {
                    // Keep the annotations others wrote (control requests), as of the version
                    // this write replaces.
                    cm.metadata.annotations = self.annotations.clone();
                    self.replace_once(&cm).await
                }
            };
            match result {
                Ok(written) => {
                    self.resource_version = written.metadata.resource_version;
                    self.annotations = written.metadata.annotations;
                    self.last_written = Some(text);
                    return Ok(());
                }
                Err(e) if is_conflict(&e) => {
                    // Someone wrote since we read. If the engine text is still ours, only the
                    // annotations changed: take the new resourceVersion and write again.
                    let current = retry(&what, || self.api.get_opt(&self.name)).await?;
                    let theirs = current
                        .as_ref()
                        .and_then(|c| c.data.as_ref())
                        .and_then(|d| d.get(ENGINE_KEY))
                        .cloned();
                    if theirs.as_deref() == Some(text.as_str()) {
                        // This very write landed, and its answer was lost (a 504 or a broken
                        // connection, then the retry met the resourceVersion it had made): it
                        // is saved, not changed by another process.
                        self.annotations = current
                            .as_ref()
                            .and_then(|c| c.metadata.annotations.clone());
                        self.resource_version = current.and_then(|c| c.metadata.resource_version);
                        self.last_written = Some(text);
                        return Ok(());
                    }
                    if theirs.is_some() && theirs != self.last_written {
                        return Err(ClusterError::Invalid(format!(
                            "the state of this rollout in ConfigMap {}.{} was changed by another process; is another runner driving it?",
                            self.name, self.namespace
                        )));
                    }
                    self.annotations = current
                        .as_ref()
                        .and_then(|c| c.metadata.annotations.clone());
                    self.resource_version = current.and_then(|c| c.metadata.resource_version);
                }
                Err(e) => return Err(e),
            }
        }
        Err(ClusterError::Invalid(format!(
            "ConfigMap {}.{} keeps changing under us; giving up",
            self.name, self.namespace
        )))
    }

    async fn replace_once(&self, cm: &ConfigMap) -> Result<ConfigMap, ClusterError> {
        let what = format!("replace ConfigMap {}.{}", self.name, self.namespace);
        // A stale resourceVersion answers 409: that is the caller's business, not a retry's.
        let mut delay = Duration::from_millis(100);
        for attempt in 1..=8 {
            match self
                .api
                .replace(&self.name, &PostParams::default(), cm)
                .await
            {
                Ok(v) => return Ok(v),
                Err(e) if is_conflict_error(&e) => return Err(ClusterError::api(&what, e)),
                Err(e) if attempt < 8 && crate::cluster::is_transient(&e) => {
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_millis(3200));
                }
                Err(e) => return Err(ClusterError::api(&what, e)),
            }
        }
        Err(ClusterError::Invalid(format!("{what}: no attempts left")))
    }

    /// Removes the control annotations once acted upon.
    pub async fn clear_control(&mut self, which: &str) -> Result<(), ClusterError> {
        let what = format!("update ConfigMap {}.{}", self.name, self.namespace);
        let patch = json!({ "metadata": { "annotations": { which: null } } });
        let (params, patch) = (PatchParams::default(), Patch::Merge(&patch));
        let cm = retry(&what, || self.api.patch(&self.name, &params, &patch)).await?;
        self.resource_version = cm.metadata.resource_version;
        self.annotations = cm.metadata.annotations;
        Ok(())
    }
}

/// The control requests (abort, approve) a state ConfigMap carries.
pub(crate) fn control_of(cm: &ConfigMap) -> Control {
    let annotations = cm.metadata.annotations.clone().unwrap_or_default();
    Control {
        abort: annotations
            .get(ABORT_ANNOTATION)
            .map(|v| AbortRequest::from_annotation(v)),
        approve: annotations.get(APPROVE_ANNOTATION).cloned(),
    }
}

fn is_conflict_error(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

fn is_conflict(e: &ClusterError) -> bool {
    matches!(e, ClusterError::Api { source, .. } if is_conflict_error(source.as_ref()))
}

/// Sets a control annotation on a canary's state (for `aviary abort` and `aviary promote`).
/// Fails when no rollout state exists for the canary.
pub async fn request(
    client: Client,
    namespace: &str,
    canary: &str,
    annotation: &str,
    value: &str,
) -> Result<(), ClusterError> {
    let api: Api<ConfigMap> = Api::namespaced(client, namespace);
    let name = object_name(canary);
    let what = format!("update ConfigMap {name}.{namespace}");
    if retry(&what, || api.get_opt(&name)).await?.is_none() {
        return Err(ClusterError::Invalid(format!(
            "no rollout of canary {canary}.{namespace} was found (no ConfigMap {name}); is the name and namespace right?"
        )));
    }
    let patch = json!({ "metadata": { "annotations": { annotation: value } } });
    let (params, patch) = (PatchParams::default(), Patch::Merge(&patch));
    retry(&what, || api.patch(&name, &params, &patch)).await?;
    Ok(())
}

/// Reads a canary's persisted engine (for `aviary status`).
pub async fn read(
    client: Client,
    namespace: &str,
    canary: &str,
) -> Result<(Option<Engine>, Control), ClusterError> {
    StateStore::new(client, namespace, canary).load().await
}
