//! The demo app the sandbox releases (`aviary demo-app`, hidden): a small HTTP service whose
//! behaviour its image tag chooses, and which exposes the metrics a real cluster would have
//! for it, so that Flagger's built-in queries and the statistical judge find real data.
//!
//! * `GET /` answers `{"version", "workload", "pod", "message"}` with `x-version` and
//!   `x-workload` headers (the image tag, and the Deployment the process runs for, e.g.
//!   `podinfo` or `podinfo-primary`), after a latency drawn from the version's range; a broken version answers a share of its requests
//!   with a 500 (spread evenly: exactly that share of any run of requests);
//! * `GET /healthz`, `GET /readyz`: 200;
//! * `GET /metrics`: podinfo's `http_request_duration_seconds` histogram (labels `method`,
//!   `path`, `status`) and `http_requests_total`, plus `istio_requests_total` and
//!   `istio_request_duration_milliseconds` as an Istio sidecar would report them (reporter
//!   `destination`), so the `istio` provider's built-in queries work too.
//!
//! The process prints `listening on ADDR` as its first line on stdout and stops when its
//! stdin closes (the sandbox that started it is gone) or on SIGTERM/SIGINT.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use clap::Args;
use tokio::io::AsyncReadExt;

use aviary_core::exit::Exit;

/// podinfo's histogram buckets (seconds).
const SECONDS_BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Istio's default duration buckets (milliseconds).
const MILLIS_BUCKETS: [f64; 15] = [
    1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0,
    60000.0,
];

/// `aviary demo-app`.
#[derive(Debug, Args)]
pub struct DemoAppArgs {
    /// Address to listen on (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// The image this process stands for; its tag picks the behaviour.
    #[arg(long)]
    pub image: String,
    /// The Deployment it runs for (Istio's `destination_workload`).
    #[arg(long)]
    pub workload: String,
    /// The namespace of that Deployment.
    #[arg(long, default_value = "default")]
    pub namespace: String,
    /// The pod name it answers with.
    #[arg(long)]
    pub pod: String,
}

/// What a version of the demo app does.
#[derive(Debug, Clone, PartialEq)]
pub struct Behaviour {
    /// The image tag, e.g. `2.0.0-errors`.
    pub version: String,
    /// Share of requests answered with a 500, in [0, 1].
    pub error_rate: f64,
    /// Latency range of a request.
    pub latency: (Duration, Duration),
}

impl Behaviour {
    /// The behaviour of an image: the tag's suffix `-errors` answers 20% of requests with 500,
    /// `-slow` is four times slower (40-80 ms instead of 10-20 ms); any other tag is healthy.
    pub fn from_image(image: &str) -> Behaviour {
        let version = image_tag(image).to_string();
        let mut b = Behaviour {
            version: version.clone(),
            error_rate: 0.0,
            latency: (Duration::from_millis(10), Duration::from_millis(20)),
        };
        for part in version.split('-').skip(1) {
            match part {
                "errors" => b.error_rate = 0.2,
                "slow" => b.latency = (Duration::from_millis(40), Duration::from_millis(80)),
                _ => {}
            }
        }
        b
    }
}

/// The tag of an image reference (`latest` when it has none); a digest is ignored.
pub fn image_tag(image: &str) -> &str {
    let without_digest = image.split('@').next().unwrap_or(image);
    let last = without_digest.rsplit('/').next().unwrap_or(without_digest);
    match last.split_once(':') {
        Some((_, tag)) if !tag.is_empty() => tag,
        _ => "latest",
    }
}

#[derive(Default)]
struct Series {
    count: u64,
    sum_seconds: f64,
    seconds_buckets: [u64; SECONDS_BUCKETS.len()],
    millis_buckets: [u64; MILLIS_BUCKETS.len()],
}

impl Series {
    fn observe(&mut self, seconds: f64) {
        self.count += 1;
        self.sum_seconds += seconds;
        for (i, le) in SECONDS_BUCKETS.iter().enumerate() {
            if seconds <= *le {
                self.seconds_buckets[i] += 1;
            }
        }
        let millis = seconds * 1000.0;
        for (i, le) in MILLIS_BUCKETS.iter().enumerate() {
            if millis <= *le {
                self.millis_buckets[i] += 1;
            }
        }
    }
}

