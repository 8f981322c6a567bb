//! Gateway API: one `HTTPRoute` (v1) named like the apex Service, attached to `service.gatewayRefs`,
//! whose rule splits traffic between `<svc>-primary` and `<svc>-canary` by weight. The same router
//! serves the providers that implement HTTPRoute where Flagger writes their own objects: Contour
//! and Traefik (Gateway parents), Linkerd and Kuma, whose route attaches to the apex Service
//! (`{group: "", kind: Service, name, port}`, GAMMA mesh routing) when `gatewayRefs` is empty. A/B testing adds
//! a rule in front carrying `analysis.match` (headers, query parameters, path, method); mirroring
//! adds a `RequestMirror` filter. After each change the router waits until every parent (Gateway or mesh Service)
//! has accepted the route at its current generation.

use std::time::Duration;

use futures::future::BoxFuture;
use gateway_api::httproutes::HttpRoute;
use kube::api::{Api, ApiResource, DynamicObject, Patch};
use serde_json::{json, Value};

use crate::cluster::{apply_params, retry, ClusterError, MANAGED_BY};
use crate::workload::Workloads;
use aviary_core::engine::{RouteScope, Routes};
use aviary_core::spec::{Canary, HeaderOperations, HttpMatch, Provider, StringMatch};

use super::{
    and_matches, canonical, merge_match, number, percentages, regex_escape, Observed, TrafficRouter,
};

/// How long a parent (a Gateway's controller, or the mesh for a Service) may take to accept a
/// change.
const ACCEPT_TIMEOUT: Duration = Duration::from_secs(60);

