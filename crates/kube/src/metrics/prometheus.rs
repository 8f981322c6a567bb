//! A Prometheus HTTP API client for instant queries, compatible with Flagger's
//! (`pkg/metrics/providers/prometheus.go`): `GET {address}/api/v1/query?query=...`, where the
//! address may carry a path prefix (Google Managed Prometheus'
//! `https://monitoring.googleapis.com/v1/projects/P/location/global/prometheus`, a Thanos or
//! Mimir prefix, ...), with a bearer token or basic auth, extra headers and an optional
//! `insecureSkipVerify`. It is the `prometheus` [`MetricsProvider`](super::MetricsProvider).
//!
//! What a result means:
//! - a vector: the value of its **last** series, as Flagger reads it (Flagger loops over the
//!   series and keeps the last one); queries are expected to aggregate to one series;
//! - a scalar: its value;
//! - no series, NaN or ±Inf: [`MetricError::NoValues`] (Flagger treats an empty result and NaN as
//!   "no values found"; aviary also treats ±Inf, a division by zero, that way);
//! - a range vector or a string, an HTTP error, a body that is not Prometheus' JSON, or
//!   `"status": "error"`: [`MetricError::Failed`] with Prometheus' own error text.
//!
//! Each attempt has its own timeout, covering the whole request (connecting is also bounded by
//! [`crate::http::CONNECT_TIMEOUT`]). Connection errors, timeouts, 5xx and 429 are retried with
//! exponential backoff (200 ms doubling, at most 2 s between attempts). An answer is read chunk by
//! chunk up to [`crate::http::PROMETHEUS_MAX`] (8 MiB); a larger one fails the query with a message
//! that says so. Credentials and header values never appear in messages, logs or `Debug` output:
//! addresses are shown through [`aviary_core::urls::redact`] (`user:password@` as `***@`, secret query
//! parameters as `***`).

use std::collections::BTreeMap;
use std::time::Duration;

use futures::future::BoxFuture;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, AUTHORIZATION};
use reqwest::{StatusCode, Url};

use crate::http::{describe, CappedError};
use aviary_core::urls::{redact, redact_url};
use serde_json::Value;

use super::provider::RangeSeries;
use super::template::collapse_whitespace;
use super::MetricError;

/// Flagger's availability probe.
const ONLINE_QUERY: &str = "vector(1)";
/// Larger answers are refused rather than buffered.
const MAX_BODY: usize = crate::http::PROMETHEUS_MAX;
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// How requests authenticate.
#[derive(Clone, PartialEq, Eq, Default)]
pub enum Auth {
    #[default]
    None,
    /// `Authorization: Bearer TOKEN` (a secretRef's `token`).
    Bearer(String),
    /// HTTP basic auth (a secretRef's `username` and `password`).
    Basic { username: String, password: String },
}

impl Auth {
    /// Flagger's reading of a provider Secret: `token` if present, else `username` and
    /// `password`, both required. `kind` names the provider type in messages (`prometheus`).
    pub fn from_secret_data(
        kind: &str,
        data: &BTreeMap<String, Vec<u8>>,
    ) -> Result<Auth, MetricError> {
        let text = |key: &str| {
            data.get(key).map(|v| {
                String::from_utf8_lossy(v)
                    .trim_end_matches(['\n', '\r'])
                    .to_string()
            })
        };
        if let Some(token) = text("token") {
            return Ok(Auth::Bearer(token));
        }
        let Some(username) = text("username") else {
            return Err(MetricError::Failed(format!(
                "{kind} credentials does not contain a username"
            )));
        };
        let Some(password) = text("password") else {
            return Err(MetricError::Failed(format!(
                "{kind} credentials does not contain a password"
            )));
        };
        Ok(Auth::Basic { username, password })
    }

