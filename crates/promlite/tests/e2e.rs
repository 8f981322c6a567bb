//! End to end: promlite scraping two tiny exposition servers (and one dead target) every
//! 200 ms, queried over HTTP like aviary's Prometheus client does.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use promlite::{Config, Promlite, Target};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A server answering every request with `body(seconds since it started)`.
async fn exposition_server(body: impl Fn(f64) -> String + Send + Sync + 'static) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let started = Instant::now();
    let body = Arc::new(body);
    tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = listener.accept().await else {
                return;
            };
            let body = Arc::clone(&body);
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let text = body(started.elapsed().as_secs_f64());
                let response = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
                    text.len()
                );
                let _ = conn.write_all(response.as_bytes()).await;
                let _ = conn.shutdown().await;
            });
        }
    });
    addr
}

type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

async fn send(client: &HttpClient, request: hyper::Request<Full<Bytes>>) -> (u16, Value) {
    let response = client.request(request).await.unwrap();
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string());
    let body = response.into_body().collect().await.unwrap().to_bytes();
    if content_type.as_deref() != Some("application/json") {
        return (status, Value::String(String::from_utf8_lossy(&body).into()));
    }
    (status, serde_json::from_slice(&body).unwrap())
}

async fn get(client: &HttpClient, url: &str, params: &[(&str, &str)]) -> (u16, Value) {
    let query = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params)
        .finish();
    let request = hyper::Request::get(format!("{url}?{query}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    send(client, request).await
}

async fn post(client: &HttpClient, url: &str, params: &[(&str, &str)]) -> (u16, Value) {
    let body = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params)
        .finish();
    let request = hyper::Request::post(url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    send(client, request).await
}

async fn wait_for_scrapes(p: &Promlite, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while p.scrapes() < n {
        assert!(Instant::now() < deadline, "only {} scrapes", p.scrapes());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The `result` of a successful answer, after checking its envelope.
fn result<'v>(answer: &'v (u16, Value), result_type: &str) -> &'v Value {
    let (status, body) = answer;
    assert_eq!(*status, 200, "{body}");
    assert_eq!(body["status"], "success", "{body}");
    assert_eq!(body["data"]["resultType"], result_type, "{body}");
    &body["data"]["result"]
}

/// `[<number>, "<string>"]` -> (t, v)
fn point(p: &Value) -> (f64, f64) {
    let pair = p.as_array().unwrap();
    assert_eq!(pair.len(), 2, "{p}");
    let t = pair[0].as_f64().expect("a timestamp as a JSON number");
    let v = pair[1].as_str().expect("a value as a JSON string");
    (t, v.parse().unwrap())
}

fn now_s() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// Rates are measured between samples stamped with their round's start time but whose values
/// the servers computed on answering, a few ms later; over a 2 s window (about 1.8 s between
/// the first and last sample) a 15 % tolerance allows for ~270 ms of difference in that delay
/// between two scrapes, ample on a loaded two-core machine, while a wrong extrapolation or
/// window (e.g. dividing by the sampled interval, or counting 2 s as 1) is off by far more.
const TOLERANCE: f64 = 0.15;

fn assert_rate(got: f64, want: f64, what: &str) {
    assert!(
        (got - want).abs() <= want * TOLERANCE,
        "{what}: rate {got}, expected {want} ± {}%",
        TOLERANCE * 100.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scrapes_and_answers_queries_over_http() {
    // Server A: 10 requests/s succeed, 1/s fails; half of them under 0.1 s.
    let a = exposition_server(|t| {
        format!(
            "# HELP requests_total Requests.\n# TYPE requests_total counter\n\
             requests_total{{code=\"200\"}} {ok}\n\
             requests_total{{code=\"500\",job=\"scraped\"}} {err}\n\
             # TYPE latency_seconds histogram\n\
             latency_seconds_bucket{{le=\"0.1\"}} {fast}\n\
             latency_seconds_bucket{{le=\"1\"}} {ok}\n\
             latency_seconds_bucket{{le=\"+Inf\"}} {ok}\n\
             latency_seconds_sum {sum}\n\
             latency_seconds_count {ok}\n",
            ok = 10.0 * t,
            err = 1.0 * t,
            fast = 5.0 * t,
            sum = 2.0 * t,
        )
    })
    .await;
    // Server B: 5 requests/s.
    let b = exposition_server(|t| format!("requests_total{{code=\"200\"}} {}\n", 5.0 * t)).await;
    // C: nothing listens there.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };

    let p = Promlite::start(Config {
        scrape_interval: Duration::from_millis(200),
        ..Config::default()
    })
    .await
    .unwrap();
    let base = p.url();
    assert!(base.starts_with("http://127.0.0.1:"), "{base}");
    let target = |addr: SocketAddr, labels: &[(&str, &str)]| Target {
        url: format!("http://{addr}/metrics"),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
    };
    let ta = target(a, &[("pod", "a")]);
    let tb = target(b, &[("pod", "b"), ("job", "other")]);
    let tc = target(dead, &[]);
    p.set_targets(vec![ta.clone(), tb, tc.clone()]);
    let first = p.scrapes();
    wait_for_scrapes(&p, first + 14).await;

    let http = client();
    let query = format!("{base}/api/v1/query");
    let query_range = format!("{base}/api/v1/query_range");

    // up: 1 for the two servers, 0 for the dead target; job and instance labels.
    let answer = get(&http, &query, &[("query", "up")]).await;
    let series = result(&answer, "vector").as_array().unwrap();
    assert_eq!(series.len(), 3, "{series:?}");
    let mut ups = BTreeMap::new();
    for s in series {
        let m = &s["metric"];
        assert_eq!(m["__name__"], "up");
        let (t, v) = point(&s["value"]);
        assert!((t - now_s()).abs() < 5.0, "evaluated now: {t}");
        ups.insert(
            m["instance"].as_str().unwrap().to_string(),
            (v, m["job"].clone()),
        );
    }
    assert_eq!(ups[&a.to_string()], (1.0, Value::from("sandbox")));
    assert_eq!(ups[&b.to_string()], (1.0, Value::from("other")));
    assert_eq!(ups[&dead.to_string()], (0.0, Value::from("sandbox")));

    // Rates per pod.
    let answer = get(
        &http,
        &query,
        &[(
            "query",
            "sum by (pod) (rate(requests_total{code=\"200\"}[2s]))",
        )],
    )
    .await;
    let series = result(&answer, "vector").as_array().unwrap();
    assert_eq!(series.len(), 2, "{series:?}");
    for (s, want) in series.iter().zip([10.0, 5.0]) {
        assert_eq!(s["metric"].as_object().unwrap().len(), 1, "only pod: {s}");
        assert_rate(point(&s["value"]).1, want, &s.to_string());
    }

    // The success rate as the HTTP observer computes it: 10/11 exactly, whatever the jitter
    // (both counters were computed from the same instant at every scrape).
    let success = "sum(rate(requests_total{pod=\"a\",code!~\"5.*\"}[2s])) / sum(rate(requests_total{pod=\"a\"}[2s])) * 100";
    let answer = post(&http, &query, &[("query", success)]).await;
    let series = result(&answer, "vector").as_array().unwrap();
    let (_, v) = point(&series[0]["value"]);
    assert!((v - 1000.0 / 11.0).abs() < 1e-6, "{v}");

    // A histogram's quantile: half the observations in le=0.1, so the median is 0.1 s.
    let p50 = "histogram_quantile(0.5, sum(rate(latency_seconds_bucket[2s])) by (le)) * 1000";
    let answer = get(&http, &query, &[("query", p50)]).await;
    let series = result(&answer, "vector").as_array().unwrap();
    assert_eq!(series[0]["metric"], serde_json::json!({}));
    assert!(
        (point(&series[0]["value"]).1 - 100.0).abs() < 1e-6,
        "{series:?}"
    );

    // Target labels win; the scraped job is kept as exported_job.
    let answer = get(
        &http,
        &query,
        &[("query", "requests_total{exported_job=\"scraped\"}")],
    )
    .await;
    let series = result(&answer, "vector").as_array().unwrap();
    assert_eq!(series.len(), 1);
    assert_eq!(series[0]["metric"]["job"], "sandbox");
    assert_eq!(series[0]["metric"]["pod"], "a");

    // A scalar, at an explicit time (Unix seconds and RFC 3339).
    let answer = get(
        &http,
        &query,
        &[("query", "time() + 1"), ("time", "1435781451.781")],
    )
    .await;
    let r = result(&answer, "scalar");
    assert_eq!(r, &serde_json::json!([1435781451.781, "1435781452.781"]));
    let answer = post(
        &http,
        &query,
        &[("query", "vector(1) / 0"), ("time", "2015-07-01T20:10:51Z")],
    )
    .await;
    let r = result(&answer, "vector");
    assert_eq!(
        r,
        &serde_json::json!([{"metric": {}, "value": [1435781451, "+Inf"]}])
    );

    // A range query over the last second, every 200 ms. Its first window starts 3 s ago: wait
    // until the data covers it, or Prometheus' extrapolation rightly gives a lower rate there
    // (the window is divided by its full 2 s, the series only fills part of it).
    wait_for_scrapes(&p, first + 20).await;
    let end_ms = (now_s() * 1000.0) as i64;
    let (start_s, end_s) = (
        promlite::format_timestamp(end_ms - 1000),
        promlite::format_timestamp(end_ms),
    );
    let answer = get(
        &http,
        &query_range,
        &[
            ("query", "rate(requests_total{pod=\"a\",code=\"200\"}[2s])"),
            ("start", &start_s),
            ("end", &end_s),
            ("step", "200ms"),
        ],
    )
    .await;
    let series = result(&answer, "matrix").as_array().unwrap();
    assert_eq!(series.len(), 1, "{series:?}");
    assert_eq!(
        series[0]["metric"],
        serde_json::json!({"code": "200", "instance": a.to_string(), "job": "sandbox", "pod": "a"})
    );
    let values = series[0]["values"].as_array().unwrap();
    assert_eq!(values.len(), 6, "{values:?}");
    let mut previous = f64::NEG_INFINITY;
    for v in values {
        let (t, rate) = point(v);
        assert!(t > previous, "timestamps increase");
        previous = t;
        assert_rate(rate, 10.0, &v.to_string());
    }
    // The same with a step in seconds, by POST.
    let answer = post(
        &http,
        &query_range,
        &[
            ("query", "vector(2)"),
            ("start", "100"),
            ("end", "101"),
            ("step", "0.5"),
        ],
    )
    .await;
    assert_eq!(
        result(&answer, "matrix"),
        &serde_json::json!([{"metric": {}, "values": [[100, "2"], [100.5, "2"], [101, "2"]]}])
    );

    // Errors: Prometheus' JSON, HTTP 400.
    for (url, params) in [
        (&query, vec![("query", "sum(rate(x[5m])")]),
        (&query, vec![("query", "up"), ("time", "yesterday")]),
        (&query, vec![]),
        (
            &query_range,
            vec![
                ("query", "up"),
                ("start", "0"),
                ("end", "11001"),
                ("step", "1"),
            ],
        ),
        (
            &query_range,
            vec![("query", "up"), ("start", "0"), ("end", "1"), ("step", "0")],
        ),
        (
            &query_range,
            vec![
                ("query", "up[1m]"),
                ("start", "0"),
                ("end", "1"),
                ("step", "1"),
            ],
        ),
    ] {
        let (status, body) = get(&http, url, &params).await;
        assert_eq!(status, 400, "{params:?}: {body}");
        assert_eq!(body["status"], "error");
        assert_eq!(body["errorType"], "bad_data");
        assert!(body["error"].as_str().is_some_and(|e| !e.is_empty()));
    }
    let (_, body) = get(&http, &query, &[("query", "sum(rate(x[5m])")]).await;
    assert_eq!(
        body["error"],
        "invalid parameter \"query\": 1:16: parse error: unexpected end of input in argument list, expected \",\" or \")\""
    );
    let (_, body) = get(
        &http,
        &query_range,
        &[
            ("query", "up"),
            ("start", "0"),
            ("end", "11001"),
            ("step", "1"),
        ],
    )
    .await;
    assert!(
        body["error"].as_str().unwrap().contains("11,000 points"),
        "{body}"
    );
    // An evaluation error is 422 `execution`, as in Prometheus.
    let (status, body) = get(&http, &query, &[("query", "requests_total / on(pod) up")]).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["errorType"], "execution");

    // Health, readiness and targets.
    for path in ["/-/ready", "/-/healthy"] {
        let (status, _) = get(&http, &format!("{base}{path}"), &[]).await;
        assert_eq!(status, 200);
    }
    let (status, body) = get(&http, &format!("{base}/api/v1/targets"), &[]).await;
    assert_eq!(status, 200);
    let targets = body["data"]["activeTargets"].as_array().unwrap();
    assert_eq!(targets.len(), 3);
    let health: BTreeMap<String, (String, String)> = targets
        .iter()
        .map(|t| {
            (
                t["scrapeUrl"].as_str().unwrap().to_string(),
                (
                    t["health"].as_str().unwrap().to_string(),
                    t["lastError"].as_str().unwrap().to_string(),
                ),
            )
        })
        .collect();
    assert_eq!(health[&ta.url], ("up".to_string(), String::new()));
    assert_eq!(health[&tc.url].0, "down");
    assert!(!health[&tc.url].1.is_empty());

    // B goes away: its series go stale at the next round.
    p.set_targets(vec![ta, tc]);
    let now = p.scrapes();
    wait_for_scrapes(&p, now + 2).await;
    let answer = get(&http, &query, &[("query", "up")]).await;
    assert_eq!(result(&answer, "vector").as_array().unwrap().len(), 2);
    let answer = get(&http, &query, &[("query", "requests_total{pod=\"b\"}")]).await;
    assert_eq!(result(&answer, "vector"), &serde_json::json!([]));
    // ... but its past is still there for range functions.
    let answer = get(
        &http,
        &query,
        &[("query", "count_over_time(up{pod=\"b\"}[10s])")],
    )
    .await;
    let series = result(&answer, "vector").as_array().unwrap();
    assert!(point(&series[0]["value"]).1 >= 12.0, "{series:?}");

    // Dropping it stops the server.
    drop(p);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let request = hyper::Request::get(format!("{base}/-/ready"))
            .body(Full::new(Bytes::new()))
            .unwrap();
        if client().request(request).await.is_err() {
            break;
        }
        assert!(Instant::now() < deadline, "still serving after drop");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
