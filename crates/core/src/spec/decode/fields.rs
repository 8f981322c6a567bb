//! The readers every part of the spec is decoded with: a [`Field`] is one value with its path,
//! converted with type checks that record what went wrong; a [`Reader`] reads the keys of one
//! mapping and, when finished, reports the keys nobody asked for.

use std::collections::BTreeMap;
use std::time::Duration;

use super::diagnostics::{choice_help, index, join, Cx, Hint};
use crate::spec::duration::parse_go_duration;
use crate::spec::yaml::{quote, Node, Value};
use crate::spec::Diagnostic;

/// Kubernetes `int32`: the largest value of a field without a stated maximum.
const INT32_MAX: i64 = i32::MAX as i64;

pub(super) fn to_u32(v: i64) -> u32 {
    u32::try_from(v).unwrap_or(0)
}

/// `an integer 1-100`, `an integer >= 0`, `an integer`.
fn int_expectation(lo: i64, hi: Option<i64>) -> String {
    match hi {
        Some(hi) => format!("an integer {lo}-{hi}"),
        None if lo == i64::MIN => "an integer".to_string(),
        None => format!("an integer >= {lo}"),
    }
}

/// One value of the tree, with its path and the line of the key that holds it.
#[derive(Clone)]
pub(super) struct Field<'n> {
    pub(super) node: &'n Node,
    pub(super) path: String,
    pub(super) key_line: usize,
}

impl<'n> Field<'n> {
    pub(super) fn new(node: &'n Node, path: String, key_line: usize) -> Self {
        Field {
            node,
            path,
            key_line,
        }
    }

    /// The line to report a problem with this value at: its own for a scalar, its key's for a
    /// collection (whose own line is that of its first entry).
    pub(super) fn line(&self) -> usize {
        match self.node.value {
            Value::Seq(_) | Value::Map(_) => self.key_line,
            _ => self.node.line,
        }
    }

