//! The sandbox's node: it plays kubelet and data plane for the emulated cluster. Every
//! Deployment with replicas runs as one real demo-app process on loopback (its image tag picks
//! the behaviour; one process stands for all the Deployment's pods and answers with the name
//! of its first pod), the metrics backend scrapes those processes with the labels Prometheus'
//! Kubernetes discovery would give them, and the proxy follows the routing objects aviary
//! writes. A process whose Deployment changes image is replaced by a new one before the old
//! one stops (a rolling update), so no client request is lost on a promotion.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube_emulator::Emulator;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use splitter::{Split, Splitter};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use super::metrics::MetricsBackend;
use super::routes::{self, Router};

/// A scrape target: its URL and labels.
type Target = (String, BTreeMap<String, String>);

/// How often the node looks at the cluster.
pub const SYNC_PERIOD: Duration = Duration::from_millis(50);

/// One change of the traffic split, as the proxy applied it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SplitChange {
    /// When the node began to apply it (Unix milliseconds): from here on, requests may
    /// already follow it (HAProxy takes it one runtime API command at a time).
    pub requested_ms: u64,
    /// When the proxy had all of it in effect (Unix milliseconds).
    pub at_ms: u64,
    pub canary_weight: u8,
    /// Number of A/B conditions.
    pub matches: usize,
    /// The version behind each side, when it runs.
    pub primary: Option<String>,
    pub canary: Option<String>,
}

struct Process {
    image: String,
    pod: String,
    addr: SocketAddr,
    child: Child,
}

/// What the node runs and what it saw.
#[derive(Default)]
pub struct NodeState {
    /// Every change of the first service's split ([`crate::CANARY`]), in order.
    pub changes: Vec<SplitChange>,
    /// Every change of each further service's split (`aviary sandbox --services N`), in order.
    pub others: BTreeMap<String, Vec<SplitChange>>,
    /// Problems worth showing (a process that would not start, a split the proxy refused).
    pub problems: Vec<String>,
    /// Deployment → (image, address) of its process.
    pub running: BTreeMap<String, (String, SocketAddr)>,
}

impl NodeState {
    /// The split changes of the service `name` (its Canary's name): the first service's
    /// ([`crate::CANARY`]) are [`NodeState::changes`]; none for a service not (yet) routed.
    pub fn changes_of(&self, name: &str) -> &[SplitChange] {
        if name == crate::CANARY {
            &self.changes
        } else {
            self.others.get(name).map_or(&[], Vec::as_slice)
        }
    }
}

/// One service the node routes: its Canary's name and the split its clients go through.
pub struct Routed {
    pub name: String,
    pub splitter: Arc<Splitter>,
}

pub struct Node {
    pub emulator: Arc<Emulator>,
    pub namespace: String,
    /// The services, each a Canary (named after its target Deployment) with a split of its
    /// own; [`crate::CANARY`]'s changes are [`NodeState::changes`], the others'
    /// [`NodeState::others`].
    pub services: Vec<Routed>,
    pub router: Router,
    pub app_binary: PathBuf,
    pub metrics: Arc<MetricsBackend>,
    pub state: Arc<Mutex<NodeState>>,
}

impl Node {
    /// Runs until `stop` turns true; then stops every process it started (gracefully, see
    /// [`retire`]) and returns once all of them are gone.
    pub async fn run(self, mut stop: tokio::sync::watch::Receiver<bool>) {
        let mut processes: HashMap<String, Process> = HashMap::new();
        let mut retiring = tokio::task::JoinSet::new();
        let mut applied: Vec<Option<Split>> = vec![None; self.services.len()];
        let mut scraped: Vec<Target> = Vec::new();
        loop {
            let mut retired = Vec::new();
            self.sync(&mut processes, &mut retired, &mut applied, &mut scraped)
                .await;
            // A retired process first gets no new requests (the split no longer names it);
            // a second later it stops.
            for old in retired {
                retiring.spawn(retire(old, Duration::from_secs(1), stop.clone()));
            }
            while retiring.try_join_next().is_some() {}
            tokio::select! {
                _ = tokio::time::sleep(SYNC_PERIOD) => {}
                _ = stop.changed() => break,
            }
        }
        for (_, p) in processes.drain() {
            retiring.spawn(retire(p, Duration::ZERO, stop.clone()));
        }
        while retiring.join_next().await.is_some() {}
        if let Ok(mut s) = self.state.lock() {
            s.running.clear();
        }
    }

