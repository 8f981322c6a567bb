//! Cluster access: a kube client from a kubeconfig (or in-cluster config), and the conventions every
//! object aviary writes follows.

use std::future::Future;
use std::path::Path;
use std::time::Duration;

use kube::api::PatchParams;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

/// The field manager of every server-side apply aviary makes.
pub const FIELD_MANAGER: &str = "aviary";
/// The label on every object aviary creates.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "aviary");

/// Why the cluster could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The kubeconfig (the file given, the default one, or the in-cluster service account)
    /// could not be read or used.
    #[error("cannot load the kubeconfig: {}{source}", path.as_ref().map(|p| format!("{p}: ")).unwrap_or_default())]
    Kubeconfig {
        /// The file, when one was named.
        path: Option<String>,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A client could not be made from a kubeconfig that loaded.
    #[error("cannot load the kubeconfig: {source}")]
    Client {
        #[source]
        source: Box<kube::Error>,
    },
    #[error("{context}: {source}")]
    Api {
        context: String,
        #[source]
        source: Box<kube::Error>,
    },
    #[error("{0}")]
    Invalid(String),
}

impl ClusterError {
    pub fn api(context: impl Into<String>, source: kube::Error) -> Self {
        ClusterError::Api {
            context: context.into(),
            source: Box::new(source),
        }
    }

    /// The API answered 404.
    pub fn is_not_found(&self) -> bool {
        matches!(self, ClusterError::Api { source, .. } if matches!(source.as_ref(), kube::Error::Api(s) if s.code == 404))
    }
}

/// Connects with `--kubeconfig`/`--context`, else `KUBECONFIG`/`~/.kube/config`, else the
/// in-cluster service account. Returns the client and the context's default namespace.
pub async fn connect(
    kubeconfig: Option<&Path>,
    context: Option<&str>,
    request_timeout: Duration,
) -> Result<(Client, String), ClusterError> {
    let options = KubeConfigOptions {
        context: context.map(str::to_string),
        ..KubeConfigOptions::default()
    };
    let failed = |path: Option<&Path>| {
        let path = path.map(|p| p.display().to_string());
        move |e: Box<dyn std::error::Error + Send + Sync>| ClusterError::Kubeconfig {
            path,
            source: e,
        }
    };
    let config = match kubeconfig {
        Some(path) => {
            let kc = Kubeconfig::read_from(path).map_err(|e| failed(Some(path))(e.into()))?;
            Config::from_custom_kubeconfig(kc, &options)
                .await
                .map_err(|e| failed(Some(path))(e.into()))?
        }
        None if context.is_some() => Config::from_kubeconfig(&options)
            .await
            .map_err(|e| failed(None)(e.into()))?,
        None => Config::infer().await.map_err(|e| failed(None)(e.into()))?,
    };
    let mut config = config;
    // A request that hangs must not hang the rollout: give up and let `retry` try again.
    config.connect_timeout = Some(request_timeout);
    config.read_timeout = Some(request_timeout);
    config.write_timeout = Some(request_timeout);
    // One retry policy, ours ([`retry`], with a total deadline): kube's own layer (15 attempts,
    // backoff up to minutes) would stack under it and keep a command retrying for half an hour.
    config.default_retry = false;
    let namespace = config.default_namespace.clone();
    // One client for the whole command (every canary of a release shares it), with at most
    // MAX_IN_FLIGHT requests at once: a release of hundreds of canaries queues its requests
    // instead of opening hundreds of connections to the API server.
    let client = kube::client::ClientBuilder::try_from(config)
        .map_err(|e| ClusterError::Client {
            source: Box::new(e),
        })?
        .with_layer(&tower::limit::ConcurrencyLimitLayer::new(MAX_IN_FLIGHT))
        .build();
    Ok((client, namespace))
}

/// The API requests one command has in flight at most (see [`connect`]).
pub const MAX_IN_FLIGHT: usize = 32;

/// Server-side apply as aviary, taking over fields another manager set before.
pub fn apply_params() -> PatchParams {
    PatchParams::apply(FIELD_MANAGER).force()
}

/// A LIST of the objects aviary made (those with its managed-by label).
pub fn managed_by_aviary() -> kube::api::ListParams {
    kube::api::ListParams::default().labels(&format!("{}={}", MANAGED_BY.0, MANAGED_BY.1))
}

/// `labels` plus the managed-by label.
pub fn managed_labels(
    mut labels: std::collections::BTreeMap<String, String>,
) -> std::collections::BTreeMap<String, String> {
    labels.insert(MANAGED_BY.0.to_string(), MANAGED_BY.1.to_string());
    labels
}

/// Whether an API error is worth trying again: server errors, throttling, conflicts (the caller
/// re-sends an idempotent request), timeouts and broken connections. Not: 404, 422, 403, 400.
pub fn is_transient(e: &kube::Error) -> bool {
    match e {
        kube::Error::Api(s) => {
            s.code >= 500 || s.code == 429 || (s.code == 409 && s.reason != "AlreadyExists")
        }
        kube::Error::HyperError(_) | kube::Error::Service(_) | kube::Error::ReadEvents(_) => true,
        _ => false,
    }
}

/// Attempts per request before giving up.
const ATTEMPTS: u32 = 8;
/// No new attempt starts this long after the first one did: with one attempt's own timeout on
/// top (`--request-timeout`), a failing call is reported within about half a minute at worst.
pub const RETRY_BUDGET: Duration = Duration::from_secs(12);

