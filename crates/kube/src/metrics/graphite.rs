//! The `graphite` provider, as Flagger queries Graphite's render API
//! (`pkg/metrics/providers/graphite.go`):
//!
//! - address: `spec.provider.address`, required (a path prefix is kept:
//!   `https://graphite.example.com/graphite`);
//! - credentials: without a `secretRef`, none; with one, its `username` and `password`, both
//!   required, sent as HTTP basic auth;
//! - a query: the render API's parameters as a query string (`target=...&from=-5min`), runs of
//!   whitespace collapsed to one space: `GET {address}/render?{query}&format=json`;
//! - its value: the **last** non-null datapoint over every target of the answer (a value may be a
//!   number or a numeric string), as Flagger reads it;
//! - no values: no target, or only null datapoints;
//! - online: the query `target=test` answers (no values is fine).
//!
//! For the statistical judge (`analysis.judge.provider`), a range query is the same render call
//! with `from` and `until` set to the judge's window (any the query sets are replaced): every
//! target of the answer, its labels from its `tags` (and `name`, the target), its non-null
//! datapoints. Judge queries aggregate per workload to the judge's step
//! (`summarize(sumSeries(...), '30s', 'sum')`).

use base64::Engine as _;
use futures::future::BoxFuture;
use serde_json::Value;

use super::api::{bucket_width, excerpt, json_of, range_window, Api, Call};
use super::provider::{MetricsProvider, ProviderSpec, RangeSeries};
use super::MetricError;

const RENDER_PATH: &str = "/render";

#[derive(Debug)]
pub(crate) struct Graphite {
    api: Api,
    endpoint: String,
}

impl Graphite {
    pub(crate) fn new(
        clients: &crate::http::Clients,
        spec: &ProviderSpec,
    ) -> Result<Graphite, MetricError> {
        let address = spec.address_or("");
        if address.is_empty() {
            return Err(MetricError::Failed(
                "graphite has no default address: set spec.provider.address (http(s)://host[:port][/prefix])"
                    .into(),
            ));
        }
        let credentials = if spec.secret.is_empty() {
            Vec::new()
        } else {
            let username = spec.secret_text("username", "a username")?;
            let password = spec.secret_text("password", "a password")?;
            let encoded =
                base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
            vec![("Authorization", format!("Basic {encoded}"))]
        };
        let api = Api::new(
            clients,
            "graphite",
            address,
            credentials,
            &spec.headers,
            spec.settings(),
        )?;
        Ok(Graphite {
            endpoint: api.endpoint(RENDER_PATH),
            api,
        })
    }

    /// The render call of `query`, without the parameters in `skip`.
    fn render(&self, query: &str, skip: &[&str]) -> Result<Call, MetricError> {
        let collapsed = query.split_whitespace().collect::<Vec<_>>().join(" ");
        let mut call = Call::get(RENDER_PATH);
        for (key, value) in url::form_urlencoded::parse(collapsed.as_bytes()) {
            if key != "format" && !skip.contains(&key.as_ref()) {
                call = call.param(&key, value.into_owned());
            }
        }
        if call.query.is_empty() {
            return Err(MetricError::Failed(format!(
                "graphite: the query {collapsed:?} has no render parameters; write it as target=...&from=..."
            )));
        }
        Ok(call.param("format", "json"))
    }

    async fn run(&self, query: &str) -> Result<f64, MetricError> {
        let body = self.api.call(&self.render(query, &[])?).await?;
        last_value(&body, &self.endpoint)
    }
}

