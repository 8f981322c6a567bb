//! `gs://bucket/path` objects through `object_store`: Cloud Deploy hands its custom targets GCS
//! paths for the release source, the rendered manifest and `results.json`.
//!
//! Credentials are Google's usual ones (`GOOGLE_APPLICATION_CREDENTIALS`,
//! `GOOGLE_SERVICE_ACCOUNT*`, else the metadata server Cloud Build provides). `AVIARY_GCS_ENDPOINT`
//! points at a GCS-compatible server instead (a local emulator), without OAuth.

use bytes::Bytes;
use object_store::gcp::{GoogleCloudStorage, GoogleCloudStorageBuilder};
use object_store::path::Path as ObjectPath;
use object_store::{ClientOptions, ObjectStoreExt, PutPayload};

#[derive(Debug, thiserror::Error)]
pub enum GcsError {
    #[error("{url:?} is not a gs:// URL with a bucket and an object (gs://BUCKET/PATH)")]
    BadUrl { url: String },
    #[error("{url}: {source}")]
    Store {
        url: String,
        #[source]
        source: object_store::Error,
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

fn store(bucket: &str) -> Result<GoogleCloudStorage, object_store::Error> {
    let mut builder = GoogleCloudStorageBuilder::from_env().with_bucket_name(bucket);
    if let Some(endpoint) = std::env::var("AVIARY_GCS_ENDPOINT")
        .ok()
        .filter(|e| !e.is_empty())
    {
        let key = serde_json::json!({
            "gcs_base_url": endpoint.trim_end_matches('/'),
            "disable_oauth": true,
            "client_email": "",
            "private_key": "",
            "private_key_id": "",
        });
        builder = builder
            .with_service_account_key(key.to_string())
            .with_client_options(ClientOptions::new().with_allow_http(true));
    }
    builder.build()
}

/// Reads an object.
pub async fn get(url: &GsUrl) -> Result<Bytes, GcsError> {
    let err = |source| GcsError::Store {
        url: url.to_string(),
        source,
    };
    let store = store(&url.bucket).map_err(err)?;
    let result = store
        .get(&ObjectPath::from(url.path.as_str()))
        .await
        .map_err(err)?;
    result.bytes().await.map_err(err)
}

/// Writes an object (replacing it).
pub async fn put(url: &GsUrl, data: Vec<u8>) -> Result<(), GcsError> {
    let err = |source| GcsError::Store {
        url: url.to_string(),
        source,
    };
    let store = store(&url.bucket).map_err(err)?;
    store
        .put(&ObjectPath::from(url.path.as_str()), PutPayload::from(data))
        .await
        .map_err(err)?;
    Ok(())
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
