//! The queries aviary sends: every built-in query of src/metrics/builtin.rs (read from that
//! file, rendered here the way aviary renders them) and the sandbox's own, evaluated on a
//! hand-built storage with known answers.

use promlite::{eval_instant, eval_range, labels, Storage, Value};

const BUILTIN_RS: &str = include_str!("../../kube/src/metrics/builtin.rs");

/// `(const name, raw text)` of every `const NAME: &str = r#"..."#;` in builtin.rs.
fn builtin_texts() -> Vec<(String, String)> {
    let marker = ": &str = r#\"";
    let mut out = Vec::new();
    let mut rest = BUILTIN_RS;
    while let Some(i) = rest.find(marker) {
        let name = rest[..i]
            .rsplit("const ")
            .next()
            .unwrap()
            .trim()
            .to_string();
        let body = &rest[i + marker.len()..];
        let close = body.find("\"#").expect("an unterminated raw string");
        out.push((name, body[..close].to_string()));
        rest = &body[close..];
    }
    out
}

/// aviary's rendering: placeholders substituted, whitespace collapsed to single spaces.
fn render(text: &str, namespace: &str, target: &str, interval: &str) -> String {
    let text = text
        .replace("{{ namespace }}", namespace)
        .replace("{{ target }}", target)
        .replace("{{ ingress }}", target)
        .replace("{{ interval }}", interval);
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

const NS: &str = "prod";
const CANARY_POD: &str = "podinfo-7d9f8-x2x4b";
const PRIMARY_POD: &str = "podinfo-primary-7d9f8-x2x4b";
const END_S: i64 = 120;

/// Counters sampled every second from t=0 to t=END_S, growing by `per_s` per second.
fn add_counter(s: &mut Storage, l: &[(&str, &str)], per_s: f64) {
    for t in 0..=END_S {
        s.append(labels(l.iter().copied()), t * 1000, per_s * t as f64);
    }
}

/// Cumulative bucket counts per second: (le, count).
fn add_histogram(s: &mut Storage, name: &str, base: &[(&str, &str)], buckets: &[(&str, f64)]) {
    for (le, per_s) in buckets {
        let mut l: Vec<(&str, &str)> = base.to_vec();
        l.push(("__name__", name));
        l.push(("le", le));
        add_counter(s, &l, *per_s);
    }
}

/// A canary that answers 90 % of requests without a 5xx, in 0.1 s buckets that give a p99 of
/// 0.95 s; a primary that would answer 50 % and p99 = 0.099 s if it were (wrongly) selected.
fn storage() -> Storage {
    let mut s = Storage::new();
    let canary_buckets = [("0.1", 50.0), ("0.5", 90.0), ("1", 100.0), ("+Inf", 100.0)];
    let primary_buckets = [
        ("0.1", 1000.0),
        ("0.5", 1000.0),
        ("1", 1000.0),
        ("+Inf", 1000.0),
    ];
    // Istio
    let istio = [
        ("reporter", "destination"),
        ("destination_workload_namespace", NS),
        ("destination_workload", "podinfo"),
    ];
    for (code, per_s) in [("200", 9.0), ("503", 1.0)] {
        let mut l = istio.to_vec();
        l.extend([
            ("__name__", "istio_requests_total"),
            ("response_code", code),
        ]);
        add_counter(&mut s, &l, per_s);
    }
    let mut other = istio.to_vec();
    other[2] = ("destination_workload", "podinfo-primary");
    other.extend([
        ("__name__", "istio_requests_total"),
        ("response_code", "500"),
    ]);
    add_counter(&mut s, &other, 1000.0);
    add_histogram(
        &mut s,
        "istio_request_duration_milliseconds_bucket",
        &istio,
        &canary_buckets,
    );
    // NGINX
    let nginx = [
        ("namespace", NS),
        ("ingress", "podinfo"),
        ("canary", "podinfo-canary-80"),
    ];
    for (status, per_s) in [("200", 9.0), ("500", 1.0)] {
        let mut l = nginx.to_vec();
        l.extend([
            ("__name__", "nginx_ingress_controller_requests"),
            ("status", status),
        ]);
        add_counter(&mut s, &l, per_s);
    }
    add_counter(
        &mut s,
        &[
            ("__name__", "nginx_ingress_controller_requests"),
            ("namespace", NS),
            ("ingress", "podinfo"),
            ("status", "500"),
        ],
        1000.0,
    );
    let mut sum = nginx.to_vec();
    sum.push((
        "__name__",
        "nginx_ingress_controller_response_duration_seconds_sum",
    ));
    add_counter(&mut s, &sum, 2.0);
    let mut count = nginx.to_vec();
    count.push((
        "__name__",
        "nginx_ingress_controller_response_duration_seconds_count",
    ));
    add_counter(&mut s, &count, 10.0);
    // Gloo
    let cluster = [(
        "envoy_cluster_name",
        "prod-podinfo-canaryupstream-9898_http",
    )];
    for (code, per_s) in [("200", 9.0), ("503", 1.0)] {
        let mut l = cluster.to_vec();
        l.extend([
            ("__name__", "envoy_cluster_upstream_rq"),
            ("envoy_response_code", code),
        ]);
        add_counter(&mut s, &l, per_s);
    }
    add_histogram(
        &mut s,
        "envoy_cluster_upstream_rq_time_bucket",
        &cluster,
        &canary_buckets,
    );
    // Linkerd: the proxies' inbound responses of the target's pods.
    let linkerd = [
        ("namespace", NS),
        ("deployment", "podinfo"),
        ("direction", "inbound"),
    ];
    for (class, per_s) in [("success", 9.0), ("failure", 1.0)] {
        let mut l = linkerd.to_vec();
        l.extend([("__name__", "response_total"), ("classification", class)]);
        add_counter(&mut s, &l, per_s);
    }
    let mut primary = linkerd.to_vec();
    primary[1] = ("deployment", "podinfo-primary");
    primary.extend([
        ("__name__", "response_total"),
        ("classification", "failure"),
    ]);
    add_counter(&mut s, &primary, 1000.0);
    add_histogram(
        &mut s,
        "response_latency_ms_bucket",
        &linkerd,
        &canary_buckets,
    );
    // Kuma and Contour: Envoy's upstream metrics of the canary's service / cluster.
    for base in [
        ("service", "podinfo-canary_prod_svc_9898"),
        ("envoy_cluster_name", "prod_podinfo-canary_9898"),
    ] {
        for (code, per_s) in [("200", 9.0), ("503", 1.0)] {
            add_counter(
                &mut s,
                &[
                    base,
                    ("__name__", "envoy_cluster_upstream_rq"),
                    ("envoy_response_code", code),
                ],
                per_s,
            );
        }
        add_histogram(
            &mut s,
            "envoy_cluster_upstream_rq_time_bucket",
            &[base],
            &canary_buckets,
        );
    }
    // Traefik: the canary service's request-duration histogram, per status code (its +Inf
    // bucket counts the requests): 90 % without a 5xx, p99 0.95 s over both codes.
    let traefik = ("service", "prod-podinfo-canary-9898@kubernetescrd");
    for (code, share) in [("200", 0.9), ("500", 0.1)] {
        let buckets: Vec<(&str, f64)> = canary_buckets
            .iter()
            .map(|(le, n)| (*le, n * share))
            .collect();
        add_histogram(
            &mut s,
            "traefik_service_request_duration_seconds_bucket",
            &[traefik, ("code", code)],
            &buckets,
        );
    }
    // The pods' own histogram (kubernetes, gatewayapi, the sandbox).
    for (pod, ok, errors, buckets) in [
        (CANARY_POD, 9.0, 1.0, &canary_buckets),
        (PRIMARY_POD, 500.0, 500.0, &primary_buckets),
    ] {
        let pod_labels = [("kubernetes_namespace", NS), ("kubernetes_pod_name", pod)];
        for (status, per_s) in [("200", ok), ("503", errors)] {
            let mut l = pod_labels.to_vec();
            l.extend([
                ("__name__", "http_request_duration_seconds_count"),
                ("status", status),
            ]);
            add_counter(&mut s, &l, per_s);
        }
        add_histogram(
            &mut s,
            "http_request_duration_seconds_bucket",
            &pod_labels,
            buckets,
        );
    }
    s
}

fn value(s: &Storage, q: &str) -> f64 {
    match eval_instant(s, q, END_S * 1000) {
        Ok(Value::Vector(v)) if v.len() == 1 => v[0].value,
        Ok(Value::Scalar(x)) => x,
        other => panic!("{q}: {other:?}"),
    }
}

fn assert_close(got: f64, want: f64, q: &str) {
    assert!(
        (got - want).abs() <= 1e-9 * want.abs().max(1.0),
        "{q}: got {got}, want {want}"
    );
}

#[test]
fn every_builtin_query_parses_and_evaluates() {
    let texts = builtin_texts();
    let names: Vec<&str> = texts.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "ISTIO_SUCCESS_RATE",
            "ISTIO_DURATION",
            "NGINX_SUCCESS_RATE",
            "NGINX_DURATION",
            "GLOO_SUCCESS_RATE",
            "GLOO_DURATION",
            "HTTP_SUCCESS_RATE",
            "HTTP_DURATION",
            "LINKERD_SUCCESS_RATE",
            "LINKERD_DURATION",
            "KUMA_SUCCESS_RATE",
            "KUMA_DURATION",
            "CONTOUR_SUCCESS_RATE",
            "CONTOUR_DURATION",
            "TRAEFIK_SUCCESS_RATE",
            "TRAEFIK_DURATION"
        ],
        "the built-in queries of src/metrics/builtin.rs changed: update this test"
    );
    let s = storage();
    for interval in ["1m", "30s", "2m", "1m30s"] {
        for (name, text) in &texts {
            let mut q = render(text, NS, "podinfo", interval);
            // builtin_query() converts the HTTP observer's seconds to milliseconds.
            if name == "HTTP_DURATION" {
                q.push_str(" * 1000");
            }
            let want = match name.as_str() {
                n if n.ends_with("SUCCESS_RATE") => 90.0,
                "NGINX_DURATION" => 200.0,
                "HTTP_DURATION" | "TRAEFIK_DURATION" => 950.0,
                _ => 0.95,
            };
            assert_close(value(&s, &q), want, &q);
            // The statistical judge's range queries too.
            let m = eval_range(&s, &q, 90_000, END_S * 1000, 10_000).unwrap();
            assert_eq!(m.len(), 1, "{q}");
            assert_eq!(m[0].points.len(), 4, "{q}");
            assert!(
                m[0].points.iter().all(|p| (p.1 - want).abs() < 1e-6),
                "{q}: {m:?}"
            );
        }
    }
}

