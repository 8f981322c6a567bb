//! The `kubernetes` provider: no traffic shifting. The apex Service selects the primary throughout;
//! the canary is tested through `<svc>-canary`, and promotion rolls the primary to the new
//! template, which is when the apex's traffic switches (blue/green, as Flagger does it).

use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

use crate::cluster::{retry, ClusterError};
use crate::engine::Routes;
use crate::workload::Workloads;

use super::TrafficRouter;

/// Blue/green: nothing to route; the Services created at bootstrap already point the apex at the
/// primary, and the engine never asks this provider for a canary weight.
pub struct BlueGreen;

impl TrafficRouter for BlueGreen {
    fn name(&self) -> &'static str {
        "kubernetes"
    }

    fn set_routes<'a>(&'a self, routes: &'a Routes) -> BoxFuture<'a, Result<(), ClusterError>> {
        Box::pin(async move {
            if routes.canary > 0 {
                tracing::debug!(
                    "kubernetes provider: ignoring a {}% canary weight; the apex stays on the primary",
                    routes.canary
                );
            }
            Ok(())
        })
    }
}

/// Replica ratio (`kubernetes:replicas`): no mesh. The apex Service selects a label the pods of
/// both workloads carry, so traffic splits by the number of ready pods, and a canary weight
/// becomes a split of the stable replica count N (recorded on the apex Service the first time):
/// the canary gets `round(N × weight / 100)` replicas, at least 1 and at most N − 1, and the
/// primary the rest. The smallest weight it can express is therefore 100/N % and the largest
/// (N − 1)/N; a primary of one replica runs 1 + 1 (50%). The primary always keeps a replica.
pub struct ReplicaRatio {
    workloads: Workloads,
}

/// Annotation on the apex Service with the replica count the split is taken from.
pub const STABLE_REPLICAS_ANNOTATION: &str = "aviary.dev/stable-replicas";

/// `(primary, canary)` replicas for a canary weight out of `stable` replicas.
pub fn split(stable: i32, weight: u32) -> (i32, i32) {
    let n = stable.max(1);
    if weight == 0 {
        return (n, 0);
    }
    if n == 1 {
        return (1, 1);
    }
    let canary = (f64::from(n) * f64::from(weight.min(100)) / 100.0).round() as i32;
    let canary = canary.clamp(1, n - 1);
    (n - canary, canary)
}

impl ReplicaRatio {
    pub fn new(workloads: &Workloads) -> ReplicaRatio {
        ReplicaRatio {
            workloads: workloads.clone(),
        }
    }

    /// N: read from the apex Service, or taken from the primary and recorded there.
    async fn stable_replicas(&self) -> Result<i32, ClusterError> {
        let w = &self.workloads;
        let api: Api<Service> = Api::namespaced(w.client().clone(), &w.namespace);
        let what = format!("read Service {}.{}", w.service, w.namespace);
        let svc = retry(&what, || api.get_opt(&w.service)).await?;
        let recorded = svc
            .and_then(|s| s.metadata.annotations)
            .and_then(|a| a.get(STABLE_REPLICAS_ANNOTATION).cloned())
            .and_then(|v| v.parse::<i32>().ok())
            .filter(|n| *n > 0);
        if let Some(n) = recorded {
            return Ok(n);
        }
        let n = w.replicas(&w.primary).await?.max(1);
        let patch =
            json!({ "metadata": { "annotations": { STABLE_REPLICAS_ANNOTATION: n.to_string() } } });
        let (params, patch) = (PatchParams::default(), Patch::Merge(&patch));
        let what = format!("annotate Service {}.{}", w.service, w.namespace);
        retry(&what, || api.patch(&w.service, &params, &patch)).await?;
        Ok(n)
    }
}

impl TrafficRouter for ReplicaRatio {
    fn name(&self) -> &'static str {
        "kubernetes:replicas"
    }

    fn set_routes<'a>(&'a self, routes: &'a Routes) -> BoxFuture<'a, Result<(), ClusterError>> {
        Box::pin(async move {
            let w = &self.workloads;
            let Some((key, value)) = &w.shared_label else {
                return Err(ClusterError::Invalid(
                    "replica ratio needs the shared pod label; this is a bug".into(),
                ));
            };
            let n = self.stable_replicas().await?;
            let (primary, canary) = split(n, routes.canary);
            if canary == 0 {
                // Back to the primary: capacity first, then take the canary out.
                w.scale(&w.primary, primary).await?;
                w.scale(&w.target, 0).await?;
                w.set_canary_pod_label(key, None).await?;
            } else {
                // Toward the canary: its pods join the apex first, then the primary shrinks.
                w.set_canary_pod_label(key, Some(value)).await?;
                w.scale(&w.target, canary).await?;
                w.scale(&w.primary, primary).await?;
            }
            tracing::info!(
                "replica ratio: primary {primary} / canary {canary} replicas ({}% asked, {:.0}% by replicas)",
                routes.canary,
                100.0 * f64::from(canary) / f64::from(primary + canary)
            );
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::split;

    #[test]
    fn splits_replicas_as_documented() {
        assert_eq!(split(4, 0), (4, 0));
        assert_eq!(split(4, 10), (3, 1)); // 25%: the smallest weight 4 replicas can express
        assert_eq!(split(4, 25), (3, 1));
        assert_eq!(split(4, 50), (2, 2));
        assert_eq!(split(4, 60), (2, 2)); // 2.4 rounds to 2
        assert_eq!(split(4, 100), (1, 3)); // the primary keeps a replica
        assert_eq!(split(10, 5), (9, 1));
        assert_eq!(split(10, 20), (8, 2));
        assert_eq!(split(1, 30), (1, 1));
        assert_eq!(split(0, 30), (1, 1));
    }
}
