//! ReplicaSets and Pods behind Deployments, maintained by the simulated deployment
//! controller once it reports a rollout (ready Pods, or crash-looping ones for a
//! never-ready Deployment).

use serde_json::{json, Map, Value};

use crate::controllers::replicaset_name;
use crate::store::{DeleteOpts, State, StorageKey, Sub, WriteCtx};

const MANAGER: &str = "kube-controller-manager";

fn s<'a>(v: &'a Value, ptr: &str) -> &'a str {
    v.pointer(ptr).and_then(Value::as_str).unwrap_or_default()
}

fn owner_ref(kind: &str, api_version: &str, obj: &Value) -> Value {
    json!([{
        "apiVersion": api_version,
        "kind": kind,
        "name": s(obj, "/metadata/name"),
        "uid": s(obj, "/metadata/uid"),
        "controller": true,
        "blockOwnerDeletion": true,
    }])
}

/// Brings the Deployment's ReplicaSets and Pods in line with its spec.
pub(crate) fn sync(st: &mut State, deploy: &Value, never_ready: bool, now: &str) {
    let (Some(rs_rt), Some(pod_rt)) = (
        st.registry.lookup("apps", "v1", "replicasets"),
        st.registry.lookup("", "v1", "pods"),
    ) else {
        return;
    };
    let ns = s(deploy, "/metadata/namespace").to_string();
    let uid = s(deploy, "/metadata/uid").to_string();
    let replicas = deploy
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(1)
        .max(0);
    let rs_name = replicaset_name(deploy);
    let hash = rs_name.rsplit('-').next().unwrap_or_default().to_string();
    let ctx = WriteCtx::new(MANAGER);

    let rs_key: StorageKey = ("apps".into(), "replicasets".into());
    let pod_key: StorageKey = (String::new(), "pods".into());
    let owned_rs = st.owned_by(&rs_key, &ns, &uid);

    // The current ReplicaSet.
    let current = match owned_rs.iter().find(|r| s(r, "/metadata/name") == rs_name) {
        Some(r) => Value::clone(r),
        None => {
            let mut template = deploy
                .pointer("/spec/template")
                .cloned()
                .unwrap_or_else(|| json!({}));
            template["metadata"]["labels"]["pod-template-hash"] = json!(hash);
            let mut selector = deploy
                .pointer("/spec/selector")
                .cloned()
                .unwrap_or_else(|| json!({}));
            selector["matchLabels"]["pod-template-hash"] = json!(hash);
            let revision = owned_rs.len() + 1;
            let body = json!({
                "apiVersion": "apps/v1",
                "kind": "ReplicaSet",
                "metadata": {
                    "name": rs_name,
                    "namespace": ns,
                    "labels": template["metadata"]["labels"].clone(),
                    "annotations": {"deployment.kubernetes.io/revision": revision.to_string()},
                    "ownerReferences": owner_ref("Deployment", "apps/v1", deploy),
                },
                "spec": {"replicas": replicas, "selector": selector, "template": template},
            });
            match st.create(&rs_rt, Some(&ns), body, &ctx) {
                Ok(r) => r.render(&rs_rt),
                Err(e) => {
                    tracing::warn!(
                        "deployment controller: creating ReplicaSet {rs_name}: {}",
                        e.message
                    );
                    return;
                }
            }
        }
    };
    // Replica counts: the current ReplicaSet gets them all, older ones none.
    // (The current one may be among the owned ones: it is scaled once, not twice from the
    // same stale copy, which would be a resourceVersion conflict.)
    let older = owned_rs
        .iter()
        .map(|rs| &**rs)
        .filter(|rs| s(rs, "/metadata/name") != rs_name);
    for rs in older.chain(std::iter::once(&current)) {
        let want = if s(rs, "/metadata/name") == rs_name {
            replicas
        } else {
            0
        };
        if rs.pointer("/spec/replicas").and_then(Value::as_i64) != Some(want) {
            let mut body = rs.clone();
            body["spec"]["replicas"] = json!(want);
            let name = s(rs, "/metadata/name").to_string();
            if let Err(e) = st.update(&rs_rt, Some(&ns), &name, body, &ctx, Sub::Main) {
                tracing::warn!(
                    "deployment controller: scaling ReplicaSet {name}: {}",
                    e.message
                );
            }
        }
    }

    // Pods.
    for rs in &st.owned_by(&rs_key, &ns, &uid) {
        let rs_uid = s(rs, "/metadata/uid").to_string();
        let name = s(rs, "/metadata/name").to_string();
        let want = rs
            .pointer("/spec/replicas")
            .and_then(Value::as_i64)
            .unwrap_or(0)
            .max(0) as usize;
        let mine = st.owned_by(&pod_key, &ns, &rs_uid);
        for extra in mine.iter().skip(want) {
            let pod_name = s(extra, "/metadata/name").to_string();
            let _ = st.delete(&pod_rt, &ns, &pod_name, &DeleteOpts::default(), &ctx);
        }
        let mut pod_names: Vec<String> = mine
            .iter()
            .take(want)
            .map(|p| s(p, "/metadata/name").to_string())
            .collect();
        while pod_names.len() < want {
            let mut labels = rs
                .pointer("/spec/template/metadata/labels")
                .cloned()
                .unwrap_or_else(|| json!({}));
            if !labels.is_object() {
                labels = json!({});
            }
            let mut spec = rs
                .pointer("/spec/template/spec")
                .cloned()
                .unwrap_or_else(|| json!({}));
            spec["nodeName"] = json!("emulator-node");
            let body = json!({
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "generateName": format!("{name}-"),
                    "namespace": ns,
                    "labels": labels,
                    "ownerReferences": owner_ref("ReplicaSet", "apps/v1", rs),
                },
                "spec": spec,
            });
            match st.create(&pod_rt, Some(&ns), body, &ctx) {
                Ok(p) => pod_names.push(s(&p, "/metadata/name").to_string()),
                Err(e) => {
                    tracing::warn!(
                        "deployment controller: creating a Pod of {name}: {}",
                        e.message
                    );
                    break;
                }
            }
        }
        let mut ready = 0;
        for pod_name in &pod_names {
            let Some(pod) = st.get(&pod_rt, &ns, pod_name) else {
                continue;
            };
            if !never_ready {
                ready += 1;
            }
            if pod_status_current(pod, never_ready) {
                continue;
            }
            let desired = pod_status(pod, never_ready, now);
            if let Err(e) = st.write_status(&pod_key, &ns, pod_name, desired, "kubelet") {
                tracing::warn!(
                    "deployment controller: pod status of {pod_name}: {}",
                    e.message
                );
            }
        }
        let mut status = Map::new();
        let count = pod_names.len() as i64;
        for (k, v) in [
            ("replicas", count),
            ("fullyLabeledReplicas", count),
            ("readyReplicas", ready),
            ("availableReplicas", ready),
        ] {
            if v != 0 {
                status.insert(k.into(), json!(v));
            }
        }
        status.insert(
            "observedGeneration".into(),
            rs.pointer("/metadata/generation")
                .cloned()
                .unwrap_or(json!(1)),
        );
        let status = Value::Object(status);
        if rs.get("status") != Some(&status) {
            if let Err(e) = st.write_status(&rs_key, &ns, &name, status, MANAGER) {
                tracing::warn!(
                    "deployment controller: ReplicaSet status of {name}: {}",
                    e.message
                );
            }
        }
    }
}

