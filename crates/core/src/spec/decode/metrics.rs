//! `analysis.metrics`: built-in metrics, MetricTemplate references, inline queries and the
//! threshold ranges they are judged by.

use std::collections::HashMap;
use std::time::Duration;

use super::canary::decode_ref;
use super::diagnostics::{join, Cx, Hint};
use super::fields::Field;
use super::names::unique_name;
use crate::spec::types::{BuiltinMetric, Canary, Metric, MetricSource, Provider, ThresholdRange};
use crate::spec::yaml::{quote, Node, Value};
use crate::spec::TemplateUse;

pub(super) fn decode_metrics(cx: &mut Cx, items: &[Field]) -> Vec<Metric> {
    let mut seen = HashMap::new();
    let mut out = Vec::new();
    for item in items {
        out.extend(decode_metric(cx, item, &mut seen));
    }
    out
}

/// The name of the inline-query check of a metric that has a templateRef too.
pub(super) fn query_half_name(name: &str) -> String {
    if name.is_empty() {
        "(query)".to_string()
    } else {
        format!("{name} (query)")
    }
}

pub(super) fn decode_metric(
    cx: &mut Cx,
    item: &Field,
    seen: &mut HashMap<String, usize>,
) -> Vec<Metric> {
    decode_metric_checks(cx, item, seen).unwrap_or_default()
}

