//! Gloo Edge: two kube `Upstream`s (`<ns>-<svc>-primaryupstream-<port>` and
//! `<ns>-<svc>-canaryupstream-<port>`, Flagger's names, for the `-primary` and `-canary` Services) and one `RouteTable` named like the apex Service,
//! whose route sends traffic to the two upstreams by weight. A/B testing puts a route carrying
//! `analysis.match` (headers, query parameters, methods) in front, followed by the default route
//! that keeps every other request on the primary. Mirroring becomes the route's `shadowing`
//! option. When `spec.upstreamRef` names an Upstream, both upstreams copy its spec (TLS, circuit
//! breakers, load balancing...) with their own `kube` part, as Flagger does.
//!
//! A Gloo destination weight of 0 is written as Flagger writes it: the destination stays in the
//! list without a `weight` (protobuf's zero value); the other destination always carries the rest.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::future::BoxFuture;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch};
use kube::Client;
use serde_json::{json, Map, Value};

use crate::cluster::{apply_params, retry, ClusterError, MANAGED_BY};
use crate::workload::Workloads;
use aviary_core::engine::{RouteScope, Routes};
use aviary_core::spec::{Canary, CustomMetadata, HttpMatch, ObjectRef, StringMatch};

use super::{
    and_matches, canonical, merge_match, number, percentages, regex_escape, Observed, TrafficRouter,
};

/// Upstream types of a Gloo `UpstreamSpec` (a oneof): the copy of an `upstreamRef` drops them all
/// and gets `kube`.
const UPSTREAM_TYPES: [&str; 8] = [
    "kube", "static", "pipe", "aws", "azure", "consul", "awsEc2", "gcp",
];

pub struct Gloo {
    client: Client,
    upstreams: Api<DynamicObject>,
    route_tables: Api<DynamicObject>,
    objects: GlooObjects,
    /// The Upstreams were applied by an earlier call.
    upstreams_applied: AtomicBool,
}

fn resource(group: &str, kind: &str) -> ApiResource {
    let plural = format!("{}s", kind.to_lowercase());
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, "v1", kind), &plural)
}

impl Gloo {
    pub fn new(canary: &Canary, workloads: &Workloads) -> Result<Gloo, ClusterError> {
        let objects = GlooObjects::new(
            canary,
            &workloads.namespace,
            &workloads.service,
            Selectors {
                primary: BTreeMap::from([(
                    workloads.label_key.clone(),
                    workloads.primary_label_value(),
                )]),
                canary: BTreeMap::from([(
                    workloads.label_key.clone(),
                    workloads.label_value.clone(),
                )]),
            },
        )?;
        let client = workloads.client().clone();
        let ns = &workloads.namespace;
        Ok(Gloo {
            upstreams: Api::namespaced_with(
                client.clone(),
                ns,
                &resource("gloo.solo.io", "Upstream"),
            ),
            route_tables: Api::namespaced_with(
                client.clone(),
                ns,
                &resource("gateway.solo.io", "RouteTable"),
            ),
            client,
            objects,
            upstreams_applied: AtomicBool::new(false),
        })
    }

    /// The spec of the Upstream `spec.upstreamRef` names, if any.
    async fn config_upstream(&self) -> Result<Option<Value>, ClusterError> {
        let Some(r) = &self.objects.upstream_ref else {
            return Ok(None);
        };
        let ns = r.namespace.as_deref().unwrap_or(&self.objects.namespace);
        let api: Api<DynamicObject> = Api::namespaced_with(
            self.client.clone(),
            ns,
            &resource("gloo.solo.io", "Upstream"),
        );
        let what = format!("read Upstream {}.{ns}", r.name);
        let found = retry(&what, || api.get_opt(&r.name)).await?;
        let Some(upstream) = found else {
            return Err(ClusterError::Invalid(format!(
                "Upstream {}.{ns} (the Canary's upstreamRef) does not exist; apply it before the \
                 rollout or remove upstreamRef",
                r.name
            )));
        };
        Ok(Some(
            upstream.data.get("spec").cloned().unwrap_or(json!({})),
        ))
    }
}

