//! `analysis.webhooks`: the hooks called before, during and after a rollout.

use std::collections::HashMap;
use std::time::Duration;

use super::diagnostics::{choice_help, join, Cx, Hint};
use super::fields::{to_u32, Field};
use super::names::unique_name;
use super::MAX_WEBHOOK_RETRIES;
use crate::spec::types::{HookType, Webhook};
use crate::spec::yaml::quote;

pub(super) fn decode_webhooks(cx: &mut Cx, items: &[Field]) -> Vec<Webhook> {
    let mut seen = HashMap::new();
    let mut out = Vec::new();
    for item in items {
        if let Some(w) = decode_webhook(cx, item, &mut seen) {
            out.push(w);
        }
    }
    out
}

pub(super) fn decode_webhook(
    cx: &mut Cx,
    item: &Field,
    seen: &mut HashMap<String, usize>,
) -> Option<Webhook> {
    let mut r = item.map(cx)?;
    let name = r.req_string(cx, "name");
    if let Some(n) = &name {
        let line = r.key_line("name");
        unique_name(cx, seen, "webhook", n, line, &join(&item.path, "name"));
    }
    let hook_type = match r.field("type") {
        None => Some(HookType::Rollout),
        Some(f) => f.string(cx).and_then(|t| {
            let parsed = HookType::parse(&t);
            if parsed.is_none() {
                let names: Vec<&str> = HookType::ALL.iter().map(|h| h.as_str()).collect();
                f.error(cx, format!("unknown webhook type {}", quote(&t)))
                    .hint(choice_help(&t, &names, "use one of"));
            }
            parsed
        }),
    };
    let url = r.req(cx, "url", |f, cx| {
        let url = f.nonempty_string(cx)?;
        let rest = url
            .strip_prefix("http://")
            .or_else(|| url.strip_prefix("https://"));
        if !matches!(rest, Some(r) if !r.is_empty()) {
            // Not `expected`: it would repeat the address, credentials and all.
            f.error(
                cx,
                format!(
                    "expected an http:// or https:// URL, got {}",
                    quote(&crate::urls::redact(&url))
                ),
            )
            .hint("write the full address, such as http://flagger-loadtester.test/");
            return None;
        }
        Some(url)
    });
    let timeout = r
        .field("timeout")
        .and_then(|f| f.duration(cx))
        .map_or(Duration::from_secs(10), |(d, _)| d);
    let retries = r
        .int(cx, "retries", 0, Some(MAX_WEBHOOK_RETRIES))
        .map_or(0, to_u32);
    let mute_alert = r.flag(cx, "muteAlert");
    let metadata = r.str_map(cx, "metadata");
    let disable_tls = r.flag(cx, "disableTLS");
    r.finish(cx);
    Some(Webhook {
        name: name?,
        hook_type: hook_type?,
        url: url?,
        timeout,
        retries,
        mute_alert,
        metadata,
        disable_tls,
    })
}

#[cfg(test)]
mod tests {
    use crate::spec::decode::test_support::*;

    #[test]
    fn unknown_webhook_type_and_missing_url() {
        let text = canary(
            FLAGGER_API,
            "    stepWeight: 10\n    webhooks:\n    - name: a\n      type: pre-rolout\n      url: http://x/\n    - name: b\n      type: post-rollout\n",
        );
        assert_eq!(
            errors(&text),
            vec![
                "canary.yaml:15: spec.analysis.webhooks[0].type: unknown webhook type \"pre-rolout\"\n  help: did you mean \"pre-rollout\"?",
                "canary.yaml:17: spec.analysis.webhooks[1]: missing required field \"url\"",
            ]
        );
        let text = canary(
            FLAGGER_API,
            "    stepWeight: 10\n    webhooks:\n    - name: a\n      type: bogus\n      url: x\n",
        );
        assert_eq!(
            errors(&text),
            vec![
                "canary.yaml:15: spec.analysis.webhooks[0].type: unknown webhook type \"bogus\"\n  help: use one of: confirm-rollout, pre-rollout, rollout, confirm-traffic-increase, confirm-promotion, post-rollout, rollback, event",
                "canary.yaml:16: spec.analysis.webhooks[0].url: expected an http:// or https:// URL, got \"x\"\n  help: write the full address, such as http://flagger-loadtester.test/",
            ]
        );
    }

    #[test]
    fn a_refused_webhook_url_is_shown_without_its_credentials() {
        let text = canary(
            FLAGGER_API,
            "    stepWeight: 10\n    webhooks:\n    - name: a\n      url: ftp://deploy:hunter2@x/hook\n",
        );
        let errs = errors(&text);
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(errs[0].contains("webhooks[0].url"), "{errs:?}");
        assert!(!errs[0].contains("hunter2"), "{errs:?}");
    }
}
