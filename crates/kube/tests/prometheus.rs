//! Metric analysis against a real Prometheus.
//!
//! `prometheus` (Debian's package; CI installs it with apt) scrapes, every second, three small HTTP
//! workloads started here on loopback: a good canary (`podinfo`: every request 200, 20 ms), a bad
//! one (`backend`: every 5th request 500 and slow, 200 ms / 800 ms) and the good canary's primary
//! (half of its requests fail, which no canary query may count). Each workload serves its own
//! traffic and exposes, in Prometheus' text format, the families Flagger's built-in queries read:
//! Istio's `istio_requests_total` / `istio_request_duration_milliseconds`, the pods' own
//! `http_request_duration_seconds` (with `kubernetes_namespace`/`kubernetes_pod_name` attached as
//! target labels, as a Kubernetes scrape config does), ingress-nginx's and Gloo's Envoy metrics.
//! The test drives real requests through them and checks what the queries make of it.
//!
//! The failure modes (Prometheus down, slow, answering garbage or 5xx) run against loopback
//! servers without Prometheus.
//!
//! The workloads, Prometheus and the loopback plumbing are in `prometheus/harness.rs`, which the
//! binary's end-to-end test of a rollout judged by Prometheus (`tests/prometheus.rs` at the
//! repository's root) shares.

#[path = "prometheus/harness.rs"]
mod harness;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aviary_core::engine::MetricOutcome;
use aviary_core::spec::{BuiltinMetric, Provider};
use aviary_kube::metrics::{
    builtin_query, render_template, Auth, Evaluator, MetricContext, MetricError, PrometheusClient,
};
use harness::*;
use serde_json::json;

// =============================================================================================
// A reverse proxy serving Prometheus under `/prefix`, behind authentication.

const TOKEN: &str = "s3cret-token";
/// `aviary:hunter2`.
const BASIC: &str = "Basic YXZpYXJ5Omh1bnRlcjI=";

/// Forwards `GET /prefix/api/v1/query?...` carrying `Bearer s3cret-token` or basic
/// `aviary:hunter2` to Prometheus' `/api/v1/query?...`; 401 without them, 404 elsewhere.
fn start_proxy(upstream: &str) -> (String, Arc<AtomicUsize>) {
    let upstream: SocketAddr = match upstream.trim_start_matches("http://").parse() {
        Ok(a) => a,
        Err(e) => panic!("{e}"),
    };
    let listener = bind();
    let base = format!("http://{}/prefix", local_addr(&listener));
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let counter = counter.clone();
            std::thread::spawn(move || {
                let Some((target, headers)) = read_head(&stream) else {
                    return;
                };
                counter.fetch_add(1, Ordering::SeqCst);
                let Some(query) = target.strip_prefix("/prefix/api/v1/query") else {
                    respond(&stream, 404, "text/plain", "404 page not found\n");
                    return;
                };
                let auth = headers.get("authorization").map(String::as_str);
                let bearer = format!("Bearer {TOKEN}");
                if auth != Some(bearer.as_str()) && auth != Some(BASIC) {
                    respond(&stream, 401, "text/plain", "unauthorized\n");
                    return;
                }
                let Ok(mut up) = TcpStream::connect(upstream) else {
                    respond(&stream, 502, "text/plain", "bad gateway\n");
                    return;
                };
                let request =
                    format!("GET /api/v1/query{query} HTTP/1.0\r\nHost: {upstream}\r\n\r\n");
                let mut answer = Vec::new();
                if up.write_all(request.as_bytes()).is_err() || up.read_to_end(&mut answer).is_err()
                {
                    respond(&stream, 502, "text/plain", "bad gateway\n");
                    return;
                }
                let mut w = &stream;
                let _ = w.write_all(&answer);
            });
        }
    });
    (base, hits)
}

// =============================================================================================
// The tests.

fn ctx(provider: Provider, target: &str) -> MetricContext {
    MetricContext {
        name: target.to_string(),
        namespace: "test".into(),
        target: target.to_string(),
        service: target.to_string(),
        ingress: target.to_string(),
        route: target.to_string(),
        provider,
    }
}

const WINDOW: &str = "30s";

async fn builtin(c: &PrometheusClient, provider: Provider, target: &str, m: BuiltinMetric) -> f64 {
    let query = match builtin_query(m, &ctx(provider.clone(), target), WINDOW) {
        Ok(q) => q,
        Err(e) => panic!("{e}"),
    };
    match c.query(&query).await {
        Ok(v) => v,
        Err(e) => panic!("{provider:?} {m:?} {target}: {e}\nquery: {query}"),
    }
}

fn assert_near(what: &str, got: f64, want: f64, tolerance: f64) {
    assert!(
        (got - want).abs() <= tolerance,
        "{what}: got {got}, expected {want} ± {tolerance}"
    );
}

