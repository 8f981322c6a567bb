//! The HTTP side of the metric providers that answer over an HTTP API: one base address, the
//! provider's credentials in headers, and one way to call it.
//!
//! Every call has a timeout per attempt and an answer read up to [`MAX_BODY`]. Connection
//! errors, timeouts, 429 and 5xx are retried with exponential backoff (200 ms doubling, at most
//! 2 s between attempts); a 429 or 503 with `Retry-After` (seconds or an HTTP date) waits as long
//! as it asks, up to [`MAX_RETRY_AFTER`]: a longer wait fails the call at once, saying so, since a
//! check cannot wait that long. Errors name the provider, the endpoint (credentials redacted),
//! the HTTP status and the provider's own error text. Credentials travel only in headers marked
//! sensitive and never appear in messages, logs or `Debug` output.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use reqwest::header::{HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};
use reqwest::{Method, StatusCode, Url};
use serde_json::Value;

use crate::http::{describe, CappedError};
use aviary_core::urls::{redact, redact_url};

use super::MetricError;

/// Larger answers are refused rather than buffered.
pub(crate) const MAX_BODY: usize = crate::http::PROMETHEUS_MAX;
/// The longest `Retry-After` a call waits for.
pub(crate) const MAX_RETRY_AFTER: Duration = Duration::from_secs(10);
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// One metrics provider's HTTP API.
#[derive(Clone)]
pub(crate) struct Api {
    kind: &'static str,
    http: reqwest::Client,
    /// The address, its path without a trailing `/`.
    base: Url,
    /// The address for messages, credentials redacted.
    shown: String,
    /// Credentials and the template's headers (sensitive: never printed).
    headers: HeaderMap,
    timeout: Duration,
    retries: u32,
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Api")
            .field("kind", &self.kind)
            .field("address", &self.shown)
            .field("timeout", &self.timeout)
            .field("retries", &self.retries)
            .finish_non_exhaustive()
    }
}

/// One call: a method, a path under the address, query parameters, headers of its own and a
/// body.
#[derive(Debug, Clone)]
pub(crate) struct Call {
    pub method: Method,
    pub path: String,
    pub query: Vec<(String, String)>,
    /// Headers of this call's own: name, value, and whether the value is a credential (an
    /// access token, a signature), never printed.
    pub headers: Vec<(String, String, bool)>,
    /// Content type and bytes.
    pub body: Option<(&'static str, Vec<u8>)>,
}

impl Call {
    pub(crate) fn get(path: impl Into<String>) -> Call {
        Call {
            method: Method::GET,
            path: path.into(),
            query: Vec::new(),
            headers: Vec::new(),
            body: None,
        }
    }

    pub(crate) fn post(path: impl Into<String>, content_type: &'static str, body: Vec<u8>) -> Call {
        Call {
            method: Method::POST,
            path: path.into(),
            query: Vec::new(),
            headers: Vec::new(),
            body: Some((content_type, body)),
        }
    }

    pub(crate) fn header(mut self, name: &str, value: impl Into<String>) -> Call {
        self.headers.push((name.to_string(), value.into(), false));
        self
    }

    /// A header whose value is a credential.
    pub(crate) fn secret_header(mut self, name: &str, value: impl Into<String>) -> Call {
        self.headers.push((name.to_string(), value.into(), true));
        self
    }

    pub(crate) fn bearer(self, token: &str) -> Call {
        self.secret_header("Authorization", format!("Bearer {token}"))
    }