impl TrafficRouter for Gloo {
    fn name(&self) -> &'static str {
        "gloo"
    }

    fn set_routes<'a>(&'a self, routes: &'a Routes) -> BoxFuture<'a, Result<(), ClusterError>> {
        Box::pin(async move {
            let o = &self.objects;
            if !self.upstreams_applied.load(Ordering::Acquire) {
                let config = self.config_upstream().await?;
                for primary in [true, false] {
                    let upstream = o.upstream(primary, config.as_ref());
                    let name = o.upstream_name(primary);
                    let what = format!("apply Upstream {name}.{}", o.namespace);
                    let (params, patch) = (apply_params(), Patch::Apply(&upstream));
                    retry(&what, || self.upstreams.patch(name, &params, &patch)).await?;
                }
                self.upstreams_applied.store(true, Ordering::Release);
            }
            let table = o.route_table(routes);
            let what = format!("apply RouteTable {}.{}", o.name, o.namespace);
            let (params, patch) = (apply_params(), Patch::Apply(&table));
            retry(&what, || self.route_tables.patch(&o.name, &params, &patch)).await?;
            Ok(())
        })
    }

    fn observed(&self) -> BoxFuture<'_, Result<Observed, ClusterError>> {
        Box::pin(async move {
            let o = &self.objects;
            let objects = format!("RouteTable {}.{}", o.name, o.namespace);
            let what = format!("read {objects}");
            let Some(table) = retry(&what, || self.route_tables.get_opt(&o.name)).await? else {
                return Ok(Observed {
                    objects,
                    routes: None,
                });
            };
            let value = serde_json::to_value(&table)
                .map_err(|e| ClusterError::Invalid(format!("{objects}: {e}")))?;
            let routes = o
                .routes_of(&value)
                .map_err(|e| ClusterError::Invalid(format!("{objects}: {e}")))?;
            Ok(Observed {
                objects,
                routes: Some(routes),
            })
        })
    }
}

/// The pod selectors of the `-primary` and `-canary` Services.
pub struct Selectors {
    pub primary: BTreeMap<String, String>,
    pub canary: BTreeMap<String, String>,
}

/// The Gloo objects of one Canary, as JSON; no cluster access.
pub struct GlooObjects {
    namespace: String,
    /// The apex Service's name, which the RouteTable takes.
    name: String,
    port: u16,
    primary_service: String,
    canary_service: String,
    primary_upstream: String,
    canary_upstream: String,
    selectors: Selectors,
    upstream_ref: Option<ObjectRef>,
    apex: Option<CustomMetadata>,
    /// The matchers of the default route, and whether their path comes from the parent.
    service_matchers: (Vec<Value>, bool),
    /// The matchers of the A/B route: `analysis.match` ANDed with the service's matches.
    ab_matchers: (Vec<Value>, bool),
    /// Route options from the service (timeout, retries, rewrites, headers).
    options: Map<String, Value>,
}

