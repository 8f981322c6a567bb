//! Webhooks, called the way Flagger calls them (and so compatible with the flagger-loadtester):
//! a POST of `{name, namespace, phase, checksum, metadata}`, success for 200-202, a per-hook
//! timeout (default 10s) and `retries` extra attempts.

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
            http: reqwest::Client::builder()
                .user_agent(concat!("aviary/", env!("CARGO_PKG_VERSION")))
                .build()
                .unwrap_or_default(),
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
                    let body = response.text().await.unwrap_or_default();
                    let body: String = body.trim().chars().take(300).collect();
                    last = if body.is_empty() {
                        format!("{} returned {status}", hook.url)
                    } else {
                        format!("{} returned {status}: {body}", hook.url)
                    };
                }
                Err(e) if e.is_timeout() => {
                    last = format!("{} timed out after {:?}", hook.url, hook.timeout)
                }
                Err(e) => last = format!("{}: {e}", hook.url),
            }
        }
        HookOutcome::Fail(last)
    }
}
