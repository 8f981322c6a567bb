//! What aviary needs of a config whose profiles are applied: the images it builds and where its
//! manifests are (kustomizations and raw YAML).

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::document::{child, json_type, key, Doc, Seg};
use super::paths::{dir_of, join_clean};
use crate::render::RenderError;

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
pub(super) fn read_config(
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
