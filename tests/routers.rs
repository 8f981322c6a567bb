//! The istio, gloo, nginx and gatewayapi routers end to end: the real `aviary rollout` binary against the API
//! server emulator, a bootstrap run, a good revision (webhook at 200) promoted and a bad one
//! (webhook at 500) rolled back, for a weighted canary and for A/B testing. Each test reads back
//! every version of the routing objects aviary wrote and asserts the weights, destinations and
//! request matches of each step.

use std::path::Path;

use crate::util::*;
use serde_json::{json, Value};

pub(super) const ISTIO: &str = "networking.istio.io/v1beta1";
const GLOO_GATEWAY: &str = "gateway.solo.io/v1";
const GLOO: &str = "gloo.solo.io/v1";
pub(super) const INGRESS: &str = "networking.k8s.io/v1";

/// A Canary for `provider`; `spec` and `service` are extra lines (indented by two and four
/// spaces) and `analysis` the strategy lines (indented by four).
pub(super) fn canary(
    provider: &str,
    spec: &str,
    service: &str,
    analysis: &str,
    hook: &str,
) -> String {
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

pub(super) const CANARY_STEPS: &str = "    maxWeight: 60\n    stepWeight: 20";
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
pub(super) fn rollouts(
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
pub(super) fn applied_by_aviary(object: &Value) -> bool {
    object["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "aviary"
        && object["metadata"]["managedFields"]
            .as_array()
            .is_some_and(|m| {
                m.iter()
                    .any(|f| f["manager"] == "aviary" && f["operation"] == "Apply")
            })
}

pub(super) fn insert(c: &Cluster, object: Value) {
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

/// `(primary, canary)` weights of the VirtualService's last route: the weighted one, behind
/// the session affinity routes.
fn istio_weighted(vs: &Value) -> (i64, i64) {
    let last = vs["spec"]["http"]
        .as_array()
        .and_then(|h| h.last())
        .cloned()
        .unwrap_or_default();
    istio_weights(&json!({"spec": {"http": [last]}}))
}

#[test]
fn istio_session_affinity_sticks_the_canary_cookie_then_expires_it() {
    // The sessionAffinity of Flagger's e2e canary (test/istio/test-session-affinity.sh).
    let c = cluster();
    let hook = Hook::start();
    let file = c.write(
        "canary.yaml",
        &canary(
            "istio",
            "",
            "    gateways: [istio-system/istio-ingressgateway]
    hosts: ['*']",
            "    maxWeight: 60
    stepWeight: 20
    sessionAffinity:
      cookieName: canary-flagger-cookie
      primaryCookieName: primary-flagger-cookie",
            &hook.url,
        ),
    );
    let history = |c: &Cluster| {
        c.emu
            .history(ISTIO, "virtualservices", Some("test"), "podinfo")
    };
    rollouts(
        &c,
        &hook,
        &file,
        |_| {},
        |c| {
            assert_eq!(
                steps(c, ISTIO, "virtualservices", "podinfo", istio_weighted),
                vec![(100, 0), (80, 20), (60, 40), (40, 60), (100, 0)]
            );
            let mut cookie: Option<String> = None;
            for vs in history(c) {
                let http = &vs["spec"]["http"];
                let (_, canary) = istio_weighted(&vs);
                if canary == 0 {
                    continue;
                }
                // Mid-rollout: the cookie holders go to the canary, the primary cookie's stay.
                assert_eq!(http[0]["name"], "sticky-route", "{vs}");
                assert_eq!(http[1]["name"], "sticky-primary-route", "{vs}");
                assert_eq!(http[0]["route"][1]["weight"], 100, "{vs}");
                assert_eq!(http[1]["route"][0]["weight"], 100, "{vs}");
                let set = http[2]["route"][1]["headers"]["response"]["add"]["Set-Cookie"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                assert!(set.ends_with("; Max-Age=86400"), "{set}");
                let value = set.split(';').next().unwrap_or_default().to_string();
                assert!(value.starts_with("canary-flagger-cookie="), "{set}");
                let (name, v) = value.split_once('=').unwrap_or_default();
                assert_eq!(
                    http[0]["match"][0]["headers"]["Cookie"]["regex"],
                    format!(".*{name}.*{v}.*")
                );
                assert!(
                    http[2]["route"][0]["headers"]["response"]["add"]["Set-Cookie"]
                        .as_str()
                        .is_some_and(|p| p.starts_with("primary-flagger-cookie=")
                            && p.ends_with("; Max-Age=1"))
                );
                // One cookie for the whole run.
                if let Some(first) = &cookie {
                    assert_eq!(first, &value);
                }
                cookie = Some(value);
            }
            // Promoted: the last route is back on the primary, and the cookie is expired.
            let vs = c.get(ISTIO, "virtualservices", "podinfo");
            let expired = format!("{}; Max-Age=-1", cookie.unwrap_or_default());
            assert_eq!(
                vs["spec"]["http"][0]["headers"]["response"]["add"]["Set-Cookie"], expired,
                "{vs}"
            );
            assert_eq!(istio_weighted(&vs), (100, 0));
        },
        |c| {
            let vs = c.get(ISTIO, "virtualservices", "podinfo");
            assert_eq!(istio_weighted(&vs), (100, 0));
            assert_eq!(vs["spec"]["http"][0]["name"], "sticky-route");
            assert!(
                vs["spec"]["http"][0]["headers"]["response"]["add"]["Set-Cookie"]
                    .as_str()
                    .is_some_and(|s| s.ends_with("; Max-Age=-1"))
            );
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

pub(super) fn user_ingress() -> Value {
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

pub(super) const INGRESS_REF: &str =
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

// ---------------------------------------------------------------------------------------------
// Flagger's linkerd, kuma, contour and traefik canaries: the gatewayapi router's HTTPRoute

pub(super) const HTTPROUTE: &str = "gateway.networking.k8s.io/v1";

/// A Prometheus stand-in: every instant query is answered with 100 (a 100% success rate, a
/// 100 ms duration) and kept, URL-decoded, in `queries`.
struct FakePrometheus {
    url: String,
    queries: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl FakePrometheus {
    fn start() -> FakePrometheus {
        let listener = match std::net::TcpListener::bind("127.0.0.1:0") {
            Ok(l) => l,
            Err(e) => panic!("bind: {e}"),
        };
        let url = match listener.local_addr() {
            Ok(a) => format!("http://{a}"),
            Err(e) => panic!("{e}"),
        };
        let queries = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let kept = queries.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let kept = kept.clone();
                std::thread::spawn(move || {
                    let Some(request) = read_request(&stream) else {
                        return;
                    };
                    let query = request
                        .path
                        .split_once('?')
                        .map(|(_, q)| q)
                        .unwrap_or_default()
                        .split('&')
                        .find_map(|kv| kv.strip_prefix("query="))
                        .map(percent_decode)
                        .unwrap_or_default();
                    if let Ok(mut all) = kept.lock() {
                        all.push(query);
                    }
                    let body = r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"100"]}]}}"#;
                    let mut w = &stream;
                    let _ = std::io::Write::write_all(
                        &mut w,
                        format!(
                            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                            body.len()
                        )
                        .as_bytes(),
                    );
                });
            }
        });
        FakePrometheus { url, queries }
    }

    fn queries(&self) -> Vec<String> {
        self.queries.lock().map(|q| q.clone()).unwrap_or_default()
    }
}

/// `application/x-www-form-urlencoded` decoding: `+` is a space, `%XX` a byte.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                match std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The Flagger corpus Canary of `provider` (a verbatim copy under tests/fixtures/flagger), made
/// to run here: its 15s interval shortened to 1s (as aviary.dev/v1alpha1: flagger.app/v1beta1
/// raises intervals below 10s to 10s, as Flagger does) and its load tester replaced by `hook`.
fn flagger_canary(provider: &str, hook: &Hook) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/flagger")
        .join(format!("{provider}-canary.yaml"));
    read(&path)
        .replace(
            "apiVersion: flagger.app/v1beta1",
            "apiVersion: aviary.dev/v1alpha1",
        )
        .replace("interval: 15s", "interval: 1s")
        .replace("http://flagger-loadtester.test/", &hook.url)
}

/// `(primary, canary)` weights of the HTTPRoute's first rule.
fn route_split(route: &Value) -> (i64, i64) {
    let weight = |name: &str| {
        route["spec"]["rules"][0]["backendRefs"]
            .as_array()
            .and_then(|b| b.iter().find(|b| b["name"] == name))
            .and_then(|b| b["weight"].as_i64())
            .unwrap_or(-1)
    };
    (weight("podinfo-primary"), weight("podinfo-canary"))
}

/// Runs Flagger's `provider` canary (`text`) through a bootstrap and a promoted revision, judged
/// by the provider's built-in queries (`query_mark` is in its success-rate query), and checks
/// the HTTPRoute: attached to `parents`, its canary weight going through `weights`, all on the
/// primary at the end.
fn flagger_provider_promotes(
    provider: &str,
    text: &str,
    setup: impl FnOnce(&Cluster),
    parents: Value,
    weights: &[i64],
    query_mark: &str,
) {
    let c = cluster();
    setup(&c);
    let prometheus = FakePrometheus::start();
    let file = c.write("canary.yaml", text);
    let run = |c: &Cluster| {
        let mut cmd = c.aviary(&file, &[]);
        cmd.arg("--prometheus-url").arg(&prometheus.url);
        match cmd.output() {
            Ok(o) => o,
            Err(e) => panic!("{e}"),
        }
    };
    c.apply_target("ghcr.io/stefanprodan/podinfo:6.0.0", 2);
    let out = run(&c);
    assert_eq!(code(&out), 0, "{provider}: {}", stderr(&out));
    assert!(stderr(&out).contains("bootstrapped"), "{}", stderr(&out));
    // One line says how aviary routes what Flagger routes with another object.
    let said = format!(
        "provider {provider}: aviary routes podinfo.test with the Gateway API HTTPRoute podinfo"
    );
    assert_eq!(stderr(&out).matches(&said).count(), 1, "{}", stderr(&out));
    let route = c.get(HTTPROUTE, "httproutes", "podinfo");
    assert!(applied_by_aviary(&route), "{route}");
    assert_eq!(route["spec"]["parentRefs"], parents, "{route}");
    assert_eq!(route_split(&route), (100, 0));
    // The emulator's Gateway API controller accepted the route for each parent.
    assert_eq!(
        route["status"]["parents"][0]["parentRef"], parents[0],
        "{route}"
    );

    c.apply_target("ghcr.io/stefanprodan/podinfo:6.1.0", 2);
    let out = run(&c);
    assert_eq!(code(&out), 0, "{provider}: {}", stderr(&out));
    assert!(
        stderr(&out).contains("verdict: promoted"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        image(&c.get("apps/v1", "deployments", "podinfo-primary")),
        "ghcr.io/stefanprodan/podinfo:6.1.0"
    );
    assert_eq!(c.route_weights(), weights, "{provider}");
    let route = c.get(HTTPROUTE, "httproutes", "podinfo");
    assert_eq!(route_split(&route), (100, 0), "{route}");
    assert_eq!(route["spec"]["parentRefs"], parents, "{route}");
    // Every version of the route kept its parents.
    for v in c
        .emu
        .history(HTTPROUTE, "httproutes", Some("test"), "podinfo")
    {
        assert_eq!(v["spec"]["parentRefs"], parents, "{v}");
    }
    // The analysis asked Prometheus the provider's built-in queries.
    let queries = prometheus.queries();
    assert!(
        queries.iter().any(|q| q.contains(query_mark)),
        "{provider}: {queries:#?}"
    );
}

fn gateway_refs(text: &str, name: &str, namespace: &str) -> String {
    text.replacen(
        "    targetPort: 9898\n",
        &format!(
            "    targetPort: 9898\n    gatewayRefs:\n      - name: {name}\n        namespace: {namespace}\n"
        ),
        1,
    )
}

#[test]
fn flagger_linkerd_canary_routes_the_mesh_with_an_httproute_on_the_apex_service() {
    let hook = Hook::start();
    flagger_provider_promotes(
        "linkerd",
        &flagger_canary("linkerd", &hook),
        // Its autoscalerRef: the HPA the user has.
        |c| {
            insert(
                c,
                json!({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
                    "metadata": {"name": "podinfo", "namespace": "test"},
                    "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment",
                        "name": "podinfo"}, "minReplicas": 2, "maxReplicas": 4}}),
            )
        },
        json!([{"group": "", "kind": "Service", "name": "podinfo", "port": 80}]),
        &[0, 5, 10, 15, 20, 25, 30, 35, 40, 45, 50, 0],
        r#"response_total{ namespace="test", deployment=~"podinfo", classification!="failure", direction="inbound" }[1m]"#,
    );
}

