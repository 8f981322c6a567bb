//! The built-in `request-success-rate` and `request-duration` checks: Flagger's PromQL, per
//! provider, from `pkg/metrics/observers/{istio,nginx,gloo,http,linkerd,kuma,contour,traefik}.go`.
//!
//! The texts below are Flagger's, placeholders included, and are rendered with the same template
//! code as a MetricTemplate, then collapsed to one line as Flagger does before sending them. Every
//! built-in query answers in the unit the engine expects: a percentage for the success rate,
//! milliseconds for the duration. Flagger's HTTP observer (`kubernetes`) queries seconds and
//! multiplies by 1000 in Go; aviary appends `* 1000` to that query instead, which gives the same
//! number. The engine truncates durations to whole milliseconds, as Flagger does.
//!
//! Providers: `istio`; `nginx` (the `ingress` label is the `ingressRef` name, `canary!=""` selects
//! the canary's traffic; the duration is the mean from `_sum/_count`, the metric Flagger uses
//! since fluxcd/flagger#1686); `gloo` (the canary upstream `<ns>-<target>-canaryupstream-<port>`);
//! `kubernetes`, `kubernetes:replicas` and `gatewayapi` use Flagger's HTTP observer queries on the
//! pods' own `http_request_duration_seconds` histogram. (Flagger has no Gateway API observer: its
//! factory falls back to the Istio queries there, which only work on Istio; aviary uses the
//! mesh-independent pod metrics instead.) `linkerd`: the proxies' inbound `response_total` and
//! `response_latency_ms` of the target's pods; `kuma`: Envoy's upstream metrics of the
//! `<target>-canary_<ns>_svc_<port>` Kuma service; `contour`: Envoy's upstream metrics of the
//! `<ns>_<target>-canary_<port>` cluster; `traefik`: the `<ns>-<target>-canary-<port>@kubernetescrd`
//! service's request-duration histogram (its `+Inf` bucket counts requests; Flagger's duration
//! query multiplies the seconds by 1000 itself). aviary routes these four with an HTTPRoute where
//! Flagger writes the provider's own object; the queries are Flagger's all the same. (With
//! Traefik's Gateway provider the service label ends `@kubernetesgateway`, not `@kubernetescrd`,
//! so there the built-in Traefik queries find nothing: define the checks with a MetricTemplate.)
//! Other providers have no built-in query in aviary.

use std::collections::BTreeMap;

use super::template::{collapse_whitespace, render_template};
use super::{MetricContext, MetricError};
use aviary_core::spec::{BuiltinMetric, Provider};

const ISTIO_SUCCESS_RATE: &str = r#"
	sum(
		rate(
			istio_requests_total{
				reporter="destination",
				destination_workload_namespace="{{ namespace }}",
				destination_workload=~"{{ target }}",
				response_code!~"5.*"
			}[{{ interval }}]
		)
	) 
	/ 
	sum(
		rate(
			istio_requests_total{
				reporter="destination",
				destination_workload_namespace="{{ namespace }}",
				destination_workload=~"{{ target }}"
			}[{{ interval }}]
		)
	) 
	* 100"#;

const ISTIO_DURATION: &str = r#"
	histogram_quantile(
		0.99,
		sum(
			rate(
				istio_request_duration_milliseconds_bucket{
					reporter="destination",
					destination_workload_namespace="{{ namespace }}",
					destination_workload=~"{{ target }}"
				}[{{ interval }}]
			)
		) by (le)
	)"#;

const NGINX_SUCCESS_RATE: &str = r#"
	sum(
		rate(
			nginx_ingress_controller_requests{
				namespace="{{ namespace }}",
				ingress="{{ ingress }}",
				canary!="",
				status!~"5.*"
			}[{{ interval }}]
		)
	) 
	/ 
	sum(
		rate(
			nginx_ingress_controller_requests{
				namespace="{{ namespace }}",
				ingress="{{ ingress }}",
				canary!=""
			}[{{ interval }}]
		)
	) 
	* 100"#;

