//! The istio, gloo and nginx routers end to end: the real `aviary rollout` binary against the API
//! server emulator, a bootstrap run, a good revision (webhook at 200) promoted and a bad one
//! (webhook at 500) rolled back, for a weighted canary and for A/B testing. Each test reads back
//! every version of the routing objects aviary wrote and asserts the weights, destinations and
//! request matches of each step.

use std::path::Path;

use crate::util::*;
use serde_json::{json, Value};

const ISTIO: &str = "networking.istio.io/v1beta1";
const GLOO_GATEWAY: &str = "gateway.solo.io/v1";
const GLOO: &str = "gloo.solo.io/v1";
const INGRESS: &str = "networking.k8s.io/v1";

/// A Canary for `provider`; `spec` and `service` are extra lines (indented by two and four
/// spaces) and `analysis` the strategy lines (indented by four).
fn canary(provider: &str, spec: &str, service: &str, analysis: &str, hook: &str) -> String {
    format!(
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
{service}
  analysis:
    interval: 1s
    threshold: 2
{analysis}
    webhooks:
      - name: acceptance
        type: rollout
        url: {hook}
"
    )
}

const CANARY_STEPS: &str = "    maxWeight: 60\n    stepWeight: 20";
const AB_STEPS: &str = "    iterations: 2
    match:
      - headers:
          x-canary:
            exact: insider";

/// `f` of every stored version of an object, consecutive repeats removed.
fn steps<T: PartialEq>(
    c: &Cluster,
    api: &str,
    plural: &str,
    name: &str,
    f: impl Fn(&Value) -> T,
) -> Vec<T> {
    let mut out: Vec<T> = Vec::new();
    for v in c.emu.history(api, plural, Some("test"), name) {
        if v.pointer("/metadata/deletionTimestamp").is_some() {
            continue;
        }
        let x = f(&v);
        if out.last() != Some(&x) {
            out.push(x);
        }
    }
    out
}

/// Runs the three rollouts of every test, each followed by the caller's checks: a bootstrap
/// (`bootstrapped`), a good revision that is promoted (`promoted`), then a bad one whose
/// acceptance webhook fails twice, rolled back (`rolled_back`).
fn rollouts(
    c: &Cluster,
    hook: &Hook,
    file: &Path,
    bootstrapped: impl FnOnce(&Cluster),
    promoted: impl FnOnce(&Cluster),
    rolled_back: impl FnOnce(&Cluster),
) {
    c.apply_target("ghcr.io/stefanprodan/podinfo:6.0.0", 2);
    let out = c.run(file);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stderr(&out).contains("bootstrapped"), "{}", stderr(&out));
    bootstrapped(c);

    c.apply_target("ghcr.io/stefanprodan/podinfo:6.1.0", 2);
    let out = c.run(file);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("verdict: promoted"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        image(&c.get("apps/v1", "deployments", "podinfo-primary")),
        "ghcr.io/stefanprodan/podinfo:6.1.0"
    );
    promoted(c);

    c.apply_target("ghcr.io/stefanprodan/podinfo:6.2.0", 2);
    hook.set(500);
    let out = c.run(file);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("Rolling back podinfo.test failed checks threshold reached 2"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        image(&c.get("apps/v1", "deployments", "podinfo-primary")),
        "ghcr.io/stefanprodan/podinfo:6.1.0"
    );
    assert_eq!(
        c.get("apps/v1", "deployments", "podinfo")["spec"]["replicas"],
        0
    );
    rolled_back(c);
}

