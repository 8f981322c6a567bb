//! Rollouts judged by MetricTemplates of providers other than Prometheus: the template and its
//! Secret are read as Flagger reads them, and the query goes to a local server answering in the
//! provider's documented shape.

use std::io::Write;
use std::net::TcpListener;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::json;

use crate::util;

/// A local HTTP API answering every request with `answer(value)`, `value` settable; it keeps
/// every request's path (with its query).
struct FakeApi {
    url: String,
    value: Arc<AtomicU64>,
    paths: Arc<Mutex<Vec<String>>>,
    calls: Arc<AtomicUsize>,
}

impl FakeApi {
    fn start(answer: fn(f64) -> String) -> FakeApi {
        let listener = match TcpListener::bind("127.0.0.1:0") {
            Ok(l) => l,
            Err(e) => panic!("bind: {e}"),
        };
        let url = format!(
            "http://{}",
            listener
                .local_addr()
                .map(|a| a.to_string())
                .unwrap_or_default()
        );
        let value = Arc::new(AtomicU64::new(0f64.to_bits()));
        let paths = Arc::new(Mutex::new(Vec::new()));
        let calls = Arc::new(AtomicUsize::new(0));
        let (v, p, c) = (value.clone(), paths.clone(), calls.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (v, p, c) = (v.clone(), p.clone(), c.clone());
                std::thread::spawn(move || {
                    let Some(request) = util::read_request(&stream) else {
                        return;
                    };
                    if let Ok(mut all) = p.lock() {
                        all.push(request.path);
                    }
                    c.fetch_add(1, Ordering::SeqCst);
                    let body = answer(f64::from_bits(v.load(Ordering::SeqCst)));
                    let mut w = &stream;
                    let _ = write!(
                        w,
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                });
            }
        });
        FakeApi {
            url,
            value,
            paths,
            calls,
        }
    }

    fn set(&self, value: f64) {
        self.value.store(value.to_bits(), Ordering::SeqCst);
    }
}

/// Datadog's answer to `/api/v1/query`: one series whose first point is `value`.
fn datadog_answer(value: f64) -> String {
    json!({
        "status": "ok",
        "res_type": "time_series",
        "series": [{
            "metric": "trace.http.request.errors",
            "pointlist": [[1_700_000_000_000u64, value], [1_700_000_060_000u64, null]],
            "scope": "service:podinfo",
            "tag_set": [],
        }],
    })
    .to_string()
}

/// A Datadog MetricTemplate judges the rollout: a good error rate promotes, a bad one rolls
/// back, and the query carries the template's text, ten intervals of window.
#[test]
fn a_datadog_template_promotes_good_revisions_and_rolls_back_bad_ones() {
    let c = util::cluster();
    let hook = util::Hook::start();
    let datadog = FakeApi::start(datadog_answer);
    // Flagger's key names; base64 of "api-key" and "app-key".
    let secret = c.emu.insert(json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "datadog", "namespace": "test"},
        "data": {"datadog_api_key": "YXBpLWtleQ==", "datadog_application_key": "YXBwLWtleQ=="},
    }));
    assert!(secret.is_ok(), "{secret:?}");
    let template = format!(
        "  provider:
    type: datadog
    address: {}
    secretRef: {{name: datadog}}
  query: |
    100 - (sum:trace.http.request.hits{{service:{{{{ target }}}}}}.as_count() - sum:trace.http.request.errors{{service:{{{{ target }}}}}}.as_count())
",
        datadog.url
    );
    let canary = c.write("canary.yaml", &canary_with_template(&hook.url, &template));
    let (good, bad) = good_then_bad(&c, &canary, &[], |good| {
        datadog.set(if good { 0.5 } else { 5.0 })
    });
    let queried = datadog.calls.load(Ordering::SeqCst);
    assert!(queried >= 2, "{queried} queries");
    let paths = datadog.paths.lock().map(|p| p.clone()).unwrap_or_default();
    let first = paths.first().cloned().unwrap_or_default();
    assert!(
        first.starts_with(
            "/api/v1/query?query=100+-+%28sum%3Atrace.http.request.hits%7Bservice%3Apodinfo%7D"
        ),
        "{first}"
    );
    // Ten one-minute intervals back from now.
    let param = |name: &str| -> u64 {
        first
            .split(['?', '&'])
            .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
            .and_then(|v| v.parse().ok())
            .unwrap_or_default()
    };
    assert_eq!(param("to") - param("from"), 600, "{first}");
    // The keys never reach the log.
    for run in [&good, &bad] {
        let shown = util::stderr(run);
        assert!(!shown.contains("api-key") && !shown.contains("app-key"));
    }
}

/// The Canary (its analysis judged by the template `error-rate`, at most 1) and `template`'s
/// spec lines, in one file.
fn canary_with_template(hook: &str, template: &str) -> String {
    let analysis = "    maxWeight: 50
    stepWeight: 25
    metrics:
      - name: error-rate
        interval: 1m
        templateRef: {name: error-rate, namespace: test}
        thresholdRange: {max: 1}";
    format!(
        "{}---
apiVersion: flagger.app/v1beta1
kind: MetricTemplate
metadata:
  name: error-rate
  namespace: test
spec:
{template}",
        util::canary_yaml("gatewayapi", hook, analysis)
    )
}