    fn header(&self) -> Result<Option<HeaderValue>, MetricError> {
        let raw = match self {
            Auth::None => return Ok(None),
            Auth::Bearer(token) if token.is_empty() => return Ok(None),
            Auth::Bearer(token) => format!("Bearer {token}"),
            // As Flagger: basic auth only when both parts are set.
            Auth::Basic { username, password } if username.is_empty() || password.is_empty() => {
                return Ok(None)
            }
            Auth::Basic { username, password } => {
                format!(
                    "Basic {}",
                    base64(format!("{username}:{password}").as_bytes())
                )
            }
        };
        let mut value = HeaderValue::from_str(&raw).map_err(|_| {
            MetricError::Failed(
                "the Prometheus credentials contain characters that cannot be sent in an HTTP header"
                    .to_string(),
            )
        })?;
        value.set_sensitive(true);
        Ok(Some(value))
    }
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Auth::None => f.write_str("None"),
            Auth::Bearer(_) => f.write_str("Bearer(***)"),
            Auth::Basic { username, .. } => f
                .debug_struct("Basic")
                .field("username", username)
                .field("password", &"***")
                .finish(),
        }
    }
}

/// A client for one Prometheus-compatible endpoint.
#[derive(Clone)]
pub struct PrometheusClient {
    http: reqwest::Client,
    /// The template's headers and credentials, sent with every request (sensitive: never
    /// printed).
    headers: HeaderMap,
    /// `{address}/api/v1/query`.
    endpoint: Url,
    /// The endpoint for messages, without credentials.
    shown: String,
    timeout: Duration,
    retries: u32,
}

impl std::fmt::Debug for PrometheusClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrometheusClient")
            .field("endpoint", &self.shown)
            .field("timeout", &self.timeout)
            .field("retries", &self.retries)
            .finish_non_exhaustive()
    }
}

impl PrometheusClient {
    /// A client for the Prometheus at `address` (`http(s)://host[:port][/prefix]`). `headers` are
    /// sent with every request; `timeout` bounds each attempt; `retries` is the number of extra
    /// attempts after a transient failure.
    pub fn new(
        address: &str,
        auth: Auth,
        headers: BTreeMap<String, String>,
        insecure_skip_verify: bool,
        timeout: Duration,
        retries: u32,
    ) -> Result<Self, MetricError> {
        let clients = crate::http::Clients::default();
        let settings = (insecure_skip_verify, timeout, retries);
        Self::with_clients(&clients, address, auth, headers, settings)
    }

