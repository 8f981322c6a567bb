//! The control requests (`aviary abort`, `aviary promote`) of every canary of a release, read
//! with one LIST of aviary's state ConfigMaps per poll (across the cluster when the canaries
//! are in several namespaces and the credentials allow it, else one per namespace), instead of
//! one GET per canary and poll: a release of hundreds of canaries asks the API server a few
//! times a second, not hundreds. The first LIST reads the ConfigMaps whole (each runner takes
//! its saved state from it); the next ones read their metadata only (the requests are
//! annotations), not every canary's saved state twice a second.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams};
use kube::Client;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::cluster::{managed_by_aviary, ClusterError};
use crate::state::{control_of, Control, StateStore};

/// A reading older than this many polls is not used: the runner reads its own ConfigMap.
const STALE_POLLS: u32 = 3;

/// What the last LIST of each namespace found: `(namespace, ConfigMap name)` → the ConfigMap.
#[derive(Debug, Default)]
struct Reading {
    at: Option<Instant>,
    /// The listed ConfigMaps: their control requests, and a runner's first read of its state.
    configmaps: BTreeMap<(String, String), ConfigMap>,
    /// The namespaces whose last LIST failed (their canaries read their own ConfigMap).
    failed: BTreeSet<String>,
    /// The ConfigMaps were read whole (else their metadata only: no saved state in them).
    whole: bool,
}

impl Reading {
    /// The requests of the listed ConfigMaps that belong to the release's `namespaces` (an
    /// item without a namespace is in `listed`, the namespace the LIST was for).
    fn keep(&mut self, namespaces: &BTreeSet<String>, listed: Option<&str>, items: Vec<ConfigMap>) {
        for cm in items {
            let ns = cm.metadata.namespace.as_deref().or(listed);
            let (Some(ns), Some(name)) = (ns, cm.metadata.name.as_deref()) else {
                continue;
            };
            if namespaces.contains(ns) {
                self.configmaps
                    .insert((ns.to_string(), name.to_string()), cm);
            }
        }
    }
}

/// The ConfigMaps `params` selects: whole, or their metadata only.
async fn list(
    api: &Api<ConfigMap>,
    params: &ListParams,
    whole: bool,
) -> Result<Vec<ConfigMap>, kube::Error> {
    if whole {
        return Ok(api.list(params).await?.items);
    }
    let listed = api.list_metadata(params).await?;
    Ok(listed
        .items
        .into_iter()
        .map(|item| ConfigMap {
            metadata: item.metadata,
            ..ConfigMap::default()
        })
        .collect())
}

/// The shared reader; cheap to clone. Its task stops when the last clone is dropped.
#[derive(Clone)]
pub struct Controls {
    rx: watch::Receiver<Arc<Reading>>,
    poll: Duration,
    _task: Arc<AbortOnDrop>,
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl std::fmt::Debug for Controls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Controls")
            .field("poll", &self.poll)
            .finish_non_exhaustive()
    }
}

impl Controls {
    /// Starts reading the state ConfigMaps of `namespaces` every `poll`. Start it once the
    /// release holds its Leases: its runners take their saved state from its first reading
    /// ([`Controls::state_of`]).
    pub fn start(client: Client, namespaces: BTreeSet<String>, poll: Duration) -> Controls {
        let (tx, rx) = watch::channel(Arc::new(Reading::default()));
        let task = tokio::spawn(async move {
            let params = managed_by_aviary();
            // Canaries in several namespaces: one LIST across the cluster when the credentials
            // allow it (else, from the first refusal on, one per namespace).
            let mut cluster_wide = namespaces.len() > 1;
            let mut whole = true;
            loop {
                let mut reading = Reading {
                    whole,
                    ..Reading::default()
                };
                let mut listed = false;
                if cluster_wide {
                    let api: Api<ConfigMap> = Api::all(client.clone());
                    match list(&api, &params, whole).await {
                        Ok(items) => {
                            reading.keep(&namespaces, None, items);
                            listed = true;
                        }
                        Err(e) => {
                            tracing::debug!(
                                "could not list the state ConfigMaps across the cluster ({e}); \
                                 listing each namespace"
                            );
                            cluster_wide = false;
                        }
                    }
                }
                if !listed {
                    for ns in &namespaces {
                        let api: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
                        match list(&api, &params, whole).await {
                            Ok(items) => reading.keep(&namespaces, Some(ns), items),
                            Err(e) => {
                                tracing::debug!("could not list the state ConfigMaps of {ns}: {e}");
                                reading.failed.insert(ns.clone());
                            }
                        }
                    }
                }
                reading.at = Some(Instant::now());
                if tx.send(Arc::new(reading)).is_err() {
                    return;
                }
                whole = false;
                tokio::time::sleep(poll).await;
            }
        });
        Controls {
            rx,
            poll,
            _task: Arc::new(AbortOnDrop(task)),
        }
    }

