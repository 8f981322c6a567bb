//! The `cloudwatch` provider: Amazon CloudWatch's `GetMetricData`, as Flagger queries it
//! (`pkg/metrics/providers/cloudwatch.go`, through the AWS SDK for Go):
//!
//! - region: `spec.provider.region`, required;
//! - address: `spec.provider.address`, else `https://monitoring.{region}.amazonaws.com`;
//! - credentials: as AWS SDKs find them (Flagger reads no Secret for CloudWatch): the environment's
//!   `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and `AWS_SESSION_TOKEN`, else a web identity
//!   (`AWS_ROLE_ARN` and `AWS_WEB_IDENTITY_TOKEN_FILE`, EKS's IAM roles for service accounts:
//!   STS `AssumeRoleWithWebIdentity` at `https://sts.{region}.amazonaws.com`, or
//!   `AWS_ENDPOINT_URL_STS`); every request is signed with Signature Version 4 (`aws-sigv4`, the
//!   AWS SDK for Rust's signer);
//! - a query: the template's text is the JSON list of `MetricDataQuery` objects (AWS's field
//!   names, as in Flagger's docs), sent as `GetMetricData` in the AWS JSON 1.0 protocol with
//!   `StartTime` ten metric intervals before `EndTime` (now) and `MaxDatapoints` 20;
//! - its value: the first value of the first result (results come newest first);
//! - no values: no result, or a first result without values;
//! - online: `GetMetricData` without queries answers 400 (the request reached CloudWatch and its
//!   signature was accepted), as Flagger checks it.
//!
//! For the statistical judge (`analysis.judge.provider`), a range query is `GetMetricData` over
//! the judge's window (no datapoint cap, oldest first): every returned result is a series,
//! labelled by its `Id` and `Label`, each value at the end of its period.

use std::time::{Duration, SystemTime};

use futures::future::BoxFuture;
use serde_json::{json, Value};

use super::api::{
    bucket_width, excerpt, json_of, number, range_window, unix_now_ms, Api, Call, MAX_BODY,
};
use super::provider::{MetricsProvider, ProviderSpec, RangeSeries};
use super::MetricError;

/// The query window, in metric intervals (Flagger's `cloudWatchStartDeltaMultiplierOnMetricInterval`).
const WINDOW_INTERVALS: u32 = 10;
const TARGET: &str = "GraniteServiceVersion20100801.GetMetricData";
const CONTENT_TYPE: &str = "application/x-amz-json-1.0";

/// Keys to sign with.
#[derive(Clone)]
struct Keys {
    access_key_id: String,
    secret_access_key: String,
    session_token: Option<String>,
}

/// Where the keys come from.
#[derive(Clone)]
enum KeySource {
    Static(Keys),
    /// STS `AssumeRoleWithWebIdentity` with the token in `token_file`.
    WebIdentity {
        role_arn: String,
        token_file: String,
        sts: String,
    },
}

impl std::fmt::Debug for KeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeySource::Static(_) => f.write_str("Static(***)"),
            KeySource::WebIdentity { role_arn, sts, .. } => {
                write!(f, "WebIdentity({role_arn} at {sts})")
            }
        }
    }
}

#[derive(Debug)]
pub(crate) struct CloudWatch {
    api: Api,
    http: reqwest::Client,
    region: String,
    keys: KeySource,
    endpoint: String,
    window: Duration,
    timeout: Duration,
}

impl CloudWatch {
    pub(crate) fn new(
        clients: &crate::http::Clients,
        spec: &ProviderSpec,
    ) -> Result<CloudWatch, MetricError> {
        CloudWatch::with_env(clients, spec, &|name| std::env::var(name).ok())
    }

