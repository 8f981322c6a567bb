//! The `datadog` provider, as Flagger queries Datadog (`pkg/metrics/providers/datadog.go`):
//!
//! - address: `spec.provider.address`, else `https://api.datadoghq.com` (another site, such as
//!   `https://api.datadoghq.eu`, is set there);
//! - credentials: the `secretRef` Secret's `datadog_api_key` and `datadog_application_key`, both
//!   required, sent as the `DD-API-KEY` and `DD-APPLICATION-KEY` headers;
//! - a query: `GET {address}/api/v1/query?query=Q&from=F&to=T`, T now and F ten metric intervals
//!   earlier (Unix seconds);
//! - its value: the **first** point of the first series (the oldest bucket: the newest is often
//!   still filling);
//! - no values: no series, a first series without points, or a first point without a value
//!   (`null`: Flagger's Go decoder reads that as 0; aviary does not take a missing bucket for a
//!   measured 0);
//! - online: `GET {address}/api/v1/validate` with the keys answers 200.
//!
//! For the statistical judge (`analysis.judge.provider`), a range query is the same call over
//! the judge's window: every series of the answer, its labels from its `tag_set` (`key:value`)
//! and `scope`, its points from its `pointlist`, null points left out. Judge queries group by the
//! workload's tag and roll up to the judge's step (`.as_count().rollup(sum, 30)` for counts).

use std::time::Duration;

use futures::future::BoxFuture;
use serde_json::Value;

use super::api::{bucket_width, excerpt, json_of, number, range_window, unix_now_ms, Api, Call};
use super::provider::{MetricsProvider, ProviderSpec, RangeSeries};
use super::MetricError;

const DEFAULT_ADDRESS: &str = "https://api.datadoghq.com";
const QUERY_PATH: &str = "/api/v1/query";
const VALIDATE_PATH: &str = "/api/v1/validate";
/// The query window, in metric intervals (Flagger's `datadogFromDeltaMultiplierOnMetricInterval`).
const WINDOW_INTERVALS: u32 = 10;

#[derive(Debug)]
pub(crate) struct Datadog {
    api: Api,
    endpoint: String,
    window: Duration,
}

impl Datadog {
    pub(crate) fn new(
        clients: &crate::http::Clients,
        spec: &ProviderSpec,
    ) -> Result<Datadog, MetricError> {
        let api_key = spec.secret_text("datadog_api_key", "a Datadog API key")?;
        let app_key = spec.secret_text("datadog_application_key", "a Datadog application key")?;
        let api = Api::new(
            clients,
            "datadog",
            spec.address_or(DEFAULT_ADDRESS),
            vec![("DD-API-KEY", api_key), ("DD-APPLICATION-KEY", app_key)],
            &spec.headers,
            spec.settings(),
        )?;
        Ok(Datadog {
            endpoint: api.endpoint(QUERY_PATH),
            window: spec.interval * WINDOW_INTERVALS,
            api,
        })
    }

    async fn run(&self, query: &str, now: u64) -> Result<f64, MetricError> {
        let from = now.saturating_sub(self.window.as_secs());
        let call = Call::get(QUERY_PATH)
            .param("query", query.trim())
            .param("from", from.to_string())
            .param("to", now.to_string());
        let body = self.api.call(&call).await?;
        first_point(&body, &self.endpoint)
    }
}

/// Every series of a `/api/v1/query` answer, for the judge; `step` is the judge's, the bucket
/// width of a series with a single point and no `interval`.
fn series_of(body: &[u8], endpoint: &str, step: f64) -> Result<Vec<RangeSeries>, MetricError> {
    let answer = json_of(body, endpoint, "Datadog's")?;
    let Some(series) = answer.get("series").and_then(Value::as_array) else {
        return Err(MetricError::Failed(format!(
            "{endpoint} answered without a series list: {}",
            excerpt(body, 200)
        )));
    };
    if series.is_empty() {
        return Err(MetricError::NoValues(
            "datadog: the query matched no series".into(),
        ));
    }
    Ok(series
        .iter()
        .map(|s| {
            let mut labels = std::collections::BTreeMap::new();
            if let Some(scope) = s.get("scope").and_then(Value::as_str) {
                labels.insert("scope".to_string(), scope.to_string());
            }
            for tag in s
                .get("tag_set")
                .and_then(Value::as_array)
                .map(Vec::as_slice)
                .unwrap_or_default()
            {
                if let Some((k, v)) = tag.as_str().and_then(|t| t.split_once(':')) {
                    labels.insert(k.to_string(), v.to_string());
                }
            }
            let pointlist = s
                .get("pointlist")
                .and_then(Value::as_array)
                .map(Vec::as_slice)
                .unwrap_or_default();
            // Datadog labels a point with its rollup bucket's start (the series' `interval`,
            // seconds); the judge, with its end.
            let width = s
                .get("interval")
                .and_then(Value::as_f64)
                .unwrap_or_else(|| {
                    bucket_width(
                        pointlist
                            .iter()
                            .filter_map(|p| Some(p.get(0)?.as_f64()? / 1000.0)),
                        step,
                    )
                });
            let points = pointlist
                .iter()
                .filter_map(|p| {
                    let at = p.get(0)?.as_f64()? / 1000.0 + width;
                    let v = p.get(1)?.as_f64().filter(|v| v.is_finite())?;
                    Some((at, v))
                })
                .collect();
            RangeSeries { labels, points }
        })
        .collect())
}