impl GlooObjects {
    pub fn new(
        canary: &Canary,
        namespace: &str,
        service: &str,
        selectors: Selectors,
    ) -> Result<GlooObjects, ClusterError> {
        let s = &canary.service;
        let invalid = |field: &str, e: String| {
            ClusterError::Invalid(format!("{}: {field}: {e}", canary.qualified_name()))
        };
        let service_matchers = s
            .r#match
            .iter()
            .map(gloo_matcher)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| invalid("service.match", e))?;
        let analysis = canary.analysis.clone().unwrap_or_default();
        let ab = analysis
            .r#match
            .iter()
            .map(gloo_matcher)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| invalid("analysis.match", e))?;
        let ab = combine_matchers(&ab, &service_matchers);
        if s.cors_policy.is_some() {
            tracing::warn!(
                "{}: service.corsPolicy is an Istio setting; the gloo router does not write it \
                 (set CORS on the Gloo VirtualService)",
                canary.qualified_name()
            );
        }
        let mut options = Map::new();
        if let Some(t) = &s.timeout {
            options.insert("timeout".into(), json!(t));
        }
        if let Some(r) = &s.retries {
            let mut retries = Map::new();
            if let Some(on) = &r.retry_on {
                retries.insert("retryOn".into(), json!(on));
            }
            if let Some(n) = r.attempts {
                retries.insert("numRetries".into(), json!(n));
            }
            if let Some(t) = &r.per_try_timeout {
                retries.insert("perTryTimeout".into(), json!(t));
            }
            options.insert("retries".into(), Value::Object(retries));
        }
        if let Some(rw) = &s.rewrite {
            if let Some(uri) = &rw.uri {
                options.insert("prefixRewrite".into(), json!(uri));
            }
            if let Some(authority) = &rw.authority {
                options.insert("hostRewrite".into(), json!(authority));
            }
        }
        if let Some(h) = &s.headers {
            let mut manipulation = Map::new();
            for (ops, add_key, remove_key) in [
                (&h.request, "requestHeadersToAdd", "requestHeadersToRemove"),
                (
                    &h.response,
                    "responseHeadersToAdd",
                    "responseHeadersToRemove",
                ),
            ] {
                let Some(ops) = ops else { continue };
                let mut add: Vec<Value> = Vec::new();
                for (map, append) in [(&ops.set, false), (&ops.add, true)] {
                    add.extend(map.iter().map(
                        |(k, v)| json!({ "header": { "key": k, "value": v }, "append": append }),
                    ));
                }
                if !add.is_empty() {
                    manipulation.insert(add_key.into(), json!(add));
                }
                if !ops.remove.is_empty() {
                    manipulation.insert(remove_key.into(), json!(ops.remove));
                }
            }
            if !manipulation.is_empty() {
                options.insert("headerManipulation".into(), Value::Object(manipulation));
            }
        }
        let upstream = |role: &str| format!("{namespace}-{service}-{role}-{}", s.port);
        Ok(GlooObjects {
            namespace: namespace.to_string(),
            name: service.to_string(),
            port: s.port,
            primary_service: format!("{service}-primary"),
            canary_service: format!("{service}-canary"),
            primary_upstream: upstream("primaryupstream"),
            canary_upstream: upstream("canaryupstream"),
            selectors,
            upstream_ref: canary.upstream_ref.clone(),
            apex: s.apex.clone(),
            service_matchers: with_default_path(service_matchers),
            ab_matchers: with_default_path(ab),
            options,
        })
    }

    pub fn upstream_name(&self, primary: bool) -> &str {
        if primary {
            &self.primary_upstream
        } else {
            &self.canary_upstream
        }
    }

    /// The kube Upstream of the primary (or canary) Service; `config` is the spec of the
    /// `upstreamRef` Upstream, whose settings it keeps.
    pub fn upstream(&self, primary: bool, config: Option<&Value>) -> Value {
        let (service, selector) = if primary {
            (&self.primary_service, &self.selectors.primary)
        } else {
            (&self.canary_service, &self.selectors.canary)
        };
        let mut spec = config
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        for t in UPSTREAM_TYPES {
            spec.remove(t);
        }
        spec.insert(
            "kube".into(),
            json!({
                "serviceName": service,
                "serviceNamespace": self.namespace,
                "servicePort": self.port,
                "selector": selector,
            }),
        );
        json!({
            "apiVersion": "gloo.solo.io/v1",
            "kind": "Upstream",
            "metadata": {
                "name": self.upstream_name(primary),
                "namespace": self.namespace,
                "labels": { MANAGED_BY.0: MANAGED_BY.1 },
            },
            "spec": spec,
        })
    }

    fn destination(&self, primary: bool, weight: u32) -> Value {
        let mut d = json!({
            "destination": {
                "upstream": { "name": self.upstream_name(primary), "namespace": self.namespace }
            }
        });
        if weight > 0 {
            d["weight"] = json!(weight);
        }
        d
    }

    fn route(&self, matchers: &(Vec<Value>, bool), primary: u32, canary: u32) -> Value {
        let mut route = json!({
            "matchers": matchers.0,
            "routeAction": { "multi": { "destinations": [
                self.destination(true, primary),
                self.destination(false, canary),
            ] } },
        });
        if matchers.1 {
            route["inheritablePathMatchers"] = json!(true);
        }
        if !self.options.is_empty() {
            route["options"] = Value::Object(self.options.clone());
        }
        route
    }

    /// The RouteTable for `routes`.
    pub fn route_table(&self, routes: &Routes) -> Value {
        let mut list = Vec::new();
        if routes.scope == RouteScope::Matched && !self.ab_matchers.0.is_empty() {
            list.push(self.route(&self.ab_matchers, routes.primary, routes.canary));
            list.push(self.route(&self.service_matchers, 100, 0));
        } else {
            list.push(self.route(&self.service_matchers, routes.primary, routes.canary));
        }
        if routes.mirror {
            if let Some(first) = list.first_mut() {
                first["options"]["shadowing"] = json!({
                    "upstream": { "name": self.canary_upstream, "namespace": self.namespace },
                    "percentage": routes.mirror_weight.unwrap_or(100),
                });
            }
        }
        let mut labels: BTreeMap<String, String> = self
            .apex
            .as_ref()
            .map(|m| m.labels.clone())
            .unwrap_or_default();
        labels.insert(MANAGED_BY.0.into(), MANAGED_BY.1.into());
        let mut metadata = json!({
            "name": self.name,
            "namespace": self.namespace,
            "labels": labels,
        });
        if let Some(annotations) = self.apex.as_ref().map(|m| &m.annotations) {
            if !annotations.is_empty() {
                metadata["annotations"] = json!(annotations);
            }
        }
        json!({
            "apiVersion": "gateway.solo.io/v1",
            "kind": "RouteTable",
            "metadata": metadata,
            "spec": { "routes": list },
        })
    }
}