/// The HTTPRoute of one Canary, as JSON; no cluster access.
pub struct GatewayObjects {
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

impl GatewayObjects {
    /// The objects of `canary` whose apex Service is `service` in `namespace`, for `provider`.
    pub fn new(
        canary: &Canary,
        provider: &Provider,
        namespace: &str,
        service: &str,
    ) -> Result<GatewayObjects, ClusterError> {
        let spec = &canary.service;
        let mut parents: Vec<Value> = spec
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
        if parents.is_empty() && provider.mesh() {
            // GAMMA: the mesh routes requests for the apex Service by the route attached to it.
            parents.push(
                json!({ "group": "", "kind": "Service", "name": service, "port": spec.port }),
            );
        }
        let analysis = canary.analysis.clone().unwrap_or_default();
        let mut filters = Vec::new();
        if let Some(headers) = &spec.headers {
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
        Ok(GatewayObjects {
            name: service.to_string(),
            namespace: namespace.to_string(),
            primary: format!("{service}-primary"),
            canary: format!("{service}-canary"),
            port: spec.port,
            parents,
            hosts: spec.hosts.clone(),
            service_matches: convert(&spec.r#match)?,
            ab_matches: convert(&analysis.r#match)?,
            filters,
            timeout: spec.timeout.clone(),
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

    /// What an HTTPRoute that [`GatewayObjects::route`] wrote says, whoever changed it since: the
    /// first rule's weights for `<svc>-primary` and `<svc>-canary` (Gateway API weighs backends
    /// relative to their sum; a backend without a weight weighs 1) and its `RequestMirror` to
    /// the canary; a rule after it (the default route A/B testing puts last) makes the first
    /// one's split apply to matching requests only.
    pub fn routes_of(&self, route: &Value) -> Result<Routes, String> {
        let rules = route
            .pointer("/spec/rules")
            .and_then(Value::as_array)
            .ok_or("it has no spec.rules")?;
        let first = rules.first().ok_or("its spec.rules is empty")?;
        let backends = first
            .get("backendRefs")
            .and_then(Value::as_array)
            .ok_or("spec.rules[0] has no backendRefs")?;
        let (mut primary, mut canary, mut named) = (0u64, 0u64, false);
        for (i, b) in backends.iter().enumerate() {
            let weight = match b.get("weight") {
                None => 1,
                Some(w) => number(w, &format!("spec.rules[0].backendRefs[{i}].weight"))?,
            };
            match b.get("name").and_then(Value::as_str) {
                Some(n) if n == self.primary => primary += weight,
                Some(n) if n == self.canary => canary += weight,
                other if weight > 0 => {
                    return Err(format!(
                        "spec.rules[0] also sends traffic to {}",
                        other.unwrap_or("a backend without a name")
                    ))
                }
                _ => continue,
            }
            named = true;
        }
        if !named {
            return Err(format!(
                "spec.rules[0].backendRefs names neither {} nor {}",
                self.primary, self.canary
            ));
        }
        let (primary, canary) = percentages(primary, canary)?;
        let mirror = first
            .get("filters")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find(|f| {
                f.get("type").and_then(Value::as_str) == Some("RequestMirror")
                    && f.pointer("/requestMirror/backendRef/name")
                        .and_then(Value::as_str)
                        == Some(self.canary.as_str())
            });
        let mirror_weight = match mirror {
            None => None,
            Some(m) => match (
                m.pointer("/requestMirror/percent"),
                m.pointer("/requestMirror/fraction"),
            ) {
                (Some(p), _) => Some(number(p, "requestMirror.percent")?),
                (None, Some(f)) => {
                    let n = number(&f["numerator"], "requestMirror.fraction.numerator")?;
                    let d = match f.get("denominator") {
                        None => 100,
                        Some(d) => number(d, "requestMirror.fraction.denominator")?.max(1),
                    };
                    Some((n * 100 + d / 2) / d)
                }
                (None, None) => None,
            },
        };
        Ok(canonical(&Routes {
            primary,
            canary,
            mirror: mirror.is_some(),
            mirror_weight: mirror_weight.map(|w| u32::try_from(w.min(100)).unwrap_or(100)),
            scope: if rules.len() > 1 {
                RouteScope::Matched
            } else {
                RouteScope::All
            },
        }))
    }
}

/// The router: the HTTPRoute applied, then read back.
pub struct GatewayApi {
    name: &'static str,
    api: Api<HttpRoute>,
    objects: GatewayObjects,
    /// `service.previewHosts`, when the route can carry them (see [`super::preview`]).
    preview: super::preview::PreviewState,
}

impl GatewayApi {
    pub fn new(
        canary: &Canary,
        provider: &Provider,
        workloads: &Workloads,
    ) -> Result<GatewayApi, ClusterError> {
        Ok(GatewayApi {
            name: match provider {
                Provider::Linkerd => "linkerd",
                Provider::Kuma => "kuma",
                Provider::Contour => "contour",
                Provider::Traefik => "traefik",
                _ => "gatewayapi",
            },
            api: Api::namespaced(workloads.client().clone(), &workloads.namespace),
            preview: super::preview::PreviewState::new(canary, provider),
            objects: GatewayObjects::new(
                canary,
                provider,
                &workloads.namespace,
                &workloads.service,
            )?,
        })
    }

    /// The HTTPRoute for `routes`.
    pub fn route(&self, routes: &Routes) -> Value {
        self.objects.route(routes)
    }

    fn qualified(&self) -> String {
        format!("{}.{}", self.objects.name, self.objects.namespace)
    }

    /// Waits until every parent accepted the route `name` at its current generation.
    async fn wait_accepted(&self, name: &str) -> Result<(), ClusterError> {
        let o = &self.objects;
        if o.parents.is_empty() {
            return Ok(());
        }
        let qualified = format!("{name}.{}", o.namespace);
        let deadline = tokio::time::Instant::now() + ACCEPT_TIMEOUT;
        let what = format!("read HTTPRoute {qualified}");
        loop {
            let route = retry(&what, || self.api.get_opt(name)).await?;
            let (accepted, detail) = match &route {
                Some(r) => accepted(r, o.parents.len()),
                None => (false, "the route does not exist".to_string()),
            };
            if accepted {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(ClusterError::Invalid(format!(
                    "HTTPRoute {qualified} was not accepted by its parents within {}s: {detail}",
                    ACCEPT_TIMEOUT.as_secs()
                )));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Applies `route` (an HTTPRoute as JSON) and waits until its parents accept it.
    async fn apply(&self, route: Value) -> Result<(), ClusterError> {
        let name = route
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let typed: HttpRoute = serde_json::from_value(route)
            .map_err(|e| ClusterError::Invalid(format!("HTTPRoute {name}: {e}")))?;
        let what = format!("apply HTTPRoute {name}.{}", self.objects.namespace);
        let (params, patch) = (apply_params(), Patch::Apply(&typed));
        retry(&what, || self.api.patch(&name, &params, &patch)).await?;
        self.wait_accepted(&name).await
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
        self.name
    }

    fn set_routes<'a>(&'a self, routes: &'a Routes) -> BoxFuture<'a, Result<(), ClusterError>> {
        Box::pin(async move {
            self.apply(self.route(routes)).await?;
            match &self.preview.hosts {
                Some(hosts) => self.apply(self.objects.preview_route(hosts)).await?,
                None => {
                    let name = super::preview::object_name(&self.objects.name);
                    self.preview.sweep(&self.api, "HTTPRoute", &name).await?
                }
            }
            Ok(())
        })
    }

    fn observed(&self) -> BoxFuture<'_, Result<Observed, ClusterError>> {
        Box::pin(async move {
            let objects = format!("HTTPRoute {}", self.qualified());
            // Read as JSON: the parse is the same as on the objects `route` builds.
            let api: Api<DynamicObject> = Api::namespaced_with(
                self.api.clone().into_client(),
                &self.objects.namespace,
                &ApiResource::erase::<HttpRoute>(&()),
            );
            let what = format!("read {objects}");
            let Some(found) = retry(&what, || api.get_opt(&self.objects.name)).await? else {
                return Ok(Observed {
                    objects,
                    routes: None,
                });
            };
            let value = serde_json::to_value(&found)
                .map_err(|e| ClusterError::Invalid(format!("{objects}: {e}")))?;
            let routes = self
                .objects
                .routes_of(&value)
                .map_err(|e| ClusterError::Invalid(format!("{objects}: {e}")))?;
            Ok(Observed {
                objects,
                routes: Some(routes),
            })
        })
    }
}

impl GatewayObjects {
    /// The preview HTTPRoute (`<svc>-preview`, see [`super::preview`]): on the same parents,
    /// for `hosts`, with the Service's own matches, header filters and timeout, and the canary
    /// Service as its one backend.
    pub fn preview_route(&self, hosts: &[String]) -> Value {
        let name = super::preview::object_name(&self.name);
        let backends = json!([{ "name": self.canary, "port": self.port, "weight": 100 }]);
        json!({
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "HTTPRoute",
            "metadata": super::preview::metadata(&name, &self.namespace),
            "spec": {
                "parentRefs": self.parents,
                "hostnames": hosts,
                "rules": [self.rule(&self.service_matches, backends, None)],
            },
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::testing::any_routes;
    use aviary_core::spec::decode::decode_documents;
    use proptest::prelude::{proptest, ProptestConfig};

    fn canary(service: &str, analysis: &str) -> Canary {
        let text = format!(
            "apiVersion: aviary.dev/v1alpha1
kind: Canary
metadata:
  name: podinfo
  namespace: test
spec:
  provider: gatewayapi
  targetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: podinfo
  service:
    port: 9898
    gatewayRefs:
      - name: public
        namespace: gateway-system
{service}
  analysis:
    interval: 1s
{analysis}
"
        );
        match decode_documents("canary.yaml", &text) {
            Ok(mut docs) if !docs.canaries.is_empty() => docs.canaries.remove(0),
            Ok(_) => panic!("no canary"),
            Err(e) => panic!("{e}"),
        }
    }

    fn objects(c: &Canary) -> GatewayObjects {
        match GatewayObjects::new(c, &Provider::GatewayApi, "test", "podinfo") {
            Ok(o) => o,
            Err(e) => panic!("{e}"),
        }
    }

    /// A Canary with everything that puts more into the route: service matches, headers, a
    /// timeout, hosts, and an A/B match.
    fn full() -> GatewayObjects {
        objects(&canary(
            "    hosts: [app.example.com]
    timeout: 10s
    headers:
      request:
        set: {x-a: b}
    match:
      - uri: {prefix: /api}",
            "    iterations: 2
    match:
      - headers:
          x-canary: {exact: insider}",
        ))
    }

    /// The route as `observed` gets it: through the API's JSON, as a DynamicObject.
    fn read_back(o: &GatewayObjects, routes: &Routes) -> Result<Routes, String> {
        let written = o.route(routes);
        // What set_routes sends is the typed HTTPRoute; what observed reads is a DynamicObject.
        let typed: HttpRoute = serde_json::from_value(written).map_err(|e| e.to_string())?;
        let dynamic: DynamicObject =
            serde_json::from_value(serde_json::to_value(&typed).map_err(|e| e.to_string())?)
                .map_err(|e| e.to_string())?;
        o.routes_of(&serde_json::to_value(&dynamic).map_err(|e| e.to_string())?)
    }

    #[test]
    fn every_route_set_routes_writes_reads_back_as_it_was_asked() {
        let o = full();
        for routes in [
            Routes::PRIMARY,
            Routes::split(20, RouteScope::All),
            Routes::split(100, RouteScope::All),
            Routes::split(100, RouteScope::Matched),
            Routes {
                mirror: true,
                mirror_weight: Some(20),
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
    fn a_route_changed_by_hand_is_read_as_the_gateway_would_route_it() {
        let o = full();
        let with_backends =
            |backends: Value| json!({"spec": {"rules": [{"backendRefs": backends}]}});
        // Relative weights, and a missing weight counts 1, as in the Gateway API.
        let r = o.routes_of(&with_backends(json!([
            {"name": "podinfo-primary", "weight": 3}, {"name": "podinfo-canary", "weight": 1}])));
        assert_eq!(r, Ok(Routes::split(25, RouteScope::All)));
        let r = o.routes_of(&with_backends(json!([
            {"name": "podinfo-primary"}, {"name": "podinfo-canary"}])));
        assert_eq!(r, Ok(Routes::split(50, RouteScope::All)));
        // Only the canary: everything on it.
        let r = o.routes_of(&with_backends(
            json!([{"name": "podinfo-canary", "weight": 7}]),
        ));
        assert_eq!(r, Ok(Routes::split(100, RouteScope::All)));
        for (route, says) in [
            (
                with_backends(json!([{"name": "podinfo-primary", "weight": 0},
                    {"name": "podinfo-canary", "weight": 0}])),
                "both the primary's and the canary's weight are 0",
            ),
            (
                with_backends(json!([{"name": "podinfo-primary", "weight": 50},
                    {"name": "other", "weight": 50}])),
                "also sends traffic to other",
            ),
            (
                with_backends(json!([{"name": "other", "weight": 0}])),
                "names neither podinfo-primary nor podinfo-canary",
            ),
            (
                with_backends(json!([{"name": "podinfo-primary", "weight": -1}])),
                "not a non-negative number",
            ),
            (json!({"spec": {"rules": []}}), "spec.rules is empty"),
            (json!({"spec": {}}), "no spec.rules"),
        ] {
            match o.routes_of(&route) {
                Err(e) => assert!(e.contains(says), "{route}: {e}"),
                Ok(r) => panic!("{route}: read as {r:?}"),
            }
        }
    }

    /// A corpus-like Canary for `provider`, with `service` lines under spec.service.
    fn provider_canary(provider: &str, service: &str) -> Canary {
        let text = format!(
            "apiVersion: flagger.app/v1beta1
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
  service:
    port: 80
    targetPort: 9898
{service}
  analysis:
    interval: 15s
    maxWeight: 50
    stepWeight: 10
"
        );
        match decode_documents("canary.yaml", &text) {
            Ok(mut docs) if !docs.canaries.is_empty() => docs.canaries.remove(0),
            Ok(_) => panic!("no canary"),
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn mesh_providers_attach_the_route_to_the_apex_service_without_gateway_refs() {
        for provider in [Provider::Linkerd, Provider::Kuma] {
            let c = provider_canary(provider.name(), "");
            let o = match GatewayObjects::new(&c, &provider, "test", "podinfo") {
                Ok(o) => o,
                Err(e) => panic!("{e}"),
            };
            let route = o.route(&Routes::split(10, RouteScope::All));
            assert_eq!(
                route["spec"]["parentRefs"],
                json!([{"group": "", "kind": "Service", "name": "podinfo", "port": 80}]),
                "{provider:?}"
            );
            assert_eq!(
                route["spec"]["rules"][0]["backendRefs"],
                json!([
                    {"name": "podinfo-primary", "port": 80, "weight": 90},
                    {"name": "podinfo-canary", "port": 80, "weight": 10},
                ])
            );
            // The typed HTTPRoute keeps the core group (""), which makes the parent a Service.
            let typed: Result<HttpRoute, _> = serde_json::from_value(route);
            let back = typed.map(|t| {
                serde_json::to_value(t).map(|v| v["spec"]["parentRefs"][0]["group"].clone())
            });
            assert!(
                matches!(back, Ok(Ok(Value::String(ref g))) if g.is_empty()),
                "{back:?}"
            );
        }
    }

    #[test]
    fn gateway_refs_are_the_parents_whatever_the_provider() {
        let refs = "    gatewayRefs:
      - name: contour
        namespace: projectcontour";
        for provider in [
            Provider::Contour,
            Provider::Traefik,
            Provider::Kuma,
            Provider::Linkerd,
        ] {
            let c = provider_canary(provider.name(), refs);
            let o = match GatewayObjects::new(&c, &provider, "test", "podinfo") {
                Ok(o) => o,
                Err(e) => panic!("{e}"),
            };
            assert_eq!(
                o.route(&Routes::PRIMARY)["spec"]["parentRefs"],
                json!([{"name": "contour", "namespace": "projectcontour"}]),
                "{provider:?}"
            );
        }
        // A gateway provider without gatewayRefs has no parent: the rollout refuses it first
        // (routing::preflight).
        let c = provider_canary("contour", "");
        let o = GatewayObjects::new(&c, &Provider::Contour, "test", "podinfo");
        assert!(o.is_ok_and(|o| o.parents.is_empty()));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        #[test]
        fn any_routes_read_back_as_written(routes in any_routes(true)) {
            let o = full();
            proptest::prop_assert_eq!(read_back(&o, &routes), Ok(canonical(&routes)));
        }
    }
}
