//! In-cluster state and the runner's lock.
//!
//! The engine's state is kept in a ConfigMap `<canary>-aviary` next to the primary (owned by it, so
//! it goes when the primary goes), written with optimistic concurrency on `resourceVersion`, so a
//! run that was killed can be resumed by the next one. `aviary abort` and `aviary promote` talk to
//! a running rollout through annotations on the same ConfigMap. A `coordination.k8s.io/v1` Lease of
//! the same name makes sure only one runner drives a canary at a time.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::Client;
use serde_json::json;

use crate::cluster::{managed_labels, retry, ClusterError};
use crate::engine::Engine;

/// Annotation `aviary abort` sets: roll back now, with this reason.
pub const ABORT_ANNOTATION: &str = "aviary.dev/abort";
/// Annotation `aviary promote` sets: the revision whose gates are opened by hand.
pub const APPROVE_ANNOTATION: &str = "aviary.dev/approve";
/// Key of the serialised engine in the ConfigMap.
const ENGINE_KEY: &str = "engine.json";

/// The name of the state ConfigMap and of the Lease for a Canary.
pub fn object_name(canary: &str) -> String {
    format!("{canary}-aviary")
}

/// Requests from other processes, read from the state ConfigMap's annotations.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Control {
    pub abort: Option<String>,
    pub approve: Option<String>,
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
}

