//! The control requests (`aviary abort`, `aviary promote`) of every canary of a release, read
//! with one LIST of aviary's state ConfigMaps per poll (across the cluster when the canaries
//! are in several namespaces and the credentials allow it, else one per namespace), instead of
//! one GET per canary and poll: a release of hundreds of canaries asks the API server a few
//! times a second, not hundreds.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams};
use kube::Client;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::cluster::{ClusterError, MANAGED_BY};
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
            let selector = format!("{}={}", MANAGED_BY.0, MANAGED_BY.1);
            let params = ListParams::default().labels(&selector);
            // Canaries in several namespaces: one LIST across the cluster when the credentials
            // allow it (else, from the first refusal on, one per namespace).
            let mut cluster_wide = namespaces.len() > 1;
            loop {
                let mut reading = Reading::default();
                let mut listed = false;
                if cluster_wide {
                    let api: Api<ConfigMap> = Api::all(client.clone());
                    match api.list(&params).await {
                        Ok(list) => {
                            reading.keep(&namespaces, None, list.items);
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
                        match api.list(&params).await {
                            Ok(list) => reading.keep(&namespaces, Some(ns), list.items),
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
    /// reading is late, stale or failed for its namespace, or has no such ConfigMap: one
    /// without aviary's label would not be listed, and must not be taken for no state).
    pub async fn state_of(&self, store: &StateStore) -> Option<ConfigMap> {
        let mut rx = self.rx.clone();
        let first = rx.wait_for(|r| r.at.is_some());
        let reading = match tokio::time::timeout(self.poll * STALE_POLLS, first).await {
            Ok(Ok(reading)) => reading.clone(),
            _ => return None,
        };
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
