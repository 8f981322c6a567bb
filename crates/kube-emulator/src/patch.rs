//! Strategic merge patch for the built-in types (a faithful subset of
//! `k8s.io/apimachinery/pkg/util/strategicpatch`).

use serde_json::{Map, Value};

use crate::managed::merge_key;

/// Applies a strategic merge patch to `target` (an object of built-in kind `kind`).
pub(crate) fn strategic_merge(target: &mut Value, patch: &Value, kind: &str) -> Result<(), String> {
    let mut parents = Vec::new();
    merge_map(target, patch, &mut parents, kind)
}

fn merge_map(
    target: &mut Value,
    patch: &Value,
    parents: &mut Vec<String>,
    kind: &str,
) -> Result<(), String> {
    let Some(pm) = patch.as_object() else {
        *target = clean(patch);
        return Ok(());
    };
    match pm.get("$patch").and_then(Value::as_str) {
        Some("replace") => {
            *target = clean(patch);
            return Ok(());
        }
        Some("delete") => {
            *target = Value::Null;
            return Ok(());
        }
        Some("merge") | None => {}
        Some(other) => return Err(format!("unknown patch type: {other}")),
    }
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Some(tm) = target.as_object_mut() else {
        return Ok(());
    };
    for (k, pv) in pm {
        if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
            let remove: Vec<&Value> = pv
                .as_array()
                .map(|a| a.iter().collect())
                .unwrap_or_default();
            if let Some(Value::Array(items)) = tm.get_mut(field) {
                items.retain(|i| !remove.contains(&i));
            }
            continue;
        }
        if k.starts_with('$') {
            continue;
        }
        if pv.is_null() {
            tm.remove(k);
            continue;
        }
        let key = {
            let refs: Vec<&str> = parents.iter().map(String::as_str).collect();
            merge_key(true, kind, &refs, k)
        };
        match pv {
            Value::Array(pitems) => {
                let is_finalizers =
                    k == "finalizers" && parents.len() == 1 && parents[0] == "metadata";
                match (key, tm.get_mut(k)) {
                    (Some(key), Some(Value::Array(titems))) => {
                        parents.push(k.clone());
                        let r = merge_keyed_list(titems, pitems, key, parents, kind);
                        parents.pop();
                        r?;
                    }
                    (None, Some(Value::Array(titems))) if is_finalizers => {
                        for p in pitems {
                            if !titems.contains(p) {
                                titems.push(p.clone());
                            }
                        }
                    }
                    _ => {
                        let replace_directive = pitems
                            .iter()
                            .any(|i| i.get("$patch").and_then(Value::as_str) == Some("replace"));
                        let items: Vec<Value> = pitems
                            .iter()
                            .filter(|i| {
                                !(replace_directive && i.get("$patch").is_some())
                                    && i.get("$patch").and_then(Value::as_str) != Some("delete")
                            })
                            .map(clean)
                            .collect();
                        tm.insert(k.clone(), Value::Array(items));
                    }
                }
            }
            Value::Object(_) => {
                let mut child = tm.remove(k).unwrap_or(Value::Object(Map::new()));
                parents.push(k.clone());
                let r = merge_map(&mut child, pv, parents, kind);
                parents.pop();
                r?;
                if !child.is_null() {
                    apply_retain_keys(&mut child, pv);
                    tm.insert(k.clone(), child);
                }
            }
            _ => {
                tm.insert(k.clone(), pv.clone());
            }
        }
    }
    Ok(())
}

fn apply_retain_keys(target: &mut Value, patch: &Value) {
    let Some(keep) = patch.get("$retainKeys").and_then(Value::as_array) else {
        return;
    };
    let keep: Vec<&str> = keep.iter().filter_map(Value::as_str).collect();
    if let Some(m) = target.as_object_mut() {
        m.retain(|k, _| keep.contains(&k.as_str()));
    }
}

