//! Field ownership (`metadata.managedFields`) and server-side apply merging.
//!
//! A field path is a list of segments: a map field (`f:name`), a keyed list element
//! (`k:{"name":"app"}`) or the element itself (`.`). Leaves are scalars, atomic lists and
//! empty maps; keyed lists (see [`merge_key`]) are owned element by element.

use std::collections::BTreeSet;

use serde_json::{json, Map, Value};

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Seg {
    /// A map field.
    F(String),
    /// A keyed list element; the key is a JSON object rendered canonically.
    K(String),
    /// The list element itself.
    Dot,
}

pub(crate) type Path = Vec<Seg>;
pub(crate) type FieldSet = BTreeSet<Path>;

/// What the merge key of a list is, by field name and context (the strategic-merge keys of
/// the built-in types). Custom resources have no keyed lists here (atomic lists).
pub(crate) fn merge_key(
    builtin: bool,
    kind: &str,
    parents: &[&str],
    field: &str,
) -> Option<&'static str> {
    if !builtin {
        return None;
    }
    let in_container = parents
        .iter()
        .any(|p| matches!(*p, "containers" | "initContainers" | "ephemeralContainers"));
    match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "volumes"
        | "imagePullSecrets"
        | "resourceClaims" => Some("name"),
        "env" if in_container => Some("name"),
        "volumeMounts" => Some("mountPath"),
        "volumeDevices" => Some("devicePath"),
        "ports" if in_container => Some("containerPort"),
        "ports" if kind == "Service" && parents == ["spec"] => Some("port"),
        "conditions" => Some("type"),
        "hostAliases" => Some("ip"),
        "topologySpreadConstraints" => Some("topologyKey"),
        "ownerReferences" if parents == ["metadata"] => Some("uid"),
        _ => None,
    }
}

/// Typing context for walking an object.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Schema<'a> {
    pub builtin: bool,
    pub kind: &'a str,
}

fn key_seg(key: &str, value: &Value) -> Seg {
    let mut m = Map::new();
    m.insert(key.to_string(), value.clone());
    Seg::K(Value::Object(m).to_string())
}

fn parent_names(path: &[Seg]) -> Vec<&str> {
    path.iter()
        .filter_map(|s| match s {
            Seg::F(n) => Some(n.as_str()),
            _ => None,
        })
        .collect()
}

/// Which top-level parts of an object field ownership covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scope {
    /// Everything but identity/system metadata; `.status` too unless `skip_status`.
    Main { skip_status: bool },
    /// Only `.status`.
    Status,
}

const OWNED_METADATA: &[&str] = &["labels", "annotations", "finalizers", "ownerReferences"];

/// The leaf paths set in `obj` (null values are not set).
pub(crate) fn leaves(obj: &Value, schema: Schema, scope: Scope) -> FieldSet {
    let mut out = FieldSet::new();
    let Some(map) = obj.as_object() else {
        return out;
    };
    for (k, v) in map {
        let include = match (scope, k.as_str()) {
            (_, "apiVersion" | "kind") => false,
            (Scope::Status, key) => key == "status",
            (Scope::Main { skip_status }, "status") => !skip_status,
            _ => true,
        };
        if !include || v.is_null() {
            continue;
        }
        let mut path = vec![Seg::F(k.clone())];
        if k == "metadata" {
            if let Some(meta) = v.as_object() {
                for (mk, mv) in meta {
                    if OWNED_METADATA.contains(&mk.as_str()) && !mv.is_null() {
                        path.push(Seg::F(mk.clone()));
                        walk(mv, &mut path, schema, &mut out);
                        path.pop();
                    }
                }
            }
            continue;
        }
        walk(v, &mut path, schema, &mut out);
    }
    out
}