/// One metric as the checks it makes: one, or two for a metric with both templateRef and query
/// (Flagger runs both: the query with the built-in checks, the template after them).
fn decode_metric_checks(
    cx: &mut Cx,
    item: &Field,
    seen: &mut HashMap<String, usize>,
) -> Option<Vec<Metric>> {
    let mut r = item.map(cx)?;
    // Flagger's CRD requires the key but allows "" (its custom-variables test uses it).
    let name = r.req(cx, "name", |f, cx| f.string(cx));
    if let Some(n) = &name {
        let line = r.key_line("name");
        unique_name(cx, seen, "metric", n, line, &join(&item.path, "name"));
    }
    let (interval, interval_text) = r
        .field("interval")
        .and_then(|f| {
            let (d, text) = f.duration(cx)?;
            if d < Duration::from_secs(1) {
                f.error(
                    cx,
                    format!("expected a query window of at least 1s, got {}", quote(&text)),
                )
                .hint("the metric's interval is the range its query looks back over ({{ interval }}), e.g. interval: 1m; an empty range has no samples");
                return None;
            }
            Some((d, text))
        })
        .unwrap_or((Duration::from_secs(60), "1m".to_string()));
    let range_field = r.field("thresholdRange");
    let range = range_field.as_ref().and_then(|f| {
        let mut tr = f.map(cx)?;
        let min = tr.number(cx, "min");
        let max = tr.number(cx, "max");
        tr.finish(cx);
        if let (Some(lo), Some(hi)) = (min, max) {
            if lo > hi {
                cx.error(
                    f.key_line,
                    &f.path,
                    format!("min ({lo}) is above max ({hi}), so the check can never pass"),
                )
                .hint("swap min and max");
            }
        }
        Some(ThresholdRange { min, max })
    });
    let threshold_field = r.field("threshold");
    let threshold = threshold_field.as_ref().and_then(|f| f.number(cx));
    let query_field = r.field("query");
    let query = query_field.as_ref().and_then(|f| {
        let q = f.string(cx)?;
        for p in cx.check_query(f, &q) {
            if let Some(key) = p.variable().filter(|k| !k.is_empty()) {
                let line = cx.line_with(f.line(), &p.text);
                cx.error(
                    line,
                    &f.path,
                    format!(
                        "{} in an inline query: only a MetricTemplate's query gets templateVariables",
                        p.text
                    ),
                )
                .hint(format!(
                    "move the query into a MetricTemplate and set `{key}` under the metric's templateVariables"
                ));
            }
        }
        Some(q)
    });
    let tref_field = r.field("templateRef");
    let template = tref_field.as_ref().and_then(|f| {
        let tr = f.map(cx)?;
        decode_ref(cx, tr, true, None)
    });
    let vars_field = r.field("templateVariables");
    let variables = vars_field
        .as_ref()
        .map(|f| f.str_map(cx))
        .unwrap_or_default();
    r.finish(cx);
    let name = name?;

    // Both templateRef and query: Flagger runs the query with the built-in checks (against the
    // Canary's Prometheus) and the template after them; each must pass. aviary checks them as
    // two metrics, the query's named `NAME (query)`.
    let mut also_query = None;
    if let (Some(_), Some(q)) = (&tref_field, &query_field) {
        let query = query.clone()?;
        let half = query_half_name(&name);
        unique_name(cx, seen, "metric", &half, q.line(), &item.path);
        cx.warn(
            q.line(),
            &item.path,
            format!(
                "metric {} has both templateRef and query: as Flagger does, aviary runs both, the query with the built-in checks (reported as {}) and the MetricTemplate after them; both must pass",
                quote(&name),
                quote(&half)
            ),
        )
        .hint("split it into two metrics, or drop the one you do not mean");
        also_query = Some((half, query));
    }
    let source = match (&tref_field, &query_field) {
        (Some(t), _) => {
            let template = template?;
            let (line, path) = match &vars_field {
                Some(v) => (v.key_line, v.path.clone()),
                None => (t.key_line, t.path.clone()),
            };
            cx.uses.push(TemplateUse {
                file: cx.file.to_string(),
                line,
                path,
                metric: name.clone(),
                template: template.name.clone(),
                template_namespace: template.namespace.clone(),
                canary_namespace: String::new(),
                variables: variables.keys().cloned().collect(),
            });
            MetricSource::Template {
                template,
                variables,
            }
        }
        (None, Some(q)) => {
            let query = query?;
            cx.warn(q.line(), &q.path, "query is deprecated")
                .hint("move the query into a MetricTemplate and reference it with templateRef");
            MetricSource::Query(query)
        }
        (None, None) => match BuiltinMetric::from_name(&name) {
            Some(b) => MetricSource::Builtin(b),
            None => {
                cx.error(
                    item.line(),
                    &item.path,
                    format!(
                        "metric {} is neither a built-in ({}) nor has a templateRef",
                        quote(&name),
                        BuiltinMetric::NAMES.join(", ")
                    ),
                )
                .hint(format!(
                    "add templateRef: {{name: {name}}} pointing at a MetricTemplate"
                ));
                return None;
            }
        },
    };
    if let (Some(v), false) = (&vars_field, matches!(source, MetricSource::Template { .. })) {
        cx.warn(
            v.key_line,
            &v.path,
            "templateVariables is ignored without templateRef",
        );
    }

    let success_rate = source == MetricSource::Builtin(BuiltinMetric::RequestSuccessRate);
    let threshold_range = if let Some(rf) = &range_field {
        if let Some(t) = &threshold_field {
            cx.warn(
                t.line(),
                &t.path,
                "threshold is ignored because thresholdRange is set",
            )
            .hint("remove threshold");
        }
        let range = range?;
        let bounds_written = matches!(&rf.node.value, Value::Map(entries)
            if entries.iter().any(|(k, v)| matches!(k.as_str(), Some("min" | "max")) && !v.is_null()));
        if range.min.is_none() && range.max.is_none() && !bounds_written {
            cx.warn(
                rf.key_line,
                &rf.path,
                "thresholdRange has neither min nor max, so this check always passes",
            );
        }
        range
    } else if let Some(t) = &threshold_field {
        let value = threshold?;
        let (range, suggestion) = if success_rate {
            (
                ThresholdRange {
                    min: Some(value),
                    max: None,
                },
                format!("thresholdRange: {{min: {value}}}"),
            )
        } else {
            (
                ThresholdRange {
                    min: None,
                    max: Some(value),
                },
                format!("thresholdRange: {{max: {value}}}"),
            )
        };
        cx.warn(t.line(), &t.path, "threshold is deprecated")
            .hint(format!("write {suggestion}, which is how Flagger reads it"));
        range
    } else if success_rate {
        cx.warn(
            item.line(),
            &item.path,
            format!(
                "metric {} has no thresholdRange, so (as in Flagger) it always passes",
                quote(&name)
            ),
        )
        .hint("add thresholdRange: {min: 99}");
        ThresholdRange {
            min: Some(0.0),
            max: None,
        }
    } else {
        cx.warn(
            item.line(),
            &item.path,
            format!(
                "metric {} has no thresholdRange, so (as in Flagger) it fails whenever its value is above 0",
                quote(&name)
            ),
        )
        .hint("add thresholdRange with a max (or a min)");
        ThresholdRange {
            min: None,
            max: Some(0.0),
        }
    };

    let mut checks = Vec::new();
    if let Some((half, query)) = also_query {
        checks.push(Metric {
            name: half,
            interval,
            interval_text: interval_text.clone(),
            threshold_range,
            source: MetricSource::Query(query),
        });
    }
    checks.push(Metric {
        name,
        interval,
        interval_text,
        threshold_range,
        source,
    });
    Some(checks)
}