    fn problem(&self, message: String) {
        if let Ok(mut s) = self.state.lock() {
            if s.problems.last() != Some(&message) {
                tracing::warn!("sandbox: {message}");
                s.problems.push(message);
            }
        }
    }

    async fn sync(
        &self,
        processes: &mut HashMap<String, Process>,
        retired: &mut Vec<Process>,
        applied: &mut [Option<Split>],
        scraped: &mut Vec<Target>,
    ) {
        let ns = Some(self.namespace.as_str());
        let deployments = self.emulator.list("apps/v1", "deployments", ns);
        let pods = self.emulator.list("v1", "pods", ns);
        let mut wanted: HashMap<String, (String, String)> = HashMap::new();
        for d in &deployments {
            let Some(name) = d.pointer("/metadata/name").and_then(Value::as_str) else {
                continue;
            };
            let replicas = d
                .pointer("/spec/replicas")
                .and_then(Value::as_u64)
                .unwrap_or(1);
            let image = d
                .pointer("/spec/template/spec/containers/0/image")
                .and_then(Value::as_str);
            let (Some(image), true) = (image, replicas > 0) else {
                continue;
            };
            if let Some(pod) = first_pod(&pods, name) {
                wanted.insert(name.to_string(), (image.to_string(), pod));
            }
        }

        // Start what is missing or changed; the replaced process stops a moment later, once
        // the proxy no longer sends it new requests.
        for (name, (image, pod)) in &wanted {
            let current = processes.get(name);
            if current.is_some_and(|p| &p.image == image && &p.pod == pod) {
                continue;
            }
            match self.start(name, image, pod).await {
                Ok(p) => {
                    tracing::debug!("sandbox: {name} runs {image} at {}", p.addr);
                    if let Some(old) = processes.insert(name.clone(), p) {
                        retired.push(old);
                    }
                }
                Err(e) => self.problem(format!("cannot start the demo app for {name}: {e}")),
            }
        }
        let gone: Vec<String> = processes
            .keys()
            .filter(|n| !wanted.contains_key(*n))
            .cloned()
            .collect();
        for name in gone {
            if let Some(p) = processes.remove(&name) {
                retired.push(p);
            }
        }

        // Scrape targets, with the labels of Prometheus' kubernetes-pods discovery.
        let mut targets: Vec<Target> = processes
            .iter()
            .map(|(name, p)| {
                let labels = BTreeMap::from([
                    ("app".to_string(), name.clone()),
                    ("kubernetes_namespace".to_string(), self.namespace.clone()),
                    ("kubernetes_pod_name".to_string(), p.pod.clone()),
                    ("namespace".to_string(), self.namespace.clone()),
                    ("pod".to_string(), p.pod.clone()),
                ]);
                (format!("http://{}/metrics", p.addr), labels)
            })
            .collect();
        targets.sort();
        if targets != *scraped {
            match self.metrics.set_targets(&targets).await {
                Ok(()) => *scraped = targets,
                Err(e) => self.problem(format!("cannot update the scrape targets: {e}")),
            }
        }

        // Each service's split, as its routing objects ask.
        for (service, applied) in self.services.iter().zip(applied.iter_mut()) {
            self.sync_split(service, processes, applied).await;
        }
        if let Ok(mut s) = self.state.lock() {
            s.running = processes
                .iter()
                .map(|(n, p)| (n.clone(), (p.image.clone(), p.addr)))
                .collect();
        }
    }

    /// Puts the split of `service` in line with its routing objects.
    async fn sync_split(
        &self,
        service: &Routed,
        processes: &HashMap<String, Process>,
        applied: &mut Option<Split>,
    ) {
        let ns = Some(self.namespace.as_str());
        let name = &service.name;
        // The split the routing objects ask for.
        let desired = routes::desired(self.router, name, |api, plural, name| {
            self.emulator.get(api, plural, ns, name)
        });
        let primary_name = if desired.routed {
            format!("{name}-primary")
        } else {
            name.clone()
        };
        let side = |n: &str| processes.get(n).map(|p| (p.addr, p.image.clone()));
        let primary = side(&primary_name);
        let canary = if desired.routed { side(name) } else { None };
        let split = Split {
            primary: primary.as_ref().map(|p| p.0),
            canary: canary.as_ref().map(|c| c.0),
            canary_weight: desired.canary_weight,
            matches: desired.matches,
            preview_hosts: desired.preview_hosts,
        };
        if applied.as_ref() != Some(&split) {
            let requested_ms = aviary_kube::runner::wall_ms();
            match service.splitter.apply(&split).await {
                Ok(()) => {
                    let change = SplitChange {
                        requested_ms,
                        at_ms: aviary_kube::runner::wall_ms(),
                        canary_weight: split.canary_weight,
                        matches: split.matches.len(),
                        primary: primary.map(|p| super::app::image_tag(&p.1).to_string()),
                        canary: canary.map(|c| super::app::image_tag(&c.1).to_string()),
                    };
                    if let Ok(mut s) = self.state.lock() {
                        if name == crate::CANARY {
                            s.changes.push(change);
                        } else {
                            s.others.entry(name.clone()).or_default().push(change);
                        }
                    }
                    *applied = Some(split);
                }
                Err(e) if self.services.len() == 1 => {
                    self.problem(format!("the traffic split refused {split:?}: {e}"))
                }
                Err(e) => self.problem(format!(
                    "the traffic split of {name} refused {split:?}: {e}"
                )),
            }
        }
    }