    /// [`CloudWatch::new`], reading the environment through `env`.
    fn with_env(
        clients: &crate::http::Clients,
        spec: &ProviderSpec,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<CloudWatch, MetricError> {
        let var = |name: &str| {
            env(name)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let region = spec
            .region
            .as_deref()
            .map(str::trim)
            .filter(|r| !r.is_empty())
            .ok_or_else(|| {
                MetricError::Failed(
                    "cloudwatch needs a region: set spec.provider.region (e.g. us-east-1)".into(),
                )
            })?
            .to_string();
        if !region
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            return Err(MetricError::Failed(format!(
                "cloudwatch: {region:?} is not an AWS region"
            )));
        }
        let keys = match (var("AWS_ACCESS_KEY_ID"), var("AWS_SECRET_ACCESS_KEY")) {
            (Some(access_key_id), Some(secret_access_key)) => KeySource::Static(Keys {
                access_key_id,
                secret_access_key,
                session_token: var("AWS_SESSION_TOKEN"),
            }),
            _ => match (var("AWS_ROLE_ARN"), var("AWS_WEB_IDENTITY_TOKEN_FILE")) {
                (Some(role_arn), Some(token_file)) => KeySource::WebIdentity {
                    role_arn,
                    token_file,
                    sts: var("AWS_ENDPOINT_URL_STS")
                        .unwrap_or_else(|| format!("https://sts.{region}.amazonaws.com")),
                },
                _ => {
                    return Err(MetricError::Failed(
                        "cloudwatch needs AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN), or run with an IAM role for the service account (AWS_ROLE_ARN and AWS_WEB_IDENTITY_TOKEN_FILE)"
                            .into(),
                    ))
                }
            },
        };
        let default = format!("https://monitoring.{region}.amazonaws.com");
        let api = Api::new(
            clients,
            "cloudwatch",
            spec.address_or(&default),
            Vec::new(),
            &spec.headers,
            spec.settings(),
        )?;
        let http = clients
            .get(spec.insecure_skip_verify)
            .map_err(|e| MetricError::Failed(format!("cloudwatch: {e}")))?;
        Ok(CloudWatch {
            endpoint: api.endpoint("/"),
            api,
            http,
            region,
            keys,
            window: spec.interval * WINDOW_INTERVALS,
            timeout: spec.timeout,
        })
    }

    /// The keys to sign with: the static ones, or a web identity's, asked of STS.
    async fn keys(&self) -> Result<Keys, MetricError> {
        let (role_arn, token_file, sts) = match &self.keys {
            KeySource::Static(keys) => return Ok(keys.clone()),
            KeySource::WebIdentity {
                role_arn,
                token_file,
                sts,
            } => (role_arn, token_file, sts),
        };
        let failed = |why: String| {
            MetricError::Failed(format!(
                "cloudwatch: no credentials for role {role_arn} from {sts}: {why}"
            ))
        };
        let token = std::fs::read_to_string(token_file).map_err(|e| {
            failed(format!(
                "cannot read AWS_WEB_IDENTITY_TOKEN_FILE {token_file}: {e}"
            ))
        })?;
        let form: String = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("Action", "AssumeRoleWithWebIdentity")
            .append_pair("Version", "2011-06-15")
            .append_pair("RoleArn", role_arn)
            .append_pair("RoleSessionName", "aviary")
            .append_pair("WebIdentityToken", token.trim())
            .finish();
        let response = self
            .http
            .post(sts.as_str())
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(form)
            .timeout(self.timeout)
            .send()
            .await
            .map_err(|e| failed(crate::http::describe(&e)))?;
        let status = response.status();
        let body = crate::http::read_capped(crate::http::body_stream(response), MAX_BODY)
            .await
            .map_err(|_| failed("the answer could not be read".into()))?;
        let text = String::from_utf8_lossy(&body);
        if !status.is_success() {
            let message = xml_text(&text, "Message").unwrap_or_else(|| excerpt(&body, 200));
            return Err(failed(format!("{status}: {message}")));
        }
        let field = |tag: &str| {
            xml_text(&text, tag).ok_or_else(|| failed(format!("the answer has no {tag}")))
        };
        Ok(Keys {
            access_key_id: field("AccessKeyId")?,
            secret_access_key: field("SecretAccessKey")?,
            session_token: Some(field("SessionToken")?),
        })
    }

    /// `GetMetricData` with `queries`, signed.
    async fn get_metric_data(&self, queries: Value, now: u64) -> Result<Vec<u8>, MetricError> {
        let start = now.saturating_sub(self.window.as_secs());
        let body = json!({
            "StartTime": start,
            "EndTime": now,
            "MaxDatapoints": 20,
            "MetricDataQueries": queries,
        });
        self.signed(body).await
    }

    /// A signed `GetMetricData` call with `body`.
    async fn signed(&self, body: Value) -> Result<Vec<u8>, MetricError> {
        let body = body.to_string().into_bytes();
        let keys = self.keys().await?;
        let call = Call::post("/", CONTENT_TYPE, body).header("X-Amz-Target", TARGET);
        let call = self.sign(call, &keys)?;
        self.api.call(&call).await
    }

    /// `call` with Signature Version 4's headers (`Authorization`, `X-Amz-Date`, and the session
    /// token if any).
    fn sign(&self, call: Call, keys: &Keys) -> Result<Call, MetricError> {
        use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
        let failed = |e: &dyn std::fmt::Display| {
            MetricError::Failed(format!("cloudwatch: cannot sign the request: {e}"))
        };
        let url = self.api.url_of(&call);
        let identity = aws_credential_types::Credentials::new(
            keys.access_key_id.clone(),
            keys.secret_access_key.clone(),
            keys.session_token.clone(),
            None,
            "aviary",
        )
        .into();
        let params = aws_sigv4::sign::v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name("monitoring")
            .time(SystemTime::now())
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| failed(&e))?
            .into();
        let mut headers: Vec<(&str, &str)> = call
            .headers
            .iter()
            .map(|(name, value, _)| (name.as_str(), value.as_str()))
            .collect();
        let content_type = call.body.as_ref().map(|(ct, _)| *ct).unwrap_or_default();
        headers.push(("content-type", content_type));
        let body: &[u8] = call
            .body
            .as_ref()
            .map(|(_, b)| b.as_slice())
            .unwrap_or_default();
        let signable = SignableRequest::new(
            call.method.as_str(),
            url.as_str(),
            headers.into_iter(),
            SignableBody::Bytes(body),
        )
        .map_err(|e| failed(&e))?;
        let (instructions, _) = sign(signable, &params)
            .map_err(|e| failed(&e))?
            .into_parts();
        let signed: Vec<(String, String)> = instructions
            .headers()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect();
        Ok(signed
            .into_iter()
            .fold(call, |call, (name, value)| call.secret_header(&name, value)))
    }

