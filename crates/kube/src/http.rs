//! Outbound HTTP, the same way everywhere: every client gets a connect timeout and every call a
//! whole-request deadline, an answer's body is read chunk by chunk up to a cap and never further
//! ([`read_at_most`], [`read_capped`]), and an error is described without the URL the HTTP
//! library would print (credentials and all) — callers add the redacted one ([`describe`]).
//!
//! Who uses what (the caps are documented in the README):
//! - webhooks: the per-hook `timeout` (default 10 s) bounds the whole call; of a failing answer only
//!   [`WEBHOOK_EXCERPT`] bytes are read, for the message;
//! - Prometheus: the per-attempt timeout (default 5 s); answers up to [`PROMETHEUS_MAX`];
//! - GitHub Deployments: [`GITHUB_TIMEOUT`] per call (`AVIARY_GITHUB_TIMEOUT`); answers up to
//!   [`GITHUB_MAX`]; best-effort, a failure is a warning;
//! - GCS (`host::gcs`): `AVIARY_GCS_TIMEOUT` per object, with caps per kind of object.

use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};

/// How long any outbound connection may take to open (TCP and TLS).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// What is read of a failing webhook's answer: its message shows the first 300 characters.
pub const WEBHOOK_EXCERPT: usize = 1024;

/// The largest Prometheus answer read. A check needs one number and a judge one series: an
/// instant vector is ~150 bytes a series, and a range query is at most 11,000 points a series
/// (Prometheus' own limit), ~35 bytes each, so ~400 KB. 8 MiB holds ~50,000 instant series or
/// 20 full range series, far beyond a query that aggregates; the parsed JSON stays under ~50 MB.
pub const PROMETHEUS_MAX: usize = 8 * 1024 * 1024;

/// The largest GitHub API answer read (a Deployment or a status is ~3 KB).
pub const GITHUB_MAX: usize = 1024 * 1024;

/// Each GitHub API call, all retries included; `AVIARY_GITHUB_TIMEOUT` overrides it.
pub const GITHUB_TIMEOUT: Duration = Duration::from_secs(10);

/// The `User-Agent` of every call.
pub const USER_AGENT: &str = concat!("aviary/", env!("CARGO_PKG_VERSION"));

/// A body read up to a limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Excerpt {
    /// At most the limit.
    pub bytes: Vec<u8>,
    /// Whether the body went on past the limit (the rest was not read).
    pub truncated: bool,
}

impl Excerpt {
    /// The text of the excerpt (lossy), trimmed, at most `chars` characters, `…` when cut.
    pub fn text(&self, chars: usize) -> String {
        let text = String::from_utf8_lossy(&self.bytes);
        let text = text.trim();
        let mut out: String = text.chars().take(chars).collect();
        if self.truncated || out.len() < text.len() {
            out.push('…');
        }
        out
    }
}

/// Reads at most `limit` bytes of `body`, chunk by chunk, and stops: memory stays within `limit`
/// plus one chunk whatever the other side sends. The stream is dropped at the limit, which closes
/// the connection.
pub async fn read_at_most<S, E>(body: S, limit: usize) -> Result<Excerpt, E>
where
    S: Stream<Item = Result<Bytes, E>>,
{
    futures::pin_mut!(body);
    let mut bytes = Vec::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk?;
        let room = limit.saturating_sub(bytes.len());
        if chunk.len() > room {
            bytes.extend_from_slice(&chunk[..room]);
            return Ok(Excerpt {
                bytes,
                truncated: true,
            });
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(Excerpt {
        bytes,
        truncated: false,
    })
}

/// Why [`read_capped`] gave up.
#[derive(Debug)]
pub enum CappedError<E> {
    /// The body is larger than `cap` bytes (only `cap` were read).
    TooLarge { cap: usize },
    /// Reading failed.
    Read(E),
}

/// The whole body, or [`CappedError::TooLarge`] as soon as it passes `cap` bytes.
pub async fn read_capped<S, E>(body: S, cap: usize) -> Result<Vec<u8>, CappedError<E>>
where
    S: Stream<Item = Result<Bytes, E>>,
{
    let excerpt = read_at_most(body, cap).await.map_err(CappedError::Read)?;
    if excerpt.truncated {
        Err(CappedError::TooLarge { cap })
    } else {
        Ok(excerpt.bytes)
    }
}

/// A reqwest answer's body as a stream of chunks (for [`read_at_most`]).
pub fn body_stream(
    response: reqwest::Response,
) -> impl Stream<Item = Result<Bytes, reqwest::Error>> {
    futures::stream::try_unfold(response, |mut response| async move {
        Ok(response.chunk().await?.map(|chunk| (chunk, response)))
    })
}

/// A reqwest client with aviary's user agent and connect timeout; each request sets its own
/// whole-request `timeout`.
pub fn client_builder() -> reqwest::ClientBuilder {
    install_crypto_provider();
    reqwest::Client::builder()
        .user_agent(USER_AGENT)
        .connect_timeout(CONNECT_TIMEOUT)
}

/// The HTTP clients of one run, one per certificate policy, each built on first use and then
/// shared (cheap to clone): building a client reads the system's trusted roots (milliseconds of
/// CPU), so the canaries of a release, their metric providers and webhooks share two clients,
/// and their connections, instead of building three per canary. Every request sets its own
/// timeout and headers. Not shared across tokio runtimes: a pooled connection belongs to the
/// runtime that opened it.
#[derive(Clone, Default)]
pub struct Clients(std::sync::Arc<[std::sync::OnceLock<Result<reqwest::Client, String>>; 2]>);

impl std::fmt::Debug for Clients {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Clients").finish_non_exhaustive()
    }
}

