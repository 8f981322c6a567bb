//! Turns the YAML tree into typed [`Canary`](crate::spec::Canary) and
//! [`MetricTemplate`](crate::spec::MetricTemplate) values, reporting every problem at once, each
//! with its line, field path and, where one can be stated, the fix.
//!
//! The small framework in `diagnostics.rs` and `fields.rs` keeps each field to one line: a
//! [`Reader`](fields::Reader) reads the keys of one mapping, remembers which keys it knows, and
//! reports the others when it is finished; a [`Field`](fields::Field) is one value with its path,
//! converted with type checks that record what went wrong in the [`Cx`](diagnostics::Cx).
//!
//! - `mod.rs`: [`decode_documents`], the entry point, and the limits aviary sets.
//! - `diagnostics.rs`: the context that collects errors and warnings, paths, did-you-mean, field help.
//! - `fields.rs`: `Field` and `Reader`, the typed readers of one value and of one mapping.
//! - `names.rs`: checks of Kubernetes names, of the names aviary derives, and of list item names.
//! - `document.rs`: one YAML document: apiVersion, kind and metadata, then the Canary or MetricTemplate.
//! - `canary.rs`: the Canary's spec: provider, targetRef and the other references, autoscalerRef.
//! - `service.rs`: `spec.service`: ports, routing fields, headers and custom metadata.
//! - `matches.rs`: HTTP request matches and their string matches.
//! - `analysis.rs`: `spec.analysis` and the checks of its rollout strategy.
//! - `judge.rs`: `analysis.judge`, aviary's statistical judge.
//! - `alerts.rs`: `analysis.alerts`.
//! - `metrics.rs`: `analysis.metrics`: built-ins, templateRefs, queries and threshold ranges.
//! - `webhooks.rs`: `analysis.webhooks`.
//! - `metric_template.rs`: a MetricTemplate's spec.
//! - `unapplied.rs`: warnings for the Flagger fields a router does not apply yet.
//! - `test_support.rs`: the fixtures and helpers the unit tests share.

mod alerts;
mod analysis;
mod canary;
mod diagnostics;
mod document;
mod fields;
mod judge;
mod matches;
mod metric_template;
mod metrics;
mod names;
mod provider_checks;
mod service;
#[cfg(test)]
mod test_support;
mod webhooks;

use std::time::Duration;

use super::yaml::parse_documents;
use super::{Documents, SpecError, TemplateUse};
pub(crate) use canary::unrouted;
use diagnostics::{field_help, Cx};
use document::decode_document;

/// The most `iterations` and `threshold` aviary accepts. Flagger's CRD sets no maximum; each counts
/// analysis ticks, and a million ticks is 11.6 days at aviary's shortest interval (1s) and 116
/// days at Flagger's (10s): no real analysis comes near it, while `2147483647` would be 68 years
/// at 1s.
pub const MAX_TICK_COUNT: i64 = 1_000_000;
/// The longest analysis `interval`: a day between two checks. Flagger's CRD allows any number of
/// minutes; a canary checked less than daily is not being analysed.
pub const MAX_INTERVAL: Duration = Duration::from_secs(24 * 3600);
/// The most `retries` of one webhook call (Flagger: no maximum). Each retry waits up to 5s plus
/// the webhook's timeout, so 100 retries already hold one tick for many minutes.
pub const MAX_WEBHOOK_RETRIES: i64 = 100;

