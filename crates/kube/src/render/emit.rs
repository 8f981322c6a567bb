//! Writes JSON values as block-style YAML that both `kubectl` (YAML 1.1) and aviary's own reader
//! (YAML 1.2) read back to the same values.
//!
//! Keys come in a stable order: `apiVersion`, `kind`, `metadata` first in a document, `name` first in
//! any other mapping, the rest sorted. A string is written plain only when no YAML version could
//! read it as anything but that string (`80`, `yes`, `on`, `2024-01-01` and `~` are quoted);
//! multi-line strings become literal blocks (`|`). (A `<<` key is written as `"<<"`, which YAML
//! reads as a string; aviary's own reader takes it for a merge key all the same.)

use serde_json::Value;

/// Multi-document YAML: every document starts with `---`, so outputs can be concatenated.
pub fn to_yaml(objects: &[Value]) -> String {
    let mut out = String::new();
    for obj in objects {
        out.push_str("---\n");
        match obj {
            Value::Object(map) if !map.is_empty() => write_map(&mut out, obj, 0, false, true),
            Value::Array(items) if !items.is_empty() => write_seq(&mut out, items, 0, false),
            other => {
                out.push_str(&inline_scalar(other));
                out.push('\n');
            }
        }
    }
    out
}

const DOC_KEYS: [&str; 3] = ["apiVersion", "kind", "metadata"];

fn ordered_keys(map: &serde_json::Map<String, Value>, top: bool) -> Vec<&String> {
    let mut keys: Vec<&String> = map.keys().collect();
    let rank = |k: &str| -> usize {
        if top {
            DOC_KEYS
                .iter()
                .position(|d| *d == k)
                .unwrap_or(DOC_KEYS.len())
        } else if k == "name" {
            0
        } else {
            1
        }
    };
    keys.sort_by(|a, b| rank(a).cmp(&rank(b)).then_with(|| a.cmp(b)));
    keys
}

fn indent(out: &mut String, n: usize) {
    out.push_str(&" ".repeat(n));
}

/// A mapping whose keys sit at column `ind`. `inline`: the first key continues a `- ` already written.
fn write_map(out: &mut String, value: &Value, ind: usize, inline: bool, top: bool) {
    let Value::Object(map) = value else {
        return;
    };
    for (i, key) in ordered_keys(map, top).into_iter().enumerate() {
        if i > 0 || !inline {
            indent(out, ind);
        }
        out.push_str(&scalar_string(key));
        out.push(':');
        let Some(v) = map.get(key) else {
            continue;
        };
        write_value(out, v, ind, ind + 2);
    }
}

/// A sequence whose `- ` sit at column `ind`.
fn write_seq(out: &mut String, items: &[Value], ind: usize, inline: bool) {
    for (i, item) in items.iter().enumerate() {
        if i > 0 || !inline {
            indent(out, ind);
        }
        out.push('-');
        match item {
            Value::Object(m) if !m.is_empty() => {
                out.push(' ');
                write_map(out, item, ind + 2, true, false);
            }
            Value::Array(a) if !a.is_empty() => {
                out.push(' ');
                write_seq(out, a, ind + 2, true);
            }
            _ => write_value(out, item, ind, ind + 2),
        }
    }
}

/// The value after `key:` (or `-`): a scalar on the same line, or a block below. Nested mappings
/// go at `child`; sequences under a key are not indented (`ind`), as kubectl writes them.
fn write_value(out: &mut String, v: &Value, ind: usize, child: usize) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            out.push('\n');
            write_map(out, v, child, false, false);
        }
        Value::Array(a) if !a.is_empty() => {
            out.push('\n');
            write_seq(out, a, ind, false);
        }
        Value::String(s) => match literal_block(s) {
            Some((header, lines)) => {
                out.push(' ');
                out.push_str(header);
                out.push('\n');
                for line in lines {
                    if !line.is_empty() {
                        indent(out, child);
                        out.push_str(line);
                    }
                    out.push('\n');
                }
            }
            None => {
                out.push(' ');
                out.push_str(&scalar_string(s));
                out.push('\n');
            }
        },
        other => {
            out.push(' ');
            out.push_str(&inline_scalar(other));
            out.push('\n');
        }
    }
}

fn inline_scalar(v: &Value) -> String {
    match v {
        Value::Null => "null".to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => scalar_string(s),
        Value::Array(_) => "[]".to_string(),
        Value::Object(_) => "{}".to_string(),
    }
}

/// Characters YAML lets us write as they are (its `c-printable`, without line breaks and the BOM).
fn printable(c: char) -> bool {
    matches!(c, '\t' | ' '..='~' | '\u{a0}'..='\u{d7ff}' | '\u{e000}'..='\u{fefe}' | '\u{ff00}'..='\u{fffd}' | '\u{10000}'..)
        && !matches!(c, '\u{2028}' | '\u{2029}')
}

/// Words that YAML 1.1 (kubectl) or 1.2 reads as booleans or null.
const SPECIAL_WORDS: [&str; 9] = ["y", "yes", "n", "no", "on", "off", "true", "false", "null"];

fn plain_ok(s: &str) -> bool {
    let Some(first) = s.chars().next() else {
        return false;
    };
    if !(first.is_ascii_alphabetic() || first == '/' || first == '_') {
        return false;
    }
    if s.ends_with([' ', ':']) || s.contains(": ") || s.contains(" #") {
        return false;
    }
    if !s
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_./:@=+,%~()$; ".contains(c))
    {
        return false;
    }
    !SPECIAL_WORDS.iter().any(|w| s.eq_ignore_ascii_case(w))
}

