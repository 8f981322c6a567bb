//! Turns the YAML tree into typed [`Canary`] and [`MetricTemplate`] values, reporting every problem
//! at once, each with its line, field path and, where one can be stated, the fix.
//!
//! The small framework at the top keeps each field to one line: a [`Reader`] reads the keys of one
//! mapping, remembers which keys it knows, and reports the others when it is finished; a [`Field`] is
//! one value with its path, converted with type checks that record what went wrong in the [`Cx`].

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use super::duration::{format_human, parse_go_duration};
use super::placeholders;
use super::types::*;
use super::yaml::{parse_documents, quote, Node, Value};
use super::{Diagnostic, Documents, SpecError, TemplateUse};

const FLAGGER_API: &str = "flagger.app/v1beta1";
const AVIARY_API: &str = "aviary.dev/v1alpha1";
const OLD_FLAGGER_APIS: [&str; 3] = [
    "flagger.app/v1alpha1",
    "flagger.app/v1alpha2",
    "flagger.app/v1alpha3",
];
const TYPE_HELP: &str = "add apiVersion: flagger.app/v1beta1 and kind: Canary";
/// Kubernetes `int32`: the largest value of a field without a stated maximum.
const INT32_MAX: i64 = i32::MAX as i64;

/// The most `iterations` and `threshold` aviary accepts. Flagger's CRD sets no maximum; each counts
/// analysis ticks, and a million ticks is 11.6 days at aviary's shortest interval (1s) and 116
/// days at Flagger's (10s): no real analysis comes near it, while `2147483647` would be 68 years
/// at 1s.
pub const MAX_TICK_COUNT: i64 = 1_000_000;
/// The longest analysis `interval`: a day between two checks. Flagger's CRD allows any number of
/// minutes; a canary checked less than daily is not being analysed.
pub const MAX_INTERVAL: Duration = Duration::from_secs(24 * 3600);
/// The most `retries` of one webhook call (Flagger: no maximum). Each retry waits up to 5s plus
/// the webhook's timeout, so 100 retries already hold one tick for many minutes.
pub const MAX_WEBHOOK_RETRIES: i64 = 100;
/// Kubernetes' limit on a Service name (an RFC 1035 label) and on a name that must be one.
const DNS_LABEL_MAX: usize = 63;
/// Kubernetes' limit on most object names (an RFC 1123 subdomain).
const DNS_SUBDOMAIN_MAX: usize = 253;

/// Providers aviary can route traffic for, in Flagger's spelling.
const ROUTED_PROVIDERS: [&str; 8] = [
    "kubernetes:replicas",
    "kubernetes",
    "istio",
    "gloo",
    "nginx",
    "gatewayapi",
    "gatewayapi:v1",
    "gatewayapi:v1beta1",
];
/// Providers Flagger knows and aviary parses but cannot route yet.
const OTHER_PROVIDERS: [&str; 13] = [
    "linkerd",
    "appmesh",
    "appmesh:v1beta2",
    "contour",
    "skipper",
    "traefik",
    "osm",
    "kuma",
    "apisix",
    "knative",
    "smi:v1alpha1",
    "smi:v1alpha2",
    "smi:v1alpha3",
];
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
const TARGET_KINDS: [&str; 3] = ["Deployment", "DaemonSet", "Service"];
const SCALER_KINDS: [&str; 2] = ["HorizontalPodAutoscaler", "ScaledObject"];
const SEVERITIES: [&str; 3] = ["info", "warn", "error"];
const MATCH_KINDS: [&str; 4] = ["exact", "prefix", "suffix", "regex"];

/// Reads every Canary and MetricTemplate of `text` (named `file` in messages). Documents of other kinds
/// are listed in [`Documents::skipped`]. Any error makes the whole file invalid; all of them are reported.
pub fn decode_documents(file: &str, text: &str) -> Result<Documents, SpecError> {
    let text = super::input::strip_bom(text);
    let docs = match parse_documents(file, text) {
        Ok(docs) => docs,
        Err(errors) => {
            return Err(SpecError::Invalid {
                errors,
                warnings: Vec::new(),
            })
        }
    };
    let mut cx = Cx::new(file, text);
    let mut out = Documents::default();
    for doc in &docs {
        decode_document(&mut cx, doc, &mut out);
    }
    // `{{ variables.X }}` of the templates in this file against the metrics that use them.
    let local: Vec<TemplateUse> = cx
        .uses
        .iter()
        .filter(|u| u.find(&out.templates).is_some())
        .cloned()
        .collect();
    cx.errors
        .extend(super::check_template_uses(&local, &out.templates));
    out.template_uses = std::mem::take(&mut cx.uses);
    // Unknown fields are found when a mapping is finished; present everything in file order.
    cx.errors.sort_by_key(|d| d.line);
    for d in cx.errors.iter_mut().filter(|d| d.help.is_none()) {
        d.help = field_help(&d.path).map(str::to_string);
    }
    cx.warnings.sort_by_key(|d| d.line);
    if cx.errors.is_empty() {
        out.warnings = cx.warnings;
        Ok(out)
    } else {
        Err(SpecError::Invalid {
            errors: cx.errors,
            warnings: cx.warnings,
        })
    }
}

// =============================================================================================
// The framework.

/// What has been found so far.
struct Cx<'f> {
    file: &'f str,
    /// The whole file, to find the line of a placeholder inside a multi-line query.
    text: &'f str,
    errors: Vec<Diagnostic>,
    warnings: Vec<Diagnostic>,
    /// `aviary.dev/v1alpha1`: unknown fields are errors, not warnings.
    strict: bool,
    /// Canary metrics that use a MetricTemplate, in file order.
    uses: Vec<TemplateUse>,
}

impl<'f> Cx<'f> {
    fn new(file: &'f str, text: &'f str) -> Self {
        Cx {
            file,
            text,
            errors: Vec::new(),
            warnings: Vec::new(),
            strict: false,
            uses: Vec::new(),
        }
    }

    /// The line, at or after `from`, that holds `needle` (a placeholder of a query); `from`
    /// when none does.
    fn line_with(&self, from: usize, needle: &str) -> usize {
        self.text
            .lines()
            .enumerate()
            .skip(from.saturating_sub(1))
            .find(|(_, l)| l.contains(needle))
            .map_or(from, |(i, _)| i + 1)
    }

    /// Reports every problem with the placeholders of the query at `field`; returns them.
    fn check_query(&mut self, field: &Field, query: &str) -> Vec<placeholders::Placeholder> {
        let (found, problems) = placeholders::scan(query);
        for p in problems {
            let excerpt: String = query[p.offset..]
                .lines()
                .next()
                .unwrap_or_default()
                .chars()
                .take(12)
                .collect();
            let excerpt = excerpt.trim_end();
            let line = self.line_with(field.line(), excerpt);
            self.error(line, &field.path, p.message).hint(p.help);
        }
        found
    }

    fn error(&mut self, line: usize, path: &str, message: impl Into<String>) -> &mut Diagnostic {
        let i = self.errors.len();
        self.errors
            .push(Diagnostic::error(self.file, line, path, message));
        &mut self.errors[i]
    }

    fn warn(&mut self, line: usize, path: &str, message: impl Into<String>) -> &mut Diagnostic {
        let i = self.warnings.len();
        self.warnings
            .push(Diagnostic::warning(self.file, line, path, message));
        &mut self.warnings[i]
    }

    /// An unknown field: an error for aviary.dev, a warning for flagger.app (Flagger drops it).
    fn unknown(&mut self, line: usize, path: &str, key: &str) -> &mut Diagnostic {
        if self.strict {
            self.error(line, path, format!("unknown field {}", quote(key)))
        } else {
            self.warn(
                line,
                path,
                format!("unknown field {}; Flagger would drop it", quote(key)),
            )
        }
    }
}

/// Attaches a fix to a diagnostic just recorded.
trait Hint {
    fn hint(self, help: impl Into<String>);
}

impl Hint for &mut Diagnostic {
    fn hint(self, help: impl Into<String>) {
        self.help = Some(help.into());
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn index(path: &str, i: usize) -> String {
    format!("{path}[{i}]")
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.chars().enumerate() {
        cur[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

/// The closest of `choices` to `word`, when it is at most two edits away (ignoring case).
fn closest<'c>(word: &str, choices: &[&'c str]) -> Option<&'c str> {
    let lower = word.to_lowercase();
    choices
        .iter()
        .map(|c| (levenshtein(&lower, &c.to_lowercase()), *c))
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// `did you mean "x"?`, or the list of choices.
fn choice_help(word: &str, choices: &[&str], list_intro: &str) -> String {
    match closest(word, choices) {
        Some(c) => format!("did you mean {}?", quote(c)),
        None => format!("{list_intro}: {}", choices.join(", ")),
    }
}

fn is_dns_label(s: &str) -> bool {
    let ok_chars = s
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    let alnum = |b: Option<u8>| b.is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    !s.is_empty() && s.len() <= 63 && ok_chars && alnum(s.bytes().next()) && alnum(s.bytes().last())
}

fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            let alnum =
                |b: Option<u8>| b.is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
            label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && alnum(label.bytes().next())
                && alnum(label.bytes().last())
        })
}

fn to_u32(v: i64) -> u32 {
    u32::try_from(v).unwrap_or(0)
}

/// What a field means, for errors that have no more specific fix: the user sees what the value is
/// for and an example of a good one.
fn field_help(path: &str) -> Option<&'static str> {
    let field = path.rsplit('.').next().unwrap_or(path);
    let field = field.split('[').next().unwrap_or(field);
    Some(match field {
        "stepWeight" => "stepWeight is the percentage of traffic added to the canary at each step, e.g. stepWeight: 10",
        "maxWeight" => "maxWeight is the largest percentage of traffic the canary gets before promotion, e.g. maxWeight: 50",
        "stepWeights" => "stepWeights lists the canary's traffic percentages in increasing order, e.g. stepWeights: [1, 10, 50]",
        "stepWeightPromotion" => "stepWeightPromotion is the percentage moved back to the primary at each promotion step, e.g. stepWeightPromotion: 25",
        "threshold" => "threshold is how many failed checks roll the canary back, e.g. threshold: 5 (at most 1000000)",
        "iterations" => "iterations is how many analysis ticks A/B testing or blue/green runs, e.g. iterations: 10 (at most 1000000: 11.6 days at a 1s interval)",
        "retries" => "retries is how many times a failed webhook call is tried again within one check, e.g. retries: 3 (at most 100)",
        "interval" => "a Go duration such as 30s, 1m or 1m30s",
        "timeout" => "a Go duration such as 10s or 1m",
        "port" => "a port number 1-65535, e.g. port: 9898",
        "progressDeadlineSeconds" => "seconds a workload may take to become ready before the canary is rolled back, e.g. progressDeadlineSeconds: 600",
        "mirrorWeight" => "mirrorWeight is the percentage of traffic copied to the canary, e.g. mirrorWeight: 100",
        "primaryReadyThreshold" | "canaryReadyThreshold" => "the percentage of pods that must be available, e.g. 100",
        _ => return None,
    })
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
struct Field<'n> {
    node: &'n Node,
    path: String,
    key_line: usize,
}

