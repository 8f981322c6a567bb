//! The `stackdriver` provider: Google Cloud Monitoring, queried with MQL as Flagger queries it
//! (`pkg/metrics/providers/stackdriver.go`, through Google's gRPC client; aviary calls the same
//! method over REST):
//!
//! - address: `spec.provider.address`, else `https://monitoring.googleapis.com`;
//! - the project: the `secretRef` Secret's `project` (Flagger's key, required when there is a
//!   Secret), else the run's project (`CLOUD_DEPLOY_PROJECT` in a Cloud Deploy custom target,
//!   else `GOOGLE_CLOUD_PROJECT`);
//! - credentials: the Secret's `serviceAccountKey` (a service account's JSON key: a token is asked
//!   of its `token_uri` with a signed JWT, RFC 7523), else the key file `GOOGLE_APPLICATION_CREDENTIALS`
//!   names, else the metadata server's token for the workload's service account (GKE Workload
//!   Identity, Cloud Deploy's execution service account; `GCE_METADATA_HOST` moves it). Tokens
//!   are kept until a minute before they expire;
//! - a query: `POST {address}/v3/projects/{project}/timeSeries:query` with `{"query": Q}`;
//! - its value: the first value of the first point of the first time series (`doubleValue`, or
//!   `int64Value`, which Flagger's client reads as 0);
//! - no values: no time series, no point, or no value;
//! - online: an empty query answers 400 (the API is reached and the credentials are accepted), as
//!   Flagger checks it.
//!
//!
//! For the statistical judge (a range from S to T at step N), the judge's MQL, written without
//! a time range, gets `| every Ns` (unless it sets its own `every`) and `| within d'S', d'T'`
//! (UTC); every time series of the answer (all its pages) is a series labelled by the answer's
//! label descriptors, with a point per `pointData` at the end of its `timeInterval`.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use futures::future::BoxFuture;
use serde_json::{json, Value};

use super::api::{generic_detail, json_of, range_window, Api, Call, MAX_BODY};
use super::provider::{MetricsProvider, ProviderSpec, RangeSeries};
use super::MetricError;

const DEFAULT_ADDRESS: &str = "https://monitoring.googleapis.com";
const SCOPE: &str = "https://www.googleapis.com/auth/monitoring.read";
const METADATA_HOST: &str = "metadata.google.internal";
const JWT_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// A token is used until this long before it expires.
const TOKEN_MARGIN: Duration = Duration::from_secs(60);

/// Where the access token comes from.
#[derive(Clone)]
enum TokenSource {
    /// A service account key: a JWT signed with it is exchanged at its `token_uri`.
    Key(ServiceAccountKey),
    /// The metadata server (`http://HOST/computeMetadata/v1/...`).
    Metadata(String),
}

impl std::fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TokenSource::Key(k) => write!(f, "Key({})", k.client_email),
            TokenSource::Metadata(host) => write!(f, "Metadata({host})"),
        }
    }
}

/// The fields of a service account's JSON key that a token needs.
#[derive(Clone)]
struct ServiceAccountKey {
    client_email: String,
    private_key_id: String,
    /// PKCS#8 DER of the private key.
    der: Vec<u8>,
    token_uri: String,
}

impl ServiceAccountKey {
    fn parse(json_text: &[u8], whence: &str) -> Result<ServiceAccountKey, MetricError> {
        let bad = |why: &str| MetricError::Failed(format!("stackdriver: {whence} {why}"));
        let v: Value = serde_json::from_slice(json_text)
            .map_err(|_| bad("is not a service account's JSON key"))?;
        match v.get("type").and_then(Value::as_str) {
            Some("service_account") => {}
            Some(other) => {
                return Err(bad(&format!(
                    "is a {other} credential; aviary takes a service account's key (type service_account)"
                )))
            }
            None => return Err(bad("is not a service account's JSON key (it has no type)")),
        }
        let text = |key: &str| {
            v.get(key)
                .and_then(Value::as_str)
                .map(str::to_string)
                .ok_or_else(|| bad(&format!("has no {key}")))
        };
        let pem = text("private_key")?;
        let body: String = pem
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .map(str::trim)
            .collect();
        let der = base64::engine::general_purpose::STANDARD
            .decode(body)
            .map_err(|_| bad("has a private_key that is not PEM"))?;
        ring::signature::RsaKeyPair::from_pkcs8(&der)
            .map_err(|_| bad("has a private_key that is not an RSA key in PKCS#8"))?;
        Ok(ServiceAccountKey {
            client_email: text("client_email")?,
            private_key_id: text("private_key_id").unwrap_or_default(),
            der,
            token_uri: text("token_uri")
                .unwrap_or_else(|_| "https://oauth2.googleapis.com/token".to_string()),
        })
    }