/// With provider `traefik`, aviary's HTTPRoute is served by Traefik's Gateway provider, whose
/// services are labelled `@kubernetesgateway`; Flagger's built-in Traefik queries select the
/// `@kubernetescrd` services of its TraefikService, so they would find no values and fail every
/// check. Each built-in metric gets a warning at its line saying so and what to do.
pub(super) fn check_traefik_builtins(cx: &mut Cx, spec: &Node, canary: &Canary) {
    if canary.provider != Some(Provider::Traefik) {
        return;
    }
    let (key, analysis) = match (spec.get("analysis"), spec.get("canaryAnalysis")) {
        (Some(a), _) => ("spec.analysis", a),
        (None, Some(a)) => ("spec.canaryAnalysis", a),
        (None, None) => return,
    };
    let Some(metrics) = analysis.get("metrics").and_then(Node::as_seq) else {
        return;
    };
    let builtins = canary
        .analysis
        .iter()
        .flat_map(|a| a.metrics.iter())
        .filter(|m| matches!(m.source, MetricSource::Builtin(_)))
        .map(|m| m.name.as_str())
        .collect::<Vec<_>>();
    for (i, node) in metrics.iter().enumerate() {
        let Some(name) = node.get("name").and_then(Node::as_str) else {
            continue;
        };
        if !builtins.contains(&name) || node.get("templateRef").is_some() {
            continue;
        }
        cx.warn(node.line, &format!("{key}.metrics[{i}]"), format!(
            "{name} is built in: Flagger's Traefik query selects the service `<namespace>-<target>-canary-<port>@kubernetescrd` (its TraefikService), and Traefik serves aviary's HTTPRoute through its Gateway provider, whose services end `@kubernetesgateway`, so the check would find no values"
        ))
        .hint("define the check with a MetricTemplate whose query selects your Traefik Gateway's service labels, and reference it with templateRef");
    }
}

#[cfg(test)]
mod tests {
    use crate::spec::decode::test_support::*;
    use crate::spec::types::*;

    #[test]
    fn duplicate_metric_names() {
        let text = canary(
            FLAGGER_API,
            "    stepWeight: 10\n    metrics:\n    - name: request-success-rate\n      thresholdRange: {min: 99}\n    - name: request-success-rate\n      thresholdRange: {min: 90}\n",
        );
        assert_eq!(
            errors(&text),
            vec!["canary.yaml:16: spec.analysis.metrics[1].name: duplicate metric name \"request-success-rate\" (first at line 14)\n  help: give each metric a different name"]
        );
    }

