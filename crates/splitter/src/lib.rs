//! The sandbox's traffic split.
//!
//! Clients send HTTP requests to one frontend address ([`Splitter::addr`]); each request is
//! forwarded to the "primary" or the "canary" backend following a [`Split`] that the caller
//! changes while traffic flows ([`Splitter::apply`]).
//!
//! Two engines share one semantics:
//! * [`Engine::Haproxy`]: an HAProxy child process (foreground, `-db`) started with a generated
//!   configuration and driven only through its runtime API (stats socket, `level admin`).
//! * [`Engine::Embedded`]: an in-process reverse proxy on tokio + hyper.
//!
//! Routing of one request:
//! 1. if the canary is set and the request satisfies any [`Match`] (all headers of that match
//!    hold), it goes to the canary;
//! 2. otherwise a smooth weighted round robin picks between the *set* backends, the canary
//!    weighing `canary_weight` and the primary `100 - canary_weight` (a backend whose weight is
//!    0 is never picked);
//! 3. with no backend to pick, the proxy answers `503 Service Unavailable`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

mod embedded;
mod haproxy;
#[cfg(test)]
mod tests;

/// How a [`HeaderMatch`] compares the header value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MatchKind {
    /// The whole value equals `value` (case-sensitive).
    Exact,
    /// The value starts with `value` (case-sensitive).
    Prefix,
    /// The value ends with `value` (case-sensitive).
    Suffix,
    /// The whole value matches the regular expression `value` (anchored as `^(?:value)$`).
    Regex,
}

/// One header condition. A header absent from the request never matches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeaderMatch {
    /// Header name, compared case-insensitively.
    pub name: String,
    pub kind: MatchKind,
    pub value: String,
}

/// All headers of one `Match` must hold (AND); the matches of a [`Split`] are OR'ed.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Match {
    pub headers: Vec<HeaderMatch>,
}

/// The traffic split put in effect by [`Splitter::apply`].
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Split {
    pub primary: Option<SocketAddr>,
    pub canary: Option<SocketAddr>,
    /// 0..=100: share of NON-matching requests sent to the canary.
    pub canary_weight: u8,
    /// Requests matching any `Match` go to the canary (when it is set).
    pub matches: Vec<Match>,
    /// Host names (lower-case, without a port) whose requests always go to the canary: with
    /// no canary set they are answered 503, never by the primary. Checked before `matches`.
    pub preview_hosts: Vec<String>,
}

/// Which proxy does the splitting.
#[derive(Clone, Debug, PartialEq)]
pub enum Engine {
    /// HAProxy (2.4 or newer) run as a child process, in a process group of its own (a
    /// terminal's Ctrl-C reaches its owner, which stops it when done); see [`find_haproxy`].
    Haproxy { binary: PathBuf },
    /// The in-process tokio + hyper reverse proxy.
    Embedded,
}

/// How to start a [`Splitter`].
#[derive(Clone, Debug, PartialEq)]
pub struct Options {
    pub engine: Engine,
    /// HAProxy's configuration, runtime socket and ACL files go here (created if missing).
    /// Keep it short: the socket path must fit in 107 bytes.
    pub workdir: PathBuf,
    /// Header names A/B matches may use. HAProxy declares its ACLs for these at start; the
    /// embedded engine accepts any header.
    pub match_headers: Vec<String>,
}

/// Errors of [`Splitter::start`] and [`Splitter::apply`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The split cannot be expressed by this engine (the message says what to do instead).
    #[error("unsupported by the {engine} engine: {reason}")]
    Unsupported {
        engine: &'static str,
        reason: String,
    },
    /// The split or the options are malformed.
    #[error("invalid {what}: {reason}")]
    Invalid { what: String, reason: String },
    /// HAProxy could not be started.
    #[error("cannot start haproxy `{binary}`: {reason}")]
    HaproxyStart { binary: PathBuf, reason: String },
    /// HAProxy refused a runtime API command (or its socket failed).
    #[error("haproxy runtime API command `{command}` failed: {answer}")]
    Runtime { command: String, answer: String },
    /// A local I/O operation failed.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    fn invalid(what: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Invalid {
            what: what.into(),
            reason: reason.into(),
        }
    }
}

/// A running traffic split. Dropping it stops the proxy (and kills HAProxy).
pub struct Splitter {
    inner: Inner,
}

enum Inner {
    Haproxy(Box<haproxy::Haproxy>),
    Embedded(embedded::Embedded),
}

impl Splitter {
    /// Starts the proxy on `127.0.0.1:<free port>`. Until the first [`apply`](Self::apply) it
    /// has no backend and answers 503.
    pub async fn start(options: Options) -> Result<Splitter, Error> {
        let inner = match &options.engine {
            Engine::Haproxy { binary } => Inner::Haproxy(Box::new(
                haproxy::Haproxy::start(binary, &options.workdir, &options.match_headers).await?,
            )),
            Engine::Embedded => Inner::Embedded(embedded::Embedded::start().await?),
        };
        Ok(Splitter { inner })
    }

    /// The frontend address clients use.
    pub fn addr(&self) -> SocketAddr {
        match &self.inner {
            Inner::Haproxy(h) => h.addr(),
            Inner::Embedded(e) => e.addr(),
        }
    }

