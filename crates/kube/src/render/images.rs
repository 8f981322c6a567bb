//! Image substitution as Skaffold does it: the `image` of a container whose image *name* (the
//! reference without its tag and digest) is an artifact's name becomes the artifact's full tag.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

use super::RenderError;

/// The name of an image reference: without `@digest` and without `:tag`. A `:` before the last `/`
/// belongs to the registry host (`localhost:5000/app:1` is named `localhost:5000/app`).
pub fn image_name(reference: &str) -> &str {
    let without_digest = match reference.find('@') {
        Some(i) => &reference[..i],
        None => reference,
    };
    let last_slash = without_digest.rfind('/').map_or(0, |i| i + 1);
    match without_digest[last_slash..].find(':') {
        Some(i) => &without_digest[..last_slash + i],
        None => without_digest,
    }
}

/// Parses one `--images` value, `name=ref`.
pub fn parse_image_flag(value: &str) -> Result<(String, String), RenderError> {
    let bad = |why: &str| RenderError::ImageFlag {
        value: value.to_string(),
        why: why.to_string(),
    };
    let (name, reference) = value.split_once('=').ok_or_else(|| bad("it has no `=`"))?;
    let (name, reference) = (name.trim(), reference.trim());
    if name.is_empty() {
        return Err(bad("the image name before `=` is empty"));
    }
    if reference.is_empty() {
        return Err(bad("the reference after `=` is empty"));
    }
    if reference.chars().any(char::is_whitespace) || name.chars().any(char::is_whitespace) {
        return Err(bad("an image reference cannot contain spaces"));
    }
    Ok((name.to_string(), reference.to_string()))
}

/// Reads a `skaffold build --file-output` file: `{"builds":[{"imageName": "...", "tag": "..."}]}`.
pub fn read_build_artifacts(path: &Path) -> Result<Vec<(String, String)>, RenderError> {
    let file = path.display().to_string();
    let text = super::read_input(path, &file, "the build-artifacts file")?;
    parse_build_artifacts(&file, &text)
}

