//! The `kubernetes` provider: no traffic shifting. The apex Service selects the primary throughout;
//! the canary is tested through `<svc>-canary`, and promotion rolls the primary to the new
//! template, which is when the apex's traffic switches (blue/green, as Flagger does it).

use std::collections::BTreeMap;

use futures::future::BoxFuture;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

use crate::cluster::{retry, ClusterError};
use crate::workload::Workloads;
use aviary_core::engine::{RouteScope, Routes};

use super::{canonical, Observed, TrafficRouter};

/// Blue/green: nothing to route; the Services created at bootstrap already point the apex at the
/// primary, and weights the engine asks for are not applied (promotion moves the apex's traffic
/// by rolling the primary to the new template).
pub struct BlueGreen {
    workloads: Workloads,
}

impl BlueGreen {
    pub fn new(workloads: &Workloads) -> BlueGreen {
        BlueGreen {
            workloads: workloads.clone(),
        }
    }
}

/// Where an apex Service whose selector is `selector` sends traffic: to the primary when it
/// selects `label_key: primary`, to the canary when it selects `label_key: canary`.
pub fn selector_routes(
    selector: &BTreeMap<String, String>,
    label_key: &str,
    primary: &str,
    canary: &str,
) -> Result<Routes, String> {
    match selector.get(label_key).map(String::as_str) {
        Some(v) if v == primary => Ok(Routes::PRIMARY),
        Some(v) if v == canary => Ok(Routes::split(100, RouteScope::All)),
        _ => Err(format!(
            "its selector {selector:?} selects neither the primary's pods ({label_key}: {primary}) \
             nor the canary's ({label_key}: {canary})"
        )),
    }
}

impl TrafficRouter for BlueGreen {
    fn name(&self) -> &'static str {
        "kubernetes"
    }

    fn observed(&self) -> BoxFuture<'_, Result<Observed, ClusterError>> {
        Box::pin(async move {
            let w = &self.workloads;
            let objects = format!("Service {}.{}", w.service, w.namespace);
            let api: Api<Service> = Api::namespaced(w.client().clone(), &w.namespace);
            let what = format!("read {objects}");
            let Some(svc) = retry(&what, || api.get_opt(&w.service)).await? else {
                return Ok(Observed {
                    objects,
                    routes: None,
                });
            };
            let selector = svc.spec.and_then(|s| s.selector).unwrap_or_default();
            let routes = selector_routes(
                &selector,
                &w.label_key,
                &w.primary_label_value(),
                &w.label_value,
            )
            .map_err(|e| ClusterError::Invalid(format!("{objects}: {e}")))?;
            Ok(Observed {
                objects,
                routes: Some(routes),
            })
        })
    }

    fn expressed<'a>(&'a self, _: &'a Routes) -> BoxFuture<'a, Result<Routes, ClusterError>> {
        // `set_routes` changes nothing: the apex stays on the primary whatever the weights.
        Box::pin(async move { Ok(Routes::PRIMARY) })
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

    /// N as recorded on the apex Service, if it is.
    async fn recorded_replicas(&self) -> Result<Option<i32>, ClusterError> {
        let w = &self.workloads;
        let api: Api<Service> = Api::namespaced(w.client().clone(), &w.namespace);
        let what = format!("read Service {}.{}", w.service, w.namespace);
        let svc = retry(&what, || api.get_opt(&w.service)).await?;
        Ok(svc
            .and_then(|s| s.metadata.annotations)
            .and_then(|a| a.get(STABLE_REPLICAS_ANNOTATION).cloned())
            .and_then(|v| v.parse::<i32>().ok())
            .filter(|n| *n > 0))
    }

    /// N: read from the apex Service, or taken from the primary and recorded there.
    async fn stable_replicas(&self) -> Result<i32, ClusterError> {
        let w = &self.workloads;
        if let Some(n) = self.recorded_replicas().await? {
            return Ok(n);
        }
        let api: Api<Service> = Api::namespaced(w.client().clone(), &w.namespace);
        let n = w.replicas(&w.primary).await?.max(1);
        let patch =
            json!({ "metadata": { "annotations": { STABLE_REPLICAS_ANNOTATION: n.to_string() } } });
        let (params, patch) = (PatchParams::default(), Patch::Merge(&patch));
        let what = format!("annotate Service {}.{}", w.service, w.namespace);
        retry(&what, || api.patch(&w.service, &params, &patch)).await?;
        Ok(n)
    }
}

/// The split the apex Service makes between `primary` replicas of the primary and `canary`
/// replicas of the canary (counted only while the canary's pods carry the label the apex
/// selects), as percentages of the replicas: the share of traffic each gets.
pub fn replica_routes(primary: i32, canary: i32) -> Result<Routes, String> {
    let (p, c) = (primary.max(0), canary.max(0));
    let (_, canary) = super::percentages(p as u64, c as u64)
        .map_err(|_| "neither workload has a replica behind the apex Service".to_string())?;
    Ok(Routes::split(canary, RouteScope::All))
}

