//! The whole loop against a real Prometheus: `aviary rollout` judging a canary by the data
//! Prometheus scrapes from workloads under real load. The workloads, Prometheus and the loopback
//! plumbing are aviary-kube's Prometheus test harness (`crates/kube/tests/prometheus/harness.rs`,
//! included by its path); the metrics client's own tests against Prometheus are there too
//! (`cargo test -p aviary-kube --test prometheus`).

#[path = "../crates/kube/tests/prometheus/harness.rs"]
mod harness;

use std::time::Duration;

use harness::{start_prometheus, start_workload, Behaviour, Identity, Load};

use crate::util;

// =============================================================================================
// The whole loop: `aviary rollout` judging a canary by Prometheus data from real traffic.

/// A rollout with a good version promotes and with a bad one (20% 5xx) rolls back, judged by the
/// built-in success rate that a real Prometheus computes from workloads under real load.
#[test]
fn rollouts_are_judged_by_prometheus() {
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => panic!("{e}"),
    };
    let c = util::cluster();
    let pod = Identity {
        namespace: "test",
        workload: "podinfo",
        pod: "podinfo-5d7f8b9c6d-x7k2p",
        cluster: "test-podinfo-canaryupstream-9898_test",
        ingress: "podinfo",
        canary_upstream: "test-podinfo-canaryupstream-9898",
    };
    let canary = c.write(
        "canary.yaml",
        "apiVersion: aviary.dev/v1alpha1
kind: Canary
metadata:
  name: podinfo
  namespace: test
spec:
  provider: gatewayapi
  targetRef: {apiVersion: apps/v1, kind: Deployment, name: podinfo}
  service:
    port: 9898
    gatewayRefs: [{name: public, namespace: gateway-system}]
  analysis:
    interval: 2s
    threshold: 2
    maxWeight: 50
    stepWeight: 50
    metrics:
      - name: request-success-rate
        interval: 10s
        thresholdRange: {min: 99}
",
    );
    c.apply_target("podinfo:1", 2);
    util::code(&c.run(&canary));

    let judged = |version: &str, behaviour: Behaviour| -> std::process::Output {
        let workload = start_workload(pod.clone(), behaviour);
        let labels = workload.target_labels();
        let prometheus = rt.block_on(start_prometheus(&[("podinfo", workload.addr, &labels)]));
        let _load = Load::start(vec![workload.addr], 100_000, Duration::from_secs(90));
        // Let a few scrapes land so the 10s rate has data.
        std::thread::sleep(Duration::from_secs(3));
        c.apply_target(version, 2);
        let mut cmd = c.aviary(&canary, &[]);
        cmd.arg("--prometheus-url").arg(&prometheus.url);
        let out = match cmd.output() {
            Ok(o) => o,
            Err(e) => panic!("{e}"),
        };
        drop(prometheus);
        out
    };

    let good = judged(
        "podinfo:2",
        Behaviour {
            error_every: None,
            fast_ms: 20.0,
            slow_ms: 20.0,
        },
    );
    assert_eq!(util::code(&good), 0, "{}", util::stderr(&good));
    assert!(util::stderr(&good).contains("verdict: promoted"));

    let bad = judged(
        "podinfo:3",
        Behaviour {
            error_every: Some(5),
            fast_ms: 20.0,
            slow_ms: 20.0,
        },
    );
    let err = util::stderr(&bad);
    assert_eq!(util::code(&bad), 1, "{err}");
    assert!(
        err.contains("Halt podinfo.test advancement success rate") && err.contains("% < 99%"),
        "{err}"
    );
    assert!(
        err.contains("Rolling back podinfo.test failed checks threshold reached 2"),
        "{err}"
    );
    let primary = c.get("apps/v1", "deployments", "podinfo-primary");
    assert_eq!(util::image(&primary), "podinfo:2");
}
