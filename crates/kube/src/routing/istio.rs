//! Istio: two `DestinationRule`s (`<svc>-primary`, `<svc>-canary`, each carrying
//! `service.trafficPolicy`) and one `VirtualService` named like the apex Service, whose HTTP route
//! splits traffic between the two hosts by weight. A/B testing puts one route per
//! `analysis.match` entry (ANDed with the service's own matches) in front, carrying the split,
//! followed by the default route that keeps every other request on the primary. Mirroring adds
//! `mirror` and `mirrorPercentage` to the first route. Session affinity puts Flagger's sticky
//! routes (`sticky-route`, and `sticky-primary-route` with `primaryCookieName`) in front of the
//! weighted one, whose destinations set the cookies ([`super::sticky`]); `observed` reads the
//! weights past them. Istio reports no status to wait on, so
//! a change is in effect once the API server has stored it, as Flagger assumes.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::future::BoxFuture;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch};
use serde_json::{json, Map, Value};

use crate::cluster::{apply_params, retry, ClusterError, MANAGED_BY};
use crate::workload::Workloads;
use aviary_core::engine::{RouteScope, Routes};
use aviary_core::spec::{
    Canary, CustomMetadata, HeaderOperations, HttpMatch, Provider, StringMatch,
};

use super::sticky::{cookie_regex, Affinity, Cookies, COOKIE, SET_COOKIE};
use super::{
    and_matches, canonical, merge_match, number, percentages, regex_escape, Observed, TrafficRouter,
};

const GROUP: &str = "networking.istio.io";
const VERSION: &str = "v1beta1";

pub struct Istio {
    virtual_services: Api<DynamicObject>,
    destination_rules: Api<DynamicObject>,
    objects: IstioObjects,
    /// The DestinationRules were applied by an earlier call.
    rules_applied: AtomicBool,
    /// `service.previewHosts` (see [`super::preview`]).
    preview: super::preview::PreviewState,
}

impl Istio {
    pub fn new(canary: &Canary, workloads: &Workloads) -> Result<Istio, ClusterError> {
        let objects = IstioObjects::new(
            canary,
            &workloads.namespace,
            &workloads.service,
            workloads.primary_service(),
            workloads.canary_service(),
        )?;
        let client = workloads.client().clone();
        let ns = &workloads.namespace;
        Ok(Istio {
            virtual_services: Api::namespaced_with(client.clone(), ns, &resource("VirtualService")),
            destination_rules: Api::namespaced_with(client, ns, &resource("DestinationRule")),
            objects,
            rules_applied: AtomicBool::new(false),
            preview: super::preview::PreviewState::new(canary, &Provider::Istio),
        })
    }
}

fn resource(kind: &str) -> ApiResource {
    let plural = format!("{}s", kind.to_lowercase());
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(GROUP, VERSION, kind), &plural)
}

