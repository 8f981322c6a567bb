//! Fault tests: `aviary status` after a runner was killed: the traffic split comes from the
//! routing objects, a difference from the saved state is flagged, and a bad name is refused
//! before any API request (item 18).

use std::process::{Command, Output};
use std::time::Duration;

use serde_json::{json, Value};

use crate::util::*;

/// `aviary status podinfo -n test` (plus `extra`) against the cluster.
fn status(c: &Cluster, name: &str, extra: &[&str]) -> Output {
    let mut cmd = Command::new(aviary_bin());
    cmd.args(["status", name, "-n", "test"])
        .args(extra)
        .arg("--kubeconfig")
        .arg(&c.kubeconfig)
        .env_remove("KUBECONFIG")
        .env_remove("AVIARY_LOG");
    match cmd.output() {
        Ok(o) => o,
        Err(e) => panic!("{e}"),
    }
}

fn text(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn json_status(c: &Cluster) -> Value {
    let out = status(c, "podinfo", &["--json"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    match serde_json::from_slice(&out.stdout) {
        Ok(v) => v,
        Err(e) => panic!("status --json: {e}: {}", text(&out)),
    }
}

/// The state as a run saved it, without the Canary saved beside it: what a state written by an
/// older aviary looks like, so `status` rebuilds the router from the engine's configuration and
/// the cluster.
fn drop_saved_spec(c: &Cluster) {
    c.merge_patch(
        "v1",
        "ConfigMap",
        "podinfo-aviary",
        json!({"data": {"canary.json": null}}),
    );
}

/// SIGKILLs the runner once the saved state has moved off the primary and returns the saved
/// canary weight.
fn kill_once_split(c: &Cluster, mut child: std::process::Child) -> i64 {
    c.wait_for("a saved canary weight", Duration::from_secs(60), |c| {
        c.saved_weight() > 0
    });
    if let Err(e) = child.kill() {
        panic!("SIGKILL: {e}");
    }
    let _ = child.wait();
    c.saved_weight()
}

#[test]
fn f18_status_shows_the_routing_objects_after_a_sigkill() {
    let (c, _hook, canary) =
        with_new_revision("gatewayapi", "    maxWeight: 100\n    stepWeight: 20");
    let saved = kill_once_split(&c, c.spawn(&canary, &[]));
    assert!((1..100).contains(&saved), "saved weight {saved}");

    // The route moves on without the state: as a run killed between the two writes leaves them.
    let observed = if saved == 40 { 60 } else { 40 };
    let mut route = c.get("gateway.networking.k8s.io/v1", "httproutes", "podinfo");
    let Some(backends) = route
        .pointer_mut("/spec/rules/0/backendRefs")
        .and_then(Value::as_array_mut)
    else {
        panic!("no backendRefs in {route}");
    };
    for b in backends.iter_mut() {
        b["weight"] = json!(if b["name"] == "podinfo-canary" {
            observed
        } else {
            100 - observed
        });
    }
    let rules = route["spec"]["rules"].clone();
    c.merge_patch(
        "gateway.networking.k8s.io/v1",
        "HTTPRoute",
        "podinfo",
        json!({"spec": {"rules": rules}}),
    );
    assert_eq!(c.saved_weight(), saved, "nothing runs any more");

    // Both with the Canary saved beside the state and without it (rebuilt from the cluster).
    for rebuilt in [false, true] {
        if rebuilt {
            drop_saved_spec(&c);
        }
        let out = status(&c, "podinfo", &[]);
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        let t = text(&out);
        assert!(
            t.contains(&format!(
                "traffic        primary {}% / canary {observed}% (routing objects: HTTPRoute podinfo.test)",
                100 - observed
            )),
            "rebuilt={rebuilt}: {t}"
        );
        assert!(
            t.contains(&format!(
                "saved state    primary {}% / canary {saved}%: the routing objects differ",
                100 - saved
            )),
            "rebuilt={rebuilt}: {t}"
        );
        // Says why (the killed runner is gone) and what the next run does with it.
        assert!(t.contains("no longer runs"), "rebuilt={rebuilt}: {t}");
        assert!(
            t.contains(&format!(
                "the next run first puts the routing objects back to the saved split (canary {saved}%), then resumes from the saved state (Progressing)"
            )),
            "rebuilt={rebuilt}: {t}"
        );

        let s = json_status(&c);
        assert_eq!(s["observed_routes"]["canary"], observed, "{s}");
        assert_eq!(s["observed_routes"]["primary"], 100 - observed, "{s}");
        assert_eq!(s["saved_routes"]["canary"], saved, "{s}");
        assert_eq!(s["routes_differ"], true, "{s}");
        assert_eq!(s["canary_weight"], observed, "{s}");
        assert_eq!(s["weights_from"], "routing objects", "{s}");
        assert_eq!(s["routing_objects"], "HTTPRoute podinfo.test", "{s}");
        assert_eq!(s["runner_active"], false, "{s}");
    }

    // Put back as the state says: no difference is flagged.
    c.merge_patch(
        "gateway.networking.k8s.io/v1",
        "HTTPRoute",
        "podinfo",
        json!({"spec": {"rules": [{"backendRefs": [
            {"name": "podinfo-primary", "port": 9898, "weight": 100 - saved},
            {"name": "podinfo-canary", "port": 9898, "weight": saved},
        ]}]}}),
    );
    let s = json_status(&c);
    assert_eq!(s["routes_differ"], false, "{s}");
    assert_eq!(s["observed_routes"]["canary"], saved, "{s}");
    let t = text(&status(&c, "podinfo", &[]));
    assert!(!t.contains("differ"), "{t}");

    // A route that cannot be read as a split: said, and the saved split shown instead (exit 0).
    c.merge_patch(
        "gateway.networking.k8s.io/v1",
        "HTTPRoute",
        "podinfo",
        json!({"spec": {"rules": [{"backendRefs": [
            {"name": "podinfo-primary", "port": 9898, "weight": 0},
            {"name": "podinfo-canary", "port": 9898, "weight": 0},
        ]}]}}),
    );
    let out = status(&c, "podinfo", &[]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let t = text(&out);
    assert!(
        t.contains(&format!(
            "traffic        primary {}% / canary {saved}% (saved state; the routing objects could not be read: HTTPRoute podinfo.test: both the primary's and the canary's weight are 0",
            100 - saved
        )),
        "{t}"
    );
    let s = json_status(&c);
    assert_eq!(s["weights_from"], "saved state", "{s}");
    assert_eq!(s["canary_weight"], saved, "{s}");
    assert_eq!(s["observed_routes"], Value::Null, "{s}");
    assert_eq!(s["routes_differ"], false, "{s}");
    assert!(
        s["routing_error"]
            .as_str()
            .is_some_and(|e| e.contains("weight are 0")),
        "{s}"
    );
}

#[test]
fn f18_status_refuses_an_invalid_name_before_any_api_request() {
    let c = cluster();
    c.emu.clear_requests();
    for (args, says) in [
        (
            vec!["status", "Pod_Info"],
            "invalid canary name \"Pod_Info\"",
        ),
        (
            vec!["status", "podinfo."],
            "invalid canary name \"podinfo.\"",
        ),
        (
            vec!["status", "podinfo", "-n", "Test"],
            "invalid namespace \"Test\"",
        ),
    ] {
        let out = match Command::new(aviary_bin())
            .args(&args)
            .arg("--kubeconfig")
            .arg(&c.kubeconfig)
            .env_remove("KUBECONFIG")
            .output()
        {
            Ok(o) => o,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(code(&out), 2, "{args:?}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(err.contains(says), "{args:?}: {err}");
        assert!(err.contains("help:"), "{args:?}: the fix: {err}");
    }
    let requests = c.emu.requests();
    assert!(
        requests.is_empty(),
        "API requests were made: {:?}",
        requests
            .iter()
            .map(|r| format!("{} {}", r.method, r.path))
            .collect::<Vec<_>>()
    );
}

#[test]
fn f18_status_reads_a_replica_ratio_from_the_deployments() {
    let c = cluster();
    let hook = Hook::start();
    let canary = c.write(
        "canary.yaml",
        &canary_yaml(
            "kubernetes:replicas",
            &hook.url,
            "    maxWeight: 50\n    stepWeight: 10",
        ),
    );
    c.apply_target("podinfo:1", 4);
    let out = c.run(&canary);
    assert_eq!(code(&out), 0, "bootstrap: {}", stderr(&out));
    c.apply_target("podinfo:2", 4);
    let saved = kill_once_split(&c, c.spawn(&canary, &[]));
    assert!((1..=50).contains(&saved), "saved weight {saved}");

    // What set_routes makes of the saved weight with 4 stable replicas: whole replicas.
    let canary_replicas = ((4 * saved + 50) / 100).clamp(1, 3);
    let scale = |primary: i64, canary: i64| {
        c.merge_patch(
            "apps/v1",
            "Deployment",
            "podinfo-primary",
            json!({"spec": {"replicas": primary}}),
        );
        c.merge_patch(
            "apps/v1",
            "Deployment",
            "podinfo",
            json!({"spec": {"replicas": canary}}),
        );
    };
    scale(4 - canary_replicas, canary_replicas);
    let s = json_status(&c);
    assert_eq!(
        s["observed_routes"]["canary"],
        canary_replicas * 25,
        "the share of replicas: {s}"
    );
    assert_eq!(
        s["routes_differ"], false,
        "{saved}% is {canary_replicas} of 4: {s}"
    );
    assert_eq!(
        s["routing_objects"], "Deployments podinfo-primary.test and podinfo.test",
        "{s}"
    );

    // Another split than the saved weight makes: flagged, with the Canary saved or rebuilt.
    let other = if canary_replicas == 1 { 2 } else { 1 };
    scale(4 - other, other);
    for rebuilt in [false, true] {
        if rebuilt {
            drop_saved_spec(&c);
        }
        let s = json_status(&c);
        assert_eq!(
            s["observed_routes"]["canary"],
            other * 25,
            "rebuilt={rebuilt}: {s}"
        );
        assert_eq!(s["routes_differ"], true, "rebuilt={rebuilt}: {s}");
        let t = text(&status(&c, "podinfo", &[]));
        assert!(
            t.contains(&format!(
                "primary {}% / canary {}% (routing objects: Deployments",
                100 - other * 25,
                other * 25
            )),
            "rebuilt={rebuilt}: {t}"
        );
        assert!(
            t.contains("the routing objects differ"),
            "rebuilt={rebuilt}: {t}"
        );
    }
}

/// A rollout of `provider` (with the Canary's extra `spec` lines) killed once the saved state has
/// moved off the primary; then, with the state as an older aviary saved it (no Canary beside
/// it), `set_canary` puts another weight in the routing objects: `status` rebuilds the router
/// from the cluster, names `objects` and reads that weight back.
fn rebuilt_router_reads(
    provider: &str,
    spec: &str,
    objects: &str,
    set_canary: impl Fn(&Cluster, i64),
    before: impl Fn(&Cluster),
) {
    let c = cluster();
    let hook = Hook::start();
    before(&c);
    let canary = c.write(
        "canary.yaml",
        &format!(
            "apiVersion: aviary.dev/v1alpha1
kind: Canary
metadata:
  name: podinfo
  namespace: test
spec:
  provider: {provider}
  targetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: podinfo
{spec}
  progressDeadlineSeconds: 30
  service:
    port: 9898
  analysis:
    interval: 1s
    threshold: 2
    maxWeight: 100
    stepWeight: 20
    webhooks:
      - name: acceptance
        type: rollout
        url: {}
",
            hook.url
        ),
    );
    c.apply_target("podinfo:1", 2);
    let out = c.run(&canary);
    assert_eq!(code(&out), 0, "{provider} bootstrap: {}", stderr(&out));
    c.apply_target("podinfo:2", 2);
    let saved = kill_once_split(&c, c.spawn(&canary, &[]));
    assert!(
        (1..100).contains(&saved),
        "{provider}: saved weight {saved}"
    );
    drop_saved_spec(&c);

    let observed = if saved == 40 { 60 } else { 40 };
    set_canary(&c, observed);
    let s = json_status(&c);
    assert_eq!(s["routing_objects"], objects, "{provider}: {s}");
    assert_eq!(s["routing_error"], Value::Null, "{provider}: {s}");
    assert_eq!(s["observed_routes"]["canary"], observed, "{provider}: {s}");
    assert_eq!(s["saved_routes"]["canary"], saved, "{provider}: {s}");
    assert_eq!(s["routes_differ"], true, "{provider}: {s}");

    set_canary(&c, saved);
    let s = json_status(&c);
    assert_eq!(s["observed_routes"]["canary"], saved, "{provider}: {s}");
    assert_eq!(s["routes_differ"], false, "{provider}: {s}");
}

/// Sets the weights of the destinations at `destinations` (a JSON pointer) in the object
/// `podinfo`: `canary` on the one whose name (at `name`) is `canary_name`, the rest on the
/// others, patching `spec.<top>` whole.
fn set_weights(
    c: &Cluster,
    (api_version, plural, kind): (&str, &str, &str),
    top: &str,
    destinations: &str,
    name: &str,
    canary_name: &str,
    canary: i64,
) {
    let mut object = c.get(api_version, plural, "podinfo");
    let Some(list) = object
        .pointer_mut(destinations)
        .and_then(Value::as_array_mut)
    else {
        panic!("no {destinations} in {object}");
    };
    for d in list.iter_mut() {
        let is_canary = d.pointer(name).and_then(Value::as_str) == Some(canary_name);
        d["weight"] = json!(if is_canary { canary } else { 100 - canary });
    }
    let field = object["spec"][top].clone();
    c.merge_patch(api_version, kind, "podinfo", json!({"spec": {top: field}}));
}

#[test]
fn f18_status_reads_an_istio_virtual_service_without_the_saved_canary() {
    rebuilt_router_reads(
        "istio",
        "",
        "VirtualService podinfo.test",
        |c, w| {
            set_weights(
                c,
                (
                    "networking.istio.io/v1beta1",
                    "virtualservices",
                    "VirtualService",
                ),
                "http",
                "/spec/http/0/route",
                "/destination/host",
                "podinfo-canary",
                w,
            )
        },
        |_| {},
    );
}

#[test]
fn f18_status_reads_a_gloo_route_table_without_the_saved_canary() {
    rebuilt_router_reads(
        "gloo",
        "",
        "RouteTable podinfo.test",
        |c, w| {
            set_weights(
                c,
                ("gateway.solo.io/v1", "routetables", "RouteTable"),
                "routes",
                "/spec/routes/0/routeAction/multi/destinations",
                "/destination/upstream/name",
                "test-podinfo-canaryupstream-9898",
                w,
            )
        },
        |_| {},
    );
}

#[test]
fn f18_status_reads_an_nginx_canary_ingress_without_the_saved_canary() {
    // The user's Ingress is not named like the Service: status finds its canary copy by what
    // it routes to.
    rebuilt_router_reads(
        "nginx",
        "  ingressRef: {apiVersion: networking.k8s.io/v1, kind: Ingress, name: web}",
        "Ingress web-canary.test",
        |c, w| {
            c.merge_patch(
                "networking.k8s.io/v1",
                "Ingress",
                "web-canary",
                json!({"metadata": {"annotations": {
                    "nginx.ingress.kubernetes.io/canary-weight": w.to_string()}}}),
            )
        },
        |c| {
            let ingress = json!({
                "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
                "metadata": {"name": "web", "namespace": "test"},
                "spec": {"ingressClassName": "nginx", "rules": [{"host": "app.example.com",
                    "http": {"paths": [{"path": "/", "pathType": "Prefix",
                        "backend": {"service": {"name": "podinfo", "port": {"number": 9898}}}}]}}]},
            });
            if let Err(e) = c.emu.insert(ingress) {
                panic!("insert: {e}");
            }
        },
    );
}
