//! A parser for Prometheus' text exposition format, version 0.0.4.
//!
//! `# HELP`, `# TYPE` and other comments are skipped (promlite does not need metadata); each
//! other non-blank line is `name[{label="value",...}] value [timestamp]`. Label values may
//! escape `\\`, `\"` and `\n` (other backslashes are kept as they are, as Prometheus does).
//! Values are Go floats (`+Inf`, `-Inf`, `NaN`, exponents). Timestamps are parsed but not used:
//! promlite stamps every sample with its scrape time. Any malformed line fails the whole scrape,
//! as in Prometheus.

use crate::storage::{Labels, METRIC_NAME};

/// One sample line: its labels (the name as `__name__`) and value.
pub type ParsedSample = (Labels, f64);

/// Parses an exposition; an error names the line.
pub fn parse_exposition(text: &str) -> Result<Vec<ParsedSample>, String> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim_matches(|c| c == ' ' || c == '\t' || c == '\r');
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let sample = parse_line(line).map_err(|e| format!("line {}: {e}: {line:?}", i + 1))?;
        out.push(sample);
    }
    Ok(out)
}

fn is_name_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_' || c == b':'
}

fn is_name_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b':'
}

fn skip_blanks(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && (b[i] == b' ' || b[i] == b'\t') {
        i += 1;
    }
    i
}

fn parse_line(line: &str) -> Result<ParsedSample, String> {
    let b = line.as_bytes();
    let mut i = 0;
    if !b.first().copied().is_some_and(is_name_start) {
        return Err("expected a metric name".to_string());
    }
    while i < b.len() && is_name_char(b[i]) {
        i += 1;
    }
    let mut labels = Labels::new();
    labels.insert(METRIC_NAME.to_string(), line[..i].to_string());
    let after_blanks = skip_blanks(b, i);
    if b.get(after_blanks) == Some(&b'{') {
        i = after_blanks + 1;
        loop {
            i = skip_blanks(b, i);
            match b.get(i) {
                Some(b'}') => {
                    i += 1;
                    break;
                }
                Some(&c) if c.is_ascii_alphabetic() || c == b'_' => {}
                _ => return Err("expected a label name or \"}\"".to_string()),
            }
            let start = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                i += 1;
            }
            let name = &line[start..i];
            i = skip_blanks(b, i);
            if b.get(i) != Some(&b'=') {
                return Err(format!("expected \"=\" after label {name}"));
            }
            i = skip_blanks(b, i + 1);
            if b.get(i) != Some(&b'"') {
                return Err(format!("expected a quoted value for label {name}"));
            }
            i += 1;
            let mut value = String::new();
            let mut chunk_start = i;
            loop {
                match b.get(i) {
                    None => return Err("unterminated label value".to_string()),
                    Some(b'"') => {
                        value.push_str(&line[chunk_start..i]);
                        i += 1;
                        break;
                    }
                    Some(b'\\') => {
                        value.push_str(&line[chunk_start..i]);
                        match b.get(i + 1) {
                            Some(b'\\') => value.push('\\'),
                            Some(b'"') => value.push('"'),
                            Some(b'n') => value.push('\n'),
                            Some(_) => {
                                // Kept verbatim; the next character is copied with the chunk.
                                value.push('\\');
                                i += 1;
                                chunk_start = i;
                                continue;
                            }
                            None => return Err("unterminated label value".to_string()),
                        }
                        i += 2;
                        chunk_start = i;
                    }
                    Some(_) => i += 1,
                }
            }
            if labels.contains_key(name) {
                return Err(format!("duplicate label {name}"));
            }
            labels.insert(name.to_string(), value);
            i = skip_blanks(b, i);
            match b.get(i) {
                Some(b',') => i += 1,
                Some(b'}') => {}
                _ => return Err("expected \",\" or \"}\" after a label".to_string()),
            }
        }
    }
    let rest = &line[i..];
    if !rest.starts_with([' ', '\t']) {
        return Err("expected a blank before the value".to_string());
    }
    let mut fields = rest.split_ascii_whitespace();
    let value = fields
        .next()
        .ok_or_else(|| "expected a value".to_string())
        .and_then(parse_go_float)?;
    if let Some(ts) = fields.next() {
        ts.parse::<i64>()
            .map_err(|_| format!("invalid timestamp {ts:?}"))?;
    }
    if fields.next().is_some() {
        return Err("unexpected text after the timestamp".to_string());
    }
    Ok((labels, value))
}

