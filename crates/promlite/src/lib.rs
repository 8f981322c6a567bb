//! promlite: a small embedded Prometheus for `aviary sandbox`, used when Debian's `prometheus`
//! binary is not installed. It scrapes targets over HTTP, keeps the samples in memory, and
//! answers Prometheus' `/api/v1/query` and `/api/v1/query_range` for the PromQL subset that
//! aviary's (and Flagger's) canary analysis sends, with Prometheus' semantics.
//!
//! Layers, each usable alone:
//! - [`Storage`]: label sets and their samples, with staleness markers;
//! - [`parse`] / [`eval_instant`] / [`eval_range`]: the PromQL subset over a storage;
//! - [`parse_exposition`]: the text exposition format 0.0.4;
//! - [`Promlite`]: the scrape loop and the HTTP API on `127.0.0.1:PORT`.
//!
//! # Scraping
//!
//! Every `scrape_interval` (the first round at once), all targets are fetched in parallel
//! (HTTP/1.1, 2 s timeout each) and every sample is stored with the round's start time as its
//! timestamp (exposed timestamps are ignored). A target's labels, `job` (default `sandbox`) and
//! `instance` (default the URL's `host:port`) are added to its samples; a scraped label they
//! override is kept as `exported_<name>`. Per target, `up` is 1 or 0; a successful scrape also
//! records `scrape_duration_seconds` and `scrape_samples_scraped`; a failed one (connection
//! error, timeout, non-2xx status, a malformed exposition) records `up` = 0 only. Samples older
//! than `retention` are dropped after each round.
//!
//! # Staleness
//!
//! As Prometheus, promlite writes a staleness marker for a series when a scrape of its target no
//! longer exposes it, when the target fails (every series but `up`), and when the target is
//! removed by [`Promlite::set_targets`] (every series of the target, `up` included), at that
//! round's timestamp. Instant selectors do not return a series whose latest sample in the
//! 5-minute lookback window is a marker, so a removed target's series disappear from query
//! results at the first scrape round after the change; range functions still see the samples
//! before the marker.
//!
//! # PromQL
//!
//! Supported, with Prometheus' semantics: selectors with `=`, `!=`, `=~`, `!~` (regexes fully
//! anchored, `.` matching newlines), `offset`; range selectors with Prometheus durations;
//! `rate`, `irate`, `increase`, `delta`, `histogram_quantile` (classic buckets), `vector`,
//! `scalar`, `time`, `abs`, `ceil`, `floor`, `sqrt`, `exp`, `ln`, `log2`, `log10`,
//! `clamp`, `clamp_min`, `clamp_max`, `sum_over_time`, `avg_over_time`, `max_over_time`,
//! `min_over_time`, `count_over_time`, `last_over_time`; `sum`, `avg`, `min`, `max`, `count`
//! with `by`/`without` before or after the argument; `+ - * / % ^`, comparisons with and
//! without `bool`, `and`/`or`/`unless`, one-to-one matching with `on`/`ignoring`; unary minus;
//! number literals (`1e3`, `0x1f`, `NaN`, `Inf`); string literals; `#` comments.
//!
//! Not supported (a 400 `bad_data` naming the feature): subqueries, the `@` modifier,
//! `group_left`/`group_right`, parameterized and other aggregations (`topk`, `quantile`,
//! `count_values`, `stddev`, `group`, ...), native histograms and the functions not listed
//! above (`absent`, `label_replace`, `predict_linear`, `sort`, ...).

mod api;
mod eval;
mod exposition;
mod parser;
mod scrape;
mod storage;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

pub use api::{format_timestamp, format_value};
pub use eval::{
    bucket_quantile, eval_instant, eval_range, eval_range_expr, extrapolated_rate, Evaluator,
    Sample, Series, Value, LOOKBACK_MS, MAX_POINTS,
};
pub use exposition::{parse_exposition, ParsedSample};
pub use parser::{
    parse, parse_duration, AggOp, AggregateExpr, BinOp, BinaryExpr, Call, Expr, Func, Grouping,
    MatchOp, Matcher, Matching, MatrixSelector, ValueType, VectorSelector,
};
pub use storage::{is_stale, labels, stale_nan, Labels, Point, Storage, METRIC_NAME};