/// The value of the first point of the first series of a `/api/v1/query` answer.
fn first_point(body: &[u8], endpoint: &str) -> Result<f64, MetricError> {
    let answer = json_of(body, endpoint, "Datadog's")?;
    if answer.get("status").and_then(Value::as_str) == Some("error") {
        let error = answer
            .get("error")
            .and_then(Value::as_str)
            .unwrap_or("(no error text)");
        return Err(MetricError::Failed(format!(
            "{endpoint} refused the query: {error}"
        )));
    }
    let no_values = |why: &str| MetricError::NoValues(format!("datadog: {why}"));
    let Some(series) = answer.get("series").and_then(Value::as_array) else {
        return Err(MetricError::Failed(format!(
            "{endpoint} answered without a series list: {}",
            excerpt(body, 200)
        )));
    };
    let first = series
        .first()
        .ok_or_else(|| no_values("the query matched no series"))?;
    let point = first
        .get("pointlist")
        .and_then(Value::as_array)
        .and_then(|points| points.first())
        .ok_or_else(|| no_values("the first series has no points"))?;
    number(point.get(1), "datadog", "the first point", endpoint)
}

impl MetricsProvider for Datadog {
    fn kind(&self) -> &'static str {
        "datadog"
    }

    fn endpoint(&self) -> &str {
        &self.endpoint
    }

    fn query<'a>(&'a self, query: &'a str) -> BoxFuture<'a, Result<f64, MetricError>> {
        Box::pin(self.run(query, unix_now_ms() / 1000))
    }

    fn query_range<'a>(
        &'a self,
        query: &'a str,
        start: f64,
        end: f64,
        step: Duration,
    ) -> BoxFuture<'a, Result<Vec<RangeSeries>, MetricError>> {
        Box::pin(async move {
            let (from, to) = range_window(start, end, step);
            let call = Call::get(QUERY_PATH)
                .param("query", query.trim())
                .param("from", from.to_string())
                .param("to", to.to_string());
            let body = self.api.call(&call).await?;
            series_of(&body, &self.endpoint, step.as_secs_f64())
        })
    }

    fn is_online(&self) -> BoxFuture<'_, Result<(), MetricError>> {
        Box::pin(async move { self.api.online(&Call::get(VALIDATE_PATH)).await })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wiremock::matchers::{header, method, path, query_param};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    fn spec(address: &str) -> ProviderSpec {
        let keys = [
            ("datadog_api_key", "api-k3y\n"),
            ("datadog_application_key", "app-k3y"),
        ];
        ProviderSpec::for_test("datadog", address, &keys)
    }

    /// Datadog's documented answer to `GET /api/v1/query`, with these points in one series.
    fn answer(points: &str) -> String {
        format!(
            r#"{{"status":"ok","res_type":"time_series","from_date":1700000000000,"to_date":1700000600000,"query":"q","series":[{{"metric":"trace.http.request.errors","display_name":"trace.http.request.errors","pointlist":{points},"start":1700000000000,"end":1700000600000,"interval":60,"length":3,"aggr":"sum","scope":"service:podinfo","expression":"sum:trace.http.request.errors{{service:podinfo}}","tag_set":[],"unit":null}}],"message":"","group_by":[],"values":[],"times":[]}}"#
        )
    }

    #[tokio::test]
    async fn a_query_asks_for_ten_intervals_with_both_keys_and_reads_the_first_point() {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path("/api/v1/query"))
            .and(query_param(
                "query",
                "sum:errors{service:podinfo}.as_count()",
            ))
            .and(query_param("from", "1700000000"))
            .and(query_param("to", "1700000600"))
            .and(header("DD-API-KEY", "api-k3y"))
            .and(header("DD-APPLICATION-KEY", "app-k3y"))
            .respond_with(ResponseTemplate::new(200).set_body_string(answer(
                "[[1700000000000, 2.5], [1700000060000, 7.0], [1700000120000, null]]",
            )))
            .mount(&server)
            .await;
        let dd = match Datadog::new(&crate::http::Clients::default(), &spec(&server.uri())) {
            Ok(dd) => dd,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(
            dd.run(" sum:errors{service:podinfo}.as_count()\n", 1_700_000_600)
                .await,
            Ok(2.5)
        );
        assert_eq!(dd.endpoint(), format!("{}/api/v1/query", server.uri()));
    }

    #[test]
    fn empty_answers_are_no_values_and_strange_ones_fail() {
        let read = |body: &str| first_point(body.as_bytes(), "E");
        assert!(matches!(
            read(r#"{"status":"ok","series":[]}"#),
            Err(MetricError::NoValues(_))
        ));
        assert!(matches!(read(&answer("[]")), Err(MetricError::NoValues(_))));
        assert!(matches!(
            read(&answer("[[1700000000000, null], [1700000060000, 3]]")),
            Err(MetricError::NoValues(_))
        ));
        assert_eq!(read(&answer("[[1700000000000, 0]]")), Ok(0.0));
        match read(r#"{"status":"error","error":"Error parsing query: unable to parse x"}"#) {
            Err(MetricError::Failed(m)) => {
                assert_eq!(
                    m,
                    "E refused the query: Error parsing query: unable to parse x"
                )
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(read("<html>"), Err(MetricError::Failed(_))));
        assert!(matches!(read("{}"), Err(MetricError::Failed(_))));
    }

    #[tokio::test]
    async fn online_is_the_key_validation_endpoint() {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path("/api/v1/validate"))
            .and(header("DD-API-KEY", "api-k3y"))
            .respond_with(ResponseTemplate::new(200).set_body_string(r#"{"valid":true}"#))
            .mount(&server)
            .await;
        match Datadog::new(&crate::http::Clients::default(), &spec(&server.uri())) {
            Ok(dd) => assert_eq!(dd.is_online().await, Ok(())),
            Err(e) => panic!("{e}"),
        }
        let mut wrong = spec(&server.uri());
        wrong
            .secret
            .insert("datadog_api_key".into(), b"wrong".to_vec());
        Mock::given(method("GET"))
            .and(path("/api/v1/validate"))
            .respond_with(ResponseTemplate::new(403).set_body_string(r#"{"errors":["Forbidden"]}"#))
            .mount(&server)
            .await;
        match Datadog::new(&crate::http::Clients::default(), &wrong) {
            Ok(dd) => match dd.is_online().await {
                Err(MetricError::Failed(m)) => {
                    assert!(m.starts_with("datadog at "), "{m}");
                    assert!(m.ends_with("answered 403 Forbidden: Forbidden"), "{m}");
                    assert!(!m.contains("wrong"), "{m}");
                }
                other => panic!("{other:?}"),
            },
            Err(e) => panic!("{e}"),
        }
    }

    #[tokio::test]
    async fn range_queries_give_every_series_with_its_tags_for_the_judge() {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path("/api/v1/query"))
            .and(query_param("query", "sum:errors{env:prod} by {kube_deployment}.as_count().rollup(sum, 30)"))
            // The window opens a step before the first interval's close.
            .and(query_param("from", "1699999970"))
            .and(query_param("to", "1700000090"))
            .respond_with(ResponseTemplate::new(200).set_body_string(
                r#"{"status":"ok","series":[{"scope":"env:prod,kube_deployment:podinfo","tag_set":["kube_deployment:podinfo"],"pointlist":[[1700000030000,2.0],[1700000060000,null],[1700000090000,1.0]]},{"scope":"env:prod,kube_deployment:podinfo-primary","tag_set":["kube_deployment:podinfo-primary"],"pointlist":[[1700000030000,0.0]]}]}"#,
            ))
            .mount(&server)
            .await;
        let dd = Datadog::new(&crate::http::Clients::default(), &spec(&server.uri()))
            .unwrap_or_else(|e| panic!("{e}"));
        let series = dd
            .query_range(
                "sum:errors{env:prod} by {kube_deployment}.as_count().rollup(sum, 30)",
                1_700_000_000.0,
                1_700_000_090.0,
                Duration::from_secs(30),
            )
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(series.len(), 2);
        assert_eq!(
            series[0].labels.get("kube_deployment").map(String::as_str),
            Some("podinfo")
        );
        // Labelled with the end of each 30 s bucket.
        assert_eq!(
            series[0].points,
            vec![(1_700_000_060.0, 2.0), (1_700_000_120.0, 1.0)]
        );
        assert_eq!(series[1].points, vec![(1_700_000_060.0, 0.0)]);
    }

    #[test]
    fn both_keys_are_required_and_named_as_flagger_names_them() {
        let mut s = spec("https://api.datadoghq.eu");
        s.secret.remove("datadog_application_key");
        match Datadog::new(&crate::http::Clients::default(), &s) {
            Err(MetricError::Failed(m)) => assert_eq!(
                m,
                "datadog credentials do not contain datadog_application_key (a Datadog application key)"
            ),
            other => panic!("{other:?}"),
        }
        s.secret.clear();
        match Datadog::new(&crate::http::Clients::default(), &s) {
            Err(MetricError::Failed(m)) => assert_eq!(
                m,
                "datadog needs a Datadog API key: set spec.provider.secretRef to a Secret with the key datadog_api_key"
            ),
            other => panic!("{other:?}"),
        }
        // Without an address: Datadog's US site.
        let mut s = spec("");
        s.address = None;
        match Datadog::new(&crate::http::Clients::default(), &s) {
            Ok(dd) => assert_eq!(dd.endpoint(), "https://api.datadoghq.com/api/v1/query"),
            Err(e) => panic!("{e}"),
        }
    }
}
