//! Query templates: Flagger's `{{ name }}`, `{{ namespace }}`, `{{ target }}`, `{{ service }}`,
//! `{{ ingress }}`, `{{ route }}`, `{{ interval }}` and `{{ variables.x }}` placeholders, and
//! `{{ printf "FORMAT" ARG... }}` over them.
//!
//! Flagger renders these with Go's `text/template`, where each name is a function and a missing
//! `variables` key silently becomes `<no value>`. aviary accepts the same placeholders (whitespace
//! inside the braces optional, Go's `{{-`/`-}}` trim markers honoured) and is stricter in two ways:
//!
//! - an unknown name or an unknown `variables.x` is an error that names it;
//! - a value can never change the shape of the query. Where the placeholder sits is read from the
//!   template itself: inside a `"..."` or `'...'` PromQL string the value is escaped for that string
//!   (backslash, the quote, control characters), inside a `` `...` `` raw string a value holding a
//!   backtick is refused, and anywhere else (`[{{ interval }}]`, a number, a label name) the value
//!   must be a plain name, number or duration. A namespace such as `x"} or vector(1) or up{a="`
//!   therefore stays one label value.

use std::collections::BTreeMap;

use super::{MetricContext, MetricError};
use aviary_core::spec::placeholders::{go_quote, Piece, Printf};

/// Where a placeholder stands in the PromQL text around it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Context {
    Code,
    Double,
    Single,
    Raw,
    Comment,
}

/// Renders `query` for `ctx`, with `interval` as `{{ interval }}` and `variables` as
/// `{{ variables.NAME }}` (a Canary metric's `templateVariables`).
pub fn render_template(
    query: &str,
    ctx: &MetricContext,
    interval: &str,
    variables: &BTreeMap<String, String>,
) -> Result<String, MetricError> {
    let mut out = String::with_capacity(query.len() + 64);
    let mut state = Context::Code;
    let mut escaped = false;
    let mut rest = query;
    while !rest.is_empty() {
        if let Some(after_open) = rest.strip_prefix("{{") {
            let Some(close) = after_open.find("}}") else {
                return Err(MetricError::Failed(format!(
                    "unterminated placeholder {}: a '{{{{' has no matching '}}}}'",
                    excerpt(rest)
                )));
            };
            let raw = &after_open[..close];
            rest = &after_open[close + 2..];
            let (trim_left, inner) = match raw.strip_prefix('-') {
                Some(r) if r.starts_with(char::is_whitespace) => (true, r),
                _ => (false, raw),
            };
            let (trim_right, inner) = match inner.strip_suffix('-') {
                Some(r) if r.ends_with(char::is_whitespace) => (true, r),
                _ => (false, inner),
            };
            if trim_left {
                let kept = out.trim_end().len();
                out.truncate(kept);
            }
            let action = inner.trim();
            if action.starts_with("printf") {
                printf(&mut out, action, raw, state, ctx, interval, variables)?;
            } else {
                let value = lookup(action, raw, ctx, interval, variables)?;
                insert(&mut out, action, value, state)?;
            }
            if trim_right {
                rest = rest.trim_start();
            }
            continue;
        }
        let Some(c) = rest.chars().next() else {
            break;
        };
        rest = &rest[c.len_utf8()..];
        out.push(c);
        state = match state {
            Context::Code => match c {
                '"' => Context::Double,
                '\'' => Context::Single,
                '`' => Context::Raw,
                '#' => Context::Comment,
                _ => Context::Code,
            },
            Context::Double | Context::Single => {
                let quote = if state == Context::Double { '"' } else { '\'' };
                if escaped {
                    escaped = false;
                    state
                } else if c == '\\' {
                    escaped = true;
                    state
                } else if c == quote {
                    Context::Code
                } else {
                    state
                }
            }
            Context::Raw if c == '`' => Context::Code,
            Context::Comment if c == '\n' => Context::Code,
            other => other,
        };
    }
    Ok(out)
}