const NGINX_DURATION: &str = r#"
	sum(
		rate(
			nginx_ingress_controller_response_duration_seconds_sum{
				namespace="{{ namespace }}",
				ingress="{{ ingress }}",
				canary!=""
			}[{{ interval }}]
		)
	) 
	/ 
	sum(
		rate(
			nginx_ingress_controller_response_duration_seconds_count{
				namespace="{{ namespace }}",
				ingress="{{ ingress }}",
				canary!=""
			}[{{ interval }}]
		)
	) 
	* 1000"#;

const GLOO_SUCCESS_RATE: &str = r#"
	sum(
		rate(
			envoy_cluster_upstream_rq{
				envoy_cluster_name=~"{{ namespace }}-{{ target }}-canaryupstream-[0-9a-zA-Z-]+_[0-9a-zA-Z-]+",
				envoy_response_code!~"5.*"
			}[{{ interval }}]
		)
	) 
	/ 
	sum(
		rate(
			envoy_cluster_upstream_rq{
				envoy_cluster_name=~"{{ namespace }}-{{ target }}-canaryupstream-[0-9a-zA-Z-]+_[0-9a-zA-Z-]+",
			}[{{ interval }}]
		)
	) 
	* 100"#;

const GLOO_DURATION: &str = r#"
	histogram_quantile(
		0.99,
		sum(
			rate(
				envoy_cluster_upstream_rq_time_bucket{
					envoy_cluster_name=~"{{ namespace }}-{{ target }}-canaryupstream-[0-9a-zA-Z-]+_[0-9a-zA-Z-]+",
				}[{{ interval }}]
			)
		) by (le)
	)"#;

const HTTP_SUCCESS_RATE: &str = r#"
	sum(
		rate(
			http_request_duration_seconds_count{
				kubernetes_namespace="{{ namespace }}",
				kubernetes_pod_name=~"{{ target }}-[0-9a-zA-Z]+(-[0-9a-zA-Z]+)",
				status!~"5.*"
			}[{{ interval }}]
		)
	) 
	/ 
	sum(
		rate(
			http_request_duration_seconds_count{
				kubernetes_namespace="{{ namespace }}",
				kubernetes_pod_name=~"{{ target }}-[0-9a-zA-Z]+(-[0-9a-zA-Z]+)"
			}[{{ interval }}]
		)
	) 
	* 100"#;

/// Flagger's text; Flagger converts the seconds it returns to milliseconds in Go.
const HTTP_DURATION: &str = r#"
	histogram_quantile(
		0.99,
		sum(
			rate(
				http_request_duration_seconds_bucket{
					kubernetes_namespace="{{ namespace }}",
					kubernetes_pod_name=~"{{ target }}-[0-9a-zA-Z]+(-[0-9a-zA-Z]+)"
				}[{{ interval }}]
			)
		) by (le)
	)"#;

const LINKERD_SUCCESS_RATE: &str = r#"
	sum(
		rate(
			response_total{
				namespace="{{ namespace }}",
				deployment=~"{{ target }}",
				classification!="failure",
				direction="inbound"
			}[{{ interval }}]
		)
	) 
	/ 
	sum(
		rate(
			response_total{
				namespace="{{ namespace }}",
				deployment=~"{{ target }}",
				direction="inbound"
			}[{{ interval }}]
		)
	) 
	* 100"#;

const LINKERD_DURATION: &str = r#"
	histogram_quantile(
		0.99,
		sum(
			rate(
				response_latency_ms_bucket{
					namespace="{{ namespace }}",
					deployment=~"{{ target }}",
					direction="inbound"
				}[{{ interval }}]
			)
		) by (le)
	)"#;