    /// [`PrometheusClient::new`] sending through the run's shared `clients`; `settings` are
    /// `(insecure_skip_verify, timeout, retries)`.
    pub fn with_clients(
        clients: &crate::http::Clients,
        address: &str,
        auth: Auth,
        headers: BTreeMap<String, String>,
        (insecure_skip_verify, timeout, retries): (bool, Duration, u32),
    ) -> Result<Self, MetricError> {
        let trimmed = address.trim();
        let invalid = || {
            MetricError::Failed(format!(
                "prometheus address {} is not a valid URL: write it as http(s)://host:port[/path]",
                redact(trimmed)
            ))
        };
        if trimmed.is_empty() {
            return Err(MetricError::Failed(
                "no Prometheus address: set the Canary's metricsServer or the MetricTemplate's provider.address"
                    .to_string(),
            ));
        }
        let mut endpoint = Url::parse(trimmed).map_err(|_| invalid())?;
        if !matches!(endpoint.scheme(), "http" | "https") || endpoint.host_str().is_none() {
            return Err(invalid());
        }
        let path = format!("{}/api/v1/query", endpoint.path().trim_end_matches('/'));
        endpoint.set_path(&path);
        endpoint.set_query(None);
        endpoint.set_fragment(None);
        let shown = redact_url(&endpoint);

        let mut default_headers = HeaderMap::new();
        for (name, value) in &headers {
            let header = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                MetricError::Failed(format!("{name:?} is not a valid HTTP header name"))
            })?;
            let mut value = HeaderValue::from_str(value).map_err(|_| {
                MetricError::Failed(format!(
                    "the value of header {name} contains characters that cannot be sent in an HTTP header"
                ))
            })?;
            // Headers often carry credentials (X-Scope-OrgID, API keys): never print them.
            value.set_sensitive(true);
            default_headers.insert(header, value);
        }
        if let Some(value) = auth.header()? {
            default_headers.insert(AUTHORIZATION, value);
        }
        let http = clients
            .get(insecure_skip_verify)
            .map_err(|e| MetricError::Failed(format!("{shown}: {e}")))?;
        Ok(PrometheusClient {
            http,
            headers: default_headers,
            endpoint,
            shown,
            timeout,
            retries,
        })
    }

    /// The query endpoint, for messages (credentials removed).
    pub fn endpoint(&self) -> &str {
        &self.shown
    }

    /// Runs the instant query `promql` and returns its single number.
    pub async fn query(&self, promql: &str) -> Result<f64, MetricError> {
        let promql = promql.trim();
        let attempts = self.retries.saturating_add(1);
        let mut delay = FIRST_BACKOFF;
        let mut attempt = 1;
        loop {
            match self.attempt(promql).await {
                Ok(body) => return parse_response(&body, promql, &self.shown),
                Err(Attempt::Final(message)) => return Err(MetricError::Failed(message)),
                Err(Attempt::Transient(message)) if attempt < attempts => {
                    tracing::debug!(
                        attempt,
                        endpoint = %self.shown,
                        "prometheus query failed: {message}; retrying in {delay:?}"
                    );
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(MAX_BACKOFF);
                    attempt += 1;
                }
                Err(Attempt::Transient(message)) => {
                    let tries = if attempts == 1 {
                        "1 attempt".to_string()
                    } else {
                        format!("{attempts} attempts")
                    };
                    return Err(MetricError::Failed(format!("{message} ({tries})")));
                }
            }
        }
    }

    /// Runs the range query `promql` over `[start, end]` (Unix seconds) at `step` and returns
    /// its series with their labels and timestamped points, NaNs left out. Used by the
    /// statistical judge, which follows both deployments interval by interval.
    pub async fn query_range(
        &self,
        promql: &str,
        start: f64,
        end: f64,
        step: Duration,
    ) -> Result<Vec<RangeSeries>, MetricError> {
        let promql = promql.trim();
        let mut url = self.endpoint.clone();
        let path = format!("{}_range", url.path());
        url.set_path(&path);
        let params = [
            ("query", promql.to_string()),
            ("start", format!("{start:.3}")),
            ("end", format!("{end:.3}")),
            ("step", format!("{}", step.as_secs_f64().max(0.001))),
        ];
        let attempts = self.retries.saturating_add(1);
        let mut delay = FIRST_BACKOFF;
        let mut attempt = 1;
        loop {
            match self.attempt_at(url.clone(), &params).await {
                Ok(body) => return parse_matrix(&body, promql, &self.shown),
                Err(Attempt::Final(message)) => return Err(MetricError::Failed(message)),
                Err(Attempt::Transient(message)) if attempt < attempts => {
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(MAX_BACKOFF);
                    attempt += 1;
                    tracing::debug!(attempt, "prometheus range query failed: {message}");
                }
                Err(Attempt::Transient(message)) => {
                    return Err(MetricError::Failed(format!(
                        "{message} ({attempts} attempts)"
                    )))
                }
            }
        }
    }

    /// Whether Prometheus answers `vector(1)` with 1, as Flagger checks its metric providers.
    pub async fn is_online(&self) -> Result<(), MetricError> {
        let value = self.query(ONLINE_QUERY).await.map_err(|e| match e {
            MetricError::NoValues(m) | MetricError::Failed(m) => MetricError::Failed(format!(
                "prometheus at {} is not available: {m}",
                self.shown
            )),
        })?;
        if value == 1.0 {
            Ok(())
        } else {
            Err(MetricError::Failed(format!(
                "prometheus at {} answered {value} to {ONLINE_QUERY}, expected 1",
                self.shown
            )))
        }
    }

    async fn attempt(&self, promql: &str) -> Result<Vec<u8>, Attempt> {
        self.attempt_at(self.endpoint.clone(), &[("query", promql.to_string())])
            .await
    }

    async fn attempt_at(&self, url: Url, params: &[(&str, String)]) -> Result<Vec<u8>, Attempt> {
        let shown = &self.shown;
        let response = self
            .http
            .get(url)
            .headers(self.headers.clone())
            .query(params)
            .timeout(self.timeout)
            .send()
            .await
            .map_err(|e| self.send_error(&e))?;
        let status = response.status();
        let body = match crate::http::read_capped(crate::http::body_stream(response), MAX_BODY).await
        {
            Ok(body) => body,
            Err(CappedError::Read(e)) => return Err(self.send_error(&e)),
            Err(CappedError::TooLarge { cap }) => {
                return Err(Attempt::Final(format!(
                    "{shown} answered {status} with more than {} (aviary reads at most that of an answer): make the query aggregate to the series it needs, e.g. with sum() or topk()",
                    crate::http::size(cap)
                )))
            }
        };
        if status.is_success() {
            return Ok(body);
        }
        let message = format!("{shown} answered {status}{}", error_detail(&body));
        if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
            Err(Attempt::Transient(message))
        } else {
            Err(Attempt::Final(message))
        }
    }

    fn send_error(&self, e: &reqwest::Error) -> Attempt {
        let shown = &self.shown;
        if e.is_timeout() {
            Attempt::Transient(format!("{shown} timed out after {:?}", self.timeout))
        } else if e.is_connect() {
            Attempt::Transient(format!("cannot connect to {shown}: {}", describe(e)))
        } else if e.is_builder() {
            Attempt::Final(format!("cannot query {shown}: {}", describe(e)))
        } else {
            Attempt::Transient(format!("{shown}: {}", describe(e)))
        }
    }
}

