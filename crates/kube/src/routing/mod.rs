//! Traffic routers: one small trait, one file per provider. A router turns the engine's
//! [`Routes`] into the provider's objects and reports when they are in effect.

pub mod gatewayapi;
pub mod gloo;
pub mod istio;
pub mod kubernetes;
pub mod nginx;
pub mod preview;
pub(crate) mod sticky;

use futures::future::BoxFuture;
use serde_json::{Map, Value};

use crate::cluster::ClusterError;
use crate::workload::Workloads;
use aviary_core::engine::{RouteScope, Routes};
use aviary_core::spec::{Canary, Diagnostic, Provider};

/// What every traffic provider does for the engine.
pub trait TrafficRouter: Send + Sync {
    /// The provider's name, for messages.
    fn name(&self) -> &'static str;

    /// Puts `routes` in place and returns once the provider has accepted them. Idempotent: the
    /// first call creates the routing objects.
    fn set_routes<'a>(&'a self, routes: &'a Routes) -> BoxFuture<'a, Result<(), ClusterError>>;

    /// Reads back what the provider's routing objects express now: the objects `set_routes`
    /// writes, parsed the way it writes them, whoever wrote them last. Read-only. An object that
    /// exists but says something [`Routes`] cannot hold (a third backend with a weight, both
    /// weights zero) is an error naming the object and what it says.
    fn observed(&self) -> BoxFuture<'_, Result<Observed, ClusterError>>;

    /// What [`TrafficRouter::observed`] reads back after `set_routes(routes)`, in
    /// [`canonical`] form: `routes` itself, unless the provider cannot express all of it (the
    /// replica ratio rounds to whole replicas, blue/green keeps the apex on the primary,
    /// ingress-nginx cannot mirror and sends every request matching its A/B condition to the
    /// canary). Read-only. Compare it with `observed` to tell whether the objects still say what
    /// the engine last ordered.
    fn expressed<'a>(&'a self, routes: &'a Routes) -> BoxFuture<'a, Result<Routes, ClusterError>> {
        Box::pin(async move { Ok(canonical(routes)) })
    }
}

/// What a router's objects say, read by [`TrafficRouter::observed`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    /// The objects read, for messages, e.g. `HTTPRoute podinfo.test`.
    pub objects: String,
    /// The routing they express, in [`canonical`] form; `None` when they do not exist yet.
    pub routes: Option<Routes>,
}

/// `routes` with the details that do not change where a request goes made uniform, so that two
/// routings that send traffic the same way compare equal: no mirror weight without mirroring, a
/// 100% mirror written as `None` (all), and no A/B scope when nothing goes to the canary.
pub fn canonical(routes: &Routes) -> Routes {
    let mut r = *routes;
    if !r.mirror || r.mirror_weight == Some(100) {
        r.mirror_weight = None;
    }
    if r.canary == 0 && !r.mirror {
        r.scope = RouteScope::All;
    }
    r
}

/// Two backend weights on the provider's own scale (Gateway API and Istio weigh relative to
/// the sum) as whole percentages `(primary, canary)`, the canary's share rounded.
pub(crate) fn percentages(primary: u64, canary: u64) -> Result<(u32, u32), String> {
    let total = u128::from(primary) + u128::from(canary);
    if total == 0 {
        return Err(
            "both the primary's and the canary's weight are 0, so no request is routed".into(),
        );
    }
    let c = (u128::from(canary) * 100 + total / 2) / total;
    let c = u32::try_from(c.min(100)).unwrap_or(100);
    Ok((100 - c, c))
}

/// A weight or percentage as a JSON number: a non-negative integer, or a float rounded (Istio's
/// `mirrorPercentage.value` and Gloo's shadowing `percentage` are doubles).
pub(crate) fn number(v: &Value, what: &str) -> Result<u64, String> {
    if let Some(n) = v.as_u64() {
        return Ok(n);
    }
    match v.as_f64() {
        Some(f) if f.is_finite() && f >= 0.0 => Ok(f.round() as u64),
        _ => Err(format!("{what} is {v}, not a non-negative number")),
    }
}