    pub(crate) fn param(mut self, key: &str, value: impl Into<String>) -> Call {
        self.query.push((key.to_string(), value.into()));
        self
    }
}

/// What one attempt came to.
enum Attempt {
    /// Worth another attempt, after the backoff or the time the answer asked for.
    Transient(String, Option<Duration>),
    Final(String),
}

impl Api {
    /// The API of provider `kind` at `address` (`http(s)://host[:port][/prefix]`), sending
    /// `credentials` (header name and value) and the template's `headers` with every call.
    pub(crate) fn new(
        clients: &crate::http::Clients,
        kind: &'static str,
        address: &str,
        credentials: Vec<(&'static str, String)>,
        headers: &BTreeMap<String, String>,
        (insecure_skip_verify, timeout, retries): (bool, Duration, u32),
    ) -> Result<Api, MetricError> {
        let trimmed = address.trim();
        let invalid = || {
            MetricError::Failed(format!(
                "{kind} address {} is not a valid URL: write it as http(s)://host[:port][/path]",
                redact(trimmed)
            ))
        };
        let mut base = Url::parse(trimmed).map_err(|_| invalid())?;
        if !matches!(base.scheme(), "http" | "https") || base.host_str().is_none() {
            return Err(invalid());
        }
        let path = base.path().trim_end_matches('/').to_string();
        base.set_path(&path);
        base.set_fragment(None);
        let shown = redact_url(&base);
        let mut map = HeaderMap::new();
        let named = |name: &str| {
            HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                MetricError::Failed(format!("{name:?} is not a valid HTTP header name"))
            })
        };
        let value = |name: &str, value: &str| {
            let mut v = HeaderValue::from_str(value).map_err(|_| {
                MetricError::Failed(format!(
                    "the value of header {name} contains characters that cannot be sent in an HTTP header"
                ))
            })?;
            // Headers carry credentials (API keys, tokens, X-Scope-OrgID): never printed.
            v.set_sensitive(true);
            Ok::<_, MetricError>(v)
        };
        for (name, v) in headers {
            map.insert(named(name)?, value(name, v)?);
        }
        for (name, v) in credentials {
            map.insert(named(name)?, value(name, v.trim())?);
        }
        let http = clients
            .get(insecure_skip_verify)
            .map_err(|e| MetricError::Failed(format!("{shown}: {e}")))?;
        Ok(Api {
            kind,
            http,
            base,
            shown,
            headers: map,
            timeout,
            retries,
        })
    }

    /// `e` as the reason the provider is not available (its online check).
    pub(crate) fn unavailable(&self, e: &MetricError) -> MetricError {
        MetricError::Failed(format!(
            "{} at {} is not available: {}",
            self.kind,
            self.shown,
            e.message()
        ))
    }

    /// The online check that `call` answers.
    pub(crate) async fn online(&self, call: &Call) -> Result<(), MetricError> {
        self.call(call)
            .await
            .map(drop)
            .map_err(|e| self.unavailable(&e))
    }

    /// The URL `call` goes to.
    pub(crate) fn url_of(&self, call: &Call) -> Url {
        let mut url = self.url(&call.path);
        if !call.query.is_empty() {
            url.query_pairs_mut().extend_pairs(&call.query);
        }
        url
    }

    /// The URL of `path` under the address.
    fn url(&self, path: &str) -> Url {
        let mut url = self.base.clone();
        let joined = format!(
            "{}/{}",
            url.path().trim_end_matches('/'),
            path.trim_start_matches('/')
        );
        url.set_path(&joined);
        url
    }

    /// The endpoint of `path`, for messages.
    pub(crate) fn endpoint(&self, path: &str) -> String {
        redact_url(&self.url(path))
    }

