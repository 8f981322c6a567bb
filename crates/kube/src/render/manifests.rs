//! Manifests: raw YAML files (paths and globs), parsing rendered YAML into objects, telling the
//! Canary documents apart, and the order objects are applied in.

use std::cmp::Ordering;
use std::path::{Component, Path, PathBuf};

use serde_json::Value;

use super::RenderError;
use aviary_core::spec::yaml::parse_documents;
use aviary_core::spec::Diagnostic;

/// Whether `pattern` has glob characters.
fn is_glob(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

/// Matches one path component against a glob component (`*`, `?`, `[abc]`, `[a-z]`, `[!a]`,
/// `[^a]`, `\\` escapes), like Go's `filepath.Match`, which Skaffold uses for `rawYaml`.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    segment_glob(pattern).is_some_and(|m| m.is_match(name))
}

/// The matcher of one path component. `globset` compiles it to a regular expression, so a
/// match takes time linear in the name, whatever the stars (a backtracking matcher took
/// seconds for eight of them). Braces are literal, as in Go (globset would read `{a,b}` as
/// alternatives), and an unclosed `[` is a literal `[`. `None` for a pattern that cannot be
/// compiled (it then matches nothing, as Go's `ErrBadPattern` does).
fn segment_glob(pattern: &str) -> Option<globset::GlobMatcher> {
    let mut go = String::with_capacity(pattern.len() + 4);
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                go.push(c);
                if let Some(next) = chars.next() {
                    go.push(next);
                }
            }
            '{' | '}' => {
                go.push('\\');
                go.push(c);
            }
            c => go.push(c),
        }
    }
    globset::GlobBuilder::new(&go)
        .literal_separator(true)
        .backslash_escape(true)
        .allow_unclosed_class(true)
        .build()
        .ok()
        .map(|g| g.compile_matcher())
}

/// The files `pattern` names: itself when it has no glob characters, else the files matching it,
/// sorted per directory level.
pub fn expand(pattern: &Path) -> Vec<PathBuf> {
    let text = pattern.to_string_lossy();
    if !is_glob(&text) {
        return if pattern.is_file() {
            vec![pattern.to_path_buf()]
        } else {
            Vec::new()
        };
    }
    let mut current: Vec<PathBuf> = vec![PathBuf::new()];
    for comp in pattern.components() {
        let part = comp.as_os_str().to_string_lossy().into_owned();
        let matcher =
            (matches!(comp, Component::Normal(_)) && is_glob(&part)).then(|| segment_glob(&part));
        let mut next = Vec::new();
        for base in &current {
            if let Some(matcher) = &matcher {
                let Some(matcher) = matcher else {
                    continue;
                };
                let dir = if base.as_os_str().is_empty() {
                    PathBuf::from(".")
                } else {
                    base.clone()
                };
                let Ok(entries) = std::fs::read_dir(&dir) else {
                    continue;
                };
                let mut names: Vec<String> = entries
                    .flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|name| matcher.is_match(name.as_str()))
                    .collect();
                names.sort();
                next.extend(names.into_iter().map(|n| base.join(n)));
            } else {
                next.push(base.join(comp.as_os_str()));
            }
        }
        current = next;
    }
    current.retain(|p| p.is_file());
    current
}

/// Parses rendered YAML into objects, checking that each is a Kubernetes object.
pub fn parse_objects(label: &str, text: &str) -> Result<Vec<Value>, RenderError> {
    let docs = parse_documents(label, text).map_err(RenderError::Yaml)?;
    let mut out = Vec::with_capacity(docs.len());
    for doc in docs {
        if doc.as_map().is_none() {
            return Err(RenderError::Config(
                Diagnostic::error(
                    label,
                    doc.line,
                    "",
                    format!(
                        "expected a Kubernetes object (a mapping), got {}",
                        doc.type_name()
                    ),
                )
                .with_help("every YAML document of a manifest is one object"),
            ));
        }
        for field in ["apiVersion", "kind"] {
            match doc.get(field) {
                Some(v) if v.as_str().is_some_and(|s| !s.is_empty()) => {}
                Some(v) => {
                    return Err(RenderError::Config(Diagnostic::error(
                        label,
                        v.line,
                        field,
                        format!("expected a non-empty string, got {}", v.describe()),
                    )))
                }
                None => {
                    return Err(RenderError::Config(
                        Diagnostic::error(
                            label,
                            doc.line,
                            "",
                            format!("this object has no `{field}`"),
                        )
                        .with_help("every object needs apiVersion, kind and metadata.name"),
                    ))
                }
            }
        }
        out.push(doc.to_json());
    }
    Ok(out)
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    let mut v = v;
    for key in path {
        match v.get(key) {
            Some(next) => v = next,
            None => return "",
        }
    }
    v.as_str().unwrap_or("")
}