/// `{{ printf "FORMAT" ARG... }}` ([`Printf`]): the format's text as written, each argument's
/// value placed like a placeholder's (escaped for the string it stands in), `%q` a Go-quoted
/// string (as it is outside a string: PromQL reads Go's escapes). Format text that would open or
/// close a string or a comment is refused: where the values stand must stay readable.
fn printf(
    out: &mut String,
    action: &str,
    raw: &str,
    state: Context,
    ctx: &MetricContext,
    interval: &str,
    variables: &BTreeMap<String, String>,
) -> Result<(), MetricError> {
    let bad = |e: String| MetricError::Failed(format!("`{{{{{raw}}}}}`: {e}"));
    let call = Printf::parse(action).map_err(bad)?;
    let pieces = call.pieces().map_err(bad)?;
    for piece in pieces {
        match piece {
            Piece::Text(text) => {
                let opens = ['"', '\'', '`'].iter().any(|q| text.contains(*q))
                    || (state == Context::Code && text.contains('#'));
                if opens {
                    return Err(bad(format!(
                        "its format text {text:?} holds a quote or a comment sign; aviary places printf's values only where the template shows them"
                    )));
                }
                out.push_str(text);
            }
            Piece::Value(i) | Piece::Quoted(i) => {
                let arg = call.args.get(i).map(String::as_str).unwrap_or_default();
                let value = lookup(arg, raw, ctx, interval, variables)?;
                if matches!(piece, Piece::Quoted(_)) {
                    let quoted = go_quote(value);
                    match state {
                        Context::Code => out.push_str(&quoted),
                        _ => insert(out, arg, &quoted, state)?,
                    }
                } else {
                    insert(out, arg, value, state)?;
                }
            }
        }
    }
    Ok(())
}

/// The names a template may use, for messages.
const KNOWN: &str = "name, namespace, target, service, ingress, route, interval, variables.NAME";

fn lookup<'a>(
    name: &str,
    raw: &str,
    ctx: &'a MetricContext,
    interval: &'a str,
    variables: &'a BTreeMap<String, String>,
) -> Result<&'a str, MetricError> {
    let value = match name {
        "name" => ctx.name.as_str(),
        "namespace" => ctx.namespace.as_str(),
        "target" => ctx.target.as_str(),
        "service" => ctx.service.as_str(),
        "ingress" => ctx.ingress.as_str(),
        "route" => ctx.route.as_str(),
        "interval" => interval,
        _ => {
            if let Some(key) = name.strip_prefix("variables.") {
                return match variables.get(key.trim()) {
                    Some(v) => Ok(v.as_str()),
                    None => {
                        let known: Vec<&str> = variables.keys().map(String::as_str).collect();
                        let known = if known.is_empty() {
                            "the metric has no templateVariables".to_string()
                        } else {
                            format!("templateVariables has {}", known.join(", "))
                        };
                        Err(MetricError::Failed(format!(
                            "unknown template variable `{}` in `{{{{{raw}}}}}` ({known})",
                            key.trim()
                        )))
                    }
                };
            }
            return Err(MetricError::Failed(format!(
                "unknown template variable `{name}` in `{{{{{raw}}}}}` (known: {KNOWN})"
            )));
        }
    };
    Ok(value)
}

fn insert(out: &mut String, name: &str, value: &str, state: Context) -> Result<(), MetricError> {
    match state {
        Context::Double => escape_into(out, value, '"'),
        Context::Single => escape_into(out, value, '\''),
        Context::Raw => {
            if value.contains('`') {
                return Err(MetricError::Failed(format!(
                    "the value of `{name}` ({}) contains a backtick and cannot be placed inside a `...` raw string",
                    excerpt(value)
                )));
            }
            out.push_str(value);
        }
        Context::Code | Context::Comment => {
            if !is_plain_token(value) {
                return Err(MetricError::Failed(format!(
                    "the value of `{name}` ({}) is used outside a quoted string and is not a plain name, number or duration; quote the placeholder in the template, e.g. label=\"{{{{ {name} }}}}\"",
                    excerpt(value)
                )));
            }
            out.push_str(value);
        }
    }
    Ok(())
}

/// Escapes `value` for a PromQL string delimited by `quote` (PromQL accepts `\\`, the delimiting
/// quote, the C escapes and `\xNN`).
fn escape_into(out: &mut String, value: &str, quote: char) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c => out.push(c),
        }
    }
}

/// A value that can stand outside a string without changing the query's structure: empty, an
/// identifier (label or metric name), a number, or a PromQL duration.
fn is_plain_token(value: &str) -> bool {
    if value.is_empty() {
        return true;
    }
    let ident = value
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':');
    let number = value.is_ascii()
        && !value.contains(char::is_whitespace)
        && (value.parse::<f64>().is_ok() || is_hex(value));
    ident || number || is_duration(value)
}

fn is_hex(value: &str) -> bool {
    let digits = value
        .strip_prefix("0x")
        .or_else(|| value.strip_prefix("0X"));
    matches!(digits, Some(d) if !d.is_empty() && d.chars().all(|c| c.is_ascii_hexdigit()))
}

