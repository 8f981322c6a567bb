//! A YAML tree in which every node knows its line.
//!
//! Built on the event parser of `yaml-rust2`, so that the decoder can point at the line of any field.
//! Scalars are resolved with the YAML 1.2 core schema (so `yes`, `on` and `1_000` stay strings, as
//! Kubernetes reads them), aliases are expanded, `<<` merge keys are applied, and duplicate keys are
//! refused.

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};

use yaml_rust2::parser::{Event, Parser, Tag};
use yaml_rust2::scanner::{Marker, ScanError, TScalarStyle};

use super::Diagnostic;

/// Collections nested deeper than this are refused, so that nothing downstream can overflow the stack.
const MAX_DEPTH: usize = 100;
/// At most this many nodes may be created by expanding aliases (a "billion laughs" guard).
const MAX_ALIAS_NODES: usize = 100_000;

const PARSE_HELP: &str = "check the indentation and quoting near this line";
const CORE_TAG: &str = "tag:yaml.org,2002:";

/// One YAML node and where it starts.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub value: Value,
    /// 1-based.
    pub line: usize,
    /// 1-based.
    pub col: usize,
}

/// A resolved YAML value. Mappings keep their order and their key nodes (with lines).
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

impl Node {
    pub fn new(value: Value, line: usize, col: usize) -> Self {
        Node { value, line, col }
    }

    /// The value of `key` when this node is a mapping with a string key `key`.
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.entry(key).map(|(_, v)| v)
    }

    /// The key node (with its line) and the value of `key`, when this node is a mapping with a
    /// string key `key`.
    pub fn entry(&self, key: &str) -> Option<(&Node, &Node)> {
        match &self.value {
            Value::Map(entries) => entries
                .iter()
                .find(|(k, _)| matches!(&k.value, Value::Str(s) if s == key))
                .map(|(k, v)| (k, v)),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_i64(&self) -> Option<i64> {
        match self.value {
            Value::Int(i) => Some(i),
            _ => None,
        }
    }

    /// Floats, and integers as floats.
    pub fn as_f64(&self) -> Option<f64> {
        match self.value {
            Value::Int(i) => Some(i as f64),
            Value::Float(f) => Some(f),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self.value {
            Value::Bool(b) => Some(b),
            _ => None,
        }
    }

    pub fn as_map(&self) -> Option<&[(Node, Node)]> {
        match &self.value {
            Value::Map(entries) => Some(entries),
            _ => None,
        }
    }

    pub fn as_seq(&self) -> Option<&[Node]> {
        match &self.value {
            Value::Seq(items) => Some(items),
            _ => None,
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(self.value, Value::Null)
    }

    /// `null`, `a boolean`, `an integer`, `a number`, `a string`, `a list` or `a mapping`.
    pub fn type_name(&self) -> &'static str {
        match self.value {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Int(_) => "an integer",
            Value::Float(_) => "a number",
            Value::Str(_) => "a string",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }

    /// The value for a "got ..." message: strings quoted (`"ten"`), numbers and booleans as YAML
    /// writes them, `a list`, `a mapping`, `null`.
    pub fn describe(&self) -> String {
        match &self.value {
            Value::Str(s) => quote(s),
            Value::Seq(_) | Value::Map(_) => self.type_name().to_string(),
            _ => self.scalar_text().unwrap_or_default(),
        }
    }

    /// A scalar's text without quotes (`ten`, `5`, `true`, `null`); `None` for lists and mappings.
    pub fn scalar_text(&self) -> Option<String> {
        Some(match &self.value {
            Value::Null => "null".to_string(),
            Value::Bool(b) => b.to_string(),
            Value::Int(i) => i.to_string(),
            Value::Float(f) => format_float(*f),
            Value::Str(s) => s.clone(),
            Value::Seq(_) | Value::Map(_) => return None,
        })
    }

    /// The node as JSON. Non-string keys become their text; infinities and NaN become `null`.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match &self.value {
            Value::Null => J::Null,
            Value::Bool(b) => J::Bool(*b),
            Value::Int(i) => J::from(*i),
            Value::Float(f) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
            Value::Str(s) => J::String(s.clone()),
            Value::Seq(items) => J::Array(items.iter().map(Node::to_json).collect()),
            Value::Map(entries) => J::Object(
                entries
                    .iter()
                    .map(|(k, v)| (k.scalar_text().unwrap_or_default(), v.to_json()))
                    .collect(),
            ),
        }
    }

    /// How many nodes this tree holds (itself included).
    fn size(&self) -> usize {
        match &self.value {
            Value::Seq(items) => 1 + items.iter().map(Node::size).sum::<usize>(),
            Value::Map(entries) => {
                1 + entries
                    .iter()
                    .map(|(k, v)| k.size() + v.size())
                    .sum::<usize>()
            }
            _ => 1,
        }
    }
}

/// A string in double quotes with JSON escapes.
pub fn quote(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| format!("\"{s}\""))
}

