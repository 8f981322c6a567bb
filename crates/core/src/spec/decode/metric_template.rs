//! A MetricTemplate's spec: its metric provider and query.

use std::collections::BTreeMap;

use super::diagnostics::{choice_help, Cx, Hint};
use super::fields::{Field, Reader};
use crate::spec::types::{MetricProvider, ObjectRef};
use crate::spec::yaml::Value;

/// The metric provider types of Flagger's CRD, every one of which aviary queries.
const METRIC_PROVIDERS: [&str; 11] = [
    "prometheus",
    "datadog",
    "cloudwatch",
    "newrelic",
    "graphite",
    "dynatrace",
    "influxdb",
    "stackdriver",
    "keptn",
    "splunk",
    "externalmetrics",
];

/// A metric provider block (a MetricTemplate's `spec.provider`, the judge's `provider`) of
/// `owner` (for messages: `MetricTemplate name.namespace`).
pub(super) fn decode_provider(cx: &mut Cx, f: &Field, owner: &str) -> Option<MetricProvider> {
    let mut p = f.map(cx)?;
    let provider_type = p.req(cx, "type", |t, cx| {
        let found = t.string(cx)?;
        if METRIC_PROVIDERS.contains(&found.as_str()) {
            return Some(found);
        }
        t.error(
            cx,
            format!("{owner}: unknown metric provider type {found:?}"),
        )
        .hint(choice_help(&found, &METRIC_PROVIDERS, "use one of"));
        None
    });
    let address = p.string(cx, "address");
    let secret_ref = p.map(cx, "secretRef").and_then(|mut sr| {
        let name = sr.req_string(cx, "name");
        sr.finish(cx);
        Some(ObjectRef {
            name: name?,
            ..ObjectRef::default()
        })
    });
    let insecure_skip_verify = p.flag(cx, "insecureSkipVerify");
    let region = p.string(cx, "region");
    let headers = p
        .field("headers")
        .map(|f| decode_headers(cx, &f))
        .unwrap_or_default();
    p.finish(cx);
    Some(MetricProvider {
        provider_type: provider_type?,
        address,
        secret_ref,
        insecure_skip_verify,
        region,
        headers,
    })
}

/// `spec` of the MetricTemplate `who` (`name.namespace`, for messages).
pub(super) fn decode_template_spec(
    cx: &mut Cx,
    mut s: Reader,
    who: &str,
) -> Option<(MetricProvider, String)> {
    let provider = s.req(cx, "provider", |f, cx| {
        decode_provider(cx, f, &format!("MetricTemplate {who}"))
    });
    let query = s.req(cx, "query", |f, cx| {
        let q = f.nonempty_string(cx)?;
        cx.check_query(f, &q);
        Some(q)
    });
    s.finish(cx);
    Some((provider?, query?))
}

/// `provider.headers`: Flagger's `map[string][]string`, each header a list of values; aviary
/// also takes a plain string. Several values are joined with `", "`, which HTTP reads as the
/// same header sent once per value (RFC 9110, section 5.3).
fn decode_headers(cx: &mut Cx, f: &Field) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (key, value) in f.entries(cx) {
        let values = match &value.node.value {
            Value::Str(s) => vec![s.clone()],
            Value::Seq(_) => {
                let items = value.list(cx);
                let mut values = Vec::new();
                for item in &items {
                    if let Some(v) = item.string(cx) {
                        values.push(v);
                    }
                }
                if values.len() != items.len() {
                    continue;
                }
                values
            }
            _ => {
                value
                    .expected(cx, "a list of strings")
                    .hint(format!("write {key}: [\"value\"]"));
                continue;
            }
        };
        if values.is_empty() {
            value
                .expected(cx, "at least one value")
                .hint(format!("write {key}: [\"value\"], or remove the header"));
            continue;
        }
        out.insert(key, values.join(", "));
    }
    out
}

#[cfg(test)]
mod tests {
    use crate::spec::decode::test_support::*;
    use crate::spec::types::*;

    #[test]
    fn metric_templates() {
        let t = "apiVersion: flagger.app/v1beta1\nkind: MetricTemplate\nmetadata:\n  name: x\nspec:\n  provider:\n    type: prometheu\n";
        assert_eq!(
            errors(t),
            vec![
                "canary.yaml:5: spec: missing required field \"query\"",
                "canary.yaml:7: spec.provider.type: MetricTemplate x.default: unknown metric provider type \"prometheu\"\n  help: did you mean \"prometheus\"?",
            ]
        );
        let t = "apiVersion: flagger.app/v1beta1\nkind: MetricTemplate\nmetadata:\n  name: errs\n  namespace: prod\nspec:\n  provider:\n    type: sumologic\n  query: q\n";
        assert_eq!(
            errors(t),
            vec![
                "canary.yaml:8: spec.provider.type: MetricTemplate errs.prod: unknown metric provider type \"sumologic\"\n  help: use one of: prometheus, datadog, cloudwatch, newrelic, graphite, dynatrace, influxdb, stackdriver, keptn, splunk, externalmetrics",
            ]
        );
        let t = "apiVersion: aviary.dev/v1alpha1\nkind: MetricTemplate\nmetadata:\n  name: x\nspec:\n  provider:\n    type: datadog\n    secretRef: {name: dd}\n    headers: {X-Org: a}\n  query: avg:x{*}\n";
        let docs = decode(t);
        let tpl = &docs.templates[0];
        assert_eq!(tpl.api_version, ApiVersion::AviaryV1alpha1);
        assert_eq!(tpl.namespace, "default");
        assert_eq!(
            tpl.provider.secret_ref.as_ref().map(|r| r.name.as_str()),
            Some("dd")
        );
        assert_eq!(
            tpl.provider.headers.get("X-Org").map(String::as_str),
            Some("a")
        );
        assert_eq!(tpl.query, "avg:x{*}");
    }
}
