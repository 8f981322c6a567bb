//! The metrics-provider seam: what the [`Evaluator`](super::Evaluator) and the statistical judge
//! need from a metrics backend ([`MetricsProvider`]), and the one place that turns a
//! MetricTemplate's `spec.provider.type` into a provider ([`new_provider`]).
//!
//! Modelled on Flagger's `pkg/metrics/providers`: `provider.go`'s `Interface` (`RunQuery`,
//! `IsOnline`) and `factory.go`'s `Factory.Provider`, which switches on the provider type. Unlike
//! Flagger's factory, which falls back to Prometheus for a type it does not know, aviary refuses
//! a type it does not implement: a `datadog` query sent to a Prometheus would fail in a less
//! obvious way.
//!
//! A new provider is one new file in this module with a type implementing [`MetricsProvider`], and
//! one arm in [`new_provider`] (plus its name in [`SUPPORTED_TYPES`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;

use super::prometheus::{Auth, PrometheusClient};
use super::MetricError;

/// The `spec.provider.type`s aviary can query, in the order messages list them.
pub const SUPPORTED_TYPES: &[&str] = &[
    "prometheus",
    "datadog",
    "newrelic",
    "influxdb",
    "dynatrace",
    "stackdriver",
    "graphite",
    "cloudwatch",
    "keptn",
    "externalmetrics",
    "splunk",
];

/// One metrics backend a query can be sent to.
///
/// Object-safe: the evaluator holds providers as `Arc<dyn MetricsProvider>`, and every future is
/// `Send` so evaluations can be spawned. Implementations bound every request with a timeout and
/// every answer with a size cap, and keep credentials out of messages, logs and `Debug` output.
pub trait MetricsProvider: Send + Sync + std::fmt::Debug {
    /// The provider type as a MetricTemplate names it in `spec.provider.type` (`"prometheus"`).
    fn kind(&self) -> &'static str;

    /// Where queries go, for messages and logs: safe to show, with credentials (`user:password@`,
    /// secret query parameters) redacted.
    fn endpoint(&self) -> &str;

    /// Runs `query` and returns its one number: Flagger's `RunQuery(query) (float64, error)`,
    /// which converts the provider's result to a float64.
    ///
    /// "No values" ([`MetricError::NoValues`], Flagger's `ErrNoValuesFound`) means the query ran
    /// and found nothing usable: no series, NaN, or ±Inf (a division by zero). The engine counts
    /// it as a failed check, as Flagger does, usually because the canary gets no traffic yet. Any
    /// other problem (unreachable, an HTTP or query error, an answer that is not the provider's
    /// format or not one number) is [`MetricError::Failed`].
    fn query<'a>(&'a self, query: &'a str) -> BoxFuture<'a, Result<f64, MetricError>>;

    /// Checks that the provider answers: Flagger's `IsOnline() (bool, error)`, which returns an
    /// error when the API is unreachable (for Prometheus: `vector(1)` must answer 1). Here `Ok(())`
    /// is Flagger's `(true, nil)`; anything else is a [`MetricError::Failed`] saying why, and
    /// never [`MetricError::NoValues`].
    fn is_online(&self) -> BoxFuture<'_, Result<(), MetricError>>;

    /// The series of `query` over `[start, end]` (Unix seconds) at `step`, with their labels and
    /// the timestamp of every point, for the statistical judge, which follows the canary and the
    /// primary interval by interval rather than reading single numbers. `start` and `end` close
    /// the judge's first and last intervals and a point belongs to the interval its timestamp
    /// closes, so a provider that answers in buckets labels each point with its bucket's end and
    /// asks from a step before `start` (`api::range_window`). Flagger's interface has
    /// no such method; it is an aviary addition.
    ///
    /// "No values" ([`MetricError::NoValues`]) means the query returned no series; the judge then
    /// has no samples for that workload. Points that are NaN are left out, so a series of NaNs
    /// is a series without points, not an error.
    ///
    /// The default is for providers that cannot give series: a [`MetricError::Failed`] that says
    /// the judge needs them and this provider cannot give them.
    fn query_range<'a>(
        &'a self,
        _query: &'a str,
        _start: f64,
        _end: f64,
        _step: Duration,
    ) -> BoxFuture<'a, Result<Vec<RangeSeries>, MetricError>> {
        let message = format!(
            "the statistical judge needs series over time (range queries), and metric provider {} at {} cannot give them",
            self.kind(),
            self.endpoint()
        );
        Box::pin(futures::future::ready(Err(MetricError::Failed(message))))
    }
}

