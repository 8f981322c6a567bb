//! Go's duration syntax (`time.ParseDuration` and `Duration.String`), which Flagger uses for every
//! interval and timeout in a Canary.

use std::time::Duration;

const NANOS_PER_SEC: u128 = 1_000_000_000;
/// Go durations are an `int64` of nanoseconds; anything longer does not exist there.
const MAX_NANOS: u128 = i64::MAX as u128;
/// Fraction digits beyond this are ignored (they are far below a nanosecond for every unit).
const MAX_FRACTION_DIGITS: u32 = 20;

fn expected(s: &str) -> String {
    format!("expected a duration such as 30s or 1m, got {}", quote(s))
}

fn quote(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| format!("\"{s}\""))
}

fn unit_nanos(unit: &str) -> Option<u128> {
    Some(match unit {
        "ns" => 1,
        "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
        "ms" => 1_000_000,
        "s" => NANOS_PER_SEC,
        "m" => 60 * NANOS_PER_SEC,
        "h" => 3_600 * NANOS_PER_SEC,
        _ => return None,
    })
}

/// Parses a duration the way Go's `time.ParseDuration` does (`300ms`, `1.5h`, `1m30s`, `2h45m`),
/// except that negative durations are refused. A bare number is refused too, except `0`.
pub fn parse_go_duration(s: &str) -> Result<Duration, String> {
    let body = match s.strip_prefix('+') {
        Some(rest) => rest,
        None => s,
    };
    if let Some(rest) = s.strip_prefix('-') {
        if rest == "0" {
            return Ok(Duration::ZERO);
        }
        return Err(format!(
            "{} (negative durations are not allowed)",
            expected(s)
        ));
    }
    if body == "0" {
        return Ok(Duration::ZERO);
    }
    if body.is_empty() {
        return Err(expected(s));
    }

    let bytes = body.as_bytes();
    let mut i = 0;
    let mut total: u128 = 0;
    while i < bytes.len() {
        // Integer part.
        let int_start = i;
        let mut int_part: u128 = 0;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            int_part = int_part
                .saturating_mul(10)
                .saturating_add(u128::from(bytes[i] - b'0'));
            i += 1;
        }
        let int_digits = i - int_start;
        // Fraction.
        let mut frac: u128 = 0;
        let mut frac_scale: u128 = 1;
        let mut frac_digits = 0usize;
        if i < bytes.len() && bytes[i] == b'.' {
            i += 1;
            let mut kept = 0u32;
            while i < bytes.len() && bytes[i].is_ascii_digit() {
                if kept < MAX_FRACTION_DIGITS {
                    frac = frac * 10 + u128::from(bytes[i] - b'0');
                    frac_scale *= 10;
                    kept += 1;
                }
                frac_digits += 1;
                i += 1;
            }
        }
        if int_digits == 0 && frac_digits == 0 {
            return Err(expected(s));
        }
        // Unit: everything up to the next digit or '.'.
        let unit_start = i;
        while i < bytes.len() && bytes[i] != b'.' && !bytes[i].is_ascii_digit() {
            i += 1;
        }
        let unit = body.get(unit_start..i).unwrap_or("");
        if unit.is_empty() {
            return Err(expected(s));
        }
        let Some(per) = unit_nanos(unit) else {
            return Err(format!(
                "{} (unknown unit {}; use ns, us, ms, s, m or h)",
                expected(s),
                quote(unit)
            ));
        };
        if int_part > MAX_NANOS {
            return Err(format!("duration {} is too long", quote(s)));
        }
        let mut v = int_part.saturating_mul(per);
        v = v.saturating_add(frac.saturating_mul(per) / frac_scale);
        total = total.saturating_add(v);
        if total > MAX_NANOS {
            return Err(format!("duration {} is too long", quote(s)));
        }
    }
    let secs = u64::try_from(total / NANOS_PER_SEC).unwrap_or(u64::MAX);
    // The remainder is below 1e9 and so always fits.
    let nanos = u32::try_from(total % NANOS_PER_SEC).unwrap_or(0);
    Ok(Duration::new(secs, nanos))
}

/// `int.frac` with the fraction's trailing zeros (and a bare dot) removed; `frac` has `digits` digits.
fn with_fraction(int: u128, frac: u128, digits: usize) -> String {
    if frac == 0 {
        return int.to_string();
    }
    let f = format!("{frac:0digits$}");
    format!("{int}.{}", f.trim_end_matches('0'))
}

/// Formats below one second: `500ns`, `1.5µs`, `300ms`.
fn format_sub_second(nanos: u128) -> String {
    if nanos < 1_000 {
        format!("{nanos}ns")
    } else if nanos < 1_000_000 {
        format!("{}\u{b5}s", with_fraction(nanos / 1_000, nanos % 1_000, 3))
    } else {
        format!(
            "{}ms",
            with_fraction(nanos / 1_000_000, nanos % 1_000_000, 6)
        )
    }
}

/// Formats like Go's `Duration.String()`: `1m0s`, `500ms`, `1.5s`, `1h0m0s`, `0s`.
pub fn format_go_duration(d: Duration) -> String {
    let nanos = d.as_nanos();
    if nanos == 0 {
        return "0s".to_string();
    }
    if nanos < NANOS_PER_SEC {
        return format_sub_second(nanos);
    }
    let secs = nanos / NANOS_PER_SEC;
    let frac = nanos % NANOS_PER_SEC;
    let h = secs / 3600;
    let m = (secs / 60) % 60;
    let s = with_fraction(secs % 60, frac, 9);
    if h > 0 {
        format!("{h}h{m}m{s}s")
    } else if m > 0 {
        format!("{m}m{s}s")
    } else {
        format!("{s}s")
    }
}

