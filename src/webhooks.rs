//! Webhooks, called the way Flagger calls them (and so compatible with the flagger-loadtester):
//! a POST of `{name, namespace, phase, checksum, metadata}`, success for 200-202, a per-hook
//! timeout (default 10s) and `retries` extra attempts.
//!
//! The per-hook timeout bounds the whole call (connect, send, answer); opening the connection is
//! also bounded by [`crate::http::CONNECT_TIMEOUT`]. Of a failing answer only the first
//! [`crate::http::WEBHOOK_EXCERPT`] bytes are read, for the message; a successful answer's body is
//! not read at all. The hook's URL appears in messages redacted ([`crate::urls::redact`]): a
//! `user:password@` or a `?token=` never reaches a log, a report or an annotation.

use std::time::Duration;

use serde::Serialize;

use crate::engine::{HookOutcome, Phase};
use crate::spec::Webhook;

#[derive(Serialize)]
struct Payload<'a> {
    name: &'a str,
    namespace: &'a str,
    phase: &'a str,
    checksum: &'a str,
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    metadata: &'a std::collections::BTreeMap<String, String>,
}

#[derive(Clone)]
pub struct WebhookCaller {
    http: reqwest::Client,
}

impl Default for WebhookCaller {
    fn default() -> Self {
        WebhookCaller::new()
    }
}

impl WebhookCaller {
    pub fn new() -> WebhookCaller {
        WebhookCaller {
            http: crate::http::client_builder().build().unwrap_or_default(),
        }
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
        let shown = crate::urls::redact(&hook.url);
        let mut last = String::new();
        for attempt in 0..=hook.retries {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(500 * u64::from(attempt.min(10)))).await;
            }
            let result = self
                .http
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
                    .map(|e| crate::urls::redact_in_text(&e.text(300)))
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
