//! One YAML document: its apiVersion, kind and metadata, then the Canary or MetricTemplate it
//! holds; documents of other kinds are skipped.

use super::canary::decode_canary;
use super::diagnostics::{choice_help, Cx, Hint};
use super::fields::{Field, Reader};
use super::metric_template::decode_template_spec;
use super::metrics::check_traefik_builtins;
use super::names::{check_state_name, is_dns_label, is_dns_subdomain};
use super::provider_checks::check_gateway_refs;
use super::service::check_preview;
use crate::spec::types::{ApiVersion, MetricTemplate, Origin};
use crate::spec::yaml::{quote, Node, Value};
use crate::spec::Documents;

pub(super) const FLAGGER_API: &str = "flagger.app/v1beta1";
pub(super) const AVIARY_API: &str = "aviary.dev/v1alpha1";
pub(super) const OLD_FLAGGER_APIS: [&str; 3] = [
    "flagger.app/v1alpha1",
    "flagger.app/v1alpha2",
    "flagger.app/v1alpha3",
];
pub(super) const TYPE_HELP: &str = "add apiVersion: flagger.app/v1beta1 and kind: Canary";

pub(super) fn decode_document(cx: &mut Cx, doc: &Node, out: &mut Documents) {
    let Value::Map(entries) = &doc.value else {
        cx.error(
            doc.line,
            "",
            format!(
                "expected a Kubernetes object (a mapping with apiVersion, kind, metadata and spec), got {}",
                doc.type_name()
            ),
        )
        .hint(TYPE_HELP);
        return;
    };
    let origin_line = entries.first().map_or(doc.line, |(k, _)| k.line);
    let origin = Origin {
        file: cx.file.to_string(),
        line: origin_line,
    };
    cx.strict = false;
    let mut top = Reader {
        entries,
        path: String::new(),
        line: origin_line,
        known: Vec::new(),
        free: false,
    };
    let api_field = top.field("apiVersion");
    let kind_field = top.field("kind");
    let api = api_field.as_ref().and_then(|f| f.string(cx));
    let kind = kind_field.as_ref().and_then(|f| f.string(cx));
    let (api_bad, kind_bad) = (
        api_field.is_some() && api.is_none(),
        kind_field.is_some() && kind.is_none(),
    );
    if api_bad || kind_bad {
        return;
    }
    let Some(kind) = kind else {
        cx.error(origin_line, "", "missing required field \"kind\"")
            .hint(TYPE_HELP);
        return;
    };
    let ours = kind == "Canary" || kind == "MetricTemplate";
    let Some(api) = api else {
        if ours {
            cx.error(origin_line, "", "missing required field \"apiVersion\"")
                .hint(TYPE_HELP);
        } else {
            out.skipped.push((String::new(), kind, origin));
        }
        return;
    };
    let api_line = api_field.as_ref().map_or(origin_line, Field::line);
    let group = api.split('/').next().unwrap_or("");
    if !ours {
        if (group == "flagger.app" || group == "aviary.dev") && kind != "AlertProvider" {
            let kind_line = kind_field.as_ref().map_or(origin_line, Field::line);
            cx.error(
                kind_line,
                "kind",
                format!("unknown kind {} in {group}", quote(&kind)),
            )
            .hint(choice_help(
                &kind,
                &["Canary", "MetricTemplate"],
                "aviary reads kind Canary and MetricTemplate",
            ));
            return;
        }
        out.skipped.push((api, kind, origin));
        return;
    }
    let version = match api.as_str() {
        FLAGGER_API => ApiVersion::FlaggerV1beta1,
        AVIARY_API => ApiVersion::AviaryV1alpha1,
        old if OLD_FLAGGER_APIS.contains(&old) => {
            cx.error(
                api_line,
                "apiVersion",
                format!("unsupported apiVersion {} for kind {kind}", quote(&api)),
            )
            .hint("use apiVersion: flagger.app/v1beta1; the fields are the same, except that canaryAnalysis is now called analysis");
            return;
        }
        _ => {
            cx.error(
                api_line,
                "apiVersion",
                format!("unsupported apiVersion {} for kind {kind}", quote(&api)),
            )
            .hint(format!(
                "use apiVersion: {FLAGGER_API} (or {AVIARY_API} for aviary's additions)"
            ));
            return;
        }
    };
    cx.strict = version == ApiVersion::AviaryV1alpha1;

    let meta = decode_metadata(cx, &mut top);
    top.ignore(&["status"]);
    let spec = top.field("spec");
    if spec.is_none() {
        let line = top.key_line("spec");
        cx.error(line, "", "missing required field \"spec\"");
    }
    top.finish(cx);
    let (Some(spec), Some((name, namespace, namespace_explicit))) = (spec, meta) else {
        return;
    };
    let Some(spec) = spec.map(cx) else {
        return;
    };
    if kind == "Canary" {
        let uses_before = cx.uses.len();
        let name_line = doc
            .get("metadata")
            .and_then(|m| m.get("name"))
            .map_or(origin_line, |n| n.line);
        if let Some(mut canary) = decode_canary(cx, version, spec) {
            check_state_name(cx, &name, name_line);
            for u in &mut cx.uses[uses_before..] {
                u.canary_namespace = namespace.clone();
            }
            canary.name = name;
            canary.namespace = namespace;
            canary.namespace_explicit = namespace_explicit;
            canary.origin = origin;
            if let Some(spec_node) = doc.get("spec") {
                check_gateway_refs(cx, spec_node, &canary);
                check_preview(cx, spec_node, &canary);
                check_traefik_builtins(cx, spec_node, &canary);
            }
            out.canaries.push(canary);
        }
    } else if let Some((provider, query)) =
        decode_template_spec(cx, spec, &format!("{name}.{namespace}"))
    {
        out.templates.push(MetricTemplate {
            api_version: version,
            name,
            namespace,
            origin,
            provider,
            query,
        });
    }
}

