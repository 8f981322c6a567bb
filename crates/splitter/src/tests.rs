//! Behavioural tests, each run against both engines (real backends, real HTTP client).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use tokio::net::{TcpListener, TcpStream};

use crate::*;

// --------------------------------------------------------------------------------------------
// Test backends: tiny HTTP servers that name themselves.

struct Backend {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Answers with body `<name>` (or `<name>:<request body>` for a request with a body), header
/// `x-served-by: <name>`, and echoes of what it received. `/slow` waits 700 ms first.
async fn backend(name: &'static str) -> Backend {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut conns = tokio::task::JoinSet::new();
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            conns.spawn(async move {
                let service =
                    hyper::service::service_fn(move |req: Request<Incoming>| async move {
                        if req.uri().path() == "/slow" {
                            tokio::time::sleep(Duration::from_millis(700)).await;
                        }
                        let method = req.method().to_string();
                        let uri = req.uri().to_string();
                        let xff = req
                            .headers()
                            .get_all("x-forwarded-for")
                            .iter()
                            .map(|v| v.to_str().unwrap().to_string())
                            .collect::<Vec<_>>()
                            .join(",");
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        let text = if body.is_empty() {
                            name.to_string()
                        } else {
                            format!("{name}:{}", String::from_utf8_lossy(&body))
                        };
                        Ok::<_, Infallible>(
                            Response::builder()
                                .header("x-served-by", name)
                                .header("x-echo-method", method)
                                .header("x-echo-uri", uri)
                                .header("x-echo-xff", xff)
                                .body(Full::new(Bytes::from(text)))
                                .unwrap(),
                        )
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Backend { addr, task }
}

// --------------------------------------------------------------------------------------------
// A client holding exactly ONE keep-alive connection to the splitter.

struct Conn {
    send: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
}

struct Answer {
    status: StatusCode,
    served_by: String,
    body: String,
    headers: hyper::HeaderMap,
}

impl Conn {
    async fn open(addr: SocketAddr) -> Conn {
        let stream = TcpStream::connect(addr).await.unwrap();
        let (send, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .unwrap();
        tokio::spawn(conn);
        Conn { send }
    }

    async fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Answer {
        let mut req = Request::builder().method(method).uri(path);
        if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
            req = req.header("host", "app.test");
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(Full::new(Bytes::from(body.to_string()))).unwrap();
        self.send
            .ready()
            .await
            .expect("the keep-alive connection was closed");
        let resp = self.send.send_request(req).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let served_by = headers
            .get("x-served-by")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        let body = String::from_utf8(
            resp.into_body()
                .collect()
                .await
                .unwrap()
                .to_bytes()
                .to_vec(),
        )
        .unwrap();
        Answer {
            status,
            served_by,
            body,
            headers,
        }
    }

    async fn get(&mut self, headers: &[(&str, &str)]) -> Answer {
        self.request("GET", "/", headers, "").await
    }

    /// Who served `n` GETs (with `headers`), as (primary, canary, other) counts.
    async fn count(&mut self, n: usize, headers: &[(&str, &str)]) -> (usize, usize, usize) {
        let (mut p, mut c, mut o) = (0, 0, 0);
        for _ in 0..n {
            match self.get(headers).await.served_by.as_str() {
                "primary" => p += 1,
                "canary" => c += 1,
                _ => o += 1,
            }
        }
        (p, c, o)
    }
}

// --------------------------------------------------------------------------------------------
// Engines.

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Haproxy,
    Embedded,
}

struct Running {
    splitter: Splitter,
    _dir: tempfile::TempDir,
}

fn haproxy_binary() -> Option<std::path::PathBuf> {
    let found = find_haproxy();
    if found.is_none() {
        eprintln!("NOTICE: haproxy not found ($AVIARY_HAPROXY, PATH, /usr/sbin/haproxy); skipping the HAProxy variant");
    }
    found
}

async fn start(kind: Kind) -> Option<Running> {
    let engine = match kind {
        Kind::Haproxy => Engine::Haproxy {
            binary: haproxy_binary()?,
        },
        Kind::Embedded => Engine::Embedded,
    };
    let dir = tempfile::Builder::new()
        .prefix("spl")
        .tempdir_in("/tmp")
        .unwrap();
    let started = Instant::now();
    let splitter = Splitter::start(Options {
        engine,
        workdir: dir.path().to_path_buf(),
        match_headers: vec!["x-canary".into(), "cookie".into(), "x-user".into()],
    })
    .await
    .unwrap();
    eprintln!(
        "MEASURE {kind:?}: start took {:?} ({})",
        started.elapsed(),
        splitter.describe()
    );
    Some(Running {
        splitter,
        _dir: dir,
    })
}

fn split(primary: &Backend, canary: &Backend, weight: u8) -> Split {
    Split {
        primary: Some(primary.addr),
        canary: Some(canary.addr),
        canary_weight: weight,
        matches: vec![],
        preview_hosts: vec![],
    }
}

fn header(name: &str, kind: MatchKind, value: &str) -> Match {
    Match {
        headers: vec![HeaderMatch {
            name: name.into(),
            kind,
            value: value.into(),
        }],
    }
}

/// Generates `<engine>_<test>` for both engines from `async fn <test>(Kind)`.
macro_rules! both_engines {
    ($($test:ident),* $(,)?) => {
        mod haproxy_engine {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test(super::Kind::Haproxy).await
                }
            )*
        }
        mod embedded_engine {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test(super::Kind::Embedded).await
                }
            )*
        }
    };
}

both_engines!(
    weights,
    weight_change_is_immediate,
    ab_exact_header,
    ab_cookie_regex_and_clear,
    ab_prefix_suffix,
    address_change,
    address_change_under_concurrency,
    no_backend_is_503,
    only_set_backends_are_weighted,
    forwards_method_path_body_and_xff,
    invalid_weight_rejected,
    preview_hosts_reach_the_canary_or_nothing,
);

// --------------------------------------------------------------------------------------------
// Behaviour.

async fn weights(kind: Kind) {
    let Some(r) = start(kind).await else { return };
    let (primary, canary) = (backend("primary").await, backend("canary").await);
    let mut conn = Conn::open(r.splitter.addr()).await;

    r.splitter
        .apply(&split(&primary, &canary, 0))
        .await
        .unwrap();
    assert_eq!(conn.count(50, &[]).await, (50, 0, 0), "{kind:?} weight 0");

    r.splitter
        .apply(&split(&primary, &canary, 20))
        .await
        .unwrap();
    let started = Instant::now();
    let (p, c, o) = conn.count(100, &[]).await;
    let elapsed = started.elapsed();
    assert_eq!(o, 0);
    assert!(
        (19..=21).contains(&c),
        "{kind:?} weight 20 on one connection: {c} of 100 reached the canary ({p} the primary)"
    );
    eprintln!(
        "MEASURE {kind:?}: 100 sequential requests on one keep-alive connection in {elapsed:?} ({:.0} req/s); canary got {c}",
        100.0 / elapsed.as_secs_f64()
    );

    r.splitter
        .apply(&split(&primary, &canary, 100))
        .await
        .unwrap();
    assert_eq!(conn.count(50, &[]).await, (0, 50, 0), "{kind:?} weight 100");
    r.splitter.shutdown().await;
}

async fn weight_change_is_immediate(kind: Kind) {
    let Some(r) = start(kind).await else { return };
    let (primary, canary) = (backend("primary").await, backend("canary").await);
    let mut conn = Conn::open(r.splitter.addr()).await;
    r.splitter
        .apply(&split(&primary, &canary, 60))
        .await
        .unwrap();
    let (_, c, _) = conn.count(10, &[]).await;
    assert_eq!(c, 6, "{kind:?} weight 60 over 10 requests");
    for _ in 0..5 {
        r.splitter
            .apply(&split(&primary, &canary, 60))
            .await
            .unwrap();
        conn.count(3, &[]).await;
        let started = Instant::now();
        r.splitter
            .apply(&split(&primary, &canary, 0))
            .await
            .unwrap();
        let took = started.elapsed();
        // The very next request, and all after it, must follow weight 0.
        assert_eq!(
            conn.get(&[]).await.served_by,
            "primary",
            "{kind:?}: first request after apply"
        );
        assert_eq!(conn.count(10, &[]).await, (10, 0, 0));
        eprintln!("MEASURE {kind:?}: apply(60 -> 0) returned in {took:?}");
    }
    r.splitter.shutdown().await;
}

async fn ab_exact_header(kind: Kind) {
    let Some(r) = start(kind).await else { return };
    let (primary, canary) = (backend("primary").await, backend("canary").await);
    let mut conn = Conn::open(r.splitter.addr()).await;
    let mut s = split(&primary, &canary, 0);
    s.matches = vec![header("X-Canary", MatchKind::Exact, "insider")];
    let started = Instant::now();
    r.splitter.apply(&s).await.unwrap();
    eprintln!(
        "MEASURE {kind:?}: apply(with 1 exact match) returned in {:?}",
        started.elapsed()
    );
    for _ in 0..10 {
        assert_eq!(
            conn.get(&[("x-canary", "insider")]).await.served_by,
            "canary",
            "{kind:?}"
        );
        assert_eq!(conn.get(&[]).await.served_by, "primary", "{kind:?}");
        assert_eq!(
            conn.get(&[("x-canary", "insider2")]).await.served_by,
            "primary",
            "{kind:?}: exact, not prefix"
        );
        assert_eq!(
            conn.get(&[("x-canary", "Insider")]).await.served_by,
            "primary",
            "{kind:?}: case-sensitive value"
        );
        assert_eq!(
            conn.get(&[("x-other", "insider")]).await.served_by,
            "primary",
            "{kind:?}"
        );
    }
    // Without a canary, matches route nowhere special.
    s.canary = None;
    r.splitter.apply(&s).await.unwrap();
    assert_eq!(
        conn.get(&[("x-canary", "insider")]).await.served_by,
        "primary",
        "{kind:?}: no canary"
    );
    r.splitter.shutdown().await;
}

async fn ab_cookie_regex_and_clear(kind: Kind) {
    let Some(r) = start(kind).await else { return };
    let (primary, canary) = (backend("primary").await, backend("canary").await);
    let mut conn = Conn::open(r.splitter.addr()).await;
    let mut s = split(&primary, &canary, 0);
    s.matches = vec![header(
        "cookie",
        MatchKind::Regex,
        "^(.*?;)?(canary=always)(;.*)?$",
    )];
    r.splitter.apply(&s).await.unwrap();
    let canary_cookies = [
        "canary=always",
        "a=b;canary=always",
        "a=b;canary=always;c=d",
        "canary=always;x=y",
    ];
    let primary_cookies = [
        "canary=never",
        "a=b; canary=alwaysX",
        "xcanary=always",
        "canary=always2",
    ];
    for cookie in canary_cookies {
        assert_eq!(
            conn.get(&[("cookie", cookie)]).await.served_by,
            "canary",
            "{kind:?} cookie {cookie}"
        );
    }
    for cookie in primary_cookies {
        assert_eq!(
            conn.get(&[("cookie", cookie)]).await.served_by,
            "primary",
            "{kind:?} cookie {cookie}"
        );
    }
    assert_eq!(conn.get(&[]).await.served_by, "primary");

    // Anchoring: a bare `canary` regex must match the whole value only.
    s.matches = vec![header("cookie", MatchKind::Regex, "canary")];
    r.splitter.apply(&s).await.unwrap();
    assert_eq!(
        conn.get(&[("cookie", "canary")]).await.served_by,
        "canary",
        "{kind:?}"
    );
    assert_eq!(
        conn.get(&[("cookie", "a=canary")]).await.served_by,
        "primary",
        "{kind:?}: regex is anchored"
    );

    s.matches.clear();
    r.splitter.apply(&s).await.unwrap();
    assert_eq!(
        conn.count(10, &[("cookie", "canary=always")]).await,
        (10, 0, 0),
        "{kind:?}: cleared matches"
    );
    r.splitter.shutdown().await;
}

async fn ab_prefix_suffix(kind: Kind) {
    let Some(r) = start(kind).await else { return };
    let (primary, canary) = (backend("primary").await, backend("canary").await);
    let mut conn = Conn::open(r.splitter.addr()).await;
    let mut s = split(&primary, &canary, 0);
    s.matches = vec![
        header("x-user", MatchKind::Prefix, "beta-"),
        header("x-user", MatchKind::Suffix, "@example.com"),
        // Characters the runtime API must escape.
        header("x-canary", MatchKind::Exact, "a b;c\\d"),
    ];
    r.splitter.apply(&s).await.unwrap();
    let cases = [
        ("x-user", "beta-42", "canary"),
        ("x-user", "42-beta-", "primary"),
        ("x-user", "Beta-42", "primary"),
        ("x-user", "bob@example.com", "canary"),
        ("x-user", "bob@example.comX", "primary"),
        ("x-canary", "a b;c\\d", "canary"),
        ("x-canary", "a b", "primary"),
    ];
    for (name, value, want) in cases {
        assert_eq!(
            conn.get(&[(name, value)]).await.served_by,
            want,
            "{kind:?} {name}: {value}"
        );
    }
    r.splitter.shutdown().await;
}

async fn address_change(kind: Kind) {
    let Some(r) = start(kind).await else { return };
    let (old, canary) = (backend("primary").await, backend("canary").await);
    let new = backend("primary-new").await;
    let mut conn = Conn::open(r.splitter.addr()).await;
    r.splitter.apply(&split(&old, &canary, 0)).await.unwrap();
    // Warm the proxy's server-side keep-alive connections to the old primary.
    assert_eq!(conn.count(5, &[]).await, (5, 0, 0));

    // A slow request in flight on the old primary, on its own client connection.
    let addr = r.splitter.addr();
    let in_flight = tokio::spawn(async move {
        let mut c = Conn::open(addr).await;
        c.request("GET", "/slow", &[], "").await
    });
    tokio::time::sleep(Duration::from_millis(150)).await;

    let mut moved = split(&new, &canary, 0);
    r.splitter.apply(&moved).await.unwrap();
    for i in 0..10 {
        let a = conn.get(&[]).await;
        assert_eq!(
            (a.status, a.served_by.as_str()),
            (StatusCode::OK, "primary-new"),
            "{kind:?}: request {i} after the move"
        );
    }
    // The old primary is still up: a new connection must not reach it either.
    let mut fresh = Conn::open(addr).await;
    assert_eq!(fresh.get(&[]).await.served_by, "primary-new");

    let slow = in_flight.await.unwrap();
    assert_eq!(
        (slow.status, slow.body.as_str()),
        (StatusCode::OK, "primary"),
        "{kind:?}: in-flight request"
    );

    // Move the canary too (matched requests follow it).
    let new_canary = backend("canary-new").await;
    moved.canary = Some(new_canary.addr);
    moved.matches = vec![header("x-canary", MatchKind::Exact, "1")];
    r.splitter.apply(&moved).await.unwrap();
    assert_eq!(conn.get(&[("x-canary", "1")]).await.served_by, "canary-new");
    r.splitter.shutdown().await;
}

async fn no_backend_is_503(kind: Kind) {
    let Some(r) = start(kind).await else { return };
    let mut conn = Conn::open(r.splitter.addr()).await;
    // Before any apply.
    assert_eq!(
        conn.get(&[]).await.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{kind:?} before apply"
    );
    let primary = backend("primary").await;
    r.splitter
        .apply(&Split {
            primary: Some(primary.addr),
            ..Split::default()
        })
        .await
        .unwrap();
    assert_eq!(conn.get(&[]).await.served_by, "primary");
    r.splitter.apply(&Split::default()).await.unwrap();
    let mut conn = Conn::open(r.splitter.addr()).await;
    assert_eq!(
        conn.get(&[]).await.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{kind:?} no primary, no canary"
    );
    r.splitter.shutdown().await;
}

/// A preview host goes to the canary whatever the weights and matches say (its name compared
/// without the port and case-insensitively), and gets 503 while there is no canary: never the
/// primary. Other hosts are split as before.
async fn preview_hosts_reach_the_canary_or_nothing(kind: Kind) {
    let Some(r) = start(kind).await else { return };
    let (primary, canary) = (backend("primary").await, backend("canary").await);
    let mut conn = Conn::open(r.splitter.addr()).await;
    let mut s = split(&primary, &canary, 0);
    s.preview_hosts = vec!["canary.app.test".into(), "beta.app.test".into()];
    r.splitter.apply(&s).await.unwrap();
    for _ in 0..5 {
        for host in ["canary.app.test", "Canary.App.Test:8080", "beta.app.test"] {
            assert_eq!(
                conn.get(&[("host", host)]).await.served_by,
                "canary",
                "{kind:?}: {host}"
            );
        }
        for host in ["app.test", "xcanary.app.test", "canary.app.test.evil"] {
            assert_eq!(
                conn.get(&[("host", host)]).await.served_by,
                "primary",
                "{kind:?}: {host}"
            );
        }
    }
    // All of the split on the canary changes nothing for the preview host; none on it either.
    s.canary_weight = 100;
    r.splitter.apply(&s).await.unwrap();
    assert_eq!(conn.get(&[("host", "app.test")]).await.served_by, "canary");
    assert_eq!(
        conn.get(&[("host", "canary.app.test")]).await.served_by,
        "canary"
    );
    // No canary: 503, not the primary.
    s.canary = None;
    s.canary_weight = 0;
    r.splitter.apply(&s).await.unwrap();
    let mut conn = Conn::open(r.splitter.addr()).await;
    let a = conn.get(&[("host", "canary.app.test")]).await;
    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE, "{kind:?}");
    assert_ne!(a.served_by, "primary");
    assert_eq!(conn.get(&[("host", "app.test")]).await.served_by, "primary");
    // Preview hosts removed: the host is split like any other.
    s.preview_hosts.clear();
    r.splitter.apply(&s).await.unwrap();
    assert_eq!(
        conn.get(&[("host", "canary.app.test")]).await.served_by,
        "primary"
    );
    // A host that is not a bare lower-case name is refused.
    s.preview_hosts = vec!["Canary.app.test:80".into()];
    let e = r.splitter.apply(&s).await.unwrap_err();
    assert!(e.to_string().contains("preview host"), "{e}");
    r.splitter.shutdown().await;
}

