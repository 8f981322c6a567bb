//! The Canary's spec: the provider, the targetRef and the other references, the autoscalerRef,
//! and the service and analysis it hands on to their own decoders.

use super::analysis::{check_strategy, decode_analysis};
use super::diagnostics::{choice_help, join, Cx, Hint};
use super::fields::{to_u32, Field, Reader};
use super::names::{check_derived_name, check_service_base, is_dns_subdomain};
use super::service::decode_service;
use crate::spec::types::{
    ApiVersion, AutoscalerRef, Canary, ObjectRef, Origin, Provider, ScalerReplicas, Service,
};
use crate::spec::yaml::quote;

/// Providers aviary can route traffic for, in Flagger's spelling.
const ROUTED_PROVIDERS: [&str; 12] = [
    "kubernetes:replicas",
    "kubernetes",
    "istio",
    "gloo",
    "nginx",
    "gatewayapi",
    "gatewayapi:v1",
    "gatewayapi:v1beta1",
    "linkerd",
    "kuma",
    "contour",
    "traefik",
];
/// Providers Flagger knows and aviary parses but does not route.
const OTHER_PROVIDERS: [&str; 9] = [
    "appmesh",
    "appmesh:v1beta2",
    "skipper",
    "osm",
    "apisix",
    "knative",
    "smi:v1alpha1",
    "smi:v1alpha2",
    "smi:v1alpha3",
];
const TARGET_KINDS: [&str; 3] = ["Deployment", "DaemonSet", "Service"];
const SCALER_KINDS: [&str; 2] = ["HorizontalPodAutoscaler", "ScaledObject"];

/// The provider, and its spelling when that says more than [`Provider::name`] (`gatewayapi:v1`).
pub(super) fn parse_provider(cx: &mut Cx, f: &Field) -> Option<(Provider, Option<String>)> {
    let name = f.string(cx)?;
    let provider = parse_provider_name(cx, f, &name)?;
    let written = (name != provider.name()).then_some(name);
    Some((provider, written))
}

fn parse_provider_name(cx: &mut Cx, f: &Field, name: &str) -> Option<Provider> {
    Some(match name {
        "" => return None,
        "kubernetes" => Provider::Kubernetes,
        "istio" => Provider::Istio,
        "gloo" => Provider::Gloo,
        "nginx" => Provider::Nginx,
        "gatewayapi" => {
            if !cx.strict {
                cx.warn(
                    f.line(),
                    &f.path,
                    "provider gatewayapi without a version: Flagger's CRD refuses it (it takes gatewayapi:v1 or gatewayapi:v1beta1)",
                )
                .hint("write provider: gatewayapi:v1");
            }
            Provider::GatewayApi
        }
        "gatewayapi:v1" | "gatewayapi:v1beta1" => Provider::GatewayApi,
        // Routed with the Gateway API HTTPRoute each of them implements (aviary-kube's router
        // says so at rollout).
        "linkerd" => Provider::Linkerd,
        "kuma" => Provider::Kuma,
        "contour" => Provider::Contour,
        "traefik" => Provider::Traefik,
        "kubernetes:replicas" if cx.strict => Provider::KubernetesReplicas,
        "kubernetes:replicas" => {
            f.error(cx, "provider kubernetes:replicas is an aviary addition")
                .hint("use apiVersion: aviary.dev/v1alpha1 for replica-ratio canaries, or provider: kubernetes for Flagger's blue/green");
            return None;
        }
        other if OTHER_PROVIDERS.contains(&other) => {
            cx.warn(
                f.line(),
                &f.path,
                format!("aviary does not route provider {other}: the spec is valid Flagger, but `aviary rollout` refuses it (exit 2)"),
            )
            .hint(instead_of(other));
            Provider::Other(other.to_string())
        }
        other => {
            let mut all: Vec<&str> = ROUTED_PROVIDERS.to_vec();
            all.extend_from_slice(&OTHER_PROVIDERS);
            f.error(cx, format!("unknown provider {}", quote(other)))
                .hint(choice_help(other, &all, "use one of"));
            return None;
        }
    })
}

