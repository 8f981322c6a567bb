//! Gateway API: one `HTTPRoute` (v1) named like the apex Service, attached to `service.gatewayRefs`,
//! whose rule splits traffic between `<svc>-primary` and `<svc>-canary` by weight. The same router
//! serves the providers that implement HTTPRoute where Flagger writes their own objects: Contour
//! and Traefik (Gateway parents), Linkerd and Kuma, whose route attaches to the apex Service
//! (`{group: "", kind: Service, name, port}`, GAMMA mesh routing) when `gatewayRefs` is empty. A/B testing adds
//! a rule in front carrying `analysis.match` (headers, query parameters, path, method); mirroring
//! adds a `RequestMirror` filter (`service.mirror[]` one each, next to `service.rewrite`'s
//! `URLRewrite`). Session affinity puts Flagger's sticky cookie rules in front of the weighted
//! one ([`super::sticky`]); `observed` reads the weights past them. After each change the router waits until every parent (Gateway or mesh Service)
//! has accepted the route at its current generation.

use std::time::Duration;

use futures::future::BoxFuture;
use gateway_api::httproutes::HttpRoute;
use kube::api::{Api, ApiResource, DynamicObject, Patch};
use serde_json::{json, Value};

use crate::cluster::{apply_params, retry, ClusterError, MANAGED_BY};
use crate::workload::Workloads;
use aviary_core::engine::{RouteScope, Routes};
use aviary_core::spec::{
    Canary, HeaderOperations, HttpMatch, HttpRewrite, MirrorBackend, Provider, StringMatch,
};