/// `flagger.app/*` and `aviary.dev/*` Canary and MetricTemplate objects.
pub fn is_canary_doc(obj: &Value) -> bool {
    let group = str_at(obj, &["apiVersion"])
        .split_once('/')
        .map_or("", |(g, _)| g);
    matches!(group, "flagger.app" | "aviary.dev")
        && matches!(str_at(obj, &["kind"]), "Canary" | "MetricTemplate")
}

/// The kinds applied first, in order; all others come after them, by kind.
const ORDER: [&str; 13] = [
    "Namespace",
    "CustomResourceDefinition",
    "ServiceAccount",
    "ClusterRole",
    "ClusterRoleBinding",
    "Role",
    "RoleBinding",
    "ConfigMap",
    "Secret",
    "Service",
    "Deployment",
    "StatefulSet",
    "DaemonSet",
];

/// The apply order: the kinds of [`ORDER`] first, then the others by kind; within a kind by
/// namespace, then name.
pub fn apply_order(a: &Value, b: &Value) -> Ordering {
    fn rank(v: &Value) -> (usize, &str) {
        let kind = str_at(v, &["kind"]);
        match ORDER.iter().position(|k| *k == kind) {
            Some(i) => (i, ""),
            None => (ORDER.len(), kind),
        }
    }
    rank(a)
        .cmp(&rank(b))
        .then_with(|| {
            str_at(a, &["metadata", "namespace"]).cmp(str_at(b, &["metadata", "namespace"]))
        })
        .then_with(|| str_at(a, &["metadata", "name"]).cmp(str_at(b, &["metadata", "name"])))
}