/// The builds of a build-artifacts file's text, in file order. `file` names it in messages.
pub fn parse_build_artifacts(file: &str, text: &str) -> Result<Vec<(String, String)>, RenderError> {
    let bad = |line: usize, column: usize, message: String| RenderError::BuildArtifacts {
        file: file.to_string(),
        line,
        column,
        message,
    };
    let doc: Value = serde_json::from_str(text).map_err(|e| {
        // serde_json's message ends with " at line L column C"; we print the place up front.
        let text = e.to_string();
        let message = match text.rfind(" at line ") {
            Some(i) => text[..i].to_string(),
            None => text,
        };
        bad(e.line(), e.column(), format!("not valid JSON: {message}"))
    })?;
    let builds =
        match doc.get("builds") {
            Some(Value::Array(builds)) => builds,
            Some(other) => {
                return Err(bad(
                    0,
                    0,
                    format!("`builds` must be a list, got {}", json_type(other)),
                ))
            }
            None => return Err(bad(
                0,
                0,
                "no `builds` list (expected {\"builds\": [{\"imageName\": ..., \"tag\": ...}]})"
                    .to_string(),
            )),
        };
    let mut out = Vec::new();
    for (i, b) in builds.iter().enumerate() {
        let field = |key: &str| -> Result<String, RenderError> {
            match b.get(key) {
                Some(Value::String(s)) if !s.trim().is_empty() => Ok(s.trim().to_string()),
                Some(other) => Err(bad(
                    0,
                    0,
                    format!(
                        "builds[{i}].{key}: expected a non-empty string, got {}",
                        json_type(other)
                    ),
                )),
                None => Err(bad(0, 0, format!("builds[{i}]: no `{key}`"))),
            }
        };
        out.push((field("imageName")?, field("tag")?));
    }
    Ok(out)
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(s) if s.trim().is_empty() => "an empty string",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// The pod spec of a workload object, when it has one.
fn pod_spec_mut(obj: &mut Value) -> Option<&mut Value> {
    let api_version = obj.get("apiVersion")?.as_str()?.to_string();
    let kind = obj.get("kind")?.as_str()?.to_string();
    let group = match api_version.rsplit_once('/') {
        Some((group, _)) => group,
        None => "",
    };
    let path: &[&str] = match (group, kind.as_str()) {
        ("apps" | "extensions", "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet") => {
            &["spec", "template", "spec"]
        }
        ("batch", "Job") => &["spec", "template", "spec"],
        ("batch", "CronJob") => &["spec", "jobTemplate", "spec", "template", "spec"],
        ("", "Pod") => &["spec"],
        _ => return None,
    };
    let mut node = obj;
    for key in path {
        node = node.get_mut(*key)?;
    }
    Some(node)
}

/// Replaces the images of matching containers and init containers in `objects`. `artifacts` maps an
/// image name to its full reference. Returns, per artifact name, how many containers it replaced.
pub fn substitute(
    objects: &mut [Value],
    artifacts: &BTreeMap<String, String>,
) -> BTreeMap<String, usize> {
    let mut hits: BTreeMap<String, usize> = artifacts.keys().map(|k| (k.clone(), 0)).collect();
    for obj in objects.iter_mut() {
        let Some(spec) = pod_spec_mut(obj) else {
            continue;
        };
        for list in ["initContainers", "containers"] {
            let Some(Value::Array(containers)) = spec.get_mut(list) else {
                continue;
            };
            for c in containers.iter_mut() {
                let Some(image) = c.get("image").and_then(Value::as_str) else {
                    continue;
                };
                let name = image_name(image);
                if let Some(tag) = artifacts.get(name) {
                    if let Some(n) = hits.get_mut(name) {
                        *n += 1;
                    }
                    c["image"] = Value::String(tag.clone());
                }
            }
        }
    }
    hits
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names() {
        let cases = [
            ("app", "app"),
            ("app:1", "app"),
            ("app@sha256:abc", "app"),
            ("app:1@sha256:abc", "app"),
            ("ghcr.io/acme/app:v1.2", "ghcr.io/acme/app"),
            ("localhost:5000/app", "localhost:5000/app"),
            ("localhost:5000/app:1", "localhost:5000/app"),
            ("localhost:5000/app:1@sha256:abc", "localhost:5000/app"),
            (
                "localhost:5000/a/b/app@sha256:abc",
                "localhost:5000/a/b/app",
            ),
            ("", ""),
        ];
        for (reference, name) in cases {
            assert_eq!(image_name(reference), name, "{reference}");
        }
    }

    #[test]
    fn flags() {
        assert_eq!(
            parse_image_flag("app=ghcr.io/acme/app:1@sha256:0f").ok(),
            Some(("app".into(), "ghcr.io/acme/app:1@sha256:0f".into()))
        );
        assert_eq!(
            parse_image_flag(" localhost:5000/w = localhost:5000/w:2 ").ok(),
            Some(("localhost:5000/w".into(), "localhost:5000/w:2".into()))
        );
        for bad in ["app", "=x", "app=", "a b=c"] {
            let e = parse_image_flag(bad).err().map(|e| e.to_string());
            assert!(
                e.as_deref().is_some_and(|m| m.contains(bad.trim())),
                "{bad}: {e:?}"
            );
        }
        let e = parse_image_flag("ghcr.io/acme/app:1")
            .err()
            .map(|e| e.to_string());
        assert!(e.is_some_and(|m| m.contains("name=ref") && m.contains("no `=`")));
    }

    #[test]
    fn build_artifacts() {
        let ok = parse_build_artifacts(
            "b.json",
            r#"{"builds":[{"imageName":"app","tag":"r/app:1@sha256:0"},{"imageName":"w","tag":"w:2"}]}"#,
        );
        assert_eq!(
            ok.ok(),
            Some(vec![
                ("app".into(), "r/app:1@sha256:0".into()),
                ("w".into(), "w:2".into())
            ])
        );
        let msg = |text: &str| {
            parse_build_artifacts("b.json", text)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default()
        };
        let m = msg("{\n  \"builds\": [\n    {\"imageName\": \"app\",}\n  ]\n}");
        assert!(m.starts_with("b.json:3:"), "{m}");
        assert!(m.contains("not valid JSON"), "{m}");
        assert!(!m.contains(" at line "), "{m}");
        assert!(msg("{}").contains("no `builds`"));
        assert!(msg(r#"{"builds": {}}"#).contains("must be a list"));
        assert!(msg(r#"{"builds": [{"imageName": "a"}]}"#).contains("builds[0]: no `tag`"));
        assert!(msg(r#"{"builds": [{"imageName": 5, "tag": "x"}]}"#)
            .contains("builds[0].imageName: expected a non-empty string, got a number"));
    }

    #[test]
    fn substitutes_only_matching_names_in_pod_templates() {
        let pod = |images: &[&str]| {
            json!({
                "initContainers": [{"name": "init", "image": images[0]}],
                "containers": images[1..].iter().enumerate()
                    .map(|(i, im)| json!({"name": format!("c{i}"), "image": im}))
                    .collect::<Vec<_>>(),
            })
        };
        let mut objects = vec![
            json!({"apiVersion": "apps/v1", "kind": "Deployment",
                   "spec": {"template": {"spec": pod(&["app:0", "app", "app-sidecar:1", "x/app:1"])}}}),
            json!({"apiVersion": "batch/v1", "kind": "CronJob",
                   "spec": {"jobTemplate": {"spec": {"template": {"spec": pod(&["busybox", "localhost:5000/w:1"])}}}}}),
            json!({"apiVersion": "v1", "kind": "Pod", "spec": pod(&["app@sha256:1", "nginx"])}),
            // Not a workload: left alone even though it looks like one.
            json!({"apiVersion": "example.com/v1", "kind": "Deployment",
                   "spec": {"template": {"spec": pod(&["app", "app"])}}}),
            json!({"apiVersion": "v1", "kind": "ConfigMap", "data": {"image": "app"}}),
        ];
        let before = objects.clone();
        let artifacts: BTreeMap<String, String> = [
            ("app".to_string(), "r/app:9@sha256:f".to_string()),
            (
                "localhost:5000/w".to_string(),
                "localhost:5000/w:2".to_string(),
            ),
            ("unused".to_string(), "unused:1".to_string()),
        ]
        .into_iter()
        .collect();
        let hits = substitute(&mut objects, &artifacts);
        assert_eq!(hits.get("app"), Some(&3));
        assert_eq!(hits.get("localhost:5000/w"), Some(&1));
        assert_eq!(hits.get("unused"), Some(&0));
        let dep = &objects[0]["spec"]["template"]["spec"];
        assert_eq!(dep["initContainers"][0]["image"], "r/app:9@sha256:f");
        assert_eq!(dep["containers"][0]["image"], "r/app:9@sha256:f");
        assert_eq!(dep["containers"][1]["image"], "app-sidecar:1");
        assert_eq!(dep["containers"][2]["image"], "x/app:1");
        let cron = &objects[1]["spec"]["jobTemplate"]["spec"]["template"]["spec"];
        assert_eq!(cron["initContainers"][0]["image"], "busybox");
        assert_eq!(cron["containers"][0]["image"], "localhost:5000/w:2");
        assert_eq!(
            objects[2]["spec"]["initContainers"][0]["image"],
            "r/app:9@sha256:f"
        );
        assert_eq!(objects[2]["spec"]["containers"][0]["image"], "nginx");
        assert_eq!(objects[3], before[3]);
        assert_eq!(objects[4], before[4]);
    }
}