async fn deployment(w: &Workloads, name: &str) -> Result<Option<Deployment>, ClusterError> {
    let api: Api<Deployment> = Api::namespaced(w.client().clone(), &w.namespace);
    let what = format!("read Deployment {name}.{}", w.namespace);
    retry(&what, || api.get_opt(name)).await
}

fn spec_replicas(d: &Deployment) -> i32 {
    // The API server defaults `replicas` to 1.
    d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

impl TrafficRouter for ReplicaRatio {
    fn name(&self) -> &'static str {
        "kubernetes:replicas"
    }

    fn observed(&self) -> BoxFuture<'_, Result<Observed, ClusterError>> {
        Box::pin(async move {
            let w = &self.workloads;
            let objects = format!(
                "Deployments {}.{ns} and {}.{ns}",
                w.primary,
                w.target,
                ns = w.namespace
            );
            let (Some(primary), Some(target)) = (
                deployment(w, &w.primary).await?,
                deployment(w, &w.target).await?,
            ) else {
                return Ok(Observed {
                    objects,
                    routes: None,
                });
            };
            // The canary's pods are behind the apex only while they carry the shared label.
            let behind_apex = match &w.shared_label {
                Some((key, value)) => target
                    .spec
                    .as_ref()
                    .and_then(|s| s.template.metadata.as_ref())
                    .and_then(|m| m.labels.as_ref())
                    .and_then(|l| l.get(key))
                    .is_some_and(|v| v == value),
                None => false,
            };
            let canary = if behind_apex {
                spec_replicas(&target)
            } else {
                0
            };
            let routes = replica_routes(spec_replicas(&primary), canary)
                .map_err(|e| ClusterError::Invalid(format!("{objects}: {e}")))?;
            Ok(Observed {
                objects,
                routes: Some(routes),
            })
        })
    }

    fn expressed<'a>(&'a self, routes: &'a Routes) -> BoxFuture<'a, Result<Routes, ClusterError>> {
        Box::pin(async move {
            // N as `set_routes` would take it, without recording it.
            let n = match self.recorded_replicas().await? {
                Some(n) => n,
                None => match deployment(&self.workloads, &self.workloads.primary).await? {
                    Some(d) => spec_replicas(&d).max(1),
                    None => 1,
                },
            };
            let (primary, canary) = split(n, routes.canary);
            replica_routes(primary, canary)
                .map(|r| canonical(&r))
                .map_err(ClusterError::Invalid)
        })
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
    use super::*;

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

    #[test]
    fn the_replica_split_reads_back_as_the_share_of_replicas() {
        // set_routes's replica counts for a weight → observed: the share each workload serves.
        for (n, weight, expected) in [
            (4, 0, 0),
            (4, 10, 25),
            (4, 25, 25),
            (4, 50, 50),
            (4, 100, 75),
            (10, 20, 20),
            (10, 35, 40), // 3.5 rounds to 4 replicas
            (3, 50, 67),  // 1.5 rounds to 2 of 3 replicas
            (1, 30, 50),
        ] {
            let (p, c) = split(n, weight);
            assert_eq!(
                replica_routes(p, c),
                Ok(Routes::split(expected, RouteScope::All)),
                "N={n}, {weight}%"
            );
        }
        assert!(replica_routes(0, 0).is_err());
        // A killed run can leave the canary scaled up before the primary shrank: 4 + 2.
        assert_eq!(replica_routes(4, 2), Ok(Routes::split(33, RouteScope::All)));
    }

    #[test]
    fn the_apex_selector_reads_back_as_all_on_one_side() {
        let sel = |v: &str| BTreeMap::from([("app".to_string(), v.to_string())]);
        let read = |v: &str| selector_routes(&sel(v), "app", "podinfo-primary", "podinfo");
        assert_eq!(read("podinfo-primary"), Ok(Routes::PRIMARY));
        assert_eq!(read("podinfo"), Ok(Routes::split(100, RouteScope::All)));
        let e = read("other").err().unwrap_or_default();
        assert!(e.contains("selects neither"), "{e}");
    }

    proptest::proptest! {
        /// Whatever weight is asked, the replicas it becomes read back within one replica's share
        /// of it.
        #[test]
        fn replica_splits_read_back_close_to_the_weight(n in 2i32..50, weight in 0u32..=100) {
            let (p, c) = split(n, weight);
            let observed = replica_routes(p, c);
            proptest::prop_assert!(observed.is_ok());
            let observed = observed.unwrap_or_default();
            proptest::prop_assert_eq!(observed.primary + observed.canary, 100);
            // Rounding to whole replicas is off by at most half a replica's share, and the clamp
            // to [1, N-1] replicas for a non-zero weight by at most one replica's share.
            let step = 100.0 / f64::from(n);
            let err = (f64::from(observed.canary) - f64::from(weight)).abs();
            proptest::prop_assert!(err <= step + 0.5,
                "N={} weight={} observed={}", n, weight, observed.canary);
        }
    }
}
