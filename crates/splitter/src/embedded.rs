//! The embedded engine: an in-process HTTP/1.1 reverse proxy on tokio + hyper.

use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper::{Request, Response, StatusCode, Uri};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

use crate::{compile_regex, validate, Error, MatchKind, SmoothWrr, Split, Target};

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type ProxyBody = BoxBody<Bytes, BoxError>;

/// Same timeouts as the HAProxy configuration.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
const SERVER_TIMEOUT: Duration = Duration::from_secs(30);
const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);

pub(crate) struct Embedded {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: JoinHandle<()>,
}

struct Shared {
    routing: RwLock<Arc<Routing>>,
    client: Client<HttpConnector, Incoming>,
}

/// One applied split, compiled. Replaced as a whole by `apply`.
struct Routing {
    primary: Option<SocketAddr>,
    canary: Option<SocketAddr>,
    matches: Vec<Vec<HeaderTest>>,
    preview_hosts: Vec<String>,
    wrr: Mutex<SmoothWrr>,
}

struct HeaderTest {
    name: HeaderName,
    test: Test,
}

enum Test {
    Exact(Vec<u8>),
    Prefix(Vec<u8>),
    Suffix(Vec<u8>),
    Regex(regex::bytes::Regex),
}

impl HeaderTest {
    /// Like HAProxy's `req.fhdr()` in an ACL: every occurrence of the header is tried, each
    /// as its full value (commas are not delimiters).
    fn holds(&self, headers: &HeaderMap) -> bool {
        headers.get_all(&self.name).iter().any(|v| {
            let v = v.as_bytes();
            match &self.test {
                Test::Exact(x) => v == x.as_slice(),
                Test::Prefix(x) => v.starts_with(x),
                Test::Suffix(x) => v.ends_with(x),
                Test::Regex(re) => re.is_match(v),
            }
        })
    }
}

impl Routing {
    fn compile(split: &Split) -> Result<Routing, Error> {
        validate(split)?;
        let mut matches = Vec::with_capacity(split.matches.len());
        for m in &split.matches {
            let mut tests = Vec::with_capacity(m.headers.len());
            for h in &m.headers {
                let name = HeaderName::from_bytes(h.name.as_bytes()).map_err(|e| {
                    Error::invalid(format!("header name `{}`", h.name), e.to_string())
                })?;
                let value = h.value.as_bytes().to_vec();
                let test = match h.kind {
                    MatchKind::Exact => Test::Exact(value),
                    MatchKind::Prefix => Test::Prefix(value),
                    MatchKind::Suffix => Test::Suffix(value),
                    MatchKind::Regex => Test::Regex(compile_regex(&h.value)?),
                };
                tests.push(HeaderTest { name, test });
            }
            matches.push(tests);
        }
        Ok(Routing {
            primary: split.primary,
            canary: split.canary,
            matches,
            preview_hosts: split.preview_hosts.clone(),
            wrr: Mutex::new(SmoothWrr::new(split)),
        })
    }

    fn empty() -> Routing {
        Routing {
            primary: None,
            canary: None,
            matches: Vec::new(),
            preview_hosts: Vec::new(),
            wrr: Mutex::new(SmoothWrr::new(&Split::default())),
        }
    }