impl Clients {
    /// The client that verifies servers' certificates, or (`insecure`) the one that accepts any
    /// certificate for any host name (Flagger's `insecureSkipVerify`, a webhook's `disableTLS`).
    pub fn get(&self, insecure: bool) -> Result<reqwest::Client, String> {
        self.0[usize::from(insecure)]
            .get_or_init(|| {
                client_builder()
                    .tls_danger_accept_invalid_certs(insecure)
                    .tls_danger_accept_invalid_hostnames(insecure)
                    .build()
                    .map_err(|e| format!("cannot create an HTTP client: {}", describe(&e)))
            })
            .clone()
    }
}

/// Makes ring the process's TLS provider, as the binary does at start, so a client built from a
/// library or a test gets the same one (reqwest is built without a provider of its own). A
/// provider already installed stays.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A reqwest error and its sources in one line, without the request's URL (reqwest prints it
/// whole, credentials included); any URL left in a source's text is redacted.
pub fn describe(e: &reqwest::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    let top = match e.url() {
        // reqwest's Display is "<kind> for url (<url>)": keep the kind.
        Some(_) => e
            .to_string()
            .split(" for url (")
            .next()
            .unwrap_or_default()
            .to_string(),
        None => e.to_string(),
    };
    parts.push(top);
    let mut current = std::error::Error::source(e);
    while let Some(source) = current {
        let text = source.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        current = source.source();
    }
    aviary_core::urls::redact_in_text(&parts.join(": "))
}

/// `n` bytes for people: `8 MiB`, `1 KiB`, `300 bytes`.
pub fn size(n: usize) -> String {
    const KIB: usize = 1024;
    const MIB: usize = 1024 * 1024;
    if n >= MIB && n % MIB == 0 {
        format!("{} MiB", n / MIB)
    } else if n >= KIB && n % KIB == 0 {
        format!("{} KiB", n / KIB)
    } else {
        format!("{n} bytes")
    }
}

/// A timeout from `value`, the value of the environment variable `var` (a Go duration such as
/// `30s`) in the environment the caller holds (a host's injected one), else `default`. A value
/// that cannot be read is reported and the default used.
pub fn timeout_from(var: &str, value: Option<String>, default: Duration) -> Duration {
    match value {
        Some(v) if !v.trim().is_empty() => {
            match aviary_core::spec::duration::parse_go_duration(v.trim()) {
                Ok(d) if !d.is_zero() => d,
                Ok(_) => {
                    tracing::warn!(
                        "{var}=\"{v}\": a timeout must be more than 0; using {default:?}"
                    );
                    default
                }
                Err(e) => {
                    tracing::warn!("{var}=\"{v}\": {e}; using {default:?} (write it as 30s or 2m)");
                    default
                }
            }
        }
        _ => default,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunks(sizes: &[usize]) -> impl Stream<Item = Result<Bytes, std::io::Error>> {
        let parts: Vec<Result<Bytes, std::io::Error>> = sizes
            .iter()
            .map(|n| Ok(Bytes::from(vec![b'x'; *n])))
            .collect();
        futures::stream::iter(parts)
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        match tokio::runtime::Builder::new_current_thread().build() {
            Ok(rt) => rt.block_on(f),
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn a_body_is_read_up_to_the_limit_and_no_further() {
        let e = block_on(read_at_most(chunks(&[400, 400, 400]), 1000));
        assert!(
            matches!(&e, Ok(x) if x.bytes.len() == 1000 && x.truncated),
            "{e:?}"
        );
        let e = block_on(read_at_most(chunks(&[400, 600]), 1000));
        assert!(
            matches!(&e, Ok(x) if x.bytes.len() == 1000 && !x.truncated),
            "{e:?}"
        );
        let e = block_on(read_at_most(chunks(&[]), 10));
        assert!(
            matches!(&e, Ok(x) if x.bytes.is_empty() && !x.truncated),
            "{e:?}"
        );
    }

    #[test]
    fn an_endless_body_stops_at_the_cap() {
        // An endless stream: only the cap's worth is ever pulled from it.
        let mut pulled = 0usize;
        let endless = futures::stream::repeat_with(move || {
            pulled += 1;
            assert!(pulled < 100, "read past the cap");
            Ok::<_, std::io::Error>(Bytes::from_static(&[0u8; 64 * 1024]))
        });
        let r = block_on(read_capped(endless, 1024 * 1024));
        assert!(
            matches!(r, Err(CappedError::TooLarge { cap }) if cap == 1024 * 1024),
            "{r:?}"
        );
        let r = block_on(read_capped(chunks(&[10, 20]), 30));
        assert!(matches!(&r, Ok(b) if b.len() == 30), "{r:?}");
    }

    #[test]
    fn excerpts_are_short_one_line_texts() {
        let e = Excerpt {
            bytes: b"  oops: the hook broke  ".to_vec(),
            truncated: false,
        };
        assert_eq!(e.text(300), "oops: the hook broke");
        assert_eq!(e.text(4), "oops…");
        let e = Excerpt {
            bytes: b"abc".to_vec(),
            truncated: true,
        };
        assert_eq!(e.text(300), "abc…");
    }

    #[test]
    fn sizes_read_well() {
        assert_eq!(size(PROMETHEUS_MAX), "8 MiB");
        assert_eq!(size(WEBHOOK_EXCERPT), "1 KiB");
        assert_eq!(size(300), "300 bytes");
    }
}