const KUMA_SUCCESS_RATE: &str = r#"
	sum(
		rate(
			envoy_cluster_upstream_rq{
				service=~"{{ target }}-canary_{{ namespace }}_svc_[0-9a-zA-Z-]+",
				envoy_response_code!~"5.*"
			}[{{ interval }}]
		)
	) 
	/ 
	sum(
		rate(
			envoy_cluster_upstream_rq{
				service=~"{{ target }}-canary_{{ namespace }}_svc_[0-9a-zA-Z-]+",
			}[{{ interval }}]
		)
	) 
	* 100"#;

const KUMA_DURATION: &str = r#"
	histogram_quantile(
		0.99,
		sum(
			rate(
				envoy_cluster_upstream_rq_time_bucket{
					service=~"{{ target }}-canary_{{ namespace }}_svc_[0-9a-zA-Z-]+",
				}[{{ interval }}]
			)
		) by (le)
	)"#;

const CONTOUR_SUCCESS_RATE: &str = r#"
	sum(
		rate(
			envoy_cluster_upstream_rq{
				envoy_cluster_name=~"{{ namespace }}_{{ target }}-canary_[0-9a-zA-Z-]+",
				envoy_response_code!~"5.*"
			}[{{ interval }}]
		)
	) 
	/ 
	sum(
		rate(
			envoy_cluster_upstream_rq{
				envoy_cluster_name=~"{{ namespace }}_{{ target }}-canary_[0-9a-zA-Z-]+",
			}[{{ interval }}]
		)
	) 
	* 100"#;

const CONTOUR_DURATION: &str = r#"
	histogram_quantile(
		0.99,
		sum(
			rate(
				envoy_cluster_upstream_rq_time_bucket{
					envoy_cluster_name=~"{{ namespace }}_{{ target }}-canary_[0-9a-zA-Z-]+",
				}[{{ interval }}]
			)
		) by (le)
	)"#;

const TRAEFIK_SUCCESS_RATE: &str = r#"
	sum(
		rate(
			traefik_service_request_duration_seconds_bucket{
				service=~"{{ namespace }}-{{ target }}-canary-[0-9a-zA-Z-]+@kubernetescrd",
				code!~"5..",
				le="+Inf"
			}[{{ interval }}]
		)
	)
	/
	sum(
		rate(
			traefik_service_request_duration_seconds_bucket{
				service=~"{{ namespace }}-{{ target }}-canary-[0-9a-zA-Z-]+@kubernetescrd",
				le="+Inf"
			}[{{ interval }}]
		)
	) * 100"#;

/// Flagger's text, the conversion of seconds to milliseconds included.
const TRAEFIK_DURATION: &str = r#"
	histogram_quantile(
		0.99,
		sum(
			rate(
				traefik_service_request_duration_seconds_bucket{
					service=~"{{ namespace }}-{{ target }}-canary-[0-9a-zA-Z-]+@kubernetescrd"
				}[{{ interval }}]
			)
		) by (le)
	) * 1000"#;

