//! Simulated controllers: the deployment controller and a Gateway API route controller.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::server::Shared;
use crate::store::{State, StorageKey};
use crate::util::{fnv32a, now_rfc3339, safe_encode};

/// The controller name the route controller reports in `status.parents[].controllerName`.
pub const GATEWAY_CONTROLLER_NAME: &str = "example.net/gateway-controller";

const TICK: Duration = Duration::from_millis(20);

/// The controllers hold the store's lock at most this share of the time: work that took `d`
/// is followed by a pause of at least `d · (BUSY_RATIO - 1)`, so that the API server answers
/// while its controllers work, as a real one does.
const BUSY_RATIO: u32 = 2;

/// The longest the controllers hold the store's lock at once: a pass with more to do (hundreds
/// of Deployments changed together) stops there and goes on after its pause, so no request
/// waits behind a whole pass.
const SLICE: Duration = Duration::from_millis(10);

/// While requests are being answered, the deployment controller waits for a moment without
/// any, up to this long: a real API server's controllers run in processes of their own and do
/// not hold its requests up, so a burst of requests is answered first and the deployments'
/// ReplicaSets and Pods catch up after it (as they fall behind on a busy cluster). The route
/// and CRD controllers (a status write for what was just written) do not wait.
const GIVE_WAY: Duration = Duration::from_millis(50);

/// Runs the controllers until shutdown: a pass every [`TICK`]; a pass of the deployment
/// controller with more work than a [`SLICE`] goes on in slices, each followed by its pause
/// (see [`BUSY_RATIO`]), and each waiting for the requests being answered (see [`GIVE_WAY`]).
pub(crate) async fn run(shared: std::sync::Arc<Shared>) {
    let mut shutdown = shared.shutdown.subscribe();
    let mut cursor = None;
    let mut waiting_since: Option<Instant> = None;
    loop {
        let started = Instant::now();
        let busy_answering = shared.answering.load(Ordering::SeqCst) > 0;
        let waited = waiting_since.get_or_insert(started).elapsed();
        let deployments = !busy_answering || waited >= GIVE_WAY;
        if deployments {
            waiting_since = None;
        }
        cursor = reconcile(&shared, cursor, deployments);
        let busy = started.elapsed() * (BUSY_RATIO - 1);
        let pause = if !deployments {
            Duration::from_millis(1).max(busy)
        } else if cursor.is_some() {
            busy
        } else {
            TICK.max(busy)
        };
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
    }
}

/// Where a pass that stopped at its [`SLICE`] goes on: after this Deployment.
type Cursor = Option<(String, String)>;

/// The route and CRD controllers, then (with `deployments`) one slice of the deployment
/// controller's pass from `cursor` on; the cursor to go on from, or None when the pass is
/// complete.
fn reconcile(shared: &Shared, cursor: Cursor, deployments: bool) -> Cursor {
    let (before, after, cursor) = {
        let mut st = shared.lock();
        let before = st.rv;
        reconcile_routes(&mut st);
        reconcile_crds(&mut st);
        let cursor = if deployments {
            reconcile_deployments(&mut st, cursor, Instant::now() + SLICE)
        } else {
            cursor
        };
        (before, st.rv, cursor)
    };
    if after != before {
        shared.notify(after);
    }
    cursor
}

fn str_at<'a>(v: &'a Value, ptr: &str) -> &'a str {
    v.pointer(ptr).and_then(Value::as_str).unwrap_or_default()
}

/// The conditions of a Deployment whose ReplicaSet `rs` is fully available.
fn rolled_out_conditions(rs: &str, now: &str) -> Value {
    json!([
        condition(
            "Available",
            "True",
            "MinimumReplicasAvailable",
            "Deployment has minimum availability.",
            now
        ),
        condition(
            "Progressing",
            "True",
            "NewReplicaSetAvailable",
            &format!("ReplicaSet \"{rs}\" has successfully progressed."),
            now
        ),
    ])
}

fn condition(kind: &str, status: &str, reason: &str, message: &str, now: &str) -> Value {
    json!({
        "type": kind,
        "status": status,
        "reason": reason,
        "message": message,
        "lastUpdateTime": now,
        "lastTransitionTime": now,
    })
}