fn walk(v: &Value, path: &mut Path, schema: Schema, out: &mut FieldSet) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, child) in m {
                if child.is_null() {
                    continue;
                }
                path.push(Seg::F(k.clone()));
                walk(child, path, schema, out);
                path.pop();
            }
        }
        Value::Array(items) => {
            let field = match path.last() {
                Some(Seg::F(f)) => f.clone(),
                _ => String::new(),
            };
            let parents: Vec<&str> = parent_names(&path[..path.len().saturating_sub(1)]);
            let key = merge_key(schema.builtin, schema.kind, &parents, &field);
            match key {
                Some(key) if items.iter().all(|i| i.get(key).is_some()) => {
                    for item in items {
                        let Some(kv) = item.get(key) else { continue };
                        path.push(key_seg(key, kv));
                        path.push(Seg::Dot);
                        out.insert(path.clone());
                        path.pop();
                        walk_element(item, path, schema, out);
                        path.pop();
                    }
                }
                _ => {
                    out.insert(path.clone());
                }
            }
        }
        _ => {
            out.insert(path.clone());
        }
    }
}

fn walk_element(item: &Value, path: &mut Path, schema: Schema, out: &mut FieldSet) {
    if let Some(m) = item.as_object() {
        for (k, child) in m {
            if child.is_null() {
                continue;
            }
            path.push(Seg::F(k.clone()));
            walk(child, path, schema, out);
            path.pop();
        }
    }
}

fn element_matches(elem: &Value, key_json: &str) -> bool {
    match serde_json::from_str::<Value>(key_json) {
        Ok(Value::Object(key)) => key.iter().all(|(k, v)| elem.get(k) == Some(v)),
        _ => false,
    }
}

/// The value at a path (for `.`, the list element).
pub(crate) fn get_at<'a>(v: &'a Value, path: &[Seg]) -> Option<&'a Value> {
    let mut cur = v;
    for seg in path {
        cur = match seg {
            Seg::F(name) => cur.get(name)?,
            Seg::K(key) => cur.as_array()?.iter().find(|e| element_matches(e, key))?,
            Seg::Dot => cur,
        };
    }
    Some(cur)
}

fn get_at_mut<'a>(v: &'a mut Value, path: &[Seg]) -> Option<&'a mut Value> {
    let mut cur = v;
    for seg in path {
        cur = match seg {
            Seg::F(name) => cur.get_mut(name)?,
            Seg::K(key) => cur
                .as_array_mut()?
                .iter_mut()
                .find(|e| element_matches(e, key))?,
            Seg::Dot => cur,
        };
    }
    Some(cur)
}

/// Removes the field (or, for a path ending in `.`, the list element) and prunes maps that
/// the removal left empty.
pub(crate) fn remove_at(v: &mut Value, path: &[Seg]) {
    let (container_path, last) = match path {
        [rest @ .., Seg::K(key), Seg::Dot] => {
            if let Some(Value::Array(items)) = get_at_mut(v, rest) {
                items.retain(|e| !element_matches(e, key));
            }
            (rest, None)
        }
        [rest @ .., Seg::F(name)] => {
            if let Some(Value::Object(m)) = get_at_mut(v, rest) {
                m.remove(name);
            }
            (rest, Some(()))
        }
        _ => return,
    };
    let _ = last;
    // Prune now-empty maps above (never the top-level sections themselves).
    let mut depth = container_path.len();
    while depth > 1 {
        let p = &container_path[..depth];
        let empty = matches!(get_at(v, p), Some(Value::Object(m)) if m.is_empty());
        if !empty {
            break;
        }
        match &p[depth - 1] {
            Seg::F(name) => {
                if let Some(Value::Object(m)) = get_at_mut(v, &p[..depth - 1]) {
                    m.remove(name);
                }
            }
            _ => break,
        }
        depth -= 1;
    }
}

/// Merges an applied configuration into the live object: maps recursively, keyed lists by
/// key, everything else replaced.
pub(crate) fn apply_merge(
    live: &mut Value,
    cfg: &Value,
    parents: &mut Vec<String>,
    schema: Schema,
) {
    match (live, cfg) {
        (Value::Object(lm), Value::Object(cm)) => {
            for (k, cv) in cm {
                if cv.is_null() {
                    continue;
                }
                let refs: Vec<&str> = parents.iter().map(String::as_str).collect();
                let key = merge_key(schema.builtin, schema.kind, &refs, k);
                match (lm.get_mut(k), cv) {
                    (Some(Value::Array(litems)), Value::Array(citems))
                        if key.is_some_and(|k| citems.iter().all(|i| i.get(k).is_some())) =>
                    {
                        let key = key.unwrap_or_default();
                        for ci in citems {
                            let found = ci.get(key).and_then(|kv| {
                                litems.iter_mut().find(|li| li.get(key) == Some(kv))
                            });
                            match found {
                                Some(li) => {
                                    parents.push(k.clone());
                                    apply_merge(li, ci, parents, schema);
                                    parents.pop();
                                }
                                None => litems.push(strip_nulls(ci)),
                            }
                        }
                    }
                    (Some(lv @ Value::Object(_)), Value::Object(_)) => {
                        parents.push(k.clone());
                        apply_merge(lv, cv, parents, schema);
                        parents.pop();
                    }
                    _ => {
                        lm.insert(k.clone(), strip_nulls(cv));
                    }
                }
            }
        }
        (live, cfg) => *live = strip_nulls(cfg),
    }
}

