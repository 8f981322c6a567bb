//! `aviary validate`: read Canary and MetricTemplate files and report every problem at once.

use std::io::Write;

use serde::Serialize;

use crate::app::{self, AppError};
use crate::cli::ValidateArgs;
use crate::exit::Exit;
use crate::logging;
use crate::spec::{self, Canary, Diagnostic, MetricTemplate, SpecError};

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
        match spec::load_file(path) {
            Ok(docs) => results.push((file, Ok(docs))),
            Err(SpecError::Invalid { errors, warnings }) => {
                results.push((file, Err((errors, warnings))))
            }
            Err(io) => return Err(io.into()),
        }
    }
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
