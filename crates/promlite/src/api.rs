//! Prometheus' HTTP API v1: `/api/v1/query`, `/api/v1/query_range`, `/api/v1/targets`,
//! `/-/ready` and `/-/healthy`, with Prometheus' JSON shapes and number formats.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::json;

use crate::eval::{eval_range_expr, Evaluator, Series, Value};
use crate::parser::{parse, parse_duration};
use crate::scrape::{lock, now_ms, read, Shared, SCRAPE_TIMEOUT};
use crate::storage::Labels;
use crate::Error;

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/api/v1/query", get(query).post(query))
        .route("/api/v1/query_range", get(query_range).post(query_range))
        .route("/api/v1/targets", get(targets))
        .route(
            "/-/ready",
            get(|| async { "Prometheus Server is Ready.\n" }),
        )
        .route(
            "/-/healthy",
            get(|| async { "Prometheus Server is Healthy.\n" }),
        )
        .with_state(shared)
}

/// The request's parameters: the URL's, and a form body's (which wins, as Go's `FormValue`).
fn params(raw: Option<&str>, headers: &HeaderMap, body: &[u8]) -> HashMap<String, String> {
    let mut out: HashMap<String, String> = HashMap::new();
    let is_form = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if is_form {
        for (k, v) in form_urlencoded::parse(body) {
            out.entry(k.into_owned()).or_insert_with(|| v.into_owned());
        }
    }
    if let Some(raw) = raw {
        for (k, v) in form_urlencoded::parse(raw.as_bytes()) {
            out.entry(k.into_owned()).or_insert_with(|| v.into_owned());
        }
    }
    out
}

async fn query(
    State(shared): State<Arc<Shared>>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let p = params(raw.as_deref(), &headers, &body);
    let t = match p.get("time").filter(|s| !s.is_empty()) {
        Some(s) => match parse_time(s) {
            Some(t) => t,
            None => return bad_time("time", s),
        },
        None => now_ms(),
    };
    let q = p.get("query").map(String::as_str).unwrap_or("");
    let expr = match parse(q) {
        Ok(e) => e,
        Err(e) => return error(&invalid_query(e)),
    };
    let result = {
        let storage = read(&shared.storage);
        Evaluator::new(&storage).eval(&expr, t)
    };
    match result {
        Ok(v) => success(&instant_json(&v, t)),
        Err(e) => error(&e),
    }
}

async fn query_range(
    State(shared): State<Arc<Shared>>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let p = params(raw.as_deref(), &headers, &body);
    let get = |k: &str| p.get(k).map(String::as_str).unwrap_or("");
    let Some(start) = parse_time(get("start")) else {
        return bad_time("start", get("start"));
    };
    let Some(end) = parse_time(get("end")) else {
        return bad_time("end", get("end"));
    };
    let Some(step) = parse_step(get("step")) else {
        return error(&Error::BadData(format!(
            "invalid parameter \"step\": cannot parse {:?} to a valid duration",
            get("step")
        )));
    };
    let expr = match parse(get("query")) {
        Ok(e) => e,
        Err(e) => return error(&invalid_query(e)),
    };
    let result = {
        let storage = read(&shared.storage);
        eval_range_expr(&storage, &expr, start, end, step)
    };
    match result {
        Ok(series) => {
            let mut out = String::new();
            write_matrix(&mut out, &series);
            out.push('}');
            success(&out)
        }
        Err(e) => error(&e),
    }
}

