//! Preview hosts (`service.previewHosts`, an `aviary.dev/v1alpha1` field): host names whose
//! every request reaches the canary (`<svc>-canary`), whatever share of the main hosts the
//! canary has, so that people and end-to-end checks can try the new version at its own address
//! (e.g. `canary.example.com`) while `example.com` is split.
//!
//! Each router that routes host names writes one more object beside its own, named
//! `<svc>-preview` (`<ingress>-preview` for nginx), labelled as aviary's and applied with every
//! change of the routes (so a deleted or edited preview object is put back by the next step):
//! * gatewayapi (and linkerd, kuma, contour, traefik): an `HTTPRoute` on the same Gateways
//!   (`gatewayRefs`), with the preview hosts as its `hostnames`, the Service's own matches,
//!   header filters and timeout, and one backend: the canary Service. A Gateway picks the route
//!   whose hostname matches the request most precisely, so the main route never takes these
//!   hosts, even when it has no hostnames of its own.
//! * istio: a `VirtualService` with the preview hosts, the same gateways, matches and route
//!   options, sending everything to the canary host.
//! * nginx: a plain `Ingress` copied from the user's (class, annotations without the canary
//!   ones, the rules that reach the apex Service), one rule per preview host, every backend the
//!   canary Service. It has no `tls` section: the controller's default certificate (or a wildcard
//!   one it holds) serves the preview host.
//!
//! Between releases the canary Service selects no pod (the target is scaled to zero after a
//! promotion or a rollback), so a preview host then answers 503 from the gateway: it is never
//! served by the primary.

use std::sync::atomic::{AtomicBool, Ordering};

use kube::api::{Api, DeleteParams, Patch};
use serde_json::{json, Value};

use crate::cluster::{apply_params, retry, ClusterError, MANAGED_BY};
use aviary_core::spec::{preview_gap, Canary, Provider};

/// What a router keeps of `service.previewHosts`: the hosts it writes a preview object for, or,
/// with none, whether it has already looked for a stale preview object to remove.
#[derive(Debug, Default)]
pub struct PreviewState {
    pub hosts: Option<Vec<String>>,
    swept: AtomicBool,
}

impl PreviewState {
    pub fn new(canary: &Canary, provider: &Provider) -> PreviewState {
        PreviewState {
            hosts: hosts(canary, provider),
            swept: AtomicBool::new(false),
        }
    }

    /// Puts the preview object `name` (a `kind`) in place: with preview hosts, applies what
    /// `build` makes of them and returns true; without, removes a stale one ([`Self::sweep`]).
    pub async fn reconcile<K>(
        &self,
        api: &Api<K>,
        kind: &str,
        name: &str,
        build: impl FnOnce(&[String]) -> Result<Value, ClusterError>,
    ) -> Result<bool, ClusterError>
    where
        K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    {
        let Some(hosts) = &self.hosts else {
            self.sweep(api, kind, name).await?;
            return Ok(false);
        };
        let object = build(hosts)?;
        let what = format!("apply {kind} {}", qualified(api, name));
        let (params, patch) = (apply_params(), Patch::Apply(&object));
        retry(&what, || api.patch(name, &params, &patch)).await?;
        Ok(true)
    }

    /// With no preview hosts, once per router: deletes the preview object `name` (a `kind`)
    /// when aviary wrote it (labelled as aviary's), so that removing `previewHosts` from a
    /// Canary removes its preview route at the next rollout. An object of that name that is
    /// not aviary's is left alone.
    async fn sweep<K>(&self, api: &Api<K>, kind: &str, name: &str) -> Result<(), ClusterError>
    where
        K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    {
        if self.hosts.is_some() || self.swept.load(Ordering::Acquire) {
            return Ok(());
        }
        let what = format!("read {kind} {}", qualified(api, name));
        if let Some(found) = retry(&what, || api.get_opt(name)).await? {
            let ours = found
                .meta()
                .labels
                .as_ref()
                .and_then(|l| l.get(MANAGED_BY.0))
                .is_some_and(|v| v == MANAGED_BY.1);
            if ours {
                let what = format!("delete {kind} {}", qualified(api, name));
                tracing::info!("{what}: the Canary has no service.previewHosts any more");
                retry(&what, || async {
                    match api.delete(name, &DeleteParams::default()).await {
                        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
                        other => other.map(drop),
                    }
                })
                .await?;
            }
        }
        self.swept.store(true, Ordering::Release);
        Ok(())
    }
}

/// `name.namespace` for messages, as the routers name their objects.
fn qualified<K: kube::Resource>(api: &Api<K>, name: &str) -> String {
    match api.namespace() {
        Some(ns) => format!("{name}.{ns}"),
        None => name.to_string(),
    }
}