    async fn run(&self, query: &str, now: u64) -> Result<f64, MetricError> {
        let queries = queries_of(query)?;
        let body = self.get_metric_data(queries, now).await?;
        first_value(&body, &self.endpoint)
    }
}

/// The template's JSON list of `MetricDataQuery` objects.
fn queries_of(query: &str) -> Result<Value, MetricError> {
    let queries: Value = serde_json::from_str(query.trim()).map_err(|e| {
        MetricError::Failed(format!(
            "cloudwatch: the query is not a JSON list of MetricDataQuery objects: {e}"
        ))
    })?;
    if !queries.is_array() {
        return Err(MetricError::Failed(
            "cloudwatch: the query must be a JSON list of MetricDataQuery objects ([{\"Id\": ..., \"MetricStat\": ...}])"
                .into(),
        ));
    }
    Ok(queries)
}

/// Every returned result of a `GetMetricData` answer as a series, for the judge: labelled by its
/// `Id` and `Label`, each value at the end of its period (CloudWatch gives the period's start;
/// the period is the gap between timestamps, or `step` for a single one).
fn series_of(body: &[u8], endpoint: &str, step: f64) -> Result<Vec<RangeSeries>, MetricError> {
    let answer = json_of(body, endpoint, "CloudWatch's")?;
    let Some(results) = answer.get("MetricDataResults").and_then(Value::as_array) else {
        return Err(MetricError::Failed(format!(
            "{endpoint} answered without MetricDataResults: {}",
            excerpt(body, 200)
        )));
    };
    if results.is_empty() {
        return Err(MetricError::NoValues(
            "cloudwatch: the query returned no result".into(),
        ));
    }
    Ok(results
        .iter()
        .map(|r| {
            let mut labels = std::collections::BTreeMap::new();
            for key in ["Id", "Label"] {
                if let Some(v) = r.get(key).and_then(Value::as_str) {
                    labels.insert(key.to_lowercase(), v.to_string());
                }
            }
            let times: Vec<f64> = r
                .get("Timestamps")
                .and_then(Value::as_array)
                .map(|t| t.iter().filter_map(Value::as_f64).collect())
                .unwrap_or_default();
            let values: Vec<Option<f64>> = r
                .get("Values")
                .and_then(Value::as_array)
                .map(|v| v.iter().map(Value::as_f64).collect())
                .unwrap_or_default();
            let width = bucket_width(times.iter().copied(), step);
            let mut points: Vec<(f64, f64)> = times
                .iter()
                .zip(values)
                .filter_map(|(at, v)| Some((at + width, v.filter(|v| v.is_finite())?)))
                .collect();
            // Newest first in CloudWatch's answer; in time order for the judge.
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
            RangeSeries { labels, points }
        })
        .collect())
}