/// Whether the kubelet's status of the Pod is what [`pod_status`] would write (its phase, its
/// first container's readiness and how many containers it reports), without building it.
fn pod_status_current(pod: &Value, never_ready: bool) -> bool {
    let Some(current) = pod.get("status").filter(|s| !s.is_null()) else {
        return false;
    };
    let containers = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    current.get("phase").and_then(Value::as_str) == Some("Running")
        && current
            .pointer("/containerStatuses/0/ready")
            .and_then(Value::as_bool)
            == (containers > 0).then_some(!never_ready)
        && current
            .get("containerStatuses")
            .and_then(Value::as_array)
            .map(Vec::len)
            == Some(containers)
}

fn pod_status(pod: &Value, never_ready: bool, now: &str) -> Value {
    let ip_seed = crate::util::fnv32a(s(pod, "/metadata/uid").as_bytes());
    let pod_ip = format!("10.244.{}.{}", (ip_seed >> 8) & 0xff, (ip_seed & 0xfe) + 1);
    let start = pod
        .pointer("/status/startTime")
        .and_then(Value::as_str)
        .unwrap_or(now)
        .to_string();
    let containers = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let statuses: Vec<Value> = containers
        .iter()
        .map(|c| {
            let name = s(c, "/name");
            let image = s(c, "/image");
            let mut st = json!({
                "name": name,
                "image": image,
                "imageID": format!("docker.io/library/{image}@sha256:0000000000000000000000000000000000000000000000000000000000000000"),
                "containerID": format!("containerd://{:08x}", crate::util::fnv32a(format!("{}/{name}", s(pod, "/metadata/uid")).as_bytes())),
                "ready": !never_ready,
                "started": !never_ready,
                "restartCount": if never_ready { 3 } else { 0 },
            });
            if never_ready {
                st["state"] = json!({"waiting": {
                    "reason": "CrashLoopBackOff",
                    "message": format!("back-off 40s restarting failed container={name} pod={}_{}({})",
                        s(pod, "/metadata/name"), s(pod, "/metadata/namespace"), s(pod, "/metadata/uid")),
                }});
                st["lastState"] = json!({"terminated": {"exitCode": 1, "reason": "Error", "startedAt": now, "finishedAt": now}});
            } else {
                st["state"] = json!({"running": {"startedAt": start}});
            }
            st
        })
        .collect();
    let ready = if never_ready { "False" } else { "True" };
    let mut conditions = vec![
        json!({"type": "PodScheduled", "status": "True", "lastTransitionTime": start}),
        json!({"type": "Initialized", "status": "True", "lastTransitionTime": start}),
        json!({"type": "ContainersReady", "status": ready, "lastTransitionTime": now}),
        json!({"type": "Ready", "status": ready, "lastTransitionTime": now}),
    ];
    if never_ready {
        let names: Vec<&str> = containers.iter().map(|c| s(c, "/name")).collect();
        let msg = format!("containers with unready status: [{}]", names.join(" "));
        for c in conditions.iter_mut().skip(2) {
            c["reason"] = json!("ContainersNotReady");
            c["message"] = json!(msg);
        }
    }
    json!({
        "phase": "Running",
        "conditions": conditions,
        "hostIP": "172.18.0.2",
        "podIP": pod_ip,
        "podIPs": [{"ip": pod_ip}],
        "startTime": start,
        "qosClass": "BestEffort",
        "containerStatuses": statuses,
    })
}