/// Reads every Canary and MetricTemplate of `text` (named `file` in messages). Documents of other kinds
/// are listed in [`Documents::skipped`]. Any error makes the whole file invalid; all of them are reported.
pub fn decode_documents(file: &str, text: &str) -> Result<Documents, SpecError> {
    let text = super::input::strip_bom(text);
    let docs = match parse_documents(file, text) {
        Ok(docs) => docs,
        Err(errors) => {
            return Err(SpecError::Invalid {
                errors,
                warnings: Vec::new(),
            })
        }
    };
    let mut cx = Cx::new(file, text);
    let mut out = Documents::default();
    for doc in &docs {
        decode_document(&mut cx, doc, &mut out);
    }
    // `{{ variables.X }}` of the templates in this file against the metrics that use them.
    let local: Vec<TemplateUse> = cx
        .uses
        .iter()
        .filter(|u| u.find(&out.templates).is_some())
        .cloned()
        .collect();
    cx.errors
        .extend(super::check_template_uses(&local, &out.templates));
    out.template_uses = std::mem::take(&mut cx.uses);
    // Unknown fields are found when a mapping is finished; present everything in file order.
    cx.errors.sort_by_key(|d| d.line);
    for d in cx.errors.iter_mut().filter(|d| d.help.is_none()) {
        d.help = field_help(&d.path).map(str::to_string);
    }
    cx.warnings.sort_by_key(|d| d.line);
    if cx.errors.is_empty() {
        out.warnings = cx.warnings;
        Ok(out)
    } else {
        Err(SpecError::Invalid {
            errors: cx.errors,
            warnings: cx.warnings,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::decode::test_support::*;
    use crate::spec::types::*;
    use crate::spec::Diagnostic;
    use proptest::prelude::{any, proptest, ProptestConfig};
    use std::collections::BTreeMap;

    #[test]
    fn podinfo_decodes_with_values_and_defaults() {
        let docs = decode_lenient(PODINFO);
        assert_eq!(docs.warnings, Vec::<Diagnostic>::new());
        assert_eq!(docs.skipped.len(), 1);
        assert_eq!(
            docs.skipped[0],
            (
                "apps/v1".to_string(),
                "Deployment".to_string(),
                Origin {
                    file: "canary.yaml".to_string(),
                    line: 2
                }
            )
        );
        assert_eq!(docs.canaries.len(), 1);
        let c = &docs.canaries[0];
        assert_eq!(c.api_version, ApiVersion::FlaggerV1beta1);
        assert_eq!(c.name, "podinfo");
        assert_eq!(c.namespace, "test");
        assert!(c.namespace_explicit);
        assert_eq!(c.qualified_name(), "podinfo.test");
        assert_eq!(c.origin.line, 10);
        assert_eq!(c.provider, Some(Provider::Istio));
        assert_eq!(
            c.target_ref,
            ObjectRef {
                api_version: Some("apps/v1".into()),
                kind: Some("Deployment".into()),
                name: "podinfo".into(),
                namespace: None
            }
        );
        assert_eq!(c.progress_deadline_seconds, 60);
        let hpa = c.autoscaler_ref.as_ref().unwrap();
        assert_eq!(hpa.kind.as_deref(), Some("HorizontalPodAutoscaler"));
        assert_eq!(hpa.name, "podinfo");

        let s = &c.service;
        assert_eq!(s.name, "podinfo", "defaults to targetRef.name");
        assert_eq!(s.port, 9898);
        assert_eq!(s.port_name, "http", "defaults to http");
        assert_eq!(s.target_port, Some(IntOrString::String("http".into())));
        assert_eq!(
            s.gateways,
            vec!["public-gateway.istio-system.svc.cluster.local"]
        );
        assert_eq!(
            s.gateway_refs,
            vec![GatewayRef {
                name: "public-gateway".into(),
                namespace: Some("istio-ingress".into()),
                section_name: Some("https".into()),
                ..GatewayRef::default()
            }]
        );
        assert_eq!(s.hosts, vec!["app.example.com"]);
        assert_eq!(
            s.traffic_policy,
            Some(serde_json::json!({"tls": {"mode": "DISABLE"}}))
        );
        assert_eq!(
            s.retries,
            Some(HttpRetry {
                attempts: Some(3),
                per_try_timeout: Some("1s".into()),
                retry_on: Some("gateway-error,connect-failure,refused-stream".into())
            })
        );
        assert_eq!(s.r#match.len(), 1);
        assert_eq!(s.r#match[0].uri, Some(StringMatch::Prefix("/api".into())));

        let a = c.analysis.as_ref().unwrap();
        assert_eq!(a.interval, Duration::from_secs(30));
        assert_eq!(a.threshold, 1, "defaults to 1");
        assert_eq!((a.max_weight, a.step_weight), (50, 10));
        assert_eq!(a.max_weight(), 50);
        assert_eq!(a.primary_ready_threshold, 100);
        assert_eq!(a.canary_ready_threshold, 100);
        assert_eq!(a.iterations, 0);
        assert!(a.r#match.is_empty());

        assert_eq!(a.metrics.len(), 2);
        let m0 = &a.metrics[0];
        assert_eq!(m0.name, "request-success-rate");
        assert_eq!(m0.interval, Duration::from_secs(60), "defaults to 1m");
        assert_eq!(m0.interval_text, "1m");
        assert_eq!(
            m0.threshold_range,
            ThresholdRange {
                min: Some(99.0),
                max: None
            }
        );
        assert_eq!(
            m0.source,
            MetricSource::Builtin(BuiltinMetric::RequestSuccessRate)
        );
        let m1 = &a.metrics[1];
        assert_eq!(m1.interval, Duration::from_secs(30));
        assert_eq!(m1.interval_text, "30s");
        assert_eq!(m1.threshold_range.max, Some(500.5));
        assert_eq!(
            m1.source,
            MetricSource::Template {
                template: ObjectRef {
                    name: "latency".into(),
                    namespace: Some("istio-system".into()),
                    ..ObjectRef::default()
                },
                variables: BTreeMap::from([("direction".to_string(), "inbound".to_string())]),
            }
        );

        assert_eq!(a.webhooks.len(), 3);
        let w = &a.webhooks;
        assert_eq!(w[0].hook_type, HookType::PreRollout);
        assert_eq!(w[0].timeout, Duration::from_secs(30));
        assert_eq!(w[0].metadata.get("type").map(String::as_str), Some("bash"));
        assert_eq!(
            w[1].hook_type,
            HookType::Rollout,
            "type defaults to rollout"
        );
        assert_eq!(w[1].timeout, Duration::from_secs(10), "defaults to 10s");
        assert_eq!(w[1].retries, 0);
        assert!(!w[1].mute_alert);
        assert_eq!(w[2].hook_type, HookType::ConfirmPromotion);
        assert_eq!(w[2].url, "http://flagger-loadtester.test/gate/approve");
        assert_eq!((w[2].retries, w[2].mute_alert), (2, true));

        assert_eq!(docs.templates.len(), 1);
        let t = &docs.templates[0];
        assert_eq!(
            (t.name.as_str(), t.namespace.as_str()),
            ("latency", "istio-system")
        );
        assert_eq!(t.provider.provider_type, "prometheus");
        assert_eq!(
            t.provider.address.as_deref(),
            Some("http://prometheus.istio-system:9090")
        );
        assert!(t.query.starts_with("histogram_quantile(0.99"));
        assert_eq!(t.origin.line, 86);
    }

    #[test]
    fn three_independent_errors_are_all_reported() {
        let text = canary(
            FLAGGER_API,
            "    stepWeight: ten\n    mirror: yes\n    webhooks:\n    - name: a\n      url: ftp://x\n",
        )
        .replace("port: 9898", "port: 70000");
        assert_eq!(
            errors(&text),
            vec![
                "canary.yaml:10: spec.service.port: expected an integer 1-65535, got 70000\n  help: a port number 1-65535, e.g. port: 9898",
                "canary.yaml:12: spec.analysis.stepWeight: expected an integer 1-100, got \"ten\"\n  help: stepWeight is the percentage of traffic added to the canary at each step, e.g. stepWeight: 10",
                "canary.yaml:13: spec.analysis.mirror: expected true or false, got \"yes\"\n  help: write true or false: like Kubernetes, aviary reads YAML 1.2, where yes, no, on and off are strings",
                "canary.yaml:16: spec.analysis.webhooks[0].url: expected an http:// or https:// URL, got \"ftp://x\"\n  help: write the full address, such as http://flagger-loadtester.test/",
            ]
        );
    }

    #[test]
    fn less_common_fields() {
        let text = r#"apiVersion: aviary.dev/v1alpha1
kind: Canary
metadata:
  name: web
  namespace: prod
spec:
  provider: nginx
  metricsServer: http://prometheus:9090
  targetRef: {apiVersion: apps/v1, kind: DaemonSet, name: web}
  ingressRef: {apiVersion: networking.k8s.io/v1, kind: Ingress, name: web}
  upstreamRef: {name: up, namespace: gloo-system}
  autoscalerRef:
    kind: ScaledObject
    name: web
    primaryScalerQueries: {q: "sum(x)"}
    primaryScalerReplicas: {minReplicas: 2, maxReplicas: 10}
  service:
    name: web-apex
    port: 80
    portName: grpc
    targetPort: 8080
    timeout: 15s
    headers:
      request:
        set: {x-a: "1"}
        remove: [x-b]
    corsPolicy: &cors
      allowOrigins: [{exact: "https://x"}]
      maxAge: 24h
    apex:
      labels: {tier: web}
      annotations: {a: b}
    rewrite: {uri: /}
  analysis:
    interval: 1m
    threshold: 3
    iterations: 10
    mirror: true
    mirrorWeight: 20
    primaryReadyThreshold: 50
    canaryReadyThreshold: 0
    alerts:
    - name: on-call
      severity: error
      providerRef: {name: slack, namespace: flagger}
    - name: info
      providerRef: {name: slack}
    sessionAffinity:
      cookieName: canary
    webhooks:
    - name: notify
      type: event
      url: https://hooks.example.com/x
      timeout: 1m30s
  progressDeadlineSeconds: 120
  revertOnDeletion: true
  suspend: false
"#;
        let docs = decode_lenient(text);
        assert_eq!(docs.warnings, Vec::<Diagnostic>::new());
        let c = &docs.canaries[0];
        assert_eq!(c.api_version, ApiVersion::AviaryV1alpha1);
        assert_eq!(c.provider, Some(Provider::Nginx));
        assert_eq!(c.metrics_server.as_deref(), Some("http://prometheus:9090"));
        assert_eq!(c.target_ref.kind.as_deref(), Some("DaemonSet"));
        assert_eq!(c.ingress_ref.as_ref().map(|r| r.name.as_str()), Some("web"));
        assert_eq!(
            c.upstream_ref.as_ref().and_then(|r| r.namespace.as_deref()),
            Some("gloo-system")
        );
        let scaler = c.autoscaler_ref.as_ref().unwrap();
        assert_eq!(scaler.kind.as_deref(), Some("ScaledObject"));
        assert_eq!(
            scaler.primary_scaler_queries.get("q").map(String::as_str),
            Some("sum(x)")
        );
        assert_eq!(
            scaler.primary_scaler_replicas,
            Some(ScalerReplicas {
                min_replicas: Some(2),
                max_replicas: Some(10)
            })
        );
        let s = &c.service;
        assert_eq!(
            (s.name.as_str(), s.port, s.port_name.as_str()),
            ("web-apex", 80, "grpc")
        );
        assert_eq!(s.target_port, Some(IntOrString::Int(8080)));
        assert_eq!(s.timeout.as_deref(), Some("15s"));
        let req = s.headers.as_ref().and_then(|h| h.request.as_ref()).unwrap();
        assert_eq!(req.set.get("x-a").map(String::as_str), Some("1"));
        assert_eq!(req.remove, vec!["x-b"]);
        assert_eq!(
            s.cors_policy,
            Some(serde_json::json!({"allowOrigins": [{"exact": "https://x"}], "maxAge": "24h"}))
        );
        assert_eq!(
            s.apex
                .as_ref()
                .unwrap()
                .labels
                .get("tier")
                .map(String::as_str),
            Some("web")
        );
        assert_eq!(s.rewrite.as_ref().unwrap().uri.as_deref(), Some("/"));
        let a = c.analysis.as_ref().unwrap();
        assert_eq!(a.interval, Duration::from_secs(60));
        assert_eq!((a.threshold, a.iterations), (3, 10));
        assert_eq!((a.mirror, a.mirror_weight), (true, Some(20)));
        assert_eq!(
            (a.primary_ready_threshold, a.canary_ready_threshold),
            (50, 0)
        );
        assert_eq!(a.alerts.len(), 2);
        assert_eq!(a.alerts[0].severity, "error");
        assert_eq!(a.alerts[1].severity, "info");
        assert_eq!(a.alerts[1].provider_ref.name, "slack");
        assert_eq!(
            a.session_affinity,
            Some(SessionAffinity {
                cookie_name: "canary".into(),
                max_age: 86_400,
                primary_cookie_name: None,
                domain: None,
                http_only: false,
                partitioned: false,
                path: None,
                same_site: None,
                secure: false,
            })
        );
        assert_eq!(a.webhooks[0].hook_type, HookType::Event);
        assert_eq!(a.webhooks[0].timeout, Duration::from_secs(90));
        assert_eq!(c.progress_deadline_seconds, 120);
        assert!(c.revert_on_deletion && !c.suspend && !c.skip_analysis);

        let bad = text
            .replace("severity: error", "severity: critical")
            .replace("cookieName: canary", "maxAge: 0")
            .replace("kind: ScaledObject", "kind: Hpa");
        assert_eq!(
            errors(&bad),
            vec![
                "canary.yaml:13: spec.autoscalerRef.kind: unknown autoscaler kind \"Hpa\"\n  help: use one of: HorizontalPodAutoscaler, ScaledObject",
                "canary.yaml:44: spec.analysis.alerts[0].severity: unknown severity \"critical\"\n  help: use one of: info, warn, error",
                "canary.yaml:48: spec.analysis.sessionAffinity: missing required field \"cookieName\"",
            ]
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn never_panics_on_any_string(text in any::<String>()) {
            let _ = decode_documents("fuzz.yaml", &text);
        }

        #[test]
        fn never_panics_on_yamlish_text(text in "[a-zA-Z0-9 :\\-\\[\\]{},'\"#&*!|>?\n]{0,200}") {
            let _ = decode_documents("fuzz.yaml", &text);
        }

        #[test]
        fn never_panics_on_mutated_canaries(cut in 0usize..2000, insert in "[ :\\-\\[\\]{}'\"&*!\n0-9a-z]{0,6}") {
            let base = PODINFO;
            let at = cut.min(base.len());
            let at = (0..=at).rev().find(|i| base.is_char_boundary(*i)).unwrap_or(0);
            let text = format!("{}{}{}", &base[..at], insert, &base[at..]);
            let _ = decode_documents("fuzz.yaml", &text);
        }
    }
}