const GOOD_P99_MS: f64 = 24.85; // all in (10, 25]: 10 + 15 × 0.99
const BAD_P99_MS: f64 = 975.0; // 20 % in (500, 1000]: 500 + 500 × (0.99 − 0.8) / 0.2

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn queries_against_a_real_prometheus() {
    let started = Instant::now();
    let good = start_workload(
        Identity {
            namespace: "test",
            workload: "podinfo",
            pod: "podinfo-7d9f8c6b5-x2x9k",
            cluster: "test-podinfo-canaryupstream-9898_test",
            ingress: "podinfo",
            canary_upstream: "test-podinfo-canary-9898",
        },
        Behaviour {
            error_every: None,
            fast_ms: 20.0,
            slow_ms: 20.0,
        },
    );
    let bad = start_workload(
        Identity {
            namespace: "test",
            workload: "backend",
            pod: "backend-5c8d7f9b6-q2w3e",
            cluster: "test-backend-canaryupstream-8080_test",
            ingress: "backend",
            canary_upstream: "test-backend-canary-8080",
        },
        Behaviour {
            error_every: Some(5),
            fast_ms: 200.0,
            slow_ms: 800.0,
        },
    );
    let primary = start_workload(
        Identity {
            namespace: "test",
            workload: "podinfo-primary",
            pod: "podinfo-primary-6b7c8d9f5-abcde",
            cluster: "test-podinfo-primaryupstream-9898_test",
            ingress: "podinfo",
            canary_upstream: "",
        },
        Behaviour {
            error_every: Some(2),
            fast_ms: 3000.0,
            slow_ms: 3000.0,
        },
    );
    let load = Load::start(
        vec![good.addr, bad.addr, primary.addr],
        20_000,
        Duration::from_secs(60),
    );
    let prom = start_prometheus(&[
        ("good", good.addr, &good.target_labels()),
        ("bad", bad.addr, &bad.target_labels()),
        ("primary", primary.addr, &primary.target_labels()),
    ])
    .await;
    let c = client(&prom.url, Duration::from_secs(5), 2);

    // Wait (polling, not sleeping blindly) until every workload is up and was scraped 3 times.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let up = c.query("count(up{job=~\"good|bad|primary\"} == 1)").await;
        let scrapes = c
            .query("min(count_over_time(up{job=~\"good|bad|primary\"}[30s]))")
            .await;
        match (&up, &scrapes) {
            (Ok(u), Ok(n)) if *u == 3.0 && *n >= 3.0 => break,
            _ if Instant::now() > deadline => {
                panic!("prometheus did not scrape the workloads: up {up:?}, scrapes {scrapes:?}")
            }
            _ => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
    let sent = load.sent.load(Ordering::SeqCst);
    assert!(
        sent > 100,
        "only {sent} requests went through the workloads"
    );
    assert_eq!(good.served().1, 0, "the good canary never fails");
    let (ok, failed) = bad.served();
    assert!(
        failed > 0 && ok / failed == 4,
        "the bad canary fails one request in five: {ok}/{failed}"
    );

    // --- Built-in queries, per provider -------------------------------------------------------
    use BuiltinMetric::{RequestDuration as Duration_, RequestSuccessRate as Success};
    for provider in [
        Provider::Istio,
        Provider::Kubernetes,
        Provider::KubernetesReplicas,
        Provider::GatewayApi,
        Provider::Gloo,
    ] {
        let p = format!("{provider:?}");
        let rate = builtin(&c, provider.clone(), "podinfo", Success).await;
        assert_near(&format!("{p} good success rate"), rate, 100.0, 0.01);
        let rate = builtin(&c, provider.clone(), "backend", Success).await;
        assert_near(&format!("{p} bad success rate"), rate, 80.0, 3.0);
        let p99 = builtin(&c, provider.clone(), "podinfo", Duration_).await;
        assert_near(&format!("{p} good P99 ms"), p99, GOOD_P99_MS, 0.5);
        let p99 = builtin(&c, provider.clone(), "backend", Duration_).await;
        assert_near(&format!("{p} bad P99 ms"), p99, BAD_P99_MS, 25.0);
    }
    // NGINX: the canary's share of the ingress' traffic (`canary!=""`); duration is the mean.
    let rate = builtin(&c, Provider::Nginx, "podinfo", Success).await;
    assert_near("nginx good success rate", rate, 100.0, 0.01);
    let rate = builtin(&c, Provider::Nginx, "backend", Success).await;
    assert_near("nginx bad success rate", rate, 80.0, 3.0);
    let mean = builtin(&c, Provider::Nginx, "podinfo", Duration_).await;
    assert_near("nginx good mean ms", mean, 20.0, 0.5);
    let mean = builtin(&c, Provider::Nginx, "backend", Duration_).await;
    assert_near("nginx bad mean ms", mean, 320.0, 15.0);

    // --- The Evaluator, from Canary and MetricTemplate specs --------------------------------
    let specs = format!(
        r#"
apiVersion: flagger.app/v1beta1
kind: MetricTemplate
metadata:
  name: error-rate
  namespace: test
spec:
  provider:
    type: prometheus
    address: {url}
  query: |
    100 * sum(
      rate(
        istio_requests_total{{
          reporter="destination",
          destination_workload_namespace="{{{{ namespace }}}}",
          destination_workload=~"{{{{ target }}}}",
          response_code=~"{{{{ variables.codes }}}}"
        }}[{{{{ interval }}}}]
      )
    )
    /
    sum(rate(istio_requests_total{{reporter="destination", destination_workload_namespace="{{{{ namespace }}}}", destination_workload=~"{{{{ target }}}}"}}[{{{{interval}}}}]))
---
apiVersion: flagger.app/v1beta1
kind: MetricTemplate
metadata:
  name: tricky
  namespace: test
spec:
  provider:
    type: prometheus
  query: |
    sum(aviary_test_info{{workload="{{{{ target }}}}", tricky="{{{{ variables.value }}}}"}})
"#,
        url = prom.url
    );
    let docs = decode(&format!(
        "{specs}---\n{}---\n{}",
        canary_yaml("podinfo", "istio"),
        canary_yaml("backend", "gatewayapi")
    ));
    let podinfo = find_canary(&docs, "podinfo");
    let backend = find_canary(&docs, "backend");
    let evaluator = |canary: &aviary_core::spec::Canary, provider: Provider| {
        Evaluator::new(
            canary,
            &provider,
            docs.templates.clone(),
            None,
            Some(prom.url.clone()),
            Auth::None,
        )
    };
    let e = evaluator(&podinfo, Provider::Istio);
    assert_value(
        e.evaluate("request-success-rate").await,
        100.0,
        0.01,
        "podinfo success",
    );
    assert_value(
        e.evaluate("request-duration").await,
        GOOD_P99_MS,
        0.5,
        "podinfo p99",
    );
    assert_value(
        e.evaluate("error-rate").await,
        0.0,
        0.01,
        "podinfo error-rate template",
    );
    assert_value(
        e.evaluate("tricky-label").await,
        1.0,
        0.0,
        "escaped label value round trip",
    );
    let e = evaluator(&backend, Provider::GatewayApi);
    assert_value(
        e.evaluate("request-success-rate").await,
        80.0,
        3.0,
        "backend success",
    );
    assert_value(
        e.evaluate("request-duration").await,
        BAD_P99_MS,
        25.0,
        "backend p99",
    );
    assert_value(
        e.evaluate("error-rate").await,
        20.0,
        3.0,
        "backend error-rate template",
    );
    match e.evaluate("inline").await {
        MetricOutcome::NoValues(m) => assert!(m.contains("no values found"), "{m}"),
        other => panic!("inline query for a workload without traffic: {other:?}"),
    }

    // --- No values, NaN, infinity, errors ------------------------------------------------------
    let no_values = [
        "sum(rate(istio_requests_total{destination_workload=\"nowhere\"}[30s]))",
        "0/0",
        "vector(0) / vector(0)",
        "vector(1) / vector(0)",
        "sum(rate(istio_requests_total{destination_workload=\"podinfo\",response_code=\"500\"}[30s])) / sum(rate(istio_requests_total{destination_workload=\"podinfo\",response_code=\"500\"}[30s]))",
    ];
    for q in no_values {
        match c.query(q).await {
            Err(MetricError::NoValues(m)) => {
                assert!(m.starts_with("no values found for query"), "{q}: {m}")
            }
            other => panic!("{q}: expected no values, got {other:?}"),
        }
    }
    match c.query("sum(").await {
        Err(MetricError::Failed(m)) => {
            assert!(
                m.contains("400 Bad Request") && m.contains("parse error"),
                "{m}"
            )
        }
        other => panic!("a syntax error: {other:?}"),
    }
    match c.query("up[1m]").await {
        Err(MetricError::Failed(m)) => assert!(m.contains("range vector"), "{m}"),
        other => panic!("a range vector: {other:?}"),
    }
    match c.query("scalar(vector(42))").await {
        Ok(v) => assert_eq!(v, 42.0),
        other => panic!("a scalar: {other:?}"),
    }

    // --- An injection attempt stays a label value ----------------------------------------------
    let template = r#"sum(istio_requests_total{destination_workload_namespace="{{ namespace }}"})"#;
    let mut evil = ctx(Provider::Istio, "podinfo");
    evil.namespace = r#"x"} or vector(1) or up{a=""#.to_string();
    // Spliced in verbatim, the namespace turns the query into `sum(... or vector(1) or up)`,
    // which has a value although no series has that namespace:
    let naive = template.replace("{{ namespace }}", &evil.namespace);
    assert!(
        matches!(c.query(&naive).await, Ok(v) if v >= 1.0),
        "the attack string must work on a naive substitution for this test to mean anything"
    );
    let rendered = match render_template(template, &evil, "1m", &BTreeMap::new()) {
        Ok(q) => q,
        Err(e) => panic!("{e}"),
    };
    match c.query(&rendered).await {
        Err(MetricError::NoValues(_)) => {}
        other => panic!("the injection changed the query {rendered}: {other:?}"),
    }
    let mut evil_interval = ctx(Provider::Istio, "podinfo");
    evil_interval.namespace = "test".into();
    assert!(
        builtin_query(Success, &evil_interval, "1m]) or vector(1) or rate(up[1m").is_err(),
        "a window that is not a duration must be refused"
    );

    // --- A path prefix and credentials (a GMP-style base URL behind a proxy) -----------------
    let (base, hits) = start_proxy(&prom.url);
    let authed = |auth: Auth| match PrometheusClient::new(
        &base,
        auth,
        BTreeMap::new(),
        false,
        Duration::from_secs(5),
        2,
    ) {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    };
    let bearer = authed(Auth::Bearer(TOKEN.into()));
    if let Err(e) = bearer.is_online().await {
        panic!("through the proxy: {e}");
    }
    let rate = builtin(&bearer, Provider::Istio, "backend", Success).await;
    assert_near("success rate through the prefix", rate, 80.0, 3.0);
    let basic = authed(Auth::Basic {
        username: "aviary".into(),
        password: "hunter2".into(),
    });
    assert!(matches!(basic.query("vector(7)").await, Ok(v) if v == 7.0));
    let before = hits.load(Ordering::SeqCst);
    let wrong = authed(Auth::Bearer("wrong-token-value".into()));
    match wrong.query("vector(1)").await {
        Err(MetricError::Failed(m)) => {
            assert!(m.contains("401"), "{m}");
            assert!(!m.contains("wrong-token-value"), "the token leaked: {m}");
        }
        other => panic!("a wrong token: {other:?}"),
    }
    assert_eq!(
        hits.load(Ordering::SeqCst),
        before + 1,
        "a 401 is not retried"
    );
    let unprefixed = base.trim_end_matches("/prefix").to_string();
    match client_with(&unprefixed, Auth::Bearer(TOKEN.into()))
        .query("vector(1)")
        .await
    {
        Err(MetricError::Failed(m)) => assert!(m.contains("404"), "{m}"),
        other => panic!("without the prefix: {other:?}"),
    }

    // --- Templates and secretRefs read from a cluster ------------------------------------------
    cluster_templates_and_secrets(&base, &podinfo).await;

    drop(load);
    let elapsed = started.elapsed();
    assert!(
        elapsed < Duration::from_secs(60),
        "the Prometheus test took {elapsed:?}"
    );
}

/// MetricTemplates and their Secrets come from the cluster when the spec files do not have them.
async fn cluster_templates_and_secrets(proxy_base: &str, podinfo: &aviary_core::spec::Canary) {
    use kube_emulator::{Config, Emulator, ResourceType};
    let config = Config {
        namespaces: vec!["default".into(), "test".into(), "monitoring".into()],
        extra_resources: vec![ResourceType::new(
            "flagger.app",
            "v1beta1",
            "MetricTemplate",
            "metrictemplates",
            true,
            false,
        )],
        ..Config::default()
    };
    let emu = match Emulator::start(config).await {
        Ok(e) => e,
        Err(e) => panic!("emulator: {e}"),
    };
    let objects = [
        json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "prom-token", "namespace": "monitoring"},
            "data": {"token": "czNjcmV0LXRva2Vu"}}),
        json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "prom-basic", "namespace": "test"},
            "data": {"username": "YXZpYXJ5", "password": "aHVudGVyMg=="}}),
        json!({"apiVersion": "flagger.app/v1beta1", "kind": "MetricTemplate",
            "metadata": {"name": "cluster-rate", "namespace": "monitoring"},
            "spec": {"provider": {"type": "prometheus", "address": proxy_base,
                                  "secretRef": {"name": "prom-token"}},
                     "query": "sum(rate(istio_requests_total{reporter=\"destination\",destination_workload=~\"{{ target }}\",destination_workload_namespace=\"{{ namespace }}\"}[{{ interval }}])) > bool 0"}}),
        json!({"apiVersion": "flagger.app/v1beta1", "kind": "MetricTemplate",
            "metadata": {"name": "error-rate", "namespace": "test"},
            "spec": {"provider": {"type": "prometheus", "address": proxy_base,
                                  "secretRef": {"name": "prom-basic"}},
                     "query": "vector({{ variables.codes }})"}}),
        json!({"apiVersion": "flagger.app/v1beta1", "kind": "MetricTemplate",
            "metadata": {"name": "tricky", "namespace": "test"},
            "spec": {"provider": {"type": "prometheus", "address": proxy_base,
                                  "secretRef": {"name": "missing"}},
                     "query": "vector(1)"}}),
    ];
    for o in objects {
        if let Err(e) = emu.insert(o) {
            panic!("{e}");
        }
    }
    let e = Evaluator::new(
        podinfo,
        &Provider::Istio,
        Vec::new(),
        Some(kube_client(&emu).await),
        None,
        Auth::None,
    );
    // A bearer token from the template's namespace, through the path prefix.
    assert_value(
        e.evaluate("cluster-rate").await,
        1.0,
        0.0,
        "cluster template, token",
    );
    // `codes` is `5.*` here, which is not a number: the value is refused before it is sent.
    match e.evaluate("error-rate").await {
        MetricOutcome::Error(m) => assert!(m.contains("outside a quoted string"), "{m}"),
        other => panic!("{other:?}"),
    }
    match e.evaluate("tricky-label").await {
        MetricOutcome::Error(m) => {
            assert!(m.contains("Secret missing.test not found"), "{m}")
        }
        other => panic!("{other:?}"),
    }
    // Basic auth from a Secret: same template name, a Canary whose variable is a number.
    let docs = decode(&canary_yaml("podinfo", "istio").replace("codes: \"5.*\"", "codes: \"3\""));
    let canary = find_canary(&docs, "podinfo");
    let kube = kube_client(&emu).await;
    let e = Evaluator::new(
        &canary,
        &Provider::Istio,
        Vec::new(),
        Some(kube),
        None,
        Auth::None,
    );
    assert_value(
        e.evaluate("error-rate").await,
        3.0,
        0.0,
        "cluster template, basic auth",
    );
}

