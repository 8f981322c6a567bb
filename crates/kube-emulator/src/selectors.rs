//! Label and field selectors (the `labels.Parse` / `fields.ParseSelector` syntax).

use serde_json::Value;

#[derive(Debug, Clone, PartialEq)]
enum LabelOp {
    In(Vec<String>),
    NotIn(Vec<String>),
    Exists,
    NotExists,
    Gt(i64),
    Lt(i64),
}

#[derive(Debug, Clone, PartialEq)]
struct Requirement {
    key: String,
    op: LabelOp,
}

/// A parsed label selector: all requirements must hold.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct LabelSelector {
    reqs: Vec<Requirement>,
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Eq,
    DoubleEq,
    NotEq,
    Bang,
    Gt,
    Lt,
    Comma,
    Open,
    Close,
}

fn tokenize(s: &str) -> Result<Vec<Tok>, String> {
    let chars: Vec<char> = s.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            ' ' | '\t' | '\n' => i += 1,
            ',' => {
                out.push(Tok::Comma);
                i += 1
            }
            '(' => {
                out.push(Tok::Open);
                i += 1
            }
            ')' => {
                out.push(Tok::Close);
                i += 1
            }
            '>' => {
                out.push(Tok::Gt);
                i += 1
            }
            '<' => {
                out.push(Tok::Lt);
                i += 1
            }
            '=' => {
                if chars.get(i + 1) == Some(&'=') {
                    out.push(Tok::DoubleEq);
                    i += 2
                } else {
                    out.push(Tok::Eq);
                    i += 1
                }
            }
            '!' => {
                if chars.get(i + 1) == Some(&'=') {
                    out.push(Tok::NotEq);
                    i += 2
                } else {
                    out.push(Tok::Bang);
                    i += 1
                }
            }
            _ => {
                let start = i;
                while i < chars.len() && !" \t\n,()<>=!".contains(chars[i]) {
                    i += 1;
                }
                out.push(Tok::Ident(chars[start..i].iter().collect()));
                if start == i {
                    return Err(format!("unexpected character {c:?}"));
                }
            }
        }
    }
    Ok(out)
}

pub(crate) fn valid_label_key(k: &str) -> bool {
    let (prefix, name) = match k.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, k),
    };
    if let Some(p) = prefix {
        if p.is_empty() || p.len() > 253 || !is_dns1123_subdomain(p) {
            return false;
        }
    }
    valid_label_value(name) && !name.is_empty()
}

pub(crate) fn valid_label_value(v: &str) -> bool {
    if v.is_empty() {
        return true;
    }
    if v.len() > 63 {
        return false;
    }
    let bytes = v.as_bytes();
    let alnum = |b: u8| b.is_ascii_alphanumeric();
    alnum(bytes[0])
        && alnum(bytes[bytes.len() - 1])
        && bytes
            .iter()
            .all(|b| alnum(*b) || *b == b'-' || *b == b'_' || *b == b'.')
}

/// RFC 1123 subdomain (lowercase), as `metadata.name` of most types must be.
pub(crate) fn is_dns1123_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns1123_label_chars)
}

/// RFC 1123 label (lowercase, at most 63 characters), as Service and Namespace names must be.
pub(crate) fn is_dns1123_label(s: &str) -> bool {
    s.len() <= 63 && is_dns1123_label_chars(s)
}

