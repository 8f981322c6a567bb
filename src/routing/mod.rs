//! Traffic routers: one small trait, one file per provider. A router turns the engine's
//! [`Routes`] into the provider's objects and reports when they are in effect.

pub mod gatewayapi;
pub mod gloo;
pub mod istio;
pub mod kubernetes;
pub mod nginx;

use futures::future::BoxFuture;

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