impl StateStore {
    pub fn new(client: Client, namespace: &str, canary: &str) -> StateStore {
        StateStore {
            api: Api::namespaced(client, namespace),
            name: object_name(canary),
            namespace: namespace.to_string(),
            resource_version: None,
            last_written: None,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Reads the persisted engine, if any, and the pending control requests.
    pub async fn load(&mut self) -> Result<(Option<Engine>, Control), ClusterError> {
        let what = format!("read ConfigMap {}.{}", self.name, self.namespace);
        let Some(cm) = retry(&what, || self.api.get_opt(&self.name)).await? else {
            self.resource_version = None;
            return Ok((None, Control::default()));
        };
        self.resource_version = cm.metadata.resource_version.clone();
        let control = control_of(&cm);
        let text = cm.data.as_ref().and_then(|d| d.get(ENGINE_KEY)).cloned();
        self.last_written = text.clone();
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
                data: Some(BTreeMap::from([(ENGINE_KEY.to_string(), text.clone())])),
                ..ConfigMap::default()
            };
            let result = match &self.resource_version {
                None => {
                    let params = PostParams::default();
                    retry(&what, || self.api.create(&params, &cm)).await
                }
                Some(_) => {
                    // Keep the annotations others wrote (control requests).
                    let current = retry(&what, || self.api.get_opt(&self.name)).await?;
                    cm.metadata.annotations = current.and_then(|c| c.metadata.annotations);
                    self.replace_once(&cm).await
                }
            };
            match result {
                Ok(written) => {
                    self.resource_version = written.metadata.resource_version;
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
                    if theirs.is_some() && theirs != self.last_written {
                        return Err(ClusterError::Invalid(format!(
                            "the state of this rollout in ConfigMap {}.{} was changed by another process; is another runner driving it?",
                            self.name, self.namespace
                        )));
                    }
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
        Ok(())
    }
}

fn control_of(cm: &ConfigMap) -> Control {
    let annotations = cm.metadata.annotations.clone().unwrap_or_default();
    Control {
        abort: annotations.get(ABORT_ANNOTATION).cloned(),
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

/// How long a lease lasts without renewal.
pub const LEASE_SECONDS: i32 = 30;

/// The lock one runner holds on one canary.
pub struct LeaseGuard {
    api: Api<Lease>,
    name: String,
    namespace: String,
    holder: String,
}

/// Why the lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("canary {canary} is being rolled out by {holder} (its lease {lease} is held until {until}); wait for that run to finish, or stop it with `aviary abort`")]
    Held {
        canary: String,
        holder: String,
        lease: String,
        until: String,
    },
    #[error(transparent)]
    Cluster(#[from] ClusterError),
}

fn now() -> MicroTime {
    MicroTime(Timestamp::now())
}

impl LeaseGuard {
    /// Takes the lease for `holder`, or says who has it. A lease whose holder stopped renewing it
    /// for `LEASE_SECONDS` is taken over.
    pub async fn acquire(
        client: Client,
        namespace: &str,
        canary: &str,
        holder: &str,
    ) -> Result<LeaseGuard, LockError> {
        let api: Api<Lease> = Api::namespaced(client, namespace);
        let name = object_name(canary);
        let what = format!("read Lease {name}.{namespace}");
        let guard = LeaseGuard {
            api: api.clone(),
            name: name.clone(),
            namespace: namespace.to_string(),
            holder: holder.to_string(),
        };
        let spec = LeaseSpec {
            holder_identity: Some(holder.to_string()),
            lease_duration_seconds: Some(LEASE_SECONDS),
            acquire_time: Some(now()),
            renew_time: Some(now()),
            ..LeaseSpec::default()
        };
        let held = |lease: &Lease| -> Result<(), LockError> {
            let spec = lease.spec.clone().unwrap_or_default();
            let other = spec.holder_identity.clone().unwrap_or_default();
            if other.is_empty() || other == holder {
                return Ok(());
            }
            let duration = i64::from(spec.lease_duration_seconds.unwrap_or(LEASE_SECONDS));
            let until = spec
                .renew_time
                .map(|t| t.0)
                .and_then(|t| t.checked_add(SignedDuration::from_secs(duration)).ok());
            match until {
                Some(until) if until > Timestamp::now() => Err(LockError::Held {
                    canary: format!("{canary}.{namespace}"),
                    holder: other,
                    lease: name.clone(),
                    until: until.to_string(),
                }),
                _ => Ok(()),
            }
        };
        match retry(&what, || api.get_opt(&name)).await? {
            None => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(name.clone()),
                        namespace: Some(namespace.to_string()),
                        labels: Some(managed_labels(BTreeMap::new())),
                        ..ObjectMeta::default()
                    },
                    spec: Some(spec),
                };
                match api.create(&PostParams::default(), &lease).await {
                    Ok(_) => Ok(guard),
                    Err(e) if matches!(&e, kube::Error::Api(s) if s.code == 409) => {
                        // Someone created it between our read and our write.
                        let current = retry(&what, || api.get_opt(&name)).await?;
                        match current {
                            Some(l) => {
                                held(&l)?;
                                Err(LockError::Cluster(ClusterError::Invalid(format!(
                                    "Lease {name}.{namespace} was just taken; try again"
                                ))))
                            }
                            None => Err(LockError::Cluster(ClusterError::api(&what, e))),
                        }
                    }
                    Err(e) => Err(LockError::Cluster(ClusterError::api(
                        format!("create Lease {name}.{namespace}"),
                        e,
                    ))),
                }
            }
            Some(mut lease) => {
                held(&lease)?;
                lease.spec = Some(spec);
                match api.replace(&name, &PostParams::default(), &lease).await {
                    Ok(_) => Ok(guard),
                    Err(e) if matches!(&e, kube::Error::Api(s) if s.code == 409) => {
                        let current = retry(&what, || api.get_opt(&name)).await?;
                        if let Some(l) = current {
                            held(&l)?;
                        }
                        Err(LockError::Cluster(ClusterError::Invalid(format!(
                            "Lease {name}.{namespace} changed while we took it; try again"
                        ))))
                    }
                    Err(e) => Err(LockError::Cluster(ClusterError::api(
                        format!("update Lease {name}.{namespace}"),
                        e,
                    ))),
                }
            }
        }
    }

    /// Extends the lease.
    pub async fn renew(&self) -> Result<(), ClusterError> {
        let what = format!("renew Lease {}.{}", self.name, self.namespace);
        let patch = json!({ "spec": { "holderIdentity": self.holder, "renewTime": now() } });
        let (params, patch) = (PatchParams::default(), Patch::Merge(&patch));
        retry(&what, || self.api.patch(&self.name, &params, &patch)).await?;
        Ok(())
    }

    /// Gives the lease up so the next runner need not wait for it to expire.
    pub async fn release(self) -> Result<(), ClusterError> {
        let what = format!("release Lease {}.{}", self.name, self.namespace);
        let patch = json!({ "spec": { "holderIdentity": null, "renewTime": null } });
        let (params, patch) = (PatchParams::default(), Patch::Merge(&patch));
        retry(&what, || self.api.patch(&self.name, &params, &patch)).await?;
        Ok(())
    }

    pub fn holder(&self) -> &str {
        &self.holder
    }
}

/// Who this runner is: the pipeline run when there is one, else host and process.
pub fn holder_identity() -> String {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    // Any other pipeline names its run here, so that a re-run resumes at once.
    if let Some(run) = env("AVIARY_RUN_ID") {
        return format!("run:{run}");
    }
    if let (Some(repo), Some(run)) = (env("GITHUB_REPOSITORY"), env("GITHUB_RUN_ID")) {
        return format!("github:{repo}/actions/runs/{run}");
    }
    if let Some(rollout) = env("CLOUD_DEPLOY_ROLLOUT") {
        return format!("clouddeploy:{rollout}");
    }
    if let Some(run) = env("TEKTON_PIPELINE_RUN")
        .or_else(|| env("PIPELINE_RUN"))
        .or_else(|| env("TEKTON_TASK_RUN"))
    {
        return format!("tekton:{run}");
    }
    let host = env("HOSTNAME")
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "unknown-host".into());
    format!("{host}/pid-{}", std::process::id())
}