/// Bootstraps, then releases `podinfo:2` with `good` set and `podinfo:3` with `bad` set:
/// promoted, then rolled back with the primary left on `podinfo:2`. The two releases' outputs.
fn good_then_bad(
    c: &util::Cluster,
    canary: &std::path::Path,
    env: &[(&str, &str)],
    mut set: impl FnMut(bool),
) -> (std::process::Output, std::process::Output) {
    let run = |c: &util::Cluster| match c.aviary(canary, env).output() {
        Ok(o) => o,
        Err(e) => panic!("{e}"),
    };
    c.apply_target("podinfo:1", 2);
    let out = run(c);
    assert_eq!(util::code(&out), 0, "bootstrap: {}", util::stderr(&out));
    set(true);
    c.apply_target("podinfo:2", 2);
    let good = run(c);
    assert_eq!(util::code(&good), 0, "{}", util::stderr(&good));
    assert_eq!(
        util::image(&c.get("apps/v1", "deployments", "podinfo-primary")),
        "podinfo:2"
    );
    set(false);
    c.apply_target("podinfo:3", 2);
    let bad = run(c);
    let err = util::stderr(&bad);
    assert_eq!(util::code(&bad), 1, "{err}");
    assert!(err.contains("error-rate"), "{err}");
    assert_eq!(
        util::image(&c.get("apps/v1", "deployments", "podinfo-primary")),
        "podinfo:2"
    );
    (good, bad)
}

/// The Kubernetes family: an `externalmetrics` template reads the cluster's external metrics
/// API (the emulator's adapter), through the run's own kube client.
#[test]
fn an_external_metrics_template_promotes_good_revisions_and_rolls_back_bad_ones() {
    let c = util::cluster();
    let hook = util::Hook::start();
    let canary = c.write(
        "canary.yaml",
        &canary_with_template(
            &hook.url,
            "  provider:
    type: externalmetrics
  query: test/http_error_rate?labelSelector=app%3D{{ target }}
",
        ),
    );
    good_then_bad(&c, &canary, &[], |good| {
        let value = if good { "500m" } else { "5" };
        c.emu
            .set_external_metric("test", "http_error_rate", &[("app", "podinfo")], value);
    });
}

/// A local AWS API (PyPI's moto server) on a free loopback port, stopped when dropped.
struct Moto(std::process::Child, String);

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn moto() -> Moto {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("{e}"));
    let child = std::process::Command::new("moto_server")
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("moto_server ({e}): `pip install 'moto[server]'` (CI does)"));
    let moto = Moto(child, format!("http://127.0.0.1:{port}"));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "moto_server did not listen within a minute"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    moto
}

/// `PutMetricData` of the `Errors` metric of `podinfo` (query protocol; moto takes any
/// signature on it).
fn put_errors(moto: &Moto, value: f64) {
    let body = format!(
        "Action=PutMetricData&Version=2010-08-01&Namespace=App&MetricData.member.1.MetricName=Errors&MetricData.member.1.Value={value}&MetricData.member.1.Dimensions.member.1.Name=Deployment&MetricData.member.1.Dimensions.member.1.Value=podinfo"
    );
    let addr = moto.1.trim_start_matches("http://");
    let mut stream = match std::net::TcpStream::connect(addr) {
        Ok(s) => s,
        Err(e) => panic!("{e}"),
    };
    let request = format!(
        "POST / HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/x-www-form-urlencoded\r\nAuthorization: AWS4-HMAC-SHA256 Credential=AKID/20261205/us-east-1/monitoring/aws4_request, SignedHeaders=host, Signature=0\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut answer = String::new();
    let written = stream.write_all(request.as_bytes());
    let read = std::io::Read::read_to_string(&mut stream, &mut answer);
    assert!(
        written.is_ok() && read.is_ok() && answer.starts_with("HTTP/1.1 200"),
        "{answer}"
    );
}

/// The AWS family: a `cloudwatch` template, its `GetMetricData` signed with the run's keys.
#[test]
fn a_cloudwatch_template_promotes_good_revisions_and_rolls_back_bad_ones() {
    let c = util::cluster();
    let hook = util::Hook::start();
    let moto = moto();
    // The largest value in the window: the bad revision's errors outweigh the good one's.
    let canary = c.write(
        "canary.yaml",
        &canary_with_template(
            &hook.url,
            &format!(
                "  provider:
    type: cloudwatch
    region: us-east-1
    address: {}
  query: |
    [{{\"Id\": \"errors\", \"MetricStat\": {{\"Metric\": {{\"Namespace\": \"App\", \"MetricName\": \"Errors\",
      \"Dimensions\": [{{\"Name\": \"Deployment\", \"Value\": \"{{{{ target }}}}\"}}]}}, \"Period\": 60, \"Stat\": \"Maximum\"}}}}]
",
                moto.1
            ),
        ),
    );
    let env = [
        ("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE"),
        (
            "AWS_SECRET_ACCESS_KEY",
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
        ),
    ];
    good_then_bad(&c, &canary, &env, |good| {
        put_errors(&moto, if good { 0.5 } else { 5.0 })
    });
}