use super::sticky::{cookie_regex, Affinity, Cookies, COOKIE, SET_COOKIE};
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
    backend_timeout: Option<String>,
    /// `analysis.sessionAffinity`: the sticky cookie rules in front of the weighted one.
    affinity: Option<Affinity>,
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
                reference(
                    &g.name,
                    &[
                        ("group", &g.group),
                        ("kind", &g.kind),
                        ("namespace", &g.namespace),
                        ("sectionName", &g.section_name),
                    ],
                    g.port,
                )
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
        if let Some(rw) = &spec.rewrite {
            filters.push(url_rewrite(rw));
        }
        for m in &spec.mirror {
            filters.push(request_mirror(m));
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
            backend_timeout: spec.backend_timeout.clone(),
            affinity: analysis
                .session_affinity
                .as_ref()
                .map(|sa| Affinity::new(sa, analysis.interval)),
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
        let mut timeouts = serde_json::Map::new();
        if let Some(t) = &self.timeout {
            timeouts.insert("request".into(), json!(t));
        }
        if let Some(t) = &self.backend_timeout {
            timeouts.insert("backendRequest".into(), json!(t));
        }
        if !timeouts.is_empty() {
            rule["timeouts"] = Value::Object(timeouts);
        }
        rule
    }

    /// A `ResponseHeaderModifier` filter adding `Set-Cookie: value`.
    fn set_cookie(value: String) -> Value {
        json!({
            "type": "ResponseHeaderModifier",
            "responseHeaderModifier": { "add": [{ "name": SET_COOKIE, "value": value }] },
        })
    }

    /// The matches of a sticky rule: the `Cookie` header carrying `cookie`, within the service's
    /// own matches.
    fn cookie_matches(&self, cookie: &str) -> Vec<Value> {
        let m = json!({ "headers": [{
            "type": "RegularExpression", "name": COOKIE, "value": cookie_regex(cookie),
        }] });
        and_matches(&[m], &self.service_matches, |m, a| {
            merge_match(m, a, &["headers", "queryParams"])
        })
    }

    /// Flagger's session affinity rules for `routes`: the sticky rule(s) in front of the
    /// weighted one, whose backends set the cookies ([`sticky`](super::sticky)).
    fn sticky_rules(
        &self,
        affinity: &Affinity,
        routes: &Routes,
        cookies: &Cookies,
        mirror: Option<Value>,
    ) -> Vec<Value> {
        let mut weighted = self.rule(
            &self.service_matches,
            self.backends(routes.primary, routes.canary),
            mirror.clone(),
        );
        let mut rules = Vec::new();
        if let (true, Some(canary_cookie)) = (routes.canary > 0, &cookies.canary) {
            let max_age = i64::from(affinity.max_age);
            weighted["backendRefs"][1]["filters"] = json!([Self::set_cookie(
                affinity.set_cookie(canary_cookie, max_age)
            )]);
            rules.push(self.rule(
                &self.cookie_matches(canary_cookie),
                self.backends(0, 100),
                mirror.clone(),
            ));
            if let Some(primary_cookie) = &cookies.primary {
                let max_age = i64::try_from(affinity.interval).unwrap_or(i64::MAX);
                weighted["backendRefs"][0]["filters"] = json!([Self::set_cookie(
                    affinity.set_cookie(primary_cookie, max_age)
                )]);
                rules.push(self.rule(
                    &self.cookie_matches(primary_cookie),
                    self.backends(100, 0),
                    mirror,
                ));
            }
        } else if let Some(previous) = &cookies.previous {
            // The last run's cookie: requests still carrying it get it expired.
            let mut expire = self.rule(
                &self.cookie_matches(previous),
                self.backends(routes.primary, routes.canary),
                mirror,
            );
            let filter = Self::set_cookie(affinity.set_cookie(previous, -1));
            match expire.get_mut("filters").and_then(Value::as_array_mut) {
                Some(filters) => filters.push(filter),
                None => expire["filters"] = json!([filter]),
            }
            rules.push(expire);
        } else {
            // Flagger's sticky rule is then a copy of the weighted one.
            rules.push(weighted.clone());
        }
        rules.push(weighted);
        rules
    }

    /// The HTTPRoute for `routes`, with fresh session affinity cookies.
    pub fn route(&self, routes: &Routes) -> Value {
        self.route_after(routes, None)
    }

    /// The HTTPRoute for `routes`, keeping the session affinity cookies that `existing` (the
    /// route written last) sets.
    pub fn route_after(&self, routes: &Routes, existing: Option<&Value>) -> Value {
        let cookies = match &self.affinity {
            Some(a) => Cookies::after(a, existing, routes.canary),
            None => Cookies::default(),
        };
        self.route_with(routes, &cookies)
    }

    /// The HTTPRoute for `routes` with the session affinity `cookies`.
    fn route_with(&self, routes: &Routes, cookies: &Cookies) -> Value {
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
        if let (Some(a), RouteScope::All) = (&self.affinity, routes.scope) {
            rules = self.sticky_rules(a, routes, cookies, mirror);
        } else if routes.scope == RouteScope::Matched {
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

    /// The rules that route by weight: with session affinity, not the sticky rules in front
    /// (those matching the affinity cookies, or the copy of the weighted rule Flagger puts
    /// there while no cookie is to be expired).
    fn weighted_rules<'v>(&self, rules: &'v [Value]) -> Vec<&'v Value> {
        let Some(a) = &self.affinity else {
            return rules.iter().collect();
        };
        let sticky = |rule: &Value| {
            rule.get("matches")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|m| m.get("headers").and_then(Value::as_array))
                .flatten()
                .any(|h| {
                    h.get("type").and_then(Value::as_str) == Some("RegularExpression")
                        && a.is_cookie_match(
                            h.get("name").and_then(Value::as_str).unwrap_or_default(),
                            h.get("value").and_then(Value::as_str).unwrap_or_default(),
                        )
                })
        };
        let mut out: Vec<&Value> = rules.iter().filter(|r| !sticky(r)).collect();
        if out.len() == 2 && out[0] == out[1] {
            out.remove(0);
        }
        out
    }

    /// What an HTTPRoute that [`GatewayObjects::route`] wrote says, whoever changed it since: the
    /// first rule's weights for `<svc>-primary` and `<svc>-canary` (Gateway API weighs backends
    /// relative to their sum; a backend without a weight weighs 1) and its `RequestMirror` to
    /// the canary; a rule after it (the default route A/B testing puts last) makes the first
    /// one's split apply to matching requests only.
    pub fn routes_of(&self, route: &Value) -> Result<Routes, String> {
        let all = route
            .pointer("/spec/rules")
            .and_then(Value::as_array)
            .ok_or("it has no spec.rules")?;
        let rules = self.weighted_rules(all);
        let first = *rules.first().ok_or("its spec.rules is empty")?;
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
        // A gateway controller usually accepts a route within tens of milliseconds: look again
        // soon, then less often.
        let mut pause = Duration::from_millis(25);
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
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(400));
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
        self.name
    }

    fn set_routes<'a>(&'a self, routes: &'a Routes) -> BoxFuture<'a, Result<(), ClusterError>> {
        Box::pin(async move {
            // Session affinity keeps the cookies the route written last sets.
            let existing = match &self.objects.affinity {
                Some(_) => {
                    let what = format!("read HTTPRoute {}", self.qualified());
                    retry(&what, || self.api.get_opt(&self.objects.name))
                        .await?
                        .and_then(|r| serde_json::to_value(r).ok())
                }
                None => None,
            };
            let name = &self.objects.name;
            let route: HttpRoute =
                serde_json::from_value(self.objects.route_after(routes, existing.as_ref()))
                    .map_err(|e| ClusterError::Invalid(format!("HTTPRoute {name}: {e}")))?;
            let what = format!("apply HTTPRoute {}", self.qualified());
            let (params, patch) = (apply_params(), Patch::Apply(&route));
            retry(&what, || self.api.patch(name, &params, &patch)).await?;
            self.wait_accepted(name).await?;
            let preview = super::preview::object_name(name);
            let applied = self
                .preview
                .reconcile(&self.api, "HTTPRoute", &preview, |hosts| {
                    Ok(self.objects.preview_route(hosts))
                })
                .await?;
            if applied {
                self.wait_accepted(&preview).await?;
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

/// `service.rewrite` as a `URLRewrite` filter, as Flagger's gatewayapi router writes it: the
/// authority becomes the hostname, the uri the path, replacing the prefix the rule matched with
/// `type: ReplacePrefixMatch` and the full path otherwise (`ReplaceFullPath`, the default).
fn url_rewrite(rw: &HttpRewrite) -> Value {
    let mut rewrite = json!({});
    if let Some(authority) = rw.authority.as_deref().filter(|a| !a.is_empty()) {
        rewrite["hostname"] = json!(authority);
    }
    if let Some(uri) = rw.uri.as_deref().filter(|u| !u.is_empty()) {
        rewrite["path"] = if rw.r#type.as_deref() == Some("ReplacePrefixMatch") {
            json!({ "type": "ReplacePrefixMatch", "replacePrefixMatch": uri })
        } else {
            json!({ "type": "ReplaceFullPath", "replaceFullPath": uri })
        };
    }
    json!({ "type": "URLRewrite", "urlRewrite": rewrite })
}

/// One of `service.mirror[]` as a `RequestMirror` filter.
fn request_mirror(m: &MirrorBackend) -> Value {
    let backend = reference(
        &m.name,
        &[
            ("group", &m.group),
            ("kind", &m.kind),
            ("namespace", &m.namespace),
        ],
        m.port,
    );
    json!({ "type": "RequestMirror", "requestMirror": { "backendRef": backend } })
}

/// A Gateway API reference (a `parentRef`, a `backendRef`): its name, the `optional` fields
/// that are set, and its port.
fn reference(name: &str, optional: &[(&str, &Option<String>)], port: Option<i64>) -> Value {
    let mut r = json!({ "name": name });
    for (key, value) in optional {
        if let Some(v) = value {
            r[*key] = json!(v);
        }
    }
    if let Some(port) = port {
        r["port"] = json!(port);
    }
    r
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
        crate::routing::testing::the_canary(&text)
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
        crate::routing::testing::the_canary(&text)
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

    #[test]
    fn backend_timeout_rewrite_and_mirrors_are_written_as_flagger_writes_them() {
        let c = canary(
            "    timeout: 30s
    backendTimeout: 10s
    rewrite: {uri: /v2, authority: api.example.com, type: ReplacePrefixMatch}
    mirror:
      - backendRef: {name: shadow, port: 80}
      - backendRef: {group: \"\", kind: Service, name: audit, namespace: tools, port: 8080}",
            "    iterations: 2
    match:
      - headers:
          x-canary: {exact: insider}",
        );
        let o = objects(&c);
        let rewrite_and_mirrors = json!([
            {"type": "URLRewrite", "urlRewrite": {
                "hostname": "api.example.com",
                "path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/v2"}}},
            {"type": "RequestMirror", "requestMirror": {"backendRef": {"name": "shadow", "port": 80}}},
            {"type": "RequestMirror", "requestMirror": {"backendRef": {
                "group": "", "kind": "Service", "name": "audit", "namespace": "tools", "port": 8080}}},
        ]);
        let route = o.route(&Routes::split(100, RouteScope::Matched));
        for rule in [0, 1] {
            let r = &route["spec"]["rules"][rule];
            assert_eq!(
                r["timeouts"],
                json!({"request": "30s", "backendRequest": "10s"}),
                "{r}"
            );
            assert_eq!(r["filters"], rewrite_and_mirrors, "{r}");
        }
        // Without a type, the full path is replaced.
        let c = canary(
            "    rewrite: {uri: /v2}\n    backendTimeout: 5s",
            "    stepWeight: 10\n    maxWeight: 50",
        );
        let route = objects(&c).route(&Routes::PRIMARY);
        assert_eq!(
            route["spec"]["rules"][0]["filters"],
            json!([{"type": "URLRewrite", "urlRewrite": {
                "path": {"type": "ReplaceFullPath", "replaceFullPath": "/v2"}}}])
        );
        assert_eq!(
            route["spec"]["rules"][0]["timeouts"],
            json!({"backendRequest": "5s"})
        );
        // The typed HTTPRoute keeps all of it, and the extra mirrors are not the canary's.
        for routes in [Routes::PRIMARY, Routes::split(100, RouteScope::Matched)] {
            assert_eq!(read_back(&o, &routes), Ok(canonical(&routes)), "{routes:?}");
        }
        let typed: Result<HttpRoute, _> = serde_json::from_value(o.route(&Routes::PRIMARY));
        let back = typed.map(|t| serde_json::to_value(t).map(|v| v["spec"]["rules"][0].clone()));
        assert!(
            matches!(&back, Ok(Ok(r)) if r["timeouts"]["backendRequest"] == "10s"
                && r["filters"] == rewrite_and_mirrors),
            "{back:?}"
        );
    }

    /// The corpus's gatewayapi session affinity canary (test/gatewayapi/test-session-affinity.sh)
    /// with every cookie attribute.
    fn sticky(primary_cookie: bool) -> GatewayObjects {
        let primary = if primary_cookie {
            "\n      primaryCookieName: primary-flagger-cookie"
        } else {
            ""
        };
        objects(&canary(
            "    hosts: [www.example.com]",
            &format!(
                "    maxWeight: 50
    stepWeight: 10
    sessionAffinity:
      cookieName: canary-flagger-cookie{primary}
      maxAge: 21600
      domain: example.com
      httpOnly: true
      path: /
      sameSite: Strict
      secure: true"
            ),
        ))
        .replace_interval()
    }

    impl GatewayObjects {
        /// The corpus canary's `interval: 15s` (the fixture's analysis has `interval: 1s`).
        fn replace_interval(mut self) -> GatewayObjects {
            if let Some(a) = &mut self.affinity {
                a.interval = 15;
            }
            self
        }
    }

    fn cookies(canary: Option<&str>, primary: Option<&str>, previous: Option<&str>) -> Cookies {
        Cookies {
            canary: canary.map(str::to_string),
            primary: primary.map(str::to_string),
            previous: previous.map(str::to_string),
        }
    }

    fn backends(p: u32, c: u32) -> Value {
        json!([
            {"name": "podinfo-primary", "port": 9898, "weight": p},
            {"name": "podinfo-canary", "port": 9898, "weight": c},
        ])
    }

    const ATTRS: &str = "; Domain=example.com; HttpOnly; Path=/; SameSite=Strict; Secure";

    #[test]
    fn session_affinity_sends_the_cookie_holders_to_the_canary_and_sets_the_cookies() {
        let o = sticky(true);
        let c = cookies(
            Some("canary-flagger-cookie=CCCCCCCCCC"),
            Some("primary-flagger-cookie=PPPPPPPPPP"),
            None,
        );
        let route = o.route_with(&Routes::split(10, RouteScope::All), &c);
        let cookie_match = |v: &str| {
            json!([{"headers": [
            {"type": "RegularExpression", "name": "Cookie", "value": v}]}])
        };
        let mut weighted = backends(90, 10);
        weighted[0]["filters"] = json!([{"type": "ResponseHeaderModifier", "responseHeaderModifier": {
            "add": [{"name": "Set-Cookie",
                "value": format!("primary-flagger-cookie=PPPPPPPPPP; Max-Age=15{ATTRS}")}]}}]);
        weighted[1]["filters"] = json!([{"type": "ResponseHeaderModifier", "responseHeaderModifier": {
            "add": [{"name": "Set-Cookie",
                "value": format!("canary-flagger-cookie=CCCCCCCCCC; Max-Age=21600{ATTRS}")}]}}]);
        assert_eq!(
            route["spec"]["rules"],
            json!([
                {"matches": cookie_match(".*canary-flagger-cookie.*CCCCCCCCCC.*"),
                 "backendRefs": backends(0, 100)},
                {"matches": cookie_match(".*primary-flagger-cookie.*PPPPPPPPPP.*"),
                 "backendRefs": backends(100, 0)},
                {"backendRefs": weighted},
            ])
        );
        assert_eq!(route["spec"]["hostnames"], json!(["www.example.com"]));
    }

    #[test]
    fn session_affinity_expires_the_last_cookie_once_the_canary_has_no_traffic() {
        let o = sticky(false);
        let done = cookies(None, None, Some("canary-flagger-cookie=CCCCCCCCCC"));
        let route = o.route_with(&Routes::PRIMARY, &done);
        assert_eq!(
            route["spec"]["rules"],
            json!([
                {"matches": [{"headers": [{"type": "RegularExpression", "name": "Cookie",
                    "value": ".*canary-flagger-cookie.*CCCCCCCCCC.*"}]}],
                 "filters": [{"type": "ResponseHeaderModifier", "responseHeaderModifier": {
                    "add": [{"name": "Set-Cookie",
                        "value": format!("canary-flagger-cookie=CCCCCCCCCC; Max-Age=-1{ATTRS}")}]}}],
                 "backendRefs": backends(100, 0)},
                {"backendRefs": backends(100, 0)},
            ])
        );
        // No cookie to expire (before the first run): Flagger's sticky rule is the weighted one.
        let route = o.route_with(&Routes::PRIMARY, &Cookies::default());
        assert_eq!(
            route["spec"]["rules"],
            json!([{"backendRefs": backends(100, 0)}, {"backendRefs": backends(100, 0)}])
        );
    }

    #[test]
    fn session_affinity_keeps_its_cookies_across_writes_and_reads_back_the_weighted_rule() {
        for primary in [false, true] {
            let o = sticky(primary);
            crate::routing::testing::check_sticky_run(
                primary,
                [10, 20, 50],
                // As observed reads it: through the typed HTTPRoute and back.
                |routes, last| {
                    let route = o.route_after(routes, last);
                    match serde_json::from_value::<HttpRoute>(route.clone()) {
                        Ok(t) => serde_json::to_value(&t).unwrap_or_default(),
                        Err(e) => panic!("{e}: {route}"),
                    }
                },
                |read| o.routes_of(read),
                |read| read["spec"]["rules"][0]["matches"][0]["headers"][0]["value"].clone(),
            );
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        #[test]
        fn any_routes_read_back_as_written(routes in any_routes(true)) {
            let o = full();
            proptest::prop_assert_eq!(read_back(&o, &routes), Ok(canonical(&routes)));
        }

        #[test]
        fn any_routes_read_back_as_written_with_session_affinity(routes in any_routes(false)) {
            let o = sticky(true);
            proptest::prop_assert_eq!(read_back(&o, &routes), Ok(canonical(&routes)));
        }
    }
}
