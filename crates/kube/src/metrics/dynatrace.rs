//! The `dynatrace` provider, as Flagger queries Dynatrace's metrics API v2
//! (`pkg/metrics/providers/dynatrace.go`):
//!
//! - address: `spec.provider.address`, required: the environment's URL
//!   (`https://{environment-id}.live.dynatrace.com`, or a Managed cluster's
//!   `https://{domain}/e/{environment-id}`);
//! - credentials: the `secretRef` Secret's `dynatrace_token`, required, sent as
//!   `Authorization: Api-Token T`;
//! - a query: `GET {address}/api/v2/metrics/query?metricSelector=Q&resolution=Inf&from=F&to=T`,
//!   T now and F ten metric intervals earlier (Unix milliseconds);
//! - its value: the first value of the **last** data series of the first result;
//! - no values: no result, a result without data, or that first value missing or `null`
//!   (Flagger's decoder reads `null` as 0; aviary does not take a missing value for a measured 0);
//! - online: `GET {address}/api/v2/metrics?pageSize=1` answers 200.
//!
//! For the statistical judge (`analysis.judge.provider`), a range query is the same call over
//! the judge's window at `resolution` = the step in whole minutes (Dynatrace's finest is one
//! minute): every data series of every result, labelled by its `dimensionMap` (and
//! `metricId`), each value at its timestamp, which Dynatrace gives as its time slot's end.

use std::time::Duration;

use futures::future::BoxFuture;
use serde_json::Value;

use super::api::{excerpt, json_of, number, range_window_ms, unix_now_ms, Api, Call};
use super::provider::{MetricsProvider, ProviderSpec, RangeSeries};
use super::MetricError;

const QUERY_PATH: &str = "/api/v2/metrics/query";
const METRICS_PATH: &str = "/api/v2/metrics";
/// The query window, in metric intervals (Flagger's `dynatraceDeltaMultiplierOnMetricInterval`).
const WINDOW_INTERVALS: u32 = 10;

#[derive(Debug)]
pub(crate) struct Dynatrace {
    api: Api,
    endpoint: String,
    window: Duration,
}

impl Dynatrace {
    pub(crate) fn new(
        clients: &crate::http::Clients,
        spec: &ProviderSpec,
    ) -> Result<Dynatrace, MetricError> {
        let address = spec.address_or("");
        if address.is_empty() {
            return Err(MetricError::Failed(
                "dynatrace has no default address: set spec.provider.address to the environment's URL (https://ENVIRONMENT-ID.live.dynatrace.com)"
                    .into(),
            ));
        }
        let token = spec.secret_text("dynatrace_token", "a Dynatrace API token")?;
        let api = Api::new(
            clients,
            "dynatrace",
            address,
            vec![("Authorization", format!("Api-Token {}", token.trim()))],
            &spec.headers,
            spec.settings(),
        )?;
        Ok(Dynatrace {
            endpoint: api.endpoint(QUERY_PATH),
            window: spec.interval * WINDOW_INTERVALS,
            api,
        })
    }

    async fn run(&self, query: &str, now_ms: u64) -> Result<f64, MetricError> {
        let from = now_ms.saturating_sub(self.window.as_millis() as u64);
        let call = Call::get(QUERY_PATH)
            .param("metricSelector", query.trim())
            .param("resolution", "Inf")
            .param("from", from.to_string())
            .param("to", now_ms.to_string());
        let body = self.api.call(&call).await?;
        value_of(&body, &self.endpoint)
    }
}

/// Every data series of every result, for the judge.
fn series_of(body: &[u8], endpoint: &str) -> Result<Vec<RangeSeries>, MetricError> {
    let answer = json_of(body, endpoint, "Dynatrace's")?;
    let Some(results) = answer.get("result").and_then(Value::as_array) else {
        return Err(MetricError::Failed(format!(
            "{endpoint} answered without a result list: {}",
            excerpt(body, 200)
        )));
    };
    let mut out = Vec::new();
    for result in results {
        let metric = result
            .get("metricId")
            .and_then(Value::as_str)
            .unwrap_or_default();
        for data in result
            .get("data")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default()
        {
            let mut labels: std::collections::BTreeMap<String, String> = data
                .get("dimensionMap")
                .and_then(Value::as_object)
                .map(|m| {
                    m.iter()
                        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                        .collect()
                })
                .unwrap_or_default();
            labels.insert("metricId".into(), metric.to_string());
            let times = data.get("timestamps").and_then(Value::as_array);
            let values = data.get("values").and_then(Value::as_array);
            let points = times
                .into_iter()
                .flatten()
                .zip(values.into_iter().flatten())
                .filter_map(|(t, v)| {
                    Some((t.as_f64()? / 1000.0, v.as_f64().filter(|v| v.is_finite())?))
                })
                .collect();
            out.push(RangeSeries { labels, points });
        }
    }
    if out.is_empty() {
        return Err(MetricError::NoValues(
            "dynatrace: the metric selector matched no data series".into(),
        ));
    }
    Ok(out)
}

