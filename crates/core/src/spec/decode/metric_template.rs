//! A MetricTemplate's spec: its metric provider and query.

use super::diagnostics::Cx;
use super::fields::Reader;
use crate::spec::types::{MetricProvider, ObjectRef};

const METRIC_PROVIDERS: [&str; 10] = [
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
];

pub(super) fn decode_template_spec(cx: &mut Cx, mut s: Reader) -> Option<(MetricProvider, String)> {
    let provider = s.req(cx, "provider", |f, cx| {
        let mut p = f.map(cx)?;
        let provider_type = p.req(cx, "type", |t, cx| {
            t.one_of(cx, "metric provider type", &METRIC_PROVIDERS)
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
        let headers = p.str_map(cx, "headers");
        p.finish(cx);
        Some(MetricProvider {
            provider_type: provider_type?,
            address,
            secret_ref,
            insecure_skip_verify,
            region,
            headers,
        })
    });
    let query = s.req(cx, "query", |f, cx| {
        let q = f.nonempty_string(cx)?;
        cx.check_query(f, &q);
        Some(q)
    });
    s.finish(cx);
    Some((provider?, query?))
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
                "canary.yaml:7: spec.provider.type: unknown metric provider type \"prometheu\"\n  help: did you mean \"prometheus\"?",
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
