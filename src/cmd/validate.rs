//! `aviary validate`: read Canary and MetricTemplate files and report every problem at once.

use std::io::Write;

use serde::Serialize;

use super::{self as app, AppError};
use crate::cli::ValidateArgs;
use crate::logging;
use aviary_core::exit::Exit;
use aviary_core::spec::{self, Canary, Diagnostic, Documents, MetricTemplate, SpecError};

#[derive(Serialize)]
struct FileReport<'a> {
    file: String,
    valid: bool,
    canaries: Vec<&'a Canary>,
    templates: Vec<&'a MetricTemplate>,
    errors: serde_json::Value,
    warnings: serde_json::Value,
}

pub fn run(args: &ValidateArgs, out: &mut dyn Write) -> Result<Exit, AppError> {
    let mut results = Vec::new();
    for path in &args.files {
        let file = path.display().to_string();
        match aviary_kube::files::load_spec_file(path) {
            Ok(docs) => results.push((file, Ok(docs))),
            Err(SpecError::Invalid { errors, warnings }) => {
                results.push((file, Err((errors, warnings))))
            }
            Err(io) => return Err(io.into()),
        }
    }
    check_across_files(&mut results);
    let mut all_errors: Vec<Diagnostic> = Vec::new();
    let mut reports = Vec::new();
    for (file, result) in &results {
        match result {
            Ok(docs) => {
                if !args.json {
                    for w in &docs.warnings {
                        logging::diagnostic(w);
                    }
                    writeln!(
                        out,
                        "{file}: ok ({} Canary, {} MetricTemplate{})",
                        docs.canaries.len(),
                        docs.templates.len(),
                        if docs.skipped.is_empty() {
                            String::new()
                        } else {
                            format!(", {} other document(s) ignored", docs.skipped.len())
                        }
                    )?;
                }
                reports.push(FileReport {
                    file: file.clone(),
                    valid: true,
                    canaries: docs.canaries.iter().collect(),
                    templates: docs.templates.iter().collect(),
                    errors: app::diagnostics_json(&[]),
                    warnings: app::diagnostics_json(&docs.warnings),
                });
            }
            Err((errors, warnings)) => {
                all_errors.extend(errors.iter().cloned());
                if !args.json {
                    for d in warnings.iter().chain(errors) {
                        logging::diagnostic(d);
                    }
                }
                reports.push(FileReport {
                    file: file.clone(),
                    valid: false,
                    canaries: Vec::new(),
                    templates: Vec::new(),
                    errors: app::diagnostics_json(errors),
                    warnings: app::diagnostics_json(warnings),
                });
            }
        }
    }
    if args.json {
        serde_json::to_writer_pretty(&mut *out, &reports).map_err(std::io::Error::from)?;
        writeln!(out)?;
    }
    if all_errors.is_empty() {
        Ok(Exit::Success)
    } else {
        let n = all_errors.len();
        tracing::error!("{n} error{} found", if n == 1 { "" } else { "s" });
        Ok(Exit::InvalidInput)
    }
}

type FileResult = (
    String,
    Result<Documents, (Vec<Diagnostic>, Vec<Diagnostic>)>,
);

/// What no single file can show: a file with nothing to check, templates without any Canary (a
/// warning: Flagger takes them on their own), and
/// the `{{ variables.X }}` of templates in one file against the metrics in another. A file that
/// gets an error here becomes invalid, its warnings kept.
fn check_across_files(results: &mut [FileResult]) {
    let templates: Vec<MetricTemplate> = results
        .iter()
        .filter_map(|(_, r)| r.as_ref().ok())
        .flat_map(|d| d.templates.iter().cloned())
        .collect();
    let any_canary = results
        .iter()
        .any(|(_, r)| r.as_ref().is_ok_and(|d| !d.canaries.is_empty()));
    let all_read = results.iter().all(|(_, r)| r.is_ok());
    let mut first_templates = true;
    for (file, result) in results.iter_mut() {
        let Ok(docs) = result else { continue };
        let mut errors = Vec::new();
        if docs.canaries.is_empty() && docs.templates.is_empty() {
            errors.push(nothing_to_check(file, docs));
        } else if docs.canaries.is_empty() && !any_canary && all_read && first_templates {
            // Flagger takes a MetricTemplate on its own (it is applied apart from the Canary):
            // every check a template gets by itself has run; what needs the Canary is said.
            first_templates = false;
            let line = docs.templates.first().map_or(0, |t| t.origin.line);
            docs.warnings.push(
                Diagnostic::warning(
                    file,
                    line,
                    "",
                    "MetricTemplates without a Canary: each template is valid on its own, but its {{ variables.* }} and the metrics that use it could not be checked",
                )
                .with_help(format!(
                    "pass the Canary's file too, e.g. aviary validate -f canary.yaml -f {file}"
                )),
            );
        }
        // Templates of other files (those of the same file were checked when it was read).
        let elsewhere: Vec<_> = docs
            .template_uses
            .iter()
            .filter(|u| u.find(&docs.templates).is_none())
            .cloned()
            .collect();
        errors.extend(spec::check_template_uses(&elsewhere, &templates));
        if !errors.is_empty() {
            let warnings = std::mem::take(&mut docs.warnings);
            *result = Err((errors, warnings));
        }
    }
}

/// The error for a file that holds no Canary and no MetricTemplate.
fn nothing_to_check(file: &str, docs: &Documents) -> Diagnostic {
    const HELP: &str = "a Canary starts with `apiVersion: flagger.app/v1beta1` and `kind: Canary` \
                        (or `aviary.dev/v1alpha1`); a MetricTemplate with `kind: MetricTemplate`";
    if docs.skipped.is_empty() {
        return Diagnostic::error(
            file,
            0,
            "",
            "the file is empty: it holds no YAML document (only comments, `---` or nothing)",
        )
        .with_help(HELP);
    }
    let found: Vec<String> = docs
        .skipped
        .iter()
        .map(|(api, kind, origin)| {
            let api = if api.is_empty() { "no apiVersion" } else { api };
            format!("{kind} ({api}) at line {}", origin.line)
        })
        .collect();
    let line = docs.skipped.first().map_or(0, |(_, _, o)| o.line);
    Diagnostic::error(
        file,
        line,
        "",
        format!(
            "no Canary or MetricTemplate in this file, only {}",
            found.join(", ")
        ),
    )
    .with_help(HELP)
}