/// The PromQL of a built-in metric for `ctx`'s provider over `interval` (`1m`), as one line.
pub fn builtin_query(
    metric: BuiltinMetric,
    ctx: &MetricContext,
    interval: &str,
) -> Result<String, MetricError> {
    use BuiltinMetric::{RequestDuration as Duration, RequestSuccessRate as Success};
    let (text, scale) = match (&ctx.provider, metric) {
        (Provider::Istio, Success) => (ISTIO_SUCCESS_RATE, ""),
        (Provider::Istio, Duration) => (ISTIO_DURATION, ""),
        (Provider::Nginx, Success) => (NGINX_SUCCESS_RATE, ""),
        (Provider::Nginx, Duration) => (NGINX_DURATION, ""),
        (Provider::Gloo, Success) => (GLOO_SUCCESS_RATE, ""),
        (Provider::Gloo, Duration) => (GLOO_DURATION, ""),
        (Provider::Linkerd, Success) => (LINKERD_SUCCESS_RATE, ""),
        (Provider::Linkerd, Duration) => (LINKERD_DURATION, ""),
        (Provider::Kuma, Success) => (KUMA_SUCCESS_RATE, ""),
        (Provider::Kuma, Duration) => (KUMA_DURATION, ""),
        (Provider::Contour, Success) => (CONTOUR_SUCCESS_RATE, ""),
        (Provider::Contour, Duration) => (CONTOUR_DURATION, ""),
        (Provider::Traefik, Success) => (TRAEFIK_SUCCESS_RATE, ""),
        (Provider::Traefik, Duration) => (TRAEFIK_DURATION, ""),
        (Provider::Kubernetes | Provider::KubernetesReplicas | Provider::GatewayApi, Success) => {
            (HTTP_SUCCESS_RATE, "")
        }
        (Provider::Kubernetes | Provider::KubernetesReplicas | Provider::GatewayApi, Duration) => {
            (HTTP_DURATION, " * 1000")
        }
        (Provider::Other(p), _) => {
            return Err(MetricError::Failed(format!(
                "aviary has no built-in {} query for provider {p}; define the check with a MetricTemplate",
                metric_name(metric)
            )))
        }
    };
    let interval = if interval.trim().is_empty() {
        "1m"
    } else {
        interval.trim()
    };
    let rendered = render_template(text, ctx, interval, &BTreeMap::new())?;
    Ok(format!("{}{scale}", collapse_whitespace(&rendered)))
}