/// What to use instead of `provider` when it is one Flagger knows and aviary does not route.
pub(crate) fn unrouted(provider: &str) -> Option<String> {
    OTHER_PROVIDERS
        .contains(&provider)
        .then(|| instead_of(provider))
}

/// What to use instead of a provider aviary does not route (`provider` one of
/// [`OTHER_PROVIDERS`]); `aviary rollout` repeats this warning as its error when it refuses it.
fn instead_of(provider: &str) -> String {
    let what = match provider {
        "knative" => "target a Deployment and use provider gatewayapi:v1 with an HTTPRoute-capable gateway, istio or nginx",
        "appmesh" | "appmesh:v1beta2" => "use provider gatewayapi:v1 with an HTTPRoute-capable gateway, or istio (AWS App Mesh is being retired)",
        "apisix" => "use provider gatewayapi:v1 with gatewayRefs to an APISIX Gateway (APISIX implements HTTPRoute), or nginx",
        "skipper" => "use provider gatewayapi:v1 with an HTTPRoute-capable gateway, or nginx",
        "osm" | "smi:v1alpha1" | "smi:v1alpha2" | "smi:v1alpha3" => "use provider linkerd (routed with an HTTPRoute on the apex Service) or istio",
        _ => "use provider gatewayapi:v1 with an HTTPRoute-capable gateway, istio or nginx",
    };
    format!("{what}; aviary routes kubernetes, istio, gloo, nginx, gatewayapi, linkerd, kuma, contour and traefik")
}

/// `{apiVersion, kind, name}` plus `namespace` when `with_namespace`; `kinds` limits the kind.
pub(super) fn decode_ref(
    cx: &mut Cx,
    mut r: Reader,
    with_namespace: bool,
    kinds: Option<&[&str]>,
) -> Option<ObjectRef> {
    let api_version = r.string(cx, "apiVersion");
    let kind = match (r.field("kind"), kinds) {
        (Some(f), Some(kinds)) => {
            let kind = f.string(cx);
            match kind {
                Some(k) if !kinds.contains(&k.as_str()) => {
                    let list = match kinds.len() {
                        0 => String::new(),
                        1 => kinds.join(""),
                        n => format!("{} or {}", kinds[..n - 1].join(", "), kinds[n - 1]),
                    };
                    let d = f.error(cx, format!("expected {list}, got {}", quote(&k)));
                    if k == "Rollout" {
                        d.hint("an Argo Rollout is not a Canary target; point targetRef at the Deployment");
                    } else {
                        d.hint(choice_help(&k, kinds, "use one of"));
                    }
                    None
                }
                other => other,
            }
        }
        (Some(f), None) => f.string(cx),
        (None, _) => None,
    };
    let name = r.req_string(cx, "name");
    let namespace = if with_namespace {
        r.string(cx, "namespace")
    } else {
        None
    };
    r.finish(cx);
    Some(ObjectRef {
        api_version,
        kind,
        name: name?,
        namespace,
    })
}