    /// The signed JWT that asks `token_uri` for a token, issued at `now` (Unix seconds).
    fn assertion(&self, now: u64) -> Result<String, MetricError> {
        let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        let header = json!({"alg": "RS256", "typ": "JWT", "kid": self.private_key_id});
        let claims = json!({
            "iss": self.client_email,
            "scope": SCOPE,
            "aud": self.token_uri,
            "iat": now,
            "exp": now + 3600,
        });
        let signed = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let failed =
            || MetricError::Failed("stackdriver: cannot sign with the service account key".into());
        let pair = ring::signature::RsaKeyPair::from_pkcs8(&self.der).map_err(|_| failed())?;
        let mut signature = vec![0; pair.public().modulus_len()];
        pair.sign(
            &ring::signature::RSA_PKCS1_SHA256,
            &ring::rand::SystemRandom::new(),
            signed.as_bytes(),
            &mut signature,
        )
        .map_err(|_| failed())?;
        Ok(format!("{signed}.{}", b64(&signature)))
    }
}

/// Tokens already obtained, by source, with the moment they stop being used.
fn tokens() -> &'static Mutex<HashMap<String, (String, Instant)>> {
    static TOKENS: OnceLock<Mutex<HashMap<String, (String, Instant)>>> = OnceLock::new();
    TOKENS.get_or_init(|| Mutex::new(HashMap::new()))
}

#[derive(Debug)]
pub(crate) struct Stackdriver {
    api: Api,
    http: reqwest::Client,
    source: TokenSource,
    /// `/v3/projects/{project}/timeSeries:query`.
    path: String,
    endpoint: String,
    timeout: Duration,
}

impl Stackdriver {
    pub(crate) fn new(
        clients: &crate::http::Clients,
        spec: &ProviderSpec,
    ) -> Result<Stackdriver, MetricError> {
        Stackdriver::with_env(clients, spec, &|name| std::env::var(name).ok())
    }

