//! Fields of Flagger's CRD that aviary reads into the spec but whose router does not apply them
//! yet: one warning for each, naming the field and the router, where Flagger's router for the
//! same provider would apply it (where Flagger ignores a field too, nothing is said).

use super::diagnostics::{index, join, Cx, Hint};
use crate::spec::types::{Canary, Provider};
use crate::spec::yaml::{Node, Value};

/// The providers aviary routes, in [`Provider::name`]'s spelling.
const ROUTED: [&str; 6] = [
    "kubernetes",
    "kubernetes:replicas",
    "istio",
    "gloo",
    "nginx",
    "gatewayapi",
];

/// Who would not apply a field that Flagger applies with `flagger_routers`: aviary's router for
/// the Canary's provider, or, with no provider in the spec, the routers among them that aviary
/// has. `None` when nothing is lost: Flagger ignores the field for this provider too, or aviary
/// cannot route the provider at all (its own warning says so).
fn gap(provider: Option<&Provider>, flagger_routers: &[&str]) -> Option<String> {
    match provider {
        Some(Provider::Other(_)) => None,
        Some(p) if flagger_routers.contains(&p.name()) => {
            Some(format!("aviary's {} router", p.name()))
        }
        Some(_) => None,
        None => {
            let ours: Vec<&str> = flagger_routers
                .iter()
                .copied()
                .filter(|r| ROUTED.contains(r))
                .collect();
            match ours.as_slice() {
                [] => None,
                [one] => Some(format!("aviary's {one} router")),
                many if many.len() == ROUTED.len() => Some("aviary's routers".to_string()),
                many => Some(format!("aviary's {} routers", many.join(" and "))),
            }
        }
    }
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
    let services = &ROUTED[..];
    if let Some((_, service)) = entry(spec, "service") {
        let base = "spec.service";
        for (key, routers, what) in [
            ("headless", services, "headless primary and canary Services"),
            (
                "trafficDistribution",
                services,
                "the Services' trafficDistribution",
            ),
            (
                "unmanagedMetadata",
                services,
                "the labels and annotations left to others on the Services",
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
    }
    let Some(analysis) = entry(spec, "analysis").or_else(|| entry(spec, "canaryAnalysis")) else {
        return;
    };
    let analysis_key = if entry(spec, "analysis").is_some() {
        "spec.analysis"
    } else {
        "spec.canaryAnalysis"
    };
    if let Some((
        _,
        Node {
            value: Value::Seq(hooks),
            ..
        },
    )) = entry(analysis.1, "webhooks")
    {
        for (i, hook) in hooks.iter().enumerate() {
            if let Some((
                line,
                Node {
                    value: Value::Bool(true),
                    ..
                },
            )) = entry(hook, "disableTLS")
            {
                let path = join(&index(&join(analysis_key, "webhooks"), i), "disableTLS");
                cx.warn(
                    line,
                    &path,
                    "disableTLS is not applied by aviary's webhook client yet",
                )
                .hint("aviary verifies the webhook's TLS certificate; Flagger skips the check");
            }
        }
    }
}