/// `kind namespace/name` of objects that appear more than once (same apiVersion too).
pub fn duplicates(objects: &[Value]) -> Vec<String> {
    let mut seen = std::collections::BTreeMap::new();
    for o in objects {
        let id = (
            str_at(o, &["apiVersion"]).to_string(),
            str_at(o, &["kind"]).to_string(),
            str_at(o, &["metadata", "namespace"]).to_string(),
            str_at(o, &["metadata", "name"]).to_string(),
        );
        *seen.entry(id).or_insert(0usize) += 1;
    }
    seen.into_iter()
        .filter(|(_, n)| *n > 1)
        .map(|((api, kind, ns, name), n)| {
            let at = if ns.is_empty() {
                name
            } else {
                format!("{ns}/{name}")
            };
            format!("{kind} {at} ({api}) appears {n} times")
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn globs() {
        let yes = [
            ("*.yaml", "a.yaml"),
            ("*.yaml", ".yaml"),
            ("a?c", "abc"),
            ("[a-c]x", "bx"),
            ("[!a-c]x", "dx"),
            ("[^a]x", "bx"),
            ("*", ""),
            ("a*b*c", "aXXbYc"),
            ("[", "["),
        ];
        let no = [
            ("*.yaml", "a.yml"),
            ("a?c", "ac"),
            ("[a-c]x", "dx"),
            ("[!a-c]x", "ax"),
            ("a*b*c", "aXXbY"),
            ("abc", "abd"),
        ];
        for (p, n) in yes {
            assert!(glob_match(p, n), "{p} should match {n}");
        }
        // Go's filepath.Match: braces are literal, a backslash escapes, a star stays within
        // one path component.
        assert!(glob_match("{a,b}.yaml", "{a,b}.yaml"));
        assert!(!glob_match("{a,b}.yaml", "a.yaml"));
        assert!(glob_match("\\*.yaml", "*.yaml"));
        assert!(!glob_match("\\*.yaml", "a.yaml"));
        assert!(!glob_match("*", "a/b"));
        // Many stars against a long name that does not match: linear, not exponential.
        let stars = "*a".repeat(16) + "b";
        assert!(!glob_match(&stars, &"a".repeat(200)));
        assert!(glob_match(&stars, &("a".repeat(200) + "b")));
        for (p, n) in no {
            assert!(!glob_match(p, n), "{p} should not match {n}");
        }
    }

    #[test]
    fn expands_relative_globs_sorted() {
        let dir = std::env::temp_dir().join(format!("aviary-glob-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for f in [
            "k8s/b.yaml",
            "k8s/a.yaml",
            "k8s/c.txt",
            "k8s/sub/d.yaml",
            "other/e.yaml",
        ] {
            let p = dir.join(f);
            if let Some(parent) = p.parent() {
                std::fs::create_dir_all(parent).ok();
            }
            std::fs::write(&p, "x: 1\n").ok();
        }
        let names = |pattern: &str| -> Vec<String> {
            expand(&dir.join(pattern))
                .iter()
                .map(|p| {
                    p.strip_prefix(&dir)
                        .map(|r| r.display().to_string())
                        .unwrap_or_default()
                })
                .collect()
        };
        assert_eq!(names("k8s/*.yaml"), ["k8s/a.yaml", "k8s/b.yaml"]);
        assert_eq!(
            names("*/*.yaml"),
            ["k8s/a.yaml", "k8s/b.yaml", "other/e.yaml"]
        );
        assert_eq!(names("k8s/*/d.yaml"), ["k8s/sub/d.yaml"]);
        assert_eq!(names("k8s/c.txt"), ["k8s/c.txt"]);
        assert!(names("k8s/none.yaml").is_empty());
        assert!(names("k8s/*.json").is_empty());
        // A directory is not a manifest.
        assert!(names("k8s/sub").is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn objects_must_be_kubernetes_objects() {
        let ok = parse_objects(
            "m.yaml",
            "apiVersion: v1\nkind: Service\nmetadata: {name: s}\n---\n",
        );
        assert_eq!(ok.ok().map(|v| v.len()), Some(1));
        let msg = |t: &str| {
            parse_objects("m.yaml", t)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default()
        };
        assert!(msg("apiVersion: v1\nmetadata: {}\n")
            .starts_with("m.yaml:1: this object has no `kind`"));
        assert!(msg("a: 1\n---\n- x\n").contains("m.yaml:1: this object has no `apiVersion`"));
        assert!(msg("apiVersion: v1\nkind: X\n---\n- x\n")
            .starts_with("m.yaml:4: expected a Kubernetes object"));
        assert!(msg("apiVersion: v1\nkind: 5\n")
            .starts_with("m.yaml:2: kind: expected a non-empty string, got 5"));
        assert!(msg("a: [\n").starts_with("m.yaml:1: invalid YAML"));
    }

    #[test]
    fn canary_docs() {
        let doc = |api: &str, kind: &str| json!({"apiVersion": api, "kind": kind});
        assert!(is_canary_doc(&doc("flagger.app/v1beta1", "Canary")));
        assert!(is_canary_doc(&doc("flagger.app/v1beta1", "MetricTemplate")));
        assert!(is_canary_doc(&doc("aviary.dev/v1alpha1", "Canary")));
        assert!(!is_canary_doc(&doc("flagger.app/v1beta1", "AlertProvider")));
        assert!(!is_canary_doc(&doc("example.com/v1", "Canary")));
        assert!(!is_canary_doc(&doc("v1", "Canary")));
    }

    #[test]
    fn order() {
        let o = |kind: &str, ns: &str, name: &str| json!({"apiVersion": "v1", "kind": kind, "metadata": {"namespace": ns, "name": name}});
        let mut objects = vec![
            o("Ingress", "a", "x"),
            o("Deployment", "b", "a"),
            o("Deployment", "a", "z"),
            o("HorizontalPodAutoscaler", "a", "x"),
            o("Service", "a", "x"),
            o("Namespace", "", "b"),
            o("Namespace", "", "a"),
            o("ConfigMap", "a", "x"),
            o("Secret", "a", "x"),
            o("RoleBinding", "a", "x"),
            o("Role", "a", "x"),
            o("ServiceAccount", "a", "x"),
            o("CustomResourceDefinition", "", "x"),
            o("DaemonSet", "a", "x"),
            o("StatefulSet", "a", "x"),
        ];
        objects.sort_by(apply_order);
        let got: Vec<String> = objects
            .iter()
            .map(|v| {
                format!(
                    "{}/{}/{}",
                    str_at(v, &["kind"]),
                    str_at(v, &["metadata", "namespace"]),
                    str_at(v, &["metadata", "name"])
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                "Namespace//a",
                "Namespace//b",
                "CustomResourceDefinition//x",
                "ServiceAccount/a/x",
                "Role/a/x",
                "RoleBinding/a/x",
                "ConfigMap/a/x",
                "Secret/a/x",
                "Service/a/x",
                "Deployment/a/z",
                "Deployment/b/a",
                "StatefulSet/a/x",
                "DaemonSet/a/x",
                "HorizontalPodAutoscaler/a/x",
                "Ingress/a/x",
            ]
        );
    }

    #[test]
    fn finds_duplicates() {
        let o = |name: &str| json!({"apiVersion": "v1", "kind": "Service", "metadata": {"namespace": "n", "name": name}});
        assert!(duplicates(&[o("a"), o("b")]).is_empty());
        assert_eq!(
            duplicates(&[o("a"), o("b"), o("a")]),
            ["Service n/a (v1) appears 2 times"]
        );
    }
}
