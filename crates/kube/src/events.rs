//! Kubernetes Events for what a run does: every event the engine emits (Flagger's texts) is also
//! recorded in the cluster as an `events.k8s.io/v1` Event regarding the canary's target
//! Deployment, so `kubectl describe deployment` and `kubectl get events` tell the release's
//! story (the API server serves the same Events in the `core/v1` view).
//!
//! As Flagger's recorder does, every event has the reason `Synced` and the type `Normal` or
//! `Warning`; the reporting controller is `aviary` and the action the phase the canary was in.
//! An event repeated (the same type, reason and text, within [`SERIES_WINDOW`] of its last
//! occurrence) is not written again: its Event's `series` counts it, as client-go's events
//! recorder aggregates isomorphic events (`count` from 2, `lastObservedTime`).
//!
//! Recording is best effort and never holds a run up: events go through a bounded queue to a
//! task of their own (a full queue drops the event, saying so at debug level), every request has
//! a timeout, a failure is logged and forgotten, and [`Recorder::close`] waits a bounded time for
//! the queue to drain when the run ends.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::Client;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use aviary_core::engine::EventLevel;

/// The reporting controller of aviary's Events.
pub const CONTROLLER: &str = "aviary";
/// Flagger's reason for every event it records.
pub const REASON: &str = "Synced";
/// How long after its last occurrence an event is counted in its Event's series rather than
/// written anew (client-go's events recorder keeps isomorphic events for 6 minutes).
pub const SERIES_WINDOW: Duration = Duration::from_secs(6 * 60);
/// Each request to record an event gives up after this long.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Events waiting to be recorded; more are dropped.
const QUEUE: usize = 256;
/// The longest note an Event takes (the API server refuses longer ones).
const NOTE_MAX_BYTES: usize = 1024;

struct Pending {
    level: EventLevel,
    action: String,
    note: String,
}

/// Records a run's events in the cluster. Cheap to clone: clones share the queue.
#[derive(Clone)]
pub struct Recorder {
    inner: Arc<Inner>,
}

struct Inner {
    queue: Mutex<Option<mpsc::Sender<Pending>>>,
    regarding: Mutex<Option<ObjectReference>>,
    worker: Mutex<Option<JoinHandle<()>>>,
}

impl Recorder {
    /// A recorder writing through `client`; events are kept back until [`Recorder::regarding`]
    /// names the object they are about (earlier ones are dropped).
    pub fn start(client: Client) -> Recorder {
        let (tx, rx) = mpsc::channel(QUEUE);
        let inner = Arc::new(Inner {
            queue: Mutex::new(Some(tx)),
            regarding: Mutex::new(None),
            worker: Mutex::new(None),
        });
        let worker = tokio::spawn(work(client, rx, inner.clone()));
        if let Ok(mut slot) = inner.worker.lock() {
            *slot = Some(worker);
        }
        Recorder { inner }
    }

    /// The object the events are about: the canary's target Deployment (with its uid, which
    /// `kubectl describe` selects on).
    pub fn regarding(&self, deployment: &k8s_openapi::api::apps::v1::Deployment) {
        let reference = ObjectReference {
            api_version: Some("apps/v1".into()),
            kind: Some("Deployment".into()),
            name: deployment.metadata.name.clone(),
            namespace: deployment.metadata.namespace.clone(),
            uid: deployment.metadata.uid.clone(),
            resource_version: deployment.metadata.resource_version.clone(),
            ..ObjectReference::default()
        };
        if let Ok(mut slot) = self.inner.regarding.lock() {
            *slot = Some(reference);
        }
    }

    /// Queues an event; never waits.
    pub fn record(&self, level: EventLevel, action: &str, note: &str) {
        let Ok(queue) = self.inner.queue.lock() else {
            return;
        };
        let Some(tx) = queue.as_ref() else {
            return;
        };
        let pending = Pending {
            level,
            action: action.to_string(),
            note: note.to_string(),
        };
        if tx.try_send(pending).is_err() {
            tracing::debug!("event not recorded in the cluster (the queue is full): {note}");
        }
    }

    /// Stops taking events and waits up to `within` for the queued ones to be recorded; what is
    /// left after that is dropped.
    pub async fn close(&self, within: Duration) {
        if let Ok(mut queue) = self.inner.queue.lock() {
            queue.take();
        }
        let worker = self.inner.worker.lock().ok().and_then(|mut w| w.take());
        if let Some(mut worker) = worker {
            if tokio::time::timeout(within, &mut worker).await.is_err() {
                worker.abort();
                tracing::debug!("events still queued when the run ended were not recorded");
            }
        }
    }
}

/// An Event written, for counting its repeats.
struct Written {
    name: String,
    namespace: String,
    count: i32,
    last: Instant,
}