#[test]
fn the_sandbox_queries_evaluate() {
    let s = storage();
    let success = r#"sum(rate(http_request_duration_seconds_count{kubernetes_namespace="prod",kubernetes_pod_name=~"podinfo-[0-9a-zA-Z]+(-[0-9a-zA-Z]+)",status!~"5.*"}[10s])) / sum(rate(http_request_duration_seconds_count{kubernetes_namespace="prod",kubernetes_pod_name=~"podinfo-[0-9a-zA-Z]+(-[0-9a-zA-Z]+)"}[10s])) * 100"#;
    assert_close(value(&s, success), 90.0, success);
    // The primary's p99: 99 % of 1000/s in the first bucket: 0.1 * 0.99 s.
    let primary = r#"histogram_quantile(0.99, sum(rate(http_request_duration_seconds_bucket{kubernetes_namespace="prod",kubernetes_pod_name=~"podinfo-primary-[0-9a-zA-Z]+(-[0-9a-zA-Z]+)"}[5s])) by (le)) * 1000"#;
    assert_close(value(&s, primary), 99.0, primary);
    // The canary's 5xx over 10 s: 1/s, samples every second -> 10 (extrapolated by 1 s over the
    // 9 s between the first and last sample of the window).
    let errors = r#"sum(increase(http_request_duration_seconds_count{kubernetes_pod_name=~"podinfo-[0-9a-zA-Z]+(-[0-9a-zA-Z]+)", status=~"5.."}[10s]))"#;
    assert_close(value(&s, errors), 10.0, errors);
    assert_eq!(value(&s, "vector(1)"), 1.0);
}

#[test]
fn no_traffic_gives_nan_or_nothing() {
    // A canary without requests: the success rate is 0/0, which aviary reads as "no values".
    let mut s = Storage::new();
    add_counter(
        &mut s,
        &[
            ("__name__", "http_request_duration_seconds_count"),
            ("kubernetes_namespace", NS),
            ("kubernetes_pod_name", CANARY_POD),
        ],
        0.0,
    );
    let q = r#"sum(rate(http_request_duration_seconds_count{kubernetes_namespace="prod",status!~"5.*"}[10s])) / sum(rate(http_request_duration_seconds_count{kubernetes_namespace="prod"}[10s])) * 100"#;
    assert!(value(&s, q).is_nan());
    let none = r#"sum(rate(nothing[10s]))"#;
    assert_eq!(
        eval_instant(&s, none, END_S * 1000),
        Ok(Value::Vector(vec![]))
    );
}