    /// [`Stackdriver::new`], reading the environment through `env`.
    fn with_env(
        clients: &crate::http::Clients,
        spec: &ProviderSpec,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Stackdriver, MetricError> {
        let from_env = |names: &[&str]| {
            names.iter().find_map(|n| {
                env(n)
                    .map(|v| v.trim().to_string())
                    .filter(|v| !v.is_empty())
            })
        };
        let project = if spec.secret.is_empty() {
            from_env(&["CLOUD_DEPLOY_PROJECT", "GOOGLE_CLOUD_PROJECT"]).ok_or_else(|| {
                MetricError::Failed(
                    "stackdriver needs a project: set spec.provider.secretRef to a Secret with the key project (and serviceAccountKey), or run where CLOUD_DEPLOY_PROJECT or GOOGLE_CLOUD_PROJECT is set"
                        .into(),
                )
            })?
        } else {
            spec.secret_text("project", "a project id")?
                .trim()
                .to_string()
        };
        if project.is_empty()
            || !project
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | ':' | '.'))
        {
            return Err(MetricError::Failed(format!(
                "stackdriver: {project:?} is not a project id"
            )));
        }
        let source = match spec.secret.get("serviceAccountKey") {
            Some(key) => TokenSource::Key(ServiceAccountKey::parse(
                key,
                "the Secret's serviceAccountKey",
            )?),
            None => match from_env(&["GOOGLE_APPLICATION_CREDENTIALS"]) {
                Some(file) => {
                    let text = std::fs::read(&file).map_err(|e| {
                        MetricError::Failed(format!(
                            "stackdriver: cannot read GOOGLE_APPLICATION_CREDENTIALS ({file}): {e}"
                        ))
                    })?;
                    TokenSource::Key(ServiceAccountKey::parse(
                        &text,
                        "the file GOOGLE_APPLICATION_CREDENTIALS names",
                    )?)
                }
                None => TokenSource::Metadata(
                    from_env(&["GCE_METADATA_HOST"]).unwrap_or_else(|| METADATA_HOST.into()),
                ),
            },
        };
        let api = Api::new(
            clients,
            "stackdriver",
            spec.address_or(DEFAULT_ADDRESS),
            Vec::new(),
            &spec.headers,
            spec.settings(),
        )?;
        let http = clients
            .get(false)
            .map_err(|e| MetricError::Failed(format!("stackdriver: {e}")))?;
        let path = format!("/v3/projects/{project}/timeSeries:query");
        Ok(Stackdriver {
            endpoint: api.endpoint(&path),
            path,
            api,
            http,
            source,
            timeout: spec.timeout,
        })
    }

    /// An access token from the source, a cached one while it is good.
    async fn token(&self) -> Result<String, MetricError> {
        let cache_key = match &self.source {
            TokenSource::Key(key) => format!("key {} at {}", key.client_email, key.token_uri),
            TokenSource::Metadata(host) => format!("metadata {host}"),
        };
        if let Ok(cache) = tokens().lock() {
            if let Some((token, until)) = cache.get(&cache_key) {
                if Instant::now() < *until {
                    return Ok(token.clone());
                }
            }
        }
        let (url, request) = match &self.source {
            TokenSource::Key(key) => {
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or_default();
                let assertion = key.assertion(now)?;
                let form = format!(
                    "grant_type={}&assertion={}",
                    url::form_urlencoded::byte_serialize(JWT_GRANT.as_bytes()).collect::<String>(),
                    assertion
                );
                (
                    key.token_uri.clone(),
                    self.http
                        .post(&key.token_uri)
                        .header("Content-Type", "application/x-www-form-urlencoded")
                        .body(form),
                )
            }
            TokenSource::Metadata(host) => {
                let url = format!(
                    "http://{host}/computeMetadata/v1/instance/service-accounts/default/token"
                );
                (
                    url.clone(),
                    self.http.get(&url).header("Metadata-Flavor", "Google"),
                )
            }
        };
        let failed = |why: String| {
            MetricError::Failed(format!("stackdriver: no access token from {url}: {why}"))
        };
        let response = request
            .timeout(self.timeout)
            .send()
            .await
            .map_err(|e| failed(crate::http::describe(&e)))?;
        let status = response.status();
        let body = crate::http::read_capped(crate::http::body_stream(response), MAX_BODY)
            .await
            .map_err(|_| failed("the answer could not be read".into()))?;
        if !status.is_success() {
            let detail = generic_detail(&body).unwrap_or_default();
            return Err(failed(format!("{status} {detail}")));
        }
        let answer: Value = serde_json::from_slice(&body)
            .map_err(|_| failed("the answer is not a token".into()))?;
        let token = answer
            .get("access_token")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| failed("the answer has no access_token".into()))?
            .to_string();
        let lifetime = answer
            .get("expires_in")
            .and_then(Value::as_u64)
            .map(Duration::from_secs)
            .unwrap_or(Duration::from_secs(300));
        if let Ok(mut cache) = tokens().lock() {
            let until = Instant::now() + lifetime.saturating_sub(TOKEN_MARGIN);
            cache.insert(cache_key, (token.clone(), until));
        }
        Ok(token)
    }

    async fn post(&self, query: &str) -> Result<Vec<u8>, MetricError> {
        self.page(query, None).await
    }

    async fn page(&self, query: &str, token_of_page: Option<&str>) -> Result<Vec<u8>, MetricError> {
        let token = self.token().await?;
        let mut body = json!({ "query": query });
        if let Some(page) = token_of_page {
            body["pageToken"] = json!(page);
        }
        let body = body.to_string().into_bytes();
        let call = Call::post(self.path.as_str(), "application/json", body).bearer(&token);
        self.api.call(&call).await
    }

    async fn run(&self, query: &str) -> Result<f64, MetricError> {
        let body = self.post(query.trim()).await?;
        first_value(&body, &self.endpoint)
    }
}

