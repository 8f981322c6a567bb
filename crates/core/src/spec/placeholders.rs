//! The `{{ ... }}` placeholders of a metric query, read the way `metrics::template` renders them
//! (whitespace inside the braces optional, Go's `{{-` / `-}}` trim markers), so that `validate`
//! refuses a query that could only fail at run time: an unclosed `{{`, or a name aviary does not
//! fill in.

/// The names a query may use, besides `variables.NAME` (a metric's `templateVariables`): Flagger's
/// `name`, `namespace`, `target`, `service`, `ingress` and `interval`, and aviary's `route`.
pub const NAMES: [&str; 7] = [
    "name",
    "namespace",
    "target",
    "service",
    "ingress",
    "route",
    "interval",
];

/// One placeholder of a query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placeholder {
    /// The name inside the braces, trimmed: `namespace`, `variables.app`.
    pub name: String,
    /// The placeholder as written, braces included.
    pub text: String,
    /// Byte offset of its `{{` in the query.
    pub offset: usize,
}

impl Placeholder {
    /// The key of a `variables.KEY` placeholder.
    pub fn variable(&self) -> Option<&str> {
        self.name.strip_prefix("variables.").map(str::trim)
    }
}

/// A problem with one placeholder: its offset in the query, what is wrong, and the fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub offset: usize,
    pub message: String,
    pub help: String,
    /// A valid Go template action that aviary cannot render yet (`printf`): Flagger accepts the
    /// query, so this is a warning, and the rollout that renders it fails saying so.
    pub warning: bool,
}

/// Every placeholder of `query`, and every problem with them: an unclosed `{{` (which ends the
/// scan), an unknown name, an empty `variables.`. `variables.KEY` names are not checked against
/// any metric here; see [`Placeholder::variable`].
pub fn scan(query: &str) -> (Vec<Placeholder>, Vec<Problem>) {
    let mut found = Vec::new();
    let mut problems = Vec::new();
    let mut from = 0;
    while let Some(at) = query[from..].find("{{").map(|i| from + i) {
        let after_open = &query[at + 2..];
        let Some(close) = after_open.find("}}") else {
            let excerpt: String = query[at..]
                .lines()
                .next()
                .unwrap_or_default()
                .chars()
                .take(30)
                .collect();
            problems.push(Problem {
                warning: false,
                offset: at,
                message: format!("unclosed placeholder {excerpt:?}: this '{{{{' has no '}}}}'"),
                help: format!(
                    "close it, e.g. {{{{ namespace }}}}; the names a query may use are {}, variables.NAME",
                    NAMES.join(", ")
                ),
            });
            break;
        };
        let raw = &after_open[..close];
        let inner = match raw.strip_prefix('-') {
            Some(r) if r.starts_with(char::is_whitespace) => r,
            _ => raw,
        };
        let inner = match inner.strip_suffix('-') {
            Some(r) if r.ends_with(char::is_whitespace) => r,
            _ => inner,
        };
        let name = inner.trim().to_string();
        let text = format!("{{{{{raw}}}}}");
        let placeholder = Placeholder {
            name,
            text,
            offset: at,
        };
        match placeholder.variable() {
            Some("") => problems.push(Problem {
                warning: false,
                offset: at,
                message: format!("{} names no variable", placeholder.text),
                help: "write {{ variables.NAME }} with a key of the metric's templateVariables"
                    .to_string(),
            }),
            Some(_) => {}
            None if NAMES.contains(&placeholder.name.as_str()) => {}
            None if is_printf(&placeholder.name) => problems.push(Problem {
                warning: true,
                offset: at,
                message: format!(
                    "{} is a Go template call that aviary cannot fill in yet: Flagger renders it, a rollout with aviary fails at this query",
                    placeholder.text
                ),
                help: "write the value out in the query, with plain placeholders such as {{ namespace }}".to_string(),
            }),
            None => problems.push(Problem {
                warning: false,
                offset: at,
                message: format!("unknown placeholder {}", placeholder.text),
                help: format!(
                    "a query may use {}, and variables.NAME for the metric's templateVariables{}",
                    NAMES.join(", "),
                    did_you_mean(&placeholder.name)
                ),
            }),
        }
        found.push(placeholder);
        from = at + 2 + close + 2;
    }
    (found, problems)
}

/// `printf "FORMAT" ARG...` with each argument a name a query may use: Go's `text/template`
/// renders it (Flagger's skipper docs use it), aviary's renderer does not yet.
fn is_printf(action: &str) -> bool {
    let Some(rest) = action.strip_prefix("printf") else {
        return false;
    };
    let rest = rest.trim_start();
    if rest.len() == action.len() - "printf".len() || !rest.starts_with('"') {
        return false;
    }
    let mut escaped = false;
    let mut end = None;
    for (i, c) in rest.char_indices().skip(1) {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => {
                end = Some(i);
                break;
            }
            _ => {}
        }
    }
    let Some(end) = end else {
        return false;
    };
    rest[end + 1..]
        .split_whitespace()
        .all(|arg| NAMES.contains(&arg))
}

/// `; did you mean namespace?` for a near miss such as `.namespace` or `Namespace`.
fn did_you_mean(name: &str) -> String {
    let plain = name.trim_start_matches('.').to_ascii_lowercase();
    if NAMES.contains(&plain.as_str()) && plain != name {
        format!(" (did you mean {{{{ {plain} }}}}?)")
    } else {
        String::new()
    }
}

/// The 0-based line of `offset` within `text`.
pub fn line_of(text: &str, offset: usize) -> usize {
    text.get(..offset)
        .map_or(0, |before| before.bytes().filter(|b| *b == b'\n').count())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_names_trim_markers_and_variables_pass() {
        let (found, problems) = scan(
            "sum(rate(x{ns=\"{{ namespace }}\",a=\"{{- variables.app -}}\"}[{{interval}}])) / {{- route -}}",
        );
        assert!(problems.is_empty(), "{problems:?}");
        let names: Vec<&str> = found.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["namespace", "variables.app", "interval", "route"]);
        assert_eq!(found[1].variable(), Some("app"));
        // A trim marker needs a space after it (Go's rule); without one it is part of the name.
        let (found, problems) = scan("{{-variables.app-}}");
        assert_eq!(found[0].name, "-variables.app-");
        assert_eq!(problems.len(), 1);
    }

    #[test]
    fn unknown_unclosed_and_empty_are_problems() {
        let (_, p) = scan("up{ns=\"{{ nosuch }}\"}");
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].offset, 7);
        assert!(p[0].message.contains("unknown placeholder {{ nosuch }}"));
        let (_, p) = scan("up{ns=\"{{ .namespace }}\"}");
        assert!(p[0].help.contains("did you mean {{ namespace }}?"), "{p:?}");
        let (_, p) = scan("a\nb {{ namespace }} {{ name");
        assert_eq!(p.len(), 1);
        assert!(p[0].message.starts_with("unclosed placeholder \"{{ name\""));
        assert_eq!(line_of("a\nb {{ namespace }} {{ name", p[0].offset), 1);
        let (_, p) = scan("{{ variables. }}");
        assert!(p[0].message.contains("names no variable"));
        let (_, p) = scan("{{}}");
        assert_eq!(p.len(), 1);
    }
}