async fn work(client: Client, mut rx: mpsc::Receiver<Pending>, inner: Arc<Inner>) {
    let instance = reporting_instance();
    let mut written: HashMap<(&'static str, String), Written> = HashMap::new();
    while let Some(pending) = rx.recv().await {
        let Some(regarding) = inner.regarding.lock().ok().and_then(|r| r.clone()) else {
            continue;
        };
        let Some(namespace) = regarding.namespace.clone() else {
            continue;
        };
        let kind = match pending.level {
            EventLevel::Info => "Normal",
            EventLevel::Warning => "Warning",
        };
        let note = truncate(&pending.note, NOTE_MAX_BYTES);
        let api: Api<Event> = Api::namespaced(client.clone(), &namespace);
        let now = Instant::now();
        let key = (kind, note.clone());
        if let Some(seen) = written
            .get_mut(&key)
            .filter(|w| w.namespace == namespace && now.duration_since(w.last) < SERIES_WINDOW)
        {
            let count = seen.count + 1;
            let series = serde_json::json!({
                "series": {"count": count, "lastObservedTime": MicroTime(Timestamp::now())},
            });
            let patched = tokio::time::timeout(
                REQUEST_TIMEOUT,
                api.patch(&seen.name, &PatchParams::default(), &Patch::Merge(&series)),
            )
            .await;
            match patched {
                Ok(Ok(_)) => {
                    seen.count = count;
                    seen.last = now;
                }
                Ok(Err(e)) => tracing::debug!("counting a repeat of event {}: {e}", seen.name),
                Err(_) => tracing::debug!("counting a repeat of event {}: timed out", seen.name),
            }
            continue;
        }
        let target = regarding.name.clone().unwrap_or_default();
        let event = Event {
            metadata: ObjectMeta {
                // As client-go names Events: the object's name and the time in hexadecimal.
                name: Some(format!("{target}.{:x}", unique_nanos())),
                namespace: Some(namespace.clone()),
                ..ObjectMeta::default()
            },
            event_time: Some(MicroTime(Timestamp::now())),
            action: Some(truncate(&pending.action, 128)),
            reason: Some(REASON.into()),
            note: Some(note.clone()),
            type_: Some(kind.into()),
            regarding: Some(regarding),
            reporting_controller: Some(CONTROLLER.into()),
            reporting_instance: Some(instance.clone()),
            ..Event::default()
        };
        let created =
            tokio::time::timeout(REQUEST_TIMEOUT, api.create(&PostParams::default(), &event)).await;
        match created {
            Ok(Ok(e)) => {
                written.insert(
                    key,
                    Written {
                        name: e.metadata.name.unwrap_or_default(),
                        namespace,
                        count: 1,
                        last: now,
                    },
                );
            }
            Ok(Err(e)) => tracing::debug!("recording an event in the cluster: {e}"),
            Err(_) => tracing::debug!("recording an event in the cluster: timed out"),
        }
    }
}

/// One of aviary's Events as `aviary status` shows it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Recent {
    /// When it was last seen (its series' last observation, else its time), RFC 3339.
    pub time: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub note: String,
    /// How many times it happened (1, or its series' count).
    pub count: i32,
}

/// The last `n` Events aviary recorded about Deployment `target`, oldest first.
pub async fn recent(
    client: Client,
    namespace: &str,
    target: &str,
    n: usize,
) -> Result<Vec<Recent>, kube::Error> {
    let api: Api<Event> = Api::namespaced(client, namespace);
    let params = kube::api::ListParams::default().fields(&format!(
        "regarding.name={target},regarding.kind=Deployment,reportingController={CONTROLLER}"
    ));
    let listed = tokio::time::timeout(REQUEST_TIMEOUT, api.list(&params))
        .await
        .map_err(|_| {
            kube::Error::Service(Box::new(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "listing events timed out",
            )))
        })??;
    let mut all: Vec<(Timestamp, Recent)> = listed
        .items
        .into_iter()
        .map(|e| {
            let at = e
                .series
                .as_ref()
                .map(|s| s.last_observed_time.0)
                .or(e.event_time.as_ref().map(|t| t.0))
                .or(e.metadata.creation_timestamp.as_ref().map(|t| t.0))
                .unwrap_or_default();
            let recent = Recent {
                time: at.to_string(),
                kind: e.type_.unwrap_or_default(),
                note: e.note.unwrap_or_default(),
                count: e.series.map_or(1, |s| s.count),
            };
            (at, recent)
        })
        .collect();
    all.sort_by_key(|a| a.0);
    let skip = all.len().saturating_sub(n);
    Ok(all.into_iter().skip(skip).map(|(_, r)| r).collect())
}

/// Who reports: `aviary` on this host (the pod's name in a cluster), at most 128 characters.
fn reporting_instance() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_default();
    let host: String = host
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.'))
        .collect();
    if host.is_empty() {
        CONTROLLER.to_string()
    } else {
        truncate(&format!("{CONTROLLER}-{host}"), 128)
    }
}

/// Nanoseconds since the epoch, strictly increasing within the process (two events in the same
/// nanosecond still get names of their own).
fn unique_nanos() -> u128 {
    static LAST: Mutex<u128> = Mutex::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    match LAST.lock() {
        Ok(mut last) => {
            *last = now.max(*last + 1);
            *last
        }
        Err(_) => now,
    }
}

/// `text` cut to at most `max` bytes, at a character boundary.
fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_are_cut_at_a_character_boundary_and_names_never_repeat() {
        assert_eq!(truncate("abc", 3), "abc");
        assert_eq!(truncate("aé", 2), "a");
        assert_eq!(truncate(&"x".repeat(2000), NOTE_MAX_BYTES).len(), 1024);
        let (a, b) = (unique_nanos(), unique_nanos());
        assert!(b > a);
    }
}
