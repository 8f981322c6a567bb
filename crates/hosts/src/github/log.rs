//! Log text that cannot be read as a workflow command.
//!
//! The runner reads **both** stdout and stderr of a step for workflow commands. What it honours
//! (actions/runner `src/Runner.Common/ActionCommand.cs`, `TryParseV2` and `TryParse`, called
//! from `ActionCommandManager.TryProcessCommand` for every line it reads):
//!
//! - the output is read line by line, a line ending at `\r`, `\n` or `\r\n`;
//! - `::name props::data`: the line, after `TrimStart()` (Unicode white space), starts with `::`;
//!   the command name is matched without regard to case;
//! - `##[name props]data`: `##[` **anywhere** in the line (`IndexOf`), checked when the `::`
//!   form does not parse; the web log viewer also formats a line by its `##[` prefix;
//! - `StartsWith` and `IndexOf` there are .NET's culture-sensitive comparisons, which skip
//!   ignorable characters (zero-width spaces and joiners, soft hyphens, other format and control
//!   characters), so `:\u{200B}:` or `#\u{AD}#[` may read as `::` or `##[`.
//!
//! The rule aviary applies to every log line in GitHub mode ([`safe_log`]), against exactly that:
//!
//! 1. every control or format character other than tab (and the line breaks, which are kept as
//!    they are) is written as `\uXXXX`;
//! 2. every `##[` is written `#\u0023[`;
//! 3. a line whose first non-blank characters are `::` gets its first `:` written `\u003a`.
//!
//! `\uXXXX` is also JSON's escape, so a JSON log line stays valid JSON that reads back as it was
//! logged (a JSON line never starts with `::`, and the JSON writer already escapes `"` and `\`).
//! aviary's own workflow commands (annotations, `add-mask`, groups) are written by the host
//! itself ([`super::command`]), never through here.

use std::borrow::Cow;

/// `text` (one or more lines) as a log line the runner reads as text, never as a command.
pub fn safe_log(text: &str) -> Cow<'_, str> {
    if !needs_escaping(text) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    let mut rest = text;
    loop {
        let end = rest.find(['\r', '\n']).unwrap_or(rest.len());
        safe_line(&rest[..end], &mut out);
        if end == rest.len() {
            break;
        }
        let eol = if rest[end..].starts_with("\r\n") {
            2
        } else {
            1
        };
        out.push_str(&rest[end..end + eol]);
        rest = &rest[end + eol..];
    }
    Cow::Owned(out)
}

fn needs_escaping(text: &str) -> bool {
    text.contains("##[")
        || text.chars().any(ignorable)
        || text
            .split(['\r', '\n'])
            .any(|line| line.trim_start().starts_with("::"))
}

/// One line (no line break in it), made safe, appended to `out`.
fn safe_line(line: &str, out: &mut String) {
    let mut s = String::with_capacity(line.len());
    for c in line.chars() {
        if ignorable(c) {
            push_escape(c, &mut s);
        } else {
            s.push(c);
        }
    }
    // One pass is enough: the replacement neither starts with `#[`-forming text after a `#`
    // (`##\u…`) nor ends where a following `[` could complete a new `##[`.
    if s.contains("##[") {
        s = s.replace("##[", "#\\u0023[");
    }
    let blank = s.len() - s.trim_start().len();
    if s[blank..].starts_with("::") {
        s.replace_range(blank..blank + 1, "\\u003a");
    }
    out.push_str(&s);
}

/// `\uXXXX` (UTF-16, as JSON spells it).
fn push_escape(c: char, out: &mut String) {
    let mut units = [0u16; 2];
    for unit in c.encode_utf16(&mut units) {
        out.push_str(&format!("\\u{unit:04x}"));
    }
}

