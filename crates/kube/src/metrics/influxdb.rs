//! The `influxdb` provider. Flagger queries InfluxDB 2 with Flux
//! (`pkg/metrics/providers/influxdb.go`, through InfluxData's Go client); aviary does the same,
//! and also takes InfluxQL, for InfluxDB 1.x servers without Flux:
//!
//! - address: `spec.provider.address`, required (Flagger has no default either);
//! - credentials: without a `secretRef`, none; with one, its `token` and `org`, both required
//!   (Flagger's keys), the token sent as `Authorization: Token T`;
//! - a Flux query (anything but an InfluxQL `SELECT` or `SHOW`): `POST {address}/api/v2/query?org=O`
//!   with the JSON body InfluxData's client sends (`type: flux`, an annotated-CSV dialect); its
//!   value: the `_value` of the first record of the answer's CSV (a `double`, `long` or
//!   `unsignedLong`);
//! - an InfluxQL query (`SELECT ...`, `SHOW ...`): `GET {address}/query?q=Q&epoch=s`; the database
//!   is the address's `db` parameter (`http://influxdb:8086/?db=flagger`) or written in the query
//!   (`FROM "flagger"."autogen"."requests"`); its value: the first value column of the first row
//!   of the first series;
//! - no values: no record, or an empty `_value` (a row without a value). Flagger's client returns
//!   0 when the query has no record; aviary does not take "nothing measured" for a measured 0;
//! - online: InfluxDB's `GET {address}/ping` answers 204 (Flagger runs a Flux query on a bucket
//!   named `default`, which fails on a server that has none).
//!
//!
//! For the statistical judge (a range from S to T at step N), a Flux query is run with the
//! option record the InfluxDB UI defines, `v = {timeRangeStart: S, timeRangeStop: T,
//! windowPeriod: N}`, so the query ranges with `range(start: v.timeRangeStart, stop:
//! v.timeRangeStop)` and windows with `aggregateWindow(every: v.windowPeriod, ...)` (whose
//! `_time` is the window's stop, where the judge places a point); every table of the answer is a
//! series labelled by its columns that do not start with `_` (and `_field`, `_measurement`).
//! An InfluxQL query has its time condition where it writes Grafana's `$timeFilter`
//! (`WHERE ... AND $timeFilter GROUP BY time({{ interval }})`, required: without it InfluxDB
//! groups over all time); each series (one per `GROUP BY` tag set, labelled by its tags) has a
//! point per row, at the end of the row's `GROUP BY time()` bucket.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::future::BoxFuture;
use k8s_openapi::jiff::Timestamp;
use serde_json::{json, Value};

use super::api::{bucket_width, excerpt, json_of, number, range_window, Api, Call};
use super::provider::{MetricsProvider, ProviderSpec, RangeSeries};
use super::MetricError;

const FLUX_PATH: &str = "/api/v2/query";
const INFLUXQL_PATH: &str = "/query";

#[derive(Debug)]
pub(crate) struct InfluxDb {
    api: Api,
    org: String,
    flux_endpoint: String,
    influxql_endpoint: String,
}

/// The language of a query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Language {
    Flux,
    InfluxQl,
}

fn language(query: &str) -> Language {
    let head: String = query
        .trim_start()
        .chars()
        .take(7)
        .collect::<String>()
        .to_ascii_lowercase();
    if head.starts_with("select ") || head.starts_with("show ") {
        Language::InfluxQl
    } else {
        Language::Flux
    }
}

impl InfluxDb {
    pub(crate) fn new(
        clients: &crate::http::Clients,
        spec: &ProviderSpec,
    ) -> Result<InfluxDb, MetricError> {
        let address = spec.address_or("");
        if address.is_empty() {
            return Err(MetricError::Failed(
                "influxdb has no default address: set spec.provider.address (http(s)://host:8086)"
                    .into(),
            ));
        }
        let (credentials, org) = if spec.secret.is_empty() {
            (Vec::new(), String::new())
        } else {
            let token = spec.secret_text("token", "an authentication token")?;
            let org = spec.secret_text("org", "an organisation")?;
            (
                vec![("Authorization", format!("Token {}", token.trim()))],
                org,
            )
        };
        let api = Api::new(
            clients,
            "influxdb",
            address,
            credentials,
            &spec.headers,
            spec.settings(),
        )?;
        Ok(InfluxDb {
            flux_endpoint: api.endpoint(FLUX_PATH),
            influxql_endpoint: api.endpoint(INFLUXQL_PATH),
            org,
            api,
        })
    }