/// Prometheus through the provider seam: the inherent methods above, unchanged.
impl super::provider::MetricsProvider for PrometheusClient {
    fn kind(&self) -> &'static str {
        "prometheus"
    }

    fn endpoint(&self) -> &str {
        &self.shown
    }

    fn query<'a>(&'a self, query: &'a str) -> BoxFuture<'a, Result<f64, MetricError>> {
        Box::pin(PrometheusClient::query(self, query))
    }

    fn is_online(&self) -> BoxFuture<'_, Result<(), MetricError>> {
        Box::pin(PrometheusClient::is_online(self))
    }

    fn query_range<'a>(
        &'a self,
        query: &'a str,
        start: f64,
        end: f64,
        step: Duration,
    ) -> BoxFuture<'a, Result<Vec<RangeSeries>, MetricError>> {
        Box::pin(PrometheusClient::query_range(self, query, start, end, step))
    }
}

enum Attempt {
    /// Worth another attempt: connection errors, timeouts, 5xx, 429.
    Transient(String),
    Final(String),
}

/// `: error text` from an error response: Prometheus' `errorType: error`, or the start of the body.
fn error_detail(body: &[u8]) -> String {
    if let Ok(v) = serde_json::from_slice::<Value>(body) {
        if let Some(error) = v.get("error").and_then(Value::as_str) {
            return match v.get("errorType").and_then(Value::as_str) {
                Some(kind) if !kind.is_empty() => format!(": {kind}: {error}"),
                _ => format!(": {error}"),
            };
        }
    }
    let text = String::from_utf8_lossy(body);
    let text: String = text.trim().chars().take(300).collect();
    if text.is_empty() {
        String::new()
    } else {
        format!(": {text}")
    }
}

/// Reads Prometheus' answer to an instant query.
fn parse_response(body: &[u8], promql: &str, shown: &str) -> Result<f64, MetricError> {
    let v: Value = serde_json::from_slice(body).map_err(|e| {
        let start: String = String::from_utf8_lossy(body)
            .trim()
            .chars()
            .take(200)
            .collect();
        MetricError::Failed(format!(
            "{shown} did not answer with Prometheus API JSON ({e}): {start:?}"
        ))
    })?;
    match v.get("status").and_then(Value::as_str) {
        Some("success") => {}
        Some("error") => {
            return Err(MetricError::Failed(format!(
                "prometheus error{}",
                error_detail(body)
            )))
        }
        _ => {
            return Err(MetricError::Failed(format!(
                "{shown} did not answer with Prometheus API JSON: no \"status\""
            )))
        }
    }
    let data = v.get("data").unwrap_or(&Value::Null);
    let result = data.get("result").unwrap_or(&Value::Null);
    let raw = match data.get("resultType").and_then(Value::as_str) {
        Some("vector") => {
            let Some(series) = result.as_array() else {
                return Err(malformed(shown, "data.result is not a list"));
            };
            match series.last() {
                None => return Err(no_values(promql, "the query returned no series")),
                Some(s) => sample_value(s.get("value"), shown)?,
            }
        }
        Some("scalar") => sample_value(Some(result), shown)?,
        Some("matrix") => {
            return Err(MetricError::Failed(format!(
                "the query returned a range vector; a check needs one number: apply a function such as rate() or avg_over_time() to `{}`",
                short(promql)
            )))
        }
        Some(other) => {
            return Err(MetricError::Failed(format!(
                "the query returned a {other}; a check needs one number"
            )))
        }
        None => return Err(malformed(shown, "no data.resultType")),
    };
    let value: f64 = raw
        .trim()
        .parse()
        .map_err(|_| malformed(shown, &format!("sample value {raw:?} is not a number")))?;
    if value.is_nan() {
        return Err(no_values(promql, "the result is NaN"));
    }
    if value.is_infinite() {
        return Err(no_values(
            promql,
            "the result is infinite, a division by zero",
        ));
    }
    Ok(value)
}

