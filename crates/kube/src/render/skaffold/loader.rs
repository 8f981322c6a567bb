//! Loading: the root file and what it `requires` (recursively, relative to the requiring file,
//! cycle-safe), with the profiles asked for or activated by `requires[].activeProfiles`.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::document::{child, json_type, key, Doc, Seg};
use super::manifests::{read_config, Config};
use super::paths::{dir_of, join_clean};
use super::profiles::{apply_profile, profile_list};
use super::{MAX_BETA, MIN_BETA};
use crate::render::RenderError;
use aviary_core::spec::yaml::{parse_documents, Node};
use aviary_core::spec::Diagnostic;

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
        let text = crate::render::read_input(path, label, "the Skaffold config")?;
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