fn format_float(f: f64) -> String {
    if f.is_nan() {
        ".nan".to_string()
    } else if f.is_infinite() {
        if f > 0.0 { ".inf" } else { "-.inf" }.to_string()
    } else {
        format!("{f:?}")
    }
}

// ---------------------------------------------------------------------------------------------
// Scalar resolution (YAML 1.2 core schema).

fn resolve_null(s: &str) -> bool {
    matches!(s, "" | "~" | "null" | "Null" | "NULL")
}

fn resolve_bool(s: &str) -> Option<bool> {
    match s {
        "true" | "True" | "TRUE" => Some(true),
        "false" | "False" | "FALSE" => Some(false),
        _ => None,
    }
}

fn all_digits(s: &str, radix: u32) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_digit(radix))
}

/// `Ok(Some(i))` for an integer, `Ok(None)` when `s` is not integer syntax; `Err(())` when it is
/// decimal integer syntax but too large for 64 bits (it then reads as a float).
fn resolve_int(s: &str) -> Result<Option<i64>, ()> {
    if let Some(hex) = s.strip_prefix("0x") {
        return if all_digits(hex, 16) {
            i64::from_str_radix(hex, 16).map(Some).map_err(|_| ())
        } else {
            Ok(None)
        };
    }
    if let Some(oct) = s.strip_prefix("0o") {
        return if all_digits(oct, 8) {
            i64::from_str_radix(oct, 8).map(Some).map_err(|_| ())
        } else {
            Ok(None)
        };
    }
    let digits = s.strip_prefix(['-', '+']).unwrap_or(s);
    if !all_digits(digits, 10) {
        return Ok(None);
    }
    s.parse::<i64>().map(Some).map_err(|_| ())
}

fn resolve_float(s: &str) -> Option<f64> {
    let unsigned = s.strip_prefix(['-', '+']).unwrap_or(s);
    let negative = s.starts_with('-');
    match unsigned {
        ".inf" | ".Inf" | ".INF" => {
            return Some(if negative {
                f64::NEG_INFINITY
            } else {
                f64::INFINITY
            })
        }
        _ => {}
    }
    if matches!(s, ".nan" | ".NaN" | ".NAN") {
        return Some(f64::NAN);
    }
    // [0-9]*(\.[0-9]*)?([eE][-+]?[0-9]+)? with at least one digit in the mantissa.
    let (mantissa, exponent) = match unsigned.find(['e', 'E']) {
        Some(i) => (&unsigned[..i], Some(&unsigned[i + 1..])),
        None => (unsigned, None),
    };
    let (int_part, frac_part) = match mantissa.split_once('.') {
        Some((a, b)) => (a, b),
        None => (mantissa, ""),
    };
    let digits_ok = |p: &str| p.chars().all(|c| c.is_ascii_digit());
    if int_part.is_empty() && frac_part.is_empty() {
        return None;
    }
    if !digits_ok(int_part) || !digits_ok(frac_part) {
        return None;
    }
    if let Some(exp) = exponent {
        let exp_digits = exp.strip_prefix(['-', '+']).unwrap_or(exp);
        if !all_digits(exp_digits, 10) {
            return None;
        }
    }
    s.parse::<f64>().ok()
}

