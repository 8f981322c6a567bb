//! The `externalmetrics` provider, as Flagger reads the Kubernetes external metrics API
//! (`pkg/metrics/providers/externalmetrics.go`): `external.metrics.k8s.io/v1beta1`, served
//! behind the API server's aggregation layer by an adapter (KEDA, prometheus-adapter, Datadog's
//! cluster agent, ...).
//!
//! - where: the cluster aviary runs against, through its kube client; or
//!   `spec.provider.address` (another API server), with the `secretRef` Secret's `token` as a
//!   bearer token if it has one;
//! - a query: `[<namespace>/]<metric>[?labelSelector=<url-encoded selector>]` (namespace
//!   `default` when absent): `GET /apis/external.metrics.k8s.io/v1beta1/namespaces/NS/METRIC`;
//! - its value: the first item's `value`, a Kubernetes quantity (`42`, `500m`, `1.5k`, `2Gi`);
//! - no values: no item;
//! - online: listing `kube-system/dummy-metric` answers (with any list).
//!
//! The statistical judge needs series per deployment, which this API does not give.

use futures::future::BoxFuture;
use serde_json::Value;

use super::api::{excerpt, Api, Call};
use super::provider::{MetricsProvider, ProviderSpec};
use super::MetricError;

const PREFIX: &str = "/apis/external.metrics.k8s.io/v1beta1/namespaces";

/// Where the API is.
enum Source {
    Cluster(kube::Client),
    Address(Api),
}

pub(crate) struct ExternalMetrics {
    source: Source,
    endpoint: String,
}

impl std::fmt::Debug for ExternalMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExternalMetrics")
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

/// `(namespace, metric, labelSelector)` of a query.
fn parse(query: &str) -> Result<(String, String, Option<String>), MetricError> {
    let format = "write it as [<namespace>/]<metric>[?labelSelector=<url-encoded selector>]";
    let query = query.trim();
    let (path, params) = query.split_once('?').unwrap_or((query, ""));
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let (namespace, metric) = match parts.as_slice() {
        [metric] => ("default", *metric),
        [namespace, metric] => (
            if namespace.is_empty() {
                "default"
            } else {
                namespace
            },
            *metric,
        ),
        _ => {
            return Err(MetricError::Failed(format!(
                "externalmetrics: the query {query:?} has too many slashes: {format}"
            )))
        }
    };
    if metric.is_empty() {
        return Err(MetricError::Failed(format!(
            "externalmetrics: the query {query:?} names no metric: {format}"
        )));
    }
    let valid = |s: &str| {
        s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | ':'))
    };
    if !valid(namespace) || !valid(metric) {
        return Err(MetricError::Failed(format!(
            "externalmetrics: {namespace:?}/{metric:?} is not a namespace and a metric name: {format}"
        )));
    }
    let selector = url::form_urlencoded::parse(params.as_bytes())
        .find(|(k, _)| k == "labelSelector")
        .map(|(_, v)| v.into_owned())
        .filter(|v| !v.is_empty());
    Ok((namespace.to_string(), metric.to_string(), selector))
}

/// A Kubernetes quantity as a number: decimal (`n u m k M G T P E`), binary (`Ki Mi Gi Ti Pi
/// Ei`) or exponent (`1e3`) suffixes.
pub(crate) fn quantity(text: &str) -> Option<f64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || matches!(c, '.' | '+' | '-')))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let factor = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024f64,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        exp if exp.starts_with(['e', 'E']) => 10f64.powi(exp[1..].parse::<i32>().ok()?),
        _ => return None,
    };
    Some(number * factor).filter(|v| v.is_finite())
}

/// The first item's value of an `ExternalMetricValueList`.
fn first_value(list: &Value, endpoint: &str) -> Result<f64, MetricError> {
    let Some(items) = list.get("items").and_then(Value::as_array) else {
        return Err(MetricError::Failed(format!(
            "{endpoint} answered something that is not an ExternalMetricValueList: {}",
            excerpt(list.to_string().as_bytes(), 200)
        )));
    };
    let first = items.first().ok_or_else(|| {
        MetricError::NoValues("externalmetrics: no external metric matched".into())
    })?;
    let value = first
        .get("value")
        .and_then(Value::as_str)
        .unwrap_or_default();
    quantity(value).ok_or_else(|| {
        MetricError::Failed(format!(
            "{endpoint} answered a value that is not a quantity: {value:?}"
        ))
    })
}

impl ExternalMetrics {
    pub(crate) fn new(
        clients: &crate::http::Clients,
        spec: &ProviderSpec,
    ) -> Result<ExternalMetrics, MetricError> {
        let address = spec.address_or("");
        if !address.is_empty() {
            let credentials = match spec.secret.get("token") {
                Some(_) => vec![(
                    "Authorization",
                    format!(
                        "Bearer {}",
                        spec.secret_text("token", "a bearer token")?.trim()
                    ),
                )],
                None => Vec::new(),
            };
            let api = Api::new(
                clients,
                "externalmetrics",
                address,
                credentials,
                &spec.headers,
                spec.settings(),
            )?;
            return Ok(ExternalMetrics {
                endpoint: api.endpoint(PREFIX),
                source: Source::Address(api),
            });
        }
        match &spec.cluster {
            Some(client) => Ok(ExternalMetrics {
                source: Source::Cluster(client.clone()),
                endpoint: format!("the cluster's {PREFIX}"),
            }),
            None => Err(MetricError::Failed(
                "externalmetrics reads the cluster's external metrics API, and no cluster is available: set spec.provider.address"
                    .into(),
            )),
        }
    }