async fn targets(State(shared): State<Arc<Shared>>) -> Response {
    let status = lock(&shared.status).clone();
    let interval = shared.scrape_interval();
    let active: Vec<serde_json::Value> = shared
        .targets()
        .into_iter()
        .map(|t| {
            let s = status.get(&t);
            json!({
                "discoveredLabels": {},
                "labels": t.labels,
                "scrapePool": t.labels.get("job").cloned().unwrap_or_default(),
                "scrapeUrl": t.url,
                "globalUrl": t.url,
                "lastError": s.map(|s| s.last_error.clone()).unwrap_or_default(),
                "lastScrape": s.map(|s| format_rfc3339(s.last_scrape_ms))
                    .unwrap_or_else(|| "0001-01-01T00:00:00Z".to_string()),
                "lastScrapeDuration": s.map(|s| s.duration.as_secs_f64()).unwrap_or(0.0),
                "health": match s { Some(s) if s.up => "up", Some(_) => "down", None => "unknown" },
                "scrapeInterval": format_duration(interval.as_millis()),
                "scrapeTimeout": format_duration(SCRAPE_TIMEOUT.as_millis()),
            })
        })
        .collect();
    let body = json!({
        "status": "success",
        "data": {"activeTargets": active, "droppedTargets": []},
    });
    json_response(StatusCode::OK, body.to_string())
}

fn invalid_query(e: Error) -> Error {
    match e {
        Error::Parse { .. } => Error::BadData(format!("invalid parameter \"query\": {e}")),
        other => other,
    }
}

fn bad_time(param: &str, value: &str) -> Response {
    error(&Error::BadData(format!(
        "invalid parameter \"{param}\": cannot parse {value:?} to a valid timestamp"
    )))
}

