//! NGINX Ingress: the Canary's `spec.ingressRef` names the user's Ingress, which routes to the apex
//! Service. The router keeps a copy of it, `<ingress>-canary`, whose backends point at
//! `<svc>-canary` and which ingress-nginx treats as the canary of the original
//! (`nginx.ingress.kubernetes.io/canary: "true"`): `canary-weight` carries the canary's share,
//! and A/B testing routes the requests carrying one header (`canary-by-header`, with
//! `-value` or `-pattern`) or one cookie (`canary-by-cookie`) to the canary, everything else
//! staying on the primary (weight 0). The copy is refreshed from the user's Ingress on every
//! change, as Flagger does; ingress-nginx reports no status to wait on.

use futures::future::BoxFuture;
use k8s_openapi::api::networking::v1::Ingress;
use kube::api::{Api, Patch};
use serde_json::{json, Map, Value};

use crate::cluster::{apply_params, retry, ClusterError, MANAGED_BY};
use crate::workload::Workloads;
use aviary_core::engine::{RouteScope, Routes};
use aviary_core::spec::{Canary, HttpMatch, StringMatch};

use super::{canonical, regex_escape, Observed, TrafficRouter};

const PREFIX: &str = "nginx.ingress.kubernetes.io";

pub struct Nginx {
    api: Api<Ingress>,
    objects: NginxObjects,
    /// `service.previewHosts` (see [`super::preview`]).
    preview: super::preview::PreviewState,
}

impl Nginx {
    pub fn new(canary: &Canary, workloads: &Workloads) -> Result<Nginx, ClusterError> {
        let objects = NginxObjects::new(canary, &workloads.namespace, &workloads.service)?;
        Ok(Nginx {
            api: Api::namespaced(workloads.client().clone(), &workloads.namespace),
            objects,
            preview: super::preview::PreviewState::new(canary, &aviary_core::spec::Provider::Nginx),
        })
    }
}

impl TrafficRouter for Nginx {
    fn name(&self) -> &'static str {
        "nginx"
    }

    fn set_routes<'a>(&'a self, routes: &'a Routes) -> BoxFuture<'a, Result<(), ClusterError>> {
        Box::pin(async move {
            let o = &self.objects;
            let what = format!("read Ingress {}.{}", o.ingress, o.namespace);
            let found = retry(&what, || self.api.get_opt(&o.ingress)).await?;
            let Some(ingress) = found else {
                return Err(ClusterError::Invalid(format!(
                    "Ingress {}.{} (the Canary's ingressRef) does not exist; apply it, with a \
                     backend pointing at the Service {}, before the rollout",
                    o.ingress, o.namespace, o.service
                )));
            };
            let user = serde_json::to_value(&ingress)
                .map_err(|e| ClusterError::Invalid(format!("Ingress {}: {e}", o.ingress)))?;
            let copy = o.canary_ingress(&user, routes)?;
            let what = format!("apply Ingress {}.{}", o.canary_ingress, o.namespace);
            let (params, patch) = (apply_params(), Patch::Apply(&copy));
            retry(&what, || self.api.patch(&o.canary_ingress, &params, &patch)).await?;
            let name = super::preview::object_name(&o.ingress);
            self.preview
                .reconcile(&self.api, "Ingress", &name, |hosts| {
                    super::preview::ingress(
                        &user,
                        &o.service,
                        &o.canary_service,
                        hosts,
                        &name,
                        &o.namespace,
                    )
                    .map_err(|e| {
                        ClusterError::Invalid(format!(
                            "service.previewHosts: Ingress {}.{} (the Canary's ingressRef): {e}",
                            o.ingress, o.namespace
                        ))
                    })
                })
                .await?;
            Ok(())
        })
    }

    fn observed(&self) -> BoxFuture<'_, Result<Observed, ClusterError>> {
        Box::pin(async move {
            let o = &self.objects;
            let objects = format!("Ingress {}.{}", o.canary_ingress, o.namespace);
            let what = format!("read {objects}");
            let Some(ingress) = retry(&what, || self.api.get_opt(&o.canary_ingress)).await? else {
                return Ok(Observed {
                    objects,
                    routes: None,
                });
            };
            let value = serde_json::to_value(&ingress)
                .map_err(|e| ClusterError::Invalid(format!("{objects}: {e}")))?;
            let routes =
                routes_of(&value).map_err(|e| ClusterError::Invalid(format!("{objects}: {e}")))?;
            Ok(Observed {
                objects,
                routes: Some(routes),
            })
        })
    }

    fn expressed<'a>(&'a self, routes: &'a Routes) -> BoxFuture<'a, Result<Routes, ClusterError>> {
        Box::pin(async move { Ok(expressed(routes)) })
    }
}