/// Whether aviary wrote `object` by server-side apply.
fn applied_by_aviary(object: &Value) -> bool {
    object["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "aviary"
        && object["metadata"]["managedFields"]
            .as_array()
            .is_some_and(|m| {
                m.iter()
                    .any(|f| f["manager"] == "aviary" && f["operation"] == "Apply")
            })
}

fn insert(c: &Cluster, object: Value) {
    if let Err(e) = c.emu.insert(object) {
        panic!("insert: {e}");
    }
}

// ---------------------------------------------------------------------------------------------
// Istio

/// `(primary, canary)` weights of the VirtualService route that carries the canary host.
fn istio_weights(vs: &Value) -> (i64, i64) {
    let route = &vs["spec"]["http"][0]["route"];
    let weight = |host: &str| {
        route
            .as_array()
            .and_then(|r| r.iter().find(|d| d["destination"]["host"] == host))
            .and_then(|d| d["weight"].as_i64())
            .unwrap_or(-1)
    };
    (weight("podinfo-primary"), weight("podinfo-canary"))
}

#[test]
fn istio_canary_promote_and_rollback() {
    let c = cluster();
    let hook = Hook::start();
    let file = c.write(
        "canary.yaml",
        &canary(
            "istio",
            "",
            "    hosts: [app.example.com]
    gateways: [public-gateway.istio-system.svc.cluster.local]
    timeout: 30s
    retries: {attempts: 3, perTryTimeout: 5s, retryOn: \"gateway-error,connect-failure\"}
    trafficPolicy:
      tls:
        mode: ISTIO_MUTUAL
    match:
      - uri:
          prefix: /api",
            CANARY_STEPS,
            &hook.url,
        ),
    );
    let weights = |c: &Cluster| steps(c, ISTIO, "virtualservices", "podinfo", istio_weights);
    rollouts(
        &c,
        &hook,
        &file,
        |c| {
            for host in ["podinfo-primary", "podinfo-canary"] {
                let dr = c.get(ISTIO, "destinationrules", host);
                assert_eq!(dr["spec"]["host"], host);
                assert_eq!(dr["spec"]["trafficPolicy"]["tls"]["mode"], "ISTIO_MUTUAL");
                assert!(applied_by_aviary(&dr), "{dr}");
            }
            let vs = c.get(ISTIO, "virtualservices", "podinfo");
            assert!(applied_by_aviary(&vs), "{vs}");
            assert_eq!(vs["spec"]["hosts"], json!(["app.example.com", "podinfo"]));
            assert_eq!(
                vs["spec"]["gateways"],
                json!(["public-gateway.istio-system.svc.cluster.local"])
            );
            let http = &vs["spec"]["http"][0];
            assert_eq!(http["match"], json!([{"uri": {"prefix": "/api"}}]));
            assert_eq!(http["timeout"], "30s");
            assert_eq!(http["retries"]["attempts"], 3);
            assert_eq!(
                http["route"],
                json!([
                    {"destination": {"host": "podinfo-primary", "port": {"number": 9898}}, "weight": 100},
                    {"destination": {"host": "podinfo-canary", "port": {"number": 9898}}, "weight": 0},
                ])
            );
        },
        |c| {
            assert_eq!(
                weights(c),
                vec![(100, 0), (80, 20), (60, 40), (40, 60), (100, 0)]
            );
            // Every version kept the single route, its match and its options.
            for vs in c
                .emu
                .history(ISTIO, "virtualservices", Some("test"), "podinfo")
            {
                assert_eq!(vs["spec"]["http"].as_array().map(Vec::len), Some(1));
                assert_eq!(vs["spec"]["http"][0]["match"][0]["uri"]["prefix"], "/api");
                assert_eq!(vs["spec"]["http"][0]["timeout"], "30s");
            }
        },
        |c| {
            assert_eq!(
                weights(c),
                vec![
                    (100, 0),
                    (80, 20),
                    (60, 40),
                    (40, 60),
                    (100, 0),
                    (80, 20),
                    (100, 0)
                ]
            );
            // The DestinationRules were not rewritten during the rollouts.
            let dr = c
                .emu
                .history(ISTIO, "destinationrules", Some("test"), "podinfo-canary");
            assert_eq!(dr.len(), 1, "{dr:?}");
        },
    );
}

#[test]
fn istio_ab_testing_routes_the_header_then_returns_to_the_primary() {
    let c = cluster();
    let hook = Hook::start();
    let file = c.write(
        "canary.yaml",
        &canary(
            "istio",
            "",
            "    match:\n      - uri:\n          prefix: /",
            AB_STEPS,
            &hook.url,
        ),
    );
    // (canary weight of the first route, the first route's match, number of routes)
    let versions = |c: &Cluster| {
        steps(c, ISTIO, "virtualservices", "podinfo", |vs| {
            (
                istio_weights(vs).1,
                vs["spec"]["http"][0]["match"].clone(),
                vs["spec"]["http"].as_array().map_or(0, Vec::len),
            )
        })
    };
    let service_only = json!([{"uri": {"prefix": "/"}}]);
    let ab = json!([{"uri": {"prefix": "/"}, "headers": {"x-canary": {"exact": "insider"}}}]);
    rollouts(
        &c,
        &hook,
        &file,
        |c| {
            let vs = c.get(ISTIO, "virtualservices", "podinfo");
            assert_eq!(vs["spec"]["hosts"], json!(["podinfo"]));
            assert_eq!(vs["spec"]["gateways"], json!(["mesh"]));
        },
        |c| {
            assert_eq!(
                versions(c),
                vec![
                    (0, service_only.clone(), 1),
                    (100, ab.clone(), 2),
                    (0, service_only.clone(), 1)
                ]
            );
            // While the canary was tested, every other request stayed on the primary.
            let history = c
                .emu
                .history(ISTIO, "virtualservices", Some("test"), "podinfo");
            let tested: Vec<&Value> = history
                .iter()
                .filter(|vs| vs["spec"]["http"].as_array().map_or(0, Vec::len) == 2)
                .collect();
            assert!(!tested.is_empty());
            for vs in tested {
                let default = &vs["spec"]["http"][1];
                assert_eq!(default["match"], service_only);
                assert_eq!(
                    default["route"][0]["destination"]["host"],
                    "podinfo-primary"
                );
                assert_eq!(default["route"][0]["weight"], 100);
                assert_eq!(default["route"][1]["weight"], 0);
                assert_eq!(vs["spec"]["http"][0]["route"][0]["weight"], 0);
            }
        },
        |c| {
            let v = versions(c);
            assert_eq!(
                v[3..],
                [(100, ab.clone(), 2), (0, service_only.clone(), 1)],
                "{v:?}"
            );
        },
    );
}

// ---------------------------------------------------------------------------------------------
// Gloo

/// `(primary, canary)` weights of the first route of a RouteTable; Gloo (and Flagger) leave a
/// zero weight out.
fn gloo_weights(table: &Value) -> (i64, i64) {
    let d = &table["spec"]["routes"][0]["routeAction"]["multi"]["destinations"];
    let weight = |upstream: &str| {
        d.as_array()
            .and_then(|list| {
                list.iter()
                    .find(|x| x["destination"]["upstream"]["name"] == upstream)
            })
            .map_or(-1, |x| x["weight"].as_i64().unwrap_or(0))
    };
    (
        weight("test-podinfo-primaryupstream-9898"),
        weight("test-podinfo-canaryupstream-9898"),
    )
}

#[test]
fn gloo_canary_promote_and_rollback() {
    let c = cluster();
    let hook = Hook::start();
    // The Upstream whose settings the canary's upstreams copy (spec.upstreamRef).
    insert(
        &c,
        json!({
            "apiVersion": GLOO, "kind": "Upstream",
            "metadata": {"name": "podinfo-config", "namespace": "test"},
            "spec": {
                "static": {"hosts": [{"addr": "example.com", "port": 80}]},
                "connectionConfig": {"maxRequestsPerConnection": 10},
                "healthChecks": [{"timeout": "5s", "interval": "10s", "unhealthyThreshold": 2,
                                  "healthyThreshold": 2, "httpHealthCheck": {"path": "/healthz"}}],
            },
        }),
    );
    let file = c.write(
        "canary.yaml",
        &canary(
            "gloo",
            "  upstreamRef:\n    apiVersion: gloo.solo.io/v1\n    kind: Upstream\n    name: podinfo-config\n    namespace: test",
            "",
            CANARY_STEPS,
            &hook.url,
        ),
    );
    let weights = |c: &Cluster| steps(c, GLOO_GATEWAY, "routetables", "podinfo", gloo_weights);
    rollouts(
        &c,
        &hook,
        &file,
        |c| {
            for (role, selector) in [("primary", "podinfo-primary"), ("canary", "podinfo")] {
                let up = c.get(
                    GLOO,
                    "upstreams",
                    &format!("test-podinfo-{role}upstream-9898"),
                );
                assert!(applied_by_aviary(&up), "{up}");
                assert_eq!(
                    up["spec"]["kube"],
                    json!({"serviceName": format!("podinfo-{role}"), "serviceNamespace": "test",
                           "servicePort": 9898, "selector": {"app": selector}})
                );
                assert_eq!(
                    up["spec"]["connectionConfig"]["maxRequestsPerConnection"],
                    10
                );
                assert_eq!(
                    up["spec"]["healthChecks"][0]["httpHealthCheck"]["path"],
                    "/healthz"
                );
                assert!(up["spec"].get("static").is_none(), "{up}");
            }
            let table = c.get(GLOO_GATEWAY, "routetables", "podinfo");
            assert!(applied_by_aviary(&table), "{table}");
            let route = &table["spec"]["routes"][0];
            assert_eq!(route["matchers"], json!([{"prefix": "/"}]));
            assert_eq!(route["inheritablePathMatchers"], true);
            assert_eq!(
                route["routeAction"]["multi"]["destinations"],
                json!([
                    {"destination": {"upstream": {"name": "test-podinfo-primaryupstream-9898", "namespace": "test"}}, "weight": 100},
                    {"destination": {"upstream": {"name": "test-podinfo-canaryupstream-9898", "namespace": "test"}}},
                ])
            );
        },
        |c| {
            assert_eq!(
                weights(c),
                vec![(100, 0), (80, 20), (60, 40), (40, 60), (100, 0)]
            );
        },
        |c| {
            assert_eq!(
                weights(c),
                vec![
                    (100, 0),
                    (80, 20),
                    (60, 40),
                    (40, 60),
                    (100, 0),
                    (80, 20),
                    (100, 0)
                ]
            );
            // Every version of the table had both destinations and a weight on one of them.
            for t in c
                .emu
                .history(GLOO_GATEWAY, "routetables", Some("test"), "podinfo")
            {
                let d = &t["spec"]["routes"][0]["routeAction"]["multi"]["destinations"];
                assert_eq!(d.as_array().map(Vec::len), Some(2), "{t}");
                let (p, c) = gloo_weights(&t);
                assert_eq!(p + c, 100, "{t}");
            }
        },
    );
}

#[test]
fn gloo_ab_testing_matches_the_header_then_returns_to_the_primary() {
    let c = cluster();
    let hook = Hook::start();
    let file = c.write("canary.yaml", &canary("gloo", "", "", AB_STEPS, &hook.url));
    // (canary weight of the first route, its matchers, number of routes)
    let versions = |c: &Cluster| {
        steps(c, GLOO_GATEWAY, "routetables", "podinfo", |t| {
            (
                gloo_weights(t).1,
                t["spec"]["routes"][0]["matchers"].clone(),
                t["spec"]["routes"].as_array().map_or(0, Vec::len),
            )
        })
    };
    let all = json!([{"prefix": "/"}]);
    let ab = json!([{"prefix": "/", "headers": [{"name": "x-canary", "value": "insider"}]}]);
    rollouts(
        &c,
        &hook,
        &file,
        |c| {
            assert_eq!(
                c.get(GLOO, "upstreams", "test-podinfo-canaryupstream-9898")["spec"]["kube"]
                    ["serviceName"],
                "podinfo-canary"
            );
        },
        |c| {
            assert_eq!(
                versions(c),
                vec![
                    (0, all.clone(), 1),
                    (100, ab.clone(), 2),
                    (0, all.clone(), 1)
                ]
            );
            for t in c
                .emu
                .history(GLOO_GATEWAY, "routetables", Some("test"), "podinfo")
                .iter()
                .filter(|t| t["spec"]["routes"].as_array().map_or(0, Vec::len) == 2)
            {
                let default = &t["spec"]["routes"][1];
                assert_eq!(default["matchers"], all);
                assert_eq!(
                    default["routeAction"]["multi"]["destinations"][0]["weight"],
                    100
                );
            }
        },
        |c| {
            let v = versions(c);
            assert_eq!(v[3..], [(100, ab.clone(), 2), (0, all.clone(), 1)], "{v:?}");
        },
    );
}

// ---------------------------------------------------------------------------------------------
// NGINX

const NGINX: &str = "nginx.ingress.kubernetes.io";

fn user_ingress() -> Value {
    json!({
        "apiVersion": INGRESS, "kind": "Ingress",
        "metadata": {
            "name": "podinfo", "namespace": "test",
            "labels": {"app": "podinfo"},
            "annotations": {"nginx.ingress.kubernetes.io/proxy-body-size": "8m"},
        },
        "spec": {
            "ingressClassName": "nginx",
            "tls": [{"hosts": ["app.example.com"], "secretName": "app-tls"}],
            "rules": [{"host": "app.example.com", "http": {"paths": [
                {"path": "/", "pathType": "Prefix",
                 "backend": {"service": {"name": "podinfo", "port": {"number": 9898}}}},
                {"path": "/static", "pathType": "Prefix",
                 "backend": {"service": {"name": "assets", "port": {"number": 80}}}},
            ]}}],
        },
    })
}

const INGRESS_REF: &str =
    "  ingressRef:\n    apiVersion: networking.k8s.io/v1\n    kind: Ingress\n    name: podinfo";

/// The canary Ingress's routing annotations (under the nginx prefix), without the prefix.
fn nginx_annotations(ing: &Value) -> Vec<(String, String)> {
    ing["metadata"]["annotations"]
        .as_object()
        .map(|a| {
            a.iter()
                .filter_map(|(k, v)| {
                    let k = k.strip_prefix(&format!("{NGINX}/canary"))?;
                    Some((
                        format!("canary{k}"),
                        v.as_str().unwrap_or_default().to_string(),
                    ))
                })
                .collect()
        })
        .unwrap_or_default()
}

fn nginx_weight(ing: &Value) -> i64 {
    ing["metadata"]["annotations"][format!("{NGINX}/canary-weight")]
        .as_str()
        .and_then(|w| w.parse().ok())
        .unwrap_or(-1)
}

#[test]
fn nginx_canary_promote_and_rollback() {
    let c = cluster();
    let hook = Hook::start();
    insert(&c, user_ingress());
    let file = c.write(
        "canary.yaml",
        &canary("nginx", INGRESS_REF, "", CANARY_STEPS, &hook.url),
    );
    let weights = |c: &Cluster| steps(c, INGRESS, "ingresses", "podinfo-canary", nginx_weight);
    rollouts(
        &c,
        &hook,
        &file,
        |c| {
            let ing = c.get(INGRESS, "ingresses", "podinfo-canary");
            assert!(applied_by_aviary(&ing), "{ing}");
            assert_eq!(
                ing["metadata"]["annotations"][format!("{NGINX}/canary")],
                "true"
            );
            assert_eq!(
                ing["metadata"]["annotations"][format!("{NGINX}/proxy-body-size")],
                "8m"
            );
            assert_eq!(nginx_weight(&ing), 0);
            assert_eq!(ing["spec"]["ingressClassName"], "nginx");
            assert_eq!(ing["spec"]["tls"][0]["secretName"], "app-tls");
            let paths = &ing["spec"]["rules"][0]["http"]["paths"];
            assert_eq!(paths[0]["backend"]["service"]["name"], "podinfo-canary");
            assert_eq!(paths[0]["backend"]["service"]["port"]["number"], 9898);
            assert_eq!(paths[1]["backend"]["service"]["name"], "assets");
            // The user's Ingress is left alone.
            let user = c.get(INGRESS, "ingresses", "podinfo");
            assert_eq!(
                user["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["name"],
                "podinfo"
            );
            assert_eq!(
                c.emu
                    .history(INGRESS, "ingresses", Some("test"), "podinfo")
                    .len(),
                1
            );
        },
        |c| assert_eq!(weights(c), vec![0, 20, 40, 60, 0]),
        |c| {
            assert_eq!(weights(c), vec![0, 20, 40, 60, 0, 20, 0]);
            for ing in c
                .emu
                .history(INGRESS, "ingresses", Some("test"), "podinfo-canary")
            {
                assert_eq!(
                    ing["metadata"]["annotations"][format!("{NGINX}/canary")],
                    "true"
                );
                assert!(
                    nginx_annotations(&ing)
                        .iter()
                        .all(|(k, _)| !k.starts_with("canary-by-")),
                    "{ing}"
                );
            }
        },
    );
}

#[test]
fn nginx_ab_testing_routes_the_header_then_drops_it() {
    let c = cluster();
    let hook = Hook::start();
    insert(&c, user_ingress());
    let file = c.write(
        "canary.yaml",
        &canary("nginx", INGRESS_REF, "", AB_STEPS, &hook.url),
    );
    let versions = |c: &Cluster| {
        steps(c, INGRESS, "ingresses", "podinfo-canary", |ing| {
            let mut a = nginx_annotations(ing);
            a.sort();
            a
        })
    };
    let s = |k: &str, v: &str| (k.to_string(), v.to_string());
    let off = vec![s("canary", "true"), s("canary-weight", "0")];
    let on = vec![
        s("canary", "true"),
        s("canary-by-header", "x-canary"),
        s("canary-by-header-value", "insider"),
        s("canary-weight", "0"),
    ];
    rollouts(
        &c,
        &hook,
        &file,
        |c| {
            assert_eq!(versions(c), vec![off.clone()]);
        },
        |c| {
            assert_eq!(versions(c), vec![off.clone(), on.clone(), off.clone()]);
        },
        |c| {
            assert_eq!(
                versions(c),
                vec![
                    off.clone(),
                    on.clone(),
                    off.clone(),
                    on.clone(),
                    off.clone()
                ]
            );
            // Server-side apply removed the header annotations once they were no longer sent.
            let last = c.get(INGRESS, "ingresses", "podinfo-canary");
            assert!(
                last["metadata"]["annotations"]
                    .get(format!("{NGINX}/canary-by-header"))
                    .is_none(),
                "{last}"
            );
        },
    );
}

#[test]
fn nginx_refuses_what_it_cannot_route_before_changing_anything() {
    let c = cluster();
    let hook = Hook::start();
    c.apply_target("podinfo:1", 2);

    // No ingressRef.
    let file = c.write(
        "no-ref.yaml",
        &canary("nginx", "", "", CANARY_STEPS, &hook.url),
    );
    let out = c.run(&file);
    assert!(![0, 1].contains(&code(&out)), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("provider nginx needs spec.ingressRef"),
        "{}",
        stderr(&out)
    );

    // Two A/B conditions: ingress-nginx can only test one.
    let file = c.write(
        "two.yaml",
        &canary(
            "nginx",
            INGRESS_REF,
            "",
            "    iterations: 2
    match:
      - headers:
          x-canary: {exact: insider}
        queryParams:
          beta: {exact: \"1\"}",
            &hook.url,
        ),
    );
    let out = c.run(&file);
    assert!(![0, 1].contains(&code(&out)), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("the match has 2: queryParams.beta, headers.x-canary"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        c.get("apps/v1", "deployments", "podinfo-primary"),
        Value::Null,
        "nothing is created for a spec the router refuses"
    );

    // An ingressRef to an Ingress that is not there.
    let file = c.write(
        "missing.yaml",
        &canary("nginx", INGRESS_REF, "", CANARY_STEPS, &hook.url),
    );
    let out = c.run(&file);
    assert!(![0, 1].contains(&code(&out)), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(
            "Ingress podinfo.test (the Canary's ingressRef) does not exist; apply it, with a backend pointing at the Service podinfo"
        ),
        "{}",
        stderr(&out)
    );
    assert_eq!(c.get(INGRESS, "ingresses", "podinfo-canary"), Value::Null);
}