/// A string as a plain scalar when that is safe, else double-quoted with escapes.
fn scalar_string(s: &str) -> String {
    if plain_ok(s) {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if printable(c) => out.push(c),
            c if (c as u32) <= 0xffff => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push_str(&format!("\\U{:08x}", c as u32)),
        }
    }
    out.push('"');
    out
}

/// The header (`|`, `|-` or `|+`) and the lines of a string written as a literal block, or `None`
/// when it must be quoted: a single line, a character a block cannot hold, or leading spaces that
/// would need an indentation indicator.
fn literal_block(s: &str) -> Option<(&'static str, Vec<&str>)> {
    if !s.contains('\n') || !s.chars().all(|c| c == '\n' || printable(c)) {
        return None;
    }
    let body = s.trim_end_matches('\n');
    let trailing = s.len() - body.len();
    // The indentation is read from the first line with content; lines before it, and it, must not
    // start with a space or a tab.
    let lines: Vec<&str> = body.split('\n').collect();
    let first_content = lines.iter().position(|l| !l.trim().is_empty())?;
    if lines[..=first_content]
        .iter()
        .any(|l| l.starts_with([' ', '\t']))
    {
        return None;
    }
    let header = match trailing {
        0 => "|-",
        1 => "|",
        _ => "|+",
    };
    let mut all = lines;
    all.extend(std::iter::repeat("").take(trailing.saturating_sub(1)));
    Some((header, all))
}

#[cfg(test)]
mod tests {
    use super::*;
    use aviary_core::spec::yaml::parse_documents;
    use proptest::prelude::*;
    use serde_json::json;
    use std::collections::BTreeMap;

    fn reread(text: &str) -> Vec<Value> {
        match parse_documents("out.yaml", text) {
            Ok(docs) => docs.iter().map(|d| d.to_json()).collect(),
            Err(e) => panic!("cannot read back {text:?}: {e:?}"),
        }
    }

    #[test]
    fn kubernetes_object() {
        let obj = json!({
            "spec": {"replicas": 2, "template": {"spec": {"containers": [
                {"image": "ghcr.io/acme/app:1@sha256:00", "name": "app", "ports": [{"containerPort": 8080}],
                 "args": ["--port", "8080", "yes", "", "-v", "a: b", "#x", "x #y", "on", "~", "null", "1e3", "0x1F", "2024-01-01"],
                 "env": []}
            ]}}},
            "kind": "Deployment",
            "metadata": {"name": "app", "labels": {"app.kubernetes.io/name": "app", "80": "eighty"}, "annotations": {}},
            "apiVersion": "apps/v1",
            "data": {"script.sh": "#!/bin/sh\necho hi\n", "two": "a\n\n", "none": "a\nb", "lead": " x\ny\n"},
            "f": 1.5, "t": true, "n": null
        });
        let text = to_yaml(std::slice::from_ref(&obj));
        assert!(
            text.starts_with("---\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n"),
            "{text}"
        );
        assert!(
            text.contains("      containers:\n      - name: app\n"),
            "{text}"
        );
        assert!(
            text.contains("script.sh: |\n    #!/bin/sh\n    echo hi\n"),
            "{text}"
        );
        assert!(text.contains("\"80\": eighty"), "{text}");
        assert!(text.contains("- \"yes\"\n"), "{text}");
        assert!(text.contains("- \"8080\"\n"), "{text}");
        assert_eq!(reread(&text), vec![obj]);
    }

    #[test]
    fn several_documents_and_scalars() {
        let docs = vec![
            json!({"a": 1}),
            json!([1, [2, [3]], {}, []]),
            json!("x"),
            json!({}),
        ];
        let text = to_yaml(&docs);
        assert_eq!(text.matches("---\n").count(), 4);
        // Our reader leaves out empty documents only when they are null; `{}` stays.
        assert_eq!(reread(&text), docs);
        assert_eq!(to_yaml(&[]), "");
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            (-1e6f64..1e6).prop_map(Value::from),
            any::<String>().prop_map(Value::String),
            "[ -~\n\t]{0,12}".prop_map(Value::String),
            prop_oneof![
                Just("yes"),
                Just("No"),
                Just("ON"),
                Just("y"),
                Just("~"),
                Just("- a"),
                Just("a:"),
                Just("---"),
                Just("..."),
                Just("0o17"),
                Just("1_000"),
                Just(".inf"),
                Just("\n"),
                Just(" \n a"),
                Just("\na\n b"),
                Just("a\r\nb"),
                Just("\u{85}x\n"),
            ]
            .prop_map(|s| Value::String(s.to_string())),
        ];
        leaf.prop_recursive(4, 40, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
                // aviary's reader takes any `<<` key, even quoted, as a merge key.
                prop::collection::btree_map("[a-z0-9 :#-]{0,6}|.{0,4}", inner, 0..5)
                    .prop_map(|m| m
                        .into_iter()
                        .filter(|(k, _)| k != "<<")
                        .collect::<BTreeMap<_, _>>())
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(400))]
        #[test]
        fn round_trips(docs in prop::collection::vec(json_value(), 1..3)) {
            // A null document is dropped by the reader, by design.
            let docs: Vec<Value> = docs.into_iter().filter(|d| !d.is_null()).collect();
            let text = to_yaml(&docs);
            let back = parse_documents("out.yaml", &text);
            prop_assert!(back.is_ok(), "{text:?}: {back:?}");
            let back: Vec<Value> = back.unwrap_or_default().iter().map(|d| d.to_json()).collect();
            prop_assert_eq!(back, docs, "{:?}", text);
        }
    }
}