    pub(super) fn error<'c>(
        &self,
        cx: &'c mut Cx,
        message: impl Into<String>,
    ) -> &'c mut Diagnostic {
        cx.error(self.line(), &self.path, message)
    }

    pub(super) fn warn<'c>(
        &self,
        cx: &'c mut Cx,
        message: impl Into<String>,
    ) -> &'c mut Diagnostic {
        cx.warn(self.line(), &self.path, message)
    }

    pub(super) fn expected<'c>(&self, cx: &'c mut Cx, what: &str) -> &'c mut Diagnostic {
        let got = self.node.describe();
        self.error(cx, format!("expected {what}, got {got}"))
    }

    pub(super) fn string(&self, cx: &mut Cx) -> Option<String> {
        match &self.node.value {
            Value::Str(s) => Some(s.clone()),
            Value::Int(_) | Value::Float(_) | Value::Bool(_) => {
                let text = self.node.scalar_text().unwrap_or_default();
                self.expected(cx, "a string")
                    .hint(format!("quote it: {}", quote(&text)));
                None
            }
            _ => {
                self.expected(cx, "a string");
                None
            }
        }
    }

    pub(super) fn nonempty_string(&self, cx: &mut Cx) -> Option<String> {
        let s = self.string(cx)?;
        if s.is_empty() {
            self.expected(cx, "a non-empty string");
            return None;
        }
        Some(s)
    }

    /// One of `choices`, with a did-you-mean.
    pub(super) fn one_of(&self, cx: &mut Cx, what: &str, choices: &[&str]) -> Option<String> {
        let s = self.string(cx)?;
        if choices.contains(&s.as_str()) {
            return Some(s);
        }
        self.error(cx, format!("unknown {what} {}", quote(&s)))
            .hint(choice_help(&s, choices, "use one of"));
        None
    }

    pub(super) fn int(&self, cx: &mut Cx, lo: i64, hi: Option<i64>) -> Option<i64> {
        let what = int_expectation(lo, hi);
        match &self.node.value {
            Value::Int(i) => {
                let too_big = hi.is_none() && lo != i64::MIN && *i > INT32_MAX;
                if *i < lo || hi.is_some_and(|hi| *i > hi) {
                    self.expected(cx, &what);
                    None
                } else if too_big {
                    self.expected(cx, &what)
                        .hint(format!("the largest value allowed is {INT32_MAX}"));
                    None
                } else {
                    Some(*i)
                }
            }
            Value::Str(s) if s.trim().parse::<i64>().is_ok() => {
                self.expected(cx, &what)
                    .hint(format!("remove the quotes: {}", s.trim()));
                None
            }
            Value::Float(f) if f.fract() == 0.0 && f.is_finite() => {
                self.expected(cx, &what)
                    .hint(format!("write it without a decimal point: {f:.0}"));
                None
            }
            _ => {
                self.expected(cx, &what);
                None
            }
        }
    }

    pub(super) fn number(&self, cx: &mut Cx) -> Option<f64> {
        match &self.node.value {
            Value::Int(i) => Some(*i as f64),
            Value::Float(f) if f.is_finite() => Some(*f),
            Value::Float(f) if f.is_infinite() => {
                let text = self.node.scalar_text().unwrap_or_default();
                let field = self.path.rsplit('.').next().unwrap_or("the field");
                self.expected(cx, "a finite number").hint(format!(
                    "{text} is not a usable value; to set no limit, leave {field} out"
                ));
                None
            }
            Value::Str(s) if s.trim().parse::<f64>().is_ok_and(|f| f.is_finite()) => {
                self.expected(cx, "a number")
                    .hint(format!("remove the quotes: {}", s.trim()));
                None
            }
            _ => {
                self.expected(cx, "a number");
                None
            }
        }
    }

    pub(super) fn boolean(&self, cx: &mut Cx) -> Option<bool> {
        match &self.node.value {
            Value::Bool(b) => Some(*b),
            Value::Str(s) if s == "true" || s == "false" => {
                self.expected(cx, "true or false")
                    .hint(format!("remove the quotes: {s}"));
                None
            }
            Value::Str(s)
                if matches!(
                    s.to_lowercase().as_str(),
                    "yes" | "no" | "on" | "off" | "y" | "n"
                ) =>
            {
                self.expected(cx, "true or false").hint(
                    "write true or false: like Kubernetes, aviary reads YAML 1.2, where yes, no, on and off are strings",
                );
                None
            }
            _ => {
                self.expected(cx, "true or false");
                None
            }
        }
    }

    /// A Go duration string; returns the duration and the text as written.
    pub(super) fn duration(&self, cx: &mut Cx) -> Option<(Duration, String)> {
        match &self.node.value {
            Value::Str(s) => match parse_go_duration(s) {
                Ok(d) => Some((d, s.clone())),
                Err(message) => {
                    let d = self.error(cx, message);
                    if s.trim().parse::<f64>().is_ok() {
                        d.hint(format!("add a unit: \"{}s\"", s.trim()));
                    } else {
                        d.hint("write a number with a unit (ns, us, ms, s, m, h), such as 30s, 1m or 1h30m");
                    }
                    None
                }
            },
            Value::Int(i) => {
                self.expected(cx, "a duration such as 30s or 1m")
                    .hint(format!("add a unit: \"{i}s\""));
                None
            }
            _ => {
                self.expected(cx, "a duration such as 30s or 1m");
                None
            }
        }
    }

    /// A duration kept as its text (`service.timeout`, `retries.perTryTimeout`).
    pub(super) fn duration_text(&self, cx: &mut Cx) -> Option<String> {
        self.duration(cx).map(|(_, text)| text)
    }

    /// The items of a list, each with its path and line.
    pub(super) fn list(&self, cx: &mut Cx) -> Vec<Field<'n>> {
        match &self.node.value {
            Value::Seq(items) => items
                .iter()
                .enumerate()
                .map(|(i, item)| Field::new(item, index(&self.path, i), item.line))
                .collect(),
            Value::Map(_) => {
                self.expected(cx, "a list");
                Vec::new()
            }
            _ => {
                let text = self.node.scalar_text().unwrap_or_default();
                self.expected(cx, "a list")
                    .hint(format!("write it as a list: [{text}]"));
                Vec::new()
            }
        }
    }

    pub(super) fn str_list(&self, cx: &mut Cx) -> Vec<String> {
        self.list(cx)
            .iter()
            .filter_map(|item| item.string(cx))
            .collect()
    }

    /// The entries of a mapping with string keys (others are reported), as fields.
    pub(super) fn entries(&self, cx: &mut Cx) -> Vec<(String, Field<'n>)> {
        let Value::Map(entries) = &self.node.value else {
            self.expected(cx, "a mapping");
            return Vec::new();
        };
        let mut out = Vec::new();
        for (k, v) in entries {
            match &k.value {
                Value::Str(key) => {
                    out.push((key.clone(), Field::new(v, join(&self.path, key), k.line)))
                }
                _ => bad_key(cx, k, &self.path),
            }
        }
        out
    }

    /// A `map[string]string`: every value must be a string.
    pub(super) fn str_map(&self, cx: &mut Cx) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for (key, value) in self.entries(cx) {
            if value.node.is_null() {
                value
                    .expected(cx, "a string")
                    .hint("write \"\" for an empty value");
            } else if let Some(s) = value.string(cx) {
                out.insert(key, s);
            }
        }
        out
    }

    /// A mapping whose keys are checked against the ones read.
    pub(super) fn map(&self, cx: &mut Cx) -> Option<Reader<'n>> {
        self.reader(cx, false)
    }

    /// A mapping whose other keys are accepted without a word (metadata and the like).
    pub(super) fn free_map(&self, cx: &mut Cx) -> Option<Reader<'n>> {
        self.reader(cx, true)
    }

    pub(super) fn reader(&self, cx: &mut Cx, free: bool) -> Option<Reader<'n>> {
        match &self.node.value {
            Value::Map(entries) => Some(Reader {
                entries,
                path: self.path.clone(),
                line: self.key_line,
                known: Vec::new(),
                free,
            }),
            _ => {
                self.expected(cx, "a mapping");
                None
            }
        }
    }

    /// Any mapping, kept as JSON.
    pub(super) fn json_map(&self, cx: &mut Cx) -> Option<serde_json::Value> {
        match &self.node.value {
            Value::Map(_) => Some(self.node.to_json()),
            _ => {
                self.expected(cx, "a mapping");
                None
            }
        }
    }
}