impl GlooObjects {
    /// What a RouteTable that [`GlooObjects::route_table`] wrote says, whoever changed it since:
    /// the first route's `multi` destinations for the two upstreams (a destination without a
    /// weight weighs 0, as protobuf reads it; a `single` destination takes everything) and its
    /// `shadowing` of the canary upstream; a route after it (the default route A/B testing puts
    /// last) makes the first one's split apply to matching requests only.
    pub fn routes_of(&self, table: &Value) -> Result<Routes, String> {
        let list = table
            .pointer("/spec/routes")
            .and_then(Value::as_array)
            .ok_or("it has no spec.routes")?;
        let first = list.first().ok_or("its spec.routes is empty")?;
        let single = first.pointer("/routeAction/single").map(|d| {
            let mut d = json!({ "destination": d });
            d["weight"] = json!(1);
            vec![d]
        });
        let destinations = match (&single, first.pointer("/routeAction/multi/destinations")) {
            (Some(d), _) => d.as_slice(),
            (None, Some(Value::Array(d))) => d.as_slice(),
            _ => return Err("spec.routes[0] has no routeAction.multi.destinations".into()),
        };
        let (mut primary, mut canary, mut named) = (0u64, 0u64, false);
        for (i, d) in destinations.iter().enumerate() {
            let weight = match d.get("weight") {
                Some(w) => number(
                    w,
                    &format!("spec.routes[0].routeAction.multi.destinations[{i}].weight"),
                )?,
                None => 0,
            };
            let upstream = d
                .pointer("/destination/upstream/name")
                .and_then(Value::as_str)
                .unwrap_or_default();
            if upstream == self.primary_upstream {
                primary += weight;
            } else if upstream == self.canary_upstream {
                canary += weight;
            } else if weight > 0 {
                return Err(format!("spec.routes[0] also sends traffic to {upstream:?}"));
            } else {
                continue;
            }
            named = true;
        }
        if !named {
            return Err(format!(
                "spec.routes[0] names neither upstream {} nor {}",
                self.primary_upstream, self.canary_upstream
            ));
        }
        let (primary, canary) = percentages(primary, canary)?;
        let shadowing = first.pointer("/options/shadowing").filter(|s| {
            s.pointer("/upstream/name").and_then(Value::as_str)
                == Some(self.canary_upstream.as_str())
        });
        let mirror_weight = match shadowing.and_then(|s| s.get("percentage")) {
            Some(p) => Some(number(p, "spec.routes[0].options.shadowing.percentage")?),
            None => None,
        };
        Ok(canonical(&Routes {
            primary,
            canary,
            mirror: shadowing.is_some(),
            mirror_weight: mirror_weight.map(|w| u32::try_from(w.min(100)).unwrap_or(100)),
            scope: if list.len() > 1 {
                RouteScope::Matched
            } else {
                RouteScope::All
            },
        }))
    }
}