pub(super) fn decode_canary(cx: &mut Cx, version: ApiVersion, mut s: Reader) -> Option<Canary> {
    let (provider, provider_written) = s
        .field("provider")
        .and_then(|f| parse_provider(cx, &f))
        .map_or((None, None), |(p, w)| (Some(p), w));
    let metrics_server = s.string(cx, "metricsServer").filter(|m| !m.is_empty());

    // Where each name is written, for the checks of the names aviary derives from them.
    let name_line =
        |r: &Reader, fallback: usize| r.lookup("name").map_or(fallback, |(_, v)| v.line);
    let mut target_line = s.key_line("targetRef");
    let target_ref = s.req(cx, "targetRef", |f, cx| {
        let r = f.map(cx)?;
        target_line = name_line(&r, f.key_line);
        let t = decode_ref(cx, r, false, Some(&TARGET_KINDS))?;
        let path = join(&f.path, "name");
        if !is_dns_subdomain(&t.name) {
            cx.error(
                target_line,
                &path,
                format!("{} is not a valid Kubernetes name", quote(&t.name)),
            );
        } else {
            check_derived_name(
                cx,
                &t.name,
                "-primary",
                target_line,
                &path,
                "targetRef.name",
            );
        }
        Some(t)
    });
    let autoscaler_ref = s.map(cx, "autoscalerRef").and_then(|r| {
        let (line, path) = (name_line(&r, r.line), join(&r.path, "name"));
        let a = decode_autoscaler(cx, r)?;
        check_derived_name(cx, &a.name, "-primary", line, &path, "autoscalerRef.name");
        Some(a)
    });
    let ingress_ref = s.map(cx, "ingressRef").and_then(|r| {
        let (line, path) = (name_line(&r, r.line), join(&r.path, "name"));
        let i = decode_ref(cx, r, false, None)?;
        check_derived_name(cx, &i.name, "-canary", line, &path, "ingressRef.name");
        Some(i)
    });
    let route_ref = s
        .map(cx, "routeRef")
        .and_then(|r| decode_ref(cx, r, false, None));
    let upstream_ref = s
        .map(cx, "upstreamRef")
        .and_then(|r| decode_ref(cx, r, true, None));

    let target_name = target_ref.as_ref().map(|t| t.name.clone());
    // Flagger's CRD requires only targetRef and analysis: a knative Canary has no service. Without
    // one, `port` is 0 ([`Service::declared`]); a rollout on a router that needs it says so.
    let service_field = s.field("service");
    let service = match &service_field {
        None => Some(Service {
            name: target_name.clone().unwrap_or_default(),
            port_name: "http".to_string(),
            ..Service::default()
        }),
        Some(f) => decode_service_field(cx, f, target_name.as_deref(), target_line),
    };

    // `analysis`, or the deprecated `canaryAnalysis`.
    let analysis_field = s.field("analysis");
    let legacy_field = s.field("canaryAnalysis");
    let chosen = match (analysis_field, legacy_field) {
        (Some(a), Some(l)) => {
            cx.warn(
                l.key_line,
                &l.path,
                "canaryAnalysis is ignored because analysis is set",
            )
            .hint("remove canaryAnalysis");
            Some(a)
        }
        (None, Some(l)) => {
            cx.warn(
                l.key_line,
                &l.path,
                "canaryAnalysis is deprecated, rename it to analysis",
            );
            Some(l)
        }
        (a, None) => a,
    };
    if chosen.is_none() && !cx.strict {
        cx.warn(
            s.line,
            &s.path,
            "no analysis: Flagger's CRD requires spec.analysis, so Flagger's API server refuses this Canary; aviary promotes it without analysis",
        )
        .hint("add analysis with interval, threshold and stepWeight (or iterations)");
    }
    let analysis = chosen.and_then(|f| {
        let r = f.map(cx)?;
        Some((decode_analysis(cx, version, r), f))
    });

    let progress_deadline_seconds = s
        .int(cx, "progressDeadlineSeconds", 1, None)
        .map_or(600, to_u32);
    let skip_analysis = s.flag(cx, "skipAnalysis");
    let revert_on_deletion = s.flag(cx, "revertOnDeletion");
    let suspend = s.flag(cx, "suspend");
    s.finish(cx);

    let analysis = analysis.map(|((analysis, present), field)| {
        if !skip_analysis {
            check_strategy(cx, &analysis, &present, provider.as_ref(), &field);
        }
        analysis
    });

    Some(Canary {
        api_version: version,
        name: String::new(),
        namespace: String::new(),
        namespace_explicit: false,
        origin: Origin {
            file: cx.file.to_string(),
            line: 0,
        },
        provider,
        provider_written,
        metrics_server,
        target_ref: target_ref?,
        autoscaler_ref,
        ingress_ref,
        route_ref,
        upstream_ref,
        service: service?,
        analysis,
        progress_deadline_seconds,
        skip_analysis,
        revert_on_deletion,
        suspend,
    })
}