#[test]
fn flagger_kuma_canary_routes_the_mesh_with_an_httproute_on_the_apex_service() {
    let hook = Hook::start();
    // Flagger's example leaves the provider to Flagger's -mesh-provider=kuma; here it is written.
    let text = flagger_canary("kuma", &hook).replacen("spec:\n", "spec:\n  provider: kuma\n", 1);
    flagger_provider_promotes(
        "kuma",
        &text,
        |_| {},
        json!([{"group": "", "kind": "Service", "name": "podinfo", "port": 9898}]),
        &[0, 10, 20, 30, 40, 50, 0],
        r#"envoy_cluster_upstream_rq{ service=~"podinfo-canary_test_svc_[0-9a-zA-Z-]+", envoy_response_code!~"5.*" }[1m]"#,
    );
}

#[test]
fn flagger_contour_canary_routes_through_its_gateway_with_an_httproute() {
    let hook = Hook::start();
    let text = gateway_refs(
        &flagger_canary("contour", &hook),
        "contour",
        "projectcontour",
    );
    flagger_provider_promotes(
        "contour",
        &text,
        |_| {},
        json!([{"name": "contour", "namespace": "projectcontour"}]),
        &[0, 10, 20, 30, 40, 50, 0],
        r#"envoy_cluster_upstream_rq{ envoy_cluster_name=~"test_podinfo-canary_[0-9a-zA-Z-]+", envoy_response_code!~"5.*" }[1m]"#,
    );
}

