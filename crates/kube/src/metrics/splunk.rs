//! The `splunk` provider: Splunk Observability Cloud (SignalFx), queried with SignalFlow as
//! Flagger queries it (`pkg/metrics/providers/splunk.go`). Flagger runs the program over
//! SignalFlow's WebSocket; aviary runs the same computation over its HTTP interface, whose answer
//! is a stream of Server-Sent Events carrying the same messages:
//!
//! - address: `spec.provider.address`, required: `https://api.REALM.signalfx.com` (or
//!   `wss://stream.REALM.signalfx.com`); programs go to the `stream.` host, the online check to
//!   the `api.` host, as Flagger maps them;
//! - credentials: the `secretRef` Secret's `sf_token_key`, required, sent as `X-SF-Token`;
//! - a query: a SignalFlow program, `POST {stream}/v2/signalflow/execute?start=S&stop=T&immediate=true`
//!   (`text/plain`), T now and S ten metric intervals earlier (Unix milliseconds);
//! - its value: the last data point's value; the program must publish one time series (several
//!   are an error, as in Flagger);
//! - no values: no data point with a value;
//! - online: `GET {api}/v2/metric?limit=1` answers 200.
//!
//!
//! For the statistical judge (a range from S to T at step N), the program runs with
//! `start=S&stop=T&resolution=N` (milliseconds); every time series it publishes is a series
//! labelled by its metadata's properties (the dimensions; SignalFx's own `sf_` properties left
//! out), with a point per data message at its `logicalTimestampMs`, which aviary takes as the end
//! of the resolution window the value sums up (SignalFlow's windows end at their timestamp).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use futures::future::BoxFuture;
use serde_json::Value;

use super::api::{range_window_ms, unix_now_ms, Api, Call};
use super::provider::{MetricsProvider, ProviderSpec, RangeSeries};
use super::MetricError;

const EXECUTE_PATH: &str = "/v2/signalflow/execute";
const METRIC_PATH: &str = "/v2/metric";
/// The query window, in metric intervals (Flagger's `signalFxFromDeltaMultiplierOnMetricInterval`).
const WINDOW_INTERVALS: u32 = 10;

#[derive(Debug)]
pub(crate) struct Splunk {
    /// The `stream.` host, for programs.
    stream: Api,
    /// The `api.` host, for the online check.
    api: Api,
    endpoint: String,
    window: Duration,
}

/// `address` with its scheme made HTTP and its host's first label `from` replaced by `to`
/// (`https://api.us1.signalfx.com` and `stream`: `https://stream.us1.signalfx.com`).
fn host_for(address: &str, from: &str, to: &str) -> String {
    let address = address.trim();
    let (scheme, rest) = address.split_once("://").unwrap_or(("https", address));
    let scheme = match scheme {
        "ws" => "http",
        "wss" => "https",
        other => other,
    };
    let rest = match rest.strip_prefix(&format!("{from}.")) {
        Some(tail) => format!("{to}.{tail}"),
        None => rest.to_string(),
    };
    format!("{scheme}://{rest}")
}

impl Splunk {
    pub(crate) fn new(
        clients: &crate::http::Clients,
        spec: &ProviderSpec,
    ) -> Result<Splunk, MetricError> {
        let address = spec.address_or("");
        if address.is_empty() {
            return Err(MetricError::Failed(
                "splunk has no default address: set spec.provider.address to your realm's API (https://api.REALM.signalfx.com)"
                    .into(),
            ));
        }
        let token = spec.secret_text("sf_token_key", "a Splunk Observability access token")?;
        let credentials = || vec![("X-SF-Token", token.trim().to_string())];
        let stream = Api::new(
            clients,
            "splunk",
            &host_for(address, "api", "stream"),
            credentials(),
            &spec.headers,
            spec.settings(),
        )?;
        let api = Api::new(
            clients,
            "splunk",
            &host_for(address, "stream", "api"),
            credentials(),
            &spec.headers,
            spec.settings(),
        )?;
        Ok(Splunk {
            endpoint: stream.endpoint(EXECUTE_PATH),
            stream,
            api,
            window: spec.interval * WINDOW_INTERVALS,
        })
    }

    async fn run(&self, program: &str, now_ms: u64) -> Result<f64, MetricError> {
        let start = now_ms.saturating_sub(self.window.as_millis() as u64);
        let call = Call::post(
            EXECUTE_PATH,
            "text/plain",
            program.trim().as_bytes().to_vec(),
        )
        .param("start", start.to_string())
        .param("stop", now_ms.to_string())
        .param("immediate", "true");
        let body = self.stream.call(&call).await?;
        last_value(&body, &self.endpoint)
    }
}