    /// Makes `call`, retrying as the module says; the answer's body.
    pub(crate) async fn call(&self, call: &Call) -> Result<Vec<u8>, MetricError> {
        let attempts = self.retries.saturating_add(1);
        let mut delay = FIRST_BACKOFF;
        let mut attempt = 1;
        loop {
            match self.attempt(call).await {
                Ok(body) => return Ok(body),
                Err(Attempt::Final(message)) => return Err(MetricError::Failed(message)),
                Err(Attempt::Transient(message, asked)) if attempt < attempts => {
                    if let Some(wait) = asked.filter(|w| *w > MAX_RETRY_AFTER) {
                        return Err(MetricError::Failed(format!(
                            "{message}, and asked to retry after {} s, longer than aviary waits for a check ({} s)",
                            wait.as_secs(),
                            MAX_RETRY_AFTER.as_secs()
                        )));
                    }
                    let wait = asked.unwrap_or(delay);
                    tracing::debug!(
                        attempt,
                        provider = self.kind,
                        "metrics query failed: {message}; retrying in {wait:?}"
                    );
                    tokio::time::sleep(wait).await;
                    delay = (delay * 2).min(MAX_BACKOFF);
                    attempt += 1;
                }
                Err(Attempt::Transient(message, _)) => {
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

    async fn attempt(&self, call: &Call) -> Result<Vec<u8>, Attempt> {
        let url = self.url(&call.path);
        let shown = redact_url(&url);
        let mut request = self
            .http
            .request(call.method.clone(), url)
            .headers(self.headers.clone())
            .timeout(self.timeout);
        if !call.query.is_empty() {
            request = request.query(&call.query);
        }
        for (name, value, secret) in &call.headers {
            let bad = || {
                Attempt::Final(format!(
                    "cannot query {shown}: header {name} cannot be sent in an HTTP request"
                ))
            };
            let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| bad())?;
            let mut value = HeaderValue::from_str(value).map_err(|_| bad())?;
            value.set_sensitive(*secret);
            request = request.header(name, value);
        }
        if let Some((content_type, body)) = &call.body {
            request = request
                .header(reqwest::header::CONTENT_TYPE, *content_type)
                .body(body.clone());
        }
        let send_error = |e: &reqwest::Error| {
            if e.is_timeout() {
                Attempt::Transient(format!("{shown} timed out after {:?}", self.timeout), None)
            } else if e.is_connect() {
                Attempt::Transient(format!("cannot connect to {shown}: {}", describe(e)), None)
            } else if e.is_builder() {
                Attempt::Final(format!("cannot query {shown}: {}", describe(e)))
            } else {
                Attempt::Transient(format!("{shown}: {}", describe(e)), None)
            }
        };
        let response = request.send().await.map_err(|e| send_error(&e))?;
        let status = response.status();
        let asked = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| retry_after(v, SystemTime::now()));
        let body = match crate::http::read_capped(crate::http::body_stream(response), MAX_BODY).await
        {
            Ok(body) => body,
            Err(CappedError::Read(e)) => return Err(send_error(&e)),
            Err(CappedError::TooLarge { cap }) => {
                return Err(Attempt::Final(format!(
                    "{shown} answered {status} with more than {} (aviary reads at most that of an answer): make the query return less",
                    crate::http::size(cap)
                )))
            }
        };
        if status.is_success() {
            return Ok(body);
        }
        let detail = generic_detail(&body)
            .map(|d| format!(": {d}"))
            .unwrap_or_default();
        let message = format!("{shown} answered {status}{detail}");
        if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
            let asked = matches!(
                status,
                StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
            )
            .then_some(asked)
            .flatten();
            Err(Attempt::Transient(message, asked))
        } else {
            Err(Attempt::Final(message))
        }
    }
}

/// How long a `Retry-After` value asks to wait: delay-seconds, or an HTTP date (RFC 9110,
/// section 10.2.3), from `now`. None when it is neither.
pub(crate) fn retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// The error text of an answer in the shapes most APIs use: `errors` (a list of strings or of
/// objects with a `message`), `error` (a string, or an object with a `message`), `message`;
/// else the start of the body.
pub(crate) fn generic_detail(body: &[u8]) -> Option<String> {
    let text_of = |v: &Value| -> Option<String> {
        match v {
            Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
            Value::Object(o) => o
                .get("message")
                .or_else(|| o.get("detail"))
                .and_then(Value::as_str)
                .map(|s| s.trim().to_string()),
            _ => None,
        }
    };
    if let Ok(v) = serde_json::from_slice::<Value>(body) {
        if let Some(errors) = v.get("errors").and_then(Value::as_array) {
            let texts: Vec<String> = errors.iter().filter_map(text_of).collect();
            if !texts.is_empty() {
                return Some(texts.join("; "));
            }
        }
        if let Some(text) = v.get("error").and_then(text_of) {
            return Some(text);
        }
        if let Some(text) = v.get("message").and_then(text_of) {
            return Some(text);
        }
    }
    let text = String::from_utf8_lossy(body);
    let text: String = text.trim().chars().take(300).collect();
    (!text.is_empty()).then_some(text)
}

/// Now, in Unix milliseconds.
pub(crate) fn unix_now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or_default()
}

/// An answer of `endpoint` read as JSON, or an error saying it is not `whose` JSON.
pub(crate) fn json_of(body: &[u8], endpoint: &str, whose: &str) -> Result<Value, MetricError> {
    serde_json::from_slice(body).map_err(|e| {
        MetricError::Failed(format!(
            "{endpoint} answered something that is not {whose} JSON ({e}): {}",
            excerpt(body, 200)
        ))
    })
}

/// The number `value` of an answer of provider `kind` at `endpoint`: a finite number; absent,
/// `null` or not finite is "no values" (`what` names it in messages: `the first point`);
/// anything else is not the provider's answer.
pub(crate) fn number(
    value: Option<&Value>,
    kind: &str,
    what: &str,
    endpoint: &str,
) -> Result<f64, MetricError> {
    match value {
        Some(Value::Number(n)) => n
            .as_f64()
            .filter(|v| v.is_finite())
            .ok_or_else(|| MetricError::NoValues(format!("{kind}: {what} is not a finite number"))),
        Some(Value::Null) | None => Err(MetricError::NoValues(format!(
            "{kind}: {what} has no value"
        ))),
        Some(other) => Err(MetricError::Failed(format!(
            "{endpoint} answered {what} that is not a number: {other}"
        ))),
    }
}

