//! Gateway API: one `HTTPRoute` (v1) named like the apex Service, attached to `service.gatewayRefs`,
//! whose rule splits traffic between `<svc>-primary` and `<svc>-canary` by weight. A/B testing adds
//! a rule in front carrying `analysis.match` (headers, query parameters, path, method); mirroring
//! adds a `RequestMirror` filter. After each change the router waits until every parent Gateway
//! has accepted the route at its current generation.

use std::time::Duration;

use futures::future::BoxFuture;
use gateway_api::httproutes::HttpRoute;
use kube::api::{Api, Patch};
use serde_json::{json, Value};

use crate::cluster::{apply_params, retry, ClusterError, MANAGED_BY};
use crate::engine::{RouteScope, Routes};
use crate::spec::{Canary, HeaderOperations, HttpMatch, StringMatch};
use crate::workload::Workloads;

use super::{and_matches, merge_match, regex_escape, TrafficRouter};

/// How long a parent Gateway may take to accept a change.
const ACCEPT_TIMEOUT: Duration = Duration::from_secs(60);

pub struct GatewayApi {
    api: Api<HttpRoute>,
    name: String,
    namespace: String,
    primary: String,
    canary: String,
    port: u16,
    parents: Vec<Value>,
    hosts: Vec<String>,
    service_matches: Vec<Value>,
    ab_matches: Vec<Value>,
    filters: Vec<Value>,
    timeout: Option<String>,
}