/// The weighted choice is among the backends that are set; a zero weight never picks.
async fn only_set_backends_are_weighted(kind: Kind) {
    let Some(r) = start(kind).await else { return };
    let canary = backend("canary").await;
    let mut conn = Conn::open(r.splitter.addr()).await;
    let only_canary = |w| Split {
        canary: Some(canary.addr),
        canary_weight: w,
        ..Split::default()
    };
    r.splitter.apply(&only_canary(30)).await.unwrap();
    assert_eq!(conn.count(10, &[]).await, (0, 10, 0), "{kind:?}");
    r.splitter.apply(&only_canary(0)).await.unwrap();
    let mut conn = Conn::open(r.splitter.addr()).await;
    let a = conn.get(&[]).await;
    assert_eq!(
        a.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{kind:?}: weight 0 and no primary"
    );
    // ...but a matching request still reaches the canary.
    let mut s = only_canary(0);
    s.matches = vec![header("x-canary", MatchKind::Exact, "yes")];
    r.splitter.apply(&s).await.unwrap();
    assert_eq!(
        conn.get(&[("x-canary", "yes")]).await.served_by,
        "canary",
        "{kind:?}"
    );
    r.splitter.shutdown().await;
}

async fn forwards_method_path_body_and_xff(kind: Kind) {
    let Some(r) = start(kind).await else { return };
    let (primary, canary) = (backend("primary").await, backend("canary").await);
    r.splitter
        .apply(&split(&primary, &canary, 0))
        .await
        .unwrap();
    let mut conn = Conn::open(r.splitter.addr()).await;
    let a = conn
        .request(
            "POST",
            "/orders/7?dry=1",
            &[("content-type", "text/plain")],
            "hello",
        )
        .await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.body, "primary:hello");
    assert_eq!(a.headers["x-echo-method"], "POST");
    assert_eq!(a.headers["x-echo-uri"], "/orders/7?dry=1");
    assert_eq!(a.headers["x-echo-xff"], "127.0.0.1", "{kind:?}");
    // A 1 MiB body streams through.
    let big = "x".repeat(1 << 20);
    let a = conn.request("PUT", "/big", &[], &big).await;
    assert_eq!(a.body.len(), "primary:".len() + (1 << 20));
    r.splitter.shutdown().await;
}

