//! Loading scratch projects end to end.

use super::*;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

static N: AtomicUsize = AtomicUsize::new(0);

/// A scratch project with `files` (path, text); kustomize paths need directories, so every
/// `k/...` directory named in a test is created too.
/// A directory removed when the test ends.
struct Scratch(PathBuf);

impl std::ops::Deref for Scratch {
    type Target = PathBuf;
    fn deref(&self) -> &PathBuf {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn project(files: &[(&str, &str)]) -> Scratch {
    let dir = std::env::temp_dir().join(format!(
        "aviary-skaffold-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    for (path, text) in files {
        let p = dir.join(path);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).ok();
        }
        std::fs::write(&p, text).ok();
    }
    for d in ["k/dev", "k/prod", "k/base", "sub/k"] {
        std::fs::create_dir_all(dir.join(d)).ok();
    }
    Scratch(dir)
}

const HEAD: &str = "apiVersion: skaffold/v4beta13\nkind: Config\n";

fn load_ok(dir: &Path, profile: Option<&str>) -> Loaded {
    match load(&dir.join("skaffold.yaml"), profile) {
        Ok(l) => l,
        Err(e) => panic!("{e}"),
    }
}

fn load_err(dir: &Path, profile: Option<&str>) -> String {
    match load(&dir.join("skaffold.yaml"), profile) {
        Ok(l) => panic!("expected an error, got {l:?}"),
        Err(e) => e.to_string(),
    }
}

fn kustomize_paths(c: &Config, dir: &Path) -> Vec<String> {
    c.kustomize
        .iter()
        .map(|k| {
            Path::new(&k.path)
                .strip_prefix(dir)
                .map(|p| p.display().to_string())
                .unwrap_or_else(|_| k.path.clone())
        })
        .collect()
}

#[test]
fn kustomize_default_path_and_raw_yaml() {
    let dir = project(&[(
        "skaffold.yaml",
        &format!("{HEAD}manifests:\n  kustomize: {{}}\n  rawYaml: [a.yaml, 'k/*.yaml']\n"),
    )]);
    let l = load_ok(&dir, None);
    assert_eq!(l.configs.len(), 1);
    let c = &l.configs[0];
    assert_eq!(kustomize_paths(c, &dir), [""]);
    assert_eq!(
        c.kustomize[0].origin,
        format!("{}:4", dir.join("skaffold.yaml").display())
    );
    let raw: Vec<&str> = c.raw_yaml.iter().map(|r| r.written.as_str()).collect();
    assert_eq!(raw, ["a.yaml", "k/*.yaml"]);
    assert_eq!(c.raw_yaml[1].pattern, dir.join("k/*.yaml"));
    assert!(c.has_manifests);

    let dir = project(&[(
        "skaffold.yaml",
        &format!("{HEAD}manifests:\n  kustomize:\n"),
    )]);
    assert_eq!(kustomize_paths(&load_ok(&dir, None).configs[0], &dir), [""]);
    // No kustomize section: no default path.
    let dir = project(&[(
        "skaffold.yaml",
        &format!("{HEAD}manifests:\n  rawYaml: [a.yaml]\n"),
    )]);
    assert!(load_ok(&dir, None).configs[0].kustomize.is_empty());
    let dir = project(&[("skaffold.yaml", HEAD)]);
    assert!(!load_ok(&dir, None).configs[0].has_manifests);
}

#[test]
fn profiles_patch_overlay_and_replace() {
    let text = format!(
        "{HEAD}build:\n  artifacts: [{{image: a}}]\n  local: {{push: false}}\nmanifests:\n  kustomize:\n    paths: [k/dev]\n  rawYaml: [x.yaml]\nprofiles:\n\
         - name: prod\n  patches:\n  - path: /manifests/kustomize/paths/0\n    value: k/prod\n  - op: add\n    path: /manifests/kustomize/paths/-\n    value: k/base\n  - op: remove\n    path: /manifests/rawYaml\n\
         - name: other\n  build:\n    tagPolicy: {{sha256: {{}}}}\n  manifests:\n    kustomize:\n      paths: [k/base]\n\
         - name: newart\n  build:\n    artifacts: [{{image: b}}, {{image: c}}]\n"
    );
    let dir = project(&[("skaffold.yaml", &text)]);
    let none = load_ok(&dir, None);
    assert_eq!(kustomize_paths(&none.configs[0], &dir), ["k/dev"]);
    assert_eq!(none.configs[0].raw_yaml.len(), 1);
    assert!(none.configs[0].profiles.is_empty());

    let prod = load_ok(&dir, Some("prod"));
    assert!(prod.profile_found);
    let c = &prod.configs[0];
    assert_eq!(c.profiles, ["prod"]);
    // The patch without `op` is a replace, as in Skaffold.
    assert_eq!(kustomize_paths(c, &dir), ["k/prod", "k/base"]);
    assert!(c.raw_yaml.is_empty());
    assert_eq!(c.artifacts, ["a"]);

    // `manifests` replaces the config's (rawYaml goes too); `build` is overlaid by field.
    let other = load_ok(&dir, Some("other"));
    assert_eq!(kustomize_paths(&other.configs[0], &dir), ["k/base"]);
    assert!(other.configs[0].raw_yaml.is_empty());
    assert_eq!(other.configs[0].artifacts, ["a"]);
    assert_eq!(
        load_ok(&dir, Some("newart")).configs[0].artifacts,
        ["b", "c"]
    );

    let missing = load_ok(&dir, Some("nope"));
    assert!(!missing.profile_found);
    assert_eq!(
        missing
            .profiles
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
        ["newart", "other", "prod"]
    );
}

#[test]
fn bad_profiles_and_patches() {
    let cases = [
        (
            "profiles:\n- name: p\n  patches:\n  - op: replace\n    path: /manifests/kustomize/paths/4\n    value: x\n",
            "skaffold.yaml:8: profiles[0].patches[0]: profile \"p\": cannot apply",
        ),
        // An error in what a patch wrote points at the patch.
        (
            "profiles:\n- name: p\n  patches:\n  - op: replace\n    path: /manifests/kustomize/paths/0\n    value: k/none\n",
            "skaffold.yaml:10: manifests.kustomize.paths[0]: kustomize path",
        ),
        (
            "profiles:\n- name: p\n  patches:\n  - op: frobnicate\n    path: /a\n",
            "skaffold.yaml:8: profiles[0].patches[0].op: unknown operation \"frobnicate\"",
        ),
        (
            "profiles:\n- name: p\n  patches:\n  - op: add\n    path: /a\n",
            "profiles[0].patches[0]: a add operation needs `value`",
        ),
        (
            "profiles:\n- name: p\n  patches:\n  - op: add\n    path: a\n    value: 1\n",
            "profiles[0].patches[0]: not a JSON patch operation",
        ),
        ("profiles:\n- name: p\n- name: p\n", "skaffold.yaml:7: profiles[1].name: profile \"p\" is defined twice"),
        ("profiles:\n- build: {}\n", "skaffold.yaml:6: profiles[0]: a profile needs a `name`"),
    ];
    for (tail, want) in cases {
        let dir = project(&[(
            "skaffold.yaml",
            &format!("{HEAD}manifests:\n  kustomize: {{paths: [k/dev]}}\n{tail}"),
        )]);
        let e = load_err(&dir, Some("p"));
        assert!(e.contains(want), "want {want:?} in:\n{e}");
    }
}

#[test]
fn bad_configs() {
    let cases = [
        ("apiVersion: skaffold/v4beta14\nkind: Config\n", "skaffold.yaml:1: apiVersion \"skaffold/v4beta14\" is not supported"),
        ("apiVersion: skaffold/v4beta0\nkind: Config\n", "is not supported"),
        ("apiVersion: skaffold/v3\nkind: Config\n", "is not supported"),
        ("kind: Config\n", "skaffold.yaml:1: apiVersion (none) is not supported"),
        ("apiVersion: skaffold/v4beta1\nkind: Pipeline\n", "skaffold.yaml:2: kind: expected Config, got \"Pipeline\""),
        ("apiVersion: skaffold/v4beta1\nkind: Config\nmanifests:\n  helm: {}\n", "skaffold.yaml:4: manifests.helm: `manifests.helm` is not supported"),
        ("apiVersion: skaffold/v4beta1\nkind: Config\nmanifests:\n  rawYml: []\n", "skaffold.yaml:4: manifests.rawYml: unknown field \"rawYml\""),
        ("apiVersion: skaffold/v4beta1\nkind: Config\nmanifests:\n  kustomize:\n    paths: [k/none]\n", "skaffold.yaml:5: manifests.kustomize.paths[0]: kustomize path"),
        ("apiVersion: skaffold/v4beta1\nkind: Config\nmanifests:\n  rawYaml: a.yaml\n", "skaffold.yaml:4: manifests.rawYaml: expected a list of strings, got a string"),
        ("apiVersion: skaffold/v4beta1\nkind: Config\nbuild:\n  artifacts:\n  - context: .\n", "skaffold.yaml:5: build.artifacts[0]: an artifact needs an `image`"),
        ("apiVersion: skaffold/v4beta1\nkind: Config\nrequires:\n- git: {repo: x}\n", "skaffold.yaml:4: requires[0].git: `git` requires are not supported"),
        ("apiVersion: skaffold/v4beta1\nkind: Config\nrequires:\n- googleCloudStorage: {source: x}\n", "`googleCloudStorage` requires are not supported"),
        ("apiVersion: skaffold/v4beta1\nkind: Config\nrequires:\n- path: nowhere\n", "skaffold.yaml:4: requires[0].path: required config"),
        ("apiVersion: [\n", "skaffold.yaml:1: invalid YAML"),
        ("# nothing\n", "no Skaffold config in this file"),
    ];
    for (text, want) in cases {
        let dir = project(&[("skaffold.yaml", text)]);
        let e = load_err(&dir, None);
        assert!(e.contains(want), "want {want:?} in:\n{e}");
    }
    let e = match load(Path::new("/nonexistent/skaffold.yaml"), None) {
        Err(e) => e.to_string(),
        Ok(_) => String::new(),
    };
    assert!(
        e.starts_with("/nonexistent/skaffold.yaml: no such file"),
        "{e}"
    );
}

#[test]
fn requires_cycles_profiles_and_filters() {
    let root = format!(
        "{HEAD}metadata: {{name: root}}\nrequires:\n- path: sub\n  configs: [one]\n  activeProfiles:\n  - name: p1\n    activatedBy: [rel]\n  - name: p2\n\
         - configs: [sibling]\nmanifests: {{rawYaml: [root.yaml]}}\nprofiles: [{{name: rel}}]\n---\n{HEAD}metadata: {{name: sibling}}\nmanifests: {{rawYaml: [sib.yaml]}}\n"
    );
    let sub = format!(
        "{HEAD}metadata: {{name: one}}\nrequires:\n- path: ../skaffold.yaml\n  configs: [root]\nmanifests: {{kustomize: {{paths: [k]}}}}\n\
         profiles:\n- name: p1\n  patches: [{{op: add, path: /manifests/rawYaml, value: [p1.yaml]}}]\n- name: p2\n  build: {{artifacts: [{{image: two}}]}}\n---\n{HEAD}metadata: {{name: two}}\nmanifests: {{rawYaml: [never.yaml]}}\n"
    );
    let dir = project(&[("skaffold.yaml", &root), ("sub/skaffold.yaml", &sub)]);
    let names = |l: &Loaded| -> Vec<String> {
        l.configs
            .iter()
            .map(|c| {
                format!(
                    "{}[{}]",
                    c.name.clone().unwrap_or_default(),
                    c.profiles.join(",")
                )
            })
            .collect()
    };
    // Required configs come before the configs that require them; the cycle back to root is
    // read once; `two` is filtered out.
    let l = load_ok(&dir, None);
    assert_eq!(names(&l), ["one[p2]", "sibling[]", "root[]"]);
    assert_eq!(l.configs[0].artifacts, ["two"]);
    assert!(l.configs[0].raw_yaml.is_empty());
    assert_eq!(
        l.configs[0].file,
        format!("{}", dir.join("sub/skaffold.yaml").display())
    );
    let l = load_ok(&dir, Some("rel"));
    assert_eq!(names(&l), ["one[p1,p2]", "sibling[]", "root[rel]"]);
    assert_eq!(l.configs[0].raw_yaml[0].pattern, dir.join("sub/p1.yaml"));

    // A filter that names no config, and a profile the required config lacks.
    let bad = root.replace("configs: [one]", "configs: [uno]");
    let dir = project(&[("skaffold.yaml", &bad), ("sub/skaffold.yaml", &sub)]);
    let e = load_err(&dir, None);
    assert!(
        e.contains("skaffold.yaml:5: requires a config named \"uno\""),
        "{e}"
    );
    assert!(e.contains("has only one, two"), "{e}");
    let bad = root.replace("- name: p2", "- name: p3");
    let dir = project(&[("skaffold.yaml", &bad), ("sub/skaffold.yaml", &sub)]);
    let e = load_err(&dir, None);
    assert!(
        e.contains("skaffold.yaml:10: activates profile \"p3\""),
        "{e}"
    );
    assert!(e.contains("which has only p1, p2"), "{e}");
}

#[test]
fn required_twice_with_different_profiles() {
    let root = format!("{HEAD}requires:\n- path: a\n- path: b\nmanifests: {{rawYaml: [r.yaml]}}\n");
    let a = format!("{HEAD}requires:\n- path: ../c\n  activeProfiles: [{{name: x}}]\n");
    let b = format!("{HEAD}requires:\n- path: ../c\n");
    let c = format!("{HEAD}profiles: [{{name: x}}]\n");
    let dir = project(&[
        ("skaffold.yaml", &root),
        ("a/skaffold.yaml", &a),
        ("b/skaffold.yaml", &b),
        ("c/skaffold.yaml", &c),
    ]);
    let e = load_err(&dir, None);
    assert!(
        e.contains("read twice with different profiles (first x, then none)"),
        "{e}"
    );
    // The same profiles twice (a diamond) is fine, and read once.
    let b = format!("{HEAD}requires:\n- path: ../c\n  activeProfiles: [{{name: x}}]\n");
    std::fs::write(dir.join("b/skaffold.yaml"), b).ok();
    assert_eq!(load_ok(&dir, None).configs.len(), 4);
}

#[test]
fn activation_is_ignored_with_a_warning() {
    let dir = project(&[(
        "skaffold.yaml",
        &format!("{HEAD}manifests: {{rawYaml: [a.yaml]}}\nprofiles:\n- name: ci\n  activation: [{{env: CI=true}}]\n"),
    )]);
    let l = load_ok(&dir, None);
    assert_eq!(l.warnings.len(), 1);
    assert!(
        l.warnings[0].contains("skaffold.yaml:6: profile \"ci\" has `activation`"),
        "{l:?}"
    );
}