/// One series of a range query: its labels and its `(Unix seconds, value)` points, in time
/// order, NaNs left out.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RangeSeries {
    pub labels: BTreeMap<String, String>,
    pub points: Vec<(f64, f64)>,
}

/// What a provider is made from: a MetricTemplate's `spec.provider` (or, for built-in checks,
/// inline queries and the judge, the run's Prometheus), the data of its `secretRef` Secret, and
/// the metric's interval.
#[derive(Clone, Default)]
pub struct ProviderSpec {
    /// `spec.provider.type`; empty means `prometheus`, as in Flagger.
    pub kind: String,
    /// `spec.provider.address`; None: the provider's documented default (Datadog's
    /// `https://api.datadoghq.com`, ...). Prometheus has none: the caller gives the run's.
    pub address: Option<String>,
    /// Prometheus' credentials: the run's default ones, or a template Secret's `token` or
    /// `username` and `password`.
    pub auth: Auth,
    /// The data of the template's `secretRef` Secret: each provider takes its keys from it,
    /// named as Flagger names them (`datadog_api_key`, `newrelic_query_key`, ...).
    pub secret: BTreeMap<String, Vec<u8>>,
    /// `spec.provider.headers`, sent with every request.
    pub headers: BTreeMap<String, String>,
    /// `spec.provider.region` (CloudWatch).
    pub region: Option<String>,
    /// The metric's `interval`: the window of the providers whose API takes one (Datadog asks
    /// for ten intervals back, New Relic for one).
    pub interval: Duration,
    pub insecure_skip_verify: bool,
    /// The cluster aviary runs against (Keptn's objects and external metrics are read there).
    pub cluster: Option<kube::Client>,
    /// Bounds each attempt.
    pub timeout: Duration,
    /// Extra attempts after a transient failure.
    pub retries: u32,
}

impl std::fmt::Debug for ProviderSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderSpec")
            .field("kind", &self.kind)
            .field(
                "address",
                &self.address.as_deref().map(aviary_core::urls::redact),
            )
            .field("auth", &self.auth)
            .field("secret_keys", &self.secret.keys().collect::<Vec<_>>())
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("region", &self.region)
            .field("interval", &self.interval)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
impl ProviderSpec {
    /// A provider of `kind` at `address` with `secret`'s keys, for tests: a one-minute metric
    /// interval, 5 s attempts.
    pub(crate) fn for_test(kind: &str, address: &str, secret: &[(&str, &str)]) -> ProviderSpec {
        ProviderSpec {
            kind: kind.into(),
            address: Some(address.to_string()),
            secret: secret
                .iter()
                .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
                .collect(),
            interval: Duration::from_secs(60),
            timeout: Duration::from_secs(5),
            ..ProviderSpec::default()
        }
    }
}

impl ProviderSpec {
    /// A `prometheus` provider at `address`.
    pub fn prometheus(address: &str, auth: Auth, timeout: Duration, retries: u32) -> ProviderSpec {
        ProviderSpec {
            kind: "prometheus".into(),
            address: Some(address.to_string()),
            auth,
            timeout,
            retries,
            interval: Duration::from_secs(60),
            ..ProviderSpec::default()
        }
    }

    /// The address to use: the template's, else `default`.
    pub(crate) fn address_or<'a>(&'a self, default: &'a str) -> &'a str {
        self.address
            .as_deref()
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .unwrap_or(default)
    }