fn merge_keyed_list(
    target: &mut Vec<Value>,
    patch: &[Value],
    key: &str,
    parents: &mut Vec<String>,
    kind: &str,
) -> Result<(), String> {
    if patch
        .iter()
        .any(|i| i.get("$patch").and_then(Value::as_str) == Some("replace"))
    {
        *target = patch
            .iter()
            .filter(|i| i.get("$patch").is_none())
            .map(clean)
            .collect();
        return Ok(());
    }
    for p in patch {
        let Some(kv) = p.get(key) else {
            return Err(format!(
                "map: {p} does not contain declared merge key: {key}"
            ));
        };
        if p.get("$patch").and_then(Value::as_str) == Some("delete") {
            target.retain(|t| t.get(key) != Some(kv));
            continue;
        }
        match target.iter_mut().find(|t| t.get(key) == Some(kv)) {
            Some(t) => merge_map(t, p, parents, kind)?,
            None => target.push(clean(p)),
        }
    }
    Ok(())
}

/// Removes patch directives and nulls from a value that is inserted as a whole.
fn clean(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, v)| !k.starts_with('$') && !v.is_null())
                .map(|(k, v)| (k.clone(), clean(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(clean).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn smp(target: Value, patch: Value, kind: &str) -> Value {
        let mut t = target;
        if let Err(e) = strategic_merge(&mut t, &patch, kind) {
            panic!("{e}");
        }
        t
    }

    #[test]
    fn containers_merge_by_name() {
        let d = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "app", "image": "a:1", "env": [{"name": "A", "value": "1"}], "ports": [{"containerPort": 80, "name": "http"}]},
            {"name": "side", "image": "s:1"}]}}}});
        let out = smp(
            d,
            json!({"spec": {"template": {"spec": {"containers": [
                {"name": "app", "image": "a:2", "env": [{"name": "B", "value": "2"}], "ports": [{"containerPort": 80, "protocol": "TCP"}]},
                {"name": "side", "$patch": "delete"},
                {"name": "new", "image": "n:1"}]}}}}),
            "Deployment",
        );
        let cs = &out["spec"]["template"]["spec"]["containers"];
        assert_eq!(cs[0]["image"], "a:2");
        assert_eq!(
            cs[0]["env"],
            json!([{"name": "A", "value": "1"}, {"name": "B", "value": "2"}])
        );
        assert_eq!(
            cs[0]["ports"],
            json!([{"containerPort": 80, "name": "http", "protocol": "TCP"}])
        );
        assert_eq!(cs[1]["name"], "new");
        assert_eq!(cs.as_array().map(Vec::len), Some(2));
    }

    #[test]
    fn replace_directives_and_nulls() {
        let t = json!({"metadata": {"labels": {"a": "1", "b": "2"}}, "spec": {"ports": [{"port": 80}, {"port": 81}]}});
        let out = smp(
            t.clone(),
            json!({"metadata": {"labels": {"$patch": "replace", "c": "3"}}, "spec": {"ports": [{"port": 90}, {"$patch": "replace"}]}}),
            "Service",
        );
        assert_eq!(out["metadata"]["labels"], json!({"c": "3"}));
        assert_eq!(out["spec"]["ports"], json!([{"port": 90}]));
        let out = smp(
            t,
            json!({"metadata": {"labels": {"a": null}}, "spec": {"ports": [{"port": 81, "name": "x"}]}}),
            "Service",
        );
        assert_eq!(out["metadata"]["labels"], json!({"b": "2"}));
        assert_eq!(
            out["spec"]["ports"],
            json!([{"port": 80}, {"port": 81, "name": "x"}])
        );
    }

    #[test]
    fn unkeyed_lists_are_replaced() {
        let t = json!({"spec": {"template": {"spec": {"containers": [{"name": "a", "args": ["x", "y"]}]}}}});
        let out = smp(
            t,
            json!({"spec": {"template": {"spec": {"containers": [{"name": "a", "args": ["z"]}]}}}}),
            "Deployment",
        );
        assert_eq!(
            out["spec"]["template"]["spec"]["containers"][0]["args"],
            json!(["z"])
        );
    }
}
