//! Fields of Flagger's CRD that aviary reads into the spec but whose router does not apply them
//! yet: one warning for each, naming the field and the router, where Flagger's router for the
//! same provider would apply it (where Flagger ignores a field too, nothing is said).

use super::diagnostics::{join, Cx, Hint};
use crate::spec::types::{Canary, Provider};
use crate::spec::yaml::{Node, Value};

/// The providers aviary routes, in [`Provider::name`]'s spelling (linkerd, kuma, contour and
/// traefik through its Gateway API router).
const ROUTED: [&str; 10] = [
    "kubernetes",
    "kubernetes:replicas",
    "istio",
    "gloo",
    "nginx",
    "gatewayapi",
    "linkerd",
    "kuma",
    "contour",
    "traefik",
];

/// The router of aviary's that routes `provider`: its own, or the Gateway API router for the
/// providers aviary routes with an HTTPRoute.
fn router_of(provider: &str) -> String {
    match provider {
        "linkerd" | "kuma" | "contour" | "traefik" => {
            format!("aviary's gatewayapi router (which routes {provider})")
        }
        other => format!("aviary's {other} router"),
    }
}

/// Who would not apply a field that Flagger applies with `flagger_routers`: aviary's router for
/// the Canary's provider, or, with no provider in the spec, the routers among them that aviary
/// has. `None` when nothing is lost: Flagger ignores the field for this provider too, or aviary
/// cannot route the provider at all (its own warning says so).
fn gap(provider: Option<&Provider>, flagger_routers: &[&str]) -> Option<String> {
    match provider {
        Some(Provider::Other(_)) => None,
        Some(p) if flagger_routers.contains(&p.name()) => Some(router_of(p.name())),
        Some(_) => None,
        None => {
            let ours: Vec<&str> = flagger_routers
                .iter()
                .copied()
                .filter(|r| ROUTED.contains(r))
                .collect();
            match ours.as_slice() {
                [] => None,
                [one] => Some(router_of(one)),
                many if many.len() == ROUTED.len() => Some("aviary's routers".to_string()),
                many => Some(format!("aviary's {} routers", many.join(" and "))),
            }
        }
    }
}

/// Warns, for `aviary validate`, about a contour or traefik Canary without
/// `service.gatewayRefs`: aviary routes both with a Gateway API HTTPRoute, which needs a Gateway
/// to attach to, so `aviary rollout` refuses it (aviary-kube's routing preflight).
pub(super) fn check_gateway_refs(cx: &mut Cx, spec: &Node, canary: &Canary) {
    let (flagger, implementer) = match canary.provider {
        Some(Provider::Contour) => ("a Contour HTTPProxy", "Contour"),
        Some(Provider::Traefik) => ("a TraefikService", "Traefik"),
        _ => return,
    };
    if !canary.service.gateway_refs.is_empty() {
        return;
    }
    let Some((line, _)) = entry(spec, "provider") else {
        return;
    };
    let name = canary.provider.as_ref().map_or("", Provider::name);
    cx.warn(
        line,
        "spec.provider",
        format!(
            "provider {name} without spec.service.gatewayRefs: `aviary rollout` refuses it (exit 2); aviary routes {name} with a Gateway API HTTPRoute (where Flagger writes {flagger}), which needs the Gateway to attach it to"
        ),
    )
    .hint(format!(
        "add `gatewayRefs: [{{name: GATEWAY, namespace: GATEWAY_NAMESPACE}}]` under spec.service, naming the {implementer} Gateway that serves this host"
    ));
}

/// The line of `key` in the mapping `node`, and its value.
fn entry<'n>(node: &'n Node, key: &str) -> Option<(usize, &'n Node)> {
    match &node.value {
        Value::Map(entries) => entries
            .iter()
            .find(|(k, _)| k.as_str() == Some(key))
            .map(|(k, v)| (k.line, v)),
        _ => None,
    }
}

