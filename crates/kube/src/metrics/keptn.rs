//! The `keptn` provider, as Flagger reads Keptn's metrics (`pkg/metrics/providers/keptn.go`):
//! objects of the cluster aviary runs against, through its kube client (no address, no Secret).
//!
//! - a query: `<keptnmetric|analysis>/<namespace>/<name>[/<duration>[/<key=value;...>]]`
//!   (plural kinds too; lower-cased and trimmed, as Flagger reads it);
//! - `keptnmetric`: the `status.value` of the `KeptnMetric` (`metrics.keptn.sh/v1beta1`), a
//!   number in a string; no value yet is no values (Keptn has not fetched it);
//! - `analysis`: an `Analysis` of the `AnalysisDefinition` `<name>` over the last `<duration>`
//!   (default `1m`) with the arguments, created as `<name>-<6 random hex>`, read every 500 ms
//!   until Keptn marks it `Completed` (at most 10 s, Flagger's limit): 1 if it passed, 0 if not;
//!   it is deleted afterwards, whatever happened;
//! - online: always (as Flagger: Keptn's own state is not checked).
//!
//! The statistical judge needs series per deployment, which Keptn does not give.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::future::BoxFuture;
use kube::api::{ApiResource, DeleteParams, DynamicObject, GroupVersionKind, PostParams};
use serde_json::{json, Value};

use super::provider::{MetricsProvider, ProviderSpec};
use super::MetricError;

const GROUP: &str = "metrics.keptn.sh";
const VERSION: &str = "v1beta1";
/// How long an Analysis may take (Flagger's `analysisTimeout`).
const ANALYSIS_TIMEOUT: Duration = Duration::from_secs(10);
const ANALYSIS_POLL: Duration = Duration::from_millis(500);

/// A parsed query.
#[derive(Debug, Clone, PartialEq)]
enum Query {
    Metric {
        namespace: String,
        name: String,
    },
    Analysis {
        namespace: String,
        name: String,
        duration: String,
        args: BTreeMap<String, String>,
    },
}

fn parse(query: &str) -> Result<Query, MetricError> {
    let lowered = query.trim().to_lowercase();
    let parts: Vec<&str> = lowered.split('/').collect();
    let format =
        "write it as <keptnmetric|analysis>/<namespace>/<name>[/<duration>[/<key=value;...>]]";
    let [kind, namespace, name, rest @ ..] = parts.as_slice() else {
        return Err(MetricError::Failed(format!(
            "keptn: the query {query:?} has too few parts: {format}"
        )));
    };
    let (namespace, name) = (namespace.to_string(), name.to_string());
    if namespace.is_empty() || name.is_empty() {
        return Err(MetricError::Failed(format!(
            "keptn: the query {query:?} has an empty namespace or name: {format}"
        )));
    }
    match *kind {
        "keptnmetric" | "keptnmetrics" => Ok(Query::Metric { namespace, name }),
        "analysis" | "analyses" => {
            let duration = rest.first().filter(|d| !d.is_empty()).unwrap_or(&"1m");
            let args = rest
                .get(1)
                .map(|a| {
                    a.split(';')
                        .filter_map(|kv| kv.split_once('='))
                        .filter(|(k, _)| !k.is_empty())
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect()
                })
                .unwrap_or_default();
            Ok(Query::Analysis {
                namespace,
                name,
                duration: duration.to_string(),
                args,
            })
        }
        other => Err(MetricError::Failed(format!(
            "keptn: unknown kind {other:?} in the query: {format}"
        ))),
    }
}

#[derive(Clone)]
pub(crate) struct Keptn {
    client: kube::Client,
}

impl std::fmt::Debug for Keptn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keptn")
    }
}

fn resource(kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(GROUP, VERSION, kind), plural)
}