    async fn flux(&self, query: &str) -> Result<Vec<u8>, MetricError> {
        let body = json!({
            "query": query,
            "type": "flux",
            "dialect": {
                "header": true,
                "delimiter": ",",
                "annotations": ["datatype", "group", "default"],
                "commentPrefix": "#",
                "dateTimeFormat": "RFC3339",
            },
        });
        let call = Call::post(FLUX_PATH, "application/json", body.to_string().into_bytes())
            .param("org", self.org.as_str())
            .header("Accept", "application/csv");
        self.api.call(&call).await
    }

    async fn influxql(&self, query: &str) -> Result<Vec<u8>, MetricError> {
        let call = Call::get(INFLUXQL_PATH)
            .param("q", query)
            .param("epoch", "s");
        self.api.call(&call).await
    }

    async fn run(&self, query: &str) -> Result<f64, MetricError> {
        let query = query.trim();
        match language(query) {
            Language::Flux => {
                let answer = self.flux(query).await?;
                first_flux_value(&answer, &self.flux_endpoint)
            }
            Language::InfluxQl => {
                let answer = self.influxql(query).await?;
                first_influxql_value(&answer, &self.influxql_endpoint)
            }
        }
    }

    async fn range(
        &self,
        query: &str,
        start: f64,
        end: f64,
        step: Duration,
    ) -> Result<Vec<RangeSeries>, MetricError> {
        let query = query.trim();
        let step_s = step.as_secs().max(1);
        let (from, until) = range_window(start, end, step);
        match language(query) {
            Language::Flux => {
                let at = |s: u64| {
                    Timestamp::from_second(i64::try_from(s).unwrap_or(i64::MAX)).map_err(|e| {
                        MetricError::Failed(format!("influxdb: the range's time {s}: {e}"))
                    })
                };
                let program = format!(
                    "option v = {{timeRangeStart: {}, timeRangeStop: {}, windowPeriod: {step_s}s}}\n{query}",
                    at(from)?,
                    at(until)?
                );
                let answer = self.flux(&program).await?;
                flux_series(&answer, &self.flux_endpoint)
            }
            Language::InfluxQl => {
                if !query.contains(TIME_FILTER) {
                    return Err(MetricError::Failed(format!(
                        "influxdb: the judge's InfluxQL query must say where its time condition goes with {TIME_FILTER} (WHERE ... AND {TIME_FILTER} GROUP BY time({{{{ interval }}}})): {query}"
                    )));
                }
                let condition = format!("time > {from}s AND time <= {until}s");
                let answer = self
                    .influxql(&query.replace(TIME_FILTER, &condition))
                    .await?;
                influxql_series(&answer, &self.influxql_endpoint, step_s as f64)
            }
        }
    }
}

/// Where a judge's InfluxQL query wants its time condition (Grafana's name for it).
const TIME_FILTER: &str = "$timeFilter";

/// Every table of an annotated-CSV Flux answer as a series: its records' `_value` at `_time`,
/// labelled by the columns that do not start with `_` (but `_field` and `_measurement`).
fn flux_series(body: &[u8], endpoint: &str) -> Result<Vec<RangeSeries>, MetricError> {
    let mut series: BTreeMap<BTreeMap<String, String>, Vec<(f64, f64)>> = BTreeMap::new();
    for record in flux_records(body, endpoint)? {
        let (Some(v), Some(t)) = (record.column("_value"), record.column("_time")) else {
            return Err(MetricError::Failed(format!(
                "{endpoint} answered records without _time and _value columns (columns: {}): window the query with aggregateWindow",
                record.columns.join(", ")
            )));
        };
        let labels: BTreeMap<String, String> = record
            .columns
            .iter()
            .zip(&record.cells)
            .filter(|(name, _)| {
                !name.is_empty()
                    && !matches!(name.as_str(), "result" | "table")
                    && (!name.starts_with('_')
                        || matches!(name.as_str(), "_field" | "_measurement"))
            })
            .map(|(name, cell)| (name.clone(), cell.clone()))
            .collect();
        let points = series.entry(labels).or_default();
        let time = record
            .cells
            .get(t)
            .and_then(|c| c.parse::<Timestamp>().ok());
        let value = record.cells.get(v).and_then(|c| c.parse::<f64>().ok());
        if let (Some(time), Some(value)) = (time, value.filter(|v| v.is_finite())) {
            points.push((time.as_millisecond() as f64 / 1000.0, value));
        }
    }
    if series.is_empty() {
        return Err(no_values("the query returned no record"));
    }
    Ok(series
        .into_iter()
        .map(|(labels, points)| RangeSeries { labels, points })
        .collect())
}