impl GatewayApi {
    pub fn new(canary: &Canary, workloads: &Workloads) -> Result<GatewayApi, ClusterError> {
        let service = &canary.service;
        let parents = service
            .gateway_refs
            .iter()
            .map(|g| {
                let mut p = json!({ "name": g.name });
                for (key, value) in [
                    ("group", &g.group),
                    ("kind", &g.kind),
                    ("namespace", &g.namespace),
                    ("sectionName", &g.section_name),
                ] {
                    if let Some(v) = value {
                        p[key] = json!(v);
                    }
                }
                if let Some(port) = g.port {
                    p["port"] = json!(port);
                }
                p
            })
            .collect();
        let analysis = canary.analysis.clone().unwrap_or_default();
        let mut filters = Vec::new();
        if let Some(headers) = &service.headers {
            if let Some(ops) = &headers.request {
                filters.push(json!({"type": "RequestHeaderModifier", "requestHeaderModifier": header_ops(ops)}));
            }
            if let Some(ops) = &headers.response {
                filters.push(json!({"type": "ResponseHeaderModifier", "responseHeaderModifier": header_ops(ops)}));
            }
        }
        let convert = |matches: &[HttpMatch]| -> Result<Vec<Value>, ClusterError> {
            matches.iter().map(http_route_match).collect()
        };
        Ok(GatewayApi {
            api: Api::namespaced(workloads.client().clone(), &workloads.namespace),
            name: workloads.service.clone(),
            namespace: workloads.namespace.clone(),
            primary: workloads.primary_service(),
            canary: workloads.canary_service(),
            port: service.port,
            parents,
            hosts: service.hosts.clone(),
            service_matches: convert(&service.r#match)?,
            ab_matches: convert(&analysis.r#match)?,
            filters,
            timeout: service.timeout.clone(),
        })
    }

    fn backends(&self, primary: u32, canary: u32) -> Value {
        json!([
            { "name": self.primary, "port": self.port, "weight": primary },
            { "name": self.canary, "port": self.port, "weight": canary },
        ])
    }

    fn rule(&self, matches: &[Value], backends: Value, mirror: Option<Value>) -> Value {
        let mut rule = json!({ "backendRefs": backends });
        if !matches.is_empty() {
            rule["matches"] = json!(matches);
        }
        let mut filters = self.filters.clone();
        filters.extend(mirror);
        if !filters.is_empty() {
            rule["filters"] = json!(filters);
        }
        if let Some(t) = &self.timeout {
            rule["timeouts"] = json!({ "request": t });
        }
        rule
    }

    /// The HTTPRoute for `routes`.
    pub fn route(&self, routes: &Routes) -> Value {
        let mirror = routes.mirror.then(|| {
            let mut m = json!({
                "type": "RequestMirror",
                "requestMirror": { "backendRef": { "name": self.canary, "port": self.port } }
            });
            if let Some(percent) = routes.mirror_weight {
                m["requestMirror"]["percent"] = json!(percent);
            }
            m
        });
        let mut rules = Vec::new();
        if routes.scope == RouteScope::Matched {
            // Requests matching the A/B conditions (within the service's own matches) get the
            // split; every other request goes to the primary.
            // The A/B rule stays within the service's own routes: each A/B match ANDed with each.
            let matches = and_matches(&self.ab_matches, &self.service_matches, |m, a| {
                merge_match(m, a, &["headers", "queryParams"])
            });
            rules.push(self.rule(
                &matches,
                self.backends(routes.primary, routes.canary),
                mirror.clone(),
            ));
            rules.push(self.rule(&self.service_matches, self.backends(100, 0), None));
        } else {
            rules.push(self.rule(
                &self.service_matches,
                self.backends(routes.primary, routes.canary),
                mirror,
            ));
        }
        let mut route = json!({
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "HTTPRoute",
            "metadata": {
                "name": self.name,
                "namespace": self.namespace,
                "labels": { MANAGED_BY.0: MANAGED_BY.1 },
            },
            "spec": { "parentRefs": self.parents, "rules": rules },
        });
        if !self.hosts.is_empty() {
            route["spec"]["hostnames"] = json!(self.hosts);
        }
        route
    }

    /// Waits until every parent accepted the route at its current generation.
    async fn wait_accepted(&self) -> Result<(), ClusterError> {
        if self.parents.is_empty() {
            return Ok(());
        }
        let deadline = tokio::time::Instant::now() + ACCEPT_TIMEOUT;
        let what = format!("read HTTPRoute {}.{}", self.name, self.namespace);
        loop {
            let route = retry(&what, || self.api.get_opt(&self.name)).await?;
            let (accepted, detail) = match &route {
                Some(r) => accepted(r, self.parents.len()),
                None => (false, "the route does not exist".to_string()),
            };
            if accepted {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(ClusterError::Invalid(format!(
                    "HTTPRoute {}.{} was not accepted by its parent Gateways within {}s: {detail}",
                    self.name,
                    self.namespace,
                    ACCEPT_TIMEOUT.as_secs()
                )));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Whether every one of `parents` parents reports Accepted=True for the route's generation.
fn accepted(route: &HttpRoute, parents: usize) -> (bool, String) {
    let generation = route.metadata.generation.unwrap_or(0);
    let statuses = route
        .status
        .as_ref()
        .map(|s| s.parents.as_slice())
        .unwrap_or_default();
    let ok = statuses
        .iter()
        .filter(|p| {
            p.conditions.iter().any(|c| {
                c.type_ == "Accepted"
                    && c.status == "True"
                    && c.observed_generation.unwrap_or(0) >= generation
            })
        })
        .count();
    let detail = statuses
        .iter()
        .flat_map(|p| p.conditions.iter())
        .map(|c| format!("{}={} ({})", c.type_, c.status, c.reason))
        .collect::<Vec<_>>()
        .join(", ");
    (
        ok >= parents,
        if detail.is_empty() {
            "no status from any parent yet".into()
        } else {
            detail
        },
    )
}

impl TrafficRouter for GatewayApi {
    fn name(&self) -> &'static str {
        "gatewayapi"
    }

    fn set_routes<'a>(&'a self, routes: &'a Routes) -> BoxFuture<'a, Result<(), ClusterError>> {
        Box::pin(async move {
            let route: HttpRoute = serde_json::from_value(self.route(routes))
                .map_err(|e| ClusterError::Invalid(format!("HTTPRoute {}: {e}", self.name)))?;
            let what = format!("apply HTTPRoute {}.{}", self.name, self.namespace);
            let (params, patch) = (apply_params(), Patch::Apply(&route));
            retry(&what, || self.api.patch(&self.name, &params, &patch)).await?;
            self.wait_accepted().await
        })
    }
}

fn header_ops(ops: &HeaderOperations) -> Value {
    let pairs = |m: &std::collections::BTreeMap<String, String>| -> Vec<Value> {
        m.iter()
            .map(|(k, v)| json!({ "name": k, "value": v }))
            .collect()
    };
    let mut out = json!({});
    if !ops.set.is_empty() {
        out["set"] = json!(pairs(&ops.set));
    }
    if !ops.add.is_empty() {
        out["add"] = json!(pairs(&ops.add));
    }
    if !ops.remove.is_empty() {
        out["remove"] = json!(ops.remove);
    }
    out
}

/// A Gateway API match value: exact and regex map directly; prefix and suffix become anchored
/// regular expressions.
fn string_match(m: &StringMatch) -> (&'static str, String) {
    match m {
        StringMatch::Exact(v) => ("Exact", v.clone()),
        StringMatch::Regex(v) => ("RegularExpression", v.clone()),
        StringMatch::Prefix(v) => ("RegularExpression", format!("^{}.*", regex_escape(v))),
        StringMatch::Suffix(v) => ("RegularExpression", format!(".*{}$", regex_escape(v))),
    }
}

/// An Istio-style match as an `HTTPRouteMatch`.
fn http_route_match(m: &HttpMatch) -> Result<Value, ClusterError> {
    let mut out = json!({});
    if !m.headers.is_empty() {
        out["headers"] = json!(m
            .headers
            .iter()
            .map(|(name, sm)| {
                let (t, v) = string_match(sm);
                json!({ "name": name, "type": t, "value": v })
            })
            .collect::<Vec<_>>());
    }
    if !m.query_params.is_empty() {
        out["queryParams"] = json!(m
            .query_params
            .iter()
            .map(|(name, sm)| {
                let (t, v) = string_match(sm);
                json!({ "name": name, "type": t, "value": v })
            })
            .collect::<Vec<_>>());
    }
    if let Some(uri) = &m.uri {
        out["path"] = match uri {
            StringMatch::Exact(v) => json!({ "type": "Exact", "value": v }),
            StringMatch::Prefix(v) => json!({ "type": "PathPrefix", "value": v }),
            other => {
                let (_, v) = string_match(other);
                json!({ "type": "RegularExpression", "value": v })
            }
        };
    }
    if let Some(method) = &m.method {
        match method {
            StringMatch::Exact(v) => out["method"] = json!(v.to_uppercase()),
            _ => {
                return Err(ClusterError::Invalid(
                    "Gateway API matches a method exactly; use method: {exact: GET}".into(),
                ))
            }
        }
    }
    Ok(out)
}