async fn invalid_weight_rejected(kind: Kind) {
    let Some(r) = start(kind).await else { return };
    let primary = backend("primary").await;
    let s = Split {
        primary: Some(primary.addr),
        canary_weight: 101,
        ..Split::default()
    };
    let err = r.splitter.apply(&s).await.unwrap_err();
    assert!(matches!(err, Error::Invalid { .. }), "{err}");
    let bad = Split {
        primary: Some(primary.addr),
        matches: vec![header("x-canary", MatchKind::Regex, "(unclosed")],
        ..Split::default()
    };
    let err = r.splitter.apply(&bad).await.unwrap_err();
    assert!(err.to_string().contains("(unclosed"), "{err}");
    r.splitter.shutdown().await;
}

// --------------------------------------------------------------------------------------------
// Engine-specific.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_supports_multi_header_and() {
    let r = start(Kind::Embedded).await.unwrap();
    let (primary, canary) = (backend("primary").await, backend("canary").await);
    let mut conn = Conn::open(r.splitter.addr()).await;
    let mut s = split(&primary, &canary, 0);
    s.matches = vec![Match {
        headers: vec![
            HeaderMatch {
                name: "x-a".into(),
                kind: MatchKind::Exact,
                value: "1".into(),
            },
            HeaderMatch {
                name: "X-B".into(),
                kind: MatchKind::Prefix,
                value: "2".into(),
            },
        ],
    }];
    r.splitter.apply(&s).await.unwrap();
    assert_eq!(
        conn.get(&[("x-a", "1"), ("x-b", "22")]).await.served_by,
        "canary"
    );
    assert_eq!(conn.get(&[("x-a", "1")]).await.served_by, "primary");
    assert_eq!(conn.get(&[("x-b", "2")]).await.served_by, "primary");
    assert_eq!(r.splitter.describe(), "embedded proxy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_rejects_what_it_cannot_express() {
    let Some(r) = start(Kind::Haproxy).await else {
        return;
    };
    let primary = backend("primary").await;
    let canary = backend("canary").await;
    let mut s = split(&primary, &canary, 0);
    s.matches = vec![Match {
        headers: vec![
            HeaderMatch {
                name: "x-canary".into(),
                kind: MatchKind::Exact,
                value: "1".into(),
            },
            HeaderMatch {
                name: "cookie".into(),
                kind: MatchKind::Exact,
                value: "2".into(),
            },
        ],
    }];
    let err = r.splitter.apply(&s).await.unwrap_err();
    assert!(matches!(err, Error::Unsupported { .. }), "{err}");
    assert!(
        err.to_string().contains("x-canary AND cookie") && err.to_string().contains("Embedded"),
        "{err}"
    );

    s.matches = vec![header("x-unknown", MatchKind::Exact, "1")];
    let err = r.splitter.apply(&s).await.unwrap_err();
    assert!(matches!(err, Error::Unsupported { .. }), "{err}");
    assert!(
        err.to_string().contains("x-unknown") && err.to_string().contains("match_headers"),
        "{err}"
    );
    r.splitter.shutdown().await;
}

