//! Readiness, checked the way Flagger checks it.

use k8s_openapi::api::apps::v1::Deployment;

use super::Workloads;
use crate::cluster::ClusterError;
use aviary_core::engine::Readiness;

impl Workloads {
    /// Flagger's readiness check of the target (the canary) as `target` shows it: a read of it
    /// made a moment ago, in the same tick, with no change since.
    pub fn target_readiness(&self, target: &Deployment) -> Readiness {
        deployment_readiness(target, self.canary_ready_threshold)
    }

    /// Flagger's readiness check for one Deployment, and the Deployment as it was read.
    pub async fn readiness(
        &self,
        primary: bool,
    ) -> Result<(Readiness, Option<Deployment>), ClusterError> {
        let (name, threshold) = if primary {
            (&self.primary, self.primary_ready_threshold)
        } else {
            (&self.target, self.canary_ready_threshold)
        };
        let read = self.get(name).await?;
        let readiness = match &read {
            None => Readiness::NotReady(format!(
                "deployment {name}.{} does not exist yet",
                self.namespace
            )),
            Some(dep) => deployment_readiness(dep, threshold),
        };
        Ok((readiness, read))
    }
}

/// Flagger's `isDeploymentReady`, as a [`Readiness`].
pub fn deployment_readiness(dep: &Deployment, ready_threshold: u32) -> Readiness {
    let name = dep.metadata.name.as_deref().unwrap_or("?");
    let generation = dep.metadata.generation.unwrap_or(0);
    let status = dep.status.clone().unwrap_or_default();
    if generation > status.observed_generation.unwrap_or(0) {
        return Readiness::NotReady(
            "waiting for rollout to finish: observed deployment generation less than desired generation"
                .into(),
        );
    }
    let deadline_exceeded = status.conditions.iter().flatten().any(|c| {
        c.type_ == "Progressing" && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
    });
    if deadline_exceeded {
        return Readiness::Failed(format!(
            "deployment {name:?} exceeded its progress deadline"
        ));
    }
    let desired = dep.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let updated = status.updated_replicas.unwrap_or(0);
    let replicas = status.replicas.unwrap_or(0);
    let available = status.available_replicas.unwrap_or(0);
    if updated < desired {
        return Readiness::NotReady(format!(
            "waiting for rollout to finish: {updated} out of {desired} new replicas have been updated"
        ));
    }
    if replicas > updated {
        return Readiness::NotReady(format!(
            "waiting for rollout to finish: {} old replicas are pending termination",
            replicas - updated
        ));
    }
    let needed = (updated as f64 * f64::from(ready_threshold) / 100.0) as i32;
    if available < needed {
        return Readiness::NotReady(format!(
            "waiting for rollout to finish: {available} of {updated} (readyThreshold {ready_threshold}%) updated replicas are available"
        ));
    }
    Readiness::Ready
}

#[cfg(test)]
mod tests {
    use super::*;

    use serde_json::{json, Value};

    fn dep(generation: i64, status: Value, replicas: i32) -> Deployment {
        let value = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "podinfo", "generation": generation},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "podinfo"}},
                     "template": {"metadata": {"labels": {"app": "podinfo"}}, "spec": {"containers": []}}},
            "status": status,
        });
        match serde_json::from_value(value) {
            Ok(d) => d,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn readiness_follows_flagger() {
        let stale = dep(2, json!({"observedGeneration": 1}), 2);
        assert!(
            matches!(deployment_readiness(&stale, 100), Readiness::NotReady(m) if m.contains("observed deployment generation"))
        );
        let updating = dep(
            1,
            json!({"observedGeneration": 1, "updatedReplicas": 1, "replicas": 2}),
            2,
        );
        assert_eq!(
            deployment_readiness(&updating, 100),
            Readiness::NotReady(
                "waiting for rollout to finish: 1 out of 2 new replicas have been updated".into()
            )
        );
        let half = dep(
            1,
            json!({"observedGeneration": 1, "updatedReplicas": 4, "replicas": 4, "availableReplicas": 2}),
            4,
        );
        assert!(
            matches!(deployment_readiness(&half, 100), Readiness::NotReady(m) if m.contains("2 of 4 (readyThreshold 100%)"))
        );
        assert_eq!(deployment_readiness(&half, 50), Readiness::Ready);
        let stuck = dep(
            1,
            json!({"observedGeneration": 1, "conditions": [
            {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}]}),
            2,
        );
        assert_eq!(
            deployment_readiness(&stuck, 100),
            Readiness::Failed("deployment \"podinfo\" exceeded its progress deadline".into())
        );
        let zero = dep(3, json!({"observedGeneration": 3}), 0);
        assert_eq!(deployment_readiness(&zero, 100), Readiness::Ready);
    }
}