/// The first value of the last data series of the first result.
fn value_of(body: &[u8], endpoint: &str) -> Result<f64, MetricError> {
    let answer = json_of(body, endpoint, "Dynatrace's")?;
    let no_values = |why: &str| MetricError::NoValues(format!("dynatrace: {why}"));
    let Some(results) = answer.get("result").and_then(Value::as_array) else {
        return Err(MetricError::Failed(format!(
            "{endpoint} answered without a result list: {}",
            excerpt(body, 200)
        )));
    };
    let first = results
        .first()
        .ok_or_else(|| no_values("the metric selector matched no metric"))?;
    let data = first
        .get("data")
        .and_then(Value::as_array)
        .and_then(|d| d.last())
        .ok_or_else(|| no_values("the metric has no data series"))?;
    let value = data
        .get("values")
        .and_then(Value::as_array)
        .and_then(|v| v.first());
    number(value, "dynatrace", "the data series' first value", endpoint)
}

impl MetricsProvider for Dynatrace {
    fn kind(&self) -> &'static str {
        "dynatrace"
    }

    fn endpoint(&self) -> &str {
        &self.endpoint
    }

    fn query<'a>(&'a self, query: &'a str) -> BoxFuture<'a, Result<f64, MetricError>> {
        Box::pin(self.run(query, unix_now_ms()))
    }

    fn query_range<'a>(
        &'a self,
        query: &'a str,
        start: f64,
        end: f64,
        step: Duration,
    ) -> BoxFuture<'a, Result<Vec<RangeSeries>, MetricError>> {
        Box::pin(async move {
            let minutes = step.as_secs().div_ceil(60).max(1);
            // Dynatrace's slots are the resolution's whole minutes.
            let (from, to) = range_window_ms(start, end, Duration::from_secs(minutes * 60));
            let call = Call::get(QUERY_PATH)
                .param("metricSelector", query.trim())
                .param("resolution", format!("{minutes}m"))
                .param("from", from.to_string())
                .param("to", to.to_string());
            let body = self.api.call(&call).await?;
            series_of(&body, &self.endpoint)
        })
    }

    fn is_online(&self) -> BoxFuture<'_, Result<(), MetricError>> {
        Box::pin(async move {
            self.api
                .online(&Call::get(METRICS_PATH).param("pageSize", "1"))
                .await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wiremock::matchers::{header, method, path, query_param};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    fn spec(address: &str) -> ProviderSpec {
        ProviderSpec::for_test("dynatrace", address, &[("dynatrace_token", "dt0c01.T\n")])
    }

    fn make(spec: &ProviderSpec) -> Result<Dynatrace, MetricError> {
        Dynatrace::new(&crate::http::Clients::default(), spec)
    }

    #[tokio::test]
    async fn a_query_is_a_metric_selector_over_ten_intervals_read_at_its_last_series() {
        let server = MockServer::start().await;
        let selector =
            "builtin:service.response.time:filter(eq(\"dt.entity.service\",\"SERVICE-1\")):avg";
        Mock::given(method("GET"))
            .and(path("/e/abc/api/v2/metrics/query"))
            .and(query_param("metricSelector", selector))
            .and(query_param("resolution", "Inf"))
            .and(query_param("from", "1700000000000"))
            .and(query_param("to", "1700000600000"))
            .and(header("Authorization", "Api-Token dt0c01.T"))
            .respond_with(ResponseTemplate::new(200).set_body_string(
                r#"{"totalCount":2,"nextPageKey":null,"resolution":"Inf","result":[{"metricId":"builtin:service.response.time:avg","dataPointCountRatio":0.0001,"dimensionCountRatio":0.0002,"data":[{"dimensions":["SERVICE-1"],"dimensionMap":{"dt.entity.service":"SERVICE-1"},"timestamps":[1700000600000],"values":[1200.5]},{"dimensions":["SERVICE-2"],"dimensionMap":{"dt.entity.service":"SERVICE-2"},"timestamps":[1700000600000],"values":[310.25]}]}]}"#,
            ))
            .mount(&server)
            .await;
        match make(&spec(&format!("{}/e/abc", server.uri()))) {
            Ok(dt) => assert_eq!(dt.run(selector, 1_700_000_600_000).await, Ok(310.25)),
            Err(e) => panic!("{e}"),
        }
    }

    #[tokio::test]
    async fn range_queries_give_every_data_series_at_the_steps_minutes() {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path("/api/v2/metrics/query"))
            .and(query_param("metricSelector", "builtin:service.errors.total.count:splitBy(\"dt.entity.service\")"))
            .and(query_param("resolution", "1m"))
            // The window opens a slot (the resolution's minute) before the first close.
            .and(query_param("from", "1699999940000"))
            .and(query_param("to", "1700000180000"))
            .respond_with(ResponseTemplate::new(200).set_body_string(
                r#"{"resolution":"1m","result":[{"metricId":"builtin:service.errors.total.count:splitBy(\"dt.entity.service\")","data":[{"dimensionMap":{"dt.entity.service":"SERVICE-CANARY"},"timestamps":[1700000060000,1700000120000,1700000180000],"values":[2,null,5]},{"dimensionMap":{"dt.entity.service":"SERVICE-PRIMARY"},"timestamps":[1700000060000],"values":[0]}]}]}"#,
            ))
            .mount(&server)
            .await;
        let dt = make(&spec(&server.uri())).unwrap_or_else(|e| panic!("{e}"));
        let series = dt
            .query_range(
                "builtin:service.errors.total.count:splitBy(\"dt.entity.service\")",
                1_700_000_000.0,
                1_700_000_180.0,
                Duration::from_secs(30),
            )
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(series.len(), 2);
        assert_eq!(
            series[0]
                .labels
                .get("dt.entity.service")
                .map(String::as_str),
            Some("SERVICE-CANARY")
        );
        // Timestamps are the slots' ends already; a null slot is left out.
        assert_eq!(
            series[0].points,
            vec![(1_700_000_060.0, 2.0), (1_700_000_180.0, 5.0)]
        );
    }

    #[test]
    fn answers_without_a_value_are_no_values() {
        let read = |body: &str| value_of(body.as_bytes(), "E");
        for empty in [
            r#"{"result":[]}"#,
            r#"{"result":[{"metricId":"m","data":[]}]}"#,
            r#"{"result":[{"metricId":"m","data":[{"timestamps":[1],"values":[null]}]}]}"#,
            r#"{"result":[{"metricId":"m","data":[{"timestamps":[],"values":[]}]}]}"#,
        ] {
            assert!(
                matches!(read(empty), Err(MetricError::NoValues(_))),
                "{empty}"
            );
        }
        assert!(matches!(
            read(r#"{"error":{"code":400}}"#),
            Err(MetricError::Failed(_))
        ));
    }

    #[tokio::test]
    async fn online_lists_one_metric_and_errors_carry_dynatraces_text() {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path("/api/v2/metrics"))
            .and(query_param("pageSize", "1"))
            .and(header("Authorization", "Api-Token dt0c01.T"))
            .respond_with(ResponseTemplate::new(200).set_body_string(r#"{"totalCount":1}"#))
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .and(path("/api/v2/metrics/query"))
            .respond_with(ResponseTemplate::new(400).set_body_string(
                r#"{"error":{"code":400,"message":"The metric selector is invalid: Unknown metric key."}}"#,
            ))
            .mount(&server)
            .await;
        match make(&spec(&server.uri())) {
            Ok(dt) => {
                assert_eq!(dt.is_online().await, Ok(()));
                match dt.run("nope", 1_700_000_600_000).await {
                    Err(MetricError::Failed(m)) => assert!(
                        m.ends_with("answered 400 Bad Request: The metric selector is invalid: Unknown metric key."),
                        "{m}"
                    ),
                    other => panic!("{other:?}"),
                }
            }
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn the_address_and_the_token_are_required() {
        let mut s = spec("https://abc.live.dynatrace.com");
        s.secret.clear();
        assert!(matches!(make(&s), Err(MetricError::Failed(m)) if m.contains("dynatrace_token")));
        s.address = None;
        assert!(
            matches!(make(&s), Err(MetricError::Failed(m)) if m.contains("set spec.provider.address"))
        );
    }
}
