//! Traffic routers: one small trait, one file per provider. A router turns the engine's
//! [`Routes`] into the provider's objects and reports when they are in effect.

pub mod gatewayapi;
pub mod gloo;
pub mod istio;
pub mod kubernetes;
pub mod nginx;

use futures::future::BoxFuture;
use serde_json::{Map, Value};

use crate::cluster::ClusterError;
use crate::engine::Routes;
use crate::spec::{Canary, Provider};
use crate::workload::Workloads;

/// What every traffic provider does for the engine.
pub trait TrafficRouter: Send + Sync {
    /// The provider's name, for messages.
    fn name(&self) -> &'static str;

    /// Puts `routes` in place and returns once the provider has accepted them. Idempotent: the
    /// first call creates the routing objects.
    fn set_routes<'a>(&'a self, routes: &'a Routes) -> BoxFuture<'a, Result<(), ClusterError>>;
}

/// The providers aviary can drive on a cluster.
pub const SUPPORTED: [&str; 6] = [
    "kubernetes",
    "kubernetes:replicas",
    "gatewayapi",
    "istio",
    "gloo",
    "nginx",
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
    )
}

/// The router for a Canary's provider.
pub fn for_canary(
    canary: &Canary,
    provider: &Provider,
    workloads: &Workloads,
) -> Result<Box<dyn TrafficRouter>, ClusterError> {
    match provider {
        Provider::Kubernetes => Ok(Box::new(kubernetes::BlueGreen)),
        Provider::KubernetesReplicas => Ok(Box::new(kubernetes::ReplicaRatio::new(workloads))),
        Provider::GatewayApi => Ok(Box::new(gatewayapi::GatewayApi::new(canary, workloads)?)),
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

/// Escapes the characters a regular expression gives a meaning to.
pub(crate) fn regex_escape(s: &str) -> String {
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