#[test]
fn flagger_traefik_canary_routes_through_its_gateway_with_an_httproute() {
    let hook = Hook::start();
    let text = gateway_refs(&flagger_canary("traefik", &hook), "traefik", "traefik");
    flagger_provider_promotes(
        "traefik",
        &text,
        |_| {},
        json!([{"name": "traefik", "namespace": "traefik"}]),
        &[0, 10, 20, 30, 40, 50, 60, 0],
        r#"traefik_service_request_duration_seconds_bucket{ service=~"test-podinfo-canary-[0-9a-zA-Z-]+@kubernetescrd", code!~"5..", le="+Inf" }[1m]"#,
    );
}

/// Runs `aviary rollout` on `text` against a cluster holding the target, and checks that it
/// exits 2 with each of `says` and never called the API server.
fn refused_before_changing_anything(text: &str, says: &[&str]) {
    let c = cluster();
    c.apply_target("ghcr.io/stefanprodan/podinfo:6.0.0", 2);
    let file = c.write("canary.yaml", text);
    c.emu.clear_requests();
    let out = c.run(&file);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    for s in says {
        assert!(stderr(&out).contains(s), "{s}: {}", stderr(&out));
    }
    // Refused before it connected: not a request, so nothing changed.
    let requests = c.emu.requests();
    assert!(
        requests.is_empty(),
        "{:?}",
        requests
            .iter()
            .map(|r| format!("{} {}", r.method, r.path))
            .collect::<Vec<_>>()
    );
    assert_eq!(
        c.get("apps/v1", "deployments", "podinfo-primary"),
        Value::Null
    );
    assert_eq!(c.get(HTTPROUTE, "httproutes", "podinfo"), Value::Null);
    assert_eq!(
        c.get("coordination.k8s.io/v1", "leases", "podinfo"),
        Value::Null
    );
}

