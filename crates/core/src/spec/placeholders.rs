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
                offset: at,
                message: format!("{} names no variable", placeholder.text),
                help: "write {{ variables.NAME }} with a key of the metric's templateVariables"
                    .to_string(),
            }),
            Some(_) => {}
            None if NAMES.contains(&placeholder.name.as_str()) => {}
            None if placeholder.name.starts_with("printf") => {
                if let Err(e) = Printf::parse(&placeholder.name) {
                    problems.push(Problem {
                                offset: at,
                        message: format!("{}: {e}", placeholder.text),
                        help: format!(
                            "write printf \"FORMAT\" with %s for each argument, the arguments among {}, variables.NAME",
                            NAMES.join(", ")
                        ),
                    });
                }
            }
            None => problems.push(Problem {
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

/// A `{{ printf "FORMAT" ARG... }}` action, as Go's `text/template` runs it in Flagger's queries
/// (its skipper tutorial builds a route name this way): each argument a name a query may use or
/// `variables.NAME`, the format's verbs `%s`, `%v` (the value), `%q` (the value double-quoted,
/// Go-style) and `%%`. Anything else is refused when the spec is read, not rendered wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Printf {
    /// The format, its Go string escapes resolved.
    pub format: String,
    pub args: Vec<String>,
}

/// One piece of a [`Printf`] format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece<'a> {
    /// Format text, as written.
    Text(&'a str),
    /// The value of the argument at this index (`%s`, `%v`).
    Value(usize),
    /// The value of the argument at this index, double-quoted (`%q`).
    Quoted(usize),
}

impl Printf {
    /// Parses the inside of the braces; an error says what is wrong.
    pub fn parse(action: &str) -> Result<Printf, String> {
        let rest = action
            .strip_prefix("printf")
            .filter(|r| r.starts_with(char::is_whitespace))
            .map(str::trim_start)
            .ok_or("printf needs a format and arguments")?;
        let body = rest
            .strip_prefix('"')
            .ok_or("the format must be a double-quoted string")?;
        let mut format = String::new();
        let mut chars = body.char_indices();
        let mut end = None;
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => {
                    end = Some(i);
                    break;
                }
                '\\' => match chars.next().map(|(_, e)| e) {
                    Some('n') => format.push('\n'),
                    Some('t') => format.push('\t'),
                    Some(e @ ('\\' | '"')) => format.push(e),
                    other => {
                        return Err(format!(
                            "the escape \\{} in the format is not one aviary reads (\\\\, \\\", \\n, \\t)",
                            other.map(String::from).unwrap_or_default()
                        ))
                    }
                },
                c => format.push(c),
            }
        }
        let end = end.ok_or("the format's string is not closed")?;
        let args: Vec<String> = body[end + 1..]
            .split_whitespace()
            .map(str::to_string)
            .collect();
        for arg in &args {
            let variable = arg
                .strip_prefix("variables.")
                .is_some_and(|k| !k.is_empty());
            if !variable && !NAMES.contains(&arg.as_str()) {
                return Err(format!("unknown argument {arg}"));
            }
        }
        let printf = Printf { format, args };
        let pieces = printf.pieces()?;
        let used = pieces
            .iter()
            .filter(|p| matches!(p, Piece::Value(_) | Piece::Quoted(_)))
            .count();
        if used != printf.args.len() {
            return Err(format!(
                "the format has {used} verb(s) for {} argument(s)",
                printf.args.len()
            ));
        }
        Ok(printf)
    }

    /// The format split into text and verbs, in order; an error names a verb aviary does not
    /// render.
    pub fn pieces(&self) -> Result<Vec<Piece<'_>>, String> {
        let mut out = Vec::new();
        let mut next = 0;
        let mut rest = self.format.as_str();
        while let Some(at) = rest.find('%') {
            if at > 0 {
                out.push(Piece::Text(&rest[..at]));
            }
            let verb = rest[at + 1..].chars().next();
            match verb {
                Some('%') => out.push(Piece::Text("%")),
                Some('s' | 'v') => {
                    out.push(Piece::Value(next));
                    next += 1;
                }
                Some('q') => {
                    out.push(Piece::Quoted(next));
                    next += 1;
                }
                other => {
                    return Err(format!(
                        "the verb %{} is not one aviary renders (%s, %v, %q, %%)",
                        other.map(String::from).unwrap_or_default()
                    ))
                }
            }
            rest = &rest[at + 1 + verb.map_or(0, char::len_utf8)..];
        }
        if !rest.is_empty() {
            out.push(Piece::Text(rest));
        }
        Ok(out)
    }
}

/// `value` double-quoted the way Go's `%q` prints a string (`strconv.Quote`).
pub fn go_quote(value: &str) -> String {
    let mut out = String::from("\"");
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
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
    fn printf_is_read_and_its_mistakes_are_problems() {
        let (_, p) = scan(
            r#"route=~"{{ printf "kube(ew)?_%s__%s_canary__.*__%s_canary(_[0-9]+)?" namespace ingress service }}""#,
        );
        assert!(p.is_empty(), "{p:?}");
        let f = Printf::parse(r#"printf "%s-%q 100%% \"x\"" variables.app name"#).unwrap();
        assert_eq!(f.format, "%s-%q 100%% \"x\"");
        assert_eq!(f.args, ["variables.app", "name"]);
        assert_eq!(
            f.pieces().unwrap(),
            [
                Piece::Value(0),
                Piece::Text("-"),
                Piece::Quoted(1),
                Piece::Text(" 100"),
                Piece::Text("%"),
                Piece::Text(" \"x\""),
            ]
        );
        for (action, says) in [
            (r#"printf "%s" nosuch"#, "unknown argument nosuch"),
            (r#"printf "%s %s" name"#, "2 verb(s) for 1 argument(s)"),
            (
                r#"printf "%d" name"#,
                "the verb %d is not one aviary renders",
            ),
            (r#"printf "%s name"#, "not closed"),
            (r#"printf name"#, "double-quoted"),
        ] {
            let (_, p) = scan(&format!("{{{{ {action} }}}}"));
            assert_eq!(p.len(), 1, "{action}: {p:?}");
            assert!(p[0].message.contains(says), "{action}: {}", p[0].message);
        }
        assert_eq!(go_quote("a\"b\\c\n"), r#""a\"b\\c\n""#);
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