/// The providers aviary can drive on a cluster.
pub const SUPPORTED: [&str; 10] = [
    "kubernetes",
    "kubernetes:replicas",
    "gatewayapi",
    "istio",
    "gloo",
    "nginx",
    "linkerd",
    "kuma",
    "contour",
    "traefik",
];

pub fn supported(provider: &Provider) -> bool {
    matches!(
        provider,
        Provider::Kubernetes
            | Provider::KubernetesReplicas
            | Provider::GatewayApi
            | Provider::Istio
            | Provider::Gloo
            | Provider::Nginx
            | Provider::Linkerd
            | Provider::Kuma
            | Provider::Contour
            | Provider::Traefik
    )
}

/// What Flagger writes for a provider aviary routes with an HTTPRoute instead.
fn flagger_object(provider: &Provider) -> Option<(&'static str, &'static str)> {
    Some(match provider {
        Provider::Linkerd => ("an SMI TrafficSplit", "Linkerd 2.12+"),
        Provider::Kuma => ("a Kuma TrafficRoute", "Kuma"),
        Provider::Contour => ("a Contour HTTPProxy", "Contour"),
        Provider::Traefik => ("a TraefikService", "Traefik's Kubernetes Gateway provider"),
        _ => return None,
    })
}

/// Checks, before a rollout changes anything, that the router for `provider` can route
/// `canary`, and returns the line to tell the user how it will (for a provider aviary routes
/// with a different object than Flagger), if any. An error names the field and the fix.
pub fn preflight(canary: &Canary, provider: &Provider) -> Result<Option<String>, Vec<Diagnostic>> {
    let Some((flagger, implementer)) = flagger_object(provider) else {
        return Ok(None);
    };
    let service = &canary.service;
    let name = provider.name();
    if service.gateway_refs.is_empty() && !provider.mesh() {
        return Err(vec![Diagnostic::error(
            &canary.origin.file,
            canary.origin.line,
            "spec.service.gatewayRefs",
            format!(
                "provider {name}: aviary routes {} with a Gateway API HTTPRoute (where Flagger writes {flagger}), which needs the Gateway to attach it to, and spec.service.gatewayRefs is empty",
                canary.qualified_name()
            ),
        )
        .with_help(format!(
            "add `gatewayRefs: [{{name: GATEWAY, namespace: GATEWAY_NAMESPACE}}]` under spec.service, naming the {implementer} Gateway that serves this host"
        ))]);
    }
    let parents = if service.gateway_refs.is_empty() {
        format!(
            "the apex Service {} port {} (GAMMA mesh routing)",
            service.name, service.port
        )
    } else {
        service
            .gateway_refs
            .iter()
            .map(|g| {
                let kind = g.kind.as_deref().unwrap_or("Gateway");
                match &g.namespace {
                    Some(ns) => format!("{kind} {ns}/{}", g.name),
                    None => format!("{kind} {}", g.name),
                }
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    Ok(Some(format!(
        "provider {name}: aviary routes {} with the Gateway API HTTPRoute {} that {implementer} implements, attached to {parents}; Flagger would write {flagger} instead",
        canary.qualified_name(),
        service.name
    )))
}

/// The router for a Canary's provider.
pub fn for_canary(
    canary: &Canary,
    provider: &Provider,
    workloads: &Workloads,
) -> Result<Box<dyn TrafficRouter>, ClusterError> {
    match provider {
        Provider::Kubernetes => Ok(Box::new(kubernetes::BlueGreen::new(workloads))),
        Provider::KubernetesReplicas => Ok(Box::new(kubernetes::ReplicaRatio::new(workloads))),
        Provider::GatewayApi
        | Provider::Linkerd
        | Provider::Kuma
        | Provider::Contour
        | Provider::Traefik => Ok(Box::new(gatewayapi::GatewayApi::new(
            canary, provider, workloads,
        )?)),
        Provider::Istio => Ok(Box::new(istio::Istio::new(canary, workloads)?)),
        Provider::Gloo => Ok(Box::new(gloo::Gloo::new(canary, workloads)?)),
        Provider::Nginx => Ok(Box::new(nginx::Nginx::new(canary, workloads)?)),
        other => Err(ClusterError::Invalid(format!(
            "{}: aviary cannot drive the {} provider yet (it drives {})",
            canary.qualified_name(),
            other.name(),
            SUPPORTED.join(", ")
        ))),
    }
}

/// The provider [`Provider::name`] calls `name` (as the saved engine's `Config::provider` holds
/// it), if aviary drives it.
pub fn provider_named(name: &str) -> Option<Provider> {
    match name {
        "kubernetes" => Some(Provider::Kubernetes),
        "kubernetes:replicas" => Some(Provider::KubernetesReplicas),
        "gatewayapi" | "gatewayapi:v1" | "gatewayapi:v1beta1" => Some(Provider::GatewayApi),
        "istio" => Some(Provider::Istio),
        "gloo" => Some(Provider::Gloo),
        "nginx" => Some(Provider::Nginx),
        "linkerd" => Some(Provider::Linkerd),
        "kuma" => Some(Provider::Kuma),
        "contour" => Some(Provider::Contour),
        "traefik" => Some(Provider::Traefik),
        _ => None,
    }
}

/// A read-only router for a canary known only by its saved engine: `aviary status` has the
/// canary's name, not its spec. The Canary is rebuilt from what the state and the cluster say:
/// the target and the provider from the saved `Config`, the apex Service (name and port) from the
/// Services aviary created at bootstrap, and for nginx the user's Ingress from the canary Ingress
/// aviary wrote. That is all [`TrafficRouter::observed`] and [`TrafficRouter::expressed`] read;
/// the spec's other settings (matches, hosts, headers...) are unknown here, so `set_routes`
/// refuses to run.
pub async fn for_saved(
    client: kube::Client,
    config: &aviary_core::engine::Config,
) -> Result<Box<dyn TrafficRouter>, ClusterError> {
    let provider = provider_named(&config.provider).ok_or_else(|| {
        ClusterError::Invalid(format!(
            "{}: the saved state names provider {:?}, which aviary cannot read routing objects of (it drives {})",
            config.qualified(),
            config.provider,
            SUPPORTED.join(", ")
        ))
    })?;
    let mut canary = saved::canary(config, &provider, &config.target, 0, None);
    let workloads = Workloads::discover(client.clone(), &canary, &provider).await?;
    let (service, port) = saved::apex_service(&client, &workloads)
        .await?
        .unwrap_or_else(|| (config.target.clone(), 0));
    let ingress = match provider {
        Provider::Nginx => {
            match saved::user_ingress(&client, &workloads.namespace, &service).await? {
                Some(name) => Some(name),
                None => {
                    return Ok(Box::new(saved::Absent {
                        provider: "nginx",
                        objects: format!(
                            "a canary Ingress for Service {service}-canary.{}",
                            workloads.namespace
                        ),
                    }))
                }
            }
        }
        _ => None,
    };
    canary = saved::canary(config, &provider, &service, port, ingress);
    let workloads = if service == workloads.service {
        workloads
    } else {
        Workloads::discover(client, &canary, &provider).await?
    };
    Ok(Box::new(saved::ReadOnly(for_canary(
        &canary, &provider, &workloads,
    )?)))
}

mod saved {
    //! What [`super::for_saved`] reads to rebuild a Canary from its saved state.

    use futures::future::BoxFuture;
    use k8s_openapi::api::core::v1::Service;
    use k8s_openapi::api::networking::v1::Ingress;
    use kube::api::Api;
    use kube::Client;

    use super::{Observed, TrafficRouter};
    use crate::cluster::{managed_by_aviary, retry, ClusterError};
    use crate::workload::Workloads;
    use aviary_core::engine::{Config, Routes};
    use aviary_core::spec::{self, ApiVersion, Canary, ObjectRef, Origin, Provider};

    /// The Canary a saved `Config` implies, with the apex Service `service` on `port`.
    pub(super) fn canary(
        config: &Config,
        provider: &Provider,
        service: &str,
        port: u16,
        ingress: Option<String>,
    ) -> Canary {
        Canary {
            api_version: ApiVersion::AviaryV1alpha1,
            name: config.name.clone(),
            namespace: config.namespace.clone(),
            namespace_explicit: true,
            origin: Origin {
                file: format!("the saved state of {}", config.qualified()),
                line: 0,
            },
            provider: Some(provider.clone()),
            provider_written: None,
            metrics_server: None,
            target_ref: ObjectRef {
                api_version: Some("apps/v1".into()),
                kind: Some("Deployment".into()),
                name: config.target.clone(),
                namespace: None,
            },
            autoscaler_ref: None,
            ingress_ref: ingress.map(|name| ObjectRef {
                api_version: Some("networking.k8s.io/v1".into()),
                kind: Some("Ingress".into()),
                name,
                namespace: None,
            }),
            route_ref: None,
            upstream_ref: None,
            service: spec::Service {
                name: service.to_string(),
                port,
                port_name: "http".into(),
                ..spec::Service::default()
            },
            analysis: None,
            progress_deadline_seconds: 600,
            skip_analysis: false,
            revert_on_deletion: false,
            suspend: false,
        }
    }

    fn port_of(svc: &Service) -> u16 {
        svc.spec
            .as_ref()
            .and_then(|s| s.ports.as_ref())
            .and_then(|p| p.first())
            .and_then(|p| u16::try_from(p.port).ok())
            .unwrap_or(0)
    }

    /// The apex Service aviary created for the target of `w`, and its port: `<target>` when the
    /// Service `<target>-primary` selects the primary's pods (`service.name` left at its
    /// default), else the one Service aviary manages whose `-primary` sibling does. `None` when
    /// there is none (not bootstrapped yet).
    pub(super) async fn apex_service(
        client: &Client,
        w: &Workloads,
    ) -> Result<Option<(String, u16)>, ClusterError> {
        let api: Api<Service> = Api::namespaced(client.clone(), &w.namespace);
        let primary_pods = w.primary_label_value();
        let selects_primary = |svc: &Service| {
            svc.spec
                .as_ref()
                .and_then(|s| s.selector.as_ref())
                .and_then(|s| s.get(&w.label_key))
                == Some(&primary_pods)
        };
        let default = format!("{}-primary", w.target);
        let what = format!("read Service {default}.{}", w.namespace);
        if retry(&what, || api.get_opt(&default))
            .await?
            .is_some_and(|s| selects_primary(&s))
        {
            let what = format!("read Service {}.{}", w.target, w.namespace);
            let port = retry(&what, || api.get_opt(&w.target))
                .await?
                .map(|s| port_of(&s))
                .unwrap_or(0);
            return Ok(Some((w.target.clone(), port)));
        }
        let what = format!("list the Services aviary manages in {}", w.namespace);
        let params = managed_by_aviary();
        let all = retry(&what, || api.list(&params)).await?.items;
        let named = |n: &str| all.iter().find(|s| s.metadata.name.as_deref() == Some(n));
        let mut found: Vec<(String, u16)> = all
            .iter()
            .filter(|s| selects_primary(s))
            .filter_map(|s| s.metadata.name.as_deref()?.strip_suffix("-primary"))
            .filter_map(|apex| named(apex).map(|a| (apex.to_string(), port_of(a))))
            .collect();
        match found.len() {
            0 | 1 => Ok(found.pop()),
            _ => Err(ClusterError::Invalid(format!(
                "several Services in {} could be the apex of Deployment {}: {}",
                w.namespace,
                w.target,
                found
                    .iter()
                    .map(|(n, _)| n.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        }
    }

    /// Whether `ing` is a canary Ingress aviary wrote for the Service `canary_service`.
    fn routes_to(ing: &Ingress, canary_service: &str) -> bool {
        let canary = ing
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get("nginx.ingress.kubernetes.io/canary"))
            .is_some_and(|v| v == "true");
        let Some(spec) = &ing.spec else {
            return false;
        };
        let mut backends = spec.default_backend.iter().chain(
            spec.rules
                .iter()
                .flatten()
                .filter_map(|r| r.http.as_ref())
                .flat_map(|h| h.paths.iter().map(|p| &p.backend)),
        );
        canary && backends.any(|b| b.service.as_ref().is_some_and(|s| s.name == canary_service))
    }

    /// The user's Ingress (the Canary's `ingressRef`) of the canary Ingress aviary wrote for the
    /// apex Service `service`: `<ingress>-canary` routes to `<service>-canary`. `None` when there
    /// is no such Ingress yet.
    pub(super) async fn user_ingress(
        client: &Client,
        namespace: &str,
        service: &str,
    ) -> Result<Option<String>, ClusterError> {
        let api: Api<Ingress> = Api::namespaced(client.clone(), namespace);
        let canary_service = format!("{service}-canary");
        // The usual case first: the Ingress is named like the Service (one GET, no list).
        let what = format!("read Ingress {canary_service}.{namespace}");
        if retry(&what, || api.get_opt(&canary_service))
            .await?
            .is_some_and(|i| routes_to(&i, &canary_service))
        {
            return Ok(Some(service.to_string()));
        }
        let what = format!("list the Ingresses aviary manages in {namespace}");
        let params = managed_by_aviary();
        let mut found: Vec<String> = retry(&what, || api.list(&params))
            .await?
            .items
            .iter()
            .filter(|i| routes_to(i, &canary_service))
            .filter_map(|i| i.metadata.name.as_deref()?.strip_suffix("-canary"))
            .map(str::to_string)
            .collect();
        match found.len() {
            0 | 1 => Ok(found.pop()),
            _ => Err(ClusterError::Invalid(format!(
                "several canary Ingresses in {namespace} route to the Service {canary_service}: {}",
                found.join(", ")
            ))),
        }
    }

    /// A router whose objects do not exist yet and cannot be named without the spec.
    pub(super) struct Absent {
        pub provider: &'static str,
        pub objects: String,
    }

    impl TrafficRouter for Absent {
        fn name(&self) -> &'static str {
            self.provider
        }

        fn set_routes<'a>(&'a self, _: &'a Routes) -> BoxFuture<'a, Result<(), ClusterError>> {
            Box::pin(async move { Err(read_only(self.provider)) })
        }

        fn observed(&self) -> BoxFuture<'_, Result<Observed, ClusterError>> {
            Box::pin(async move {
                Ok(Observed {
                    objects: self.objects.clone(),
                    routes: None,
                })
            })
        }
    }

    /// A router rebuilt from a saved state: it reads, it does not write.
    pub(super) struct ReadOnly(pub Box<dyn TrafficRouter>);

    fn read_only(provider: &str) -> ClusterError {
        ClusterError::Invalid(format!(
            "the {provider} router was rebuilt from a saved state without the Canary's spec; \
             it can read routing objects but not write them (this is a bug)"
        ))
    }

    impl TrafficRouter for ReadOnly {
        fn name(&self) -> &'static str {
            self.0.name()
        }

        fn set_routes<'a>(&'a self, _: &'a Routes) -> BoxFuture<'a, Result<(), ClusterError>> {
            Box::pin(async move { Err(read_only(self.0.name())) })
        }

        fn observed(&self) -> BoxFuture<'_, Result<Observed, ClusterError>> {
            self.0.observed()
        }

        fn expressed<'a>(
            &'a self,
            routes: &'a Routes,
        ) -> BoxFuture<'a, Result<Routes, ClusterError>> {
            self.0.expressed(routes)
        }
    }
}