fn strip_nulls(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), strip_nulls(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(strip_nulls).collect()),
        other => other.clone(),
    }
}

/// Renders a field set as `fieldsV1`.
pub(crate) fn to_fields_v1(set: &FieldSet) -> Value {
    let mut root = Map::new();
    for path in set {
        let mut cur = &mut root;
        for seg in path {
            let k = match seg {
                Seg::F(n) => format!("f:{n}"),
                Seg::K(k) => format!("k:{k}"),
                Seg::Dot => ".".to_string(),
            };
            let entry = cur.entry(k).or_insert_with(|| json!({}));
            if !entry.is_object() {
                *entry = json!({});
            }
            let Value::Object(next) = entry else { break };
            cur = next;
        }
    }
    Value::Object(root)
}

/// Parses `fieldsV1` back into a field set.
pub(crate) fn from_fields_v1(v: &Value) -> FieldSet {
    let mut out = FieldSet::new();
    let mut path = Vec::new();
    parse_node(v, &mut path, &mut out);
    out
}

fn parse_node(v: &Value, path: &mut Path, out: &mut FieldSet) {
    let Some(m) = v.as_object() else { return };
    if m.is_empty() {
        if !path.is_empty() {
            out.insert(path.clone());
        }
        return;
    }
    for (k, child) in m {
        let seg = if let Some(n) = k.strip_prefix("f:") {
            Seg::F(n.to_string())
        } else if let Some(n) = k.strip_prefix("k:") {
            Seg::K(n.to_string())
        } else if k == "." {
            Seg::Dot
        } else {
            // `v:` (set members) and `i:` (positional) are treated as atomic parents.
            out.insert(path.clone());
            continue;
        };
        path.push(seg);
        parse_node(child, path, out);
        path.pop();
    }
}

/// One `metadata.managedFields` entry.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub manager: String,
    pub operation: String,
    pub api_version: String,
    pub time: String,
    pub subresource: Option<String>,
    pub fields: FieldSet,
    /// The `fieldsV1` the entry was read from ([`take_entries`]), while `fields` is unchanged
    /// (whatever changes them drops it): written back as it was, not rendered again (most
    /// entries of an object stay as they are through a write).
    pub raw: Option<Value>,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Entry) -> bool {
        self.manager == other.manager
            && self.operation == other.operation
            && self.api_version == other.api_version
            && self.time == other.time
            && self.subresource == other.subresource
            && self.fields == other.fields
    }
}

impl Entry {
    fn new(
        manager: &str,
        operation: &str,
        api_version: &str,
        now: &str,
        subresource: Option<&str>,
        fields: FieldSet,
    ) -> Entry {
        Entry {
            manager: manager.to_string(),
            operation: operation.to_string(),
            api_version: api_version.to_string(),
            time: now.to_string(),
            subresource: subresource.map(String::from),
            fields,
            raw: None,
        }
    }

    /// Its fields, to change them (the `fieldsV1` it was read from no longer holds).
    fn fields_mut(&mut self) -> &mut FieldSet {
        self.raw = None;
        &mut self.fields
    }

    /// Keeps the fields `keep` says to keep.
    fn retain_fields(&mut self, keep: impl Fn(&Path) -> bool) {
        let before = self.fields.len();
        self.fields.retain(|p| keep(p));
        if self.fields.len() != before {
            self.raw = None;
        }
    }

    pub(crate) fn is(&self, manager: &str, operation: &str, subresource: Option<&str>) -> bool {
        self.manager == manager
            && self.operation == operation
            && self.subresource.as_deref() == subresource
    }
}