    #[test]
    fn thresholds_fold_as_flagger_reads_them() {
        let text = canary(
            FLAGGER_API,
            "    stepWeight: 10\n    metrics:\n    - name: request-success-rate\n      threshold: 99\n    - name: request-duration\n      threshold: 500\n    - name: errors\n      templateRef: {name: errors}\n    - name: old\n      query: up\n      thresholdRange: {max: 1}\n      threshold: 3\n",
        );
        let docs = decode_lenient(&text);
        let m = &docs.canaries[0].analysis.as_ref().unwrap().metrics;
        assert_eq!(
            m[0].threshold_range,
            ThresholdRange {
                min: Some(99.0),
                max: None
            }
        );
        assert_eq!(
            m[1].threshold_range,
            ThresholdRange {
                min: None,
                max: Some(500.0)
            }
        );
        assert_eq!(
            m[1].source,
            MetricSource::Builtin(BuiltinMetric::RequestDuration)
        );
        assert_eq!(
            m[2].threshold_range,
            ThresholdRange {
                min: None,
                max: Some(0.0)
            }
        );
        assert_eq!(m[3].source, MetricSource::Query("up".into()));
        assert_eq!(
            m[3].threshold_range,
            ThresholdRange {
                min: None,
                max: Some(1.0)
            }
        );
        let w: Vec<String> = docs.warnings.iter().map(ToString::to_string).collect();
        assert_eq!(
            w,
            vec![
                "canary.yaml:15: warning: spec.analysis.metrics[0].threshold: threshold is deprecated\n  help: write thresholdRange: {min: 99}, which is how Flagger reads it",
                "canary.yaml:17: warning: spec.analysis.metrics[1].threshold: threshold is deprecated\n  help: write thresholdRange: {max: 500}, which is how Flagger reads it",
                "canary.yaml:18: warning: spec.analysis.metrics[2]: metric \"errors\" has no thresholdRange, so (as in Flagger) it fails whenever its value is above 0\n  help: add thresholdRange with a max (or a min)",
                "canary.yaml:21: warning: spec.analysis.metrics[3].query: query is deprecated\n  help: move the query into a MetricTemplate and reference it with templateRef",
                "canary.yaml:23: warning: spec.analysis.metrics[3].threshold: threshold is ignored because thresholdRange is set\n  help: remove threshold",
            ]
        );
        let text = canary(
            FLAGGER_API,
            "    stepWeight: 10\n    metrics:\n    - name: cpu\n      thresholdRange: {max: 1}\n",
        );
        assert_eq!(
            errors(&text),
            vec!["canary.yaml:14: spec.analysis.metrics[0]: metric \"cpu\" is neither a built-in (request-success-rate, request-duration) nor has a templateRef\n  help: add templateRef: {name: cpu} pointing at a MetricTemplate"]
        );
    }

    #[test]
    fn traefik_built_in_checks_are_warned_to_find_nothing() {
        let text = canary(
            FLAGGER_API,
            "    stepWeight: 10\n    metrics:\n      - name: request-success-rate\n        thresholdRange: {min: 99}\n      - name: request-duration\n        templateRef: {name: latency}\n        thresholdRange: {max: 500}\n",
        )
        .replace("spec:\n", "spec:\n  provider: traefik\n")
        .replace(
            "    port: 9898\n",
            "    port: 9898\n    gatewayRefs: [{name: traefik, namespace: traefik}]\n",
        );
        let w = warnings(&text);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].starts_with("canary.yaml:16: warning: spec.analysis.metrics[0]: request-success-rate is built in: Flagger's Traefik query selects the service"),
            "{w:?}"
        );
        assert!(
            w[0].contains("help: define the check with a MetricTemplate"),
            "{w:?}"
        );
        let gatewayapi = text.replace("provider: traefik", "provider: gatewayapi:v1");
        assert!(warnings(&gatewayapi).is_empty());
    }
}
