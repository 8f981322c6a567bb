//! Checks of a Canary's provider that only the whole spec can make: a provider aviary routes
//! with a Gateway API HTTPRoute but that names no Gateway to attach it to. (Every field of
//! Flagger's CRD that Flagger's router for a provider applies, aviary's router applies too; the
//! fields aviary cannot route are said where they are read.)

use super::diagnostics::{Cx, Hint};
use crate::spec::types::{Canary, Provider};
use crate::spec::yaml::Node;

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
    let Some((key, _)) = spec.entry("provider") else {
        return;
    };
    let name = canary.provider.as_ref().map_or("", Provider::name);
    cx.warn(
        key.line,
        "spec.provider",
        format!(
            "provider {name} without spec.service.gatewayRefs: `aviary rollout` refuses it (exit 2); aviary routes {name} with a Gateway API HTTPRoute (where Flagger writes {flagger}), which needs the Gateway to attach it to"
        ),
    )
    .hint(format!(
        "add `gatewayRefs: [{{name: GATEWAY, namespace: GATEWAY_NAMESPACE}}]` under spec.service, naming the {implementer} Gateway that serves this host"
    ));
}

#[cfg(test)]
mod tests {
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
    sessionAffinity: {{cookieName: flagger-cookie, maxAge: 3600, domain: example.com, secure: true}}
    webhooks:
    - name: smoke
      url: https://tester.test/
      disableTLS: true
"
        )
    }

    #[test]
    fn flaggers_fields_are_applied_by_every_router_so_nothing_is_said() {
        let service = "    headless: true
    trafficDistribution: PreferClose
    unmanagedMetadata: {labels: [team], annotations: [owner]}
    backendTimeout: 30s
    rewrite: {uri: /, type: ReplacePrefixMatch}
    mirror:
    - backendRef: {name: shadow, port: 80}";
        for provider in [
            "kubernetes",
            "istio",
            "nginx",
            "gloo",
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
}