/// The `metadata.managedFields` of `obj`.
pub(crate) fn parse_entries(obj: &Value) -> Vec<Entry> {
    let Some(items) = obj
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array)
    else {
        return Vec::new();
    };
    items.iter().map(parse_entry).collect()
}

/// The `metadata.managedFields` of `obj`, taken out of it: each entry keeps the `fieldsV1` it
/// was read from, to be written back as it was while its fields do not change.
pub(crate) fn take_entries(obj: &mut Value) -> Vec<Entry> {
    let Some(Value::Array(items)) = obj
        .get_mut("metadata")
        .and_then(Value::as_object_mut)
        .and_then(|m| m.remove("managedFields"))
    else {
        return Vec::new();
    };
    items
        .into_iter()
        .map(|mut item| {
            let mut e = parse_entry(&item);
            e.raw = item.get_mut("fieldsV1").map(Value::take);
            e
        })
        .collect()
}

fn parse_entry(e: &Value) -> Entry {
    Entry {
        manager: e
            .get("manager")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        operation: e
            .get("operation")
            .and_then(Value::as_str)
            .unwrap_or("Update")
            .to_string(),
        api_version: e
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        time: e
            .get("time")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        subresource: e
            .get("subresource")
            .and_then(Value::as_str)
            .map(String::from),
        fields: e.get("fieldsV1").map(from_fields_v1).unwrap_or_default(),
        raw: None,
    }
}

pub(crate) fn render_entries(entries: Vec<Entry>) -> Value {
    Value::Array(
        entries
            .into_iter()
            .filter(|e| !e.fields.is_empty())
            .map(|e| {
                let fields = e.raw.unwrap_or_else(|| to_fields_v1(&e.fields));
                let mut m = json!({
                    "manager": e.manager,
                    "operation": e.operation,
                    "apiVersion": e.api_version,
                    "time": e.time,
                    "fieldsType": "FieldsV1",
                    "fieldsV1": fields,
                });
                if let Some(sub) = &e.subresource {
                    m["subresource"] = json!(sub);
                }
                m
            })
            .collect(),
    )
}

/// Renders a path the way conflict messages do: `.spec.containers[name="app"].image`.
pub(crate) fn display_path(path: &[Seg]) -> String {
    let mut s = String::new();
    for seg in path {
        match seg {
            Seg::F(n) => {
                s.push('.');
                s.push_str(n);
            }
            Seg::K(k) => {
                let rendered = match serde_json::from_str::<Value>(k) {
                    Ok(Value::Object(m)) => m
                        .iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect::<Vec<_>>()
                        .join(","),
                    _ => k.clone(),
                };
                s.push('[');
                s.push_str(&rendered);
                s.push(']');
            }
            Seg::Dot => {}
        }
    }
    s
}

/// Records an update (non-apply) write by `manager`: it takes the fields it changed, and
/// fields that disappeared are dropped from every manager.
#[allow(clippy::too_many_arguments)]
pub(crate) fn record_update(
    old: Option<&Value>,
    new: &Value,
    entries: &mut Vec<Entry>,
    manager: &str,
    subresource: Option<&str>,
    api_version: &str,
    now: &str,
    schema: Schema,
    scope: Scope,
) {
    let new_leaves = leaves(new, schema, scope);
    let old_leaves = old.map(|o| leaves(o, schema, scope)).unwrap_or_default();
    let changed: FieldSet = new_leaves
        .iter()
        .filter(|p| old.and_then(|o| get_at(o, p)) != get_at(new, p) || !old_leaves.contains(*p))
        .cloned()
        .collect();
    let removed: FieldSet = old_leaves.difference(&new_leaves).cloned().collect();
    for e in entries.iter_mut() {
        if !e.is(manager, "Update", subresource) {
            e.retain_fields(|p| !changed.contains(p));
        }
        e.retain_fields(|p| !removed.contains(p));
    }
    if !changed.is_empty() {
        match entries
            .iter_mut()
            .find(|e| e.is(manager, "Update", subresource))
        {
            Some(e) => {
                e.fields_mut().extend(changed);
                e.time = now.to_string();
                e.api_version = api_version.to_string();
            }
            None => entries.push(Entry::new(
                manager,
                "Update",
                api_version,
                now,
                subresource,
                changed,
            )),
        }
    }
    entries.retain(|e| !e.fields.is_empty());
}

