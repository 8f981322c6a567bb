//! The `newrelic` provider, as Flagger queries New Relic's Insights query API
//! (`pkg/metrics/providers/newrelic.go`):
//!
//! - address: `spec.provider.address`, else `https://insights-api.newrelic.com` (the EU region
//!   is `https://insights-api.eu.newrelic.com`);
//! - credentials: the `secretRef` Secret's `newrelic_account_id` and `newrelic_query_key`, both
//!   required; the key is sent as `X-Query-Key`;
//! - a query: `GET {address}/v1/accounts/{account}/query?nrql=Q SINCE N seconds ago`, N the
//!   metric's interval in seconds;
//! - its value: `results[0].result`, so the NRQL names its value `result` (an arithmetic
//!   expression is named so by New Relic; otherwise write `... AS result`);
//! - no values: not exactly one result, or one whose `result` is `null` or absent;
//! - online: the query `SELECT * FROM Metric` answers 200.
//!
//!
//! For the statistical judge (a range), the query gets `SINCE S UNTIL T TIMESERIES N seconds`
//! instead (S and T in Unix milliseconds, N the judge's step; at most 366 buckets a request, New
//! Relic's limit, so a longer range is asked for in parts): each bucket's `results[0].result`
//! is a point at the bucket's `endTimeSeconds`; with `FACET`, each facet is a series labelled by
//! the facet's attributes (`metadata.facet`).

use std::collections::BTreeMap;
use std::time::Duration;

use futures::future::BoxFuture;
use serde_json::Value;

use super::api::{excerpt, json_of, number, range_window, Api, Call};
use super::provider::{MetricsProvider, ProviderSpec, RangeSeries};
use super::MetricError;

const DEFAULT_ADDRESS: &str = "https://insights-api.newrelic.com";
const ONLINE_QUERY: &str = "SELECT * FROM Metric";

#[derive(Debug)]
pub(crate) struct NewRelic {
    api: Api,
    /// `/v1/accounts/{account}/query`.
    path: String,
    endpoint: String,
    since_seconds: u64,
}

impl NewRelic {
    pub(crate) fn new(
        clients: &crate::http::Clients,
        spec: &ProviderSpec,
    ) -> Result<NewRelic, MetricError> {
        let account = spec.secret_text("newrelic_account_id", "a New Relic account id")?;
        let account = account.trim();
        if account.is_empty() || !account.chars().all(|c| c.is_ascii_digit()) {
            return Err(MetricError::Failed(
                "newrelic credentials: newrelic_account_id must be the account's number".into(),
            ));
        }
        let key = spec.secret_text("newrelic_query_key", "a New Relic query key")?;
        let api = Api::new(
            clients,
            "newrelic",
            spec.address_or(DEFAULT_ADDRESS),
            vec![("X-Query-Key", key)],
            &spec.headers,
            spec.settings(),
        )?;
        let path = format!("/v1/accounts/{account}/query");
        Ok(NewRelic {
            endpoint: api.endpoint(&path),
            path,
            since_seconds: spec.interval.as_secs().max(1),
            api,
        })
    }

    async fn nrql(&self, nrql: String) -> Result<Vec<u8>, MetricError> {
        self.api
            .call(&Call::get(self.path.as_str()).param("nrql", nrql))
            .await
    }

    async fn run(&self, query: &str) -> Result<f64, MetricError> {
        let nrql = format!("{} SINCE {} seconds ago", query.trim(), self.since_seconds);
        let body = self.nrql(nrql).await?;
        result_of(&body, &self.endpoint)
    }
}

/// New Relic answers at most this many `TIMESERIES` buckets a query.
const MAX_BUCKETS: u64 = 366;

