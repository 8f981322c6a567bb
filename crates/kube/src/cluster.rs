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
    let client = Client::try_from(config).map_err(|e| ClusterError::Client {
        source: Box::new(e),
    })?;
    Ok((client, namespace))
}

/// Server-side apply as aviary, taking over fields another manager set before.
pub fn apply_params() -> PatchParams {
    PatchParams::apply(FIELD_MANAGER).force()
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
}
