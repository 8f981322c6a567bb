//! Events are one resource served in two groups, as on a real API server: `core/v1` Events and
//! `events.k8s.io/v1` Events share a storage (kept in the core form), and each group's clients
//! read and write their own view of every Event, whichever group wrote it.
//!
//! The views differ in field names only (Kubernetes' `events/v1` conversion): `regarding` is
//! `involvedObject`, `note` is `message`, `reportingController` is `reportingComponent`, and the
//! `deprecated*` fields are the core view's `source`, `firstTimestamp`, `lastTimestamp` and
//! `count`. An `events.k8s.io/v1` Event is validated on creation as the real server validates
//! it (its required fields, its type, the length of its note).

use serde_json::{json, Map, Value};

use crate::errors::{ApiError, ApiResult, Cause};
use crate::resources::Rt;

/// `events.k8s.io/v1` field → `core/v1` field.
const RENAMES: &[(&str, &str)] = &[
    ("regarding", "involvedObject"),
    ("note", "message"),
    ("reportingController", "reportingComponent"),
    ("deprecatedSource", "source"),
    ("deprecatedFirstTimestamp", "firstTimestamp"),
    ("deprecatedLastTimestamp", "lastTimestamp"),
    ("deprecatedCount", "count"),
];

/// Whether `rt` is the `events.k8s.io` view of Events.
pub(crate) fn is_events_view(rt: &Rt) -> bool {
    rt.group() == "events.k8s.io" && rt.plural() == "events"
}

/// The field a field selector of the `events.k8s.io` view names, in the stored (core) form.
pub(crate) fn core_field(field: &str) -> String {
    if let Some(rest) = field.strip_prefix("regarding.") {
        return format!("involvedObject.{rest}");
    }
    match field {
        "reportingController" => "reportingComponent".to_string(),
        other => other.to_string(),
    }
}

fn rename(obj: Value, pairs: impl Iterator<Item = (&'static str, &'static str)>) -> Value {
    let Value::Object(mut m) = obj else {
        return obj;
    };
    for (from, to) in pairs {
        if let Some(v) = m.remove(from) {
            m.insert(to.to_string(), v);
        }
    }
    Value::Object(m)
}

/// An `events.k8s.io/v1` Event in the stored (core) form.
pub(crate) fn to_core(obj: Value) -> Value {
    let mut out = rename(obj, RENAMES.iter().copied());
    if let Some(m) = out.as_object_mut() {
        m.insert("apiVersion".into(), json!("v1"));
    }
    out
}

/// A stored Event in the `events.k8s.io/v1` view.
pub(crate) fn to_view(obj: Value) -> Value {
    rename(obj, RENAMES.iter().map(|(new, core)| (*core, *new)))
}

fn text<'a>(m: &'a Map<String, Value>, key: &str) -> &'a str {
    m.get(key).and_then(Value::as_str).unwrap_or_default()
}

