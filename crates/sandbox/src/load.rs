//! The sandbox's clients: a paced HTTP load on the traffic split's frontend, recording what
//! every request saw (status, the version and the workload that answered, when it was sent
//! and answered, latency), so that a test or the
//! live view can tell from the client's side where traffic went and how it fared.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// What the load sends.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// The frontend.
    pub target: SocketAddr,
    /// The `Host` of the requests (the service's host name).
    pub host: String,
    /// Requests per second.
    pub rate: u32,
    /// At most this many requests in flight.
    pub concurrency: usize,
    /// Every n-th request carries this header (an A/B test's audience), when set.
    pub tagged: Option<TaggedRequests>,
    /// Every n-th request goes to a preview host instead of the main one, when set (it wins
    /// over `tagged` when both fall on the same request).
    pub preview: Option<PreviewRequests>,
}

/// A share of requests sent to the canary's preview host. They are recorded apart
/// ([`Load::previews_since`]): [`Load::since`] and [`Load::all`] hold the main host's only.
#[derive(Debug, Clone)]
pub struct PreviewRequests {
    pub every: u32,
    pub host: String,
}

/// A share of requests carrying one header.
#[derive(Debug, Clone)]
pub struct TaggedRequests {
    pub every: u32,
    pub header: String,
    pub value: String,
}

/// One request as the client saw it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Sample {
    /// When it was sent (Unix milliseconds).
    pub sent_ms: u64,
    /// HTTP status; 0 when no answer came (connection refused, timeout).
    pub status: u16,
    /// The `x-version` the answer carried.
    pub version: Option<String>,
    /// The `x-workload` the answer carried: the Deployment whose process served it
    /// (`podinfo` for the canary, `podinfo-primary` for the primary).
    pub workload: Option<String>,
    /// When the answer (or the failure) came (Unix milliseconds). The proxy routed the request
    /// somewhere between `sent_ms` and this.
    pub answered_ms: u64,
    /// Round-trip time.
    pub latency_ms: f64,
    /// Whether it carried the A/B header.
    pub tagged: bool,
    /// Whether it went to the preview host.
    #[serde(default)]
    pub preview: bool,
}

/// A summary of some samples.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Stats {
    pub requests: u64,
    /// Answers per version.
    pub versions: BTreeMap<String, u64>,
    /// 5xx answers and requests that got no answer.
    pub errors: u64,
    pub p99_ms: f64,
}

impl Stats {
    pub fn of<'a>(samples: impl IntoIterator<Item = &'a Sample>) -> Stats {
        let mut stats = Stats::default();
        let mut latencies = Vec::new();
        for s in samples {
            stats.requests += 1;
            if let Some(v) = &s.version {
                *stats.versions.entry(v.clone()).or_default() += 1;
            }
            if s.status == 0 || s.status >= 500 {
                stats.errors += 1;
            }
            latencies.push(s.latency_ms);
        }
        latencies.sort_by(f64::total_cmp);
        if !latencies.is_empty() {
            let rank = ((latencies.len() as f64) * 0.99).ceil() as usize;
            stats.p99_ms = latencies[rank.clamp(1, latencies.len()) - 1];
        }
        stats
    }

    /// Share of requests answered by `version`, in percent.
    pub fn share(&self, version: &str) -> f64 {
        if self.requests == 0 {
            return 0.0;
        }
        100.0 * self.versions.get(version).copied().unwrap_or(0) as f64 / self.requests as f64
    }

    /// Share of failed requests, in percent.
    pub fn error_rate(&self) -> f64 {
        if self.requests == 0 {
            return 0.0;
        }
        100.0 * self.errors as f64 / self.requests as f64
    }
}