/// The annotations of the user's Ingress `user` (as JSON) that its copies keep (rewrites,
/// timeouts, the class...): all but its own canary settings and kubectl's last-applied copy.
pub(super) fn user_annotations(user: &Value) -> Map<String, Value> {
    user.pointer("/metadata/annotations")
        .and_then(Value::as_object)
        .map(|a| {
            a.iter()
                .filter(|(k, _)| {
                    !k.starts_with(&format!("{PREFIX}/canary"))
                        && k.as_str() != "kubectl.kubernetes.io/last-applied-configuration"
                })
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
        .unwrap_or_default()
}

/// What a canary Ingress written for `routes` reads back as: ingress-nginx cannot mirror, and
/// its A/B condition sends every matching request to the canary (the engine asks for A/B routes
/// only when the Canary has an `analysis.match`, which is then the condition).
pub fn expressed(routes: &Routes) -> Routes {
    let r = if routes.scope == RouteScope::Matched && routes.canary > 0 {
        Routes::split(100, RouteScope::Matched)
    } else {
        Routes::split(routes.canary, RouteScope::All)
    };
    canonical(&r)
}

/// What a canary Ingress says, from its annotations, whoever changed them since
/// [`NginxObjects::canary_ingress`] wrote them: `canary-weight` out of `canary-weight-total`
/// (default 100), or, with `canary-by-header` or `canary-by-cookie`, every matching request on
/// the canary and the rest on the primary.
pub fn routes_of(ingress: &Value) -> Result<Routes, String> {
    let annotations = ingress
        .pointer("/metadata/annotations")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let get = |k: &str| {
        annotations
            .get(&format!("{PREFIX}/{k}"))
            .and_then(Value::as_str)
    };
    if get("canary") != Some("true") {
        return Err(format!(
            "its annotation {PREFIX}/canary is {:?}, not \"true\": ingress-nginx does not treat it \
             as a canary",
            get("canary").unwrap_or("absent")
        ));
    }
    let integer = |k: &str, default: u64| -> Result<u64, String> {
        match get(k) {
            None => Ok(default),
            Some(v) => v
                .trim()
                .parse::<u64>()
                .map_err(|_| format!("its annotation {PREFIX}/{k} is {v:?}, not a whole number")),
        }
    };
    let weight = integer("canary-weight", 0)?;
    let total = integer("canary-weight-total", 100)?;
    if total == 0 {
        return Err(format!("its annotation {PREFIX}/canary-weight-total is 0"));
    }
    let canary = u32::try_from(((weight.min(total)) * 100 + total / 2) / total).unwrap_or(100);
    let condition = ["canary-by-header", "canary-by-cookie"]
        .into_iter()
        .find(|k| get(k).is_some());
    match condition {
        None => Ok(canonical(&Routes::split(canary, RouteScope::All))),
        Some(_) if canary == 0 => Ok(Routes::split(100, RouteScope::Matched)),
        Some(k) => Err(format!(
            "it sends the requests matching {PREFIX}/{k} to the canary and {canary}% of the \
             others: a split aviary does not write"
        )),
    }
}

/// The one request condition an ingress-nginx canary can test.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AbCondition {
    /// `canary-by-header` with `canary-by-header-value`.
    Header { name: String, value: String },
    /// `canary-by-header` with `canary-by-header-pattern`.
    HeaderPattern { name: String, pattern: String },
    /// `canary-by-cookie`: the cookie's name (the canary gets requests where it is `always`).
    Cookie(String),
}

/// The canary Ingress of one Canary, as JSON; no cluster access.
pub struct NginxObjects {
    namespace: String,
    /// The apex Service, which the user's Ingress routes to.
    service: String,
    canary_service: String,
    /// The user's Ingress (`spec.ingressRef`).
    ingress: String,
    /// `<ingress>-canary`.
    canary_ingress: String,
    ab: Option<AbCondition>,
}

impl NginxObjects {
    pub fn new(
        canary: &Canary,
        namespace: &str,
        service: &str,
    ) -> Result<NginxObjects, ClusterError> {
        let name = canary.qualified_name();
        let Some(r) = &canary.ingress_ref else {
            return Err(ClusterError::Invalid(format!(
                "{name}: provider nginx needs spec.ingressRef, naming the Ingress that routes to \
                 the Service {service} (ingressRef: {{apiVersion: networking.k8s.io/v1, kind: \
                 Ingress, name: ...}})"
            )));
        };
        if let Some(kind) = r.kind.as_deref().filter(|k| *k != "Ingress") {
            return Err(ClusterError::Invalid(format!(
                "{name}: spec.ingressRef.kind is {kind}; provider nginx needs an Ingress"
            )));
        }
        if let Some(ns) = r.namespace.as_deref().filter(|ns| *ns != namespace) {
            return Err(ClusterError::Invalid(format!(
                "{name}: spec.ingressRef names an Ingress in namespace {ns}; it must be in the \
                 Canary's namespace {namespace}, next to the Service {service}"
            )));
        }
        let analysis = canary.analysis.clone().unwrap_or_default();
        if analysis.mirror {
            tracing::warn!(
                "{name}: ingress-nginx cannot mirror traffic to a canary; analysis.mirror is ignored"
            );
        }
        let ab = ab_condition(&analysis.r#match)
            .map_err(|e| ClusterError::Invalid(format!("{name}: analysis.match: {e}")))?;
        Ok(NginxObjects {
            namespace: namespace.to_string(),
            service: service.to_string(),
            canary_service: format!("{service}-canary"),
            ingress: r.name.clone(),
            canary_ingress: format!("{}-canary", r.name),
            ab,
        })
    }

    /// The annotations that route `routes` (all under `nginx.ingress.kubernetes.io/`).
    pub fn route_annotations(&self, routes: &Routes) -> Map<String, Value> {
        let mut out = Map::new();
        let mut set = |k: &str, v: String| {
            out.insert(format!("{PREFIX}/{k}"), Value::String(v));
        };
        set("canary", "true".into());
        match (&self.ab, routes.scope) {
            (Some(ab), RouteScope::Matched) if routes.canary > 0 => {
                // Matching requests go to the canary; the rest stay on the primary.
                set("canary-weight", "0".into());
                match ab {
                    AbCondition::Header { name, value } => {
                        set("canary-by-header", name.clone());
                        set("canary-by-header-value", value.clone());
                    }
                    AbCondition::HeaderPattern { name, pattern } => {
                        set("canary-by-header", name.clone());
                        set("canary-by-header-pattern", pattern.clone());
                    }
                    AbCondition::Cookie(cookie) => set("canary-by-cookie", cookie.clone()),
                }
            }
            _ => set("canary-weight", routes.canary.to_string()),
        }
        out
    }

    /// `<ingress>-canary` for the user's Ingress `user` (as JSON) and `routes`.
    pub fn canary_ingress(&self, user: &Value, routes: &Routes) -> Result<Value, ClusterError> {
        let mut spec = user.get("spec").cloned().unwrap_or_else(|| json!({}));
        let mut rewritten = 0;
        let mut retarget = |backend: Option<&mut Value>| {
            if let Some(name) = backend.and_then(|b| b.pointer_mut("/service/name")) {
                if name.as_str() == Some(self.service.as_str()) {
                    *name = json!(self.canary_service);
                    rewritten += 1;
                }
            }
        };
        retarget(spec.get_mut("defaultBackend"));
        if let Some(rules) = spec.get_mut("rules").and_then(Value::as_array_mut) {
            for rule in rules {
                if let Some(paths) = rule
                    .pointer_mut("/http/paths")
                    .and_then(Value::as_array_mut)
                {
                    for path in paths {
                        retarget(path.get_mut("backend"));
                    }
                }
            }
        }
        if rewritten == 0 {
            return Err(ClusterError::Invalid(format!(
                "Ingress {}.{} (the Canary's ingressRef) has no backend for the Service {}; \
                 point its paths at {} so that aviary can route a share of them to {}",
                self.ingress, self.namespace, self.service, self.service, self.canary_service
            )));
        }
        let mut labels: Map<String, Value> = user
            .pointer("/metadata/labels")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        labels.insert(MANAGED_BY.0.into(), json!(MANAGED_BY.1));
        let mut annotations = user_annotations(user);
        annotations.extend(self.route_annotations(routes));
        Ok(json!({
            "apiVersion": "networking.k8s.io/v1",
            "kind": "Ingress",
            "metadata": {
                "name": self.canary_ingress,
                "namespace": self.namespace,
                "labels": labels,
                "annotations": annotations,
            },
            "spec": spec,
        }))
    }
}

/// The single header or cookie condition of `analysis.match`, or why it cannot be expressed.
fn ab_condition(matches: &[HttpMatch]) -> Result<Option<AbCondition>, String> {
    if matches.is_empty() {
        return Ok(None);
    }
    let mut conditions: Vec<String> = Vec::new();
    let mut found = None;
    for m in matches {
        let mut other = |set: bool, what: &str| {
            if set {
                conditions.push(what.to_string());
            }
        };
        other(m.uri.is_some(), "uri");
        other(m.method.is_some(), "method");
        other(m.scheme.is_some(), "scheme");
        other(m.authority.is_some(), "authority");
        other(m.ignore_uri_case, "ignoreUriCase");
        other(m.port.is_some(), "port");
        other(!m.source_labels.is_empty(), "sourceLabels");
        other(m.source_namespace.is_some(), "sourceNamespace");
        other(!m.gateways.is_empty(), "gateways");
        for name in m.query_params.keys() {
            conditions.push(format!("queryParams.{name}"));
        }
        for name in m.without_headers.keys() {
            conditions.push(format!("withoutHeaders.{name}"));
        }
        for (name, sm) in &m.headers {
            conditions.push(format!("headers.{name}"));
            found = Some(if name.eq_ignore_ascii_case("cookie") {
                match sm {
                    StringMatch::Exact(v) => AbCondition::Cookie(v.clone()),
                    _ => {
                        return Err(
                            "ingress-nginx matches a cookie by its name (the canary gets \
                                    requests where it is set to `always`); write \
                                    headers: {cookie: {exact: <cookie name>}}"
                                .into(),
                        )
                    }
                }
            } else {
                match sm {
                    StringMatch::Exact(v) => AbCondition::Header {
                        name: name.clone(),
                        value: v.clone(),
                    },
                    StringMatch::Regex(v) => AbCondition::HeaderPattern {
                        name: name.clone(),
                        pattern: v.clone(),
                    },
                    StringMatch::Prefix(v) => AbCondition::HeaderPattern {
                        name: name.clone(),
                        pattern: format!("^{}.*", regex_escape(v)),
                    },
                    StringMatch::Suffix(v) => AbCondition::HeaderPattern {
                        name: name.clone(),
                        pattern: format!(".*{}$", regex_escape(v)),
                    },
                }
            });
        }
    }
    match (conditions.len(), found) {
        (1, Some(c)) => Ok(Some(c)),
        (0, _) => Err("no condition to match: give one header or cookie".into()),
        (1, None) => Err(format!(
            "ingress-nginx cannot route on {}; match one header or one cookie",
            conditions.join(", ")
        )),
        (_, _) => Err(format!(
            "ingress-nginx can route one header or one cookie to the canary, but the match has \
             {}: {}; keep a single headers entry (or cookie)",
            conditions.len(),
            conditions.join(", ")
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canary(extra: &str, analysis: &str) -> Canary {
        let text = format!(
            "apiVersion: aviary.dev/v1alpha1
kind: Canary
metadata:
  name: podinfo
  namespace: test
spec:
  provider: nginx
  targetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: podinfo
{extra}
  service:
    port: 9898
  analysis:
    interval: 1s
{analysis}
"
        );
        crate::routing::testing::the_canary(&text)
    }

    const REF: &str = "  ingressRef: {apiVersion: networking.k8s.io/v1, kind: Ingress, name: web}";

    fn error(extra: &str, analysis: &str) -> String {
        match NginxObjects::new(&canary(extra, analysis), "test", "podinfo") {
            Err(e) => e.to_string(),
            Ok(_) => panic!("accepted: {analysis}"),
        }
    }

    fn user_ingress() -> Value {
        json!({
            "metadata": {
                "name": "web",
                "labels": {"team": "a"},
                "annotations": {
                    "nginx.ingress.kubernetes.io/rewrite-target": "/",
                    "nginx.ingress.kubernetes.io/canary-weight": "50",
                    "kubectl.kubernetes.io/last-applied-configuration": "{}",
                },
            },
            "spec": {
                "ingressClassName": "nginx",
                "tls": [{"hosts": ["app.example.com"], "secretName": "tls"}],
                "rules": [{"host": "app.example.com", "http": {"paths": [
                    {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "podinfo", "port": {"number": 9898}}}},
                    {"path": "/other", "pathType": "Prefix", "backend": {"service": {"name": "other", "port": {"number": 80}}}},
                ]}}],
            },
        })
    }

    #[test]
    fn the_copy_routes_the_apex_backends_to_the_canary_by_weight() {
        let o = match NginxObjects::new(&canary(REF, "    stepWeight: 10"), "test", "podinfo") {
            Ok(o) => o,
            Err(e) => panic!("{e}"),
        };
        let copy = match o.canary_ingress(&user_ingress(), &Routes::split(30, RouteScope::All)) {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(copy["metadata"]["name"], "web-canary");
        assert_eq!(
            copy["metadata"]["annotations"],
            json!({
                "nginx.ingress.kubernetes.io/rewrite-target": "/",
                "nginx.ingress.kubernetes.io/canary": "true",
                "nginx.ingress.kubernetes.io/canary-weight": "30",
            })
        );
        assert_eq!(copy["metadata"]["labels"]["team"], "a");
        assert_eq!(copy["metadata"]["labels"][MANAGED_BY.0], MANAGED_BY.1);
        let paths = &copy["spec"]["rules"][0]["http"]["paths"];
        assert_eq!(paths[0]["backend"]["service"]["name"], "podinfo-canary");
        assert_eq!(paths[1]["backend"]["service"]["name"], "other");
        assert_eq!(copy["spec"]["ingressClassName"], "nginx");
        assert_eq!(copy["spec"]["tls"][0]["secretName"], "tls");
        let no_apex = json!({"spec": {"rules": [{"http": {"paths": [
            {"path": "/", "backend": {"service": {"name": "other"}}}]}}]}});
        match o.canary_ingress(&no_apex, &Routes::PRIMARY) {
            Err(e) => assert!(e
                .to_string()
                .contains("has no backend for the Service podinfo")),
            Ok(_) => panic!("an Ingress without the apex backend was accepted"),
        }
    }

    #[test]
    fn ab_testing_sets_one_header_or_cookie_and_drops_it_when_done() {
        for (matched, expected) in [
            (
                "headers: {x-canary: {exact: insider}}",
                json!({"canary-by-header": "x-canary", "canary-by-header-value": "insider"}),
            ),
            (
                "headers: {x-canary: {regex: \"^(a|b)$\"}}",
                json!({"canary-by-header": "x-canary", "canary-by-header-pattern": "^(a|b)$"}),
            ),
            (
                "headers: {x-user: {prefix: beta.}}",
                json!({"canary-by-header": "x-user", "canary-by-header-pattern": "^beta\\..*"}),
            ),
            (
                "headers: {Cookie: {exact: canary}}",
                json!({"canary-by-cookie": "canary"}),
            ),
        ] {
            let c = canary(
                REF,
                &format!("    iterations: 2\n    match:\n      - {matched}"),
            );
            let o = match NginxObjects::new(&c, "test", "podinfo") {
                Ok(o) => o,
                Err(e) => panic!("{matched}: {e}"),
            };
            let mut want = Map::new();
            want.insert(format!("{PREFIX}/canary"), json!("true"));
            want.insert(format!("{PREFIX}/canary-weight"), json!("0"));
            for (k, v) in expected.as_object().cloned().unwrap_or_default() {
                want.insert(format!("{PREFIX}/{k}"), v);
            }
            assert_eq!(
                o.route_annotations(&Routes::split(100, RouteScope::Matched)),
                want,
                "{matched}"
            );
            let back = o.route_annotations(&Routes::PRIMARY);
            assert_eq!(back.len(), 2, "{matched}: {back:?}");
            assert_eq!(back[&format!("{PREFIX}/canary-weight")], "0");
        }
    }

    #[test]
    fn what_ingress_nginx_cannot_express_is_refused_by_name() {
        assert!(error("", "    stepWeight: 10").contains("provider nginx needs spec.ingressRef"));
        let e = error(
            REF,
            "    iterations: 2\n    match:\n      - headers: {x-a: {exact: b}}\n      - headers: {x-c: {exact: d}}",
        );
        assert!(
            e.contains("the match has 2: headers.x-a, headers.x-c"),
            "{e}"
        );
        let e = error(
            REF,
            "    iterations: 2\n    match:\n      - headers: {x-a: {exact: b}}\n        queryParams: {beta: {exact: \"1\"}}",
        );
        assert!(e.contains("queryParams.beta"), "{e}");
        let e = error(
            REF,
            "    iterations: 2\n    match:\n      - headers: {x-a: {exact: b}}\n        method: {exact: GET}",
        );
        assert!(e.contains("the match has 2: method, headers.x-a"), "{e}");
        let e = error(
            REF,
            "    iterations: 2\n    match:\n      - headers: {cookie: {regex: \"canary=.*\"}}",
        );
        assert!(e.contains("matches a cookie by its name"), "{e}");
    }

    fn objects(analysis: &str) -> NginxObjects {
        match NginxObjects::new(&canary(REF, analysis), "test", "podinfo") {
            Ok(o) => o,
            Err(e) => panic!("{e}"),
        }
    }

    /// What set_routes applies, read back the way `observed` reads it (a typed Ingress).
    fn read_back(o: &NginxObjects, routes: &Routes) -> Result<Routes, String> {
        let copy = o
            .canary_ingress(&user_ingress(), routes)
            .map_err(|e| e.to_string())?;
        let typed: Ingress = serde_json::from_value(copy).map_err(|e| e.to_string())?;
        routes_of(&serde_json::to_value(&typed).map_err(|e| e.to_string())?)
    }

    const AB: &str = "    iterations: 2\n    match:\n      - headers: {x-canary: {exact: insider}}";

    #[test]
    fn every_canary_ingress_set_routes_writes_reads_back_as_ingress_nginx_routes_it() {
        let weighted = objects("    stepWeight: 10");
        for (routes, read) in [
            (Routes::PRIMARY, Routes::PRIMARY),
            (
                Routes::split(30, RouteScope::All),
                Routes::split(30, RouteScope::All),
            ),
            (
                Routes::split(100, RouteScope::All),
                Routes::split(100, RouteScope::All),
            ),
            // ingress-nginx cannot mirror: a mirror reads back as what it is, no mirror.
            (
                Routes {
                    mirror: true,
                    mirror_weight: Some(20),
                    ..Routes::PRIMARY
                },
                Routes::PRIMARY,
            ),
        ] {
            assert_eq!(read_back(&weighted, &routes), Ok(read), "{routes:?}");
            assert_eq!(expressed(&routes), read, "{routes:?}");
        }
        let ab = objects(AB);
        let matched = Routes::split(100, RouteScope::Matched);
        assert_eq!(read_back(&ab, &matched), Ok(matched));
        assert_eq!(read_back(&ab, &Routes::PRIMARY), Ok(Routes::PRIMARY));
    }

    #[test]
    fn a_canary_ingress_changed_by_hand_is_read_as_ingress_nginx_routes_it() {
        let with = |annotations: Value| json!({"metadata": {"annotations": annotations}});
        let c = |k: &str| format!("{PREFIX}/{k}");
        let r = routes_of(&with(
            json!({c("canary"): "true", c("canary-weight"): "40"}),
        ));
        assert_eq!(r, Ok(Routes::split(40, RouteScope::All)));
        let r = routes_of(&with(json!({c("canary"): "true", c("canary-weight"): "1",
            c("canary-weight-total"): "4"})));
        assert_eq!(r, Ok(Routes::split(25, RouteScope::All)));
        let r = routes_of(&with(
            json!({c("canary"): "true", c("canary-by-cookie"): "beta"}),
        ));
        assert_eq!(r, Ok(Routes::split(100, RouteScope::Matched)));
        for (annotations, says) in [
            (
                json!({c("canary-weight"): "40"}),
                "is \"absent\", not \"true\"",
            ),
            (
                json!({c("canary"): "true", c("canary-weight"): "lots"}),
                "not a whole number",
            ),
            (
                json!({c("canary"): "true", c("canary-weight"): "10", c("canary-by-header"): "x"}),
                "a split aviary does not write",
            ),
        ] {
            match routes_of(&with(annotations.clone())) {
                Err(e) => assert!(e.contains(says), "{annotations}: {e}"),
                Ok(r) => panic!("{annotations}: read as {r:?}"),
            }
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]
        #[test]
        fn any_routes_read_back_as_the_router_says_it_expresses_them(
            routes in crate::routing::testing::any_routes(true),
        ) {
            let o = objects(AB);
            proptest::prop_assert_eq!(read_back(&o, &routes), Ok(expressed(&routes)));
        }

        #[test]
        fn any_weighted_routes_read_back_as_the_router_says_it_expresses_them(
            routes in crate::routing::testing::any_routes(false),
        ) {
            let o = objects("    stepWeight: 10");
            proptest::prop_assert_eq!(read_back(&o, &routes), Ok(expressed(&routes)));
        }
    }
}