/// What the real server checks of an `events.k8s.io/v1` Event it is asked to create.
pub(crate) fn validate_create(obj: &Value, namespace: &str) -> ApiResult<()> {
    let Some(m) = obj.as_object() else {
        return Ok(());
    };
    let mut causes = Vec::new();
    if m.get("eventTime").is_none_or(Value::is_null) {
        causes.push(Cause::required("eventTime", ""));
    }
    for (field, max) in [
        ("reportingController", 316),
        ("reportingInstance", 128),
        ("action", 128),
        ("reason", 128),
    ] {
        let value = text(m, field);
        if value.is_empty() {
            causes.push(Cause::required(field, ""));
        } else if value.len() > max {
            causes.push(Cause::invalid(
                field,
                &json!(value),
                &format!("can have at most {max} characters"),
            ));
        }
    }
    let note = text(m, "note");
    if note.len() > 1024 {
        causes.push(Cause::invalid(
            "note",
            &json!(""),
            "can have at most 1024 characters",
        ));
    }
    let kind = text(m, "type");
    if kind != "Normal" && kind != "Warning" {
        causes.push(Cause::invalid(
            "type",
            &json!(kind),
            "has invalid value: must be Normal or Warning",
        ));
    }
    for deprecated in [
        "deprecatedSource",
        "deprecatedFirstTimestamp",
        "deprecatedLastTimestamp",
        "deprecatedCount",
    ] {
        if m.get(deprecated)
            .is_some_and(|v| !v.is_null() && v != &json!(0) && v != &json!({}))
        {
            causes.push(Cause::invalid(deprecated, &json!(""), "needs to be unset"));
        }
    }
    if let Some(series) = m.get("series").filter(|s| !s.is_null()) {
        if series.get("count").and_then(Value::as_i64).unwrap_or(0) < 2 {
            causes.push(Cause::invalid(
                "series.count",
                &json!(series.get("count")),
                "should be at least 2",
            ));
        }
        if series.get("lastObservedTime").is_none_or(Value::is_null) {
            causes.push(Cause::required("series.lastObservedTime", ""));
        }
    }
    let regarding_ns = m
        .get("regarding")
        .and_then(|r| r.get("namespace"))
        .and_then(Value::as_str)
        .unwrap_or_default();
    if !regarding_ns.is_empty() && regarding_ns != namespace {
        causes.push(Cause::invalid(
            "regarding.namespace",
            &json!(regarding_ns),
            "does not match event.namespace",
        ));
    }
    if causes.is_empty() {
        return Ok(());
    }
    let name = m
        .get("metadata")
        .and_then(|md| md.get("name"))
        .and_then(Value::as_str)
        .unwrap_or_default();
    Err(ApiError::invalid("Event", "events.k8s.io", name, causes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_two_views_are_one_event() {
        let view = json!({
            "apiVersion": "events.k8s.io/v1", "kind": "Event",
            "metadata": {"name": "podinfo.1", "namespace": "prod"},
            "regarding": {"kind": "Deployment", "name": "podinfo", "namespace": "prod"},
            "note": "Advance podinfo.prod canary weight 10", "reason": "Synced", "type": "Normal",
            "reportingController": "aviary", "reportingInstance": "aviary-x", "action": "Progressing",
            "eventTime": "2026-12-05T10:00:00.000000Z",
            "series": {"count": 2, "lastObservedTime": "2026-12-05T10:01:00.000000Z"},
        });
        let core = to_core(view.clone());
        assert_eq!(core["involvedObject"]["name"], "podinfo");
        assert_eq!(core["message"], "Advance podinfo.prod canary weight 10");
        assert_eq!(core["reportingComponent"], "aviary");
        assert_eq!(core["apiVersion"], "v1");
        assert!(core.get("note").is_none() && core.get("regarding").is_none());
        let mut back = to_view(core);
        back["apiVersion"] = json!("events.k8s.io/v1");
        assert_eq!(back, view);
        assert_eq!(core_field("regarding.uid"), "involvedObject.uid");
        assert_eq!(core_field("reportingController"), "reportingComponent");
        assert_eq!(core_field("type"), "type");
    }

    #[test]
    fn creation_needs_what_the_real_server_needs() {
        let good = json!({
            "metadata": {"name": "a"}, "eventTime": "2026-12-05T10:00:00.000000Z",
            "reportingController": "aviary", "reportingInstance": "i", "action": "A",
            "reason": "Synced", "type": "Normal", "note": "n",
            "regarding": {"namespace": "prod"},
        });
        assert!(validate_create(&good, "prod").is_ok());
        let mut bad = good.clone();
        bad["type"] = json!("Info");
        bad["action"] = json!("");
        bad["note"] = json!("x".repeat(1025));
        bad["deprecatedCount"] = json!(3);
        match validate_create(&bad, "prod") {
            Err(e) => {
                let fields: Vec<&str> = e.causes.iter().map(|c| c.field.as_str()).collect();
                assert_eq!(
                    fields,
                    ["action", "note", "type", "deprecatedCount"],
                    "{e:?}"
                );
            }
            Ok(()) => panic!("accepted"),
        }
        assert!(validate_create(&good, "dev").is_err());
    }
}