/// A field another manager owns with a different value.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Conflict {
    pub manager: String,
    pub api_version: String,
    pub path: Path,
}

/// Server-side apply of `cfg` by `manager` onto `live` (an empty object when creating).
/// Returns the merged object and updates `entries`, or the conflicts.
#[allow(clippy::too_many_arguments)]
pub(crate) fn apply(
    live: &Value,
    cfg: &Value,
    entries: &mut Vec<Entry>,
    manager: &str,
    subresource: Option<&str>,
    api_version: &str,
    now: &str,
    force: bool,
    schema: Schema,
    scope: Scope,
) -> Result<Value, Vec<Conflict>> {
    let new_set = leaves(cfg, schema, scope);
    let is_self = |e: &Entry| e.manager == manager;
    let old_set: FieldSet = entries
        .iter()
        .find(|e| e.is(manager, "Apply", subresource))
        .map(|e| e.fields.clone())
        .unwrap_or_default();

    let mut conflicts = Vec::new();
    for p in &new_set {
        if matches!(p.last(), Some(Seg::Dot)) {
            continue;
        }
        for e in entries.iter().filter(|e| !is_self(e)) {
            if e.fields.contains(p) && get_at(live, p) != get_at(cfg, p) {
                conflicts.push(Conflict {
                    manager: e.manager.clone(),
                    api_version: e.api_version.clone(),
                    path: p.clone(),
                });
            }
        }
    }
    if !conflicts.is_empty() {
        if !force {
            return Err(conflicts);
        }
        for c in &conflicts {
            for e in entries.iter_mut().filter(|e| e.manager == c.manager) {
                e.fields_mut().remove(&c.path);
            }
        }
    }

    let mut result = live.clone();
    // Fields this manager applied before and no longer sends are removed, unless someone
    // else owns them too.
    let others_own = |p: &Path, entries: &[Entry]| {
        entries
            .iter()
            .filter(|e| !e.is(manager, "Apply", subresource))
            .any(|e| {
                if matches!(p.last(), Some(Seg::Dot)) {
                    let prefix = &p[..p.len() - 1];
                    e.fields.iter().any(|q| q.starts_with(prefix))
                } else {
                    e.fields.contains(p)
                }
            })
    };
    let mut removed: Vec<&Path> = old_set.difference(&new_set).collect();
    // Whole list elements first (their fields go with them), then fields, deepest first.
    removed.sort_by_key(|p| {
        (
            !matches!(p.last(), Some(Seg::Dot)),
            std::cmp::Reverse(p.len()),
        )
    });
    for p in removed {
        if !others_own(p, entries) {
            remove_at(&mut result, p);
        }
    }
    apply_merge(&mut result, cfg, &mut Vec::new(), schema);

    match entries
        .iter_mut()
        .find(|e| e.is(manager, "Apply", subresource))
    {
        Some(e) => {
            if e.fields != new_set {
                e.time = now.to_string();
                *e.fields_mut() = new_set;
            }
            e.api_version = api_version.to_string();
        }
        None => entries.push(Entry::new(
            manager,
            "Apply",
            api_version,
            now,
            subresource,
            new_set,
        )),
    }
    entries.retain(|e| !e.fields.is_empty());
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEPLOY: Schema = Schema {
        builtin: true,
        kind: "Deployment",
    };
    const MAIN: Scope = Scope::Main { skip_status: true };

    #[test]
    fn leaves_of_keyed_lists_and_round_trip() {
        let obj = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "a", "labels": {"app": "a"}},
            "spec": {"replicas": 2, "template": {"spec": {"containers": [{"name": "app", "image": "x", "args": ["a"]}]}}},
            "status": {"replicas": 1}
        });
        let set = leaves(&obj, DEPLOY, MAIN);
        let rendered: Vec<String> = set.iter().map(|p| display_path(p)).collect();
        assert!(rendered.contains(&".metadata.labels.app".to_string()));
        assert!(
            rendered.contains(&".spec.template.spec.containers[name=\"app\"].image".to_string())
        );
        assert!(rendered.contains(&".spec.template.spec.containers[name=\"app\"].args".to_string()));
        assert!(!rendered
            .iter()
            .any(|p| p.starts_with(".status") || p.contains("metadata.name")));
        let fv1 = to_fields_v1(&set);
        assert!(fv1
            .pointer("/f:spec/f:template/f:spec/f:containers/k:{\"name\":\"app\"}/.")
            .is_some());
        assert_eq!(from_fields_v1(&fv1), set);
    }

    #[test]
    fn apply_removes_fields_no_longer_sent_and_detects_conflicts() {
        let mut entries = Vec::new();
        let live = json!({"metadata": {"name": "a"}});
        let cfg1 = json!({"metadata": {"labels": {"a": "1", "b": "2"}}, "spec": {"replicas": 1}});
        let obj = apply(
            &live,
            &cfg1,
            &mut entries,
            "m1",
            None,
            "apps/v1",
            "t",
            false,
            DEPLOY,
            MAIN,
        );
        let obj = obj.unwrap_or_default();
        assert_eq!(obj["metadata"]["labels"]["b"], "2");
        let cfg2 = json!({"metadata": {"labels": {"a": "1"}}, "spec": {"replicas": 1}});
        let obj = apply(
            &obj,
            &cfg2,
            &mut entries,
            "m1",
            None,
            "apps/v1",
            "t",
            false,
            DEPLOY,
            MAIN,
        )
        .unwrap_or_default();
        assert!(obj["metadata"]["labels"].get("b").is_none());
        // Another manager changing a field m1 owns conflicts unless forced.
        let cfg3 = json!({"spec": {"replicas": 3}});
        let err = apply(
            &obj,
            &cfg3,
            &mut entries,
            "m2",
            None,
            "apps/v1",
            "t",
            false,
            DEPLOY,
            MAIN,
        );
        assert!(matches!(&err, Err(c) if c.len() == 1 && c[0].manager == "m1"));
        // The same value is shared ownership, no conflict.
        let same = json!({"spec": {"replicas": 1}});
        assert!(apply(
            &obj,
            &same,
            &mut entries.clone(),
            "m2",
            None,
            "apps/v1",
            "t",
            false,
            DEPLOY,
            MAIN
        )
        .is_ok());
        let forced = apply(
            &obj,
            &cfg3,
            &mut entries,
            "m2",
            None,
            "apps/v1",
            "t",
            true,
            DEPLOY,
            MAIN,
        )
        .unwrap_or_default();
        assert_eq!(forced["spec"]["replicas"], 3);
        let m1 = entries
            .iter()
            .find(|e| e.manager == "m1")
            .map(|e| e.fields.clone())
            .unwrap_or_default();
        assert!(!m1.contains(&vec![Seg::F("spec".into()), Seg::F("replicas".into())]));
    }

    #[test]
    fn keyed_list_elements_are_merged_and_removed() {
        let mut entries = Vec::new();
        let cfg = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "a", "image": "1"}, {"name": "b", "image": "2"}]}}}});
        let obj = apply(
            &json!({}),
            &cfg,
            &mut entries,
            "m",
            None,
            "apps/v1",
            "t",
            false,
            DEPLOY,
            MAIN,
        )
        .unwrap_or_default();
        let cfg2 =
            json!({"spec": {"template": {"spec": {"containers": [{"name": "a", "image": "3"}]}}}});
        let obj = apply(
            &obj,
            &cfg2,
            &mut entries,
            "m",
            None,
            "apps/v1",
            "t",
            false,
            DEPLOY,
            MAIN,
        )
        .unwrap_or_default();
        assert_eq!(
            obj["spec"]["template"]["spec"]["containers"],
            json!([{"name": "a", "image": "3"}])
        );
    }

    #[test]
    fn update_takes_changed_fields() {
        let old = json!({"spec": {"replicas": 1, "paused": false}});
        let new = json!({"spec": {"replicas": 2}});
        let mut entries = vec![Entry::new(
            "a",
            "Apply",
            "apps/v1",
            "t",
            None,
            leaves(&old, DEPLOY, MAIN),
        )];
        record_update(
            Some(&old),
            &new,
            &mut entries,
            "b",
            None,
            "apps/v1",
            "t",
            DEPLOY,
            MAIN,
        );
        assert_eq!(entries.len(), 1, "a lost everything: {entries:?}");
        assert_eq!(entries[0].manager, "b");
    }
}