#[test]
fn gateway_providers_without_gateway_refs_are_refused_naming_the_field() {
    let hook = Hook::start();
    for (provider, flagger) in [
        ("contour", "a Contour HTTPProxy"),
        ("traefik", "a TraefikService"),
    ] {
        refused_before_changing_anything(
            &flagger_canary(provider, &hook),
            &[
                "canary.yaml:3: spec.service.gatewayRefs: provider ",
                flagger,
                "spec.service.gatewayRefs is empty",
                "help: add `gatewayRefs: [{name: GATEWAY, namespace: GATEWAY_NAMESPACE}]` under spec.service",
            ],
        );
    }
}

#[test]
fn providers_aviary_does_not_route_are_refused_at_spec_provider() {
    let hook = Hook::start();
    for (provider, instead) in [
        (
            "knative",
            "use provider gatewayapi:v1 with an HTTPRoute-capable gateway, istio or nginx",
        ),
        (
            "skipper",
            "use provider gatewayapi:v1 with an HTTPRoute-capable gateway, or nginx",
        ),
    ] {
        // The corpus file's spec.provider is on its line 9.
        refused_before_changing_anything(
            &flagger_canary(provider, &hook),
            &[
                &format!("canary.yaml:9: spec.provider: aviary does not route provider {provider}, so it cannot roll out podinfo.test"),
                instead,
            ],
        );
    }
}

