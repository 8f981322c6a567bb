//! Reads `skaffold.yaml` (`skaffold/v4beta1` to `skaffold/v4beta13`): multi-config files, `requires`
//! (recursively, relative to the requiring file, cycle-safe) and profiles (`build`, `manifests` and
//! JSON `patches`). The result is, per config, the images it builds and where its manifests are.

use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;
use std::path::{Component, Path, PathBuf};

use serde_json::Value;

use super::RenderError;
use aviary_core::spec::yaml::{parse_documents, Node};
use aviary_core::spec::Diagnostic;

/// The Skaffold schema versions aviary reads.
pub const MIN_BETA: u32 = 1;
pub const MAX_BETA: u32 = 13;

/// One kustomization to build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KustomizeSource {
    /// The directory (joined to the config's directory) or a remote URL, as kustomize takes it.
    pub path: String,
    /// `manifests.kustomize.buildArgs`.
    pub build_args: Vec<String>,
    /// Where it was named: `skaffold.yaml:12`.
    pub origin: String,
}

/// One `manifests.rawYaml` entry: a path or a glob, joined to the config's directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawSource {
    pub pattern: PathBuf,
    /// As written in the config.
    pub written: String,
    pub origin: String,
}

/// One Skaffold config (a document of a skaffold.yaml), with its profiles applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The file, as named in messages.
    pub file: String,
    pub name: Option<String>,
    pub line: usize,
    /// The profiles applied, in order.
    pub profiles: Vec<String>,
    /// `build.artifacts[].image`.
    pub artifacts: Vec<String>,
    pub kustomize: Vec<KustomizeSource>,
    pub raw_yaml: Vec<RawSource>,
    /// Whether it has a `manifests` section at all.
    pub has_manifests: bool,
}

/// Every config reachable from the root file, required ones before those that require them.
#[derive(Debug, Default)]
pub struct Loaded {
    pub configs: Vec<Config>,
    /// Every profile name defined in a loaded config.
    pub profiles: BTreeSet<String>,
    /// Whether some config defined (and so applied) the profile asked for.
    pub profile_found: bool,
    pub warnings: Vec<String>,
}

/// Loads `root` and what it requires, applying `profile` to every config that defines it.
pub fn load(root: &Path, profile: Option<&str>) -> Result<Loaded, RenderError> {
    let mut loader = Loader {
        profile: profile.map(str::to_string),
        loaded: Loaded::default(),
        done: HashMap::new(),
        stack: Vec::new(),
    };
    let label = root.display().to_string();
    if !root.exists() {
        return Err(RenderError::SkaffoldMissing { path: label });
    }
    loader.load_file(root, &label, Select::Root, &[])?;
    Ok(loader.loaded)
}

/// A field path for messages and for finding a field's line.
#[derive(Debug, Clone)]
enum Seg {
    Key(String),
    Index(usize),
}

fn key(k: &str) -> Seg {
    Seg::Key(k.to_string())
}

fn path_text(path: &[Seg]) -> String {
    let mut out = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            Seg::Index(i) => {
                let _ = write!(out, "[{i}]");
            }
        }
    }
    out
}

fn child(path: &[Seg], seg: Seg) -> Vec<Seg> {
    let mut p = path.to_vec();
    p.push(seg);
    p
}

/// Joins `rel` to `base` and removes `x/..` pairs, for paths that read well in messages.
pub fn join_clean(base: &Path, rel: &str) -> PathBuf {
    let joined = base.join(rel);
    let mut out = PathBuf::new();
    for c in joined.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                match out.components().next_back() {
                    Some(Component::Normal(_)) => {
                        out.pop();
                    }
                    // `/..` is `/`.
                    Some(Component::RootDir | Component::Prefix(_)) => {}
                    _ => out.push(".."),
                }
            }
            other => out.push(other.as_os_str()),
        }
    }
    if out.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        out
    }
}