/// Runs an idempotent API call, retrying transient failures with exponential backoff
/// (100 ms doubling to 3.2 s; at most eight attempts and none started after [`RETRY_BUDGET`]).
pub async fn retry<T, F, Fut>(what: &str, call: F) -> Result<T, ClusterError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, kube::Error>>,
{
    retry_within(what, RETRY_BUDGET, call).await
}

/// [`retry`] with another budget: how long after the first attempt a new one may still start.
pub async fn retry_within<T, F, Fut>(
    what: &str,
    budget: Duration,
    mut call: F,
) -> Result<T, ClusterError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, kube::Error>>,
{
    let started = tokio::time::Instant::now();
    let mut delay = Duration::from_millis(100);
    let mut attempt = 1;
    loop {
        match call().await {
            Ok(value) => return Ok(value),
            Err(e)
                if attempt < ATTEMPTS
                    && is_transient(&e)
                    && started.elapsed() + delay <= budget =>
            {
                tracing::debug!(attempt, "{what}: {e}; retrying in {delay:?}");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_millis(3200));
                attempt += 1;
            }
            Err(e) => return Err(ClusterError::api(what, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn unavailable() -> kube::Error {
        kube::Error::Api(
            kube::core::Status::failure("unavailable", "ServiceUnavailable")
                .with_code(503)
                .boxed(),
        )
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_that_always_fails_gives_up_within_the_budget() {
        let calls = AtomicU32::new(0);
        let started = tokio::time::Instant::now();
        let result: Result<(), _> = retry("read ConfigMap x", || {
            calls.fetch_add(1, Ordering::SeqCst);
            async { Err(unavailable()) }
        })
        .await;
        assert!(result.is_err());
        assert!(started.elapsed() <= RETRY_BUDGET, "{:?}", started.elapsed());
        assert_eq!(calls.load(Ordering::SeqCst), ATTEMPTS);
        let small: Result<(), _> = retry_within("x", Duration::from_millis(350), || async {
            Err(unavailable())
        })
        .await;
        assert!(small.is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn a_permanent_error_is_not_retried() {
        let calls = AtomicU32::new(0);
        let result: Result<(), _> = retry("x", || {
            calls.fetch_add(1, Ordering::SeqCst);
            async {
                Err(kube::Error::Api(
                    kube::core::Status::failure("nope", "NotFound")
                        .with_code(404)
                        .boxed(),
                ))
            }
        })
        .await;
        assert!(result.is_err_and(|e| e.is_not_found()));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    /// A client of [`connect`] sends at most [`MAX_IN_FLIGHT`] requests at once, however many
    /// callers share it: an API server that holds every request sees no more than that, and one
    /// more as soon as one is answered.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_shared_client_keeps_at_most_its_cap_of_requests_in_flight() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = match tokio::net::TcpListener::bind("127.0.0.1:0").await {
            Ok(l) => l,
            Err(e) => panic!("{e}"),
        };
        let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
        let dir = std::env::temp_dir().join(format!("aviary-cap-{}-{port}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let kubeconfig = dir.join("kubeconfig");
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters: [{{name: c, cluster: {{server: 'http://127.0.0.1:{port}'}}}}]\n\
             users: [{{name: u, user: {{}}}}]\ncontexts: [{{name: x, context: {{cluster: c, user: u, namespace: test}}}}]\n\
             current-context: x\n"
        );
        if let Err(e) = std::fs::write(&kubeconfig, text) {
            panic!("{e}");
        }
        // Every request is held until the test releases one; arrivals are counted.
        let (arrived_tx, mut arrived) = tokio::sync::mpsc::unbounded_channel::<()>();
        let release = std::sync::Arc::new(tokio::sync::Semaphore::new(0));
        let gate = release.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let (tx, gate) = (arrived_tx.clone(), gate.clone());
                tokio::spawn(async move {
                    loop {
                        let mut buf = [0u8; 4096];
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(_) => {}
                        }
                        let _ = tx.send(());
                        match gate.acquire().await {
                            Ok(permit) => permit.forget(),
                            Err(_) => return,
                        }
                        let body =
                            r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"x"}}"#;
                        let reply = format!(
                            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                            body.len()
                        );
                        if stream.write_all(reply.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        let (client, _) = match connect(Some(&kubeconfig), None, Duration::from_secs(60)).await {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        };
        let callers = MAX_IN_FLIGHT * 3;
        let mut calls = tokio::task::JoinSet::new();
        for _ in 0..callers {
            let api: kube::Api<k8s_openapi::api::core::v1::ConfigMap> =
                kube::Api::namespaced(client.clone(), "test");
            calls.spawn(async move { api.get("x").await.is_ok() });
        }
        let mut seen = 0;
        while seen < MAX_IN_FLIGHT {
            if arrived.recv().await.is_some() {
                seen += 1;
            }
        }
        // Held at the cap: nothing more arrives while no request is answered.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            arrived.try_recv().is_err(),
            "more than {MAX_IN_FLIGHT} requests in flight"
        );
        // One answer lets exactly one more through.
        release.add_permits(1);
        if arrived.recv().await.is_some() {
            seen += 1;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            arrived.try_recv().is_err(),
            "one answer let more than one request through"
        );
        release.add_permits(callers);
        let mut ok = 0;
        while let Some(done) = calls.join_next().await {
            if matches!(done, Ok(true)) {
                ok += 1;
            }
        }
        assert_eq!(
            ok, callers,
            "every caller got its answer ({seen} seen before)"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