/// Every series of an InfluxQL answer (`epoch=s`), labelled by its tags: the first value column
/// of each row, at the end of the row's `GROUP BY time()` bucket (`step` when the series has
/// one row).
fn influxql_series(
    body: &[u8],
    endpoint: &str,
    step: f64,
) -> Result<Vec<RangeSeries>, MetricError> {
    let answer = json_of(body, endpoint, "InfluxDB's")?;
    let refused =
        |error: &str| MetricError::Failed(format!("{endpoint} refused the query: {error}"));
    if let Some(error) = answer.get("error").and_then(Value::as_str) {
        return Err(refused(error));
    }
    let Some(result) = answer.pointer("/results/0") else {
        return Err(MetricError::Failed(format!(
            "{endpoint} answered without results: {}",
            excerpt(body, 200)
        )));
    };
    if let Some(error) = result.get("error").and_then(Value::as_str) {
        return Err(refused(error));
    }
    let all = result
        .get("series")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    if all.is_empty() {
        return Err(no_values("the query matched no series"));
    }
    Ok(all
        .iter()
        .map(|s| {
            let labels = s
                .get("tags")
                .and_then(Value::as_object)
                .map(|tags| {
                    tags.iter()
                        .map(|(k, v)| {
                            (
                                k.clone(),
                                v.as_str().map_or_else(|| v.to_string(), str::to_string),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            let columns: Vec<&str> = s
                .get("columns")
                .and_then(Value::as_array)
                .map(|c| c.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let t = columns.iter().position(|c| *c == "time").unwrap_or(0);
            let v = columns.iter().position(|c| *c != "time").unwrap_or(1);
            let rows: Vec<&Vec<Value>> = s
                .get("values")
                .and_then(Value::as_array)
                .map(|rows| rows.iter().filter_map(Value::as_array).collect())
                .unwrap_or_default();
            let width = bucket_width(rows.iter().filter_map(|r| r.get(t)?.as_f64()), step);
            let points = rows
                .iter()
                .filter_map(|r| {
                    let at = r.get(t)?.as_f64()? + width;
                    let value = r.get(v)?.as_f64().filter(|v| v.is_finite())?;
                    Some((at, value))
                })
                .collect();
            RangeSeries { labels, points }
        })
        .collect())
}

fn no_values(why: &str) -> MetricError {
    MetricError::NoValues(format!("influxdb: {why}"))
}

/// A number of an InfluxDB answer, by its Flux data type.
fn flux_number(text: &str, datatype: &str, endpoint: &str) -> Result<f64, MetricError> {
    if text.is_empty() {
        return Err(no_values("the first record has no _value"));
    }
    match datatype {
        "double" | "long" | "unsignedLong" | "" => match text {
            "+Inf" | "-Inf" | "NaN" => Err(no_values("the first record's _value is not finite")),
            _ => text.parse::<f64>().map_err(|_| {
                MetricError::Failed(format!(
                    "{endpoint} answered a _value that is not a number: {text}"
                ))
            }),
        },
        other => Err(MetricError::Failed(format!(
            "{endpoint} answered a _value of type {other} ({text}), not a number: make the query end with a number, e.g. with |> sum() or |> mean()"
        ))),
    }
}

/// The `_value` of the first record of an annotated-CSV Flux answer.
fn first_flux_value(body: &[u8], endpoint: &str) -> Result<f64, MetricError> {
    let records = flux_records(body, endpoint)?;
    let Some(record) = records.first() else {
        return Err(no_values("the query returned no record"));
    };
    let Some(i) = record.column("_value") else {
        return Err(MetricError::Failed(format!(
            "{endpoint} answered records without a _value column (columns: {})",
            record.columns.join(", ")
        )));
    };
    let value = record.cells.get(i).map(String::as_str).unwrap_or_default();
    let datatype = record
        .datatypes
        .get(i)
        .map(String::as_str)
        .unwrap_or_default();
    flux_number(value, datatype, endpoint)
}

/// One record of an annotated-CSV Flux answer, with its table's header and datatypes.
struct FluxRecord {
    datatypes: std::rc::Rc<Vec<String>>,
    columns: std::rc::Rc<Vec<String>>,
    cells: Vec<String>,
}

impl FluxRecord {
    fn column(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c == name)
    }
}

/// Every record of an annotated-CSV Flux answer; an `error` column is the query's failure.
fn flux_records(body: &[u8], endpoint: &str) -> Result<Vec<FluxRecord>, MetricError> {
    let text = String::from_utf8_lossy(body);
    let mut records = Vec::new();
    let mut datatypes = std::rc::Rc::new(Vec::new());
    let mut header: Option<std::rc::Rc<Vec<String>>> = None;
    for line in text.lines() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            // A new table: its own annotations and header follow.
            header = None;
            datatypes = std::rc::Rc::new(Vec::new());
            continue;
        }
        let cells = csv_cells(line);
        if cells.first().is_some_and(|c| c.starts_with('#')) {
            if cells.first().map(String::as_str) == Some("#datatype") {
                datatypes = std::rc::Rc::new(cells);
            }
            continue;
        }
        let Some(columns) = &header else {
            header = Some(std::rc::Rc::new(cells));
            continue;
        };
        let record = FluxRecord {
            datatypes: datatypes.clone(),
            columns: columns.clone(),
            cells,
        };
        if let Some(i) = record.column("error") {
            let error = record.cells.get(i).map(String::as_str).unwrap_or_default();
            return Err(MetricError::Failed(format!(
                "{endpoint} refused the query: {error}"
            )));
        }
        records.push(record);
    }
    Ok(records)
}

/// The cells of one CSV line (RFC 4180: quoted cells, `""` inside quotes).
fn csv_cells(line: &str) -> Vec<String> {
    let mut cells = Vec::new();
    let mut cell = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                cell.push('"');
                chars.next();
            }
            ('"', _) => quoted = !quoted,
            (',', false) => cells.push(std::mem::take(&mut cell)),
            (c, _) => cell.push(c),
        }
    }
    cells.push(cell);
    cells
}