/// The directory of a config file, `.` for a bare file name.
fn dir_of(file: &Path) -> PathBuf {
    match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// One config document being read: its file, its YAML tree (for lines) and its JSON (patched).
struct Doc<'a> {
    file: &'a str,
    node: &'a Node,
    json: Value,
    /// Parts of the JSON a profile wrote, and where in the file that profile wrote them: a field
    /// path under the first is looked up under the second (the last match wins).
    redirects: Vec<(Vec<Seg>, Vec<Seg>)>,
}

fn seg_text(seg: &Seg) -> String {
    match seg {
        Seg::Key(k) => k.clone(),
        Seg::Index(i) => i.to_string(),
    }
}

/// A JSON pointer (`/manifests/kustomize/paths/0`) as a field path.
fn pointer_path(pointer: &str) -> Vec<Seg> {
    pointer
        .split('/')
        .skip(1)
        .map(|t| {
            let t = t.replace("~1", "/").replace("~0", "~");
            match t.parse::<usize>() {
                Ok(i) => Seg::Index(i),
                Err(_) => Seg::Key(t),
            }
        })
        .collect()
}

impl Doc<'_> {
    /// The line of the deepest node of `path` that exists in the file as written.
    fn line(&self, path: &[Seg]) -> usize {
        let redirected = self.redirects.iter().rev().find(|(from, _)| {
            from.len() <= path.len()
                && from
                    .iter()
                    .zip(path)
                    .all(|(a, b)| seg_text(a) == seg_text(b))
        });
        let path: Vec<Seg> = match redirected {
            Some((from, to)) => to.iter().chain(&path[from.len()..]).cloned().collect(),
            None => path.to_vec(),
        };
        let mut node = self.node;
        for seg in &path {
            let next = match seg {
                Seg::Key(k) => node.get(k).or_else(|| {
                    let i = k.parse::<usize>().ok()?;
                    node.as_seq()?.get(i)
                }),
                Seg::Index(i) => node
                    .as_seq()
                    .and_then(|s| s.get(*i))
                    .or_else(|| node.get(&i.to_string())),
            };
            match next {
                Some(n) => node = n,
                None => break,
            }
        }
        node.line
    }

    fn error(&self, path: &[Seg], message: impl Into<String>) -> Diagnostic {
        Diagnostic::error(self.file, self.line(path), &path_text(path), message)
    }

    fn get(&self, path: &[Seg]) -> Option<&Value> {
        let mut v = &self.json;
        for seg in path {
            v = match seg {
                Seg::Key(k) => v.get(k.as_str())?,
                Seg::Index(i) => v.get(*i)?,
            };
        }
        Some(v)
    }

    fn string_list(&self, path: &[Seg]) -> Result<Vec<String>, RenderError> {
        match self.get(path) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(i, item)| match item {
                    Value::String(s) => Ok(s.clone()),
                    other => Err(self
                        .error(
                            &child(path, Seg::Index(i)),
                            format!("expected a string, got {}", json_type(other)),
                        )
                        .into()),
                })
                .collect(),
            Some(other) => Err(self
                .error(
                    path,
                    format!("expected a list of strings, got {}", json_type(other)),
                )
                .into()),
        }
    }

    fn string(&self, path: &[Seg]) -> Result<Option<String>, RenderError> {
        match self.get(path) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(self
                .error(path, format!("expected a string, got {}", json_type(other)))
                .into()),
        }
    }
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

/// A profile to activate in a required config, and who asked for it.
#[derive(Debug, Clone)]
struct Activation {
    name: String,
    file: String,
    line: usize,
}

struct Loader {
    profile: Option<String>,
    loaded: Loaded,
    /// Configs read, by (canonical file, document index), with the profiles they were read with.
    done: HashMap<(PathBuf, usize), Vec<String>>,
    /// Configs being read (their `requires` are being followed).
    stack: Vec<(PathBuf, usize)>,
}

/// Which configs of a file to read.
enum Select<'a> {
    /// The root file: every config, with the profile asked for only.
    Root,
    /// A required file: every config (`names` empty) or the named ones; `file:line` of the
    /// `requires` entry.
    Required {
        names: &'a [String],
        file: &'a str,
        line: usize,
    },
}