/// The events of a Server-Sent Events stream: `(event, data)`, the data lines of each joined
/// with newlines (the HTML standard's event stream format).
fn events(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let (mut event, mut data): (String, Vec<&str>) = (String::new(), Vec::new());
    for line in text.lines().chain(std::iter::once("")) {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.is_empty() {
            if !data.is_empty() {
                let kind = if event.is_empty() { "message" } else { &event };
                out.push((kind.to_string(), data.join("\n")));
            }
            event.clear();
            data.clear();
            continue;
        }
        if line.starts_with(':') {
            continue;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "event" => event = value.to_string(),
            "data" => data.push(value),
            _ => {}
        }
    }
    out
}

/// The JSON messages of a SignalFlow computation's events, `(event, message)`; an error or an
/// aborted channel is the computation's failure.
fn messages(body: &[u8], endpoint: &str) -> Result<Vec<(String, Value)>, MetricError> {
    let text = String::from_utf8_lossy(body);
    let mut out = Vec::new();
    for (kind, data) in events(&text) {
        let message: Value = match serde_json::from_str(&data) {
            Ok(v) => v,
            Err(_) => continue,
        };
        let aborted = message.get("event").and_then(Value::as_str) == Some("CHANNEL_ABORT");
        if kind == "error"
            || message.get("type").and_then(Value::as_str) == Some("error")
            || aborted
        {
            let why = message
                .pointer("/abortInfo/sf_job_abortReason")
                .or_else(|| message.get("message"))
                .or_else(|| message.get("error"))
                .map(|v| {
                    v.as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| v.to_string())
                })
                .unwrap_or_else(|| data.clone());
            return Err(MetricError::Failed(format!(
                "{endpoint} stopped the computation: {why}"
            )));
        }
        out.push((kind, message));
    }
    Ok(out)
}

/// The last data point's value of a SignalFlow computation's events.
fn last_value(body: &[u8], endpoint: &str) -> Result<f64, MetricError> {
    let mut last = None;
    let mut series = BTreeSet::new();
    for (kind, message) in messages(body, endpoint)? {
        if kind != "data" {
            continue;
        }
        for point in message
            .get("data")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default()
        {
            let Some(value) = point.get("value").and_then(Value::as_f64) else {
                continue;
            };
            if let Some(id) = point.get("tsId").and_then(Value::as_str) {
                series.insert(id.to_string());
            }
            last = Some(value);
        }
    }
    if series.len() > 1 {
        return Err(MetricError::Failed(format!(
            "{endpoint}: the program published {} time series; make it publish one (aggregate with sum(), mean(), ...)",
            series.len()
        )));
    }
    last.filter(|v| v.is_finite()).ok_or_else(|| {
        MetricError::NoValues("splunk: the program published no data point with a value".into())
    })
}

/// Every time series of a SignalFlow computation's events: labelled by its metadata's
/// properties (without SignalFx's `sf_` ones), a point per data message with a value.
fn series_of(body: &[u8], endpoint: &str) -> Result<Vec<RangeSeries>, MetricError> {
    let mut series: BTreeMap<String, RangeSeries> = BTreeMap::new();
    for (kind, message) in messages(body, endpoint)? {
        match kind.as_str() {
            "metadata" => {
                let Some(id) = message.get("tsId").and_then(Value::as_str) else {
                    continue;
                };
                let labels = message
                    .get("properties")
                    .and_then(Value::as_object)
                    .map(|p| {
                        p.iter()
                            .filter(|(k, _)| !k.starts_with("sf_"))
                            .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                            .collect()
                    })
                    .unwrap_or_default();
                series.entry(id.to_string()).or_default().labels = labels;
            }
            "data" => {
                let Some(at) = message.get("logicalTimestampMs").and_then(Value::as_f64) else {
                    continue;
                };
                for point in message
                    .get("data")
                    .and_then(Value::as_array)
                    .map(Vec::as_slice)
                    .unwrap_or_default()
                {
                    let (Some(id), Some(value)) = (
                        point.get("tsId").and_then(Value::as_str),
                        point.get("value").and_then(Value::as_f64),
                    ) else {
                        continue;
                    };
                    if value.is_finite() {
                        series
                            .entry(id.to_string())
                            .or_default()
                            .points
                            .push((at / 1000.0, value));
                    }
                }
            }
            _ => {}
        }
    }
    if series.is_empty() {
        return Err(MetricError::NoValues(
            "splunk: the program published no time series".into(),
        ));
    }
    Ok(series.into_values().collect())
}

