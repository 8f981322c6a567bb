//! `gs://bucket/path` objects through `object_store`: Cloud Deploy hands its custom targets GCS
//! paths for the release source, the rendered manifest and `results.json`.
//!
//! Credentials are Google's usual ones (`GOOGLE_APPLICATION_CREDENTIALS`,
//! `GOOGLE_SERVICE_ACCOUNT*`, else the metadata server Cloud Build provides). `AVIARY_GCS_ENDPOINT`
//! points at a GCS-compatible server instead (a local emulator), without OAuth.
//!
//! GCS is not optional (Cloud Deploy needs the files), but it is bounded: each operation, its
//! retries included, must finish within `AVIARY_GCS_TIMEOUT` (default [`DEFAULT_TIMEOUT`]), a
//! connection must open within [`aviary_kube::http::CONNECT_TIMEOUT`], and an object is read chunk by
//! chunk up to a cap that depends on what it is ([`SOURCE_MAX`], [`MANIFEST_MAX`],
//! [`KUBECONFIG_MAX`]). Past either, the error says which and the action fails (exit 3).

use std::time::Duration;

use futures::StreamExt;

use crate::Env;
use object_store::gcp::{GoogleCloudStorage, GoogleCloudStorageBuilder, GoogleConfigKey};
use object_store::path::Path as ObjectPath;
use object_store::{ClientConfigKey, ObjectStoreExt, PutPayload, RetryConfig};

/// Each GCS operation, retries included (`AVIARY_GCS_TIMEOUT` overrides it).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);

/// The largest release source read (a tar.gz of a Skaffold project: manifests and config, not
/// the application; the whole archive is held in memory to unpack it).
pub const SOURCE_MAX: usize = 256 * 1024 * 1024;
/// The largest rendered manifest read (the API server takes objects up to ~1.5 MiB each: 64 MiB
/// is several hundred large objects).
pub const MANIFEST_MAX: usize = 64 * 1024 * 1024;
/// The largest kubeconfig read (one with embedded certificates is a few KiB).
pub const KUBECONFIG_MAX: usize = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum GcsError {
    #[error("{url:?} is not a gs:// URL with a bucket and an object (gs://BUCKET/PATH)")]
    BadUrl { url: String },
    #[error("{url}: {}", aviary_core::urls::redact_in_text(&.source.to_string()))]
    Store {
        url: String,
        #[source]
        source: object_store::Error,
    },
    #[error("{url}: GCS did not answer within {} (retries included); set AVIARY_GCS_TIMEOUT for a longer limit", aviary_core::spec::duration::format_human(*.after))]
    Timeout { url: String, after: Duration },
    #[error("{url}: the {what} is larger than {} (aviary reads at most that of it)", aviary_kube::http::size(*.cap))]
    TooLarge {
        url: String,
        what: &'static str,
        cap: usize,
    },
}

impl GcsError {
    /// Whether the object simply is not there.
    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            GcsError::Store {
                source: object_store::Error::NotFound { .. },
                ..
            }
        )
    }
}

/// A `gs://` URL split into bucket and object path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GsUrl {
    pub bucket: String,
    pub path: String,
}

impl GsUrl {
    pub fn parse(url: &str) -> Result<GsUrl, GcsError> {
        let bad = || GcsError::BadUrl {
            url: url.to_string(),
        };
        let rest = url.strip_prefix("gs://").ok_or_else(bad)?;
        let (bucket, path) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(bad());
        }
        Ok(GsUrl {
            bucket: bucket.to_string(),
            path: path.trim_matches('/').to_string(),
        })
    }

    /// `self` as a directory with `name` in it.
    pub fn join(&self, name: &str) -> GsUrl {
        let path = if self.path.is_empty() {
            name.to_string()
        } else {
            format!("{}/{name}", self.path)
        };
        GsUrl {
            bucket: self.bucket.clone(),
            path,
        }
    }
}

impl std::fmt::Display for GsUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "gs://{}/{}", self.bucket, self.path)
    }
}

/// Where and how long: read once from the step's environment (`AVIARY_GCS_ENDPOINT`,
/// `AVIARY_GCS_TIMEOUT`); Google's credentials are found by `object_store` as usual.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gcs {
    /// A GCS-compatible server to use instead of Google's (no OAuth).
    pub endpoint: Option<String>,
    /// Each operation, retries included.
    pub timeout: Duration,
}

impl Gcs {
    pub fn from_env(env: &Env) -> Gcs {
        Gcs {
            endpoint: env("AVIARY_GCS_ENDPOINT").filter(|e| !e.trim().is_empty()),
            timeout: aviary_kube::http::timeout_from(
                "AVIARY_GCS_TIMEOUT",
                env("AVIARY_GCS_TIMEOUT"),
                DEFAULT_TIMEOUT,
            ),
        }
    }