impl TrafficRouter for Istio {
    fn name(&self) -> &'static str {
        "istio"
    }

    fn set_routes<'a>(&'a self, routes: &'a Routes) -> BoxFuture<'a, Result<(), ClusterError>> {
        Box::pin(async move {
            let o = &self.objects;
            if !self.rules_applied.load(Ordering::Acquire) {
                for host in [&o.primary, &o.canary] {
                    let rule = o.destination_rule(host);
                    let what = format!("apply DestinationRule {host}.{}", o.namespace);
                    let (params, patch) = (apply_params(), Patch::Apply(&rule));
                    retry(&what, || {
                        self.destination_rules.patch(host, &params, &patch)
                    })
                    .await?;
                }
                self.rules_applied.store(true, Ordering::Release);
            }
            // Session affinity keeps the cookies the VirtualService written last sets.
            let existing = match &o.affinity {
                Some(_) => {
                    let what = format!("read VirtualService {}.{}", o.name, o.namespace);
                    retry(&what, || self.virtual_services.get_opt(&o.name))
                        .await?
                        .and_then(|vs| serde_json::to_value(vs).ok())
                }
                None => None,
            };
            let vs = o.virtual_service_after(routes, existing.as_ref());
            let what = format!("apply VirtualService {}.{}", o.name, o.namespace);
            let (params, patch) = (apply_params(), Patch::Apply(&vs));
            retry(&what, || {
                self.virtual_services.patch(&o.name, &params, &patch)
            })
            .await?;
            let name = super::preview::object_name(&o.name);
            self.preview
                .reconcile(&self.virtual_services, "VirtualService", &name, |hosts| {
                    Ok(o.preview_virtual_service(hosts))
                })
                .await?;
            Ok(())
        })
    }

    fn observed(&self) -> BoxFuture<'_, Result<Observed, ClusterError>> {
        Box::pin(async move {
            let o = &self.objects;
            let objects = format!("VirtualService {}.{}", o.name, o.namespace);
            let what = format!("read {objects}");
            let Some(vs) = retry(&what, || self.virtual_services.get_opt(&o.name)).await? else {
                return Ok(Observed {
                    objects,
                    routes: None,
                });
            };
            let value = serde_json::to_value(&vs)
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

/// The Istio objects of one Canary, as JSON; no cluster access.
pub struct IstioObjects {
    namespace: String,
    /// The apex Service's name, which the VirtualService takes.
    name: String,
    primary: String,
    canary: String,
    port: u16,
    /// `None` in delegation mode (a delegate VirtualService has neither hosts nor gateways).
    hosts: Option<Vec<String>>,
    gateways: Option<Vec<String>>,
    traffic_policy: Option<Value>,
    apex: Option<CustomMetadata>,
    service_matches: Vec<Value>,
    /// `analysis.match`, each entry ANDed with each service match.
    ab_matches: Vec<Value>,
    /// rewrite, timeout, retries, headers and corsPolicy: the same on every route.
    route_options: Map<String, Value>,
    /// `analysis.sessionAffinity`: the sticky cookie routes in front of the weighted one.
    affinity: Option<Affinity>,
}

/// The name of the route in front that sends the canary cookie's holders to the canary (or
/// expires the cookie), as Flagger names it.
const STICKY_ROUTE: &str = "sticky-route";
/// The name of the route that keeps the primary cookie's holders on the primary.
const STICKY_PRIMARY_ROUTE: &str = "sticky-primary-route";

impl IstioObjects {
    pub fn new(
        canary: &Canary,
        namespace: &str,
        service: &str,
        primary: String,
        canary_host: String,
    ) -> Result<IstioObjects, ClusterError> {
        let s = &canary.service;
        let (hosts, gateways) = if s.delegation {
            if !s.hosts.is_empty() || !s.gateways.is_empty() {
                return Err(ClusterError::Invalid(format!(
                    "{}: a delegate VirtualService (service.delegation: true) cannot have hosts or \
                     gateways; remove service.hosts and service.gateways, or turn delegation off",
                    canary.qualified_name()
                )));
            }
            (None, None)
        } else {
            // Flagger: the user's hosts, then the apex Service unless it (or `*`) is there.
            let mut hosts: Vec<String> = Vec::new();
            for h in &s.hosts {
                if !hosts.contains(h) {
                    hosts.push(h.clone());
                }
            }
            if !hosts.iter().any(|h| h == service || h == "*") {
                hosts.push(service.to_string());
            }
            // Flagger: the user's gateways; `mesh` when there are none.
            let mut gateways: Vec<String> = Vec::new();
            for g in &s.gateways {
                if !gateways.contains(g) {
                    gateways.push(g.clone());
                }
            }
            if gateways.is_empty() {
                gateways.push("mesh".to_string());
            }
            (Some(hosts), Some(gateways))
        };
        let analysis = canary.analysis.clone().unwrap_or_default();
        let service_matches: Vec<Value> = s.r#match.iter().map(istio_match).collect();
        let ab: Vec<Value> = analysis.r#match.iter().map(istio_match).collect();
        let mut route_options = Map::new();
        if let Some(rw) = &s.rewrite {
            let mut r = Map::new();
            if let Some(uri) = &rw.uri {
                r.insert("uri".into(), json!(uri));
            }
            if let Some(authority) = &rw.authority {
                r.insert("authority".into(), json!(authority));
            }
            if !r.is_empty() {
                route_options.insert("rewrite".into(), Value::Object(r));
            }
        }
        if let Some(t) = &s.timeout {
            route_options.insert("timeout".into(), json!(t));
        }
        if let Some(rt) = &s.retries {
            let mut r = Map::new();
            if let Some(a) = rt.attempts {
                r.insert("attempts".into(), json!(a));
            }
            if let Some(t) = &rt.per_try_timeout {
                r.insert("perTryTimeout".into(), json!(t));
            }
            if let Some(on) = &rt.retry_on {
                r.insert("retryOn".into(), json!(on));
            }
            route_options.insert("retries".into(), Value::Object(r));
        }
        if let Some(h) = &s.headers {
            let mut headers = Map::new();
            if let Some(ops) = &h.request {
                headers.insert("request".into(), header_ops(ops));
            }
            if let Some(ops) = &h.response {
                headers.insert("response".into(), header_ops(ops));
            }
            if !headers.is_empty() {
                route_options.insert("headers".into(), Value::Object(headers));
            }
        }
        if let Some(cors) = &s.cors_policy {
            route_options.insert("corsPolicy".into(), cors.clone());
        }
        Ok(IstioObjects {
            namespace: namespace.to_string(),
            name: service.to_string(),
            primary,
            canary: canary_host,
            port: s.port,
            hosts,
            gateways,
            traffic_policy: s.traffic_policy.clone(),
            apex: s.apex.clone(),
            ab_matches: combine_matches(&ab, &service_matches),
            service_matches,
            route_options,
            affinity: analysis
                .session_affinity
                .as_ref()
                .map(|sa| Affinity::new(sa, analysis.interval)),
        })
    }

    /// The DestinationRule for `host` (`<svc>-primary` or `<svc>-canary`).
    pub fn destination_rule(&self, host: &str) -> Value {
        let mut spec = json!({ "host": host });
        if let Some(tp) = &self.traffic_policy {
            spec["trafficPolicy"] = tp.clone();
        }
        json!({
            "apiVersion": format!("{GROUP}/{VERSION}"),
            "kind": "DestinationRule",
            "metadata": {
                "name": host,
                "namespace": self.namespace,
                "labels": { MANAGED_BY.0: MANAGED_BY.1 },
            },
            "spec": spec,
        })
    }

    fn destination(&self, host: &str, weight: u32) -> Value {
        json!({
            "destination": { "host": host, "port": { "number": self.port } },
            "weight": weight,
        })
    }

    fn http_route(&self, matches: &[Value], primary: u32, canary: u32) -> Value {
        let mut route = self.route_options.clone();
        if !matches.is_empty() {
            route.insert("match".into(), json!(matches));
        }
        route.insert(
            "route".into(),
            json!([
                self.destination(&self.primary, primary),
                self.destination(&self.canary, canary)
            ]),
        );
        Value::Object(route)
    }

    /// The VirtualService for `routes`, with fresh session affinity cookies.
    pub fn virtual_service(&self, routes: &Routes) -> Value {
        self.virtual_service_after(routes, None)
    }

    /// The VirtualService for `routes`, keeping the session affinity cookies that `existing`
    /// (the VirtualService written last) sets.
    pub fn virtual_service_after(&self, routes: &Routes, existing: Option<&Value>) -> Value {
        let cookies = match &self.affinity {
            Some(a) => Cookies::after(a, existing, routes.canary),
            None => Cookies::default(),
        };
        self.virtual_service_with(routes, &cookies)
    }

    /// `route` with `Set-Cookie: value` added to its response headers (`route` is an HTTP
    /// route, or one of its destinations).
    fn add_set_cookie(route: &mut Value, value: String) {
        let add = &mut route["headers"]["response"]["add"];
        if !add.is_object() {
            *add = json!({});
        }
        add[SET_COOKIE] = json!(value);
    }

    /// The matches of a sticky route: the `Cookie` header carrying `cookie`, within the
    /// service's own matches.
    fn cookie_matches(&self, cookie: &str) -> Vec<Value> {
        let m = json!({ "headers": { COOKIE: { "regex": cookie_regex(cookie) } } });
        combine_matches(&[m], &self.service_matches)
    }

    /// Flagger's session affinity routes for `routes`: the sticky route(s) in front of the
    /// weighted one, whose destinations set the cookies ([`sticky`](super::sticky)).
    fn sticky_routes(&self, affinity: &Affinity, routes: &Routes, cookies: &Cookies) -> Vec<Value> {
        let mut weighted = self.http_route(&self.service_matches, routes.primary, routes.canary);
        let named = |mut route: Value, name: &str| {
            route["name"] = json!(name);
            route
        };
        let mut http = Vec::new();
        if let (true, Some(canary_cookie)) = (routes.canary > 0, &cookies.canary) {
            let max_age = i64::from(affinity.max_age);
            Self::add_set_cookie(
                &mut weighted["route"][1],
                affinity.set_cookie(canary_cookie, max_age),
            );
            let sticky = self.http_route(&self.cookie_matches(canary_cookie), 0, 100);
            http.push(named(sticky, STICKY_ROUTE));
            if let Some(primary_cookie) = &cookies.primary {
                let max_age = i64::try_from(affinity.interval).unwrap_or(i64::MAX);
                Self::add_set_cookie(
                    &mut weighted["route"][0],
                    affinity.set_cookie(primary_cookie, max_age),
                );
                let sticky = self.http_route(&self.cookie_matches(primary_cookie), 100, 0);
                http.push(named(sticky, STICKY_PRIMARY_ROUTE));
            }
        } else if let Some(previous) = &cookies.previous {
            // The last run's cookie: requests still carrying it get it expired.
            let mut expire = self.http_route(
                &self.cookie_matches(previous),
                routes.primary,
                routes.canary,
            );
            Self::add_set_cookie(&mut expire, affinity.set_cookie(previous, -1));
            http.push(named(expire, STICKY_ROUTE));
        } else {
            // Flagger's sticky route is then a copy of the weighted one.
            http.push(named(weighted.clone(), STICKY_ROUTE));
        }
        http.push(weighted);
        http
    }

    /// The VirtualService for `routes` with the session affinity `cookies`.
    fn virtual_service_with(&self, routes: &Routes, cookies: &Cookies) -> Value {
        let mut http = Vec::new();
        let ab = routes.scope == RouteScope::Matched && !self.ab_matches.is_empty();
        if let (Some(a), false) = (&self.affinity, ab) {
            http = self.sticky_routes(a, routes, cookies);
        } else if ab {
            http.push(self.http_route(&self.ab_matches, routes.primary, routes.canary));
            http.push(self.http_route(&self.service_matches, 100, 0));
        } else {
            http.push(self.http_route(&self.service_matches, routes.primary, routes.canary));
        }
        if routes.mirror {
            if let Some(first) = http.first_mut() {
                first["mirror"] = json!({ "host": self.canary, "port": { "number": self.port } });
                if let Some(percent) = routes.mirror_weight {
                    first["mirrorPercentage"] = json!({ "value": percent });
                }
            }
        }
        let mut spec = json!({ "http": http });
        if let Some(hosts) = &self.hosts {
            spec["hosts"] = json!(hosts);
        }
        if let Some(gateways) = &self.gateways {
            spec["gateways"] = json!(gateways);
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
            "apiVersion": format!("{GROUP}/{VERSION}"),
            "kind": "VirtualService",
            "metadata": metadata,
            "spec": spec,
        })
    }
}

impl IstioObjects {
    /// What a VirtualService that [`IstioObjects::virtual_service`] wrote says, whoever changed
    /// it since: the first HTTP route's weights for the `-primary` and `-canary` hosts (short or
    /// fully qualified; a lone destination without a weight takes everything) and its `mirror`
    /// to the canary with `mirrorPercentage`; a route after it (the default route A/B testing
    /// puts last) makes the first one's split apply to matching requests only.
    pub fn routes_of(&self, vs: &Value) -> Result<Routes, String> {
        let all = vs
            .pointer("/spec/http")
            .and_then(Value::as_array)
            .ok_or("it has no spec.http")?;
        // With session affinity, the sticky routes in front do not route by weight (the
        // mirror, which Flagger puts on the first route, is read there all the same).
        let mirrored = all.first().ok_or("its spec.http is empty")?;
        let http: Vec<&Value> = all
            .iter()
            .filter(|r| {
                self.affinity.is_none()
                    || !matches!(
                        r.get("name").and_then(Value::as_str),
                        Some(STICKY_ROUTE | STICKY_PRIMARY_ROUTE)
                    )
            })
            .collect();
        let first = *http.first().ok_or("its spec.http has no weighted route")?;
        let destinations = first
            .get("route")
            .and_then(Value::as_array)
            .ok_or("spec.http[0] has no route")?;
        let is = |host: &str, name: &str| {
            host == name
                || host
                    .strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with('.'))
        };
        let (mut primary, mut canary, mut named) = (0u64, 0u64, false);
        for (i, d) in destinations.iter().enumerate() {
            let weight = match d.get("weight") {
                Some(w) => number(w, &format!("spec.http[0].route[{i}].weight"))?,
                None if destinations.len() == 1 => 100,
                None => 0,
            };
            let host = d
                .pointer("/destination/host")
                .and_then(Value::as_str)
                .unwrap_or_default();
            if is(host, &self.primary) {
                primary += weight;
            } else if is(host, &self.canary) {
                canary += weight;
            } else if weight > 0 {
                return Err(format!("spec.http[0] also sends traffic to {host:?}"));
            } else {
                continue;
            }
            named = true;
        }
        if !named {
            return Err(format!(
                "spec.http[0].route names neither {} nor {}",
                self.primary, self.canary
            ));
        }
        let (primary, canary) = percentages(primary, canary)?;
        let mirror = mirrored
            .pointer("/mirror/host")
            .and_then(Value::as_str)
            .is_some_and(|h| is(h, &self.canary));
        let mirror_weight = match mirrored.pointer("/mirrorPercentage/value") {
            Some(v) if mirror => Some(number(v, "spec.http[0].mirrorPercentage.value")?),
            _ => None,
        };
        Ok(canonical(&Routes {
            primary,
            canary,
            mirror,
            mirror_weight: mirror_weight.map(|w| u32::try_from(w.min(100)).unwrap_or(100)),
            scope: if http.len() > 1 {
                RouteScope::Matched
            } else {
                RouteScope::All
            },
        }))
    }
}