fn metric_name(metric: BuiltinMetric) -> &'static str {
    match metric {
        BuiltinMetric::RequestSuccessRate => "request-success-rate",
        BuiltinMetric::RequestDuration => "request-duration",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(provider: Provider, namespace: &str) -> MetricContext {
        MetricContext {
            name: "podinfo".into(),
            namespace: namespace.into(),
            target: "podinfo".into(),
            service: "podinfo".into(),
            ingress: "podinfo".into(),
            route: "podinfo".into(),
            provider,
        }
    }

    fn query(provider: Provider, namespace: &str, metric: BuiltinMetric) -> String {
        match builtin_query(metric, &ctx(provider, namespace), "1m") {
            Ok(q) => q,
            Err(e) => panic!("{e}"),
        }
    }

    // The expected texts are the queries Flagger's own observer tests assert Prometheus receives
    // (pkg/metrics/observers/*_test.go), without their leading space.

    #[test]
    fn istio_matches_flagger() {
        assert_eq!(
            query(
                Provider::Istio,
                "default",
                BuiltinMetric::RequestSuccessRate
            ),
            r#"sum( rate( istio_requests_total{ reporter="destination", destination_workload_namespace="default", destination_workload=~"podinfo", response_code!~"5.*" }[1m] ) ) / sum( rate( istio_requests_total{ reporter="destination", destination_workload_namespace="default", destination_workload=~"podinfo" }[1m] ) ) * 100"#
        );
        assert_eq!(
            query(Provider::Istio, "default", BuiltinMetric::RequestDuration),
            r#"histogram_quantile( 0.99, sum( rate( istio_request_duration_milliseconds_bucket{ reporter="destination", destination_workload_namespace="default", destination_workload=~"podinfo" }[1m] ) ) by (le) )"#
        );
    }

    #[test]
    fn nginx_matches_flagger() {
        assert_eq!(
            query(Provider::Nginx, "nginx", BuiltinMetric::RequestSuccessRate),
            r#"sum( rate( nginx_ingress_controller_requests{ namespace="nginx", ingress="podinfo", canary!="", status!~"5.*" }[1m] ) ) / sum( rate( nginx_ingress_controller_requests{ namespace="nginx", ingress="podinfo", canary!="" }[1m] ) ) * 100"#
        );
        assert_eq!(
            query(Provider::Nginx, "nginx", BuiltinMetric::RequestDuration),
            r#"sum( rate( nginx_ingress_controller_response_duration_seconds_sum{ namespace="nginx", ingress="podinfo", canary!="" }[1m] ) ) / sum( rate( nginx_ingress_controller_response_duration_seconds_count{ namespace="nginx", ingress="podinfo", canary!="" }[1m] ) ) * 1000"#
        );
    }

    #[test]
    fn gloo_matches_flagger() {
        assert_eq!(
            query(Provider::Gloo, "default", BuiltinMetric::RequestSuccessRate),
            r#"sum( rate( envoy_cluster_upstream_rq{ envoy_cluster_name=~"default-podinfo-canaryupstream-[0-9a-zA-Z-]+_[0-9a-zA-Z-]+", envoy_response_code!~"5.*" }[1m] ) ) / sum( rate( envoy_cluster_upstream_rq{ envoy_cluster_name=~"default-podinfo-canaryupstream-[0-9a-zA-Z-]+_[0-9a-zA-Z-]+", }[1m] ) ) * 100"#
        );
        assert_eq!(
            query(Provider::Gloo, "default", BuiltinMetric::RequestDuration),
            r#"histogram_quantile( 0.99, sum( rate( envoy_cluster_upstream_rq_time_bucket{ envoy_cluster_name=~"default-podinfo-canaryupstream-[0-9a-zA-Z-]+_[0-9a-zA-Z-]+", }[1m] ) ) by (le) )"#
        );
    }

    #[test]
    fn kubernetes_replicas_and_gatewayapi_use_flaggers_http_queries() {
        for provider in [
            Provider::Kubernetes,
            Provider::KubernetesReplicas,
            Provider::GatewayApi,
        ] {
            assert_eq!(
                query(
                    provider.clone(),
                    "default",
                    BuiltinMetric::RequestSuccessRate
                ),
                r#"sum( rate( http_request_duration_seconds_count{ kubernetes_namespace="default", kubernetes_pod_name=~"podinfo-[0-9a-zA-Z]+(-[0-9a-zA-Z]+)", status!~"5.*" }[1m] ) ) / sum( rate( http_request_duration_seconds_count{ kubernetes_namespace="default", kubernetes_pod_name=~"podinfo-[0-9a-zA-Z]+(-[0-9a-zA-Z]+)" }[1m] ) ) * 100"#
            );
            // Flagger's text, then the conversion to milliseconds Flagger does in Go.
            assert_eq!(
                query(provider, "default", BuiltinMetric::RequestDuration),
                r#"histogram_quantile( 0.99, sum( rate( http_request_duration_seconds_bucket{ kubernetes_namespace="default", kubernetes_pod_name=~"podinfo-[0-9a-zA-Z]+(-[0-9a-zA-Z]+)" }[1m] ) ) by (le) ) * 1000"#
            );
        }
    }

    // The four below: Flagger's observer tests render for namespace `default`; the sample canary
    // here is podinfo in namespace `test`, so each expected text is Flagger's test text with
    // `default` replaced by `test` where the namespace is substituted.

    #[test]
    fn linkerd_matches_flagger() {
        assert_eq!(
            query(Provider::Linkerd, "test", BuiltinMetric::RequestSuccessRate),
            r#"sum( rate( response_total{ namespace="test", deployment=~"podinfo", classification!="failure", direction="inbound" }[1m] ) ) / sum( rate( response_total{ namespace="test", deployment=~"podinfo", direction="inbound" }[1m] ) ) * 100"#
        );
        assert_eq!(
            query(Provider::Linkerd, "test", BuiltinMetric::RequestDuration),
            r#"histogram_quantile( 0.99, sum( rate( response_latency_ms_bucket{ namespace="test", deployment=~"podinfo", direction="inbound" }[1m] ) ) by (le) )"#
        );
    }

    #[test]
    fn kuma_matches_flagger() {
        assert_eq!(
            query(Provider::Kuma, "test", BuiltinMetric::RequestSuccessRate),
            r#"sum( rate( envoy_cluster_upstream_rq{ service=~"podinfo-canary_test_svc_[0-9a-zA-Z-]+", envoy_response_code!~"5.*" }[1m] ) ) / sum( rate( envoy_cluster_upstream_rq{ service=~"podinfo-canary_test_svc_[0-9a-zA-Z-]+", }[1m] ) ) * 100"#
        );
        assert_eq!(
            query(Provider::Kuma, "test", BuiltinMetric::RequestDuration),
            r#"histogram_quantile( 0.99, sum( rate( envoy_cluster_upstream_rq_time_bucket{ service=~"podinfo-canary_test_svc_[0-9a-zA-Z-]+", }[1m] ) ) by (le) )"#
        );
    }

    #[test]
    fn contour_matches_flagger() {
        assert_eq!(
            query(Provider::Contour, "test", BuiltinMetric::RequestSuccessRate),
            r#"sum( rate( envoy_cluster_upstream_rq{ envoy_cluster_name=~"test_podinfo-canary_[0-9a-zA-Z-]+", envoy_response_code!~"5.*" }[1m] ) ) / sum( rate( envoy_cluster_upstream_rq{ envoy_cluster_name=~"test_podinfo-canary_[0-9a-zA-Z-]+", }[1m] ) ) * 100"#
        );
        assert_eq!(
            query(Provider::Contour, "test", BuiltinMetric::RequestDuration),
            r#"histogram_quantile( 0.99, sum( rate( envoy_cluster_upstream_rq_time_bucket{ envoy_cluster_name=~"test_podinfo-canary_[0-9a-zA-Z-]+", }[1m] ) ) by (le) )"#
        );
    }

    #[test]
    fn traefik_matches_flagger() {
        assert_eq!(
            query(Provider::Traefik, "test", BuiltinMetric::RequestSuccessRate),
            r#"sum( rate( traefik_service_request_duration_seconds_bucket{ service=~"test-podinfo-canary-[0-9a-zA-Z-]+@kubernetescrd", code!~"5..", le="+Inf" }[1m] ) ) / sum( rate( traefik_service_request_duration_seconds_bucket{ service=~"test-podinfo-canary-[0-9a-zA-Z-]+@kubernetescrd", le="+Inf" }[1m] ) ) * 100"#
        );
        // Flagger's query converts the seconds itself: no `* 1000` of aviary's is added.
        assert_eq!(
            query(Provider::Traefik, "test", BuiltinMetric::RequestDuration),
            r#"histogram_quantile( 0.99, sum( rate( traefik_service_request_duration_seconds_bucket{ service=~"test-podinfo-canary-[0-9a-zA-Z-]+@kubernetescrd" }[1m] ) ) by (le) ) * 1000"#
        );
    }

    #[test]
    fn the_interval_is_substituted_and_defaults_to_one_minute() {
        let c = ctx(Provider::Istio, "test");
        let q = builtin_query(BuiltinMetric::RequestSuccessRate, &c, "30s");
        assert!(q.as_deref().is_ok_and(|q| q.matches("[30s]").count() == 2));
        let q = builtin_query(BuiltinMetric::RequestSuccessRate, &c, "");
        assert!(q.as_deref().is_ok_and(|q| q.matches("[1m]").count() == 2));
        // A window that is not a duration cannot be spliced into the range selector.
        let q = builtin_query(
            BuiltinMetric::RequestSuccessRate,
            &c,
            "1m] or vector(1) or up[1m",
        );
        assert!(q.is_err());
    }

    #[test]
    fn other_providers_have_no_builtin_query() {
        let c = ctx(Provider::Other("knative".into()), "test");
        match builtin_query(BuiltinMetric::RequestDuration, &c, "1m") {
            Err(MetricError::Failed(m)) => {
                assert!(
                    m.contains("knative") && m.contains("request-duration"),
                    "{m}"
                )
            }
            other => panic!("{other:?}"),
        }
    }
}