/// Short human form, leaving out zero parts: `1m`, `1m30s`, `500ms`, `2h`, `10s`.
pub fn format_human(d: Duration) -> String {
    let nanos = d.as_nanos();
    if nanos == 0 {
        return "0s".to_string();
    }
    if nanos < NANOS_PER_SEC {
        return format_sub_second(nanos);
    }
    let secs = nanos / NANOS_PER_SEC;
    let frac = nanos % NANOS_PER_SEC;
    let h = secs / 3600;
    let m = (secs / 60) % 60;
    let s = secs % 60;
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if s > 0 || frac > 0 {
        out.push_str(&with_fraction(s, frac, 9));
        out.push('s');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn parses_go_forms() {
        assert_eq!(parse_go_duration("300ms"), Ok(ms(300)));
        assert_eq!(parse_go_duration("1.5h"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_go_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_go_duration("2h45m"), Ok(Duration::from_secs(9900)));
        assert_eq!(parse_go_duration("+10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_go_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_go_duration("-0"), Ok(Duration::ZERO));
        assert_eq!(parse_go_duration("0s"), Ok(Duration::ZERO));
        assert_eq!(parse_go_duration(".5s"), Ok(ms(500)));
        assert_eq!(parse_go_duration("1.s"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_go_duration("10ns"), Ok(Duration::from_nanos(10)));
        assert_eq!(parse_go_duration("7us"), Ok(Duration::from_micros(7)));
        assert_eq!(parse_go_duration("7µs"), Ok(Duration::from_micros(7)));
        assert_eq!(parse_go_duration("7μs"), Ok(Duration::from_micros(7)));
        assert_eq!(
            parse_go_duration("1h1m1s1ms1us1ns"),
            Ok(Duration::new(3661, 1_001_001))
        );
        assert_eq!(
            parse_go_duration("0.000000001s"),
            Ok(Duration::from_nanos(1))
        );
        assert_eq!(
            parse_go_duration("1.0000000000000000000000001s"),
            Ok(Duration::from_secs(1))
        );
    }

    #[test]
    fn refuses_bad_durations() {
        assert_eq!(
            parse_go_duration("60"),
            Err("expected a duration such as 30s or 1m, got \"60\"".to_string())
        );
        assert_eq!(
            parse_go_duration(""),
            Err("expected a duration such as 30s or 1m, got \"\"".to_string())
        );
        assert_eq!(
            parse_go_duration("5d"),
            Err(
                "expected a duration such as 30s or 1m, got \"5d\" (unknown unit \"d\"; use ns, us, ms, s, m or h)"
                    .to_string()
            )
        );
        assert_eq!(
            parse_go_duration("-5s"),
            Err(
                "expected a duration such as 30s or 1m, got \"-5s\" (negative durations are not allowed)"
                    .to_string()
            )
        );
        for bad in [
            ".", "s", "1.2.3s", "1m 30s", " 1s", "1s ", "+", "++1s", "1e3s", "1S", "ten",
        ] {
            assert!(parse_go_duration(bad).is_err(), "{bad:?} should fail");
        }
        assert!(parse_go_duration("9999999999999999999999999h").is_err());
        assert!(parse_go_duration("3000000h").is_err());
        assert!(parse_go_duration("2000000h").is_ok());
    }

    #[test]
    fn formats_like_go() {
        assert_eq!(format_go_duration(Duration::ZERO), "0s");
        assert_eq!(format_go_duration(Duration::from_secs(60)), "1m0s");
        assert_eq!(format_go_duration(ms(500)), "500ms");
        assert_eq!(format_go_duration(ms(1500)), "1.5s");
        assert_eq!(format_go_duration(Duration::from_secs(3600)), "1h0m0s");
        assert_eq!(format_go_duration(Duration::from_secs(9900)), "2h45m0s");
        assert_eq!(format_go_duration(Duration::from_nanos(5)), "5ns");
        assert_eq!(format_go_duration(Duration::from_nanos(1500)), "1.5µs");
        assert_eq!(format_go_duration(Duration::from_micros(2500)), "2.5ms");
        assert_eq!(format_go_duration(Duration::new(61, 1)), "1m1.000000001s");
    }

    #[test]
    fn formats_for_humans() {
        assert_eq!(format_human(Duration::from_secs(60)), "1m");
        assert_eq!(format_human(Duration::from_secs(90)), "1m30s");
        assert_eq!(format_human(ms(500)), "500ms");
        assert_eq!(format_human(Duration::from_secs(7200)), "2h");
        assert_eq!(format_human(Duration::from_secs(10)), "10s");
        assert_eq!(format_human(Duration::from_secs(3630)), "1h30s");
        assert_eq!(format_human(ms(1500)), "1.5s");
        assert_eq!(format_human(Duration::ZERO), "0s");
    }

    #[test]
    fn round_trips() {
        for s in ["1m0s", "500ms", "1.5s", "1h0m0s", "2h45m0s", "1.5µs", "5ns"] {
            let d = parse_go_duration(s).unwrap();
            assert_eq!(format_go_duration(d), s);
        }
        for s in ["1m", "1m30s", "500ms", "2h", "10s", "1h30s"] {
            let d = parse_go_duration(s).unwrap();
            assert_eq!(format_human(d), s);
        }
    }
}