impl MetricsProvider for Splunk {
    fn kind(&self) -> &'static str {
        "splunk"
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
            let step_ms = step.as_millis().max(1000) as u64;
            let (from, until) = range_window_ms(start, end, step);
            let call = Call::post(EXECUTE_PATH, "text/plain", query.trim().as_bytes().to_vec())
                .param("start", from.to_string())
                .param("stop", until.to_string())
                .param("resolution", step_ms.to_string())
                .param("immediate", "true");
            let body = self.stream.call(&call).await?;
            series_of(&body, &self.endpoint)
        })
    }

    fn is_online(&self) -> BoxFuture<'_, Result<(), MetricError>> {
        Box::pin(async move {
            self.api
                .online(&Call::get(METRIC_PATH).param("limit", "1"))
                .await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wiremock::matchers::{body_string, header, method, path, query_param};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    fn spec(address: &str) -> ProviderSpec {
        ProviderSpec::for_test("splunk", address, &[("sf_token_key", "sfT0ken\n")])
    }

    /// SignalFlow's answer over HTTP, as Server-Sent Events with pretty-printed JSON.
    const STREAM: &str = "event: control-message\ndata: {\ndata:   \"event\" : \"STREAM_START\",\ndata:   \"timestampMs\" : 1700000000000\ndata: }\n\nevent: metadata\ndata: {\ndata:   \"properties\" : { \"sf_key\" : [ \"sf_originatingMetric\" ] },\ndata:   \"tsId\" : \"AAAAAKPHPi4\"\ndata: }\n\nevent: data\ndata: {\ndata:   \"data\" : [ {\ndata:     \"tsId\" : \"AAAAAKPHPi4\",\ndata:     \"value\" : 1.25\ndata:   } ],\ndata:   \"logicalTimestampMs\" : 1700000060000\ndata: }\n\nevent: data\ndata: {\ndata:   \"data\" : [ {\ndata:     \"tsId\" : \"AAAAAKPHPi4\",\ndata:     \"value\" : 0.5\ndata:   } ],\ndata:   \"logicalTimestampMs\" : 1700000120000\ndata: }\n\nevent: control-message\ndata: {\ndata:   \"event\" : \"END_OF_CHANNEL\",\ndata:   \"timestampMs\" : 1700000600000\ndata: }\n\n";

    #[tokio::test]
    async fn a_program_runs_over_http_for_ten_intervals_and_the_last_point_is_read() {
        let server = MockServer::start().await;
        let program = "A = data('spans.count', filter=filter('sf_error', 'true') and filter('sf_service', 'podinfo')).sum()\nB = data('spans.count', filter=filter('sf_service', 'podinfo')).sum()\n(A/B*100).publish()";
        Mock::given(method("POST"))
            .and(path("/v2/signalflow/execute"))
            .and(query_param("start", "1700000000000"))
            .and(query_param("stop", "1700000600000"))
            .and(query_param("immediate", "true"))
            .and(header("X-SF-Token", "sfT0ken"))
            .and(header("Content-Type", "text/plain"))
            .and(body_string(program))
            .respond_with(
                ResponseTemplate::new(200)
                    .insert_header("Content-Type", "text/event-stream")
                    .set_body_string(STREAM),
            )
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .and(path("/v2/metric"))
            .and(query_param("limit", "1"))
            .and(header("X-SF-Token", "sfT0ken"))
            .respond_with(ResponseTemplate::new(200).set_body_string(r#"{"count":1,"results":[]}"#))
            .mount(&server)
            .await;
        match Splunk::new(&crate::http::Clients::default(), &spec(&server.uri())) {
            Ok(sp) => {
                assert_eq!(
                    sp.run(&format!("{program}\n"), 1_700_000_600_000).await,
                    Ok(0.5)
                );
                assert_eq!(sp.is_online().await, Ok(()));
            }
            Err(e) => panic!("{e}"),
        }
    }

    #[tokio::test]
    async fn a_judges_range_runs_at_the_steps_resolution_and_gives_every_published_series() {
        let server = MockServer::start().await;
        let program = "data('spans.count', filter=filter('sf_error', 'true')).sum(by=['deployment']).publish()";
        let stream = [
            "event: metadata\ndata: {\"properties\":{\"deployment\":\"podinfo-canary\",\"sf_key\":[\"deployment\"],\"sf_originatingMetric\":\"spans.count\"},\"tsId\":\"AAA\"}\n\n",
            "event: metadata\ndata: {\"properties\":{\"deployment\":\"podinfo-primary\"},\"tsId\":\"BBB\"}\n\n",
            "event: data\ndata: {\"data\":[{\"tsId\":\"AAA\",\"value\":3},{\"tsId\":\"BBB\",\"value\":1}],\"logicalTimestampMs\":1700000060000}\n\n",
            "event: data\ndata: {\"data\":[{\"tsId\":\"AAA\",\"value\":null},{\"tsId\":\"BBB\",\"value\":2}],\"logicalTimestampMs\":1700000120000}\n\n",
            "event: control-message\ndata: {\"event\":\"END_OF_CHANNEL\"}\n\n",
        ]
        .concat();
        Mock::given(method("POST"))
            .and(path("/v2/signalflow/execute"))
            .and(query_param("start", "1700000000000"))
            .and(query_param("stop", "1700000120000"))
            .and(query_param("resolution", "60000"))
            .and(query_param("immediate", "true"))
            .and(header("X-SF-Token", "sfT0ken"))
            .and(body_string(program))
            .respond_with(ResponseTemplate::new(200).set_body_string(stream))
            .expect(1)
            .mount(&server)
            .await;
        let sp = match Splunk::new(&crate::http::Clients::default(), &spec(&server.uri())) {
            Ok(sp) => sp,
            Err(e) => panic!("{e}"),
        };
        let deployment = |d: &str| -> BTreeMap<String, String> {
            [("deployment".to_string(), d.to_string())].into()
        };
        assert_eq!(
            sp.query_range(
                program,
                1_700_000_060.0,
                1_700_000_120.0,
                Duration::from_secs(60)
            )
            .await,
            Ok(vec![
                RangeSeries {
                    labels: deployment("podinfo-canary"),
                    points: vec![(1_700_000_060.0, 3.0)],
                },
                RangeSeries {
                    labels: deployment("podinfo-primary"),
                    points: vec![(1_700_000_060.0, 1.0), (1_700_000_120.0, 2.0)],
                },
            ])
        );
        assert!(matches!(
            series_of(
                b"event: control-message\ndata: {\"event\":\"END_OF_CHANNEL\"}\n\n",
                "E"
            ),
            Err(MetricError::NoValues(_))
        ));
    }

    #[test]
    fn streams_without_one_series_of_values_are_no_values_or_errors() {
        let read = |s: &str| last_value(s.as_bytes(), "E");
        assert!(matches!(
            read("event: control-message\ndata: {\"event\":\"END_OF_CHANNEL\"}\n\n"),
            Err(MetricError::NoValues(_))
        ));
        assert!(matches!(
            read("event: data\ndata: {\"data\":[{\"tsId\":\"a\",\"value\":null}]}\n\n"),
            Err(MetricError::NoValues(_))
        ));
        match read("event: data\ndata: {\"data\":[{\"tsId\":\"a\",\"value\":1},{\"tsId\":\"b\",\"value\":2}]}\n\n") {
            Err(MetricError::Failed(m)) => assert!(m.contains("published 2 time series"), "{m}"),
            other => panic!("{other:?}"),
        }
        match read("event: control-message\ndata: {\"event\":\"CHANNEL_ABORT\",\"abortInfo\":{\"sf_job_abortReason\":\"Invalid program: unknown function 'dat'\"}}\n\n") {
            Err(MetricError::Failed(m)) => {
                assert_eq!(m, "E stopped the computation: Invalid program: unknown function 'dat'")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_realms_hosts_are_mapped_as_flagger_maps_them() {
        assert_eq!(
            host_for("https://api.us1.signalfx.com", "api", "stream"),
            "https://stream.us1.signalfx.com"
        );
        assert_eq!(
            host_for("wss://stream.eu0.signalfx.com", "api", "stream"),
            "https://stream.eu0.signalfx.com"
        );
        assert_eq!(
            host_for("wss://stream.eu0.signalfx.com", "stream", "api"),
            "https://api.eu0.signalfx.com"
        );
        assert_eq!(
            host_for("http://127.0.0.1:9", "api", "stream"),
            "http://127.0.0.1:9"
        );
        let mut s = spec("https://api.us1.signalfx.com");
        s.secret.clear();
        assert!(matches!(
            Splunk::new(&crate::http::Clients::default(), &s),
            Err(MetricError::Failed(m)) if m.contains("sf_token_key")
        ));
    }
}