/// A scrape target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The exposition's URL, e.g. `http://127.0.0.1:4312/metrics` (plain HTTP).
    pub url: String,
    /// Labels added to every sample of the target. `job` defaults to `sandbox` and `instance`
    /// to the URL's `host:port`; names starting with `__` are ignored.
    pub labels: BTreeMap<String, String>,
}

/// Scrape and storage settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// How often every target is scraped (at least 10 ms).
    pub scrape_interval: Duration,
    /// How long samples are kept.
    pub retention: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            scrape_interval: Duration::from_secs(1),
            retention: Duration::from_secs(15 * 60),
        }
    }
}

/// A query or request error.
#[derive(Debug, Clone, PartialEq)]
pub enum Error {
    /// The query does not parse or type-check (HTTP 400, `bad_data`). `line` and `column` are
    /// 1-based; the column counts characters.
    Parse {
        line: usize,
        column: usize,
        message: String,
    },
    /// A bad request parameter (HTTP 400, `bad_data`).
    BadData(String),
    /// A valid query that cannot be evaluated, e.g. many-to-many matching (HTTP 422,
    /// `execution`).
    Execution(String),
}

impl Error {
    pub(crate) fn parse(src: &str, pos: usize, message: String) -> Error {
        let mut pos = pos.min(src.len());
        while !src.is_char_boundary(pos) {
            pos -= 1;
        }
        let before = &src[..pos];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
        let column = before[line_start..].chars().count() + 1;
        Error::Parse {
            line,
            column,
            message,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Parse {
                line,
                column,
                message,
            } => write!(f, "{line}:{column}: parse error: {message}"),
            Error::BadData(m) | Error::Execution(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for Error {}

/// A running promlite: its HTTP server and scrape loop, on the tokio runtime that started it.
/// Dropping it stops both.
pub struct Promlite {
    shared: Arc<scrape::Shared>,
    addr: SocketAddr,
    scrape_task: tokio::task::JoinHandle<()>,
    /// Dropping it tells the server to shut down.
    _shutdown: tokio::sync::watch::Sender<()>,
}

impl Promlite {
    /// Binds 127.0.0.1:0, spawns the HTTP server and the scrape loop on the current tokio
    /// runtime. The first scrape round runs at once (with the targets set by then), then one
    /// every `scrape_interval`.
    pub async fn start(config: Config) -> std::io::Result<Promlite> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(scrape::Shared::new(config));
        let (tx, mut rx) = tokio::sync::watch::channel(());
        let app = api::router(Arc::clone(&shared));
        tokio::spawn(async move {
            let server = axum::serve(listener, app).with_graceful_shutdown(async move {
                // Returns when the sender is dropped.
                while rx.changed().await.is_ok() {}
            });
            if let Err(e) = server.await {
                tracing::warn!("promlite: HTTP server failed: {e}");
            }
        });
        let scrape_task = tokio::spawn(scrape::run(Arc::clone(&shared)));
        tracing::debug!("promlite listening on http://{addr}");
        Ok(Promlite {
            shared,
            addr,
            scrape_task,
            _shutdown: tx,
        })
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Replaces the scrape targets (takes effect at the next scrape round; series of removed
    /// targets go stale then).
    pub fn set_targets(&self, targets: Vec<Target>) {
        self.shared.set_targets(targets);
    }

    /// Number of completed scrape rounds (lets callers wait for data).
    pub fn scrapes(&self) -> u64 {
        self.shared.scrapes.load(Ordering::Acquire)
    }
}

impl Drop for Promlite {
    fn drop(&mut self) {
        self.scrape_task.abort();
    }
}

impl fmt::Debug for Promlite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Promlite")
            .field("url", &self.url())
            .field("scrapes", &self.scrapes())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_positions_count_lines_and_characters() {
        let e = Error::parse("ab\ncdé f", 8, "x".into());
        assert_eq!(e.to_string(), "2:5: parse error: x");
        assert_eq!(
            Error::parse("", 0, "y".into()).to_string(),
            "1:1: parse error: y"
        );
        // Not on a character boundary: moved back.
        let e = Error::parse("é", 1, "z".into());
        assert_eq!(e.to_string(), "1:1: parse error: z");
    }
}