/// The width of the buckets whose start times are `starts` (seconds): the smallest positive gap
/// between two of them, else `fallback` (a single bucket).
pub(crate) fn bucket_width(starts: impl Iterator<Item = f64>, fallback: f64) -> f64 {
    let mut starts: Vec<f64> = starts.filter(|t| t.is_finite()).collect();
    starts.sort_by(f64::total_cmp);
    starts
        .windows(2)
        .map(|w| w[1] - w[0])
        .filter(|gap| *gap > 0.0)
        .min_by(f64::total_cmp)
        .unwrap_or(fallback)
}

/// The window, in Unix milliseconds, that a provider answering in buckets is asked for in a
/// judge's range query. `start` closes the judge's first interval, and a bucket's point is placed
/// at the bucket's end, so the bucket that covers the first interval opens a `step` before
/// `start` (at least a second); the window ends at `end`.
pub(crate) fn range_window_ms(start: f64, end: f64, step: std::time::Duration) -> (u64, u64) {
    let step_ms = u64::try_from(step.as_millis())
        .unwrap_or(u64::MAX)
        .max(1000);
    let from = ((start * 1000.0).floor() as u64).saturating_sub(step_ms);
    (from, (end * 1000.0).ceil() as u64)
}

/// [`range_window_ms`] in whole Unix seconds (the start rounded down, the end up).
pub(crate) fn range_window(start: f64, end: f64, step: std::time::Duration) -> (u64, u64) {
    let (from, until) = range_window_ms(start, end, step);
    (from / 1000, until.div_ceil(1000))
}

