//! Watches: kube-runtime's watcher, raw watch streams, 410 Gone.

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube::runtime::watcher::{self, Event};
use kube::ResourceExt;
use serde_json::json;

use crate::{setup, TestResult};

#[tokio::test]
async fn runtime_watcher_sees_updates() -> TestResult {
    let (_emu, client) = setup().await?;
    let api: Api<ConfigMap> = Api::default_namespaced(client);
    let cm: ConfigMap = serde_json::from_value(
        json!({"metadata": {"name": "watched", "labels": {"app": "w"}}, "data": {"v": "1"}}),
    )?;
    api.create(&PostParams::default(), &cm).await?;

    let stream = watcher::watcher(api.clone(), watcher::Config::default().labels("app=w"));
    let mut stream = Box::pin(stream);
    let mut saw_initial = false;
    let mut patched = false;
    let seen = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(ev) = stream.try_next().await? {
            match ev {
                Event::InitApply(o) if o.name_any() == "watched" => saw_initial = true,
                Event::InitDone => {
                    api.patch(
                        "watched",
                        &PatchParams::default(),
                        &Patch::Merge(json!({"data": {"v": "2"}})),
                    )
                    .await?;
                    patched = true;
                }
                Event::Apply(o) if patched => {
                    return Ok::<_, Box<dyn std::error::Error + Send + Sync>>(o);
                }
                _ => {}
            }
        }
        Err("watch stream ended".into())
    })
    .await??;
    assert!(saw_initial);
    assert_eq!(
        seen.data.and_then(|d| d.get("v").cloned()).as_deref(),
        Some("2")
    );
    Ok(())
}

#[tokio::test]
async fn streaming_list_watcher_works() -> TestResult {
    let (_emu, client) = setup().await?;
    let api: Api<ConfigMap> = Api::default_namespaced(client);
    api.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "a"}}))?,
    )
    .await?;
    let stream = watcher::watcher(api.clone(), watcher::Config::default().streaming_lists());
    let mut stream = Box::pin(stream);
    let got = tokio::time::timeout(Duration::from_secs(5), async {
        let mut names = Vec::new();
        while let Some(ev) = stream.try_next().await? {
            match ev {
                Event::InitApply(o) => names.push(o.name_any()),
                Event::InitDone => return Ok::<_, watcher::Error>(names),
                _ => {}
            }
        }
        Ok(names)
    })
    .await??;
    assert_eq!(got, ["a"]);
    Ok(())
}

#[tokio::test]
async fn raw_watch_events_and_selector_transitions() -> TestResult {
    let (emu, client) = setup().await?;
    let api: Api<ConfigMap> = Api::default_namespaced(client);
    let created = api
        .create(
            &PostParams::default(),
            &serde_json::from_value(
                json!({"metadata": {"name": "a", "labels": {"track": "canary"}}}),
            )?,
        )
        .await?;
    let rv = created.resource_version().unwrap_or_default();
    let wp = WatchParams::default().labels("track=canary").timeout(5);
    let mut stream = Box::pin(api.watch(&wp, &rv).await?);
    let pp = PatchParams::default();
    api.patch("a", &pp, &Patch::Merge(json!({"data": {"x": "1"}})))
        .await?;
    // Leaving the selector is a DELETED for this watch.
    api.patch(
        "a",
        &pp,
        &Patch::Merge(json!({"metadata": {"labels": {"track": "primary"}}})),
    )
    .await?;
    let mut kinds = Vec::new();
    while kinds.len() < 2 {
        match tokio::time::timeout(Duration::from_secs(5), stream.next()).await? {
            Some(Ok(WatchEvent::Modified(o))) => kinds.push(format!("MODIFIED {}", o.name_any())),
            Some(Ok(WatchEvent::Deleted(o))) => kinds.push(format!("DELETED {}", o.name_any())),
            Some(Ok(WatchEvent::Bookmark(_))) => {}
            other => return Err(format!("unexpected {other:?}").into()),
        }
    }
    assert_eq!(kinds, ["MODIFIED a", "DELETED a"]);

    // A resourceVersion older than the kept history: ERROR 410 Expired.
    emu.set_watch_history_limit(1);
    api.patch("a", &pp, &Patch::Merge(json!({"data": {"x": "2"}})))
        .await?;
    api.patch("a", &pp, &Patch::Merge(json!({"data": {"x": "3"}})))
        .await?;
    let mut old = Box::pin(api.watch(&WatchParams::default().timeout(5), &rv).await?);
    match tokio::time::timeout(Duration::from_secs(5), old.next()).await? {
        Some(Ok(WatchEvent::Error(e))) => {
            assert_eq!((e.code, e.reason.as_str()), (410, "Expired"));
            assert!(
                e.message.starts_with("too old resource version"),
                "{}",
                e.message
            );
        }
        other => return Err(format!("expected a 410, got {other:?}").into()),
    }
    Ok(())
}

#[tokio::test]
async fn watch_ends_after_timeout_seconds() -> TestResult {
    let (_emu, client) = setup().await?;
    let api: Api<ConfigMap> = Api::default_namespaced(client);
    let start = std::time::Instant::now();
    let mut stream = Box::pin(api.watch(&WatchParams::default().timeout(1), "0").await?);
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        while stream.next().await.is_some() {}
    })
    .await;
    assert!(ended.is_ok(), "stream should end by itself");
    assert!(start.elapsed() >= Duration::from_millis(900));
    Ok(())
}