/// A written `spec.service`, with the checks of the Service names derived from it.
fn decode_service_field(
    cx: &mut Cx,
    f: &Field,
    target_name: Option<&str>,
    target_line: usize,
) -> Option<Service> {
    let r = f.map(cx)?;
    let explicit = r
        .lookup("name")
        .filter(|(_, v)| v.as_str().is_some_and(|n| !n.is_empty()))
        .map(|(_, v)| v.line);
    let path = join(&r.path, "name");
    let service = decode_service(cx, r, target_name.unwrap_or(""))?;
    match explicit {
        Some(line) => check_service_base(cx, &service.name, line, &path, "service.name"),
        None if is_dns_subdomain(&service.name) => check_service_base(
            cx,
            &service.name,
            target_line,
            "spec.targetRef.name",
            "targetRef.name | , or set service.name to a shorter name for the Services",
        ),
        None => {}
    }
    Some(service)
}

pub(super) fn decode_autoscaler(cx: &mut Cx, mut r: Reader) -> Option<AutoscalerRef> {
    let api_version = r.string(cx, "apiVersion");
    let kind = r
        .field("kind")
        .and_then(|f| f.one_of(cx, "autoscaler kind", &SCALER_KINDS));
    let name = r.req_string(cx, "name");
    let primary_scaler_queries = r.str_map(cx, "primaryScalerQueries");
    let primary_scaler_replicas = r.map(cx, "primaryScalerReplicas").map(|mut rr| {
        let min = rr.int(cx, "minReplicas", 0, None);
        let max = rr.int(cx, "maxReplicas", 1, None);
        if let (Some(lo), Some(hi)) = (min, max) {
            if lo > hi {
                cx.error(
                    rr.line,
                    &rr.path,
                    format!("minReplicas ({lo}) is above maxReplicas ({hi})"),
                );
            }
        }
        rr.finish(cx);
        ScalerReplicas {
            min_replicas: min.and_then(|v| i32::try_from(v).ok()),
            max_replicas: max.and_then(|v| i32::try_from(v).ok()),
        }
    });
    r.finish(cx);
    Some(AutoscalerRef {
        api_version,
        kind,
        name: name?,
        primary_scaler_queries,
        primary_scaler_replicas,
    })
}

#[cfg(test)]
mod tests {
    use crate::spec::decode::test_support::*;
    use crate::spec::types::*;
    use std::time::Duration;

    #[test]
    fn defaults_when_fields_are_absent() {
        let docs = decode_lenient(&canary(FLAGGER_API, STEPS));
        let c = &docs.canaries[0];
        assert_eq!(c.namespace, "default");
        assert!(!c.namespace_explicit);
        assert_eq!(c.provider, None);
        assert_eq!(c.progress_deadline_seconds, 600);
        assert_eq!(c.service.name, "podinfo");
        assert_eq!(c.service.port_name, "http");
        assert_eq!(c.service.target_port, Some(IntOrString::Int(9898)));
        let a = c.analysis.as_ref().unwrap();
        assert_eq!(a.interval, Duration::from_secs(60));
        assert_eq!(a.threshold, 1);
        assert_eq!(
            (a.primary_ready_threshold, a.canary_ready_threshold),
            (100, 100)
        );
        // threshold: 0 means 1, as in Flagger.
        let docs = decode_lenient(&canary(
            FLAGGER_API,
            "    stepWeight: 10\n    threshold: 0\n",
        ));
        let a = docs.canaries[0].analysis.as_ref().unwrap();
        assert_eq!(a.threshold, 1);
        assert_eq!(a.max_weight(), 100);
        // No analysis at all is fine.
        let text = canary(FLAGGER_API, "").replace("  analysis:\n", "");
        assert_eq!(decode_lenient(&text).canaries[0].analysis, None);
    }