/// What `apply` did, as HAProxy itself reports it through the runtime API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_runtime_state_matches_the_split() {
    let Some(r) = start(Kind::Haproxy).await else {
        return;
    };
    let Inner::Haproxy(h) = &r.splitter.inner else {
        unreachable!()
    };
    assert!(
        r.splitter.describe().starts_with("HAProxy 2."),
        "{}",
        r.splitter.describe()
    );
    assert!(r.splitter.describe().contains("haproxy.sock"));
    let (primary, canary) = (backend("primary").await, backend("canary").await);
    let mut s = split(&primary, &canary, 25);
    s.matches = vec![
        header("x-canary", MatchKind::Exact, "insider"),
        header("Cookie", MatchKind::Regex, "^(.*?;)?(canary=always)(;.*)?$"),
    ];
    r.splitter.apply(&s).await.unwrap();
    let all = |_: &str| true;
    let state = h.command("show servers state weighted", all).await.unwrap();
    let row = |name: &str| -> Vec<String> {
        let line = state
            .lines()
            .find(|l| l.split_whitespace().nth(3) == Some(name))
            .unwrap();
        line.split_whitespace().map(String::from).collect()
    };
    // Columns: be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight ... srv_port (18)
    assert_eq!(row("primary")[7], "75", "{state}");
    assert_eq!(row("canary")[7], "25", "{state}");
    assert_eq!(
        row("primary")[18],
        primary.addr.port().to_string(),
        "{state}"
    );
    assert_eq!(row("canary")[18], canary.addr.port().to_string(), "{state}");
    let exact = h
        .command(&format!("show acl {}", h.acl_files[0][0]), all)
        .await
        .unwrap();
    assert!(exact.ends_with(" insider"), "{exact}");
    let regex = h
        .command(&format!("show acl {}", h.acl_files[1][3]), all)
        .await
        .unwrap();
    assert!(
        regex.ends_with(" ^(?:^(.*?;)?(canary=always)(;.*)?$)$"),
        "{regex}"
    );

    s.canary = None;
    r.splitter.apply(&s).await.unwrap();
    let stat = h.command("show stat", all).await.unwrap();
    let canary_row = stat
        .lines()
        .find(|l| l.starts_with("weighted,canary,"))
        .unwrap();
    assert!(canary_row.contains(",MAINT,"), "{canary_row}");
    let exact = h
        .command(&format!("show acl {}", h.acl_files[0][0]), all)
        .await
        .unwrap();
    assert!(
        exact.is_empty(),
        "matches without a canary are cleared: {exact}"
    );

    // A rejected command becomes an error carrying HAProxy's answer.
    let err = h
        .silent("set server weighted/nope state ready")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("No such server"), "{err}");
    r.splitter.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_missing_binary_is_a_clear_error() {
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    let result = Splitter::start(Options {
        engine: Engine::Haproxy {
            binary: "/nonexistent/haproxy".into(),
        },
        workdir: dir.path().to_path_buf(),
        match_headers: vec![],
    })
    .await;
    let Err(err) = result else {
        panic!("started with a missing binary")
    };
    let text = err.to_string();
    assert!(matches!(err, Error::HaproxyStart { .. }), "{text}");
    assert!(
        text.contains("/nonexistent/haproxy")
            && text.contains("no such file")
            && text.contains("embedded"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_start_failure_reports_its_stderr() {
    // `true` exits at once, a stand-in for an HAProxy that dies at start.
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    let fake = dir.path().join("fake-haproxy");
    std::fs::write(
        &fake,
        "#!/bin/sh\necho 'config error: something is wrong' >&2\nexit 3\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let result = Splitter::start(Options {
        engine: Engine::Haproxy { binary: fake },
        workdir: dir.path().join("w"),
        match_headers: vec![],
    })
    .await;
    let Err(err) = result else {
        panic!("started with a failing binary")
    };
    let text = err.to_string();
    assert!(
        text.contains("haproxy exited at start") && text.contains("something is wrong"),
        "{text}"
    );
}

fn alive(pid: u32) -> bool {
    // A zombie would still have /proc/<pid>; Drop reaps, so the entry must be gone entirely.
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_leaves_no_orphan() {
    let Some(r) = start(Kind::Haproxy).await else {
        return;
    };
    let Inner::Haproxy(h) = &r.splitter.inner else {
        unreachable!()
    };
    let pid = h.pid();
    assert!(alive(pid));
    r.splitter.shutdown().await;
    assert!(!alive(pid), "haproxy {pid} survived shutdown");

    let Some(r) = start(Kind::Haproxy).await else {
        return;
    };
    let Inner::Haproxy(h) = &r.splitter.inner else {
        unreachable!()
    };
    let pid = h.pid();
    assert!(alive(pid));
    drop(r);
    assert!(!alive(pid), "haproxy {pid} survived drop");
}

#[test]
fn smooth_wrr_is_exact() {
    for w in [0u8, 1, 20, 33, 50, 99, 100] {
        let s = Split {
            primary: Some("127.0.0.1:1".parse().unwrap()),
            canary: Some("127.0.0.1:2".parse().unwrap()),
            canary_weight: w,
            matches: vec![],
            preview_hosts: vec![],
        };
        let mut wrr = SmoothWrr::new(&s);
        let canary = (0..100)
            .filter(|_| wrr.pick() == Some(Target::Canary))
            .count();
        assert_eq!(canary, usize::from(w));
    }
}

#[test]
fn cli_escaping() {
    assert_eq!(haproxy::escape_cli_arg("a b;c\\d"), "a\\ b\\;c\\\\d");
}

/// Dead or a zombie (a zombie is no longer running; its reaper may be a container's PID 1).
fn gone_or_zombie(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
    }
}

/// Even when the owning process is SIGKILLed (no Drop), HAProxy must not survive it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_dies_with_a_killed_parent() {
    if std::env::var_os("SPLITTER_ORPHAN_CHILD").is_some() {
        let r = start(Kind::Haproxy).await.unwrap();
        let Inner::Haproxy(h) = &r.splitter.inner else {
            unreachable!()
        };
        println!(
            "HAPROXY_PID={} WORKDIR={}",
            h.pid(),
            r._dir.path().display()
        );
        use std::io::Write;
        std::io::stdout().flush().unwrap();
        tokio::time::sleep(Duration::from_secs(20)).await;
        return;
    }
    if haproxy_binary().is_none() {
        return;
    }
    // Adopt the orphan (instead of PID 1, which may never reap it) so it can be reaped below.
    // SAFETY: plain prctl(2) call.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1) };
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "tests::haproxy_dies_with_a_killed_parent",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("SPLITTER_ORPHAN_CHILD", "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let line = tokio::task::spawn_blocking(move || {
        use std::io::BufRead;
        std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .find(|l| l.contains("HAPROXY_PID="))
            .unwrap()
    })
    .await
    .unwrap();
    let fields: Vec<&str> = line.split_whitespace().collect();
    let pid: u32 = fields
        .iter()
        .find_map(|f| f.strip_prefix("HAPROXY_PID="))
        .unwrap()
        .parse()
        .unwrap();
    let workdir = fields
        .iter()
        .find_map(|f| f.strip_prefix("WORKDIR="))
        .unwrap()
        .to_string();
    assert!(!gone_or_zombie(pid));
    child.kill().unwrap(); // SIGKILL: the splitter's Drop never runs
    child.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(3);
    while !gone_or_zombie(pid) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = std::fs::remove_dir_all(&workdir);
    let dead = gone_or_zombie(pid);
    // Reap the adopted zombie (it may take a moment to be re-parented to this process).
    let deadline = Instant::now() + Duration::from_secs(1);
    while dead && alive(pid) && Instant::now() < deadline {
        // SAFETY: waitpid(2) on a pid this process adopted; WNOHANG never blocks.
        let reaped =
            unsafe { libc::waitpid(pid as libc::pid_t, std::ptr::null_mut(), libc::WNOHANG) };
        if reaped == pid as libc::pid_t {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(dead, "haproxy {pid} outlived its SIGKILLed parent");
}

/// The caller shares one Splitter across tasks and spawns `apply`.
#[allow(dead_code)]
fn splitter_is_send_and_sync(s: &'static Splitter, split: &'static Split) {
    fn send_sync<T: Send + Sync>(_: &T) {}
    fn send<T: Send>(_: T) {}
    send_sync(s);
    send(s.apply(split));
    send(Splitter::start(Options {
        engine: Engine::Embedded,
        workdir: "/tmp".into(),
        match_headers: vec![],
    }));
}

/// While 32 clients send requests back to back on their keep-alive connections, the primary
/// moves between three backends, ten times: every request that starts after `apply` returned
/// reaches the new address, none the one it moved from (HAProxy kept sending requests over
/// server connections to the old address for up to ~150 ms after `set server addr`, until its
/// server connections were made per request).
async fn address_change_under_concurrency(kind: Kind) {
    let Some(r) = start(kind).await else { return };
    let backends = [backend("a").await, backend("b").await, backend("c").await];
    let names = ["a", "b", "c"];
    let canary = backend("canary").await;
    r.splitter
        .apply(&split(&backends[0], &canary, 0))
        .await
        .unwrap();
    let addr = r.splitter.addr();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut clients = Vec::new();
    for _ in 0..32 {
        let stop = stop.clone();
        clients.push(tokio::spawn(async move {
            let mut c = Conn::open(addr).await;
            let mut seen = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let started = Instant::now();
                seen.push((started, c.get(&[]).await.served_by));
            }
            seen
        }));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    // (applied, from, to)
    let mut moves: Vec<(Instant, &str, &str)> = Vec::new();
    for i in 1..=10 {
        r.splitter
            .apply(&split(&backends[i % 3], &canary, 0))
            .await
            .unwrap();
        moves.push((Instant::now(), names[(i - 1) % 3], names[i % 3]));
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut checked, mut stale) = (0, Vec::new());
    for c in clients {
        for (started, served_by) in c.await.unwrap() {
            if let Some((applied, from, _)) = moves.iter().rev().find(|m| m.0 < started) {
                checked += 1;
                if served_by == *from {
                    stale.push(started - *applied);
                }
            }
        }
    }
    assert!(checked > 500, "{kind:?}: only {checked} requests");
    assert!(
        stale.is_empty(),
        "{kind:?}: {} of {checked} requests started after apply returned reached the address the primary had moved from, up to {:?} after: {stale:?}",
        stale.len(),
        stale.iter().max()
    );
    r.splitter.shutdown().await;
}