/// Plain-scalar resolution per the core schema.
fn resolve_plain(s: &str) -> Value {
    if resolve_null(s) {
        return Value::Null;
    }
    if let Some(b) = resolve_bool(s) {
        return Value::Bool(b);
    }
    match resolve_int(s) {
        Ok(Some(i)) => return Value::Int(i),
        Ok(None) => {}
        Err(()) => {
            if let Ok(f) = s.parse::<f64>() {
                return Value::Float(f);
            }
        }
    }
    if let Some(f) = resolve_float(s) {
        return Value::Float(f);
    }
    Value::Str(s.to_string())
}

/// Resolves a scalar; `Err` names the problem with an explicit tag (the value is then a string).
fn resolve_scalar(text: String, style: TScalarStyle, tag: Option<&Tag>) -> Result<Value, String> {
    let core = tag.and_then(|t| {
        if t.handle == CORE_TAG {
            Some(t.suffix.as_str())
        } else if t.handle.is_empty() {
            t.suffix.strip_prefix(CORE_TAG)
        } else {
            None
        }
    });
    match core {
        Some("str") => return Ok(Value::Str(text)),
        Some("null") => {
            return if resolve_null(&text) {
                Ok(Value::Null)
            } else {
                Err(format!("cannot read {} as null (!!null)", quote(&text)))
            }
        }
        Some("bool") => {
            return resolve_bool(&text)
                .map(Value::Bool)
                .ok_or_else(|| format!("cannot read {} as a boolean (!!bool)", quote(&text)))
        }
        Some("int") => {
            return match resolve_int(&text) {
                Ok(Some(i)) => Ok(Value::Int(i)),
                _ => Err(format!(
                    "cannot read {} as an integer (!!int)",
                    quote(&text)
                )),
            }
        }
        Some("float") => {
            if let Ok(Some(i)) = resolve_int(&text) {
                return Ok(Value::Float(i as f64));
            }
            return resolve_float(&text)
                .map(Value::Float)
                .ok_or_else(|| format!("cannot read {} as a number (!!float)", quote(&text)));
        }
        _ => {}
    }
    // A non-specific `!` tag forces a string, like quoting.
    let non_specific = tag.is_some_and(|t| t.handle.is_empty() && t.suffix == "!");
    if style == TScalarStyle::Plain && !non_specific {
        Ok(resolve_plain(&text))
    } else {
        Ok(Value::Str(text))
    }
}

// ---------------------------------------------------------------------------------------------
// Tree building from parser events.

enum Kind {
    Seq(Vec<Node>),
    Map {
        entries: Vec<(Node, Node)>,
        /// The key waiting for its value; `false` when the entry is to be dropped (bad or duplicate key).
        pending: Option<(Node, bool)>,
        /// Key identity → line of its first occurrence.
        seen: HashMap<(u8, String), usize>,
    },
}

struct Frame {
    kind: Kind,
    anchor: usize,
    line: usize,
    col: usize,
}

struct Builder<'f> {
    file: &'f str,
    docs: Vec<Node>,
    stack: Vec<Frame>,
    anchors: HashMap<usize, Node>,
    alias_nodes: usize,
    errors: Vec<Diagnostic>,
}

/// Identity of a scalar key for duplicate detection (`1` and `"1"` are different keys).
fn key_identity(node: &Node) -> Option<(u8, String)> {
    let tag = match node.value {
        Value::Null => 0,
        Value::Bool(_) => 1,
        Value::Int(_) => 2,
        Value::Float(_) => 3,
        Value::Str(_) => 4,
        Value::Seq(_) | Value::Map(_) => return None,
    };
    node.scalar_text().map(|t| (tag, t))
}

fn is_merge_key(node: &Node) -> bool {
    matches!(&node.value, Value::Str(s) if s == "<<")
}

fn pos(mark: &Marker) -> (usize, usize) {
    (mark.line(), mark.col() + 1)
}

impl<'f> Builder<'f> {
    fn new(file: &'f str) -> Self {
        Builder {
            file,
            docs: Vec::new(),
            stack: Vec::new(),
            anchors: HashMap::new(),
            alias_nodes: 0,
            errors: Vec::new(),
        }
    }

    fn error(
        &mut self,
        line: usize,
        col: usize,
        path: String,
        message: String,
        help: Option<&str>,
    ) {
        let mut d = Diagnostic::error(self.file, line, &path, message).with_column(col);
        if let Some(h) = help {
            d = d.with_help(h);
        }
        self.errors.push(d);
    }

