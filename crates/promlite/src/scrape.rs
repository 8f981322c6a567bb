//! The scrape loop: every interval, all targets in parallel, one timestamp per round.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper::header::{ACCEPT, USER_AGENT};
use hyper::{Request, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::exposition::parse_exposition;
use crate::storage::{Labels, Storage, METRIC_NAME};
use crate::{Config, Target};

/// Per-target request timeout.
pub(crate) const SCRAPE_TIMEOUT: Duration = Duration::from_secs(2);
/// Larger expositions fail the scrape.
const MAX_BODY: usize = 32 * 1024 * 1024;
const MIN_INTERVAL: Duration = Duration::from_millis(10);

/// The outcome of a target's last scrape, for `/api/v1/targets`.
#[derive(Debug, Clone)]
pub(crate) struct TargetStatus {
    pub(crate) up: bool,
    pub(crate) last_error: String,
    pub(crate) last_scrape_ms: i64,
    pub(crate) duration: Duration,
}

/// A target with its final label set.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Prepared {
    pub(crate) url: String,
    /// `job`, `instance` and the target's own labels.
    pub(crate) labels: Labels,
}

impl Prepared {
    fn new(target: Target) -> Prepared {
        let mut labels: Labels = target
            .labels
            .into_iter()
            .filter(|(k, v)| !k.starts_with("__") && !v.is_empty())
            .collect();
        labels
            .entry("job".to_string())
            .or_insert_with(|| "sandbox".to_string());
        if !labels.contains_key("instance") {
            let instance = target
                .url
                .parse::<Uri>()
                .ok()
                .and_then(|u| u.authority().map(|a| a.as_str().to_string()))
                .unwrap_or_else(|| target.url.clone());
            labels.insert("instance".to_string(), instance);
        }
        Prepared {
            url: target.url,
            labels,
        }
    }
}

pub(crate) struct Shared {
    pub(crate) config: Config,
    pub(crate) storage: RwLock<Storage>,
    targets: Mutex<Vec<Prepared>>,
    pub(crate) status: Mutex<HashMap<Prepared, TargetStatus>>,
    pub(crate) scrapes: AtomicU64,
}

/// A poisoned lock only means a panic elsewhere; the data is still consistent enough to serve.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub(crate) fn read<T>(m: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    m.read().unwrap_or_else(|e| e.into_inner())
}