impl<'n> Field<'n> {
    fn new(node: &'n Node, path: String, key_line: usize) -> Self {
        Field {
            node,
            path,
            key_line,
        }
    }

    /// The line to report a problem with this value at: its own for a scalar, its key's for a
    /// collection (whose own line is that of its first entry).
    fn line(&self) -> usize {
        match self.node.value {
            Value::Seq(_) | Value::Map(_) => self.key_line,
            _ => self.node.line,
        }
    }

    fn error<'c>(&self, cx: &'c mut Cx, message: impl Into<String>) -> &'c mut Diagnostic {
        cx.error(self.line(), &self.path, message)
    }

    fn expected<'c>(&self, cx: &'c mut Cx, what: &str) -> &'c mut Diagnostic {
        let got = self.node.describe();
        self.error(cx, format!("expected {what}, got {got}"))
    }

    fn string(&self, cx: &mut Cx) -> Option<String> {
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

    fn nonempty_string(&self, cx: &mut Cx) -> Option<String> {
        let s = self.string(cx)?;
        if s.is_empty() {
            self.expected(cx, "a non-empty string");
            return None;
        }
        Some(s)
    }

    /// One of `choices`, with a did-you-mean.
    fn one_of(&self, cx: &mut Cx, what: &str, choices: &[&str]) -> Option<String> {
        let s = self.string(cx)?;
        if choices.contains(&s.as_str()) {
            return Some(s);
        }
        self.error(cx, format!("unknown {what} {}", quote(&s)))
            .hint(choice_help(&s, choices, "use one of"));
        None
    }

    fn int(&self, cx: &mut Cx, lo: i64, hi: Option<i64>) -> Option<i64> {
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

    fn number(&self, cx: &mut Cx) -> Option<f64> {
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

    fn boolean(&self, cx: &mut Cx) -> Option<bool> {
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
    fn duration(&self, cx: &mut Cx) -> Option<(Duration, String)> {
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
    fn duration_text(&self, cx: &mut Cx) -> Option<String> {
        self.duration(cx).map(|(_, text)| text)
    }

    /// The items of a list, each with its path and line.
    fn list(&self, cx: &mut Cx) -> Vec<Field<'n>> {
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

    fn str_list(&self, cx: &mut Cx) -> Vec<String> {
        self.list(cx)
            .iter()
            .filter_map(|item| item.string(cx))
            .collect()
    }

    /// The entries of a mapping with string keys (others are reported), as fields.
    fn entries(&self, cx: &mut Cx) -> Vec<(String, Field<'n>)> {
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
    fn str_map(&self, cx: &mut Cx) -> BTreeMap<String, String> {
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
    fn map(&self, cx: &mut Cx) -> Option<Reader<'n>> {
        self.reader(cx, false)
    }

    /// A mapping whose other keys are accepted without a word (metadata and the like).
    fn free_map(&self, cx: &mut Cx) -> Option<Reader<'n>> {
        self.reader(cx, true)
    }

    fn reader(&self, cx: &mut Cx, free: bool) -> Option<Reader<'n>> {
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
    fn json_map(&self, cx: &mut Cx) -> Option<serde_json::Value> {
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
struct Reader<'n> {
    entries: &'n [(Node, Node)],
    path: String,
    /// Where a missing field is reported: the line of the key holding this mapping.
    line: usize,
    known: Vec<&'static str>,
    free: bool,
}

impl<'n> Reader<'n> {
    fn lookup(&self, key: &str) -> Option<&'n (Node, Node)> {
        self.entries
            .iter()
            .find(|(k, _)| matches!(&k.value, Value::Str(s) if s == key))
    }

    /// The value of `key` (which becomes a known key); `None` when absent or null.
    fn field(&mut self, key: &'static str) -> Option<Field<'n>> {
        self.known.push(key);
        let (k, v) = self.lookup(key)?;
        if v.is_null() {
            return None;
        }
        Some(Field::new(v, join(&self.path, key), k.line))
    }

    /// Whether `key` is set to something other than null.
    fn present(&self, key: &str) -> bool {
        self.lookup(key).is_some_and(|(_, v)| !v.is_null())
    }

    /// The line of `key`, or of this mapping when it is absent.
    fn key_line(&self, key: &str) -> usize {
        self.lookup(key).map_or(self.line, |(k, _)| k.line)
    }

    /// Marks keys as known without reading them.
    fn ignore(&mut self, keys: &[&'static str]) {
        self.known.extend_from_slice(keys);
    }

    /// A required field, converted by `convert`; a missing one is reported.
    fn req<T>(
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

    fn string(&mut self, cx: &mut Cx, key: &'static str) -> Option<String> {
        self.field(key)?.string(cx)
    }

    fn req_string(&mut self, cx: &mut Cx, key: &'static str) -> Option<String> {
        self.req(cx, key, |f, cx| f.nonempty_string(cx))
    }

    fn int(&mut self, cx: &mut Cx, key: &'static str, lo: i64, hi: Option<i64>) -> Option<i64> {
        self.field(key)?.int(cx, lo, hi)
    }

    fn number(&mut self, cx: &mut Cx, key: &'static str) -> Option<f64> {
        self.field(key)?.number(cx)
    }

    /// A boolean, `false` when absent.
    fn flag(&mut self, cx: &mut Cx, key: &'static str) -> bool {
        self.field(key).and_then(|f| f.boolean(cx)).unwrap_or(false)
    }

    fn str_list(&mut self, cx: &mut Cx, key: &'static str) -> Vec<String> {
        self.field(key).map(|f| f.str_list(cx)).unwrap_or_default()
    }

    fn str_map(&mut self, cx: &mut Cx, key: &'static str) -> BTreeMap<String, String> {
        self.field(key).map(|f| f.str_map(cx)).unwrap_or_default()
    }

    fn list(&mut self, cx: &mut Cx, key: &'static str) -> Vec<Field<'n>> {
        self.field(key).map(|f| f.list(cx)).unwrap_or_default()
    }

    fn map(&mut self, cx: &mut Cx, key: &'static str) -> Option<Reader<'n>> {
        self.field(key)?.map(cx)
    }

    /// Reports the keys that were never asked for (unless the mapping is free-form) and non-string keys.
    fn finish(self, cx: &mut Cx) {
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

// =============================================================================================
// Documents.

fn decode_document(cx: &mut Cx, doc: &Node, out: &mut Documents) {
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
            out.canaries.push(canary);
        }
    } else if let Some((provider, query)) = decode_template_spec(cx, spec) {
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
fn decode_metadata(cx: &mut Cx, top: &mut Reader) -> Option<(String, String, bool)> {
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

/// The state ConfigMap and the Lease aviary keeps for a Canary are named `<name>-aviary`, which
/// must still be a Kubernetes name.
fn check_state_name(cx: &mut Cx, name: &str, line: usize) {
    let state = super::state_object_name(name);
    if state.len() > DNS_SUBDOMAIN_MAX {
        cx.error(
            line,
            "metadata.name",
            format!(
                "the Canary's name is {} characters, so the ConfigMap and Lease aviary keeps for it ({}...-aviary) would be {}, over Kubernetes' limit of {DNS_SUBDOMAIN_MAX}",
                name.len(),
                &name[..20.min(name.len())],
                state.len()
            ),
        )
        .hint(format!(
            "use a name of at most {} characters",
            DNS_SUBDOMAIN_MAX - "-aviary".len()
        ));
    }
}

/// Checks that `<base>-primary` and `<base>-canary`, the Services aviary creates, are valid
/// Service names (RFC 1035 labels of at most 63 characters). `what` says where `base` comes
/// from, for the message.
fn check_service_base(cx: &mut Cx, base: &str, line: usize, path: &str, what: &str) {
    let (what, alt) = match what.split_once(" | ") {
        Some((w, a)) => (w, a),
        None => (what, ""),
    };
    let longest = format!("{base}-primary");
    let starts_with_letter = base.bytes().next().is_some_and(|b| b.is_ascii_lowercase());
    let label_chars = base
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    let max = DNS_LABEL_MAX - "-primary".len();
    if longest.len() > DNS_LABEL_MAX {
        cx.error(
            line,
            path,
            format!(
                "{} is {} characters, so the primary's Service {} would be {}, over Kubernetes' limit of {DNS_LABEL_MAX} for a Service name",
                quote(base),
                base.len(),
                quote(&longest),
                longest.len()
            ),
        )
        .hint(format!(
            "shorten {what} to at most {max} characters{alt} (aviary names the Services <name>, <name>-primary and <name>-canary)"
        ));
    } else if !starts_with_letter || !label_chars {
        cx.error(
            line,
            path,
            format!(
                "{} cannot name a Service: Service names are lowercase letters, digits and '-', starting with a letter",
                quote(base)
            ),
        )
        .hint(format!(
            "use such a name for {what}{alt} (aviary names the Services <name>, <name>-primary and <name>-canary)"
        ));
    }
}

/// Checks that `<base>-primary` (a Deployment, an autoscaler) or `<base>-canary` (an Ingress) is
/// still a valid object name.
fn check_derived_name(cx: &mut Cx, base: &str, suffix: &str, line: usize, path: &str, what: &str) {
    let derived = format!("{base}{suffix}");
    if derived.len() > DNS_SUBDOMAIN_MAX {
        cx.error(
            line,
            path,
            format!(
                "{what} is {} characters, so the {} aviary creates from it would be {}, over Kubernetes' limit of {DNS_SUBDOMAIN_MAX}",
                base.len(),
                quote(&format!("<name>{suffix}")),
                derived.len()
            ),
        )
        .hint(format!(
            "use a name of at most {} characters",
            DNS_SUBDOMAIN_MAX - suffix.len()
        ));
    }
}

// =============================================================================================
// Canary.

fn parse_provider(cx: &mut Cx, f: &Field) -> Option<Provider> {
    let name = f.string(cx)?;
    Some(match name.as_str() {
        "" => return None,
        "kubernetes" => Provider::Kubernetes,
        "istio" => Provider::Istio,
        "gloo" => Provider::Gloo,
        "nginx" => Provider::Nginx,
        "gatewayapi" | "gatewayapi:v1" | "gatewayapi:v1beta1" => Provider::GatewayApi,
        "kubernetes:replicas" if cx.strict => Provider::KubernetesReplicas,
        "kubernetes:replicas" => {
            f.error(cx, "provider kubernetes:replicas is an aviary addition")
                .hint("use apiVersion: aviary.dev/v1alpha1 for replica-ratio canaries, or provider: kubernetes for Flagger's blue/green");
            return None;
        }
        other if OTHER_PROVIDERS.contains(&other) => {
            cx.warn(
                f.line(),
                &f.path,
                format!("aviary has no traffic router for provider {other} yet"),
            )
            .hint("aviary routes traffic with kubernetes, istio, gloo, nginx and gatewayapi");
            Provider::Other(other.to_string())
        }
        other => {
            let mut all: Vec<&str> = ROUTED_PROVIDERS.to_vec();
            all.extend_from_slice(&OTHER_PROVIDERS);
            f.error(cx, format!("unknown provider {}", quote(other)))
                .hint(choice_help(other, &all, "use one of"));
            return None;
        }
    })
}

/// `{apiVersion, kind, name}` plus `namespace` when `with_namespace`; `kinds` limits the kind.
fn decode_ref(
    cx: &mut Cx,
    mut r: Reader,
    with_namespace: bool,
    kinds: Option<&[&str]>,
) -> Option<ObjectRef> {
    let api_version = r.string(cx, "apiVersion");
    let kind = match (r.field("kind"), kinds) {
        (Some(f), Some(kinds)) => {
            let kind = f.string(cx);
            match kind {
                Some(k) if !kinds.contains(&k.as_str()) => {
                    let list = match kinds.len() {
                        0 => String::new(),
                        1 => kinds.join(""),
                        n => format!("{} or {}", kinds[..n - 1].join(", "), kinds[n - 1]),
                    };
                    let d = f.error(cx, format!("expected {list}, got {}", quote(&k)));
                    if k == "Rollout" {
                        d.hint("an Argo Rollout is not a Canary target; point targetRef at the Deployment");
                    } else {
                        d.hint(choice_help(&k, kinds, "use one of"));
                    }
                    None
                }
                other => other,
            }
        }
        (Some(f), None) => f.string(cx),
        (None, _) => None,
    };
    let name = r.req_string(cx, "name");
    let namespace = if with_namespace {
        r.string(cx, "namespace")
    } else {
        None
    };
    r.finish(cx);
    Some(ObjectRef {
        api_version,
        kind,
        name: name?,
        namespace,
    })
}

fn decode_canary(cx: &mut Cx, version: ApiVersion, mut s: Reader) -> Option<Canary> {
    let provider = s.field("provider").and_then(|f| parse_provider(cx, &f));
    let metrics_server = s.string(cx, "metricsServer").filter(|m| !m.is_empty());

    // Where each name is written, for the checks of the names aviary derives from them.
    let name_line =
        |r: &Reader, fallback: usize| r.lookup("name").map_or(fallback, |(_, v)| v.line);
    let mut target_line = s.key_line("targetRef");
    let target_ref = s.req(cx, "targetRef", |f, cx| {
        let r = f.map(cx)?;
        target_line = name_line(&r, f.key_line);
        let t = decode_ref(cx, r, false, Some(&TARGET_KINDS))?;
        let path = join(&f.path, "name");
        if !is_dns_subdomain(&t.name) {
            cx.error(
                target_line,
                &path,
                format!("{} is not a valid Kubernetes name", quote(&t.name)),
            );
        } else {
            check_derived_name(
                cx,
                &t.name,
                "-primary",
                target_line,
                &path,
                "targetRef.name",
            );
        }
        Some(t)
    });
    let autoscaler_ref = s.map(cx, "autoscalerRef").and_then(|r| {
        let (line, path) = (name_line(&r, r.line), join(&r.path, "name"));
        let a = decode_autoscaler(cx, r)?;
        check_derived_name(cx, &a.name, "-primary", line, &path, "autoscalerRef.name");
        Some(a)
    });
    let ingress_ref = s.map(cx, "ingressRef").and_then(|r| {
        let (line, path) = (name_line(&r, r.line), join(&r.path, "name"));
        let i = decode_ref(cx, r, false, None)?;
        check_derived_name(cx, &i.name, "-canary", line, &path, "ingressRef.name");
        Some(i)
    });
    let route_ref = s
        .map(cx, "routeRef")
        .and_then(|r| decode_ref(cx, r, false, None));
    let upstream_ref = s
        .map(cx, "upstreamRef")
        .and_then(|r| decode_ref(cx, r, true, None));

    let target_name = target_ref.as_ref().map(|t| t.name.clone());
    let service = s.req(cx, "service", |f, cx| {
        let r = f.map(cx)?;
        let explicit = r
            .lookup("name")
            .filter(|(_, v)| v.as_str().is_some_and(|n| !n.is_empty()))
            .map(|(_, v)| v.line);
        let path = join(&r.path, "name");
        let service = decode_service(cx, r, target_name.as_deref().unwrap_or(""))?;
        match explicit {
            Some(line) => check_service_base(cx, &service.name, line, &path, "service.name"),
            None if is_dns_subdomain(&service.name) => check_service_base(
                cx,
                &service.name,
                target_line,
                "spec.targetRef.name",
                "targetRef.name | , or set service.name to a shorter name for the Services",
            ),
            None => {}
        }
        Some(service)
    });

    // `analysis`, or the deprecated `canaryAnalysis`.
    let analysis_field = s.field("analysis");
    let legacy_field = s.field("canaryAnalysis");
    let chosen = match (analysis_field, legacy_field) {
        (Some(a), Some(l)) => {
            cx.warn(
                l.key_line,
                &l.path,
                "canaryAnalysis is ignored because analysis is set",
            )
            .hint("remove canaryAnalysis");
            Some(a)
        }
        (None, Some(l)) => {
            cx.warn(
                l.key_line,
                &l.path,
                "canaryAnalysis is deprecated, rename it to analysis",
            );
            Some(l)
        }
        (a, None) => a,
    };
    let analysis = chosen.and_then(|f| {
        let r = f.map(cx)?;
        Some((decode_analysis(cx, version, r), f))
    });

    let progress_deadline_seconds = s
        .int(cx, "progressDeadlineSeconds", 1, None)
        .map_or(600, to_u32);
    let skip_analysis = s.flag(cx, "skipAnalysis");
    let revert_on_deletion = s.flag(cx, "revertOnDeletion");
    let suspend = s.flag(cx, "suspend");
    s.finish(cx);

    let analysis = analysis.map(|((analysis, present), field)| {
        if !skip_analysis {
            check_strategy(cx, &analysis, &present, provider.as_ref(), &field);
        }
        analysis
    });

    Some(Canary {
        api_version: version,
        name: String::new(),
        namespace: String::new(),
        namespace_explicit: false,
        origin: Origin {
            file: cx.file.to_string(),
            line: 0,
        },
        provider,
        metrics_server,
        target_ref: target_ref?,
        autoscaler_ref,
        ingress_ref,
        route_ref,
        upstream_ref,
        service: service?,
        analysis,
        progress_deadline_seconds,
        skip_analysis,
        revert_on_deletion,
        suspend,
    })
}

fn decode_autoscaler(cx: &mut Cx, mut r: Reader) -> Option<AutoscalerRef> {
    let api_version = r.string(cx, "apiVersion");
    let kind = r
        .field("kind")
        .and_then(|f| f.one_of(cx, "autoscaler kind", &SCALER_KINDS));
    let name = r.req_string(cx, "name");
    let primary_scaler_queries = r.str_map(cx, "primaryScalerQueries");
    let primary_scaler_replicas = r.map(cx, "primaryScalerReplicas").map(|mut rr| {
        let min = rr.int(cx, "minReplicas", 0, None);
        let max = rr.int(cx, "maxReplicas", 1, None);
        if let (Some(lo), Some(hi)) = (min, max) {
            if lo > hi {
                cx.error(
                    rr.line,
                    &rr.path,
                    format!("minReplicas ({lo}) is above maxReplicas ({hi})"),
                );
            }
        }
        rr.finish(cx);
        ScalerReplicas {
            min_replicas: min.and_then(|v| i32::try_from(v).ok()),
            max_replicas: max.and_then(|v| i32::try_from(v).ok()),
        }
    });
    r.finish(cx);
    Some(AutoscalerRef {
        api_version,
        kind,
        name: name?,
        primary_scaler_queries,
        primary_scaler_replicas,
    })
}

fn decode_service(cx: &mut Cx, mut r: Reader, target_name: &str) -> Option<Service> {
    let name = r
        .string(cx, "name")
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| target_name.to_string());
    let port = r.req(cx, "port", |f, cx| f.int(cx, 1, Some(65535)));
    let port_name = r
        .string(cx, "portName")
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "http".to_string());
    let target_port = r.field("targetPort").and_then(|f| match &f.node.value {
        Value::Str(s) if s.parse::<i64>().is_ok() => {
            f.expected(cx, "a port number 1-65535 or a port name")
                .hint(format!("remove the quotes: {s}"));
            None
        }
        Value::Str(s) if !s.is_empty() => Some(IntOrString::String(s.clone())),
        Value::Int(_) => f.int(cx, 1, Some(65535)).map(IntOrString::Int),
        _ => {
            f.expected(cx, "a port number 1-65535 or a port name");
            None
        }
    });
    let app_protocol = r.string(cx, "appProtocol");
    let port_discovery = r.flag(cx, "portDiscovery");
    let timeout = r.field("timeout").and_then(|f| f.duration_text(cx));
    let gateways = r.str_list(cx, "gateways");
    let gateway_refs = r
        .list(cx, "gatewayRefs")
        .iter()
        .filter_map(|item| {
            let mut g = item.map(cx)?;
            let group = g.string(cx, "group");
            let kind = g.string(cx, "kind");
            let namespace = g.string(cx, "namespace");
            let name = g.req_string(cx, "name");
            let section_name = g.string(cx, "sectionName");
            let port = g.int(cx, "port", 1, Some(65535));
            g.finish(cx);
            Some(GatewayRef {
                group,
                kind,
                namespace,
                name: name?,
                section_name,
                port,
            })
        })
        .collect();
    let hosts = r.str_list(cx, "hosts");
    let delegation = r.flag(cx, "delegation");
    let traffic_policy = r.field("trafficPolicy").and_then(|f| f.json_map(cx));
    let match_items = r.list(cx, "match");
    let matches = decode_matches(cx, match_items);
    let rewrite = r.map(cx, "rewrite").map(|mut rw| {
        let uri = rw.string(cx, "uri");
        let authority = rw.string(cx, "authority");
        rw.finish(cx);
        HttpRewrite { uri, authority }
    });
    let retries = r.map(cx, "retries").map(|mut rt| {
        let attempts = rt.int(cx, "attempts", 0, None);
        let per_try_timeout = rt.field("perTryTimeout").and_then(|f| f.duration_text(cx));
        let retry_on = rt.string(cx, "retryOn");
        rt.finish(cx);
        HttpRetry {
            attempts,
            per_try_timeout,
            retry_on,
        }
    });
    let headers = r.map(cx, "headers").map(|mut h| {
        let request = h.map(cx, "request").map(|ops| decode_header_ops(cx, ops));
        let response = h.map(cx, "response").map(|ops| decode_header_ops(cx, ops));
        h.finish(cx);
        Headers { request, response }
    });
    let cors_policy = r.field("corsPolicy").and_then(|f| f.json_map(cx));
    let mesh_name = r.string(cx, "meshName");
    let backends = r.str_list(cx, "backends");
    let apex = r.map(cx, "apex").map(|m| decode_custom_metadata(cx, m));
    let primary = r.map(cx, "primary").map(|m| decode_custom_metadata(cx, m));
    let canary = r.map(cx, "canary").map(|m| decode_custom_metadata(cx, m));
    r.finish(cx);
    let port = port?;
    Some(Service {
        name,
        port: u16::try_from(port).unwrap_or(0),
        port_name,
        target_port: Some(target_port.unwrap_or(IntOrString::Int(port))),
        app_protocol,
        port_discovery,
        timeout,
        gateways,
        gateway_refs,
        hosts,
        delegation,
        traffic_policy,
        r#match: matches,
        rewrite,
        retries,
        headers,
        cors_policy,
        mesh_name,
        backends,
        apex,
        primary,
        canary,
    })
}

fn decode_header_ops(cx: &mut Cx, mut r: Reader) -> HeaderOperations {
    let set = r.str_map(cx, "set");
    let add = r.str_map(cx, "add");
    let remove = r.str_list(cx, "remove");
    r.finish(cx);
    HeaderOperations { set, add, remove }
}

fn decode_custom_metadata(cx: &mut Cx, mut r: Reader) -> CustomMetadata {
    let labels = r.str_map(cx, "labels");
    let annotations = r.str_map(cx, "annotations");
    r.finish(cx);
    CustomMetadata {
        labels,
        annotations,
    }
}

fn decode_matches(cx: &mut Cx, items: Vec<Field>) -> Vec<HttpMatch> {
    items
        .iter()
        .filter_map(|item| {
            let r = item.map(cx)?;
            Some(decode_match(cx, r))
        })
        .collect()
}

fn decode_match(cx: &mut Cx, mut r: Reader) -> HttpMatch {
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
fn string_matches_by_name(
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

fn decode_string_match(cx: &mut Cx, f: &Field) -> Option<StringMatch> {
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

/// Which strategy fields were written, so that a field with an error does not also count as absent.
struct Written {
    /// stepWeight, stepWeights or iterations had an error (so their zero values mean nothing).
    strategy_errors: bool,
    max_weight: Option<usize>,
    step_weights_line: usize,
    step_weight_promotion: Option<usize>,
    mirror: Option<usize>,
    match_line: Option<usize>,
}

fn decode_analysis(cx: &mut Cx, version: ApiVersion, mut r: Reader) -> (Analysis, Written) {
    let defaults = Analysis::default();
    let line_if = |r: &Reader, key: &str| r.present(key).then(|| r.key_line(key));
    let mut written = Written {
        strategy_errors: false,
        max_weight: line_if(&r, "maxWeight"),
        step_weights_line: r.key_line("stepWeights"),
        step_weight_promotion: line_if(&r, "stepWeightPromotion"),
        mirror: line_if(&r, "mirror"),
        match_line: line_if(&r, "match"),
    };

    let mut interval = defaults.interval;
    if let Some(f) = r.field("interval") {
        if let Some((d, text)) = f.duration(cx) {
            interval = d;
            match version {
                ApiVersion::FlaggerV1beta1 if d < Duration::from_secs(10) => {
                    cx.warn(
                        f.line(),
                        &f.path,
                        format!("interval {text} is below 10s: Flagger raises intervals below 10s to 10s, so aviary runs every 10s"),
                    )
                    .hint("use apiVersion aviary.dev/v1alpha1 for shorter intervals");
                    interval = Duration::from_secs(10);
                }
                ApiVersion::AviaryV1alpha1 if d < Duration::from_secs(1) => {
                    f.error(
                        cx,
                        format!("expected an interval of at least 1s, got {}", quote(&text)),
                    )
                    .hint("the shortest analysis interval is 1s");
                }
                _ if d > MAX_INTERVAL => {
                    f.error(
                        cx,
                        format!(
                            "expected an interval of at most {}, got {}",
                            format_human(MAX_INTERVAL),
                            quote(&text)
                        ),
                    )
                    .hint("the interval is the time between two checks of the canary, e.g. 1m; for a longer analysis, raise iterations or lower stepWeight");
                }
                _ => {}
            }
        }
    }
    let threshold = r
        .int(cx, "threshold", 0, Some(MAX_TICK_COUNT))
        .map_or(1, |t| to_u32(t).max(1));
    let max_weight = r.int(cx, "maxWeight", 1, Some(100)).map_or(0, to_u32);
    let errors_before = cx.errors.len();
    let step_weight = r.int(cx, "stepWeight", 1, Some(100)).map_or(0, to_u32);
    let mut step_weights: Vec<u32> = Vec::new();
    let mut previous: Option<(usize, i64)> = None;
    for (i, item) in r.list(cx, "stepWeights").iter().enumerate() {
        let Some(w) = item.int(cx, 1, Some(100)) else {
            continue;
        };
        if let Some((pi, pw)) = previous {
            if w <= pw {
                item.error(
                    cx,
                    format!("stepWeights must be strictly increasing, but entry {i} ({w}) is not above entry {pi} ({pw})"),
                )
                .hint("list the canary weights in increasing order, such as [1, 5, 10, 25, 50]");
            }
        }
        previous = Some((i, w));
        step_weights.push(to_u32(w));
    }
    let step_weight_promotion = r
        .int(cx, "stepWeightPromotion", 1, Some(100))
        .map_or(0, to_u32);
    let iterations = r
        .int(cx, "iterations", 0, Some(MAX_TICK_COUNT))
        .map_or(0, to_u32);
    written.strategy_errors = cx.errors.len() > errors_before;
    let mirror = r.flag(cx, "mirror");
    let mirror_weight = r.int(cx, "mirrorWeight", 0, Some(100)).map(to_u32);
    let primary_ready_threshold = r
        .int(cx, "primaryReadyThreshold", 0, Some(100))
        .map_or(defaults.primary_ready_threshold, to_u32);
    let canary_ready_threshold = r
        .int(cx, "canaryReadyThreshold", 0, Some(100))
        .map_or(defaults.canary_ready_threshold, to_u32);
    let alerts = r
        .list(cx, "alerts")
        .iter()
        .filter_map(|item| decode_alert(cx, item))
        .collect();
    let metric_items = r.list(cx, "metrics");
    let metrics = decode_metrics(cx, &metric_items);
    let hook_items = r.list(cx, "webhooks");
    let webhooks = decode_webhooks(cx, &hook_items);
    let match_items = r.list(cx, "match");
    let matches = decode_matches(cx, match_items);
    let session_affinity = r.map(cx, "sessionAffinity").and_then(|mut sa| {
        let cookie_name = sa.req_string(cx, "cookieName");
        // Flagger reads 0 as "not set": a day.
        let max_age =
            sa.int(cx, "maxAge", 0, None)
                .map_or(86_400, |v| if v == 0 { 86_400 } else { to_u32(v) });
        let primary_cookie_name = sa.string(cx, "primaryCookieName");
        sa.finish(cx);
        Some(SessionAffinity {
            cookie_name: cookie_name?,
            max_age,
            primary_cookie_name,
        })
    });
    // The statistical judge is an aviary addition; under flagger.app it stays an unknown field.
    let judge = match version {
        ApiVersion::AviaryV1alpha1 => r.map(cx, "judge").map(|j| decode_judge(cx, j)),
        ApiVersion::FlaggerV1beta1 => None,
    };
    r.finish(cx);
    let analysis = Analysis {
        interval,
        threshold,
        max_weight,
        step_weight,
        step_weights,
        step_weight_promotion,
        iterations,
        mirror,
        mirror_weight,
        primary_ready_threshold,
        canary_ready_threshold,
        alerts,
        metrics,
        webhooks,
        r#match: matches,
        session_affinity,
        judge,
    };
    (analysis, written)
}

/// `analysis.judge`.
fn decode_judge(cx: &mut Cx, mut r: Reader) -> JudgeSpec {
    let duration = |r: &mut Reader, cx: &mut Cx, key: &'static str, default: &str| {
        r.field(key)
            .and_then(|f| f.duration(cx))
            .unwrap_or_else(|| {
                (
                    crate::spec::duration::parse_go_duration(default).unwrap_or_default(),
                    default.to_string(),
                )
            })
    };
    let (window, window_text) = duration(&mut r, cx, "window", "5m");
    let (step, _) = duration(&mut r, cx, "step", "30s");
    // A score field, `None` when absent or out of range (reported).
    let score = |r: &mut Reader, cx: &mut Cx, key: &'static str| {
        let f = r.field(key)?;
        let v = f.number(cx)?;
        if !(0.0..=100.0).contains(&v) {
            f.error(cx, format!("expected a score 0-100, got {v}"));
            return None;
        }
        Some(v)
    };
    let pass_score = score(&mut r, cx, "passScore").unwrap_or(95.0);
    let marginal_score = score(&mut r, cx, "marginalScore").unwrap_or(75.0);
    if marginal_score > pass_score {
        cx.error(
            r.key_line("marginalScore"),
            &join(&r.path, "marginalScore"),
            format!("marginalScore {marginal_score} is above passScore {pass_score}"),
        );
    }
    let path = join(&r.path, "metrics");
    let line = r.key_line("metrics");
    let items = r.list(cx, "metrics");
    if items.is_empty() {
        cx.error(line, &path, "the judge needs at least one metric")
            .hint("add metrics: [{name: p99-latency, kind: latency, query: ...}]");
    }
    let mut metrics = Vec::new();
    for item in &items {
        let Some(mut m) = item.map(cx) else { continue };
        let name = m.req_string(cx, "name");
        let kind = m
            .req(cx, "kind", |f, cx| {
                f.one_of(cx, "judge kind", &JudgeKind::NAMES)
            })
            .map(|k| match k.as_str() {
                "latency" => JudgeKind::Latency,
                "error-rate" => JudgeKind::ErrorRate,
                "increase" => JudgeKind::Increase,
                _ => JudgeKind::Decrease,
            });
        let (query, errors_query, total_query) = match kind {
            Some(JudgeKind::ErrorRate) => (
                None,
                m.req_string(cx, "errorsQuery"),
                m.req_string(cx, "totalQuery"),
            ),
            Some(_) => (m.req_string(cx, "query"), None, None),
            None => (None, None, None),
        };
        let critical = m.flag(cx, "critical");
        let weight = m.number(cx, "weight").unwrap_or(1.0);
        let alpha = m.number(cx, "alpha").unwrap_or(0.05);
        let effect_floor = m.number(cx, "effectFloor").unwrap_or(0.1);
        let min_samples = m.int(cx, "minSamples", 1, None).map_or(10, to_u32);
        let min_requests = m
            .int(cx, "minRequests", 1, None)
            .map_or(100, |v| u64::try_from(v).unwrap_or(100));
        m.finish(cx);
        if let (Some(name), Some(kind)) = (name, kind) {
            metrics.push(JudgeMetric {
                name,
                kind,
                query,
                errors_query,
                total_query,
                critical,
                weight,
                alpha,
                effect_floor,
                min_samples,
                min_requests,
            });
        }
    }
    r.finish(cx);
    JudgeSpec {
        window,
        window_text,
        step,
        pass_score,
        marginal_score,
        metrics,
    }
}

/// The checks that look at several analysis fields (and the provider) together.
fn check_strategy(
    cx: &mut Cx,
    a: &Analysis,
    written: &Written,
    provider: Option<&Provider>,
    field: &Field,
) {
    let kubernetes = provider == Some(&Provider::Kubernetes);
    let path = &field.path;
    if provider == Some(&Provider::KubernetesReplicas) {
        // A replica split can only express weights: no request matching, no mirroring.
        for (set, name, why) in [
            (
                !a.r#match.is_empty(),
                "match",
                "A/B testing needs a router that can match requests",
            ),
            (
                a.mirror,
                "mirror",
                "mirroring needs a proxy that copies requests",
            ),
            (
                a.iterations > 0,
                "iterations",
                "replica ratio shifts traffic by weights only",
            ),
        ] {
            if set {
                cx.error(
                    field.key_line,
                    &join(path, name),
                    format!("{name} is not supported by provider kubernetes:replicas: {why}"),
                )
                .hint("use stepWeight and maxWeight with kubernetes:replicas, or a mesh or ingress provider (istio, gloo, nginx, gatewayapi)");
            }
        }
    }
    let no_strategy = a.step_weight == 0 && a.step_weights.is_empty() && a.iterations == 0;
    if no_strategy && !written.strategy_errors && !kubernetes {
        cx.error(field.key_line, path, "no rollout strategy")
            .hint("set stepWeight and maxWeight for a canary, iterations and match for A/B testing, or iterations for blue/green");
    }
    if a.step_weight > 0 && !a.step_weights.is_empty() {
        let last = a.step_weights.last().copied().unwrap_or(0);
        cx.warn(
            written.step_weights_line,
            &join(path, "stepWeights"),
            "stepWeights is ignored because stepWeight is set (Flagger gives stepWeight precedence)",
        )
        .hint(format!("remove one of the two; note that Flagger still stops at the last stepWeights entry ({last})"));
    }
    if let (Some(line), true) = (
        written.max_weight,
        a.max_weight > 0 && !a.step_weights.is_empty(),
    ) {
        let last = a.step_weights.last().copied().unwrap_or(0);
        cx.warn(
            line,
            &join(path, "maxWeight"),
            format!("maxWeight is ignored because stepWeights is set (its last entry, {last}, is the maximum weight)"),
        )
        .hint("remove maxWeight");
    }
    if !a.r#match.is_empty() {
        let line = written.match_line.unwrap_or(field.key_line);
        let match_path = join(path, "match");
        if kubernetes {
            cx.error(
                line,
                &match_path,
                "A/B testing (analysis.match) is not supported by the kubernetes provider",
            )
            .hint("remove match to run blue/green, or use a provider that routes by header, such as istio, nginx or gatewayapi");
        } else if a.iterations == 0 && !written.strategy_errors {
            cx.warn(
                line,
                &match_path,
                "match is only used by A/B testing, which needs iterations",
            )
            .hint("set iterations (the number of checks to run) for A/B testing, or remove match");
        }
        if a.mirror {
            if let Some(mline) = written.mirror {
                cx.warn(
                    mline,
                    &join(path, "mirror"),
                    "mirror is ignored in A/B testing (match is set); Flagger mirrors traffic only in blue/green",
                );
            }
        }
    }
    if kubernetes {
        if let Some(line) = written.step_weight_promotion {
            cx.warn(
                line,
                &join(path, "stepWeightPromotion"),
                "stepWeightPromotion is ignored by the kubernetes provider, which does not shift traffic gradually",
            );
        }
    }
}

fn decode_alert(cx: &mut Cx, item: &Field) -> Option<Alert> {
    let mut r = item.map(cx)?;
    let name = r.req_string(cx, "name");
    let severity = match r.field("severity") {
        Some(f) => f.one_of(cx, "severity", &SEVERITIES),
        None => Some("info".to_string()),
    };
    let provider_ref = r.req(cx, "providerRef", |f, cx| {
        let pr = f.map(cx)?;
        decode_ref(cx, pr, true, None)
    });
    r.finish(cx);
    Some(Alert {
        name: name?,
        severity: severity?,
        provider_ref: provider_ref?,
    })
}

/// Checks a list item's `name` for uniqueness; returns whether it is the first of its name.
fn unique_name(
    cx: &mut Cx,
    seen: &mut HashMap<String, usize>,
    what: &str,
    name: &str,
    line: usize,
    path: &str,
) -> bool {
    if let Some(first) = seen.get(name) {
        cx.error(
            line,
            path,
            format!(
                "duplicate {what} name {} (first at line {first})",
                quote(name)
            ),
        )
        .hint(format!("give each {what} a different name"));
        return false;
    }
    seen.insert(name.to_string(), line);
    true
}

fn decode_metrics(cx: &mut Cx, items: &[Field]) -> Vec<Metric> {
    let mut seen = HashMap::new();
    let mut out = Vec::new();
    for item in items {
        if let Some(m) = decode_metric(cx, item, &mut seen) {
            out.push(m);
        }
    }
    out
}

fn decode_metric(cx: &mut Cx, item: &Field, seen: &mut HashMap<String, usize>) -> Option<Metric> {
    let mut r = item.map(cx)?;
    let name = r.req_string(cx, "name");
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

    let source = match (&tref_field, &query_field) {
        (Some(_), Some(q)) => {
            cx.error(
                q.line(),
                &item.path,
                "set either templateRef or query, not both",
            )
            .hint("remove query: the MetricTemplate holds the query");
            return None;
        }
        (Some(t), None) => {
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

    Some(Metric {
        name,
        interval,
        interval_text,
        threshold_range,
        source,
    })
}

fn decode_webhooks(cx: &mut Cx, items: &[Field]) -> Vec<Webhook> {
    let mut seen = HashMap::new();
    let mut out = Vec::new();
    for item in items {
        if let Some(w) = decode_webhook(cx, item, &mut seen) {
            out.push(w);
        }
    }
    out
}

fn decode_webhook(cx: &mut Cx, item: &Field, seen: &mut HashMap<String, usize>) -> Option<Webhook> {
    let mut r = item.map(cx)?;
    let name = r.req_string(cx, "name");
    if let Some(n) = &name {
        let line = r.key_line("name");
        unique_name(cx, seen, "webhook", n, line, &join(&item.path, "name"));
    }
    let hook_type = match r.field("type") {
        None => Some(HookType::Rollout),
        Some(f) => f.string(cx).and_then(|t| {
            let parsed = HookType::parse(&t);
            if parsed.is_none() {
                let names: Vec<&str> = HookType::ALL.iter().map(|h| h.as_str()).collect();
                f.error(cx, format!("unknown webhook type {}", quote(&t)))
                    .hint(choice_help(&t, &names, "use one of"));
            }
            parsed
        }),
    };
    let url = r.req(cx, "url", |f, cx| {
        let url = f.nonempty_string(cx)?;
        let rest = url
            .strip_prefix("http://")
            .or_else(|| url.strip_prefix("https://"));
        if !matches!(rest, Some(r) if !r.is_empty()) {
            // Not `expected`: it would repeat the address, credentials and all.
            f.error(
                cx,
                format!(
                    "expected an http:// or https:// URL, got {}",
                    quote(&crate::urls::redact(&url))
                ),
            )
            .hint("write the full address, such as http://flagger-loadtester.test/");
            return None;
        }
        Some(url)
    });
    let timeout = r
        .field("timeout")
        .and_then(|f| f.duration(cx))
        .map_or(Duration::from_secs(10), |(d, _)| d);
    let retries = r
        .int(cx, "retries", 0, Some(MAX_WEBHOOK_RETRIES))
        .map_or(0, to_u32);
    let mute_alert = r.flag(cx, "muteAlert");
    let metadata = r.str_map(cx, "metadata");
    r.finish(cx);
    Some(Webhook {
        name: name?,
        hook_type: hook_type?,
        url: url?,
        timeout,
        retries,
        mute_alert,
        metadata,
    })
}

// =============================================================================================
// MetricTemplate.

fn decode_template_spec(cx: &mut Cx, mut s: Reader) -> Option<(MetricProvider, String)> {
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
    use super::*;
    use proptest::prelude::{any, proptest, ProptestConfig};

    const PODINFO: &str = r#"# A Deployment next to its Canary, as Flagger's docs have it.
apiVersion: apps/v1
kind: Deployment
metadata:
  name: podinfo
  namespace: test
spec:
  replicas: 2
---
apiVersion: flagger.app/v1beta1
kind: Canary
metadata:
  name: podinfo
  namespace: test
  labels:
    app: podinfo
spec:
  provider: istio
  targetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: podinfo
  progressDeadlineSeconds: 60
  autoscalerRef:
    apiVersion: autoscaling/v2
    kind: HorizontalPodAutoscaler
    name: podinfo
  service:
    port: 9898
    targetPort: http
    gateways:
    - public-gateway.istio-system.svc.cluster.local
    gatewayRefs:
    - name: public-gateway
      namespace: istio-ingress
      sectionName: https
    hosts:
    - app.example.com
    trafficPolicy:
      tls:
        mode: DISABLE
    retries:
      attempts: 3
      perTryTimeout: 1s
      retryOn: "gateway-error,connect-failure,refused-stream"
    match:
    - uri:
        prefix: /api
  analysis:
    interval: 30s
    maxWeight: 50
    stepWeight: 10
    metrics:
    - name: request-success-rate
      thresholdRange:
        min: 99
    - name: latency
      templateRef:
        name: latency
        namespace: istio-system
      thresholdRange:
        max: 500.5
      interval: 30s
      templateVariables:
        direction: inbound
    webhooks:
    - name: acceptance-test
      type: pre-rollout
      url: http://flagger-loadtester.test/
      timeout: 30s
      metadata:
        type: bash
        cmd: "curl -sd 'test' http://podinfo-canary:9898/token | grep token"
    - name: load-test
      url: http://flagger-loadtester.test/
      metadata:
        cmd: "hey -z 1m -q 10 -c 2 http://podinfo-canary.test:9898/"
    - name: gate
      type: confirm-promotion
      url: http://flagger-loadtester.test/gate/approve
      retries: 2
      muteAlert: true
status:
  phase: Succeeded
---
apiVersion: flagger.app/v1beta1
kind: MetricTemplate
metadata:
  name: latency
  namespace: istio-system
spec:
  provider:
    type: prometheus
    address: http://prometheus.istio-system:9090
  query: |
    histogram_quantile(0.99, sum(rate(x[{{ interval }}])) by (le))
"#;

    fn decode(text: &str) -> Documents {
        match decode_documents("canary.yaml", text) {
            Ok(d) => d,
            Err(e) => panic!("expected no errors, got:\n{e}"),
        }
    }

    /// Every error, rendered as the CLI prints it.
    fn errors(text: &str) -> Vec<String> {
        match decode_documents("canary.yaml", text) {
            Ok(d) => panic!("expected errors, got {d:#?}"),
            Err(SpecError::Invalid { errors, .. }) => {
                errors.iter().map(ToString::to_string).collect()
            }
            Err(e) => panic!("unexpected {e}"),
        }
    }

    fn warnings(text: &str) -> Vec<String> {
        decode(text)
            .warnings
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    /// A minimal valid canary whose analysis body starts on line 12.
    /// Lines: 1 apiVersion, 2 kind, 3 metadata, 4 name, 5 spec, 6 targetRef, 7 kind, 8 name,
    /// 9 service, 10 port, 11 analysis.
    fn canary(api: &str, analysis: &str) -> String {
        format!(
            "apiVersion: {api}\nkind: Canary\nmetadata:\n  name: podinfo\nspec:\n  targetRef:\n    kind: Deployment\n    name: podinfo\n  service:\n    port: 9898\n  analysis:\n{analysis}"
        )
    }

    const STEPS: &str = "    stepWeight: 10\n    maxWeight: 50\n";

    #[test]
    fn podinfo_decodes_with_values_and_defaults() {
        let docs = decode(PODINFO);
        assert_eq!(docs.warnings, Vec::<Diagnostic>::new());
        assert_eq!(docs.skipped.len(), 1);
        assert_eq!(
            docs.skipped[0],
            (
                "apps/v1".to_string(),
                "Deployment".to_string(),
                Origin {
                    file: "canary.yaml".to_string(),
                    line: 2
                }
            )
        );
        assert_eq!(docs.canaries.len(), 1);
        let c = &docs.canaries[0];
        assert_eq!(c.api_version, ApiVersion::FlaggerV1beta1);
        assert_eq!(c.name, "podinfo");
        assert_eq!(c.namespace, "test");
        assert!(c.namespace_explicit);
        assert_eq!(c.qualified_name(), "podinfo.test");
        assert_eq!(c.origin.line, 10);
        assert_eq!(c.provider, Some(Provider::Istio));
        assert_eq!(
            c.target_ref,
            ObjectRef {
                api_version: Some("apps/v1".into()),
                kind: Some("Deployment".into()),
                name: "podinfo".into(),
                namespace: None
            }
        );
        assert_eq!(c.progress_deadline_seconds, 60);
        let hpa = c.autoscaler_ref.as_ref().unwrap();
        assert_eq!(hpa.kind.as_deref(), Some("HorizontalPodAutoscaler"));
        assert_eq!(hpa.name, "podinfo");

        let s = &c.service;
        assert_eq!(s.name, "podinfo", "defaults to targetRef.name");
        assert_eq!(s.port, 9898);
        assert_eq!(s.port_name, "http", "defaults to http");
        assert_eq!(s.target_port, Some(IntOrString::String("http".into())));
        assert_eq!(
            s.gateways,
            vec!["public-gateway.istio-system.svc.cluster.local"]
        );
        assert_eq!(
            s.gateway_refs,
            vec![GatewayRef {
                name: "public-gateway".into(),
                namespace: Some("istio-ingress".into()),
                section_name: Some("https".into()),
                ..GatewayRef::default()
            }]
        );
        assert_eq!(s.hosts, vec!["app.example.com"]);
        assert_eq!(
            s.traffic_policy,
            Some(serde_json::json!({"tls": {"mode": "DISABLE"}}))
        );
        assert_eq!(
            s.retries,
            Some(HttpRetry {
                attempts: Some(3),
                per_try_timeout: Some("1s".into()),
                retry_on: Some("gateway-error,connect-failure,refused-stream".into())
            })
        );
        assert_eq!(s.r#match.len(), 1);
        assert_eq!(s.r#match[0].uri, Some(StringMatch::Prefix("/api".into())));

        let a = c.analysis.as_ref().unwrap();
        assert_eq!(a.interval, Duration::from_secs(30));
        assert_eq!(a.threshold, 1, "defaults to 1");
        assert_eq!((a.max_weight, a.step_weight), (50, 10));
        assert_eq!(a.max_weight(), 50);
        assert_eq!(a.primary_ready_threshold, 100);
        assert_eq!(a.canary_ready_threshold, 100);
        assert_eq!(a.iterations, 0);
        assert!(a.r#match.is_empty());

        assert_eq!(a.metrics.len(), 2);
        let m0 = &a.metrics[0];
        assert_eq!(m0.name, "request-success-rate");
        assert_eq!(m0.interval, Duration::from_secs(60), "defaults to 1m");
        assert_eq!(m0.interval_text, "1m");
        assert_eq!(
            m0.threshold_range,
            ThresholdRange {
                min: Some(99.0),
                max: None
            }
        );
        assert_eq!(
            m0.source,
            MetricSource::Builtin(BuiltinMetric::RequestSuccessRate)
        );
        let m1 = &a.metrics[1];
        assert_eq!(m1.interval, Duration::from_secs(30));
        assert_eq!(m1.interval_text, "30s");
        assert_eq!(m1.threshold_range.max, Some(500.5));
        assert_eq!(
            m1.source,
            MetricSource::Template {
                template: ObjectRef {
                    name: "latency".into(),
                    namespace: Some("istio-system".into()),
                    ..ObjectRef::default()
                },
                variables: BTreeMap::from([("direction".to_string(), "inbound".to_string())]),
            }
        );

        assert_eq!(a.webhooks.len(), 3);
        let w = &a.webhooks;
        assert_eq!(w[0].hook_type, HookType::PreRollout);
        assert_eq!(w[0].timeout, Duration::from_secs(30));
        assert_eq!(w[0].metadata.get("type").map(String::as_str), Some("bash"));
        assert_eq!(
            w[1].hook_type,
            HookType::Rollout,
            "type defaults to rollout"
        );
        assert_eq!(w[1].timeout, Duration::from_secs(10), "defaults to 10s");
        assert_eq!(w[1].retries, 0);
        assert!(!w[1].mute_alert);
        assert_eq!(w[2].hook_type, HookType::ConfirmPromotion);
        assert_eq!(w[2].url, "http://flagger-loadtester.test/gate/approve");
        assert_eq!((w[2].retries, w[2].mute_alert), (2, true));

        assert_eq!(docs.templates.len(), 1);
        let t = &docs.templates[0];
        assert_eq!(
            (t.name.as_str(), t.namespace.as_str()),
            ("latency", "istio-system")
        );
        assert_eq!(t.provider.provider_type, "prometheus");
        assert_eq!(
            t.provider.address.as_deref(),
            Some("http://prometheus.istio-system:9090")
        );
        assert!(t.query.starts_with("histogram_quantile(0.99"));
        assert_eq!(t.origin.line, 86);
    }

    #[test]
    fn defaults_when_fields_are_absent() {
        let docs = decode(&canary(FLAGGER_API, STEPS));
        let c = &docs.canaries[0];
        assert_eq!(c.namespace, "default");
        assert!(!c.namespace_explicit);
        assert_eq!(c.provider, None);
        assert_eq!(c.progress_deadline_seconds, 600);
        assert_eq!(c.service.name, "podinfo");
        assert_eq!(c.service.port_name, "http");
        assert_eq!(c.service.target_port, Some(IntOrString::Int(9898)));
        let a = c.analysis.as_ref().unwrap();
        assert_eq!(a.interval, Duration::from_secs(60));
        assert_eq!(a.threshold, 1);
        assert_eq!(
            (a.primary_ready_threshold, a.canary_ready_threshold),
            (100, 100)
        );
        // threshold: 0 means 1, as in Flagger.
        let docs = decode(&canary(
            FLAGGER_API,
            "    stepWeight: 10\n    threshold: 0\n",
        ));
        let a = docs.canaries[0].analysis.as_ref().unwrap();
        assert_eq!(a.threshold, 1);
        assert_eq!(a.max_weight(), 100);
        // No analysis at all is fine.
        let text = canary(FLAGGER_API, "").replace("  analysis:\n", "");
        assert_eq!(decode(&text).canaries[0].analysis, None);
    }

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
    fn missing_target_ref() {
        let text = canary(FLAGGER_API, STEPS).replace(
            "  targetRef:\n    kind: Deployment\n    name: podinfo\n",
            "",
        );
        assert_eq!(
            errors(&text),
            vec!["canary.yaml:5: spec: missing required field \"targetRef\""]
        );
        let text = canary(FLAGGER_API, STEPS).replace("    name: podinfo\n  service", "  service");
        assert_eq!(
            errors(&text),
            vec!["canary.yaml:6: spec.targetRef: missing required field \"name\""]
        );
        let text = canary(FLAGGER_API, STEPS).replace("kind: Deployment", "kind: Rollout");
        assert_eq!(
            errors(&text),
            vec!["canary.yaml:7: spec.targetRef.kind: expected Deployment, DaemonSet or Service, got \"Rollout\"\n  help: an Argo Rollout is not a Canary target; point targetRef at the Deployment"]
        );
    }

    #[test]
    fn step_weight_ten() {
        let text = canary(FLAGGER_API, "    maxWeight: 50\n    stepWeight: ten\n");
        assert_eq!(
            errors(&text),
            vec![
                "canary.yaml:13: spec.analysis.stepWeight: expected an integer 1-100, got \"ten\"\n  help: stepWeight is the percentage of traffic added to the canary at each step, e.g. stepWeight: 10"
            ]
        );
        let text = canary(FLAGGER_API, "    stepWeight: \"10\"\n");
        assert_eq!(
            errors(&text),
            vec!["canary.yaml:12: spec.analysis.stepWeight: expected an integer 1-100, got \"10\"\n  help: remove the quotes: 10"]
        );
    }

    #[test]
    fn negative_max_weight() {
        let text = canary(FLAGGER_API, "    stepWeight: 10\n    maxWeight: -5\n");
        assert_eq!(
            errors(&text),
            vec!["canary.yaml:13: spec.analysis.maxWeight: expected an integer 1-100, got -5\n  help: maxWeight is the largest percentage of traffic the canary gets before promotion, e.g. maxWeight: 50"]
        );
    }

    #[test]
    fn step_weights_not_increasing() {
        let text = canary(
            FLAGGER_API,
            "    stepWeights:\n    - 5\n    - 20\n    - 10\n",
        );
        assert_eq!(
            errors(&text),
            vec!["canary.yaml:15: spec.analysis.stepWeights[2]: stepWeights must be strictly increasing, but entry 2 (10) is not above entry 1 (20)\n  help: list the canary weights in increasing order, such as [1, 5, 10, 25, 50]"]
        );
        let docs = decode(&canary(FLAGGER_API, "    stepWeights: [1, 5, 80]\n"));
        let a = docs.canaries[0].analysis.as_ref().unwrap();
        assert_eq!(a.step_weights, vec![1, 5, 80]);
        assert_eq!(a.max_weight(), 80);
    }

    #[test]
    fn unknown_webhook_type_and_missing_url() {
        let text = canary(
            FLAGGER_API,
            "    stepWeight: 10\n    webhooks:\n    - name: a\n      type: pre-rolout\n      url: http://x/\n    - name: b\n      type: post-rollout\n",
        );
        assert_eq!(
            errors(&text),
            vec![
                "canary.yaml:15: spec.analysis.webhooks[0].type: unknown webhook type \"pre-rolout\"\n  help: did you mean \"pre-rollout\"?",
                "canary.yaml:17: spec.analysis.webhooks[1]: missing required field \"url\"",
            ]
        );
        let text = canary(
            FLAGGER_API,
            "    stepWeight: 10\n    webhooks:\n    - name: a\n      type: bogus\n      url: x\n",
        );
        assert_eq!(
            errors(&text),
            vec![
                "canary.yaml:15: spec.analysis.webhooks[0].type: unknown webhook type \"bogus\"\n  help: use one of: confirm-rollout, pre-rollout, rollout, confirm-traffic-increase, confirm-promotion, post-rollout, rollback, event",
                "canary.yaml:16: spec.analysis.webhooks[0].url: expected an http:// or https:// URL, got \"x\"\n  help: write the full address, such as http://flagger-loadtester.test/",
            ]
        );
    }

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
        assert!(decode(&text).warnings.is_empty());
    }

    #[test]
    fn short_intervals() {
        let docs = decode(&canary(
            FLAGGER_API,
            "    interval: 5s\n    stepWeight: 10\n",
        ));
        assert_eq!(
            docs.canaries[0].analysis.as_ref().unwrap().interval,
            Duration::from_secs(10)
        );
        let w: Vec<String> = docs.warnings.iter().map(ToString::to_string).collect();
        assert_eq!(
            w,
            vec!["canary.yaml:12: warning: spec.analysis.interval: interval 5s is below 10s: Flagger raises intervals below 10s to 10s, so aviary runs every 10s\n  help: use apiVersion aviary.dev/v1alpha1 for shorter intervals"]
        );
        let docs = decode(&canary(
            AVIARY_API,
            "    interval: 5s\n    stepWeight: 10\n",
        ));
        assert!(docs.warnings.is_empty());
        assert_eq!(
            docs.canaries[0].analysis.as_ref().unwrap().interval,
            Duration::from_secs(5)
        );
        assert_eq!(
            errors(&canary(AVIARY_API, "    interval: 500ms\n    stepWeight: 10\n")),
            vec!["canary.yaml:12: spec.analysis.interval: expected an interval of at least 1s, got \"500ms\"\n  help: the shortest analysis interval is 1s"]
        );
        assert_eq!(
            errors(&canary(FLAGGER_API, "    interval: 60\n    stepWeight: 10\n")),
            vec!["canary.yaml:12: spec.analysis.interval: expected a duration such as 30s or 1m, got 60\n  help: add a unit: \"60s\""]
        );
        assert_eq!(
            errors(&canary(FLAGGER_API, "    interval: \"60\"\n    stepWeight: 10\n")),
            vec!["canary.yaml:12: spec.analysis.interval: expected a duration such as 30s or 1m, got \"60\"\n  help: add a unit: \"60s\""]
        );
    }

    #[test]
    fn three_independent_errors_are_all_reported() {
        let text = canary(
            FLAGGER_API,
            "    stepWeight: ten\n    mirror: yes\n    webhooks:\n    - name: a\n      url: ftp://x\n",
        )
        .replace("port: 9898", "port: 70000");
        assert_eq!(
            errors(&text),
            vec![
                "canary.yaml:10: spec.service.port: expected an integer 1-65535, got 70000\n  help: a port number 1-65535, e.g. port: 9898",
                "canary.yaml:12: spec.analysis.stepWeight: expected an integer 1-100, got \"ten\"\n  help: stepWeight is the percentage of traffic added to the canary at each step, e.g. stepWeight: 10",
                "canary.yaml:13: spec.analysis.mirror: expected true or false, got \"yes\"\n  help: write true or false: like Kubernetes, aviary reads YAML 1.2, where yes, no, on and off are strings",
                "canary.yaml:16: spec.analysis.webhooks[0].url: expected an http:// or https:// URL, got \"ftp://x\"\n  help: write the full address, such as http://flagger-loadtester.test/",
            ]
        );
    }

    #[test]
    fn a_refused_webhook_url_is_shown_without_its_credentials() {
        let text = canary(
            FLAGGER_API,
            "    stepWeight: 10\n    webhooks:\n    - name: a\n      url: ftp://deploy:hunter2@x/hook\n",
        );
        let errs = errors(&text);
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(errs[0].contains("webhooks[0].url"), "{errs:?}");
        assert!(!errs[0].contains("hunter2"), "{errs:?}");
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
    fn providers() {
        let with = |p: &str| {
            canary(FLAGGER_API, STEPS).replace("spec:\n", &format!("spec:\n  provider: {p}\n"))
        };
        assert_eq!(
            decode(&with("gatewayapi:v1beta1")).canaries[0].provider,
            Some(Provider::GatewayApi)
        );
        assert_eq!(
            decode(&with("kubernetes")).canaries[0].provider,
            Some(Provider::Kubernetes)
        );
        let docs = decode(&with("linkerd"));
        assert_eq!(
            docs.canaries[0].provider,
            Some(Provider::Other("linkerd".into()))
        );
        assert_eq!(
            docs.warnings[0].to_string(),
            "canary.yaml:6: warning: spec.provider: aviary has no traffic router for provider linkerd yet\n  help: aviary routes traffic with kubernetes, istio, gloo, nginx and gatewayapi"
        );
        assert_eq!(
            errors(&with("istoi")),
            vec!["canary.yaml:6: spec.provider: unknown provider \"istoi\"\n  help: did you mean \"istio\"?"]
        );
    }

    #[test]
    fn deprecated_canary_analysis() {
        let text = canary(FLAGGER_API, STEPS).replace("  analysis:", "  canaryAnalysis:");
        let docs = decode(&text);
        assert_eq!(docs.canaries[0].analysis.as_ref().unwrap().step_weight, 10);
        assert_eq!(
            docs.warnings[0].to_string(),
            "canary.yaml:11: warning: spec.canaryAnalysis: canaryAnalysis is deprecated, rename it to analysis"
        );
        let text = format!(
            "{}  canaryAnalysis:\n    stepWeight: 20\n",
            canary(FLAGGER_API, STEPS)
        );
        let docs = decode(&text);
        assert_eq!(docs.canaries[0].analysis.as_ref().unwrap().step_weight, 10);
        assert_eq!(
            docs.warnings[0].to_string(),
            "canary.yaml:14: warning: spec.canaryAnalysis: canaryAnalysis is ignored because analysis is set\n  help: remove canaryAnalysis"
        );
    }

    #[test]
    fn thresholds_fold_as_flagger_reads_them() {
        let text = canary(
            FLAGGER_API,
            "    stepWeight: 10\n    metrics:\n    - name: request-success-rate\n      threshold: 99\n    - name: request-duration\n      threshold: 500\n    - name: errors\n      templateRef: {name: errors}\n    - name: old\n      query: up\n      thresholdRange: {max: 1}\n      threshold: 3\n",
        );
        let docs = decode(&text);
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
    fn strategies() {
        assert_eq!(
            errors(&canary(FLAGGER_API, "    threshold: 2\n")),
            vec!["canary.yaml:11: spec.analysis: no rollout strategy\n  help: set stepWeight and maxWeight for a canary, iterations and match for A/B testing, or iterations for blue/green"]
        );
        // Blue/green on kubernetes needs nothing more; skipAnalysis turns the check off.
        let k8s = |body: &str| {
            canary(FLAGGER_API, body).replace("spec:\n", "spec:\n  provider: kubernetes\n")
        };
        assert!(decode(&k8s("    threshold: 2\n")).canaries.len() == 1);
        let skip = canary(FLAGGER_API, "    threshold: 2\n")
            .replace("spec:\n", "spec:\n  skipAnalysis: true\n");
        assert!(decode(&skip).canaries[0].skip_analysis);
        assert_eq!(
            errors(&k8s("    iterations: 10\n    match:\n    - headers:\n        x: {exact: \"1\"}\n")),
            vec!["canary.yaml:14: spec.analysis.match: A/B testing (analysis.match) is not supported by the kubernetes provider\n  help: remove match to run blue/green, or use a provider that routes by header, such as istio, nginx or gatewayapi"]
        );
        // A/B testing.
        let docs = decode(&canary(
            FLAGGER_API,
            "    iterations: 10\n    match:\n    - headers:\n        x-canary:\n          regex: \".*insider.*\"\n      sourceLabels: {app: x}\n",
        ));
        let a = docs.canaries[0].analysis.as_ref().unwrap();
        assert_eq!(a.iterations, 10);
        assert_eq!(
            a.r#match[0].headers.get("x-canary"),
            Some(&StringMatch::Regex(".*insider.*".into()))
        );
        assert!(docs.warnings.is_empty());
        let w = warnings(&canary(
            FLAGGER_API,
            "    stepWeight: 10\n    stepWeights: [1, 5]\n    maxWeight: 50\n    mirror: true\n    match:\n    - uri: {prefix: /}\n",
        ));
        assert_eq!(
            w,
            vec![
                "canary.yaml:13: warning: spec.analysis.stepWeights: stepWeights is ignored because stepWeight is set (Flagger gives stepWeight precedence)\n  help: remove one of the two; note that Flagger still stops at the last stepWeights entry (5)",
                "canary.yaml:14: warning: spec.analysis.maxWeight: maxWeight is ignored because stepWeights is set (its last entry, 5, is the maximum weight)\n  help: remove maxWeight",
                "canary.yaml:15: warning: spec.analysis.mirror: mirror is ignored in A/B testing (match is set); Flagger mirrors traffic only in blue/green",
                "canary.yaml:16: warning: spec.analysis.match: match is only used by A/B testing, which needs iterations\n  help: set iterations (the number of checks to run) for A/B testing, or remove match",
            ]
        );
    }

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

    #[test]
    fn yaml_level_errors_pass_through() {
        assert_eq!(
            errors("apiVersion: flagger.app/v1beta1\nkind: Canary\nkind: Canary\n"),
            vec!["canary.yaml:3: kind: duplicate key \"kind\" (first at line 2)\n  help: remove one of the two entries"]
        );
    }

    #[test]
    fn less_common_fields() {
        let text = r#"apiVersion: aviary.dev/v1alpha1
kind: Canary
metadata:
  name: web
  namespace: prod
spec:
  provider: nginx
  metricsServer: http://prometheus:9090
  targetRef: {apiVersion: apps/v1, kind: DaemonSet, name: web}
  ingressRef: {apiVersion: networking.k8s.io/v1, kind: Ingress, name: web}
  upstreamRef: {name: up, namespace: gloo-system}
  autoscalerRef:
    kind: ScaledObject
    name: web
    primaryScalerQueries: {q: "sum(x)"}
    primaryScalerReplicas: {minReplicas: 2, maxReplicas: 10}
  service:
    name: web-apex
    port: 80
    portName: grpc
    targetPort: 8080
    timeout: 15s
    headers:
      request:
        set: {x-a: "1"}
        remove: [x-b]
    corsPolicy: &cors
      allowOrigins: [{exact: "https://x"}]
      maxAge: 24h
    apex:
      labels: {tier: web}
      annotations: {a: b}
    rewrite: {uri: /}
  analysis:
    interval: 1m
    threshold: 3
    iterations: 10
    mirror: true
    mirrorWeight: 20
    primaryReadyThreshold: 50
    canaryReadyThreshold: 0
    alerts:
    - name: on-call
      severity: error
      providerRef: {name: slack, namespace: flagger}
    - name: info
      providerRef: {name: slack}
    sessionAffinity:
      cookieName: canary
    webhooks:
    - name: notify
      type: event
      url: https://hooks.example.com/x
      timeout: 1m30s
  progressDeadlineSeconds: 120
  revertOnDeletion: true
  suspend: false
"#;
        let docs = decode(text);
        assert_eq!(docs.warnings, Vec::<Diagnostic>::new());
        let c = &docs.canaries[0];
        assert_eq!(c.api_version, ApiVersion::AviaryV1alpha1);
        assert_eq!(c.provider, Some(Provider::Nginx));
        assert_eq!(c.metrics_server.as_deref(), Some("http://prometheus:9090"));
        assert_eq!(c.target_ref.kind.as_deref(), Some("DaemonSet"));
        assert_eq!(c.ingress_ref.as_ref().map(|r| r.name.as_str()), Some("web"));
        assert_eq!(
            c.upstream_ref.as_ref().and_then(|r| r.namespace.as_deref()),
            Some("gloo-system")
        );
        let scaler = c.autoscaler_ref.as_ref().unwrap();
        assert_eq!(scaler.kind.as_deref(), Some("ScaledObject"));
        assert_eq!(
            scaler.primary_scaler_queries.get("q").map(String::as_str),
            Some("sum(x)")
        );
        assert_eq!(
            scaler.primary_scaler_replicas,
            Some(ScalerReplicas {
                min_replicas: Some(2),
                max_replicas: Some(10)
            })
        );
        let s = &c.service;
        assert_eq!(
            (s.name.as_str(), s.port, s.port_name.as_str()),
            ("web-apex", 80, "grpc")
        );
        assert_eq!(s.target_port, Some(IntOrString::Int(8080)));
        assert_eq!(s.timeout.as_deref(), Some("15s"));
        let req = s.headers.as_ref().and_then(|h| h.request.as_ref()).unwrap();
        assert_eq!(req.set.get("x-a").map(String::as_str), Some("1"));
        assert_eq!(req.remove, vec!["x-b"]);
        assert_eq!(
            s.cors_policy,
            Some(serde_json::json!({"allowOrigins": [{"exact": "https://x"}], "maxAge": "24h"}))
        );
        assert_eq!(
            s.apex
                .as_ref()
                .unwrap()
                .labels
                .get("tier")
                .map(String::as_str),
            Some("web")
        );
        assert_eq!(s.rewrite.as_ref().unwrap().uri.as_deref(), Some("/"));
        let a = c.analysis.as_ref().unwrap();
        assert_eq!(a.interval, Duration::from_secs(60));
        assert_eq!((a.threshold, a.iterations), (3, 10));
        assert_eq!((a.mirror, a.mirror_weight), (true, Some(20)));
        assert_eq!(
            (a.primary_ready_threshold, a.canary_ready_threshold),
            (50, 0)
        );
        assert_eq!(a.alerts.len(), 2);
        assert_eq!(a.alerts[0].severity, "error");
        assert_eq!(a.alerts[1].severity, "info");
        assert_eq!(a.alerts[1].provider_ref.name, "slack");
        assert_eq!(
            a.session_affinity,
            Some(SessionAffinity {
                cookie_name: "canary".into(),
                max_age: 86_400,
                primary_cookie_name: None
            })
        );
        assert_eq!(a.webhooks[0].hook_type, HookType::Event);
        assert_eq!(a.webhooks[0].timeout, Duration::from_secs(90));
        assert_eq!(c.progress_deadline_seconds, 120);
        assert!(c.revert_on_deletion && !c.suspend && !c.skip_analysis);

        let bad = text
            .replace("severity: error", "severity: critical")
            .replace("cookieName: canary", "maxAge: 0")
            .replace("kind: ScaledObject", "kind: Hpa");
        assert_eq!(
            errors(&bad),
            vec![
                "canary.yaml:13: spec.autoscalerRef.kind: unknown autoscaler kind \"Hpa\"\n  help: use one of: HorizontalPodAutoscaler, ScaledObject",
                "canary.yaml:44: spec.analysis.alerts[0].severity: unknown severity \"critical\"\n  help: use one of: info, warn, error",
                "canary.yaml:48: spec.analysis.sessionAffinity: missing required field \"cookieName\"",
            ]
        );
    }

    #[test]
    fn levenshtein_distances() {
        assert_eq!(levenshtein("stepWieght", "stepWeight"), 2);
        assert_eq!(levenshtein("", "abc"), 3);
        assert_eq!(levenshtein("kitten", "sitting"), 3);
        assert_eq!(
            closest("Interval", &["interval", "iterations"]),
            Some("interval")
        );
        assert_eq!(closest("zzz", &["interval"]), None);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn never_panics_on_any_string(text in any::<String>()) {
            let _ = decode_documents("fuzz.yaml", &text);
        }

        #[test]
        fn never_panics_on_yamlish_text(text in "[a-zA-Z0-9 :\\-\\[\\]{},'\"#&*!|>?\n]{0,200}") {
            let _ = decode_documents("fuzz.yaml", &text);
        }

        #[test]
        fn never_panics_on_mutated_canaries(cut in 0usize..2000, insert in "[ :\\-\\[\\]{}'\"&*!\n0-9a-z]{0,6}") {
            let base = PODINFO;
            let at = cut.min(base.len());
            let at = (0..=at).rev().find(|i| base.is_char_boundary(*i)).unwrap_or(0);
            let text = format!("{}{}{}", &base[..at], insert, &base[at..]);
            let _ = decode_documents("fuzz.yaml", &text);
        }
    }
}