/// The first `chars` characters of `body`, for messages about an answer that is not what the
/// provider documents.
pub(crate) fn excerpt(body: &[u8], chars: usize) -> String {
    let text = String::from_utf8_lossy(body);
    let trimmed = text.trim();
    let mut out: String = trimmed.chars().take(chars).collect();
    if trimmed.chars().count() > chars {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_judges_window_opens_a_step_before_its_first_close() {
        let step = std::time::Duration::from_secs(60);
        assert_eq!(
            range_window_ms(1_700_000_060.4, 1_700_000_180.2, step),
            (1_700_000_000_400, 1_700_000_180_200)
        );
        assert_eq!(
            range_window(1_700_000_060.4, 1_700_000_180.2, step),
            (1_700_000_000, 1_700_000_181)
        );
        // At least a second, and never before the epoch.
        let tiny = std::time::Duration::from_millis(10);
        assert_eq!(range_window_ms(5.0, 6.0, tiny), (4_000, 6_000));
        assert_eq!(range_window_ms(0.5, 1.0, step), (0, 1_000));
    }
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use wiremock::matchers::{header, method, path, query_param};
    use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

    fn api(address: &str, retries: u32) -> Api {
        match Api::new(
            &crate::http::Clients::default(),
            "datadog",
            address,
            vec![("DD-API-KEY", "k3y\n".to_string())],
            &BTreeMap::from([("X-Org".to_string(), "acme".to_string())]),
            (false, Duration::from_secs(5), retries),
        ) {
            Ok(api) => api,
            Err(e) => panic!("{e}"),
        }
    }

    /// Answers from a list, one per request, the last one from then on.
    struct Sequence {
        answers: Vec<ResponseTemplate>,
        seen: Arc<AtomicUsize>,
    }

    impl Respond for Sequence {
        fn respond(&self, _: &Request) -> ResponseTemplate {
            let n = self.seen.fetch_add(1, Ordering::SeqCst);
            self.answers[n.min(self.answers.len() - 1)].clone()
        }
    }

    #[tokio::test]
    async fn calls_carry_the_credentials_and_headers_under_the_addresss_path() {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path("/prefix/api/v1/query"))
            .and(query_param("query", "avg:x{*}"))
            .and(header("DD-API-KEY", "k3y"))
            .and(header("X-Org", "acme"))
            .respond_with(ResponseTemplate::new(200).set_body_string("{}"))
            .mount(&server)
            .await;
        let api = api(&format!("{}/prefix/", server.uri()), 0);
        let body = api
            .call(&Call::get("/api/v1/query").param("query", "avg:x{*}"))
            .await;
        assert_eq!(body.ok().as_deref(), Some(&b"{}"[..]));
        assert_eq!(
            api.endpoint("api/v1/query"),
            format!("{}/prefix/api/v1/query", server.uri())
        );
    }

    #[tokio::test]
    async fn a_429_is_retried_after_the_time_it_asks_for() {
        let server = MockServer::start().await;
        let seen = Arc::new(AtomicUsize::new(0));
        Mock::given(method("GET"))
            .respond_with(Sequence {
                answers: vec![
                    ResponseTemplate::new(429)
                        .insert_header("Retry-After", "1")
                        .set_body_string(r#"{"errors":["Rate limit exceeded"]}"#),
                    ResponseTemplate::new(200).set_body_string("ok"),
                ],
                seen: seen.clone(),
            })
            .mount(&server)
            .await;
        let started = std::time::Instant::now();
        let body = api(&server.uri(), 1).call(&Call::get("q")).await;
        assert_eq!(body.ok().as_deref(), Some(&b"ok"[..]));
        assert_eq!(seen.load(Ordering::SeqCst), 2);
        // It waited what the answer asked, not the first backoff (200 ms).
        assert!(started.elapsed() >= Duration::from_secs(1));
    }

    #[tokio::test]
    async fn errors_name_the_endpoint_the_status_and_the_providers_text_without_credentials() {
        let server = MockServer::start().await;
        let seen = Arc::new(AtomicUsize::new(0));
        Mock::given(method("GET"))
            .and(path("/forbidden"))
            .respond_with(ResponseTemplate::new(403).set_body_string(r#"{"errors":["Forbidden"]}"#))
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .and(path("/down"))
            .respond_with(Sequence {
                answers: vec![ResponseTemplate::new(503).set_body_string("upstream down")],
                seen: seen.clone(),
            })
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .and(path("/slow-down"))
            .respond_with(ResponseTemplate::new(429).insert_header("Retry-After", "3600"))
            .mount(&server)
            .await;
        let address = server.uri().replace("http://", "http://user:hunter2@");
        let api = api(&address, 2);
        let message = |r: Result<Vec<u8>, MetricError>| match r {
            Err(MetricError::Failed(m)) => m,
            other => panic!("{other:?}"),
        };
        let m = message(api.call(&Call::get("forbidden")).await);
        assert!(
            m.ends_with("/forbidden answered 403 Forbidden: Forbidden"),
            "{m}"
        );
        // 4xx: no retry; 5xx: every attempt.
        let m = message(api.call(&Call::get("down")).await);
        assert!(
            m.ends_with("/down answered 503 Service Unavailable: upstream down (3 attempts)"),
            "{m}"
        );
        assert_eq!(seen.load(Ordering::SeqCst), 3);
        let m = message(api.call(&Call::get("slow-down")).await);
        assert!(
            m.contains("asked to retry after 3600 s, longer than aviary waits for a check (10 s)"),
            "{m}"
        );
        let shown = format!("{m} {api:?}");
        for secret in ["hunter2", "k3y", "acme"] {
            assert!(!shown.contains(secret), "{shown}");
        }
    }

    #[test]
    fn retry_after_is_seconds_or_an_http_date() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777);
        assert_eq!(retry_after("120", now), Some(Duration::from_secs(120)));
        // RFC 9110's example date, 30 s after `now`.
        assert_eq!(
            retry_after(
                "Sun, 06 Nov 1994 08:49:37 GMT",
                now - Duration::from_secs(30)
            ),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            retry_after(
                "Sun, 06 Nov 1994 08:49:37 GMT",
                now + Duration::from_secs(5)
            ),
            Some(Duration::ZERO)
        );
        assert_eq!(retry_after("soon", now), None);
    }

    #[test]
    fn error_texts_are_read_from_the_usual_shapes() {
        let d = |s: &str| generic_detail(s.as_bytes());
        assert_eq!(d(r#"{"errors":["a","b"]}"#).as_deref(), Some("a; b"));
        assert_eq!(
            d(r#"{"errors":[{"message":"bad nrql"}]}"#).as_deref(),
            Some("bad nrql")
        );
        assert_eq!(
            d(r#"{"error":{"code":400,"message":"bad filter"}}"#).as_deref(),
            Some("bad filter")
        );
        assert_eq!(d(r#"{"message":"nope"}"#).as_deref(), Some("nope"));
        assert_eq!(d("plain text").as_deref(), Some("plain text"));
        assert_eq!(d(""), None);
    }
}