async fn kube_client(emu: &kube_emulator::Emulator) -> kube::Client {
    let kc = match kube::config::Kubeconfig::from_yaml(&emu.kubeconfig_yaml("test")) {
        Ok(k) => k,
        Err(e) => panic!("{e}"),
    };
    let config = match kube::Config::from_custom_kubeconfig(kc, &Default::default()).await {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    };
    match kube::Client::try_from(config) {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    }
}

fn canary_yaml(target: &str, provider: &str) -> String {
    let gateway = if provider == "gatewayapi" {
        "    gatewayRefs:\n    - name: gateway\n      namespace: default\n"
    } else {
        ""
    };
    format!(
        r#"apiVersion: flagger.app/v1beta1
kind: Canary
metadata:
  name: {target}
  namespace: test
spec:
  provider: {provider}
  targetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: {target}
  service:
    port: 9898
{gateway}  analysis:
    interval: 30s
    threshold: 5
    maxWeight: 50
    stepWeight: 10
    metrics:
    - name: request-success-rate
      interval: 30s
      thresholdRange:
        min: 99
    - name: request-duration
      interval: 30s
      thresholdRange:
        max: 500
    - name: error-rate
      interval: 30s
      templateRef:
        name: error-rate
      templateVariables:
        codes: "5.*"
      thresholdRange:
        max: 1
    - name: tricky-label
      templateRef:
        name: tricky
      templateVariables:
        value: "a\"b\\c\nd"
      thresholdRange:
        min: 1
    - name: cluster-rate
      interval: 30s
      templateRef:
        name: cluster-rate
        namespace: monitoring
      thresholdRange:
        min: 1
    - name: inline
      interval: 30s
      query: 'sum(rate(istio_requests_total{{destination_workload_namespace="{{{{ namespace }}}}",destination_workload="{{{{ target }}}}-idle"}}[{{{{ interval }}}}]))'
      thresholdRange:
        min: 1
"#
    )
}