/// The buckets of a `TIMESERIES` answer (with or without `FACET`) as series: each bucket's
/// `results[0].result` at its `endTimeSeconds`; buckets without a number are left out.
fn series_of(body: &[u8], endpoint: &str) -> Result<Vec<RangeSeries>, MetricError> {
    let answer = json_of(body, endpoint, "New Relic's")?;
    let points = |buckets: Option<&Value>| -> Vec<(f64, f64)> {
        buckets
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .filter_map(|bucket| {
                let at = bucket.get("endTimeSeconds")?.as_f64()?;
                let value = bucket.pointer("/results/0/result")?.as_f64()?;
                value.is_finite().then_some((at, value))
            })
            .collect()
    };
    if let Some(facets) = answer.get("facets").and_then(Value::as_array) {
        let attributes: Vec<String> = match answer.pointer("/metadata/facet") {
            Some(Value::String(one)) => vec![one.clone()],
            Some(Value::Array(many)) => many
                .iter()
                .filter_map(|a| a.as_str().map(str::to_string))
                .collect(),
            _ => Vec::new(),
        };
        return Ok(facets
            .iter()
            .map(|facet| {
                let values: Vec<String> = match facet.get("name") {
                    Some(Value::Array(many)) => many.iter().map(text_of).collect(),
                    Some(one) => vec![text_of(one)],
                    None => Vec::new(),
                };
                let labels = values
                    .into_iter()
                    .enumerate()
                    .map(|(i, value)| {
                        let name = attributes
                            .get(i)
                            .cloned()
                            .unwrap_or_else(|| format!("facet{}", i + 1));
                        (name, value)
                    })
                    .collect();
                RangeSeries {
                    labels,
                    points: points(facet.get("timeSeries")),
                }
            })
            .collect());
    }
    match answer.get("timeSeries") {
        Some(buckets) => Ok(vec![RangeSeries {
            labels: BTreeMap::new(),
            points: points(Some(buckets)),
        }]),
        None => Err(MetricError::Failed(format!(
            "{endpoint} answered without timeSeries or facets to a TIMESERIES query: {}",
            excerpt(body, 200)
        ))),
    }
}

fn text_of(v: &Value) -> String {
    v.as_str().map_or_else(|| v.to_string(), str::to_string)
}

/// `results[0].result` of an Insights answer.
fn result_of(body: &[u8], endpoint: &str) -> Result<f64, MetricError> {
    let answer = json_of(body, endpoint, "New Relic's")?;
    let Some(results) = answer.get("results").and_then(Value::as_array) else {
        return Err(MetricError::Failed(format!(
            "{endpoint} answered without a results list: {}",
            excerpt(body, 200)
        )));
    };
    let no_values = |why: String| MetricError::NoValues(format!("newrelic: {why}"));
    let [only] = results.as_slice() else {
        return Err(no_values(format!(
            "the query gave {} results, not one",
            results.len()
        )));
    };
    match only.get("result") {
        None => {
            let names: Vec<&str> = only
                .as_object()
                .map(|o| o.keys().map(String::as_str).collect())
                .unwrap_or_default();
            Err(no_values(format!(
                "the result has no value named `result` (it has {}): name it with `AS result`",
                if names.is_empty() {
                    "none".to_string()
                } else {
                    names.join(", ")
                }
            )))
        }
        value => number(value, "newrelic", "the result", endpoint),
    }
}