fn header_ops(ops: &HeaderOperations) -> Value {
    let mut out = Map::new();
    if !ops.set.is_empty() {
        out.insert("set".into(), json!(ops.set));
    }
    if !ops.add.is_empty() {
        out.insert("add".into(), json!(ops.add));
    }
    if !ops.remove.is_empty() {
        out.insert("remove".into(), json!(ops.remove));
    }
    Value::Object(out)
}

/// An Istio `StringMatch`. Istio has no suffix match: a suffix becomes a regular expression
/// (Envoy matches regular expressions against the whole value).
pub(crate) fn istio_string_match(m: &StringMatch) -> Value {
    match m {
        StringMatch::Exact(v) => json!({ "exact": v }),
        StringMatch::Prefix(v) => json!({ "prefix": v }),
        StringMatch::Regex(v) => json!({ "regex": v }),
        StringMatch::Suffix(v) => json!({ "regex": format!(".*{}", regex_escape(v)) }),
    }
}

fn string_matches(m: &BTreeMap<String, StringMatch>) -> Value {
    Value::Object(
        m.iter()
            .map(|(k, v)| (k.clone(), istio_string_match(v)))
            .collect(),
    )
}

/// An `HTTPMatchRequest` as Istio writes it.
pub(crate) fn istio_match(m: &HttpMatch) -> Value {
    let mut out = Map::new();
    if let Some(name) = &m.name {
        out.insert("name".into(), json!(name));
    }
    for (key, value) in [
        ("uri", &m.uri),
        ("scheme", &m.scheme),
        ("method", &m.method),
        ("authority", &m.authority),
    ] {
        if let Some(v) = value {
            out.insert(key.into(), istio_string_match(v));
        }
    }
    for (key, value) in [
        ("headers", &m.headers),
        ("queryParams", &m.query_params),
        ("withoutHeaders", &m.without_headers),
    ] {
        if !value.is_empty() {
            out.insert(key.into(), string_matches(value));
        }
    }
    if m.ignore_uri_case {
        out.insert("ignoreUriCase".into(), json!(true));
    }
    if let Some(port) = m.port {
        out.insert("port".into(), json!(port));
    }
    if !m.source_labels.is_empty() {
        out.insert("sourceLabels".into(), json!(m.source_labels));
    }
    if let Some(ns) = &m.source_namespace {
        out.insert("sourceNamespace".into(), json!(ns));
    }
    if !m.gateways.is_empty() {
        out.insert("gateways".into(), json!(m.gateways));
    }
    Value::Object(out)
}