/// The first value of the first row of the first series of an InfluxQL answer.
fn first_influxql_value(body: &[u8], endpoint: &str) -> Result<f64, MetricError> {
    let answer = json_of(body, endpoint, "InfluxDB's")?;
    let refused =
        |error: &str| MetricError::Failed(format!("{endpoint} refused the query: {error}"));
    if let Some(error) = answer.get("error").and_then(Value::as_str) {
        return Err(refused(error));
    }
    let Some(result) = answer
        .get("results")
        .and_then(Value::as_array)
        .and_then(|r| r.first())
    else {
        return Err(MetricError::Failed(format!(
            "{endpoint} answered without results: {}",
            excerpt(body, 200)
        )));
    };
    if let Some(error) = result.get("error").and_then(Value::as_str) {
        return Err(refused(error));
    }
    let Some(series) = result
        .get("series")
        .and_then(Value::as_array)
        .and_then(|s| s.first())
    else {
        return Err(no_values("the query matched no series"));
    };
    let columns: Vec<&str> = series
        .get("columns")
        .and_then(Value::as_array)
        .map(|c| c.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let Some(row) = series
        .get("values")
        .and_then(Value::as_array)
        .and_then(|v| v.first())
        .and_then(Value::as_array)
    else {
        return Err(no_values("the first series has no rows"));
    };
    // The first column that is not the time.
    let i = columns.iter().position(|c| *c != "time").unwrap_or(1);
    number(row.get(i), "influxdb", "the first row's value", endpoint)
}

impl MetricsProvider for InfluxDb {
    fn kind(&self) -> &'static str {
        "influxdb"
    }

    fn endpoint(&self) -> &str {
        &self.flux_endpoint
    }

    fn query<'a>(&'a self, query: &'a str) -> BoxFuture<'a, Result<f64, MetricError>> {
        Box::pin(self.run(query))
    }

    fn query_range<'a>(
        &'a self,
        query: &'a str,
        start: f64,
        end: f64,
        step: Duration,
    ) -> BoxFuture<'a, Result<Vec<RangeSeries>, MetricError>> {
        Box::pin(self.range(query, start, end, step))
    }

    fn is_online(&self) -> BoxFuture<'_, Result<(), MetricError>> {
        Box::pin(async move { self.api.online(&Call::get("/ping")).await })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::servers::{self, Server};
    use wiremock::matchers::{body_json, header, method, path, query_param};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    fn spec(address: &str, secret: &[(&str, &str)]) -> ProviderSpec {
        ProviderSpec::for_test("influxdb", address, secret)
    }

    fn make(spec: &ProviderSpec) -> InfluxDb {
        match InfluxDb::new(&crate::http::Clients::default(), spec) {
            Ok(p) => p,
            Err(e) => panic!("{e}"),
        }
    }

    const FLUX: &str = r#"from(bucket: "flagger")
  |> range(start: -1m)
  |> filter(fn: (r) => r._measurement == "requests" and r.deployment == "podinfo-canary")
  |> sum()"#;

    #[tokio::test]
    async fn flux_is_posted_as_influxdatas_client_posts_it_and_the_first_value_read() {
        let server = MockServer::start().await;
        let csv = "#datatype,string,long,dateTime:RFC3339,dateTime:RFC3339,double,string,string\r\n#group,false,false,true,true,false,true,true\r\n#default,_result,,,,,,\r\n,result,table,_start,_stop,_value,_field,_measurement\r\n,,0,2026-12-05T07:00:00Z,2026-12-05T07:01:00Z,1.5,errors,requests\r\n,,1,2026-12-05T07:00:00Z,2026-12-05T07:01:00Z,9,total,requests\r\n\r\n";
        Mock::given(method("POST"))
            .and(path("/api/v2/query"))
            .and(query_param("org", "acme"))
            .and(header("Authorization", "Token t0ken"))
            .and(header("Content-Type", "application/json"))
            .and(body_json(json!({
                "query": FLUX,
                "type": "flux",
                "dialect": {
                    "header": true,
                    "delimiter": ",",
                    "annotations": ["datatype", "group", "default"],
                    "commentPrefix": "#",
                    "dateTimeFormat": "RFC3339",
                },
            })))
            .respond_with(ResponseTemplate::new(200).set_body_string(csv))
            .mount(&server)
            .await;
        let p = make(&spec(
            &server.uri(),
            &[("token", "t0ken\n"), ("org", "acme")],
        ));
        assert_eq!(p.run(&format!("\n{FLUX}\n")).await, Ok(1.5));
    }

    #[tokio::test]
    async fn a_judges_flux_query_runs_with_the_uis_time_range_options_and_every_table_is_a_series()
    {
        let server = MockServer::start().await;
        let judged = r#"from(bucket: "flagger")
  |> range(start: v.timeRangeStart, stop: v.timeRangeStop)
  |> filter(fn: (r) => r._measurement == "requests" and r._field == "errors")
  |> aggregateWindow(every: v.windowPeriod, fn: sum, createEmpty: false)"#;
        // 2023-11-14T22:13:20Z is 1700000000.
        let program = format!(
            "option v = {{timeRangeStart: 2023-11-14T22:13:20Z, timeRangeStop: 2023-11-14T22:16:20Z, windowPeriod: 60s}}\n{judged}"
        );
        let csv = "#datatype,string,long,dateTime:RFC3339,dateTime:RFC3339,dateTime:RFC3339,double,string,string,string\r\n#group,false,false,true,true,false,false,true,true,true\r\n#default,_result,,,,,,,,\r\n,result,table,_start,_stop,_time,_value,_field,_measurement,deployment\r\n,,0,2023-11-14T22:13:20Z,2023-11-14T22:16:20Z,2023-11-14T22:14:20Z,3,errors,requests,podinfo-canary\r\n,,0,2023-11-14T22:13:20Z,2023-11-14T22:16:20Z,2023-11-14T22:16:20Z,1,errors,requests,podinfo-canary\r\n,,1,2023-11-14T22:13:20Z,2023-11-14T22:16:20Z,2023-11-14T22:15:20Z,0,errors,requests,podinfo-primary\r\n\r\n";
        Mock::given(method("POST"))
            .and(path("/api/v2/query"))
            .and(body_json(json!({
                "query": program,
                "type": "flux",
                "dialect": {
                    "header": true,
                    "delimiter": ",",
                    "annotations": ["datatype", "group", "default"],
                    "commentPrefix": "#",
                    "dateTimeFormat": "RFC3339",
                },
            })))
            .respond_with(ResponseTemplate::new(200).set_body_string(csv))
            .expect(1)
            .mount(&server)
            .await;
        let p = make(&spec(&server.uri(), &[("token", "t"), ("org", "acme")]));
        let labelled = |d: &str| -> BTreeMap<String, String> {
            [
                ("_field".to_string(), "errors".to_string()),
                ("_measurement".to_string(), "requests".to_string()),
                ("deployment".to_string(), d.to_string()),
            ]
            .into()
        };
        assert_eq!(
            p.query_range(
                judged,
                1_700_000_060.0,
                1_700_000_180.0,
                Duration::from_secs(60)
            )
            .await,
            Ok(vec![
                RangeSeries {
                    labels: labelled("podinfo-canary"),
                    points: vec![(1_700_000_060.0, 3.0), (1_700_000_180.0, 1.0)],
                },
                RangeSeries {
                    labels: labelled("podinfo-primary"),
                    points: vec![(1_700_000_120.0, 0.0)],
                },
            ])
        );
        assert!(matches!(
            flux_series(b"", "E"),
            Err(MetricError::NoValues(_))
        ));
    }

    #[test]
    fn flux_answers_without_a_number_are_no_values_or_errors() {
        let read = |csv: &str| first_flux_value(csv.as_bytes(), "E");
        assert!(matches!(read(""), Err(MetricError::NoValues(_))));
        assert!(matches!(
            read("#datatype,string,long,double\n#group,false,false,false\n#default,_result,,\n,result,table,_value\n,,0,\n"),
            Err(MetricError::NoValues(_))
        ));
        assert_eq!(
            read("#datatype,string,long,long\n#group,false,false,false\n#default,_result,,\n,result,table,_value\n,,0,42\n"),
            Ok(42.0)
        );
        match read("#datatype,string,string\n#group,true,true\n#default,,\n,error,reference\n,\"type error 3:4-3:9: undefined identifier \"\"x\"\"\",\n") {
            Err(MetricError::Failed(m)) => {
                assert_eq!(m, r#"E refused the query: type error 3:4-3:9: undefined identifier "x""#)
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            read("#datatype,string,long,string\n#group,false,false,false\n#default,_result,,\n,result,table,_value\n,,0,up\n"),
            Err(MetricError::Failed(_))
        ));
    }

    #[test]
    fn the_language_is_told_by_the_query() {
        assert_eq!(language(FLUX), Language::Flux);
        assert_eq!(
            language("import \"math\"\nfrom(bucket: \"b\")"),
            Language::Flux
        );
        assert_eq!(language("  SELECT mean(x) FROM y"), Language::InfluxQl);
        assert_eq!(language("show databases"), Language::InfluxQl);
        assert_eq!(language("selection |> x"), Language::Flux);
    }

    #[test]
    fn a_secret_needs_the_token_and_the_org_and_the_address_is_required() {
        match InfluxDb::new(
            &crate::http::Clients::default(),
            &spec("http://influxdb:8086", &[("token", "t")]),
        ) {
            Err(MetricError::Failed(m)) => {
                assert_eq!(
                    m,
                    "influxdb credentials do not contain org (an organisation)"
                )
            }
            other => panic!("{other:?}"),
        }
        let mut s = spec("", &[]);
        s.address = None;
        assert!(matches!(
            InfluxDb::new(&crate::http::Clients::default(), &s),
            Err(MetricError::Failed(m)) if m.contains("set spec.provider.address")
        ));
    }

    /// A real InfluxDB 1.x (Debian's `influxd`) on loopback, in a temporary directory.
    async fn start_influxd() -> Server {
        let dir = servers::directory("aviary-influxdb-");
        let (rpc, http) = (servers::free_port(), servers::free_port());
        let d = dir.path().display();
        let config = format!(
            "reporting-disabled = true\nbind-address = \"127.0.0.1:{rpc}\"\n[meta]\n  dir = \"{d}/meta\"\n[data]\n  dir = \"{d}/data\"\n  wal-dir = \"{d}/wal\"\n  query-log-enabled = false\n[http]\n  bind-address = \"127.0.0.1:{http}\"\n  log-enabled = false\n"
        );
        let config_path = dir.path().join("influxdb.conf");
        std::fs::write(&config_path, config).unwrap_or_else(|e| panic!("{e}"));
        let mut command = std::process::Command::new("influxd");
        command.arg("-config").arg(&config_path);
        let url = format!("http://127.0.0.1:{http}");
        servers::start(
            command,
            dir,
            url,
            "/ping",
            "install it with `apt-get install influxdb`",
        )
        .await
    }

    #[tokio::test]
    async fn influxql_against_a_real_influxdb() {
        let influxd = start_influxd().await;
        let http = servers::http();
        let post = |path: String, body: String| {
            let http = http.clone();
            async move {
                match http.post(path).body(body).send().await {
                    Ok(r) => assert!(r.status().is_success(), "{:?}", r.text().await),
                    Err(e) => panic!("{e}"),
                }
            }
        };
        post(
            format!("{}/query?q=CREATE+DATABASE+flagger", influxd.url),
            String::new(),
        )
        .await;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        post(
            format!("{}/write?db=flagger&precision=s", influxd.url),
            format!(
                "requests,deployment=podinfo-canary errors=3,total=200 {}\nrequests,deployment=podinfo-canary errors=1,total=200 {}\nrequests,deployment=podinfo-primary errors=0,total=400 {}\n",
                now - 20,
                now - 10,
                now - 10
            ),
        )
        .await;
        let p = make(&spec(&format!("{}/?db=flagger", influxd.url), &[]));
        assert_eq!(p.is_online().await, Ok(()));
        let canary = "SELECT sum(errors) / sum(total) * 100 FROM requests WHERE deployment = 'podinfo-canary' AND time > now() - 1m";
        assert_eq!(p.run(canary).await, Ok(1.0));
        // The database written in the query, without `db` in the address.
        let p = make(&spec(&influxd.url, &[]));
        let qualified =
            "SELECT sum(total) FROM \"flagger\".\"autogen\".\"requests\" WHERE time > now() - 1m";
        assert_eq!(p.run(qualified).await, Ok(800.0));
        // Nothing measured is no values, not 0.
        let none = "SELECT sum(errors) FROM \"flagger\".\"autogen\".\"requests\" WHERE deployment = 'other' AND time > now() - 1m";
        assert!(matches!(p.run(none).await, Err(MetricError::NoValues(_))));
        // The judge's range: one series per GROUP BY tag set, a point at the end of each
        // one-minute bucket with a value (empty buckets, null in InfluxQL, are left out).
        let base = (now / 60) * 60 - 600;
        post(
            format!("{}/write?db=flagger&precision=s", influxd.url),
            format!(
                "latency,deployment=podinfo-canary ms=30 {}\nlatency,deployment=podinfo-canary ms=50 {}\nlatency,deployment=podinfo-primary ms=20 {}\nlatency,deployment=podinfo-primary ms=22 {}\n",
                base + 5,
                base + 65,
                base + 10,
                base + 190
            ),
        )
        .await;
        let judged = "SELECT mean(ms) FROM \"flagger\".\"autogen\".\"latency\" WHERE $timeFilter GROUP BY time(60s), deployment";
        let range = p
            .query_range(
                judged,
                (base + 60) as f64,
                (base + 180) as f64,
                Duration::from_secs(60),
            )
            .await;
        let labelled = |d: &str| -> BTreeMap<String, String> {
            [("deployment".to_string(), d.to_string())].into()
        };
        assert_eq!(
            range,
            Ok(vec![
                RangeSeries {
                    labels: labelled("podinfo-canary"),
                    points: vec![((base + 60) as f64, 30.0), ((base + 120) as f64, 50.0)],
                },
                RangeSeries {
                    labels: labelled("podinfo-primary"),
                    points: vec![((base + 60) as f64, 20.0)],
                },
            ])
        );
        // A judge's InfluxQL query without $timeFilter is refused before any call.
        match p
            .query_range(
                "SELECT mean(ms) FROM latency GROUP BY time(60s)",
                0.0,
                60.0,
                Duration::from_secs(60),
            )
            .await
        {
            Err(MetricError::Failed(m)) => assert!(m.contains("$timeFilter"), "{m}"),
            other => panic!("{other:?}"),
        }
        // InfluxDB's own error text.
        match p.run("SELECT sum(errors) FROM nowhere").await {
            Err(MetricError::Failed(m)) => {
                assert!(
                    m.ends_with("refused the query: database name required"),
                    "{m}"
                )
            }
            other => panic!("{other:?}"),
        }
    }
}