    /// Reads an object of at most `cap` bytes; `what` names it in messages ("release source").
    pub async fn get(
        &self,
        url: &GsUrl,
        what: &'static str,
        cap: usize,
    ) -> Result<Vec<u8>, GcsError> {
        get(self, url, what, cap).await
    }

    /// Writes an object (replacing it).
    pub async fn put(&self, url: &GsUrl, data: Vec<u8>) -> Result<(), GcsError> {
        put(self, url, data).await
    }
}

fn store(gcs: &Gcs, bucket: &str) -> Result<GoogleCloudStorage, object_store::Error> {
    let deadline = gcs.timeout;
    let ms = |d: Duration| format!("{}ms", d.as_millis().max(1));
    let client = |key| GoogleConfigKey::Client(key);
    let mut builder = GoogleCloudStorageBuilder::from_env()
        .with_bucket_name(bucket)
        // One request may take the whole deadline (a large object); a connection that sends
        // nothing for 30 s is dead.
        .with_config(client(ClientConfigKey::Timeout), ms(deadline))
        .with_config(
            client(ClientConfigKey::ConnectTimeout),
            ms(aviary_kube::http::CONNECT_TIMEOUT),
        )
        .with_config(
            client(ClientConfigKey::ReadTimeout),
            ms(deadline.min(Duration::from_secs(30))),
        )
        .with_retry(RetryConfig {
            max_retries: 3,
            retry_timeout: deadline,
            ..RetryConfig::default()
        });
    if let Some(endpoint) = &gcs.endpoint {
        let key = serde_json::json!({
            "gcs_base_url": endpoint.trim_end_matches('/'),
            "disable_oauth": true,
            "client_email": "",
            "private_key": "",
            "private_key_id": "",
        });
        builder = builder
            .with_service_account_key(key.to_string())
            .with_config(client(ClientConfigKey::AllowHttp), "true");
    }
    builder.build()
}

/// Runs one GCS operation within `deadline`.
async fn bounded<T>(
    url: &GsUrl,
    deadline: Duration,
    op: impl std::future::Future<Output = Result<T, GcsError>>,
) -> Result<T, GcsError> {
    match tokio::time::timeout(deadline, op).await {
        Ok(result) => result,
        Err(_) => Err(GcsError::Timeout {
            url: url.to_string(),
            after: deadline,
        }),
    }
}

async fn get(gcs: &Gcs, url: &GsUrl, what: &'static str, cap: usize) -> Result<Vec<u8>, GcsError> {
    let err = |source| GcsError::Store {
        url: url.to_string(),
        source,
    };
    let too_large = || GcsError::TooLarge {
        url: url.to_string(),
        what,
        cap,
    };
    let deadline = gcs.timeout;
    bounded(url, deadline, async {
        let store = store(gcs, &url.bucket).map_err(err)?;
        let result = store
            .get(&ObjectPath::from(url.path.as_str()))
            .await
            .map_err(err)?;
        // Refused before a byte is read when GCS says how large it is; counted while reading in
        // any case.
        if result.meta.size > cap as u64 {
            return Err(too_large());
        }
        let chunks = result.into_stream().map(|c| c.map_err(err));
        aviary_kube::http::read_capped(chunks, cap)
            .await
            .map_err(|e| match e {
                aviary_kube::http::CappedError::TooLarge { .. } => too_large(),
                aviary_kube::http::CappedError::Read(e) => e,
            })
    })
    .await
}

async fn put(gcs: &Gcs, url: &GsUrl, data: Vec<u8>) -> Result<(), GcsError> {
    let err = |source| GcsError::Store {
        url: url.to_string(),
        source,
    };
    let deadline = gcs.timeout;
    bounded(url, deadline, async {
        let store = store(gcs, &url.bucket).map_err(err)?;
        store
            .put(&ObjectPath::from(url.path.as_str()), PutPayload::from(data))
            .await
            .map_err(err)?;
        Ok(())
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gs_urls_split_into_bucket_and_path() {
        let u = GsUrl::parse("gs://my-bucket/pipelines/p1/release/r1/source.tgz");
        assert_eq!(
            u.ok(),
            Some(GsUrl {
                bucket: "my-bucket".into(),
                path: "pipelines/p1/release/r1/source.tgz".into()
            })
        );
        let dir = GsUrl::parse("gs://b/out/").map(|d| d.join("results.json").to_string());
        assert_eq!(dir.ok().as_deref(), Some("gs://b/out/results.json"));
        assert!(GsUrl::parse("s3://b/x").is_err());
        assert!(GsUrl::parse("gs:///x").is_err());
    }
}