/// The preview hosts a router writes objects for: `None` when the Canary has none, or when
/// `provider` cannot route them ([`preview_gap`]; the rollout says so before it starts).
pub fn hosts(canary: &Canary, provider: &Provider) -> Option<Vec<String>> {
    let hosts = &canary.service.preview_hosts;
    (!hosts.is_empty() && preview_gap(&canary.service, provider).is_none()).then(|| hosts.clone())
}

/// The name of the preview object of the apex Service (or of the user's Ingress) `base`.
pub fn object_name(base: &str) -> String {
    format!("{base}-preview")
}

/// The metadata of a preview object.
pub(crate) fn metadata(name: &str, namespace: &str) -> Value {
    json!({
        "name": name,
        "namespace": namespace,
        "labels": { MANAGED_BY.0: MANAGED_BY.1 },
    })
}

/// The preview Ingress for the user's Ingress `user` (as JSON), whose rules reach the apex
/// Service `service`: one rule per preview host with the paths of the user's rules that reach
/// `service`, every such backend pointed at `canary_service`. An error says what the user's
/// Ingress lacks.
pub fn ingress(
    user: &Value,
    service: &str,
    canary_service: &str,
    hosts: &[String],
    name: &str,
    namespace: &str,
) -> Result<Value, String> {
    let mut paths: Vec<Value> = Vec::new();
    for rule in user
        .pointer("/spec/rules")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        for path in rule
            .pointer("/http/paths")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if path
                .pointer("/backend/service/name")
                .and_then(Value::as_str)
                != Some(service)
            {
                continue;
            }
            let mut path = path.clone();
            path["backend"]["service"]["name"] = json!(canary_service);
            if !paths.contains(&path) {
                paths.push(path);
            }
        }
    }
    if paths.is_empty() {
        // The user's Ingress reaches the Service through its default backend only.
        let default = user.pointer("/spec/defaultBackend/service");
        if default.and_then(|s| s.get("name")).and_then(Value::as_str) == Some(service) {
            let mut backend = json!({ "service": default.cloned().unwrap_or_default() });
            backend["service"]["name"] = json!(canary_service);
            paths.push(json!({ "path": "/", "pathType": "Prefix", "backend": backend }));
        } else {
            return Err(format!(
                "it has no path whose backend is the Service {service}, so there is nothing to preview"
            ));
        }
    }
    let rules: Vec<Value> = hosts
        .iter()
        .map(|host| json!({ "host": host, "http": { "paths": paths } }))
        .collect();
    let mut spec = json!({ "rules": rules });
    if let Some(class) = user.pointer("/spec/ingressClassName") {
        spec["ingressClassName"] = class.clone();
    }
    let mut meta = metadata(name, namespace);
    let annotations = super::nginx::user_annotations(user);
    if !annotations.is_empty() {
        meta["annotations"] = Value::Object(annotations);
    }
    Ok(json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": meta,
        "spec": spec,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user() -> Value {
        json!({
            "metadata": {"name": "podinfo", "annotations": {
                "nginx.ingress.kubernetes.io/proxy-body-size": "8m",
                "nginx.ingress.kubernetes.io/canary": "true",
                "kubectl.kubernetes.io/last-applied-configuration": "{}"
            }},
            "spec": {
                "ingressClassName": "nginx",
                "tls": [{"hosts": ["app.example.com"], "secretName": "app-tls"}],
                "rules": [
                    {"host": "app.example.com", "http": {"paths": [
                        {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "podinfo", "port": {"number": 80}}}},
                        {"path": "/static", "pathType": "Prefix", "backend": {"service": {"name": "cdn", "port": {"number": 80}}}}
                    ]}},
                    {"host": "www.example.com", "http": {"paths": [
                        {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "podinfo", "port": {"number": 80}}}}
                    ]}}
                ]
            }
        })
    }

    #[test]
    fn the_preview_ingress_sends_each_preview_host_to_the_canary_only() {
        let hosts = vec![
            "canary.example.com".to_string(),
            "beta.example.com".to_string(),
        ];
        let i = ingress(
            &user(),
            "podinfo",
            "podinfo-canary",
            &hosts,
            "podinfo-preview",
            "prod",
        )
        .unwrap();
        let path = json!({"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "podinfo-canary", "port": {"number": 80}}}});
        assert_eq!(
            i["spec"],
            json!({
                "ingressClassName": "nginx",
                "rules": [
                    {"host": "canary.example.com", "http": {"paths": [path]}},
                    {"host": "beta.example.com", "http": {"paths": [path]}}
                ]
            }),
            "one path (the two rules' identical paths once; the cdn path is not ours), no tls"
        );
        assert_eq!(
            i["metadata"]["annotations"],
            json!({"nginx.ingress.kubernetes.io/proxy-body-size": "8m"})
        );
        assert_eq!(i["metadata"]["labels"][MANAGED_BY.0], MANAGED_BY.1);
        assert_eq!(i["metadata"]["name"], "podinfo-preview");
    }

    #[test]
    fn an_ingress_that_does_not_reach_the_service_has_nothing_to_preview() {
        let e = ingress(
            &user(),
            "other",
            "other-canary",
            &["c.example.com".into()],
            "x",
            "prod",
        )
        .unwrap_err();
        assert!(
            e.contains("no path whose backend is the Service other"),
            "{e}"
        );
        let default_only = json!({"spec": {"defaultBackend": {"service": {"name": "other", "port": {"number": 8080}}}}});
        let i = ingress(
            &default_only,
            "other",
            "other-canary",
            &["c.example.com".into()],
            "x",
            "prod",
        )
        .unwrap();
        assert_eq!(
            i["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"],
            json!({"name": "other-canary", "port": {"number": 8080}})
        );
    }

    fn canary(provider: &str, service: &str) -> Canary {
        let text = format!(
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
  service:
    port: 9898
    hosts: [app.example.com]
    previewHosts: [canary.example.com]
{service}
  analysis:
    interval: 1s
    stepWeight: 10
"
        );
        crate::routing::testing::the_canary(&text)
    }

    #[test]
    fn the_preview_httproute_has_the_gateways_the_hosts_and_the_canary_alone() {
        let c = canary(
            "gatewayapi:v1",
            "    gatewayRefs: [{name: public, namespace: gateway-system}]\n    timeout: 5s\n    match: [{uri: {prefix: /api}}]",
        );
        let preview = hosts(&c, &Provider::GatewayApi).unwrap();
        let o = super::super::gatewayapi::GatewayObjects::new(
            &c,
            &Provider::GatewayApi,
            "test",
            "podinfo",
        )
        .unwrap();
        let route = o.preview_route(&preview);
        assert_eq!(route["metadata"]["name"], "podinfo-preview");
        assert_eq!(route["metadata"]["labels"][MANAGED_BY.0], MANAGED_BY.1);
        assert_eq!(
            route["spec"],
            json!({
                "parentRefs": [{"name": "public", "namespace": "gateway-system"}],
                "hostnames": ["canary.example.com"],
                "rules": [{
                    "matches": [{"path": {"type": "PathPrefix", "value": "/api"}}],
                    "backendRefs": [{"name": "podinfo-canary", "port": 9898, "weight": 100}],
                    "timeouts": {"request": "5s"}
                }]
            })
        );
        // A mesh route (no Gateway) has no host to preview: nothing is written, and why is said.
        let mesh = canary("linkerd", "");
        assert_eq!(hosts(&mesh, &Provider::Linkerd), None);
        let (why, _) = preview_gap(&mesh.service, &Provider::Linkerd).unwrap();
        assert!(why.contains("no spec.service.gatewayRefs"), "{why}");
    }

    #[test]
    fn the_preview_virtualservice_sends_its_hosts_to_the_canary() {
        let c = canary("istio", "    gateways: [public-gateway.istio-system.svc.cluster.local]\n    retries: {attempts: 3}");
        let preview = hosts(&c, &Provider::Istio).unwrap();
        let o = super::super::istio::IstioObjects::new(
            &c,
            "test",
            "podinfo",
            "podinfo-primary".into(),
            "podinfo-canary".into(),
        )
        .unwrap();
        let vs = o.preview_virtual_service(&preview);
        assert_eq!(vs["metadata"]["name"], "podinfo-preview");
        assert_eq!(
            vs["spec"],
            json!({
                "hosts": ["canary.example.com"],
                "gateways": ["public-gateway.istio-system.svc.cluster.local"],
                "http": [{
                    "retries": {"attempts": 3},
                    "route": [{"destination": {"host": "podinfo-canary", "port": {"number": 9898}}, "weight": 100}]
                }]
            })
        );
    }

    #[test]
    fn routers_without_host_routing_write_no_preview_and_say_why() {
        for (provider, p) in [
            ("kubernetes", Provider::Kubernetes),
            ("kubernetes:replicas", Provider::KubernetesReplicas),
            ("gloo", Provider::Gloo),
        ] {
            let c = canary(provider, "");
            assert_eq!(hosts(&c, &p), None, "{provider}");
            let (why, fix) = preview_gap(&c.service, &p).unwrap();
            assert!(why.contains("has no effect"), "{why}");
            assert!(fix.contains("gatewayapi, istio or nginx"), "{fix}");
        }
        let c = canary("nginx", "");
        assert_eq!(
            hosts(&c, &Provider::Nginx),
            Some(vec!["canary.example.com".to_string()])
        );
    }
}