struct Counters {
    served: u64,
    rng: u64,
    ok: Series,
    failed: Series,
}

struct Demo {
    behaviour: Behaviour,
    workload: String,
    namespace: String,
    pod: String,
    counters: Mutex<Counters>,
}

impl Demo {
    /// Decides the next request: whether it fails and how long it takes.
    fn next(&self) -> (bool, Duration) {
        let Ok(mut c) = self.counters.lock() else {
            return (false, self.behaviour.latency.0);
        };
        let n = c.served as f64;
        c.served += 1;
        let rate = self.behaviour.error_rate;
        let fails = ((n + 1.0) * rate).floor() > (n * rate).floor();
        // xorshift64: cheap, and the same pod gives the same sequence.
        c.rng ^= c.rng << 13;
        c.rng ^= c.rng >> 7;
        c.rng ^= c.rng << 17;
        let (lo, hi) = self.behaviour.latency;
        let span = hi.saturating_sub(lo).as_micros() as u64;
        let jitter = if span == 0 { 0 } else { c.rng % span };
        (fails, lo + Duration::from_micros(jitter))
    }

    fn record(&self, failed: bool, took: Duration) {
        if let Ok(mut c) = self.counters.lock() {
            let series = if failed { &mut c.failed } else { &mut c.ok };
            series.observe(took.as_secs_f64());
        }
    }

    fn exposition(&self) -> String {
        let Ok(c) = self.counters.lock() else {
            return String::new();
        };
        let mut out = String::new();
        let statuses = [("200", &c.ok), ("500", &c.failed)];
        out.push_str("# HELP http_request_duration_seconds Request durations.\n");
        out.push_str("# TYPE http_request_duration_seconds histogram\n");
        for (status, s) in statuses {
            let labels = format!("method=\"GET\",path=\"root\",status=\"{status}\"");
            let buckets = SECONDS_BUCKETS.iter().zip(s.seconds_buckets);
            let name = "http_request_duration_seconds";
            histogram(&mut out, name, &labels, buckets, s.sum_seconds, s.count);
        }
        out.push_str("# HELP http_requests_total Requests served.\n");
        out.push_str("# TYPE http_requests_total counter\n");
        for (status, s) in statuses {
            let _ = writeln!(
                out,
                "http_requests_total{{status=\"{status}\"}} {}",
                s.count
            );
        }
        let istio = format!(
            "reporter=\"destination\",destination_workload=\"{}\",destination_workload_namespace=\"{}\"",
            escape(&self.workload),
            escape(&self.namespace)
        );
        out.push_str("# TYPE istio_requests_total counter\n");
        for (status, s) in statuses {
            let _ = writeln!(
                out,
                "istio_requests_total{{{istio},response_code=\"{status}\"}} {}",
                s.count
            );
        }
        out.push_str("# TYPE istio_request_duration_milliseconds histogram\n");
        for (status, s) in statuses {
            let labels = format!("{istio},response_code=\"{status}\"");
            let buckets = MILLIS_BUCKETS.iter().zip(s.millis_buckets);
            let name = "istio_request_duration_milliseconds";
            histogram(
                &mut out,
                name,
                &labels,
                buckets,
                s.sum_seconds * 1000.0,
                s.count,
            );
        }
        out
    }
}

/// One histogram series in the exposition format: its cumulative buckets, `+Inf`, sum, count.
fn histogram<'a>(
    out: &mut String,
    name: &str,
    labels: &str,
    buckets: impl Iterator<Item = (&'a f64, u64)>,
    sum: f64,
    count: u64,
) {
    for (le, n) in buckets {
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{le}\"}} {n}");
    }
    let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {count}");
    let _ = writeln!(out, "{name}_sum{{{labels}}} {sum}");
    let _ = writeln!(out, "{name}_count{{{labels}}} {count}");
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