    fn choose(&self, headers: &HeaderMap) -> Option<SocketAddr> {
        // A preview host reaches the canary or nothing (like HAProxy's rule, the Host header's
        // name without its port, lower-cased).
        if !self.preview_hosts.is_empty() {
            let host = headers
                .get(hyper::header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(|h| h.split(':').next().unwrap_or_default().to_ascii_lowercase());
            if host.is_some_and(|h| self.preview_hosts.contains(&h)) {
                return self.canary;
            }
        }
        if let Some(canary) = self.canary {
            if self
                .matches
                .iter()
                .any(|all| all.iter().all(|t| t.holds(headers)))
            {
                return Some(canary);
            }
        }
        let picked = match self.wrr.lock() {
            Ok(mut wrr) => wrr.pick(),
            Err(poisoned) => poisoned.into_inner().pick(),
        };
        match picked? {
            Target::Primary => self.primary,
            Target::Canary => self.canary,
        }
    }
}

impl Embedded {
    pub(crate) async fn start() -> Result<Embedded, Error> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .map_err(|e| Error::io("embedded proxy: cannot bind 127.0.0.1:0", e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| Error::io("embedded proxy: cannot read its listening address", e))?;

        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_timer(TokioTimer::new())
            .build(connector);
        let shared = Arc::new(Shared {
            routing: RwLock::new(Arc::new(Routing::empty())),
            client,
        });
        let accept = tokio::spawn(accept_loop(listener, shared.clone()));
        Ok(Embedded {
            addr,
            shared,
            accept,
        })
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub(crate) fn apply(&self, split: &Split) -> Result<(), Error> {
        let routing = Arc::new(Routing::compile(split)?);
        match self.shared.routing.write() {
            Ok(mut current) => *current = routing,
            Err(poisoned) => *poisoned.into_inner() = routing,
        }
        Ok(())
    }

    pub(crate) fn shutdown(self) {
        // Drop does it: aborting the accept loop drops its JoinSet, which aborts every
        // connection task.
    }
}

impl Drop for Embedded {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(pair) => pair,
                    Err(e) => {
                        // E.g. EMFILE: back off instead of spinning.
                        tracing::warn!(error = %e, "embedded proxy: accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let shared = shared.clone();
                connections.spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let shared = shared.clone();
                        async move { Ok::<_, Infallible>(proxy(req, peer, &shared).await) }
                    });
                    let result = hyper::server::conn::http1::Builder::new()
                        .timer(TokioTimer::new())
                        .header_read_timeout(CLIENT_TIMEOUT)
                        .keep_alive(true)
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                    if let Err(e) = result {
                        tracing::debug!(error = %e, %peer, "embedded proxy: client connection ended with an error");
                    }
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// Hop-by-hop headers (RFC 9110 section 7.6.1), never forwarded.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-authenticate",
];

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let listed: Vec<HeaderName> = headers
        .get_all(hyper::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in listed {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

fn plain(status: StatusCode, message: &str) -> Response<ProxyBody> {
    let body = Full::new(Bytes::from(format!("{message}\n")))
        .map_err(|never: Infallible| match never {})
        .boxed();
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain"),
    );
    response
}

async fn proxy(req: Request<Incoming>, peer: SocketAddr, shared: &Shared) -> Response<ProxyBody> {
    let routing = match shared.routing.read() {
        Ok(current) => current.clone(),
        Err(poisoned) => poisoned.into_inner().clone(),
    };
    let (mut parts, body) = req.into_parts();
    let Some(target) = routing.choose(&parts.headers) else {
        return plain(
            StatusCode::SERVICE_UNAVAILABLE,
            "503 Service Unavailable: no backend is set for this request",
        );
    };
    drop(routing);

    let path = parts
        .uri
        .path_and_query()
        .map(|pq| pq.as_str())
        .unwrap_or("/");
    parts.uri = match Uri::builder()
        .scheme("http")
        .authority(target.to_string())
        .path_and_query(path)
        .build()
    {
        Ok(uri) => uri,
        Err(e) => {
            return plain(
                StatusCode::BAD_REQUEST,
                &format!("400 Bad Request: cannot forward this request target: {e}"),
            )
        }
    };
    parts.version = hyper::Version::HTTP_11;
    strip_hop_by_hop(&mut parts.headers);
    if let Ok(ip) = HeaderValue::from_str(&peer.ip().to_string()) {
        parts.headers.append("x-forwarded-for", ip);
    }

    let upstream = Request::from_parts(parts, body);
    match tokio::time::timeout(SERVER_TIMEOUT, shared.client.request(upstream)).await {
        Ok(Ok(response)) => {
            let (mut parts, body) = response.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            Response::from_parts(parts, body.map_err(BoxError::from).boxed())
        }
        Ok(Err(e)) if e.is_connect() => plain(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("503 Service Unavailable: cannot connect to backend {target}"),
        ),
        Ok(Err(e)) => {
            tracing::debug!(error = ?e, %target, "embedded proxy: backend request failed");
            plain(
                StatusCode::BAD_GATEWAY,
                &format!("502 Bad Gateway: backend {target} failed: {e}"),
            )
        }
        Err(_) => plain(
            StatusCode::GATEWAY_TIMEOUT,
            &format!("504 Gateway Timeout: backend {target} did not answer within 30s"),
        ),
    }
}