fn bad_key(cx: &mut Cx, key: &Node, path: &str) {
    let d = cx.error(
        key.line,
        path,
        format!("expected a string key, got {}", key.describe()),
    );
    if let Some(text) = key.scalar_text() {
        d.hint(format!("quote it: {}", quote(&text)));
    }
}

/// Reads the fields of one mapping and, when finished, reports the keys nobody asked for.
pub(super) struct Reader<'n> {
    pub(super) entries: &'n [(Node, Node)],
    pub(super) path: String,
    /// Where a missing field is reported: the line of the key holding this mapping.
    pub(super) line: usize,
    pub(super) known: Vec<&'static str>,
    pub(super) free: bool,
}

impl<'n> Reader<'n> {
    pub(super) fn lookup(&self, key: &str) -> Option<&'n (Node, Node)> {
        self.entries
            .iter()
            .find(|(k, _)| matches!(&k.value, Value::Str(s) if s == key))
    }

    /// The value of `key` (which becomes a known key); `None` when absent or null.
    pub(super) fn field(&mut self, key: &'static str) -> Option<Field<'n>> {
        self.known.push(key);
        let (k, v) = self.lookup(key)?;
        if v.is_null() {
            return None;
        }
        Some(Field::new(v, join(&self.path, key), k.line))
    }

    /// Whether `key` is set to something other than null.
    pub(super) fn present(&self, key: &str) -> bool {
        self.lookup(key).is_some_and(|(_, v)| !v.is_null())
    }

    /// The line of `key`, or of this mapping when it is absent.
    pub(super) fn key_line(&self, key: &str) -> usize {
        self.lookup(key).map_or(self.line, |(k, _)| k.line)
    }

    /// Marks keys as known without reading them.
    pub(super) fn ignore(&mut self, keys: &[&'static str]) {
        self.known.extend_from_slice(keys);
    }

    /// A required field, converted by `convert`; a missing one is reported.
    pub(super) fn req<T>(
        &mut self,
        cx: &mut Cx,
        key: &'static str,
        convert: impl FnOnce(&Field<'n>, &mut Cx) -> Option<T>,
    ) -> Option<T> {
        match self.field(key) {
            Some(f) => convert(&f, cx),
            None => {
                let line = self.key_line(key);
                cx.error(
                    line,
                    &self.path,
                    format!("missing required field {}", quote(key)),
                );
                None
            }
        }
    }

    pub(super) fn string(&mut self, cx: &mut Cx, key: &'static str) -> Option<String> {
        self.field(key)?.string(cx)
    }

    pub(super) fn req_string(&mut self, cx: &mut Cx, key: &'static str) -> Option<String> {
        self.req(cx, key, |f, cx| f.nonempty_string(cx))
    }

    pub(super) fn int(
        &mut self,
        cx: &mut Cx,
        key: &'static str,
        lo: i64,
        hi: Option<i64>,
    ) -> Option<i64> {
        self.field(key)?.int(cx, lo, hi)
    }

    pub(super) fn number(&mut self, cx: &mut Cx, key: &'static str) -> Option<f64> {
        self.field(key)?.number(cx)
    }

    /// A boolean, `false` when absent.
    pub(super) fn flag(&mut self, cx: &mut Cx, key: &'static str) -> bool {
        self.field(key).and_then(|f| f.boolean(cx)).unwrap_or(false)
    }

    pub(super) fn str_list(&mut self, cx: &mut Cx, key: &'static str) -> Vec<String> {
        self.field(key).map(|f| f.str_list(cx)).unwrap_or_default()
    }

    pub(super) fn str_map(&mut self, cx: &mut Cx, key: &'static str) -> BTreeMap<String, String> {
        self.field(key).map(|f| f.str_map(cx)).unwrap_or_default()
    }

    pub(super) fn list(&mut self, cx: &mut Cx, key: &'static str) -> Vec<Field<'n>> {
        self.field(key).map(|f| f.list(cx)).unwrap_or_default()
    }

    pub(super) fn map(&mut self, cx: &mut Cx, key: &'static str) -> Option<Reader<'n>> {
        self.field(key)?.map(cx)
    }

    /// Reports the keys that were never asked for (unless the mapping is free-form) and non-string keys.
    pub(super) fn finish(self, cx: &mut Cx) {
        for (k, _) in self.entries {
            match &k.value {
                Value::Str(key) => {
                    if self.free || self.known.contains(&key.as_str()) {
                        continue;
                    }
                    let mut known: Vec<&str> = Vec::new();
                    for name in &self.known {
                        if !known.contains(name) {
                            known.push(name);
                        }
                    }
                    let help = choice_help(key, &known, "known fields");
                    cx.unknown(k.line, &join(&self.path, key), key).hint(help);
                }
                _ => bad_key(cx, k, &self.path),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::spec::decode::test_support::*;

    #[test]
    fn strings_and_booleans_are_strict() {
        let text = canary(FLAGGER_API, STEPS).replace("name: podinfo\nspec", "name: 5\nspec");
        assert_eq!(
            errors(&text),
            vec!["canary.yaml:4: metadata.name: expected a string, got 5\n  help: quote it: \"5\""]
        );
        let text =
            canary(FLAGGER_API, STEPS).replace("name: podinfo\nspec", "name: Pod_Info\nspec");
        assert_eq!(
            errors(&text),
            vec!["canary.yaml:4: metadata.name: \"Pod_Info\" is not a valid Kubernetes name\n  help: use at most 253 lowercase letters, digits, '-' and '.', starting and ending with a letter or digit"]
        );
        let text = canary(FLAGGER_API, "    stepWeight: 10\n    mirror: \"true\"\n    webhooks:\n    - name: a\n      url: http://x/\n      metadata:\n        replicas: 3\n");
        assert_eq!(
            errors(&text),
            vec![
                "canary.yaml:13: spec.analysis.mirror: expected true or false, got \"true\"\n  help: remove the quotes: true",
                "canary.yaml:18: spec.analysis.webhooks[0].metadata.replicas: expected a string, got 3\n  help: quote it: \"3\"",
            ]
        );
        let text = canary(FLAGGER_API, STEPS)
            .replace("port: 9898", "port: 9898\n    hosts: app.example.com");
        assert_eq!(
            errors(&text),
            vec!["canary.yaml:11: spec.service.hosts: expected a list, got \"app.example.com\"\n  help: write it as a list: [app.example.com]"]
        );
    }

    #[test]
    fn unknown_fields_error_in_aviary_warn_in_flagger() {
        let body = "    stepWieght: 10\n    stepWeight: 10\n    maxWeight: 50\n";
        assert_eq!(
            errors(&canary(AVIARY_API, body)),
            vec!["canary.yaml:12: spec.analysis.stepWieght: unknown field \"stepWieght\"\n  help: did you mean \"stepWeight\"?"]
        );
        assert_eq!(
            warnings(&canary(FLAGGER_API, body)),
            vec!["canary.yaml:12: warning: spec.analysis.stepWieght: unknown field \"stepWieght\"; Flagger would drop it\n  help: did you mean \"stepWeight\"?"]
        );
        // Far from every known key: the help lists them.
        let text = canary(AVIARY_API, STEPS).replace("  targetRef:\n", "  zzz: 1\n  targetRef:\n");
        assert_eq!(
            errors(&text),
            vec!["canary.yaml:6: spec.zzz: unknown field \"zzz\"\n  help: known fields: provider, metricsServer, targetRef, autoscalerRef, ingressRef, routeRef, upstreamRef, service, analysis, canaryAnalysis, progressDeadlineSeconds, skipAnalysis, revertOnDeletion, suspend"]
        );
        // Free-form mappings accept anything.
        let text = canary(AVIARY_API, STEPS).replace(
            "  name: podinfo\nspec:",
            "  name: podinfo\n  labels: {a: b}\n  uid: x\nspec:",
        );
        assert!(decode_lenient(&text).warnings.is_empty());
    }
}