fn write<T>(m: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    m.write().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    pub(crate) fn new(config: Config) -> Shared {
        Shared {
            config,
            storage: RwLock::new(Storage::new()),
            targets: Mutex::new(Vec::new()),
            status: Mutex::new(HashMap::new()),
            scrapes: AtomicU64::new(0),
        }
    }

    pub(crate) fn set_targets(&self, targets: Vec<Target>) {
        let mut prepared: Vec<Prepared> = Vec::with_capacity(targets.len());
        for t in targets {
            let p = Prepared::new(t);
            if !prepared.contains(&p) {
                prepared.push(p);
            }
        }
        *lock(&self.targets) = prepared;
    }

    pub(crate) fn targets(&self) -> Vec<Prepared> {
        lock(&self.targets).clone()
    }

    pub(crate) fn scrape_interval(&self) -> Duration {
        self.config.scrape_interval.max(MIN_INTERVAL)
    }
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

type HttpClient = Client<HttpConnector, Empty<Bytes>>;

pub(crate) async fn run(shared: std::sync::Arc<Shared>) {
    let client: HttpClient = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(0)
        .build_http();
    let mut interval = tokio::time::interval(shared.scrape_interval());
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The series each target exposed at its last scrape, to mark the missing ones stale.
    let mut previous: HashMap<Prepared, HashSet<Labels>> = HashMap::new();
    loop {
        interval.tick().await;
        let targets = shared.targets();
        let ts = now_ms();
        let results =
            futures_util::future::join_all(targets.iter().map(|t| scrape(&client, &t.url))).await;
        let mut current: HashMap<Prepared, HashSet<Labels>> = HashMap::new();
        let mut statuses = Vec::with_capacity(targets.len());
        {
            let mut storage = write(&shared.storage);
            for (target, (result, duration)) in targets.into_iter().zip(results) {
                let mut seen: HashSet<Labels> = HashSet::new();
                let (up, last_error) = match result {
                    Ok(samples) => {
                        for (scraped, value) in samples {
                            let labels = merge_labels(scraped, &target.labels);
                            // The first of duplicate series wins.
                            if seen.insert(labels.clone()) {
                                storage.append(labels, ts, value);
                            }
                        }
                        (true, String::new())
                    }
                    Err(e) => (false, e),
                };
                let scraped = seen.len();
                let mut meta = vec![("up", if up { 1.0 } else { 0.0 })];
                if up {
                    // A failed target gets `up` only.
                    meta.push(("scrape_duration_seconds", duration.as_secs_f64()));
                    meta.push(("scrape_samples_scraped", scraped as f64));
                }
                for (name, value) in meta {
                    let mut labels = target.labels.clone();
                    labels.insert(METRIC_NAME.to_string(), name.to_string());
                    seen.insert(labels.clone());
                    storage.append(labels, ts, value);
                }
                if let Some(before) = previous.remove(&target) {
                    for gone in before.difference(&seen) {
                        storage.append_stale(gone, ts);
                    }
                }
                statuses.push((
                    target.clone(),
                    TargetStatus {
                        up,
                        last_error,
                        last_scrape_ms: ts,
                        duration,
                    },
                ));
                current.insert(target, seen);
            }
            // Targets removed since the last round: all their series go stale.
            for (_, series) in previous.drain() {
                for gone in &series {
                    storage.append_stale(gone, ts);
                }
            }
            let retention = i64::try_from(shared.config.retention.as_millis()).unwrap_or(i64::MAX);
            storage.drop_before(ts.saturating_sub(retention));
        }
        previous = current;
        {
            let mut status = lock(&shared.status);
            status.retain(|k, _| previous.contains_key(k));
            status.extend(statuses);
        }
        shared.scrapes.fetch_add(1, Ordering::AcqRel);
    }
}

/// Adds the target's labels to a scraped series. A scraped label that a target label
/// overrides is kept as `exported_<name>` (Prometheus' `honor_labels: false`); empty values are
/// no label.
pub(crate) fn merge_labels(scraped: Labels, target: &Labels) -> Labels {
    let mut out: Labels = scraped.into_iter().filter(|(_, v)| !v.is_empty()).collect();
    for (k, v) in target {
        if let Some(old) = out.remove(k) {
            out.insert(format!("exported_{k}"), old);
        }
        out.insert(k.clone(), v.clone());
    }
    out
}

/// Fetches and parses one exposition; also returns how long it took.
async fn scrape(client: &HttpClient, url: &str) -> (Result<Vec<(Labels, f64)>, String>, Duration) {
    let started = Instant::now();
    let result = match tokio::time::timeout(SCRAPE_TIMEOUT, fetch(client, url)).await {
        Ok(Ok(text)) => parse_exposition(&text),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(format!(
            "Get \"{url}\": context deadline exceeded (timeout {SCRAPE_TIMEOUT:?})"
        )),
    };
    (result, started.elapsed())
}

async fn fetch(client: &HttpClient, url: &str) -> Result<String, String> {
    let uri: Uri = url
        .parse()
        .map_err(|e| format!("invalid target URL {url:?}: {e}"))?;
    if uri.scheme_str() != Some("http") {
        return Err(format!(
            "invalid target URL {url:?}: only http:// is supported"
        ));
    }
    let request = Request::get(uri)
        .header(ACCEPT, "text/plain;version=0.0.4;q=1,*/*;q=0.1")
        .header(USER_AGENT, concat!("promlite/", env!("CARGO_PKG_VERSION")))
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("invalid target URL {url:?}: {e}"))?;
    let response = client
        .request(request)
        .await
        .map_err(|e| format!("Get \"{url}\": {}", chain(&e)))?;
    let status = response.status();
    if !status.is_success() {
        return Err(format!("server returned HTTP status {status}"));
    }
    let body = Limited::new(response.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| format!("Get \"{url}\": reading the body: {e}"))?
        .to_bytes();
    String::from_utf8(body.to_vec()).map_err(|_| "the exposition is not UTF-8".to_string())
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::labels;

    #[test]
    fn target_labels_win_and_scraped_ones_are_exported() {
        let target = labels([
            ("job", "podinfo"),
            ("instance", "127.0.0.1:1"),
            ("pod", "p"),
        ]);
        let scraped = labels([
            ("__name__", "x"),
            ("job", "app"),
            ("code", "200"),
            ("empty", ""),
        ]);
        assert_eq!(
            merge_labels(scraped, &target),
            labels([
                ("__name__", "x"),
                ("code", "200"),
                ("exported_job", "app"),
                ("instance", "127.0.0.1:1"),
                ("job", "podinfo"),
                ("pod", "p"),
            ])
        );
    }

    #[test]
    fn job_and_instance_defaults() {
        let p = Prepared::new(Target {
            url: "http://127.0.0.1:4312/metrics".into(),
            labels: [("__meta".to_string(), "x".to_string())].into(),
        });
        assert_eq!(
            p.labels,
            labels([("instance", "127.0.0.1:4312"), ("job", "sandbox")])
        );
        let p = Prepared::new(Target {
            url: "http://h/metrics".into(),
            labels: [
                ("job".to_string(), "j".to_string()),
                ("instance".to_string(), "i".to_string()),
            ]
            .into(),
        });
        assert_eq!(p.labels, labels([("instance", "i"), ("job", "j")]));
    }
}