fn json_response(status: StatusCode, body: String) -> Response {
    let mut response = (status, body).into_response();
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn success(data: &str) -> Response {
    json_response(
        StatusCode::OK,
        format!(r#"{{"status":"success","data":{data}}}"#),
    )
}

fn error(e: &Error) -> Response {
    let (status, kind) = match e {
        Error::Parse { .. } | Error::BadData(_) => (StatusCode::BAD_REQUEST, "bad_data"),
        Error::Execution(_) => (StatusCode::UNPROCESSABLE_ENTITY, "execution"),
    };
    let body = json!({"status": "error", "errorType": kind, "error": e.to_string()});
    json_response(status, body.to_string())
}

/// The `data` of an instant query's answer.
fn instant_json(v: &Value, t: i64) -> String {
    let mut out = String::new();
    match v {
        Value::Scalar(x) => {
            out.push_str(r#"{"resultType":"scalar","result":"#);
            write_point(&mut out, t, *x);
        }
        Value::String(s) => {
            out.push_str(r#"{"resultType":"string","result":["#);
            out.push_str(&format_timestamp(t));
            out.push(',');
            out.push_str(&json_string(s));
            out.push(']');
        }
        Value::Vector(samples) => {
            out.push_str(r#"{"resultType":"vector","result":["#);
            for (i, s) in samples.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(r#"{"metric":"#);
                write_labels(&mut out, &s.metric);
                out.push_str(r#","value":"#);
                write_point(&mut out, t, s.value);
                out.push('}');
            }
            out.push(']');
        }
        Value::Matrix(series) => write_matrix(&mut out, series),
    }
    out.push('}');
    out
}

/// `{"resultType":"matrix","result":[...]` (the caller closes the object).
fn write_matrix(out: &mut String, series: &[Series]) {
    out.push_str(r#"{"resultType":"matrix","result":["#);
    for (i, s) in series.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(r#"{"metric":"#);
        write_labels(out, &s.metric);
        out.push_str(r#","values":["#);
        for (j, &(t, v)) in s.points.iter().enumerate() {
            if j > 0 {
                out.push(',');
            }
            write_point(out, t, v);
        }
        out.push_str("]}");
    }
    out.push(']');
}

fn json_string(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_string())
}

fn write_labels(out: &mut String, labels: &Labels) {
    out.push('{');
    for (i, (k, v)) in labels.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&json_string(k));
        out.push(':');
        out.push_str(&json_string(v));
    }
    out.push('}');
}

fn write_point(out: &mut String, t: i64, v: f64) {
    let _ = write!(out, "[{},\"{}\"]", format_timestamp(t), format_value(v));
}

/// A timestamp in ms as Prometheus writes it: Unix seconds, with up to three decimals
/// (`1435781451.781`, `1435781451`, `1435781451.05` is written `1435781451.050`).
pub fn format_timestamp(t_ms: i64) -> String {
    let sign = if t_ms < 0 { "-" } else { "" };
    let abs = t_ms.unsigned_abs();
    let (secs, frac) = (abs / 1000, abs % 1000);
    if frac == 0 {
        format!("{sign}{secs}")
    } else {
        format!("{sign}{secs}.{frac:03}")
    }
}

/// A sample value as Go's `strconv.FormatFloat(v, 'f', -1, 64)`: `NaN`, `+Inf`, `-Inf`, else
/// the shortest decimal that reads back as the same float, without an exponent.
pub fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".to_string()
    } else if v == f64::INFINITY {
        "+Inf".to_string()
    } else if v == f64::NEG_INFINITY {
        "-Inf".to_string()
    } else {
        format!("{v}")
    }
}

/// A duration as Prometheus writes one: `1m30s`, `200ms`, `0s`.
fn format_duration(ms: u128) -> String {
    if ms == 0 {
        return "0s".to_string();
    }
    let mut out = String::new();
    let mut rest = ms;
    for (unit, size) in [
        ("y", 31_536_000_000),
        ("w", 604_800_000),
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1000),
        ("ms", 1),
    ] {
        if rest >= size {
            let _ = write!(out, "{}{unit}", rest / size);
            rest %= size;
        }
    }
    out
}

/// Seconds as a float, in ms; `otherwise` reads what is not a number. `None` when neither fits.
fn seconds_or(s: &str, otherwise: fn(&str) -> Option<i64>) -> Option<i64> {
    let s = s.trim();
    match s.parse::<f64>() {
        Ok(secs) if secs.is_finite() && secs.abs() < 1e15 => Some((secs * 1000.0).round() as i64),
        Ok(_) => None,
        Err(_) => otherwise(s),
    }
}

/// Unix seconds (with a fraction) or RFC 3339, in ms.
fn parse_time(s: &str) -> Option<i64> {
    seconds_or(s, parse_rfc3339)
}

/// Seconds as a float, or a Prometheus duration, in ms.
fn parse_step(s: &str) -> Option<i64> {
    seconds_or(s, parse_duration)
}

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// `2015-07-01T20:10:51.781Z`, `2015-07-01T22:10:51+02:00` (fractions of any length).
fn parse_rfc3339(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let num = |from: usize, len: usize| -> Option<i64> {
        let part = s.get(from..from + len)?;
        if !part.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        part.parse().ok()
    };
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (year, month, day) = (num(0, 4)?, num(5, 2)?, num(8, 2)?);
    let (hour, min, sec) = (num(11, 2)?, num(14, 2)?, num(17, 2)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || min > 59 || sec > 60 {
        return None;
    }
    let mut i = 19;
    let mut frac_ms = 0.0;
    if b.get(i) == Some(&b'.') {
        let start = i + 1;
        i = start;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == start {
            return None;
        }
        frac_ms = format!("0.{}", &s[start..i]).parse::<f64>().ok()? * 1000.0;
    }
    let offset_s = match b.get(i) {
        Some(b'Z' | b'z') if i + 1 == b.len() => 0,
        Some(&c @ (b'+' | b'-')) if i + 6 == b.len() && b[i + 3] == b':' => {
            let off = num(i + 1, 2)? * 3600 + num(i + 4, 2)? * 60;
            if c == b'+' {
                off
            } else {
                -off
            }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3600 + min * 60 + sec - offset_s;
    Some(secs * 1000 + frac_ms.round() as i64)
}

/// RFC 3339 in UTC with milliseconds.
fn format_rfc3339(t_ms: i64) -> String {
    let secs = t_ms.div_euclid(1000);
    let ms = t_ms.rem_euclid(1000);
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let sod = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{ms:03}Z",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_formatted_as_go_does() {
        assert_eq!(format_value(f64::NAN), "NaN");
        assert_eq!(format_value(f64::INFINITY), "+Inf");
        assert_eq!(format_value(f64::NEG_INFINITY), "-Inf");
        assert_eq!(format_value(1.0), "1");
        assert_eq!(format_value(0.1 + 0.2), "0.30000000000000004");
        assert_eq!(format_value(99.5), "99.5");
        assert_eq!(format_value(1e21), "1000000000000000000000");
        assert_eq!(format_value(1e-7), "0.0000001");
        assert_eq!(format_value(-0.0), "-0");
    }

    #[test]
    fn durations_are_formatted_as_prometheus_does() {
        assert_eq!(format_duration(0), "0s");
        assert_eq!(format_duration(200), "200ms");
        assert_eq!(format_duration(1000), "1s");
        assert_eq!(format_duration(90_500), "1m30s500ms");
        assert_eq!(format_duration(86_400_000 + 3_600_000), "1d1h");
    }

    #[test]
    fn timestamps_are_formatted_as_prometheus_does() {
        assert_eq!(format_timestamp(1_435_781_451_781), "1435781451.781");
        assert_eq!(format_timestamp(1_435_781_451_000), "1435781451");
        assert_eq!(format_timestamp(1_435_781_451_050), "1435781451.050");
        assert_eq!(format_timestamp(-1500), "-1.500");
    }

    #[test]
    fn times_parse_as_unix_seconds_or_rfc3339() {
        assert_eq!(parse_time("1435781451.781"), Some(1_435_781_451_781));
        assert_eq!(parse_time("1435781451"), Some(1_435_781_451_000));
        assert_eq!(
            parse_time("2015-07-01T20:10:51.781Z"),
            Some(1_435_781_451_781)
        );
        assert_eq!(
            parse_time("2015-07-01T22:10:51.781+02:00"),
            Some(1_435_781_451_781)
        );
        assert_eq!(parse_time("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_time("2024-02-29T12:00:00.5Z"),
            Some(1_709_208_000_500)
        );
        for bad in [
            "",
            "abc",
            "NaN",
            "inf",
            "2015-07-01",
            "2015-13-01T00:00:00Z",
            "2015-07-01T20:10:51",
        ] {
            assert_eq!(parse_time(bad), None, "{bad}");
        }
        assert_eq!(
            format_rfc3339(1_435_781_451_781),
            "2015-07-01T20:10:51.781Z"
        );
        assert_eq!(
            format_rfc3339(1_709_208_000_500),
            "2024-02-29T12:00:00.500Z"
        );
        assert_eq!(parse_step("15"), Some(15_000));
        assert_eq!(parse_step("0.5"), Some(500));
        assert_eq!(parse_step("15s"), Some(15_000));
        assert_eq!(parse_step("1m30s"), Some(90_000));
        assert_eq!(parse_step("x"), None);
    }

    #[test]
    fn instant_results_have_prometheus_shapes() {
        let v = Value::Vector(vec![crate::Sample {
            metric: crate::labels([("job", "a\"b")]),
            value: f64::NAN,
        }]);
        assert_eq!(
            instant_json(&v, 1500),
            r#"{"resultType":"vector","result":[{"metric":{"job":"a\"b"},"value":[1.500,"NaN"]}]}"#
        );
        assert_eq!(
            instant_json(&Value::Scalar(2.5), 3000),
            r#"{"resultType":"scalar","result":[3,"2.5"]}"#
        );
        assert_eq!(
            instant_json(&Value::String("x".into()), 3000),
            r#"{"resultType":"string","result":[3,"x"]}"#
        );
        let m = Value::Matrix(vec![crate::Series {
            metric: crate::Labels::new(),
            points: vec![(1000, 1.0), (2000, f64::INFINITY)],
        }]);
        assert_eq!(
            instant_json(&m, 3000),
            r#"{"resultType":"matrix","result":[{"metric":{},"values":[[1,"1"],[2,"+Inf"]]}]}"#
        );
    }
}
