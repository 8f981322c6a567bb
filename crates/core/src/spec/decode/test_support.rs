//! The fixtures and helpers the decoder's unit tests share.

use super::decode_documents;
pub(super) use super::document::{AVIARY_API, FLAGGER_API};
use crate::spec::{Documents, SpecError};

pub(super) const PODINFO: &str = r#"# A Deployment next to its Canary, as Flagger's docs have it.
apiVersion: apps/v1
kind: Deployment
metadata:
  name: podinfo
  namespace: test
spec:
  replicas: 2
---
apiVersion: flagger.app/v1beta1
kind: Canary
metadata:
  name: podinfo
  namespace: test
  labels:
    app: podinfo
spec:
  provider: istio
  targetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: podinfo
  progressDeadlineSeconds: 60
  autoscalerRef:
    apiVersion: autoscaling/v2
    kind: HorizontalPodAutoscaler
    name: podinfo
  service:
    port: 9898
    targetPort: http
    gateways:
    - public-gateway.istio-system.svc.cluster.local
    gatewayRefs:
    - name: public-gateway
      namespace: istio-ingress
      sectionName: https
    hosts:
    - app.example.com
    trafficPolicy:
      tls:
        mode: DISABLE
    retries:
      attempts: 3
      perTryTimeout: 1s
      retryOn: "gateway-error,connect-failure,refused-stream"
    match:
    - uri:
        prefix: /api
  analysis:
    interval: 30s
    maxWeight: 50
    stepWeight: 10
    metrics:
    - name: request-success-rate
      thresholdRange:
        min: 99
    - name: latency
      templateRef:
        name: latency
        namespace: istio-system
      thresholdRange:
        max: 500.5
      interval: 30s
      templateVariables:
        direction: inbound
    webhooks:
    - name: acceptance-test
      type: pre-rollout
      url: http://flagger-loadtester.test/
      timeout: 30s
      metadata:
        type: bash
        cmd: "curl -sd 'test' http://podinfo-canary:9898/token | grep token"
    - name: load-test
      url: http://flagger-loadtester.test/
      metadata:
        cmd: "hey -z 1m -q 10 -c 2 http://podinfo-canary.test:9898/"
    - name: gate
      type: confirm-promotion
      url: http://flagger-loadtester.test/gate/approve
      retries: 2
      muteAlert: true
status:
  phase: Succeeded
---
apiVersion: flagger.app/v1beta1
kind: MetricTemplate
metadata:
  name: latency
  namespace: istio-system
spec:
  provider:
    type: prometheus
    address: http://prometheus.istio-system:9090
  query: |
    histogram_quantile(0.99, sum(rate(x[{{ interval }}])) by (le))
"#;

pub(super) fn decode(text: &str) -> Documents {
    match decode_documents("canary.yaml", text) {
        Ok(d) => d,
        Err(e) => panic!("expected no errors, got:\n{e}"),
    }
}

/// Every error, rendered as the CLI prints it.
pub(super) fn errors(text: &str) -> Vec<String> {
    match decode_documents("canary.yaml", text) {
        Ok(d) => panic!("expected errors, got {d:#?}"),
        Err(SpecError::Invalid { errors, .. }) => errors.iter().map(ToString::to_string).collect(),
        Err(e) => panic!("unexpected {e}"),
    }
}

/// Every warning but the one for an analysis Flagger's CRD refuses (most fixtures here leave out
/// interval and threshold; `flagger_refuses` has its own tests).
pub(super) fn warnings(text: &str) -> Vec<String> {
    decode(text)
        .warnings
        .iter()
        .filter(|w| !w.message.starts_with(super::analysis::FLAGGER_REFUSES))
        .map(ToString::to_string)
        .collect()
}

/// [`decode`], without the warning for an analysis Flagger's CRD refuses.
pub(super) fn decode_lenient(text: &str) -> Documents {
    let mut docs = decode(text);
    docs.warnings
        .retain(|w| !w.message.starts_with(super::analysis::FLAGGER_REFUSES));
    docs
}

/// A minimal valid canary whose analysis body starts on line 12.
/// Lines: 1 apiVersion, 2 kind, 3 metadata, 4 name, 5 spec, 6 targetRef, 7 kind, 8 name,
/// 9 service, 10 port, 11 analysis.
pub(super) fn canary(api: &str, analysis: &str) -> String {
    format!(
        "apiVersion: {api}\nkind: Canary\nmetadata:\n  name: podinfo\nspec:\n  targetRef:\n    kind: Deployment\n    name: podinfo\n  service:\n    port: 9898\n  analysis:\n{analysis}"
    )
}

pub(super) const STEPS: &str = "    stepWeight: 10\n    maxWeight: 50\n";