/// Every A/B match ANDed with every service match: the service match's conditions with the A/B
/// match's laid over them (maps such as `headers` are merged, the A/B entry winning a name both
/// set). Without service matches, the A/B matches as they are.
pub(crate) fn combine_matches(ab: &[Value], service: &[Value]) -> Vec<Value> {
    and_matches(ab, service, |m, a| merge_match(m, a, &[]))
}

impl IstioObjects {
    /// The preview VirtualService (`<svc>-preview`, see [`super::preview`]): `hosts` on the
    /// same gateways, with the Service's own matches and route options, every request to the
    /// canary host.
    pub fn preview_virtual_service(&self, hosts: &[String]) -> Value {
        let mut route = self.route_options.clone();
        if !self.service_matches.is_empty() {
            route.insert("match".into(), json!(self.service_matches));
        }
        route.insert("route".into(), json!([self.destination(&self.canary, 100)]));
        let mut spec = json!({ "hosts": hosts, "http": [route] });
        if let Some(gateways) = &self.gateways {
            spec["gateways"] = json!(gateways);
        }
        let name = super::preview::object_name(&self.name);
        json!({
            "apiVersion": format!("{GROUP}/{VERSION}"),
            "kind": "VirtualService",
            "metadata": super::preview::metadata(&name, &self.namespace),
            "spec": spec,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canary(service: &str, analysis: &str) -> Canary {
        let text = format!(
            "apiVersion: aviary.dev/v1alpha1
kind: Canary
metadata:
  name: podinfo
  namespace: test
spec:
  provider: istio
  targetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: podinfo
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

    fn objects(c: &Canary) -> Result<IstioObjects, ClusterError> {
        IstioObjects::new(
            c,
            "test",
            "podinfo",
            "podinfo-primary".into(),
            "podinfo-canary".into(),
        )
    }

    #[test]
    fn a_canary_split_carries_the_service_route_options() {
        let c = canary(
            "    hosts: [app.example.com, podinfo, app.example.com]
    gateways: [public-gateway.istio-system.svc.cluster.local]
    timeout: 30s
    retries: {attempts: 3, perTryTimeout: 1s, retryOn: 5xx}
    rewrite: {uri: /v2}
    headers:
      request:
        set: {x-a: b}
        remove: [x-c]
    trafficPolicy:
      tls: {mode: ISTIO_MUTUAL}
    match:
      - uri: {prefix: /api}
        ignoreUriCase: true
        sourceLabels: {app: web}",
            "    stepWeight: 10
    maxWeight: 50
    mirror: true
    mirrorWeight: 20",
        );
        let o = match objects(&c) {
            Ok(o) => o,
            Err(e) => panic!("{e}"),
        };
        let vs = o.virtual_service(&Routes::split(30, RouteScope::All));
        assert_eq!(vs["spec"]["hosts"], json!(["app.example.com", "podinfo"]));
        assert_eq!(
            vs["spec"]["gateways"],
            json!(["public-gateway.istio-system.svc.cluster.local"])
        );
        let http = &vs["spec"]["http"];
        assert_eq!(http.as_array().map(Vec::len), Some(1));
        assert_eq!(
            http[0]["match"],
            json!([{"uri": {"prefix": "/api"}, "ignoreUriCase": true, "sourceLabels": {"app": "web"}}])
        );
        assert_eq!(http[0]["timeout"], "30s");
        assert_eq!(
            http[0]["retries"],
            json!({"attempts": 3, "perTryTimeout": "1s", "retryOn": "5xx"})
        );
        assert_eq!(http[0]["rewrite"], json!({"uri": "/v2"}));
        assert_eq!(
            http[0]["headers"],
            json!({"request": {"set": {"x-a": "b"}, "remove": ["x-c"]}})
        );
        assert_eq!(
            http[0]["route"],
            json!([
                {"destination": {"host": "podinfo-primary", "port": {"number": 9898}}, "weight": 70},
                {"destination": {"host": "podinfo-canary", "port": {"number": 9898}}, "weight": 30},
            ])
        );
        assert!(http[0].get("mirror").is_none());
        let mirrored = o.virtual_service(&Routes {
            mirror: true,
            mirror_weight: Some(20),
            ..Routes::PRIMARY
        });
        assert_eq!(
            mirrored["spec"]["http"][0]["mirror"],
            json!({"host": "podinfo-canary", "port": {"number": 9898}})
        );
        assert_eq!(
            mirrored["spec"]["http"][0]["mirrorPercentage"],
            json!({"value": 20})
        );
        let dr = o.destination_rule("podinfo-canary");
        assert_eq!(dr["spec"]["host"], "podinfo-canary");
        assert_eq!(
            dr["spec"]["trafficPolicy"],
            json!({"tls": {"mode": "ISTIO_MUTUAL"}})
        );
        assert_eq!(dr["metadata"]["labels"][MANAGED_BY.0], MANAGED_BY.1);
    }

    #[test]
    fn ab_testing_routes_matching_requests_first_and_the_rest_to_the_primary() {
        let c = canary(
            "    match:
      - uri: {prefix: /api}
        headers: {x-env: {exact: prod}}",
            "    iterations: 2
    match:
      - headers:
          x-canary: {exact: insider}
      - headers:
          cookie: {regex: \"^(.*?;)?(canary=always)(;.*)?$\"}
        queryParams:
          beta: {suffix: on}",
        );
        let o = match objects(&c) {
            Ok(o) => o,
            Err(e) => panic!("{e}"),
        };
        let vs = o.virtual_service(&Routes::split(100, RouteScope::Matched));
        assert_eq!(vs["spec"]["hosts"], json!(["podinfo"]));
        assert_eq!(vs["spec"]["gateways"], json!(["mesh"]));
        let http = &vs["spec"]["http"];
        assert_eq!(http.as_array().map(Vec::len), Some(2));
        assert_eq!(
            http[0]["match"],
            json!([
                {"uri": {"prefix": "/api"}, "headers": {"x-env": {"exact": "prod"}, "x-canary": {"exact": "insider"}}},
                {"uri": {"prefix": "/api"},
                 "headers": {"x-env": {"exact": "prod"}, "cookie": {"regex": "^(.*?;)?(canary=always)(;.*)?$"}},
                 "queryParams": {"beta": {"regex": ".*on"}}},
            ])
        );
        assert_eq!(http[0]["route"][0]["weight"], 0);
        assert_eq!(http[0]["route"][1]["weight"], 100);
        assert_eq!(
            http[1]["match"],
            json!([{"uri": {"prefix": "/api"}, "headers": {"x-env": {"exact": "prod"}}}])
        );
        assert_eq!(http[1]["route"][0]["weight"], 100);
        assert_eq!(http[1]["route"][1]["weight"], 0);
        // Back on the primary: one route, no A/B match.
        let back = o.virtual_service(&Routes::PRIMARY);
        assert_eq!(back["spec"]["http"].as_array().map(Vec::len), Some(1));
        assert_eq!(back["spec"]["http"][0]["route"][1]["weight"], 0);
    }

    #[test]
    fn delegation_drops_hosts_and_gateways_and_refuses_them_when_set() {
        let o = match objects(&canary("    delegation: true", "    stepWeight: 10")) {
            Ok(o) => o,
            Err(e) => panic!("{e}"),
        };
        let vs = o.virtual_service(&Routes::PRIMARY);
        assert!(vs["spec"].get("hosts").is_none());
        assert!(vs["spec"].get("gateways").is_none());
        let err = objects(&canary(
            "    delegation: true\n    hosts: [app.example.com]",
            "    stepWeight: 10",
        ));
        match err {
            Err(e) => assert!(
                e.to_string().contains("cannot have hosts or gateways"),
                "{e}"
            ),
            Ok(_) => panic!("delegation with hosts was accepted"),
        }
    }

    /// What set_routes applies, read back the way `observed` reads it (a DynamicObject).
    fn read_back(o: &IstioObjects, routes: &Routes) -> Result<Routes, String> {
        let vs = o.virtual_service(routes);
        let dynamic: DynamicObject = serde_json::from_value(vs).map_err(|e| e.to_string())?;
        o.routes_of(&serde_json::to_value(&dynamic).map_err(|e| e.to_string())?)
    }

    fn full() -> IstioObjects {
        let c = canary(
            "    hosts: [app.example.com]
    timeout: 30s
    match:
      - uri: {prefix: /api}",
            "    iterations: 2
    match:
      - headers:
          x-canary: {exact: insider}",
        );
        match objects(&c) {
            Ok(o) => o,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn every_virtual_service_set_routes_writes_reads_back_as_it_was_asked() {
        let o = full();
        for routes in [
            Routes::PRIMARY,
            Routes::split(30, RouteScope::All),
            Routes::split(100, RouteScope::Matched),
            Routes {
                mirror: true,
                mirror_weight: Some(20),
                ..Routes::PRIMARY
            },
        ] {
            assert_eq!(read_back(&o, &routes), Ok(canonical(&routes)), "{routes:?}");
        }
    }

    #[test]
    fn a_virtual_service_changed_by_hand_is_read_as_istio_would_route_it() {
        let o = full();
        let http = |route: Value| json!({"spec": {"http": [{"route": route}]}});
        let dest = |host: &str, weight: Option<u64>| {
            let mut d = json!({"destination": {"host": host}});
            if let Some(w) = weight {
                d["weight"] = json!(w);
            }
            d
        };
        // Fully qualified hosts are the same Services; a lone destination takes everything.
        let r = o.routes_of(&http(json!([
            dest("podinfo-primary.test.svc.cluster.local", Some(60)),
            dest("podinfo-canary.test.svc.cluster.local", Some(40)),
        ])));
        assert_eq!(r, Ok(Routes::split(40, RouteScope::All)));
        let r = o.routes_of(&http(json!([dest("podinfo-canary", None)])));
        assert_eq!(r, Ok(Routes::split(100, RouteScope::All)));
        // A mirror to the canary without a percentage mirrors everything.
        let mut vs = http(json!([dest("podinfo-primary", Some(100))]));
        vs["spec"]["http"][0]["mirror"] = json!({"host": "podinfo-canary"});
        assert_eq!(
            o.routes_of(&vs),
            Ok(Routes {
                mirror: true,
                ..Routes::PRIMARY
            })
        );
        // A host that only starts like the canary's is another Service.
        let r = o.routes_of(&http(json!([
            dest("podinfo-primary", Some(50)),
            dest("podinfo-canary-old", Some(50)),
        ])));
        assert!(
            r.as_ref()
                .is_err_and(|e| e.contains("also sends traffic to \"podinfo-canary-old\"")),
            "{r:?}"
        );
        let r = o.routes_of(&json!({"spec": {"http": []}}));
        assert!(r.is_err_and(|e| e.contains("spec.http is empty")));
    }

    /// The corpus's istio session affinity canary (test/istio/test-session-affinity.sh), with
    /// every cookie attribute.
    fn sticky(primary_cookie: bool) -> IstioObjects {
        let primary = if primary_cookie {
            "\n      primaryCookieName: primary-flagger-cookie"
        } else {
            ""
        };
        let c = canary(
            "    gateways: [istio-system/istio-ingressgateway]
    hosts: ['*']",
            &format!(
                "    maxWeight: 30
    stepWeight: 10
    sessionAffinity:
      cookieName: canary-flagger-cookie{primary}
      maxAge: 21600
      domain: example.com
      httpOnly: true
      partitioned: true
      path: /
      sameSite: None
      secure: true"
            ),
        );
        match objects(&c) {
            Ok(mut o) => {
                // The corpus canary's `interval: 15s` (the fixture's analysis has 1s).
                if let Some(a) = &mut o.affinity {
                    a.interval = 15;
                }
                o
            }
            Err(e) => panic!("{e}"),
        }
    }

    const ATTRS: &str =
        "; Domain=example.com; HttpOnly; Partitioned; Path=/; SameSite=None; Secure";

    fn dest(host: &str, weight: u32) -> Value {
        json!({"destination": {"host": host, "port": {"number": 9898}}, "weight": weight})
    }

    fn cookies(canary: Option<&str>, primary: Option<&str>, previous: Option<&str>) -> Cookies {
        Cookies {
            canary: canary.map(str::to_string),
            primary: primary.map(str::to_string),
            previous: previous.map(str::to_string),
        }
    }

    #[test]
    fn session_affinity_sends_the_cookie_holders_to_the_canary_and_sets_the_cookies() {
        let o = sticky(true);
        let c = cookies(
            Some("canary-flagger-cookie=CCCCCCCCCC"),
            Some("primary-flagger-cookie=PPPPPPPPPP"),
            None,
        );
        let vs = o.virtual_service_with(&Routes::split(10, RouteScope::All), &c);
        let mut primary = dest("podinfo-primary", 90);
        primary["headers"] = json!({"response": {"add": {
            "Set-Cookie": format!("primary-flagger-cookie=PPPPPPPPPP; Max-Age=15{ATTRS}")}}});
        let mut canary = dest("podinfo-canary", 10);
        canary["headers"] = json!({"response": {"add": {
            "Set-Cookie": format!("canary-flagger-cookie=CCCCCCCCCC; Max-Age=21600{ATTRS}")}}});
        assert_eq!(
            vs["spec"]["http"],
            json!([
                {"name": "sticky-route",
                 "match": [{"headers": {"Cookie": {"regex": ".*canary-flagger-cookie.*CCCCCCCCCC.*"}}}],
                 "route": [dest("podinfo-primary", 0), dest("podinfo-canary", 100)]},
                {"name": "sticky-primary-route",
                 "match": [{"headers": {"Cookie": {"regex": ".*primary-flagger-cookie.*PPPPPPPPPP.*"}}}],
                 "route": [dest("podinfo-primary", 100), dest("podinfo-canary", 0)]},
                {"route": [primary, canary]},
            ])
        );
        assert_eq!(
            vs["spec"]["gateways"],
            json!(["istio-system/istio-ingressgateway"])
        );
    }

    #[test]
    fn session_affinity_expires_the_last_cookie_once_the_canary_has_no_traffic() {
        let o = sticky(false);
        let done = cookies(None, None, Some("canary-flagger-cookie=CCCCCCCCCC"));
        let vs = o.virtual_service_with(&Routes::PRIMARY, &done);
        assert_eq!(
            vs["spec"]["http"],
            json!([
                {"name": "sticky-route",
                 "match": [{"headers": {"Cookie": {"regex": ".*canary-flagger-cookie.*CCCCCCCCCC.*"}}}],
                 "headers": {"response": {"add": {
                    "Set-Cookie": format!("canary-flagger-cookie=CCCCCCCCCC; Max-Age=-1{ATTRS}")}}},
                 "route": [dest("podinfo-primary", 100), dest("podinfo-canary", 0)]},
                {"route": [dest("podinfo-primary", 100), dest("podinfo-canary", 0)]},
            ])
        );
        // No cookie to expire: Flagger's sticky route is a copy of the weighted one.
        let vs = o.virtual_service_with(&Routes::PRIMARY, &Cookies::default());
        let weighted = json!({"route": [dest("podinfo-primary", 100), dest("podinfo-canary", 0)]});
        let mut copy = weighted.clone();
        copy["name"] = json!("sticky-route");
        assert_eq!(vs["spec"]["http"], json!([copy, weighted]));
    }

    #[test]
    fn session_affinity_keeps_its_cookies_across_writes_and_reads_back_the_weighted_route() {
        for primary in [false, true] {
            let o = sticky(primary);
            crate::routing::testing::check_sticky_run(
                primary,
                [10, 30, 100],
                |routes, last| {
                    let vs = o.virtual_service_after(routes, last);
                    match serde_json::from_value::<DynamicObject>(vs.clone()) {
                        Ok(d) => serde_json::to_value(&d).unwrap_or_default(),
                        Err(e) => panic!("{e}: {vs}"),
                    }
                },
                |read| o.routes_of(read),
                |read| read["spec"]["http"][0]["match"][0].clone(),
            );
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]
        #[test]
        fn any_routes_read_back_as_written_with_session_affinity(
            routes in crate::routing::testing::any_routes(false)
        ) {
            let o = sticky(true);
            proptest::prop_assert_eq!(read_back(&o, &routes), Ok(canonical(&routes)));
        }
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