/// At most this many pages of a judge's range are read.
const MAX_PAGES: usize = 20;

impl Stackdriver {
    async fn range(
        &self,
        query: &str,
        start: f64,
        end: f64,
        step: Duration,
    ) -> Result<Vec<RangeSeries>, MetricError> {
        let query = query.trim();
        let ops: Vec<&str> = query.split('|').map(str::trim).collect();
        let op = |name: &str| {
            ops.iter()
                .any(|o| o.split_whitespace().next() == Some(name))
        };
        if op("within") {
            return Err(MetricError::Failed(format!(
                "stackdriver: the judge sets the time range of its MQL itself: remove `| within ...` from the judge's query: {query}"
            )));
        }
        let step_s = step.as_secs().max(1);
        let (from, until) = range_window(start, end, step);
        let date = |s: u64| {
            k8s_openapi::jiff::Timestamp::from_second(i64::try_from(s).unwrap_or(i64::MAX))
                .map(|t| t.strftime("%Y/%m/%d %H:%M:%S").to_string())
                .map_err(|e| MetricError::Failed(format!("stackdriver: the range's time {s}: {e}")))
        };
        let every = if op("every") {
            String::new()
        } else {
            format!(" | every {step_s}s")
        };
        let program = format!(
            "{query}{every} | within d'{}', d'{}'",
            date(from)?,
            date(until)?
        );
        let mut all = Vec::new();
        let mut next: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let body = self.page(&program, next.as_deref()).await?;
            let (series, token) = series_of(&body, &self.endpoint)?;
            all.extend(series);
            match token {
                Some(t) => next = Some(t),
                None => break,
            }
        }
        if all.is_empty() {
            return Err(MetricError::NoValues(
                "stackdriver: the query matched no time series".into(),
            ));
        }
        Ok(all)
    }
}

/// The time series of one page of a `timeSeries:query` answer, and the next page's token.
fn series_of(
    body: &[u8],
    endpoint: &str,
) -> Result<(Vec<RangeSeries>, Option<String>), MetricError> {
    let answer = json_of(body, endpoint, "Cloud Monitoring's")?;
    let names: Vec<String> = answer
        .pointer("/timeSeriesDescriptor/labelDescriptors")
        .and_then(Value::as_array)
        .map(|d| {
            d.iter()
                .map(|l| {
                    l.get("key")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string()
                })
                .collect()
        })
        .unwrap_or_default();
    let label_text = |v: &Value| -> String {
        ["stringValue", "int64Value", "boolValue"]
            .iter()
            .find_map(|k| v.get(*k))
            .map(|x| x.as_str().map_or_else(|| x.to_string(), str::to_string))
            .unwrap_or_default()
    };
    let series = answer
        .get("timeSeriesData")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|s| {
            let labels = names
                .iter()
                .zip(
                    s.get("labelValues")
                        .and_then(Value::as_array)
                        .map(Vec::as_slice)
                        .unwrap_or_default(),
                )
                .map(|(name, v)| (name.clone(), label_text(v)))
                .collect();
            let mut points: Vec<(f64, f64)> = s
                .get("pointData")
                .and_then(Value::as_array)
                .map(Vec::as_slice)
                .unwrap_or_default()
                .iter()
                .filter_map(|p| {
                    let at = p
                        .pointer("/timeInterval/endTime")?
                        .as_str()?
                        .parse::<k8s_openapi::jiff::Timestamp>()
                        .ok()?;
                    let value = p.pointer("/values/0")?;
                    let value = match (value.get("doubleValue"), value.get("int64Value")) {
                        (Some(d), _) => d.as_f64(),
                        (None, Some(Value::String(i))) => i.parse::<i64>().ok().map(|i| i as f64),
                        (None, Some(i)) => i.as_i64().map(|i| i as f64),
                        (None, None) => None,
                    }
                    .filter(|v| v.is_finite())?;
                    Some((at.as_millisecond() as f64 / 1000.0, value))
                })
                .collect();
            // Cloud Monitoring gives the newest point first.
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
            RangeSeries { labels, points }
        })
        .collect();
    let next = answer
        .get("nextPageToken")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .map(str::to_string);
    Ok((series, next))
}