/// Keeps the timestamps of conditions that did not change (as controllers do).
fn carry_condition_times(desired: &mut Value, current: &Value) {
    let Some(conds) = desired.get_mut("conditions").and_then(Value::as_array_mut) else {
        return;
    };
    let old = current
        .get("conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    carry_times(conds, &old);
}

fn carry_times(conds: &mut [Value], old: &[Value]) {
    for c in conds.iter_mut() {
        let Some(prev) = old.iter().find(|o| o.get("type") == c.get("type")) else {
            continue;
        };
        if prev.get("status") == c.get("status") {
            if let Some(t) = prev.get("lastTransitionTime") {
                c["lastTransitionTime"] = t.clone();
            }
            if prev.get("reason") == c.get("reason") && prev.get("message") == c.get("message") {
                if let Some(t) = prev.get("lastUpdateTime") {
                    c["lastUpdateTime"] = t.clone();
                }
            }
        }
    }
}

fn without_times(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| !matches!(k.as_str(), "lastUpdateTime" | "lastTransitionTime"))
                .map(|(k, v)| (k.clone(), without_times(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(without_times).collect()),
        other => other.clone(),
    }
}

/// Sets integer fields, leaving zeros out as the API server's JSON does (`omitempty`).
fn put_count(status: &mut Value, key: &str, n: i64) {
    if n != 0 {
        status[key] = json!(n);
    }
}

/// The ReplicaSet name the deployment controller would use for the current template.
pub(crate) fn replicaset_name(deploy: &Value) -> String {
    let template = deploy
        .pointer("/spec/template")
        .map_or_else(|| Value::Null.to_string(), Value::to_string);
    let hash = safe_encode(fnv32a(template.as_bytes()));
    format!("{}-{hash}", str_at(deploy, "/metadata/name"))
}

/// The status the deployment controller reports, or None while the rollout is "in progress".
fn desired_deployment_status(
    d: &Value,
    elapsed: Duration,
    delay: Duration,
    never_ready: bool,
    now: &str,
) -> Option<Value> {
    let generation = d
        .pointer("/metadata/generation")
        .and_then(Value::as_i64)
        .unwrap_or(1);
    let replicas = d
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(1);
    let deadline = d
        .pointer("/spec/progressDeadlineSeconds")
        .and_then(Value::as_i64)
        .unwrap_or(600)
        .max(0) as u64;
    let rs = replicaset_name(d);
    let mut status = json!({"observedGeneration": generation});
    if replicas == 0 {
        status["conditions"] = rolled_out_conditions(&rs, now);
        return Some(status);
    }
    if elapsed < delay {
        return None;
    }
    put_count(&mut status, "replicas", replicas);
    put_count(&mut status, "updatedReplicas", replicas);
    if never_ready {
        put_count(&mut status, "unavailableReplicas", replicas);
        let progressing = if elapsed >= Duration::from_secs(deadline) {
            condition(
                "Progressing",
                "False",
                "ProgressDeadlineExceeded",
                &format!("ReplicaSet \"{rs}\" has timed out progressing."),
                now,
            )
        } else {
            condition(
                "Progressing",
                "True",
                "ReplicaSetUpdated",
                &format!("ReplicaSet \"{rs}\" is progressing."),
                now,
            )
        };
        status["conditions"] = json!([
            condition(
                "Available",
                "False",
                "MinimumReplicasUnavailable",
                "Deployment does not have minimum availability.",
                now
            ),
            progressing,
        ]);
    } else {
        put_count(&mut status, "readyReplicas", replicas);
        put_count(&mut status, "availableReplicas", replicas);
        status["conditions"] = rolled_out_conditions(&rs, now);
    }
    Some(status)
}

/// The deployment controller, from after `cursor` until `deadline`: the cursor to go on from
/// when it stopped at the deadline with Deployments left.
fn reconcile_deployments(st: &mut State, cursor: Cursor, deadline: Instant) -> Cursor {
    let key: StorageKey = ("apps".into(), "deployments".into());
    // Like a real controller, work only on what changed: a Deployment that needed nothing at
    // its last pass is left alone until it or a ReplicaSet or Pod of its namespace is written
    // (`deploy_dirty`); never-ready ones change with time: always looked at.
    let after = |id: &(String, String)| cursor.as_ref().is_none_or(|c| id > c);
    let dirty: BTreeSet<(String, String)> = st
        .deploy_dirty
        .iter()
        .chain(st.never_ready.iter())
        .filter(|id| after(id))
        .cloned()
        .collect();
    let rt = st.preferred_rt(&key)?;
    let now = now_rfc3339();
    for id in dirty {
        match st.get(&rt, &id.0, &id.1).cloned() {
            Some(d) => reconcile_deployment(st, &key, &d, &now),
            None => {
                st.deploy_dirty.remove(&id);
            }
        }
        if Instant::now() >= deadline {
            return Some(id);
        }
    }
    None
}

/// Brings one Deployment's status, ReplicaSets and Pods in line with its spec.
fn reconcile_deployment(st: &mut State, key: &StorageKey, d: &Value, now: &str) {
    if d.pointer("/metadata/deletionTimestamp").is_some() {
        return;
    }
    let ns = str_at(d, "/metadata/namespace").to_string();
    let name = str_at(d, "/metadata/name").to_string();
    let generation = d
        .pointer("/metadata/generation")
        .and_then(Value::as_i64)
        .unwrap_or(1);
    let id = (ns.clone(), name.clone());
    let changed_at = match st.deploy_changed.get(&id) {
        Some((g, t)) if *g == generation => *t,
        _ => {
            let t = Instant::now();
            st.deploy_changed.insert(id.clone(), (generation, t));
            t
        }
    };
    let never = st.never_ready.contains(&id);
    let Some(mut desired) =
        desired_deployment_status(d, changed_at.elapsed(), st.ready_delay, never, now)
    else {
        return;
    };
    let before = st.rv;
    crate::workload::sync(st, d, never, now);
    let current = d.get("status").cloned().unwrap_or(json!({}));
    carry_condition_times(&mut desired, &current);
    if without_times(&desired) == without_times(&current) {
        if st.rv == before && !never {
            st.deploy_dirty.remove(&id);
        }
        return;
    }
    if let Err(e) = st.write_status(key, &ns, &name, desired, "kube-controller-manager") {
        tracing::warn!(deployment = %name, namespace = %ns, "deployment controller: {}", e.message);
    }
}

/// CustomResourceDefinitions become Established at once.
pub(crate) fn reconcile_crds(st: &mut State) {
    let key: StorageKey = (
        "apiextensions.k8s.io".into(),
        "customresourcedefinitions".into(),
    );
    // Only those written since they were last found established.
    let Some(rt) = st.preferred_rt(&key) else {
        return;
    };
    let crds: Vec<Value> = std::mem::take(&mut st.crd_dirty)
        .iter()
        .filter_map(|name| st.get(&rt, "", name).cloned())
        .collect();
    let now = now_rfc3339();
    for crd in crds {
        let established = crd
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .is_some_and(|c| {
                c.iter()
                    .any(|c| c["type"] == "Established" && c["status"] == "True")
            });
        if established {
            continue;
        }
        let stored: Vec<Value> = crd
            .pointer("/spec/versions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
            .filter_map(|v| v.get("name").cloned())
            .collect();
        let status = json!({
            "acceptedNames": crd.pointer("/spec/names").cloned().unwrap_or(Value::Null),
            "storedVersions": stored,
            "conditions": [
                {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts",
                 "message": "no conflicts found", "lastTransitionTime": now},
                {"type": "Established", "status": "True", "reason": "InitialNamesAccepted",
                 "message": "the initial names have been accepted", "lastTransitionTime": now},
            ],
        });
        let name = str_at(&crd, "/metadata/name").to_string();
        if let Err(e) = st.write_status(&key, "", &name, status, "kube-apiserver") {
            tracing::warn!(crd = %name, "crd controller: {}", e.message);
            st.crd_dirty.insert(name);
        }
    }
}

fn reconcile_routes(st: &mut State) {
    let key: StorageKey = ("gateway.networking.k8s.io".into(), "httproutes".into());
    // A route is looked at again only once written since its status was found up to date.
    let Some(rt) = st.preferred_rt(&key) else {
        return;
    };
    let routes: Vec<Value> = st
        .route_dirty
        .iter()
        .filter_map(|(ns, name)| st.get(&rt, ns, name).cloned())
        .collect();
    let now = now_rfc3339();
    for r in routes {
        let ns = str_at(&r, "/metadata/namespace").to_string();
        let name = str_at(&r, "/metadata/name").to_string();
        let generation = r
            .pointer("/metadata/generation")
            .and_then(Value::as_i64)
            .unwrap_or(1);
        let refs = r
            .pointer("/spec/parentRefs")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let current = r.get("status").cloned().unwrap_or(json!({}));
        let current_parents = current
            .get("parents")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let mut parents: Vec<Value> = current_parents
            .iter()
            .filter(|p| {
                p.get("controllerName").and_then(Value::as_str) != Some(GATEWAY_CONTROLLER_NAME)
            })
            .cloned()
            .collect();
        for parent_ref in refs {
            let mut conditions = vec![
                json!({"type": "Accepted", "status": "True", "reason": "Accepted", "message": "Route is accepted",
                       "observedGeneration": generation, "lastTransitionTime": now}),
                json!({"type": "ResolvedRefs", "status": "True", "reason": "ResolvedRefs",
                       "message": "Resolved all the Object references for the Route",
                       "observedGeneration": generation, "lastTransitionTime": now}),
            ];
            if let Some(prev) = current_parents.iter().find(|p| {
                p.get("parentRef") == Some(&parent_ref)
                    && p.get("controllerName").and_then(Value::as_str)
                        == Some(GATEWAY_CONTROLLER_NAME)
            }) {
                let old = prev
                    .get("conditions")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                carry_times(&mut conditions, &old);
            }
            parents.push(json!({
                "parentRef": parent_ref,
                "controllerName": GATEWAY_CONTROLLER_NAME,
                "conditions": conditions,
            }));
        }
        let mut desired = current.clone();
        desired["parents"] = Value::Array(parents);
        if without_times(&desired) == without_times(&current) {
            st.route_dirty.remove(&(ns, name));
            continue;
        }
        if let Err(e) = st.write_status(&key, &ns, &name, desired, "gateway-controller") {
            tracing::warn!(route = %name, namespace = %ns, "route controller: {}", e.message);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deploy(replicas: i64) -> Value {
        json!({"metadata": {"name": "d", "generation": 2}, "spec": {"replicas": replicas, "progressDeadlineSeconds": 1,
               "template": {"metadata": {"labels": {"app": "d"}}}}})
    }

    #[test]
    fn ready_after_delay() {
        let d = deploy(3);
        assert!(desired_deployment_status(
            &d,
            Duration::ZERO,
            Duration::from_millis(50),
            false,
            "t"
        )
        .is_none());
        let s = desired_deployment_status(
            &d,
            Duration::from_millis(60),
            Duration::from_millis(50),
            false,
            "t",
        );
        let s = s.unwrap_or_default();
        assert_eq!(s["observedGeneration"], 2);
        assert_eq!(s["availableReplicas"], 3);
        assert_eq!(s["conditions"][0]["status"], "True");
    }

    #[test]
    fn never_ready_hits_the_deadline() {
        let d = deploy(2);
        let s =
            desired_deployment_status(&d, Duration::from_millis(100), Duration::ZERO, true, "t")
                .unwrap_or_default();
        assert_eq!(s["unavailableReplicas"], 2);
        assert!(s.get("readyReplicas").is_none());
        assert_eq!(s["conditions"][1]["reason"], "ReplicaSetUpdated");
        let s = desired_deployment_status(&d, Duration::from_secs(2), Duration::ZERO, true, "t")
            .unwrap_or_default();
        assert_eq!(s["conditions"][1]["reason"], "ProgressDeadlineExceeded");
        assert_eq!(s["conditions"][1]["status"], "False");
    }

    #[test]
    fn zero_replicas_is_immediately_ready() {
        let s = desired_deployment_status(
            &deploy(0),
            Duration::ZERO,
            Duration::from_secs(10),
            true,
            "t",
        )
        .unwrap_or_default();
        assert_eq!(s["observedGeneration"], 2);
        assert!(s.get("replicas").is_none());
    }

    #[test]
    fn condition_times_are_kept_when_unchanged() {
        let mut desired = json!({"conditions": [condition("Available", "True", "A", "m", "new")]});
        let current = json!({"conditions": [condition("Available", "True", "A", "m", "old")]});
        carry_condition_times(&mut desired, &current);
        assert_eq!(desired["conditions"][0]["lastTransitionTime"], "old");
        assert_eq!(without_times(&desired), without_times(&current));
    }
}