    /// The Secret's value under `key`, trimmed of a final newline (`echo` into a file), or an
    /// error naming the key as Flagger documents it.
    pub(crate) fn secret_text(&self, key: &str, what: &str) -> Result<String, MetricError> {
        match self.secret.get(key) {
            Some(v) => Ok(String::from_utf8_lossy(v)
                .trim_end_matches(['\n', '\r'])
                .to_string()),
            None if self.secret.is_empty() => Err(MetricError::Failed(format!(
                "{} needs {what}: set spec.provider.secretRef to a Secret with the key {key}",
                self.kind
            ))),
            None => Err(MetricError::Failed(format!(
                "{} credentials do not contain {key} ({what})",
                self.kind
            ))),
        }
    }

    /// `(insecure_skip_verify, timeout, retries)`.
    pub(crate) fn settings(&self) -> (bool, Duration, u32) {
        (self.insecure_skip_verify, self.timeout, self.retries)
    }
}

/// The provider `spec` describes, sending through the run's `clients`. A type aviary does not
/// implement is a [`MetricError::Failed`] naming it and listing [`SUPPORTED_TYPES`].
pub fn new_provider(
    clients: &crate::http::Clients,
    spec: &ProviderSpec,
) -> Result<Arc<dyn MetricsProvider>, MetricError> {
    match check_type(&spec.kind)? {
        "prometheus" => Ok(Arc::new(PrometheusClient::with_clients(
            clients,
            spec.address.as_deref().unwrap_or_default(),
            spec.auth.clone(),
            spec.headers.clone(),
            spec.settings(),
        )?)),
        "datadog" => Ok(Arc::new(super::datadog::Datadog::new(clients, spec)?)),
        "newrelic" => Ok(Arc::new(super::newrelic::NewRelic::new(clients, spec)?)),
        "influxdb" => Ok(Arc::new(super::influxdb::InfluxDb::new(clients, spec)?)),
        "dynatrace" => Ok(Arc::new(super::dynatrace::Dynatrace::new(clients, spec)?)),
        "stackdriver" => Ok(Arc::new(super::stackdriver::Stackdriver::new(
            clients, spec,
        )?)),
        "graphite" => Ok(Arc::new(super::graphite::Graphite::new(clients, spec)?)),
        "cloudwatch" => Ok(Arc::new(super::cloudwatch::CloudWatch::new(clients, spec)?)),
        "keptn" => Ok(Arc::new(super::keptn::Keptn::new(spec)?)),
        "externalmetrics" => Ok(Arc::new(super::externalmetrics::ExternalMetrics::new(
            clients, spec,
        )?)),
        "splunk" => Ok(Arc::new(super::splunk::Splunk::new(clients, spec)?)),
        // `check_type` only returns supported types; this arm is reached only if a type is
        // listed in SUPPORTED_TYPES without an arm here.
        other => Err(unsupported(other)),
    }
}

/// The provider type `provider_type` names (empty: `prometheus`), or an error if aviary does not
/// support it. The evaluator calls it before it reads a template's credentials, so an unsupported
/// type is reported as such rather than as a missing Secret.
pub(crate) fn check_type(provider_type: &str) -> Result<&'static str, MetricError> {
    if provider_type.is_empty() {
        return Ok("prometheus");
    }
    SUPPORTED_TYPES
        .iter()
        .copied()
        .find(|t| *t == provider_type)
        .ok_or_else(|| unsupported(provider_type))
}

