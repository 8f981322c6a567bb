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
pub const SUPPORTED_TYPES: &[&str] = &["prometheus"];

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
    /// primary interval by interval rather than reading single numbers. Flagger's interface has
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

/// A provider of type `provider_type` (a MetricTemplate's `spec.provider.type`; empty means
/// `prometheus`, as in Flagger) at `address`, sending through the run's `clients`. The other
/// arguments are those of [`PrometheusClient::with_clients`]: `auth` and `headers` are sent with
/// every request; `settings` are `(insecure_skip_verify, timeout, retries)`: the timeout bounds
/// each attempt, `retries` is the number of extra attempts after a transient failure.
///
/// A type aviary does not implement is a [`MetricError::Failed`] naming it and listing
/// [`SUPPORTED_TYPES`].
pub fn new_provider(
    clients: &crate::http::Clients,
    provider_type: &str,
    address: &str,
    auth: Auth,
    headers: BTreeMap<String, String>,
    settings: (bool, Duration, u32),
) -> Result<Arc<dyn MetricsProvider>, MetricError> {
    match check_type(provider_type)? {
        "prometheus" => Ok(Arc::new(PrometheusClient::with_clients(
            clients, address, auth, headers, settings,
        )?)),
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
        new_provider(
            &crate::http::Clients::default(),
            provider_type,
            address,
            Auth::None,
            BTreeMap::new(),
            (false, Duration::from_secs(1), 0),
        )
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
        for t in ["datadog", "Prometheus", "cloudwatch", " prometheus"] {
            match make(t, "http://127.0.0.1:1") {
                Err(MetricError::Failed(m)) => {
                    assert!(
                        m.contains(&format!("metric provider type {t} is not supported")),
                        "{m}"
                    );
                    assert!(m.ends_with("supported types: prometheus"), "{m}");
                }
                Err(e) => panic!("{t:?}: {e:?}"),
                Ok(p) => panic!("{t:?}: {p:?}"),
            }
        }
    }

    #[test]
    fn providers_do_not_show_credentials() {
        let p = new_provider(
            &crate::http::Clients::default(),
            "prometheus",
            "http://user:hunter2@prometheus:9090",
            Auth::Bearer("s3cr3t".into()),
            BTreeMap::from([("X-Api-Key".to_string(), "k3y".to_string())]),
            (false, Duration::from_secs(1), 0),
        );
        match p {
            Ok(p) => {
                let shown = format!("{} {p:?}", p.endpoint());
                for secret in ["hunter2", "s3cr3t", "k3y"] {
                    assert!(!shown.contains(secret), "{shown}");
                }
            }
            Err(e) => panic!("{e}"),
        }
    }
}