    /// A human-readable description of the engine, e.g.
    /// `HAProxy 2.6.12 (runtime API on /tmp/x/haproxy.sock)` or `embedded proxy`.
    pub fn describe(&self) -> String {
        match &self.inner {
            Inner::Haproxy(h) => h.describe(),
            Inner::Embedded(_) => "embedded proxy".to_string(),
        }
    }

    /// Puts `split` in effect. When it returns, every request that starts afterwards follows
    /// it. Concurrent calls are serialised. On error the previous split may be partially
    /// replaced (HAProxy); apply a valid split again to recover.
    pub async fn apply(&self, split: &Split) -> Result<(), Error> {
        match &self.inner {
            Inner::Haproxy(h) => h.apply(split).await,
            Inner::Embedded(e) => e.apply(split),
        }
    }

    /// Stops the proxy; with HAProxy, kills the child process and reaps it.
    pub async fn shutdown(self) {
        match self.inner {
            Inner::Haproxy(h) => (*h).shutdown().await,
            Inner::Embedded(e) => e.shutdown(),
        }
    }
}

/// The HAProxy binary to use: `$AVIARY_HAPROXY` if set, else `haproxy` on `PATH`, else
/// `/usr/sbin/haproxy` if it exists.
pub fn find_haproxy() -> Option<PathBuf> {
    if let Some(explicit) = std::env::var_os("AVIARY_HAPROXY") {
        if !explicit.is_empty() {
            return Some(PathBuf::from(explicit));
        }
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join("haproxy");
            if is_executable(&candidate) {
                return Some(candidate);
            }
        }
    }
    let fallback = Path::new("/usr/sbin/haproxy");
    is_executable(fallback).then(|| fallback.to_path_buf())
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

// ---------------------------------------------------------------------------------------------
// Shared validation and routing pieces.

/// Checks what both engines require of a split: a weight in 0..=100, non-empty matches with
/// valid header names, and regular expressions that compile.
fn validate(split: &Split) -> Result<(), Error> {
    if split.canary_weight > 100 {
        return Err(Error::invalid(
            "split",
            format!(
                "canary_weight is {}; it must be between 0 and 100",
                split.canary_weight
            ),
        ));
    }
    for host in &split.preview_hosts {
        let ok = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.';
        if host.is_empty() || !host.bytes().all(ok) {
            return Err(Error::invalid(
                format!("preview host `{host}`"),
                "a preview host is a lower-case host name without a port (letters, digits, '-' and '.')",
            ));
        }
    }
    for (i, m) in split.matches.iter().enumerate() {
        if m.headers.is_empty() {
            return Err(Error::invalid(
                format!("match #{i}"),
                "it has no header condition; give it at least one header (an empty match would send everything to the canary: use canary_weight 100 for that)",
            ));
        }
        for h in &m.headers {
            validate_header_name(&h.name)?;
            if h.value.contains(['\r', '\n', '\0']) {
                return Err(Error::invalid(
                    format!("match on header `{}`", h.name),
                    "the value contains CR, LF or NUL, which no header value can hold",
                ));
            }
            if h.kind == MatchKind::Regex {
                compile_regex(&h.value)?;
            }
        }
    }
    Ok(())
}

fn validate_header_name(name: &str) -> Result<(), Error> {
    let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    if name.is_empty() || !name.chars().all(token) {
        return Err(Error::invalid(
            format!("header name `{name}`"),
            "a header name must be a non-empty HTTP token (letters, digits, and !#$%&'*+-.^_`|~)",
        ));
    }
    Ok(())
}

/// The anchored form both engines use.
fn anchored(pattern: &str) -> String {
    format!("^(?:{pattern})$")
}

fn compile_regex(pattern: &str) -> Result<regex::bytes::Regex, Error> {
    regex::bytes::Regex::new(&anchored(pattern)).map_err(|e| {
        Error::invalid(
            format!("regex `{pattern}`"),
            format!(
                "it does not compile (Rust regex syntax, no look-around or back-references): {e}"
            ),
        )
    })
}

/// Which backend a weighted pick chose.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Target {
    Primary,
    Canary,
}

/// Smooth weighted round robin (as nginx does it): over any window of `sum(weights)` picks,
/// each backend is chosen exactly `weight` times, interleaved as evenly as possible.
#[derive(Debug)]
struct SmoothWrr {
    entries: Vec<(Target, i64, i64)>, // (target, weight, current)
}

impl SmoothWrr {
    fn new(split: &Split) -> Self {
        let canary = i64::from(split.canary_weight.min(100));
        let mut entries = Vec::new();
        if split.primary.is_some() && canary < 100 {
            entries.push((Target::Primary, 100 - canary, 0));
        }
        if split.canary.is_some() && canary > 0 {
            entries.push((Target::Canary, canary, 0));
        }
        SmoothWrr { entries }
    }

    fn pick(&mut self) -> Option<Target> {
        let total: i64 = self.entries.iter().map(|e| e.1).sum();
        for entry in &mut self.entries {
            entry.2 += entry.1;
        }
        // Ties go to the first entry (the primary), like a fresh nginx cycle.
        let best = self
            .entries
            .iter_mut()
            .reduce(|best, e| if e.2 > best.2 { e } else { best })?;
        best.2 -= total;
        Some(best.0)
    }
}