/// `(name, namespace, namespace_explicit)`.
pub(super) fn decode_metadata(cx: &mut Cx, top: &mut Reader) -> Option<(String, String, bool)> {
    let Some(field) = top.field("metadata") else {
        let line = top.key_line("metadata");
        cx.error(line, "", "missing required field \"metadata\"")
            .hint("add metadata: {name: my-app}");
        return None;
    };
    let mut md = field.free_map(cx)?;
    let name = md.req(cx, "name", |f, cx| {
        let name = f.nonempty_string(cx)?;
        if !is_dns_subdomain(&name) {
            f.error(cx, format!("{} is not a valid Kubernetes name", quote(&name)))
                .hint("use at most 253 lowercase letters, digits, '-' and '.', starting and ending with a letter or digit");
            return None;
        }
        Some(name)
    });
    let mut explicit = false;
    let mut namespace = "default".to_string();
    if let Some(f) = md.field("namespace") {
        if let Some(ns) = f.string(cx) {
            if ns.is_empty() {
                // Kubernetes reads an empty namespace as none.
            } else if is_dns_label(&ns) {
                namespace = ns;
                explicit = true;
            } else {
                f.error(cx, format!("{} is not a valid namespace", quote(&ns)))
                    .hint("use at most 63 lowercase letters, digits and '-', starting and ending with a letter or digit");
            }
        }
    }
    md.finish(cx);
    name.map(|n| (n, namespace, explicit))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::decode::test_support::*;
    use crate::spec::types::*;

    #[test]
    fn not_yaml() {
        assert_eq!(
            errors("a: ["),
            vec!["canary.yaml:1: invalid YAML: while parsing a node, did not find expected node content\n  help: check the indentation and quoting near this line"]
        );
    }

    #[test]
    fn a_list_instead_of_a_mapping() {
        assert_eq!(
            errors("- apiVersion: flagger.app/v1beta1\n- kind: Canary\n"),
            vec!["canary.yaml:1: expected a Kubernetes object (a mapping with apiVersion, kind, metadata and spec), got a list\n  help: add apiVersion: flagger.app/v1beta1 and kind: Canary"]
        );
    }

    #[test]
    fn other_kinds_are_skipped_not_errors() {
        let docs = decode(
            "apiVersion: argoproj.io/v1alpha1\nkind: Rollout\nmetadata:\n  name: x\n---\n# c\nkind: Service\n",
        );
        assert!(docs.canaries.is_empty());
        assert_eq!(
            docs.skipped,
            vec![
                (
                    "argoproj.io/v1alpha1".to_string(),
                    "Rollout".to_string(),
                    Origin {
                        file: "canary.yaml".into(),
                        line: 1
                    }
                ),
                (
                    String::new(),
                    "Service".to_string(),
                    Origin {
                        file: "canary.yaml".into(),
                        line: 7
                    }
                ),
            ]
        );
        // Flagger's own AlertProvider is not ours either.
        assert_eq!(
            decode("apiVersion: flagger.app/v1beta1\nkind: AlertProvider\n")
                .skipped
                .len(),
            1
        );
        // An empty file is empty, not an error.
        assert!(decode("# nothing\n---\n").skipped.is_empty());
    }

    #[test]
    fn wrong_kind_and_version() {
        assert_eq!(
            errors("apiVersion: flagger.app/v1beta1\nkind: Canery\n"),
            vec!["canary.yaml:2: kind: unknown kind \"Canery\" in flagger.app\n  help: did you mean \"Canary\"?"]
        );
        assert_eq!(
            errors("metadata:\n  name: x\n"),
            vec!["canary.yaml:1: missing required field \"kind\"\n  help: add apiVersion: flagger.app/v1beta1 and kind: Canary"]
        );
        assert_eq!(
            errors("kind: Canary\n"),
            vec!["canary.yaml:1: missing required field \"apiVersion\"\n  help: add apiVersion: flagger.app/v1beta1 and kind: Canary"]
        );
        assert_eq!(
            errors(&canary("flagger.app/v1alpha3", STEPS)),
            vec!["canary.yaml:1: apiVersion: unsupported apiVersion \"flagger.app/v1alpha3\" for kind Canary\n  help: use apiVersion: flagger.app/v1beta1; the fields are the same, except that canaryAnalysis is now called analysis"]
        );
        assert_eq!(
            errors(&canary("flagger.app/v2", STEPS)),
            vec!["canary.yaml:1: apiVersion: unsupported apiVersion \"flagger.app/v2\" for kind Canary\n  help: use apiVersion: flagger.app/v1beta1 (or aviary.dev/v1alpha1 for aviary's additions)"]
        );
    }

    #[test]
    fn errors_across_documents() {
        let text = format!(
            "{}\n---\n{}",
            canary(FLAGGER_API, "    stepWeight: 0\n"),
            canary(FLAGGER_API, "    iterations: -1\n")
        );
        assert_eq!(
            errors(&text),
            vec![
                "canary.yaml:12: spec.analysis.stepWeight: expected an integer 1-100, got 0\n  help: stepWeight is the percentage of traffic added to the canary at each step, e.g. stepWeight: 10",
                "canary.yaml:26: spec.analysis.iterations: expected an integer 0-1000000, got -1\n  help: iterations is how many analysis ticks A/B testing or blue/green runs, e.g. iterations: 10 (at most 1000000: 11.6 days at a 1s interval)",
            ]
        );
    }

    #[test]
    fn yaml_level_errors_pass_through() {
        assert_eq!(
            errors("apiVersion: flagger.app/v1beta1\nkind: Canary\nkind: Canary\n"),
            vec!["canary.yaml:3: kind: duplicate key \"kind\" (first at line 2)\n  help: remove one of the two entries"]
        );
    }
}