    /// The dotted path of the node being built at the top of the stack.
    fn path(&self) -> String {
        let mut path = String::new();
        for frame in &self.stack {
            match &frame.kind {
                Kind::Seq(items) => path.push_str(&format!("[{}]", items.len())),
                Kind::Map { pending, .. } => {
                    if let Some((k, _)) = pending {
                        if !path.is_empty() {
                            path.push('.');
                        }
                        path.push_str(&k.scalar_text().unwrap_or_default());
                    }
                }
            }
        }
        path
    }

    /// Handles one event; `false` means stop (a fatal problem was recorded).
    fn event(&mut self, ev: Event, mark: Marker) -> bool {
        let (line, col) = pos(&mark);
        match ev {
            Event::Nothing | Event::StreamStart | Event::StreamEnd | Event::DocumentEnd => true,
            Event::DocumentStart => {
                self.stack.clear();
                self.anchors.clear();
                true
            }
            Event::Scalar(text, style, anchor, tag) => {
                // An empty value (`key:` and nothing) is reported where its key is, not on the
                // line of whatever follows it.
                let (line, col) = match self.stack.last() {
                    Some(Frame {
                        kind:
                            Kind::Map {
                                pending: Some((key, _)),
                                ..
                            },
                        ..
                    }) if text.is_empty() && style == TScalarStyle::Plain => (key.line, key.col),
                    _ => (line, col),
                };
                let value = match resolve_scalar(text, style, tag.as_ref()) {
                    Ok(v) => v,
                    Err(msg) => {
                        let path = self.path();
                        self.error(
                            line,
                            col,
                            path,
                            msg,
                            Some("remove the tag or fix the value"),
                        );
                        Value::Null
                    }
                };
                self.complete(Node::new(value, line, col), anchor);
                true
            }
            Event::Alias(id) => {
                let Some(target) = self.anchors.get(&id) else {
                    let path = self.path();
                    self.error(
                        line,
                        col,
                        path,
                        "this alias refers to the node that contains it".to_string(),
                        Some("an alias can only repeat a node that is complete before it"),
                    );
                    return false;
                };
                let size = target.size();
                self.alias_nodes = self.alias_nodes.saturating_add(size);
                if self.alias_nodes > MAX_ALIAS_NODES {
                    let path = self.path();
                    self.error(
                        line,
                        col,
                        path,
                        format!(
                            "aliases expand to more than {MAX_ALIAS_NODES} nodes; refusing to read further"
                        ),
                        None,
                    );
                    return false;
                }
                let mut node = target.clone();
                node.line = line;
                node.col = col;
                self.complete(node, 0);
                true
            }
            Event::SequenceStart(anchor, _) => self.open(Kind::Seq(Vec::new()), anchor, line, col),
            Event::MappingStart(anchor, _) => self.open(
                Kind::Map {
                    entries: Vec::new(),
                    pending: None,
                    seen: HashMap::new(),
                },
                anchor,
                line,
                col,
            ),
            Event::SequenceEnd | Event::MappingEnd => {
                let Some(frame) = self.stack.pop() else {
                    return true;
                };
                // A block mapping's start event is marked at its first colon; the first key is where
                // it really starts (a flow mapping's `{` comes before its first key and is kept).
                let (mut line, mut col) = (frame.line, frame.col);
                let value = match frame.kind {
                    Kind::Seq(items) => Value::Seq(items),
                    Kind::Map { entries, .. } => {
                        if let Some((k, _)) = entries.first() {
                            if (k.line, k.col) < (line, col) {
                                (line, col) = (k.line, k.col);
                            }
                        }
                        Value::Map(self.apply_merges(entries))
                    }
                };
                self.complete(Node::new(value, line, col), frame.anchor);
                true
            }
        }
    }

    fn open(&mut self, kind: Kind, anchor: usize, line: usize, col: usize) -> bool {
        if self.stack.len() >= MAX_DEPTH {
            let path = self.path();
            self.error(
                line,
                col,
                path,
                format!("lists and mappings are nested more than {MAX_DEPTH} levels deep"),
                None,
            );
            return false;
        }
        self.stack.push(Frame {
            kind,
            anchor,
            line,
            col,
        });
        true
    }