/// The first value of the first point of the first time series.
fn first_value(body: &[u8], endpoint: &str) -> Result<f64, MetricError> {
    let answer = json_of(body, endpoint, "Cloud Monitoring's")?;
    let no_values = |why: &str| MetricError::NoValues(format!("stackdriver: {why}"));
    let series = answer
        .get("timeSeriesData")
        .and_then(Value::as_array)
        .and_then(|s| s.first())
        .ok_or_else(|| no_values("the query matched no time series"))?;
    let value = series
        .get("pointData")
        .and_then(Value::as_array)
        .and_then(|p| p.first())
        .and_then(|p| p.get("values"))
        .and_then(Value::as_array)
        .and_then(|v| v.first())
        .ok_or_else(|| no_values("the first time series has no point"))?;
    if let Some(v) = value.get("doubleValue") {
        // JSON numbers, or the strings "NaN" and "Infinity" (proto3 JSON).
        return v
            .as_f64()
            .filter(|v| v.is_finite())
            .ok_or_else(|| no_values("the value is not a finite number"));
    }
    if let Some(v) = value.get("int64Value") {
        // proto3 JSON writes int64 as a string.
        let parsed = match v {
            Value::String(s) => s.parse::<i64>().ok(),
            Value::Number(n) => n.as_i64(),
            _ => None,
        };
        return parsed.map(|v| v as f64).ok_or_else(|| {
            MetricError::Failed(format!(
                "{endpoint} answered an int64Value that is not one: {v}"
            ))
        });
    }
    Err(MetricError::Failed(format!(
        "{endpoint} answered a value that is not a number (a distribution or a boolean): {value}; make the query end with a number"
    )))
}

