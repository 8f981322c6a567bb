//! Webhooks, called the way Flagger calls them (and so compatible with the flagger-loadtester):
//! a POST of `{name, namespace, phase, checksum, metadata}`, success for 200-202, a per-hook
//! timeout (default 10s) and `retries` extra attempts.
//!
//! The per-hook timeout bounds the whole call (connect, send, answer); opening the connection is
//! also bounded by [`crate::http::CONNECT_TIMEOUT`]. Of a failing answer only the first
//! [`crate::http::WEBHOOK_EXCERPT`] bytes are read, for the message; a successful answer's body is
//! not read at all. A hook with `disableTLS: true` is called, as Flagger calls it, by a second
//! client that does not verify the server's TLS certificate (same timeouts and caps); every other
//! hook's certificate is verified. The hook's URL appears in messages redacted ([`aviary_core::urls::redact`]): a
//! `user:password@` or a `?token=` never reaches a log, a report or an annotation.

use std::time::Duration;

use serde::Serialize;

use aviary_core::engine::{HookOutcome, Phase};
use aviary_core::spec::Webhook;

#[derive(Serialize)]
struct Payload<'a> {
    name: &'a str,
    namespace: &'a str,
    phase: &'a str,
    checksum: &'a str,
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    metadata: &'a std::collections::BTreeMap<String, String>,
}

#[derive(Clone, Default)]
pub struct WebhookCaller {
    /// The run's clients: the hooks with `disableTLS` use the one that verifies no certificate.
    http: crate::http::Clients,
}

impl WebhookCaller {
    pub fn new() -> WebhookCaller {
        WebhookCaller::default()
    }

    /// A caller that sends through the run's shared `clients`.
    pub fn with_clients(clients: crate::http::Clients) -> WebhookCaller {
        WebhookCaller { http: clients }
    }