/// `(primary, canary)` weights of the HTTPRoute's last rule: the weighted one, behind the
/// session affinity rules.
fn route_weighted(route: &Value) -> (i64, i64) {
    let last = route["spec"]["rules"]
        .as_array()
        .and_then(|r| r.last())
        .cloned()
        .unwrap_or_default();
    route_split(&json!({"spec": {"rules": [last]}}))
}

#[test]
fn gatewayapi_session_affinity_and_flaggers_route_fields() {
    // The sessionAffinity of Flagger's e2e canary (test/gatewayapi/test-session-affinity.sh),
    // with backendTimeout, rewrite and an extra mirror.
    let c = cluster();
    let hook = Hook::start();
    let file = c.write(
        "canary.yaml",
        &canary(
            "gatewayapi:v1",
            "",
            "    hosts: [www.example.com]
    gatewayRefs:
      - name: gateway
        namespace: istio-ingress
    timeout: 30s
    backendTimeout: 10s
    rewrite: {uri: /v2, type: ReplacePrefixMatch}
    mirror:
      - backendRef: {name: shadow, port: 80}",
            "    maxWeight: 60
    stepWeight: 20
    sessionAffinity:
      cookieName: canary-flagger-cookie
      primaryCookieName: primary-flagger-cookie",
            &hook.url,
        ),
    );
    let history = |c: &Cluster| {
        c.emu
            .history(HTTPROUTE, "httproutes", Some("test"), "podinfo")
    };
    rollouts(
        &c,
        &hook,
        &file,
        |c| {
            let route = c.get(HTTPROUTE, "httproutes", "podinfo");
            assert!(applied_by_aviary(&route), "{route}");
            for rule in route["spec"]["rules"].as_array().into_iter().flatten() {
                assert_eq!(
                    rule["timeouts"],
                    json!({"request": "30s", "backendRequest": "10s"}),
                    "{route}"
                );
                assert_eq!(
                    rule["filters"],
                    json!([
                        {"type": "URLRewrite", "urlRewrite": {"path": {
                            "type": "ReplacePrefixMatch", "replacePrefixMatch": "/v2"}}},
                        {"type": "RequestMirror", "requestMirror": {"backendRef": {
                            "name": "shadow", "port": 80}}},
                    ]),
                    "{route}"
                );
            }
        },
        |c| {
            assert_eq!(
                steps(c, HTTPROUTE, "httproutes", "podinfo", route_weighted),
                vec![(100, 0), (80, 20), (60, 40), (40, 60), (100, 0)]
            );
            let mut cookie: Option<String> = None;
            for route in history(c) {
                let rules = &route["spec"]["rules"];
                if route_weighted(&route).1 == 0 {
                    continue;
                }
                // Mid-rollout: the canary cookie's holders go to the canary, the primary's stay.
                let set = rules[2]["backendRefs"][1]["filters"][0]["responseHeaderModifier"]["add"]
                    [0]["value"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                assert!(set.ends_with("; Max-Age=86400"), "{route}");
                let value = set.split(';').next().unwrap_or_default().to_string();
                let (name, v) = value.split_once('=').unwrap_or_default();
                assert_eq!(name, "canary-flagger-cookie");
                assert_eq!(
                    rules[0]["matches"][0]["headers"][0],
                    json!({"type": "RegularExpression", "name": "Cookie",
                        "value": format!(".*{name}.*{v}.*")})
                );
                assert_eq!(rules[0]["backendRefs"][1]["weight"], 100, "{route}");
                assert_eq!(rules[1]["backendRefs"][0]["weight"], 100, "{route}");
                assert!(rules[1]["matches"][0]["headers"][0]["value"]
                    .as_str()
                    .is_some_and(|m| m.starts_with(".*primary-flagger-cookie.*")));
                if let Some(first) = &cookie {
                    assert_eq!(first, &value);
                }
                cookie = Some(value);
            }
            // Promoted: back on the primary, the cookie expired by the rule in front.
            let route = c.get(HTTPROUTE, "httproutes", "podinfo");
            assert_eq!(route_weighted(&route), (100, 0));
            let filters = route["spec"]["rules"][0]["filters"].to_string();
            let expired = format!("{}; Max-Age=-1", cookie.unwrap_or_default());
            assert!(filters.contains(&expired), "{route}");
        },
        |c| {
            let route = c.get(HTTPROUTE, "httproutes", "podinfo");
            assert_eq!(route_weighted(&route), (100, 0));
            assert!(route["spec"]["rules"][0]["filters"]
                .to_string()
                .contains("; Max-Age=-1"));
        },
    );
}