/// The series of a range query: labels and `(timestamp, value)` points, NaNs left out.
fn parse_matrix(body: &[u8], promql: &str, shown: &str) -> Result<Vec<RangeSeries>, MetricError> {
    let v: Value = serde_json::from_slice(body).map_err(|e| {
        MetricError::Failed(format!(
            "{shown} did not answer with Prometheus API JSON ({e})"
        ))
    })?;
    if v.get("status").and_then(Value::as_str) != Some("success") {
        return Err(MetricError::Failed(format!(
            "prometheus error{}",
            error_detail(body)
        )));
    }
    let data = v.get("data").unwrap_or(&Value::Null);
    if data.get("resultType").and_then(Value::as_str) != Some("matrix") {
        return Err(malformed(shown, "a range query did not return a matrix"));
    }
    let series = data
        .get("result")
        .and_then(Value::as_array)
        .ok_or_else(|| malformed(shown, "data.result is not a list"))?;
    if series.is_empty() {
        return Err(no_values(promql, "the query returned no series"));
    }
    let mut out = Vec::with_capacity(series.len());
    for one in series {
        let labels = one
            .get("metric")
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
                    .collect()
            })
            .unwrap_or_default();
        let values = one
            .get("values")
            .and_then(Value::as_array)
            .ok_or_else(|| malformed(shown, "a series has no values"))?;
        let mut points = Vec::with_capacity(values.len());
        for pair in values {
            let raw = sample_value(Some(pair), shown)?;
            let at = pair
                .as_array()
                .and_then(|p| p.first())
                .and_then(Value::as_f64)
                .ok_or_else(|| malformed(shown, "a sample is not [timestamp, \"value\"]"))?;
            if let Ok(x) = raw.trim().parse::<f64>() {
                if !x.is_nan() {
                    points.push((at, x));
                }
            }
        }
        out.push(RangeSeries { labels, points });
    }
    Ok(out)
}

/// The value of a `[timestamp, "value"]` sample.
fn sample_value<'v>(sample: Option<&'v Value>, shown: &str) -> Result<&'v str, MetricError> {
    sample
        .and_then(Value::as_array)
        .and_then(|pair| pair.get(1))
        .and_then(Value::as_str)
        .ok_or_else(|| malformed(shown, "a sample is not [timestamp, \"value\"]"))
}

fn malformed(shown: &str, what: &str) -> MetricError {
    MetricError::Failed(format!(
        "{shown} did not answer with Prometheus API JSON: {what}"
    ))
}

fn no_values(promql: &str, why: &str) -> MetricError {
    MetricError::NoValues(format!(
        "no values found for query `{}` ({why}): the canary may be receiving no traffic",
        short(promql)
    ))
}

/// The query on one line, at most 300 characters, for messages.
fn short(promql: &str) -> String {
    let one_line = collapse_whitespace(promql);
    let mut s: String = one_line.chars().take(300).collect();
    if s.len() < one_line.len() {
        s.push('…');
    }
    s
}