async fn root(State(demo): State<Arc<Demo>>) -> Response {
    let started = Instant::now();
    let (fails, latency) = demo.next();
    tokio::time::sleep(latency).await;
    let version = HeaderValue::from_str(&demo.behaviour.version)
        .unwrap_or_else(|_| HeaderValue::from_static("unknown"));
    let workload = HeaderValue::from_str(&demo.workload)
        .unwrap_or_else(|_| HeaderValue::from_static("unknown"));
    let (status, body) = if fails {
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            serde_json::json!({
                "error": "injected failure",
                "version": demo.behaviour.version,
                "workload": demo.workload,
                "pod": demo.pod,
            }),
        )
    } else {
        (
            StatusCode::OK,
            serde_json::json!({
                "version": demo.behaviour.version,
                "workload": demo.workload,
                "pod": demo.pod,
                "message": format!("greetings from demo {}", demo.behaviour.version),
            }),
        )
    };
    demo.record(fails, started.elapsed());
    (
        status,
        [
            ("x-version", version),
            ("x-workload", workload),
            (
                header::CONTENT_TYPE.as_str(),
                HeaderValue::from_static("application/json"),
            ),
        ],
        body.to_string(),
    )
        .into_response()
}

async fn metrics(State(demo): State<Arc<Demo>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4"),
        )],
        demo.exposition(),
    )
        .into_response()
}

/// Runs the demo app until stdin closes or a signal arrives.
pub fn run(args: &DemoAppArgs) -> std::io::Result<Exit> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(serve(args))?;
    Ok(Exit::Success)
}

async fn serve(args: &DemoAppArgs) -> std::io::Result<()> {
    let seed = args
        .pod
        .bytes()
        .fold(0x9E37_79B9_7F4A_7C15u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01B3)
        })
        .max(1);
    let demo = Arc::new(Demo {
        behaviour: Behaviour::from_image(&args.image),
        workload: args.workload.clone(),
        namespace: args.namespace.clone(),
        pod: args.pod.clone(),
        counters: Mutex::new(Counters {
            served: 0,
            rng: seed,
            ok: Series::default(),
            failed: Series::default(),
        }),
    });
    let app = Router::new()
        .route("/", get(root))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(|| async { "ok" }))
        .route("/metrics", get(metrics))
        .with_state(demo);
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    let addr = listener.local_addr()?;
    {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on {addr}")?;
        out.flush()?;
    }
    let stop = async {
        let mut stdin = tokio::io::stdin();
        let mut buf = [0u8; 64];
        let stdin_closed = async move {
            loop {
                match stdin.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        };
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        let terminated = async move {
            match term.as_mut() {
                Some(t) => {
                    t.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = stdin_closed => {}
            _ = terminated => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    };
    axum::serve(listener, app)
        .with_graceful_shutdown(stop)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn behaviour_follows_the_tag() {
        let good = Behaviour::from_image("ghcr.io/aviary-dev/demo:2.0.0");
        assert_eq!(good.version, "2.0.0");
        assert_eq!(good.error_rate, 0.0);
        let bad = Behaviour::from_image("ghcr.io/aviary-dev/demo:2.0.0-errors@sha256:abc");
        assert_eq!(bad.version, "2.0.0-errors");
        assert_eq!(bad.error_rate, 0.2);
        let slow = Behaviour::from_image("localhost:5000/demo:2.0.0-slow");
        assert_eq!(slow.latency.0, Duration::from_millis(40));
        assert_eq!(image_tag("localhost:5000/demo"), "latest");
    }

    #[test]
    fn errors_are_spread_evenly_and_exactly() {
        let demo = Demo {
            behaviour: Behaviour::from_image("demo:2.0.0-errors"),
            workload: "podinfo".into(),
            namespace: "prod".into(),
            pod: "podinfo-abc-def".into(),
            counters: Mutex::new(Counters {
                served: 0,
                rng: 7,
                ok: Series::default(),
                failed: Series::default(),
            }),
        };
        let fails: Vec<bool> = (0..50).map(|_| demo.next().0).collect();
        // Every window of 5 consecutive requests holds exactly one failure.
        for w in fails.windows(5) {
            assert_eq!(w.iter().filter(|f| **f).count(), 1, "{fails:?}");
        }
        let lat = demo.next().1;
        assert!(lat >= Duration::from_millis(10) && lat < Duration::from_millis(20));
    }

    #[test]
    fn exposition_counts_buckets_cumulatively() {
        let mut s = Series::default();
        s.observe(0.012);
        s.observe(0.03);
        assert_eq!(s.seconds_buckets[..4], [0, 0, 1, 2]);
        assert_eq!(s.millis_buckets[3..6], [0, 1, 2]);
    }
}
