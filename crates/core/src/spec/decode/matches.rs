//! HTTP request matches (`service.match`, `analysis.match`) and their string matches.

use std::collections::BTreeMap;

use super::diagnostics::{Cx, Hint};
use super::fields::{Field, Reader};
use crate::spec::types::{HttpMatch, StringMatch};

const MATCH_KINDS: [&str; 4] = ["exact", "prefix", "suffix", "regex"];

pub(super) fn decode_matches(cx: &mut Cx, items: Vec<Field>) -> Vec<HttpMatch> {
    items
        .iter()
        .filter_map(|item| {
            let r = item.map(cx)?;
            Some(decode_match(cx, r))
        })
        .collect()
}

pub(super) fn decode_match(cx: &mut Cx, mut r: Reader) -> HttpMatch {
    let name = r.string(cx, "name");
    let uri = r.field("uri").and_then(|f| decode_string_match(cx, &f));
    let method = r.field("method").and_then(|f| decode_string_match(cx, &f));
    let scheme = r.field("scheme").and_then(|f| decode_string_match(cx, &f));
    let authority = r
        .field("authority")
        .and_then(|f| decode_string_match(cx, &f));
    let headers = string_matches_by_name(cx, &mut r, "headers");
    let query_params = string_matches_by_name(cx, &mut r, "queryParams");
    let without_headers = string_matches_by_name(cx, &mut r, "withoutHeaders");
    let ignore_uri_case = r.flag(cx, "ignoreUriCase");
    let port = r.int(cx, "port", 1, Some(65535));
    let source_labels = r.str_map(cx, "sourceLabels");
    let source_namespace = r.string(cx, "sourceNamespace");
    let gateways = r.str_list(cx, "gateways");
    r.finish(cx);
    HttpMatch {
        name,
        uri,
        method,
        scheme,
        authority,
        headers,
        query_params,
        without_headers,
        ignore_uri_case,
        port,
        source_labels,
        source_namespace,
        gateways,
    }
}

/// `headers`, `queryParams`, `withoutHeaders`: name → StringMatch.
pub(super) fn string_matches_by_name(
    cx: &mut Cx,
    r: &mut Reader,
    key: &'static str,
) -> BTreeMap<String, StringMatch> {
    let mut out = BTreeMap::new();
    if let Some(f) = r.field(key) {
        for (k, v) in f.entries(cx) {
            if let Some(m) = decode_string_match(cx, &v) {
                out.insert(k, m);
            }
        }
    }
    out
}

pub(super) fn decode_string_match(cx: &mut Cx, f: &Field) -> Option<StringMatch> {
    let mut r = f.map(cx)?;
    let mut found: Vec<(&str, Field)> = Vec::new();
    for kind in MATCH_KINDS {
        if let Some(v) = r.field(kind) {
            found.push((kind, v));
        }
    }
    r.finish(cx);
    if found.len() != 1 {
        let names: Vec<&str> = found.iter().map(|(k, _)| *k).collect();
        let got = if names.is_empty() {
            "none".to_string()
        } else {
            names.join(" and ")
        };
        cx.error(
            f.key_line,
            &f.path,
            format!("expected exactly one of exact, prefix, suffix or regex, got {got}"),
        )
        .hint("write, for example, {exact: \"value\"} or {prefix: \"/api\"}");
        return None;
    }
    let (kind, value) = found.pop()?;
    let s = value.string(cx)?;
    Some(match kind {
        "exact" => StringMatch::Exact(s),
        "prefix" => StringMatch::Prefix(s),
        "suffix" => StringMatch::Suffix(s),
        _ => {
            if s.is_empty() {
                value.expected(cx, "a non-empty regular expression");
                return None;
            }
            StringMatch::Regex(s)
        }
    })
}

#[cfg(test)]
mod tests {
    use crate::spec::decode::test_support::*;

    #[test]
    fn string_matches() {
        let text = canary(
            FLAGGER_API,
            "    iterations: 5\n    match:\n    - headers:\n        a: {}\n        b: {exact: x, prefix: y}\n",
        );
        assert_eq!(
            errors(&text),
            vec![
                "canary.yaml:15: spec.analysis.match[0].headers.a: expected exactly one of exact, prefix, suffix or regex, got none\n  help: write, for example, {exact: \"value\"} or {prefix: \"/api\"}",
                "canary.yaml:16: spec.analysis.match[0].headers.b: expected exactly one of exact, prefix, suffix or regex, got exact and prefix\n  help: write, for example, {exact: \"value\"} or {prefix: \"/api\"}",
            ]
        );
    }
}