/// A running load. Dropping it stops the clients.
pub struct Load {
    samples: Arc<Mutex<Vec<Sample>>>,
    /// One permit per client; a request in flight holds one.
    permits: Arc<tokio::sync::Semaphore>,
    concurrency: u32,
    active: Arc<std::sync::atomic::AtomicBool>,
    stop: tokio::sync::watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Load {
    /// Starts the clients on the current runtime, paused until [`Load::resume`].
    pub fn start(config: LoadConfig) -> Result<Load, reqwest::Error> {
        aviary_kube::http::install_crypto_provider();
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .pool_max_idle_per_host(config.concurrency.max(1))
            .build()?;
        let samples = Arc::new(Mutex::new(Vec::new()));
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let url = format!("http://{}/", config.target);
        let concurrency = u32::try_from(config.concurrency.clamp(1, 1024)).unwrap_or(1);
        let permits = Arc::new(tokio::sync::Semaphore::new(concurrency as usize));
        let in_flight = permits.clone();
        let recorded = samples.clone();
        let active = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let sending = active.clone();
        let task = tokio::spawn(async move {
            let period = Duration::from_secs_f64(1.0 / f64::from(config.rate.max(1)));
            let mut ticker = tokio::time::interval(period);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut n: u64 = 0;
            loop {
                tokio::select! {
                    _ = ticker.tick() => {}
                    _ = stopped.changed() => break,
                }
                if !sending.load(std::sync::atomic::Ordering::Relaxed) {
                    continue;
                }
                let Ok(permit) = in_flight.clone().try_acquire_owned() else {
                    continue; // all clients busy: this beat is skipped, as a closed-loop client would
                };
                n += 1;
                let preview = config
                    .preview
                    .as_ref()
                    .filter(|p| p.every > 0 && n % u64::from(p.every) == 0)
                    .map(|p| p.host.clone());
                let tag = config
                    .tagged
                    .as_ref()
                    .filter(|t| preview.is_none() && t.every > 0 && n % u64::from(t.every) == 0)
                    .map(|t| (t.header.clone(), t.value.clone()));
                let client = client.clone();
                let url = url.clone();
                let recorded = recorded.clone();
                let main_host = config.host.clone();
                tokio::spawn(async move {
                    let sent_ms = aviary_kube::runner::wall_ms();
                    let started = Instant::now();
                    let host = preview.as_deref().unwrap_or(&main_host);
                    let mut request = client.get(&url).header("host", host);
                    if let Some((h, v)) = &tag {
                        request = request.header(h.as_str(), v.as_str());
                    }
                    let (status, version, workload) = match request.send().await {
                        Ok(response) => {
                            let header = |name: &str| {
                                response
                                    .headers()
                                    .get(name)
                                    .and_then(|v| v.to_str().ok())
                                    .map(str::to_string)
                            };
                            let (version, workload) = (header("x-version"), header("x-workload"));
                            let status = response.status().as_u16();
                            // Read the body so the connection goes back to the pool.
                            let _ = response.bytes().await;
                            (status, version, workload)
                        }
                        Err(_) => (0, None, None),
                    };
                    let sample = Sample {
                        sent_ms,
                        status,
                        version,
                        workload,
                        answered_ms: aviary_kube::runner::wall_ms(),
                        latency_ms: started.elapsed().as_secs_f64() * 1000.0,
                        tagged: tag.is_some(),
                        preview: preview.is_some(),
                    };
                    if let Ok(mut all) = recorded.lock() {
                        all.push(sample);
                    }
                    drop(permit);
                });
            }
        });
        Ok(Load {
            samples,
            permits,
            concurrency,
            active,
            stop,
            task: Some(task),
        })
    }

    /// Starts (or resumes) sending.
    pub fn resume(&self) {
        self.active
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether the clients are sending.
    pub fn is_active(&self) -> bool {
        self.active.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The samples of requests to the main host sent at or after `since_ms`.
    pub fn since(&self, since_ms: u64) -> Vec<Sample> {
        self.recorded(since_ms, false)
    }

    /// The samples of requests to the preview host sent at or after `since_ms`.
    pub fn previews_since(&self, since_ms: u64) -> Vec<Sample> {
        self.recorded(since_ms, true)
    }

    fn recorded(&self, since_ms: u64, preview: bool) -> Vec<Sample> {
        self.samples
            .lock()
            .map(|all| {
                all.iter()
                    .filter(|s| s.sent_ms >= since_ms && s.preview == preview)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Every sample of the main host so far.
    pub fn all(&self) -> Vec<Sample> {
        self.since(0)
    }

    /// Stops sending and waits for the requests in flight to be answered (or to time out:
    /// 5 s); returns every sample.
    pub async fn stop(mut self) -> Vec<Sample> {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        // No request starts any more; each one in flight holds a permit until it is recorded.
        let all_back = self.permits.acquire_many(self.concurrency);
        if tokio::time::timeout(Duration::from_secs(6), all_back)
            .await
            .is_err()
        {
            tracing::warn!(
                "sandbox: client requests still in flight 6 s after the clients stopped"
            );
        }
        self.all()
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(status: u16, version: &str, latency_ms: f64) -> Sample {
        Sample {
            sent_ms: 0,
            status,
            version: Some(version.into()),
            workload: Some("podinfo-primary".into()),
            answered_ms: 0,
            latency_ms,
            tagged: false,
            preview: false,
        }
    }

    #[test]
    fn stats_count_versions_errors_and_p99() {
        let mut samples: Vec<Sample> = (0..99).map(|i| sample(200, "1.0.0", i as f64)).collect();
        samples.push(sample(500, "2.0.0", 1000.0));
        samples.push(Sample {
            version: None,
            ..sample(0, "", 5.0)
        });
        let s = Stats::of(&samples);
        assert_eq!(s.requests, 101);
        assert_eq!(s.versions["1.0.0"], 99);
        assert_eq!(s.errors, 2);
        assert!((s.share("2.0.0") - 100.0 / 101.0).abs() < 1e-9);
        // rank ceil(101 * 0.99) = 100 → the 100th smallest latency: 98 ms.
        assert_eq!(s.p99_ms, 98.0);
        assert_eq!(Stats::of(&[]).error_rate(), 0.0);
    }
}