impl MetricsProvider for NewRelic {
    fn kind(&self) -> &'static str {
        "newrelic"
    }

    fn endpoint(&self) -> &str {
        &self.endpoint
    }

    fn query<'a>(&'a self, query: &'a str) -> BoxFuture<'a, Result<f64, MetricError>> {
        Box::pin(self.run(query))
    }

    fn query_range<'a>(
        &'a self,
        query: &'a str,
        start: f64,
        end: f64,
        step: Duration,
    ) -> BoxFuture<'a, Result<Vec<RangeSeries>, MetricError>> {
        Box::pin(async move {
            let step_s = step.as_secs().max(1);
            let (mut from, until) = range_window(start, end, step);
            let until = until.max(from + step_s);
            let mut series: BTreeMap<BTreeMap<String, String>, Vec<(f64, f64)>> = BTreeMap::new();
            while from < until {
                let to = until.min(from + MAX_BUCKETS * step_s);
                let nrql = format!(
                    "{} SINCE {} UNTIL {} TIMESERIES {step_s} seconds",
                    query.trim(),
                    from * 1000,
                    to * 1000
                );
                let body = self.nrql(nrql).await?;
                for part in series_of(&body, &self.endpoint)? {
                    series.entry(part.labels).or_default().extend(part.points);
                }
                from = to;
            }
            let series: Vec<RangeSeries> = series
                .into_iter()
                .map(|(labels, points)| RangeSeries { labels, points })
                .collect();
            if series.is_empty() {
                return Err(MetricError::NoValues(
                    "newrelic: the query gave no facet".into(),
                ));
            }
            Ok(series)
        })
    }

    fn is_online(&self) -> BoxFuture<'_, Result<(), MetricError>> {
        Box::pin(async move {
            self.nrql(format!(
                "{ONLINE_QUERY} SINCE {} seconds ago",
                self.since_seconds
            ))
            .await
            .map(drop)
            .map_err(|e| self.api.unavailable(&e))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use wiremock::matchers::{header, method, path, query_param};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    fn spec(address: &str) -> ProviderSpec {
        let keys = [
            ("newrelic_account_id", "100200\n"),
            ("newrelic_query_key", "NRIQ-qu3ry"),
        ];
        ProviderSpec {
            interval: Duration::from_secs(120),
            ..ProviderSpec::for_test("newrelic", address, &keys)
        }
    }

    fn make(spec: &ProviderSpec) -> Result<NewRelic, MetricError> {
        NewRelic::new(&crate::http::Clients::default(), spec)
    }

    #[tokio::test]
    async fn a_query_is_nrql_since_the_interval_with_the_query_key() {
        let server = MockServer::start().await;
        let nrql = "SELECT filter(sum(nginx_ingress_controller_requests), WHERE status >= '500') / sum(nginx_ingress_controller_requests) * 100 FROM Metric WHERE ingress = 'podinfo'";
        Mock::given(method("GET"))
            .and(path("/v1/accounts/100200/query"))
            .and(query_param("nrql", format!("{nrql} SINCE 120 seconds ago")))
            .and(header("X-Query-Key", "NRIQ-qu3ry"))
            .respond_with(ResponseTemplate::new(200).set_body_string(
                r#"{"results":[{"result":1.25}],"performanceStats":{"inspectedCount":100},"metadata":{"eventTypes":["Metric"],"contents":[{"function":"alias","alias":"result"}]}}"#,
            ))
            .mount(&server)
            .await;
        match make(&spec(&server.uri())) {
            Ok(nr) => {
                assert_eq!(nr.run(&format!("  {nrql}\n")).await, Ok(1.25));
                assert_eq!(
                    nr.endpoint(),
                    format!("{}/v1/accounts/100200/query", server.uri())
                );
            }
            Err(e) => panic!("{e}"),
        }
    }

    #[tokio::test]
    async fn range_queries_are_timeseries_in_parts_of_366_buckets_each_point_at_its_buckets_end() {
        let server = MockServer::start().await;
        let nrql = "SELECT percentage(count(*), WHERE error IS true) AS result FROM Transaction WHERE appName = 'podinfo-canary' FACET host";
        // 400 one-minute intervals: 366 buckets, then 34.
        let (start, step) = (1_700_000_060.0, 60u64);
        let end = start + 399.0 * step as f64;
        let first_from = 1_700_000_000u64;
        let split = first_from + 366 * step;
        let answer = |begin: u64, values: &[Option<f64>]| {
            let buckets: Vec<Value> = values
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    let b = begin + i as u64 * step;
                    serde_json::json!({"results": [{"result": v}], "beginTimeSeconds": b, "endTimeSeconds": b + step, "inspectedCount": 3})
                })
                .collect();
            serde_json::json!({
                "facets": [{"name": "node-a", "results": [{"result": 0.5}], "timeSeries": buckets}],
                "totalResult": {"results": [{"result": 0.5}]},
                "metadata": {"facet": "host", "timeSeries": {"period": step}},
            })
            .to_string()
        };
        Mock::given(method("GET"))
            .and(path("/v1/accounts/100200/query"))
            .and(query_param(
                "nrql",
                format!(
                    "{nrql} SINCE {} UNTIL {} TIMESERIES 60 seconds",
                    first_from * 1000,
                    split * 1000
                ),
            ))
            .respond_with(
                ResponseTemplate::new(200)
                    .set_body_string(answer(first_from, &[Some(1.0), None, Some(2.5)])),
            )
            .expect(1)
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .and(path("/v1/accounts/100200/query"))
            .and(query_param(
                "nrql",
                format!(
                    "{nrql} SINCE {} UNTIL {} TIMESERIES 60 seconds",
                    split * 1000,
                    (end as u64) * 1000
                ),
            ))
            .respond_with(ResponseTemplate::new(200).set_body_string(answer(split, &[Some(4.0)])))
            .expect(1)
            .mount(&server)
            .await;
        let nr = match make(&spec(&server.uri())) {
            Ok(nr) => nr,
            Err(e) => panic!("{e}"),
        };
        let series = nr
            .query_range(nrql, start, end, Duration::from_secs(step))
            .await;
        let expected = vec![RangeSeries {
            labels: [("host".to_string(), "node-a".to_string())].into(),
            points: vec![
                ((first_from + step) as f64, 1.0),
                ((first_from + 3 * step) as f64, 2.5),
                ((split + step) as f64, 4.0),
            ],
        }];
        assert_eq!(series, Ok(expected));
        // Without FACET the answer's buckets are one series without labels.
        let plain = r#"{"timeSeries":[{"results":[{"result":7}],"beginTimeSeconds":0,"endTimeSeconds":60}],"total":{"results":[{"result":7}]}}"#;
        assert_eq!(
            series_of(plain.as_bytes(), "E"),
            Ok(vec![RangeSeries {
                labels: BTreeMap::new(),
                points: vec![(60.0, 7.0)]
            }])
        );
        assert!(matches!(
            series_of(br#"{"results":[{"result":1}]}"#, "E"),
            Err(MetricError::Failed(_))
        ));
    }

    #[test]
    fn a_result_must_be_one_number_named_result() {
        let read = |body: &str| result_of(body.as_bytes(), "E");
        assert_eq!(read(r#"{"results":[{"result":0}]}"#), Ok(0.0));
        for empty in [
            r#"{"results":[]}"#,
            r#"{"results":[{"result":null}]}"#,
            r#"{"results":[{"result":1},{"result":2}]}"#,
        ] {
            assert!(
                matches!(read(empty), Err(MetricError::NoValues(_))),
                "{empty}"
            );
        }
        match read(r#"{"results":[{"count":12}]}"#) {
            Err(MetricError::NoValues(m)) => assert_eq!(
                m,
                "newrelic: the result has no value named `result` (it has count): name it with `AS result`"
            ),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            read(r#"{"error":"x"}"#),
            Err(MetricError::Failed(_))
        ));
        assert!(matches!(
            read(r#"{"results":[{"result":"1"}]}"#),
            Err(MetricError::Failed(_))
        ));
    }

    #[tokio::test]
    async fn errors_carry_new_relics_text_and_online_is_a_metric_query() {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path("/v1/accounts/100200/query"))
            .and(query_param(
                "nrql",
                "SELECT * FROM Metric SINCE 120 seconds ago",
            ))
            .respond_with(ResponseTemplate::new(200).set_body_string(r#"{"results":[]}"#))
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .and(path("/v1/accounts/100200/query"))
            .respond_with(ResponseTemplate::new(400).set_body_string(
                r#"{"error":"NRQL Syntax Error: Error at line 1 position 8, unexpected 'FORM'"}"#,
            ))
            .mount(&server)
            .await;
        match make(&spec(&server.uri())) {
            Ok(nr) => {
                assert_eq!(nr.is_online().await, Ok(()));
                match nr.run("SELECT count(*) FORM Metric").await {
                    Err(MetricError::Failed(m)) => assert!(
                        m.ends_with("answered 400 Bad Request: NRQL Syntax Error: Error at line 1 position 8, unexpected 'FORM'"),
                        "{m}"
                    ),
                    other => panic!("{other:?}"),
                }
            }
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn the_account_and_the_key_are_required() {
        let mut s = spec("https://insights-api.eu.newrelic.com");
        s.secret.remove("newrelic_query_key");
        match make(&s) {
            Err(MetricError::Failed(m)) => assert_eq!(
                m,
                "newrelic credentials do not contain newrelic_query_key (a New Relic query key)"
            ),
            other => panic!("{other:?}"),
        }
        s.secret
            .insert("newrelic_account_id".into(), b"../admin".to_vec());
        s.secret.insert("newrelic_query_key".into(), b"k".to_vec());
        assert!(
            matches!(make(&s), Err(MetricError::Failed(m)) if m.contains("must be the account's number"))
        );
        s.address = None;
        s.secret.insert("newrelic_account_id".into(), b"7".to_vec());
        match make(&s) {
            Ok(nr) => assert_eq!(
                nr.endpoint(),
                "https://insights-api.newrelic.com/v1/accounts/7/query"
            ),
            Err(e) => panic!("{e}"),
        }
    }
}