/// Every target of a render answer, for the judge; `step` is the judge's, the bucket width
/// of a target with a single datapoint.
fn series_of(body: &[u8], endpoint: &str, step: f64) -> Result<Vec<RangeSeries>, MetricError> {
    let answer = json_of(body, endpoint, "Graphite's")?;
    let Some(targets) = answer.as_array().filter(|t| !t.is_empty()) else {
        return Err(MetricError::NoValues(
            "graphite: the query returned no target".into(),
        ));
    };
    Ok(targets
        .iter()
        .map(|t| {
            let mut labels: std::collections::BTreeMap<String, String> = t
                .get("tags")
                .and_then(Value::as_object)
                .map(|tags| {
                    tags.iter()
                        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                        .collect()
                })
                .unwrap_or_default();
            if let Some(name) = t.get("target").and_then(Value::as_str) {
                labels
                    .entry("name".into())
                    .or_insert_with(|| name.to_string());
            }
            let datapoints = t
                .get("datapoints")
                .and_then(Value::as_array)
                .map(Vec::as_slice)
                .unwrap_or_default();
            // Graphite labels a datapoint with its bucket's start; the judge, with its end.
            let width = bucket_width(datapoints.iter().filter_map(|p| p.get(1)?.as_f64()), step);
            let points = datapoints
                .iter()
                .filter_map(|p| {
                    let v = match p.get(0)? {
                        Value::Number(n) => n.as_f64(),
                        Value::String(s) => s.trim().parse().ok(),
                        _ => None,
                    }
                    .filter(|v: &f64| v.is_finite())?;
                    Some((p.get(1)?.as_f64()? + width, v))
                })
                .collect();
            RangeSeries { labels, points }
        })
        .collect())
}

/// The last non-null datapoint of every target of a render answer.
fn last_value(body: &[u8], endpoint: &str) -> Result<f64, MetricError> {
    let answer = json_of(body, endpoint, "Graphite's")?;
    let Some(targets) = answer.as_array() else {
        return Err(MetricError::Failed(format!(
            "{endpoint} answered something that is not a list of targets: {}",
            excerpt(body, 200)
        )));
    };
    let mut last = None;
    for target in targets {
        let points = target
            .get("datapoints")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        for point in points {
            let value = match point.get(0) {
                Some(Value::Null) | None => continue,
                Some(Value::Number(n)) => n.as_f64(),
                Some(Value::String(s)) => s.trim().parse::<f64>().ok(),
                Some(_) => None,
            };
            match value {
                Some(v) => last = Some(v),
                None => {
                    return Err(MetricError::Failed(format!(
                        "{endpoint} answered a datapoint that is not a number: {point}"
                    )))
                }
            }
        }
    }
    last.filter(|v| v.is_finite()).ok_or_else(|| {
        MetricError::NoValues("graphite: the query returned no datapoint with a value".into())
    })
}