    /// Applies `<<` merge keys: entries of the merged mapping(s) that the mapping does not set itself.
    fn apply_merges(&mut self, entries: Vec<(Node, Node)>) -> Vec<(Node, Node)> {
        if !entries.iter().any(|(k, _)| is_merge_key(k)) {
            return entries;
        }
        let (merges, mut out): (Vec<_>, Vec<_>) =
            entries.into_iter().partition(|(k, _)| is_merge_key(k));
        let mut present: HashMap<(u8, String), ()> = out
            .iter()
            .filter_map(|(k, _)| key_identity(k).map(|id| (id, ())))
            .collect();
        for (key, value) in merges {
            let sources: Vec<Node> = match value.value {
                Value::Map(_) => vec![value],
                Value::Seq(items) if items.iter().all(|i| matches!(i.value, Value::Map(_))) => {
                    items
                }
                _ => {
                    let path = self.path();
                    self.error(
                        key.line,
                        key.col,
                        path,
                        "the merge key << needs a mapping or a list of mappings".to_string(),
                        Some("write <<: *anchor where the anchor names a mapping"),
                    );
                    continue;
                }
            };
            for source in sources {
                if let Value::Map(src_entries) = source.value {
                    for (k, v) in src_entries {
                        if let Some(id) = key_identity(&k) {
                            if present.insert(id, ()).is_none() {
                                out.push((k, v));
                            }
                        }
                    }
                }
            }
        }
        out
    }

    fn complete(&mut self, node: Node, anchor: usize) {
        if anchor > 0 {
            self.anchors.insert(anchor, node.clone());
        }
        let path = self.path();
        let file = self.file;
        let Some(top) = self.stack.last_mut() else {
            if !node.is_null() {
                self.docs.push(node);
            }
            return;
        };
        match &mut top.kind {
            Kind::Seq(items) => items.push(node),
            Kind::Map {
                entries,
                pending,
                seen,
            } => match pending.take() {
                Some((key, keep)) => {
                    if keep {
                        entries.push((key, node));
                    }
                }
                None => {
                    let keep = match key_identity(&node) {
                        None => {
                            self.errors.push(
                                Diagnostic::error(
                                    file,
                                    node.line,
                                    &path,
                                    format!(
                                        "a mapping key must be a plain value such as a string, got {}",
                                        node.type_name()
                                    ),
                                )
                                .with_column(node.col)
                                .with_help("write the key as a string"),
                            );
                            false
                        }
                        Some(id) => match seen.get(&id) {
                            Some(first) => {
                                let key_path = match node.scalar_text() {
                                    Some(t) if path.is_empty() => t,
                                    Some(t) => format!("{path}.{t}"),
                                    None => path.clone(),
                                };
                                self.errors.push(
                                    Diagnostic::error(
                                        file,
                                        node.line,
                                        &key_path,
                                        format!(
                                            "duplicate key {} (first at line {first})",
                                            node.describe()
                                        ),
                                    )
                                    .with_column(node.col)
                                    .with_help("remove one of the two entries"),
                                );
                                false
                            }
                            None => {
                                seen.insert(id, node.line);
                                true
                            }
                        },
                    };
                    *pending = Some((node, keep));
                }
            },
        }
    }
}

fn scan_error(file: &str, text: &str, e: &ScanError) -> Diagnostic {
    let mark = e.marker();
    // An error at the end of the input is marked on the line after the last one; point at the last.
    let last_line = text.lines().count().max(1);
    let (line, col) = if mark.line() > last_line {
        (last_line, 0)
    } else {
        (mark.line(), mark.col() + 1)
    };
    Diagnostic::error(file, line, "", format!("invalid YAML: {}", e.info()))
        .with_column(col)
        .with_help(PARSE_HELP)
}