fn unsupported(provider_type: &str) -> MetricError {
    MetricError::Failed(format!(
        "metric provider type {provider_type} is not supported by aviary yet; supported types: {}",
        SUPPORTED_TYPES.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn make(provider_type: &str, address: &str) -> Result<Arc<dyn MetricsProvider>, MetricError> {
        let spec = ProviderSpec {
            kind: provider_type.into(),
            ..ProviderSpec::prometheus(address, Auth::None, Duration::from_secs(1), 0)
        };
        new_provider(&crate::http::Clients::default(), &spec)
    }

    #[test]
    fn the_factory_makes_prometheus_for_an_empty_or_prometheus_type() {
        for t in ["", "prometheus"] {
            match make(t, "http://prometheus:9090") {
                Ok(p) => {
                    assert_eq!(p.kind(), "prometheus", "{t:?}");
                    assert_eq!(p.endpoint(), "http://prometheus:9090/api/v1/query");
                }
                Err(e) => panic!("{t:?}: {e}"),
            }
        }
        // The provider's own checks still apply.
        assert!(make("prometheus", "prometheus:9090").is_err());
    }

    #[test]
    fn the_factory_refuses_unknown_types_and_lists_the_supported_ones() {
        for t in ["Prometheus", "sumologic", " prometheus", "datadog2"] {
            match make(t, "http://127.0.0.1:1") {
                Err(MetricError::Failed(m)) => {
                    assert!(
                        m.contains(&format!("metric provider type {t} is not supported")),
                        "{m}"
                    );
                    assert!(
                        m.ends_with(&format!("supported types: {}", SUPPORTED_TYPES.join(", "))),
                        "{m}"
                    );
                }
                Err(e) => panic!("{t:?}: {e:?}"),
                Ok(p) => panic!("{t:?}: {p:?}"),
            }
        }
    }

    #[test]
    fn every_provider_with_a_file_is_made_by_the_factory() {
        // The types with a file in this module: each must be listed and have its arm.
        for kind in [
            "prometheus",
            "datadog",
            "newrelic",
            "influxdb",
            "dynatrace",
            "stackdriver",
            "graphite",
            "cloudwatch",
            "keptn",
            "externalmetrics",
            "splunk",
        ] {
            assert!(
                SUPPORTED_TYPES.contains(&kind),
                "{kind} is not in SUPPORTED_TYPES"
            );
        }
    }

    #[test]
    fn providers_do_not_show_credentials() {
        let secret = BTreeMap::from([
            ("datadog_api_key".to_string(), b"d4t4".to_vec()),
            ("datadog_application_key".to_string(), b"4pp".to_vec()),
            ("newrelic_account_id".to_string(), b"1234".to_vec()),
            ("newrelic_query_key".to_string(), b"qu3ry".to_vec()),
            ("token".to_string(), b"t0k3n".to_vec()),
            ("org".to_string(), b"acme".to_vec()),
            ("dynatrace_token".to_string(), b"dt0c01".to_vec()),
            ("project".to_string(), b"acme".to_vec()),
            ("username".to_string(), b"us3r".to_vec()),
            ("password".to_string(), b"p4ss".to_vec()),
            ("sf_token_key".to_string(), b"sfT0k".to_vec()),
        ]);
        for kind in SUPPORTED_TYPES {
            let spec = ProviderSpec {
                kind: kind.to_string(),
                secret: secret.clone(),
                region: Some("us-east-1".into()),
                headers: BTreeMap::from([("X-Api-Key".to_string(), "k3y".to_string())]),
                ..ProviderSpec::prometheus(
                    "http://user:hunter2@prometheus:9090",
                    Auth::Bearer("s3cr3t".into()),
                    Duration::from_secs(1),
                    0,
                )
            };
            match new_provider(&crate::http::Clients::default(), &spec) {
                Ok(p) => {
                    assert_eq!(p.kind(), *kind);
                    let shown = format!("{} {p:?} {spec:?}", p.endpoint());
                    for secret in [
                        "hunter2", "s3cr3t", "k3y", "d4t4", "4pp", "qu3ry", "t0k3n", "dt0c01",
                        "sfT0k",
                    ] {
                        assert!(!shown.contains(secret), "{kind}: {shown}");
                    }
                }
                // CloudWatch's keys come from the environment, which a test run may not have.
                Err(e) if *kind == "cloudwatch" => {
                    assert!(e.message().contains("needs AWS credentials"), "{e}")
                }
                // Keptn reads the cluster's objects; this test has none.
                Err(e) if *kind == "keptn" => {
                    assert!(e.message().contains("no cluster is available"), "{e}")
                }
                Err(e) => panic!("{kind}: {e}"),
            }
        }
    }
}