/// Standard base64 with padding.
fn base64(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk.first().copied().unwrap_or(0),
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                let index = ((n >> (18 - 6 * i)) & 63) as usize;
                out.push(char::from(ALPHABET[index]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str) -> Result<f64, MetricError> {
        parse_response(body.as_bytes(), "up", "http://p/api/v1/query")
    }

    #[test]
    fn range_queries_keep_every_series_with_labels_and_timestamps() {
        let body = r#"{"status":"success","data":{"resultType":"matrix","result":[
            {"metric":{"le":"0.1"},"values":[[1700000000,"3"],[1700000030.5,"NaN"],[1700000060,"5"]]},
            {"metric":{"le":"+Inf"},"values":[[1700000000,"4"],[1700000060,"7"]]}]}}"#;
        match parse_matrix(body.as_bytes(), "x", "http://p") {
            Ok(series) => {
                assert_eq!(series.len(), 2);
                assert_eq!(series[0].labels.get("le").map(String::as_str), Some("0.1"));
                assert_eq!(
                    series[0].points,
                    vec![(1_700_000_000.0, 3.0), (1_700_000_060.0, 5.0)]
                );
                assert_eq!(series[1].labels.get("le").map(String::as_str), Some("+Inf"));
                assert_eq!(series[1].points.len(), 2);
            }
            Err(e) => panic!("{e}"),
        }
        let empty = r#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#;
        assert!(matches!(
            parse_matrix(empty.as_bytes(), "x", "http://p"),
            Err(MetricError::NoValues(_))
        ));
        let nans = r#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{},"values":[[1,"NaN"]]}]}}"#;
        match parse_matrix(nans.as_bytes(), "x", "http://p") {
            Ok(series) => assert!(series.len() == 1 && series[0].points.is_empty()),
            Err(e) => panic!("{e}"),
        }
        for (bad, expected) in [
            (
                r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#,
                "did not return a matrix",
            ),
            (
                r#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{}}]}}"#,
                "has no values",
            ),
            (
                r#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{},"values":[["x","1"]]}]}}"#,
                "is not [timestamp",
            ),
            (
                r#"{"status":"error","errorType":"bad_data","error":"parse error"}"#,
                "prometheus error",
            ),
        ] {
            match parse_matrix(bad.as_bytes(), "x", "http://p") {
                Err(MetricError::Failed(m)) => assert!(m.contains(expected), "{bad}: {m}"),
                other => panic!("{bad}: {other:?}"),
            }
        }
    }

    #[test]
    fn vectors_scalars_and_the_last_series() {
        let one = r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"99.5"]}]}}"#;
        assert_eq!(parse(one).ok(), Some(99.5));
        let two = r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{"a":"1"},"value":[1,"1"]},{"metric":{"a":"2"},"value":[1,"2"]}]}}"#;
        assert_eq!(parse(two).ok(), Some(2.0), "Flagger keeps the last series");
        let scalar = r#"{"status":"success","data":{"resultType":"scalar","result":[1,"0.25"]}}"#;
        assert_eq!(parse(scalar).ok(), Some(0.25));
    }

    #[test]
    fn empty_nan_and_infinite_results_are_no_values() {
        for body in [
            r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#,
            r#"{"status":"success","data":{"resultType":"scalar","result":[1,"NaN"]}}"#,
            r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"+Inf"]}]}}"#,
            r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"-Inf"]}]}}"#,
        ] {
            match parse(body) {
                Err(MetricError::NoValues(m)) => {
                    assert!(m.starts_with("no values found for query `up`"), "{m}")
                }
                other => panic!("{body}: {other:?}"),
            }
        }
    }

    #[test]
    fn errors_and_malformed_answers_fail() {
        let cases = [
            (
                r#"{"status":"error","errorType":"bad_data","error":"1:5: parse error: unexpected end of input"}"#,
                "bad_data: 1:5: parse error",
            ),
            (
                "<html>oops</html>",
                "did not answer with Prometheus API JSON",
            ),
            (r#"{"data":{}}"#, "no \"status\""),
            (
                r#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#,
                "range vector",
            ),
            (
                r#"{"status":"success","data":{"resultType":"string","result":[1,"x"]}}"#,
                "returned a string",
            ),
            (
                r#"{"status":"success","data":{"resultType":"vector","result":[{"value":[1,"abc"]}]}}"#,
                "is not a number",
            ),
            (
                r#"{"status":"success","data":{"resultType":"vector","result":[{"value":[1]}]}}"#,
                "is not [timestamp",
            ),
        ];
        for (body, expected) in cases {
            match parse(body) {
                Err(MetricError::Failed(m)) => assert!(m.contains(expected), "{body}: {m}"),
                other => panic!("{body}: {other:?}"),
            }
        }
    }

    #[test]
    fn the_endpoint_keeps_the_path_prefix() {
        let c = PrometheusClient::new(
            "https://monitoring.googleapis.com/v1/projects/p/location/global/prometheus/",
            Auth::None,
            BTreeMap::new(),
            false,
            Duration::from_secs(1),
            0,
        );
        assert_eq!(
            c.as_ref().map(|c| c.endpoint().to_string()).ok().as_deref(),
            Some("https://monitoring.googleapis.com/v1/projects/p/location/global/prometheus/api/v1/query")
        );
        let c = PrometheusClient::new(
            "http://prometheus:9090",
            Auth::None,
            BTreeMap::new(),
            false,
            Duration::from_secs(1),
            0,
        );
        assert_eq!(
            c.as_ref().map(|c| c.endpoint().to_string()).ok().as_deref(),
            Some("http://prometheus:9090/api/v1/query")
        );
    }

    #[test]
    fn bad_addresses_and_headers_are_refused_without_showing_credentials() {
        let new = |a: &str, h: BTreeMap<String, String>| {
            PrometheusClient::new(a, Auth::None, h, false, Duration::from_secs(1), 0)
        };
        for address in ["", "prometheus:9090", "ftp://x", "http://"] {
            assert!(new(address, BTreeMap::new()).is_err(), "{address}");
        }
        match new("http://user:hunter2@", BTreeMap::new()) {
            Err(e) => assert!(!e.to_string().contains("hunter2"), "{e}"),
            Ok(_) => panic!("accepted"),
        }
        let c = new("http://user:hunter2@prometheus:9090", BTreeMap::new());
        match c {
            Ok(c) => {
                assert_eq!(c.endpoint(), "http://***@prometheus:9090/api/v1/query");
                assert!(!format!("{c:?}").contains("hunter2"));
            }
            Err(e) => panic!("{e}"),
        }
        let bad_name = BTreeMap::from([("bad header".to_string(), "x".to_string())]);
        assert!(new("http://p", bad_name).is_err());
        let bad_value = BTreeMap::from([("X-Key".to_string(), "a\nb".to_string())]);
        match new("http://p", bad_value) {
            Err(e) => assert!(!e.to_string().contains("a\nb"), "{e}"),
            Ok(_) => panic!("accepted"),
        }
    }

    #[test]
    fn credentials_never_show_in_debug_output() {
        let bearer = format!("{:?}", Auth::Bearer("s3cr3t".into()));
        let basic = format!(
            "{:?}",
            Auth::Basic {
                username: "u".into(),
                password: "s3cr3t".into()
            }
        );
        assert!(!bearer.contains("s3cr3t") && !basic.contains("s3cr3t"));
        let c = PrometheusClient::new(
            "http://p",
            Auth::Bearer("s3cr3t".into()),
            BTreeMap::from([("X-Api-Key".to_string(), "s3cr3t".to_string())]),
            false,
            Duration::from_secs(1),
            0,
        );
        assert!(c.is_ok_and(|c| !format!("{c:?}").contains("s3cr3t")));
    }

    #[test]
    fn secrets_are_read_as_flagger_reads_them() {
        let data = |pairs: &[(&str, &str)]| -> BTreeMap<String, Vec<u8>> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
                .collect()
        };
        assert_eq!(
            Auth::from_secret_data("prometheus", &data(&[("token", "t\n"), ("username", "u")]))
                .ok(),
            Some(Auth::Bearer("t".into()))
        );
        assert_eq!(
            Auth::from_secret_data("prometheus", &data(&[("username", "u"), ("password", "p")]))
                .ok(),
            Some(Auth::Basic {
                username: "u".into(),
                password: "p".into()
            })
        );
        match Auth::from_secret_data("prometheus", &data(&[("username", "u")])) {
            Err(e) => assert_eq!(
                e.to_string(),
                "prometheus credentials does not contain a password"
            ),
            Ok(a) => panic!("{a:?}"),
        }
        match Auth::from_secret_data("prometheus", &data(&[])) {
            Err(e) => assert_eq!(
                e.to_string(),
                "prometheus credentials does not contain a username"
            ),
            Ok(a) => panic!("{a:?}"),
        }
    }

    #[test]
    fn base64_matches_rfc_4648() {
        for (input, expected) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("user:pass", "dXNlcjpwYXNz"),
        ] {
            assert_eq!(base64(input.as_bytes()), expected);
        }
    }
}