/// Matchers without a path get `prefix: /`. The flag says whether no matcher had a path of its
/// own, in which case the route inherits its parent's path (`inheritablePathMatchers`, as
/// Flagger sets it).
fn with_default_path(matchers: Vec<Value>) -> (Vec<Value>, bool) {
    let has_path = |m: &Value| {
        ["prefix", "exact", "regex"]
            .iter()
            .any(|k| m.get(k).is_some())
    };
    let inherit = !matchers.iter().any(has_path);
    let mut matchers = if matchers.is_empty() {
        vec![json!({})]
    } else {
        matchers
    };
    for m in &mut matchers {
        if !has_path(m) {
            m["prefix"] = json!("/");
        }
    }
    (matchers, inherit)
}

/// A header (or query parameter) matcher: exact is a value, the rest regular expressions
/// (Envoy matches them against the whole value).
fn value_matcher(name: &str, m: &StringMatch) -> Value {
    let (value, regex) = match m {
        StringMatch::Exact(v) => (v.clone(), false),
        StringMatch::Regex(v) => (v.clone(), true),
        StringMatch::Prefix(v) => (format!("{}.*", regex_escape(v)), true),
        StringMatch::Suffix(v) => (format!(".*{}", regex_escape(v)), true),
    };
    let mut out = json!({ "name": name, "value": value });
    if regex {
        out["regex"] = json!(true);
    }
    out
}

/// An Istio-style match as a Gloo `Matcher`; what Gloo cannot match on is an error.
fn gloo_matcher(m: &HttpMatch) -> Result<Value, String> {
    let mut unsupported = Vec::new();
    if m.port.is_some() {
        unsupported.push("port");
    }
    if !m.source_labels.is_empty() {
        unsupported.push("sourceLabels");
    }
    if m.source_namespace.is_some() {
        unsupported.push("sourceNamespace");
    }
    if !m.gateways.is_empty() {
        unsupported.push("gateways");
    }
    if !unsupported.is_empty() {
        return Err(format!(
            "Gloo cannot route on {}; match on uri, method, headers, withoutHeaders, queryParams, \
             scheme or authority",
            unsupported.join(", ")
        ));
    }
    let mut out = Map::new();
    if let Some(uri) = &m.uri {
        let (key, value) = match uri {
            StringMatch::Exact(v) => ("exact", v.clone()),
            StringMatch::Prefix(v) => ("prefix", v.clone()),
            StringMatch::Regex(v) => ("regex", v.clone()),
            StringMatch::Suffix(v) => ("regex", format!(".*{}", regex_escape(v))),
        };
        out.insert(key.into(), json!(value));
    }
    if m.ignore_uri_case {
        out.insert("caseSensitive".into(), json!(false));
    }
    let mut headers: Vec<Value> = m
        .headers
        .iter()
        .map(|(name, sm)| value_matcher(name, sm))
        .collect();
    for (name, sm) in [(":scheme", &m.scheme), (":authority", &m.authority)] {
        if let Some(sm) = sm {
            headers.push(value_matcher(name, sm));
        }
    }
    headers.extend(m.without_headers.iter().map(|(name, sm)| {
        let mut h = value_matcher(name, sm);
        h["invertMatch"] = json!(true);
        h
    }));
    if !headers.is_empty() {
        out.insert("headers".into(), json!(headers));
    }
    if !m.query_params.is_empty() {
        out.insert(
            "queryParameters".into(),
            json!(m
                .query_params
                .iter()
                .map(|(name, sm)| value_matcher(name, sm))
                .collect::<Vec<_>>()),
        );
    }
    match &m.method {
        None => {}
        Some(StringMatch::Exact(v)) => {
            out.insert("methods".into(), json!([v.to_uppercase()]));
        }
        Some(_) => {
            return Err("Gloo matches a method exactly; use method: {exact: GET}".into());
        }
    }
    Ok(Value::Object(out))
}