fn decode(text: &str) -> aviary_core::spec::Documents {
    match aviary_core::spec::decode::decode_documents("specs.yaml", text) {
        Ok(d) => d,
        Err(e) => panic!("{e:?}\n{text}"),
    }
}

fn find_canary(docs: &aviary_core::spec::Documents, name: &str) -> aviary_core::spec::Canary {
    match docs.canaries.iter().find(|c| c.name == name) {
        Some(c) => c.clone(),
        None => panic!("no Canary {name}"),
    }
}

fn assert_value(outcome: MetricOutcome, want: f64, tolerance: f64, what: &str) {
    match outcome {
        MetricOutcome::Value(v) => assert_near(what, v, want, tolerance),
        other => panic!("{what}: {other:?}"),
    }
}

// =============================================================================================
// Failure modes, without Prometheus.

#[tokio::test]
async fn prometheus_down_fails_after_retries() {
    let port = free_port(); // bound, then released: nothing listens there
    let c = client(
        &format!("http://127.0.0.1:{port}"),
        Duration::from_secs(1),
        2,
    );
    let started = Instant::now();
    match c.query("vector(1)").await {
        Err(MetricError::Failed(m)) => {
            assert!(m.contains("cannot connect"), "{m}");
            assert!(m.contains("(3 attempts)"), "{m}");
        }
        other => panic!("{other:?}"),
    }
    // Two backoffs, 200 ms then 400 ms, happened between the three attempts.
    assert!(started.elapsed() >= Duration::from_millis(600));
    match c.is_online().await {
        Err(MetricError::Failed(m)) => assert!(m.contains("is not available"), "{m}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_slow_prometheus_times_out() {
    let (url, hits) = fake(|_, _| Reply::Hang(Duration::from_secs(5)));
    let c = client(&url, Duration::from_millis(300), 1);
    let started = Instant::now();
    match c.query("vector(1)").await {
        Err(MetricError::Failed(m)) => {
            assert!(m.contains("timed out after 300ms"), "{m}");
            assert!(m.contains("(2 attempts)"), "{m}");
        }
        other => panic!("{other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(
        hits.load(Ordering::SeqCst),
        2,
        "one retry after the first timeout"
    );
}

#[tokio::test]
async fn garbage_is_a_failure_and_is_not_retried() {
    let (url, hits) = fake(|_, _| Reply::Answer(200, "<html>this is not Prometheus</html>".into()));
    let c = client(&url, Duration::from_secs(2), 3);
    match c.query("vector(1)").await {
        Err(MetricError::Failed(m)) => {
            assert!(m.contains("did not answer with Prometheus API JSON"), "{m}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(hits.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn server_errors_are_retried_and_client_errors_are_not() {
    let ok = r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"12.5"]}]}}"#;
    let (url, hits) = fake(move |n, _| {
        if n < 3 {
            Reply::Answer(503, "overloaded".into())
        } else {
            Reply::Answer(200, ok.into())
        }
    });
    let c = client(&url, Duration::from_secs(2), 3);
    assert!(matches!(c.query("x").await, Ok(v) if v == 12.5));
    assert_eq!(hits.load(Ordering::SeqCst), 3, "two 503s, then the answer");

    let error = r#"{"status":"error","errorType":"execution","error":"query processing would load too many samples into memory"}"#;
    let (url, hits) = fake(move |_, _| Reply::Answer(422, error.into()));
    match client(&url, Duration::from_secs(2), 3).query("x").await {
        Err(MetricError::Failed(m)) => {
            assert!(
                m.contains("422")
                    && m.contains("execution: query processing would load too many samples"),
                "{m}"
            )
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(hits.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn queries_are_sent_as_flagger_sends_them() {
    let seen = Arc::new(Mutex::new(Vec::<(String, BTreeMap<String, String>)>::new()));
    let record = seen.clone();
    let (url, _) = fake(move |_, (target, headers)| {
        if let Ok(mut s) = record.lock() {
            s.push((target.to_string(), headers.clone()));
        }
        Reply::Answer(
            200,
            r#"{"status":"success","data":{"resultType":"scalar","result":[1,"1"]}}"#.into(),
        )
    });
    let headers = BTreeMap::from([("X-Scope-OrgID".to_string(), "tenant-a".to_string())]);
    let c = match PrometheusClient::new(
        &format!("{url}/base/"),
        Auth::None,
        headers,
        false,
        Duration::from_secs(2),
        0,
    ) {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    };
    assert!(matches!(c.query("sum(up{a=\"b c\"}) * 100").await, Ok(v) if v == 1.0));
    let seen = match seen.lock() {
        Ok(s) => s.clone(),
        Err(e) => panic!("{e}"),
    };
    let Some((target, headers)) = seen.first() else {
        panic!("no request");
    };
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    assert_eq!(path, "/base/api/v1/query");
    let decoded: Vec<(String, String)> = url_decode_pairs(query);
    assert_eq!(
        decoded,
        vec![("query".to_string(), "sum(up{a=\"b c\"}) * 100".to_string())]
    );
    assert_eq!(
        headers.get("x-scope-orgid").map(String::as_str),
        Some("tenant-a")
    );
    assert!(!headers.contains_key("authorization"));
}

#[test]
fn an_unknown_template_variable_is_an_error() {
    let c = ctx(Provider::Istio, "podinfo");
    let vars = BTreeMap::from([("region".to_string(), "eu".to_string())]);
    match render_template("up{zone=\"{{ variables.zone }}\"}", &c, "1m", &vars) {
        Err(MetricError::Failed(m)) => assert!(m.contains("`zone`") && m.contains("region"), "{m}"),
        other => panic!("{other:?}"),
    }
    match render_template("up{x=\"{{ canary }}\"}", &c, "1m", &vars) {
        Err(MetricError::Failed(m)) => assert!(m.contains("`canary`"), "{m}"),
        other => panic!("{other:?}"),
    }
}

// =============================================================================================
// Loopback plumbing.

enum Reply {
    Answer(u16, String),
    /// Accept the request and say nothing for this long.
    Hang(Duration),
}

/// A loopback HTTP server answering each request with `reply(n, (target, headers))`, `n` counting
/// requests from 1. Returns its URL and the request count.
fn fake<F>(reply: F) -> (String, Arc<AtomicUsize>)
where
    F: Fn(usize, (&str, &BTreeMap<String, String>)) -> Reply + Send + Sync + 'static,
{
    let listener = bind();
    let url = format!("http://{}", local_addr(&listener));
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    let reply = Arc::new(reply);
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let (counter, reply) = (counter.clone(), reply.clone());
            std::thread::spawn(move || {
                let Some((target, headers)) = read_head(&stream) else {
                    return;
                };
                let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
                match reply(n, (&target, &headers)) {
                    Reply::Answer(status, body) => {
                        respond(&stream, status, "application/json", &body)
                    }
                    Reply::Hang(d) => std::thread::sleep(d),
                }
            });
        }
    });
    (url, hits)
}

/// Reads a request's head: the target and the headers (names lowercased).
fn url_decode_pairs(query: &str) -> Vec<(String, String)> {
    let decode = |s: &str| -> String {
        let bytes = s.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            match (bytes[i], hex) {
                (b'+', _) => out.push(b' '),
                (b'%', Some(b)) => {
                    out.push(b);
                    i += 2;
                }
                (b, _) => out.push(b),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    };
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn client_with(url: &str, auth: Auth) -> PrometheusClient {
    match PrometheusClient::new(url, auth, BTreeMap::new(), false, Duration::from_secs(2), 0) {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    }
}

// =============================================================================================
// The statistical judge, fed by range and instant queries.

const JUDGED: &str = "apiVersion: aviary.dev/v1alpha1
kind: Canary
metadata:
  name: podinfo
  namespace: test
spec:
  provider: gatewayapi
  targetRef: {apiVersion: apps/v1, kind: Deployment, name: podinfo}
  service:
    port: 9898
  analysis:
    interval: 1m
    stepWeight: 10
    judge:
      window: 10m
      step: 30s
      metrics:
        - name: p99-latency
          kind: latency
          query: 'histogram_quantile(0.99, sum(rate(http_request_duration_seconds_bucket{pod=~\"{{ workload }}-.*\"}[1m])) by (le))'
        - name: errors
          kind: error-rate
          errorsQuery: 'sum(increase(http_requests_total{pod=~\"{{ workload }}-.*\",code=~\"5..\"}[{{ interval }}]))'
          totalQuery: 'sum(increase(http_requests_total{pod=~\"{{ workload }}-.*\"}[{{ interval }}]))'
";

/// A Prometheus stand-in answering the judge's range queries, one point per step from `start`
/// to `end` as Prometheus does: `latency(workload)` for the latency query, error and request
/// counts per step for the error-rate queries, the workload read from the query. Instant
/// queries are refused: the judge reads every metric as series.
fn judged_prometheus(canary_latency: f64, canary_errors: u64) -> String {
    let (url, _) = fake(move |_, (target, _)| {
        let Some(params) = target.strip_prefix("/api/v1/query_range?") else {
            let body = json!({"status": "error", "errorType": "bad_data",
                "error": "the judge reads series"});
            return Reply::Answer(400, body.to_string());
        };
        let params: BTreeMap<String, String> = url_decode_pairs(params).into_iter().collect();
        let number = |k: &str| {
            params
                .get(k)
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        let (start, end, step) = (number("start"), number("end"), number("step").max(1.0));
        let query = params.get("query").cloned().unwrap_or_default();
        let primary = query.contains("podinfo-primary");
        let points = ((end - start) / step).round().max(0.0) as usize + 1;
        let values: Vec<serde_json::Value> = (0..points)
            .map(|i| {
                let value = if query.contains("histogram_quantile") {
                    let base = if primary { 0.200 } else { canary_latency };
                    base + (i % 5) as f64 * 0.001
                } else if query.contains("5..") {
                    if primary {
                        10.0
                    } else {
                        canary_errors as f64
                    }
                } else {
                    2_000.0
                };
                json!([start + i as f64 * step, format!("{value}")])
            })
            .collect();
        let body = json!({"status": "success", "data": {"resultType": "matrix",
            "result": [{"metric": {}, "values": values}]}});
        Reply::Answer(200, body.to_string())
    });
    url
}

#[tokio::test]
async fn the_judge_scores_canary_against_primary() {
    let docs = decode(JUDGED);
    let canary = find_canary(&docs, "podinfo");
    let config = aviary_core::engine::Config::from_canary(&canary, &Provider::GatewayApi);
    let last = config.metrics.last().map(|m| (m.name.clone(), m.kind));
    assert_eq!(
        last,
        Some(("judge".to_string(), aviary_core::engine::MetricKind::Judge))
    );

    let score = |url: String| judge_at(canary.clone(), url, None);
    // Same latency and error rate as the primary: 100.
    assert_value(
        score(judged_prometheus(0.200, 10)).await,
        100.0,
        0.001,
        "healthy canary",
    );
    // 50% slower: the latency metric is high, half the weight fails.
    assert_value(
        score(judged_prometheus(0.300, 10)).await,
        50.0,
        0.001,
        "slow canary",
    );
    // Slower and 10x the errors: nothing passes.
    assert_value(
        score(judged_prometheus(0.300, 100)).await,
        0.0,
        0.001,
        "broken canary",
    );
}

// =============================================================================================
// The judge over a release's history, in a real Prometheus backfilled with it.

/// A Canary of `target` judged by error counts and a latency histogram, by `method`.
fn judged_by_history(target: &str, method: &str) -> aviary_core::spec::Canary {
    judged_by_history_with(target, method, "1h")
}

/// [`judged_by_history`] with the judge's `baseline`.
fn judged_by_history_with(target: &str, method: &str, baseline: &str) -> aviary_core::spec::Canary {
    let text = r#"apiVersion: aviary.dev/v1alpha1
kind: Canary
metadata:
  name: TARGET
  namespace: test
spec:
  provider: gatewayapi
  targetRef: {apiVersion: apps/v1, kind: Deployment, name: TARGET}
  service:
    port: 9898
  analysis:
    interval: 1m
    stepWeight: 10
    judge:
      method: METHOD
      window: 5m
      step: 30s
      baseline: BASELINE
      metrics:
        - name: errors
          kind: error-rate
          errorsQuery: 'sum(increase(http_requests_total{workload="{{ workload }}",code=~"5.."}[{{ interval }}]))'
          totalQuery: 'sum(increase(http_requests_total{workload="{{ workload }}"}[{{ interval }}]))'
        - name: latency
          kind: latency
          histogramQuery: 'sum(increase(http_request_duration_seconds_bucket{workload="{{ workload }}"}[{{ interval }}])) by (le)'
          quantile: 0.9
"#
    .replace("TARGET", target)
    .replace("METHOD", method)
    .replace("BASELINE", baseline);
    find_canary(&decode(&text), target)
}

/// What a workload served: requests per second, errors per thousand requests, and per thousand
/// requests how many took at most 0.1 s, 0.25 s, 0.5 s and 1 s.
#[derive(Clone, Copy)]
struct Served {
    rps: u64,
    errors_permille: u64,
    within_permille: [u64; 4],
}

const HEALTHY: Served = Served {
    rps: 20,
    errors_permille: 10,
    within_permille: [900, 980, 995, 1000],
};

/// OpenMetrics text of what `workloads` served from `from` to `to` (Unix seconds), a sample
/// every 5 s: `http_requests_total{workload,code}` and
/// `http_request_duration_seconds_bucket{workload,le}`.
fn served_history(from: u64, to: u64, workloads: &[(&str, Served)]) -> String {
    let mut out = String::new();
    let times = || (from..=to).step_by(5);
    let total = |s: &Served, t: u64| s.rps * (t - from);
    for (name, s) in workloads {
        for t in times() {
            let errors = total(s, t) * s.errors_permille / 1000;
            out.push_str(&format!(
                "http_requests_total{{workload=\"{name}\",code=\"200\"}} {} {t}\n",
                total(s, t) - errors
            ));
        }
        for t in times() {
            let errors = total(s, t) * s.errors_permille / 1000;
            out.push_str(&format!(
                "http_requests_total{{workload=\"{name}\",code=\"500\"}} {errors} {t}\n"
            ));
        }
    }
    for (name, s) in workloads {
        let bounds = ["0.1", "0.25", "0.5", "1"];
        for (le, share) in bounds.iter().zip(s.within_permille) {
            for t in times() {
                out.push_str(&format!(
                    "http_request_duration_seconds_bucket{{workload=\"{name}\",le=\"{le}\"}} {} {t}\n",
                    total(s, t) * share / 1000
                ));
            }
        }
        for t in times() {
            out.push_str(&format!(
                "http_request_duration_seconds_bucket{{workload=\"{name}\",le=\"+Inf\"}} {} {t}\n",
                total(s, t)
            ));
        }
    }
    out.push_str("# EOF\n");
    out
}

/// The judge's check of `canary` against the Prometheus at `url`, for an analysis begun at
/// `since` (Unix milliseconds), if known.
async fn judge_at(
    canary: aviary_core::spec::Canary,
    url: String,
    since: Option<u64>,
) -> MetricOutcome {
    Evaluator::new(
        &canary,
        &Provider::GatewayApi,
        Vec::new(),
        None,
        Some(url),
        Auth::None,
    )
    .evaluate_at("judge", since)
    .await
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[tokio::test]
async fn the_judge_reads_the_release_history_from_prometheus() {
    let now = unix_now();
    // Twenty minutes of history (and a little ahead, so the latest intervals are whole).
    let (from, to) = (now - 20 * 60, now + 120);
    let erring = Served {
        errors_permille: 100,
        ..HEALTHY
    };
    let slow = Served {
        within_permille: [700, 850, 950, 1000],
        ..HEALTHY
    };
    let history = served_history(
        from,
        to,
        &[
            ("steady", HEALTHY),
            ("steady-primary", HEALTHY),
            ("erring", erring),
            ("erring-primary", HEALTHY),
            ("slow", slow),
            ("slow-primary", HEALTHY),
        ],
    );
    let prometheus = start_prometheus_with_history(&history).await;
    let score = |target: &str, method: &str, since: Option<u64>| {
        judge_at(
            judged_by_history(target, method),
            prometheus.url.clone(),
            since,
        )
    };
    let began = |ago_s: u64| Some((now - ago_s) * 1000);
    let value = |outcome: MetricOutcome, what: &str| match outcome {
        MetricOutcome::Value(v) => v,
        other => panic!("{what}: {other:?}"),
    };

    // Same error rate and latency as the primary: nothing against the canary.
    for method in ["sequential", "fixed-window"] {
        assert_value(
            score("steady", method, began(10 * 60)).await,
            100.0,
            0.001,
            &format!("steady canary, {method}"),
        );
    }
    // Ten times the primary's errors: the error metric fails, the score is below passScore.
    for method in ["sequential", "fixed-window"] {
        let s = value(score("erring", method, began(10 * 60)).await, method);
        assert!(s < 95.0, "erring canary, {method}: {s}");
        assert!((s - 50.0).abs() < 0.001, "erring canary, {method}: {s}");
    }
    // Slower buckets: the latency metric fails.
    for method in ["sequential", "fixed-window"] {
        let s = value(score("slow", method, began(10 * 60)).await, method);
        assert!((s - 50.0).abs() < 0.001, "slow canary, {method}: {s}");
    }
    // Without `since`, the latest window is read, and a regression still shows.
    let s = value(score("erring", "sequential", None).await, "no since");
    assert!((s - 50.0).abs() < 0.001, "erring canary without since: {s}");
}

#[tokio::test]
async fn the_judge_adds_the_primarys_hour_before_the_analysis_to_its_side() {
    let now = unix_now();
    // A busy canary beside a quiet primary (5 requests a second): the primary's errors during
    // the release are too few to tell 3‰ from 1‰, its hour before the analysis is not.
    let quiet = Served {
        rps: 5,
        errors_permille: 1,
        ..HEALTHY
    };
    let erring = Served {
        errors_permille: 3,
        ..HEALTHY
    };
    let history = served_history(
        now - 70 * 60,
        now + 120,
        &[("busy", erring), ("busy-primary", quiet)],
    );
    let prometheus = start_prometheus_with_history(&history).await;
    let score = |baseline: &'static str| {
        let canary = judged_by_history_with("busy", "sequential", baseline);
        judge_at(canary, prometheus.url.clone(), Some((now - 10 * 60) * 1000))
    };
    // The default baseline (1h): the error metric fails.
    assert_value(score("1h").await, 50.0, 0.001, "with the primary's hour");
    // Without it, the release alone cannot tell yet.
    assert_value(score("0s").await, 100.0, 0.001, "without a baseline");
}

#[tokio::test]
async fn the_judge_waits_for_data_while_the_canary_is_young() {
    let now = unix_now();
    // Only the primary served anything: the canary has no series at all.
    let history = served_history(now - 20 * 60, now + 120, &[("fresh-primary", HEALTHY)]);
    let prometheus = start_prometheus_with_history(&history).await;
    let score = |since: Option<u64>| {
        judge_at(
            judged_by_history("fresh", "sequential"),
            prometheus.url.clone(),
            since,
        )
    };
    // Began a minute ago, younger than the 5m window: not decided yet, not a failure.
    assert_value(
        score(Some((now - 60) * 1000)).await,
        100.0,
        0.001,
        "young canary without data",
    );
    // Began twenty minutes ago and still nothing: no data fails every metric.
    assert_value(
        score(Some((now - 20 * 60) * 1000)).await,
        0.0,
        0.001,
        "old canary without data",
    );
    // Without `since` the canary is not taken to be young.
    assert_value(score(None).await, 0.0, 0.001, "no since, no data");
}