/// Parses every document of `text`. Empty documents (only comments, a bare `---`, or `null`) are left
/// out. On any problem, returns every problem found (a syntax error ends the reading).
pub fn parse_documents(file: &str, text: &str) -> Result<Vec<Node>, Vec<Diagnostic>> {
    let mut builder = Builder::new(file);
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        let mut parser = Parser::new_from_str(text);
        loop {
            match parser.next_token() {
                Ok((Event::StreamEnd, _)) => return Ok(()),
                Ok((ev, mark)) => {
                    if !builder.event(ev, mark) {
                        return Ok(());
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }));
    match outcome {
        Ok(Ok(())) => {}
        Ok(Err(e)) => builder.errors.push(scan_error(file, text, &e)),
        Err(_) => builder.errors.push(
            Diagnostic::error(file, 0, "", "the YAML parser failed on this file")
                .with_help(PARSE_HELP),
        ),
    }
    if builder.errors.is_empty() {
        Ok(builder.docs)
    } else {
        Err(builder.errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(text: &str) -> Node {
        let mut docs = parse_documents("t.yaml", text).unwrap();
        assert_eq!(docs.len(), 1, "{docs:?}");
        docs.remove(0)
    }

    fn errors(text: &str) -> Vec<Diagnostic> {
        parse_documents("t.yaml", text).unwrap_err()
    }

    #[test]
    fn lines_and_columns() {
        let doc = one("# c\napiVersion: v1\nspec:\n  analysis:\n    stepWeight: ten\n  list:\n  - a\n  - {x: 1}\n");
        assert_eq!((doc.line, doc.col), (2, 1));
        let spec = doc.get("spec").unwrap();
        assert_eq!(spec.line, 4);
        let sw = spec.get("analysis").unwrap().get("stepWeight").unwrap();
        assert_eq!((sw.line, sw.col), (5, 17));
        assert_eq!(sw.describe(), "\"ten\"");
        let list = spec.get("list").unwrap().as_seq().unwrap();
        assert_eq!(list[0].line, 7);
        assert_eq!((list[1].line, list[1].col), (8, 5));
        assert_eq!(list[1].get("x").unwrap().as_i64(), Some(1));
        // Keys carry their lines too.
        let (k, _) = &doc.as_map().unwrap()[1];
        assert_eq!((k.line, k.as_str()), (3, Some("spec")));
    }

    #[test]
    fn core_schema() {
        let doc = one(concat!(
            "a: ~\nb: null\nc:\nd: true\ne: False\nf: yes\ng: 10\nh: -3\ni: 0x1F\nj: 0o17\n",
            "k: 1.5\nl: .inf\nm: -.inf\nn: .nan\no: 1e3\np: '10'\nq: \"true\"\nr: |\n  x\n",
            "s: 1_000\nt: !!str 5\nu: !!int \"7\"\nv: !!float 2\nw: 12345678901234567890\nx: on\n",
            "y: 010\nz: +5\naa: .5\nab: 1.\nac: '.inf'\nad: 0x\nae: 1e\naf: NULL\n"
        ));
        let v = |k: &str| doc.get(k).unwrap().value.clone();
        assert_eq!(v("a"), Value::Null);
        assert_eq!(v("b"), Value::Null);
        assert_eq!(v("c"), Value::Null);
        assert_eq!(v("d"), Value::Bool(true));
        assert_eq!(v("e"), Value::Bool(false));
        assert_eq!(v("f"), Value::Str("yes".into()));
        assert_eq!(v("g"), Value::Int(10));
        assert_eq!(v("h"), Value::Int(-3));
        assert_eq!(v("i"), Value::Int(31));
        assert_eq!(v("j"), Value::Int(15));
        assert_eq!(v("k"), Value::Float(1.5));
        assert_eq!(v("l"), Value::Float(f64::INFINITY));
        assert_eq!(v("m"), Value::Float(f64::NEG_INFINITY));
        assert!(matches!(v("n"), Value::Float(f) if f.is_nan()));
        assert_eq!(v("o"), Value::Float(1000.0));
        assert_eq!(v("p"), Value::Str("10".into()));
        assert_eq!(v("q"), Value::Str("true".into()));
        assert_eq!(v("r"), Value::Str("x\n".into()));
        assert_eq!(v("s"), Value::Str("1_000".into()));
        assert_eq!(v("t"), Value::Str("5".into()));
        assert_eq!(v("u"), Value::Int(7));
        assert_eq!(v("v"), Value::Float(2.0));
        assert_eq!(v("w"), Value::Float(12345678901234567890.0));
        assert_eq!(v("x"), Value::Str("on".into()));
        assert_eq!(v("y"), Value::Int(10));
        assert_eq!(v("z"), Value::Int(5));
        assert_eq!(v("aa"), Value::Float(0.5));
        assert_eq!(v("ab"), Value::Float(1.0));
        assert_eq!(v("ac"), Value::Str(".inf".into()));
        assert_eq!(v("ad"), Value::Str("0x".into()));
        assert_eq!(v("ae"), Value::Str("1e".into()));
        assert_eq!(v("af"), Value::Null);
    }

    #[test]
    fn describe_and_types() {
        let doc = one("a: 5\nb: 1.0\nc: true\nd: x\ne: [1]\nf: {}\ng:\n");
        let d = |k: &str| doc.get(k).unwrap().describe();
        assert_eq!(d("a"), "5");
        assert_eq!(d("b"), "1.0");
        assert_eq!(d("c"), "true");
        assert_eq!(d("d"), "\"x\"");
        assert_eq!(d("e"), "a list");
        assert_eq!(d("f"), "a mapping");
        assert_eq!(d("g"), "null");
        assert_eq!(doc.get("a").unwrap().type_name(), "an integer");
        assert_eq!(doc.get("b").unwrap().type_name(), "a number");
        assert_eq!(doc.get("a").unwrap().as_f64(), Some(5.0));
        assert_eq!(doc.get("b").unwrap().as_i64(), None);
    }

    #[test]
    fn to_json() {
        let doc = one("a: [1, x, {b: null}]\n5: true\nc: .nan\n");
        assert_eq!(
            doc.to_json(),
            serde_json::json!({"a": [1, "x", {"b": null}], "5": true, "c": null})
        );
    }

    #[test]
    fn documents_and_empty_ones() {
        let docs = parse_documents(
            "t.yaml",
            "# only a comment\n---\n---\na: 1\n---\n# nothing\n---\nb: 2\n...\n",
        )
        .unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0].line, 4);
        assert_eq!(docs[1].line, 8);
        assert!(parse_documents("t.yaml", "").unwrap().is_empty());
        assert!(parse_documents("t.yaml", "# x\n").unwrap().is_empty());
    }

    #[test]
    fn aliases_and_merges() {
        let doc = one("base: &b\n  x: 1\n  y: 2\nother: *b\nm:\n  <<: *b\n  y: 3\n");
        let other = doc.get("other").unwrap();
        assert_eq!(other.line, 4);
        assert_eq!(other.get("x").unwrap().as_i64(), Some(1));
        let m = doc.get("m").unwrap();
        assert_eq!(m.get("x").unwrap().as_i64(), Some(1));
        assert_eq!(m.get("y").unwrap().as_i64(), Some(3));
        assert_eq!(m.as_map().unwrap().len(), 2);
    }

    #[test]
    fn syntax_error() {
        let errs = errors("a: [\n");
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].file, "t.yaml");
        assert_eq!(errs[0].line, 1);
        assert_eq!(
            errs[0].message,
            "invalid YAML: while parsing a node, did not find expected node content"
        );
        let errs = errors(
            "a:
  b: 1
 c: 2
",
        );
        assert_eq!(errs[0].line, 3);
        assert_eq!(errs[0].help.as_deref(), Some(PARSE_HELP));
    }

    #[test]
    fn duplicate_and_bad_keys() {
        let errs = errors("a: 1\nspec:\n  x: 1\n  x: 2\n  ? [1]\n  : 3\n");
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert_eq!(errs[0].line, 4);
        assert_eq!(errs[0].path, "spec.x");
        assert_eq!(errs[0].message, "duplicate key \"x\" (first at line 3)");
        assert_eq!(errs[1].line, 5);
        assert_eq!(
            errs[1].message,
            "a mapping key must be a plain value such as a string, got a list"
        );
    }

    #[test]
    fn hostile_input() {
        let deep = "[".repeat(10_000);
        assert!(parse_documents("t.yaml", &deep).is_err());
        let laughs = "a: &a [x, x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\nc: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\ne: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]\nf: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]\ng: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f, *f]\n";
        let errs = errors(laughs);
        assert!(errs[0].message.contains("aliases expand"), "{errs:?}");
        assert!(errors("a: &a [*a]\n").len() == 1);
        assert!(errors("a: !!int x\n")[0].message.contains("!!int"));
    }
}