/// `1m`, `30s`, `1h30m`, `500ms`, as PromQL writes durations.
fn is_duration(value: &str) -> bool {
    let mut rest = value;
    if rest.is_empty() {
        return false;
    }
    while !rest.is_empty() {
        let digits = rest.chars().take_while(char::is_ascii_digit).count();
        if digits == 0 {
            return false;
        }
        rest = &rest[digits..];
        let unit = ["ms", "s", "m", "h", "d", "w", "y"]
            .into_iter()
            .find(|u| rest.starts_with(u));
        let Some(unit) = unit else {
            return false;
        };
        rest = &rest[unit.len()..];
    }
    true
}

/// At most 60 characters of `s`, for messages.
fn excerpt(s: &str) -> String {
    let mut e: String = s.chars().take(60).collect();
    if e.len() < s.len() {
        e.push('…');
    }
    format!("{e:?}")
}

/// Collapses runs of whitespace to one space and trims the ends, as Flagger does before sending a
/// query (used for the built-in queries and for log lines).
pub(crate) fn collapse_whitespace(query: &str) -> String {
    query.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use aviary_core::spec::Provider;

    fn ctx() -> MetricContext {
        MetricContext {
            name: "podinfo".into(),
            namespace: "test".into(),
            target: "podinfo".into(),
            service: "podinfo-svc".into(),
            ingress: "podinfo-ing".into(),
            route: "podinfo-route".into(),
            provider: Provider::Istio,
        }
    }

    fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn render(q: &str, v: &BTreeMap<String, String>) -> Result<String, MetricError> {
        render_template(q, &ctx(), "1m", v)
    }

    #[test]
    fn every_name_renders_with_or_without_spaces() {
        let q = r#"a{n="{{name}}",ns="{{ namespace }}",t="{{  target  }}",s="{{ service}}",i="{{ingress }}",r="{{ route }}",x="{{ variables.x }}"}[{{ interval }}]"#;
        let got = render(q, &vars(&[("x", "y")]));
        assert_eq!(
            got.ok().as_deref(),
            Some(
                r#"a{n="podinfo",ns="test",t="podinfo",s="podinfo-svc",i="podinfo-ing",r="podinfo-route",x="y"}[1m]"#
            )
        );
    }

    #[test]
    fn printf_renders_like_go_and_keeps_values_in_their_string() {
        // Flagger's skipper tutorial.
        let q = r#"sum(rate(skipper_serve_route_duration_seconds_count{route=~"{{ printf "kube(ew)?_%s__%s_canary__.*__%s_canary(_[0-9]+)?" namespace ingress service }}"}[{{ interval }}]))"#;
        assert_eq!(
            render(q, &vars(&[])).ok().as_deref(),
            Some(
                r#"sum(rate(skipper_serve_route_duration_seconds_count{route=~"kube(ew)?_test__podinfo-ing_canary__.*__podinfo-svc_canary(_[0-9]+)?"}[1m]))"#
            )
        );
        // A value stays one label value inside the string, as a plain placeholder's does.
        let evil = vars(&[("app", r#"x"} or vector(1) or up{a=""#)]);
        assert_eq!(
            render(r#"up{a="{{ printf "%s-%s" variables.app name }}"}"#, &evil)
                .ok()
                .as_deref(),
            Some(r#"up{a="x\"} or vector(1) or up{a=\"-podinfo"}"#)
        );
        // %q outside a string writes a string literal; %% a percent sign.
        assert_eq!(
            render(
                r#"label_replace(up, "d", {{ printf "%q" variables.app }}, "", "") # 100%"#,
                &vars(&[("app", "a\"b")])
            )
            .ok()
            .as_deref(),
            Some(r#"label_replace(up, "d", "a\"b", "", "") # 100%"#)
        );
        // Format text that would open a string is refused, and so is an unknown argument.
        let e = render(r#"up{a="{{ printf "%s\"}" name }}"}"#, &vars(&[])).unwrap_err();
        assert!(e.to_string().contains("holds a quote"), "{e}");
        let e = render(r#"up{a="{{ printf "%s" nosuch }}"}"#, &vars(&[])).unwrap_err();
        assert!(e.to_string().contains("unknown argument nosuch"), "{e}");
    }

    #[test]
    fn unknown_names_are_errors_that_name_them() {
        match render("up{a=\"{{ nmespace }}\"}", &vars(&[])) {
            Err(MetricError::Failed(m)) => {
                assert!(m.contains("`nmespace`"), "{m}");
                assert!(m.contains("known: name, namespace"), "{m}");
            }
            other => panic!("expected an error, got {other:?}"),
        }
        match render("up{a=\"{{ variables.zone }}\"}", &vars(&[("region", "eu")])) {
            Err(MetricError::Failed(m)) => {
                assert!(m.contains("`zone`"), "{m}");
                assert!(m.contains("region"), "{m}");
            }
            other => panic!("expected an error, got {other:?}"),
        }
        match render("up{a=\"{{ variables.zone }}\"}", &vars(&[])) {
            Err(MetricError::Failed(m)) => assert!(m.contains("no templateVariables"), "{m}"),
            other => panic!("expected an error, got {other:?}"),
        }
        // Go template syntax aviary does not implement is refused, not passed through.
        assert!(render("{{ .Namespace }}", &vars(&[])).is_err());
        assert!(render("up{a=\"{{ namespace \"}", &vars(&[])).is_err());
    }

    #[test]
    fn values_in_double_quotes_are_escaped() {
        let mut c = ctx();
        c.namespace = "x\"} or vector(1) or up{a=\"".into();
        let got = render_template("sum(up{ns=\"{{ namespace }}\"})", &c, "1m", &vars(&[]));
        assert_eq!(
            got.ok().as_deref(),
            Some(r#"sum(up{ns="x\"} or vector(1) or up{a=\""})"#)
        );
        let got = render(
            "up{a=\"{{ variables.v }}\"}",
            &vars(&[("v", "a\\b\nc\u{1}'")]),
        );
        assert_eq!(got.ok().as_deref(), Some(r#"up{a="a\\b\nc\x01'"}"#));
    }

    #[test]
    fn values_in_single_quotes_and_raw_strings() {
        let got = render("up{a='{{ variables.v }}'}", &vars(&[("v", "it's \"x\"")]));
        assert_eq!(got.ok().as_deref(), Some(r#"up{a='it\'s "x"'}"#));
        let got = render("up{a=`{{ variables.v }}`}", &vars(&[("v", "a\\b\"")]));
        assert_eq!(got.ok().as_deref(), Some("up{a=`a\\b\"`}"));
        assert!(render(
            "up{a=`{{ variables.v }}`}",
            &vars(&[("v", "a`} or vector(1)")])
        )
        .is_err());
    }

    #[test]
    fn the_string_context_follows_escapes_in_the_template() {
        // The escaped quote does not close the string: the placeholder is still inside it.
        let got = render(
            r#"up{a="\"{{ variables.v }}"}"#,
            &vars(&[("v", "\"} or vector(1)")]),
        );
        assert_eq!(got.ok().as_deref(), Some(r#"up{a="\"\"} or vector(1)"}"#));
    }

    #[test]
    fn values_outside_strings_must_be_plain_tokens() {
        for ok in [
            "1m",
            "1h30m",
            "500ms",
            "0.99",
            "1e-3",
            "le",
            "destination_workload",
            "",
        ] {
            let got = render(
                "histogram_quantile({{ variables.v }}, x)",
                &vars(&[("v", ok)]),
            );
            assert!(got.is_ok(), "{ok:?}: {got:?}");
        }
        for bad in [
            "1m] or vector(1) or up[1m",
            "0.99, vector(1)",
            "a b",
            "x\"",
            "x}",
        ] {
            let got = render("rate(up[{{ variables.v }}])", &vars(&[("v", bad)]));
            assert!(got.is_err(), "{bad:?} was accepted: {got:?}");
        }
        // A comment ends at the newline: a newline in a value placed there would end it.
        assert!(render(
            "up # {{ variables.v }}\n",
            &vars(&[("v", "x\nor vector(1)")])
        )
        .is_err());
    }

    #[test]
    fn trim_markers_remove_whitespace_like_go_templates() {
        let got = render("a  {{- namespace -}}  b", &vars(&[]));
        assert_eq!(got.ok().as_deref(), Some("atestb"));
        // A dash without a space is part of the name, as in Go.
        assert!(render("{{-namespace}}", &vars(&[])).is_err());
    }

    #[test]
    fn text_without_placeholders_is_unchanged() {
        let q = "sum(rate(x{a=\"}}\"}[1m])) # {not a placeholder}\n";
        assert_eq!(render(q, &vars(&[])).ok().as_deref(), Some(q));
    }

    #[test]
    fn tokens_and_durations() {
        assert!(is_duration("1m30s"));
        assert!(!is_duration("m"));
        assert!(!is_duration("1x"));
        assert!(is_plain_token("0x1F"));
        assert!(!is_plain_token("1 "));
        assert_eq!(collapse_whitespace("\n\ta  b\n c "), "a b c");
    }
}