impl MetricsProvider for Stackdriver {
    fn kind(&self) -> &'static str {
        "stackdriver"
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
        Box::pin(self.range(query, start, end, step))
    }

    fn is_online(&self) -> BoxFuture<'_, Result<(), MetricError>> {
        Box::pin(async move {
            match self.post("").await {
                Ok(_) => Ok(()),
                // An empty query is refused as such: the API answered and took the token.
                Err(MetricError::Failed(m)) if m.contains(" answered 400 ") => Ok(()),
                Err(e) => Err(self.api.unavailable(&e)),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::sync::{Arc, Mutex as StdMutex};
    use wiremock::matchers::{body_json, header, method, path};
    use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

    const KEY_PEM: &str = include_str!("../../testdata/gcp-service-account-test-key.pem");

    fn key_json(token_uri: &str) -> String {
        json!({
            "type": "service_account",
            "project_id": "acme-prod",
            "private_key_id": "k1",
            "private_key": KEY_PEM,
            "client_email": "aviary@acme-prod.iam.gserviceaccount.com",
            "token_uri": token_uri,
        })
        .to_string()
    }

    fn spec(address: &str, secret: BTreeMap<String, Vec<u8>>) -> ProviderSpec {
        ProviderSpec {
            secret,
            ..ProviderSpec::for_test("stackdriver", address, &[])
        }
    }

    /// The token endpoint: checks the grant and the JWT's signature against the key, and
    /// keeps the claims it was sent.
    struct TokenEndpoint {
        claims: Arc<StdMutex<Vec<Value>>>,
    }

    impl Respond for TokenEndpoint {
        fn respond(&self, request: &Request) -> ResponseTemplate {
            let form: HashMap<String, String> = url::form_urlencoded::parse(&request.body)
                .into_owned()
                .collect();
            if form.get("grant_type").map(String::as_str) != Some(JWT_GRANT) {
                return ResponseTemplate::new(400)
                    .set_body_string(r#"{"error":"unsupported_grant_type"}"#);
            }
            let jwt = form.get("assertion").cloned().unwrap_or_default();
            let parts: Vec<&str> = jwt.split('.').collect();
            let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
            let (Some(h), Some(c), Some(s)) = (parts.first(), parts.get(1), parts.get(2)) else {
                return ResponseTemplate::new(400);
            };
            let der = ServiceAccountKey::parse(key_json("x").as_bytes(), "test")
                .map(|k| k.der)
                .unwrap_or_default();
            let verified = ring::signature::RsaKeyPair::from_pkcs8(&der).is_ok_and(|pair| {
                let public = ring::signature::UnparsedPublicKey::new(
                    &ring::signature::RSA_PKCS1_2048_8192_SHA256,
                    pair.public().as_ref().to_vec(),
                );
                public
                    .verify(
                        format!("{h}.{c}").as_bytes(),
                        &b64.decode(s).unwrap_or_default(),
                    )
                    .is_ok()
            });
            if !verified {
                return ResponseTemplate::new(400).set_body_string(
                    r#"{"error":"invalid_grant","error_description":"Invalid JWT Signature."}"#,
                );
            }
            let claims: Value =
                serde_json::from_slice(&b64.decode(c).unwrap_or_default()).unwrap_or(Value::Null);
            if let Ok(mut all) = self.claims.lock() {
                all.push(claims);
            }
            ResponseTemplate::new(200).set_body_string(
                r#"{"access_token":"ya29.t0k3n","expires_in":3599,"token_type":"Bearer"}"#,
            )
        }
    }

    const MQL: &str = "fetch k8s_container | metric 'kubernetes.io/container/restart_count' | filter resource.namespace_name == 'test' | within 5m | sum";

    #[tokio::test]
    async fn a_query_is_mql_for_the_project_with_a_token_from_the_service_account_key() {
        let server = MockServer::start().await;
        let claims = Arc::new(StdMutex::new(Vec::new()));
        Mock::given(method("POST"))
            .and(path("/token"))
            .respond_with(TokenEndpoint {
                claims: claims.clone(),
            })
            .mount(&server)
            .await;
        Mock::given(method("POST"))
            .and(path("/v3/projects/acme-prod/timeSeries:query"))
            .and(header("Authorization", "Bearer ya29.t0k3n"))
            .and(body_json(json!({ "query": MQL })))
            .respond_with(ResponseTemplate::new(200).set_body_string(
                r#"{"timeSeriesDescriptor":{"labelDescriptors":[{"key":"resource.namespace_name"}],"pointDescriptors":[{"key":"value.restart_count","valueType":"INT64","metricKind":"GAUGE"}]},"timeSeriesData":[{"labelValues":[{"stringValue":"test"}],"pointData":[{"values":[{"int64Value":"3"}],"timeInterval":{"startTime":"2026-12-05T07:00:00Z","endTime":"2026-12-05T07:00:00Z"}}]}]}"#,
            ))
            .mount(&server)
            .await;
        let token_uri = format!("{}/token", server.uri());
        let secret = BTreeMap::from([
            ("project".to_string(), b"acme-prod\n".to_vec()),
            (
                "serviceAccountKey".to_string(),
                key_json(&token_uri).into_bytes(),
            ),
        ]);
        match Stackdriver::new(
            &crate::http::Clients::default(),
            &spec(&server.uri(), secret),
        ) {
            Ok(sd) => {
                assert_eq!(sd.run(MQL).await, Ok(3.0));
                // The token is kept: a second query asks for none.
                assert_eq!(sd.run(MQL).await, Ok(3.0));
            }
            Err(e) => panic!("{e}"),
        }
        let claims = claims.lock().map(|c| c.clone()).unwrap_or_default();
        assert_eq!(claims.len(), 1, "{claims:?}");
        let c = &claims[0];
        assert_eq!(c["iss"], "aviary@acme-prod.iam.gserviceaccount.com");
        assert_eq!(c["scope"], SCOPE);
        assert_eq!(c["aud"], token_uri.as_str());
        assert_eq!(
            c["exp"].as_u64().unwrap_or(0) - c["iat"].as_u64().unwrap_or(0),
            3600
        );
    }

    #[tokio::test]
    async fn without_a_key_the_token_is_the_metadata_servers_and_the_project_the_runs() {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path(
                "/computeMetadata/v1/instance/service-accounts/default/token",
            ))
            .and(header("Metadata-Flavor", "Google"))
            .respond_with(ResponseTemplate::new(200).set_body_string(
                r#"{"access_token":"ya29.m3t4","expires_in":3599,"token_type":"Bearer"}"#,
            ))
            .mount(&server)
            .await;
        Mock::given(method("POST"))
            .and(path("/v3/projects/deploy-proj/timeSeries:query"))
            .and(header("Authorization", "Bearer ya29.m3t4"))
            .and(body_json(json!({ "query": "" })))
            .respond_with(ResponseTemplate::new(400).set_body_string(
                r#"{"error":{"code":400,"message":"Query is empty.","status":"INVALID_ARGUMENT"}}"#,
            ))
            .mount(&server)
            .await;
        Mock::given(method("POST"))
            .and(path("/v3/projects/deploy-proj/timeSeries:query"))
            .and(header("Authorization", "Bearer ya29.m3t4"))
            .respond_with(ResponseTemplate::new(200).set_body_string(
                r#"{"timeSeriesDescriptor":{},"timeSeriesData":[{"pointData":[{"values":[{"doubleValue":0.25}]}]}]}"#,
            ))
            .mount(&server)
            .await;
        let host = server.uri().trim_start_matches("http://").to_string();
        let env = move |name: &str| match name {
            "CLOUD_DEPLOY_PROJECT" => Some("deploy-proj".to_string()),
            "GCE_METADATA_HOST" => Some(host.clone()),
            _ => None,
        };
        match Stackdriver::with_env(
            &crate::http::Clients::default(),
            &spec(&server.uri(), BTreeMap::new()),
            &env,
        ) {
            Ok(sd) => {
                assert_eq!(sd.is_online().await, Ok(()));
                assert_eq!(sd.run(MQL).await, Ok(0.25));
            }
            Err(e) => panic!("{e}"),
        }
    }

    #[tokio::test]
    async fn a_judges_range_appends_every_and_within_and_reads_every_page_of_series() {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path(
                "/computeMetadata/v1/instance/service-accounts/default/token",
            ))
            .respond_with(ResponseTemplate::new(200).set_body_string(
                r#"{"access_token":"ya29.m3t4","expires_in":3599,"token_type":"Bearer"}"#,
            ))
            .mount(&server)
            .await;
        let judged = "fetch k8s_container | metric 'kubernetes.io/container/restart_count' | filter resource.namespace_name == 'test' | group_by [resource.pod_name], sum(val())";
        // 1700000000 is 2023-11-14 22:13:20 UTC.
        let program =
            format!("{judged} | every 60s | within d'2023/11/14 22:13:20', d'2023/11/14 22:16:20'");
        let descriptor = r#""timeSeriesDescriptor":{"labelDescriptors":[{"key":"resource.pod_name"}],"pointDescriptors":[{"key":"value.restart_count","valueType":"INT64","metricKind":"GAUGE"}]}"#;
        Mock::given(method("POST"))
            .and(path("/v3/projects/deploy-proj/timeSeries:query"))
            .and(header("Authorization", "Bearer ya29.m3t4"))
            .and(body_json(json!({ "query": program })))
            .respond_with(ResponseTemplate::new(200).set_body_string(format!(
                r#"{{{descriptor},"timeSeriesData":[{{"labelValues":[{{"stringValue":"podinfo-canary-1"}}],"pointData":[{{"values":[{{"int64Value":"2"}}],"timeInterval":{{"startTime":"2023-11-14T22:15:20Z","endTime":"2023-11-14T22:16:20Z"}}}},{{"values":[{{"int64Value":"1"}}],"timeInterval":{{"startTime":"2023-11-14T22:13:20Z","endTime":"2023-11-14T22:14:20Z"}}}}]}}],"nextPageToken":"p2"}}"#
            )))
            .expect(1)
            .mount(&server)
            .await;
        Mock::given(method("POST"))
            .and(path("/v3/projects/deploy-proj/timeSeries:query"))
            .and(body_json(json!({ "query": program, "pageToken": "p2" })))
            .respond_with(ResponseTemplate::new(200).set_body_string(format!(
                r#"{{{descriptor},"timeSeriesData":[{{"labelValues":[{{"stringValue":"podinfo-primary-1"}}],"pointData":[{{"values":[{{"doubleValue":"NaN"}}],"timeInterval":{{"endTime":"2023-11-14T22:15:20Z"}}}},{{"values":[{{"doubleValue":0.5}}],"timeInterval":{{"endTime":"2023-11-14T22:14:20Z"}}}}]}}]}}"#
            )))
            .expect(1)
            .mount(&server)
            .await;
        let host = server.uri().trim_start_matches("http://").to_string();
        let env = move |name: &str| match name {
            "CLOUD_DEPLOY_PROJECT" => Some("deploy-proj".to_string()),
            "GCE_METADATA_HOST" => Some(host.clone()),
            _ => None,
        };
        let sd = match Stackdriver::with_env(
            &crate::http::Clients::default(),
            &spec(&server.uri(), BTreeMap::new()),
            &env,
        ) {
            Ok(sd) => sd,
            Err(e) => panic!("{e}"),
        };
        let pod = |p: &str| -> BTreeMap<String, String> {
            [("resource.pod_name".to_string(), p.to_string())].into()
        };
        assert_eq!(
            sd.query_range(
                judged,
                1_700_000_060.0,
                1_700_000_180.0,
                Duration::from_secs(60)
            )
            .await,
            Ok(vec![
                RangeSeries {
                    labels: pod("podinfo-canary-1"),
                    points: vec![(1_700_000_060.0, 1.0), (1_700_000_180.0, 2.0)],
                },
                RangeSeries {
                    labels: pod("podinfo-primary-1"),
                    points: vec![(1_700_000_060.0, 0.5)],
                },
            ])
        );
        // A judge's query with a time range of its own is refused before any call.
        match sd
            .query_range(
                MQL,
                1_700_000_060.0,
                1_700_000_180.0,
                Duration::from_secs(60),
            )
            .await
        {
            Err(MetricError::Failed(m)) => assert!(m.contains("remove `| within"), "{m}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn answers_without_a_value_are_no_values() {
        let read = |body: &str| first_value(body.as_bytes(), "E");
        assert!(matches!(
            read(r#"{"timeSeriesDescriptor":{}}"#),
            Err(MetricError::NoValues(_))
        ));
        assert!(matches!(
            read(r#"{"timeSeriesData":[{"pointData":[]}]}"#),
            Err(MetricError::NoValues(_))
        ));
        assert!(matches!(
            read(r#"{"timeSeriesData":[{"pointData":[{"values":[{"doubleValue":"NaN"}]}]}]}"#),
            Err(MetricError::NoValues(_))
        ));
        assert!(matches!(
            read(r#"{"timeSeriesData":[{"pointData":[{"values":[{"boolValue":true}]}]}]}"#),
            Err(MetricError::Failed(_))
        ));
    }

    #[test]
    fn keys_and_projects_are_checked_before_any_call() {
        let env = |_: &str| None;
        let make = |secret: &[(&str, &str)]| {
            let secret = secret
                .iter()
                .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
                .collect();
            Stackdriver::with_env(
                &crate::http::Clients::default(),
                &spec("https://m", secret),
                &env,
            )
        };
        let message = |r: Result<Stackdriver, MetricError>| match r {
            Err(MetricError::Failed(m)) => m,
            other => panic!("{other:?}"),
        };
        assert!(message(make(&[])).contains("stackdriver needs a project"));
        assert!(message(make(&[("serviceAccountKey", "{}")]))
            .contains("credentials do not contain project"));
        assert!(message(make(&[
            ("project", "p"),
            ("serviceAccountKey", "{\"type\":\"authorized_user\"}")
        ]))
        .contains("is a authorized_user credential"));
        assert!(
            message(make(&[("project", "a/b"), ("serviceAccountKey", "{}")]))
                .contains("is not a project id")
        );
        let shown = message(make(&[
            ("project", "p"),
            (
                "serviceAccountKey",
                r#"{"type":"service_account","private_key":"-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----","client_email":"e"}"#,
            ),
        ]));
        assert!(
            shown.contains("not an RSA key in PKCS#8") && !shown.contains("bm90"),
            "{shown}"
        );
    }
}