fn is_dns1123_label_chars(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

impl LabelSelector {
    pub(crate) fn parse(s: &str) -> Result<Self, String> {
        let toks = tokenize(s)?;
        let mut reqs = Vec::new();
        let mut i = 0;
        while i < toks.len() {
            let (req, next) = parse_requirement(&toks, i)?;
            if !valid_label_key(&req.key) {
                return Err(format!(
                    "unable to parse requirement: invalid label key {:?}",
                    req.key
                ));
            }
            reqs.push(req);
            i = next;
            match toks.get(i) {
                None => break,
                Some(Tok::Comma) => {
                    i += 1;
                    if i >= toks.len() {
                        return Err("found '', expected: identifier after ','".into());
                    }
                }
                Some(t) => return Err(format!("found {t:?}, expected: ',' or 'end of string'")),
            }
        }
        Ok(LabelSelector { reqs })
    }

    /// Builds the selector of a `metav1.LabelSelector` object (`matchLabels`, `matchExpressions`).
    pub(crate) fn from_object(sel: &Value) -> Result<Self, String> {
        let mut reqs = Vec::new();
        if let Some(m) = sel.get("matchLabels").and_then(Value::as_object) {
            for (k, v) in m {
                let v = v
                    .as_str()
                    .ok_or_else(|| format!("matchLabels value of {k} is not a string"))?;
                reqs.push(Requirement {
                    key: k.clone(),
                    op: LabelOp::In(vec![v.to_string()]),
                });
            }
        }
        if let Some(exprs) = sel.get("matchExpressions").and_then(Value::as_array) {
            for e in exprs {
                let key = e
                    .get("key")
                    .and_then(Value::as_str)
                    .ok_or("matchExpressions entry without key")?
                    .to_string();
                let values: Vec<String> = e
                    .get("values")
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .filter_map(|v| v.as_str().map(String::from))
                            .collect()
                    })
                    .unwrap_or_default();
                let op = match e.get("operator").and_then(Value::as_str) {
                    Some("In") => LabelOp::In(values),
                    Some("NotIn") => LabelOp::NotIn(values),
                    Some("Exists") => LabelOp::Exists,
                    Some("DoesNotExist") => LabelOp::NotExists,
                    other => {
                        return Err(format!("{other:?} is not a valid label selector operator"))
                    }
                };
                reqs.push(Requirement { key, op });
            }
        }
        Ok(LabelSelector { reqs })
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.reqs.is_empty()
    }

    /// Whether labels (a JSON object or null) satisfy the selector.
    pub(crate) fn matches(&self, labels: Option<&Value>) -> bool {
        let get = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
        self.reqs.iter().all(|r| match &r.op {
            LabelOp::In(vs) => get(&r.key).is_some_and(|v| vs.iter().any(|x| x == v)),
            LabelOp::NotIn(vs) => get(&r.key).is_none_or(|v| !vs.iter().any(|x| x == v)),
            LabelOp::Exists => get(&r.key).is_some(),
            LabelOp::NotExists => get(&r.key).is_none(),
            LabelOp::Gt(n) => get(&r.key)
                .and_then(|v| v.parse::<i64>().ok())
                .is_some_and(|v| v > *n),
            LabelOp::Lt(n) => get(&r.key)
                .and_then(|v| v.parse::<i64>().ok())
                .is_some_and(|v| v < *n),
        })
    }
}