/// Go's `strconv.ParseFloat` on the forms expositions use.
fn parse_go_float(s: &str) -> Result<f64, String> {
    let bad = || format!("invalid value {s:?}");
    let unsigned = s.trim_start_matches(['+', '-']);
    if unsigned.len() + 1 < s.len() {
        return Err(bad());
    }
    if unsigned.eq_ignore_ascii_case("inf") || unsigned.eq_ignore_ascii_case("infinity") {
        return Ok(if s.starts_with('-') {
            f64::NEG_INFINITY
        } else {
            f64::INFINITY
        });
    }
    if unsigned.eq_ignore_ascii_case("nan") {
        return Ok(f64::NAN);
    }
    if !unsigned
        .bytes()
        .all(|c| c.is_ascii_digit() || matches!(c, b'.' | b'e' | b'E' | b'+' | b'-' | b'_'))
    {
        return Err(bad());
    }
    s.replace('_', "").parse::<f64>().map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::labels;

    #[test]
    fn parses_the_text_format() {
        let text = "# HELP http_requests_total The total.\n\
                    # TYPE http_requests_total counter\n\
                    http_requests_total{method=\"post\",code=\"200\"} 1027 1395066363000\n\
                    http_requests_total{method=\"post\",code=\"400\",}    3   1395066363000\n\
                    \n\
                    msdos_file_access_time_seconds{path=\"C:\\\\DIR\\\\FILE.TXT\",error=\"Cannot find file:\\n\\\"FILE.TXT\\\"\"} 1.458255915e9\n\
                    metric_without_timestamp_and_labels 12.47\n\
                    something_weird{problem=\"division by zero\"} +Inf -3982045\n\
                    neg -Inf\n\
                    nan NaN\n\
                    h_bucket{le=\"0.05\"} 24054\n\
                    h_bucket{le=\"+Inf\"} 144320\n\
                    h_sum 53423\n\
                    h_count 144320\n\
                    spaced { a = \"1\" , b=\"x\\\\y\\q\" } 2\r\n";
        let samples = parse_exposition(text).unwrap();
        assert_eq!(samples.len(), 12);
        assert_eq!(
            samples[0],
            (
                labels([
                    ("__name__", "http_requests_total"),
                    ("code", "200"),
                    ("method", "post")
                ]),
                1027.0
            )
        );
        assert_eq!(samples[1].1, 3.0);
        assert_eq!(samples[2].0["path"], "C:\\DIR\\FILE.TXT");
        assert_eq!(samples[2].0["error"], "Cannot find file:\n\"FILE.TXT\"");
        assert_eq!(samples[2].1, 1.458255915e9);
        assert_eq!(samples[4].1, f64::INFINITY);
        assert_eq!(samples[5].1, f64::NEG_INFINITY);
        assert!(samples[6].1.is_nan());
        assert_eq!(samples[7].0["le"], "0.05");
        assert_eq!(
            samples[11].0,
            labels([("__name__", "spaced"), ("a", "1"), ("b", "x\\y\\q")])
        );
    }

    #[test]
    fn malformed_lines_fail_the_scrape() {
        for bad in [
            "x{a=\"1\" 1",
            "x{a=1} 1",
            "x 1 2 3",
            "x abc",
            "x",
            "{a=\"1\"} 1",
            "x{a=\"1\",a=\"2\"} 1",
            "x{a=\"1} 1",
            "x 1 1.5",
            "x\"y\" 1",
        ] {
            assert!(parse_exposition(bad).is_err(), "{bad:?}");
        }
        let e = parse_exposition("ok 1\nbad line here\n").unwrap_err();
        assert!(e.starts_with("line 2:"), "{e}");
    }
}