/// Every A/B matcher ANDed with every service matcher: the header and query parameter lists are
/// joined; the A/B matcher's path and methods, when it has them, replace the service's.
fn combine_matchers(ab: &[Value], service: &[Value]) -> Vec<Value> {
    and_matches(ab, service, |m, a| {
        if ["prefix", "exact", "regex"]
            .iter()
            .any(|k| a.contains_key(*k))
        {
            for k in ["prefix", "exact", "regex", "caseSensitive"] {
                m.remove(k);
            }
        }
        merge_match(m, a, &["headers", "queryParameters"]);
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canary(extra: &str, service: &str, analysis: &str) -> Canary {
        let text = format!(
            "apiVersion: aviary.dev/v1alpha1
kind: Canary
metadata:
  name: podinfo
  namespace: test
spec:
  provider: gloo
  targetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: podinfo
{extra}
  service:
    port: 9898
{service}
  analysis:
    interval: 1s
{analysis}
"
        );
        crate::routing::testing::the_canary(&text)
    }

    fn objects(c: &Canary) -> Result<GlooObjects, ClusterError> {
        GlooObjects::new(
            c,
            "test",
            "podinfo",
            Selectors {
                primary: BTreeMap::from([("app".into(), "podinfo-primary".into())]),
                canary: BTreeMap::from([("app".into(), "podinfo".into())]),
            },
        )
    }

    fn ok(c: &Canary) -> GlooObjects {
        match objects(c) {
            Ok(o) => o,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn a_split_keeps_both_destinations_and_omits_a_zero_weight() {
        let o = ok(&canary(
            "",
            "    timeout: 15s\n    retries: {attempts: 2, retryOn: 5xx}\n    headers:\n      request:\n        add: {x-a: b}\n        remove: [x-c]",
            "    stepWeight: 10\n    maxWeight: 50",
        ));
        let table = o.route_table(&Routes::PRIMARY);
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
        assert_eq!(
            route["options"],
            json!({
                "timeout": "15s",
                "retries": {"retryOn": "5xx", "numRetries": 2},
                "headerManipulation": {
                    "requestHeadersToAdd": [{"header": {"key": "x-a", "value": "b"}, "append": true}],
                    "requestHeadersToRemove": ["x-c"],
                },
            })
        );
        let all_canary = o.route_table(&Routes::split(100, RouteScope::All));
        let d = &all_canary["spec"]["routes"][0]["routeAction"]["multi"]["destinations"];
        assert!(d[0].get("weight").is_none());
        assert_eq!(d[1]["weight"], 100);
        let mirrored = o.route_table(&Routes {
            mirror: true,
            mirror_weight: Some(25),
            ..Routes::PRIMARY
        });
        assert_eq!(
            mirrored["spec"]["routes"][0]["options"]["shadowing"],
            json!({"upstream": {"name": "test-podinfo-canaryupstream-9898", "namespace": "test"}, "percentage": 25})
        );
    }

    #[test]
    fn upstreams_are_kube_upstreams_that_keep_the_config_upstream_settings() {
        let o = ok(&canary(
            "  upstreamRef: {name: base, namespace: gloo-system}",
            "",
            "    stepWeight: 10",
        ));
        let config = json!({"static": {"hosts": [{"addr": "x"}]}, "connectionConfig": {"maxRequestsPerConnection": 5}});
        let up = o.upstream(false, Some(&config));
        assert_eq!(up["metadata"]["name"], "test-podinfo-canaryupstream-9898");
        assert_eq!(
            up["spec"],
            json!({
                "connectionConfig": {"maxRequestsPerConnection": 5},
                "kube": {"serviceName": "podinfo-canary", "serviceNamespace": "test", "servicePort": 9898, "selector": {"app": "podinfo"}},
            })
        );
        let up = o.upstream(true, None);
        assert_eq!(up["spec"]["kube"]["serviceName"], "podinfo-primary");
        assert_eq!(up["spec"]["kube"]["selector"]["app"], "podinfo-primary");
    }

    #[test]
    fn ab_testing_matches_headers_in_front_of_the_default_route() {
        let o = ok(&canary(
            "",
            "    match:\n      - uri: {prefix: /api}",
            "    iterations: 2
    match:
      - headers:
          x-canary: {exact: insider}
          x-user: {prefix: beta.}
        method: {exact: get}
      - withoutHeaders:
          x-legacy: {regex: \".*\"}",
        ));
        let table = o.route_table(&Routes::split(100, RouteScope::Matched));
        let routes = &table["spec"]["routes"];
        assert_eq!(routes.as_array().map(Vec::len), Some(2));
        assert_eq!(
            routes[0]["matchers"],
            json!([
                {"prefix": "/api", "methods": ["GET"], "headers": [
                    {"name": "x-canary", "value": "insider"},
                    {"name": "x-user", "value": "beta\\..*", "regex": true},
                ]},
                {"prefix": "/api", "headers": [{"name": "x-legacy", "value": ".*", "regex": true, "invertMatch": true}]},
            ])
        );
        assert!(routes[0].get("inheritablePathMatchers").is_none());
        let d = &routes[0]["routeAction"]["multi"]["destinations"];
        assert!(d[0].get("weight").is_none());
        assert_eq!(d[1]["weight"], 100);
        assert_eq!(routes[1]["matchers"], json!([{"prefix": "/api"}]));
        assert_eq!(
            routes[1]["routeAction"]["multi"]["destinations"][0]["weight"],
            100
        );
        let back = o.route_table(&Routes::PRIMARY);
        assert_eq!(back["spec"]["routes"].as_array().map(Vec::len), Some(1));
    }

    #[test]
    fn matches_gloo_cannot_express_are_refused() {
        let c = canary(
            "",
            "",
            "    iterations: 2\n    match:\n      - sourceLabels: {app: web}",
        );
        match objects(&c) {
            Err(e) => assert!(
                e.to_string()
                    .contains("analysis.match: Gloo cannot route on sourceLabels"),
                "{e}"
            ),
            Ok(_) => panic!("sourceLabels was accepted"),
        }
    }

    /// What set_routes applies, read back the way `observed` reads it (a DynamicObject).
    fn read_back(o: &GlooObjects, routes: &Routes) -> Result<Routes, String> {
        let table = o.route_table(routes);
        let dynamic: DynamicObject = serde_json::from_value(table).map_err(|e| e.to_string())?;
        o.routes_of(&serde_json::to_value(&dynamic).map_err(|e| e.to_string())?)
    }

    fn full() -> GlooObjects {
        ok(&canary(
            "",
            "    timeout: 15s\n    match:\n      - uri: {prefix: /api}",
            "    iterations: 2\n    match:\n      - headers:\n          x-canary: {exact: insider}",
        ))
    }

    #[test]
    fn every_route_table_set_routes_writes_reads_back_as_it_was_asked() {
        let o = full();
        for routes in [
            Routes::PRIMARY,
            Routes::split(30, RouteScope::All),
            Routes::split(100, RouteScope::All),
            Routes::split(100, RouteScope::Matched),
            Routes {
                mirror: true,
                mirror_weight: Some(25),
                ..Routes::PRIMARY
            },
            Routes {
                mirror: true,
                mirror_weight: None,
                ..Routes::PRIMARY
            },
        ] {
            assert_eq!(read_back(&o, &routes), Ok(canonical(&routes)), "{routes:?}");
        }
    }

    #[test]
    fn a_route_table_changed_by_hand_is_read_as_gloo_would_route_it() {
        let o = full();
        let up = |name: &str| json!({"upstream": {"name": name, "namespace": "test"}});
        let table = |action: Value| json!({"spec": {"routes": [{"routeAction": action}]}});
        let r = o.routes_of(&table(
            json!({"single": up("test-podinfo-canaryupstream-9898")}),
        ));
        assert_eq!(r, Ok(Routes::split(100, RouteScope::All)));
        let r = o.routes_of(&table(json!({"multi": {"destinations": [
            {"destination": up("test-podinfo-primaryupstream-9898"), "weight": 9},
            {"destination": up("test-podinfo-canaryupstream-9898"), "weight": 1},
        ]}})));
        assert_eq!(r, Ok(Routes::split(10, RouteScope::All)));
        let r = o.routes_of(&table(json!({"multi": {"destinations": [
            {"destination": up("test-podinfo-primaryupstream-9898")},
            {"destination": up("test-podinfo-canaryupstream-9898")},
        ]}})));
        assert!(r.is_err_and(|e| e.contains("both the primary's and the canary's weight are 0")));
        let r = o.routes_of(&table(json!({"multi": {"destinations": [
            {"destination": up("test-podinfo-primaryupstream-9898"), "weight": 50},
            {"destination": up("elsewhere"), "weight": 50},
        ]}})));
        assert!(r.is_err_and(|e| e.contains("also sends traffic to \"elsewhere\"")));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]
        #[test]
        fn any_routes_read_back_as_written(routes in crate::routing::testing::any_routes(true)) {
            let o = full();
            proptest::prop_assert_eq!(read_back(&o, &routes), Ok(canonical(&routes)));
        }
    }
}