impl MetricsProvider for Graphite {
    fn kind(&self) -> &'static str {
        "graphite"
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
        step: std::time::Duration,
    ) -> BoxFuture<'a, Result<Vec<RangeSeries>, MetricError>> {
        Box::pin(async move {
            let (from, until) = range_window(start, end, step);
            let call = self
                .render(query, &["from", "until"])?
                .param("from", from.to_string())
                .param("until", until.to_string());
            let body = self.api.call(&call).await?;
            series_of(&body, &self.endpoint, step.as_secs_f64())
        })
    }

    fn is_online(&self) -> BoxFuture<'_, Result<(), MetricError>> {
        Box::pin(async move {
            match self.run("target=test").await {
                Ok(_) | Err(MetricError::NoValues(_)) => Ok(()),
                Err(e) => Err(self.api.unavailable(&e)),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::servers::{self, Server};
    use std::time::Duration;
    use wiremock::matchers::{header, method, path, query_param};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    fn spec(address: &str, secret: &[(&str, &str)]) -> ProviderSpec {
        ProviderSpec::for_test("graphite", address, secret)
    }

    fn make(spec: &ProviderSpec) -> Graphite {
        match Graphite::new(&crate::http::Clients::default(), spec) {
            Ok(g) => g,
            Err(e) => panic!("{e}"),
        }
    }

    #[tokio::test]
    async fn a_query_is_the_render_apis_parameters_and_the_last_value_is_read() {
        let server = MockServer::start().await;
        // Flagger's documented template, as YAML folds it.
        let query = "target=summarize(\n  asPercent(\n    sumSeries(stats.timers.httpServerRequests.app.podinfo.exception.*.method.*.outcome.SERVER_ERROR.status.5*.uri.*.count),\n    sumSeries(stats.timers.httpServerRequests.app.podinfo.exception.*.method.*.outcome.*.status.*.uri.*.count)\n  ),\n  '1min', 'avg'\n)&from=-2min";
        Mock::given(method("GET"))
            .and(path("/graphite/render"))
            .and(query_param(
                "target",
                "summarize( asPercent( sumSeries(stats.timers.httpServerRequests.app.podinfo.exception.*.method.*.outcome.SERVER_ERROR.status.5*.uri.*.count), sumSeries(stats.timers.httpServerRequests.app.podinfo.exception.*.method.*.outcome.*.status.*.uri.*.count) ), '1min', 'avg' )",
            ))
            .and(query_param("from", "-2min"))
            .and(query_param("format", "json"))
            .and(header("Authorization", "Basic dXNlcjpwYXNz"))
            .respond_with(ResponseTemplate::new(200).set_body_string(
                r#"[{"target":"summarize(...)","tags":{"name":"x"},"datapoints":[[1.5,1700000000],[2.5,1700000060],[null,1700000120]]},{"target":"other","datapoints":[["3.25",1700000000],[null,1700000060]]}]"#,
            ))
            .mount(&server)
            .await;
        let g = make(&spec(
            &format!("{}/graphite/", server.uri()),
            &[("username", "user"), ("password", "pass\n")],
        ));
        assert_eq!(g.run(query).await, Ok(3.25));
    }

    #[test]
    fn answers_without_a_value_are_no_values() {
        let read = |body: &str| last_value(body.as_bytes(), "E");
        assert!(matches!(read("[]"), Err(MetricError::NoValues(_))));
        assert!(matches!(
            read(r#"[{"target":"t","datapoints":[[null,1],[null,2]]}]"#),
            Err(MetricError::NoValues(_))
        ));
        assert_eq!(
            read(r#"[{"target":"t","datapoints":[[0,1],[null,2]]}]"#),
            Ok(0.0)
        );
        assert!(matches!(
            read(r#"{"error":"x"}"#),
            Err(MetricError::Failed(_))
        ));
        assert!(matches!(
            read(r#"[{"target":"t","datapoints":[["up",1]]}]"#),
            Err(MetricError::Failed(_))
        ));
    }

    #[tokio::test]
    async fn online_takes_no_values_and_errors_carry_graphites_text() {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path("/render"))
            .and(query_param("target", "test"))
            .respond_with(ResponseTemplate::new(200).set_body_string("[]"))
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .and(path("/render"))
            .respond_with(
                ResponseTemplate::new(400).set_body_string("Invalid function \"sumSerie\""),
            )
            .mount(&server)
            .await;
        let g = make(&spec(&server.uri(), &[]));
        assert_eq!(g.is_online().await, Ok(()));
        match g.run("target=sumSerie(a.b)").await {
            Err(MetricError::Failed(m)) => assert!(
                m.ends_with("answered 400 Bad Request: Invalid function \"sumSerie\""),
                "{m}"
            ),
            other => panic!("{other:?}"),
        }
        assert!(
            matches!(g.run("   ").await, Err(MetricError::Failed(m)) if m.contains("no render parameters"))
        );
    }

    fn run(program: &str, args: &[String]) {
        match std::process::Command::new(program).args(args).output() {
            Ok(o) if o.status.success() => {}
            Ok(o) => panic!("{program}: {}", String::from_utf8_lossy(&o.stderr)),
            Err(e) => panic!(
                "cannot run {program} ({e}): this test runs a real Graphite; install it with `apt-get install graphite-web python3-whisper` (CI does)"
            ),
        }
    }

    /// Writes `points` (seconds ago, value) into the whisper file of `metric`.
    fn whisper(g: &Server, metric: &str, points: &[(u64, f64)]) {
        let file = g
            .dir
            .path()
            .join("whisper")
            .join(format!("{}.wsp", metric.replace('.', "/")));
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent).unwrap_or_else(|e| panic!("{e}"));
        }
        let file = file.display().to_string();
        run("whisper-create", &[file.clone(), "10s:1h".into()]);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        let mut args = vec![file];
        args.extend(points.iter().map(|(ago, v)| format!("{}:{v}", now - ago)));
        run("whisper-update", &args);
    }

    /// A real Graphite render API: Debian's graphite-web (Django's server, Debian's python3,
    /// which has it) over whisper files in a temporary directory.
    async fn start_graphite_web() -> Server {
        let dir = servers::directory("aviary-graphite-");
        let d = dir.path().display();
        let settings = format!(
            "from graphite.settings import *  # noqa\nSTORAGE_DIR = '{d}'\nWHISPER_DIR = '{d}/whisper'\nSTANDARD_DIRS = [WHISPER_DIR]\nLOG_DIR = '{d}'\nINDEX_FILE = '{d}/index'\nDATABASES = {{'default': {{'ENGINE': 'django.db.backends.sqlite3', 'NAME': '{d}/graphite.db'}}}}\nSECRET_KEY = 'aviary-test'\nALLOWED_HOSTS = ['127.0.0.1']\n"
        );
        std::fs::write(dir.path().join("aviary_graphite_settings.py"), settings)
            .unwrap_or_else(|e| panic!("{e}"));
        std::fs::create_dir_all(dir.path().join("whisper")).unwrap_or_else(|e| panic!("{e}"));
        let port = servers::free_port();
        let mut command = std::process::Command::new("/usr/bin/python3");
        command
            .args([
                "-m",
                "django",
                "runserver",
                &format!("127.0.0.1:{port}"),
                "--noreload",
            ])
            .env("PYTHONPATH", dir.path())
            .env("DJANGO_SETTINGS_MODULE", "aviary_graphite_settings")
            .current_dir(dir.path());
        let url = format!("http://127.0.0.1:{port}");
        let install = "install it with `apt-get install graphite-web python3-whisper`";
        servers::start(
            command,
            dir,
            url,
            "/render?target=ready&format=json",
            install,
        )
        .await
    }

    #[tokio::test]
    async fn queries_against_a_real_graphite() {
        let g = start_graphite_web().await;
        whisper(&g, "podinfo.errors", &[(30, 2.5), (20, 4.0)]);
        whisper(&g, "podinfo.requests", &[(30, 100.0), (20, 200.0)]);
        let p = make(&spec(&g.url, &[]));
        assert_eq!(p.is_online().await, Ok(()));
        // The last non-null datapoint: 4 errors of 200 requests, 20 s ago.
        let query = "target=asPercent(\n  sumSeries(podinfo.errors),\n  sumSeries(podinfo.requests)\n)&from=-2min";
        assert_eq!(p.run(query).await, Ok(2.0));
        assert_eq!(p.run("target=podinfo.errors&from=-2min").await, Ok(4.0));
        assert!(matches!(
            p.run("target=podinfo.nothing&from=-2min").await,
            Err(MetricError::NoValues(_))
        ));
        // The judge's range query: every target, over the window it gives.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or_default();
        let series = p
            .query_range(
                "target=podinfo.*&from=-1d",
                now - 120.0,
                now,
                Duration::from_secs(10),
            )
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let mut found: Vec<(String, Vec<f64>)> = series
            .iter()
            .map(|s| {
                let name = s.labels.get("name").cloned().unwrap_or_default();
                (name, s.points.iter().map(|(_, v)| *v).collect())
            })
            .collect();
        found.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            found,
            vec![
                ("podinfo.errors".to_string(), vec![2.5, 4.0]),
                ("podinfo.requests".to_string(), vec![100.0, 200.0]),
            ]
        );
    }

    #[test]
    fn a_secret_needs_both_parts_and_the_address_is_required() {
        match Graphite::new(
            &crate::http::Clients::default(),
            &spec("http://graphite", &[("username", "u")]),
        ) {
            Err(MetricError::Failed(m)) => {
                assert_eq!(
                    m,
                    "graphite credentials do not contain password (a password)"
                )
            }
            other => panic!("{other:?}"),
        }
        let mut s = spec("", &[]);
        s.address = None;
        assert!(Graphite::new(&crate::http::Clients::default(), &s).is_err());
    }
}