    /// Calls `hook` for canary `name.namespace` in `phase`.
    pub async fn call(
        &self,
        hook: &Webhook,
        name: &str,
        namespace: &str,
        phase: Phase,
        checksum: &str,
    ) -> HookOutcome {
        let payload = Payload {
            name,
            namespace,
            phase: phase.as_str(),
            checksum,
            metadata: &hook.metadata,
        };
        let shown = aviary_core::urls::redact(&hook.url);
        let mut last = String::new();
        let http = match self.http.get(hook.disable_tls) {
            Ok(http) => http,
            Err(e) => return HookOutcome::Fail(format!("{shown}: {e}")),
        };
        for attempt in 0..=hook.retries {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(500 * u64::from(attempt.min(10)))).await;
            }
            let result = http
                .post(&hook.url)
                .timeout(hook.timeout)
                .json(&payload)
                .send()
                .await;
            match result {
                Ok(response) => {
                    let status = response.status();
                    if (200..=202).contains(&status.as_u16()) {
                        return HookOutcome::Pass;
                    }
                    // Only the start of the answer is read: a hook that answers with a huge body
                    // costs one small buffer, and the connection is closed after it.
                    let excerpt = crate::http::read_at_most(
                        crate::http::body_stream(response),
                        crate::http::WEBHOOK_EXCERPT,
                    )
                    .await
                    .map(|e| aviary_core::urls::redact_in_text(&e.text(300)))
                    .unwrap_or_default();
                    last = if excerpt.is_empty() {
                        format!("{shown} returned {status}")
                    } else {
                        format!("{shown} returned {status}: {excerpt}")
                    };
                }
                Err(e) if e.is_timeout() => {
                    last = format!("{shown} timed out after {:?}", hook.timeout)
                }
                Err(e) => last = format!("{shown}: {}", crate::http::describe(&e)),
            }
        }
        HookOutcome::Fail(last)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aviary_core::spec::HookType;

    fn hook(url: &str) -> Webhook {
        Webhook {
            name: "acceptance".into(),
            hook_type: HookType::Rollout,
            url: url.into(),
            timeout: Duration::from_secs(5),
            retries: 0,
            mute_alert: false,
            metadata: Default::default(),
            disable_tls: false,
        }
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt.block_on(f),
            Err(e) => panic!("{e}"),
        }
    }

    fn fail_message(outcome: HookOutcome) -> String {
        match outcome {
            HookOutcome::Fail(m) => m,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_failing_hook_is_named_without_its_credentials_with_the_start_of_its_answer() {
        use wiremock::{Mock, MockServer, ResponseTemplate};
        let message = block_on(async {
            let server = MockServer::start().await;
            Mock::given(wiremock::matchers::method("POST"))
                .respond_with(ResponseTemplate::new(503).set_body_string("y".repeat(5000)))
                .mount(&server)
                .await;
            let url = server.uri().replace("http://", "http://aviary:hunter2@")
                + "/hook?token=s3cr3t&v=1";
            let outcome = WebhookCaller::new()
                .call(&hook(&url), "podinfo", "test", Phase::Progressing, "abc")
                .await;
            (fail_message(outcome), server.uri())
        });
        let (message, uri) = message;
        let host = uri.trim_start_matches("http://");
        assert!(
            message.starts_with(&format!(
                "http://***@{host}/hook?token=***&v=1 returned 503 Service Unavailable: yyy"
            )),
            "{message}"
        );
        assert!(!message.contains("hunter2") && !message.contains("s3cr3t"));
        // 300 characters of the answer and an ellipsis, not 5000.
        assert!(message.ends_with('…') && message.len() < 500, "{message}");
    }

    #[test]
    fn a_hook_that_cannot_be_reached_is_named_without_its_credentials() {
        let port = match std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()) {
            Ok(a) => a.port(),
            Err(e) => panic!("{e}"),
        };
        let url = format!("http://aviary:hunter2@127.0.0.1:{port}/?api_key=s3cr3t");
        let message = fail_message(block_on(WebhookCaller::new().call(
            &hook(&url),
            "podinfo",
            "test",
            Phase::Progressing,
            "abc",
        )));
        assert!(
            message.starts_with(&format!(
                "http://***@127.0.0.1:{port}/?api_key=***: error sending request"
            )),
            "{message}"
        );
        assert!(
            !message.contains("hunter2") && !message.contains("s3cr3t"),
            "{message}"
        );
    }

    /// Serves HTTPS on loopback with the self-signed certificate of `testdata/webhook-tls`
    /// (made with `openssl req -x509 -newkey ec ... -days 36500`), answering every request with
    /// 200. Returns the port.
    async fn https_hook() -> u16 {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        crate::http::install_crypto_provider();
        let cert = include_bytes!("../testdata/webhook-tls/cert.pem");
        let key = include_bytes!("../testdata/webhook-tls/key.pem");
        let certs = match CertificateDer::pem_slice_iter(cert).collect::<Result<Vec<_>, _>>() {
            Ok(c) => c,
            Err(e) => panic!("cert: {e}"),
        };
        let key = match PrivateKeyDer::from_pem_slice(key) {
            Ok(k) => k,
            Err(e) => panic!("key: {e}"),
        };
        let config = match rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(certs, key)
        {
            Ok(c) => c,
            Err(e) => panic!("server config: {e}"),
        };
        let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
        let listener = match tokio::net::TcpListener::bind("127.0.0.1:0").await {
            Ok(l) => l,
            Err(e) => panic!("{e}"),
        };
        let port = match listener.local_addr() {
            Ok(a) => a.port(),
            Err(e) => panic!("{e}"),
        };
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    // A failed handshake (a client that checks the certificate) just ends here.
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let mut seen = Vec::new();
                    let mut buf = [0u8; 4096];
                    while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                        match tls.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => seen.extend_from_slice(&buf[..n]),
                        }
                    }
                    let _ = tls
                        .write_all(
                            b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                        )
                        .await;
                    let _ = tls.shutdown().await;
                });
            }
        });
        port
    }

    #[test]
    fn disable_tls_skips_the_certificate_check_for_that_hook_only() {
        let (insecure, verified) = block_on(async {
            let port = https_hook().await;
            let url = format!("https://127.0.0.1:{port}/hook");
            let caller = WebhookCaller::new();
            let mut skip = hook(&url);
            skip.disable_tls = true;
            let insecure = caller
                .call(&skip, "podinfo", "test", Phase::Progressing, "abc")
                .await;
            let verified = caller
                .call(&hook(&url), "podinfo", "test", Phase::Progressing, "abc")
                .await;
            (insecure, verified)
        });
        assert_eq!(insecure, HookOutcome::Pass);
        let message = fail_message(verified);
        assert!(
            message.contains("certificate") || message.contains("Certificate"),
            "{message}"
        );
    }
}