impl Loader {
    fn load_file(
        &mut self,
        path: &Path,
        label: &str,
        select: Select<'_>,
        activations: &[Activation],
    ) -> Result<(), RenderError> {
        let text = super::read_input(path, label, "the Skaffold config")?;
        let canonical = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        let docs = parse_documents(label, &text).map_err(RenderError::Yaml)?;
        if docs.is_empty() {
            return Err(RenderError::Config(
                Diagnostic::error(label, 0, "", "no Skaffold config in this file")
                    .with_help("start it with `apiVersion: skaffold/v4beta13` and `kind: Config`"),
            ));
        }
        let names: Vec<Option<String>> = docs
            .iter()
            .map(|d| {
                d.get("metadata")
                    .and_then(|m| m.get("name"))
                    .and_then(Node::as_str)
                    .map(str::to_string)
            })
            .collect();
        let (selected, required): (Vec<usize>, bool) = match select {
            Select::Root => ((0..docs.len()).collect(), false),
            Select::Required { names: [], .. } => ((0..docs.len()).collect(), true),
            Select::Required {
                names: want,
                file,
                line,
            } => {
                let mut selected = Vec::new();
                for w in want {
                    match names.iter().position(|n| n.as_deref() == Some(w.as_str())) {
                        Some(i) => selected.push(i),
                        None => {
                            let have: Vec<&str> =
                                names.iter().flatten().map(String::as_str).collect();
                            return Err(RenderError::Config(
                                Diagnostic::error(
                                    file,
                                    line,
                                    "",
                                    format!(
                                        "requires a config named {w:?} but {label} has {}",
                                        if have.is_empty() {
                                            "no named configs".to_string()
                                        } else {
                                            format!("only {}", have.join(", "))
                                        }
                                    ),
                                )
                                .with_help(
                                    "fix `configs`, or name the config in that file's \
                                     `metadata.name`",
                                ),
                            ));
                        }
                    }
                }
                (selected, true)
            }
        };
        for i in selected {
            self.load_config(&canonical, path, label, i, &docs[i], activations, required)?;
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn load_config(
        &mut self,
        canonical: &Path,
        path: &Path,
        label: &str,
        index: usize,
        node: &Node,
        activations: &[Activation],
        required: bool,
    ) -> Result<(), RenderError> {
        let id = (canonical.to_path_buf(), index);
        if self.stack.contains(&id) {
            tracing::debug!("{label}: config {index} requires itself through a cycle; read once");
            return Ok(());
        }
        check_header(label, node)?;
        let profiles = profile_list(label, node)?;
        for (name, _) in &profiles {
            self.loaded.profiles.insert(name.clone());
        }
        // The profiles to apply: the one asked for, when defined here, then those required.
        let mut active: Vec<String> = Vec::new();
        if let Some(p) = &self.profile {
            if profiles.iter().any(|(n, _)| n == p) {
                active.push(p.clone());
                self.loaded.profile_found = true;
            }
        }
        for a in activations {
            if !profiles.iter().any(|(n, _)| n == &a.name) {
                return Err(RenderError::Config(
                    Diagnostic::error(
                        &a.file,
                        a.line,
                        "",
                        format!(
                            "activates profile {:?} of {label}, which has {}",
                            a.name,
                            if profiles.is_empty() {
                                "no profiles".to_string()
                            } else {
                                format!(
                                    "only {}",
                                    profiles
                                        .iter()
                                        .map(|(n, _)| n.as_str())
                                        .collect::<Vec<_>>()
                                        .join(", ")
                                )
                            }
                        ),
                    )
                    .with_help("fix `activeProfiles[].name`, or add the profile to that config"),
                ));
            }
            if !active.contains(&a.name) {
                active.push(a.name.clone());
            }
        }
        if let Some(before) = self.done.get(&id) {
            if before == &active || !required {
                return Ok(());
            }
            return Err(RenderError::Config(
                Diagnostic::error(
                    label,
                    node.line,
                    "",
                    format!(
                        "this config is read twice with different profiles (first {}, then {})",
                        profile_names(before),
                        profile_names(&active)
                    ),
                )
                .with_help("activate the same profiles wherever it is required"),
            ));
        }

        let mut doc = Doc {
            file: label,
            node,
            json: node.to_json(),
            redirects: Vec::new(),
        };
        for name in &active {
            if let Some((_, i)) = profiles.iter().find(|(n, _)| n == name) {
                apply_profile(&mut doc, *i, name)?;
            }
        }
        for (i, (name, _)) in profiles.iter().enumerate() {
            if doc
                .get(&[key("profiles"), Seg::Index(i), key("activation")])
                .is_some()
            {
                self.loaded.warnings.push(format!(
                    "{label}:{}: profile {name:?} has `activation`, which aviary ignores; it \
                     applies a profile by --profile, by the name of --target, or by \
                     requires[].activeProfiles",
                    doc.line(&[key("profiles"), Seg::Index(i), key("activation")])
                ));
            }
        }

        self.stack.push(id.clone());
        let result = self.follow_requires(&doc, path, &active);
        self.stack.pop();
        result?;

        let config = read_config(&doc, path, active.clone(), &mut self.loaded.warnings)?;
        self.loaded.configs.push(config);
        self.done.insert(id, active);
        Ok(())
    }

    fn follow_requires(
        &mut self,
        doc: &Doc<'_>,
        path: &Path,
        active: &[String],
    ) -> Result<(), RenderError> {
        let requires = match doc.get(&[key("requires")]) {
            None | Some(Value::Null) => return Ok(()),
            Some(Value::Array(items)) => items.clone(),
            Some(other) => {
                return Err(doc
                    .error(
                        &[key("requires")],
                        format!("expected a list, got {}", json_type(other)),
                    )
                    .into())
            }
        };
        for (i, req) in requires.iter().enumerate() {
            let at = vec![key("requires"), Seg::Index(i)];
            if !req.is_object() {
                return Err(doc
                    .error(&at, format!("expected a mapping, got {}", json_type(req)))
                    .into());
            }
            for remote in ["git", "googleCloudStorage"] {
                if req.get(remote).is_some() {
                    return Err(RenderError::Config(
                        doc.error(
                            &child(&at, key(remote)),
                            format!("`{remote}` requires are not supported by aviary render"),
                        )
                        .with_help(
                            "check the required configs out next to this one and require them \
                             by `path`",
                        ),
                    ));
                }
            }
            let rel = doc.string(&child(&at, key("path")))?;
            let names = doc.string_list(&child(&at, key("configs")))?;
            let mut activations = Vec::new();
            let ap_path = child(&at, key("activeProfiles"));
            match doc.get(&ap_path) {
                None | Some(Value::Null) => {}
                Some(Value::Array(aps)) => {
                    for (j, _) in aps.iter().enumerate() {
                        let ap = child(&ap_path, Seg::Index(j));
                        let Some(name) = doc.string(&child(&ap, key("name")))? else {
                            return Err(RenderError::Config(
                                doc.error(&ap, "no `name`").with_help(
                                    "name the profile to activate in the required config",
                                ),
                            ));
                        };
                        let by = doc.string_list(&child(&ap, key("activatedBy")))?;
                        if by.is_empty() || by.iter().any(|b| active.contains(b)) {
                            activations.push(Activation {
                                name,
                                file: doc.file.to_string(),
                                line: doc.line(&ap),
                            });
                        }
                    }
                }
                Some(other) => {
                    return Err(doc
                        .error(
                            &ap_path,
                            format!("expected a list, got {}", json_type(other)),
                        )
                        .into())
                }
            }
            let (target, target_label) = match &rel {
                // No path: configs of this same file.
                None => (path.to_path_buf(), doc.file.to_string()),
                Some(rel) => {
                    let joined = dir_of(path).join(rel);
                    let shown = join_clean(&dir_of(Path::new(doc.file)), rel);
                    if joined.is_dir() {
                        (
                            joined.join("skaffold.yaml"),
                            shown.join("skaffold.yaml").display().to_string(),
                        )
                    } else {
                        (joined, shown.display().to_string())
                    }
                }
            };
            if !target.is_file() {
                return Err(RenderError::Config(
                    doc.error(
                        &child(&at, key("path")),
                        format!("required config {target_label} does not exist"),
                    )
                    .with_help(
                        "`path` is a skaffold.yaml or the directory that holds one, relative to \
                         this file",
                    ),
                ));
            }
            let select = Select::Required {
                names: &names,
                file: doc.file,
                line: doc.line(&at),
            };
            self.load_file(&target, &target_label, select, &activations)?;
        }
        Ok(())
    }
}

fn profile_names(names: &[String]) -> String {
    if names.is_empty() {
        "none".to_string()
    } else {
        names.join(", ")
    }
}

/// Checks `apiVersion` and `kind`.
fn check_header(file: &str, node: &Node) -> Result<(), RenderError> {
    if node.as_map().is_none() {
        return Err(RenderError::Config(
            Diagnostic::error(
                file,
                node.line,
                "",
                format!(
                    "expected a Skaffold config (a mapping), got {}",
                    node.type_name()
                ),
            )
            .with_help("start it with `apiVersion: skaffold/v4beta13` and `kind: Config`"),
        ));
    }
    let api = node.get("apiVersion");
    let found = api.and_then(Node::as_str).unwrap_or("");
    let supported = found
        .strip_prefix("skaffold/v4beta")
        .and_then(|n| n.parse::<u32>().ok())
        .is_some_and(|n| (MIN_BETA..=MAX_BETA).contains(&n));
    if !supported {
        return Err(RenderError::ApiVersion {
            file: file.to_string(),
            line: api.map_or(node.line, |a| a.line),
            found: match api {
                None => "(none)".to_string(),
                Some(a) => a.describe(),
            },
        });
    }
    match node.get("kind") {
        Some(k) if k.as_str() == Some("Config") => Ok(()),
        other => Err(RenderError::Config(
            Diagnostic::error(
                file,
                other.map_or(node.line, |k| k.line),
                "kind",
                format!(
                    "expected Config, got {}",
                    other.map_or("nothing".to_string(), Node::describe)
                ),
            )
            .with_help("a Skaffold config has `kind: Config`"),
        )),
    }
}

/// The names of the profiles of a config and their indexes, checking that each has a unique name.
fn profile_list(file: &str, node: &Node) -> Result<Vec<(String, usize)>, RenderError> {
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
fn apply_profile(doc: &mut Doc<'_>, index: usize, name: &str) -> Result<(), RenderError> {
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

const MANIFEST_FIELDS: [&str; 7] = [
    "rawYaml",
    "kustomize",
    "helm",
    "kpt",
    "transform",
    "validate",
    "hooks",
];

/// Reads what aviary needs of a config whose profiles are applied.
fn read_config(
    doc: &Doc<'_>,
    path: &Path,
    profiles: Vec<String>,
    warnings: &mut Vec<String>,
) -> Result<Config, RenderError> {
    let file = doc.file;
    let dir = dir_of(path);
    let shown_dir = dir_of(Path::new(file));
    let name = doc.string(&[key("metadata"), key("name")])?;

    let mut artifacts = Vec::new();
    let arts_at = vec![key("build"), key("artifacts")];
    match doc.get(&arts_at) {
        None | Some(Value::Null) => {}
        Some(Value::Array(items)) => {
            for i in 0..items.len() {
                let at = child(&arts_at, Seg::Index(i));
                match doc.string(&child(&at, key("image")))? {
                    Some(image) if !image.is_empty() => artifacts.push(image),
                    _ => {
                        return Err(RenderError::Config(
                            doc.error(&at, "an artifact needs an `image`")
                                .with_help("e.g. image: ghcr.io/acme/app"),
                        ))
                    }
                }
            }
        }
        Some(other) => {
            return Err(doc
                .error(
                    &arts_at,
                    format!("expected a list, got {}", json_type(other)),
                )
                .into())
        }
    }

    let mut kustomize = Vec::new();
    let mut raw_yaml = Vec::new();
    let m_at = vec![key("manifests")];
    let has_manifests = match doc.get(&m_at) {
        None | Some(Value::Null) => false,
        Some(Value::Object(fields)) => {
            for field in fields.keys() {
                let at = child(&m_at, key(field));
                match field.as_str() {
                    "helm" | "kpt" => {
                        return Err(RenderError::Config(
                            doc.error(&at, format!("`manifests.{field}` is not supported by aviary render"))
                                .with_help("render it to YAML and list the files in `manifests.rawYaml`, or use kustomize (which can inflate Helm charts with `helmCharts`)"),
                        ))
                    }
                    "transform" | "validate" | "hooks" => warnings.push(format!(
                        "{file}:{}: manifests.{field} is ignored by aviary render",
                        doc.line(&at)
                    )),
                    "rawYaml" | "kustomize" => {}
                    other => {
                        return Err(RenderError::Config(
                            doc.error(&at, format!("unknown field {other:?}"))
                                .with_help(format!("`manifests` has {}", MANIFEST_FIELDS.join(", "))),
                        ))
                    }
                }
            }
            if let Some(k) = fields.get("kustomize") {
                let k_at = child(&m_at, key("kustomize"));
                if !(k.is_null() || k.is_object()) {
                    return Err(doc
                        .error(&k_at, format!("expected a mapping, got {}", json_type(k)))
                        .into());
                }
                let paths_at = child(&k_at, key("paths"));
                let mut paths = doc.string_list(&paths_at)?;
                let defaulted = paths.is_empty();
                if defaulted {
                    paths.push(".".to_string());
                }
                let build_args = doc.string_list(&child(&k_at, key("buildArgs")))?;
                for (i, p) in paths.iter().enumerate() {
                    let at = if defaulted {
                        k_at.clone()
                    } else {
                        child(&paths_at, Seg::Index(i))
                    };
                    let remote = p.contains("://") || p.contains("?ref=");
                    let resolved = if remote {
                        p.clone()
                    } else {
                        join_clean(&dir, p).display().to_string()
                    };
                    let shown = if remote {
                        p.clone()
                    } else {
                        join_clean(&shown_dir, p).display().to_string()
                    };
                    if !remote && !Path::new(&resolved).is_dir() {
                        return Err(RenderError::Config(
                            doc.error(&at, format!("kustomize path {shown} is not a directory"))
                                .with_help("kustomize paths are directories holding a kustomization.yaml, relative to this file"),
                        ));
                    }
                    kustomize.push(KustomizeSource {
                        path: resolved,
                        build_args: build_args.clone(),
                        origin: format!("{file}:{}", doc.line(&at)),
                    });
                }
            }
            let raw_at = child(&m_at, key("rawYaml"));
            for (i, p) in doc.string_list(&raw_at)?.into_iter().enumerate() {
                let at = child(&raw_at, Seg::Index(i));
                if p.contains("://") {
                    return Err(RenderError::Config(
                        doc.error(&at, format!("remote manifests ({p}) are not supported"))
                            .with_help("download the file next to skaffold.yaml and list its path"),
                    ));
                }
                raw_yaml.push(RawSource {
                    pattern: dir.join(&p),
                    written: p,
                    origin: format!("{file}:{}", doc.line(&at)),
                });
            }
            true
        }
        Some(other) => {
            return Err(doc
                .error(
                    &m_at,
                    format!("expected a mapping, got {}", json_type(other)),
                )
                .into())
        }
    };
    Ok(Config {
        file: file.to_string(),
        name,
        line: doc.node.line,
        profiles,
        artifacts,
        kustomize,
        raw_yaml,
        has_manifests,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
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
        let root =
            format!("{HEAD}requires:\n- path: a\n- path: b\nmanifests: {{rawYaml: [r.yaml]}}\n");
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

    #[test]
    fn clean_joins() {
        assert_eq!(join_clean(Path::new("a/b"), "../c"), PathBuf::from("a/c"));
        assert_eq!(join_clean(Path::new("."), "k/./x"), PathBuf::from("k/x"));
        assert_eq!(
            join_clean(Path::new(".."), "../x"),
            PathBuf::from("../../x")
        );
        assert_eq!(join_clean(Path::new("a"), ".."), PathBuf::from("."));
        assert_eq!(join_clean(Path::new("/a"), "../../x"), PathBuf::from("/x"));
    }
}