/// Escapes the characters a regular expression gives a meaning to.
pub fn regex_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Every A/B match ANDed with every service match, each pair made by `merge` laying the A/B match
/// over a copy of the service match. Without service matches, the A/B matches as they are.
pub(crate) fn and_matches(
    ab: &[Value],
    service: &[Value],
    merge: impl Fn(&mut Map<String, Value>, &Map<String, Value>),
) -> Vec<Value> {
    if service.is_empty() {
        return ab.to_vec();
    }
    let mut out = Vec::new();
    for a in ab {
        for s in service {
            let mut merged = s.clone();
            if let (Some(m), Some(a)) = (merged.as_object_mut(), a.as_object()) {
                merge(m, a);
            }
            out.push(merged);
        }
    }
    out
}

/// The usual way to lay one match over another: lists under the keys in `join` are joined (both
/// sets of conditions apply), maps are merged (the A/B entry wins a name both set), and anything
/// else is replaced by the A/B value.
pub(crate) fn merge_match(m: &mut Map<String, Value>, a: &Map<String, Value>, join: &[&str]) {
    for (k, v) in a {
        match (m.get_mut(k), v) {
            (Some(Value::Array(existing)), Value::Array(more)) if join.contains(&k.as_str()) => {
                existing.extend(more.iter().cloned())
            }
            (Some(Value::Object(existing)), Value::Object(more)) => {
                existing.extend(more.iter().map(|(k, v)| (k.clone(), v.clone())))
            }
            _ => {
                m.insert(k.clone(), v.clone());
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod testing {
    use proptest::prelude::{any, prop, Strategy};

    use aviary_core::engine::{RouteScope, Routes};
    use aviary_core::spec::Canary;

    /// The one Canary of `text` (a test's YAML), or a panic saying why there is none.
    pub(crate) fn the_canary(text: &str) -> Canary {
        match aviary_core::spec::decode::decode_documents("canary.yaml", text) {
            Ok(mut docs) if !docs.canaries.is_empty() => docs.canaries.remove(0),
            Ok(_) => panic!("no canary in:\n{text}"),
            Err(e) => panic!("{e}"),
        }
    }

    /// A release's routes through a router with session affinity (`flagger-cookie` living
    /// 21600 s, and `primary-flagger-cookie` when `primary`): `write` builds the object for the
    /// routes after the one written last, `read` parses it back as `observed` does, and
    /// `canary_match` is the cookie condition of the rule in front. Checks that every object
    /// reads back as its routes, that the canary cookie stays the same for the whole run while
    /// the canary has traffic (the primary cookie set only with `primary`), and that once a
    /// cookie was set it is expired (`Max-Age=-1`) whenever the canary has none.
    pub(crate) fn check_sticky_run(
        primary: bool,
        mid: [u32; 3],
        write: impl Fn(&Routes, Option<&serde_json::Value>) -> serde_json::Value,
        read: impl Fn(&serde_json::Value) -> Result<Routes, String>,
        canary_match: impl Fn(&serde_json::Value) -> serde_json::Value,
    ) {
        let mut last: Option<serde_json::Value> = None;
        let mut canary_cookie = None;
        for routes in [
            Routes::PRIMARY,
            Routes::split(mid[0], RouteScope::All),
            Routes::split(mid[1], RouteScope::All),
            Routes::split(mid[2], RouteScope::All),
            Routes::PRIMARY,
            Routes::PRIMARY,
            Routes {
                mirror: true,
                mirror_weight: Some(20),
                ..Routes::PRIMARY
            },
        ] {
            let object = write(&routes, last.as_ref());
            assert_eq!(
                read(&object),
                Ok(super::canonical(&routes)),
                "{routes:?}: {object}"
            );
            let set = object.to_string();
            if routes.canary > 0 {
                let c = canary_match(&object);
                if let Some(previous) = &canary_cookie {
                    assert_eq!(&c, previous, "the same cookie for the whole run");
                }
                canary_cookie = Some(c);
                assert!(set.contains("canary-flagger-cookie=") && set.contains("Max-Age=21600"));
                assert_eq!(set.contains("primary-flagger-cookie="), primary, "{set}");
            } else {
                // Once a run has set a cookie, it is expired from then on.
                assert_eq!(set.contains("Max-Age=-1"), canary_cookie.is_some(), "{set}");
            }
            last = Some(object);
        }
    }

    /// Any routes, weights summing to 100; A/B scope only when `matched` (a Canary with an
    /// `analysis.match`, the only kind the engine asks A/B routes of).
    pub(crate) fn any_routes(matched: bool) -> impl Strategy<Value = Routes> {
        (
            0u32..=100,
            any::<bool>(),
            prop::option::of(0u32..=100),
            any::<bool>(),
        )
            .prop_map(move |(canary, mirror, mirror_weight, ab)| Routes {
                primary: 100 - canary,
                canary,
                mirror,
                mirror_weight,
                scope: if ab && matched {
                    RouteScope::Matched
                } else {
                    RouteScope::All
                },
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routings_that_send_traffic_the_same_way_are_canonically_equal() {
        let mirrored = |w| Routes {
            mirror: true,
            mirror_weight: w,
            ..Routes::PRIMARY
        };
        assert_eq!(canonical(&mirrored(Some(100))), mirrored(None));
        assert_ne!(canonical(&mirrored(Some(20))), mirrored(None));
        let unmirrored = Routes {
            mirror_weight: Some(30),
            ..Routes::PRIMARY
        };
        assert_eq!(canonical(&unmirrored), Routes::PRIMARY);
        assert_eq!(
            canonical(&Routes::split(0, RouteScope::Matched)),
            Routes::PRIMARY
        );
        assert_eq!(
            canonical(&Routes::split(100, RouteScope::Matched)),
            Routes::split(100, RouteScope::Matched)
        );
    }

    #[test]
    fn weights_become_percentages_of_their_sum() {
        assert_eq!(percentages(80, 20), Ok((80, 20)));
        assert_eq!(percentages(3, 1), Ok((75, 25)));
        assert_eq!(percentages(2, 1), Ok((67, 33)));
        assert_eq!(percentages(0, 5), Ok((0, 100)));
        assert_eq!(percentages(u64::MAX, u64::MAX), Ok((50, 50)));
        assert!(percentages(0, 0).is_err());
    }

    fn canary(provider: &str, service: &str) -> Canary {
        let text = format!(
            "apiVersion: flagger.app/v1beta1
kind: Canary
metadata:
  name: podinfo
  namespace: test
spec:
  provider: {provider}
  targetRef: {{apiVersion: apps/v1, kind: Deployment, name: podinfo}}
  service:
    port: 80
{service}
"
        );
        match aviary_core::spec::decode::decode_documents("canary.yaml", &text) {
            Ok(mut docs) if !docs.canaries.is_empty() => docs.canaries.remove(0),
            Ok(_) => panic!("no canary"),
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn gateway_providers_need_gateway_refs_and_mesh_providers_attach_to_the_service() {
        for (provider, p) in [
            ("contour", Provider::Contour),
            ("traefik", Provider::Traefik),
        ] {
            match preflight(&canary(provider, ""), &p) {
                Err(e) => {
                    assert_eq!(e.len(), 1);
                    let text = e[0].to_string();
                    assert!(
                        text.starts_with("canary.yaml:1: spec.service.gatewayRefs: provider ")
                            && text.contains("spec.service.gatewayRefs is empty")
                            && text.contains("help: add `gatewayRefs: [{name: GATEWAY"),
                        "{text}"
                    );
                }
                other => panic!("{provider}: {other:?}"),
            }
        }
        let refs = "    gatewayRefs: [{name: public, namespace: gateway-system}]";
        assert_eq!(
            preflight(&canary("contour", refs), &Provider::Contour),
            Ok(Some("provider contour: aviary routes podinfo.test with the Gateway API HTTPRoute podinfo that Contour implements, attached to Gateway gateway-system/public; Flagger would write a Contour HTTPProxy instead".into()))
        );
        assert_eq!(
            preflight(&canary("linkerd", ""), &Provider::Linkerd),
            Ok(Some("provider linkerd: aviary routes podinfo.test with the Gateway API HTTPRoute podinfo that Linkerd 2.12+ implements, attached to the apex Service podinfo port 80 (GAMMA mesh routing); Flagger would write an SMI TrafficSplit instead".into()))
        );
        assert!(preflight(&canary("kuma", ""), &Provider::Kuma)
            .is_ok_and(|l| l.is_some_and(|l| l.contains("a Kuma TrafficRoute"))));
        assert_eq!(preflight(&canary("istio", ""), &Provider::Istio), Ok(None));
        assert_eq!(
            preflight(&canary("gatewayapi:v1", ""), &Provider::GatewayApi),
            Ok(None)
        );
    }

    #[test]
    fn providers_are_found_by_the_name_the_saved_state_holds() {
        for p in SUPPORTED {
            let found = provider_named(p);
            assert_eq!(found.as_ref().map(Provider::name), Some(p), "{p}");
        }
        assert_eq!(provider_named("knative"), None);
    }
}
