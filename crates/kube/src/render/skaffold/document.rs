//! One config document being read, and the field paths its messages name: each path leads to the
//! line it is written at, also when a profile wrote the value.

use std::fmt::Write as _;

use serde_json::Value;

use crate::render::RenderError;
use aviary_core::spec::yaml::Node;
use aviary_core::spec::Diagnostic;

/// A field path for messages and for finding a field's line.
#[derive(Debug, Clone)]
pub(super) enum Seg {
    Key(String),
    Index(usize),
}

pub(super) fn key(k: &str) -> Seg {
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

pub(super) fn child(path: &[Seg], seg: Seg) -> Vec<Seg> {
    let mut p = path.to_vec();
    p.push(seg);
    p
}

/// One config document being read: its file, its YAML tree (for lines) and its JSON (patched).
pub(super) struct Doc<'a> {
    pub(super) file: &'a str,
    pub(super) node: &'a Node,
    pub(super) json: Value,
    /// Parts of the JSON a profile wrote, and where in the file that profile wrote them: a field
    /// path under the first is looked up under the second (the last match wins).
    pub(super) redirects: Vec<(Vec<Seg>, Vec<Seg>)>,
}

fn seg_text(seg: &Seg) -> String {
    match seg {
        Seg::Key(k) => k.clone(),
        Seg::Index(i) => i.to_string(),
    }
}

/// A JSON pointer (`/manifests/kustomize/paths/0`) as a field path.
pub(super) fn pointer_path(pointer: &str) -> Vec<Seg> {
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
    pub(super) fn line(&self, path: &[Seg]) -> usize {
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

    pub(super) fn error(&self, path: &[Seg], message: impl Into<String>) -> Diagnostic {
        Diagnostic::error(self.file, self.line(path), &path_text(path), message)
    }

    pub(super) fn get(&self, path: &[Seg]) -> Option<&Value> {
        let mut v = &self.json;
        for seg in path {
            v = match seg {
                Seg::Key(k) => v.get(k.as_str())?,
                Seg::Index(i) => v.get(*i)?,
            };
        }
        Some(v)
    }

    pub(super) fn string_list(&self, path: &[Seg]) -> Result<Vec<String>, RenderError> {
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

    pub(super) fn string(&self, path: &[Seg]) -> Result<Option<String>, RenderError> {
        match self.get(path) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(self
                .error(path, format!("expected a string, got {}", json_type(other)))
                .into()),
        }
    }
}

pub(super) fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}