/// The text of the first `<tag>` element of a small XML document (STS's answers).
fn xml_text(xml: &str, tag: &str) -> Option<String> {
    let open = format!("<{tag}>");
    let start = xml.find(&open)? + open.len();
    let end = xml[start..].find(&format!("</{tag}>"))? + start;
    let text = xml[start..end]
        .replace("&amp;", "&")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'");
    Some(text.trim().to_string())
}

/// The first value of the first `MetricDataResults` entry.
fn first_value(body: &[u8], endpoint: &str) -> Result<f64, MetricError> {
    let answer = json_of(body, endpoint, "CloudWatch's")?;
    let no_values = |why: &str| MetricError::NoValues(format!("cloudwatch: {why}"));
    let Some(results) = answer.get("MetricDataResults").and_then(Value::as_array) else {
        return Err(MetricError::Failed(format!(
            "{endpoint} answered without MetricDataResults: {}",
            excerpt(body, 200)
        )));
    };
    let first = results
        .first()
        .ok_or_else(|| no_values("the query returned no result"))?;
    let value = first
        .get("Values")
        .and_then(Value::as_array)
        .and_then(|v| v.first());
    number(
        value,
        "cloudwatch",
        "the first result's first value",
        endpoint,
    )
}

impl MetricsProvider for CloudWatch {
    fn kind(&self) -> &'static str {
        "cloudwatch"
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
            let (from, until) = range_window(start, end, step);
            let body = json!({
                "StartTime": from,
                "EndTime": until,
                "MetricDataQueries": queries_of(query)?,
                "ScanBy": "TimestampAscending",
            });
            let answer = self.signed(body).await?;
            series_of(&answer, &self.endpoint, step.as_secs_f64())
        })
    }

    fn is_online(&self) -> BoxFuture<'_, Result<(), MetricError>> {
        Box::pin(async move {
            match self.get_metric_data(json!([]), unix_now_ms() / 1000).await {
                Ok(_) => Ok(()),
                // Refused as a request without queries: CloudWatch answered and took the
                // signature.
                Err(MetricError::Failed(m)) if m.contains(" answered 400 ") => Ok(()),
                Err(e) => Err(self.api.unavailable(&e)),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::servers::{self, Server};
    use wiremock::matchers::{header, header_regex, method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    fn spec(address: &str, region: &str) -> ProviderSpec {
        ProviderSpec {
            region: Some(region.to_string()),
            ..ProviderSpec::for_test("cloudwatch", address, &[])
        }
    }

    fn static_keys(name: &str) -> Option<String> {
        match name {
            "AWS_ACCESS_KEY_ID" => Some("AKIDEXAMPLE".into()),
            "AWS_SECRET_ACCESS_KEY" => Some("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into()),
            "AWS_SESSION_TOKEN" => Some("s3ss10n".into()),
            _ => None,
        }
    }

    /// Flagger's documented CloudWatch template: an expression over two metrics.
    const QUERY: &str = r#"[
      {"Id": "e1", "Expression": "m1 / m2", "Label": "ErrorRate"},
      {"Id": "m1", "MetricStat": {"Metric": {"Namespace": "MyKubernetesCluster", "MetricName": "ErrorCount",
        "Dimensions": [{"Name": "appName", "Value": "podinfo.test"}]}, "Period": 60, "Stat": "Sum", "Unit": "Count"}, "ReturnData": false},
      {"Id": "m2", "MetricStat": {"Metric": {"Namespace": "MyKubernetesCluster", "MetricName": "RequestCount",
        "Dimensions": [{"Name": "appName", "Value": "podinfo.test"}]}, "Period": 60, "Stat": "Sum", "Unit": "Count"}, "ReturnData": false}
    ]"#;

    #[tokio::test]
    async fn get_metric_data_is_signed_and_carries_the_queries_over_ten_intervals() {
        let server = MockServer::start().await;
        let queries: Value = serde_json::from_str(QUERY).unwrap_or_default();
        Mock::given(method("POST"))
            .and(path("/"))
            .and(header("X-Amz-Target", TARGET))
            .and(header("Content-Type", CONTENT_TYPE))
            .and(header("X-Amz-Security-Token", "s3ss10n"))
            .and(header_regex(
                "Authorization",
                r"^AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/\d{8}/eu-west-1/monitoring/aws4_request, SignedHeaders=[a-z0-9;-]*content-type[a-z0-9;-]*x-amz-target[a-z0-9;-]*, Signature=[0-9a-f]{64}$",
            ))
            .and(wiremock::matchers::body_json(json!({
                "StartTime": 1_700_000_000u64,
                "EndTime": 1_700_000_600u64,
                "MaxDatapoints": 20,
                "MetricDataQueries": queries,
            })))
            .respond_with(ResponseTemplate::new(200).set_body_string(
                r#"{"MetricDataResults":[{"Id":"e1","Label":"ErrorRate","Timestamps":[1700000540,1700000480],"Values":[0.025,0.5],"StatusCode":"Complete"}],"Messages":[]}"#,
            ))
            .mount(&server)
            .await;
        match CloudWatch::with_env(
            &crate::http::Clients::default(),
            &spec(&server.uri(), "eu-west-1"),
            &static_keys,
        ) {
            Ok(cw) => assert_eq!(cw.run(QUERY, 1_700_000_600).await, Ok(0.025)),
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn answers_without_a_value_are_no_values() {
        let read = |body: &str| first_value(body.as_bytes(), "E");
        assert!(matches!(
            read(r#"{"MetricDataResults":[]}"#),
            Err(MetricError::NoValues(_))
        ));
        assert!(matches!(
            read(r#"{"MetricDataResults":[{"Id":"e1","Values":[],"Timestamps":[]}]}"#),
            Err(MetricError::NoValues(_))
        ));
        assert!(matches!(
            read(r#"{"__type":"x"}"#),
            Err(MetricError::Failed(_))
        ));
    }

    #[test]
    fn the_region_the_credentials_and_the_query_are_checked() {
        let none = |_: &str| None;
        let make = |s: &ProviderSpec, env: &dyn Fn(&str) -> Option<String>| {
            CloudWatch::with_env(&crate::http::Clients::default(), s, env)
        };
        let mut s = spec("http://127.0.0.1:1", "us-east-1");
        assert!(
            matches!(make(&s, &none), Err(MetricError::Failed(m)) if m.contains("needs AWS credentials"))
        );
        s.region = None;
        assert!(
            matches!(make(&s, &static_keys), Err(MetricError::Failed(m)) if m.contains("set spec.provider.region"))
        );
        s.region = Some("us-east-1/../x".into());
        assert!(
            matches!(make(&s, &static_keys), Err(MetricError::Failed(m)) if m.contains("is not an AWS region"))
        );
        s.region = Some("us-east-1".into());
        s.address = None;
        match make(&s, &static_keys) {
            Ok(cw) => {
                assert_eq!(cw.endpoint(), "https://monitoring.us-east-1.amazonaws.com/");
                let shown = format!("{cw:?}");
                assert!(
                    !shown.contains("EXAMPLEKEY") && !shown.contains("s3ss10n"),
                    "{shown}"
                );
            }
            Err(e) => panic!("{e}"),
        }
    }

    /// A local AWS API (PyPI's `moto[server]`) on loopback.
    async fn start_moto() -> Server {
        let port = servers::free_port();
        let mut command = std::process::Command::new("moto_server");
        command.args(["-H", "127.0.0.1", "-p", &port.to_string()]);
        let url = format!("http://127.0.0.1:{port}");
        let install = "install it with `pip install 'moto[server]'`";
        servers::start(
            command,
            servers::directory("aviary-moto-"),
            url,
            "/moto-api/",
            install,
        )
        .await
    }

    /// `PutMetricData` of `value` now, in the query protocol (moto does not check signatures
    /// on writes the test makes itself).
    async fn put(moto: &Server, metric: &str, deployment: &str, value: f64) {
        let form: String = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("Action", "PutMetricData")
            .append_pair("Version", "2010-08-01")
            .append_pair("Namespace", "App")
            .append_pair("MetricData.member.1.MetricName", metric)
            .append_pair("MetricData.member.1.Value", &value.to_string())
            .append_pair("MetricData.member.1.Dimensions.member.1.Name", "Deployment")
            .append_pair("MetricData.member.1.Dimensions.member.1.Value", deployment)
            .finish();
        let r = { crate::http::install_crypto_provider(); reqwest::Client::new() }
            .post(format!("{}/", moto.url))
            .header("Content-Type", "application/x-www-form-urlencoded")
            .header(
                "Authorization",
                "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261205/us-east-1/monitoring/aws4_request, SignedHeaders=host, Signature=0",
            )
            .body(form)
            .send()
            .await;
        assert!(r.is_ok_and(|r| r.status().is_success()));
    }

    #[tokio::test]
    async fn get_metric_data_against_moto_with_static_keys_and_a_web_identity() {
        let moto = start_moto().await;
        put(&moto, "Errors", "podinfo-canary", 3.0).await;
        put(&moto, "Requests", "podinfo-canary", 200.0).await;
        let plain = r#"[{"Id": "errors", "MetricStat": {"Metric": {"Namespace": "App", "MetricName": "Errors",
            "Dimensions": [{"Name": "Deployment", "Value": "podinfo-canary"}]}, "Period": 60, "Stat": "Sum"}}]"#;
        // Points land at the second they are put: ask up to a minute ahead.
        let later = unix_now_ms() / 1000 + 60;
        let cw = CloudWatch::with_env(
            &crate::http::Clients::default(),
            &spec(&moto.url, "us-east-1"),
            &static_keys,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(cw.is_online().await, Ok(()));
        assert_eq!(cw.run(plain, later).await, Ok(3.0));
        // (moto does not evaluate metric math: an expression's request is checked against
        // the documented shape in the test above.)
        // The judge's range query: the same data as a series, over the window it gives.
        let series = cw
            .query_range(
                plain,
                (later - 660) as f64,
                later as f64,
                Duration::from_secs(60),
            )
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let values: Vec<f64> = series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.1))
            .collect();
        assert_eq!(values, vec![3.0]);
        let nothing = plain.replace("podinfo-canary", "other");
        assert!(matches!(
            cw.run(&nothing, later).await,
            Err(MetricError::NoValues(_))
        ));

        // EKS's IAM roles for service accounts: keys from STS for the web identity token.
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let token_file = dir.path().join("token");
        std::fs::write(&token_file, "eyJhbGciOiJSUzI1NiJ9.e30.c2ln")
            .unwrap_or_else(|e| panic!("{e}"));
        let token_file = token_file.display().to_string();
        let sts = moto.url.clone();
        let irsa = move |name: &str| match name {
            "AWS_ROLE_ARN" => Some("arn:aws:iam::123456789012:role/aviary".to_string()),
            "AWS_WEB_IDENTITY_TOKEN_FILE" => Some(token_file.clone()),
            "AWS_ENDPOINT_URL_STS" => Some(sts.clone()),
            _ => None,
        };
        let cw = CloudWatch::with_env(
            &crate::http::Clients::default(),
            &spec(&moto.url, "us-east-1"),
            &irsa,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        match cw.keys().await {
            Ok(keys) => assert!(keys.session_token.is_some_and(|t| !t.is_empty())),
            Err(e) => panic!("{e}"),
        }
        assert_eq!(cw.run(plain, later).await, Ok(3.0));
    }

    #[test]
    fn results_are_series_for_the_judge_at_the_end_of_each_period() {
        let body = r#"{"MetricDataResults":[{"Id":"canary","Label":"Errors","Timestamps":[1700000120,1700000060,1700000000],"Values":[3.0,1.0,0.0],"StatusCode":"Complete"},{"Id":"primary","Label":"Errors","Timestamps":[1700000000],"Values":[2.0],"StatusCode":"Complete"}]}"#;
        match series_of(body.as_bytes(), "E", 30.0) {
            Ok(series) => {
                assert_eq!(series.len(), 2);
                assert_eq!(
                    series[0].labels.get("id").map(String::as_str),
                    Some("canary")
                );
                assert_eq!(
                    series[0].points,
                    vec![
                        (1_700_000_060.0, 0.0),
                        (1_700_000_120.0, 1.0),
                        (1_700_000_180.0, 3.0)
                    ]
                );
                // A single period: as wide as the judge's step.
                assert_eq!(series[1].points, vec![(1_700_000_030.0, 2.0)]);
            }
            Err(e) => panic!("{e}"),
        }
        assert!(matches!(
            series_of(br#"{"MetricDataResults":[]}"#, "E", 30.0),
            Err(MetricError::NoValues(_))
        ));
    }

    #[test]
    fn xml_fields_are_read_from_sts_answers() {
        let xml = "<AssumeRoleWithWebIdentityResponse><AssumeRoleWithWebIdentityResult><Credentials><AccessKeyId>ASIA1</AccessKeyId><SecretAccessKey>s&amp;k</SecretAccessKey><SessionToken>tok</SessionToken></Credentials></AssumeRoleWithWebIdentityResult></AssumeRoleWithWebIdentityResponse>";
        assert_eq!(xml_text(xml, "AccessKeyId").as_deref(), Some("ASIA1"));
        assert_eq!(xml_text(xml, "SecretAccessKey").as_deref(), Some("s&k"));
        assert_eq!(xml_text(xml, "Expiration"), None);
    }
}