fn parse_requirement(toks: &[Tok], mut i: usize) -> Result<(Requirement, usize), String> {
    if toks.get(i) == Some(&Tok::Bang) {
        i += 1;
        return match toks.get(i) {
            Some(Tok::Ident(k)) => Ok((
                Requirement {
                    key: k.clone(),
                    op: LabelOp::NotExists,
                },
                i + 1,
            )),
            other => Err(format!(
                "unable to parse requirement: found {other:?}, expected: identifier"
            )),
        };
    }
    let key = match toks.get(i) {
        Some(Tok::Ident(k)) => k.clone(),
        other => {
            return Err(format!(
                "unable to parse requirement: found {other:?}, expected: identifier"
            ))
        }
    };
    i += 1;
    let single_value = |i: usize| -> Result<(String, usize), String> {
        match toks.get(i) {
            Some(Tok::Ident(v)) => {
                if !valid_label_value(v) {
                    return Err(format!("invalid label value: {v:?}"));
                }
                Ok((v.clone(), i + 1))
            }
            // `key=` selects an empty value.
            None | Some(Tok::Comma) => Ok((String::new(), i)),
            Some(t) => Err(format!("found {t:?}, expected: identifier")),
        }
    };
    match toks.get(i) {
        None | Some(Tok::Comma) => Ok((
            Requirement {
                key,
                op: LabelOp::Exists,
            },
            i,
        )),
        Some(Tok::Eq) | Some(Tok::DoubleEq) => {
            let (v, n) = single_value(i + 1)?;
            Ok((
                Requirement {
                    key,
                    op: LabelOp::In(vec![v]),
                },
                n,
            ))
        }
        Some(Tok::NotEq) => {
            let (v, n) = single_value(i + 1)?;
            Ok((
                Requirement {
                    key,
                    op: LabelOp::NotIn(vec![v]),
                },
                n,
            ))
        }
        Some(Tok::Gt) | Some(Tok::Lt) => {
            let gt = toks.get(i) == Some(&Tok::Gt);
            let (v, n) = single_value(i + 1)?;
            let num: i64 = v.parse().map_err(|_| {
                format!("for 'Gt', 'Lt' operators, the value must be an integer: {v:?}")
            })?;
            let op = if gt {
                LabelOp::Gt(num)
            } else {
                LabelOp::Lt(num)
            };
            Ok((Requirement { key, op }, n))
        }
        Some(Tok::Ident(word)) if word == "in" || word == "notin" => {
            let notin = word == "notin";
            i += 1;
            if toks.get(i) != Some(&Tok::Open) {
                return Err("found end of set, expected: '('".into());
            }
            i += 1;
            let mut values = Vec::new();
            loop {
                match toks.get(i) {
                    Some(Tok::Ident(v)) => {
                        if !valid_label_value(v) {
                            return Err(format!("invalid label value: {v:?}"));
                        }
                        values.push(v.clone());
                        i += 1;
                    }
                    Some(Tok::Close) => {
                        i += 1;
                        break;
                    }
                    Some(Tok::Comma) => {
                        // an empty value between commas, e.g. `in (a,,b)`
                        values.push(String::new());
                        i += 1;
                        continue;
                    }
                    other => {
                        return Err(format!("found {other:?}, expected: ',', ')' or identifier"))
                    }
                }
                match toks.get(i) {
                    Some(Tok::Comma) => i += 1,
                    Some(Tok::Close) => {
                        i += 1;
                        break;
                    }
                    other => return Err(format!("found {other:?}, expected: ',' or ')'")),
                }
            }
            if values.is_empty() {
                return Err("for 'in', 'notin' operators, values set can't be empty".into());
            }
            let op = if notin {
                LabelOp::NotIn(values)
            } else {
                LabelOp::In(values)
            };
            Ok((Requirement { key, op }, i))
        }
        Some(t) => Err(format!(
            "unable to parse requirement: found {t:?}, expected: in, notin, =, ==, !=, gt, lt"
        )),
    }
}

/// A parsed field selector: `field=value`, `field==value`, `field!=value`, comma-separated.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct FieldSelector {
    terms: Vec<(String, bool, String)>,
}

/// The field selector labels a type supports beyond `metadata.name` and `metadata.namespace`.
fn supported_fields(group: &str, plural: &str) -> &'static [&'static str] {
    match (group, plural) {
        ("", "pods") => &[
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.nominatedNodeName",
        ],
        ("", "events") => &[
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
        ],
        ("events.k8s.io", "events") => &[
            "regarding.kind",
            "regarding.namespace",
            "regarding.name",
            "regarding.uid",
            "regarding.apiVersion",
            "regarding.resourceVersion",
            "regarding.fieldPath",
            "reason",
            "reportingController",
            "type",
        ],
        ("", "secrets") => &["type"],
        ("", "namespaces") => &["status.phase"],
        ("apps", "replicasets") => &["status.replicas"],
        _ => &[],
    }
}

impl FieldSelector {
    pub(crate) fn parse(s: &str, group: &str, plural: &str, builtin: bool) -> Result<Self, String> {
        let mut terms = Vec::new();
        for part in split_unescaped_commas(s) {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            let (field, neg, value) = if let Some((f, v)) = part.split_once("!=") {
                (f, true, v)
            } else if let Some((f, v)) = part.split_once("==") {
                (f, false, v)
            } else if let Some((f, v)) = part.split_once('=') {
                (f, false, v)
            } else {
                return Err(format!(
                    "invalid selector: '{s}'; can't understand '{part}'"
                ));
            };
            let field = field.trim();
            let known = field == "metadata.name"
                || field == "metadata.namespace"
                || supported_fields(group, plural).contains(&field);
            if !known {
                return Err(if builtin {
                    format!("field label not supported: {field}")
                } else {
                    format!(
                        "\"{field}\" is not a known field selector: only \"metadata.name\", \"metadata.namespace\""
                    )
                });
            }
            // Events of `events.k8s.io` are stored in the core form: select on its fields.
            let field = if group == "events.k8s.io" && plural == "events" {
                crate::events::core_field(field)
            } else {
                field.to_string()
            };
            terms.push((field, neg, unescape(value.trim())));
        }
        Ok(FieldSelector { terms })
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }

    pub(crate) fn matches(&self, obj: &Value) -> bool {
        self.terms.iter().all(|(field, neg, value)| {
            let mut cur = Some(obj);
            for seg in field.split('.') {
                cur = cur.and_then(|c| c.get(seg));
            }
            let actual = match cur {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Null) | None => String::new(),
                Some(other) => other.to_string(),
            };
            (actual == *value) != *neg
        })
    }
}

fn split_unescaped_commas(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut escaped = false;
    for c in s.chars() {
        if escaped {
            cur.push('\\');
            cur.push(c);
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == ',' {
            out.push(std::mem::take(&mut cur));
        } else {
            cur.push(c);
        }
    }
    out.push(cur);
    out
}

fn unescape(s: &str) -> String {
    let mut out = String::new();
    let mut escaped = false;
    for c in s.chars() {
        if escaped {
            out.push(c);
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sel(s: &str) -> LabelSelector {
        match LabelSelector::parse(s) {
            Ok(s) => s,
            Err(e) => panic!("{s}: {e}"),
        }
    }

    #[test]
    fn label_selector_operators() {
        let labels = json!({"app": "podinfo", "tier": "web", "n": "5"});
        let l = Some(&labels);
        assert!(sel("app=podinfo").matches(l));
        assert!(sel("app==podinfo,tier=web").matches(l));
        assert!(!sel("app!=podinfo").matches(l));
        assert!(sel("app in (a, podinfo)").matches(l));
        assert!(!sel("app notin (podinfo)").matches(l));
        assert!(sel("tier").matches(l));
        assert!(sel("!missing").matches(l));
        assert!(!sel("!app").matches(l));
        assert!(sel("n>4,n<6").matches(l));
        assert!(sel("missing notin (x)").matches(l));
        assert!(!sel("missing in (x)").matches(l));
        assert!(sel("").matches(l));
        assert!(sel("example.com/role!=x").matches(l));
    }

    #[test]
    fn label_selector_errors() {
        for bad in ["app in", "app in ()", "=x", "app=(x)", "app=a,", "a b"] {
            assert!(LabelSelector::parse(bad).is_err(), "{bad} should not parse");
        }
    }

    #[test]
    fn selector_object() {
        let s = LabelSelector::from_object(&json!({
            "matchLabels": {"app": "a"},
            "matchExpressions": [{"key": "track", "operator": "NotIn", "values": ["canary"]}]
        }));
        let s = match s {
            Ok(s) => s,
            Err(e) => panic!("{e}"),
        };
        assert!(s.matches(Some(&json!({"app": "a"}))));
        assert!(!s.matches(Some(&json!({"app": "a", "track": "canary"}))));
    }

    #[test]
    fn field_selectors() {
        let obj =
            json!({"metadata": {"name": "a", "namespace": "ns"}, "status": {"phase": "Running"}});
        let fs = |s: &str| FieldSelector::parse(s, "", "pods", true);
        assert!(fs("metadata.name=a")
            .map(|f| f.matches(&obj))
            .unwrap_or(false));
        assert!(fs("metadata.name!=a")
            .map(|f| !f.matches(&obj))
            .unwrap_or(false));
        assert!(fs("metadata.namespace==ns,status.phase=Running")
            .map(|f| f.matches(&obj))
            .unwrap_or(false));
        assert_eq!(
            fs("spec.foo=1").err().as_deref(),
            Some("field label not supported: spec.foo")
        );
        assert!(FieldSelector::parse("spec.x=1", "flagger.app", "canaries", false).is_err());
    }

    #[test]
    fn names() {
        assert!(is_dns1123_subdomain("podinfo-primary.v1"));
        assert!(!is_dns1123_subdomain("Podinfo"));
        assert!(!is_dns1123_subdomain("-a"));
        assert!(!is_dns1123_subdomain(""));
        assert!(is_dns1123_label("podinfo"));
        assert!(!is_dns1123_label("a.b"));
    }
}
