//! Go's `%v` for a `float64`, so that thresholds in event messages read exactly as Flagger's do.
//!
//! Go formats `%v` of a float as `%g` with the shortest digits that read back as the same value
//! (`strconv.FormatFloat(v, 'g', -1, 64)`). With the shortest precision, `strconv` switches to the
//! exponent form when the decimal exponent is below -4 or at least 6 (a fixed 6, not the digit
//! count), writes the exponent with a sign and at least two digits, and spells the special values
//! `NaN`, `+Inf` and `-Inf`. So `1e6` is `1e+06`, `123456789` is `1.23456789e+08`, `0.0001` stays
//! `0.0001` and `0.00001` is `1e-05`, where Rust's `{}` would print `1000000` and `0.00001`.

/// `fmt.Sprintf("%v", v)` for a Go `float64`.
pub fn go_float(v: f64) -> String {
    if v.is_nan() {
        return "NaN".to_string();
    }
    if v.is_infinite() {
        return if v > 0.0 { "+Inf" } else { "-Inf" }.to_string();
    }
    let sign = if v.is_sign_negative() { "-" } else { "" };
    if v == 0.0 {
        return format!("{sign}0");
    }
    // Rust's `{:e}` gives the shortest round-trip digits, as Go's shortest mode does:
    // `d[.ddd]e<exp>` with a plain exponent (`1e6`, `1.5e-7`).
    let sci = format!("{:e}", v.abs());
    let (mantissa, exp) = sci.split_once('e').unwrap_or((sci.as_str(), "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let nd = i32::try_from(digits.len()).unwrap_or(i32::MAX);

    let mut out = String::from(sign);
    if !(-4..6).contains(&exp) {
        // %e: d[.ddd]e±dd
        out.push_str(&digits[..1]);
        if digits.len() > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        out.push('e');
        out.push(if exp < 0 { '-' } else { '+' });
        let abs = exp.unsigned_abs();
        if abs < 10 {
            out.push('0');
        }
        out.push_str(&abs.to_string());
        return out;
    }
    // %f with just the digits needed; `dp` is where the decimal point goes.
    let dp = exp + 1;
    if dp <= 0 {
        out.push_str("0.");
        out.push_str(&"0".repeat(dp.unsigned_abs() as usize));
        out.push_str(&digits);
    } else if dp >= nd {
        out.push_str(&digits);
        out.push_str(&"0".repeat((dp - nd) as usize));
    } else {
        let (int, frac) = digits.split_at(dp as usize);
        out.push_str(int);
        out.push('.');
        out.push_str(frac);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::go_float;

    #[test]
    fn matches_go_percent_v_for_float64() {
        // Each right-hand side is what Go's fmt.Sprintf("%v", float64(x)) prints.
        let cases: &[(f64, &str)] = &[
            (0.0, "0"),
            (-0.0, "-0"),
            (1.0, "1"),
            (-1.0, "-1"),
            (99.0, "99"),
            (99.5, "99.5"),
            (500.0, "500"),
            (0.5, "0.5"),
            (0.1, "0.1"),
            (0.3, "0.3"),
            (0.1 + 0.2, "0.30000000000000004"),
            (1.0 / 3.0, "0.3333333333333333"),
            (2.0 / 3.0, "0.6666666666666666"),
            (100000.0, "100000"),
            (999999.0, "999999"),
            (999999.5, "999999.5"),
            (1e6, "1e+06"),
            (-1e6, "-1e+06"),
            (1234567.0, "1.234567e+06"),
            (123456789.0, "1.23456789e+08"),
            (1e21, "1e+21"),
            (1e100, "1e+100"),
            (1.7976931348623157e308, "1.7976931348623157e+308"),
            (0.0001, "0.0001"),
            (0.00012, "0.00012"),
            (0.00001, "1e-05"),
            (0.000012, "1.2e-05"),
            (1.5e-7, "1.5e-07"),
            (5e-324, "5e-324"),
            (608863452348.1149, "6.088634523481149e+11"),
            (12.345, "12.345"),
            (99.95, "99.95"),
            (f64::NAN, "NaN"),
            (f64::INFINITY, "+Inf"),
            (f64::NEG_INFINITY, "-Inf"),
        ];
        for (v, want) in cases {
            assert_eq!(go_float(*v), *want, "{v:e}");
        }
    }
}
