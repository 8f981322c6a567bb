//! A config's profiles: their names, and applying one (`build` overlaid field by field,
//! `manifests` replaced, then the JSON `patches`).

use serde_json::Value;

use super::document::{child, json_type, key, pointer_path, Doc, Seg};
use crate::render::RenderError;
use aviary_core::spec::yaml::Node;
use aviary_core::spec::Diagnostic;

/// The names of the profiles of a config and their indexes, checking that each has a unique name.
pub(super) fn profile_list(file: &str, node: &Node) -> Result<Vec<(String, usize)>, RenderError> {
    let Some(profiles) = node.get("profiles") else {
        return Ok(Vec::new());
    };
    if profiles.is_null() {
        return Ok(Vec::new());
    }
    let Some(items) = profiles.as_seq() else {
        return Err(RenderError::Config(Diagnostic::error(
            file,
            profiles.line,
            "profiles",
            format!("expected a list, got {}", profiles.type_name()),
        )));
    };
    let mut out: Vec<(String, usize)> = Vec::new();
    for (i, p) in items.iter().enumerate() {
        let at = format!("profiles[{i}]");
        let name = match p.get("name") {
            Some(n) => match n.as_str() {
                Some(s) if !s.is_empty() => s.to_string(),
                _ => {
                    return Err(RenderError::Config(Diagnostic::error(
                        file,
                        n.line,
                        &format!("{at}.name"),
                        format!("expected a non-empty string, got {}", n.describe()),
                    )))
                }
            },
            None => {
                return Err(RenderError::Config(
                    Diagnostic::error(file, p.line, &at, "a profile needs a `name`")
                        .with_help("add `name: <profile>`"),
                ))
            }
        };
        if let Some((_, j)) = out.iter().find(|(n, _)| n == &name) {
            return Err(RenderError::Config(
                Diagnostic::error(
                    file,
                    p.line,
                    &format!("{at}.name"),
                    format!("profile {name:?} is defined twice (first as profiles[{j}])"),
                )
                .with_help("rename or merge one of them"),
            ));
        }
        out.push((name, i));
    }
    Ok(out)
}

/// Applies profile `index` (named `name`) to the config: its `build` fields over the config's
/// (field by field, as Skaffold overlays them), its `manifests` instead of the config's, then its
/// JSON patches.
pub(super) fn apply_profile(
    doc: &mut Doc<'_>,
    index: usize,
    name: &str,
) -> Result<(), RenderError> {
    let at = vec![key("profiles"), Seg::Index(index)];
    let Some(profile) = doc.get(&at).cloned() else {
        return Ok(());
    };
    if let Some(build) = profile.get("build") {
        match build {
            Value::Null => {}
            Value::Object(fields) => {
                if !doc.json.get("build").is_some_and(Value::is_object) {
                    doc.json["build"] = Value::Object(serde_json::Map::new());
                }
                for (k, v) in fields {
                    doc.json["build"][k.as_str()] = v.clone();
                    doc.redirects.push((
                        vec![key("build"), key(k)],
                        child(&child(&at, key("build")), key(k)),
                    ));
                }
            }
            other => {
                return Err(doc
                    .error(
                        &child(&at, key("build")),
                        format!("expected a mapping, got {}", json_type(other)),
                    )
                    .into())
            }
        }
    }
    if let Some(manifests) = profile.get("manifests") {
        if !manifests.is_null() {
            doc.json["manifests"] = manifests.clone();
            doc.redirects
                .push((vec![key("manifests")], child(&at, key("manifests"))));
        }
    }
    let patches_at = child(&at, key("patches"));
    let patches = match profile.get("patches") {
        None | Some(Value::Null) => return Ok(()),
        Some(Value::Array(p)) => p.clone(),
        Some(other) => {
            return Err(doc
                .error(
                    &patches_at,
                    format!(
                        "expected a list of JSON patch operations, got {}",
                        json_type(other)
                    ),
                )
                .into())
        }
    };
    let mut ops = Vec::new();
    for (i, p) in patches.iter().enumerate() {
        let here = child(&patches_at, Seg::Index(i));
        let Value::Object(fields) = p else {
            return Err(doc
                .error(&here, format!("expected a mapping, got {}", json_type(p)))
                .into());
        };
        let mut op = fields.clone();
        // Skaffold's default operation.
        let kind = match op.get("op") {
            None | Some(Value::Null) => "replace".to_string(),
            Some(Value::String(s)) => s.clone(),
            Some(other) => {
                return Err(doc
                    .error(
                        &child(&here, key("op")),
                        format!("expected a string, got {}", json_type(other)),
                    )
                    .into())
            }
        };
        let needs: &[&str] = match kind.as_str() {
            "add" | "replace" | "test" => &["path", "value"],
            "remove" => &["path"],
            "move" | "copy" => &["path", "from"],
            other => {
                return Err(RenderError::Config(
                    doc.error(
                        &child(&here, key("op")),
                        format!("unknown operation {other:?}"),
                    )
                    .with_help("use add, remove, replace, move, copy or test"),
                ))
            }
        };
        for field in needs {
            if !op.contains_key(*field) {
                return Err(RenderError::Config(
                    doc.error(&here, format!("a {kind} operation needs `{field}`"))
                        .with_help("e.g. {op: replace, path: /manifests/kustomize/paths/0, value: overlays/prod}"),
                ));
            }
        }
        // Skaffold accepts a `value` on remove; the JSON patch type does not.
        if kind == "remove" {
            op.remove("value");
        }
        op.insert("op".to_string(), Value::String(kind));
        match serde_json::from_value::<json_patch::PatchOperation>(Value::Object(op)) {
            Ok(op) => ops.push((i, op)),
            Err(e) => {
                return Err(RenderError::Config(
                    doc.error(&here, format!("not a JSON patch operation: {e}"))
                        .with_help("paths are JSON pointers such as /manifests/kustomize/paths/0"),
                ))
            }
        }
    }
    for (i, op) in ops {
        let result = json_patch::patch(&mut doc.json, std::slice::from_ref(&op));
        if result.is_ok() {
            let written = match &op {
                json_patch::PatchOperation::Add(_) | json_patch::PatchOperation::Replace(_) => {
                    Some("value")
                }
                json_patch::PatchOperation::Move(_) | json_patch::PatchOperation::Copy(_) => {
                    Some("from")
                }
                _ => None,
            };
            if let Some(field) = written {
                doc.redirects.push((
                    pointer_path(op.path().as_ref()),
                    child(&child(&patches_at, Seg::Index(i)), key(field)),
                ));
            }
        }
        if let Err(e) = result {
            let here = child(&patches_at, Seg::Index(i));
            return Err(RenderError::Config(
                doc.error(
                    &here,
                    format!(
                        "profile {name:?}: cannot apply {op}: {} (at {})",
                        e.kind, e.path
                    ),
                )
                .with_help(
                    "the path must exist in this config (an add may name a new last key or \
                     `-` to append); lists are indexed from 0",
                ),
            ));
        }
    }
    Ok(())
}