    async fn start(&self, name: &str, image: &str, pod: &str) -> std::io::Result<Process> {
        let mut command = Command::new(&self.app_binary);
        // Its own process group: a Ctrl-C at the sandbox's terminal must not stop it while
        // the rollout still returns the traffic; the sandbox stops it after that.
        super::signals::own_group(&mut command);
        let mut child = command
            .args(["demo-app", "--listen", "127.0.0.1:0", "--image", image])
            .args([
                "--workload",
                name,
                "--namespace",
                &self.namespace,
                "--pod",
                pod,
            ])
            .env_remove("AVIARY_LOG_FORMAT")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| std::io::Error::other("no stdout"))?;
        let mut lines = BufReader::new(stdout).lines();
        let first = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
            .await
            .map_err(|_| std::io::Error::other("it did not say where it listens within 10 s"))??;
        let addr = first
            .as_deref()
            .and_then(|l| l.strip_prefix("listening on "))
            .and_then(|a| a.trim().parse::<SocketAddr>().ok())
            .ok_or_else(|| {
                std::io::Error::other(format!(
                    "it printed {first:?} instead of `listening on ADDR`"
                ))
            })?;
        Ok(Process {
            image: image.to_string(),
            pod: pod.to_string(),
            addr,
            child,
        })
    }
}

/// Stops a demo-app process gracefully: after `notice` (cut short when the node stops) its
/// stdin closes, which makes it close its idle keep-alive connections and finish what it is
/// serving; it is killed if it is still there 5 s later. It is reaped either way.
async fn retire(mut p: Process, notice: Duration, mut stop: tokio::sync::watch::Receiver<bool>) {
    if !notice.is_zero() && !*stop.borrow() {
        tokio::select! {
            _ = tokio::time::sleep(notice) => {}
            _ = stop.changed() => {}
        }
    }
    drop(p.child.stdin.take());
    if tokio::time::timeout(Duration::from_secs(5), p.child.wait())
        .await
        .is_err()
    {
        tracing::debug!("sandbox: the demo app for {} did not stop: killed", p.pod);
        let _ = p.child.kill().await;
    }
}

/// The first pod (by name) of `deployment`'s current ReplicaSet: `<deployment>-<hash>-<id>`.
fn first_pod(pods: &[Value], deployment: &str) -> Option<String> {
    let mut names: Vec<&str> = pods
        .iter()
        .filter(|p| p.pointer("/metadata/deletionTimestamp").is_none())
        .filter_map(|p| {
            let name = p.pointer("/metadata/name")?.as_str()?;
            let hash = p.pointer("/metadata/labels/pod-template-hash")?.as_str()?;
            let rest = name.strip_prefix(&format!("{deployment}-{hash}-"))?;
            (!rest.contains('-')).then_some(name)
        })
        .collect();
    names.sort_unstable();
    names.first().map(|n| n.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pods_belong_to_their_own_deployment_only() {
        let pod = |name: &str, hash: &str| json!({"metadata": {"name": name, "labels": {"pod-template-hash": hash}}});
        let pods = vec![
            pod("podinfo-primary-5d8f7-b2c3d", "5d8f7"),
            pod("podinfo-7c9d4-x1y2z", "7c9d4"),
            pod("podinfo-7c9d4-a1b2c", "7c9d4"),
        ];
        assert_eq!(
            first_pod(&pods, "podinfo").as_deref(),
            Some("podinfo-7c9d4-a1b2c")
        );
        assert_eq!(
            first_pod(&pods, "podinfo-primary").as_deref(),
            Some("podinfo-primary-5d8f7-b2c3d")
        );
        assert_eq!(first_pod(&pods, "other"), None);
    }
}