    /// The `ExternalMetricValueList` of `metric` in `namespace`.
    async fn list(
        &self,
        namespace: &str,
        metric: &str,
        selector: Option<&str>,
    ) -> Result<Value, MetricError> {
        let path = format!("{PREFIX}/{namespace}/{metric}");
        match &self.source {
            Source::Address(api) => {
                let mut call = Call::get(path);
                if let Some(selector) = selector {
                    call = call.param("labelSelector", selector);
                }
                let body = api.call(&call).await?;
                serde_json::from_slice(&body).map_err(|e| {
                    MetricError::Failed(format!(
                        "{} answered something that is not JSON ({e}): {}",
                        self.endpoint,
                        excerpt(&body, 200)
                    ))
                })
            }
            Source::Cluster(client) => {
                let mut uri = path;
                if let Some(selector) = selector {
                    uri.push_str("?labelSelector=");
                    uri.extend(url::form_urlencoded::byte_serialize(selector.as_bytes()));
                }
                let request = http::Request::get(&uri).body(Vec::new()).map_err(|e| {
                    MetricError::Failed(format!("externalmetrics: cannot ask for {uri}: {e}"))
                })?;
                client
                    .request::<Value>(request)
                    .await
                    .map_err(|e| MetricError::Failed(format!("externalmetrics: {uri}: {e}")))
            }
        }
    }

    async fn run(&self, query: &str) -> Result<f64, MetricError> {
        let (namespace, metric, selector) = parse(query)?;
        let list = self.list(&namespace, &metric, selector.as_deref()).await?;
        first_value(&list, &self.endpoint)
    }
}

impl MetricsProvider for ExternalMetrics {
    fn kind(&self) -> &'static str {
        "externalmetrics"
    }

    fn endpoint(&self) -> &str {
        &self.endpoint
    }

    fn query<'a>(&'a self, query: &'a str) -> BoxFuture<'a, Result<f64, MetricError>> {
        Box::pin(self.run(query))
    }

    fn is_online(&self) -> BoxFuture<'_, Result<(), MetricError>> {
        Box::pin(async move {
            self.list("kube-system", "dummy-metric", None)
                .await
                .map(drop)
                .map_err(|e| {
                    MetricError::Failed(format!(
                        "the external metrics API ({}) is not available: {}",
                        self.endpoint,
                        e.message()
                    ))
                })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn queries_are_read_as_flagger_reads_them() {
        let p = |q: &str| parse(q).map_err(|e| e.to_string());
        assert_eq!(
            p("prod/http_requests_error_rate?labelSelector=app%3Dpodinfo%2Crole%3Dcanary"),
            Ok((
                "prod".into(),
                "http_requests_error_rate".into(),
                Some("app=podinfo,role=canary".into())
            ))
        );
        assert_eq!(p("errors"), Ok(("default".into(), "errors".into(), None)));
        assert_eq!(p("/errors"), Ok(("default".into(), "errors".into(), None)));
        for bad in ["a/b/c", "prod/", "prod/a b"] {
            assert!(p(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn quantities_are_read_as_kubernetes_writes_them() {
        for (text, want) in [
            ("42", 42.0),
            ("500m", 0.5),
            ("1.5k", 1500.0),
            ("2Ki", 2048.0),
            ("1e3", 1000.0),
            ("-3", -3.0),
            ("250u", 0.00025),
        ] {
            assert_eq!(quantity(text), Some(want), "{text}");
        }
        for bad in ["", "x", "1.5 k", "3mm"] {
            assert_eq!(quantity(bad), None, "{bad}");
        }
    }

    #[tokio::test]
    async fn values_are_read_from_the_clusters_external_metrics_api() {
        let (emu, client) = crate::testing::emulated(Duration::from_millis(10)).await;
        emu.set_external_metric(
            "test",
            "http_requests_error_rate",
            &[("app", "podinfo"), ("role", "canary")],
            "2500m",
        );
        emu.set_external_metric(
            "test",
            "http_requests_error_rate",
            &[("app", "podinfo"), ("role", "primary")],
            "100m",
        );
        let p = ExternalMetrics::new(
            &crate::http::Clients::default(),
            &ProviderSpec {
                cluster: Some(client),
                ..ProviderSpec::default()
            },
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.is_online().await, Ok(()));
        assert_eq!(
            p.run("test/http_requests_error_rate?labelSelector=app%3Dpodinfo%2Crole%3Dcanary")
                .await,
            Ok(2.5)
        );
        assert_eq!(
            p.run("test/http_requests_error_rate?labelSelector=role%3Dprimary")
                .await,
            Ok(0.1)
        );
        assert!(matches!(
            p.run("test/http_requests_error_rate?labelSelector=role%3Dnone")
                .await,
            Err(MetricError::NoValues(_))
        ));
        assert!(matches!(
            p.run("nothing").await,
            Err(MetricError::NoValues(_))
        ));
    }
}