    /// The state ConfigMap of `store`'s canary as the shared reading found it, once the first
    /// reading is in and while it is fresh; `None` when the runner must read it itself (the
    /// reading is late, stale, of metadata only or failed for its namespace, or has no such
    /// ConfigMap: one without aviary's label would not be listed, and must not be taken for no
    /// state).
    pub async fn state_of(&self, store: &StateStore) -> Option<ConfigMap> {
        let mut rx = self.rx.clone();
        let first = rx.wait_for(|r| r.at.is_some());
        let reading = match tokio::time::timeout(self.poll * STALE_POLLS, first).await {
            Ok(Ok(reading)) => reading.clone(),
            _ => return None,
        };
        if !reading.whole {
            return None;
        }
        self.usable(&reading, store)?.cloned()
    }

    /// `store`'s ConfigMap in `reading` (`Some(None)`: it was not listed), if the reading is
    /// fresh and covered its namespace; `None` when it cannot be used.
    fn usable<'r>(
        &self,
        reading: &'r Reading,
        store: &StateStore,
    ) -> Option<Option<&'r ConfigMap>> {
        let fresh = reading
            .at
            .is_some_and(|at| at.elapsed() <= self.poll * STALE_POLLS);
        let ns = store.namespace().to_string();
        (fresh && !reading.failed.contains(&ns))
            .then(|| reading.configmaps.get(&(ns, store.name().to_string())))
    }

    /// The requests of `store`'s canary: from the last shared reading when it is fresh and
    /// covered its namespace, else from its own ConfigMap.
    pub async fn read(&self, store: &StateStore) -> Result<Control, ClusterError> {
        let reading = self.rx.borrow().clone();
        match self.usable(&reading, store) {
            Some(listed) => Ok(listed.map(control_of).unwrap_or_default()),
            None => store.control().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::MANAGED_BY;
    use crate::state::ABORT_ANNOTATION;

    /// The first reading has each ConfigMap whole (a runner takes its saved state from it); the
    /// next ones have their metadata only, and still carry the control requests.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_first_reading_is_whole_and_the_next_ones_carry_the_requests_only() {
        let (emu, client) = crate::testing::emulated(Duration::from_millis(50)).await;
        let cm = serde_json::json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": "podinfo-aviary",
                "namespace": "test",
                "labels": {MANAGED_BY.0: MANAGED_BY.1},
            },
            "data": {"state": "saved"},
        });
        if let Err(e) = emu.insert(cm) {
            panic!("{e}");
        }
        let store = StateStore::new(client.clone(), "test", "podinfo");
        let namespaces: BTreeSet<String> = ["test".to_string()].into();
        let controls = Controls::start(client.clone(), namespaces, Duration::from_millis(50));
        let first = controls.state_of(&store).await;
        let data = first.as_ref().and_then(|cm| cm.data.as_ref());
        assert_eq!(
            data.and_then(|d| d.get("state")).map(String::as_str),
            Some("saved"),
            "the first reading has the saved state: {first:?}"
        );

        // An abort request, seen by a later reading of metadata only.
        let api: Api<ConfigMap> = Api::namespaced(client.clone(), "test");
        let patch =
            serde_json::json!({"metadata": {"annotations": {ABORT_ANNOTATION: "bad smell"}}});
        if let Err(e) = api
            .patch(
                "podinfo-aviary",
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(&patch),
            )
            .await
        {
            panic!("{e}");
        }
        let mut rx = controls.rx.clone();
        let later = rx.wait_for(|r| {
            !r.whole
                && r.configmaps
                    .values()
                    .any(|cm| cm.metadata.annotations.is_some())
        });
        let reading = match tokio::time::timeout(Duration::from_secs(10), later).await {
            Ok(Ok(r)) => r.clone(),
            _ => panic!("no reading of metadata with the request"),
        };
        assert!(
            reading.configmaps.values().all(|cm| cm.data.is_none()),
            "a later reading has no saved state in it"
        );
        match controls.read(&store).await {
            Ok(control) => assert!(control.abort.is_some(), "{control:?}"),
            Err(e) => panic!("{e}"),
        }
        // A runner that starts now reads its state itself: the reading has none.
        assert!(controls.state_of(&store).await.is_none());
    }
}