/// Six random hex digits (an Analysis' name suffix).
fn suffix() -> String {
    let mut bytes = [0u8; 3];
    let filled = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes);
    if filled.is_err() {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or_default();
        bytes = [(nanos >> 16) as u8, (nanos >> 8) as u8, nanos as u8];
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Keptn {
    pub(crate) fn new(spec: &ProviderSpec) -> Result<Keptn, MetricError> {
        match &spec.cluster {
            Some(client) => Ok(Keptn {
                client: client.clone(),
            }),
            None => Err(MetricError::Failed(
                "keptn reads KeptnMetrics and Analyses from the cluster, and no cluster is available"
                    .into(),
            )),
        }
    }

    async fn run(&self, query: &str) -> Result<f64, MetricError> {
        match parse(query)? {
            Query::Metric { namespace, name } => self.metric(&namespace, &name).await,
            Query::Analysis {
                namespace,
                name,
                duration,
                args,
            } => self.analysis(&namespace, &name, &duration, args).await,
        }
    }

    async fn metric(&self, namespace: &str, name: &str) -> Result<f64, MetricError> {
        let api: kube::Api<DynamicObject> = kube::Api::namespaced_with(
            self.client.clone(),
            namespace,
            &resource("KeptnMetric", "keptnmetrics"),
        );
        let what = format!("KeptnMetric {name}.{namespace}");
        let found = crate::cluster::retry(&format!("read {what}"), || api.get_opt(name))
            .await
            .map_err(|e| MetricError::Failed(format!("keptn: {e}")))?
            .ok_or_else(|| MetricError::Failed(format!("keptn: {what} not found")))?;
        match found.data.pointer("/status/value") {
            Some(Value::String(s)) => s.trim().parse::<f64>().map_err(|_| {
                MetricError::Failed(format!(
                    "keptn: {what} has a value that is not a number: {s}"
                ))
            }),
            Some(Value::Number(n)) => n
                .as_f64()
                .ok_or_else(|| MetricError::Failed(format!("keptn: {what}: {n}"))),
            _ => Err(MetricError::NoValues(format!(
                "keptn: {what} has no value yet"
            ))),
        }
    }

    async fn analysis(
        &self,
        namespace: &str,
        definition: &str,
        duration: &str,
        args: BTreeMap<String, String>,
    ) -> Result<f64, MetricError> {
        let ar = resource("Analysis", "analyses");
        let api: kube::Api<DynamicObject> =
            kube::Api::namespaced_with(self.client.clone(), namespace, &ar);
        let name = format!("{definition}-{}", suffix());
        let mut object = DynamicObject::new(&name, &ar).within(namespace);
        object.data = json!({
            "spec": {
                "analysisDefinition": {"name": definition},
                "timeframe": {"recent": duration},
                "args": args,
            }
        });
        let what = format!("Analysis {name}.{namespace} of {definition}");
        api.create(&PostParams::default(), &object)
            .await
            .map_err(|e| MetricError::Failed(format!("keptn: cannot create {what}: {e}")))?;
        let outcome = tokio::time::timeout(ANALYSIS_TIMEOUT, async {
            loop {
                tokio::time::sleep(ANALYSIS_POLL).await;
                let current = api
                    .get_opt(&name)
                    .await
                    .map_err(|e| MetricError::Failed(format!("keptn: cannot read {what}: {e}")))?;
                let Some(current) = current else {
                    return Err(MetricError::Failed(format!("keptn: {what} disappeared")));
                };
                let status = current.data.get("status");
                if status.and_then(|s| s.get("state")).and_then(Value::as_str) == Some("Completed")
                {
                    if let Some(pass) = status.and_then(|s| s.get("pass")).and_then(Value::as_bool)
                    {
                        return Ok(if pass { 1.0 } else { 0.0 });
                    }
                }
            }
        })
        .await
        .unwrap_or_else(|_| {
            Err(MetricError::Failed(format!(
                "keptn: {what} was not completed within {} s",
                ANALYSIS_TIMEOUT.as_secs()
            )))
        });
        if let Err(e) = api.delete(&name, &DeleteParams::default()).await {
            tracing::warn!("keptn: could not delete {what}: {e}");
        }
        outcome
    }
}

impl MetricsProvider for Keptn {
    fn kind(&self) -> &'static str {
        "keptn"
    }

    fn endpoint(&self) -> &str {
        "the cluster's metrics.keptn.sh/v1beta1"
    }

    fn query<'a>(&'a self, query: &'a str) -> BoxFuture<'a, Result<f64, MetricError>> {
        Box::pin(self.run(query))
    }

    fn is_online(&self) -> BoxFuture<'_, Result<(), MetricError>> {
        Box::pin(futures::future::ready(Ok(())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_read_as_flagger_reads_them() {
        assert_eq!(
            parse(" KeptnMetric/Prod/Error-Rate\n"),
            Ok(Query::Metric {
                namespace: "prod".into(),
                name: "error-rate".into()
            })
        );
        assert_eq!(
            parse("analyses/prod/slo/5m/service=podinfo;env=prod;bad"),
            Ok(Query::Analysis {
                namespace: "prod".into(),
                name: "slo".into(),
                duration: "5m".into(),
                args: BTreeMap::from([
                    ("env".to_string(), "prod".to_string()),
                    ("service".to_string(), "podinfo".to_string()),
                ]),
            })
        );
        assert!(matches!(
            parse("analysis/prod/slo"),
            Ok(Query::Analysis { duration, args, .. }) if duration == "1m" && args.is_empty()
        ));
        for bad in ["keptnmetric/prod", "metric/prod/x", "keptnmetric//x"] {
            assert!(matches!(parse(bad), Err(MetricError::Failed(_))), "{bad}");
        }
    }

    /// Keptn's two CRDs, as the emulator serves them (a status subresource each).
    fn crd(kind: &str, plural: &str) -> Value {
        json!({
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": {"name": format!("{plural}.{GROUP}")},
            "spec": {
                "group": GROUP,
                "scope": "Namespaced",
                "names": {"kind": kind, "plural": plural, "singular": kind.to_lowercase(), "listKind": format!("{kind}List")},
                "versions": [{
                    "name": VERSION, "served": true, "storage": true,
                    "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}},
                    "subresources": {"status": {}},
                }],
            },
        })
    }

    #[tokio::test]
    async fn keptn_metrics_and_analyses_are_read_from_the_cluster() {
        let (emu, client) = crate::testing::emulated(Duration::from_millis(10)).await;
        let emu = std::sync::Arc::new(emu);
        for (kind, plural) in [("KeptnMetric", "keptnmetrics"), ("Analysis", "analyses")] {
            let r = emu.insert(crd(kind, plural));
            assert!(r.is_ok(), "{r:?}");
        }
        let api_version = format!("{GROUP}/{VERSION}");
        let r = emu.insert(json!({
            "apiVersion": api_version,
            "kind": "KeptnMetric",
            "metadata": {"name": "error-rate", "namespace": "test"},
            "spec": {"provider": {"name": "prometheus"}, "query": "sum(rate(errors[1m]))", "fetchIntervalSeconds": 10},
        }));
        assert!(r.is_ok(), "{r:?}");
        let keptn = match Keptn::new(&ProviderSpec {
            cluster: Some(client),
            ..ProviderSpec::default()
        }) {
            Ok(k) => k,
            Err(e) => panic!("{e}"),
        };
        // Not fetched by Keptn yet: no values.
        assert!(matches!(
            keptn.run("keptnmetric/test/error-rate").await,
            Err(MetricError::NoValues(_))
        ));
        let r = emu.update_status(
            &api_version,
            "keptnmetrics",
            Some("test"),
            "error-rate",
            json!({"value": "0.75", "rawValue": "MC43NQ=="}),
        );
        assert!(r.is_ok(), "{r:?}");
        assert_eq!(keptn.run("KeptnMetric/test/error-rate").await, Ok(0.75));
        assert!(matches!(
            keptn.run("keptnmetric/test/nothing").await,
            Err(MetricError::Failed(m)) if m.contains("not found")
        ));

        // An Analysis: Keptn's part played here, marking each new one completed.
        for (verdict, want) in [(true, 1.0), (false, 0.0)] {
            let controller = {
                let emu = emu.clone();
                let api_version = api_version.clone();
                tokio::spawn(async move {
                    loop {
                        let created = emu.list(&api_version, "analyses", Some("test"));
                        if let Some(name) = created
                            .first()
                            .and_then(|a| a.pointer("/metadata/name"))
                            .and_then(Value::as_str)
                        {
                            let spec = created[0]["spec"].clone();
                            let r = emu.update_status(
                                &api_version,
                                "analyses",
                                Some("test"),
                                name,
                                json!({"state": "Completed", "pass": verdict}),
                            );
                            return (spec, r.is_ok());
                        }
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                })
            };
            assert_eq!(
                keptn
                    .run("analysis/test/podinfo-slo/5m/service=podinfo")
                    .await,
                Ok(want)
            );
            match controller.await {
                Ok((spec, updated)) => {
                    assert!(updated);
                    assert_eq!(
                        spec,
                        json!({"analysisDefinition": {"name": "podinfo-slo"}, "timeframe": {"recent": "5m"}, "args": {"service": "podinfo"}})
                    );
                }
                Err(e) => panic!("{e}"),
            }
            // Deleted once read.
            assert!(emu.list(&api_version, "analyses", Some("test")).is_empty());
        }
    }
}
