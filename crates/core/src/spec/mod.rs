//! The Canary spec: Flagger's `flagger.app/v1beta1` `Canary` and `MetricTemplate`, and aviary's
//! `aviary.dev/v1alpha1` superset, read from multi-document YAML.
//!
//! Reading happens in two passes. [`yaml`] turns the text into a tree in which every node knows its
//! line, so that [`decode`] can report *every* problem at once, each with the file, line, field path
//! and a fix, instead of stopping at the first one the way a serde derive would.

pub mod decode;
pub mod duration;
pub mod input;
pub mod placeholders;
pub mod types;
pub mod yaml;

use std::fmt;

use serde::Serialize;

pub use types::*;

/// How bad a [`Diagnostic`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

/// One problem found in an input file, with its place and, where we know it, the fix.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    pub severity: Severity,
    pub file: String,
    /// 1-based; 0 when the problem has no single line (an empty file, say).
    pub line: usize,
    /// 1-based; 0 when unknown.
    pub column: usize,
    /// Dotted field path such as `spec.analysis.metrics[1].thresholdRange.min`; empty for the document.
    pub path: String,
    pub message: String,
    pub help: Option<String>,
}

impl Diagnostic {
    pub fn error(file: &str, line: usize, path: &str, message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Error,
            file: file.to_string(),
            line,
            column: 0,
            path: path.to_string(),
            message: message.into(),
            help: None,
        }
    }

    pub fn warning(file: &str, line: usize, path: &str, message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Warning,
            ..Diagnostic::error(file, line, path, message)
        }
    }

    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    pub fn with_column(mut self, column: usize) -> Self {
        self.column = column;
        self
    }
}

/// `file:line: path: message`, then `  help: ...` on its own line when there is a fix to offer.
impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line > 0 {
            write!(f, "{}:{}: ", self.file, self.line)?;
        } else {
            write!(f, "{}: ", self.file)?;
        }
        if self.severity == Severity::Warning {
            f.write_str("warning: ")?;
        }
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)?;
        if let Some(help) = &self.help {
            write!(f, "\n  help: {help}")?;
        }
        Ok(())
    }
}

/// Every Canary and MetricTemplate found in one or more files, and what was said about them.
#[derive(Debug, Clone, Default)]
pub struct Documents {
    pub canaries: Vec<Canary>,
    pub templates: Vec<MetricTemplate>,
    /// Documents of other kinds (a Deployment next to its Canary, say), as `(apiVersion, kind, origin)`.
    pub skipped: Vec<(String, String, Origin)>,
    pub warnings: Vec<Diagnostic>,
    /// Every Canary metric that uses a MetricTemplate, for checking its `{{ variables.X }}`
    /// against templates in other files ([`check_template_uses`]); those in the same file are
    /// checked already.
    pub template_uses: Vec<TemplateUse>,
}

/// A Canary metric's `templateRef`, with where it is written and the `templateVariables` it sets.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TemplateUse {
    pub file: String,
    pub line: usize,
    /// `spec.analysis.metrics[0].templateRef`, or `...templateVariables` when it is written.
    pub path: String,
    pub metric: String,
    pub template: String,
    /// `templateRef.namespace`, when set.
    pub template_namespace: Option<String>,
    /// The Canary's namespace (the template's when `templateRef` names none).
    pub canary_namespace: String,
    pub variables: Vec<String>,
}

impl TemplateUse {
    /// The template this metric would use among `templates`, as the runner finds it: the one
    /// with its name and namespace, else the only one with its name.
    pub fn find<'t>(&self, templates: &'t [MetricTemplate]) -> Option<&'t MetricTemplate> {
        let namespace = self
            .template_namespace
            .as_deref()
            .filter(|n| !n.is_empty())
            .unwrap_or(&self.canary_namespace);
        if let Some(t) = templates
            .iter()
            .find(|t| t.name == self.template && t.namespace == namespace)
        {
            return Some(t);
        }
        let mut by_name = templates.iter().filter(|t| t.name == self.template);
        match (by_name.next(), by_name.next()) {
            (Some(t), None) => Some(t),
            _ => None,
        }
    }
}

/// An error for each `{{ variables.X }}` of a used template that the metric's
/// `templateVariables` does not set (aviary would fail that metric at run time, and Flagger
/// would query with `<no value>` in its place). Uses whose template is not among `templates`
/// are left alone: it may be in the cluster.
pub fn check_template_uses(uses: &[TemplateUse], templates: &[MetricTemplate]) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    for u in uses {
        let Some(t) = u.find(templates) else {
            continue;
        };
        let (found, _) = placeholders::scan(&t.query);
        let mut reported: Vec<&str> = Vec::new();
        for key in found.iter().filter_map(|p| p.variable()) {
            if key.is_empty() || u.variables.iter().any(|v| v == key) || reported.contains(&key) {
                continue;
            }
            reported.push(key);
            let set = if u.variables.is_empty() {
                "the metric sets no templateVariables".to_string()
            } else {
                format!("templateVariables sets {}", u.variables.join(", "))
            };
            out.push(
                Diagnostic::error(
                    &u.file,
                    u.line,
                    &u.path,
                    format!(
                        "metric {:?} uses MetricTemplate {}.{} ({}:{}), whose query needs {{{{ variables.{key} }}}}, but {set}",
                        u.metric, t.name, t.namespace, t.origin.file, t.origin.line
                    ),
                )
                .with_help(format!("add `{key}: VALUE` under templateVariables")),
            );
        }
    }
    out
}

/// What a rollout needs of a Canary that Flagger's CRD lets it leave out: an error for each
/// (the rollout stops before it changes anything). `default_provider` is the provider used when
/// the spec names none.
pub fn check_runnable(canary: &Canary, default_provider: &Provider) -> Vec<Diagnostic> {
    let provider = canary.provider.as_ref().unwrap_or(default_provider);
    let mut out = Vec::new();
    if !canary.service.declared() && !matches!(provider, Provider::Other(_)) {
        out.push(
            Diagnostic::error(
                &canary.origin.file,
                canary.origin.line,
                "spec.service",
                format!(
                    "the Canary {} has no spec.service, which the {} router needs: it creates the Services {name}, {name}-primary and {name}-canary on spec.service.port",
                    canary.qualified_name(),
                    provider.name(),
                    name = canary.service.name,
                ),
            )
            .with_help("add `service: {port: 9898}` with the port the Services expose (Flagger's CRD leaves it optional only for knative, which aviary does not route)"),
        );
    }
    out
}

/// Why a spec could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// One or more errors (never empty); warnings found on the way are kept too.
    #[error("{}", render_errors(.errors))]
    Invalid {
        errors: Vec<Diagnostic>,
        warnings: Vec<Diagnostic>,
    },
}

fn render_errors(errors: &[Diagnostic]) -> String {
    let mut out = String::new();
    for (i, e) in errors.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(&e.to_string());
    }
    out
}

/// Reads every document of `text`, naming it `file` in messages. A leading byte-order mark is
/// ignored.
pub fn load_str(file: &str, text: &str) -> Result<Documents, SpecError> {
    decode::decode_documents(file, input::strip_bom(text))
}

/// The name of the ConfigMap that holds a canary's state (and of its Lease): `<canary>-aviary`.
/// Here so the spec reader can check that it fits a Kubernetes name.
pub fn state_object_name(canary: &str) -> String {
    format!("{canary}-aviary")
}