    #[test]
    fn missing_target_ref() {
        let text = canary(FLAGGER_API, STEPS).replace(
            "  targetRef:\n    kind: Deployment\n    name: podinfo\n",
            "",
        );
        assert_eq!(
            errors(&text),
            vec!["canary.yaml:5: spec: missing required field \"targetRef\""]
        );
        let text = canary(FLAGGER_API, STEPS).replace("    name: podinfo\n  service", "  service");
        assert_eq!(
            errors(&text),
            vec!["canary.yaml:6: spec.targetRef: missing required field \"name\""]
        );
        let text = canary(FLAGGER_API, STEPS).replace("kind: Deployment", "kind: Rollout");
        assert_eq!(
            errors(&text),
            vec!["canary.yaml:7: spec.targetRef.kind: expected Deployment, DaemonSet or Service, got \"Rollout\"\n  help: an Argo Rollout is not a Canary target; point targetRef at the Deployment"]
        );
    }

    #[test]
    fn providers() {
        let with = |p: &str| {
            canary(FLAGGER_API, STEPS).replace("spec:\n", &format!("spec:\n  provider: {p}\n"))
        };
        assert_eq!(
            decode_lenient(&with("gatewayapi:v1beta1")).canaries[0].provider,
            Some(Provider::GatewayApi)
        );
        assert_eq!(
            decode_lenient(&with("kubernetes")).canaries[0].provider,
            Some(Provider::Kubernetes)
        );
        for (name, provider) in [
            ("linkerd", Provider::Linkerd),
            ("kuma", Provider::Kuma),
            ("contour", Provider::Contour),
            ("traefik", Provider::Traefik),
        ] {
            let docs = decode_lenient(&with(name));
            assert_eq!(docs.canaries[0].provider, Some(provider));
            // Without gatewayRefs, contour and traefik are refused by rollout: validate says so.
            let refused = matches!(name, "contour" | "traefik");
            assert_eq!(
                docs.warnings.len(),
                usize::from(refused),
                "{:?}",
                docs.warnings
            );
            if refused {
                assert!(
                    docs.warnings[0]
                        .message
                        .contains("without spec.service.gatewayRefs"),
                    "{:?}",
                    docs.warnings
                );
            }
        }
        let docs = decode_lenient(&with("knative"));
        assert_eq!(
            docs.canaries[0].provider,
            Some(Provider::Other("knative".into()))
        );
        assert_eq!(
            docs.warnings[0].to_string(),
            "canary.yaml:6: warning: spec.provider: aviary does not route provider knative: the spec is valid Flagger, but `aviary rollout` refuses it (exit 2)\n  help: target a Deployment and use provider gatewayapi:v1 with an HTTPRoute-capable gateway, istio or nginx; aviary routes kubernetes, istio, gloo, nginx, gatewayapi, linkerd, kuma, contour and traefik"
        );
        assert_eq!(docs.warnings.len(), 1, "{:?}", docs.warnings);
        assert_eq!(
            errors(&with("istoi")),
            vec!["canary.yaml:6: spec.provider: unknown provider \"istoi\"\n  help: did you mean \"istio\"?"]
        );
    }

    #[test]
    fn deprecated_canary_analysis() {
        let text = canary(FLAGGER_API, STEPS).replace("  analysis:", "  canaryAnalysis:");
        let docs = decode_lenient(&text);
        assert_eq!(docs.canaries[0].analysis.as_ref().unwrap().step_weight, 10);
        assert_eq!(
            docs.warnings[0].to_string(),
            "canary.yaml:11: warning: spec.canaryAnalysis: canaryAnalysis is deprecated, rename it to analysis"
        );
        let text = format!(
            "{}  canaryAnalysis:\n    stepWeight: 20\n",
            canary(FLAGGER_API, STEPS)
        );
        let docs = decode_lenient(&text);
        assert_eq!(docs.canaries[0].analysis.as_ref().unwrap().step_weight, 10);
        assert_eq!(
            docs.warnings[0].to_string(),
            "canary.yaml:14: warning: spec.canaryAnalysis: canaryAnalysis is ignored because analysis is set\n  help: remove canaryAnalysis"
        );
    }
}