/// Warns about each field of `spec` (the Canary's spec node, `canary` decoded from it) that
/// Flagger applies for this provider and aviary's router does not yet.
pub(super) fn check_unapplied(cx: &mut Cx, spec: &Node, canary: &Canary) {
    let provider = canary.provider.as_ref();
    if let Some((_, service)) = entry(spec, "service") {
        let base = "spec.service";
        for (key, routers, what) in [
            (
                "backendTimeout",
                &["gatewayapi"][..],
                "the HTTPRoute's backend request timeout",
            ),
            (
                "mirror",
                &["gatewayapi"][..],
                "the HTTPRoute's extra mirror backends",
            ),
        ] {
            let Some((line, value)) = entry(service, key) else {
                continue;
            };
            if matches!(value.value, Value::Null | Value::Bool(false)) {
                continue;
            }
            if let Some(who) = gap(provider, routers) {
                let path = join(base, key);
                cx.warn(line, &path, format!("{key} is not applied by {who} yet"))
                    .hint(format!(
                        "aviary reads it, but does not set {what} yet; Flagger does"
                    ));
            }
        }
        if let Some((line, _)) = entry(service, "rewrite").and_then(|(_, r)| entry(r, "type")) {
            if let Some(who) = gap(provider, &["gatewayapi"]) {
                let path = "spec.service.rewrite.type";
                cx.warn(line, path, format!("rewrite.type is not applied by {who} yet"))
                    .hint("aviary reads it, but its HTTPRoute has no URLRewrite filter yet; Flagger's has");
            }
        }
    }
    let Some(analysis) = entry(spec, "analysis").or_else(|| entry(spec, "canaryAnalysis")) else {
        return;
    };
    let analysis_key = if entry(spec, "analysis").is_some() {
        "spec.analysis"
    } else {
        "spec.canaryAnalysis"
    };
    if let Some((line, affinity)) = entry(analysis.1, "sessionAffinity") {
        if let Some(who) = gap(provider, &["istio", "gatewayapi"]) {
            let path = join(analysis_key, "sessionAffinity");
            let set: Vec<&str> = match &affinity.value {
                Value::Map(entries) => entries.iter().filter_map(|(k, _)| k.as_str()).collect(),
                _ => Vec::new(),
            };
            cx.warn(
                line,
                &path,
                format!("sessionAffinity ({}) is not applied by {who} yet", set.join(", ")),
            )
            .hint("requests are split by weight without a sticky cookie; Flagger's router sets the cookie");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::decode::test_support::*;

    fn canary(provider: &str, service: &str) -> String {
        format!(
            "apiVersion: {FLAGGER_API}
kind: Canary
metadata: {{name: podinfo, namespace: test}}
spec:
  provider: {provider}
  targetRef: {{apiVersion: apps/v1, kind: Deployment, name: podinfo}}
  service:
    port: 9898
{service}
  analysis:
    interval: 1m
    stepWeight: 10
    maxWeight: 50
    webhooks:
    - name: smoke
      url: https://tester.test/
      disableTLS: true
"
        )
    }

    #[test]
    fn the_service_fields_and_disable_tls_are_applied_so_nothing_is_said() {
        let service = "    headless: true
    trafficDistribution: PreferClose
    unmanagedMetadata: {labels: [team], annotations: [owner]}";
        for provider in [
            "kubernetes",
            "istio",
            "nginx",
            "gatewayapi:v1",
            "linkerd",
            "kuma",
        ] {
            let w = warnings(&canary(provider, service));
            assert!(w.is_empty(), "{provider}: {w:?}");
        }
    }

    #[test]
    fn contour_and_traefik_without_gateway_refs_are_refused_by_rollout_and_validate_says_so() {
        for provider in ["contour", "traefik"] {
            let w = warnings(&canary(provider, ""));
            assert_eq!(w.len(), 1, "{provider}: {w:?}");
            assert!(
                w[0].starts_with(&format!("canary.yaml:5: warning: spec.provider: provider {provider} without spec.service.gatewayRefs: `aviary rollout` refuses it (exit 2)")),
                "{w:?}"
            );
            assert!(
                w[0].contains("help: add `gatewayRefs: [{name: GATEWAY, namespace: GATEWAY_NAMESPACE}]` under spec.service"),
                "{w:?}"
            );
            let with_refs = canary(
                provider,
                "    gatewayRefs: [{name: public, namespace: edge}]",
            );
            assert!(warnings(&with_refs).is_empty(), "{provider}");
        }
        // linkerd and kuma attach to the apex Service without a Gateway.
        for provider in ["linkerd", "kuma"] {
            assert!(warnings(&canary(provider, "")).is_empty(), "{provider}");
        }
    }

    #[test]
    fn the_gateway_api_routed_providers_are_routed_and_flaggers_own_routers_ignore_these_fields() {
        // Flagger's linkerd, kuma, contour and traefik routers do not apply the Gateway API
        // router's fields, so nothing is lost with them.
        for provider in [
            Provider::Linkerd,
            Provider::Kuma,
            Provider::Contour,
            Provider::Traefik,
        ] {
            let p = provider.name();
            assert!(ROUTED.contains(&p), "{p}");
            assert_eq!(gap(Some(&provider), &["gatewayapi"]), None, "{p}");
            assert_eq!(gap(Some(&provider), &["istio", "gatewayapi"]), None, "{p}");
        }
        // Were one of them to apply a field, the router that routes it is named.
        assert_eq!(
            gap(Some(&Provider::Contour), &["contour"]).as_deref(),
            Some("aviary's gatewayapi router (which routes contour)")
        );
        assert_eq!(
            gap(Some(&Provider::GatewayApi), &["gatewayapi"]).as_deref(),
            Some("aviary's gatewayapi router")
        );
        assert_eq!(
            gap(None, &["gatewayapi"]).as_deref(),
            Some("aviary's gatewayapi router")
        );
        assert_eq!(
            gap(None, &["linkerd", "istio"]).as_deref(),
            Some("aviary's linkerd and istio routers")
        );
        assert_eq!(gap(None, &ROUTED).as_deref(), Some("aviary's routers"));
    }
}