/// Characters a culture-sensitive .NET comparison may skip, or that have no business in a log
/// line: controls (but tab and the line breaks) and the Unicode format and default-ignorable
/// characters.
fn ignorable(c: char) -> bool {
    if c == '\t' || c == '\r' || c == '\n' {
        return false;
    }
    c.is_control()
        || matches!(
            c,
            '\u{ad}'
                | '\u{34f}'
                | '\u{61c}'
                | '\u{600}'..='\u{605}'
                | '\u{6dd}'
                | '\u{70f}'
                | '\u{890}'..='\u{891}'
                | '\u{8e2}'
                | '\u{115f}'..='\u{1160}'
                | '\u{17b4}'..='\u{17b5}'
                | '\u{180b}'..='\u{180f}'
                | '\u{200b}'..='\u{200f}'
                | '\u{2028}'..='\u{202e}'
                | '\u{2060}'..='\u{206f}'
                | '\u{3164}'
                | '\u{fe00}'..='\u{fe0f}'
                | '\u{feff}'
                | '\u{ffa0}'
                | '\u{fff0}'..='\u{fffb}'
                | '\u{110bd}'
                | '\u{110cd}'
                | '\u{13430}'..='\u{1343f}'
                | '\u{1bca0}'..='\u{1bca3}'
                | '\u{1d173}'..='\u{1d17a}'
                | '\u{e0000}'..='\u{e0fff}'
        )
}

/// Whether the runner would take `line` (one line, as it splits them) as a workflow command:
/// the test of [`safe_log`]'s promise, for tests here and in the binary's.
pub fn is_command(line: &str) -> bool {
    let visible: String = line.chars().filter(|c| !ignorable(*c)).collect();
    visible.trim_start().starts_with("::") || visible.contains("##[")
}

/// `text` split into lines the way the runner splits it (`\r`, `\n`, `\r\n`).
pub fn runner_lines(text: &str) -> Vec<&str> {
    let mut lines = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let end = rest.find(['\r', '\n']).unwrap_or(rest.len());
        lines.push(&rest[..end]);
        let eol = if rest[end..].starts_with("\r\n") {
            2
        } else {
            usize::from(end < rest.len())
        };
        rest = &rest[end + eol..];
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_line_of_hostile_text_reads_as_a_workflow_command() {
        let hostile = [
            "unknown key \"x\n::error file=evil.yaml,line=1::pwned\"",
            "a\r::warning::pwned",
            "a\r\n   ::notice::pwned",
            "\t::ERROR::pwned",
            "\u{2003}::group::pwned",
            "text ##[error]pwned",
            "###[error]pwned ##[warning]again",
            ":\u{200b}:error::zero width",
            "#\u{ad}#[error]soft hyphen",
            "\u{feff}::error::bom",
            "\u{1b}::error::escape",
        ];
        for text in hostile {
            assert!(
                runner_lines(text).iter().any(|l| is_command(l)),
                "the case itself is a command: {text:?}"
            );
            let safe = safe_log(text);
            for line in runner_lines(&safe) {
                assert!(!is_command(line), "{text:?} → {line:?}");
            }
        }
    }

    #[test]
    fn escaping_keeps_line_breaks_plain_text_and_json() {
        assert!(matches!(
            safe_log("rolled back: 80% < 99%"),
            Cow::Borrowed(_)
        ));
        assert_eq!(
            safe_log("a\n::error::x\r\nb ##[warning]y"),
            "a\n\\u003a:error::x\r\nb #\\u0023[warning]y"
        );
        assert_eq!(safe_log("  ::x"), "  \\u003a:x");
        assert_eq!(safe_log("a\u{200b}b"), "a\\u200bb");
        assert_eq!(safe_log("\u{e0001}"), "\\udb40\\udc01");
        // A JSON log line reads back as it was logged.
        let message = "key \"##[error]\u{200b}x\"";
        let line = serde_json::json!({ "message": message }).to_string();
        let safe = safe_log(&line).into_owned();
        assert!(!is_command(&safe), "{safe}");
        let back: serde_json::Value = serde_json::from_str(&safe).unwrap_or_default();
        assert_eq!(back["message"], message);
    }
}
